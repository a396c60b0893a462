/* What this process allocated through the driver: key (device pointer, VMM
 * handle or array handle) -> (device, bytes, charge kind). Thread-safe, O(1)
 * per operation. Frees of keys not here pass through untouched. */
#ifndef VGPU_HOOK_LEDGER_H
#define VGPU_HOOK_LEDGER_H

#include <stdbool.h>
#include <stdint.h>

enum ledger_space {
    SPACE_NONE = 0, /* not recorded: the caller keeps the charge */
    SPACE_POINTER = 1,
    SPACE_VMM = 2,
    SPACE_ARRAY = 3,
    SPACE_CONTEXT = 4, /* cuCtxCreate's contexts */
    SPACE_GREEN = 5,   /* green contexts */
    SPACE_MODULE = 6,
    SPACE_LIBRARY = 7,
};

/* Kinds are enum vgpu_charge_kind's values (data, context, module). */
#define LEDGER_KINDS 3

struct ledger_entry {
    int dev;
    int kind;
    uint64_t bytes;
    int pool; /* SPACE_POINTER from a stream-ordered pool: its record + 1
               * (pools.c charges the pool, not the entry); else 0 */
    uint64_t ctx; /* made in a cuCtxCreate context, which frees it when it is
                   * destroyed (and a primary context's reset does not): that
                   * context; else 0 */
};

void ledger_put(enum ledger_space space, uint64_t key, struct ledger_entry e);
bool ledger_take(enum ledger_space space, uint64_t key, struct ledger_entry *e);
/* Read without taking. */
bool ledger_get(enum ledger_space space, uint64_t key, struct ledger_entry *e);
/* Forget every entry on device dev that a primary context's reset frees,
 * adding their bytes to bytes[kind]: not other contexts, nor what was made
 * in one (ctx), nor VMM memory (it lives until its handle is released). */
void ledger_drop_device(int dev, uint64_t bytes[LEDGER_KINDS]);
/* Forget every entry made in context ctx (its destruction freed them),
 * adding their bytes to bytes[kind] per device: bytes[dev][kind]. */
void ledger_drop_context(uint64_t ctx, uint64_t bytes[][LEDGER_KINDS]);

/* In a fork child (single-threaded, in the atfork handler): forget every
 * entry, without taking a lock another parent thread may have held. */
void ledger_reset_after_fork(void);

#endif
