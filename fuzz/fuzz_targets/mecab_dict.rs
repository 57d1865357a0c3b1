//! The Mecab-ko dictionary reader. The first byte picks which of the five files
//! (`sys.dic`, `matrix.bin`, `char.bin`, `unk.dic`, `dicrc`) the rest of the input replaces
//! in a tiny valid dictionary; a dictionary that loads then analyses a fixed text. Never a
//! panic, never an allocation sized by an unchecked count.
#![no_main]
use dsum_core::mecab::Mecab;
use libfuzzer_sys::fuzz_target;

#[path = "../../dsum-core/tests/support/mecab_tiny.rs"]
mod mecab_tiny;
use mecab_tiny::tiny_files;

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
