//! Text without `core::fmt` (which would add about 190 KB to a kernel):
//! panic messages and the allocator dump are written with this.

#![deny(unsafe_code)]

use core::ffi::CStr;

/// Writes text into a caller's buffer, always NUL-terminated, cutting what
/// does not fit while counting the bytes the whole text needs.
pub(crate) struct TextWriter<'a> {
    buffer: &'a mut [u8],
    written: usize,
    needed: usize,
}

impl<'a> TextWriter<'a> {
    pub(crate) fn new(buffer: &'a mut [u8]) -> Self {
        if let Some(first) = buffer.first_mut() {
            *first = 0;
        }
        TextWriter {
            buffer,
            written: 0,
            needed: 0,
        }
    }

    /// Bytes the whole text needs, without the NUL.
    pub(crate) fn needed(&self) -> usize {
        self.needed
    }

    pub(crate) fn text(&mut self, text: &str) -> &mut Self {
        for &byte in text.as_bytes() {
            self.needed += 1;
            // Keep one byte for the NUL.
            if self.written + 1 < self.buffer.len() {
                self.buffer[self.written] = byte;
                self.written += 1;
                self.buffer[self.written] = 0;
            }
        }
        self
    }

    pub(crate) fn decimal(&mut self, value: u64) -> &mut Self {
        self.number(value, 10)
    }

    pub(crate) fn hex(&mut self, value: u64) -> &mut Self {
        self.number(value, 16)
    }

    fn number(&mut self, mut value: u64, radix: u64) -> &mut Self {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b"0123456789abcdef"[(value % radix) as usize];
            value /= radix;
            if value == 0 {
                break;
            }
        }
        // Digits are ASCII.
        self.text(core::str::from_utf8(&digits[start..]).unwrap_or("?"))
    }

    /// The text written so far (empty for an empty buffer).
    pub(crate) fn as_c_str(&self) -> &CStr {
        CStr::from_bytes_until_nul(self.buffer).unwrap_or(c"")
    }
}

/// A short message in its own buffer, for panic hooks.
pub(crate) struct Message {
    bytes: [u8; 128],
}

impl Message {
    pub(crate) fn new() -> Self {
        Message { bytes: [0; 128] }
    }

    pub(crate) fn writer(&mut self) -> TextWriter<'_> {
        TextWriter::new(&mut self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_text_make_one_c_string() {
        let mut message = Message::new();
        let mut writer = message.writer();
        writer
            .text("count=")
            .decimal(1234)
            .text(" flags=0x")
            .hex(0xa)
            .text(" zero=")
            .decimal(0);
        assert_eq!(writer.as_c_str(), c"count=1234 flags=0xa zero=0");
    }

    #[test]
    fn long_text_is_cut_stays_terminated_and_counts_what_it_needs() {
        let mut buffer = [0xFFu8; 16];
        let mut writer = TextWriter::new(&mut buffer);
        for _ in 0..3 {
            writer.text("0123456789");
        }
        assert_eq!(writer.needed(), 30);
        assert_eq!(writer.as_c_str().to_bytes().len(), 15);
        let mut empty = [0u8; 0];
        assert_eq!(TextWriter::new(&mut empty).text("x").needed(), 1);
    }
}
