/* The configuration table is read once: at the first use of any variable
 * (the log level when the library loads), from copies, so that later
 * changes to the environment are not seen until a reload; bad values fall
 * back to their defaults; CUDA_VISIBLE_DEVICES is in the table. */
#include <stdint.h>

#include "testutil.h"
#include "vgpu/config.h"

#define MiB (1ull << 20)

static char shared_cache[] = "CUDA_DEVICE_MEMORY_SHARED_CACHE=/tmp/first.cache";

static void first_read(void)
{
    setenv("CUDA_DEVICE_MEMORY_LIMIT", "2g", 1);
    setenv("CUDA_DEVICE_MEMORY_LIMIT_1", "lots", 1);
    setenv("CUDA_DEVICE_MEMORY_LIMIT_2", "512m", 1);
    setenv("CUDA_VISIBLE_DEVICES", "1,0", 1);
    setenv("VGPU_REGION_MODE", "rwlock", 1);
    CHECK(putenv(shared_cache) == 0, "putenv");
    /* Nothing in this program has used the table yet: this reads it. */
    CHECK(strcmp(vgpu_env(VGPU_ENV_REGION_MODE), "rwlock") == 0, "mode read");
    uint64_t limits[VGPU_MAX_DEVICES];
    vgpu_config_limits(limits);
    CHECK(limits[0] == 2ull << 30, "global limit");
    CHECK(limits[1] == 2ull << 30, "a bad override falls back to the global limit");
    CHECK(limits[2] == 512 * MiB, "override");
    CHECK(vgpu_env_is_set(VGPU_ENV_VISIBLE_DEVICES) &&
          strcmp(vgpu_env(VGPU_ENV_VISIBLE_DEVICES), "1,0") == 0,
          "CUDA_VISIBLE_DEVICES in the table");
    CHECK(strcmp(vgpu_env(VGPU_ENV_LEGACY_WORK), "0") == 0, "default of an unset one");
}

static void read_once(void)
{
    setenv("VGPU_REGION_MODE", "legacy", 1);
    unsetenv("CUDA_VISIBLE_DEVICES");
    setenv("CUDA_DEVICE_MEMORY_LIMIT", "1g", 1);
    /* The program writes into the string it gave putenv: a copy was read. */
    memcpy(strchr(shared_cache, '=') + 1, "/tmp/other", 10);
    CHECK(strcmp(vgpu_env(VGPU_ENV_REGION_MODE), "rwlock") == 0, "not read again");
    CHECK(vgpu_env_is_set(VGPU_ENV_VISIBLE_DEVICES), "unsetenv not seen");
    uint64_t limits[VGPU_MAX_DEVICES];
    vgpu_config_limits(limits);
    CHECK(limits[0] == 2ull << 30, "limit not read again");
    CHECK(strcmp(vgpu_env(VGPU_ENV_SHARED_CACHE), "/tmp/first.cache") == 0,
          "a copy: %s", vgpu_env(VGPU_ENV_SHARED_CACHE));

    vgpu_config_reload();
    CHECK(strcmp(vgpu_env(VGPU_ENV_REGION_MODE), "legacy") == 0, "reload reads");
    CHECK(!vgpu_env_is_set(VGPU_ENV_VISIBLE_DEVICES), "reload: unset");
    vgpu_config_limits(limits);
    CHECK(limits[0] == 1ull << 30 && limits[2] == 512 * MiB, "reload: limits");
}

int main(int argc, char **argv)
{
    if (argc == 2) { /* re-executed with LIBCUDA_LOG_LEVEL=argv[1] */
        int want = strcmp(argv[1], "0") == 0 ? 0 : 2;
        CHECK(vgpu_config_log_level() == want, "LIBCUDA_LOG_LEVEL=%s read at load: %d",
              argv[1], vgpu_config_log_level());
        return 0;
    }
    first_read();
    read_once();
    for (int i = 0; i < 2; i++) {
        const char *level = i == 0 ? "0" : "loud";
        pid_t pid = fork();
        if (pid == 0) {
            setenv("LIBCUDA_LOG_LEVEL", level, 1);
            execl("/proc/self/exe", argv[0], level, (char *)NULL);
            _exit(127);
        }
        CHECK(wait_children(1) == 0, "log level %s", level);
    }
    printf("config_once: ok\n");
    return 0;
}
