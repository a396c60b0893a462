/* A region file mapped read-only, as HAMi's monitor reads it (tests that
 * look at the bytes rather than through the region API). */
#ifndef VGPU_TESTS_REGION_FILE_H
#define VGPU_TESTS_REGION_FILE_H

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "region/layout.h"
#include "testutil.h"

/* The file now at path (it stays mapped after a rename or an unlink);
 * munmap(p, VGPU_FILE_SIZE) when done. */
static inline void *map_region_file(const char *path)
{
    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0, "open %s", path);
    void *p = mmap(NULL, VGPU_FILE_SIZE, PROT_READ, MAP_SHARED, fd, 0);
    CHECK(p != MAP_FAILED, "mmap");
    close(fd);
    return p;
}

#endif
