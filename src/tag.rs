//! Where a block was allocated, recorded under `PAGE_DEBUG_TRACK`.

use core::ffi::{c_char, CStr};
use core::panic::Location;

/// An allocation site: a file name (or a C tag such as "file.c:42") and a
/// line (0 when the tag carries it). Always refers to static text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Tag {
    text: usize,
    len: u32,
    line: u32,
}

impl Tag {
    /// No site recorded.
    pub const NONE: Tag = Tag {
        text: 0,
        len: 0,
        line: 0,
    };

    /// The Rust caller's location (from `#[track_caller]`).
    pub fn from_location(location: &'static Location<'static>) -> Tag {
        let file = location.file();
        Tag {
            text: file.as_ptr() as usize,
            len: file.len().min(u32::MAX as usize) as u32,
            line: location.line(),
        }
    }

    /// A tag given by C code.
    ///
    /// # Safety
    /// `tag` is NULL or a NUL-terminated string that stays valid and
    /// unchanged for the rest of the program (a string literal).
    pub unsafe fn from_c(tag: *const c_char) -> Tag {
        if tag.is_null() {
            return Tag::NONE;
        }
        // SAFETY: per this function's contract.
        let text = unsafe { CStr::from_ptr(tag) }.to_bytes();
        Tag {
            text: text.as_ptr() as usize,
            len: text.len().min(u32::MAX as usize) as u32,
            line: 0,
        }
    }

    /// The file name or C tag (not NUL-terminated).
    pub fn text(&self) -> &'static [u8] {
        if self.text == 0 {
            return &[];
        }
        // SAFETY: both constructors take static text of at least `len` bytes.
        unsafe { core::slice::from_raw_parts(core::ptr::with_exposed_provenance(self.text), self.len as usize) }
    }

    /// Pointer to the text, for C.
    pub fn text_ptr(&self) -> *const c_char {
        core::ptr::with_exposed_provenance(self.text)
    }

    /// Length of the text in bytes.
    pub fn text_len(&self) -> usize {
        self.len as usize
    }

    /// The line, or 0 when the text carries it.
    pub fn line(&self) -> u32 {
        self.line
    }
}
