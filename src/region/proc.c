/* The pid as the host sees it, read from /proc (for HAMi's monitor). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
