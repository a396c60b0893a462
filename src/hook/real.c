/* Resolving the real driver and NVML once (pthread_once), from the
 * libraries themselves, so that our own exports never shadow them. */
#define _GNU_SOURCE
#include "hook/real.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#include "log.h"

struct symbol {
    const char *name;
    void *hook; /* ours, or NULL for functions we only call */
    int nvml;
};

#define HOOKED(name) [REAL_##name] = {#name, (void *)name, 0},
#define USED(name) [REAL_##name] = {#name, NULL, 0},
#define NVML_HOOKED(name) [REAL_##name] = {#name, (void *)name, 1},
#define NVML_USED(name) [REAL_##name] = {#name, NULL, 1},
static const struct symbol symbols[REAL_COUNT] = {
    VGPU_CUDA_HOOKS(HOOKED) VGPU_CUDA_USED(USED)
    VGPU_NVML_HOOKS(NVML_HOOKED) VGPU_NVML_USED(NVML_USED)
};

static void *table[REAL_COUNT];
static pthread_once_t resolved = PTHREAD_ONCE_INIT;
/* Set while this thread loads the driver: a library constructor that calls
 * dlsym then must not wait for the resolution it is part of. */
static __thread int resolving;

typedef void *(*dlsym_fn)(void *, const char *);

/* The version of glibc's first symbols on this CPU, dlsym's before 2.34. */
#if defined(__aarch64__)
#define GLIBC_FIRST_VERSION "GLIBC_2.17"
#else
#define GLIBC_FIRST_VERSION "GLIBC_2.2.5"
#endif

/* Not instrumented: reached from dlsym while a sanitizer runtime is still
 * initializing (its shadow memory not yet mapped). */
__attribute__((no_sanitize_address, no_sanitize_thread,
               no_sanitize("undefined")))
void *real_dlsym_fn(void)
{
    static dlsym_fn next;
    dlsym_fn fn = __atomic_load_n(&next, __ATOMIC_ACQUIRE); /* pairs below */
    if (fn == NULL) {
        /* glibc 2.34 moved dlsym into libc under a new version. */
        fn = (dlsym_fn)dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.34");
        if (fn == NULL)
            fn = (dlsym_fn)dlvsym(RTLD_NEXT, "dlsym", GLIBC_FIRST_VERSION);
        /* Release: a racing thread that sees it may call it. */
        __atomic_store_n(&next, fn, __ATOMIC_RELEASE);
    }
    return (void *)fn;
}

void *real_dlsym(void *handle, const char *name)
{
    dlsym_fn fn = (dlsym_fn)real_dlsym_fn();
    return fn ? fn(handle, name) : NULL;
}

static void resolve(void)
{
    resolving = 1;
    void *cuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    void *nvml = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (cuda == NULL)
        log_warn("libcuda.so.1 not found (%s); CUDA calls pass through",
                 dlerror());
    for (int i = 0; i < REAL_COUNT; i++) {
        void *lib = symbols[i].nvml ? nvml : cuda;
        table[i] = lib ? real_dlsym(lib, symbols[i].name) : NULL;
    }
    resolving = 0;
}

void *real_fn(enum real_id id)
{
    pthread_once(&resolved, resolve);
    return table[id];
}

void *hook_for_symbol(const char *name)
{
    /* Decided without calling libc: sanitizer runtimes look up their own
     * functions through dlsym before their interceptors (strncmp among
     * them) can run. */
    bool ours = name != NULL && ((name[0] == 'c' && name[1] == 'u') ||
                                 (name[0] == 'n' && name[1] == 'v' &&
                                  name[2] == 'm' && name[3] == 'l'));
    if (resolving || !ours)
        return NULL;
    for (int i = 0; i < REAL_COUNT; i++)
        if (symbols[i].hook && strcmp(symbols[i].name, name) == 0)
            return real_fn((enum real_id)i) ? symbols[i].hook : NULL;
    return NULL;
}

void *hook_for_real(void *fn)
{
    if (fn == NULL || resolving)
        return NULL;
    for (int i = 0; i < REAL_COUNT; i++)
        if (symbols[i].hook && real_fn((enum real_id)i) == fn)
            return symbols[i].hook;
    return fn;
}
