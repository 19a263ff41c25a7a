/* data/loader.c — order, sharding, packing, cursor (contract: data/loader.h). */
#include "data/loader.h"

#include <stdlib.h>
#include <string.h>

#include "common/philox.h"

static uint64_t next_u64(qt_philox *s) {
  uint64_t lo = qt_philox_next_u32(s);
  uint64_t hi = qt_philox_next_u32(s);
  return lo | (hi << 32);
}

/* Uniform in [0, k) for k >= 1: reject the 2^64 mod k smallest draws so the
 * rest is a whole number of copies of [0, k). */
static uint64_t bounded(qt_philox *s, uint64_t k) {
  uint64_t threshold = (0 - k) % k;
  uint64_t r;
  do r = next_u64(s);
  while (r < threshold);
  return r % k;
}

void qt_loader_epoch_order(uint64_t seed, int shuffle, int64_t epoch, int64_t n, int64_t *order) {
  for (int64_t i = 0; i < n; i++) order[i] = i;
  if (!shuffle) return;
  qt_philox s;
  qt_philox_init(&s, seed ^ QT_LOADER_SEED_TAG, (uint64_t)epoch, 0);
  /* Fisher-Yates, from the top: swap i with a uniform j in [0, i]. */
  for (int64_t i = n - 1; i > 0; i--) {
    int64_t j = (int64_t)bounded(&s, (uint64_t)i + 1);
    int64_t t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
}

static int64_t shard_size(int64_t n, int rank, int world) {
  return n > rank ? (n - rank + world - 1) / world : 0;
}

qt_status qt_loader_init(qt_loader *l, const qt_dataset *ds, const qt_loader_opts *o) {
  memset(l, 0, sizeof *l);
  if (o->seq_len < 1 || o->rows < 1)
    return qt_fail(QT_ERR_INVALID, "loader: seq_len (%lld) and rows (%lld) must be >= 1",
                   (long long)o->seq_len, (long long)o->rows);
  if (o->world_size < 1 || o->rank < 0 || o->rank >= o->world_size)
    return qt_fail(QT_ERR_INVALID, "loader: rank %d is not in [0, world_size %d)", o->rank,
                   o->world_size);
  if (ds->n < o->world_size)
    return qt_fail(QT_ERR_INVALID,
                   "loader: the dataset has %lld examples, fewer than the %d ranks; every rank "
                   "needs at least one", (long long)ds->n, o->world_size);
  l->ds = ds;
  l->o = *o;
  l->shard = shard_size(ds->n, o->rank, o->world_size);
  l->perm_epoch = -1;
  int64_t B = o->rows, T = o->seq_len;
  qt_batch *b = &l->batch;
  b->rows = B;
  b->seq_len = T;
  l->perm = malloc((size_t)ds->n * sizeof *l->perm);
  b->ids = malloc((size_t)(B * T) * sizeof *b->ids);
  b->labels = malloc((size_t)(B * T) * sizeof *b->labels);
  b->pos = malloc((size_t)(B * T) * sizeof *b->pos);
  b->doc = malloc((size_t)(B * T) * sizeof *b->doc);
  b->example = malloc((size_t)(B * T) * sizeof *b->example);
  b->n_docs = malloc((size_t)B * sizeof *b->n_docs);
  if (!l->perm || !b->ids || !b->labels || !b->pos || !b->doc || !b->example || !b->n_docs) {
    qt_loader_free(l);
    return qt_fail(QT_ERR_NOMEM, "loader: out of memory for a (%lld, %lld) batch",
                   (long long)B, (long long)T);
  }
  return QT_OK;
}

void qt_loader_free(qt_loader *l) {
  free(l->perm);
  free(l->batch.ids);
  free(l->batch.labels);
  free(l->batch.pos);
  free(l->batch.doc);
  free(l->batch.example);
  free(l->batch.n_docs);
  memset(l, 0, sizeof *l);
}

static void ensure_order(qt_loader *l) {
  if (l->perm_epoch == l->cur.epoch) return;
  qt_loader_epoch_order(l->o.seed, l->o.shuffle, l->cur.epoch, l->ds->n, l->perm);
  l->perm_epoch = l->cur.epoch;
}

static int64_t clipped_len(const qt_loader *l, int64_t idx) {
  int64_t len = qt_dataset_example_len(l->ds, idx);
  return len < l->o.seq_len ? len : l->o.seq_len;
}

/* Writes example idx (L tokens) as document d of row `row` at column c. */
static void place(qt_loader *l, int64_t row, int64_t c, int32_t d, int64_t idx, int64_t L) {
  qt_batch *b = &l->batch;
  const int32_t *ids = l->ds->ids + l->ds->offset[idx];
  const int32_t *labels = l->ds->labels + l->ds->offset[idx];
  int64_t o = row * b->seq_len + c;
  memcpy(b->ids + o, ids, (size_t)L * sizeof *ids);
  memcpy(b->labels + o, labels, (size_t)L * sizeof *labels);
  /* The first token of a document is never a target (see loader.h). */
  b->labels[o] = QT_LABEL_IGNORE;
  for (int64_t i = 0; i < L; i++) {
    b->pos[o + i] = (int32_t)i;
    b->doc[o + i] = d;
    b->n_targets += b->labels[o + i] != QT_LABEL_IGNORE;
  }
  b->example[row * b->seq_len + d] = idx;
  b->n_tokens += L;
}

const qt_batch *qt_loader_next(qt_loader *l) {
  qt_batch *b = &l->batch;
  int64_t B = b->rows, T = b->seq_len, W = l->o.world_size;
  for (int64_t i = 0; i < B * T; i++) {
    b->ids[i] = l->o.pad_id;
    b->labels[i] = QT_LABEL_IGNORE;
    b->pos[i] = 0;
    b->doc[i] = -1;
    b->example[i] = -1;
  }
  for (int64_t r = 0; r < B; r++) b->n_docs[r] = 0;
  b->n_tokens = b->n_targets = 0;
  b->epoch = l->cur.epoch;
  b->epoch_end = 0;
  ensure_order(l);

  int64_t row = 0, used = 0;
  while (row < B && l->cur.pos < l->shard) {
    int64_t idx = l->perm[l->o.rank + l->cur.pos * W];
    int64_t L = clipped_len(l, idx);
    if (l->o.packing && used > 0 && used + L > T) {
      row++;
      used = 0;
      continue;
    }
    place(l, row, used, b->n_docs[row], idx, L);
    b->n_docs[row]++;
    l->cur.pos++;
    used += L;
    if (!l->o.packing) {
      row++;
      used = 0;
    }
  }
  b->n_rows = used > 0 ? row + 1 : row;
  b->T = T;
  if (l->o.pad_to_longest) {
    int64_t w = 1;
    for (int64_t r = 0; r < b->n_rows; r++)
      for (int64_t c = T; c > w; c--)
        if (b->doc[r * T + c - 1] >= 0) {
          w = c;
          break;
        }
    /* Row r moves from r*T to r*w (w <= T): forward, in increasing r. */
    for (int64_t r = 1; r < B && w < T; r++) {
      memmove(b->ids + r * w, b->ids + r * T, (size_t)w * sizeof *b->ids);
      memmove(b->labels + r * w, b->labels + r * T, (size_t)w * sizeof *b->labels);
      memmove(b->pos + r * w, b->pos + r * T, (size_t)w * sizeof *b->pos);
      memmove(b->doc + r * w, b->doc + r * T, (size_t)w * sizeof *b->doc);
    }
    b->T = w;
  }
  if (l->cur.pos == l->shard) {
    b->epoch_end = 1;
    l->cur.epoch++;
    l->cur.pos = 0;
  }
  return b;
}

qt_loader_cursor qt_loader_get_cursor(const qt_loader *l) { return l->cur; }

qt_status qt_loader_set_cursor(qt_loader *l, qt_loader_cursor c) {
  if (c.epoch < 0 || c.pos < 0 || c.pos > l->shard)
    return qt_fail(QT_ERR_INVALID,
                   "loader: cursor (epoch %lld, position %lld) does not fit this rank's shard of "
                   "%lld examples; was the dataset or the number of ranks changed?",
                   (long long)c.epoch, (long long)c.pos, (long long)l->shard);
  if (c.pos == l->shard) {
    c.epoch++;
    c.pos = 0;
  }
  l->cur = c;
  return QT_OK;
}

qt_status qt_loader_epoch_batches(const qt_loader *l, int64_t epoch, int64_t *n_batches) {
  int64_t n = l->ds->n, T = l->o.seq_len, W = l->o.world_size;
  int64_t *order = malloc((size_t)n * sizeof *order);
  if (!order) return qt_fail(QT_ERR_NOMEM, "loader: out of memory");
  qt_loader_epoch_order(l->o.seed, l->o.shuffle, epoch, n, order);
  int64_t rows = 0, used = 0;
  for (int64_t k = 0; k < l->shard; k++) {
    int64_t L = clipped_len(l, order[l->o.rank + k * W]);
    if (!l->o.packing) {
      rows++;
    } else if (used == 0 || used + L > T) {
      rows++;
      used = L;
    } else {
      used += L;
    }
  }
  free(order);
  *n_batches = (rows + l->o.rows - 1) / l->o.rows;
  return QT_OK;
}
