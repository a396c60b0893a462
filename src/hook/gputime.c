/* What a limited launch used, measured on the device: an event recorded on
 * its stream just before it and one just after; once the second has
 * completed, their elapsed time is the launch's GPU time (a graph's: all of
 * its nodes). On a GPU time-sliced between contexts, the start event is
 * processed when this context runs, right before the launch, so waiting for
 * other containers is not counted; only a launch that straddles a time-slice
 * switch is charged the other context's slice as well (see README).
 *
 * Each launch is charged an estimate at once (this thread's recent mean on
 * that device), so that work queued asynchronously draws on the budget
 * before it completes, and corrected to the measurement when it is reaped.
 * At most INFLIGHT launches per thread wait to be reaped; one more waits for
 * the oldest. Everything here is per thread: no lock.
 *
 * Graph capture: a launch into a capturing stream runs nothing and is left
 * alone. Our event calls run in the relaxed capture mode, so that another
 * thread's capture in global mode (PyTorch's default) neither refuses them
 * nor is invalidated by them. */
#include <pthread.h>
#include <stdlib.h>

#include "atomic.h"
#include "hook/limiter.h"
#include "hook/real.h"
#include "vgpu/config.h"

#define INFLIGHT 64
#define SPARES (2 * INFLIGHT)

struct inflight {
    CUevent start, end;
    CUcontext ctx;
    int dev;
    int64_t charged; /* the estimate charged at launch */
};

struct spare {
    CUevent event;
    CUcontext ctx;  /* events belong to the context they were made in */
};

struct thread_state {
    unsigned fork_gen;
    unsigned head, count;
    struct inflight ring[INFLIGHT];
    int spares;
    struct spare spare[SPARES];
    int64_t estimate[VGPU_MAX_DEVICES];
};

static __thread struct thread_state *self;
static unsigned fork_gen;
static pthread_key_t key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

/* The events of an exiting thread are left to the context (they are a few
 * hundred bytes of driver memory, freed with it); its launches were charged
 * their estimates. */
static void thread_gone(void *p)
{
    self = NULL; /* a later destructor's launch starts afresh */
    free(p);
}

static void after_fork_child(void)
{
    /* The parent's events mean nothing in the child. Relaxed: the child is
     * single-threaded here. */
    atomic_add(&fork_gen, 1, RELAXED);
}

static void make_key(void)
{
    pthread_key_create(&key, thread_gone);
    pthread_atfork(NULL, NULL, after_fork_child);
}

static struct thread_state *state(void)
{
    unsigned gen = atomic_load_n(&fork_gen, RELAXED); /* see after_fork_child */
    if (self != NULL && self->fork_gen == gen)
        return self;
    pthread_once(&key_once, make_key);
    if (self == NULL) {
        self = calloc(1, sizeof *self);
        if (self == NULL)
            return NULL;
        pthread_setspecific(key, self);
    } else {
        /* In a fork child: forget the parent's launches and events. */
        self->head = self->count = 0;
        self->spares = 0;
    }
    self->fork_gen = gen;
    return self;
}

static CUevent take_event(struct thread_state *s, CUcontext ctx)
{
    for (int i = s->spares - 1; i >= 0; i--)
        if (s->spare[i].ctx == ctx) {
            CUevent e = s->spare[i].event;
            s->spare[i] = s->spare[--s->spares];
            return e;
        }
    CUevent e = NULL;
    if (REAL(cuEventCreate) == NULL ||
        REAL(cuEventCreate)(&e, CU_EVENT_DEFAULT) != CUDA_SUCCESS)
        return NULL;
    return e;
}

static void give_event(struct thread_state *s, CUevent e, CUcontext ctx)
{
    if (e == NULL)
        return;
    if (s->spares < SPARES)
        s->spare[s->spares++] = (struct spare){e, ctx};
    else if (REAL(cuEventDestroy_v2))
        REAL(cuEventDestroy_v2)(e);
}

static CUresult elapsed_ms(float *ms, CUevent a, CUevent b)
{
    if (REAL(cuEventElapsedTime_v2))
        return REAL(cuEventElapsedTime_v2)(ms, a, b);
    if (REAL(cuEventElapsedTime))
        return REAL(cuEventElapsedTime)(ms, a, b);
    return CUDA_ERROR_NOT_SUPPORTED;
}

static void settle(struct thread_state *s, struct inflight *e, bool done)
{
    float ms = 0;
    if (done && elapsed_ms(&ms, e->start, e->end) == CUDA_SUCCESS && ms >= 0) {
        int64_t ns = (int64_t)((double)ms * 1e6);
        limiter_charge(e->dev, ns - e->charged);
        limiter_measured(e->dev, (uint64_t)ns);
        int64_t *est = &s->estimate[e->dev];
        /* The first measurement as it is, then a short memory: kernels
         * change. */
        *est = *est == 0 ? ns : *est + (ns - *est) / 4;
    }
    give_event(s, e->start, e->ctx);
    give_event(s, e->end, e->ctx);
}

static void reap(struct thread_state *s, bool wait_oldest)
{
    while (s->count > 0) {
        struct inflight *e = &s->ring[s->head];
        CUresult rc = REAL(cuEventQuery)(e->end);
        if (rc == CUDA_ERROR_NOT_READY) {
            if (!wait_oldest)
                return;
            /* Through our own hook (pools.c): a synchronization lets the
             * driver shrink pools, which their accounting follows. */
            rc = cuEventSynchronize(e->end);
            wait_oldest = false;
        }
        /* Anything but success (its context gone): the estimate stands. */
        settle(s, e, rc == CUDA_SUCCESS);
        s->head = (s->head + 1) % INFLIGHT;
        s->count--;
    }
}

static bool usable(void)
{
    return REAL(cuEventRecord) && REAL(cuEventQuery) &&
           REAL(cuEventSynchronize) && REAL(cuCtxGetCurrent) &&
           REAL(cuStreamIsCapturing);
}

static CUstreamCaptureMode relaxed(void)
{
    CUstreamCaptureMode mode = CU_STREAM_CAPTURE_MODE_RELAXED;
    if (REAL(cuThreadExchangeStreamCaptureMode))
        REAL(cuThreadExchangeStreamCaptureMode)(&mode);
    return mode;
}

static void restore(CUstreamCaptureMode mode)
{
    if (REAL(cuThreadExchangeStreamCaptureMode))
        REAL(cuThreadExchangeStreamCaptureMode)(&mode);
}

bool gputime_prepare(struct launch_ticket *t)
{
    t->state = TICKET_ESTIMATED;
    struct thread_state *s = state();
    if (s == NULL || !usable())
        return true;
    CUstreamCaptureStatus capture = CU_STREAM_CAPTURE_STATUS_NONE;
    CUresult rc = REAL(cuStreamIsCapturing)(t->stream, &capture);
    if (rc != CUDA_SUCCESS || capture != CU_STREAM_CAPTURE_STATUS_NONE) {
        /* Captured into a graph (it runs at the graph's launch), or refused
         * by the driver as an implicit capture: nothing runs now. */
        t->state = TICKET_CAPTURE;
        return false;
    }
    CUstreamCaptureMode mode = relaxed();
    reap(s, s->count == INFLIGHT);
    restore(mode);
    return true;
}

void gputime_start(struct launch_ticket *t)
{
    struct thread_state *s = state();
    if (t->state != TICKET_ESTIMATED || s == NULL || !usable() ||
        REAL(cuCtxGetCurrent)(&t->ctx) != CUDA_SUCCESS)
        return;
    CUstreamCaptureMode mode = relaxed();
    t->start = take_event(s, t->ctx);
    if (t->start != NULL && REAL(cuEventRecord)(t->start, t->stream) == CUDA_SUCCESS)
        t->state = TICKET_MEASURED;
    else if (t->start != NULL && REAL(cuEventDestroy_v2))
        REAL(cuEventDestroy_v2)(t->start);
    restore(mode);
}

void gputime_end(struct launch_ticket *t, bool launched)
{
    struct thread_state *s = state();
    if (t->state == TICKET_FREE || t->state == TICKET_CAPTURE || s == NULL)
        return;
    int64_t estimate = s->estimate[t->dev];
    if (t->state == TICKET_ESTIMATED) {
        if (launched)
            limiter_charge(t->dev, estimate);
        return;
    }
    limiter_charge(t->dev, launched ? estimate : 0);
    CUstreamCaptureMode mode = relaxed();
    CUevent end = launched ? take_event(s, t->ctx) : NULL;
    if (end == NULL || REAL(cuEventRecord)(end, t->stream) != CUDA_SUCCESS) {
        give_event(s, t->start, t->ctx);
        if (end != NULL && REAL(cuEventDestroy_v2))
            REAL(cuEventDestroy_v2)(end);
    } else {
        if (s->count == INFLIGHT)
            reap(s, true);
        unsigned tail = (s->head + s->count) % INFLIGHT;
        s->ring[tail] = (struct inflight){t->start, end, t->ctx, t->dev, estimate};
        s->count++;
    }
    restore(mode);
}
