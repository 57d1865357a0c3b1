//! The double-array trie of a compiled MeCab dictionary (Darts 0.32 layout, as written by
//! `mecab-dict-index`): units of `{base: i32, check: u32}`, keys walked byte by byte with
//! transition `base + byte + 1`, a leaf (`check == base`, `base < 0`) holding `-value - 1`.

use super::error::read_u32;

/// A borrowed view of the unit array. Every access is bounds-checked: an index out of the
/// array is treated as "no transition", so a corrupted trie yields no matches, not a panic.
#[derive(Clone, Copy)]
pub(crate) struct DoubleArray<'a> {
    units: &'a [u8],
}

/// One match of a prefix search: the stored value and the key length in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TrieMatch {
    pub value: u32,
    pub len: usize,
}

impl<'a> DoubleArray<'a> {
    pub(crate) fn new(units: &'a [u8]) -> Self {
        DoubleArray { units }
    }

    #[inline]
    fn unit(&self, i: u32) -> Option<(i32, u32)> {
        let off = (i as usize).checked_mul(8)?;
        let base = read_u32(self.units, off)? as i32;
        let check = read_u32(self.units, off + 4)?;
        Some((base, check))
    }

    /// The value stored at node `b` for the key that ends there, if any.
    #[inline]
    fn leaf(&self, b: i32) -> Option<u32> {
        let (n, check) = self.unit(b as u32)?;
        (check == b as u32 && n < 0).then(|| (-(n as i64) - 1) as u32)
    }

    #[inline]
    fn step(&self, b: i32, byte: u8) -> Option<i32> {
        let p = (b as u32).wrapping_add(byte as u32).wrapping_add(1);
        let (base, check) = self.unit(p)?;
        (check == b as u32).then_some(base)
    }

    /// Calls `f` for every key of the trie that is a prefix of `key`, shortest first.
    /// Like Darts, the empty key is never reported for an empty `key` (MeCab then falls
    /// back to `strlen`, which is 0 at the end of the sentence).
    #[inline]
    pub(crate) fn common_prefix_search(&self, key: &[u8], mut f: impl FnMut(TrieMatch)) {
        let Some((mut b, _)) = self.unit(0) else {
            return;
        };
        for (i, &byte) in key.iter().enumerate() {
            if let Some(value) = self.leaf(b) {
                f(TrieMatch { value, len: i });
            }
            match self.step(b, byte) {
                Some(nb) => b = nb,
                None => return,
            }
        }
        if let Some(value) = self.leaf(b) {
            f(TrieMatch {
                value,
                len: key.len(),
            });
        }
    }

    /// The value stored for exactly `key`.
    pub(crate) fn exact_match(&self, key: &[u8]) -> Option<u32> {
        let (mut b, _) = self.unit(0)?;
        for &byte in key {
            b = self.step(b, byte)?;
        }
        self.leaf(b)
    }
}
