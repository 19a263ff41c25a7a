/* common/arena.c — arenas and the memory plan (contract in arena.h). */
#include "common/arena.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h> /* mallopt, malloc_trim */
#endif

static double mib(size_t bytes) { return (double)bytes / (1024.0 * 1024.0); }

static void copy_name(char *dst, size_t cap, const char *src) {
  snprintf(dst, cap, "%s", src ? src : "(unnamed)");
}

size_t qt_arena_align(size_t n) {
  if (n > SIZE_MAX - (QT_ARENA_ALIGN - 1)) return SIZE_MAX;
  return (n + (QT_ARENA_ALIGN - 1)) & ~(size_t)(QT_ARENA_ALIGN - 1);
}

static void arena_clear(qt_arena *a, const char *name) {
  memset(a, 0, sizeof *a);
  copy_name(a->name, sizeof a->name, name);
}

qt_status qt_arena_init(qt_arena *a, const char *name, size_t capacity) {
  QT_ASSERT(a != NULL);
  arena_clear(a, name);
  size_t cap = qt_arena_align(capacity);
  if (cap == 0) return QT_OK;
  /* Refuse sizes no heap can satisfy before asking (sanitizer allocators abort
   * on them instead of returning NULL). */
  void *p = NULL;
  int err = cap > (size_t)PTRDIFF_MAX ? ENOMEM : posix_memalign(&p, QT_ARENA_ALIGN, cap);
  if (err != 0 || p == NULL)
    return qt_fail(QT_ERR_NOMEM,
                   "arena '%s': cannot allocate %.2f MiB of host memory: %s; free memory or "
                   "lower the sizes that drive this arena (micro_batch_size, seq_len, threads)",
                   a->name, mib(capacity), strerror(err ? err : ENOMEM));
  a->base = p;
  a->capacity = cap;
  a->owns = 1;
  return QT_OK;
}

void qt_arena_init_external(qt_arena *a, const char *name, void *base, size_t capacity) {
  QT_ASSERT(a != NULL);
  QT_ASSERTF(((uintptr_t)base % QT_ARENA_ALIGN) == 0, "arena '%s': base %p is not %d-byte aligned",
             name ? name : "(unnamed)", base, QT_ARENA_ALIGN);
  QT_ASSERT(base != NULL || capacity == 0);
  arena_clear(a, name);
  a->base = base;
  a->capacity = capacity;
}

void qt_arena_init_measure(qt_arena *a, const char *name) {
  QT_ASSERT(a != NULL);
  arena_clear(a, name);
  a->measuring = 1;
}

void qt_arena_free(qt_arena *a) {
  if (!a) return;
  if (a->owns) free(a->base);
  a->base = NULL;
  a->capacity = a->used = 0;
  a->owns = 0;
}

qt_status qt_arena_alloc(qt_arena *a, size_t nbytes, const char *what, void **out) {
  QT_ASSERT(a != NULL && out != NULL);
  size_t n = qt_arena_align(nbytes);
  if (a->measuring) {
    if (n > SIZE_MAX - a->used)
      return qt_fail(QT_ERR_NOMEM, "arena '%s': '%s' of %.2f MiB overflows the size count",
                     a->name, what ? what : "(unnamed)", mib(nbytes));
    a->used += n;
    if (a->used > a->peak) a->peak = a->used;
    *out = NULL;
    return QT_OK;
  }
  if (n > a->capacity - a->used)
    return qt_fail(QT_ERR_NOMEM,
                   "arena '%s': cannot allocate '%s' of %.2f MiB: %.2f of %.2f MiB in use, "
                   "%.2f MiB free; the memory plan undersized this arena (a bug: please report "
                   "it) or the buffer is larger than planned",
                   a->name, what ? what : "(unnamed)", mib(nbytes), mib(a->used),
                   mib(a->capacity), mib(a->capacity - a->used));
  *out = a->base ? a->base + a->used : NULL;
  a->used += n;
  if (a->used > a->peak) a->peak = a->used;
  return QT_OK;
}

void qt_arena_reset(qt_arena *a) { a->used = 0; }

size_t qt_arena_mark(const qt_arena *a) { return a->used; }

void qt_arena_rewind(qt_arena *a, size_t mark) {
  QT_ASSERTF(mark <= a->used, "arena '%s': rewind to %zu beyond the current use %zu", a->name,
             mark, a->used);
  a->used = mark;
}

size_t qt_arena_used(const qt_arena *a) { return a->used; }
size_t qt_arena_peak(const qt_arena *a) { return a->peak; }
size_t qt_arena_capacity(const qt_arena *a) { return a->capacity; }

size_t qt_arena_slots_bytes(const qt_arena_slot *slots, size_t n) {
  size_t total = 0;
  for (size_t i = 0; i < n; i++) {
    size_t b = qt_arena_align(slots[i].bytes);
    if (b > SIZE_MAX - total) return SIZE_MAX;
    total += b;
  }
  return total;
}

qt_status qt_arena_carve(qt_arena *a, const qt_arena_slot *slots, size_t n) {
  size_t need = qt_arena_slots_bytes(slots, n);
  size_t avail = a->capacity - a->used;
  if (!a->measuring && need > avail) {
    /* Name the first slot that does not fit; nothing is carved. */
    size_t acc = 0, i = 0;
    for (; i + 1 < n; i++) {
      size_t b = qt_arena_align(slots[i].bytes);
      if (b > avail - acc) break;
      acc += b;
    }
    return qt_fail(QT_ERR_NOMEM,
                   "arena '%s': cannot carve %zu buffers (%.2f MiB in all): '%s' of %.2f MiB does "
                   "not fit, %.2f of %.2f MiB in use; the memory plan undersized this arena (a "
                   "bug: please report it)",
                   a->name, n, mib(need), slots[i].name ? slots[i].name : "(unnamed)",
                   mib(slots[i].bytes), mib(a->used), mib(a->capacity));
  }
  size_t mark = qt_arena_mark(a);
  for (size_t i = 0; i < n; i++) {
    qt_status s = qt_arena_alloc(a, slots[i].bytes, slots[i].name, slots[i].ptr);
    if (s != QT_OK) { /* only a measuring arena's size count can overflow here */
      a->used = mark;
      return s;
    }
  }
  return QT_OK;
}

/* ---- memory plan ----------------------------------------------------------- */

void qt_mem_plan_init(qt_mem_plan *p) { memset(p, 0, sizeof *p); }

void qt_mem_plan_free(qt_mem_plan *p) {
  free(p->items);
  memset(p, 0, sizeof *p);
}

static qt_status plan_push(qt_mem_plan *p, const char *name, const char *where, size_t bytes,
                           size_t peak, int is_arena, unsigned phases) {
  QT_ASSERT(phases != 0 && (phases & ~(unsigned)QT_MEM_ALWAYS) == 0);
  if (p->n == p->cap) {
    size_t cap = p->cap ? 2 * p->cap : 16;
    qt_mem_plan_item *items = realloc(p->items, cap * sizeof *items);
    if (!items)
      return qt_fail(QT_ERR_NOMEM, "memory plan: cannot grow the list to %zu entries", cap);
    p->items = items;
    p->cap = cap;
  }
  qt_mem_plan_item *it = &p->items[p->n++];
  memset(it, 0, sizeof *it);
  copy_name(it->name, sizeof it->name, name);
  copy_name(it->where, sizeof it->where, where ? where : "cpu");
  it->bytes = bytes;
  it->peak = peak;
  it->is_arena = is_arena;
  it->phases = phases;
  return QT_OK;
}

qt_status qt_mem_plan_add(qt_mem_plan *p, const char *name, const char *where, size_t bytes) {
  return plan_push(p, name, where, bytes, bytes, 0, QT_MEM_ALWAYS);
}

qt_status qt_mem_plan_add_phase(qt_mem_plan *p, const char *name, const char *where, size_t bytes,
                                unsigned phases) {
  return plan_push(p, name, where, bytes, bytes, 0, phases);
}

qt_status qt_mem_plan_add_arena(qt_mem_plan *p, const qt_arena *a, const char *where) {
  size_t bytes = a->measuring ? a->peak : a->capacity;
  return plan_push(p, a->name, where, bytes, a->peak, 1, QT_MEM_ALWAYS);
}

size_t qt_mem_plan_total(const qt_mem_plan *p, const char *where) {
  size_t total = 0;
  for (size_t i = 0; i < p->n; i++)
    if (!where || strcmp(p->items[i].where, where) == 0) total += p->items[i].bytes;
  return total;
}

size_t qt_mem_plan_phase_total(const qt_mem_plan *p, const char *where, unsigned phase) {
  size_t total = 0;
  for (size_t i = 0; i < p->n; i++)
    if ((p->items[i].phases & phase) && (!where || strcmp(p->items[i].where, where) == 0))
      total += p->items[i].bytes;
  return total;
}

size_t qt_mem_plan_peak(const qt_mem_plan *p, const char *where) {
  size_t load = qt_mem_plan_phase_total(p, where, QT_MEM_LOAD);
  size_t run = qt_mem_plan_phase_total(p, where, QT_MEM_RUN);
  return load > run ? load : run;
}

void qt_mem_plan_print(const qt_mem_plan *p, FILE *f) {
  fprintf(f, "memory plan %-30s %-10s %12s %12s\n", "", "where", "MiB", "peak MiB");
  int phased = 0;
  for (size_t i = 0; i < p->n; i++) {
    const qt_mem_plan_item *it = &p->items[i];
    if (it->is_arena)
      fprintf(f, "  %-40s %-10s %12.2f %12.2f\n", it->name, it->where, mib(it->bytes), mib(it->peak));
    else if (it->phases != QT_MEM_ALWAYS)
      fprintf(f, "  %-40s %-10s %12.2f   (%s only)\n", it->name, it->where, mib(it->bytes),
              it->phases == QT_MEM_LOAD ? "load" : "run");
    else
      fprintf(f, "  %-40s %-10s %12.2f\n", it->name, it->where, mib(it->bytes));
    phased |= it->phases != QT_MEM_ALWAYS;
  }
  /* one total per place, in order of first appearance */
  for (size_t i = 0; i < p->n; i++) {
    int first = 1;
    for (size_t j = 0; j < i; j++)
      if (strcmp(p->items[j].where, p->items[i].where) == 0) first = 0;
    if (!first) continue;
    char label[64];
    snprintf(label, sizeof label, "total %s", p->items[i].where);
    fprintf(f, "  %-40s %-10s %12.2f\n", label, "", mib(qt_mem_plan_total(p, p->items[i].where)));
  }
  fprintf(f, "  %-40s %-10s %12.2f\n", "total", "", mib(qt_mem_plan_total(p, NULL)));
  size_t load = qt_mem_plan_phase_total(p, NULL, QT_MEM_LOAD), run = qt_mem_plan_phase_total(p, NULL, QT_MEM_RUN);
  if (phased) {
    fprintf(f, "  %-40s %-10s %12.2f\n", "held while loading", "", mib(load));
    fprintf(f, "  %-40s %-10s %12.2f\n", "held while training", "", mib(run));
  }
  fprintf(f, "  %-40s %-10s %12.2f\n", "planned peak", "", mib(load > run ? load : run));
}

/* ---- measured resident set ------------------------------------------------- */

/* The value of "key:" (in kB) in /proc/self/status, in bytes; 0 if absent. */
static size_t proc_status_kb(const char *key) {
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return 0;
  char line[256];
  size_t klen = strlen(key), v = 0;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, key, klen) != 0 || line[klen] != ':') continue;
    v = (size_t)strtoull(line + klen + 1, NULL, 10) * 1024;
    break;
  }
  fclose(f);
  return v;
}

size_t qt_mem_rss(void) { return proc_status_kb("VmRSS"); }
size_t qt_mem_peak_rss(void) { return proc_status_kb("VmHWM"); }

void qt_mem_trace(const char *what) {
  if (!getenv("QLORA_MEM_TRACE")) return;
  fprintf(stderr, "mem: %s: rss %.2f MiB, peak %.2f MiB\n", what, mib(qt_mem_rss()), mib(qt_mem_peak_rss()));
}

void qt_mem_heap_setup(void) {
#ifdef __GLIBC__
  /* 1 MiB, not glibc's 128 KiB default: OpenBLAS's threaded GEMMs (Debian's
   * 0.3.21, MAX_THREADS 64) malloc and free a 516 KiB job table on every call;
   * as a mapping of its own that was an mmap + munmap per GEMM, and each munmap
   * a TLB shootdown on every core (perf: ~10% of a 134M training step in the
   * kernel). Under 1 MiB it reuses the same heap block. */
  mallopt(M_MMAP_THRESHOLD, 1024 * 1024);
  mallopt(M_TRIM_THRESHOLD, (int)QT_MEM_HEAP_KEEP); /* > the block above: freeing it at the heap top is no brk call */
#endif
}

void qt_mem_trim(void) {
#ifdef __GLIBC__
  malloc_trim(0);
#endif
}
