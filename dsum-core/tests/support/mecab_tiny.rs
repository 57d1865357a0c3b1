//! A tiny, structurally valid Mecab-ko dictionary in memory: the starting point of the
//! corrupted-dictionary tests (tests/mecab.rs) and of the fuzz target `mecab_dict`.

pub const DICRC: &str = "cost-factor = 800\nbos-feature = BOS/EOS,*,*,*,*,*,*,*\n";

/// A structurally valid 1x1 matrix, 2-category char.bin and empty dictionaries, to corrupt
/// one file at a time (`sys.dic`, `matrix.bin`, `char.bin`, `unk.dic`, `dicrc`).
pub fn tiny_files() -> [Vec<u8>; 5] {
    let mut matrix = vec![1, 0, 1, 0];
    matrix.extend_from_slice(&0i16.to_le_bytes());
    let mut chars = 2u32.to_le_bytes().to_vec();
    for name in ["DEFAULT", "SPACE"] {
        let mut n = [0u8; 32];
        n[..name.len()].copy_from_slice(name.as_bytes());
        chars.extend_from_slice(&n);
    }
    chars.extend(std::iter::repeat_n(0u8, 4 * 0xffff));
    let dic = |kind: u32| {
        let mut d = Vec::new();
        // double array: a root unit only
        let trie: Vec<u8> = [1i32.to_le_bytes(), 0u32.to_le_bytes()].concat();
        let size = 72 + trie.len();
        for v in [
            (size as u32) ^ 0xef71_8f77,
            102,
            kind,
            0,
            1,
            1,
            trie.len() as u32,
            0,
            0,
            0,
        ] {
            d.extend_from_slice(&v.to_le_bytes());
        }
        let mut charset = [0u8; 32];
        charset[..5].copy_from_slice(b"UTF-8");
        d.extend_from_slice(&charset);
        d.extend_from_slice(&trie);
        d
    };
    [dic(0), matrix, chars, dic(2), DICRC.as_bytes().to_vec()]
}
