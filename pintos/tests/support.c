#define _POSIX_C_SOURCE 200809L
#include "support.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

struct misuse_log misuse_log;

static unsigned char *memory;
static int panic_fd = 2;

static void on_misuse(page_status status, const void *addr) {
  misuse_log.status = status;
  misuse_log.addr = addr;
  misuse_log.count++;
}

/* Pintos' PANIC: print the message and stop (here: end the process). */
static void on_panic(const char *message) {
  size_t len = strlen(message);
  if (write(panic_fd, message, len) != (ssize_t)len) _exit(PANIC_EXIT + 1);
  _exit(PANIC_EXIT);
}

page_config test_config(size_t size) {
  if (memory == NULL) {
    memory = aligned_alloc(PG, size);
    if (memory == NULL) abort();
  }
  page_config cfg = {0};
  cfg.phys_offset = (uint64_t)(uintptr_t)memory - PHYS_BASE;
  cfg.panic = on_panic;
  cfg.on_misuse = on_misuse;
  return cfg;
}

void *test_kva(uint64_t pa) { return memory + (pa - PHYS_BASE); }

int run_in_child(void (*body)(void), char *message, size_t size) {
  int fds[2];
  if (pipe(fds) != 0) return -1;
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    close(fds[0]);
    panic_fd = fds[1];
    body();
    _exit(0);
  }
  close(fds[1]);
  size_t got = 0;
  ssize_t n;
  while (got + 1 < size && (n = read(fds[0], message + got, size - 1 - got)) > 0) got += (size_t)n;
  message[got] = '\0';
  close(fds[0]);
  int status;
  if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

static page_stats stats(void) {
  page_stats s;
  if (page_stats_get(&s) != PAGE_OK) abort();
  return s;
}

uint64_t kernel_free_pages(void) {
  page_stats s = stats();
  return s.free_pages - s.user_free_pages;
}

uint64_t user_free_pages(void) { return stats().user_free_pages; }
