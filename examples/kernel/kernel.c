/*
 * kpalloc demo kernel: boots from Multiboot1 (boot.S), hands the memory
 * map to kpalloc and exercises it in ring 0 with interrupts, printing
 * everything on COM1; exits QEMU through isa-debug-exit.
 *
 * Built twice from the same source:
 *   KBASE 0xffffffff80000000, -mcmodel=kernel, kpalloc::kpalloc_kernel;
 *     physical memory directly mapped at PHYS_OFFSET 0xffff800000000000
 *   KBASE 0x8004000000 (KAIST Pintos), -mcmodel=large,
 *     kpalloc::kpalloc_kernel_large; direct map = kernel map at KBASE
 */
#include "kernel.h"
#include "kpalloc.h"

#define PAGE 4096ul
#define MIB (1ul << 20)
#define GIB (1ul << 30)
#define FOUR_GIB (4ul << 30)

#ifndef PHYS_OFFSET
#define PHYS_OFFSET KBASE
#endif

extern char _kernel_start[], _kernel_end[], boot_stack_bottom[], boot_stack_top[];
extern const uint64_t isr_table[48];

static uint64_t v2p_image(const void *va) { return (uint64_t)va - KBASE; }
static void *p2v(uint64_t pa) { return (void *)(pa + PHYS_OFFSET); }
static uint64_t v2p(const void *va) { return (uint64_t)va - PHYS_OFFSET; }

static uint64_t rdtsc(void)
{
	uint32_t lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return (uint64_t)hi << 32 | lo;
}

static void write_cr3(uint64_t pa) { __asm__ volatile("mov %0, %%cr3" : : "r"(pa) : "memory"); }
static uint64_t read_cr3(void)
{
	uint64_t v;
	__asm__ volatile("mov %%cr3, %0" : "=r"(v));
	return v;
}

/* ---- tests bookkeeping ---------------------------------------------- */

static unsigned passed, failed;
static int current_ok;

/* Failed checks after which the run stops: a test looping over state that
 * a bug corrupted (a block list made circular by a page handed out twice)
 * then ends with its result line, not in QEMU's timeout. */
#define MAX_FAILED_CHECKS 100
static unsigned failed_checks;

static void check_failed(void)
{
	current_ok = 0;
	if (++failed_checks == MAX_FAILED_CHECKS) {
		kprintf("%u failed checks: stopping\n%u passed, %u failed\n", failed_checks, passed, failed + 1);
		qemu_exit(0);
	}
}

#define CHECK(cond, ...)                                                        \
	do {                                                                    \
		if (!(cond)) {                                                  \
			kprintf("  FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
			kprintf(__VA_ARGS__);                                   \
			kprintf("\n");                                          \
			check_failed();                                         \
		}                                                               \
	} while (0)

static void begin(const char *name)
{
	kprintf("test %s\n", name);
	current_ok = 1;
}

static void end(const char *name)
{
	page_status st = page_check();
	if (st != PAGE_OK) {
		kprintf("  FAIL page_check after %s: %s\n", name, page_status_str(st));
		current_ok = 0;
	}
	if (current_ok)
		passed++;
	else
		failed++;
	kprintf("%s %s\n", current_ok ? "ok" : "FAILED", name);
}

/* ---- kpalloc hooks --------------------------------------------------- */

static uint64_t irq_save(void)
{
	uint64_t flags;
	__asm__ volatile("pushfq; popq %0; cli" : "=r"(flags) : : "memory");
	return flags;
}

static void irq_restore(uint64_t flags)
{
	__asm__ volatile("pushq %0; popfq" : : "r"(flags) : "memory", "cc");
}

static void kpanic(const char *message)
{
	kprintf("PANIC: %s\n%u passed, %u failed\n", message, passed, failed + 1);
	qemu_exit(0);
}

/* The number of the CPU this runs on: it picks kpalloc's per-CPU cache of
 * single pages. This kernel runs on one CPU, 0. An SMP kernel reads its
 * per-CPU variable, e.g. `movl %gs:PERCPU_CPU_NUMBER, %eax` with each CPU's
 * GS base at its own per-CPU area; a number gone stale (a thread that
 * migrated) only picks another CPU's cache, which is harmless. */
static uint32_t cpu_id(void) { return 0; }

static volatile unsigned misuse_reports;
static void on_misuse(page_status status, const void *addr)
{
	misuse_reports++;
	kprintf("  (misuse reported: %s at %p)\n", page_status_str(status), addr);
}

static struct page_stats stats(void)
{
	struct page_stats s;
	if (page_stats_get(&s) != PAGE_OK)
		kpanic("page_stats_get failed");
	return s;
}

static void print_stats(const char *when)
{
	struct page_stats s = stats();
	kprintf("  stats %s: total %lu free %lu (cached %lu) used %lu metadata %lu pages (%lu bytes), "
		"regions %lu, largest free run %lu, high water %lu, failed allocs %lu, misuse %lu\n",
		when, s.total_pages, s.free_pages, s.cached_pages, s.used_pages, s.metadata_pages,
		s.metadata_bytes, s.regions, s.largest_free_run, s.high_water_pages, s.failed_allocs,
		s.misuse_reports);
}

/* ---- stack use of the kpalloc calls, measured by painting ------------ */

#define PAINT 0x5354414b5354414bull
#define PAINT_BYTES 8192

struct stack_figure {
	const char *name;
	uint64_t deepest, calls;
};
static struct stack_figure stack_figures[16];

/* Paints the PAINT_BYTES below %rsp; inlined into the caller, so nothing
 * of ours lives there (no red zone, interrupts masked while measuring). */
static inline __attribute__((always_inline)) uint64_t *paint_below_rsp(void)
{
	uint64_t *lo, n = PAINT_BYTES / 8;
	__asm__ volatile("lea -%c1(%%rsp), %0" : "=r"(lo) : "i"(PAINT_BYTES));
	uint64_t *d = lo;
	__asm__ volatile("rep stosq" : "+D"(d), "+c"(n) : "a"(PAINT) : "memory");
	return lo;
}

static void stack_note(unsigned slot, const char *name, uint64_t *lo, uint64_t top)
{
	while (*lo == PAINT)
		lo++;
	uint64_t used = top - (uint64_t)lo;
	stack_figures[slot].name = name;
	stack_figures[slot].calls++;
	if (used > stack_figures[slot].deepest)
		stack_figures[slot].deepest = used;
}

/* Evaluates the kpalloc call `expr` on a painted stack and records how
 * deep it went (from the stack pointer at the call, return address included). */
#define MEASURED(slot, name, expr)                                             \
	({                                                                     \
		uint64_t top_;                                                 \
		__asm__ volatile("mov %%rsp, %0" : "=r"(top_));                \
		uint64_t *lo_ = paint_below_rsp();                             \
		__typeof__(expr) r_ = (expr);                                  \
		stack_note(slot, name, lo_, top_);                             \
		r_;                                                            \
	})

/* ---- owner tags: every page of every block we hold carries one ------- */

#define TAG_LIVE 0x4556494c43415047ull /* "GPACLIVE" */
#define TAG_FREE 0x4545524643415047ull /* "GPACFREE" */

enum owner { OWNER_EXHAUST = 1, OWNER_MAIN, OWNER_IRQ, OWNER_TABLES, OWNER_MISC };

struct tag {
	uint64_t magic;
	uint64_t owner;
	uint64_t head_pa; /* physical address of the block's head page */
	void *next;       /* list link, in the head page */
};

static unsigned long double_handouts;

/* Tags every page of a block that was just allocated; a page that still
 * carries a live tag was handed out twice. */
/* Every page of blocks up to 64 pages; the first and the last page of
 * bigger ones. The exhaustion test covers all of memory: under TCG touching
 * every page of 4 GiB costs tens of seconds and gigabytes of host memory,
 * so for its big blocks it checks instead that no two blocks overlap. */
static size_t tag_step(size_t pages, size_t i)
{
	if (pages <= 64 || i != 0)
		return 1;
	return pages - 1;
}

static void tag_block(void *block, size_t pages, uint64_t owner)
{
	for (size_t i = 0; i < pages; i += tag_step(pages, i)) {
		struct tag *t = (struct tag *)((char *)block + i * PAGE);
		if (t->magic == TAG_LIVE) {
			double_handouts++;
			kprintf("  FAIL page %p handed out twice (owner %lu, now %lu)\n", (void *)t,
				t->owner, owner);
			check_failed();
		}
		t->magic = TAG_LIVE;
		t->owner = owner;
		t->head_pa = v2p(block);
		t->next = 0;
	}
}

/* Verifies a block's tags and marks its pages free; 0 on a wrong tag. */
static int untag_block(void *block, size_t pages, uint64_t owner)
{
	int ok = 1;
	for (size_t i = 0; i < pages; i += tag_step(pages, i)) {
		struct tag *t = (struct tag *)((char *)block + i * PAGE);
		if (t->magic != TAG_LIVE || t->owner != owner || t->head_pa != v2p(block)) {
			if (ok)
				kprintf("  FAIL page %p: tag %lx owner %lu head %lx, expected owner %lu head %lx\n",
					(void *)t, t->magic, t->owner, t->head_pa, owner, v2p(block));
			ok = 0;
		}
		t->magic = TAG_FREE;
	}
	return ok;
}

/* The counters that the per-CPU caches leave alone: a cached page is free. */
static int same_counts(struct page_stats a, struct page_stats b)
{
	return a.total_pages == b.total_pages && a.free_pages == b.free_pages &&
	       a.used_pages == b.used_pages && a.metadata_pages == b.metadata_pages &&
	       a.regions == b.regions && a.user_free_pages == b.user_free_pages;
}

/* The stats with every per-CPU cache given back to the bitmaps
 * (page_drain_caches), so that largest_free_run (which cached pages
 * interrupt) shows the free space as it is. Not from an interrupt handler: a
 * cache that the handler interrupted stays full. */
static struct page_stats drained_stats(void)
{
	uint64_t cached = stats().cached_pages;
	if (page_drain_caches() != cached)
		kpanic("page_drain_caches gave back another number of pages than were cached");
	struct page_stats s = stats();
	if (s.cached_pages != 0)
		kpanic("page_drain_caches left pages in the caches");
	return s;
}

/* A test gave back all it took from `before` (taken by drained_stats): the
 * counters match with whatever the caches hold now, and once the caches are
 * drained, the free space has its old shape (largest_free_run) again. */
static int unchanged(struct page_stats before)
{
	struct page_stats now = stats(), drained = drained_stats();
	if (same_counts(before, now) && same_counts(before, drained) &&
	    drained.largest_free_run == before.largest_free_run)
		return 1;
	kprintf("  free %lu -> %lu (%lu cached) -> %lu drained, used %lu -> %lu -> %lu, "
		"largest free run %lu -> %lu drained\n",
		before.free_pages, now.free_pages, now.cached_pages, drained.free_pages, before.used_pages,
		now.used_pages, drained.used_pages, before.largest_free_run, drained.largest_free_run);
	return 0;
}

/* ---- multiboot ------------------------------------------------------- */

struct mb_info {
	uint32_t flags, mem_lower, mem_upper, boot_device, cmdline, mods_count, mods_addr;
	uint32_t syms[4];
	uint32_t mmap_length, mmap_addr;
} __attribute__((packed));

struct mb_mmap {
	uint32_t size;
	uint64_t addr, len;
	uint32_t type;
} __attribute__((packed));

#define MAX_MMAP 32
static struct {
	uint64_t start, end;
	uint32_t type;
} mmap[MAX_MMAP];
static unsigned mmap_count;
static uint64_t mmap_buf_pa, mmap_buf_len, mmap_checksum, mbi_pa;
static uint64_t max_pa;

static uint64_t checksum(const void *p, size_t n)
{
	uint64_t h = 1469598103934665603ull;
	for (const unsigned char *c = p; n--; c++)
		h = (h ^ *c) * 1099511628211ull;
	return h;
}

/* Before our page tables exist: the boot tables identity-map 1 GiB. */
static void read_multiboot(uint32_t magic, uint64_t mbi)
{
	if (magic != 0x2BADB002)
		kpanic("not booted by a multiboot loader");
	const struct mb_info *info = (const void *)mbi;
	if (!(info->flags & (1 << 6)))
		kpanic("no memory map from the boot loader");
	mbi_pa = mbi;
	mmap_buf_pa = info->mmap_addr;
	mmap_buf_len = info->mmap_length;
	mmap_checksum = checksum((const void *)mmap_buf_pa, mmap_buf_len);
	for (uint64_t at = info->mmap_addr; at < info->mmap_addr + info->mmap_length && mmap_count < MAX_MMAP;) {
		const struct mb_mmap *e = (const void *)at;
		mmap[mmap_count].start = e->addr;
		mmap[mmap_count].end = e->addr + e->len;
		mmap[mmap_count].type = e->type;
		if (e->type == 1 && e->addr + e->len > max_pa)
			max_pa = e->addr + e->len;
		mmap_count++;
		at += e->size + 4;
	}
}

/* ---- page tables ----------------------------------------------------- */

#define PTE_P 1ull
#define PTE_W 2ull
#define PTE_PS 0x80ull
#define PTE_ADDR 0x000ffffffffff000ull

typedef uint64_t *(*table_alloc)(void);

/* Static tables for the kernel's own address space. */
static uint64_t boot_tables[24][512] __attribute__((aligned(4096)));
static unsigned boot_tables_used;

static uint64_t *static_table(void)
{
	if (boot_tables_used == sizeof boot_tables / sizeof boot_tables[0])
		kpanic("out of boot page tables");
	return boot_tables[boot_tables_used++];
}

/* The kernel's tables are reached through the kernel image mapping, tables
 * from kpalloc through the direct map: try the image first. */
static uint64_t table_pa(const uint64_t *table)
{
	if ((const char *)table >= _kernel_start && (const char *)table < _kernel_end)
		return v2p_image(table);
	return v2p(table);
}

static uint64_t *table_va(uint64_t entry, int early)
{
	uint64_t pa = entry & PTE_ADDR;
	if (early || (pa >= v2p_image(_kernel_start) && pa < v2p_image(_kernel_end)))
		return (uint64_t *)(pa + KBASE);
	return p2v(pa);
}

static uint64_t *next_level(uint64_t *table, unsigned index, table_alloc alloc, int early)
{
	if (!(table[index] & PTE_P)) {
		uint64_t *fresh = alloc();
		if (!fresh)
			return 0;
		table[index] = table_pa(fresh) | PTE_P | PTE_W;
	}
	return table_va(table[index], early);
}

/* Maps va -> pa with a 2 MiB page (size 2 MiB) or a 4 KiB page. */
static int map_page(uint64_t *pml4, uint64_t va, uint64_t pa, uint64_t size, table_alloc alloc, int early)
{
	uint64_t *pdpt = next_level(pml4, (va >> 39) & 511, alloc, early);
	uint64_t *pd = pdpt ? next_level(pdpt, (va >> 30) & 511, alloc, early) : 0;
	if (!pd)
		return 0;
	if (size == 2 * MIB) {
		pd[(va >> 21) & 511] = pa | PTE_P | PTE_W | PTE_PS;
		return 1;
	}
	uint64_t *pt = next_level(pd, (va >> 21) & 511, alloc, early);
	if (!pt)
		return 0;
	pt[(va >> 12) & 511] = pa | PTE_P | PTE_W;
	return 1;
}

/* The kernel image at KBASE + pa, and all of memory up to max_pa at
 * PHYS_OFFSET + pa (the same mapping when they are equal). */
static int map_kernel_space(uint64_t *pml4, table_alloc alloc, int early)
{
	uint64_t image_end = (v2p_image(_kernel_end) + 2 * MIB - 1) & ~(2 * MIB - 1);
	for (uint64_t pa = 0; pa < (max_pa + 2 * MIB - 1) / (2 * MIB) * (2 * MIB); pa += 2 * MIB)
		if (!map_page(pml4, PHYS_OFFSET + pa, pa, 2 * MIB, alloc, early))
			return 0;
	if (PHYS_OFFSET != KBASE)
		for (uint64_t pa = 0; pa < image_end; pa += 2 * MIB)
			if (!map_page(pml4, KBASE + pa, pa, 2 * MIB, alloc, early))
				return 0;
	return 1;
}

static uint64_t kernel_cr3;

/* ---- interrupts ------------------------------------------------------ */

struct idt_entry {
	uint16_t offset_low, selector;
	uint8_t ist, type;
	uint16_t offset_mid;
	uint32_t offset_high, zero;
} __attribute__((packed));

static struct idt_entry idt[48] __attribute__((aligned(16)));

struct frame {
	uint64_t r11, r10, r9, r8, rdi, rsi, rdx, rcx, rax;
	uint64_t vector, error, rip, cs, rflags, rsp, ss;
};

static volatile uint64_t ticks;
static void timer_tick(void);

void isr_dispatch(struct frame *f)
{
	if (f->vector < 32) {
		uint64_t cr2;
		__asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
		kprintf("EXCEPTION %lu error %lx at rip %lx (cr2 %lx, rsp %lx)\n%u passed, %u failed\n",
			f->vector, f->error, f->rip, cr2, f->rsp, passed, failed + 1);
		qemu_exit(0);
	}
	if (f->vector == 32) {
		ticks++;
		timer_tick();
	}
	if (f->vector == 39 || f->vector == 47)
		return; /* spurious: no EOI */
	if (f->vector >= 40)
		outb(0xa0, 0x20);
	outb(0x20, 0x20);
}

static void idt_init(void)
{
	for (int i = 0; i < 48; i++) {
		uint64_t a = isr_table[i];
		idt[i] = (struct idt_entry){ (uint16_t)a, 0x08, 0, 0x8e, (uint16_t)(a >> 16), (uint32_t)(a >> 32), 0 };
	}
	struct {
		uint16_t limit;
		uint64_t base;
	} __attribute__((packed)) idtr = { sizeof idt - 1, (uint64_t)idt };
	__asm__ volatile("lidt %0" : : "m"(idtr));

	/* 8259 PICs: IRQ 0-15 at vectors 32-47, only IRQ 0 (PIT) unmasked. */
	outb(0x20, 0x11);
	outb(0xa0, 0x11);
	outb(0x21, 32);
	outb(0xa1, 40);
	outb(0x21, 4);
	outb(0xa1, 2);
	outb(0x21, 1);
	outb(0xa1, 1);
	outb(0x21, 0xfe);
	outb(0xa1, 0xff);
}

#define PIT_HZ 1000
static void pit_start(void)
{
	unsigned divisor = 1193182 / PIT_HZ;
	outb(0x43, 0x36);
	outb(0x40, divisor & 0xff);
	outb(0x40, divisor >> 8);
}

static void pit_stop(void)
{
	outb(0x21, 0xff);
}

/* ---- setup ----------------------------------------------------------- */


static const char *mmap_type(uint32_t type)
{
	switch (type) {
	case 1: return "usable";
	case 2: return "reserved";
	case 3: return "ACPI";
	case 4: return "ACPI NVS";
	case 5: return "bad";
	default: return "?";
	}
}

struct range {
	uint64_t start, end;
	const char *what;
};

static struct range keep[4];
static unsigned keep_count;

static void add_keep(uint64_t start, uint64_t end, const char *what)
{
	start &= ~(PAGE - 1);
	end = (end + PAGE - 1) & ~(PAGE - 1);
	for (unsigned i = 0; i < keep_count; i++)
		if (start < keep[i].end && end > keep[i].start) {
			/* Overlapping pages (qemu puts both on one page): one range. */
			keep[i].start = start < keep[i].start ? start : keep[i].start;
			keep[i].end = end > keep[i].end ? end : keep[i].end;
			keep[i].what = "multiboot information and memory map";
			return;
		}
	keep[keep_count++] = (struct range){ start, end, what };
}

/* The kept range that holds address `pa`, or NULL. */
static const struct range *kept_at(uint64_t pa)
{
	for (unsigned k = 0; k < keep_count; k++)
		if (pa >= keep[k].start && pa < keep[k].end)
			return &keep[k];
	return NULL;
}

static unsigned long reserved_pages;

/* RAM holds whatever was there before, but QEMU's starts zeroed: this
 * writes a pattern over the front of a region, where kpalloc puts its
 * metadata (about 4.2 bytes a page; the pattern covers 8 bytes a page and
 * 16 pages more), so that a read of metadata kpalloc had not written would
 * show as it would on real hardware. The kernel's kept ranges are spared. */
static void scribble_front(uint64_t start, uint64_t end)
{
	uint64_t front = start + (end - start) / PAGE * 8 + 16 * PAGE;
	if (front > end)
		front = end;
	for (uint64_t pa = start; pa < front; pa += PAGE)
		if (!kept_at(pa))
			memset(p2v(pa), 0xa5, PAGE);
}

static void add_regions(void)
{
	begin("regions");
	uint64_t image_start = v2p_image(_kernel_start);
	uint64_t image_end = (v2p_image(_kernel_end) + PAGE - 1) & ~(PAGE - 1);
	kprintf("  kernel image: [%lx, %lx) physical, at %p\n", image_start, image_end, (void *)_kernel_start);
	for (unsigned i = 0; i < keep_count; i++)
		kprintf("  kept by the kernel: [%lx, %lx) %s\n", keep[i].start, keep[i].end, keep[i].what);
	for (unsigned i = 0; i < mmap_count; i++) {
		uint64_t start = (mmap[i].start + PAGE - 1) & ~(PAGE - 1);
		uint64_t end = mmap[i].end & ~(PAGE - 1);
		kprintf("  e820 [%012lx, %012lx) %s\n", mmap[i].start, mmap[i].end, mmap_type(mmap[i].type));
		if (mmap[i].type != 1)
			continue;
		if (start == 0)
			start = PAGE; /* page 0 stays unused */
		if (start < image_end && end > image_start)
			start = image_end; /* the part above the kernel image */
		/* The metadata goes into the region's first pages: start after
		 * whatever the kernel keeps there, reserve the rest below. */
		for (const struct range *kept; (kept = kept_at(start));)
			start = kept->end;
		if (end <= start)
			continue;
		scribble_front(start, end);
		page_status st = MEASURED(0, "page_region_add", page_region_add(start, end, PAGE_POOL_KERNEL));
		kprintf("    page_region_add(%lx, %lx) = %s\n", start, end, page_status_str(st));
		CHECK(st == PAGE_OK || (st == PAGE_ETOOSMALL && end - start < 4 * PAGE), "%s", page_status_str(st));
		if (st != PAGE_OK)
			continue;
		for (unsigned k = 0; k < keep_count; k++) {
			uint64_t a = keep[k].start > start ? keep[k].start : start;
			uint64_t b = keep[k].end < end ? keep[k].end : end;
			if (a >= b)
				continue;
			st = page_alloc_at(a, (b - a) / PAGE, a < FOUR_GIB && b <= FOUR_GIB ? PAGE_ALLOC_DMA32 : 0);
			kprintf("    page_alloc_at(%lx, %lu) for the %s = %s\n", a, (b - a) / PAGE, keep[k].what,
				page_status_str(st));
			CHECK(st == PAGE_OK, "%s", page_status_str(st));
			if (st == PAGE_OK)
				reserved_pages += (b - a) / PAGE;
			st = page_alloc_at(a, 1, 0);
			CHECK(st == PAGE_EBUSY, "reserving again: %s", page_status_str(st));
		}
	}
	struct page_stats s = stats();
	CHECK(s.used_pages == reserved_pages, "used %lu, reserved %lu", s.used_pages, reserved_pages);
	CHECK(s.free_pages == s.total_pages - s.metadata_pages - s.used_pages, "free %lu", s.free_pages);
	print_stats("after adding the regions");
	end("regions");
}

/* ---- tests ----------------------------------------------------------- */

static uint64_t tsc_per_ms;

#define MAX_HELD 8192
static struct held {
	uint64_t pa, pages;
} held[MAX_HELD];
static unsigned held_count;

static void hold(void *block, size_t pages)
{
	if (held_count < MAX_HELD)
		held[held_count] = (struct held){ v2p(block), pages };
	held_count++;
}

/* No two blocks held share a page, and each lies in usable memory outside
 * the kernel image and what the kernel keeps. */
static int held_disjoint(void)
{
	if (held_count > MAX_HELD)
		return 0;
	for (unsigned i = 1; i < held_count; i++) /* insertion sort by address */
		for (unsigned j = i; j > 0 && held[j - 1].pa > held[j].pa; j--) {
			struct held t = held[j];
			held[j] = held[j - 1];
			held[j - 1] = t;
		}
	int ok = 1;
	for (unsigned i = 0; i < held_count; i++) {
		uint64_t a = held[i].pa, b = a + held[i].pages * PAGE;
		if (i + 1 < held_count && b > held[i + 1].pa) {
			kprintf("  FAIL blocks [%lx, %lx) and %lx overlap\n", a, b, held[i + 1].pa);
			ok = 0;
		}
		int usable = 0;
		for (unsigned m = 0; m < mmap_count; m++)
			usable |= mmap[m].type == 1 && a >= mmap[m].start && b <= mmap[m].end;
		if (a < v2p_image(_kernel_end) && b > v2p_image(_kernel_start))
			usable = 0;
		for (unsigned k = 0; k < keep_count; k++)
			if (a < keep[k].end && b > keep[k].start)
				usable = 0;
		if (!usable) {
			kprintf("  FAIL block [%lx, %lx) is not free usable memory\n", a, b);
			ok = 0;
		}
	}
	return ok;
}

/* The block sizes test_exhaust takes, largest first. */
static const size_t exhaust_sizes[] = { 4096, 512, 64, 8, 1 };

/* What one sweep of test_exhaust took. */
struct sweep {
	unsigned long blocks, pages;
	uint64_t lowest, highest_end;
};

/* Takes every block page_alloc(size, flags) gives, for each size, tags it
 * and pushes it on *list. */
static struct sweep take_everything(uint32_t flags, void **list)
{
	struct sweep taken = { 0, 0, ~0ull, 0 };
	for (unsigned s = 0; s < sizeof exhaust_sizes / sizeof exhaust_sizes[0]; s++)
		for (void *b; (b = page_alloc(exhaust_sizes[s], flags));) {
			uint64_t start = v2p(b), end = start + exhaust_sizes[s] * PAGE;
			if (start < taken.lowest)
				taken.lowest = start;
			if (end > taken.highest_end)
				taken.highest_end = end;
			tag_block(b, exhaust_sizes[s], OWNER_EXHAUST);
			hold(b, exhaust_sizes[s]);
			((struct tag *)b)->next = *list;
			*list = b;
			taken.blocks++;
			taken.pages += exhaust_sizes[s];
		}
	return taken;
}

/* Checks the tags of every block on `list` and frees it; returns the pages
 * freed. */
static unsigned long release_everything(void *list)
{
	unsigned long freed = 0;
	while (list) {
		void *b = list;
		size_t n = page_block_pages(b);
		list = ((struct tag *)b)->next;
		CHECK(untag_block(b, n, OWNER_EXHAUST), "block %p", b);
		page_status st = page_free(b);
		CHECK(st == PAGE_OK, "page_free(%p) = %s", b, page_status_str(st));
		freed += n;
	}
	return freed;
}

static void test_exhaust(void)
{
	begin("exhaust");
	struct page_stats before = drained_stats();
	void *list = 0;
	uint64_t t0 = rdtsc();

	/* A few single pages taken and given back: they wait in this CPU's
	 * cache, free but out of the bitmaps, and exhaustion must take them. */
	void *warm[4];
	for (int i = 0; i < 4; i++)
		warm[i] = page_alloc(1, 0);
	for (int i = 0; i < 4; i++)
		CHECK(warm[i] && page_free(warm[i]) == PAGE_OK, "single page %d", i);
	struct page_stats warmed = stats();
	CHECK(warmed.cached_pages >= 4 && same_counts(before, warmed), "%lu pages cached, free %lu",
	      warmed.cached_pages, warmed.free_pages);

	/* DMA32 first: every block must lie below 4 GiB. */
	struct sweep low = take_everything(PAGE_ALLOC_DMA32, &list);
	unsigned long dma32_pages = low.pages;
	uint64_t dma32_max = low.highest_end;
	struct page_stats mid = stats();
	kprintf("  DMA32: %lu pages, highest end %lx; %lu pages left (memory above 4 GiB), %lu cached\n",
		dma32_pages, dma32_max, mid.free_pages, mid.cached_pages);
	CHECK(dma32_max <= FOUR_GIB, "DMA32 block ends at %lx", dma32_max);
	CHECK((max_pa > FOUR_GIB) == (mid.free_pages > 0), "free pages %lu after DMA32 exhaustion", mid.free_pages);
	CHECK(mid.cached_pages == 0, "%lu pages still cached after DMA32 exhaustion", mid.cached_pages);

	/* Then everything else: with memory above 4 GiB, that is where it is. */
	struct sweep high = take_everything(0, &list);
	unsigned long high_pages = high.pages, blocks = low.blocks + high.blocks, pages = low.pages + high.pages;
	uint64_t high_min = high.lowest;
	struct page_stats full = stats();
	if (max_pa > FOUR_GIB) {
		kprintf("  above 4 GiB: %lu pages, lowest at %lx\n", high_pages, high_min);
		CHECK(high_pages > 0 && high_min >= FOUR_GIB, "high pages %lu from %lx", high_pages, high_min);
	} else {
		CHECK(high_pages == 0, "%lu pages after DMA32 exhaustion without memory above 4 GiB", high_pages);
	}
	CHECK(full.free_pages == 0 && full.cached_pages == 0, "free pages %lu (%lu cached) at exhaustion",
	      full.free_pages, full.cached_pages);
	CHECK(full.used_pages == before.used_pages + pages, "used %lu", full.used_pages);
	CHECK(page_alloc(1, 0) == 0, "allocation after exhaustion");
	CHECK(held_disjoint(), "%u blocks held", held_count);
	kprintf("  exhausted: %lu blocks, %lu pages (%lu MiB)\n", blocks, pages, pages / 256);
	print_stats("at exhaustion");

	unsigned long freed = release_everything(list);
	struct page_stats after = stats();
	CHECK(freed == pages, "freed %lu of %lu pages", freed, pages);
	CHECK(unchanged(before), "counts changed");
	CHECK(double_handouts == 0, "%lu pages handed out twice", double_handouts);
	kprintf("  freed everything: free %lu (cached %lu) used %lu (before: free %lu used %lu), %lu ms\n",
		after.free_pages, after.cached_pages, after.used_pages, before.free_pages, before.used_pages,
		(rdtsc() - t0) / tsc_per_ms);
	end("exhaust");
}

/* The per-CPU cache of single pages (cpu_id is set): a page freed on this
 * CPU waits in its cache, counted free, and is the next one allocated here;
 * a cached page is refused like a free page; and when memory runs out,
 * allocations of any size, alignment or DMA32 take the cached pages back. */
static void test_cpu_cache(void)
{
	begin("per-CPU page cache");
	struct page_stats before = drained_stats();
	unsigned misuse = misuse_reports;
	void *p = page_alloc(1, 0);
	CHECK(p != 0, "alloc");
	struct page_stats one = stats();
	CHECK(one.used_pages == before.used_pages + 1 && one.free_pages == before.free_pages - 1, "used %lu",
	      one.used_pages);
	kprintf("  one page at %lx; the refill left %lu pages in CPU 0's cache\n", v2p(p), one.cached_pages);
	CHECK(one.cached_pages > 0, "the cache was not refilled");
	tag_block(p, 1, OWNER_MISC);
	CHECK(untag_block(p, 1, OWNER_MISC), "tags");
	CHECK(page_free(p) == PAGE_OK, "free");
	struct page_stats freed = stats();
	CHECK(freed.cached_pages == one.cached_pages + 1, "cached %lu after the free", freed.cached_pages);
	CHECK(same_counts(before, freed), "a cached page is not counted free");

	/* In the cache, the page is free to every call that names it. */
	page_status st = page_free(p);
	CHECK(st == PAGE_ENOTALLOCATED, "free of a cached page: %s", page_status_str(st));
	st = page_get(p);
	CHECK(st == PAGE_ENOTALLOCATED, "get of a cached page: %s", page_status_str(st));
	CHECK(page_refcount(p) == 0 && page_block_pages(p) == 0, "refcount %u", page_refcount(p));
	CHECK(misuse_reports == misuse + 2, "%u misuse reports", misuse_reports - misuse);

	/* Most recently freed first. */
	void *q = page_alloc(1, 0);
	CHECK(q == p, "the next page is %p, not the one just freed (%p)", q, p);
	CHECK(stats().cached_pages == one.cached_pages, "cached %lu", stats().cached_pages);
	CHECK(q && page_free(q) == PAGE_OK, "free again");

	/* page_alloc_at of a cached page takes it out of the cache. */
	st = page_alloc_at(v2p(p), 1, 0);
	CHECK(st == PAGE_OK && page_refcount(p) == 1, "page_alloc_at of a cached page: %s", page_status_str(st));
	CHECK(stats().cached_pages < freed.cached_pages, "cached %lu after page_alloc_at", stats().cached_pages);
	CHECK(st == PAGE_OK && page_free(p) == PAGE_OK, "free after page_alloc_at");

	/* Near exhaustion: the only free pages are those of an aligned DMA32
	 * block, given back page by page into the cache. Its 8 pages are free
	 * but no run in the bitmaps; page_alloc finds them after draining. */
	void *b = page_alloc_aligned(8, 8, PAGE_ALLOC_DMA32);
	CHECK(b != 0, "8 aligned pages");
	void *list = 0;
	held_count = 0;
	struct sweep rest = take_everything(0, &list);
	CHECK(held_disjoint(), "%u blocks held", held_count);
	CHECK(stats().free_pages == 0 && stats().cached_pages == 0, "free %lu after taking everything",
	      stats().free_pages);
	if (b) {
		CHECK(page_split(b) == PAGE_OK, "split");
		for (int i = 0; i < 8; i++)
			CHECK(page_free((char *)b + i * PAGE) == PAGE_OK, "free page %d", i);
	}
	struct page_stats last = stats();
	kprintf("  everything else taken (%lu blocks, %lu pages); the 8 pages back at %lx: free %lu, "
		"cached %lu, largest free run %lu\n",
		rest.blocks, rest.pages, b ? v2p(b) : 0, last.free_pages, last.cached_pages, last.largest_free_run);
	CHECK(last.free_pages == 8 && last.cached_pages == 8 && last.largest_free_run == 0, "free %lu cached %lu",
	      last.free_pages, last.cached_pages);
	void *again = page_alloc_aligned(8, 8, PAGE_ALLOC_DMA32);
	CHECK(again != 0 && again == b, "8 pages after draining: %p, freed %p", again, b);
	struct page_stats empty = stats();
	CHECK(empty.free_pages == 0 && empty.cached_pages == 0, "free %lu cached %lu", empty.free_pages,
	      empty.cached_pages);
	CHECK(page_alloc(1, 0) == 0, "allocation after exhaustion");
	if (again)
		CHECK(page_free(again) == PAGE_OK, "free the 8 pages");
	CHECK(release_everything(list) == rest.pages, "freed");
	CHECK(double_handouts == 0, "%lu pages handed out twice", double_handouts);
	CHECK(unchanged(before), "counts changed");
	end("per-CPU page cache");
}

/* Tables from kpalloc, zeroed by it. */
static void *owned_tables[64];
static unsigned owned_count;
static int zero_ok = 1;

static uint64_t *kpalloc_table(void)
{
	if (owned_count == sizeof owned_tables / sizeof owned_tables[0])
		return 0;
	uint64_t *t = page_alloc(1, PAGE_ALLOC_ZERO);
	if (!t)
		return 0;
	for (int i = 0; i < 512; i++)
		zero_ok &= t[i] == 0;
	owned_tables[owned_count++] = t;
	return t;
}

static void test_address_space(void)
{
	begin("address space");
	struct page_stats before = drained_stats();
	/* Dirty some pages so that PAGE_ALLOC_ZERO has something to clear. */
	void *dirty[8];
	for (int i = 0; i < 8; i++) {
		dirty[i] = page_alloc(1, 0);
		memset(dirty[i], 0xa5, PAGE);
	}
	for (int i = 0; i < 8; i++)
		page_free(dirty[i]);

	owned_count = 0;
	uint64_t *pml4 = kpalloc_table();
	CHECK(pml4 != 0, "no PML4");
	int mapped = pml4 && map_kernel_space(pml4, kpalloc_table, 0);
	CHECK(mapped, "mapping the kernel space");
	/* A window of 16 fresh pages at a low virtual address, 4 KiB pages. */
	const uint64_t window = 0x40000000000ull; /* 4 TiB */
	void *data = page_alloc(16, 0);
	CHECK(data != 0, "no data pages");
	for (int i = 0; mapped && data && i < 16; i++)
		mapped &= map_page(pml4, window + i * PAGE, v2p(data) + i * PAGE, PAGE, kpalloc_table, 0);
	CHECK(zero_ok, "a PAGE_ALLOC_ZERO page was not zero");
	kprintf("  %u page-table pages from kpalloc, PML4 at %lx\n", owned_count, pml4 ? v2p(pml4) : 0);
	if (mapped && data) {
		write_cr3(v2p(pml4));
		kprintf("  running on CR3 %lx\n", read_cr3());
		volatile uint64_t *w = (volatile uint64_t *)window;
		for (int i = 0; i < 16 * 512; i++)
			w[i] = 0x1000000ull * i + 0x77;
		write_cr3(kernel_cr3);
		uint64_t *d = data;
		int same = 1;
		for (int i = 0; i < 16 * 512; i++)
			same &= d[i] == 0x1000000ull * i + 0x77;
		CHECK(same, "writes through the new address space are not in the pages");
		CHECK(read_cr3() == kernel_cr3, "CR3 %lx", read_cr3());
	}
	if (data)
		page_free(data);
	for (unsigned i = 0; i < owned_count; i++)
		CHECK(page_free(owned_tables[i]) == PAGE_OK, "table %u", i);
	CHECK(unchanged(before), "counts changed");
	end("address space");
}

static void test_share(void)
{
	begin("share (page_get/page_put)");
	struct page_stats before = drained_stats();
	unsigned misuse = misuse_reports;
	void *p = page_alloc(4, 0);
	CHECK(p != 0, "alloc");
	tag_block(p, 4, OWNER_MISC);
	CHECK(page_get(p) == PAGE_OK && page_get(p) == PAGE_OK, "get");
	CHECK(page_refcount(p) == 3, "refcount %u", page_refcount(p));
	page_status st = page_free(p);
	CHECK(st == PAGE_ESHARED, "page_free of a shared block: %s", page_status_str(st));
	st = page_get((char *)p + PAGE);
	CHECK(st == PAGE_ENOTHEAD, "page_get of an interior page: %s", page_status_str(st));
	CHECK(page_put(p) == PAGE_OK && page_put(p) == PAGE_OK, "put");
	CHECK(page_refcount(p) == 1, "refcount %u", page_refcount(p));
	CHECK(untag_block(p, 4, OWNER_MISC), "tags");
	CHECK(page_put(p) == PAGE_OK, "last put");
	CHECK(page_refcount(p) == 0, "refcount after the last put %u", page_refcount(p));
	st = page_put(p);
	CHECK(st == PAGE_ENOTALLOCATED, "put after the last: %s", page_status_str(st));
	CHECK(misuse_reports == misuse + 3, "%u misuse reports", misuse_reports - misuse);
	CHECK(unchanged(before), "counts changed");
	end("share (page_get/page_put)");
}

static void test_split(void)
{
	begin("split");
	struct page_stats before = drained_stats();
	char *b = page_alloc(8, 0);
	CHECK(b && page_block_pages(b) == 8, "alloc");
	tag_block(b, 8, OWNER_MISC);
	CHECK(page_split(b) == PAGE_OK, "split");
	for (int i = 0; i < 8; i++)
		CHECK(page_block_pages(b + i * PAGE) == 1 && page_refcount(b + i * PAGE) == 1, "page %d", i);
	for (int i = 7; i >= 0; i--) {
		/* Each page is a block of its own now, tagged as part of b. */
		struct tag *t = (struct tag *)(b + i * PAGE);
		CHECK(t->magic == TAG_LIVE && t->owner == OWNER_MISC && t->head_pa == v2p(b), "page %d tag", i);
		t->head_pa = v2p(t);
		CHECK(untag_block(t, 1, OWNER_MISC), "page %d", i);
		CHECK(page_free(t) == PAGE_OK, "free page %d", i);
	}
	CHECK(unchanged(before), "counts changed");
	end("split");
}

/* page_dump of a fragmented heap, printed between markers for kpalloc-map:
 * blocks of 1 to 29 pages, every fifth shared, every third freed again. */
static char dump_buf[64 * 1024];
static void *dump_blocks[3000];

/* Drops every reference test_dump took to block i (two for the shared). */
static void release_dump_block(unsigned i)
{
	if (i % 5 == 0)
		CHECK(page_put(dump_blocks[i]) == PAGE_OK, "put %u", i);
	CHECK(page_put(dump_blocks[i]) == PAGE_OK, "last put %u", i);
	dump_blocks[i] = 0;
}

/* Adds up the pages of each state (M, F, U, S) in a dump's runs lines. */
static void dump_totals(const char *dump, uint64_t totals[4])
{
	static const char states[] = "MFUS";
	for (const char *line = dump; *line; line++) {
		if (memcmp(line, "runs ", 5) == 0)
			for (const char *c = line + 4; *c == ' ';) {
				char state = c[1];
				uint64_t pages = 0;
				for (c += 2; *c >= '0' && *c <= '9'; c++)
					pages = pages * 10 + (uint64_t)(*c - '0');
				for (int i = 0; i < 4; i++)
					if (states[i] == state)
						totals[i] += pages;
			}
		while (*line && *line != '\n')
			line++;
		if (!*line)
			break;
	}
}

static void test_dump(void)
{
	begin("page_dump");
	struct page_stats before = drained_stats();
	unsigned n = 0;
	while (n < sizeof dump_blocks / sizeof dump_blocks[0]) {
		void *b = page_alloc(1 + (n * 7) % 29, 0);
		if (!b)
			break;
		if (n % 5 == 0)
			CHECK(page_get(b) == PAGE_OK, "get");
		dump_blocks[n++] = b;
	}
	for (unsigned i = 0; i < n; i += 3)
		release_dump_block(i);
	size_t needed = page_dump(dump_buf, sizeof dump_buf);
	CHECK(needed < sizeof dump_buf, "dump needs %lu bytes", (unsigned long)needed);
	CHECK(needed > 20 && dump_buf[needed - 1] == '\n', "dump ends with a line");
	kprintf("%s", dump_buf);
	/* Cached pages are free pages: F in the dump, as in free_pages. */
	struct page_stats s = stats();
	uint64_t totals[4] = { 0 };
	dump_totals(dump_buf, totals);
	kprintf("  dump: %lu pages M, %lu F (%lu of them in CPU 0's cache), %lu U, %lu S\n", totals[0],
		totals[1], s.cached_pages, totals[2], totals[3]);
	CHECK(totals[0] == s.metadata_pages && totals[1] == s.free_pages && totals[2] + totals[3] == s.used_pages,
	      "the dump's pages disagree with the stats");
	CHECK(s.cached_pages > 0, "no single page freed into the cache");
	for (unsigned i = 0; i < n; i++)
		if (dump_blocks[i])
			release_dump_block(i);
	CHECK(unchanged(before), "counts changed");
	end("page_dump");
}

static void test_aligned(void)
{
	begin("2 MiB-aligned blocks");
	struct page_stats before = drained_stats();
	void *blocks[6];
	for (int i = 0; i < 6; i++) {
		size_t n = i % 2 ? 512 : 1;
		blocks[i] = page_alloc_aligned(n, 512, 0);
		CHECK(blocks[i] != 0, "block %d", i);
		if (!blocks[i])
			continue;
		kprintf("  %4zu pages at %lx\n", n, v2p(blocks[i]));
		CHECK(v2p(blocks[i]) % (2 * MIB) == 0, "block %d at %lx", i, v2p(blocks[i]));
		tag_block(blocks[i], n, OWNER_MISC);
	}
	for (int i = 0; i < 6; i++)
		if (blocks[i]) {
			CHECK(untag_block(blocks[i], page_block_pages(blocks[i]), OWNER_MISC), "tags %d", i);
			CHECK(page_free(blocks[i]) == PAGE_OK, "free %d", i);
		}
	CHECK(unchanged(before), "counts changed");
	end("2 MiB-aligned blocks");
}

static void test_dma32_high(void)
{
	begin("DMA32 and memory above 4 GiB");
	struct page_stats before = drained_stats();
	if (max_pa <= FOUR_GIB) {
		void *p = page_alloc(1, PAGE_ALLOC_DMA32);
		CHECK(p && v2p(p) < FOUR_GIB, "DMA32 page %p", p);
		page_free(p);
		kprintf("  no memory above 4 GiB here\n");
	} else {
		page_status st = page_alloc_at(FOUR_GIB + 64 * MIB, 4, 0);
		CHECK(st == PAGE_OK, "page_alloc_at above 4 GiB: %s", page_status_str(st));
		if (st == PAGE_OK) {
			void *high = p2v(FOUR_GIB + 64 * MIB);
			tag_block(high, 4, OWNER_MISC);
			CHECK(untag_block(high, 4, OWNER_MISC), "tags");
			CHECK(page_free(high) == PAGE_OK, "free");
		}
		st = page_alloc_at(FOUR_GIB + 64 * MIB, 1, PAGE_ALLOC_DMA32);
		CHECK(st == PAGE_EINVAL, "DMA32 above 4 GiB: %s", page_status_str(st));
		kprintf("  pages at 4 GiB + 64 MiB allocated and freed; DMA32 there refused\n");
	}
	CHECK(unchanged(before), "counts changed");
	end("DMA32 and memory above 4 GiB");
}

/* Interrupt-time allocation: the PIT handler allocates and frees blocks
 * while the main loop does the same. Half the blocks of each are single
 * pages, whose allocs and frees go through CPU 0's page cache, unless the
 * interrupt landed while the main loop was in a call on that cache (it is
 * try-locked, never waited for): then the handler's take the locked path.
 * The handler tells the two apart by cached_pages, which every cache call
 * moves (a pop, a push, a refill, a flush) and no locked call does, and
 * checks that page_check then says PAGE_EBUSY: it cannot hold that cache. */
#define IRQ_RING 16
static void *irq_ring[IRQ_RING];
static unsigned irq_head;
static volatile unsigned long irq_allocs, irq_frees, irq_failures, irq_bad_tags, irq_shared;
static volatile unsigned long irq_cache_calls, irq_locked_calls, irq_busy_ticks, irq_busy_checks;
static void *volatile shared_page;

/* Counts a single-page call by its path; `cached` is cached_pages before it. */
static int took_locked_path(uint64_t cached)
{
	if (stats().cached_pages != cached) {
		irq_cache_calls++;
		return 0;
	}
	irq_locked_calls++;
	return 1;
}

static void timer_tick(void)
{
	unsigned slot = irq_head++ % IRQ_RING;
	int locked = 0;
	if (irq_ring[slot]) {
		void *b = irq_ring[slot];
		size_t pages = page_block_pages(b);
		uint64_t cached = pages == 1 ? stats().cached_pages : 0;
		if (!untag_block(b, pages, OWNER_IRQ))
			irq_bad_tags++;
		if (page_free(b) == PAGE_OK)
			irq_frees++;
		else
			irq_failures++;
		irq_ring[slot] = 0;
		if (pages == 1)
			locked |= took_locked_path(cached);
	}
	size_t n = irq_head % 2 ? 1 : 2 + irq_head % 3;
	uint64_t cached = n == 1 ? stats().cached_pages : 0;
	void *b = page_alloc(n, irq_head % 3 == 0 ? PAGE_ALLOC_ZERO : 0);
	if (b) {
		tag_block(b, n, OWNER_IRQ);
		irq_ring[slot] = b;
		irq_allocs++;
	} else {
		irq_failures++;
	}
	if (n == 1)
		locked |= took_locked_path(cached);
	if (locked) {
		irq_busy_ticks++;
		if (page_check() == PAGE_EBUSY)
			irq_busy_checks++;
	}
	/* Take and drop a reference to the main loop's shared page. */
	void *s = shared_page;
	if (s && page_get(s) == PAGE_OK) {
		if (page_put(s) == PAGE_OK)
			irq_shared++;
		else
			irq_failures++;
	}
}

static void test_irq(void)
{
	begin("allocation from the timer interrupt");
	struct page_stats before = drained_stats();
	unsigned misuse = misuse_reports;
	void *shared = page_alloc(1, 0);
	tag_block(shared, 1, OWNER_MAIN);
	shared_page = shared;
	void *live[64] = { 0 };
	unsigned long main_allocs = 0, seed = 12345;
	uint64_t start_ticks = ticks;
	pit_start();
	__asm__ volatile("sti");
	uint64_t t0 = rdtsc();
	/* 1500 ticks, and on (up to 5000) until an interrupt has landed in a
	 * cache call: a matter of timing, a few to a few dozen times in 1500
	 * ticks here. */
	while ((ticks - start_ticks < 1500 || (!irq_busy_ticks && ticks - start_ticks < 5000)) &&
	       (rdtsc() - t0) / tsc_per_ms < 20000) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		unsigned slot = (seed >> 33) % 64;
		if (live[slot]) {
			CHECK(untag_block(live[slot], page_block_pages(live[slot]), OWNER_MAIN), "main block");
			CHECK(page_free(live[slot]) == PAGE_OK, "main free");
			live[slot] = 0;
		}
		/* Half of them single pages, through CPU 0's cache. */
		size_t n = (seed >> 40) & 1 ? 1 : 2 + (seed >> 41) % 15;
		live[slot] = page_alloc(n, 0);
		CHECK(live[slot] != 0, "main alloc");
		if (live[slot]) {
			tag_block(live[slot], n, OWNER_MAIN);
			main_allocs++;
		}
	}
	__asm__ volatile("cli");
	pit_stop();
	uint64_t elapsed = (rdtsc() - t0) / tsc_per_ms;
	shared_page = 0;
	for (unsigned i = 0; i < 64; i++)
		if (live[i]) {
			CHECK(untag_block(live[i], page_block_pages(live[i]), OWNER_MAIN), "main block");
			page_free(live[i]);
		}
	for (unsigned i = 0; i < IRQ_RING; i++)
		if (irq_ring[i]) {
			if (!untag_block(irq_ring[i], page_block_pages(irq_ring[i]), OWNER_IRQ))
				irq_bad_tags++;
			page_free(irq_ring[i]);
			irq_frees++;
			irq_ring[i] = 0;
		}
	CHECK(untag_block(shared, 1, OWNER_MAIN), "shared page");
	CHECK(page_refcount(shared) == 1, "shared refcount %u", page_refcount(shared));
	page_free(shared);
	kprintf("  %lu ticks in %lu ms: main loop %lu allocations, interrupt handler %lu allocations, "
		"%lu frees, %lu get/put pairs (ms from an estimated TSC rate)\n",
		ticks - start_ticks, elapsed, main_allocs, irq_allocs, irq_frees, irq_shared);
	kprintf("  handler's single-page calls: %lu through CPU 0's cache, %lu on the locked path "
		"(the interrupt landed in a cache call, %lu times; page_check said PAGE_EBUSY %lu times)\n",
		irq_cache_calls, irq_locked_calls, irq_busy_ticks, irq_busy_checks);
	CHECK(irq_cache_calls > 0 && irq_locked_calls > 0, "single-page calls: %lu cached, %lu locked",
	      irq_cache_calls, irq_locked_calls);
	CHECK(irq_busy_checks == irq_busy_ticks, "page_check said PAGE_EBUSY %lu times of %lu", irq_busy_checks,
	      irq_busy_ticks);
	CHECK(misuse_reports == misuse, "%u misuse reports (PAGE_EBUSY of page_check is none)",
	      misuse_reports - misuse);
	CHECK(ticks - start_ticks >= 100, "only %lu timer interrupts", ticks - start_ticks);
	CHECK(irq_allocs > 50 && irq_allocs == irq_frees, "irq allocs %lu frees %lu", irq_allocs, irq_frees);
	CHECK(irq_failures == 0 && irq_bad_tags == 0, "irq failures %lu, bad tags %lu", irq_failures, irq_bad_tags);
	CHECK(double_handouts == 0, "%lu pages handed out twice", double_handouts);
	CHECK(unchanged(before), "counts changed");
	end("allocation from the timer interrupt");
}

/* Each exported call on a painted stack (interrupts are masked here). */
static void test_stack(void)
{
	begin("stack use (painted)");
	struct page_stats before = drained_stats(), out;
	for (int round = 0; round < 4; round++) {
		size_t n = round == 0 ? 1 : round * 200;
		void *a = MEASURED(1, "page_alloc", page_alloc(n, round % 2 ? PAGE_ALLOC_ZERO : 0));
		void *b = MEASURED(2, "page_alloc_aligned", page_alloc_aligned(n, 512, PAGE_ALLOC_DMA32));
		CHECK(a && b, "alloc");
		if (!a || !b)
			break;
		uint64_t at = v2p(b) + n * PAGE;
		page_status st = MEASURED(3, "page_alloc_at", page_alloc_at(at, 1, 0));
		MEASURED(4, "page_get", page_get(a));
		MEASURED(5, "page_put", page_put(a));
		MEASURED(6, "page_refcount", page_refcount(a));
		MEASURED(7, "page_block_pages", page_block_pages(a));
		MEASURED(8, "page_to_pa", page_to_pa(a));
		MEASURED(9, "page_stats_get", page_stats_get(&out));
		MEASURED(10, "page_check", page_check());
		MEASURED(11, "page_split", page_split(b));
		for (size_t i = 0; i < n; i++)
			MEASURED(12, "page_free", page_free((char *)b + i * PAGE));
		if (st == PAGE_OK)
			MEASURED(13, "page_put (last ref)", page_put(p2v(at)));
		MEASURED(12, "page_free", page_free(a));
		MEASURED(14, "page_free (misuse)", page_free(a));
	}
	uint64_t worst = 0;
	for (unsigned i = 0; i < sizeof stack_figures / sizeof stack_figures[0]; i++)
		if (stack_figures[i].name) {
			kprintf("  %s: deepest %lu bytes over %lu calls\n", stack_figures[i].name,
				stack_figures[i].deepest, stack_figures[i].calls);
			if (stack_figures[i].deepest > worst)
				worst = stack_figures[i].deepest;
		}
	kprintf("  worst: %lu bytes (hooks included: irq_save/irq_restore/on_misuse run on this stack)\n", worst);
	CHECK(worst <= 2048, "a kpalloc call used %lu bytes of stack", worst);
	CHECK(unchanged(before), "counts changed");
	end("stack use (painted)");
}

static void test_kept(void)
{
	begin("reserved boot data intact");
	uint64_t now = checksum(p2v(mmap_buf_pa), mmap_buf_len);
	CHECK(now == mmap_checksum, "the multiboot memory map changed");
	struct page_stats s = stats();
	CHECK(s.used_pages == reserved_pages, "used %lu, reserved %lu", s.used_pages, reserved_pages);
	CHECK(s.high_water_pages >= s.total_pages - s.metadata_pages, "high water %lu", s.high_water_pages);
	print_stats("at the end");
	end("reserved boot data intact");
}

/* ---- stack use of the kpalloc calls, measured by painting ------------ */

static void stack_report(void)
{
	/* The boot stack was painted before the tests (below the deepest
	 * frame of kmain): report how deep anything went. */
	const uint64_t *p = (const uint64_t *)boot_stack_bottom;
	while (p < (const uint64_t *)boot_stack_top && *p == 0x5354414b5354414bull)
		p++;
	kprintf("  deepest stack use of the whole run: %lu bytes of %lu\n", (uint64_t)(boot_stack_top - (char *)p),
		(uint64_t)(boot_stack_top - boot_stack_bottom));
}

static void paint_stack(void)
{
	uint64_t rsp;
	__asm__ volatile("mov %%rsp, %0" : "=r"(rsp));
	for (uint64_t *p = (uint64_t *)boot_stack_bottom; (uint64_t)p < rsp - 256; p++)
		*p = 0x5354414b5354414bull;
}

void kmain(uint32_t magic, uint64_t mbi)
{
	serial_init();
	kprintf("kpalloc demo kernel: kernel at %p (KBASE %lx, memory at %lx + physical), "
		"kpalloc %d.%d.%d\n",
		(void *)_kernel_start, (uint64_t)KBASE, (uint64_t)PHYS_OFFSET, KPALLOC_VERSION_MAJOR,
		KPALLOC_VERSION_MINOR, KPALLOC_VERSION_PATCH);
	read_multiboot(magic, mbi);
	add_keep(mbi, mbi + sizeof(struct mb_info), "multiboot information");
	add_keep(mmap_buf_pa, mmap_buf_pa + mmap_buf_len, "multiboot memory map");

	/* The kernel's own page tables: the direct map of all memory. */
	uint64_t *pml4 = static_table();
	if (!map_kernel_space(pml4, static_table, 1))
		kpanic("mapping the kernel space");
	kernel_cr3 = v2p_image(pml4);
	write_cr3(kernel_cr3);
	kprintf("kernel page tables: %u pages, %lu MiB mapped at %lx\n", boot_tables_used, max_pa / MIB,
		(uint64_t)PHYS_OFFSET);

	/* TSC rate, from the PIT channel 2 one-shot (10 ms). */
	outb(0x61, (inb(0x61) & ~0x02) | 0x01);
	outb(0x43, 0xb0);
	outb(0x42, 11932 & 0xff);
	outb(0x42, 11932 >> 8);
	uint64_t t0 = rdtsc();
	while (!(inb(0x61) & 0x20))
		;
	tsc_per_ms = (rdtsc() - t0) / 10;
	if (!tsc_per_ms)
		tsc_per_ms = 1;

	idt_init();
	struct page_config cfg = {
		.phys_offset = PHYS_OFFSET,
		.irq_save = irq_save,
		.irq_restore = irq_restore,
		.panic = kpanic,
		.on_misuse = on_misuse,
		.cpu_id = cpu_id, /* per-CPU caches of single pages */
	};
	page_status st = page_init(&cfg);
	if (st != PAGE_OK)
		kpanic(page_status_str(st));
	paint_stack();

	add_regions();
	test_exhaust();
	test_cpu_cache();
	test_address_space();
	test_share();
	test_split();
	test_aligned();
	test_dma32_high();
	test_stack();
	test_irq();
	test_kept();
	test_dump();
	stack_report();

	kprintf("%u passed, %u failed\n", passed, failed);
	qemu_exit(failed == 0);
}
