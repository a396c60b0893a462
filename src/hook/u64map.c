/* Linear probing, tombstones, doubling at half full. */
#include "hook/u64map.h"

#include <stdlib.h>

static size_t home(const struct u64map *m, uint64_t key)
{
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdull;
    key ^= key >> 33;
    return (size_t)key & (m->capacity - 1);
}

static struct u64map_slot *find(const struct u64map *m, uint64_t key)
{
    if (m->capacity == 0)
        return NULL;
    for (size_t i = home(m, key);; i = (i + 1) & (m->capacity - 1)) {
        struct u64map_slot *s = &m->slots[i];
        if (s->state == 0)
            return NULL;
        if (s->state == 1 && s->key == key)
            return s;
    }
}

static bool grow(struct u64map *m)
{
    struct u64map old = *m;
    size_t capacity = old.capacity ? old.capacity * 2 : 64;
    struct u64map_slot *slots = calloc(capacity, sizeof *slots);
    if (slots == NULL)
        return false;
    *m = (struct u64map){slots, capacity, 0};
    for (size_t i = 0; i < old.capacity; i++)
        if (old.slots[i].state == 1)
            u64map_put(m, old.slots[i].key, old.slots[i].value);
    free(old.slots);
    return true;
}

bool u64map_put(struct u64map *m, uint64_t key, void *value)
{
    struct u64map_slot *s = find(m, key);
    if (s != NULL) {
        s->value = value;
        return true;
    }
    if ((m->filled + 1) * 2 > m->capacity && !grow(m))
        return false;
    size_t i = home(m, key);
    while (m->slots[i].state == 1)
        i = (i + 1) & (m->capacity - 1);
    if (m->slots[i].state == 0)
        m->filled++;
    m->slots[i] = (struct u64map_slot){key, value, 1};
    return true;
}

void *u64map_get(const struct u64map *m, uint64_t key)
{
    struct u64map_slot *s = find(m, key);
    return s ? s->value : NULL;
}

void *u64map_take(struct u64map *m, uint64_t key)
{
    struct u64map_slot *s = find(m, key);
    if (s == NULL)
        return NULL;
    s->state = 2;
    return s->value;
}

void u64map_clear(struct u64map *m)
{
    free(m->slots);
    *m = (struct u64map){NULL, 0, 0};
}
