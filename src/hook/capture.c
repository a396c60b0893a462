/* Whether a launch may be going into a graph capture, known without asking
 * the driver at every launch.
 *
 * A launch into a capturing stream runs nothing, so gputime.c leaves it
 * alone; asking the driver (cuStreamIsCapturing) at every limited launch is
 * a driver call per launch. Instead every way to begin and to end a capture
 * passes here, and this counts the captures open in the process. While the
 * count is 0 no stream of the process is capturing: a stream joins a
 * capture only through one begun here (by waiting on an event recorded in
 * a capturing stream), and that capture stays open until it is ended.
 * While it is not 0, limited launches ask the driver, as before.
 *
 * A capture begun by a way that bypasses these hooks (none is known) would
 * go unseen: so the launches that gputime.c measures ask the driver
 * anyway, and a capture found there, or an end with none counted, leaves
 * the count up for good (every limited launch then asks; one log line).
 * Until then, launches into such a capture are charged their estimate:
 * more than the nothing they run, never less.
 *
 * Ordering: relaxed. The count is raised before the driver begins a
 * capture and lowered after the driver ended it, so that any launch into
 * that stream, which the program orders after the begin (same thread, or
 * handed over by its own synchronization), reads it raised.
 * Fork: the child keeps the count (too high costs driver calls, never
 * accounting). Signals: atomics only. */
#include <stdint.h>

#include "atomic.h"
#include "hook/capture.h"
#include "hook/real.h"
#include "log.h"

#define EXPORT __attribute__((visibility("default")))
/* Added once when a capture went unseen: never taken away. */
#define UNSEEN (1ull << 40)

static uint64_t open_captures;

bool capture_possible(void)
{
    return atomic_load_n(&open_captures, RELAXED) != 0;
}

void capture_unseen(void)
{
    uint64_t cur = atomic_load_n(&open_captures, RELAXED);
    while (cur < UNSEEN)
        if (atomic_cas(&open_captures, &cur, cur + UNSEEN, RELAXED, RELAXED)) {
            log_warn("a graph capture began by a way vgpu does not see: "
                     "limited launches now ask the driver at every launch");
            return;
        }
}

/* The driver's answer for s: true when it says s is (or is not: `want`
 * false) capturing; false when it cannot say. */
static bool capture_status_is(CUstream s, bool want)
{
    CUstreamCaptureStatus status = CU_STREAM_CAPTURE_STATUS_NONE;
    if (REAL(cuStreamIsCapturing) == NULL ||
        REAL(cuStreamIsCapturing)(s, &status) != CUDA_SUCCESS)
        return false;
    return (status != CU_STREAM_CAPTURE_STATUS_NONE) == want;
}

static void opened(void)
{
    atomic_add(&open_captures, 1, RELAXED);
}

/* A begin the driver refused opened nothing; an end lowers the count when
 * it ended a capture (the stream was capturing and is no longer). */
static void closed(void)
{
    uint64_t cur = atomic_load_n(&open_captures, RELAXED);
    do {
        if (cur % UNSEEN == 0) { /* an end with no begin counted */
            capture_unseen();
            return;
        }
    } while (!atomic_cas(&open_captures, &cur, cur - 1, RELAXED, RELAXED));
}

static CUresult begun(CUresult rc)
{
    if (rc != CUDA_SUCCESS)
        closed();
    return rc;
}

#define BEGIN(name, call)                                                      \
    do {                                                                       \
        NEED(name);                                                            \
        opened();                                                              \
        return begun(call);                                                    \
    } while (0)

EXPORT CUresult cuStreamBeginCapture(CUstream s)
{
    BEGIN(cuStreamBeginCapture, REAL(cuStreamBeginCapture)(s));
}

EXPORT CUresult cuStreamBeginCapture_ptsz(CUstream s)
{
    BEGIN(cuStreamBeginCapture_ptsz, REAL(cuStreamBeginCapture_ptsz)(s));
}

EXPORT CUresult cuStreamBeginCapture_v2(CUstream s, CUstreamCaptureMode mode)
{
    BEGIN(cuStreamBeginCapture_v2, REAL(cuStreamBeginCapture_v2)(s, mode));
}

EXPORT CUresult cuStreamBeginCapture_v2_ptsz(CUstream s,
                                             CUstreamCaptureMode mode)
{
    BEGIN(cuStreamBeginCapture_v2_ptsz,
          REAL(cuStreamBeginCapture_v2_ptsz)(s, mode));
}

EXPORT CUresult cuStreamBeginCaptureToGraph(CUstream s, CUgraph g,
                                            const CUgraphNode *deps,
                                            const CUgraphEdgeData *data,
                                            size_t n, CUstreamCaptureMode mode)
{
    BEGIN(cuStreamBeginCaptureToGraph,
          REAL(cuStreamBeginCaptureToGraph)(s, g, deps, data, n, mode));
}

EXPORT CUresult cuStreamBeginCaptureToGraph_ptsz(CUstream s, CUgraph g,
                                                 const CUgraphNode *deps,
                                                 const CUgraphEdgeData *data,
                                                 size_t n,
                                                 CUstreamCaptureMode mode)
{
    BEGIN(cuStreamBeginCaptureToGraph_ptsz,
          REAL(cuStreamBeginCaptureToGraph_ptsz)(s, g, deps, data, n, mode));
}

/* `stream`: as the driver reads it (the per-thread stream for _ptsz). */
#define END(name, stream, call)                                                \
    do {                                                                       \
        NEED(name);                                                            \
        bool was = capture_status_is(stream, true);                            \
        CUresult rc_ = (call);                                                 \
        if (was && capture_status_is(stream, false))                           \
            closed();                                                          \
        return rc_;                                                            \
    } while (0)

EXPORT CUresult cuStreamEndCapture(CUstream s, CUgraph *g)
{
    END(cuStreamEndCapture, s, REAL(cuStreamEndCapture)(s, g));
}

EXPORT CUresult cuStreamEndCapture_ptsz(CUstream s, CUgraph *g)
{
    END(cuStreamEndCapture_ptsz, s ? s : CU_STREAM_PER_THREAD,
        REAL(cuStreamEndCapture_ptsz)(s, g));
}
