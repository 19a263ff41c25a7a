/* train/report.h — metrics.jsonl lines and the self-contained report.html.
 *
 * metrics.jsonl (DESIGN.md section 7) holds one JSON object per line:
 * training steps {"step","loss","lr","grad_norm","tokens_per_s",...} and
 * evaluations {"step","eval_loss",...}. report.html plots train and eval loss,
 * learning rate and throughput against the step as inline SVG: no scripts,
 * no network, viewable offline. */
#ifndef QT_TRAIN_REPORT_H
#define QT_TRAIN_REPORT_H

#include "common/status.h"

/* Reads out_dir/metrics.jsonl and writes out_dir/report.html atomically.
 * Lines that are not JSON objects are skipped (a run killed mid-line leaves a
 * partial last line). */
qt_status qt_report_write(const char *out_dir, const char *title);

#endif
