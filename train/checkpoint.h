/* train/checkpoint.h — the on-disk checkpoint protocol (DESIGN.md section 7).
 *
 *   out_dir/checkpoint-000200/   the files of one checkpoint + MANIFEST
 *   out_dir/latest               "checkpoint-000200\n" (replaced atomically)
 *
 * Writing: the caller writes its files into a temporary directory
 * (out_dir/.tmp-checkpoint-000200-<pid>), then qt_ckpt_commit fsyncs them,
 * writes MANIFEST (sha256 of every file) last, fsyncs the directory, renames
 * it to checkpoint-NNNNNN, fsyncs out_dir, replaces `latest`, and only then
 * prunes old checkpoints (each removed by renaming it to a .trash- name
 * first, so that an interrupted removal never leaves a checkpoint-* directory
 * that is incomplete). A kill at any instant leaves either the previous set of
 * checkpoints or the new one, never a checkpoint-* directory that verifies but
 * holds wrong data.
 *
 * Reading: qt_ckpt_find_latest picks the newest checkpoint-* directory whose
 * MANIFEST verifies (every listed file present with its sha256, nothing
 * unlisted); incomplete or corrupt ones are skipped with a warning naming the
 * file and what is wrong. */
#ifndef QT_TRAIN_CHECKPOINT_H
#define QT_TRAIN_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

enum { QT_CKPT_PATH_MAX = 4096 };

typedef struct {
  char out_dir[QT_CKPT_PATH_MAX];
  char tmp_dir[QT_CKPT_PATH_MAX];   /* where the caller writes the files */
  char final_dir[QT_CKPT_PATH_MAX]; /* out_dir/checkpoint-NNNNNN */
  int64_t step;
  bool open;
} qt_ckpt_writer;

/* Creates out_dir (mkdir -p) and a fresh temporary directory for step. */
qt_status qt_ckpt_begin(qt_ckpt_writer *w, const char *out_dir, int64_t step);
/* Path of file `name` inside the temporary directory. */
void qt_ckpt_file_path(const qt_ckpt_writer *w, const char *name, char *buf, size_t cap);
/* Seals the checkpoint (see above); keep = save_total_limit (0 keeps all).
 * On failure the temporary directory is removed and the previous
 * checkpoints are untouched. */
qt_status qt_ckpt_commit(qt_ckpt_writer *w, int64_t keep);
/* Removes the temporary directory (after a failed write). */
void qt_ckpt_abort(qt_ckpt_writer *w);

/* Checks dir's MANIFEST against its files. */
qt_status qt_ckpt_verify(const char *dir);
/* Newest complete checkpoint under out_dir; *found false when there is none
 * (including when out_dir does not exist). */
qt_status qt_ckpt_find_latest(const char *out_dir, char *path, size_t cap, bool *found);
/* Keeps the `keep` newest complete checkpoints (0: all) and removes stale
 * temporary and trash directories. */
qt_status qt_ckpt_prune(const char *out_dir, int64_t keep);
/* Step number of a "checkpoint-NNNNNN" name; -1 if the name is not one. */
int64_t qt_ckpt_step_of(const char *name);

#endif
