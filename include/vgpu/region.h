/* The shared region: one memory-mapped file per container where every
 * process of the container charges and uncharges device memory.
 *
 * It knows nothing of CUDA: it charges bytes to device indices (0..15)
 * against per-device limits. Guarantees (see DESIGN.md):
 *  - try_charge checks and charges in one atomic step, so the bytes charged on
 *    a device never exceed its limit, whatever the concurrency;
 *  - attach takes no semaphore and, on its normal path, never sleeps: only
 *    while another process initializes the file (microseconds, under a
 *    lock the kernel releases if it dies) does it poll, for at most 2 s
 *    (that process may be stopped);
 *  - a process killed at any point blocks nobody; its slot and charges are
 *    reclaimed exactly once (at most its in-flight charge leaks, counted too
 *    high, and that is healed when no live process remains);
 *  - charge, uncharge and used are O(1) in the number of processes;
 *  - fail closed: where a limit is configured and the file cannot be used
 *    (or is truncated, deleted, replaced or damaged under the process), the
 *    process counts itself alone against the limit and joins the file again
 *    when it can, carrying its charges (a watcher thread looks once a
 *    second).
 *
 * Caveats: the watcher is a thread of the process (all signals blocked but
 * SIGBUS and SIGSEGV); a SIGBUS handler is installed at the first attach
 * (it acts only on faults inside a region's mapping and passes every other
 * SIGBUS on); a handler the application installs later replaces it.
 *
 * Caveats (the process's lifecycle; src/region/lifecycle.c):
 *  - Exit: at exit (the library's destructor) every slot this process
 *    attached is given back, while other threads may still run until the
 *    kernel stops them. From then on their charges through the handle are
 *    refused (false) and their uncharges dropped. Charges in progress are
 *    waited for, at most 1 s; if one does not finish (a thread stopped
 *    inside it), the slot is left to the crash path below. _exit() and
 *    death by a signal skip the destructor: the crash path.
 *  - Crash: a process that dies holding a slot blocks nobody; the kernel
 *    drops its slot lock and peers reclaim the slot (on a refused charge,
 *    or a few slots at each attach). At most the one charge the dying
 *    thread had in flight stays counted, too high, until a process finds
 *    itself alone in the region (at its next refused charge, or at attach).
 *  - Fork: a child never uses, releases or unlocks its parent's slot, and
 *    never takes a lock another parent thread held at the fork; it claims
 *    a slot of its own on its first charge (a few system calls, as an
 *    attach), and its exit returns only what it charged. The parent's
 *    charges stay the parent's; the child's allocations count against the
 *    same limit. A raw fork system call (no atfork handlers) is detected
 *    too, by a MADV_WIPEONFORK page (Linux 4.14+; getpid() on each charge
 *    where madvise refuses it; where it is accepted but not honoured, as
 *    under qemu-user, such a child charges to the parent's slot, and only
 *    its exit, which checks getpid(), is safe); until its first charge or
 *    its exit such a child keeps a
 *    reference to the parent's open file description, so a parent killed
 *    meanwhile is reclaimed only after the child ends. vfork children
 *    share the parent's memory: exec or _exit only.
 *  - Threads: every call may be made from any thread, except attach,
 *    detach and reset: vgpu_region_detach frees the handle, so no other
 *    thread may use it then (release_slot is the call for exit paths).
 *  - Signals: charge and uncharge take no lock and may be interrupted
 *    anywhere; calling them from a signal handler is not supported (an
 *    exit from a handler that interrupted a charge waits the 1 s bound,
 *    then leaves the slot to the crash path). Attach takes file locks and
 *    allocates: never from a handler.
 *  - Counters never go below zero: an uncharge of more than this process
 *    holds on a device is clamped to what it holds, with one warning.
 */
#ifndef VGPU_REGION_H
#define VGPU_REGION_H

#include <stdbool.h>
#include <stdint.h>

#include "vgpu/config.h"

#define VGPU_MAX_SLOTS 1024

struct vgpu_region;

/* What a charge is for; each kind has its own per-process counter in the
 * HAMi-visible slot and all of them add up into the slot's total. */
enum vgpu_charge_kind {
    VGPU_CHARGE_DATA = 0,    /* buffers: cuMemAlloc and friends */
    VGPU_CHARGE_CONTEXT = 1, /* context creation overhead */
    VGPU_CHARGE_MODULE = 2,  /* loaded modules */
};

struct vgpu_attach_options {
    const char *path;                   /* NULL: CUDA_DEVICE_MEMORY_SHARED_CACHE */
    const char *mode;                   /* NULL: VGPU_REGION_MODE */
    uint64_t limits[VGPU_MAX_DEVICES];  /* 0: unlimited */
    uint32_t sm_limits[VGPU_MAX_DEVICES]; /* compute limit, percent; 0: none */
    int device_count;                   /* devices the creator sees; 0: unknown */
};

/* Fill options from the environment (path, mode, limits). */
void vgpu_attach_options_from_env(struct vgpu_attach_options *opts);

/* Attach this process: open or create the file, claim a slot.
 * When the file cannot be used (one log line says why) and a limit is
 * configured, the handle counts this process alone against that limit (a
 * process-local region) and joins the file again when it can (checked at
 * most once a second, from charges and frees, and before a refusal).
 * Returns NULL only when no limit is configured (the caller runs unlimited)
 * or memory is short. */
struct vgpu_region *vgpu_region_attach(const struct vgpu_attach_options *opts);

/* True while r counts this process alone (see vgpu_region_attach). */
bool vgpu_region_is_local(const struct vgpu_region *r);

/* Release the slot, returning whatever it still holds, and unmap. */
void vgpu_region_detach(struct vgpu_region *r);

/* Give the slot back (returning what it holds) but keep the mapping: later
 * charges through r are refused and uncharges dropped. Waits (at most 1 s)
 * for charges other threads have in progress; if they do not finish, the
 * slot is left to be reclaimed after the process ends. For exit paths; the
 * library calls it for every attached handle at exit. */
void vgpu_region_release_slot(struct vgpu_region *r);

/* Reserve bytes on dev before asking the driver. False: over the limit
 * (after trying to reclaim dead processes' charges once), or the slot was
 * given back (exit). True without accounting when r is NULL. */
bool vgpu_region_try_charge(struct vgpu_region *r, int dev, uint64_t bytes,
                            enum vgpu_charge_kind kind);

/* After the driver call that followed a successful try_charge: driver_ok
 * says whether the driver allocated. (Rolls the reservation back if not.) */
void vgpu_region_settle(struct vgpu_region *r, int dev, uint64_t bytes,
                        enum vgpu_charge_kind kind, bool driver_ok);

/* Return bytes charged earlier by this process (driver free, or driver
 * failure after try_charge). More than it holds on dev: clamped to what it
 * holds (never below zero), with one warning. */
void vgpu_region_uncharge(struct vgpu_region *r, int dev, uint64_t bytes,
                          enum vgpu_charge_kind kind);

/* A primary context's size on dev as one process of the region measured
 * it: 0 while not known (nobody measured yet, or a measurement is under
 * way); VGPU_CONTEXT_ZERO: measured to take nothing. set records a
 * measurement (and ends any claim). */
#define VGPU_CONTEXT_ZERO UINT64_MAX
uint64_t vgpu_region_context_bytes(const struct vgpu_region *r, int dev);
void vgpu_region_set_context_bytes(struct vgpu_region *r, int dev, uint64_t bytes);

/* One measurer per region and device: while the size is not known, claim
 * its measurement. Returns the claim (non-zero) when this process is to
 * measure, then publish with set_context_bytes or give up with unclaim;
 * 0 when the size is known or another process is measuring. A claim whose
 * process died (slot released or unlocked) or that is older than a few
 * seconds (a stopped measurer) lapses: the next creator claims it. */
uint64_t vgpu_region_claim_context(struct vgpu_region *r, int dev);
void vgpu_region_unclaim_context(struct vgpu_region *r, int dev, uint64_t claim);
/* Contexts created with a guess of their size (larger than the size, by
 * design) may hold it until until_ns (CLOCK_MONOTONIC) at the latest,
 * always now + one bound: note_guess sets dev's mark to until_ns;
 * guesses_until reads it. A creation refused before then may wait for the
 * guesses to shrink; a mark further ahead than the bound is stale (a file
 * from before a reboot) and ignored. A killed guesser's mark simply passes. */
void vgpu_region_note_guess(struct vgpu_region *r, int dev, uint64_t until_ns);
uint64_t vgpu_region_guesses_until(const struct vgpu_region *r, int dev);
/* True while a live claim is there (someone is measuring dev's size). */
bool vgpu_region_context_measuring(struct vgpu_region *r, int dev);

/* Bytes this process has charged on dev (its slot's total). */
uint64_t vgpu_region_process_used(const struct vgpu_region *r, int dev);

/* This process's charges on dev at one point: marked before a reading of
 * NVML, unmoved after it says that none of them moved in between (the
 * total alone cannot say so: a charge and its uncharge cancel). */
struct vgpu_process_mark {
    int index;          /* the region's device index (a failover renumbers) */
    uint64_t charged;   /* bytes charged ever, uncharged ever: only grow */
    uint64_t uncharged;
    uint64_t used;      /* their difference: process_used */
};
void vgpu_region_process_mark(struct vgpu_region *r, int dev,
                              struct vgpu_process_mark *m);
bool vgpu_region_process_unmoved(struct vgpu_region *r, int dev,
                                 const struct vgpu_process_mark *m);

/* This process's pid as the host sees it; 0 when it cannot be known. */
int32_t vgpu_host_pid(void);

/* Bytes charged on dev by all processes, and its limit (0: unlimited). */
uint64_t vgpu_region_used(const struct vgpu_region *r, int dev);
uint64_t vgpu_region_limit(const struct vgpu_region *r, int dev);

/* Every function here that takes a device takes the process's own number
 * for it (a CUDA ordinal): the same as the region's (the container's)
 * unless vgpu_region_bind_device said otherwise. */

/* This process's device `local` is the GPU with this UUID: use the region's
 * index of that UUID if recorded, else `index` (the container's number of
 * that GPU, e.g. NVML's index; -1: unknown, then `local` if free, else the
 * first free index) and record the UUID there. Call at attach, before
 * charging. Returns the region's index. */
int vgpu_region_bind_device(struct vgpu_region *r, int local, const char *uuid,
                            int index);

/* The region's index of the GPU with this UUID, -1 if not recorded. */
int vgpu_region_uuid_index(const struct vgpu_region *r, const char *uuid);

/* Record the UUID of the region's device index (first writer wins). Unlike
 * the others, dev is the region's index here. */
void vgpu_region_set_device(struct vgpu_region *r, int dev, const char *uuid);

/* True if dev's recorded UUID is uuid. */
bool vgpu_region_has_uuid(const struct vgpu_region *r, int dev, const char *uuid);

/* Reclaim the slots of dead processes; returns how many were reclaimed. */
int vgpu_region_reclaim(struct vgpu_region *r);

/* This process's slot index, for tools and tests. */
int vgpu_region_slot(const struct vgpu_region *r);

/* The mode the region file was created with. */
const char *vgpu_region_mode(const struct vgpu_region *r);

/* Benchmarks and tests only: take the mode's run-time lock (if it has one)
 * and never give it back, to measure what a process killed holding it
 * costs the others. */
void vgpu_region_debug_hold(struct vgpu_region *r);

/* ---- Inspection, for vgpuctl and monitors: no slot is claimed. ---- */

struct vgpu_snapshot_proc {
    int slot;
    int32_t pid;
    int32_t hostpid;
    bool alive;
    uint64_t used[VGPU_MAX_DEVICES];
};

struct vgpu_snapshot {
    char mode[16];
    int device_count;
    uint64_t limit[VGPU_MAX_DEVICES];
    uint64_t used[VGPU_MAX_DEVICES];
    uint64_t peak[VGPU_MAX_DEVICES];
    char uuid[VGPU_MAX_DEVICES][96];
    /* The compute limit (percent, 0: none) and its budget's statistics. */
    uint32_t sm_limit[VGPU_MAX_DEVICES];
    uint64_t sm_charged_ns[VGPU_MAX_DEVICES]; /* GPU time charged ever */
    uint64_t sm_waited_ns[VGPU_MAX_DEVICES];  /* wall time launches were held */
    int proc_count;
    struct vgpu_snapshot_proc procs[VGPU_MAX_SLOTS];
};

/* Open an existing region for inspection only. NULL with a log line if the
 * file is missing or invalid. */
struct vgpu_region *vgpu_region_open_existing(const char *path);

void vgpu_region_snapshot(struct vgpu_region *r, struct vgpu_snapshot *snap);

/* Number of processes holding slots (alive). */
int vgpu_region_live_count(struct vgpu_region *r);

/* Zero every counter and slot. Refuses (returns false) while a process is
 * attached, unless force. */
bool vgpu_region_reset(struct vgpu_region *r, bool force);

#endif
