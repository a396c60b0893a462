/* Process identity read from /proc: start time (to tell a reused pid from
 * the process that held a slot) and the pid as the host sees it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "region_internal.h"

uint64_t proc_start_time(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* Field 2 (comm) may hold spaces and parentheses: count fields from
     * the last ')'. Start time is field 22, the 20th after it. */
    char *p = strrchr(buf, ')');
    if (p == NULL)
        return 0;
    for (int field = 2; field < 22 && p != NULL; field++)
        p = strchr(p + 1, ' ');
    return p == NULL ? 0 : strtoull(p + 1, NULL, 10);
}

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

int32_t proc_host_pid(void)
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
