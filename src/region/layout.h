/* The region file's layout, version 1.
 *
 * Part 1, at offset 0, is HAMi-core's shared_region_t (major 1, minor 1)
 * byte for byte: HAMi's node monitor (pkg/monitor/nvidia, reader "v1") maps
 * the file, checks the magic, picks its reader by major version (any size
 * other than v0's 1197897 bytes), sums procs[0, procnum).used[dev] and writes
 * limit, sm_limit, recent_kernel and utilization_switch. Every offset it
 * reads is pinned by a static assert below.
 *
 * Part 2, at VGPU_EXT_OFFSET (the next page boundary), is vgpu's own: the
 * per-device counters that make a charge one atomic step, and per-slot
 * ownership state. The monitor never looks past part 1.
 *
 * Per-process attribution lives in part 1 (procs[i].used[dev]), so the
 * monitor sees each process's usage without knowing about part 2.
 */
#ifndef VGPU_REGION_LAYOUT_H
#define VGPU_REGION_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#include "vgpu/region.h"
#include "vgpu/sm_budget.h"

#define HAMI_MAGIC 19920718
#define HAMI_MAJOR 1
#define HAMI_MINOR 1
#define HAMI_UUID_LEN 96

struct hami_device_memory {
    uint64_t context_size;
    uint64_t module_size;
    uint64_t data_size;
    uint64_t offset;
    uint64_t total;
    uint64_t unused[3];
};

struct hami_device_util {
    uint64_t dec_util;
    uint64_t enc_util;
    uint64_t sm_util;
    uint64_t unused[3];
};

/* A slot's status, as HAMi-core and the monitor read it (HAMi-core also
 * has 2, swapped out, which vgpu never writes). */
#define HAMI_SLOT_FREE 0
#define HAMI_SLOT_LIVE 1

struct hami_slot {
    int32_t pid;
    int32_t hostpid;
    struct hami_device_memory used[VGPU_MAX_DEVICES];
    uint64_t monitorused[VGPU_MAX_DEVICES];
    struct hami_device_util device_util[VGPU_MAX_DEVICES];
    int32_t status;       /* HAMI_SLOT_*: the monitor sums live slots only */
    uint64_t unused[3];
};

struct hami_region {
    int32_t initialized_flag; /* HAMI_MAGIC once initialized */
    int32_t major_version;
    int32_t minor_version;
    int32_t sm_init_flag;
    uint64_t owner_pid;
    unsigned char sem[32];    /* sem_t in HAMi-core; the legacy modes' semaphore */
    uint64_t device_num;
    char uuids[VGPU_MAX_DEVICES][HAMI_UUID_LEN];
    uint64_t limit[VGPU_MAX_DEVICES];    /* the monitor may rewrite these */
    uint64_t sm_limit[VGPU_MAX_DEVICES];
    struct hami_slot procs[VGPU_MAX_SLOTS];
    int32_t procnum;          /* the monitor reads procs[0, procnum) */
    int32_t utilization_switch;
    int32_t recent_kernel;
    int32_t priority;
    int64_t last_kernel_time;
    uint64_t unused[4];
};

/* Offsets as HAMi's Go reader computes them (Go aligns uint64 to 8). */
_Static_assert(offsetof(struct hami_region, owner_pid) == 16, "owner_pid");
_Static_assert(offsetof(struct hami_region, sem) == 24, "sem");
_Static_assert(offsetof(struct hami_region, device_num) == 56, "device_num");
_Static_assert(offsetof(struct hami_region, uuids) == 64, "uuids");
_Static_assert(offsetof(struct hami_region, limit) == 1600, "limit");
_Static_assert(offsetof(struct hami_region, sm_limit) == 1728, "sm_limit");
_Static_assert(offsetof(struct hami_region, procs) == 1856, "procs");
_Static_assert(sizeof(struct hami_device_memory) == 64, "device_memory");
_Static_assert(sizeof(struct hami_device_util) == 48, "device_util");
_Static_assert(offsetof(struct hami_slot, used) == 8, "slot.used");
_Static_assert(offsetof(struct hami_slot, monitorused) == 1032, "monitorused");
_Static_assert(offsetof(struct hami_slot, device_util) == 1160, "device_util");
_Static_assert(offsetof(struct hami_slot, status) == 1928, "status");
_Static_assert(sizeof(struct hami_slot) == 1960, "slot size");
_Static_assert(offsetof(struct hami_region, procnum) == 2008896, "procnum");
_Static_assert(offsetof(struct hami_region, utilization_switch) == 2008900, "us");
_Static_assert(offsetof(struct hami_region, recent_kernel) == 2008904, "rk");
_Static_assert(offsetof(struct hami_region, priority) == 2008908, "priority");
_Static_assert(offsetof(struct hami_region, last_kernel_time) == 2008912, "lkt");
_Static_assert(sizeof(struct hami_region) == 2008952, "HAMi v1 size");

/* ---- Part 2: vgpu's extension ---- */

#define VGPU_EXT_MAGIC "VGPUREG"   /* 8 bytes with its NUL */
#define VGPU_LAYOUT_VERSION 3
#define VGPU_EXT_OFFSET 2011136    /* sizeof(struct hami_region) rounded up to 4 KiB */
#define VGPU_MODE_AREA 4096        /* bytes reserved for a mode's own state */
#define VGPU_CACHELINE 64

/* Slot ownership word: generation in the high bits, state in the low byte.
 * The generation grows at every claim so that a stale CAS cannot succeed. */
enum vgpu_slot_state {
    SLOT_FREE = 0,
    SLOT_BUSY = 1,       /* owned by a process holding the slot's file lock */
    SLOT_RECLAIMING = 2, /* a reclaimer holds the lock and is emptying it */
};
#define SLOT_STATE(word) ((uint32_t)((word) & 0xff))
#define SLOT_GEN(word) ((word) >> 8)
#define SLOT_WORD(gen, state) (((uint64_t)(gen) << 8) | (uint64_t)(state))

struct vgpu_device_counter {
    uint64_t used;   /* bytes charged on this device by every process */
    uint64_t peak;   /* highest value used ever reached (statistic) */
    uint64_t guesses_until; /* CLOCK_MONOTONIC ns until which a context may
                             * hold a guess of its size (ctxsize.c; 0 in
                             * files made before it: none) */
    uint64_t pad[5]; /* one cache line each: devices do not share lines */
};

struct vgpu_slot_ext {
    uint64_t word;        /* enum vgpu_slot_state + generation */
    int32_t pid;
    int32_t pad;
    uint64_t start_time;  /* reserved: a pid + start-time liveness fallback */
    uint64_t pad2[5];
};

struct vgpu_ext {
    char magic[8];
    uint32_t layout_version;
    uint32_t mode;               /* enum vgpu_mode_id */
    uint64_t file_size;
    uint64_t creator_pid;
    uint64_t reclaims;           /* slots reclaimed from dead processes */
    uint64_t heals;              /* times a leak was healed at 0 processes */
    uint32_t slot_cursor;        /* where the next attach starts its scan */
    uint32_t device_count;
    uint64_t pad[(VGPU_CACHELINE - 56) / 8];
    struct vgpu_device_counter dev[VGPU_MAX_DEVICES];
    /* A primary context's size per device, as the first process measured
     * it, so that the others need not ask NVML (0: not known yet). */
    uint64_t context_bytes[VGPU_MAX_DEVICES];
    struct vgpu_slot_ext slots[VGPU_MAX_SLOTS];
    unsigned char mode_area[VGPU_MODE_AREA];
    /* The compute limit: one GPU-time budget per device, shared by every
     * process of the container (sm_budget.c). Added in layout 3. */
    struct vgpu_sm_budget sm[VGPU_MAX_DEVICES];
};

_Static_assert(VGPU_EXT_OFFSET % 4096 == 0, "ext on a page boundary");
_Static_assert(VGPU_EXT_OFFSET >= sizeof(struct hami_region), "no overlap");
_Static_assert(VGPU_EXT_OFFSET - 4096 < sizeof(struct hami_region), "tight");
_Static_assert(offsetof(struct vgpu_ext, dev) % VGPU_CACHELINE == 0, "dev line");
_Static_assert(sizeof(struct vgpu_slot_ext) == VGPU_CACHELINE, "slot line");
_Static_assert(offsetof(struct vgpu_ext, slots) % VGPU_CACHELINE == 0, "slots line");
_Static_assert(sizeof(struct vgpu_sm_budget) == VGPU_CACHELINE, "budget line");
_Static_assert(offsetof(struct vgpu_ext, sm) % VGPU_CACHELINE == 0, "budget lines");

#define VGPU_FILE_SIZE (VGPU_EXT_OFFSET + sizeof(struct vgpu_ext))
_Static_assert(VGPU_FILE_SIZE != 1197897, "must never look like HAMi v0");

/* Byte offsets of the advisory (open file description) locks. Far past the
 * end of the file so they can never be confused with data. */
#define LOCK_BASE (1ull << 40)
#define LOCK_ATTACH LOCK_BASE                        /* read: attached; write: initializing */
#define LOCK_INIT (LOCK_BASE + 4095)                /* write: repairing a bad file */
#define LOCK_SLOT(i) (LOCK_BASE + 1 + (uint64_t)(i)) /* write: slot i's owner is alive */
#define LOCK_MODE(i) (LOCK_BASE + 4096 + (uint64_t)(i)) /* for modes that need one */

static inline struct vgpu_ext *region_ext(void *base)
{
    return (struct vgpu_ext *)((char *)base + VGPU_EXT_OFFSET);
}

#endif
