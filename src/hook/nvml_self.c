/* NVML's per-process figures and this process's pid among them. */
#include "hook/nvml_self.h"

#include <pthread.h>
#include <unistd.h>

#include "hook/account.h"
#include "hook/real.h"

static pthread_once_t nvml_once = PTHREAD_ONCE_INIT;
static bool nvml_up;

static void nvml_start(void)
{
    nvml_up = REAL(nvmlInit_v2) != NULL && REAL(nvmlInit_v2)() == NVML_SUCCESS;
}

/* The pid learned, and the process that learned it (a fork child is not
 * the process that learned; it compares and ignores). Both words are
 * written once per process under learn_lock and read as a pair below. */
static pthread_mutex_t learn_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned int learned_pid;
static pid_t learned_by;

bool nvml_list_read(int dev, struct nvml_list *l)
{
    char uuid[48];
    l->n = 0;
    if (REAL(nvmlDeviceGetHandleByUUID) == NULL ||
        REAL(nvmlDeviceGetComputeRunningProcesses_v3) == NULL ||
        !account_uuid_text(dev, uuid))
        return false;
    pthread_once(&nvml_once, nvml_start);
    nvmlDevice_t h;
    static __thread nvmlProcessInfo_t infos[NVML_LIST_MAX];
    unsigned int n = NVML_LIST_MAX;
    if (!nvml_up || REAL(nvmlDeviceGetHandleByUUID)(uuid, &h) != NVML_SUCCESS ||
        REAL(nvmlDeviceGetComputeRunningProcesses_v3)(h, &n, infos) != NVML_SUCCESS)
        return false;
    for (unsigned int i = 0; i < n && i < NVML_LIST_MAX; i++) {
        l->pid[l->n] = infos[i].pid;
        l->used[l->n++] = infos[i].usedGpuMemory;
    }
    return true;
}

static bool find(const struct nvml_list *l, unsigned int pid, uint64_t *used)
{
    for (unsigned int i = 0; pid != 0 && i < l->n; i++)
        if (l->pid[i] == pid) {
            *used = l->used[i];
            return true;
        }
    return false;
}

static unsigned int learned(void)
{
    pthread_mutex_lock(&learn_lock);
    unsigned int pid = learned_by == getpid() ? learned_pid : 0;
    pthread_mutex_unlock(&learn_lock);
    return pid;
}

/* The host's pid of this process from /proc (0: another pid namespace
 * whose /proc hides it); vgpu_host_pid reads it once per process (a fork
 * child reads its own). */
static int32_t host_pid(void)
{
    return vgpu_host_pid();
}

bool nvml_self_pid_known(void)
{
    return host_pid() > 0 || learned() != 0;
}

bool nvml_self_used(const struct nvml_list *l, uint64_t *used)
{
    /* Not getpid() where it is not the host's: in a pid namespace a small
     * pid may well be another container's process on the host. */
    int32_t h = host_pid();
    return find(l, h > 0 ? (unsigned int)h : learned(), used);
}

bool nvml_self_learn(const struct nvml_list *before,
                     const struct nvml_list *after, uint64_t min_growth)
{
    unsigned int found = 0, count = 0;
    for (unsigned int i = 0; i < after->n; i++) {
        uint64_t was = 0;
        bool old = find(before, after->pid[i], &was);
        if (!old || (min_growth > 0 && after->used[i] >= was + min_growth)) {
            found = after->pid[i];
            count++;
        }
    }
    if (count != 1)
        return false;
    pthread_mutex_lock(&learn_lock);
    learned_pid = found;
    learned_by = getpid();
    pthread_mutex_unlock(&learn_lock);
    return true;
}
