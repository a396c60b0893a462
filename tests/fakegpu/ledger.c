/* fakegpu-ledger: the simulated driver's ground truth, for tests and demos.
 *   fakegpu-ledger [--json] [--reset-peak]
 * Bytes live per device (and the peak) and per process, dead processes'
 * memory freed first, as the real driver would have. */
#include <stdio.h>
#include <string.h>

#include "fakegpu.h"

int main(int argc, char **argv)
{
    bool json = false, reset = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = true;
        else if (strcmp(argv[i], "--reset-peak") == 0)
            reset = true;
        else {
            fprintf(stderr, "usage: fakegpu-ledger [--json] [--reset-peak]\n");
            return 2;
        }
    }
    struct fg_state *s = fg_state();
    fg_reap();
    printf(json ? "{\"devices\":[" : "dev %14s %14s %14s\n", "total", "used", "peak");
    for (uint32_t d = 0; d < s->device_count; d++) {
        struct fg_device *v = &s->dev[d];
        unsigned long long used = __atomic_load_n(&v->used, __ATOMIC_RELAXED);
        unsigned long long peak = __atomic_load_n(&v->peak, __ATOMIC_RELAXED);
        if (json)
            printf("%s{\"index\":%u,\"total\":%llu,\"used\":%llu,\"peak\":%llu}",
                   d ? "," : "", d, (unsigned long long)v->total, used, peak);
        else
            printf("%-3u %14llu %14llu %14llu\n", d,
                   (unsigned long long)v->total, used, peak);
        if (reset)
            __atomic_store_n(&v->peak, used, __ATOMIC_RELAXED);
    }
    printf(json ? "],\"processes\":[" : "pid      bytes per device\n");
    int n = 0;
    for (int i = 0; i < FG_MAX_PROCS; i++) {
        struct fg_proc *p = &s->procs[i];
        if (!__atomic_load_n(&p->busy, __ATOMIC_ACQUIRE))
            continue;
        printf(json ? "%s{\"pid\":%d,\"used\":[" : "%s%-8d", json && n ? "," : "",
               p->pid);
        for (uint32_t d = 0; d < s->device_count; d++)
            printf(json ? "%s%llu" : "%s%llu", json ? (d ? "," : "") : " ",
                   (unsigned long long)__atomic_load_n(&p->used[d], __ATOMIC_RELAXED));
        printf(json ? "]}" : "\n");
        n++;
    }
    printf(json ? "]}\n" : "");
    return 0;
}
