/* vgpuctl: inspect and repair a vgpu region.
 *
 *   vgpuctl [--file PATH] status [--json]
 *   vgpuctl [--file PATH] watch [--interval SECONDS]
 *   vgpuctl [--file PATH] reclaim
 *   vgpuctl [--file PATH] reset [--force]
 *   vgpuctl env
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vgpu/config.h"
#include "vgpu/region.h"

#define MiB (1024.0 * 1024.0)

static void usage(void)
{
    fprintf(stderr,
            "usage: vgpuctl [--file PATH] status [--json]\n"
            "       vgpuctl [--file PATH] watch [--interval SECONDS]\n"
            "       vgpuctl [--file PATH] reclaim\n"
            "       vgpuctl [--file PATH] reset [--force]\n"
            "       vgpuctl env\n"
            "PATH defaults to $CUDA_DEVICE_MEMORY_SHARED_CACHE or "
            "/tmp/cudevshr.cache\n");
}

static int device_rows(const struct vgpu_snapshot *s)
{
    int n = s->device_count > 0 ? s->device_count : VGPU_MAX_DEVICES;
    return n > VGPU_MAX_DEVICES ? VGPU_MAX_DEVICES : n;
}

static void print_text(const struct vgpu_snapshot *s)
{
    printf("mode %s, %d process(es)\n", s->mode, s->proc_count);
    printf("%-4s %12s %12s %12s %12s  %s\n", "dev", "limit MiB", "used MiB",
           "free MiB", "peak MiB", "uuid");
    for (int d = 0; d < device_rows(s); d++) {
        if (s->limit[d] == 0)
            printf("%-4d %12s %12.1f %12s %12.1f  %s\n", d, "unlimited",
                   s->used[d] / MiB, "-", s->peak[d] / MiB, s->uuid[d]);
        else
            printf("%-4d %12.1f %12.1f %12.1f %12.1f  %s\n", d,
                   s->limit[d] / MiB, s->used[d] / MiB,
                   s->used[d] > s->limit[d] ? 0.0
                                            : (s->limit[d] - s->used[d]) / MiB,
                   s->peak[d] / MiB, s->uuid[d]);
    }
    printf("%-5s %8s %8s %6s  %s\n", "slot", "pid", "hostpid", "alive",
           "used MiB per device");
    for (int i = 0; i < s->proc_count; i++) {
        const struct vgpu_snapshot_proc *p = &s->procs[i];
        printf("%-5d %8d %8d %6s ", p->slot, p->pid, p->hostpid,
               p->alive ? "yes" : "no");
        for (int d = 0; d < device_rows(s); d++)
            printf(" %d:%.1f", d, p->used[d] / MiB);
        printf("\n");
    }
}

static void print_u64_array(const char *name, const uint64_t *v, int n)
{
    printf("\"%s\":[", name);
    for (int i = 0; i < n; i++)
        printf("%s%llu", i ? "," : "", (unsigned long long)v[i]);
    printf("]");
}

static void print_json(const struct vgpu_snapshot *s)
{
    int n = device_rows(s);
    printf("{\"mode\":\"%s\",\"devices\":[", s->mode);
    for (int d = 0; d < n; d++)
        printf("%s{\"index\":%d,\"limit\":%llu,\"used\":%llu,\"peak\":%llu,"
               "\"uuid\":\"%s\"}", d ? "," : "", d,
               (unsigned long long)s->limit[d], (unsigned long long)s->used[d],
               (unsigned long long)s->peak[d], s->uuid[d]);
    printf("],\"processes\":[");
    for (int i = 0; i < s->proc_count; i++) {
        const struct vgpu_snapshot_proc *p = &s->procs[i];
        printf("%s{\"slot\":%d,\"pid\":%d,\"hostpid\":%d,\"alive\":%s,",
               i ? "," : "", p->slot, p->pid, p->hostpid,
               p->alive ? "true" : "false");
        print_u64_array("used", p->used, n);
        printf("}");
    }
    printf("]}\n");
}

static int cmd_status(struct vgpu_region *r, bool json)
{
    struct vgpu_snapshot *s = malloc(sizeof *s);
    if (s == NULL)
        return 1;
    vgpu_region_snapshot(r, s);
    if (json)
        print_json(s);
    else
        print_text(s);
    free(s);
    return 0;
}

static _Noreturn void cmd_watch(struct vgpu_region *r, double interval)
{
    for (;;) {
        printf("\033[H\033[2J");
        cmd_status(r, false);
        fflush(stdout);
        usleep((useconds_t)(interval * 1e6));
    }
}

static int cmd_env(void)
{
    for (int i = 0; i < VGPU_ENV_COUNT; i++) {
        const struct vgpu_env_var *v = &vgpu_env_vars[i];
        const char *value = getenv(v->name);
        printf("%-32s %-16s %s%s\n", v->name, value ? value : "(unset)",
               v->implemented ? "" : "[not yet] ", v->meaning);
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    int i = 1;
    if (i + 1 < argc && strcmp(argv[i], "--file") == 0) {
        path = argv[i + 1];
        i += 2;
    }
    if (i >= argc) {
        usage();
        return 2;
    }
    const char *cmd = argv[i++];
    const char *opt = i < argc ? argv[i] : "";
    if (strcmp(cmd, "env") == 0)
        return cmd_env();
    if (strcmp(cmd, "status") && strcmp(cmd, "watch") &&
        strcmp(cmd, "reclaim") && strcmp(cmd, "reset")) {
        usage();
        return 2;
    }
    struct vgpu_region *r = vgpu_region_open_existing(path);
    if (r == NULL)
        return 1;
    int rc = 0;
    if (strcmp(cmd, "status") == 0) {
        rc = cmd_status(r, strcmp(opt, "--json") == 0);
    } else if (strcmp(cmd, "watch") == 0) {
        double interval = 1.0;
        if (strcmp(opt, "--interval") == 0 && i + 1 < argc)
            interval = atof(argv[i + 1]);
        cmd_watch(r, interval > 0.05 ? interval : 0.05);
    } else if (strcmp(cmd, "reclaim") == 0) {
        printf("reclaimed %d slot(s) of dead processes\n",
               vgpu_region_reclaim(r));
    } else if (!vgpu_region_reset(r, strcmp(opt, "--force") == 0)) {
        fprintf(stderr, "vgpuctl: %d live process(es) attached; "
                        "use reset --force to recount anyway\n",
                vgpu_region_live_count(r));
        rc = 1;
    } else {
        printf("reset done\n");
    }
    vgpu_region_detach(r);
    return rc;
}
