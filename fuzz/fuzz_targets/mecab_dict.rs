//! The Mecab-ko dictionary reader. The first byte picks which of the five files
//! (`sys.dic`, `matrix.bin`, `char.bin`, `unk.dic`, `dicrc`) the rest of the input replaces
//! in a tiny valid dictionary; a dictionary that loads then analyses a fixed text. Never a
//! panic, never an allocation sized by an unchecked count.
#![no_main]
use dsum_core::mecab::Mecab;
use libfuzzer_sys::fuzz_target;

const DICRC: &str = "cost-factor = 800\nbos-feature = BOS/EOS,*,*,*,*,*,*,*\n";

/// A structurally valid 1x1 matrix, 2-category char.bin and empty dictionaries (the same
/// as dsum-core/tests/mecab.rs).
fn tiny_files() -> [Vec<u8>; 5] {
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

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let mut f = tiny_files();
    f[sel as usize % 5] = rest.to_vec();
    let [sys, matrix, chars, unk, dicrc] = f;
    let dicrc = String::from_utf8_lossy(&dicrc).into_owned();
    if let Ok(m) = Mecab::from_bytes(sys, matrix, chars, unk, &dicrc) {
        let _ = m.morphs("오늘 회의는 3시에 시작합니다. abc ＡＢＣ 😀");
        let _ = m.pos("가");
    }
});
