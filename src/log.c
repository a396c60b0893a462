#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "atomic.h"

static const char *const level_names[] = {"ERROR", "WARN", "INFO", "DEBUG"};

/* Handed over by the configuration (LIBCUDA_LOG_LEVEL) when the library
 * loads; info until then. Relaxed: a line filtered by a stale level is the
 * only effect of a race. */
static int threshold = VGPU_LOG_INFO;

void vgpu_log_set_level(int level)
{
    atomic_store_n(&threshold, level, RELAXED);
}

void vgpu_log(enum vgpu_log_level level, const char *fmt, ...)
{
    if ((int)level > atomic_load_n(&threshold, RELAXED))
        return;
    /* Format into one buffer and write it with one call, so that lines from
     * concurrent processes and threads never interleave. */
    char line[512];
    int n = snprintf(line, sizeof line, "[vgpu %s pid %d] ",
                     level_names[level > VGPU_LOG_DEBUG ? VGPU_LOG_DEBUG : level],
                     (int)getpid());
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = strlen(line);
    line[len++] = '\n';
    ssize_t unused = write(STDERR_FILENO, line, len);
    (void)unused;
}
