/* Issue 10: the region file replaced (another file renamed over its path)
 * while a process holds 768 MiB of a 1 GiB limit and does nothing. The next
 * process must not get a second, empty limit: the holder's watcher sees
 * another file at the path within a second, leaves the old one and moves
 * its charges into the new one (initializing it). It gives its slot in the
 * old file back as it leaves: a process still on the old file (it moves
 * too, within a second) sees only its own charges there. Replaced by an
 * empty file and by a valid, empty region. */
#define _GNU_SOURCE
#include <fcntl.h>

#include <sys/mman.h>

#include "faultutil.h"
#include "region_file.h"

#define LIMIT (1024 * MiB)
#define HELD (768 * MiB)

static uint64_t device0_used(void *file)
{
    return __atomic_load_n(&region_ext(file)->dev[0].used, __ATOMIC_RELAXED);
}

/* A process holding HELD of LIMIT in a fresh region at path, idle until
 * holder_done; `other` names the file that will replace it (absent). */
struct holder {
    int report[2], go[2];
    char other[600];
};

static void holder_start(struct holder *h, const char *path)
{
    unlink(path);
    CHECK(pipe(h->report) == 0 && pipe(h->go) == 0, "pipes");
    idle_holder(path, LIMIT, HELD, h->report[1], h->go[0], h->go[1]);
    CHECK(get_byte(h->report[0]) == 'h', "holder ready");
    snprintf(h->other, sizeof h->other, "%s.new", path);
    unlink(h->other);
}

static void holder_done(struct holder *h)
{
    put_byte(h->go[1], 'g');
    CHECK(wait_children(1) == 0, "holder");
    close(h->report[0]);
    close(h->report[1]);
    close(h->go[0]);
    close(h->go[1]);
}

static void replace_under(const char *path, bool valid_region)
{
    struct holder h;
    holder_start(&h, path);
    const char *other = h.other;
    if (valid_region) {
        new_process_finds_room(other, LIMIT, LIMIT); /* makes a region */
    } else {
        int fd = open(other, O_RDWR | O_CREAT, 0600);
        CHECK(fd >= 0, "an empty file");
        close(fd);
    }
    void *old = map_region_file(path);
    CHECK(device0_used(old) == HELD, "the old file counts the holder");
    CHECK(rename(other, path) == 0, "replace");
    WAIT_UNTIL(file_used(path) == HELD); /* the holder moved */
    CHECK(device0_used(old) == 0, "the holder left the old file with %llu bytes "
          "counted there", (unsigned long long)device0_used(old));
    munmap(old, VGPU_FILE_SIZE);
    new_process_finds_room(path, LIMIT, LIMIT - HELD); /* no second limit */
    holder_done(&h);
    CHECK(file_used(path) == 0, "back to zero");
    printf("replaced by %s: the holder's charges moved to the new file\n",
           valid_region ? "a valid, empty region" : "an empty file");
}

/* Slots the HAMi monitor would count in the region file at path: status
 * live among procs[0, procnum). */
static int monitor_slots(const char *path)
{
    void *file = map_region_file(path);
    struct hami_region *h = file;
    int procnum = __atomic_load_n(&h->procnum, __ATOMIC_RELAXED), live = 0;
    for (int i = 0; i < procnum && i < VGPU_MAX_SLOTS; i++)
        live += __atomic_load_n(&h->procs[i].status, __ATOMIC_RELAXED) != 0;
    munmap(file, VGPU_FILE_SIZE);
    return live;
}

/* Replaced by a region of another mode: the holder leaves the old file and
 * tries to join the new one, finds the mode differs and stays alone. The
 * slot it claimed there goes back at once: nothing for the monitor to
 * count as a process of the container. */
static void replace_by_other_mode(const char *path)
{
    struct holder h;
    holder_start(&h, path);
    const char *other = h.other;
    pid_t maker = fork();
    if (maker == 0) {
        struct vgpu_attach_options o;
        memset(&o, 0, sizeof o);
        o.path = other;
        o.limits[0] = LIMIT;
        o.mode = "rwlock";
        struct vgpu_region *r = vgpu_region_attach(&o);
        CHECK(r != NULL && strcmp(vgpu_region_mode(r), "rwlock") == 0, "rwlock region");
        vgpu_region_detach(r);
        _exit(0);
    }
    CHECK(wait_children(1) == 0, "maker");
    void *old = map_region_file(path);
    CHECK(rename(other, path) == 0, "replace");
    WAIT_UNTIL(device0_used(old) == 0); /* the holder left it */
    /* It tried to join in the same step; the slot it took (if any) goes
     * back before that step ends. Give it a second to show a bug. */
    for (int i = 0; i < 100 && monitor_slots(path) == 0; i++)
        usleep(10000);
    CHECK(monitor_slots(path) == 0, "the holder stayed alone but left %d live "
          "slot(s) in the file it did not join", monitor_slots(path));
    CHECK(file_used(path) == 0, "nothing carried into the file it did not join");
    munmap(old, VGPU_FILE_SIZE);
    holder_done(&h);
    printf("replaced by a region of another mode: the holder stays alone\n");
}

int main(void)
{
    char path[512];
    test_region_path(path, sizeof path, "replace");
    for (long i = 0; i < soak_knob("VGPU_SOAK_ROUNDS", 1); i++) {
        replace_under(path, false);
        replace_under(path, true);
        replace_by_other_mode(path);
    }
    unlink(path);
    printf("region_replace: ok\n");
    return 0;
}
