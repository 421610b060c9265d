/* Shared by the Pintos tests: a page-aligned buffer standing for physical
 * memory from PHYS_BASE (1 MiB), the kernel hooks, and forked children. */
#ifndef PINTOS_TESTS_SUPPORT_H
#define PINTOS_TESTS_SUPPORT_H

#include <stddef.h>
#include <stdint.h>

#include "kpalloc_pintos.h"

#define PHYS_BASE 0x100000ull
#define MIB (1ull << 20)
#define PG KPALLOC_PAGE_SIZE

/* The exit status of a child that reached the panic hook. */
#define PANIC_EXIT 42

/* The last misuse reported through on_misuse, and how many there were. */
struct misuse_log {
  page_status status;
  const void *addr;
  unsigned count;
};
extern struct misuse_log misuse_log;

/* Makes `size` bytes of "physical memory" at PHYS_BASE (once) and returns
 * the config a Pintos kernel would pass: phys_offset, panic, on_misuse. */
page_config test_config(size_t size);

/* The kernel virtual address of physical address `pa`. */
void *test_kva(uint64_t pa);

/* Runs `body` in a forked child. Returns the child's exit status (-1 if it
 * did not exit); the text given to the panic hook goes into `message`. */
int run_in_child(void (*body)(void), char *message, size_t size);

/* Page counts of every pool, for comparisons. */
uint64_t kernel_free_pages(void);
uint64_t user_free_pages(void);

#endif
