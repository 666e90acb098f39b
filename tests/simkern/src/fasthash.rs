//! A fast hash for the simulated kernel's bookkeeping maps (live
//! allocations, I/Os CTL holds), which are keyed by addresses and looked up
//! on every I/O: the multiply-rotate hash of rustc's `FxHasher`, without
//! the DoS resistance std's SipHash pays for, which a simulator does not
//! need.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` with [`FastHasher`].
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// The multiplier of `FxHasher`.
const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

/// The hasher of [`FastMap`].
#[derive(Clone, Copy, Debug, Default)]
pub struct FastHasher(u64);

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_spread_and_maps_work() {
        let mut m: FastMap<usize, usize> = FastMap::default();
        for i in 0..10_000usize {
            m.insert(0x1000 + i * 64, i);
        }
        assert_eq!(m.len(), 10_000);
        assert_eq!(m.get(&(0x1000 + 64 * 777)), Some(&777));
        let h = |n: usize| {
            let mut h = FastHasher::default();
            h.write_usize(n);
            h.finish()
        };
        assert_ne!(h(0x1000) >> 57, h(0x1040) >> 57, "high bits differ for neighbours");
    }
}
