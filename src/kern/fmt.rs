//! A fixed-size, NUL-terminated text buffer for formatting kernel messages
//! without allocating.

use core::ffi::CStr;
use core::fmt;

/// Text formatted into `N` bytes; what does not fit is cut off, at a
/// character boundary, and marked with a trailing `...`.  The buffer always
/// holds a C string: a NUL that the text itself contains is stored as `?`.
#[derive(Clone, Copy)]
pub struct FmtBuf<const N: usize> {
    buf: [u8; N],
    len: usize,
    truncated: bool,
}

impl<const N: usize> FmtBuf<N> {
    const MARK: &'static [u8] = b"...";
    /// Rejects, at compile time, buffers without room for the mark and the NUL.
    const ROOMY: () = assert!(N > 4, "FmtBuf needs room for `...` and the NUL");

    /// An empty buffer.
    pub const fn new() -> Self {
        let () = Self::ROOMY;
        FmtBuf {
            buf: [0; N],
            len: 0,
            truncated: false,
        }
    }

    /// The text written so far, without the terminating NUL.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }

    /// The text (always whole UTF-8 characters).
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(self.as_bytes()).unwrap_or("")
    }

    /// The text as a C string.
    pub fn as_c_str(&self) -> &CStr {
        // `len < N` always holds and the byte at `len` is still zero.
        self.buf
            .get(..=self.len)
            .and_then(|b| CStr::from_bytes_until_nul(b).ok())
            .unwrap_or(c"")
    }

    /// Whether text was cut off.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    fn push(&mut self, bytes: &[u8]) {
        for (dst, &src) in self.buf.iter_mut().skip(self.len).zip(bytes) {
            *dst = if src == 0 { b'?' } else { src };
        }
        self.len = self.len.saturating_add(bytes.len()).min(N);
    }
}

impl<const N: usize> Default for FmtBuf<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Write for FmtBuf<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.truncated {
            return Ok(());
        }
        // One byte stays free for the NUL.
        let room = N.saturating_sub(1).saturating_sub(self.len);
        let bytes = s.as_bytes();
        if bytes.len() <= room {
            self.push(bytes);
        } else {
            // Keep what fits of whole characters, then the mark.
            let limit = N.saturating_sub(1).saturating_sub(Self::MARK.len());
            if self.len > limit {
                // Back off into what is already there, to a character start.
                let mut l = limit;
                while l > 0 && self.buf.get(l).is_some_and(|&b| b & 0xc0 == 0x80) {
                    l = l.saturating_sub(1);
                }
                self.len = l;
            } else {
                let mut keep = limit.saturating_sub(self.len).min(bytes.len());
                while !s.is_char_boundary(keep) {
                    keep = keep.saturating_sub(1);
                }
                self.push(bytes.get(..keep).unwrap_or(&[]));
            }
            self.push(Self::MARK);
            self.truncated = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;

    #[test]
    fn fits_and_terminates() {
        let mut b = FmtBuf::<16>::new();
        let (unit, state) = (3, "ok");
        write!(b, "da{unit}: {state}").unwrap();
        assert_eq!(b.as_str(), "da3: ok");
        assert_eq!(b.as_c_str().to_bytes(), b"da3: ok");
        assert!(!b.truncated());
    }

    #[test]
    fn cuts_at_a_character_and_marks_it() {
        let mut b = FmtBuf::<8>::new();
        b.write_str("abcdefghij").unwrap();
        assert_eq!(b.as_str(), "abcd...");
        assert!(b.truncated());
        b.write_str("more").unwrap();
        assert_eq!(b.as_str(), "abcd...", "nothing after the mark");
        let mut u = FmtBuf::<8>::new();
        u.write_str("ab\u{e9}\u{e9}\u{e9}").unwrap();
        assert_eq!(u.as_str(), "ab\u{e9}...", "no half character");
        let mut full = FmtBuf::<8>::new();
        full.write_str("abcdefg").unwrap();
        assert_eq!(full.as_str(), "abcdefg");
        full.write_str("h").unwrap();
        assert_eq!(full.as_str(), "abcd...", "backs off into what was written");
        let mut nul = FmtBuf::<8>::new();
        nul.write_str("a\0b").unwrap();
        assert_eq!(nul.as_c_str().to_bytes(), b"a?b");
    }
}
