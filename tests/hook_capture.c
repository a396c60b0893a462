/* Launches and graph captures under a compute limit (src/hook/capture.c):
 * a limited launch asks the driver whether its stream is capturing only
 * while a capture is open in the process (and for the launches it
 * measures), launches into a capture are neither charged nor held, and a
 * capture begun by a way no hook sees is found and makes every launch ask.
 * One case per behaviour (argv[1]); each prints what it counted. */
#define _GNU_SOURCE
#include "compute_util.h"

#define LAUNCHES 2000

struct counts {
    uint64_t queries, records, charged, held, ran;
};

static struct counts counts_now(void)
{
    struct counts c = {fakegpu_capture_queries(), fakegpu_event_calls(true),
                       0, 0, fakegpu_launched_ns(0)};
    budget_stats(0, &c.charged, &c.held);
    return c;
}

static struct counts since(struct counts a)
{
    struct counts b = counts_now();
    return (struct counts){b.queries - a.queries, b.records - a.records,
                           b.charged - a.charged, b.held - a.held,
                           b.ran - a.ran};
}

/* n launches of one 1 us kernel on s (one key: gputime.c measures a few). */
static void launch_n(CUstream s, int n)
{
    uint32_t us = 1;
    void *params[] = {&us};
    for (int i = 0; i < n; i++)
        CU_OK(cuLaunchKernel((CUfunction)1, 1, 1, 1, 1, 1, 1, 0, s, params,
                             NULL));
}

static CUstream limited_stream(void)
{
    setenv("CUDA_DEVICE_MEMORY_SHARED_CACHE", container_path(0), 1);
    setenv("CUDA_DEVICE_SM_LIMIT", "90", 1);
    setenv("GPU_CORE_UTILIZATION_POLICY", "force", 1);
    unlink(container_path(0));
    fakegpu_context(0);
    CUstream s;
    CU_OK(cuStreamCreate(&s, 0));
    launch_n(s, 10); /* the key's first, measured launches */
    CU_OK(cuStreamSynchronize(s));
    return s;
}

static void report(const char *what, struct counts c, int launches)
{
    printf("%s: %d launches, %llu capture queries, %llu event records, "
           "%llu ns charged, %llu ns ran\n", what, launches,
           (unsigned long long)c.queries, (unsigned long long)c.records,
           (unsigned long long)c.charged, (unsigned long long)c.ran);
}

/* No capture open: only the launches measured (two event records each)
 * ask the driver. */
static void case_none_open(void)
{
    CUstream s = limited_stream();
    struct counts c0 = counts_now();
    launch_n(s, LAUNCHES);
    CU_OK(cuStreamSynchronize(s));
    struct counts c = since(c0);
    report("no capture open", c, LAUNCHES);
    CHECK(c.charged > 0, "the launches were charged");
    CHECK(c.queries <= c.records / 2 + 1, "%llu capture queries for %llu "
          "measured launches", (unsigned long long)c.queries,
          (unsigned long long)(c.records / 2));
    printf("none_open: ok\n");
}

/* A capture open on another stream: every limited launch asks (and runs,
 * charged); once it ends, they stop asking. */
static void case_open_elsewhere(void)
{
    CUstream s = limited_stream(), other;
    CU_OK(cuStreamCreate(&other, 0));
    CU_OK(cuStreamBeginCapture_v2(other, CU_STREAM_CAPTURE_MODE_RELAXED));
    struct counts c0 = counts_now();
    launch_n(s, LAUNCHES);
    CU_OK(cuStreamSynchronize(s));
    struct counts c = since(c0);
    report("capture open on another stream", c, LAUNCHES);
    CHECK(c.queries >= LAUNCHES, "%llu capture queries for %d launches",
          (unsigned long long)c.queries, LAUNCHES);
    CHECK(c.charged > 0 && c.ran > 0, "the launches ran and were charged");
    CUgraph g;
    CU_OK(cuStreamEndCapture(other, &g));
    CU_OK(cuGraphDestroy(g));
    c0 = counts_now();
    launch_n(s, LAUNCHES);
    CU_OK(cuStreamSynchronize(s));
    c = since(c0);
    report("after it ended", c, LAUNCHES);
    CHECK(c.queries <= c.records / 2 + 1, "ended: %llu capture queries for "
          "%llu measured launches", (unsigned long long)c.queries,
          (unsigned long long)(c.records / 2));
    printf("open_elsewhere: ok\n");
}

/* Through cuGetProcAddress with the per-thread default stream, as the
 * runtime does: launches into the per-thread stream's capture are neither
 * run nor charged; the begin and end are seen. */
static void case_procaddr_ptsz(void)
{
    limited_stream();
    CUresult (*begin)(CUstream, CUstreamCaptureMode) = NULL;
    CUresult (*end)(CUstream, CUgraph *) = NULL;
    CUresult (*launch)(CUfunction, unsigned, unsigned, unsigned, unsigned,
                       unsigned, unsigned, unsigned, CUstream, void **,
                       void **) = NULL;
    cuuint64_t pt = CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM;
    CU_OK(cuGetProcAddress("cuStreamBeginCapture", (void **)&begin, 12000, pt));
    CU_OK(cuGetProcAddress("cuStreamEndCapture", (void **)&end, 12000, pt));
    CU_OK(cuGetProcAddress("cuLaunchKernel", (void **)&launch, 12000, pt));
    if (begin == NULL || end == NULL || launch == NULL)
        return;
    CU_OK(begin(NULL, CU_STREAM_CAPTURE_MODE_GLOBAL));
    struct counts c0 = counts_now();
    uint32_t us = 1000;
    void *params[] = {&us};
    for (int i = 0; i < 200; i++)
        CU_OK(launch((CUfunction)1, 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL));
    struct counts c = since(c0);
    report("capturing the per-thread stream", c, 200);
    CHECK(c.charged == 0 && c.held == 0 && c.ran == 0, "captured launches: "
          "charged %llu, held %llu, ran %llu", (unsigned long long)c.charged,
          (unsigned long long)c.held, (unsigned long long)c.ran);
    CHECK(c.queries >= 200, "%llu capture queries for 200 launches",
          (unsigned long long)c.queries);
    CUgraph g;
    CU_OK(end(NULL, &g));
    CU_OK(cuGraphDestroy(g));
    c0 = counts_now();
    launch_n(CU_STREAM_PER_THREAD, LAUNCHES);
    CU_OK(cuStreamSynchronize(CU_STREAM_PER_THREAD));
    c = since(c0);
    report("after it ended", c, LAUNCHES);
    CHECK(c.queries <= c.records / 2 + 1, "ended: %llu capture queries for "
          "%llu measured launches", (unsigned long long)c.queries,
          (unsigned long long)(c.records / 2));
    printf("procaddr_ptsz: ok\n");
}

/* A capture no hook saw: a measured launch finds it. Until then launches
 * into it are charged their estimate (at most a sampling period of them);
 * after, none, and every launch asks. */
static void case_unseen(void)
{
    CUstream s = limited_stream();
    CU_OK(fakegpu_begin_capture_unseen(s));
    struct counts c0 = counts_now();
    launch_n(s, 300); /* the 128 after a measured one, and more */
    struct counts first = since(c0);
    report("unseen capture, first launches", first, 300);
    CHECK(first.ran == 0, "captured launches ran %llu ns",
          (unsigned long long)first.ran);
    c0 = counts_now();
    launch_n(s, 300);
    struct counts c = since(c0);
    report("once found", c, 300);
    CHECK(c.charged == 0 && c.ran == 0, "found: charged %llu, ran %llu",
          (unsigned long long)c.charged, (unsigned long long)c.ran);
    CHECK(c.queries >= 300, "found: %llu capture queries for 300 launches",
          (unsigned long long)c.queries);
    CUgraph g;
    CU_OK(cuStreamEndCapture(s, &g));
    CU_OK(cuGraphDestroy(g));
    c0 = counts_now();
    launch_n(s, 300);
    CU_OK(cuStreamSynchronize(s));
    c = since(c0);
    report("after its end", c, 300);
    CHECK(c.ran > 0 && c.charged > 0, "the launches run and are charged");
    CHECK(c.queries >= 300, "still asking: %llu capture queries for 300 "
          "launches", (unsigned long long)c.queries);
    printf("unseen: ok\n");
}

int main(int argc, char **argv)
{
    hook_fresh(1, "8g", NULL);
    const char *c = argc > 1 ? argv[1] : "none_open";
    if (strcmp(c, "none_open") == 0)
        case_none_open();
    else if (strcmp(c, "open_elsewhere") == 0)
        case_open_elsewhere();
    else if (strcmp(c, "procaddr_ptsz") == 0)
        case_procaddr_ptsz();
    else if (strcmp(c, "unseen") == 0)
        case_unseen();
    else
        CHECK(false, "unknown case %s", c);
    return 0;
}
