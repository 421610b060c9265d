/*
 * The 32-bit demo kernel: the original 80x86 Pintos' memory layout (RAM
 * mapped at PHYS_BASE = 0xc0000000, see boot32.S) and its page allocator
 * API, from the Pintos drop-in (pintos/palloc.c) on
 * kpalloc::kpalloc_kernel_i386. It does what a Pintos kernel does with
 * palloc (palloc_init from the boot loader's memory map, pages for
 * threads and page tables, user pages until the pool runs out) and checks
 * every answer; it ends with "N passed, M failed" and leaves QEMU through
 * isa-debug-exit.
 */
#include "kernel.h"
#include "kpalloc_pintos.h"

#define PHYS_BASE 0xc0000000u
/* What boot32.S maps at PHYS_BASE. */
#define MAPPED_BYTES 0x40000000ull
#define PGSIZE 4096u

struct multiboot_info {
	uint32_t flags, mem_lower, mem_upper, boot_device, cmdline;
	uint32_t mods_count, mods_addr, syms[4];
	uint32_t mmap_length, mmap_addr;
};

struct multiboot_mmap_entry {
	uint32_t size; /* of the rest of the entry */
	uint64_t addr, len;
	uint32_t type; /* 1: available RAM */
} __attribute__((packed));

extern char _kernel_end[];

static const struct multiboot_info *boot_info;
static int passed, failed;
static unsigned misuse_reports;

#define CHECK(cond, ...)                                              \
	do {                                                          \
		if (cond) {                                           \
			passed++;                                     \
		} else {                                              \
			failed++;                                     \
			kprintf("FAIL line %d: ", __LINE__);          \
			kprintf(__VA_ARGS__);                         \
			kprintf("\n");                                \
		}                                                     \
	} while (0)

static void *ptov(uint64_t pa) { return (void *)(uintptr_t)(pa + PHYS_BASE); }
static uint64_t vtop(const void *va) { return (uintptr_t)va - PHYS_BASE; }

static uint64_t irq_save(void)
{
	uint32_t flags;
	__asm__ volatile("pushfl; popl %0; cli" : "=r"(flags) : : "memory");
	return flags;
}

static void irq_restore(uint64_t flags)
{
	__asm__ volatile("pushl %0; popfl" : : "r"((uint32_t)flags) : "memory", "cc");
}

static void panic(const char *message)
{
	kprintf("PANIC: %s\n", message);
	qemu_exit(0);
}

static void on_misuse(page_status status, const void *addr)
{
	misuse_reports++;
	kprintf("misuse reported: %s at %p\n", page_status_str(status), addr);
}

/* What threads/init.c's palloc_init() asks the kernel for (see
 * pintos/README.md): the hooks, and RAM above the kernel image within
 * the mapped 1 GiB, from the boot loader's memory map. */
size_t palloc_platform(page_config *cfg, struct palloc_region *regions, size_t max)
{
	cfg->phys_offset = PHYS_BASE;
	cfg->irq_save = irq_save;
	cfg->irq_restore = irq_restore;
	cfg->panic = panic;
	cfg->on_misuse = on_misuse;
	size_t count = 0;
	uint64_t kernel_end = vtop(_kernel_end);
	const char *entry = ptov(boot_info->mmap_addr);
	const char *end = entry + boot_info->mmap_length;
	while (entry < end && count < max) {
		const struct multiboot_mmap_entry *e = (const void *)entry;
		uint64_t start = e->addr > kernel_end ? e->addr : kernel_end;
		uint64_t stop = e->addr + e->len < MAPPED_BYTES ? e->addr + e->len : MAPPED_BYTES;
		if (e->type == 1 && stop > start) {
			/* RAM holds whatever was there before, but QEMU's starts
			 * zeroed: a pattern over all of it, so that a read of
			 * metadata kpalloc had not written would show. */
			memset(ptov(start), 0xa5, stop - start);
			regions[count].start = start;
			regions[count].end = stop;
			count++;
		}
		entry += e->size + sizeof e->size;
	}
	return count;
}

/* Takes every page of a pool, one by one, chaining them through their
 * first word (each page also holds its own address in its last word), and
 * returns the chain; *count is how many. */
static void **take_all(enum palloc_flags flags, size_t *count)
{
	void **chain = NULL;
	*count = 0;
	for (void **page; (page = palloc_get_page(flags)) != NULL; chain = page, ++*count) {
		page[0] = chain;
		page[PGSIZE / sizeof(void *) - 1] = page;
	}
	return chain;
}

/* Checks every page of a chain still holds its marks, frees it; returns
 * how many were intact. */
static size_t give_back(void **chain)
{
	size_t intact = 0;
	while (chain != NULL) {
		void **next = chain[0];
		intact += chain[PGSIZE / sizeof(void *) - 1] == chain;
		palloc_free_page(chain);
		chain = next;
	}
	return intact;
}

static void pools_fill_and_empty(void)
{
	const struct palloc_layout *layout = palloc_get_layout();
	struct page_stats before;
	page_stats_get(&before);
	for (int round = 0; round < 2; round++) {
		size_t user, kernel;
		void **user_pages = take_all(PAL_USER, &user);
		void **kernel_pages = take_all(PAL_ZERO, &kernel);
		CHECK(user == before.user_free_pages, "round %d: %zu user pages of %llu free", round, user,
		      (unsigned long long)before.user_free_pages);
		CHECK(user + kernel == before.free_pages, "round %d: %zu + %zu pages of %llu free", round,
		      user, kernel, (unsigned long long)before.free_pages);
		CHECK(palloc_get_page(0) == NULL && palloc_get_page(PAL_USER) == NULL,
		      "round %d: both pools exhausted", round);
		CHECK(give_back(user_pages) == user && give_back(kernel_pages) == kernel,
		      "round %d: every page kept its marks", round);
	}
	CHECK(layout->user_pages > 0 && layout->kernel_pages > 0, "both pools have pages: %zu user, %zu kernel",
	      layout->user_pages, layout->kernel_pages);
}

static void blocks_and_misuse(void)
{
	unsigned char *block = palloc_get_multiple(PAL_ZERO, 8);
	CHECK(block != NULL, "8 zeroed pages");
	size_t nonzero = 0;
	for (size_t i = 0; block && i < 8 * PGSIZE; i++)
		nonzero += block[i] != 0;
	CHECK(nonzero == 0, "%zu non-zero bytes in a PAL_ZERO block", nonzero);
	CHECK(page_block_pages(block) == 8, "the block is 8 pages long");

	unsigned reports = misuse_reports;
	palloc_free_multiple(block, 7); /* wrong length: refused, block kept */
	CHECK(misuse_reports == reports + 1 && page_block_pages(block) == 8,
	      "a free with the wrong page count is reported and changes nothing");
	palloc_free_page(block + PGSIZE); /* an interior page */
	CHECK(misuse_reports == reports + 2 && page_refcount(block) == 1, "a free of an interior page is refused");
	palloc_free_multiple(block, 8);
	palloc_free_page(block); /* again */
	CHECK(misuse_reports == reports + 3, "a double free is reported");
	CHECK(palloc_get_multiple(0, 0) == NULL, "palloc_get_multiple(0) is NULL");

	void *aligned = page_alloc_aligned(4, 4, 0);
	CHECK(aligned != NULL && vtop(aligned) % (4 * PGSIZE) == 0,
	      "4 pages aligned to 16 KiB physically: %p", aligned);
	CHECK(page_get(aligned) == PAGE_OK && page_refcount(aligned) == 2, "a second reference");
	CHECK(page_put(aligned) == PAGE_OK && page_put(aligned) == PAGE_OK && page_refcount(aligned) == 0,
	      "the last put frees the block");
}

static void memory_beyond_the_direct_map(void)
{
	/* A 32-bit kernel has no kernel virtual address for RAM past its direct
	 * map: kpalloc refuses it rather than write metadata anywhere. */
	uint64_t top = 0x100000000ull - PHYS_BASE; /* kva 4 GiB */
	unsigned reports = misuse_reports;
	CHECK(page_region_add(top, top + 0x100000, PAGE_POOL_USER) == PAGE_EINVAL, "RAM from kva 4 GiB");
	CHECK(page_region_add(top - 0x100000, top + 0x100000, PAGE_POOL_USER) == PAGE_EINVAL,
	      "RAM straddling kva 4 GiB");
	CHECK(misuse_reports == reports + 2, "both reported");
}

void pintos_main(uint32_t magic, uint32_t info_pa)
{
	serial_init();
	kprintf("kpalloc 32-bit demo kernel (original Pintos layout, PHYS_BASE %p)\n", ptov(0));
	CHECK(magic == 0x2BADB002, "multiboot magic %x", magic);
	boot_info = ptov(info_pa);
	CHECK(boot_info->flags & (1u << 6), "a memory map from the boot loader");

	palloc_init(SIZE_MAX);
	const struct palloc_layout *layout = palloc_get_layout();
	kprintf("palloc_init: %zu kernel pages, %zu user pages, memory up to %llu MiB\n", layout->kernel_pages,
		layout->user_pages, (unsigned long long)(layout->mem_end >> 20));

	pools_fill_and_empty();
	blocks_and_misuse();
	memory_beyond_the_direct_map();

	struct page_stats stats;
	page_stats_get(&stats);
	CHECK(stats.used_pages == 0, "%llu pages still used", (unsigned long long)stats.used_pages);
	CHECK(page_check() == PAGE_OK, "page_check");
	kprintf("%d passed, %d failed\n", passed, failed);
	qemu_exit(failed == 0);
}
