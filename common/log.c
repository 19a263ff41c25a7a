/* common/log.c */
#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>

static qt_log_level qt_log_level_now = QT_LOG_INFO;

void qt_log_set_level(qt_log_level level) { qt_log_level_now = level; }
qt_log_level qt_log_get_level(void) { return qt_log_level_now; }

void qt_log(qt_log_level level, const char *fmt, ...) {
  if (level > qt_log_level_now) return;
  static const char *const tag[] = {"error", "warning", "info", "debug"};
  fprintf(stderr, "qlora-train: %s: ", tag[level]);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}
