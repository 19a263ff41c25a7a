/* data/loader: every example exactly once per epoch, in the seeded order, on
 * any number of ranks, across every stop/resume point; packed rows respect
 * document boundaries; the shuffle is uniform. Synthetic datasets whose
 * token ids name (example, position), so every token can be traced. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "data/dataset.h"
#include "data/loader.h"

enum { ID_STRIDE = 1000 };

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;
static uint32_t rnd(uint32_t k) { /* xorshift64*, test data only */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return (uint32_t)((rng_state * 0x2545F4914F6CDD1DULL) >> 32) % k;
}

/* n examples with lengths in [1, max_len]; token k of example i has id
 * i*ID_STRIDE + k, label id or -100 (about a third masked). */
static void make_dataset(qt_dataset *ds, int64_t n, int64_t max_len) {
  memset(ds, 0, sizeof *ds);
  int32_t ids[ID_STRIDE], labels[ID_STRIDE];
  for (int64_t i = 0; i < n; i++) {
    int64_t L = 1 + rnd((uint32_t)max_len);
    for (int64_t k = 0; k < L; k++) {
      ids[k] = (int32_t)(i * ID_STRIDE + k);
      labels[k] = rnd(3) == 0 ? QT_LABEL_IGNORE : ids[k];
    }
    assert_int_equal(qt_dataset_add(ds, ids, labels, L, i + 1, 0), QT_OK);
  }
}

static int64_t clip(const qt_dataset *ds, int64_t idx, int64_t T) {
  int64_t L = qt_dataset_example_len(ds, idx);
  return L < T ? L : T;
}

/* Checks one batch's structure against the dataset; appends the examples it
 * holds (in order) to seq[*n_seq]. *prev_used / *prev_row_open carry the
 * greedy-packing check across rows: a row must be closed only because the
 * next example did not fit. */
static void check_batch(const qt_batch *b, const qt_dataset *ds, const qt_loader_opts *o,
                        int64_t *seq, int64_t *n_seq, int64_t *last_used) {
  int64_t T = o->seq_len, ntok = 0, ntgt = 0;
  assert_true(b->n_rows >= 0 && b->n_rows <= b->rows);
  if (!b->epoch_end) assert_int_equal(b->n_rows, b->rows);
  for (int64_t r = 0; r < b->rows; r++) {
    const int32_t *ids = b->ids + r * T, *lab = b->labels + r * T, *pos = b->pos + r * T,
                  *doc = b->doc + r * T;
    int64_t c = 0;
    if (r >= b->n_rows) assert_int_equal(b->n_docs[r], 0);
    if (!o->packing && r < b->n_rows) assert_int_equal(b->n_docs[r], 1);
    for (int32_t d = 0; d < b->n_docs[r]; d++) {
      int64_t idx = b->example[r * T + d];
      assert_true(idx >= 0 && idx < ds->n);
      int64_t L = clip(ds, idx, T);
      /* greedy: the previous row was closed because this one did not fit */
      if (d == 0 && o->packing && *last_used > 0) assert_true(*last_used + L > T);
      const int32_t *eid = ds->ids + ds->offset[idx], *elab = ds->labels + ds->offset[idx];
      for (int64_t k = 0; k < L; k++, c++) {
        assert_true(c < T);
        assert_int_equal(ids[c], eid[k]);
        assert_int_equal(pos[c], k);
        assert_int_equal(doc[c], d);
        /* the first token of a document is never a target */
        assert_int_equal(lab[c], k == 0 ? QT_LABEL_IGNORE : elab[k]);
        ntgt += lab[c] != QT_LABEL_IGNORE;
        ntok++;
      }
      seq[(*n_seq)++] = idx;
    }
    for (; c < T; c++) {
      assert_int_equal(ids[c], o->pad_id);
      assert_int_equal(lab[c], QT_LABEL_IGNORE);
      assert_int_equal(doc[c], -1);
      assert_int_equal(pos[c], 0);
    }
    if (r < b->n_rows) {
      int64_t used = 0;
      for (int32_t d = 0; d < b->n_docs[r]; d++) used += clip(ds, b->example[r * T + d], T);
      *last_used = used;
    }
  }
  assert_int_equal(b->n_tokens, ntok);
  assert_int_equal(b->n_targets, ntgt);
  if (b->epoch_end) *last_used = 0;
}

/* Every rank count 1..4, packing on/off, several batch shapes: over three
 * epochs, each epoch's shards are exactly the seeded order split by
 * position mod W, so together every example appears once. */
static void test_coverage_and_order(void **unused) {
  qt_dataset ds;
  make_dataset(&ds, 57, 40);
  int64_t n = ds.n;
  int64_t *order = malloc((size_t)n * sizeof *order);
  int64_t *seq = malloc((size_t)(4 * n) * sizeof *seq);
  for (int W = 1; W <= 4; W++)
    for (int packing = 0; packing <= 1; packing++)
      for (int64_t rows = 1; rows <= 3; rows += 2)
        for (int64_t T = 16; T <= 64; T *= 4) {
          int *count = calloc((size_t)(3 * n), sizeof *count);
          for (int rank = 0; rank < W; rank++) {
            qt_loader_opts o = {.seq_len = T, .rows = rows, .packing = packing, .shuffle = 1,
                                .seed = 1234, .rank = rank, .world_size = W, .pad_id = -7};
            qt_loader l;
            assert_int_equal(qt_loader_init(&l, &ds, &o), QT_OK);
            for (int64_t e = 0; e < 3; e++) {
              int64_t n_seq = 0, last_used = 0, batches = 0, want_batches = 0;
              assert_int_equal(qt_loader_epoch_batches(&l, e, &want_batches), QT_OK);
              const qt_batch *b;
              do {
                b = qt_loader_next(&l);
                assert_int_equal(b->epoch, e);
                check_batch(b, &ds, &o, seq, &n_seq, &last_used);
                batches++;
              } while (!b->epoch_end);
              assert_int_equal(batches, want_batches);
              qt_loader_epoch_order(1234, 1, e, n, order);
              int64_t k = 0;
              for (int64_t p = rank; p < n; p += W, k++) assert_int_equal(seq[k], order[p]);
              assert_int_equal(n_seq, k);
              for (int64_t i = 0; i < n_seq; i++) count[e * n + seq[i]]++;
            }
            qt_loader_free(&l);
          }
          for (int64_t i = 0; i < 3 * n; i++) assert_int_equal(count[i], 1);
          free(count);
        }
  free(seq);
  free(order);
  qt_dataset_free(&ds);
}

/* The seeded order: a permutation, reproducible, different per epoch and per
 * seed, identity without shuffle, and uniform (all 24 orders of 4 elements
 * equally likely: chi-square over 24000 epochs, 23 degrees of freedom,
 * threshold 60 ~ p = 4e-5). */
static void test_order_properties(void **unused) {
  int64_t a[50], b[50];
  qt_loader_epoch_order(7, 1, 0, 50, a);
  qt_loader_epoch_order(7, 1, 0, 50, b);
  assert_memory_equal(a, b, sizeof a);
  int seen[50] = {0};
  for (int i = 0; i < 50; i++) seen[a[i]]++;
  for (int i = 0; i < 50; i++) assert_int_equal(seen[i], 1);
  qt_loader_epoch_order(7, 1, 1, 50, b);
  assert_memory_not_equal(a, b, sizeof a);
  qt_loader_epoch_order(8, 1, 0, 50, b);
  assert_memory_not_equal(a, b, sizeof a);
  qt_loader_epoch_order(7, 0, 3, 50, b);
  for (int i = 0; i < 50; i++) assert_int_equal(b[i], i);

  enum { N = 24000 };
  int hist[256] = {0};
  for (int64_t e = 0; e < N; e++) {
    int64_t p[4];
    qt_loader_epoch_order(99, 1, e, 4, p);
    hist[p[0] * 64 + p[1] * 16 + p[2] * 4 + p[3]]++;
  }
  double chi2 = 0, expect = N / 24.0;
  int distinct = 0;
  for (int i = 0; i < 256; i++) {
    int d0 = i / 64, d1 = i / 16 % 4, d2 = i / 4 % 4, d3 = i % 4;
    int perm = d0 != d1 && d0 != d2 && d0 != d3 && d1 != d2 && d1 != d3 && d2 != d3;
    if (!perm) {
      assert_int_equal(hist[i], 0);
      continue;
    }
    distinct++;
    chi2 += (hist[i] - expect) * (hist[i] - expect) / expect;
  }
  assert_int_equal(distinct, 24);
  assert_true(chi2 < 60.0);
}

typedef struct {
  int64_t epoch;
  int epoch_end;
  int64_t n_rows;
  int32_t *ids, *labels, *pos, *doc;
} snap;

static void snap_take(snap *s, const qt_batch *b) {
  size_t bt = (size_t)(b->rows * b->seq_len);
  s->epoch = b->epoch;
  s->epoch_end = b->epoch_end;
  s->n_rows = b->n_rows;
  s->ids = malloc(bt * sizeof(int32_t));
  s->labels = malloc(bt * sizeof(int32_t));
  s->pos = malloc(bt * sizeof(int32_t));
  s->doc = malloc(bt * sizeof(int32_t));
  memcpy(s->ids, b->ids, bt * sizeof(int32_t));
  memcpy(s->labels, b->labels, bt * sizeof(int32_t));
  memcpy(s->pos, b->pos, bt * sizeof(int32_t));
  memcpy(s->doc, b->doc, bt * sizeof(int32_t));
}

static void snap_equal(const snap *s, const qt_batch *b) {
  size_t bt = (size_t)(b->rows * b->seq_len) * sizeof(int32_t);
  assert_int_equal(s->epoch, b->epoch);
  assert_int_equal(s->epoch_end, b->epoch_end);
  assert_int_equal(s->n_rows, b->n_rows);
  assert_memory_equal(s->ids, b->ids, bt);
  assert_memory_equal(s->labels, b->labels, bt);
  assert_memory_equal(s->pos, b->pos, bt);
  assert_memory_equal(s->doc, b->doc, bt);
}

static void snap_free(snap *s) {
  free(s->ids);
  free(s->labels);
  free(s->pos);
  free(s->doc);
}

/* Stop after every batch of three epochs, rebuild the loader from the
 * cursor alone, and compare everything that follows with the uninterrupted
 * run, for every rank of 1..4 ranks, packing on/off, 1 or 2 rows. */
static void test_resume_every_point(void **unused) {
  qt_dataset ds;
  make_dataset(&ds, 11, 12);
  enum { MAXB = 128 };
  snap ref[MAXB];
  for (int W = 1; W <= 4; W++)
    for (int rank = 0; rank < W; rank++)
      for (int packing = 0; packing <= 1; packing++)
        for (int64_t rows = 1; rows <= 2; rows++) {
          qt_loader_opts o = {.seq_len = 10, .rows = rows, .packing = packing, .shuffle = 1,
                              .seed = 5, .rank = rank, .world_size = W, .pad_id = 0};
          qt_loader l;
          assert_int_equal(qt_loader_init(&l, &ds, &o), QT_OK);
          int nb = 0;
          qt_loader_cursor cur[MAXB + 1];
          int64_t epochs_done = 0;
          while (epochs_done < 3) {
            assert_true(nb < MAXB);
            cur[nb] = qt_loader_get_cursor(&l);
            const qt_batch *b = qt_loader_next(&l);
            snap_take(&ref[nb++], b);
            epochs_done += b->epoch_end;
          }
          cur[nb] = qt_loader_get_cursor(&l);
          assert_int_equal(cur[nb].epoch, 3);
          assert_int_equal(cur[nb].pos, 0);
          qt_loader_free(&l);
          for (int stop = 0; stop < nb; stop++) {
            qt_loader r;
            assert_int_equal(qt_loader_init(&r, &ds, &o), QT_OK);
            /* the cursor is two integers: round-trip them as a checkpoint would */
            int64_t saved[2] = {cur[stop].epoch, cur[stop].pos};
            assert_int_equal(qt_loader_set_cursor(&r, (qt_loader_cursor){saved[0], saved[1]}), QT_OK);
            for (int k = stop; k < nb; k++) snap_equal(&ref[k], qt_loader_next(&r));
            qt_loader_free(&r);
          }
          for (int k = 0; k < nb; k++) snap_free(&ref[k]);
        }
  qt_dataset_free(&ds);
}

/* Any (epoch, pos) cursor — not only batch boundaries — continues with the
 * example at that position of the rank's shard. */
static void test_cursor_any_position(void **unused) {
  qt_dataset ds;
  make_dataset(&ds, 13, 9);
  int64_t order[13];
  for (int W = 1; W <= 4; W++)
    for (int rank = 0; rank < W; rank++) {
      qt_loader_opts o = {.seq_len = 9, .rows = 2, .packing = 1, .shuffle = 1, .seed = 77,
                          .rank = rank, .world_size = W};
      qt_loader l;
      assert_int_equal(qt_loader_init(&l, &ds, &o), QT_OK);
      for (int64_t e = 0; e < 2; e++) {
        qt_loader_epoch_order(77, 1, e, 13, order);
        for (int64_t pos = 0; pos < l.shard; pos++) {
          assert_int_equal(qt_loader_set_cursor(&l, (qt_loader_cursor){e, pos}), QT_OK);
          const qt_batch *b = qt_loader_next(&l);
          assert_int_equal(b->epoch, e);
          assert_int_equal(b->example[0], order[rank + pos * W]);
        }
        /* pos == shard is the start of the next epoch */
        assert_int_equal(qt_loader_set_cursor(&l, (qt_loader_cursor){e, l.shard}), QT_OK);
        assert_int_equal(qt_loader_get_cursor(&l).epoch, e + 1);
        assert_int_equal(qt_loader_get_cursor(&l).pos, 0);
      }
      assert_int_equal(qt_loader_set_cursor(&l, (qt_loader_cursor){0, l.shard + 1}), QT_ERR_INVALID);
      assert_int_equal(qt_loader_set_cursor(&l, (qt_loader_cursor){-1, 0}), QT_ERR_INVALID);
      qt_loader_free(&l);
    }
  qt_dataset_free(&ds);
}

/* Eval: file order, one example per row, long examples cut to seq_len. */
static void test_eval_and_truncation(void **unused) {
  qt_dataset ds;
  make_dataset(&ds, 9, 30);
  qt_loader_opts o = {.seq_len = 8, .rows = 4, .packing = 0, .shuffle = 0, .rank = 0,
                      .world_size = 1, .pad_id = 3};
  qt_loader l;
  assert_int_equal(qt_loader_init(&l, &ds, &o), QT_OK);
  int64_t seq[16], n_seq = 0, last = 0;
  const qt_batch *b;
  int batches = 0;
  do {
    b = qt_loader_next(&l);
    check_batch(b, &ds, &o, seq, &n_seq, &last);
    batches++;
  } while (!b->epoch_end);
  assert_int_equal(batches, 3);
  assert_int_equal(b->n_rows, 1);
  assert_int_equal(n_seq, 9);
  for (int64_t i = 0; i < 9; i++) assert_int_equal(seq[i], i);
  qt_loader_free(&l);

  /* truncation at load time is counted */
  qt_dataset t = {0};
  int32_t ids[20], labels[20];
  for (int i = 0; i < 20; i++) ids[i] = labels[i] = i;
  assert_int_equal(qt_dataset_add(&t, ids, labels, 20, 1, 16), QT_OK);
  assert_int_equal(qt_dataset_add(&t, ids, labels, 16, 2, 16), QT_OK);
  assert_int_equal(t.n_truncated, 1);
  assert_int_equal(qt_dataset_example_len(&t, 0), 16);
  assert_int_equal(qt_dataset_add(&t, ids, labels, 0, 3, 16), QT_ERR_INVALID);
  qt_dataset_free(&t);
  qt_dataset_free(&ds);
}

/* The dataset hash sees every id, label and boundary. */
static void test_dataset_hash(void **unused) {
  qt_dataset a, b = {0};
  make_dataset(&a, 20, 30);
  for (int64_t i = 0; i < a.n; i++)
    assert_int_equal(qt_dataset_add(&b, a.ids + a.offset[i], a.labels + a.offset[i],
                                    qt_dataset_example_len(&a, i), i + 1, 0), QT_OK);
  uint8_t ha[32], hb[32];
  qt_dataset_hash(&a, ha);
  qt_dataset_hash(&b, hb);
  assert_memory_equal(ha, hb, 32);
  b.labels[17] = b.labels[17] == QT_LABEL_IGNORE ? b.ids[17] : QT_LABEL_IGNORE;
  qt_dataset_hash(&b, hb);
  assert_memory_not_equal(ha, hb, 32);
  b.labels[17] = a.labels[17];
  b.ids[3] ^= 1;
  qt_dataset_hash(&b, hb);
  assert_memory_not_equal(ha, hb, 32);
  b.ids[3] ^= 1;
  b.offset[1]++; /* the same tokens split differently */
  qt_dataset_hash(&b, hb);
  assert_memory_not_equal(ha, hb, 32);
  b.offset[1]--;
  qt_dataset_hash(&b, hb);
  assert_memory_equal(ha, hb, 32);
  qt_dataset_free(&a);
  qt_dataset_free(&b);
}

/* pad_to_longest: every batch equals the seq_len-wide batch of an identical
 * loader cut to the width of its longest row (which is full in some row), with
 * the same counts; the cursor and the batches after it are unchanged. */
static void test_pad_to_longest(void **unused) {
  (void)unused;
  qt_dataset ds;
  make_dataset(&ds, 57, 40);
  for (int packing = 0; packing <= 1; packing++)
    for (int64_t rows = 1; rows <= 4; rows++) {
      qt_loader_opts o = {.seq_len = 48, .rows = rows, .packing = packing, .shuffle = 1, .seed = 11,
                          .rank = 0, .world_size = 1, .pad_id = -7};
      qt_loader_opts ot = o;
      ot.pad_to_longest = 1;
      qt_loader a, t;
      assert_int_equal(qt_loader_init(&a, &ds, &o), QT_OK);
      assert_int_equal(qt_loader_init(&t, &ds, &ot), QT_OK);
      int64_t narrower = 0;
      for (int k = 0; k < 60; k++) {
        const qt_batch *x = qt_loader_next(&a), *y = qt_loader_next(&t);
        int64_t T = o.seq_len, w = y->T, longest = 1;
        assert_int_equal(x->T, T);
        for (int64_t r = 0; r < x->rows; r++)
          for (int64_t c = 0; c < T; c++)
            if (x->doc[r * T + c] >= 0 && c + 1 > longest) longest = c + 1;
        assert_int_equal(w, longest);
        narrower += w < T;
        for (int64_t r = 0; r < x->rows; r++) {
          assert_memory_equal(y->ids + r * w, x->ids + r * T, (size_t)w * sizeof *x->ids);
          assert_memory_equal(y->labels + r * w, x->labels + r * T, (size_t)w * sizeof *x->labels);
          assert_memory_equal(y->pos + r * w, x->pos + r * T, (size_t)w * sizeof *x->pos);
          assert_memory_equal(y->doc + r * w, x->doc + r * T, (size_t)w * sizeof *x->doc);
          for (int64_t c = w; c < T; c++) assert_int_equal(x->doc[r * T + c], -1); /* only padding cut */
        }
        assert_int_equal(y->n_rows, x->n_rows);
        assert_int_equal(y->n_tokens, x->n_tokens);
        assert_int_equal(y->n_targets, x->n_targets);
        assert_int_equal(y->epoch_end, x->epoch_end);
        qt_loader_cursor ca = qt_loader_get_cursor(&a), ct = qt_loader_get_cursor(&t);
        assert_true(ca.epoch == ct.epoch && ca.pos == ct.pos);
      }
      if (!packing) assert_true(narrower > 0); /* examples of 1..40 tokens in 48-token rows */
      qt_loader_free(&a);
      qt_loader_free(&t);
    }
  qt_dataset_free(&ds);
}

static void test_bad_options(void **unused) {
  qt_dataset ds;
  make_dataset(&ds, 3, 5);
  qt_loader l;
  qt_loader_opts o = {.seq_len = 8, .rows = 1, .rank = 0, .world_size = 4};
  assert_int_equal(qt_loader_init(&l, &ds, &o), QT_ERR_INVALID);
  o.world_size = 2;
  o.rank = 2;
  assert_int_equal(qt_loader_init(&l, &ds, &o), QT_ERR_INVALID);
  o.rank = 1;
  o.seq_len = 0;
  assert_int_equal(qt_loader_init(&l, &ds, &o), QT_ERR_INVALID);
  o.seq_len = 8;
  assert_int_equal(qt_loader_init(&l, &ds, &o), QT_OK);
  assert_int_equal(l.shard, 1);
  qt_loader_free(&l);
  qt_dataset_free(&ds);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_order_properties),   cmocka_unit_test(test_coverage_and_order),
      cmocka_unit_test(test_resume_every_point), cmocka_unit_test(test_cursor_any_position),
      cmocka_unit_test(test_eval_and_truncation), cmocka_unit_test(test_bad_options),
      cmocka_unit_test(test_dataset_hash),        cmocka_unit_test(test_pad_to_longest),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
