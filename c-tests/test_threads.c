/* Concurrent use from several threads: allocations never overlap, lock-free
 * get/put keep exact counts, and a last put racing page_get never revives
 * a freed block. Own hooks here: thread-local irq depth, atomic counters.
 * Kernel region [1 MiB, 17 MiB). */
#include "testmem.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <unistd.h>

#define THREADS 4

static _Thread_local int irq_depth;
static atomic_long irq_errors, misuse_calls, misuse_under_lock;

static uint64_t th_irq_save(void) {
  if (irq_depth++ != 0) atomic_fetch_add(&irq_errors, 1);
  return 0xF1A6;
}

static void th_irq_restore(uint64_t saved) {
  if (--irq_depth != 0 || saved != 0xF1A6) atomic_fetch_add(&irq_errors, 1);
}

static void th_on_misuse(page_status status, const void *addr) {
  (void)status;
  (void)addr;
  atomic_fetch_add(&misuse_calls, 1);
  if (irq_depth != 0) atomic_fetch_add(&misuse_under_lock, 1);
}

static int setup(void **state) {
  (void)state;
  page_config cfg = {0};
  cfg.phys_offset = testmem_phys_offset();
  cfg.irq_save = th_irq_save;
  cfg.irq_restore = th_irq_restore;
  cfg.on_misuse = th_on_misuse;
  assert_status(page_init(&cfg), PAGE_OK);
  testmem_add_region(MIB(1), MIB(17), PAGE_POOL_KERNEL);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  page_stats s = stats_now();
  assert_int_equal(s.used_pages, 0);
  assert_healthy();
  assert_int_equal(atomic_load(&irq_errors), 0);
  assert_int_equal(atomic_load(&misuse_under_lock), 0);
  return 0;
}


static void run_threads(void *(*body)(void *)) {
  pthread_t t[THREADS];
  for (long i = 0; i < THREADS; i++) assert_int_equal(pthread_create(&t[i], NULL, body, (void *)i), 0);
  for (int i = 0; i < THREADS; i++) {
    void *result;
    assert_int_equal(pthread_join(t[i], &result), 0);
    if (result != NULL) fail_msg("thread %d: %s", i, (const char *)result);
  }
}

/* Each thread allocates blocks, fills them with its own pattern, checks the
 * pattern is intact (no other thread got those pages), and frees them. */
static void *alloc_fill_check_free(void *arg) {
  long id = (long)arg;
  uint64_t seed = 0x1234567ull * (uint64_t)(id + 1);
  void *held[16] = {0};
  size_t len[16] = {0};
  for (int i = 0; i < 20000; i++) {
    seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
    int slot = (int)(seed % 16);
    if (held[slot]) {
      const unsigned char *b = held[slot];
      for (size_t k = 0; k < len[slot]; k++)
        if (b[k * PAGE] != (unsigned char)(id + 1) || b[k * PAGE + PAGE - 1] != (unsigned char)slot)
          return "a block's contents changed: pages shared with another thread";
      if (page_free(held[slot]) != PAGE_OK) return "page_free of an owned block failed";
      held[slot] = NULL;
    } else {
      size_t n = 1 + (size_t)(seed >> 32) % 8;
      unsigned char *b = page_alloc_aligned(n, (seed >> 40) % 2 ? 1 : 4, 0);
      if (!b) continue; /* exhaustion is allowed */
      if (page_block_pages(b) != n || page_refcount(b) != 1) return "new block has wrong length or count";
      for (size_t k = 0; k < n; k++) {
        b[k * PAGE] = (unsigned char)(id + 1);
        b[k * PAGE + PAGE - 1] = (unsigned char)slot;
      }
      held[slot] = b;
      len[slot] = n;
    }
  }
  for (int slot = 0; slot < 16; slot++)
    if (held[slot] && page_free(held[slot]) != PAGE_OK) return "final page_free failed";
  return NULL;
}

static void threads_allocating_at_once_never_share_pages(void **state) {
  (void)state;
  long misuse0 = atomic_load(&misuse_calls);
  run_threads(alloc_fill_check_free);
  assert_int_equal(atomic_load(&misuse_calls), misuse0);
  page_stats s = stats_now();
  assert_int_equal(s.used_pages, 0);
  assert_int_equal(s.largest_free_run, s.free_pages);
}

static void *shared_block;

static void *get_put_many(void *arg) {
  (void)arg;
  for (int i = 0; i < 100000; i++) {
    if (page_get(shared_block) != PAGE_OK) return "page_get failed";
    if (page_put(shared_block) != PAGE_OK) return "page_put failed";
  }
  for (int i = 0; i < 1000; i++)
    if (page_get(shared_block) != PAGE_OK) return "page_get failed";
  return NULL;
}

static void concurrent_get_and_put_keep_the_count_exact(void **state) {
  (void)state;
  shared_block = page_alloc(3, 0);
  assert_non_null(shared_block);
  run_threads(get_put_many);
  assert_int_equal(page_refcount(shared_block), 1 + THREADS * 1000);
  for (int i = 0; i < THREADS * 1000; i++) assert_status(page_put(shared_block), PAGE_OK);
  assert_int_equal(page_refcount(shared_block), 1);
  assert_status(page_free(shared_block), PAGE_OK);
}

static atomic_long gets_won, gets_refused;
static atomic_int owner_done;
static pthread_barrier_t start_line;

/* A getter: takes and drops references on shared_block. While the owner
 * still holds its own every get succeeds; after the owner's put, a getter's
 * put may be the last one, and any get after that must be refused (never
 * reviving the block). A bounded number of tries after the owner's put,
 * else the getters could keep the count above zero among themselves. */
static void *getter(void *arg) {
  (void)arg;
  void *b = shared_block;
  int extra = 0;
  pthread_barrier_wait(&start_line);
  for (;;) {
    int after = atomic_load(&owner_done);
    page_status s = page_get(b);
    if (s == PAGE_ENOTALLOCATED) {
      atomic_fetch_add(&gets_refused, 1);
      return NULL;
    }
    if (s != PAGE_OK) return "page_get gave neither OK nor ENOTALLOCATED";
    atomic_fetch_add(&gets_won, 1);
    if (page_put(b) != PAGE_OK) return "put after a successful get failed";
    if (after && ++extra >= 20) return NULL;
  }
}

static void last_put_racing_get_never_revives_the_block(void **state) {
  (void)state;
  enum { ROUNDS = 2000, GETTERS = 1 }; /* two threads: two cores in CI */
  for (int round = 0; round < ROUNDS; round++) {
    shared_block = page_alloc(2, 0);
    assert_non_null(shared_block);
    atomic_store(&owner_done, 0);
    assert_int_equal(pthread_barrier_init(&start_line, NULL, GETTERS + 1), 0);
    pthread_t t[GETTERS];
    for (int i = 0; i < GETTERS; i++) assert_int_equal(pthread_create(&t[i], NULL, getter, NULL), 0);
    pthread_barrier_wait(&start_line);
    for (volatile int spin = 0; spin < (round % 50) * 20; spin++) {
    }
    assert_status(page_put(shared_block), PAGE_OK); /* the owner's reference */
    atomic_store(&owner_done, 1);
    for (int i = 0; i < GETTERS; i++) {
      void *r;
      assert_int_equal(pthread_join(t[i], &r), 0);
      if (r) fail_msg("round %d: %s", round, (const char *)r);
    }
    pthread_barrier_destroy(&start_line);
    /* Every reference is gone: the block is free, and stays free. */
    assert_int_equal(page_refcount(shared_block), 0);
    assert_int_equal(page_block_pages(shared_block), 0);
    assert_int_equal(stats_now().used_pages, 0);
  }
  print_message("%ld successful gets and %ld refused ones raced %d last puts\n", atomic_load(&gets_won),
                atomic_load(&gets_refused), ROUNDS);
  assert_healthy();
}

static atomic_int adding_done;

static void *add_regions(void *arg) {
  (void)arg;
  /* 32 regions of 64 pages at 64 MiB + i * 1 MiB, added while others allocate. */
  for (int i = 0; i < 32; i++) {
    uint64_t start = MIB(64) + (uint64_t)i * MIB(1);
    if (page_region_add(start, start + 64 * PAGE, PAGE_POOL_USER) != PAGE_OK) return "page_region_add failed";
    sched_yield();
  }
  atomic_store(&adding_done, 1);
  return NULL;
}

static void *alloc_user_pages_while_regions_arrive(void *arg) {
  (void)arg;
  void *held[64];
  size_t n = 0;
  uint64_t seen_max = 0;
  while (!atomic_load(&adding_done) || n > 0) {
    void *p = atomic_load(&adding_done) ? NULL : page_alloc(1, PAGE_ALLOC_USER | PAGE_ALLOC_ZERO);
    if (p) {
      uint64_t pa = page_to_pa(p);
      if (pa < MIB(64) || pa >= MIB(96) || (pa - MIB(64)) % MIB(1) >= 64 * PAGE)
        return "a user page outside every user region";
      if (page_refcount(p) != 1) return "new page without one reference";
      if (pa > seen_max) seen_max = pa;
      if (n == 64) {
        if (page_free(held[0]) != PAGE_OK) return "page_free failed";
        memmove(held, held + 1, sizeof held[0] * 63);
        n--;
      }
      held[n++] = p;
    } else if (n > 0) {
      if (page_free(held[--n]) != PAGE_OK) return "page_free failed";
    }
  }
  return NULL;
}

static void regions_added_while_other_threads_allocate_are_used_safely(void **state) {
  (void)state;
  page_stats before = stats_now();
  pthread_t adder, users[2];
  assert_int_equal(pthread_create(&adder, NULL, add_regions, NULL), 0);
  for (int i = 0; i < 2; i++)
    assert_int_equal(pthread_create(&users[i], NULL, alloc_user_pages_while_regions_arrive, NULL), 0);
  void *r;
  assert_int_equal(pthread_join(adder, &r), 0);
  if (r) fail_msg("adder: %s", (const char *)r);
  for (int i = 0; i < 2; i++) {
    assert_int_equal(pthread_join(users[i], &r), 0);
    if (r) fail_msg("user thread %d: %s", i, (const char *)r);
  }
  page_stats after = stats_now();
  assert_int_equal(after.regions, before.regions + 32);
  assert_int_equal(after.total_pages, before.total_pages + 32 * 64);
  assert_int_equal(after.user_free_pages, after.free_pages - before.free_pages);
  /* Every one of the new regions is usable now. */
  for (int i = 0; i < 32; i++) {
    uint64_t last = MIB(64) + (uint64_t)i * MIB(1) + 63 * PAGE;
    assert_status(page_alloc_at(last, 1, PAGE_ALLOC_USER), PAGE_OK);
    assert_status(page_free(page_from_pa(last)), PAGE_OK);
  }
}

int main(void) {
  alarm(40);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(threads_allocating_at_once_never_share_pages, teardown),
      cmocka_unit_test_teardown(concurrent_get_and_put_keep_the_count_exact, teardown),
      cmocka_unit_test_teardown(last_put_racing_get_never_revives_the_block, teardown),
      cmocka_unit_test_teardown(regions_added_while_other_threads_allocate_are_used_safely, teardown),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
