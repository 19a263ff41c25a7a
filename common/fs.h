/* common/fs.h — crash-safe file helpers shared by the safetensors writer and
 * checkpoints (../shared/docs/DESIGN.md section 7).
 *
 * Atomic replace: data goes to PATH.tmp.<pid> in the same directory, the file
 * is fsynced and closed, renamed over PATH, and the directory is fsynced, so
 * after a crash PATH holds either the old or the new contents, never a mix
 * (rename(2) is atomic within a file system; the directory fsync makes the
 * rename itself durable, which the reference safetensors writer does not do:
 * reliability-anchors.md 1.4). Every error names the path and the errno text. */
#ifndef QT_COMMON_FS_H
#define QT_COMMON_FS_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

/* An atomic write in progress. Fields are private to fs.c. */
typedef struct {
  int fd;          /* -1 when not open */
  char *path;      /* final path (owned) */
  char *tmp_path;  /* PATH.tmp.<pid> (owned) */
} qt_fs_atomic;

/* Creates PATH.tmp.<pid> (truncating a stale one). On error nothing is left
 * behind and *a is empty (qt_fs_atomic_abort on it is a no-op). */
qt_status qt_fs_atomic_begin(qt_fs_atomic *a, const char *path);
/* Appends len bytes (retries short writes and EINTR). On error the caller
 * still owns *a and must call qt_fs_atomic_abort. */
qt_status qt_fs_atomic_write(qt_fs_atomic *a, const void *buf, size_t len);
/* fsync, close, rename over the final path, fsync the directory. Always
 * releases *a; on error the temporary file is removed and PATH is untouched
 * (unless the directory fsync after the rename failed). */
qt_status qt_fs_atomic_commit(qt_fs_atomic *a);
/* Closes and unlinks the temporary file; releases *a. Safe on an empty *a. */
void qt_fs_atomic_abort(qt_fs_atomic *a);

/* Writes a whole buffer to PATH atomically (begin + write + commit). */
qt_status qt_fs_write_atomic(const char *path, const void *buf, size_t len);

/* Reads a whole regular file into a malloc'd buffer with one extra NUL byte
 * after the contents (so text can be parsed as a C string). *buf is owned by
 * the caller (free()). Refuses files larger than max_len bytes. */
qt_status qt_fs_read_file(const char *path, size_t max_len, uint8_t **buf, size_t *len);

/* mkdir -p: creates PATH and missing parents with mode 0755 (before umask).
 * Existing directories are fine; an existing non-directory is an error. */
qt_status qt_fs_mkdir_p(const char *path);

/* One writer per directory: creates DIR (mkdir -p) and takes an exclusive
 * flock(2) on DIR/qlora-train.lock, writing this process's pid into it. The
 * kernel drops the lock when the process ends however it ends, so a run killed
 * with SIGKILL leaves no stale lock (the file stays; it is only a handle).
 * When another process holds it: QT_ERR_BUSY, "output.dir DIR is in use by
 * another qlora-train (pid N); ...". *fd receives the descriptor to keep
 * open while writing (-1 on error); qt_fs_unlock_dir releases it. */
qt_status qt_fs_lock_dir(const char *dir, int *fd);
/* Releases a lock from qt_fs_lock_dir (no-op for *fd < 0); sets *fd = -1. */
void qt_fs_unlock_dir(int *fd);

/* fsyncs the directory DIR (makes renames and creations inside it durable). */
qt_status qt_fs_fsync_dir(const char *dir);
/* fsyncs the directory that contains PATH ("." for a bare file name). */
qt_status qt_fs_fsync_parent(const char *path);

#endif
