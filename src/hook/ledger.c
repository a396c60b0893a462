/* A chained hash table split into shards, each under its own mutex: two
 * threads contend only when they touch the same shard. The mutexes are
 * initialized statically: nothing runs once, so a fork child never waits
 * on a once-routine or lock that another parent thread was in. */
#include "hook/ledger.h"

#include <pthread.h>
#include <stdlib.h>

#include "vgpu/region.h"

#define SHARDS 64
#define BUCKETS 1024 /* per shard; chains grow beyond */

struct node {
    uint64_t key;
    enum ledger_space space;
    struct ledger_entry e;
    struct node *next;
};

static struct shard {
    pthread_mutex_t lock;
    struct node *buckets[BUCKETS];
} shards[SHARDS] = {[0 ... SHARDS - 1] = {.lock = PTHREAD_MUTEX_INITIALIZER}};

static uint64_t mix(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ull;
    return k ^ (k >> 33);
}

static struct node **bucket(struct shard **s, enum ledger_space space, uint64_t key)
{
    uint64_t h = mix(key * 4 + (uint64_t)space);
    *s = &shards[h % SHARDS];
    return &(*s)->buckets[(h / SHARDS) % BUCKETS];
}

void ledger_put(enum ledger_space space, uint64_t key, struct ledger_entry e)
{
    struct node *n = malloc(sizeof *n);
    if (n == NULL)
        return; /* cannot track: its free will pass through uncharged */
    struct shard *s;
    struct node **head = bucket(&s, space, key);
    n->key = key;
    n->space = space;
    n->e = e;
    pthread_mutex_lock(&s->lock);
    n->next = *head;
    *head = n;
    pthread_mutex_unlock(&s->lock);
}

bool ledger_take(enum ledger_space space, uint64_t key, struct ledger_entry *e)
{
    struct shard *s;
    struct node **p = bucket(&s, space, key);
    struct node *found = NULL;
    pthread_mutex_lock(&s->lock);
    for (; *p != NULL; p = &(*p)->next)
        if ((*p)->key == key && (*p)->space == space) {
            found = *p;
            *p = found->next;
            break;
        }
    pthread_mutex_unlock(&s->lock);
    if (found == NULL)
        return false;
    *e = found->e;
    free(found);
    return true;
}

void ledger_drop_context(uint64_t ctx, uint64_t bytes[][LEDGER_KINDS])
{
    for (int i = 0; i < SHARDS && ctx != 0; i++) {
        pthread_mutex_lock(&shards[i].lock);
        for (int b = 0; b < BUCKETS; b++)
            for (struct node **p = &shards[i].buckets[b]; *p != NULL;) {
                struct node *n = *p;
                if (n->e.ctx != ctx) {
                    p = &n->next;
                    continue;
                }
                if (n->e.dev >= 0 && n->e.dev < VGPU_MAX_DEVICES && n->e.kind >= 0 &&
                    n->e.kind < LEDGER_KINDS && n->e.pool == 0)
                    bytes[n->e.dev][n->e.kind] += n->e.bytes;
                *p = n->next;
                free(n);
            }
        pthread_mutex_unlock(&shards[i].lock);
    }
}

bool ledger_get(enum ledger_space space, uint64_t key, struct ledger_entry *e)
{
    struct shard *s;
    struct node **p = bucket(&s, space, key);
    bool found = false;
    pthread_mutex_lock(&s->lock);
    for (; *p != NULL; p = &(*p)->next)
        if ((*p)->key == key && (*p)->space == space) {
            *e = (*p)->e;
            found = true;
            break;
        }
    pthread_mutex_unlock(&s->lock);
    return found;
}

void ledger_reset_after_fork(void)
{
    /* Another parent thread may have held a shard's lock at the fork: the
     * child makes the locks anew instead of taking them. Every chain is
     * still a list (each change of it is one pointer store), so its nodes
     * are freed; a node another thread had just unlinked is lost with that
     * thread. */
    for (int i = 0; i < SHARDS; i++) {
        pthread_mutex_init(&shards[i].lock, NULL);
        for (int b = 0; b < BUCKETS; b++) {
            struct node *n = shards[i].buckets[b];
            shards[i].buckets[b] = NULL;
            while (n != NULL) {
                struct node *next = n->next;
                free(n);
                n = next;
            }
        }
    }
}

void ledger_drop_device(int dev, uint64_t bytes[LEDGER_KINDS])
{
    for (int i = 0; i < SHARDS; i++) {
        pthread_mutex_lock(&shards[i].lock);
        for (int b = 0; b < BUCKETS; b++)
            for (struct node **p = &shards[i].buckets[b]; *p != NULL;) {
                struct node *n = *p;
                if (n->e.dev != dev || n->e.ctx != 0 || n->space == SPACE_CONTEXT ||
                    n->space == SPACE_GREEN || n->space == SPACE_VMM) {
                    p = &n->next;
                    continue;
                }
                /* A pool's allocations are charged to the pool, whose
                 * own reset returns them (pools_drop_device). */
                if (n->e.kind >= 0 && n->e.kind < LEDGER_KINDS && n->e.pool == 0)
                    bytes[n->e.kind] += n->e.bytes;
                *p = n->next;
                free(n);
            }
        pthread_mutex_unlock(&shards[i].lock);
    }
}
