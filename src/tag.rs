//! Where a block was allocated, recorded under `PAGE_DEBUG_TRACK`.

use core::ffi::c_char;
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

/// The longest C tag kept; a longer one is cut.
const MAX_C_TAG_LEN: usize = 4096;

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
        // Measured here, with a bound, not with CStr::from_ptr: on a hosted
        // target (a 32-bit kernel is built for one) that calls the C
        // library's strlen, which a kernel need not have.
        let mut len = 0;
        // SAFETY: per this function's contract, every byte up to the NUL
        // is readable.
        while len < MAX_C_TAG_LEN && unsafe { *tag.add(len) } != 0 {
            len += 1;
        }
        Tag {
            text: tag as usize,
            len: len as u32,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_c_tag_is_measured_up_to_its_nul_and_cut_past_the_bound() {
        static SHORT: &[u8] = b"page tables\0";
        static LONG: [u8; MAX_C_TAG_LEN + 101] = {
            let mut text = [b'a'; MAX_C_TAG_LEN + 101];
            text[MAX_C_TAG_LEN + 100] = 0;
            text
        };
        // SAFETY: NUL-terminated statics, and NULL.
        let (short, long, none) = unsafe {
            (
                Tag::from_c(SHORT.as_ptr().cast()),
                Tag::from_c(LONG.as_ptr().cast()),
                Tag::from_c(core::ptr::null()),
            )
        };
        assert_eq!(short.text(), b"page tables");
        assert_eq!(long.text().len(), MAX_C_TAG_LEN);
        assert!(none.text().is_empty());
    }
}
