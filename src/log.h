/* One-line diagnostics on stderr, filtered by LIBCUDA_LOG_LEVEL (HAMi-core's
 * variable): 0 errors only, 1 warnings, 2 (default) info, 3 and up debug. */
#ifndef VGPU_LOG_H
#define VGPU_LOG_H

enum vgpu_log_level {
    VGPU_LOG_ERROR = 0,
    VGPU_LOG_WARN = 1,
    VGPU_LOG_INFO = 2,
    VGPU_LOG_DEBUG = 3,
};

/* Lines above this level are dropped (default info). The configuration
 * sets it from LIBCUDA_LOG_LEVEL; logging itself reads no variable. */
void vgpu_log_set_level(int level);

void vgpu_log(enum vgpu_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_error(...) vgpu_log(VGPU_LOG_ERROR, __VA_ARGS__)
#define log_warn(...) vgpu_log(VGPU_LOG_WARN, __VA_ARGS__)
#define log_info(...) vgpu_log(VGPU_LOG_INFO, __VA_ARGS__)
#define log_debug(...) vgpu_log(VGPU_LOG_DEBUG, __VA_ARGS__)

#endif
