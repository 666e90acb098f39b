//! What the fuzz targets share: a cursor that takes typed values from the
//! fuzzer's bytes, and big-endian field readers for checking encoded data
//! independently of the crate's own decoders.

/// Takes values from the front of the fuzzer's input; once it is used up,
/// every value is 0 (so that short inputs still make whole cases).
pub struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    /// A cursor at the start of `data`.
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { rest: data }
    }

    /// Whether every byte was taken.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = tail;
        head
    }

    /// The bytes not taken yet, all of them.
    pub fn rest(&mut self) -> &'a [u8] {
        self.bytes(self.rest.len())
    }

    /// The next byte.
    pub fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    /// The next two bytes, big-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.array())
    }

    /// The next four bytes, big-endian.
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.array())
    }

    /// The next eight bytes, big-endian.
    pub fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.array())
    }

    /// The next bit of a byte, as a flag.
    pub fn flag(&mut self) -> bool {
        self.u8() & 1 != 0
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0; N];
        let b = self.bytes(N);
        a[..b.len()].copy_from_slice(b);
        a
    }
}

/// The big-endian number in `data[at..at + N]`, 0 where the data ends.
pub fn be<const N: usize>(data: &[u8], at: usize) -> u64 {
    (0..N).fold(0, |v, i| v << 8 | u64::from(data.get(at + i).copied().unwrap_or(0)))
}

/// Whether `part` lies within `whole` (the same memory, not equal bytes).
pub fn within(part: &[u8], whole: &[u8]) -> bool {
    let (p, w) = (part.as_ptr_range(), whole.as_ptr_range());
    part.is_empty() || (w.start <= p.start && p.end <= w.end)
}
