//! A fixed-size, NUL-terminated text buffer for formatting kernel messages
//! without allocating.

use core::ffi::CStr;
use core::fmt;

/// Text formatted into `N` bytes; what does not fit is cut off and marked
/// with a trailing `...`.  The buffer always holds a C string: a NUL that
/// the text itself contains is stored as `?`.
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
        self.len += bytes.len();
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
            // Fill up, then overwrite the tail with the mark.
            self.push(bytes.get(..room).unwrap_or(&[]));
            self.len = N.saturating_sub(1 + Self::MARK.len());
            self.push(Self::MARK);
            self.truncated = true;
        }
        Ok(())
    }
}
