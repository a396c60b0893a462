/* The pid as the host sees it, read from /proc. Only informative: HAMi's
 * monitor does not read it (HAMi-core used it to match NVML's process
 * lists); vgpu matches NVML's list with it when it measures a context.
 * Reading /proc/self/status took half of an attach's time (BENCHMARKS.md,
 * "host pid off the attach"), so it is done once per process when first
 * asked, never at attach. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "atomic.h"
#include "region_internal.h"

/* The kernel gives the initial pid namespace a fixed inode number
 * (PROC_PID_INIT_INO). */
static int in_initial_pid_namespace(void)
{
    char target[64];
    ssize_t n = readlink("/proc/self/ns/pid", target, sizeof target - 1);
    if (n <= 0)
        return 0;
    target[n] = '\0';
    return strcmp(target, "pid:[4026531836]") == 0;
}

static int32_t read_host_pid(void)
{
    /* NSpid lists this process's pid in each pid namespace, outermost first,
     * as far as this /proc can see. With one entry we cannot see the host's
     * pid; 0 tells the monitor so (HAMi-core's convention). */
    FILE *f = fopen("/proc/self/status", "re");
    if (f == NULL)
        return 0;
    char line[256];
    int32_t host = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "NSpid:", 6) != 0)
            continue;
        char *end = NULL;
        long first = strtol(line + 6, &end, 10);
        if (end != NULL && strtol(end, NULL, 10) > 0)
            host = (int32_t)first; /* nested: the first entry is outermost */
        else if (in_initial_pid_namespace())
            host = (int32_t)getpid();
        break;
    }
    fclose(f);
    return host;
}

/* The answer, for the process whose pid is in `known_for` (a fork child
 * finds its parent's pid there and asks again). Racing first callers both
 * read /proc and store the same values. */
static int32_t known_host, known_for;

bool proc_host_pid_is_known(void)
{
    return atomic_load_n(&known_for, RELAXED) == (int32_t)getpid(); /* a hint */
}

int32_t proc_host_pid_known(void)
{
    /* Acquire: pairs with the release below, so known_host is this
     * process's answer, not a value from before a fork. */
    if (atomic_load_n(&known_for, ACQUIRE) != (int32_t)getpid())
        return 0;
    return atomic_load_n(&known_host, RELAXED);
}

int32_t proc_host_pid(void)
{
    int32_t self = (int32_t)getpid();
    if (atomic_load_n(&known_for, ACQUIRE) == self) /* as above */
        return atomic_load_n(&known_host, RELAXED);
    int32_t host = read_host_pid();
    atomic_store_n(&known_host, host, RELAXED);
    atomic_store_n(&known_for, self, RELEASE); /* publishes known_host */
    return host;
}
