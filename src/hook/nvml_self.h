/* This process as NVML sees it: the device memory NVML attributes to each
 * process on a device, and which of NVML's pids is ours. NVML reports pids
 * of the host's pid namespace; in a container with its own namespace (and
 * its own /proc) this process's pid there is not its getpid(), so it is
 * learned from something only this process did: the pid that appeared in
 * NVML's list across it. Never called on another process's start-up path
 * (callers decide when). */
#ifndef VGPU_HOOK_NVML_SELF_H
#define VGPU_HOOK_NVML_SELF_H

#include <stdbool.h>
#include <stdint.h>

#define NVML_LIST_MAX 256

struct nvml_list {
    unsigned int n;
    unsigned int pid[NVML_LIST_MAX];
    uint64_t used[NVML_LIST_MAX];
};

/* NVML's processes on CUDA device dev and their memory. False: NVML is
 * absent or refused (nothing is known). */
bool nvml_list_read(int dev, struct nvml_list *l);

/* This process's memory in l. False: not in the list (or pid unknown). */
bool nvml_self_used(const struct nvml_list *l, uint64_t *used);

/* Learn this process's NVML pid from lists read before and after an action
 * that only this process did: adopted when exactly one pid is new or grew
 * by at least min_growth. False: none or ambiguous (nothing learned). */
bool nvml_self_learn(const struct nvml_list *before,
                     const struct nvml_list *after, uint64_t min_growth);

/* True when this process's NVML pid is known (host pid, or learned): then
 * its absence from a list means it holds nothing. */
bool nvml_self_pid_known(void);

#endif
