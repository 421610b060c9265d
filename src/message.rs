//! Panic messages with numbers in them, without `core::fmt` (which would
//! add about 190 KB to a kernel).

#![deny(unsafe_code)]

use core::ffi::CStr;

const CAPACITY: usize = 128;

/// A NUL-terminated message in a fixed buffer; text past the end is cut.
pub(crate) struct Message {
    bytes: [u8; CAPACITY],
    len: usize,
}

impl Message {
    pub(crate) fn new() -> Self {
        Message {
            bytes: [0; CAPACITY],
            len: 0,
        }
    }

    pub(crate) fn text(&mut self, text: &str) -> &mut Self {
        for &byte in text.as_bytes() {
            if byte != 0 && self.len < CAPACITY - 1 {
                self.bytes[self.len] = byte;
                self.len += 1;
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

    pub(crate) fn as_c_str(&self) -> &CStr {
        // The buffer always ends with a NUL: `text` stops one byte short.
        CStr::from_bytes_until_nul(&self.bytes).unwrap_or(c"kpalloc: message")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_text_make_one_c_string() {
        let mut message = Message::new();
        message
            .text("count=")
            .decimal(1234)
            .text(" flags=0x")
            .hex(0xa)
            .text(" zero=")
            .decimal(0);
        assert_eq!(message.as_c_str(), c"count=1234 flags=0xa zero=0");
    }

    #[test]
    fn long_text_is_cut_and_stays_terminated() {
        let mut message = Message::new();
        for _ in 0..20 {
            message.text("0123456789");
        }
        assert_eq!(message.as_c_str().to_bytes().len(), CAPACITY - 1);
    }
}
