/* Open-addressing hash table keyed by address, under one mutex (this is
 * the simulated driver: simple beats fast). */
#include "allocs.h"

#include <pthread.h>
#include <stdlib.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static struct fg_alloc *slots;
static size_t capacity, count, tombstones;

#define EMPTY 0
#define TOMB 1

static size_t hash(uint64_t key)
{
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdull;
    key ^= key >> 33;
    return (size_t)key;
}

static void insert(struct fg_alloc a)
{
    size_t i = hash(a.key) & (capacity - 1);
    while (slots[i].key > TOMB)
        i = (i + 1) & (capacity - 1);
    if (slots[i].key == TOMB)
        tombstones--;
    slots[i] = a;
    count++;
}

static void grow(void)
{
    struct fg_alloc *old = slots;
    size_t old_cap = capacity;
    capacity = capacity ? capacity * 2 : 1024;
    slots = calloc(capacity, sizeof *slots);
    count = tombstones = 0;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].key > TOMB)
            insert(old[i]);
    free(old);
}

/* As with the real driver, a fork child owns none of its parent's
 * allocations (nor can it use its contexts). */
static void forget_all_in_child(void)
{
    free(slots);
    slots = NULL;
    capacity = count = tombstones = 0;
    pthread_mutex_init(&lock, NULL);
}

static void install_atfork(void)
{
    pthread_atfork(NULL, NULL, forget_all_in_child);
}

void allocs_put(struct fg_alloc a)
{
    pthread_once(&atfork_once, install_atfork);
    pthread_mutex_lock(&lock);
    if ((count + tombstones + 1) * 2 > capacity)
        grow();
    insert(a);
    pthread_mutex_unlock(&lock);
}

bool allocs_take(uint64_t key, struct fg_alloc *out)
{
    bool found = false;
    pthread_mutex_lock(&lock);
    if (capacity) {
        size_t i = hash(key) & (capacity - 1);
        while (slots[i].key != EMPTY) {
            if (slots[i].key == key) {
                *out = slots[i];
                slots[i].key = TOMB;
                count--;
                tombstones++;
                found = true;
                break;
            }
            i = (i + 1) & (capacity - 1);
        }
    }
    pthread_mutex_unlock(&lock);
    return found;
}

bool allocs_find_range(uint64_t addr, struct fg_alloc *out)
{
    bool found = false;
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < capacity && !found; i++)
        if (slots[i].key > TOMB && slots[i].kind != FG_ARRAY &&
            addr >= slots[i].key && addr < slots[i].key + slots[i].size) {
            *out = slots[i];
            found = true;
        }
    pthread_mutex_unlock(&lock);
    return found;
}

uint64_t allocs_take_device(int dev) { return allocs_take_owned(dev, NULL); }

uint64_t allocs_take_owned(int dev, const void *owner)
{
    uint64_t bytes = 0;
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < capacity; i++)
        if (slots[i].key > TOMB && slots[i].dev == dev &&
            (owner == NULL || slots[i].owner == owner) &&
            (slots[i].kind == FG_PLAIN || slots[i].kind == FG_ARRAY ||
             slots[i].kind == FG_POOL || slots[i].kind == FG_GRAPH)) {
            if (slots[i].kind != FG_POOL && slots[i].kind != FG_GRAPH)
                bytes += slots[i].size;
            slots[i].key = TOMB;
            count--;
            tombstones++;
        }
    pthread_mutex_unlock(&lock);
    return bytes;
}
