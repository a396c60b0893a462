/* What the region's own files share; nothing outside src/region includes it. */
#ifndef VGPU_REGION_INTERNAL_H
#define VGPU_REGION_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "atomic.h"
#include "layout.h"
#include "vgpu/region.h"

/* The synchronization of charges: one small interface, so the seed's
 * remedies can sit beside ours (src/region/modes/) without callers knowing.
 * try_charge is called before the driver; settle after it (ok: the driver
 * allocated; !ok: it failed). A mode that reserves in try_charge rolls back
 * in settle(!ok); a check-then-act mode adds in settle(ok). */
struct region_mode_ops {
    const char *name;
    /* Charges go through vgpu_ext.dev[] (ours); the seed's modes count only
     * in the slots, so reclaim must not touch dev[] for them. */
    bool device_counters;
    /* Optional: set up the mode's locks in a fresh (or healed) file. */
    void (*init)(struct vgpu_region *r);
    /* Optional: around claiming or releasing a slot (the seed's modes take
     * their semaphore and start-up lock file there). */
    void (*slots_enter)(struct vgpu_region *r);
    void (*slots_exit)(struct vgpu_region *r);
    /* Benchmarks only: take the runtime lock and never give it back. */
    void (*hold)(struct vgpu_region *r);
    bool (*try_charge)(struct vgpu_region *r, int dev, uint64_t bytes,
                       enum vgpu_charge_kind kind);
    void (*settle)(struct vgpu_region *r, int dev, uint64_t bytes,
                   enum vgpu_charge_kind kind, bool ok);
    void (*uncharge)(struct vgpu_region *r, int dev, uint64_t bytes,
                     enum vgpu_charge_kind kind);
    uint64_t (*used)(const struct vgpu_region *r, int dev);
};

enum vgpu_mode_id {
    MODE_DEFAULT = 0,
    MODE_LEGACY,
    MODE_TIMEOUTS,
    MODE_PER_PROCESS,
    MODE_RWLOCK,
    MODE_ATOMICS,
    MODE_SEQLOCK,
    MODE_COUNT
};

extern const struct region_mode_ops mode_default_ops;
extern const struct region_mode_ops mode_legacy_ops;
extern const struct region_mode_ops mode_timeouts_ops;
extern const struct region_mode_ops mode_per_process_ops;
extern const struct region_mode_ops mode_rwlock_ops;
extern const struct region_mode_ops mode_atomics_ops;
extern const struct region_mode_ops mode_seqlock_ops;

/* Shared by the modes (charge.c): would used + bytes pass limit (or wrap)?
 * And this process's slot counters for dev (kind and total). Subtractions
 * stop at zero: slot_take returns what it took (warning once if that is
 * less than asked), counter_sub_clamped takes at most *counter, device_sub
 * takes from dev's counter the same way. */
bool charge_exceeds(uint64_t used, uint64_t bytes, uint64_t limit);
void slot_add(struct vgpu_region *r, int dev, uint64_t bytes,
              enum vgpu_charge_kind kind);
uint64_t slot_take(struct vgpu_region *r, int dev, uint64_t bytes,
                   enum vgpu_charge_kind kind);
void slot_sub(struct vgpu_region *r, int dev, uint64_t bytes,
              enum vgpu_charge_kind kind);
uint64_t counter_sub_clamped(uint64_t *counter, uint64_t bytes);
void device_sub(struct vgpu_region *r, int dev, uint64_t bytes);

/* Sum of every slot's total on dev, lock-free (modes/seed.c): HAMi-core's
 * usage read, and the inspectors' for modes without device counters. */
uint64_t region_slots_sum(const struct vgpu_region *r, int dev);

/* The ops of a mode id, or NULL. */
const struct region_mode_ops *mode_ops(uint32_t id);
/* The id of a mode name, or -1. */
int mode_id(const char *name);

struct vgpu_region {
    void *base;
    int fd;
    struct hami_region *hami;
    struct vgpu_ext *ext;
    const struct region_mode_ops *ops;
    int slot;            /* -1: inspecting only, or no slot */
    bool holds_attach;   /* this handle holds the LOCK_ATTACH read lock */
    bool tracked;        /* attached (lifecycle.c): may charge, forks, exits */
    uint32_t want_mode;  /* the mode this process asked for */
    char path[4096];
    /* This process's device number -> the region's index + 1 (0: the same
     * number); set at attach (devices.c). */
    int8_t device_index[VGPU_MAX_DEVICES];
    /* ---- Fail closed (local.c, failover.c, truncation.c) ---- */
    int local;           /* 1: base holds a process-local region, not the file */
    int lost;            /* 1: the SIGBUS guard put a local region in place */
    uint64_t move_gate;  /* charges in flight, plus MOVE_CLOSED (failover.c) */
    /* Slots a thread of ours is reclaiming (slots.c): our threads share
     * the slot locks, so these keep them out of each other's way. */
    uint64_t reclaiming[VGPU_MAX_SLOTS / 64];
    dev_t file_dev;      /* the file joined, to see it deleted or replaced */
    ino_t file_ino;
    int32_t hostpid;
    /* This process's charges by device and kind, in process memory: what a
     * local region starts from, what a rejoin carries over, and what the
     * hooks compare with NVML (region_own, api.c). Two counters that only
     * grow, bytes charged and bytes uncharged: what is held is their
     * difference, and the counters read alike twice say that nothing moved
     * in between (a charge and its uncharge leave the difference where it
     * was, not the counters). */
    uint64_t own_in[VGPU_MAX_DEVICES][3];
    uint64_t own_out[VGPU_MAX_DEVICES][3];
    /* Last known limits, UUIDs and context sizes (copies of the region's):
     * what a local region made after the file vanished starts from. */
    uint64_t limits[VGPU_MAX_DEVICES];
    uint32_t sm_limits[VGPU_MAX_DEVICES]; /* compute limits, percent */
    uint64_t context_bytes[VGPU_MAX_DEVICES];
    char uuids[VGPU_MAX_DEVICES][HAMI_UUID_LEN];
    /* lifecycle.c: the process that owns the slot (a fork child sees its
     * parent's pid here until it claims its own), and closing: the gate's
     * state (running, shut by exit, paused by a heal). */
    int32_t pid;
    int closing;
    int healing;         /* a thread of this process is healing (lifecycle.c) */
};

/* The region's index of this process's device dev (devices.c). */
int region_index(const struct vgpu_region *r, int dev);

enum validate_result { FILE_EMPTY, FILE_VALID, FILE_INVALID };

/* Check a region image; on FILE_INVALID, *why says what is wrong. */
enum validate_result region_validate(const void *data, size_t size,
                                     const char **why);

/* Open the file with all of the bad-input checks; -1 after one log line. */
int region_open_file(const char *path, bool create);
/* Map fd; NULL after a log line. */
void *region_map(int fd);
/* Write a fresh region into fd (caller holds LOCK_ATTACH for writing). */
bool region_initialize(int fd, const struct vgpu_attach_options *opts,
                       uint32_t mode);

/* Slots (slots.c). */
int slot_claim(struct vgpu_region *r);
/* Give r's slot back (the caller holds the mode's slot-table lock where
 * it needs one: exit does; a move does not wait for it). */
void slot_release(struct vgpu_region *r);
bool slot_owner_alive(struct vgpu_region *r, int i);
bool slot_try_reclaim(struct vgpu_region *r, int i);
void slots_reclaim_window(struct vgpu_region *r, int count);
void slot_empty_counters(struct vgpu_region *r, int i);

/* Joining the shared file (attach.c): open, lock, map, claim; false after
 * one log line (none when quiet). wait: a stopped or dead initializer may
 * cost up to LOCK_WAIT_MS; without it nothing waits (rejoin attempts). */
bool region_join_shared(struct vgpu_region *r,
                        const struct vgpu_attach_options *opts, bool wait,
                        bool quiet);

/* What follows a refused attach, at the end of its one log line (file.c):
 * set by the attach path for the calling thread. */
enum refusal { REFUSAL_INSPECT, REFUSAL_UNLIMITED, REFUSAL_LOCAL, REFUSAL_QUIET };
void region_refusal_set(enum refusal what);
void region_refuse(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* True when some device has a limit, of memory or of compute: such a
 * process enforces it alone when the file cannot be used. */
bool region_limits_set(const struct vgpu_attach_options *opts);

/* Process-local regions (local.c). local_start maps a new one for a handle
 * with no mapping; local_install puts one at r->base in place of whatever
 * is there, in one step (mremap), from region_own and r->limits. The fill is
 * async-signal-safe (the SIGBUS guard uses it). */
bool local_start(struct vgpu_region *r);
bool local_install(struct vgpu_region *r);
void *local_build(const struct vgpu_region *r);
/* Copy the limits, UUIDs and context sizes of an intact mapping into r. */
void local_remember(struct vgpu_region *r);

/* Moving between the shared region and local accounting (failover.c):
 * ops on a region bracket themselves with op_enter/op_exit so that a move
 * never happens under them; check_now looks at the file and moves if
 * needed (the watcher thread, every second; a charge, before refusing). */
#define MOVE_CLOSED (1ull << 63)
void region_op_enter(struct vgpu_region *r);
void region_op_exit(struct vgpu_region *r);
bool region_check_now(struct vgpu_region *r);
/* Watch r from a thread of the process (started once per process). */
void region_watch(struct vgpu_region *r);
void region_unwatch(struct vgpu_region *r);

/* The SIGBUS guard (truncation.c): faults inside a registered region's
 * mapping are answered by a local region instead of killing the process. */
void truncation_guard_add(struct vgpu_region *r);
void truncation_guard_remove(struct vgpu_region *r);

/* Open, lock, map and claim a slot into r, or a process-local region
 * where a limit is set and the file cannot be used (attach.c); false
 * after a log line. */
bool region_join(struct vgpu_region *r, const struct vgpu_attach_options *opts);

/* The process's lifecycle (lifecycle.c). track: r was attached by this
 * process (fork and exit now handle it). enter/leave: around every charge,
 * settle and uncharge; enter claims a slot first in a fork child.
 * GATE_OPEN: go on, then leave; GATE_NO_SLOT: this process has no slot
 * (nothing to account); GATE_CLOSED: the slot was given back (exit):
 * refuse charges, drop uncharges. */
enum gate { GATE_OPEN, GATE_NO_SLOT, GATE_CLOSED };
void lifecycle_track(struct vgpu_region *r);
enum gate lifecycle_enter(struct vgpu_region *r);
void lifecycle_leave(struct vgpu_region *r);
/* After a refusal, outside the gate: if this process is the only one
 * attached, pause its own operations and heal what killed processes left
 * counted (region_heal_alive). True if something was healed. */
bool lifecycle_heal_alone(struct vgpu_region *r);
/* A move (failover.c) swaps r's file and slot while exit may be giving
 * that slot back: hold exit off for the swap. False, holding nothing, if
 * exit has begun or is under way (or the lock is busy a moment): the move
 * waits for the next check. Never waits. */
bool lifecycle_hold_exit(struct vgpu_region *r);
/* Exit gave the slot back (or is giving it back): nothing to move. */
bool lifecycle_exited(struct vgpu_region *r);
void lifecycle_allow_exit(void);
/* slots.c: with every other process gone and our operations paused,
 * reclaim every other slot and set each device's counter to what our
 * slot holds. True if a counter came down. */
bool region_heal_alive(struct vgpu_region *r);

/* Context sizes (ctxsize.c): v as a size (a claim is none: 0), for
 * copies of the sizes; and claims dropped: all (no process is attached),
 * or those that lapsed (this process is alone). */
uint64_t region_context_size(uint64_t v);
void region_context_claims_drop(struct vgpu_region *r, bool all);

/* Region-wide heal when no process is attached (caller holds LOCK_ATTACH
 * for writing). */
void region_heal(struct vgpu_region *r);

/* The host's pid of this process, 0 if not visible (proc.c): found once
 * per process, on first use; proc_host_pid_known() never reads /proc and
 * says 0 until it has been found. */
int32_t proc_host_pid(void);
int32_t proc_host_pid_known(void);
bool proc_host_pid_is_known(void);

/* Write this process's host pid into the slots it holds (attach.c). */
void region_publish_host_pid(int32_t hostpid);

/* What this process holds on the region's device index d, of kind k.
 * `out` first, with acquire: the `in` read after it is at least the one
 * its writer capped it with (region_own_sub), so the difference is never
 * negative. Both wrap alike (after 16 EiB), so it stays right. */
static inline uint64_t region_own(const struct vgpu_region *r, int d, int k)
{
    uint64_t out = atomic_load_n(&r->own_out[d][k], ACQUIRE); /* see above */
    return atomic_load_n(&r->own_in[d][k], RELAXED) - out;
}

/* Charge and uncharge them (api.c). */
void region_own_add(struct vgpu_region *r, int dev, uint64_t bytes,
                    enum vgpu_charge_kind kind);
void region_own_sub(struct vgpu_region *r, int dev, uint64_t bytes,
                    enum vgpu_charge_kind kind);

#endif
