/* Per-CPU caches of single free pages (page_config.cpu_id): a freed page
 * waits in its CPU's cache, counted as free; it comes back most recently
 * freed first on that CPU; every misuse of it is PAGE_ENOTALLOCATED and
 * changes nothing; other CPUs' caches are drained before PAGE_ENOMEM and by
 * page_alloc_at; CPU numbers from KPALLOC_MAX_CPUS up share caches; threads
 * on their own or on shared CPU numbers never get the same page.
 *
 * The cpu_id hook returns a thread-local variable the tests set. Every test
 * starts with every cache empty (drain_caches) on CPU 0 and ends with no
 * page in use. Kernel region [1 MiB, 1 MiB + 480 pages): small enough that
 * 15 CPUs' caches hold every usable page of it. User region
 * [8 MiB, 8 MiB + 64 pages). */
#include "testmem.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#define KERNEL_START MIB(1)
#define KERNEL_END (MIB(1) + 480 * PAGE)
#define USER_START MIB(8)
#define USER_END (MIB(8) + 64 * PAGE)
/* Pages one CPU's cache holds before it gives some back (the feature's
 * magazine size); 15 of them hold the whole kernel region. */
#define MAGAZINE_PAGES 32

static uint64_t kernel_first, kernel_usable, user_usable;

/* ---- Hooks: thread-safe, as the thread tests need ------------------------ */

static _Thread_local uint32_t current_cpu;
static _Thread_local int irq_depth;
static _Thread_local long cpu_id_calls;
static atomic_long irq_errors, misuse_under_lock, misuse_calls;

static uint32_t test_cpu_id(void) {
  cpu_id_calls++;
  return current_cpu;
}

static void on_cpu(uint32_t cpu) {
  current_cpu = cpu;
}

static uint64_t cc_irq_save(void) {
  /* Never nested: no lock is taken while kpalloc holds it. */
  if (irq_depth++ != 0) atomic_fetch_add(&irq_errors, 1);
  return 0xC0FE;
}

static void cc_irq_restore(uint64_t saved) {
  if (--irq_depth != 0 || saved != 0xC0FE) atomic_fetch_add(&irq_errors, 1);
}

/* Counts every report; records it (testmem's log, for assert_misuse_once)
 * only from the single-threaded tests, which are the only ones expecting
 * any. */
static void cc_on_misuse(page_status status, const void *addr) {
  atomic_fetch_add(&misuse_calls, 1);
  if (irq_depth != 0) atomic_fetch_add(&misuse_under_lock, 1);
  tm_on_misuse(status, addr);
}

/* ---- Setup ---------------------------------------------------------------- */

static int group_setup(void **state) {
  (void)state;
  page_config cfg = testmem_config();
  cfg.irq_save = cc_irq_save;
  cfg.irq_restore = cc_irq_restore;
  cfg.on_misuse = cc_on_misuse;
  cfg.cpu_id = test_cpu_id;
  assert_status(page_init(&cfg), PAGE_OK);
  kernel_first = testmem_add_region(KERNEL_START, KERNEL_END, PAGE_POOL_KERNEL);
  kernel_usable = (KERNEL_END - kernel_first) / PAGE;
  user_usable = (USER_END - testmem_add_region(USER_START, USER_END, PAGE_POOL_USER)) / PAGE;
  assert_true(kernel_usable <= 15 * MAGAZINE_PAGES);
  assert_int_equal(stats_now().cached_pages, 0);
  return 0;
}

/* Empties every cache the one way the API has: an allocation of all the
 * usable pages of a pool, which finds them only after draining every
 * cache. Needs no page in use. */
static void drain_caches(void) {
  page_stats before = stats_now();
  assert_int_equal(before.used_pages, 0);
  void *k = page_alloc(kernel_usable, 0);
  void *u = page_alloc(user_usable, PAGE_ALLOC_USER);
  assert_non_null(k);
  assert_non_null(u);
  assert_ptr_equal(k, page_from_pa(kernel_first));
  assert_status(page_free(k), PAGE_OK);
  assert_status(page_free(u), PAGE_OK);
  page_stats after = stats_now();
  assert_int_equal(after.cached_pages, 0);
  assert_int_equal(after.used_pages, 0);
  assert_int_equal(after.free_pages, before.free_pages);
  assert_int_equal(after.failed_allocs, before.failed_allocs);
  assert_int_equal(after.largest_free_run, kernel_usable);
}

static int setup(void **state) {
  (void)state;
  on_cpu(0);
  drain_caches();
  misuse_reset();
  return 0;
}

static int teardown(void **state) {
  (void)state;
  on_cpu(0);
  page_stats s = stats_now();
  if (s.used_pages != 0) {
    print_error("test left %llu pages in use\n", (unsigned long long)s.used_pages);
    _fail(__FILE__, __LINE__);
  }
  assert_int_equal(s.free_pages, s.total_pages - s.metadata_pages);
  assert_true(s.cached_pages <= s.free_pages);
  assert_healthy();
  assert_int_equal(atomic_load(&irq_errors), 0);
  assert_int_equal(atomic_load(&misuse_under_lock), 0);
  assert_int_equal(irq_depth, 0);
  return 0;
}

/* A refused call on a cached page: PAGE_ENOTALLOCATED, reported once with
 * the page, only misuse_reports moves (cached_pages included), the page
 * stays free, and page_check is happy. */
#define EXPECT_REFUSED_CACHED(expr, page)                             \
  do {                                                                \
    page_stats before_ = stats_now();                                 \
    misuse_reset();                                                   \
    assert_status((expr), PAGE_ENOTALLOCATED);                        \
    assert_misuse_once(PAGE_ENOTALLOCATED, (page));                   \
    assert_stats_moved(&before_, 1, 0);                               \
    assert_int_equal(stats_now().cached_pages, before_.cached_pages); \
    assert_int_equal(page_refcount(page), 0);                         \
    assert_int_equal(page_block_pages(page), 0);                      \
    assert_healthy();                                                 \
  } while (0)

static void *alloc_one(void) {
  void *p = page_alloc(1, 0);
  assert_non_null(p);
  assert_int_equal(page_refcount(p), 1);
  assert_int_equal(page_block_pages(p), 1);
  return p;
}

/* ---- 1. A freed page waits in its CPU's cache ----------------------------- */

static void a_freed_single_page_waits_in_the_cache_and_counts_as_free(void **state) {
  (void)state;
  page_stats before = stats_now();
  assert_int_equal(before.cached_pages, 0);
  void *p = alloc_one();
  page_stats held = stats_now();
  assert_int_equal(held.used_pages, 1);
  assert_int_equal(held.free_pages, before.free_pages - 1);
  /* The first allocation filled CPU 0's cache from the bitmaps; the pages
   * it holds are still free. */
  assert_true(held.cached_pages >= 1);
  assert_true(held.cached_pages < MAGAZINE_PAGES);
  assert_int_equal(held.free_pages, held.total_pages - held.metadata_pages - held.used_pages);
  /* ...but in use as far as the peak is concerned. */
  assert_true(held.high_water_pages >= held.used_pages + held.cached_pages);
  assert_healthy();

  misuse_reset();
  assert_status(page_free(p), PAGE_OK);
  assert_no_misuse();
  page_stats after = stats_now();
  assert_int_equal(after.cached_pages, held.cached_pages + 1);
  assert_int_equal(after.free_pages, before.free_pages);
  assert_int_equal(after.used_pages, 0);
  assert_int_equal(after.user_free_pages, before.user_free_pages);
  assert_int_equal(after.total_pages, before.total_pages);
  assert_int_equal(after.failed_allocs, before.failed_allocs);
  assert_int_equal(after.misuse_reports, before.misuse_reports);
  /* Cached pages stay used in the bitmap: no run goes through them. */
  assert_true(after.largest_free_run <= kernel_usable - after.cached_pages);
  assert_int_equal(page_refcount(p), 0);
  assert_int_equal(page_block_pages(p), 0);
  assert_healthy();
}

static void single_pages_come_back_most_recently_freed_first_on_the_same_cpu(void **state) {
  (void)state;
  void *a = alloc_one(), *b = alloc_one(), *c = alloc_one();
  assert_true(a != b && b != c && a != c);
  assert_status(page_free(b), PAGE_OK);
  assert_status(page_free(a), PAGE_OK);
  assert_status(page_free(c), PAGE_OK);
  assert_ptr_equal(alloc_one(), c);
  assert_ptr_equal(alloc_one(), a);
  assert_ptr_equal(alloc_one(), b);
  /* Again after a round trip, not just after the first fill. */
  assert_status(page_free(a), PAGE_OK);
  assert_ptr_equal(alloc_one(), a);
  assert_status(page_free(a), PAGE_OK);
  assert_status(page_free(b), PAGE_OK);
  assert_status(page_free(c), PAGE_OK);
}

static void another_cpu_gets_a_different_page_and_leaves_the_cached_one(void **state) {
  (void)state;
  void *p = alloc_one();
  assert_status(page_free(p), PAGE_OK);
  uint64_t cached = stats_now().cached_pages;

  on_cpu(1);
  void *q = alloc_one();
  assert_true(q != p);
  assert_int_equal(page_refcount(p), 0); /* still free, in CPU 0's cache */
  page_stats s = stats_now();
  assert_int_equal(s.used_pages, 1);
  assert_true(s.cached_pages > cached); /* CPU 1 filled a cache of its own */
  memset(q, 0x11, PAGE);

  on_cpu(0);
  void *r = alloc_one();
  assert_ptr_equal(r, p);
  assert_int_equal(((unsigned char *)q)[PAGE - 1], 0x11);
  assert_status(page_free(r), PAGE_OK);
  on_cpu(1);
  assert_status(page_free(q), PAGE_OK);
  /* Each went back to the cache of the CPU that freed it. */
  assert_ptr_equal(alloc_one(), q);
  on_cpu(0);
  assert_ptr_equal(alloc_one(), p);
  assert_status(page_free(p), PAGE_OK);
  assert_status(page_free(q), PAGE_OK);
}

static void pages_of_a_split_block_and_last_puts_are_cached(void **state) {
  (void)state;
  void *b = page_alloc(4, 0);
  assert_non_null(b);
  assert_status(page_split(b), PAGE_OK);
  uint64_t cached = stats_now().cached_pages;
  for (size_t i = 0; i < 4; i++) assert_status(page_free(page_n(b, i)), PAGE_OK);
  assert_int_equal(stats_now().cached_pages, cached + 4);
  for (size_t i = 4; i-- > 0;) assert_ptr_equal(alloc_one(), page_n(b, i));

  /* A put that is not the last leaves the page in use; the last caches it. */
  void *p = page_n(b, 2);
  assert_status(page_get(p), PAGE_OK);
  cached = stats_now().cached_pages;
  assert_status(page_put(p), PAGE_OK);
  assert_int_equal(page_refcount(p), 1);
  assert_int_equal(stats_now().cached_pages, cached);
  assert_status(page_put(p), PAGE_OK);
  assert_int_equal(page_refcount(p), 0);
  assert_int_equal(stats_now().cached_pages, cached + 1);
  assert_ptr_equal(alloc_one(), p);
  for (size_t i = 0; i < 4; i++) assert_status(page_free(page_n(b, i)), PAGE_OK);

  /* A multi-page block goes back to the bitmaps. */
  cached = stats_now().cached_pages;
  void *m = page_alloc(3, 0);
  assert_non_null(m);
  assert_status(page_free(m), PAGE_OK);
  assert_int_equal(stats_now().cached_pages, cached);
}

static void a_zeroed_allocation_from_the_cache_is_zeroed(void **state) {
  (void)state;
  unsigned char *p = alloc_one();
  memset(p, 0x5A, PAGE);
  assert_status(page_free(p), PAGE_OK);
  unsigned char *q = page_alloc(1, PAGE_ALLOC_ZERO);
  assert_ptr_equal(q, p);
  for (size_t i = 0; i < PAGE; i++)
    if (q[i] != 0) fail_msg("byte %zu of a zeroed page from the cache is 0x%02x", i, q[i]);
  assert_status(page_free(q), PAGE_OK);
}

static void user_pages_have_caches_of_their_own(void **state) {
  (void)state;
  page_stats before = stats_now();
  void *u = page_alloc(1, PAGE_ALLOC_USER);
  assert_non_null(u);
  assert_true(page_to_pa(u) >= USER_START && page_to_pa(u) < USER_END);
  assert_int_equal(stats_now().user_free_pages, before.user_free_pages - 1);
  assert_status(page_free(u), PAGE_OK);
  page_stats after = stats_now();
  assert_true(after.cached_pages > before.cached_pages);
  assert_int_equal(after.user_free_pages, before.user_free_pages);
  assert_int_equal(after.free_pages, before.free_pages);
  /* The same CPU's kernel allocation does not take the cached user page. */
  void *k = alloc_one();
  assert_true(page_to_pa(k) >= kernel_first && page_to_pa(k) < KERNEL_END);
  assert_ptr_equal(page_alloc(1, PAGE_ALLOC_USER), u);
  assert_status(page_free(k), PAGE_OK);
  assert_status(page_free(u), PAGE_OK);
}

static void dma32_and_aligned_single_pages_do_not_come_from_the_cache(void **state) {
  (void)state;
  void *p = alloc_one();
  assert_status(page_free(p), PAGE_OK);
  uint64_t cached = stats_now().cached_pages;
  /* Both are searched in the bitmaps (p is not free there). */
  void *d = page_alloc(1, PAGE_ALLOC_DMA32);
  void *a = page_alloc_aligned(1, 8, 0);
  assert_non_null(d);
  assert_non_null(a);
  assert_true(d != p && a != p);
  assert_int_equal(page_to_pa(a) % (8 * PAGE), 0);
  assert_int_equal(stats_now().cached_pages, cached);
  assert_status(page_free(d), PAGE_OK);
  assert_status(page_free(a), PAGE_OK);
  assert_int_equal(stats_now().cached_pages, cached + 2);
  assert_int_equal(page_refcount(p), 0);
}

static void scheduled_failures_fail_allocations_the_cache_could_serve(void **state) {
  (void)state;
  void *p = alloc_one();
  assert_status(page_free(p), PAGE_OK);
  assert_status(page_fail_after(0), PAGE_OK);
  EXPECT_ALLOC_ENOMEM(page_alloc(1, 0));
  assert_status(page_fail_off(), PAGE_OK);
  assert_ptr_equal(alloc_one(), p);
  assert_status(page_free(p), PAGE_OK);
}

/* ---- 2. Misuse of a cached page ------------------------------------------- */

static void every_misuse_of_a_cached_page_is_enotallocated_and_changes_nothing(void **state) {
  (void)state;
  void *p = alloc_one();
  void *neighbour = alloc_one();
  assert_status(page_free(p), PAGE_OK);
  EXPECT_REFUSED_CACHED(page_free(p), p);
  EXPECT_REFUSED_CACHED(page_free(p), p);
  EXPECT_REFUSED_CACHED(page_free_sized(p, 1), p);
  EXPECT_REFUSED_CACHED(page_free_sized(p, 2), p);
  EXPECT_REFUSED_CACHED(page_get(p), p);
  EXPECT_REFUSED_CACHED(page_put(p), p);
  EXPECT_REFUSED_CACHED(page_split(p), p);
  /* From another CPU (another cache) too. */
  on_cpu(7);
  EXPECT_REFUSED_CACHED(page_free(p), p);
  EXPECT_REFUSED_CACHED(page_put(p), p);
  EXPECT_REFUSED_CACHED(page_get(p), p);
  on_cpu(0);
  /* The neighbour is untouched and p is still on top of CPU 0's cache. */
  assert_int_equal(page_refcount(neighbour), 1);
  assert_ptr_equal(alloc_one(), p);
  assert_status(page_free(p), PAGE_OK);
  assert_status(page_free(neighbour), PAGE_OK);
}

static void put_p(void *p) {
  assert_status(page_put(p), PAGE_OK);
}

static void page_check_cross_checks_the_caches_with_the_slots(void **state) {
  (void)state;
  void *p = alloc_one();
  void *q = alloc_one();
  assert_status(page_get(p), PAGE_OK);
  /* p's slot: the one metadata word a put changes (2 -> 1). */
  uint32_t *slot = tm_find_changed_word(testmem_kva(KERNEL_START), kernel_first - KERNEL_START, put_p, p);
  assert_non_null(slot);
  assert_int_equal(*slot, 1);
  assert_status(page_put(p), PAGE_OK);
  uint32_t cached_slot = *slot;
  assert_true(cached_slot != 0 && cached_slot != 1);
  assert_healthy();

  /* A cached page whose slot says free, while the bitmap says used. */
  *slot = 0;
  misuse_reset();
  page_stats before = stats_now();
  assert_status(page_check(), PAGE_ECORRUPT);
  assert_misuse_once(PAGE_ECORRUPT, p);
  assert_stats_moved(&before, 1, 0);
  /* ...or says allocated, while it is in a cache. */
  *slot = 1;
  misuse_reset();
  assert_status(page_check(), PAGE_ECORRUPT);
  assert_int_equal(hooks.misuse_calls, 1);
  assert_status(hooks.misuse[0].status, PAGE_ECORRUPT);
  *slot = cached_slot;
  assert_healthy();

  /* A page in use whose slot says cached, though no cache holds it. */
  uint64_t p_pa = page_to_pa(p), q_pa = page_to_pa(q);
  uint32_t *q_slot = q_pa > p_pa ? slot + (q_pa - p_pa) / PAGE : slot - (p_pa - q_pa) / PAGE;
  assert_int_equal(*q_slot, 1);
  *q_slot = cached_slot;
  misuse_reset();
  assert_status(page_check(), PAGE_ECORRUPT);
  assert_int_equal(hooks.misuse_calls, 1);
  assert_status(hooks.misuse[0].status, PAGE_ECORRUPT);
  *q_slot = 1;
  assert_healthy();
  assert_status(page_free(q), PAGE_OK);
}

/* ---- 3. Caches are drained before PAGE_ENOMEM ----------------------------- */

/* Every usable kernel page as single pages from CPU 0, freed spread over
 * CPUs 1..15: each ends up in a cache, none in the bitmaps. */
static void park_every_kernel_page_in_other_cpus_caches(void) {
  void **held = calloc(kernel_usable, sizeof *held);
  assert_non_null(held);
  page_stats before = stats_now();
  on_cpu(0);
  for (uint64_t i = 0; i < kernel_usable; i++) {
    held[i] = page_alloc(1, 0);
    if (!held[i]) fail_msg("single page %llu of %llu: NULL", (unsigned long long)i, (unsigned long long)kernel_usable);
  }
  page_stats full = stats_now();
  assert_int_equal(full.used_pages, kernel_usable);
  assert_int_equal(full.cached_pages, 0);
  assert_int_equal(full.free_pages, user_usable);
  for (uint64_t i = 0; i < kernel_usable; i++) {
    on_cpu(1 + (uint32_t)(i % 15));
    assert_status(page_free(held[i]), PAGE_OK);
  }
  on_cpu(0);
  free(held);
  page_stats parked = stats_now();
  assert_int_equal(parked.used_pages, 0);
  assert_int_equal(parked.cached_pages, kernel_usable);
  assert_int_equal(parked.free_pages, before.free_pages);
  assert_int_equal(parked.failed_allocs, before.failed_allocs);
  assert_int_equal(parked.largest_free_run, user_usable); /* only the user region */
  assert_healthy();
}

static void true_exhaustion_is_enomem_and_counted(void) {
  /* The fast path's miss goes to the bitmaps without asking the cache
   * (and refilling from nothing) a second time. */
  long calls_before = cpu_id_calls;
  EXPECT_ALLOC_ENOMEM(page_alloc(1, 0));
  assert_int_equal(cpu_id_calls - calls_before, 1);
  EXPECT_ALLOC_ENOMEM(page_alloc(2, 0));
  EXPECT_ALLOC_ENOMEM(page_alloc(1, PAGE_ALLOC_ZERO));
  on_cpu(9);
  EXPECT_ALLOC_ENOMEM(page_alloc(1, 0));
  on_cpu(0);
}

static void pages_in_other_cpus_caches_are_drained_before_enomem(void **state) {
  (void)state;
  park_every_kernel_page_in_other_cpus_caches();
  /* The bitmaps have no free kernel page: a block takes them all back. */
  page_stats before = stats_now();
  misuse_reset();
  void *a = page_alloc(8, 0);
  assert_non_null(a);
  assert_ptr_equal(a, page_from_pa(kernel_first));
  page_stats s = stats_now();
  assert_int_equal(s.cached_pages, 0);
  assert_int_equal(s.used_pages, 8);
  assert_int_equal(s.failed_allocs, before.failed_allocs);
  assert_int_equal(s.largest_free_run, kernel_usable - 8);
  /* Every other kernel page is one free run again. */
  void *rest = page_alloc(kernel_usable - 8, 0);
  assert_non_null(rest);
  assert_ptr_equal(rest, page_n(a, 8));
  assert_no_misuse();
  true_exhaustion_is_enomem_and_counted();
  assert_status(page_free(a), PAGE_OK);
  assert_status(page_free(rest), PAGE_OK);
}

static void a_block_of_every_page_is_found_in_the_caches(void **state) {
  (void)state;
  park_every_kernel_page_in_other_cpus_caches();
  void *all = page_alloc(kernel_usable, 0);
  assert_non_null(all);
  assert_int_equal(stats_now().cached_pages, 0);
  true_exhaustion_is_enomem_and_counted();
  assert_status(page_free(all), PAGE_OK);
}

static void single_pages_are_taken_back_from_other_cpus_caches(void **state) {
  (void)state;
  park_every_kernel_page_in_other_cpus_caches();
  uint64_t failed = stats_now().failed_allocs;
  /* CPU 0's cache is empty and so are the bitmaps: each of these still
   * succeeds, and together they are every usable page. */
  void **held = calloc(kernel_usable, sizeof *held);
  assert_non_null(held);
  for (uint64_t i = 0; i < kernel_usable; i++) {
    held[i] = page_alloc(1, 0);
    if (!held[i]) fail_msg("single page %llu of %llu: NULL", (unsigned long long)i, (unsigned long long)kernel_usable);
    uint64_t pa = page_to_pa(held[i]);
    assert_true(pa >= kernel_first && pa < KERNEL_END);
    for (uint64_t j = 0; j < i; j++)
      if (held[j] == held[i]) fail_msg("page %p handed out twice", held[i]);
  }
  page_stats s = stats_now();
  assert_int_equal(s.used_pages, kernel_usable);
  assert_int_equal(s.cached_pages, 0);
  assert_int_equal(s.failed_allocs, failed);
  true_exhaustion_is_enomem_and_counted();
  for (uint64_t i = 0; i < kernel_usable; i++) assert_status(page_free(held[i]), PAGE_OK);
  free(held);
}

static void an_allocation_too_large_for_the_pool_fails_and_loses_no_page(void **state) {
  (void)state;
  void *p = alloc_one();
  assert_status(page_free(p), PAGE_OK);
  page_stats before = stats_now();
  misuse_reset();
  assert_null(page_alloc(kernel_usable + 1, 0));
  assert_no_misuse();
  page_stats after = stats_now();
  assert_int_equal(after.failed_allocs, before.failed_allocs + 1);
  assert_int_equal(after.free_pages, before.free_pages);
  assert_int_equal(after.used_pages, 0);
  assert_healthy();
}

/* ---- 4. page_alloc_at of a cached page ------------------------------------ */

static void alloc_at_of_a_cached_page_takes_it_out_of_the_cache(void **state) {
  (void)state;
  on_cpu(2);
  void *p = alloc_one();
  assert_status(page_free(p), PAGE_OK);
  uint64_t pa = page_to_pa(p);

  on_cpu(0);
  page_stats before = stats_now();
  assert_true(before.cached_pages > 0);
  misuse_reset();
  assert_status(page_alloc_at(pa, 1, 0), PAGE_OK);
  assert_no_misuse();
  assert_int_equal(page_refcount(p), 1);
  assert_int_equal(page_block_pages(p), 1);
  page_stats after = stats_now();
  assert_int_equal(after.used_pages, 1);
  assert_int_equal(after.free_pages, before.free_pages - 1);
  assert_int_equal(after.failed_allocs, before.failed_allocs);
  assert_healthy();
  /* It is an ordinary page now: not handed out again, freed normally. */
  void *q = alloc_one();
  assert_true(q != p);
  assert_status(page_free(q), PAGE_OK);
  assert_status(page_free(p), PAGE_OK);
  EXPECT_REFUSED_CACHED(page_free(p), p);
}

static void alloc_at_of_a_range_through_cached_pages_succeeds(void **state) {
  (void)state;
  /* The first fills take the lowest pages: the first 32 pages of the region
   * are now in CPU 3's and CPU 4's caches or in use. */
  on_cpu(3);
  void *a = alloc_one();
  on_cpu(4);
  void *b = alloc_one();
  assert_status(page_free(b), PAGE_OK);
  on_cpu(0);
  assert_true(stats_now().cached_pages > 0);
  /* Page a is in use: the range through it is busy, whatever the caches. */
  assert_status(page_alloc_at(kernel_first, 32, 0), PAGE_EBUSY);
  on_cpu(3);
  assert_status(page_free(a), PAGE_OK);
  on_cpu(0);
  assert_status(page_alloc_at(kernel_first, 32, 0), PAGE_OK);
  void *block = page_from_pa(kernel_first);
  assert_int_equal(page_block_pages(block), 32);
  assert_int_equal(page_refcount(block), 1);
  assert_int_equal(stats_now().used_pages, 32);
  assert_healthy();
  assert_status(page_free(block), PAGE_OK);
}

/* ---- 5. CPU numbers from KPALLOC_MAX_CPUS up ------------------------------ */

static void cpu_numbers_from_max_cpus_up_share_caches(void **state) {
  (void)state;
  on_cpu(3);
  void *p = alloc_one();
  on_cpu(3 + KPALLOC_MAX_CPUS);
  uint64_t cached = stats_now().cached_pages;
  assert_status(page_free(p), PAGE_OK);
  assert_int_equal(stats_now().cached_pages, cached + 1);
  on_cpu(3);
  assert_ptr_equal(alloc_one(), p);
  on_cpu(3 + 5 * KPALLOC_MAX_CPUS);
  assert_status(page_free(p), PAGE_OK);
  on_cpu(3 + KPALLOC_MAX_CPUS);
  assert_ptr_equal(alloc_one(), p);

  /* The largest number there is: CPU 15's cache. */
  on_cpu(UINT32_MAX);
  void *q = alloc_one();
  assert_status(page_free(q), PAGE_OK);
  on_cpu(KPALLOC_MAX_CPUS - 1);
  assert_ptr_equal(alloc_one(), q);
  assert_status(page_free(q), PAGE_OK);
  on_cpu(UINT32_MAX);
  assert_ptr_equal(alloc_one(), q);
  assert_healthy();
  /* CPU 4's cache is another one: it does not hand out p or q. */
  on_cpu(4 + KPALLOC_MAX_CPUS);
  void *r = alloc_one();
  assert_true(r != p && r != q);
  assert_status(page_free(r), PAGE_OK);
  assert_status(page_free(q), PAGE_OK);
  assert_status(page_free(p), PAGE_OK);
  assert_healthy();
}

/* ---- 6. Threads ----------------------------------------------------------- */

#define HELD_SINGLES 8
#define ITERATIONS 200000

struct worker {
  uint32_t cpu;
  uint32_t id; /* distinct per thread, also for threads sharing a cpu */
  long blocks_allocated;
  long blocks_refused;
};

static uint64_t tag_of(uint32_t id, uint64_t seq, size_t page) {
  return ((uint64_t)id << 48) ^ (seq << 8) ^ page;
}

static void tag_block(unsigned char *b, size_t pages, uint64_t tag0) {
  for (size_t k = 0; k < pages; k++) {
    uint64_t t = tag0 ^ k;
    memcpy(b + k * PAGE, &t, sizeof t);
    memcpy(b + k * PAGE + PAGE - sizeof t, &t, sizeof t);
  }
}

static int block_tagged(const unsigned char *b, size_t pages, uint64_t tag0) {
  for (size_t k = 0; k < pages; k++) {
    uint64_t head, tail;
    memcpy(&head, b + k * PAGE, sizeof head);
    memcpy(&tail, b + k * PAGE + PAGE - sizeof tail, sizeof tail);
    if (head != (tag0 ^ k) || tail != (tag0 ^ k)) return 0;
  }
  return 1;
}

/* Single-page alloc/free pairs (most operations), single pages held a
 * while, a last put through page_get/page_put, and blocks of 2-6 pages;
 * every page is tagged with the thread and a sequence number and checked
 * before it is released. */
static void *churn(void *arg) {
  struct worker *w = arg;
  on_cpu(w->cpu);
  uint64_t seed = 0x9E3779B97F4A7C15ull * (w->id + 1);
  unsigned char *single[HELD_SINGLES] = {0};
  uint64_t single_tag[HELD_SINGLES] = {0};
  unsigned char *block = NULL;
  size_t block_len = 0;
  uint64_t block_tag = 0;
  for (uint64_t seq = 1; seq <= ITERATIONS; seq++) {
    seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
    unsigned op = (unsigned)(seed % 16);
    if (op < 10) {
      /* A pair: allocate, tag, check, free. */
      unsigned char *p = page_alloc(1, 0);
      if (!p) return "a single-page allocation failed";
      if (page_refcount(p) != 1 || page_block_pages(p) != 1) return "a new page is not one page with one reference";
      uint64_t t = tag_of(w->id, seq, 0);
      tag_block(p, 1, t);
      if (!block_tagged(p, 1, t)) return "a page changed between tagging and checking";
      if (page_free(p) != PAGE_OK) return "page_free of a fresh page failed";
    } else if (op < 14) {
      int slot = (int)((seed >> 20) % HELD_SINGLES);
      if (single[slot]) {
        if (!block_tagged(single[slot], 1, single_tag[slot])) return "a held page's tag changed: page shared with another thread";
        if (op == 13) {
          /* Released by a last put racing nothing but the other threads. */
          if (page_get(single[slot]) != PAGE_OK) return "page_get of a held page failed";
          if (page_put(single[slot]) != PAGE_OK) return "page_put (not last) failed";
          if (page_refcount(single[slot]) != 1) return "the count is not back to one";
          if (page_put(single[slot]) != PAGE_OK) return "last page_put failed";
        } else if (page_free(single[slot]) != PAGE_OK) {
          return "page_free of a held page failed";
        }
        single[slot] = NULL;
      } else {
        unsigned char *p = page_alloc(1, (seed >> 40) % 4 == 0 ? PAGE_ALLOC_ZERO : 0);
        if (!p) return "a single-page allocation failed";
        if (page_refcount(p) != 1 || page_block_pages(p) != 1) return "a new page is not one page with one reference";
        single_tag[slot] = tag_of(w->id, seq, 0);
        tag_block(p, 1, single_tag[slot]);
        single[slot] = p;
      }
    } else {
      if (block) {
        if (!block_tagged(block, block_len, block_tag)) return "a block's tag changed: pages shared with another thread";
        if (page_free(block) != PAGE_OK) return "page_free of a block failed";
        block = NULL;
      } else {
        size_t n = 2 + (size_t)((seed >> 32) % 5);
        unsigned char *b = page_alloc(n, 0);
        if (!b) {
          /* Possible only if fragmentation beats the drain (a cache busy
           * on another thread is skipped): counted, not fatal. */
          w->blocks_refused++;
          continue;
        }
        if (page_refcount(b) != 1 || page_block_pages(b) != n) return "a new block has the wrong length or count";
        block_tag = tag_of(w->id, seq, 0);
        block_len = n;
        tag_block(b, n, block_tag);
        block = b;
        w->blocks_allocated++;
      }
    }
  }
  for (int slot = 0; slot < HELD_SINGLES; slot++) {
    if (!single[slot]) continue;
    if (!block_tagged(single[slot], 1, single_tag[slot])) return "a held page's tag changed at the end";
    if (page_free(single[slot]) != PAGE_OK) return "final page_free failed";
  }
  if (block) {
    if (!block_tagged(block, block_len, block_tag)) return "a block's tag changed at the end";
    if (page_free(block) != PAGE_OK) return "final block page_free failed";
  }
  return NULL;
}

static atomic_int workers_done;
static atomic_long checks_ok, checks_busy;

/* page_check while the workers run: OK, or EBUSY if a cache stayed in use
 * throughout; never a corruption. */
static void *checker(void *arg) {
  (void)arg;
  on_cpu(11);
  while (!atomic_load(&workers_done)) {
    page_status s = page_check();
    if (s == PAGE_OK)
      atomic_fetch_add(&checks_ok, 1);
    else if (s == PAGE_EBUSY)
      atomic_fetch_add(&checks_busy, 1);
    else
      return "page_check during the run was neither OK nor EBUSY";
    usleep(200);
  }
  return NULL;
}

#define MAX_WORKERS 4

static void run_workers(const uint32_t *cpus, size_t n) {
  struct worker w[MAX_WORKERS];
  pthread_t t[MAX_WORKERS], check;
  assert_true(n <= MAX_WORKERS);
  long misuse0 = atomic_load(&misuse_calls);
  atomic_store(&workers_done, 0);
  assert_int_equal(pthread_create(&check, NULL, checker, NULL), 0);
  size_t started = 0;
  for (; started < n; started++) {
    w[started] = (struct worker){.cpu = cpus[started], .id = (uint32_t)started + 1};
    if (pthread_create(&t[started], NULL, churn, &w[started]) != 0) break;
  }
  /* Every thread joined before any failure is reported: a failure leaves
   * the test at once, and a thread still running would call into kpalloc
   * during the next test. */
  void *failed[MAX_WORKERS];
  for (size_t i = 0; i < started; i++) assert_int_equal(pthread_join(t[i], &failed[i]), 0);
  atomic_store(&workers_done, 1);
  void *checker_failed;
  assert_int_equal(pthread_join(check, &checker_failed), 0);
  if (started < n) fail_msg("pthread_create failed for worker %zu", started);
  long allocated = 0, refused = 0;
  for (size_t i = 0; i < n; i++) {
    if (failed[i]) fail_msg("thread %zu (cpu %u): %s", i, cpus[i], (const char *)failed[i]);
    allocated += w[i].blocks_allocated;
    refused += w[i].blocks_refused;
  }
  if (checker_failed) fail_msg("checker: %s", (const char *)checker_failed);
  print_message("%zu threads: %ld blocks allocated, %ld refused; page_check %ld OK, %ld EBUSY\n", n, allocated,
                refused, atomic_load(&checks_ok), atomic_load(&checks_busy));
  assert_true(allocated > 0);
  assert_int_equal(atomic_load(&misuse_calls), misuse0);
  assert_int_equal(atomic_load(&irq_errors), 0);
  on_cpu(0);
  assert_healthy();
  page_stats s = stats_now();
  assert_int_equal(s.used_pages, 0);
  assert_int_equal(s.free_pages, s.total_pages - s.metadata_pages);
  /* The workers' last frees went to their caches. */
  assert_true(s.cached_pages > 0);
  assert_true(s.cached_pages <= s.free_pages);
  /* Every page is really free: the whole region is one block again. */
  drain_caches();
}

static void threads_on_their_own_cpus_never_share_pages(void **state) {
  (void)state;
  static const uint32_t cpus[] = {0, 1, 2, 3};
  run_workers(cpus, 4);
}

static void threads_sharing_a_cpu_number_never_share_pages(void **state) {
  (void)state;
  /* Two threads on CPU 5, one on 5 + KPALLOC_MAX_CPUS: one cache. */
  static const uint32_t cpus[] = {5, 5, 5 + KPALLOC_MAX_CPUS};
  run_workers(cpus, 3);
}

static void two_threads_on_one_cpu_number_never_share_pages(void **state) {
  (void)state;
  static const uint32_t cpus[] = {6, 6};
  run_workers(cpus, 2);
}

/* ---- page_drain_caches ----------------------------------------------------- */

static void page_drain_caches_gives_back_every_cached_page(void **state) {
  (void)state;
  page_stats fresh = stats_now();
  for (uint32_t cpu = 0; cpu < 3; cpu++) {
    on_cpu(cpu);
    void *p = alloc_one();
    assert_status(page_free(p), PAGE_OK);
  }
  on_cpu(0);
  page_stats parked = stats_now();
  assert_true(parked.cached_pages >= 3);
  assert_true(parked.largest_free_run < fresh.largest_free_run);
  assert_int_equal(page_drain_caches(), parked.cached_pages);
  page_stats drained = stats_now();
  assert_int_equal(drained.cached_pages, 0);
  assert_int_equal(drained.free_pages, fresh.free_pages);
  assert_int_equal(drained.used_pages, 0);
  assert_int_equal(drained.largest_free_run, fresh.largest_free_run);
  assert_int_equal(drained.failed_allocs, fresh.failed_allocs);
  assert_int_equal(drained.misuse_reports, fresh.misuse_reports);
  assert_int_equal(page_drain_caches(), 0);
  assert_healthy();
}

int main(void) {
  alarm(40);
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(a_freed_single_page_waits_in_the_cache_and_counts_as_free),
      T(single_pages_come_back_most_recently_freed_first_on_the_same_cpu),
      T(another_cpu_gets_a_different_page_and_leaves_the_cached_one),
      T(pages_of_a_split_block_and_last_puts_are_cached),
      T(a_zeroed_allocation_from_the_cache_is_zeroed),
      T(user_pages_have_caches_of_their_own),
      T(dma32_and_aligned_single_pages_do_not_come_from_the_cache),
      T(scheduled_failures_fail_allocations_the_cache_could_serve),
      T(every_misuse_of_a_cached_page_is_enotallocated_and_changes_nothing),
      T(page_check_cross_checks_the_caches_with_the_slots),
      T(pages_in_other_cpus_caches_are_drained_before_enomem),
      T(a_block_of_every_page_is_found_in_the_caches),
      T(single_pages_are_taken_back_from_other_cpus_caches),
      T(an_allocation_too_large_for_the_pool_fails_and_loses_no_page),
      T(alloc_at_of_a_cached_page_takes_it_out_of_the_cache),
      T(alloc_at_of_a_range_through_cached_pages_succeeds),
      T(cpu_numbers_from_max_cpus_up_share_caches),
      T(page_drain_caches_gives_back_every_cached_page),
      T(threads_on_their_own_cpus_never_share_pages),
      T(threads_sharing_a_cpu_number_never_share_pages),
      T(two_threads_on_one_cpu_number_never_share_pages),
  };
  return cmocka_run_group_tests(tests, group_setup, NULL);
}
