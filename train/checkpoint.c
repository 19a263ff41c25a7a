/* train/checkpoint.c — atomic checkpoint directories with a sha256 MANIFEST. */
#include "train/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fs.h"
#include "common/log.h"
#include "common/sha256.h"

#define MANIFEST_MAGIC "# qlora-train checkpoint manifest v1"
enum { MAX_FILES = 256, NAME_MAX_LEN = 255 };

int64_t qt_ckpt_step_of(const char *name) {
  static const char prefix[] = "checkpoint-";
  if (strncmp(name, prefix, sizeof prefix - 1) != 0) return -1;
  const char *d = name + sizeof prefix - 1;
  if (!*d) return -1;
  int64_t v = 0;
  for (; *d; d++) {
    if (*d < '0' || *d > '9' || v > (INT64_MAX - 9) / 10) return -1;
    v = v * 10 + (*d - '0');
  }
  return v;
}

static bool join(char *buf, size_t cap, const char *a, const char *b) {
  int n = snprintf(buf, cap, "%s/%s", a, b);
  return n > 0 && (size_t)n < cap;
}

/* Names of the regular files in dir, sorted; the caller frees. */
static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static qt_status list_files(const char *dir, char ***names_out, size_t *n_out) {
  *names_out = NULL;
  *n_out = 0;
  DIR *d = opendir(dir);
  if (!d) return qt_fail(QT_ERR_IO, "%s: cannot open directory: %s", dir, strerror(errno));
  char **names = NULL;
  size_t n = 0;
  qt_status s = QT_OK;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    if (n == MAX_FILES) {
      s = qt_fail(QT_ERR_FORMAT, "%s: more than %d entries; not a qlora-train checkpoint", dir, MAX_FILES);
      break;
    }
    char **nn = realloc(names, (n + 1) * sizeof *names);
    char *copy = strdup(e->d_name);
    if (!nn || !copy) {
      free(copy);
      if (nn) names = nn;
      s = qt_fail(QT_ERR_NOMEM, "%s: out of memory", dir);
      break;
    }
    names = nn;
    names[n++] = copy;
  }
  closedir(d);
  if (s != QT_OK) {
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    return s;
  }
  if (n) qsort(names, n, sizeof *names, cmp_str);
  *names_out = names;
  *n_out = n;
  return QT_OK;
}

static void free_names(char **names, size_t n) {
  for (size_t i = 0; i < n; i++) free(names[i]);
  free(names);
}

/* sha256 of a file (and fsync it when `sync`). */
static qt_status hash_file(const char *path, bool sync, char hex[65]) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return qt_fail(QT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return qt_fail(QT_ERR_FORMAT, "%s: not a regular file", path);
  }
  if (sync && fsync(fd) != 0) {
    int e = errno;
    close(fd);
    return qt_fail(QT_ERR_IO, "%s: fsync failed: %s", path, strerror(e));
  }
  qt_sha256 c;
  qt_sha256_init(&c);
  static _Thread_local unsigned char buf[1 << 16];
  for (;;) {
    ssize_t r = read(fd, buf, sizeof buf);
    if (r < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      close(fd);
      return qt_fail(QT_ERR_IO, "%s: read failed: %s", path, strerror(e));
    }
    if (r == 0) break;
    qt_sha256_update(&c, buf, (size_t)r);
  }
  close(fd);
  uint8_t dig[32];
  qt_sha256_final(&c, dig);
  qt_sha256_hex(dig, hex);
  return QT_OK;
}

/* Removes a flat directory (files only) — checkpoints have no subdirectories. */
static qt_status remove_flat_dir(const char *dir) {
  char **names;
  size_t n;
  QT_TRY(list_files(dir, &names, &n));
  char p[QT_CKPT_PATH_MAX];
  qt_status s = QT_OK;
  for (size_t i = 0; i < n && s == QT_OK; i++) {
    if (!join(p, sizeof p, dir, names[i]) || unlink(p) != 0)
      s = qt_fail(QT_ERR_IO, "%s: cannot remove: %s", p, strerror(errno));
  }
  free_names(names, n);
  if (s == QT_OK && rmdir(dir) != 0) s = qt_fail(QT_ERR_IO, "%s: cannot remove directory: %s", dir, strerror(errno));
  return s;
}

/* Renames dir to a .trash- name in out_dir, then removes it. */
static qt_status trash_dir(const char *out_dir, const char *name) {
  char from[QT_CKPT_PATH_MAX], to[QT_CKPT_PATH_MAX], tname[NAME_MAX_LEN + 1];
  snprintf(tname, sizeof tname, ".trash-%s-%ld", name, (long)getpid());
  if (!join(from, sizeof from, out_dir, name) || !join(to, sizeof to, out_dir, tname))
    return qt_fail(QT_ERR_INVALID, "%s: path too long", out_dir);
  if (rename(from, to) != 0) return qt_fail(QT_ERR_IO, "%s: cannot move aside: %s", from, strerror(errno));
  QT_TRY(qt_fs_fsync_dir(out_dir));
  return remove_flat_dir(to);
}

qt_status qt_ckpt_begin(qt_ckpt_writer *w, const char *out_dir, int64_t step) {
  memset(w, 0, sizeof *w);
  QT_ASSERT(step >= 0);
  if (strlen(out_dir) + 64 >= QT_CKPT_PATH_MAX) return qt_fail(QT_ERR_INVALID, "%s: output.dir is too long", out_dir);
  QT_TRY(qt_fs_mkdir_p(out_dir));
  snprintf(w->out_dir, sizeof w->out_dir, "%s", out_dir);
  w->step = step;
  snprintf(w->final_dir, sizeof w->final_dir, "%s/checkpoint-%06lld", out_dir, (long long)step);
  snprintf(w->tmp_dir, sizeof w->tmp_dir, "%s/.tmp-checkpoint-%06lld-%ld", out_dir, (long long)step, (long)getpid());
  struct stat st;
  if (stat(w->tmp_dir, &st) == 0) QT_TRY(remove_flat_dir(w->tmp_dir)); /* left by an earlier crash of this pid */
  if (mkdir(w->tmp_dir, 0755) != 0)
    return qt_fail(QT_ERR_IO, "%s: cannot create the checkpoint directory: %s; check free space and permissions of %s",
                   w->tmp_dir, strerror(errno), out_dir);
  w->open = true;
  return QT_OK;
}

void qt_ckpt_file_path(const qt_ckpt_writer *w, const char *name, char *buf, size_t cap) {
  QT_ASSERT(w->open);
  QT_ASSERTF(join(buf, cap, w->tmp_dir, name), "checkpoint path too long");
}

void qt_ckpt_abort(qt_ckpt_writer *w) {
  if (!w->open) return;
  w->open = false;
  qt_status s = remove_flat_dir(w->tmp_dir);
  if (s != QT_OK) QT_LOGW("could not remove the unfinished checkpoint: %s", qt_error_message());
}

static qt_status write_manifest(qt_ckpt_writer *w) {
  char **names;
  size_t n;
  QT_TRY(list_files(w->tmp_dir, &names, &n));
  size_t cap = 128 + n * (64 + 2 + NAME_MAX_LEN + 1);
  char *text = malloc(cap);
  if (!text) {
    free_names(names, n);
    return qt_fail(QT_ERR_NOMEM, "%s: out of memory", w->tmp_dir);
  }
  size_t len = (size_t)snprintf(text, cap, MANIFEST_MAGIC "\nstep %lld\n", (long long)w->step);
  qt_status s = QT_OK;
  for (size_t i = 0; i < n && s == QT_OK; i++) {
    if (strcmp(names[i], "MANIFEST") == 0 || strncmp(names[i], "MANIFEST.tmp.", 13) == 0) continue;
    char p[QT_CKPT_PATH_MAX], hex[65];
    if (!join(p, sizeof p, w->tmp_dir, names[i])) {
      s = qt_fail(QT_ERR_INVALID, "%s: path too long", w->tmp_dir);
      break;
    }
    s = hash_file(p, true, hex);
    if (s == QT_OK) len += (size_t)snprintf(text + len, cap - len, "%s  %s\n", hex, names[i]);
  }
  free_names(names, n);
  if (s == QT_OK) {
    char mp[QT_CKPT_PATH_MAX];
    qt_ckpt_file_path(w, "MANIFEST", mp, sizeof mp);
    s = qt_fs_write_atomic(mp, text, len);
  }
  free(text);
  return s;
}

qt_status qt_ckpt_commit(qt_ckpt_writer *w, int64_t keep) {
  QT_ASSERT(w->open);
  qt_status s = write_manifest(w);
  if (s == QT_OK) s = qt_fs_fsync_dir(w->tmp_dir);
  const char *final_name = strrchr(w->final_dir, '/') + 1;
  struct stat st;
  if (s == QT_OK && stat(w->final_dir, &st) == 0) {
    /* Saving the same step again (e.g. the final save right after a periodic
     * one, or after a resume): the old directory is moved aside first. */
    s = trash_dir(w->out_dir, final_name);
  }
  if (s == QT_OK && rename(w->tmp_dir, w->final_dir) != 0)
    s = qt_fail(QT_ERR_IO, "%s: cannot rename %s to it: %s", w->final_dir, w->tmp_dir, strerror(errno));
  if (s != QT_OK) {
    qt_ckpt_abort(w);
    return s;
  }
  w->open = false;
  QT_TRY(qt_fs_fsync_dir(w->out_dir));
  char latest[QT_CKPT_PATH_MAX], body[NAME_MAX_LEN + 2];
  snprintf(body, sizeof body, "%s\n", final_name);
  if (!join(latest, sizeof latest, w->out_dir, "latest")) return qt_fail(QT_ERR_INVALID, "%s: path too long", w->out_dir);
  QT_TRY(qt_fs_write_atomic(latest, body, strlen(body)));
  return qt_ckpt_prune(w->out_dir, keep);
}

static bool is_hex64(const char *s) {
  for (int i = 0; i < 64; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
  return true;
}

qt_status qt_ckpt_verify(const char *dir) {
  char mp[QT_CKPT_PATH_MAX];
  if (!join(mp, sizeof mp, dir, "MANIFEST")) return qt_fail(QT_ERR_INVALID, "%s: path too long", dir);
  uint8_t *buf;
  size_t len;
  qt_status s = qt_fs_read_file(mp, 1 << 20, &buf, &len);
  if (s != QT_OK) return qt_fail(QT_ERR_FORMAT, "%s: incomplete checkpoint (no readable MANIFEST)", dir);
  char **names;
  size_t n;
  s = list_files(dir, &names, &n);
  if (s != QT_OK) {
    free(buf);
    return s;
  }
  bool *seen = calloc(n ? n : 1, sizeof *seen);
  char *text = malloc(len + 1);
  if (!seen || !text) {
    free(seen);
    free(text);
    free(buf);
    free_names(names, n);
    return qt_fail(QT_ERR_NOMEM, "%s: out of memory", dir);
  }
  memcpy(text, buf, len);
  text[len] = '\0';
  free(buf);
  char *save = NULL;
  char *line = strtok_r(text, "\n", &save);
  if (!line || strcmp(line, MANIFEST_MAGIC) != 0) s = qt_fail(QT_ERR_FORMAT, "%s: not a qlora-train MANIFEST", mp);
  if (s == QT_OK) {
    line = strtok_r(NULL, "\n", &save);
    if (!line || strncmp(line, "step ", 5) != 0) s = qt_fail(QT_ERR_FORMAT, "%s: missing the step line", mp);
  }
  size_t listed = 0;
  while (s == QT_OK && (line = strtok_r(NULL, "\n", &save)) != NULL) {
    size_t ll = strlen(line);
    if (ll < 67 || !is_hex64(line) || line[64] != ' ' || line[65] != ' ') {
      s = qt_fail(QT_ERR_FORMAT, "%s: malformed line '%.80s'", mp, line);
      break;
    }
    const char *name = line + 66;
    if (strchr(name, '/') || strcmp(name, "MANIFEST") == 0 || name[0] == '.') {
      s = qt_fail(QT_ERR_FORMAT, "%s: invalid file name '%s'", mp, name);
      break;
    }
    size_t idx = n;
    for (size_t i = 0; i < n; i++)
      if (strcmp(names[i], name) == 0) idx = i;
    if (idx == n) {
      s = qt_fail(QT_ERR_FORMAT, "%s/%s: missing (listed in MANIFEST)", dir, name);
      break;
    }
    if (seen[idx]) {
      s = qt_fail(QT_ERR_FORMAT, "%s: '%s' listed twice", mp, name);
      break;
    }
    seen[idx] = true;
    listed++;
    char p[QT_CKPT_PATH_MAX], hex[65];
    join(p, sizeof p, dir, name);
    s = hash_file(p, false, hex);
    if (s == QT_OK && memcmp(hex, line, 64) != 0)
      s = qt_fail(QT_ERR_FORMAT, "%s: corrupt (sha256 %s, MANIFEST says %.64s)", p, hex, line);
  }
  for (size_t i = 0; s == QT_OK && i < n; i++) {
    if (!seen[i] && strcmp(names[i], "MANIFEST") != 0)
      s = qt_fail(QT_ERR_FORMAT, "%s/%s: not listed in MANIFEST", dir, names[i]);
  }
  if (s == QT_OK && listed == 0) s = qt_fail(QT_ERR_FORMAT, "%s: MANIFEST lists no files", mp);
  free(text);
  free(seen);
  free_names(names, n);
  return s;
}

typedef struct {
  int64_t step;
  char *name;
} ckpt_ent;

static int cmp_step_desc(const void *a, const void *b) {
  int64_t x = ((const ckpt_ent *)a)->step, y = ((const ckpt_ent *)b)->step;
  return x < y ? 1 : x > y ? -1 : 0;
}

/* checkpoint-* entries of out_dir, newest first. */
static qt_status list_checkpoints(const char *out_dir, ckpt_ent **out, size_t *n_out) {
  *out = NULL;
  *n_out = 0;
  char **names;
  size_t n;
  QT_TRY(list_files(out_dir, &names, &n));
  ckpt_ent *ents = calloc(n ? n : 1, sizeof *ents);
  if (!ents) {
    free_names(names, n);
    return qt_fail(QT_ERR_NOMEM, "%s: out of memory", out_dir);
  }
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    int64_t st = qt_ckpt_step_of(names[i]);
    if (st < 0) {
      free(names[i]);
      continue;
    }
    ents[k].step = st;
    ents[k].name = names[i];
    k++;
  }
  free(names);
  qsort(ents, k, sizeof *ents, cmp_step_desc);
  *out = ents;
  *n_out = k;
  return QT_OK;
}

static void free_ents(ckpt_ent *e, size_t n) {
  for (size_t i = 0; i < n; i++) free(e[i].name);
  free(e);
}

qt_status qt_ckpt_find_latest(const char *out_dir, char *path, size_t cap, bool *found) {
  *found = false;
  struct stat st;
  if (stat(out_dir, &st) != 0) return QT_OK;
  ckpt_ent *ents;
  size_t n;
  QT_TRY(list_checkpoints(out_dir, &ents, &n));
  /* Scanning every checkpoint-* directory, newest first, also covers a kill
   * between the directory rename and the `latest` update. */
  for (size_t i = 0; i < n; i++) {
    char p[QT_CKPT_PATH_MAX];
    if (!join(p, sizeof p, out_dir, ents[i].name)) continue;
    if (qt_ckpt_verify(p) == QT_OK) {
      snprintf(path, cap, "%s", p);
      *found = true;
      break;
    }
    QT_LOGW("skipping checkpoint %s: %s", p, qt_error_message());
  }
  free_ents(ents, n);
  qt_error_clear();
  return QT_OK;
}

qt_status qt_ckpt_prune(const char *out_dir, int64_t keep) {
  char **names;
  size_t n;
  QT_TRY(list_files(out_dir, &names, &n));
  qt_status s = QT_OK;
  /* Leftovers of interrupted writes or removals of another process. */
  for (size_t i = 0; i < n && s == QT_OK; i++) {
    bool tmp = strncmp(names[i], ".tmp-checkpoint-", 16) == 0, trash = strncmp(names[i], ".trash-", 7) == 0;
    if (!tmp && !trash) continue;
    char p[QT_CKPT_PATH_MAX];
    if (!join(p, sizeof p, out_dir, names[i])) continue;
    struct stat st;
    if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode)) continue;
    if (tmp) {
      /* only stale ones: a temporary directory of a live writer carries its pid */
      const char *dash = strrchr(names[i], '-');
      long pid = dash ? strtol(dash + 1, NULL, 10) : 0;
      if (pid > 0 && (pid == (long)getpid() || kill((pid_t)pid, 0) == 0)) continue;
    }
    s = remove_flat_dir(p);
  }
  free_names(names, n);
  if (s != QT_OK || keep <= 0) return s;
  ckpt_ent *ents;
  size_t m;
  QT_TRY(list_checkpoints(out_dir, &ents, &m));
  int64_t kept = 0;
  for (size_t i = 0; i < m && s == QT_OK; i++) {
    char p[QT_CKPT_PATH_MAX];
    join(p, sizeof p, out_dir, ents[i].name);
    if (kept < keep && qt_ckpt_verify(p) == QT_OK) {
      kept++;
      continue;
    }
    if (kept < keep) continue; /* an incomplete newer one is left for inspection, not counted */
    s = trash_dir(out_dir, ents[i].name);
  }
  if (s == QT_OK) qt_error_clear(); /* verify failures above were expected */
  free_ents(ents, m);
  return s;
}
