/* See testmem.h. */
#include "testmem.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

struct hook_log hooks;

static unsigned char *memory_base;

unsigned char *testmem_map(void) {
  if (memory_base) return memory_base;
  void *p = mmap(NULL, TESTMEM_SIZE, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    perror("testmem: mmap of 4 GiB + 64 MiB (MAP_NORESERVE)");
    abort();
  }
  memory_base = p;
  return memory_base;
}

uint64_t testmem_phys_offset(void) {
  return (uint64_t)(uintptr_t)testmem_map();
}

void *testmem_kva(uint64_t pa) {
  return testmem_map() + pa;
}

/* ---- hooks ---- */

static uint64_t irq_token = 0x1000;
static uint64_t irq_stack[64];

void tm_on_misuse(page_status status, const void *addr) {
  int n = hooks.misuse_calls++;
  if (n < MISUSE_LOG_MAX) {
    hooks.misuse[n].status = status;
    hooks.misuse[n].addr = addr;
    hooks.misuse[n].irq_depth = hooks.irq_depth;
    /* Never under the lock: this must not deadlock. */
    page_stats s;
    hooks.misuse[n].stats_status = page_stats_get(&s);
  }
  if (hooks.misuse_extra) hooks.misuse_extra(status, addr);
}

uint64_t tm_irq_save(void) {
  uint64_t token = ++irq_token;
  if (hooks.irq_depth < 64) irq_stack[hooks.irq_depth] = token;
  hooks.irq_depth++;
  if (hooks.irq_depth > hooks.irq_max_depth) hooks.irq_max_depth = hooks.irq_depth;
  hooks.irq_saves++;
  return token;
}

void tm_irq_restore(uint64_t saved) {
  hooks.irq_restores++;
  if (hooks.irq_depth <= 0) {
    hooks.irq_mismatches++;
    return;
  }
  hooks.irq_depth--;
  if (hooks.irq_depth < 64 && irq_stack[hooks.irq_depth] != saved) hooks.irq_mismatches++;
}

page_config testmem_config(void) {
  page_config cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.phys_offset = testmem_phys_offset();
  cfg.irq_save = tm_irq_save;
  cfg.irq_restore = tm_irq_restore;
  cfg.on_misuse = tm_on_misuse;
  return cfg;
}

void testmem_init(void) {
  /* page_init borrows cfg for the call only. */
  page_config cfg = testmem_config();
  page_status s = page_init(&cfg);
  if (s != PAGE_OK) {
    fprintf(stderr, "testmem: page_init failed: %s\n", page_status_str(s));
    abort();
  }
}

/* RAM at boot holds whatever it held, not zeros: the front of a region,
 * where its metadata will go (about 4.2 bytes a page, 20.2 with
 * PAGE_DEBUG_TRACK; the pattern covers 24 bytes a page and 16 pages more),
 * gets a pattern first, so that a read of metadata kpalloc had not written
 * yet shows. Only for a range that must not overlap a live region: the
 * tests that add one on purpose (PAGE_EOVERLAP) call page_region_add
 * themselves. */
void testmem_scribble_front(uint64_t start, uint64_t end) {
  /* The whole pages only, as page_region_add rounds: a partial page at
   * either end may belong to a neighbour. */
  start = (start + PAGE - 1) & ~(PAGE - 1);
  end &= ~(PAGE - 1);
  if (end <= start) return;
  uint64_t front = start + (end - start) / PAGE * 24 + 16 * PAGE;
  if (front > end) front = end;
  memset(testmem_kva(start), 0xA5, front - start);
}

uint64_t testmem_add_region(uint64_t start, uint64_t end, uint32_t pool) {
  uint64_t metadata_before = stats_now().metadata_pages;
  testmem_scribble_front(start, end);
  assert_status(page_region_add(start, end, pool), PAGE_OK);
  return start + (stats_now().metadata_pages - metadata_before) * PAGE;
}

void misuse_reset(void) {
  hooks.misuse_calls = 0;
  memset(hooks.misuse, 0, sizeof hooks.misuse);
}

/* ---- assertions ---- */

page_stats stats_now(void) {
  page_stats s;
  memset(&s, 0xA5, sizeof s);
  page_status st = page_stats_get(&s);
  if (st != PAGE_OK) {
    print_error("page_stats_get returned %s\n", page_status_str(st));
    _fail(__FILE__, __LINE__);
  }
  return s;
}

void tm_assert_status(uint32_t got, uint32_t want, const char *file, int line) {
  if (got != want) {
    print_error("status %s (%u), expected %s (%u)\n", page_status_str(got), got,
                page_status_str(want), want);
    _fail(file, line);
  }
}

#define FIELD(name) {#name, offsetof(page_stats, name)}
static const struct {
  const char *name;
  size_t offset;
} stats_fields[] = {
    FIELD(total_pages),    FIELD(free_pages),       FIELD(used_pages),
    FIELD(metadata_pages), FIELD(regions),          FIELD(largest_free_run),
    FIELD(high_water_pages), FIELD(failed_allocs),  FIELD(misuse_reports),
    FIELD(metadata_bytes), FIELD(user_free_pages),
};

static uint64_t field(const page_stats *s, size_t offset) {
  uint64_t v;
  memcpy(&v, (const unsigned char *)s + offset, sizeof v);
  return v;
}

void tm_assert_stats_moved(const page_stats *before, uint64_t misuse, uint64_t failed,
                           const char *file, int line) {
  page_stats after = stats_now();
  int bad = 0;
  for (size_t i = 0; i < sizeof stats_fields / sizeof stats_fields[0]; i++) {
    uint64_t want = field(before, stats_fields[i].offset);
    if (stats_fields[i].offset == offsetof(page_stats, misuse_reports)) want += misuse;
    if (stats_fields[i].offset == offsetof(page_stats, failed_allocs)) want += failed;
    uint64_t got = field(&after, stats_fields[i].offset);
    if (got != want) {
      print_error("page_stats.%s is %llu, expected %llu\n", stats_fields[i].name,
                  (unsigned long long)got, (unsigned long long)want);
      bad = 1;
    }
  }
  if (bad) _fail(file, line);
}

void tm_assert_misuse_once(page_status status, const void *addr, const char *file, int line) {
  if (hooks.misuse_calls != 1) {
    print_error("on_misuse called %d times, expected once\n", hooks.misuse_calls);
    _fail(file, line);
  }
  const struct misuse_record *r = &hooks.misuse[0];
  if (r->status != status || r->addr != addr) {
    print_error("on_misuse(%s, %p), expected on_misuse(%s, %p)\n", page_status_str(r->status),
                r->addr, page_status_str(status), addr);
    _fail(file, line);
  }
  if (r->irq_depth != 0 || r->stats_status != PAGE_OK) {
    print_error("on_misuse ran under the lock (irq depth %d, page_stats_get %s)\n",
                r->irq_depth, page_status_str(r->stats_status));
    _fail(file, line);
  }
}

void tm_assert_no_misuse(const char *file, int line) {
  if (hooks.misuse_calls != 0) {
    print_error("on_misuse called %d times (first: %s, %p), expected never\n",
                hooks.misuse_calls, page_status_str(hooks.misuse[0].status), hooks.misuse[0].addr);
    _fail(file, line);
  }
}

int tm_teardown_all_free(void **state) {
  (void)state;
  page_stats s = stats_now();
  if (s.used_pages != 0) {
    print_error("test left %llu pages in use\n", (unsigned long long)s.used_pages);
    _fail(__FILE__, __LINE__);
  }
  assert_healthy();
  if (hooks.irq_depth != 0 || hooks.irq_mismatches != 0) {
    print_error("irq hooks unbalanced: depth %d, mismatches %ld\n", hooks.irq_depth,
                hooks.irq_mismatches);
    _fail(__FILE__, __LINE__);
  }
  return 0;
}

uint32_t *tm_find_changed_word(void *meta, size_t len, void (*change)(void *), void *arg) {
  size_t words = len / sizeof(uint32_t);
  uint32_t *copy = malloc(len);
  if (!copy) return NULL;
  memcpy(copy, meta, len);
  change(arg);
  uint32_t *now = meta;
  uint32_t *found = NULL;
  int changed = 0;
  for (size_t i = 0; i < words; i++) {
    if (now[i] != copy[i]) {
      changed++;
      found = &now[i];
    }
  }
  free(copy);
  return changed == 1 ? found : NULL;
}
