/* train/report.c — report.html from metrics.jsonl (inline SVG line charts). */
#include "train/report.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fs.h"

typedef struct {
  double *x, *y;
  size_t n, cap;
} series;

static int series_push(series *s, double x, double y) {
  if (s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 256;
    double *nx = realloc(s->x, cap * sizeof *nx);
    if (!nx) return -1;
    s->x = nx;
    double *ny = realloc(s->y, cap * sizeof *ny);
    if (!ny) return -1;
    s->y = ny;
    s->cap = cap;
  }
  s->x[s->n] = x;
  s->y[s->n] = y;
  s->n++;
  return 0;
}

typedef struct {
  char *buf;
  size_t len, cap;
  int oom;
} sbuf;

__attribute__((format(printf, 2, 3))) static void out(sbuf *b, const char *fmt, ...) {
  if (b->oom) return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->buf + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
      b->oom = 1;
      return;
    }
    if ((size_t)n < b->cap - b->len) {
      b->len += (size_t)n;
      return;
    }
    size_t cap = (b->cap + (size_t)n + 1) * 2;
    char *nb = realloc(b->buf, cap);
    if (!nb) {
      b->oom = 1;
      return;
    }
    b->buf = nb;
    b->cap = cap;
  }
}

static void html_escape(sbuf *b, const char *s) {
  for (; *s; s++) {
    switch (*s) {
      case '<': out(b, "&lt;"); break;
      case '>': out(b, "&gt;"); break;
      case '&': out(b, "&amp;"); break;
      case '"': out(b, "&quot;"); break;
      default: out(b, "%c", *s);
    }
  }
}

/* One chart: up to two series (e.g. train and eval loss) on shared axes. */
static void chart(sbuf *b, const char *title, const char *ylabel, const series *s1, const char *n1,
                  const series *s2, const char *n2) {
  const double W = 640, H = 260, L = 70, R = 20, T = 30, B = 40;
  double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
  const series *all[2] = {s1, s2};
  for (int k = 0; k < 2; k++) {
    if (!all[k]) continue;
    for (size_t i = 0; i < all[k]->n; i++) {
      xmin = fmin(xmin, all[k]->x[i]);
      xmax = fmax(xmax, all[k]->x[i]);
      ymin = fmin(ymin, all[k]->y[i]);
      ymax = fmax(ymax, all[k]->y[i]);
    }
  }
  out(b, "<figure><figcaption>");
  html_escape(b, title);
  out(b, "</figcaption>\n");
  if (!isfinite(xmin)) {
    out(b, "<p class=\"empty\">no data</p></figure>\n");
    return;
  }
  if (xmax == xmin) xmax = xmin + 1;
  if (ymax == ymin) {
    ymax += fabs(ymax) * 0.05 + 1e-12;
    ymin -= fabs(ymin) * 0.05 + 1e-12;
  }
  out(b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\">\n", W, H, W, H);
  out(b, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"#fff\" stroke=\"#999\"/>\n", L, T, W - L - R,
      H - T - B);
  for (int i = 0; i <= 4; i++) {
    double fy = ymin + (ymax - ymin) * i / 4.0, py = H - B - (H - T - B) * i / 4.0;
    double fx = xmin + (xmax - xmin) * i / 4.0, px = L + (W - L - R) * i / 4.0;
    out(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\">%.4g</text>\n", L - 4, py + 4, fy);
    out(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"middle\">%.0f</text>\n", px, H - B + 14, fx);
  }
  out(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" text-anchor=\"middle\">step</text>\n", L + (W - L - R) / 2, H - 6);
  out(b, "<text x=\"12\" y=\"%.1f\" font-size=\"12\" transform=\"rotate(-90 12 %.1f)\" text-anchor=\"middle\">", H / 2, H / 2);
  html_escape(b, ylabel);
  out(b, "</text>\n");
  static const char *const colors[2] = {"#1f77b4", "#d62728"};
  const char *names[2] = {n1, n2};
  for (int k = 0; k < 2; k++) {
    if (!all[k] || all[k]->n == 0) continue;
    out(b, "<polyline class=\"series\" fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"", colors[k]);
    for (size_t i = 0; i < all[k]->n; i++) {
      double px = L + (W - L - R) * (all[k]->x[i] - xmin) / (xmax - xmin);
      double py = H - B - (H - T - B) * (all[k]->y[i] - ymin) / (ymax - ymin);
      out(b, "%s%.1f,%.1f", i ? " " : "", px, py);
    }
    out(b, "\"/>\n");
    if (all[k]->n == 1) {
      double px = L + (W - L - R) * (all[k]->x[0] - xmin) / (xmax - xmin);
      double py = H - B - (H - T - B) * (all[k]->y[0] - ymin) / (ymax - ymin);
      out(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n", px, py, colors[k]);
    }
    out(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" fill=\"%s\">", L + 8 + 120 * k, T - 10, colors[k]);
    html_escape(b, names[k]);
    out(b, " (%zu points)</text>\n", all[k]->n);
  }
  out(b, "</svg></figure>\n");
}

static void series_free(series *s) {
  free(s->x);
  free(s->y);
}

qt_status qt_report_write(const char *out_dir, const char *title) {
  char mpath[4200], rpath[4200];
  snprintf(mpath, sizeof mpath, "%s/metrics.jsonl", out_dir);
  snprintf(rpath, sizeof rpath, "%s/report.html", out_dir);
  uint8_t *data = NULL;
  size_t len = 0;
  QT_TRY(qt_fs_read_file(mpath, (size_t)1 << 30, &data, &len));
  series loss = {0}, eval = {0}, lr = {0}, tps = {0};
  int oom = 0;
  size_t start = 0;
  for (size_t i = 0; i <= len && !oom; i++) {
    if (i < len && data[i] != '\n') continue;
    cJSON *o = cJSON_ParseWithLength((const char *)data + start, i - start);
    start = i + 1;
    if (!o || !cJSON_IsObject(o)) {
      cJSON_Delete(o);
      continue;
    }
    cJSON *st = cJSON_GetObjectItemCaseSensitive(o, "step");
    if (cJSON_IsNumber(st)) {
      double x = st->valuedouble;
      const struct { const char *key; series *s; } want[] = {
          {"loss", &loss}, {"eval_loss", &eval}, {"lr", &lr}, {"tokens_per_s", &tps}};
      for (size_t k = 0; k < 4; k++) {
        cJSON *v = cJSON_GetObjectItemCaseSensitive(o, want[k].key);
        if (cJSON_IsNumber(v) && isfinite(v->valuedouble) && series_push(want[k].s, x, v->valuedouble)) oom = 1;
      }
    }
    cJSON_Delete(o);
  }
  free(data);
  sbuf b = {0};
  out(&b, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>");
  html_escape(&b, title);
  out(&b, "</title>\n<style>body{font-family:sans-serif;margin:2em;color:#222}figure{margin:1em 0}"
          "figcaption{font-weight:bold;margin-bottom:.3em}.empty{color:#888}</style></head><body>\n<h1>");
  html_escape(&b, title);
  out(&b, "</h1>\n");
  if (loss.n) out(&b, "<p>steps: %.0f, last train loss: %.6g", loss.x[loss.n - 1], loss.y[loss.n - 1]);
  if (loss.n && eval.n) out(&b, ", last eval loss: %.6g", eval.y[eval.n - 1]);
  if (loss.n) out(&b, "</p>\n");
  chart(&b, "Loss", "loss", &loss, "train", eval.n ? &eval : NULL, "eval");
  chart(&b, "Learning rate", "lr", &lr, "lr", NULL, NULL);
  chart(&b, "Throughput", "tokens/s", &tps, "tokens/s", NULL, NULL);
  out(&b, "</body></html>\n");
  series_free(&loss);
  series_free(&eval);
  series_free(&lr);
  series_free(&tps);
  if (oom || b.oom) {
    free(b.buf);
    return qt_fail(QT_ERR_NOMEM, "%s: out of memory while writing the report", rpath);
  }
  qt_status s = qt_fs_write_atomic(rpath, b.buf, b.len);
  free(b.buf);
  return s;
}
