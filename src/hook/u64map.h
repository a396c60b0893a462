/* A small open-addressing map from 64-bit keys to pointers, for the hooks'
 * own tables (VMM handles, mappings, exports). Not thread-safe: the caller
 * holds its lock. */
#ifndef VGPU_HOOK_U64MAP_H
#define VGPU_HOOK_U64MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct u64map_slot {
    uint64_t key;
    void *value;
    uint8_t state; /* 0 empty, 1 full, 2 deleted */
};

struct u64map {
    struct u64map_slot *slots;
    size_t capacity; /* a power of two, or 0 */
    size_t filled;   /* full + deleted */
};

/* Set key to value (replacing). False: out of memory (nothing changed). */
bool u64map_put(struct u64map *m, uint64_t key, void *value);
/* The value of key, or NULL. */
void *u64map_get(const struct u64map *m, uint64_t key);
/* Remove key; its value, or NULL. */
void *u64map_take(struct u64map *m, uint64_t key);
/* Forget everything (values are the caller's). */
void u64map_clear(struct u64map *m);

/* Every full slot: for (i = 0; i < m->capacity; i++) if full(m, i) ... */
static inline bool u64map_full(const struct u64map *m, size_t i)
{
    return m->slots[i].state == 1;
}

#endif
