/* Small helpers shared by the test programs. */
#ifndef VGPU_TESTUTIL_H
#define VGPU_TESTUTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);    \
            fprintf(stderr, __VA_ARGS__);                                      \
            fprintf(stderr, "\n");                                             \
            exit(1);                                                           \
        }                                                                      \
    } while (0)

/* A fresh region path under the build's temp dir, unique per test run. */
static inline void test_region_path(char *buf, size_t n, const char *name)
{
    const char *dir = getenv("TMPDIR");
    snprintf(buf, n, "%s/vgpu-test-%s-%d.cache", dir ? dir : "/tmp", name,
             (int)getpid());
    unlink(buf);
}

static inline double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Wait for every child; returns how many did not exit with status 0. */
static inline int wait_children(int n)
{
    int bad = 0;
    for (int i = 0; i < n; i++) {
        int status = 0;
        if (wait(&status) < 0 || !WIFEXITED(status) || WEXITSTATUS(status))
            bad++;
    }
    return bad;
}

/* A test's size, overridable for soak runs (make soak): the value of the
 * environment variable `name` if set and positive, else `fallback`. */
static inline long soak_knob(const char *name, long fallback)
{
    const char *v = getenv(name);
    long n = v ? strtol(v, NULL, 10) : 0;
    return n > 0 ? n : fallback;
}

/* xorshift: cheap per-process randomness. */
static inline uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

#endif
