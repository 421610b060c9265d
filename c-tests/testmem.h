/* Test support for the C suite: a stand-in for physical memory, recording
 * hooks, and assertions on kpalloc's counters.
 *
 * Physical memory: one mmap(MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE) of
 * TESTMEM_SIZE bytes of address space (4 GiB + 64 MiB); phys_offset is
 * chosen so that physical address 0 is the mapping's first byte. Only the
 * pages something touches cost memory, so regions can sit at realistic
 * physical addresses (1 MiB, across 4 GiB) for the price of their metadata.
 */
#ifndef TESTMEM_H
#define TESTMEM_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "kpalloc.h"

#define PAGE ((uint64_t)KPALLOC_PAGE_SIZE)
#define MIB(x) ((uint64_t)(x) << 20)
#define GIB(x) ((uint64_t)(x) << 30)
#define TESTMEM_SIZE (GIB(4) + MIB(64))

/* Maps the stand-in physical memory (once per process) and returns its
 * first byte, physical address 0. */
unsigned char *testmem_map(void);
/* The phys_offset that makes physical address 0 the mapping's start. */
uint64_t testmem_phys_offset(void);
/* The mapping's byte at physical address `pa`, computed without kpalloc. */
void *testmem_kva(uint64_t pa);

/* ---- Recording hooks ---------------------------------------------------- */

#define MISUSE_LOG_MAX 64

struct misuse_record {
  page_status status;
  const void *addr;
  int irq_depth;             /* irq_save depth when the hook ran */
  page_status stats_status;  /* what page_stats_get said from inside it */
};

struct hook_log {
  int misuse_calls;
  struct misuse_record misuse[MISUSE_LOG_MAX];
  long irq_saves;
  long irq_restores;
  int irq_depth;
  int irq_max_depth;
  long irq_mismatches; /* irq_restore given something irq_save did not return last */
  /* If set, called by tm_on_misuse after recording (to call kpalloc from
   * inside the hook). */
  void (*misuse_extra)(page_status status, const void *addr);
};

extern struct hook_log hooks;

void tm_on_misuse(page_status status, const void *addr);
uint64_t tm_irq_save(void);
void tm_irq_restore(uint64_t saved);

/* A page_config with testmem's phys_offset and the recording hooks (no
 * panic hook). */
page_config testmem_config(void);
/* Maps the memory and calls page_init(testmem_config()), asserting OK. */
void testmem_init(void);
/* Fills the front of [start, end), where a region's metadata would go, with
 * a pattern (RAM at boot is not zeroed). For a range no live region
 * overlaps; testmem_add_region does it first. */
void testmem_scribble_front(uint64_t start, uint64_t end);
/* Adds [start, end) to `pool`, asserting PAGE_OK; returns the physical
 * address of the region's first usable page (after its metadata). */
uint64_t testmem_add_region(uint64_t start, uint64_t end, uint32_t pool);
/* Forgets the recorded misuse reports. */
void misuse_reset(void);

/* ---- Counters and assertions ------------------------------------------- */

page_stats stats_now(void);

void tm_assert_stats_moved(const page_stats *before, uint64_t misuse, uint64_t failed,
                           const char *file, int line);
void tm_assert_status(uint32_t got, uint32_t want, const char *file, int line);
void tm_assert_misuse_once(page_status status, const void *addr, const char *file, int line);
void tm_assert_no_misuse(const char *file, int line);

/* `got == want`, printing both statuses' names if not. */
#define assert_status(got, want) tm_assert_status((got), (want), __FILE__, __LINE__)
/* The counters now equal `before` except misuse_reports (+misuse) and
 * failed_allocs (+failed). */
#define assert_stats_moved(before, misuse, failed) \
  tm_assert_stats_moved((before), (misuse), (failed), __FILE__, __LINE__)
#define assert_stats_unchanged(before) assert_stats_moved((before), 0, 0)
/* Since the last misuse_reset: exactly one on_misuse call, with these. */
#define assert_misuse_once(status, addr) \
  tm_assert_misuse_once((status), (const void *)(addr), __FILE__, __LINE__)
#define assert_no_misuse() tm_assert_no_misuse(__FILE__, __LINE__)
#define assert_healthy() assert_status(page_check(), PAGE_OK)

/* A refused call: returns `want`, reports it once through on_misuse with
 * `addr`, moves only misuse_reports (+1), and leaves page_check() happy. */
#define EXPECT_REFUSED(expr, want, addr)             \
  do {                                               \
    page_stats before_ = stats_now();                \
    misuse_reset();                                  \
    assert_status((expr), (want));                   \
    assert_misuse_once((want), (addr));              \
    assert_stats_moved(&before_, 1, 0);              \
    assert_healthy();                                \
  } while (0)

/* An allocation refused as misuse: NULL, reported once with NULL. */
#define EXPECT_ALLOC_REFUSED(expr, want)             \
  do {                                               \
    page_stats before_ = stats_now();                \
    misuse_reset();                                  \
    assert_null((expr));                             \
    assert_misuse_once((want), NULL);                \
    assert_stats_moved(&before_, 1, 0);              \
    assert_healthy();                                \
  } while (0)

/* An allocation refused for lack of memory: NULL, not reported as misuse,
 * failed_allocs +1, nothing else moves. */
#define EXPECT_ALLOC_ENOMEM(expr)                    \
  do {                                               \
    page_stats before_ = stats_now();                \
    misuse_reset();                                  \
    assert_null((expr));                             \
    assert_no_misuse();                              \
    assert_stats_moved(&before_, 0, 1);              \
    assert_healthy();                                \
  } while (0)

/* Per-test teardown: no page left in use, metadata consistent. */
int tm_teardown_all_free(void **state);

/* Page `i` of the block at `block`. */
static inline void *page_n(void *block, size_t i) {
  return (unsigned char *)block + i * PAGE;
}

/* Byte address arithmetic on kernel virtual addresses. */
static inline void *kva_plus(void *p, uint64_t bytes) {
  return (unsigned char *)p + bytes;
}

/* Test-only poke: the 32-bit word in `[meta, meta + len)` that changes when
 * `change()` runs (e.g. a block's reference count going 1 -> 2), found by
 * comparing snapshots; NULL if none or more than one changed. */
uint32_t *tm_find_changed_word(void *meta, size_t len, void (*change)(void *), void *arg);

#endif /* TESTMEM_H */
