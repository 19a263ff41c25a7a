/* common/status.h — the two error tiers (../shared/docs/STYLE.md, habit 2).
 *
 * Tier 1, programmer bugs: QT_ASSERT, always on (also in release builds),
 * prints file:line and the failed condition, then aborts.
 *
 * Tier 2, what the world can get wrong (files, YAML, memory, CUDA): functions
 * return a qt_status; the failing function records a message with qt_fail(),
 * callers may add context with qt_error_context(), and only main() prints it and
 * exits. The message buffer is thread-local, like errno, so library code never
 * needs a global and never calls exit(). */
#ifndef QT_COMMON_STATUS_H
#define QT_COMMON_STATUS_H

#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  QT_OK = 0,
  QT_ERR_IO,          /* open/read/write/fsync/rename failed, disk full */
  QT_ERR_FORMAT,      /* a file's contents are malformed (safetensors, JSON, YAML) */
  QT_ERR_CONFIG,      /* a config key is unknown, has a wrong type or value */
  QT_ERR_INVALID,     /* an argument or combination is invalid (shapes, sizes) */
  QT_ERR_UNSUPPORTED, /* a valid input we do not support (model type, dtype) */
  QT_ERR_NOMEM,       /* allocation failed */
  QT_ERR_CUDA,        /* a CUDA / cuBLASLt / cuRAND / NCCL call failed */
  QT_ERR_NUMERIC,     /* non-finite loss or gradients beyond the allowed policy */
  QT_ERR_INTERRUPTED, /* stopped by a signal after a clean save */
  QT_ERR_USAGE,       /* command-line usage error (exit status 2) */
  QT_ERR_BUSY         /* held by another process (an output.dir in use) */
} qt_status;

/* Short stable name of a status, e.g. "format error". */
const char *qt_status_name(qt_status s);

/* Records a message (printf-style) for status s and returns s, so that
 * `return qt_fail(QT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));` */
qt_status qt_fail(qt_status s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
qt_status qt_failv(qt_status s, const char *fmt, va_list ap);

/* Prepends "context: " to the recorded message (e.g. a file name). */
void qt_error_context(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The message of the last qt_fail on this thread ("" if none). */
const char *qt_error_message(void);
void qt_error_clear(void);

/* Process exit status for a status: 0 ok, 2 usage, 1 everything else. */
int qt_status_exit_code(qt_status s);

/* Propagate a non-OK status to the caller. */
#define QT_TRY(expr)                      \
  do {                                    \
    qt_status qt_try_s_ = (expr);         \
    if (qt_try_s_ != QT_OK) return qt_try_s_; \
  } while (0)

/* Always-on assert for programmer bugs (never for file contents). */
void qt_assert_fail(const char *cond, const char *file, int line, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 4, 5)));
#define QT_ASSERT(cond) \
  do { if (!(cond)) qt_assert_fail(#cond, __FILE__, __LINE__, NULL); } while (0)
#define QT_ASSERTF(cond, ...) \
  do { if (!(cond)) qt_assert_fail(#cond, __FILE__, __LINE__, __VA_ARGS__); } while (0)

#ifdef __cplusplus
}
#endif

#endif
