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
 * a total per place, the grand total and the planned peak.
 *
 * Phases: an entry is held while the model loads (QT_MEM_LOAD: the mapped
 * checkpoint pages and conversion buffers of the tensor being read), while
 * the steps run (QT_MEM_RUN: datasets, adapters, optimizer, tape arenas,
 * checkpoint-writing copies), or throughout (QT_MEM_ALWAYS: process baseline,
 * tokenizer, weights). The planned peak is the larger phase total: what the
 * process holds at its most. qt_mem_plan_add and qt_mem_plan_add_arena hold
 * an entry throughout, so a plan without phases has peak == total. */
enum { QT_MEM_LOAD = 1, QT_MEM_RUN = 2, QT_MEM_ALWAYS = 3 };

typedef struct {
  char name[QT_ARENA_NAME_CAP];
  char where[16];
  size_t bytes;
  size_t peak;     /* arenas: peak use; plain buffers: == bytes */
  int is_arena;
  unsigned phases; /* QT_MEM_LOAD | QT_MEM_RUN */
} qt_mem_plan_item;

typedef struct {
  qt_mem_plan_item *items; /* owned; freed by qt_mem_plan_free */
  size_t n, cap;
} qt_mem_plan;

void qt_mem_plan_init(qt_mem_plan *p);
void qt_mem_plan_free(qt_mem_plan *p);
/* A plain buffer of `bytes`, held throughout. QT_ERR_NOMEM if the list cannot grow. */
qt_status qt_mem_plan_add(qt_mem_plan *p, const char *name, const char *where, size_t bytes);
/* The same, held in `phases` only (QT_MEM_LOAD, QT_MEM_RUN or QT_MEM_ALWAYS). */
qt_status qt_mem_plan_add_phase(qt_mem_plan *p, const char *name, const char *where, size_t bytes,
                                unsigned phases);
/* An arena: its capacity (for a measuring arena: its peak) and its peak use. */
qt_status qt_mem_plan_add_arena(qt_mem_plan *p, const qt_arena *a, const char *where);
/* Sum of bytes of the entries at `where`, or of all entries when where == NULL. */
size_t qt_mem_plan_total(const qt_mem_plan *p, const char *where);
/* Sum of bytes of the entries at `where` (NULL: all places) held in `phase`
 * (QT_MEM_LOAD or QT_MEM_RUN). */
size_t qt_mem_plan_phase_total(const qt_mem_plan *p, const char *where, unsigned phase);
/* The planned peak at `where` (NULL: all places): the larger phase total. */
size_t qt_mem_plan_peak(const qt_mem_plan *p, const char *where);
/* The table, e.g.
 *   memory plan                        where         MiB    peak MiB
 *     activations                      cuda:0     512.00      100.25
 *     model load (source pages)        cpu         64.00   (load only)
 *     ...
 *     total cuda:0                               1746.56
 *     total                                      1800.00
 *     held while loading                         1300.00
 *     held while training                        1736.00
 *     planned peak                               1736.00
 * Entries held in one phase say so; the per-phase lines appear when some
 * entry is held in one phase only; "planned peak" always closes the table. */
void qt_mem_plan_print(const qt_mem_plan *p, FILE *f);

/* ---- measured resident set ---------------------------------------------------
 * What the kernel says this process holds (Linux /proc/self/status): VmRSS,
 * the resident set now, and VmHWM, its high-water mark since exec (the number
 * /usr/bin/time -v prints as "Maximum resident set size"). Both in bytes; 0
 * where /proc is not there (not Linux): the plan's comparison is then skipped.
 * The plan's "process baseline" is qt_mem_rss() read before anything is
 * loaded, so it counts what the libraries (libc, OpenBLAS, OpenMP, cJSON)
 * hold, which no arithmetic on our own sizes could. */
size_t qt_mem_rss(void);
size_t qt_mem_peak_rss(void);
/* Keeps every heap block over 1 MiB in a mapping of its own, returned to
 * the system when freed (arena.c says why not glibc's 128 KiB). Without it glibc raises its mmap threshold to the
 * size of each large block freed (up to 32 MiB: mallopt(3), "M_MMAP_THRESHOLD";
 * one 16 MiB read buffer of config.json is enough), after which datasets grown
 * by realloc and freed load-time buffers stay in the brk heap as resident
 * holes: the demo held 3.3 MiB of them, and no plan can count holes. Setting
 * the threshold once turns the adjustment off. Call before anything large is
 * allocated; changes where memory lives, never a value. No-op off glibc. */
void qt_mem_heap_setup(void);
/* Free heap glibc may keep resident after qt_mem_heap_setup (its trim
 * threshold: a free block at the heap top under this size is kept for reuse,
 * e.g. OpenBLAS's per-GEMM job table); the memory plan counts it. */
#define QT_MEM_HEAP_KEEP ((size_t)2 * 1024 * 1024)
/* Gives the free pages inside the heap back to the system (glibc
 * malloc_trim(0)), e.g. after a parse whose many small blocks are freed, so
 * that the resident set counts what is held. No-op off glibc. */
void qt_mem_trim(void);
/* With QLORA_MEM_TRACE set in the environment: one line on stderr,
 * "mem: <what>: rss X MiB, peak Y MiB" (for finding where memory goes). */
void qt_mem_trace(const char *what);

#ifdef __cplusplus
}
#endif

#endif
