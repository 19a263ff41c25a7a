/* data/loader.h — batches of rows from a dataset: order, sharding, packing,
 * and a resumable cursor.
 *
 * Order. Epoch e visits the examples in a permutation of 0..n-1: a
 * Fisher-Yates shuffle (Knuth, TAOCP vol. 2, Algorithm P) whose draws come
 * from Philox4x32-10 (common/philox.h) with key seed ^ QT_LOADER_SEED_TAG
 * and subsequence e, 64 bits per draw (two words, low word first), reduced
 * to [0, k) without bias by rejecting draws below 2^64 mod k. Deterministic
 * given (seed, epoch, n) and the same on every rank; the tag keeps the data
 * order's stream apart from dropout streams keyed by the same seed.
 * shuffle = 0 (eval) keeps file order.
 *
 * Sharding. Rank r of W takes the positions r, r+W, r+2W, ... of the
 * permuted order (strided, like PyTorch's DistributedSampler without
 * padding): the shards are disjoint and together hold every example once;
 * their sizes differ by at most one, so the trainer must cope with ranks
 * whose epochs end a batch apart. The loader refuses n < W.
 *
 * Rows (seq_len tokens; examples longer than seq_len are cut to seq_len).
 * - packing = 0: one example per row, padded to seq_len.
 * - packing = 1: examples are appended to the current row in order while
 *   they fit; the first one that does not fit starts the next row (an
 *   example is never split, rows are padded at the end). Positions restart
 *   at 0 for every document, and doc[] says which document of the row a
 *   token belongs to, so attention must be block-diagonal (a token attends
 *   to earlier tokens with the same doc only).
 * Labels are aligned with ids as in Hugging Face (the loss scores logits at
 * t against labels[t + 1]); the label at the first token of every document
 * is set to -100 (as transformers' DataCollatorWithFlattening does), so no
 * document's last token is trained to predict the next document's first
 * token. Padding: ids = pad_id, labels -100, pos 0, doc -1 (excluded from
 * attention and loss).
 *
 * Batch width. With pad_to_longest the rows of a batch are cut to the longest
 * row in it (batch.T <= seq_len), as the Hugging Face collators pad to the
 * longest sequence of the batch and not to max_length: a micro-batch of
 * 240-token examples in 512-token rows computes 240 columns, not 512. The
 * arrays are then (B, batch.T), contiguous. Without it batch.T = seq_len.
 *
 * Batches hold up to `rows` rows from ONE epoch of this rank's shard; the
 * last batch of an epoch may hold fewer rows (n_rows < rows, the rest is
 * padding) and has epoch_end set. The next call continues with the next
 * epoch (rows never span epochs).
 *
 * Cursor. Because batches end at row boundaries and rows never split an
 * example, the whole state between batches is (epoch, pos): pos = number of
 * examples of this rank's shard of that epoch already delivered (an epoch
 * that has just ended is stored as (epoch + 1, 0)). A run resumed with
 * qt_loader_set_cursor produces exactly the batches the uninterrupted run
 * would have produced next, given the same dataset, seed, seq_len, rows,
 * packing, rank and world size. Each rank has its own cursor; with packing
 * ranks advance at different rates, so a checkpoint stores all of them.
 *
 * Memory: everything (the permutation, the batch) is allocated by
 * qt_loader_init; qt_loader_next allocates nothing. Not thread-safe. */
#ifndef QT_DATA_LOADER_H
#define QT_DATA_LOADER_H

#include <stdint.h>

#include "common/status.h"
#include "data/dataset.h"

/* "data" in ASCII: separates the shuffle's Philox stream from others. */
#define QT_LOADER_SEED_TAG 0x64617461ULL

typedef struct {
  int64_t seq_len;    /* T, tokens per row (>= 1) */
  int64_t rows;       /* B, rows per batch (micro_batch_size, >= 1) */
  int packing;        /* pack several examples per row */
  int shuffle;        /* permute per epoch (train); 0 = file order (eval) */
  uint64_t seed;
  int rank, world_size; /* 0 <= rank < world_size */
  int32_t pad_id;     /* id written into padding (never a target) */
  int pad_to_longest; /* cut each batch's rows to its longest row (see above) */
} qt_loader_opts;

typedef struct {
  int64_t epoch; /* >= 0 */
  int64_t pos;   /* examples of this rank's shard of `epoch` already delivered */
} qt_loader_cursor;

typedef struct {
  int64_t rows, seq_len; /* B and the row capacity */
  int64_t T;             /* this batch's row width (seq_len, or its longest row with
                          * pad_to_longest); ids, labels, pos, doc are (B, T) */
  int64_t n_rows;        /* rows holding documents; rows n_rows..B-1 are padding */
  int32_t *ids;          /* (B, T) */
  int32_t *labels;       /* (B, T) -100 = no target; HF-aligned (see above) */
  int32_t *pos;          /* (B, T) position within the document */
  int32_t *doc;          /* (B, T) document index within the row, -1 = padding */
  int64_t *example;      /* (B, seq_len) dataset index of document d of row b at [b*seq_len + d] */
  int32_t *n_docs;       /* (B) documents in each row */
  int64_t n_tokens;      /* non-padding tokens in the batch */
  int64_t n_targets;     /* labels != -100 in the batch */
  int64_t epoch;         /* the epoch the rows come from */
  int epoch_end;         /* 1 if this batch ends this rank's epoch */
} qt_batch;

typedef struct {
  const qt_dataset *ds; /* borrowed; must outlive the loader */
  qt_loader_opts o;
  int64_t shard;        /* examples in this rank's shard per epoch */
  int64_t *perm;        /* (n) order of the epoch `perm_epoch` */
  int64_t perm_epoch;   /* -1 before the first use */
  qt_loader_cursor cur;
  qt_batch batch;
} qt_loader;

/* Sets up l over ds (borrowed). Errors: QT_ERR_INVALID for bad options or
 * a dataset with fewer examples than world_size; QT_ERR_NOMEM. */
qt_status qt_loader_init(qt_loader *l, const qt_dataset *ds, const qt_loader_opts *o);
void qt_loader_free(qt_loader *l);

/* Fills l->batch with the next batch, advances the cursor and returns
 * &l->batch (overwritten by the next call). Never fails once initialized. */
const qt_batch *qt_loader_next(qt_loader *l);

qt_loader_cursor qt_loader_get_cursor(const qt_loader *l);
/* Continues from c (from qt_loader_get_cursor of an identically configured
 * loader). QT_ERR_INVALID when c is impossible for this shard. */
qt_status qt_loader_set_cursor(qt_loader *l, qt_loader_cursor c);

/* Number of batches this rank's epoch `epoch` yields (packing depends on
 * the order). Allocates a scratch permutation; call it before training. */
qt_status qt_loader_epoch_batches(const qt_loader *l, int64_t epoch, int64_t *n_batches);

/* The dataset index at position p (0 <= p < n) of epoch e's order; the
 * rank's shard takes p = rank + k * world_size. Writes the whole order of
 * epoch e into order[0..n) (caller-allocated). */
void qt_loader_epoch_order(uint64_t seed, int shuffle, int64_t epoch, int64_t n, int64_t *order);

#endif
