//! A leak report from Rust: with PAGE_DEBUG_TRACK, blocks made by the RAII
//! constructors remember the line that called them (`#[track_caller]`).

mod common;

use common::TestMemory;
use kpalloc::ffi::{page_init, page_region_add};
use kpalloc::types::{PAGE_DEBUG_TRACK, PAGE_POOL_KERNEL};
use kpalloc::{global, ContigPages, Page, PageConfig, PageStatus};

#[test]
fn leaked_pages_are_reported_with_the_line_that_allocated_them() {
    let memory = TestMemory::new(0x10_0000, 64);
    let config = PageConfig {
        phys_offset: memory.phys_offset,
        debug: PAGE_DEBUG_TRACK,
        ..PageConfig::default()
    };
    assert_eq!(unsafe { page_init(&config) }, PageStatus::OK);
    let status = unsafe { page_region_add(memory.pa(0).as_u64(), memory.pa(64).as_u64(), PAGE_POOL_KERNEL) };
    assert_eq!(status, PageStatus::OK);

    let kept = Page::new().unwrap();
    let page_line = line!() - 1;
    let block = ContigPages::new(3 * 4096).unwrap();
    let block_line = line!() - 1;
    drop(Page::new().unwrap()); // freed: not a leak
                                // Leak both on purpose.
    let (page_pa, block_pa) = (kept.into_raw(), block.into_raw());

    let mut report = Vec::new();
    // SAFETY: walks the live blocks; releases nothing.
    unsafe { global() }.unwrap().for_each_live(|live| {
        let file = std::str::from_utf8(live.tag.text()).unwrap().to_owned();
        report.push((live.pa, live.pages, file, live.tag.line()));
    });
    assert_eq!(report.len(), 2, "{report:?}");
    for (pa, pages, line) in [(page_pa, 1, page_line), (block_pa, 3, block_line)] {
        let entry = report.iter().find(|entry| entry.0 == pa).expect("reported");
        assert_eq!((entry.1, entry.3), (pages, line));
        assert!(entry.2.ends_with("leak_report.rs"), "{}", entry.2);
    }
}
