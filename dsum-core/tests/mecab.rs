//! Mecab-ko parity and robustness.
//!
//! The dictionary folder comes from `DSUM_MECAB_DIC` (e.g.
//! `site-packages/mecab_ko_dic/dictionary` of `pip install python-mecab-ko-dic`). Without it
//! the tests that need it print a skip notice, except under `CI`, where it is a failure.
//! Reference output: tests/fixtures/mecab/morphs.json, from
//! tools/fixtures/make_mecab_fixtures.py (python-mecab-ko 1.3.7).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use dsum_core::mecab::{Mecab, MecabError};
use proptest::prelude::*;

const FILES: [&str; 5] = ["sys.dic", "matrix.bin", "char.bin", "unk.dic", "dicrc"];

fn dictionary_dir() -> Option<PathBuf> {
    match std::env::var_os("DSUM_MECAB_DIC").filter(|v| !v.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir)),
        None if std::env::var_os("CI").is_some() => {
            panic!("DSUM_MECAB_DIC is not set: CI must provide the mecab-ko-dic folder (pip install python-mecab-ko-dic)")
        }
        None => {
            // Written past the test harness's capture, once, so the skip is visible.
            static NOTICE: std::sync::Once = std::sync::Once::new();
            NOTICE.call_once(|| {
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED: set DSUM_MECAB_DIC to a mecab-ko-dic folder \
                     (site-packages/mecab_ko_dic/dictionary) to run the Mecab-ko parity tests"
                );
            });
            None
        }
    }
}

fn read_files(dir: &Path) -> [Vec<u8>; 5] {
    FILES.map(|f| {
        std::fs::read(dir.join(f)).unwrap_or_else(|e| panic!("{}: {e}", dir.join(f).display()))
    })
}

fn from_files(f: [Vec<u8>; 5]) -> Result<Mecab, MecabError> {
    let [sys, matrix, chars, unk, dicrc] = f;
    Mecab::from_bytes(sys, matrix, chars, unk, &String::from_utf8_lossy(&dicrc))
}

/// One analyzer per test process; `None` when the dictionary is not available.
fn mecab() -> Option<&'static Mecab> {
    static MECAB: OnceLock<Option<Mecab>> = OnceLock::new();
    MECAB
        .get_or_init(|| {
            dictionary_dir()
                .map(|dir| from_files(read_files(&dir)).expect("loading the dictionary"))
        })
        .as_ref()
}

#[derive(serde::Deserialize)]
struct Fixtures {
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    text: String,
    morphs: Vec<String>,
    pos: Vec<(String, String)>,
}

fn fixtures() -> Fixtures {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/mecab/morphs.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture file"))
        .expect("fixture JSON")
}

#[test]
fn morphs_and_pos_match_python_mecab_ko() {
    let Some(mecab) = mecab() else { return };
    let fx = fixtures();
    assert!(
        fx.cases.len() >= 300,
        "fixture has only {} cases",
        fx.cases.len()
    );
    let mut failures = Vec::new();
    for case in &fx.cases {
        let morphs = mecab.morphs(&case.text);
        let pos = mecab.pos(&case.text);
        if morphs != case.morphs || pos != case.pos {
            failures.push(format!(
                "{:?}\n  want {:?}\n  got  {:?}",
                case.text, case.pos, pos
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} texts differ:\n{}",
        failures.len(),
        fx.cases.len(),
        failures.join("\n")
    );
}

#[test]
fn mecab_is_shareable_across_threads() {
    fn check<T: Send + Sync>() {}
    check::<Mecab>();
    let Some(mecab) = mecab() else { return };
    std::thread::scope(|s| {
        let a = s.spawn(|| mecab.morphs("아버지가방에들어가신다"));
        let b = s.spawn(|| mecab.morphs("아버지가방에들어가신다"));
        assert_eq!(a.join().unwrap(), b.join().unwrap());
    });
}

#[test]
fn text_stops_at_nul_like_the_c_api() {
    let Some(mecab) = mecab() else { return };
    assert_eq!(mecab.morphs("a\0b 가나"), vec!["a".to_string()]);
}

// ---- bad input: no dictionary needed -------------------------------------------------------

// The tiny dictionary (also the fuzz target mecab_dict's starting point).
#[path = "support/mecab_tiny.rs"]
mod mecab_tiny;
use mecab_tiny::tiny_files;

fn error_of(f: [Vec<u8>; 5]) -> MecabError {
    match from_files(f) {
        Ok(_) => panic!("a corrupted dictionary was accepted"),
        Err(e) => e,
    }
}

#[test]
fn wrong_magic_is_reported() {
    let mut f = tiny_files();
    f[0][0] ^= 0x55;
    let e = error_of(f);
    assert!(matches!(e, MecabError::BadMagic { .. }), "{e}");
    assert!(e.to_string().contains("sys.dic"), "{e}");

    let mut f = tiny_files();
    f[3] =
        b"this is not a dictionary at all, just some text of a hundred bytes or so ............."
            .to_vec();
    let e = error_of(f);
    assert!(matches!(e, MecabError::BadMagic { .. }), "{e}");
    assert!(e.to_string().contains("unk.dic"), "{e}");
}

#[test]
fn other_format_version_is_reported() {
    let mut f = tiny_files();
    f[0][4..8].copy_from_slice(&101u32.to_le_bytes());
    let e = error_of(f);
    assert!(
        matches!(
            e,
            MecabError::Version {
                found: 101,
                expected: 102,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn truncated_files_are_reported() {
    let mut f = tiny_files();
    f[0].truncate(f[0].len() - 3);
    let e = error_of(f);
    assert!(matches!(e, MecabError::Truncated { .. }), "{e}");
    assert!(e.to_string().contains("sys.dic"), "{e}");

    for (i, name) in [(1, "matrix.bin"), (2, "char.bin")] {
        let mut f = tiny_files();
        f[i].truncate(f[i].len() - 1);
        let e = error_of(f);
        assert!(matches!(e, MecabError::Truncated { .. }), "{e}");
        assert!(e.to_string().contains(name), "{e}");
    }
    for (i, name) in FILES.iter().enumerate().take(4) {
        let mut f = tiny_files();
        f[i].clear();
        let e = error_of(f);
        assert!(e.to_string().contains(name), "{e}");
    }
}

#[test]
fn inconsistent_sizes_are_reported() {
    let mut f = tiny_files();
    f[1][0] = 2; // 2x1 matrix header, 1x1 body
    assert!(error_of(f).to_string().contains("matrix.bin"));
    let mut f = tiny_files();
    f[2][0] = 200; // more categories than the file holds
    assert!(error_of(f).to_string().contains("char.bin"));
}

#[test]
fn categories_missing_from_unk_dic_are_reported() {
    // The tiny unk.dic has no entry for DEFAULT / SPACE: mecab refuses it too
    // ("cannot find UNK category").
    let e = error_of(tiny_files());
    assert!(e.to_string().contains("unk.dic"), "{e}");
}

#[cfg(feature = "std")]
#[test]
fn missing_file_is_reported_by_load() {
    let dir = std::env::temp_dir().join(format!("dsum-mecab-missing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in FILES.iter().zip(tiny_files()) {
        if *name != "char.bin" {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    let e = Mecab::load(&dir).err().expect("missing char.bin accepted");
    assert!(matches!(e, MecabError::Io { .. }), "{e}");
    assert!(e.to_string().contains("char.bin"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn real_dictionary_cut_anywhere_is_an_error_not_a_panic() {
    let Some(dir) = dictionary_dir() else { return };
    let files = read_files(&dir);
    let half = files[0].len() / 2;
    let last = files[0].len() - 1;
    for (i, cut) in [
        (0usize, 10usize),
        (0, 1000),
        (0, half),
        (0, last),
        (3, 100),
        (1, 7),
        (2, 1000),
    ] {
        let mut f = files.clone();
        f[i].truncate(cut);
        let e = error_of(f);
        assert!(e.to_string().contains(FILES[i]), "{e}");
    }
}

// ---- properties -------------------------------------------------------------------------------

/// mecab-ko-dic's SPACE category: the only characters a morpheme sequence leaves out
/// (checked on python-mecab-ko by the fixture script).
fn without_space(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\x0b' | '\r' | ' '))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics_and_keeps_every_character(s in "[^\u{0}]{0,40}") {
        if let Some(mecab) = mecab() {
            let morphs = mecab.morphs(&s);
            prop_assert_eq!(morphs.concat(), without_space(&s));
            prop_assert!(morphs.iter().all(|m| !m.is_empty()));
            prop_assert_eq!(mecab.pos(&s).len(), morphs.len());
        }
    }

    #[test]
    fn korean_like_text_keeps_every_character(s in "[가-힣ㄱ-ㅎㅏ-ㅣa-zA-Z0-9 .,!?~\t\n#:]{0,60}") {
        if let Some(mecab) = mecab() {
            prop_assert_eq!(mecab.morphs(&s).concat(), without_space(&s));
        }
    }
}

/// Random byte corruption of a real dictionary: loading either fails with an error or
/// succeeds and then analyses without panicking.
#[test]
fn corrupted_real_dictionary_never_panics() {
    let Some(dir) = dictionary_dir() else { return };
    let files = read_files(&dir);
    let mut rng = proptest::test_runner::TestRng::deterministic_rng(
        proptest::test_runner::RngAlgorithm::ChaCha,
    );
    let texts = [
        "#Person1#: 11,500원 입니다.",
        "ㅋㅋㅋ 어쩔티비 😀 漢字 hello",
        "  \t가\n나  ",
    ];
    for case in 0..24 {
        let mut f = files.clone();
        // sys.dic is large: corrupt only its first megabyte (header, trie root, ...) or its
        // tokens; unk.dic and char.bin anywhere past their sizes/magic.
        let target = [0usize, 3, 2][case % 3];
        let len = f[target].len();
        let lo = if target == 2 { 4 } else { 72 };
        let hi = if target == 0 { 1 << 20 } else { len };
        for _ in 0..(1 + rng.random_range(0..64)) {
            let i = rng.random_range(lo..hi);
            f[target][i] = rng.random();
        }
        if let Ok(m) = from_files(f) {
            for t in texts {
                let _ = m.morphs(t);
                let _ = m.pos(t);
            }
        }
    }
}
