/* common/arena.h — arenas (one allocation per lifetime, carved into named
 * pointers) and the memory plan printed before step 0 (STYLE.md habit 4:
 * memory planned up front, MiB per arena, nothing allocated in the step loop).
 *
 * An arena is a bump allocator over one block of `capacity` bytes. Every
 * pointer it hands out is aligned to QT_ARENA_ALIGN (64) bytes — a cache line,
 * and enough for any vector load or cp.async on the GPU. Three kinds:
 *   - owning (qt_arena_init): the block is allocated from the host heap and
 *     freed by qt_arena_free;
 *   - external (qt_arena_init_external): the block belongs to the caller, e.g.
 *     a cudaMalloc'd device buffer; the arena only carves it (never touches the
 *     bytes, so device pointers are fine) and qt_arena_free does not free it;
 *   - measuring (qt_arena_init_measure): no block; allocations always succeed,
 *     return NULL and only count, so a first pass over the allocation code gives
 *     the exact capacity a second, real pass needs (qt_arena_peak).
 * Sizes are rounded up to a multiple of 64, so the bytes used depend only on
 * the sequence of sizes, never on the base address.
 *
 * Errors: running out of space is QT_ERR_NOMEM with a message naming the
 * arena, what was requested and its MiB, and how full the arena is. A failed
 * allocation changes nothing.
 *
 * An arena is not thread-safe; it is owned by whoever owns the lifetime. */
#ifndef QT_COMMON_ARENA_H
#define QT_COMMON_ARENA_H

#include <stddef.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "common/status.h" /* C declarations, also when included from a .cu file */

#define QT_ARENA_ALIGN 64
#define QT_ARENA_NAME_CAP 48 /* longer names are truncated to 47 characters */

typedef struct {
  char name[QT_ARENA_NAME_CAP];
  unsigned char *base; /* NULL when measuring (or capacity 0) */
  size_t capacity;     /* bytes */
  size_t used;         /* bytes handed out since the last reset, padding included */
  size_t peak;         /* largest `used` ever */
  int owns;            /* base came from qt_arena_init: qt_arena_free frees it */
  int measuring;
} qt_arena;

/* n rounded up to a multiple of QT_ARENA_ALIGN; SIZE_MAX if that overflows. */
size_t qt_arena_align(size_t n);

/* Owning arena of `capacity` bytes (rounded up to 64) from the host heap.
 * QT_ERR_NOMEM, naming the arena and the MiB, if the heap refuses. */
qt_status qt_arena_init(qt_arena *a, const char *name, size_t capacity);
/* Arena over caller-owned memory; base must be 64-byte aligned (asserted). */
void qt_arena_init_external(qt_arena *a, const char *name, void *base, size_t capacity);
/* Measuring arena (see above). */
void qt_arena_init_measure(qt_arena *a, const char *name);
/* Frees an owning arena's block; the arena is then empty (capacity 0). */
void qt_arena_free(qt_arena *a);

/* *out = nbytes (rounded up to 64) of the arena, 64-byte aligned; `what` names
 * the buffer in the error message. Measuring arenas set *out = NULL. */
qt_status qt_arena_alloc(qt_arena *a, size_t nbytes, const char *what, void **out);

/* Forgets every allocation (used = 0); peak is kept. Pointers handed out
 * before are invalid afterwards (their bytes will be handed out again). */
void qt_arena_reset(qt_arena *a);
/* mark = current `used`; rewind returns to it, releasing what came after
 * (for per-layer scratch inside a longer-lived arena). */
size_t qt_arena_mark(const qt_arena *a);
void qt_arena_rewind(qt_arena *a, size_t mark);

size_t qt_arena_used(const qt_arena *a);
size_t qt_arena_peak(const qt_arena *a);
size_t qt_arena_capacity(const qt_arena *a);

/* A named pointer to carve: *ptr receives `bytes` from the arena. */
typedef struct {
  const char *name;
  size_t bytes;
  void **ptr;
} qt_arena_slot;

/* Bytes an arena needs for these slots: sum of the 64-rounded sizes
 * (SIZE_MAX on overflow). */
size_t qt_arena_slots_bytes(const qt_arena_slot *slots, size_t n);
/* Carves every slot in order; all or nothing: on failure the arena is as
 * before and the message names the slot that did not fit. */
qt_status qt_arena_carve(qt_arena *a, const qt_arena_slot *slots, size_t n);

/* ---- memory plan -----------------------------------------------------------
 * A list of named arenas / buffers with where they live ("cpu", "cuda:0",
 * "managed", ...), printed as a table: MiB per entry (and peak use for arenas),
 * a total per place, and the grand total. */
typedef struct {
  char name[QT_ARENA_NAME_CAP];
  char where[16];
  size_t bytes;
  size_t peak; /* arenas: peak use; plain buffers: == bytes */
  int is_arena;
} qt_mem_plan_item;

typedef struct {
  qt_mem_plan_item *items; /* owned; freed by qt_mem_plan_free */
  size_t n, cap;
} qt_mem_plan;

void qt_mem_plan_init(qt_mem_plan *p);
void qt_mem_plan_free(qt_mem_plan *p);
/* A plain buffer of `bytes`. QT_ERR_NOMEM if the list cannot grow. */
qt_status qt_mem_plan_add(qt_mem_plan *p, const char *name, const char *where, size_t bytes);
/* An arena: its capacity (for a measuring arena: its peak) and its peak use. */
qt_status qt_mem_plan_add_arena(qt_mem_plan *p, const qt_arena *a, const char *where);
/* Sum of bytes of the entries at `where`, or of all entries when where == NULL. */
size_t qt_mem_plan_total(const qt_mem_plan *p, const char *where);
/* The table, e.g.
 *   memory plan                        where         MiB    peak MiB
 *     activations                      cuda:0     512.00      100.25
 *     ...
 *     total cuda:0                               1746.56
 *     total                                      1800.00            */
void qt_mem_plan_print(const qt_mem_plan *p, FILE *f);

#ifdef __cplusplus
}
#endif

#endif
