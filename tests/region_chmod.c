/* Issue 10: a tenant makes the region file writable by others (chmod 666,
 * or 620) to switch the limit off (today: every later process refused the
 * file and ran without a limit). The file is ours: a process that opens it
 * takes the write bits back and uses it, and an attached process's watcher
 * does the same within a second. The limit keeps counting every process. */
#include <sys/stat.h>

#include "faultutil.h"

#define LIMIT (1024 * MiB)
#define HELD (256 * MiB)

static mode_t mode_of(const char *path)
{
    struct stat st;
    CHECK(stat(path, &st) == 0, "stat");
    return st.st_mode & 07777;
}

int main(void)
{
    char path[512];
    test_region_path(path, sizeof path, "chmod");
    int report[2], go[2];
    CHECK(pipe(report) == 0 && pipe(go) == 0, "pipes");
    idle_holder(path, LIMIT, HELD, report[1], go[0], go[1]);
    CHECK(get_byte(report[0]) == 'h', "holder ready");

    CHECK(chmod(path, 0666) == 0, "chmod 666");
    struct vgpu_region *r = attach_limited(path, LIMIT);
    CHECK(r != NULL && !vgpu_region_is_local(r), "the file is used");
    CHECK((mode_of(path) & 022) == 0, "write bits taken back: %o",
          (unsigned)mode_of(path));
    check_room(r, LIMIT - HELD, "the holder's charges count");
    vgpu_region_detach(r);

    CHECK(chmod(path, 0620) == 0, "chmod 620");
    WAIT_UNTIL((mode_of(path) & 022) == 0); /* the holder's watcher */
    printf("write bits taken back by a new process and by an attached one\n");

    put_byte(go[1], 'g');
    CHECK(wait_children(1) == 0, "holder");
    CHECK(file_used(path) == 0, "back to zero");
    unlink(path);
    printf("region_chmod: ok\n");
    return 0;
}
