/* common/status.c — status names, the thread-local error message, QT_ASSERT. */
#include "common/status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { QT_ERRMSG_CAP = 2048 };
static _Thread_local char qt_errmsg[QT_ERRMSG_CAP];

const char *qt_status_name(qt_status s) {
  switch (s) {
    case QT_OK: return "ok";
    case QT_ERR_IO: return "I/O error";
    case QT_ERR_FORMAT: return "format error";
    case QT_ERR_CONFIG: return "config error";
    case QT_ERR_INVALID: return "invalid argument";
    case QT_ERR_UNSUPPORTED: return "unsupported";
    case QT_ERR_NOMEM: return "out of memory";
    case QT_ERR_CUDA: return "CUDA error";
    case QT_ERR_NUMERIC: return "numeric error";
    case QT_ERR_INTERRUPTED: return "interrupted";
    case QT_ERR_USAGE: return "usage error";
    case QT_ERR_BUSY: return "busy";
  }
  return "unknown status";
}

qt_status qt_failv(qt_status s, const char *fmt, va_list ap) {
  vsnprintf(qt_errmsg, sizeof qt_errmsg, fmt, ap);
  return s;
}

qt_status qt_fail(qt_status s, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  qt_failv(s, fmt, ap);
  va_end(ap);
  return s;
}

void qt_error_context(const char *fmt, ...) {
  char prefix[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(prefix, sizeof prefix, fmt, ap);
  va_end(ap);
  char old[QT_ERRMSG_CAP];
  memcpy(old, qt_errmsg, sizeof old);
  snprintf(qt_errmsg, sizeof qt_errmsg, "%s: %s", prefix, old);
}

const char *qt_error_message(void) { return qt_errmsg; }

void qt_error_clear(void) { qt_errmsg[0] = '\0'; }

int qt_status_exit_code(qt_status s) {
  if (s == QT_OK) return 0;
  if (s == QT_ERR_USAGE) return 2;
  return 1;
}

void qt_assert_fail(const char *cond, const char *file, int line, const char *fmt, ...) {
  fprintf(stderr, "qlora-train: internal error: %s:%d: assertion `%s' failed", file, line, cond);
  if (fmt) {
    va_list ap;
    va_start(ap, fmt);
    fputs(": ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
  }
  fputs("\nThis is a bug in qlora-train; please report it with the command that triggered it.\n", stderr);
  fflush(stderr);
  abort();
}
