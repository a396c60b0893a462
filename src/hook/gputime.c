/* What limited launches use on the device: each one is charged an estimate
 * at once, so that work queued asynchronously draws on the budget before it
 * completes, and a sample of them is measured to keep the estimates true.
 *
 * Estimates. A launch's GPU time is predicted by what it runs and how big:
 * the CUfunction with its grid and block sizes, or the CUgraphExec (launch.c
 * makes that key). Each thread keeps a small direct-mapped table of keys
 * (KEYS entries; a collision replaces the entry), no lock. A key's estimate
 * comes from its last eight measurements, leaving out those stretched by
 * another context's time slice (estimate.h: the rule, which looks back 24
 * measurements, and what it costs).
 *
 * Sampling. A key's first FIRST launches are measured, then one in EVERY,
 * and the next one whenever its last measurement is older than MAX_AGE_NS
 * (so that rare launches of long kernels are measured often enough); the
 * others cost no driver call here. Each gap is drawn at random between
 * half and one and a half times those (about the same mean): a sample at fixed
 * gaps can fall in step with anything periodic, such as a program whose
 * every 128th launch of a kernel runs long, or a neighbour whose cycle of
 * holds and resumes divides 20 ms (a 30 % one at the 2 ms resume level
 * cycles every 6.7 ms), and then sees only one phase of it. (On the H100
 * the runs of stretched measurements that estimate.h's history answers
 * came with random gaps too: that was the neighbour, not the sampling.)
 *
 * Measuring. A measured launch is bracketed by two
 * events on its stream (start recorded after any hold, so that waiting is
 * not counted; end right after it); once the end has completed their
 * elapsed time is its GPU time (a graph's: all of its nodes). The launches
 * charged the estimate since the key's previous measured one are corrected
 * with it: each is taken to have used the key's new estimate. So the
 * container is charged the measured time where measured and a robust mean
 * elsewhere, and a change of duration is paid for, not only followed.
 * (One event per measured launch, its start bounded by the stream's
 * previous event, would count the stream's idle time and other launches.)
 *
 * Finished measurements are collected when the next launch is measured
 * (and at every launch of a key that has none yet); at most INFLIGHT wait
 * per thread, one more waits for the oldest. On a GPU
 * time-sliced between contexts the start event is processed when this
 * context runs, right before the launch, so waiting for other containers is
 * not counted; a measured launch that straddles a switch takes the other
 * context's work into its measurement: estimate.h tells such a
 * measurement, and the launch is charged the estimate instead.
 *
 * Graph capture: a launch into a capturing stream runs nothing and is left
 * alone (the driver is asked only while capture.c counts a capture open,
 * and for launches to be measured). Our event calls run in the relaxed capture mode, so that another
 * thread's capture in global mode (PyTorch's default) neither refuses them
 * nor is invalidated by them.
 *
 * Threads and fork: all of this is per thread (no lock); an exiting
 * thread settles what has finished, charges what it kept back and
 * destroys its events, its estimates go with it (a new key starts from the last measurement of any
 * thread on its device); exit() charges what the exiting thread kept back;
 * a fork child forgets the parent's events (the driver's are not its own)
 * and charges kept back, keeps the estimates. */
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "atomic.h"
#include "hook/capture.h"
#include "hook/estimate.h"
#include "hook/limiter.h"
#include "hook/real.h"
#include "log.h"
#include "vgpu/config.h"

#define INFLIGHT 32
#define SPARES (2 * INFLIGHT)
#define KEYS 256                   /* power of two */
#define FIRST 2                    /* a new key's launches measured */
#define EVERY 128                  /* then one in this many */
#define MAX_AGE_NS 20000000u      /* or one when the last is older */
#define FLUSH_NS 200000            /* charges kept back per thread, at most */

struct estimate {
    uintptr_t key;          /* 0: empty */
    int dev;
    uint32_t taken;         /* launches measured (saturates at FIRST) */
    uint32_t countdown;     /* launches until the next measured one */
    uint32_t max_age;       /* ns: measure the next one after this long */
    struct estimate_window window; /* its last measurements */
    int64_t ns;             /* the estimate; 0 until the first measurement */
    uint32_t covered;       /* launches charged since the last measured one */
    int64_t covered_ns;     /* what they were charged */
    uint64_t measured_at;   /* coarse ns: when the last measured one was taken */
};

struct inflight {
    CUevent start, end;
    CUcontext ctx;
    int dev, slot;
    uintptr_t key;
    int64_t charged;        /* the estimate it was charged */
    uint32_t covered;       /* the launches before it that it corrects */
    int64_t covered_ns;
};

struct spare {
    CUevent event;
    CUcontext ctx;  /* events belong to the context they were made in */
};

struct thread_state {
    unsigned fork_gen;
    bool usable;        /* the driver has what measuring needs */
    uint64_t random;    /* xorshift state for the sampling gaps, never 0 */
    unsigned head, count;
    struct inflight ring[INFLIGHT];
    int spares;
    struct spare spare[SPARES];
    int64_t pending[VGPU_MAX_DEVICES];  /* charged here, not yet on the budget */
    struct estimate table[KEYS];
};

/* Initial-exec: read at every limited launch, without a call into the
 * dynamic linker (as lifecycle.c's; libvgpu.so is loaded at start-up). */
static __thread struct thread_state *self __attribute__((tls_model("initial-exec")));
static unsigned fork_gen;
/* A new key's first estimate: the last measurement of any thread on that
 * device (relaxed: a hint; a new thread starts from it, not from zero). */
static int64_t last_measured[VGPU_MAX_DEVICES];
static pthread_key_t key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

/* Charges reach the container's budget in batches of about FLUSH_NS, so
 * that a launch does not write the bucket's line, which every process of
 * the container shares: a thread's launches may overrun the budget by at
 * most FLUSH_NS before it sees (launch.c flushes before it holds). */
static void charge(struct thread_state *s, int dev, int64_t ns)
{
    int64_t *p = &s->pending[dev];
    *p += ns;
    if (*p >= FLUSH_NS || *p <= -FLUSH_NS) {
        limiter_charge(dev, *p);
        *p = 0;
    }
}

static void flush(struct thread_state *s)
{
    for (int d = 0; d < VGPU_MAX_DEVICES; d++)
        if (s->pending[d] != 0) {
            limiter_charge(d, s->pending[d]);
            s->pending[d] = 0;
        }
}

static void reap(struct thread_state *s, bool wait_oldest);

static void destroy_event(CUevent e)
{
    if (e != NULL && REAL(cuEventDestroy_v2))
        REAL(cuEventDestroy_v2)(e);
}

/* At an exit: settle what has finished, charge the launches that no
 * measured one will correct at their key's estimate, and what was kept
 * back. */
static void settle_all(struct thread_state *s)
{
    reap(s, false);
    for (int i = 0; i < KEYS; i++) {
        struct estimate *k = &s->table[i];
        if (k->key != 0 && k->window.count > 0 && k->covered > 0)
            charge(s, k->dev, k->ns * (int64_t)k->covered - k->covered_ns);
        k->covered = 0;
        k->covered_ns = 0;
    }
    flush(s);
    /* The events go back to the driver (one still pending is released
     * when it completes). */
    for (; s->count > 0; s->count--, s->head = (s->head + 1) % INFLIGHT) {
        destroy_event(s->ring[s->head].start);
        destroy_event(s->ring[s->head].end);
    }
    for (; s->spares > 0; s->spares--)
        destroy_event(s->spare[s->spares - 1].event);
}

/* An exiting thread settles (above; measured launches not yet finished
 * keep their estimates). */
static void thread_gone(void *p)
{
    struct thread_state *s = p;
    if (s->fork_gen == atomic_load_n(&fork_gen, RELAXED)) /* see after_fork_child */
        settle_all(s);
    self = NULL; /* a later destructor's launch starts afresh */
    free(p);
}

/* exit(): the same for the exiting thread (other threads lose what they
 * kept back, at most FLUSH_NS each, with the process). A context already
 * gone answers the queries with an error: the estimates stand. */
static void process_gone(void)
{
    if (self != NULL && self->fork_gen == atomic_load_n(&fork_gen, RELAXED))
        settle_all(self);
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
    atexit(process_gone);
}

static bool usable(void)
{
    return REAL(cuEventRecord) && REAL(cuEventQuery) &&
           REAL(cuEventSynchronize) && REAL(cuCtxGetCurrent) &&
           REAL(cuStreamIsCapturing);
}

/* A sampling seed for this thread: its state's address and the pid (a
 * fork child's differs), mixed so that every bit of either moves every
 * bit of the seed (splitmix64's finalizer; xorshift needs it nonzero). */
static uint64_t seed(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 31;
    return x | 1;
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
        /* In a fork child: forget the parent's launches and events, and
         * the charges it kept back (the parent charges them). */
        self->head = self->count = 0;
        self->spares = 0;
        for (int d = 0; d < VGPU_MAX_DEVICES; d++)
            self->pending[d] = 0;
    }
    self->fork_gen = gen;
    self->usable = usable();
    self->random = seed((uint64_t)(uintptr_t)self ^ (uint64_t)getpid() << 32);
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
        struct estimate *k = &s->table[e->slot];
        int64_t each = ns;
        bool own = true;
        if (k->key == e->key && k->dev == e->dev)
            k->ns = each = estimate_learn(&k->window, ns, &own);
        /* LIBCUDA_LOG_LEVEL=3: every measurement, to see on a real GPU
         * what another context's time does to them (estimate.h). */
        log_debug("device %d: launch %#llx measured %lld ns, estimate %lld ns, "
                  "%u before it at the estimate%s", e->dev,
                  (unsigned long long)e->key, (long long)ns, (long long)each,
                  e->covered, own ? "" : " (stretched: charged the estimate)");
        if (!own) /* stretched by another context's time (estimate.h) */
            ns = each;
        /* This launch as measured, the ones it covers at the estimate. */
        int64_t owed = ns - e->charged +
                       each * (int64_t)e->covered - e->covered_ns;
        charge(s, e->dev, owed);
        limiter_measured(e->dev, (uint64_t)ns + (uint64_t)each * e->covered);
        atomic_store_n(&last_measured[e->dev], each, RELAXED);
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

/* Whether a launch into stream runs nothing now: captured into a graph
 * (it runs at the graph's launch), or refused by the driver as an implicit
 * capture. The driver is asked only while a capture is open (capture.c),
 * and for every launch to be measured, which checks that none went
 * unseen. */
static bool into_capture(CUstream stream, bool measure)
{
    bool possible = capture_possible();
    if (!possible && !measure)
        return false;
    CUstreamCaptureStatus status = CU_STREAM_CAPTURE_STATUS_NONE;
    CUresult rc = REAL(cuStreamIsCapturing)(stream, &status);
    if (rc == CUDA_SUCCESS && status == CU_STREAM_CAPTURE_STATUS_NONE)
        return false;
    if (!possible && (rc == CUDA_SUCCESS || rc == CUDA_ERROR_STREAM_CAPTURE_IMPLICIT))
        capture_unseen();
    return true;
}

/* A sampling gap: at random in [mean / 2, mean * 3 / 2), mean > 0. */
static uint32_t gap(struct thread_state *s, uint32_t mean)
{
    uint64_t x = s->random; /* xorshift64 */
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    s->random = x;
    return mean / 2 + (uint32_t)(x % mean);
}

/* t's entry in the table, made afresh for a new key. */
static struct estimate *entry(struct thread_state *s, struct launch_ticket *t)
{
    uint64_t h = (uint64_t)t->key * 0x9E3779B97F4A7C15ull;
    t->slot = (int)(h >> 56) & (KEYS - 1);
    struct estimate *k = &s->table[t->slot];
    if (k->key != t->key || k->dev != t->dev)
        *k = (struct estimate){.key = t->key, .dev = t->dev,
                               .ns = atomic_load_n(&last_measured[t->dev],
                                                   RELAXED)};
    return k;
}

void gputime_flush(void)
{
    if (self != NULL)
        flush(state());
}

bool gputime_prepare(struct launch_ticket *t)
{
    t->state = TICKET_ESTIMATED;
    t->first = false;
    t->slot = -1;
    t->charge = 0;
    struct thread_state *s = state();
    if (s == NULL || !s->usable)
        return true;
    struct estimate *k = entry(s, t);
    bool measure = k->taken < FIRST || k->countdown == 0 ||
                   t->now - k->measured_at > k->max_age;
    if (into_capture(t->stream, measure)) {
        t->state = TICKET_CAPTURE;
        return false;
    }
    t->charge = k->ns;
    if (!measure) {
        k->countdown--;
        if (k->window.count == 0 && s->count > 0) {
            /* No estimate yet: look for the first measurement at every
             * launch, not only at the next measured one. */
            CUstreamCaptureMode mode = relaxed();
            reap(s, false);
            restore(mode);
            t->charge = k->ns;
        }
        return true;
    }
    t->first = k->taken == 0;
    if (k->taken < FIRST)
        k->taken++;
    k->countdown = gap(s, EVERY) - 1;
    k->max_age = gap(s, MAX_AGE_NS);
    k->measured_at = t->now;
    t->state = TICKET_SAMPLE;
    CUstreamCaptureMode mode = relaxed();
    reap(s, s->count == INFLIGHT);
    restore(mode);
    return true;
}

/* A kernel's first launch in a context may load it (CUDA's lazy loading):
 * host time inside the launch call, which the GPU spends idle after the
 * start event, and which a measurement would charge as the kernel's. So a
 * key's first measured launch loads its kernel first. The runtime launches
 * a CUkernel (a library's, one for all contexts): its function in this
 * context is loaded. Errors leave the launch to load it. */
static void load_kernel(CUfunction f)
{
    if (f == NULL || REAL(cuFuncLoad) == NULL ||
        REAL(cuFuncLoad)(f) == CUDA_SUCCESS)
        return;
    CUfunction here = NULL;
    if (REAL(cuKernelGetFunction) != NULL &&
        REAL(cuKernelGetFunction)(&here, (CUkernel)f) == CUDA_SUCCESS)
        REAL(cuFuncLoad)(here);
}

void gputime_start(struct launch_ticket *t)
{
    struct thread_state *s = state();
    if (t->state != TICKET_SAMPLE || s == NULL ||
        REAL(cuCtxGetCurrent)(&t->ctx) != CUDA_SUCCESS) {
        if (t->state == TICKET_SAMPLE)
            t->state = TICKET_ESTIMATED;
        return;
    }
    if (t->first)
        load_kernel(t->func);
    CUstreamCaptureMode mode = relaxed();
    t->start = take_event(s, t->ctx);
    if (t->start != NULL && REAL(cuEventRecord)(t->start, t->stream) == CUDA_SUCCESS)
        t->state = TICKET_MEASURED;
    else {
        t->state = TICKET_ESTIMATED;
        if (t->start != NULL && REAL(cuEventDestroy_v2))
            REAL(cuEventDestroy_v2)(t->start);
    }
    restore(mode);
}

/* A launch charged the estimate: its measured successor corrects it. */
static void cover(struct thread_state *s, struct launch_ticket *t)
{
    struct estimate *k = t->slot >= 0 ? &s->table[t->slot] : NULL;
    if (k != NULL && k->key == t->key && k->dev == t->dev) {
        k->covered++;
        k->covered_ns += t->charge;
    }
}

void gputime_end(struct launch_ticket *t, bool launched)
{
    if (t->state == TICKET_FREE || t->state == TICKET_CAPTURE)
        return;
    struct thread_state *s = state();
    if (s == NULL)
        return;
    if (t->state != TICKET_MEASURED) {
        if (launched) {
            charge(s, t->dev, t->charge);
            cover(s, t);
        }
        return;
    }
    /* The end event first, right behind the launch. */
    CUstreamCaptureMode mode = relaxed();
    CUevent end = launched ? take_event(s, t->ctx) : NULL;
    bool recorded = end != NULL && REAL(cuEventRecord)(end, t->stream) == CUDA_SUCCESS;
    if (launched)
        charge(s, t->dev, t->charge);
    if (!recorded) {
        give_event(s, t->start, t->ctx);
        if (end != NULL && REAL(cuEventDestroy_v2))
            REAL(cuEventDestroy_v2)(end);
        if (launched)
            cover(s, t);
    } else {
        if (s->count == INFLIGHT)
            reap(s, true);
        struct estimate *k = &s->table[t->slot];
        struct inflight e = {t->start, end, t->ctx, t->dev, t->slot, t->key,
                             t->charge, 0, 0};
        if (k->key == t->key && k->dev == t->dev) {
            e.covered = k->covered;
            e.covered_ns = k->covered_ns;
            k->covered = 0;
            k->covered_ns = 0;
        }
        s->ring[(s->head + s->count) % INFLIGHT] = e;
        s->count++;
    }
    restore(mode);
}
