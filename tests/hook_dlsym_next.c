/* dlsym(RTLD_NEXT, name) stays relative to its caller under libvgpu (the
 * arch/<cpu>/dlsym.S trampolines): libvgpu is preloaded right after this
 * program, so the next "dlsym" after the program is libvgpu's own; a
 * lookup made relative to libvgpu (a plain C wrapper) would return
 * glibc's (a C wrapper passes only where the compiler happens to make its
 * call a tail call; with -fno-optimize-sibling-calls it fails here). Names
 * vgpu does not hook resolve as without it. */
#define _GNU_SOURCE
#include <dlfcn.h>

#include "hook_util.h"

static const char *object_of(void *fn)
{
    Dl_info info;
    return fn && dladdr(fn, &info) && info.dli_fname ? info.dli_fname : "?";
}

int main(void)
{
    hook_fresh(1, "8g", "1g");
    void *next = dlsym(RTLD_NEXT, "dlsym");
    CHECK(strstr(object_of(next), "libvgpu") != NULL,
          "dlsym(RTLD_NEXT, \"dlsym\") from the program: libvgpu's, got %s's",
          object_of(next));
    void *pid = dlsym(RTLD_NEXT, "getpid");
    CHECK(strstr(object_of(pid), "libc") != NULL, "getpid from libc, got %s",
          object_of(pid));
    void *hooked = dlsym(RTLD_NEXT, "cuMemAlloc_v2");
    CHECK(strstr(object_of(hooked), "libvgpu") != NULL,
          "a hooked name through RTLD_NEXT: the hook, got %s", object_of(hooked));
    CHECK(dlsym(RTLD_NEXT, "vgpu_no_such_symbol") == NULL, "unknown name");
    printf("hook_dlsym_next: ok\n");
    return 0;
}
