/*
 * kpalloc_pintos: the Pintos page allocator interface (threads/palloc.h)
 * on top of kpalloc, for the original 80x86 Pintos and for KAIST's x86-64
 * Pintos. A Pintos kernel switches by replacing threads/palloc.c with
 * pintos/palloc.c and threads/palloc.h with this header (or a palloc.h that
 * includes it); see pintos/README.md.
 *
 * Flavour, chosen when palloc.c and its callers are compiled:
 *   default                 void palloc_init (size_t user_page_limit);
 *                           (original Pintos: threads/init.c passes -ul)
 *   -DKPALLOC_PINTOS_KAIST  uint64_t palloc_init (void);
 *                           extern size_t user_page_limit;
 *                           (KAIST: returns the end of usable memory)
 * Both call palloc_platform(), which the kernel supplies, to learn its
 * memory map and hooks, then palloc_init_regions().
 *
 * Differences from the Pintos bitmap allocator, all on misuse: a call that
 * is refused changes nothing and is reported through the kernel's
 * page_config.on_misuse hook:
 *   - palloc_get_multiple (flags, 0) returns NULL (reported as PAGE_EINVAL);
 *   - palloc_free_multiple (p, n) with n different from the block's length
 *     (as allocated) is refused with PAGE_EINVAL; so is palloc_free_page on
 *     a block of several pages;
 *   - freeing NULL, a free page, an interior page or an address kpalloc does
 *     not manage is refused (PAGE_ENOTMANAGED, PAGE_ENOTALLOCATED,
 *     PAGE_ENOTHEAD) instead of being ignored (NULL) or an ASSERT.
 * PAL_ASSERT failures call page_config.panic with kpalloc's message
 * ("kpalloc: allocation failed: count=... flags=0x... free_pages=...").
 */

#ifndef KPALLOC_PINTOS_H
#define KPALLOC_PINTOS_H

/* Stands in for Pintos' own threads/palloc.h if that is included later. */
#ifndef THREADS_PALLOC_H
#define THREADS_PALLOC_H
#endif

#include <stddef.h>
#include <stdint.h>

#include "kpalloc.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How to allocate pages: the Pintos values, equal to PAGE_ALLOC_ASSERT,
 * PAGE_ALLOC_ZERO and PAGE_ALLOC_USER (other kpalloc flags such as
 * PAGE_ALLOC_DMA32 may be or-ed in). */
enum palloc_flags {
  PAL_ASSERT = 001, /* Panic on failure. */
  PAL_ZERO = 002,   /* Zero page contents. */
  PAL_USER = 004    /* User page. */
};

/* Most regions palloc_platform() may describe. */
#define PALLOC_MAX_REGIONS 32

/* Smallest region or piece of one, in pages, that is added to a pool: one
 * page of kpalloc metadata plus one usable page. */
#define PALLOC_MIN_PIECE_PAGES 2

/* Usable RAM: physical addresses [start, end), rounded inward to pages. */
struct palloc_region {
  uint64_t start;
  uint64_t end;
};

/* What palloc_init_regions() did. Page counts include each pool's kpalloc
 * metadata pages (as the original Pintos pools include their bitmaps). */
struct palloc_layout {
  size_t kernel_pages; /* pages given to PAGE_POOL_KERNEL */
  size_t user_pages;   /* pages given to PAGE_POOL_USER */
  size_t kernel_regions;
  size_t user_regions;
  uint64_t mem_end;    /* highest physical end of the regions (0 if none) */
};

/* Sets kpalloc up and splits `regions` into the two Pintos pools, as the
 * original palloc_init does: user_pages = min(total / 2, user_page_limit)
 * pages at the top of memory go to PAGE_POOL_USER, the rest (from the bottom)
 * to PAGE_POOL_KERNEL, with page_region_add(). A region that straddles the
 * boundary is split at a page boundary. Regions are sorted by address
 * first; a region or piece smaller than PALLOC_MIN_PIECE_PAGES (too small
 * for kpalloc's metadata and a page) is left out, so a pool may get one page
 * less than its share.
 *
 * `cfg` goes to page_init() (phys_offset: Pintos' PHYS_BASE or KERN_BASE;
 * panic: a function calling PANIC; on_misuse: optional) and its on_misuse
 * hook is kept for the misuse found here. `layout` may be NULL.
 *
 * Returns PAGE_OK; PAGE_EINVAL for NULL regions with a nonzero count or more
 * than PALLOC_MAX_REGIONS; PAGE_EOVERLAP if two regions share a page (both
 * reported through on_misuse, nothing added); or what page_init() or
 * page_region_add() returned. Call once, before any other palloc function. */
page_status palloc_init_regions(const page_config *cfg, const struct palloc_region *regions,
                                size_t count, size_t user_page_limit,
                                struct palloc_layout *layout);

/* Supplied by the kernel when it calls palloc_init(): fills `*cfg` (zeroed
 * beforehand) and up to `max` (PALLOC_MAX_REGIONS) entries of `regions` with
 * its usable RAM (excluding the kernel image and anything else in use), and
 * returns how many it filled. See pintos/README.md for both flavours. */
size_t palloc_platform(page_config *cfg, struct palloc_region *regions, size_t max);

#ifdef KPALLOC_PINTOS_KAIST
/* Maximum number of pages to put in the user pool (KAIST: set by -ul in
 * threads/init.c; defined in palloc.c as SIZE_MAX). */
extern size_t user_page_limit;
/* palloc_platform() + palloc_init_regions(cfg, ..., user_page_limit); returns
 * the end of usable physical memory (layout.mem_end) for paging_init(). */
uint64_t palloc_init(void);
#else
/* palloc_platform() + palloc_init_regions(cfg, ..., user_page_limit). */
void palloc_init(size_t user_page_limit);
#endif

/* Obtains one page / `page_cnt` physically contiguous pages and returns
 * the kernel virtual address, or NULL (panic with PAL_ASSERT). */
void *palloc_get_page(enum palloc_flags flags);
void *palloc_get_multiple(enum palloc_flags flags, size_t page_cnt);

/* Frees the page / the `page_cnt` pages at `pages`, which must be a block
 * obtained with exactly that many pages. */
void palloc_free_page(void *page);
void palloc_free_multiple(void *pages, size_t page_cnt);

/* What palloc_init_regions() did (all zero before it). */
const struct palloc_layout *palloc_get_layout(void);

/* Calls refused as misuse by this layer itself (bad regions given to
 * palloc_init_regions). Misuse of the free functions is found and counted
 * by kpalloc, in page_stats.misuse_reports. */
uint64_t palloc_misuse_count(void);

#ifdef __cplusplus
}
#endif

#endif /* KPALLOC_PINTOS_H */
