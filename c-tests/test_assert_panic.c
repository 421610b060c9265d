/* PAGE_ALLOC_ASSERT: a failed allocation calls the panic hook (outside the
 * lock) with a message naming count, flags and free pages, and never
 * returns; with no panic hook the process dies. Every case runs in a forked
 * child with its own page_init; the parent never initialises kpalloc. The
 * child's panic hook writes the message to a pipe and _exit(42)s. */
#include "testmem.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define PANIC_EXIT 42

static int pipe_out = -1;

static void panic_to_pipe(const char *message) {
  char buf[512];
  page_stats s;
  page_status st = page_stats_get(&s); /* would deadlock under the lock */
  int n = snprintf(buf, sizeof buf, "%s|depth=%d|stats=%s|misuse=%d|failed=%llu\n", message,
                   hooks.irq_depth, page_status_str(st), hooks.misuse_calls,
                   (unsigned long long)(st == PAGE_OK ? s.failed_allocs : 999));
  if (write(pipe_out, buf, (size_t)n) != n) _exit(2);
  _exit(PANIC_EXIT);
}

/* A panic hook that breaks its contract and returns. */
static void panic_that_returns(const char *message) {
  dprintf(pipe_out, "returning from panic: %s\n", message);
}

#define CHILD_CHECK(cond)                                                     \
  do {                                                                        \
    if (!(cond)) {                                                            \
      dprintf(pipe_out, "child check failed at line %d: %s\n", __LINE__, #cond); \
      _exit(3);                                                               \
    }                                                                         \
  } while (0)

/* testmem_add_region for a child, which reports through the pipe, not
 * cmocka. */
#define CHILD_ADD_REGION(start, end)                                           \
  do {                                                                         \
    testmem_scribble_front((start), (end));                                    \
    CHILD_CHECK(page_region_add((start), (end), PAGE_POOL_KERNEL) == PAGE_OK); \
  } while (0)

struct child {
  int status;     /* from waitpid */
  char out[1024]; /* what the child wrote to the pipe */
};

static struct child run_child_with(void (*body)(void), void (*panic)(const char *));

/* Runs body() in a child with a fresh allocator: page_init with testmem's
 * config, plus panic_to_pipe if `panic_hook`. Exits 0 if body returns. */
static struct child run_child(void (*body)(void), int panic_hook) {
  return run_child_with(body, panic_hook ? panic_to_pipe : NULL);
}

static struct child run_child_with(void (*body)(void), void (*panic)(const char *)) {
  struct child result;
  memset(&result, 0, sizeof result);
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    pipe_out = fds[1];
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core); /* the no-hook case dies by a signal */
    /* cmocka catches crash signals to report a failing test; in the child
     * the default action must apply, so that a halt kills it. */
    static const int crash[] = {SIGILL, SIGSEGV, SIGBUS, SIGFPE, SIGABRT, SIGTRAP};
    for (size_t i = 0; i < sizeof crash / sizeof crash[0]; i++) signal(crash[i], SIG_DFL);
    page_config cfg = testmem_config();
    cfg.panic = panic;
    CHILD_CHECK(page_init(&cfg) == PAGE_OK);
    body();
    _exit(0);
  }
  close(fds[1]);
  size_t used = 0;
  for (;;) {
    ssize_t n = read(fds[0], result.out + used, sizeof result.out - 1 - used);
    if (n <= 0) break;
    used += (size_t)n;
  }
  close(fds[0]);
  assert_int_equal(waitpid(pid, &result.status, 0), pid);
  return result;
}

struct panic_message {
  unsigned long long count, flags, free_pages, failed;
  int depth, misuse;
  char stats[32];
};

/* Parses what panic_to_pipe wrote; fails the test if it is not there. */
static struct panic_message parse(const struct child *c) {
  struct panic_message m;
  memset(&m, 0, sizeof m);
  if (!WIFEXITED(c->status) || WEXITSTATUS(c->status) != PANIC_EXIT)
    fail_msg("child did not panic through the hook: status 0x%x, output: %s", c->status, c->out);
  if (sscanf(c->out,
             "kpalloc: allocation failed: count=%llu flags=0x%llx free_pages=%llu|depth=%d|stats=%31[^|]|misuse=%d|failed=%llu",
             &m.count, &m.flags, &m.free_pages, &m.depth, m.stats, &m.misuse, &m.failed) != 7)
    fail_msg("unexpected panic message: %s", c->out);
  return m;
}

static uint64_t free_pages_now(void) {
  page_stats s;
  CHILD_CHECK(page_stats_get(&s) == PAGE_OK);
  return s.free_pages;
}

/* ---- children ---- */

static void assert_alloc_that_succeeds(void) {
  CHILD_ADD_REGION(MIB(1), MIB(17));
  void *p = page_alloc(8, PAGE_ALLOC_ASSERT | PAGE_ALLOC_ZERO);
  CHILD_CHECK(p != NULL);
  CHILD_CHECK(page_block_pages(p) == 8);
  CHILD_CHECK(page_alloc_at(MIB(8), 1, PAGE_ALLOC_ASSERT) == PAGE_OK);
  CHILD_CHECK(page_free(p) == PAGE_OK);
  CHILD_CHECK(page_check() == PAGE_OK);
}

static void assert_alloc_out_of_memory(void) {
  CHILD_ADD_REGION(MIB(1), MIB(17));
  void *hold = page_alloc(100, 0);
  CHILD_CHECK(hold != NULL);
  dprintf(pipe_out, "%llu\n", (unsigned long long)free_pages_now());
  (void)page_alloc(5000, PAGE_ALLOC_ASSERT | PAGE_ALLOC_ZERO);
  CHILD_CHECK(!"page_alloc returned after a failed PAGE_ALLOC_ASSERT allocation");
}

static void assert_dma32_with_memory_only_above_4_gib(void) {
  CHILD_ADD_REGION(GIB(4) + MIB(1), GIB(4) + MIB(2));
  (void)page_alloc_aligned(1, 1, PAGE_ALLOC_DMA32 | PAGE_ALLOC_ASSERT);
  CHILD_CHECK(!"returned");
}

static void assert_with_zero_count(void) {
  CHILD_ADD_REGION(MIB(1), MIB(17));
  (void)page_alloc(0, PAGE_ALLOC_ASSERT);
  CHILD_CHECK(!"returned");
}

static void assert_with_unknown_flags(void) {
  CHILD_ADD_REGION(MIB(1), MIB(17));
  (void)page_alloc(1, PAGE_ALLOC_ASSERT | 0x40);
  CHILD_CHECK(!"returned");
}

static void assert_alloc_at_busy_pages(void) {
  CHILD_ADD_REGION(MIB(1), MIB(17));
  CHILD_CHECK(page_alloc_at(MIB(4), 2, 0) == PAGE_OK);
  (void)page_alloc_at(MIB(4) + PAGE, 3, PAGE_ALLOC_ASSERT);
  CHILD_CHECK(!"returned");
}

static void alloc_out_of_memory_without_assert(void) {
  CHILD_ADD_REGION(MIB(1), MIB(2));
  CHILD_CHECK(page_alloc(1000, PAGE_ALLOC_ZERO) == NULL);
  CHILD_CHECK(page_alloc(0, 0) == NULL);
  CHILD_CHECK(page_alloc_at(MIB(1), 1, 0) == PAGE_ENOTMANAGED);
}

/* ---- cases ---- */

static void assert_allocation_that_succeeds_returns_without_panicking(void **state) {
  (void)state;
  struct child c = run_child(assert_alloc_that_succeeds, 1);
  if (!WIFEXITED(c.status) || WEXITSTATUS(c.status) != 0) fail_msg("child: 0x%x %s", c.status, c.out);
  assert_string_equal(c.out, "");
}

static void failed_allocation_without_assert_returns_null_and_never_panics(void **state) {
  (void)state;
  struct child c = run_child(alloc_out_of_memory_without_assert, 1);
  if (!WIFEXITED(c.status) || WEXITSTATUS(c.status) != 0) fail_msg("child: 0x%x %s", c.status, c.out);
  assert_string_equal(c.out, "");
}

static void failed_assert_allocation_panics_naming_count_flags_and_free_pages(void **state) {
  (void)state;
  struct child c = run_child(assert_alloc_out_of_memory, 1);
  /* First line: the child's free pages before the call. */
  char *message = strchr(c.out, '\n');
  assert_non_null(message);
  unsigned long long free_before = strtoull(c.out, NULL, 10);
  struct child rest = c;
  memmove(rest.out, message + 1, strlen(message + 1) + 1);
  struct panic_message m = parse(&rest);
  assert_int_equal(m.count, 5000);
  assert_int_equal(m.flags, PAGE_ALLOC_ASSERT | PAGE_ALLOC_ZERO);
  assert_int_equal(m.free_pages, free_before);
  assert_true(free_before > 0 && free_before < 5000);
  /* Exhaustion is counted, not reported as misuse. */
  assert_int_equal(m.failed, 1);
  assert_int_equal(m.misuse, 0);
}

static void panic_hook_runs_outside_the_lock(void **state) {
  (void)state;
  struct child c = run_child(assert_dma32_with_memory_only_above_4_gib, 1);
  struct panic_message m = parse(&c);
  assert_int_equal(m.depth, 0);
  assert_string_equal(m.stats, "PAGE_OK");
  assert_int_equal(m.count, 1);
  assert_int_equal(m.flags, PAGE_ALLOC_DMA32 | PAGE_ALLOC_ASSERT);
  assert_int_equal(m.free_pages, MIB(1) / PAGE - 1);
}

static void assert_with_zero_count_reports_einval_then_panics(void **state) {
  (void)state;
  struct child c = run_child(assert_with_zero_count, 1);
  struct panic_message m = parse(&c);
  assert_int_equal(m.count, 0);
  assert_int_equal(m.flags, PAGE_ALLOC_ASSERT);
  assert_int_equal(m.misuse, 1); /* on_misuse(EINVAL) first */
  assert_int_equal(m.failed, 0);
  assert_int_equal(m.depth, 0);
}

static void assert_with_unknown_flags_panics_naming_those_flags(void **state) {
  (void)state;
  struct child c = run_child(assert_with_unknown_flags, 1);
  struct panic_message m = parse(&c);
  assert_int_equal(m.count, 1);
  assert_int_equal(m.flags, PAGE_ALLOC_ASSERT | 0x40);
  assert_int_equal(m.misuse, 1);
}

static void assert_alloc_at_on_busy_pages_panics(void **state) {
  (void)state;
  struct child c = run_child(assert_alloc_at_busy_pages, 1);
  struct panic_message m = parse(&c);
  assert_int_equal(m.count, 3);
  assert_int_equal(m.flags, PAGE_ALLOC_ASSERT);
  assert_int_equal(m.misuse, 1); /* on_misuse(EBUSY) first */
  assert_int_equal(m.depth, 0);
}

static void failed_assert_allocation_without_panic_hook_kills_the_process(void **state) {
  (void)state;
  struct child c = run_child(assert_alloc_out_of_memory, 0);
  if (!WIFSIGNALED(c.status))
    fail_msg("child exited normally (status 0x%x) instead of dying: %s", c.status, c.out);
  /* The host build without std halts with an invalid instruction. */
  print_message("child killed by signal %d (%s)\n", WTERMSIG(c.status), strsignal(WTERMSIG(c.status)));
  /* Only the child's first line (its free pages); no panic message. */
  assert_null(strstr(c.out, "allocation failed"));
}

static void null_panic_hook_with_unknown_flags_also_kills_the_process(void **state) {
  (void)state;
  struct child c = run_child(assert_with_unknown_flags, 0);
  if (!WIFSIGNALED(c.status)) fail_msg("child exited normally (status 0x%x): %s", c.status, c.out);
}

static void panic_hook_that_returns_still_stops_the_process(void **state) {
  (void)state;
  struct child c = run_child_with(assert_with_zero_count, panic_that_returns);
  /* The hook ran (once), then kpalloc stopped the process itself. */
  assert_non_null(strstr(c.out, "returning from panic: kpalloc: allocation failed: count=0"));
  assert_null(strstr(c.out, "child check failed"));
  if (!WIFSIGNALED(c.status)) fail_msg("child exited normally (status 0x%x): %s", c.status, c.out);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(assert_allocation_that_succeeds_returns_without_panicking),
      cmocka_unit_test(failed_allocation_without_assert_returns_null_and_never_panics),
      cmocka_unit_test(failed_assert_allocation_panics_naming_count_flags_and_free_pages),
      cmocka_unit_test(panic_hook_runs_outside_the_lock),
      cmocka_unit_test(assert_with_zero_count_reports_einval_then_panics),
      cmocka_unit_test(assert_with_unknown_flags_panics_naming_those_flags),
      cmocka_unit_test(assert_alloc_at_on_busy_pages_panics),
      cmocka_unit_test(failed_assert_allocation_without_panic_hook_kills_the_process),
      cmocka_unit_test(null_panic_hook_with_unknown_flags_also_kills_the_process),
      cmocka_unit_test(panic_hook_that_returns_still_stops_the_process),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
