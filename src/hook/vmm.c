/* Virtual memory management. Physical memory (cuMemCreate, charged to its
 * location's device before the driver is asked) lives until its last
 * reference goes, as in the driver: every handle to it (the one cuMemCreate
 * made, each cuMemRetainAllocationHandle, each import in this process of a
 * handle it exported) and every mapping (cuMemMap until cuMemUnmap). So
 * each physical allocation keeps a count of those and is uncharged when the
 * count reaches zero, not at cuMemRelease. Address reservations take no
 * memory. A handle imported from another process names memory that process
 * charged: not charged again here (nor kept alive in its count). A context
 * reset does not free VMM memory: it stays charged. */
#include <pthread.h>
#include <stdlib.h>

#include "hook/account.h"
#include "hook/charge.h"
#include "hook/real.h"
#include "hook/u64map.h"
#include "log.h"

#define EXPORT __attribute__((visibility("default")))

struct memory {
    int dev;
    uint64_t bytes;
    uint64_t refs; /* handles + mappings */
};

struct handle {
    struct memory *mem;
    uint64_t count; /* the driver may hand out one value more than once */
};

struct mapping {
    struct memory *mem; /* NULL: memory that is not ours (imported) */
    uint64_t size;
};

/* Under one lock: VMM calls are few and slow (2 MiB granularity). */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct u64map handles;  /* handle -> struct handle */
static struct u64map mappings; /* va -> struct mapping */
static struct u64map exports;  /* exported file descriptor -> struct memory */
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void free_values(struct u64map *m)
{
    for (size_t i = 0; i < m->capacity; i++)
        if (u64map_full(m, i))
            free(m->slots[i].value);
    u64map_clear(m);
}

/* A fork child holds none of its parent's VMM memory. (The records of the
 * memory itself stay allocated: they are the parent's.) */
static void forget_in_child(void)
{
    pthread_mutex_init(&lock, NULL);
    free_values(&handles);
    free_values(&mappings);
    u64map_clear(&exports);
}

static void init(void)
{
    pthread_atfork(NULL, NULL, forget_in_child);
}

static void lock_vmm(void)
{
    pthread_once(&once, init);
    pthread_mutex_lock(&lock);
}

/* Drop one reference; the last one uncharges. Caller holds the lock. */
static void put(struct memory *m)
{
    if (m == NULL || --m->refs > 0)
        return;
    vgpu_region_uncharge(account_region(), m->dev, m->bytes, VGPU_CHARGE_DATA);
    for (size_t i = 0; i < exports.capacity; i++)
        if (u64map_full(&exports, i) && exports.slots[i].value == m)
            u64map_take(&exports, exports.slots[i].key);
    free(m);
}

/* Record one more handle of value h to m. False: it cannot be tracked.
 * Caller holds the lock. */
static bool record_handle(uint64_t h, struct memory *m)
{
    struct handle *e = u64map_get(&handles, h);
    if (e == NULL) {
        e = calloc(1, sizeof *e);
        if (e == NULL || !u64map_put(&handles, h, e)) {
            free(e);
            return false;
        }
        e->mem = m;
    }
    e->count++;
    return true;
}

/* One more handle of value h to m, and its reference (none where it cannot
 * be tracked). Caller holds the lock. */
static void add_handle(uint64_t h, struct memory *m)
{
    if (record_handle(h, m))
        m->refs++;
}

EXPORT CUresult cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size,
                            const CUmemAllocationProp *prop,
                            unsigned long long flags)
{
    NEED(cuMemCreate);
    /* Host or NUMA locations are not device memory: not accounted. */
    int dev = (prop && prop->location.type == CU_MEM_LOCATION_TYPE_DEVICE)
                  ? prop->location.id : -1;
    struct charge c;
    if (!charge_begin(&c, dev, size, VGPU_CHARGE_DATA))
        return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult rc = REAL(cuMemCreate)(handle, size, prop, flags);
    struct memory *m = NULL;
    if (rc == CUDA_SUCCESS && c.dev >= 0 && (m = calloc(1, sizeof *m)) != NULL) {
        *m = (struct memory){c.dev, size, 0};
        lock_vmm();
        add_handle(*handle, m);
        if (m->refs == 0) { /* not tracked: charged as long as we can tell */
            free(m);
            m = NULL;
        }
        pthread_mutex_unlock(&lock);
    }
    /* Kept only where a record will return it; else rolled back. */
    charge_end(&c, m != NULL, SPACE_NONE, 0);
    return rc;
}

/* Let go of one handle of value h and return its memory (NULL: not ours),
 * whose reference the caller still holds. Caller holds the lock. */
static struct memory *take_handle(uint64_t h)
{
    struct handle *e = u64map_get(&handles, h);
    if (e == NULL)
        return NULL;
    struct memory *m = e->mem;
    if (--e->count == 0) {
        u64map_take(&handles, h);
        free(e);
    }
    return m;
}

/* After the driver refused to release handle h of m: whether h still
 * holds m, recorded again. Not where the driver says there is no such
 * handle (another thread released it meanwhile) or h's value is another
 * memory's by now. Kept, unrecorded, where it cannot be recorded (charged
 * until the process ends: fail closed). Caller holds the lock. */
static bool handle_kept(CUresult rc, uint64_t h, struct memory *m)
{
    struct handle *e = u64map_get(&handles, h);
    if (rc == CUDA_ERROR_INVALID_VALUE || rc == CUDA_ERROR_INVALID_HANDLE ||
        (e != NULL && e->mem != m))
        return false;
    if (!record_handle(h, m))
        log_warn("a VMM handle the driver kept cannot be tracked again: its "
                 "memory stays charged until the process ends");
    return true;
}

/* The handle's record goes before the driver is asked: once the driver
 * has released it, it may hand the same value to another thread's
 * cuMemCreate, whose record must not find this one. Put back if the
 * driver refuses. */
EXPORT CUresult cuMemRelease(CUmemGenericAllocationHandle handle)
{
    NEED(cuMemRelease);
    lock_vmm();
    struct memory *m = take_handle(handle);
    pthread_mutex_unlock(&lock);
    if (m == NULL)
        return REAL(cuMemRelease)(handle);
    release_begin(); /* its memory may go (see charge.h) */
    CUresult rc = REAL(cuMemRelease)(handle);
    lock_vmm();
    if (rc == CUDA_SUCCESS || !handle_kept(rc, handle, m))
        put(m);
    pthread_mutex_unlock(&lock);
    release_end();
    return rc;
}

EXPORT CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset,
                         CUmemGenericAllocationHandle handle,
                         unsigned long long flags)
{
    NEED(cuMemMap);
    CUresult rc = REAL(cuMemMap)(ptr, size, offset, handle, flags);
    if (rc != CUDA_SUCCESS)
        return rc;
    lock_vmm();
    struct handle *e = u64map_get(&handles, handle);
    struct mapping *mp = malloc(sizeof *mp);
    if (mp != NULL) {
        /* Every mapping is recorded, ours or not, so that an unmap of a
         * range can walk it mapping by mapping. */
        *mp = (struct mapping){e ? e->mem : NULL, size};
        free(u64map_take(&mappings, ptr));
        if (!u64map_put(&mappings, ptr, mp)) {
            free(mp);
        } else if (mp->mem != NULL) {
            mp->mem->refs++;
        }
    }
    pthread_mutex_unlock(&lock);
    return rc;
}

/* The recorded mapping containing va (a scan: for the rare calls that name
 * an address inside a mapping). Caller holds the lock. */
static struct u64map_slot *mapping_at(uint64_t va)
{
    for (size_t i = 0; i < mappings.capacity; i++) {
        struct u64map_slot *s = &mappings.slots[i];
        struct mapping *mp = s->value;
        if (u64map_full(&mappings, i) && va >= s->key && va - s->key < mp->size)
            return s;
    }
    return NULL;
}

EXPORT CUresult cuMemUnmap(CUdeviceptr ptr, size_t size)
{
    NEED(cuMemUnmap);
    release_begin(); /* a last mapping's memory may go (see charge.h) */
    CUresult rc = REAL(cuMemUnmap)(ptr, size);
    if (rc != CUDA_SUCCESS) {
        release_end();
        return rc;
    }
    /* The range covers whole mappings, one after the other; if the walk
     * meets an address it does not know, every mapping starting in the
     * rest of the range goes. */
    lock_vmm();
    uint64_t end = ptr + size, va = ptr;
    for (struct mapping *mp; va < end && (mp = u64map_take(&mappings, va)) != NULL;) {
        va += mp->size;
        put(mp->mem);
        free(mp);
    }
    for (size_t i = 0; va < end && i < mappings.capacity; i++) {
        struct u64map_slot *s = &mappings.slots[i];
        if (u64map_full(&mappings, i) && s->key >= va && s->key < end) {
            struct mapping *mp = u64map_take(&mappings, s->key);
            put(mp->mem);
            free(mp);
        }
    }
    pthread_mutex_unlock(&lock);
    release_end();
    return rc;
}

EXPORT CUresult cuMemRetainAllocationHandle(CUmemGenericAllocationHandle *handle,
                                            void *addr)
{
    NEED(cuMemRetainAllocationHandle);
    CUresult rc = REAL(cuMemRetainAllocationHandle)(handle, addr);
    if (rc != CUDA_SUCCESS)
        return rc;
    lock_vmm();
    struct handle *e = u64map_get(&handles, *handle);
    struct u64map_slot *s = e ? NULL : mapping_at((uint64_t)(uintptr_t)addr);
    struct memory *m = e ? e->mem : s ? ((struct mapping *)s->value)->mem : NULL;
    if (m != NULL)
        add_handle(*handle, m);
    pthread_mutex_unlock(&lock);
    return rc;
}

EXPORT CUresult cuMemExportToShareableHandle(void *shareable,
                                             CUmemGenericAllocationHandle handle,
                                             CUmemAllocationHandleType type,
                                             unsigned long long flags)
{
    NEED(cuMemExportToShareableHandle);
    CUresult rc = REAL(cuMemExportToShareableHandle)(shareable, handle, type, flags);
    if (rc != CUDA_SUCCESS || type != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)
        return rc;
    /* A file descriptor: an import of it in this process is this memory. */
    lock_vmm();
    struct handle *e = u64map_get(&handles, handle);
    if (e != NULL)
        u64map_put(&exports, (uint64_t)(unsigned int)*(int *)shareable, e->mem);
    pthread_mutex_unlock(&lock);
    return rc;
}

EXPORT CUresult cuMemImportFromShareableHandle(CUmemGenericAllocationHandle *handle,
                                               void *os_handle,
                                               CUmemAllocationHandleType type)
{
    NEED(cuMemImportFromShareableHandle);
    CUresult rc = REAL(cuMemImportFromShareableHandle)(handle, os_handle, type);
    if (rc != CUDA_SUCCESS || type != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)
        return rc;
    lock_vmm();
    struct memory *m =
        u64map_get(&exports, (uint64_t)(unsigned int)(uintptr_t)os_handle);
    if (m != NULL)
        add_handle(*handle, m);
    pthread_mutex_unlock(&lock);
    return rc;
}
