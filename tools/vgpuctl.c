/* vgpuctl: inspect and repair a vgpu region; export it to Prometheus.
 * Usage in usage_text below; -h/--help prints it on stdout (exit 0), an
 * unknown argument is one line on stderr and exit 2.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http_serve.h"
#include "metrics.h"
#include "vgpu/config.h"
#include "vgpu/region.h"

#define MiB (1024.0 * 1024.0)

static const char usage_text[] =
    "usage: vgpuctl [--file PATH] COMMAND [OPTIONS]\n"
    "commands:\n"
    "  status [--json]          the region: limits, usage, each process\n"
    "  watch [--interval SECS]  status, refreshed (default every 1 s)\n"
    "  reclaim                  free the slots and bytes of dead processes\n"
    "  reset [--force]          zero the counters (--force: recount while\n"
    "                           processes are attached)\n"
    "  metrics [--listen ADDR:PORT] [--label NAME=VALUE]...\n"
    "                           Prometheus text on stdout, or served over\n"
    "                           HTTP at /metrics (ADDR:PORT as 127.0.0.1:9394,\n"
    "                           :9394 or [::1]:9394)\n"
    "  env                      every variable vgpu reads, with its value\n"
    "options:\n"
    "  --file PATH   the region file (default: $CUDA_DEVICE_MEMORY_SHARED_CACHE,\n"
    "                else /tmp/cudevshr.cache)\n"
    "  -h, --help    this text\n";

/* Exit 2 with one line: the command-line conventions of every vgpu tool. */
static _Noreturn void bad_usage(const char *what, const char *arg)
{
    fprintf(stderr, "vgpuctl: %s '%s' (vgpuctl --help lists the commands)\n",
            what, arg);
    exit(2);
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
    for (int d = 0; d < device_rows(s); d++)
        if (s->sm_limit[d] != 0)
            printf("dev %d compute limit %u%%: %.3f s of GPU time charged, "
                   "launches held %.3f s\n", d, s->sm_limit[d],
                   s->sm_charged_ns[d] / 1e9, s->sm_waited_ns[d] / 1e9);
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
               "\"uuid\":\"%s\",\"sm_limit\":%u,\"sm_charged_ns\":%llu,"
               "\"sm_waited_ns\":%llu}", d ? "," : "", d,
               (unsigned long long)s->limit[d], (unsigned long long)s->used[d],
               (unsigned long long)s->peak[d], s->uuid[d], s->sm_limit[d],
               (unsigned long long)s->sm_charged_ns[d],
               (unsigned long long)s->sm_waited_ns[d]);
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
    vgpu_config_print(stdout);
    return 0;
}

/* The region is opened anew for every scrape: a region file that was
 * deleted and made again (a new container) is read, not a stale mapping. */
struct scrape {
    const char *path;
    const struct metrics_labels *labels;
    bool up; /* the last scrape could read the region */
};

static int write_metrics(const char *path, FILE *out, void *arg)
{
    struct scrape *sc = arg;
    if (strcmp(path, "/metrics") != 0)
        return 404;
    struct vgpu_snapshot *s = malloc(sizeof *s);
    struct vgpu_region *r = s ? vgpu_region_open_existing(sc->path) : NULL;
    if (r != NULL) {
        vgpu_region_snapshot(r, s);
        vgpu_region_detach(r);
    }
    metrics_write(out, r ? s : NULL, sc->labels);
    sc->up = r != NULL;
    free(s);
    return 200;
}

static int cmd_metrics(const char *path, const char *listen,
                       const struct metrics_labels *labels)
{
    struct scrape sc = {path, labels, false};
    if (listen)
        return http_serve(listen, "text/plain; version=0.0.4; charset=utf-8",
                          write_metrics, &sc);
    write_metrics("/metrics", stdout, &sc);
    return fflush(stdout) == 0 && sc.up ? 0 : 1;
}

struct args {
    const char *path;
    const char *cmd;
    bool json, force;
    double interval;
    const char *listen;
    struct metrics_labels labels;
};

static bool is_help(const char *a)
{
    return strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0;
}

/* The value of an option that takes one. */
static const char *value_of(int argc, char **argv, int *i)
{
    if (*i + 1 >= argc)
        bad_usage("option needs a value:", argv[*i]);
    return argv[++*i];
}

/* One option of a command; exits 2 on anything the command does not take. */
static void command_option(struct args *a, int argc, char **argv, int *i)
{
    const char *o = argv[*i], *c = a->cmd;
    if (strcmp(c, "status") == 0 && strcmp(o, "--json") == 0) {
        a->json = true;
    } else if (strcmp(c, "reset") == 0 && strcmp(o, "--force") == 0) {
        a->force = true;
    } else if (strcmp(c, "watch") == 0 && strcmp(o, "--interval") == 0) {
        const char *v = value_of(argc, argv, i);
        char *end;
        a->interval = strtod(v, &end);
        if (end == v || *end != '\0' || !(a->interval >= 0.05 && a->interval <= 86400))
            bad_usage("--interval wants seconds from 0.05 to 86400, not", v);
    } else if (strcmp(c, "metrics") == 0 && strcmp(o, "--listen") == 0) {
        a->listen = value_of(argc, argv, i);
    } else if (strcmp(c, "metrics") == 0 && strcmp(o, "--label") == 0) {
        if (!metrics_add_label(&a->labels, value_of(argc, argv, i)))
            exit(2);
    } else {
        bad_usage("unknown argument", o);
    }
}

static void parse_args(struct args *a, int argc, char **argv)
{
    static const char *const commands[] = {"status", "watch", "reclaim",
                                           "reset", "metrics", "env", NULL};
    *a = (struct args){.interval = 1.0};
    for (int i = 1; i < argc; i++)
        if (is_help(argv[i])) {
            fputs(usage_text, stdout);
            exit(0);
        }
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--file") == 0)
            a->path = value_of(argc, argv, &i);
        else
            bad_usage("unknown argument", argv[i]);
    }
    if (i == argc) {
        fprintf(stderr, "vgpuctl: no command (vgpuctl --help lists them)\n");
        exit(2);
    }
    a->cmd = argv[i++];
    bool known = false;
    for (int c = 0; commands[c]; c++)
        known |= strcmp(a->cmd, commands[c]) == 0;
    if (!known)
        bad_usage("unknown command", a->cmd);
    for (; i < argc; i++)
        command_option(a, argc, argv, &i);
}

int main(int argc, char **argv)
{
    struct args a;
    parse_args(&a, argc, argv);
    if (strcmp(a.cmd, "env") == 0)
        return cmd_env();
    if (strcmp(a.cmd, "metrics") == 0)
        return cmd_metrics(a.path, a.listen, &a.labels);
    struct vgpu_region *r = vgpu_region_open_existing(a.path);
    if (r == NULL)
        return 1;
    int rc = 0;
    if (strcmp(a.cmd, "status") == 0) {
        rc = cmd_status(r, a.json);
    } else if (strcmp(a.cmd, "watch") == 0) {
        cmd_watch(r, a.interval);
    } else if (strcmp(a.cmd, "reclaim") == 0) {
        printf("reclaimed %d slot(s) of dead processes\n",
               vgpu_region_reclaim(r));
    } else if (!vgpu_region_reset(r, a.force)) {
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
