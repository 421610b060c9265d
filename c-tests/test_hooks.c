/* The page_config hooks: irq_save/irq_restore around every lock hold,
 * balanced and never nested; on_misuse once per refused call, never under
 * the lock (it may call kpalloc, even make refused calls itself). A
 * deadlock would hang: alarm() turns that into a failure. Kernel region
 * [1 MiB, 17 MiB). */
#include "testmem.h"

#include <unistd.h>

static int setup(void **state) {
  (void)state;
  testmem_init();
  testmem_add_region(MIB(1), MIB(17), PAGE_POOL_KERNEL);
  return 0;
}

static int teardown(void **state) {
  hooks.misuse_extra = NULL;
  return tm_teardown_all_free(state);
}

struct irq_count {
  long saves, restores;
};

static struct irq_count irq_now(void) { return (struct irq_count){hooks.irq_saves, hooks.irq_restores}; }

/* The calls since `before` masked interrupts at least once, and restored
 * them exactly as often, with what irq_save returned, never nested. */
static void assert_irq_used(struct irq_count before) {
  long saves = hooks.irq_saves - before.saves;
  long restores = hooks.irq_restores - before.restores;
  assert_true(saves >= 1);
  assert_int_equal(saves, restores);
  assert_int_equal(hooks.irq_depth, 0);
  assert_int_equal(hooks.irq_mismatches, 0);
  assert_int_equal(hooks.irq_max_depth, 1);
}

static void assert_irq_untouched(struct irq_count before) {
  assert_int_equal(hooks.irq_saves, before.saves);
  assert_int_equal(hooks.irq_restores, before.restores);
}

static void every_locking_call_saves_and_restores_interrupts_once_balanced(void **state) {
  (void)state;
  struct irq_count c = irq_now();
  void *p = page_alloc(4, PAGE_ALLOC_ZERO);
  assert_non_null(p);
  assert_irq_used(c);
  c = irq_now();
  void *q = page_alloc_aligned(2, 8, 0);
  assert_irq_used(c);
  c = irq_now();
  assert_status(page_alloc_at(MIB(10), 1, 0), PAGE_OK);
  assert_irq_used(c);
  c = irq_now();
  assert_status(page_split(q), PAGE_OK);
  assert_irq_used(c);
  c = irq_now();
  assert_status(page_free(p), PAGE_OK);
  assert_irq_used(c);
  c = irq_now();
  assert_status(page_put(page_from_pa(MIB(10))), PAGE_OK); /* the last reference */
  assert_irq_used(c);
  c = irq_now();
  (void)stats_now();
  assert_irq_used(c);
  c = irq_now();
  assert_healthy();
  assert_irq_used(c);
  c = irq_now();
  testmem_add_region(MIB(40), MIB(41), PAGE_POOL_KERNEL);
  assert_irq_used(c);
  c = irq_now();
  assert_null(page_alloc(SIZE_MAX / 4, 0)); /* ENOMEM: still under the lock */
  assert_irq_used(c);
  assert_status(page_free(q), PAGE_OK);
  assert_status(page_free(page_n(q, 1)), PAGE_OK);
}

static void lock_free_calls_never_touch_interrupts(void **state) {
  (void)state;
  void *p = page_alloc(2, 0);
  assert_non_null(p);
  struct irq_count c = irq_now();
  assert_status(page_get(p), PAGE_OK);
  assert_status(page_get(p), PAGE_OK);
  assert_status(page_put(p), PAGE_OK); /* not the last */
  assert_status(page_put(p), PAGE_OK);
  assert_int_equal(page_refcount(p), 1);
  assert_int_equal(page_block_pages(p), 2);
  assert_int_equal(page_to_pa(p), page_to_pa(p));
  assert_non_null(page_from_pa(MIB(2)));
  assert_non_null(page_status_str(PAGE_OK));
  assert_irq_untouched(c);
  assert_status(page_free(p), PAGE_OK);
}

static void refused_calls_keep_interrupt_hooks_balanced(void **state) {
  (void)state;
  void *p = page_alloc(2, 0);
  assert_non_null(p);
  assert_status(page_get(p), PAGE_OK);
  struct irq_count c = irq_now();
  assert_status(page_free(p), PAGE_ESHARED);
  assert_status(page_split(p), PAGE_ESHARED);
  assert_status(page_alloc_at(page_to_pa(p), 1, 0), PAGE_EBUSY);
  assert_status(page_region_add(MIB(2), MIB(3), PAGE_POOL_KERNEL), PAGE_EOVERLAP);
  assert_null(page_alloc(0, 0));
  assert_int_equal(hooks.irq_depth, 0);
  assert_int_equal(hooks.irq_mismatches, 0);
  assert_int_equal(hooks.irq_saves - c.saves, hooks.irq_restores - c.restores);
  assert_int_equal(hooks.irq_max_depth, 1);
  assert_status(page_put(p), PAGE_OK);
  assert_status(page_free(p), PAGE_OK);
}

static int extra_calls;
static page_status extra_free_status;
static void *extra_block;

static void alloc_and_free_inside_the_hook(page_status status, const void *addr) {
  (void)status;
  (void)addr;
  extra_calls++;
  extra_block = page_alloc(1, PAGE_ALLOC_ZERO);
  extra_free_status = extra_block ? page_free(extra_block) : PAGE_ENOMEM;
}

static void on_misuse_runs_outside_the_lock_and_may_allocate_and_free(void **state) {
  (void)state;
  void *p = page_alloc(3, 0);
  assert_non_null(p);
  assert_status(page_get(p), PAGE_OK);
  misuse_reset();
  hooks.misuse_extra = alloc_and_free_inside_the_hook;
  /* One refused call of every kind that takes the lock somewhere. */
  page_config again = testmem_config();
  struct {
    page_status got, want;
    const void *addr;
  } calls[10];
  size_t n = 0;
  /* Made one statement at a time: initialisers are not sequenced. */
#define CALL(expr, status, address) \
  calls[n].got = (expr);            \
  calls[n].want = (status);         \
  calls[n].addr = (address);        \
  n++
  CALL(page_free(p), PAGE_ESHARED, p);
  CALL(page_split(p), PAGE_ESHARED, p);
  CALL(page_free(page_n(p, 1)), PAGE_ENOTHEAD, page_n(p, 1));
  CALL(page_free(page_n(p, 3)), PAGE_ENOTALLOCATED, page_n(p, 3));
  CALL(page_alloc_at(page_to_pa(p), 1, 0), PAGE_EBUSY, p);
  CALL(page_region_add(MIB(2), MIB(3), PAGE_POOL_KERNEL), PAGE_EOVERLAP, (const void *)(uintptr_t)MIB(2));
  CALL(page_region_add(MIB(50), MIB(50) + PAGE, PAGE_POOL_KERNEL), PAGE_ETOOSMALL,
       (const void *)(uintptr_t)MIB(50));
  CALL(page_stats_get(NULL), PAGE_EINVAL, NULL);
  CALL(page_init(&again), PAGE_EBUSY, &again);
  CALL(page_get(page_n(p, 3)), PAGE_ENOTALLOCATED, page_n(p, 3));
#undef CALL
  assert_int_equal(hooks.misuse_calls, (int)n);
  assert_int_equal(extra_calls, (int)n);
  for (size_t i = 0; i < n; i++) {
    assert_status(calls[i].got, calls[i].want);
    assert_status(hooks.misuse[i].status, calls[i].want);
    assert_ptr_equal(hooks.misuse[i].addr, calls[i].addr);
    assert_int_equal(hooks.misuse[i].irq_depth, 0);
    assert_status(hooks.misuse[i].stats_status, PAGE_OK);
  }
  assert_non_null(extra_block);
  assert_status(extra_free_status, PAGE_OK);
  hooks.misuse_extra = NULL;
  misuse_reset();
  assert_status(page_put(p), PAGE_OK);
  assert_status(page_free(p), PAGE_OK);
}

static int nested_depth;

static void misuse_again_inside_the_hook(page_status status, const void *addr) {
  (void)status;
  (void)addr;
  if (nested_depth++ == 0) (void)page_free(NULL);
}

static void on_misuse_may_itself_make_a_refused_call(void **state) {
  (void)state;
  hooks.misuse_extra = misuse_again_inside_the_hook;
  nested_depth = 0;
  page_stats before = stats_now();
  misuse_reset();
  assert_status(page_free(page_from_pa(MIB(3))), PAGE_ENOTALLOCATED);
  hooks.misuse_extra = NULL;
  /* Two reports: the call's, then the hook's own page_free(NULL). */
  assert_int_equal(hooks.misuse_calls, 2);
  assert_status(hooks.misuse[0].status, PAGE_ENOTALLOCATED);
  assert_ptr_equal(hooks.misuse[0].addr, page_from_pa(MIB(3)));
  assert_status(hooks.misuse[1].status, PAGE_ENOTMANAGED);
  assert_null(hooks.misuse[1].addr);
  assert_stats_moved(&before, 2, 0);
  assert_healthy();
}

static void exhaustion_is_not_reported_through_on_misuse(void **state) {
  (void)state;
  misuse_reset();
  assert_null(page_alloc(MIB(32) / PAGE, 0));
  assert_null(page_alloc_aligned(1, (size_t)1 << 30, PAGE_ALLOC_DMA32));
  assert_null(page_alloc(1, PAGE_ALLOC_USER));
  assert_no_misuse();
}

int main(void) {
  alarm(20); /* a deadlock in a hook fails the program instead of hanging it */
#define T(f) cmocka_unit_test_teardown(f, teardown)
  const struct CMUnitTest tests[] = {
      T(every_locking_call_saves_and_restores_interrupts_once_balanced),
      T(lock_free_calls_never_touch_interrupts),
      T(refused_calls_keep_interrupt_hooks_balanced),
      T(on_misuse_runs_outside_the_lock_and_may_allocate_and_free),
      T(on_misuse_may_itself_make_a_refused_call),
      T(exhaustion_is_not_reported_through_on_misuse),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
