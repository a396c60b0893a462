/* Issue 10: the region file replaced (another file renamed over its path)
 * while a process holds 768 MiB of a 1 GiB limit and does nothing. The next
 * process must not get a second, empty limit: the holder's watcher sees
 * another file at the path within a second, leaves the old one and moves
 * its charges into the new one (initializing it). Replaced by an empty file
 * and by a valid, empty region. */
#define _GNU_SOURCE
#include <fcntl.h>

#include "faultutil.h"

#define LIMIT (1024 * MiB)
#define HELD (768 * MiB)

static void replace_under(const char *path, bool valid_region)
{
    unlink(path);
    int report[2], go[2];
    CHECK(pipe(report) == 0 && pipe(go) == 0, "pipes");
    idle_holder(path, LIMIT, HELD, report[1], go[0], go[1]);
    CHECK(get_byte(report[0]) == 'h', "holder ready");
    char other[600];
    snprintf(other, sizeof other, "%s.new", path);
    unlink(other);
    if (valid_region) {
        new_process_finds_room(other, LIMIT, LIMIT); /* makes a region */
    } else {
        int fd = open(other, O_RDWR | O_CREAT, 0600);
        CHECK(fd >= 0, "an empty file");
        close(fd);
    }
    CHECK(rename(other, path) == 0, "replace");
    WAIT_UNTIL(file_used(path) == HELD); /* the holder moved */
    new_process_finds_room(path, LIMIT, LIMIT - HELD); /* no second limit */
    put_byte(go[1], 'g');
    CHECK(wait_children(1) == 0, "holder");
    CHECK(file_used(path) == 0, "back to zero");
    close(report[0]);
    close(report[1]);
    close(go[0]);
    close(go[1]);
    printf("replaced by %s: the holder's charges moved to the new file\n",
           valid_region ? "a valid, empty region" : "an empty file");
}

int main(void)
{
    char path[512];
    test_region_path(path, sizeof path, "replace");
    for (long i = 0; i < soak_knob("VGPU_SOAK_ROUNDS", 1); i++) {
        replace_under(path, false);
        replace_under(path, true);
    }
    unlink(path);
    printf("region_replace: ok\n");
    return 0;
}
