/* common/fs.c — atomic file replacement, mkdir -p, directory fsync. */
/* flock(2) is a BSD/Linux call, outside POSIX. */
#define _DEFAULT_SOURCE 1
#include "common/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

static char *fs_strdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

/* The directory part of path ("." when it has no slash, "/" for "/x"). */
static char *fs_dirname(const char *path) {
  const char *slash = strrchr(path, '/');
  if (!slash) return fs_strdup(".");
  size_t n = (size_t)(slash - path);
  if (n == 0) n = 1; /* "/file" -> "/" */
  char *d = malloc(n + 1);
  if (!d) return NULL;
  memcpy(d, path, n);
  d[n] = '\0';
  return d;
}

qt_status qt_fs_fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return qt_fail(QT_ERR_IO, "%s: cannot open directory to fsync it: %s", dir, strerror(errno));
  if (fsync(fd) != 0) {
    int e = errno;
    close(fd);
    /* Some file systems cannot fsync a directory; that is not a failure of ours. */
    if (e == EINVAL || e == ENOTSUP) return QT_OK;
    return qt_fail(QT_ERR_IO, "%s: fsync of directory failed: %s", dir, strerror(e));
  }
  if (close(fd) != 0) return qt_fail(QT_ERR_IO, "%s: close of directory failed: %s", dir, strerror(errno));
  return QT_OK;
}

qt_status qt_fs_fsync_parent(const char *path) {
  char *dir = fs_dirname(path);
  if (!dir) return qt_fail(QT_ERR_NOMEM, "%s: out of memory", path);
  qt_status s = qt_fs_fsync_dir(dir);
  free(dir);
  return s;
}

static void fs_atomic_release(qt_fs_atomic *a) {
  free(a->path);
  free(a->tmp_path);
  a->path = NULL;
  a->tmp_path = NULL;
  a->fd = -1;
}

qt_status qt_fs_atomic_begin(qt_fs_atomic *a, const char *path) {
  a->fd = -1;
  a->path = fs_strdup(path);
  size_t cap = strlen(path) + 32;
  a->tmp_path = malloc(cap);
  if (!a->path || !a->tmp_path) {
    fs_atomic_release(a);
    return qt_fail(QT_ERR_NOMEM, "%s: out of memory", path);
  }
  snprintf(a->tmp_path, cap, "%s.tmp.%ld", path, (long)getpid());
  a->fd = open(a->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (a->fd < 0) {
    qt_status s = qt_fail(QT_ERR_IO, "%s: cannot create temporary file: %s; check that the directory "
                          "exists and is writable", a->tmp_path, strerror(errno));
    fs_atomic_release(a);
    return s;
  }
  return QT_OK;
}

qt_status qt_fs_atomic_write(qt_fs_atomic *a, const void *buf, size_t len) {
  QT_ASSERT(a->fd >= 0);
  const uint8_t *p = buf;
  while (len > 0) {
    size_t chunk = len > ((size_t)1 << 30) ? ((size_t)1 << 30) : len;
    ssize_t w = write(a->fd, p, chunk);
    if (w < 0) {
      if (errno == EINTR) continue;
      return qt_fail(QT_ERR_IO, "%s: write failed: %s", a->tmp_path, strerror(errno));
    }
    if (w == 0) return qt_fail(QT_ERR_IO, "%s: write made no progress", a->tmp_path);
    p += w;
    len -= (size_t)w;
  }
  return QT_OK;
}

void qt_fs_atomic_abort(qt_fs_atomic *a) {
  if (a->fd >= 0) close(a->fd);
  if (a->tmp_path) unlink(a->tmp_path);
  fs_atomic_release(a);
}

qt_status qt_fs_atomic_commit(qt_fs_atomic *a) {
  QT_ASSERT(a->fd >= 0);
  qt_status s = QT_OK;
  if (fsync(a->fd) != 0) {
    s = qt_fail(QT_ERR_IO, "%s: fsync failed: %s", a->tmp_path, strerror(errno));
  }
  /* close() can report a deferred write error (NFS, quota), so check it. */
  int rc = close(a->fd);
  a->fd = -1;
  if (s == QT_OK && rc != 0) s = qt_fail(QT_ERR_IO, "%s: close failed: %s", a->tmp_path, strerror(errno));
  if (s == QT_OK && rename(a->tmp_path, a->path) != 0) {
    s = qt_fail(QT_ERR_IO, "%s: cannot rename %s over it: %s", a->path, a->tmp_path, strerror(errno));
  }
  if (s != QT_OK) {
    qt_fs_atomic_abort(a);
    return s;
  }
  s = qt_fs_fsync_parent(a->path);
  fs_atomic_release(a);
  return s;
}

qt_status qt_fs_write_atomic(const char *path, const void *buf, size_t len) {
  qt_fs_atomic a;
  QT_TRY(qt_fs_atomic_begin(&a, path));
  qt_status s = qt_fs_atomic_write(&a, buf, len);
  if (s != QT_OK) {
    qt_fs_atomic_abort(&a);
    return s;
  }
  return qt_fs_atomic_commit(&a);
}

qt_status qt_fs_read_file(const char *path, size_t max_len, uint8_t **buf, size_t *len) {
  *buf = NULL;
  *len = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return qt_fail(QT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    return qt_fail(QT_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return qt_fail(QT_ERR_IO, "%s: not a regular file", path);
  }
  if ((uint64_t)st.st_size > (uint64_t)max_len) {
    close(fd);
    return qt_fail(QT_ERR_FORMAT, "%s: file is %lld bytes, more than the %zu allowed here", path,
                   (long long)st.st_size, max_len);
  }
  size_t n = (size_t)st.st_size;
  uint8_t *b = malloc(n + 1);
  if (!b) {
    close(fd);
    return qt_fail(QT_ERR_NOMEM, "%s: cannot allocate %zu bytes", path, n + 1);
  }
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, b + got, n - got);
    if (r < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      free(b);
      close(fd);
      return qt_fail(QT_ERR_IO, "%s: read failed: %s", path, strerror(e));
    }
    if (r == 0) break; /* shrank while reading */
    got += (size_t)r;
  }
  close(fd);
  if (got != n) {
    free(b);
    return qt_fail(QT_ERR_IO, "%s: file changed size while being read", path);
  }
  b[n] = '\0';
  *buf = b;
  *len = n;
  return QT_OK;
}

qt_status qt_fs_mkdir_p(const char *path) {
  if (path[0] == '\0') return qt_fail(QT_ERR_INVALID, "mkdir: empty path");
  char *p = fs_strdup(path);
  if (!p) return qt_fail(QT_ERR_NOMEM, "%s: out of memory", path);
  size_t n = strlen(p);
  while (n > 1 && p[n - 1] == '/') p[--n] = '\0';
  qt_status s = QT_OK;
  /* Create each prefix ending before a '/', then the whole path. */
  for (char *c = p + 1;; c++) {
    int last = (*c == '\0');
    if (*c != '/' && !last) continue;
    char saved = *c;
    *c = '\0';
    if (mkdir(p, 0755) != 0) {
      int e = errno;
      struct stat st;
      if (e != EEXIST) {
        s = qt_fail(QT_ERR_IO, "%s: cannot create directory: %s", p, strerror(e));
      } else if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode)) {
        s = qt_fail(QT_ERR_IO, "%s: exists and is not a directory", p);
      }
    }
    *c = saved;
    if (s != QT_OK || last) break;
  }
  free(p);
  return s;
}

qt_status qt_fs_lock_dir(const char *dir, int *fd) {
  *fd = -1;
  QT_TRY(qt_fs_mkdir_p(dir));
  size_t n = strlen(dir) + sizeof "/qlora-train.lock";
  char *p = malloc(n);
  if (!p) return qt_fail(QT_ERR_NOMEM, "%s: out of memory", dir);
  snprintf(p, n, "%s/qlora-train.lock", dir);
  int f = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (f < 0) {
    qt_status s = qt_fail(QT_ERR_IO, "%s: cannot open the lock file: %s", p, strerror(errno));
    free(p);
    return s;
  }
  int r;
  do r = flock(f, LOCK_EX | LOCK_NB);
  while (r != 0 && errno == EINTR);
  if (r != 0) {
    int e = errno;
    char pid[32] = "";
    if (e == EWOULDBLOCK) {
      ssize_t k = pread(f, pid, sizeof pid - 1, 0);
      pid[k > 0 ? k : 0] = '\0';
      pid[strcspn(pid, "\n")] = '\0';
    }
    close(f);
    free(p);
    if (e != EWOULDBLOCK) return qt_fail(QT_ERR_IO, "%s/qlora-train.lock: cannot lock: %s", dir, strerror(e));
    return qt_fail(QT_ERR_BUSY,
                   "output.dir %s is in use by another qlora-train (pid %s); use another output.dir or wait "
                   "until it ends",
                   dir, pid[0] ? pid : "unknown");
  }
  /* The pid is only for the message above; the lock itself is the flock. */
  char buf[32];
  int len = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
  if (ftruncate(f, 0) != 0 || pwrite(f, buf, (size_t)len, 0) != len) {
    qt_status s = qt_fail(QT_ERR_IO, "%s: cannot write: %s", p, strerror(errno));
    close(f);
    free(p);
    return s;
  }
  free(p);
  *fd = f;
  return QT_OK;
}

void qt_fs_unlock_dir(int *fd) {
  if (*fd < 0) return;
  close(*fd); /* closing the last descriptor releases the flock */
  *fd = -1;
}
