/* The simulated driver's modules and libraries. Loading an image takes its
 * static device data on the current context's device, as the driver does:
 * the cubin's (ELF) .nv.global (NOBITS), .nv.global.init and module
 * constant banks (.nv.constant1 and up), read from its section headers; a
 * fatbin container loads its ELF entry for this device (sm_90), else its
 * first. FAKEGPU_LAZY_CODE_BYTES: code loaded lazily, taken by a module the
 * first time a function of it is asked for (cuModuleGetFunction), as the
 * driver's lazy loading does at first use. Unload gives it all back; so
 * does a reset of the primary context for the modules loaded in it. */
#include <cuda.h>
#include <elf.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fakegpu.h"

#define EXPORT __attribute__((visibility("default")))
#define MAX_MODULES 256

struct fg_module {
    int used;
    int physical;
    int lazy_taken;
    uint64_t bytes; /* taken so far */
};

static struct fg_module modules[MAX_MODULES];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static int section_counts(const char *name)
{
    if (!strcmp(name, ".nv.global") || !strcmp(name, ".nv.global.init"))
        return 1;
    return !strncmp(name, ".nv.constant", 12) && name[12] >= '1' && name[12] <= '9';
}

static uint64_t elf_bytes(const unsigned char *p, uint64_t size)
{
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)p;
    if (size < sizeof *eh || memcmp(p, ELFMAG, SELFMAG) ||
        eh->e_shoff + (uint64_t)eh->e_shnum * sizeof(Elf64_Shdr) > size ||
        eh->e_shstrndx >= eh->e_shnum)
        return 0;
    const Elf64_Shdr *sh = (const Elf64_Shdr *)(p + eh->e_shoff);
    const char *names = (const char *)p + sh[eh->e_shstrndx].sh_offset;
    uint64_t bytes = 0;
    for (int i = 0; i < eh->e_shnum; i++)
        if (section_counts(names + sh[i].sh_name))
            bytes += sh[i].sh_size;
    return bytes;
}

/* Fatbin container: 16-byte header, then entries of {kind u16, u16,
 * header size u32, payload size u64, ..., arch u32 at byte 28}. */
static uint64_t image_bytes(const void *image, uint64_t size)
{
    const unsigned char *p = image;
    uint32_t magic;
    memcpy(&magic, p, 4);
    if (magic == 0x466243B1u) { /* the runtime's wrapper */
        const void *data;
        memcpy(&data, p + 8, sizeof data);
        return data ? image_bytes(data, 0) : 0;
    }
    if (magic != 0xBA55ED50u)
        return elf_bytes(p, size ? size : UINT32_MAX);
    uint16_t first;
    uint64_t total;
    memcpy(&first, p + 6, 2);
    memcpy(&total, p + 8, 8);
    uint64_t chosen = 0, off = first;
    int found = 0;
    while (off + 32 <= first + total) {
        uint16_t kind;
        uint32_t hsize, arch;
        uint64_t psize;
        memcpy(&kind, p + off, 2);
        memcpy(&hsize, p + off + 4, 4);
        memcpy(&psize, p + off + 8, 8);
        memcpy(&arch, p + off + 28, 4);
        if (hsize == 0)
            break;
        if (kind == 2 && (!found || arch == 90)) {
            chosen = elf_bytes(p + off + hsize, psize);
            found = 1;
        }
        off += hsize + psize;
    }
    return chosen;
}

static int current_physical(void)
{
    CUdevice dev;
    return fg_physical(cuCtxGetDevice(&dev) == CUDA_SUCCESS ? dev : 0);
}

static CUresult load(void **out, const void *image, uint64_t size)
{
    if (out == NULL || image == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (fg_should_fail("cuModuleLoad"))
        return CUDA_ERROR_UNKNOWN;
    int physical = current_physical();
    uint64_t bytes = image_bytes(image, size);
    if (physical < 0)
        return CUDA_ERROR_INVALID_CONTEXT;
    if (bytes && !fg_reserve(physical, bytes))
        return CUDA_ERROR_OUT_OF_MEMORY;
    pthread_mutex_lock(&lock);
    int i = 0;
    while (i < MAX_MODULES && modules[i].used)
        i++;
    if (i < MAX_MODULES)
        modules[i] = (struct fg_module){1, physical, 0, bytes};
    pthread_mutex_unlock(&lock);
    if (i == MAX_MODULES) {
        if (bytes)
            fg_release(physical, bytes);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    *out = &modules[i];
    return CUDA_SUCCESS;
}

static CUresult load_file(void **out, const char *path)
{
    int fd = path ? open(path, O_RDONLY) : -1;
    if (fd < 0)
        return CUDA_ERROR_FILE_NOT_FOUND;
    struct stat st;
    void *p = fstat(fd, &st) == 0 && st.st_size > 4
                  ? mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0)
                  : MAP_FAILED;
    close(fd);
    if (p == MAP_FAILED)
        return CUDA_ERROR_INVALID_IMAGE;
    CUresult rc = load(out, p, (uint64_t)st.st_size);
    munmap(p, (size_t)st.st_size);
    return rc;
}

static CUresult unload(void *m)
{
    struct fg_module *mod = m;
    if (mod < modules || mod >= modules + MAX_MODULES)
        return CUDA_ERROR_INVALID_HANDLE;
    pthread_mutex_lock(&lock);
    struct fg_module was = *mod;
    mod->used = 0;
    pthread_mutex_unlock(&lock);
    if (!was.used)
        return CUDA_ERROR_INVALID_HANDLE;
    if (was.bytes)
        fg_release(was.physical, was.bytes);
    return CUDA_SUCCESS;
}

/* cuda_fake.c's primary-context reset: the modules loaded there go. */
void modules_drop_device(int physical)
{
    for (int i = 0; i < MAX_MODULES; i++)
        if (modules[i].used && modules[i].physical == physical)
            unload(&modules[i]);
}

EXPORT CUresult cuModuleLoad(CUmodule *m, const char *path)
{
    return load_file((void **)m, path);
}

EXPORT CUresult cuModuleLoadData(CUmodule *m, const void *image)
{
    return load((void **)m, image, 0);
}

EXPORT CUresult cuModuleLoadDataEx(CUmodule *m, const void *image,
                                   unsigned int n, CUjit_option *o, void **v)
{
    (void)n, (void)o, (void)v;
    return load((void **)m, image, 0);
}

EXPORT CUresult cuModuleLoadFatBinary(CUmodule *m, const void *fatbin)
{
    return load((void **)m, fatbin, 0);
}

EXPORT CUresult cuModuleUnload(CUmodule m)
{
    return unload(m);
}

EXPORT CUresult cuModuleGetFunction(CUfunction *f, CUmodule m, const char *name)
{
    struct fg_module *mod = (struct fg_module *)m;
    if (f == NULL || name == NULL || mod < modules ||
        mod >= modules + MAX_MODULES || !mod->used)
        return CUDA_ERROR_INVALID_HANDLE;
    const char *lazy = getenv("FAKEGPU_LAZY_CODE_BYTES");
    uint64_t bytes = lazy ? strtoull(lazy, NULL, 10) : 0;
    pthread_mutex_lock(&lock);
    int first = !mod->lazy_taken;
    mod->lazy_taken = 1;
    pthread_mutex_unlock(&lock);
    if (first && bytes) {
        if (!fg_reserve(mod->physical, bytes))
            return CUDA_ERROR_OUT_OF_MEMORY;
        __atomic_add_fetch(&mod->bytes, bytes, __ATOMIC_RELAXED);
    }
    *f = (CUfunction)((char *)mod + 1); /* opaque, never dereferenced */
    return CUDA_SUCCESS;
}

EXPORT CUresult cuLibraryLoadData(CUlibrary *l, const void *code, CUjit_option *jo,
                                  void **jv, unsigned int nj, CUlibraryOption *lo,
                                  void **lv, unsigned int nl)
{
    (void)jo, (void)jv, (void)nj, (void)lo, (void)lv, (void)nl;
    return load((void **)l, code, 0);
}

EXPORT CUresult cuLibraryLoadFromFile(CUlibrary *l, const char *path,
                                      CUjit_option *jo, void **jv, unsigned int nj,
                                      CUlibraryOption *lo, void **lv,
                                      unsigned int nl)
{
    (void)jo, (void)jv, (void)nj, (void)lo, (void)lv, (void)nl;
    return load_file((void **)l, path);
}

EXPORT CUresult cuLibraryUnload(CUlibrary l)
{
    return unload(l);
}
