/* The compute limit in the hooks. launch.c decides whether a launch is
 * limited and holds it while the container's budget is in debt; gputime.c
 * charges it an estimate of its GPU time, measured on the device for a
 * sample of launches. */
#ifndef VGPU_HOOK_LIMITER_H
#define VGPU_HOOK_LIMITER_H

#include <stdbool.h>
#include <stdint.h>

#include <cuda.h>

enum ticket_state {
    TICKET_FREE,       /* not limited: nothing to measure or charge */
    TICKET_CAPTURE,    /* the stream is capturing a graph: nothing runs */
    TICKET_ESTIMATED,  /* limited: charge the estimate */
    TICKET_SAMPLE,     /* limited and chosen to be measured */
    TICKET_MEASURED,   /* chosen, and its start event recorded */
};

struct launch_ticket {
    enum ticket_state state;
    int dev;
    CUstream stream;   /* the stream as the driver reads it (ptsz resolved) */
    uintptr_t key;     /* what predicts its GPU time (launch.c: launch_key) */
    CUfunction func;   /* the kernel launched (NULL: a graph) */
    bool first;        /* its key's first launch in this thread */
    uint64_t now;      /* CLOCK_MONOTONIC_COARSE ns at entry */
    int slot;          /* its estimate in this thread's table */
    int64_t charge;    /* the estimate it is charged */
    CUcontext ctx;
    CUevent start;
};

/* gputime.c, for a limited launch: false if its stream is capturing a
 * graph (nothing runs: the launch passes untouched); else picks the
 * estimate and whether to measure this launch, and when it does, settles
 * this thread's measured launches that finished (waiting for the oldest
 * when too many are in flight). Then, after any hold, gputime_start records
 * the start of a measured launch. */
bool gputime_prepare(struct launch_ticket *t);
void gputime_start(struct launch_ticket *t);
/* After the driver call: launched says whether it accepted the launch. */
void gputime_end(struct launch_ticket *t, bool launched);
/* Put what this thread kept back of its charges on the budget (before a
 * launch waits for it). */
void gputime_flush(void);

/* launch.c: charge ns of dev's GPU time to the container's budget (negative:
 * give back part of an estimate; in SM-time where spatial.c confines dev's
 * launches to a share of its SMs), and note ns measured for this process's
 * utilization metric. */
void limiter_charge(int dev, int64_t ns);
void limiter_measured(int dev, uint64_t ns);

/* launch.c, for spatial.c: dev's compute limit in percent as launches
 * obey it now (0: none). */
uint32_t limiter_cap(int dev);

#endif
