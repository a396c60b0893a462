/* Issue 10: the region file deleted while a process holds 768 MiB of a
 * 1 GiB limit and does nothing (no charge, no free). The next process must
 * not get a second, empty limit (today: 1,792 MiB live under 1 GiB): the
 * holder's watcher sees the file gone within a second, and it moves its
 * charges into the file at the path (recreating it); a process that joins
 * then finds them there. */
#include "faultutil.h"

#define LIMIT (1024 * MiB)
#define HELD (768 * MiB)

static void delete_under(const char *path)
{
    unlink(path);
    int report[2], go[2];
    CHECK(pipe(report) == 0 && pipe(go) == 0, "pipes");
    idle_holder(path, LIMIT, HELD, report[1], go[0], go[1]);
    CHECK(get_byte(report[0]) == 'h', "holder ready");
    CHECK(unlink(path) == 0, "delete");
    WAIT_UNTIL(file_used(path) == HELD); /* the holder moved */
    new_process_finds_room(path, LIMIT, LIMIT - HELD); /* no second limit */
    put_byte(go[1], 'g');
    CHECK(wait_children(1) == 0, "holder");
    CHECK(file_used(path) == 0, "back to zero");
    close(report[0]);
    close(report[1]);
    close(go[0]);
    close(go[1]);
    printf("deleted under an idle holder: its charges moved to a new file\n");
}

int main(void)
{
    char path[512];
    test_region_path(path, sizeof path, "delete");
    for (long i = 0; i < soak_knob("VGPU_SOAK_ROUNDS", 1); i++)
        delete_under(path);
    unlink(path);
    printf("region_delete: ok\n");
    return 0;
}
