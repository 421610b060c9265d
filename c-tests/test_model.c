/* Randomised comparison with a model: thousands of random calls (alloc with
 * random count/alignment/flags, alloc_at, free, get, put, split, and misuse
 * of each) over three regions, each checked against a simple page-by-page
 * model of what kpalloc promises: the exact block chosen (the lowest
 * fitting one in address order), every status, every counter. Regions: a
 * kernel region at 1 MiB (600 pages), a user region at 64 MiB (200 pages)
 * and a kernel region straddling 4 GiB (300 pages each side). */
#include "testmem.h"

#define NREG 4
#define MAXP 70000

struct region {
  uint64_t start, usable, end; /* page frame numbers */
  uint32_t pool;
  uint64_t used;
  /* per page from start: 0 free; >0 head with that count; <0 interior */
  int64_t state[MAXP];
  uint32_t len[MAXP]; /* block length at heads */
};

static struct region regs[NREG];
static uint64_t seed = 0x9E3779B97F4A7C15ull;
static uint64_t model_misuse, model_failed, model_high;
static int big; /* the phase with large blocks in the large user region */

static uint64_t rnd(void) {
  seed ^= seed << 13;
  seed ^= seed >> 7;
  seed ^= seed << 17;
  return seed;
}

static const uint64_t DMA32_PFN = GIB(4) / PAGE;

static void add(int i, uint64_t pa_start, uint64_t pages, uint32_t pool) {
  page_stats before = stats_now();
  testmem_add_region(pa_start, pa_start + pages * PAGE, pool);
  page_stats after = stats_now();
  regs[i].start = pa_start / PAGE;
  regs[i].usable = regs[i].start + (after.metadata_pages - before.metadata_pages);
  regs[i].end = regs[i].start + pages;
  regs[i].pool = pool;
}

static int setup(void **state) {
  (void)state;
  testmem_init();
  /* Added out of order on purpose. */
  add(2, GIB(4) - 300 * PAGE, 600, PAGE_POOL_KERNEL);
  add(0, MIB(1), 600, PAGE_POOL_KERNEL);
  add(1, MIB(64), 200, PAGE_POOL_USER);
  /* Large enough for several levels of the bitmap's summaries; only its
   * metadata (about 270 KiB) and the first page of each block get touched. */
  add(3, MIB(128), 66313, PAGE_POOL_USER);
  return 0;
}

static struct region *region_of(uint64_t pfn) {
  for (int i = 0; i < NREG; i++)
    if (regs[i].start <= pfn && pfn < regs[i].end) return &regs[i];
  return NULL;
}

static int64_t *st(uint64_t pfn) {
  struct region *r = region_of(pfn);
  return &r->state[pfn - r->start];
}

static uint64_t used_pages(void) {
  uint64_t used = 0;
  for (int i = 0; i < NREG; i++) used += regs[i].used;
  return used;
}

/* The longest free run is a scan of every page: only every 16th step. */
static void check_counters(uint64_t step) {
  page_stats s = stats_now();
  uint64_t used = used_pages(), user_free = 0, longest = s.largest_free_run;
  for (int i = 0; i < NREG; i++)
    if (regs[i].pool == PAGE_POOL_USER) user_free += regs[i].end - regs[i].usable - regs[i].used;
  if (step % 16 == 0) {
    longest = 0;
    for (int i = 0; i < NREG; i++) {
      uint64_t run = 0;
      for (uint64_t p = regs[i].usable; p < regs[i].end; p++) {
        run = regs[i].state[p - regs[i].start] == 0 ? run + 1 : 0;
        if (run > longest) longest = run;
      }
    }
  }
  if (used > model_high) model_high = used;
  if (s.used_pages != used || s.user_free_pages != user_free || s.largest_free_run != longest ||
      s.misuse_reports != model_misuse || s.failed_allocs != model_failed ||
      s.high_water_pages != model_high)
    fail_msg("step %llu: kpalloc says used %llu user_free %llu longest %llu misuse %llu failed %llu "
             "high %llu; model %llu %llu %llu %llu %llu %llu",
             (unsigned long long)step, (unsigned long long)s.used_pages,
             (unsigned long long)s.user_free_pages, (unsigned long long)s.largest_free_run,
             (unsigned long long)s.misuse_reports, (unsigned long long)s.failed_allocs,
             (unsigned long long)s.high_water_pages, (unsigned long long)used,
             (unsigned long long)user_free, (unsigned long long)longest,
             (unsigned long long)model_misuse, (unsigned long long)model_failed,
             (unsigned long long)model_high);
}

/* The lowest fitting block: regions in address order. */
static uint64_t model_find(uint64_t count, uint64_t align, uint32_t flags) {
  uint32_t pool = flags & PAGE_ALLOC_USER ? PAGE_POOL_USER : PAGE_POOL_KERNEL;
  for (int i = 0; i < NREG; i++) {
    struct region *r = &regs[i];
    if (r->pool != pool) continue;
    uint64_t first = (r->usable + align - 1) / align * align;
    for (uint64_t s = first; s + count <= r->end; s += align) {
      if ((flags & PAGE_ALLOC_DMA32) && s + count > DMA32_PFN) break;
      uint64_t k = 0;
      while (k < count && r->state[s + k - r->start] == 0) k++;
      if (k == count) return s;
    }
  }
  return 0;
}

static void model_claim(uint64_t pfn, uint64_t count) {
  struct region *r = region_of(pfn);
  r->state[pfn - r->start] = 1;
  r->len[pfn - r->start] = (uint32_t)count;
  r->used += count;
  for (uint64_t k = 1; k < count; k++) r->state[pfn + k - r->start] = -1;
}

static void model_release(uint64_t pfn) {
  struct region *r = region_of(pfn);
  uint32_t n = r->len[pfn - r->start];
  for (uint64_t k = 0; k < n; k++) r->state[pfn + k - r->start] = 0;
  r->used -= n;
}

/* The status page_free/get/put/split should give for a usable page. */
static page_status refusal(uint64_t pfn) {
  int64_t s = *st(pfn);
  return s == 0 ? PAGE_ENOTALLOCATED : s < 0 ? PAGE_ENOTHEAD : PAGE_OK;
}

static uint64_t random_usable_pfn(void) {
  struct region *r = &regs[rnd() % NREG];
  return r->usable + rnd() % (r->end - r->usable);
}

static void step_alloc(void) {
  static const uint64_t counts[] = {1, 1, 1, 2, 3, 4, 5, 7, 8, 16, 33, 64, 65, 100, 250};
  static const uint64_t big_counts[] = {1, 3, 63, 64, 65, 200, 511, 512, 1000, 4095, 4097, 9000, 20000};
  uint64_t count = big ? big_counts[rnd() % (sizeof big_counts / sizeof big_counts[0])]
                       : counts[rnd() % (sizeof counts / sizeof counts[0])];
  uint64_t align = (uint64_t)1 << (rnd() % (big ? 13 : 8));
  if (rnd() % 4) align = 1;
  uint32_t flags = (uint32_t)(rnd() % 16) & ~(uint32_t)PAGE_ALLOC_ASSERT;
  if (big) flags = (flags | PAGE_ALLOC_USER) & ~(uint32_t)PAGE_ALLOC_ZERO;
  uint64_t want = model_find(count, align, flags);
  /* Keep the large region untouched (a few MiB per test): no ZERO there. */
  int in_large = want >= regs[3].start && want < regs[3].end;
  if (in_large) flags &= ~(uint32_t)PAGE_ALLOC_ZERO;
  void *p = page_alloc_aligned(count, align, flags);
  if (want == 0) {
    if (p != NULL)
      fail_msg("alloc(%llu, align %llu, flags %u) returned pa 0x%llx, model: no fit",
               (unsigned long long)count, (unsigned long long)align, flags,
               (unsigned long long)page_to_pa(p));
    model_failed++;
    return;
  }
  if (p == NULL || page_to_pa(p) != want * PAGE)
    fail_msg("alloc(%llu, align %llu, flags %u) returned pa 0x%llx, model 0x%llx",
             (unsigned long long)count, (unsigned long long)align, flags,
             (unsigned long long)(p ? page_to_pa(p) : 0), (unsigned long long)(want * PAGE));
  model_claim(want, count);
  if (flags & PAGE_ALLOC_ZERO) {
    const unsigned char *b = p;
    for (uint64_t i = 0; i < count * PAGE; i += 512)
      if (b[i]) fail_msg("PAGE_ALLOC_ZERO block has byte 0x%02x at %llu", b[i], (unsigned long long)i);
  }
  /* Dirty it for later ZERO checks (not in the large region). */
  if (!in_large) memset(p, 0x5C, count * PAGE);
}

static void step_alloc_at(void) {
  uint64_t pfn = random_usable_pfn();
  uint64_t count = 1 + rnd() % 12;
  struct region *r = region_of(pfn);
  uint32_t flags = (uint32_t)(rnd() % 16) & ~(uint32_t)PAGE_ALLOC_ASSERT;
  if (r == &regs[3]) flags &= ~(uint32_t)PAGE_ALLOC_ZERO;
  if (rnd() % 2) flags = (flags & ~(uint32_t)PAGE_ALLOC_USER) | (r->pool == PAGE_POOL_USER ? PAGE_ALLOC_USER : 0);
  page_status want = PAGE_OK;
  uint32_t pool = flags & PAGE_ALLOC_USER ? PAGE_POOL_USER : PAGE_POOL_KERNEL;
  if (pfn + count > r->end)
    want = PAGE_ENOTMANAGED;
  else if (pool != r->pool || ((flags & PAGE_ALLOC_DMA32) && pfn + count > DMA32_PFN))
    want = PAGE_EINVAL;
  else
    for (uint64_t k = 0; k < count; k++)
      if (r->state[pfn + k - r->start] != 0) want = PAGE_EBUSY;
  misuse_reset();
  page_status got = page_alloc_at(pfn * PAGE, count, flags);
  if (got != want)
    fail_msg("alloc_at(0x%llx, %llu, %u) = %s, model %s", (unsigned long long)(pfn * PAGE),
             (unsigned long long)count, flags, page_status_str(got), page_status_str(want));
  if (want == PAGE_OK)
    model_claim(pfn, count);
  else
    model_misuse++;
}

/* A random allocated head if there is one (found by scanning), else any page. */
static uint64_t pick_target(void) {
  for (int tries = 0; tries < 50; tries++) {
    uint64_t pfn = random_usable_pfn();
    if (*st(pfn) > 0) return pfn;
  }
  return random_usable_pfn();
}

static void step_free_get_put_split(void) {
  uint64_t pfn = rnd() % 8 ? pick_target() : random_usable_pfn();
  void *p = page_from_pa(pfn * PAGE);
  int64_t *s = st(pfn);
  page_status base = refusal(pfn);
  page_status want, got;
  int op = (int)(rnd() % 4);
  switch (op) {
  case 0: /* free */
    want = base == PAGE_OK && *s > 1 ? PAGE_ESHARED : base;
    got = page_free(p);
    if (got == PAGE_OK && want == PAGE_OK) model_release(pfn);
    break;
  case 1: /* get */
    want = base;
    got = page_get(p);
    if (got == PAGE_OK && want == PAGE_OK) (*s)++;
    break;
  case 2: /* put */
    want = base;
    got = page_put(p);
    if (got == PAGE_OK && want == PAGE_OK) {
      if (*s == 1)
        model_release(pfn);
      else
        (*s)--;
    }
    break;
  default: /* split */
    want = base == PAGE_OK && *s > 1 ? PAGE_ESHARED : base;
    got = page_split(p);
    if (got == PAGE_OK && want == PAGE_OK) {
      struct region *r = region_of(pfn);
      uint32_t n = r->len[pfn - r->start];
      for (uint64_t k = 0; k < n; k++) {
        r->state[pfn + k - r->start] = 1;
        r->len[pfn + k - r->start] = 1;
      }
    }
    break;
  }
  if (got != want)
    fail_msg("op %d on pa 0x%llx = %s, model %s", op, (unsigned long long)(pfn * PAGE),
             page_status_str(got), page_status_str(want));
  if (want != PAGE_OK) model_misuse++;
}

static void step_query(void) {
  uint64_t pfn = random_usable_pfn();
  struct region *r = region_of(pfn);
  int64_t s = r->state[pfn - r->start];
  void *p = page_from_pa(pfn * PAGE);
  uint32_t want_rc = s > 0 ? (uint32_t)s : 0;
  size_t want_len = s > 0 ? r->len[pfn - r->start] : 0;
  if (page_refcount(p) != want_rc || page_block_pages(p) != want_len)
    fail_msg("pa 0x%llx: refcount %u block_pages %zu, model %u %zu", (unsigned long long)(pfn * PAGE),
             page_refcount(p), page_block_pages(p), want_rc, want_len);
}

static void release_everything(void) {
  for (int i = 0; i < NREG; i++)
    for (uint64_t p = regs[i].usable; p < regs[i].end; p++) {
      int64_t *s = &regs[i].state[p - regs[i].start];
      while (*s > 0) {
        assert_status(page_put(page_from_pa(p * PAGE)), PAGE_OK);
        if (*s == 1)
          model_release(p);
        else
          (*s)--;
      }
    }
}

static void run(uint64_t steps, int alloc_weight) {
  uint64_t failed0 = model_failed, misuse0 = model_misuse;
  for (uint64_t i = 0; i < steps; i++) {
    int dice = (int)(rnd() % 16);
    if (dice < alloc_weight)
      step_alloc();
    else if (dice < alloc_weight + 2)
      step_alloc_at();
    else if (dice < 14)
      step_free_get_put_split();
    else
      step_query();
    check_counters(i);
    if (i % 512 == 0) assert_healthy();
  }
  assert_healthy();
  print_message("%llu steps: %llu pages in use, %llu allocations failed, %llu refusals\n",
                (unsigned long long)steps, (unsigned long long)used_pages(),
                (unsigned long long)(model_failed - failed0), (unsigned long long)(model_misuse - misuse0));
}

static void random_calls_match_the_model_at_low_occupancy(void **state) {
  (void)state;
  run(6000, 3);
  release_everything();
  check_counters(0);
}

static void random_calls_match_the_model_near_exhaustion(void **state) {
  (void)state;
  run(6000, 8);
  release_everything();
  check_counters(0);
}

static void random_large_blocks_match_the_model_in_a_large_region(void **state) {
  (void)state;
  big = 1;
  run(3000, 6);
  big = 0;
  release_everything();
  check_counters(0);
}

int main(void) {
#define T(f) cmocka_unit_test_teardown(f, tm_teardown_all_free)
  const struct CMUnitTest tests[] = {
      T(random_calls_match_the_model_at_low_occupancy),
      T(random_calls_match_the_model_near_exhaustion),
      T(random_large_blocks_match_the_model_in_a_large_region),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
