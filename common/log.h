/* common/log.h — leveled logging to stderr.
 * The level is process-wide state set once by main (like a terminal setting);
 * library code only reads it through qt_log(). */
#ifndef QT_COMMON_LOG_H
#define QT_COMMON_LOG_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { QT_LOG_ERROR = 0, QT_LOG_WARN, QT_LOG_INFO, QT_LOG_DEBUG } qt_log_level;

void qt_log_set_level(qt_log_level level);
qt_log_level qt_log_get_level(void);
void qt_log(qt_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define QT_LOGE(...) qt_log(QT_LOG_ERROR, __VA_ARGS__)
#define QT_LOGW(...) qt_log(QT_LOG_WARN, __VA_ARGS__)
#define QT_LOGI(...) qt_log(QT_LOG_INFO, __VA_ARGS__)
#define QT_LOGD(...) qt_log(QT_LOG_DEBUG, __VA_ARGS__)

#ifdef __cplusplus
}
#endif

#endif
