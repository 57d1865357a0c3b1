//! Mecab-ko morpheme analysis in pure Rust, read from a compiled mecab-ko-dic folder
//! (`sys.dic`, `matrix.bin`, `char.bin`, `unk.dic`, `dicrc`), with output identical to
//! `python-mecab-ko` 1.3.7 (mecab 0.996 + mecab-ko 0.9.2) `MeCab().morphs()` / `.pos()`.
//!
//! Follows the C++ of mecab-ko: `dictionary.cpp` (file layout), `darts.h` (trie),
//! `char_property.h` (categories), `tokenizer.cpp` (lookup and unknown words),
//! `viterbi.cpp` + `connector.cpp` (best path, with mecab-ko's left-space penalty).

mod char_property;
mod dicrc;
mod dict;
mod error;
mod lattice;
mod matrix;
mod trie;

use std::string::String;
use std::vec::Vec;

use char_property::{CharInfo, CharProperty};
use dicrc::Dicrc;
use dict::{Dictionary, Token};
use lattice::Source;
use matrix::Matrix;

pub use error::MecabError;

/// The files of a compiled dictionary folder, in the order `from_bytes` takes them.
pub const DICTIONARY_FILES: [&str; 5] = ["sys.dic", "matrix.bin", "char.bin", "unk.dic", "dicrc"];

/// A loaded Mecab-ko analyzer. Immutable after loading: `Send + Sync`, shareable across
/// threads, analysis takes `&self`.
pub struct Mecab {
    sys: Dictionary,
    unk: Dictionary,
    matrix: Matrix,
    chars: CharProperty,
    dicrc: Dicrc,
    /// Unknown-word entries per character category (index = category id of `char.bin`).
    unk_tokens: Vec<Vec<Token>>,
    /// The category of U+0020: characters sharing it are skipped before a morpheme.
    space: CharInfo,
}

impl Mecab {
    /// Loads the dictionary folder `dir` (e.g. `site-packages/mecab_ko_dic/dictionary`).
    #[cfg(feature = "std")]
    pub fn load(dir: &std::path::Path) -> Result<Mecab, MecabError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|e| MecabError::Io {
                file: path.display().to_string(),
                message: e.to_string(),
            })
        };
        let sys = read("sys.dic")?;
        let matrix = read("matrix.bin")?;
        let chars = read("char.bin")?;
        let unk = read("unk.dic")?;
        let dicrc = read("dicrc")?;
        let dicrc = String::from_utf8(dicrc).map_err(|_| {
            MecabError::inconsistent(&dir.join("dicrc").display().to_string(), "not UTF-8")
        })?;
        Self::from_bytes(sys, matrix, chars, unk, &dicrc)
    }

    /// The same as [`Mecab::load`] from the file contents (for the browser).
    pub fn from_bytes(
        sys_dic: Vec<u8>,
        matrix_bin: Vec<u8>,
        char_bin: Vec<u8>,
        unk_dic: Vec<u8>,
        dicrc: &str,
    ) -> Result<Mecab, MecabError> {
        let dicrc = Dicrc::parse(dicrc)?;
        let chars = CharProperty::parse("char.bin", &char_bin)?;
        drop(char_bin);
        let matrix = Matrix::parse("matrix.bin", &matrix_bin)?;
        drop(matrix_bin);
        let sys = Dictionary::parse("sys.dic", sys_dic)?;
        let unk = Dictionary::parse("unk.dic", unk_dic)?;
        if sys.kind != 0 {
            return Err(MecabError::inconsistent(
                "sys.dic",
                format!("not a system dictionary (type {})", sys.kind),
            ));
        }
        for (file, d) in [("sys.dic", &sys), ("unk.dic", &unk)] {
            if d.lsize as usize != matrix.lsize || d.rsize as usize != matrix.rsize {
                return Err(MecabError::inconsistent(
                    file,
                    format!(
                        "context sizes {} x {} do not match matrix.bin ({} x {})",
                        d.lsize, d.rsize, matrix.lsize, matrix.rsize
                    ),
                ));
            }
            d.validate_tokens(file, matrix.lsize as u32, matrix.rsize as u32)?;
        }
        let mut unk_tokens = Vec::with_capacity(chars.names().len());
        for name in chars.names() {
            let Some((first, last)) = unk.exact_tokens(name.as_bytes()) else {
                return Err(MecabError::inconsistent(
                    "unk.dic",
                    format!("no entry for character category {name} of char.bin"),
                ));
            };
            unk_tokens.push((first..last).filter_map(|i| unk.token(i)).collect());
        }
        let space = chars.info_of(0x20);
        Ok(Mecab {
            sys,
            unk,
            matrix,
            chars,
            dicrc,
            unk_tokens,
            space,
        })
    }

    /// The morphemes of `text`, as `python-mecab-ko`'s `MeCab().morphs(text)`. The whole
    /// text is one sentence (newlines are whitespace); like the C API it stops at a NUL.
    pub fn morphs(&self, text: &str) -> Vec<String> {
        let bytes = until_nul(text);
        lattice::best_path(self, bytes)
            .iter()
            .map(|c| surface(bytes, c))
            .collect()
    }

    /// `(surface, tag)` pairs, as `python-mecab-ko`'s `MeCab().pos(text)`: the tag is the
    /// first field of the feature (`NNG`, `VV+EC`, `SL`, ...).
    pub fn pos(&self, text: &str) -> Vec<(String, String)> {
        let bytes = until_nul(text);
        lattice::best_path(self, bytes)
            .iter()
            .map(|c| {
                let feature = self.feature(c);
                let tag = feature.split(|&b| b == b',').next().unwrap_or(&[]);
                (surface(bytes, c), String::from_utf8_lossy(tag).into_owned())
            })
            .collect()
    }

    /// The full feature strings (`NNG,행위,T,안녕,*,*,*,*`), for debugging and tests.
    pub fn features(&self, text: &str) -> Vec<(String, String)> {
        let bytes = until_nul(text);
        lattice::best_path(self, bytes)
            .iter()
            .map(|c| {
                (
                    surface(bytes, c),
                    String::from_utf8_lossy(self.feature(c)).into_owned(),
                )
            })
            .collect()
    }

    fn feature(&self, c: &lattice::Candidate) -> &[u8] {
        match c.source {
            Source::Sys => self.sys.feature(c.token.feature),
            Source::Unk => match &self.dicrc.unk_feature {
                Some(f) => f.as_bytes(),
                None => self.unk.feature(c.token.feature),
            },
        }
    }

    /// The dictionary's character set as its header states it (`UTF-8` for mecab-ko-dic).
    pub fn charset(&self) -> String {
        self.sys.charset()
    }
}

/// Environment variable naming a dictionary folder when none is given explicitly.
pub const DIC_ENV: &str = "DSUM_MECAB_DIC";

/// System install locations of mecab-ko-dic that are tried last.
pub const SYSTEM_DIC_DIRS: [&str; 2] = [
    "/usr/local/lib/mecab/dic/mecab-ko-dic",
    "/usr/lib/mecab/dic/mecab-ko-dic",
];

/// Finds the dictionary folder: `explicit` if given, else `$DSUM_MECAB_DIC`, else a system
/// mecab-ko-dic install. The error says how to get one.
#[cfg(feature = "std")]
pub fn locate_dictionary(
    explicit: Option<&std::path::Path>,
) -> Result<std::path::PathBuf, MecabError> {
    use std::path::PathBuf;
    if let Some(dir) = explicit {
        return Ok(dir.to_path_buf());
    }
    if let Some(dir) = std::env::var_os(DIC_ENV).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    for dir in SYSTEM_DIC_DIRS {
        let dir = PathBuf::from(dir);
        if dir.join("sys.dic").is_file() {
            return Ok(dir);
        }
    }
    Err(MecabError::Io {
        file: "mecab-ko-dic".into(),
        message: format!(
            "no dictionary folder given and none found (tried ${DIC_ENV}, {}). Install one with `pip install python-mecab-ko-dic` and pass its folder `site-packages/mecab_ko_dic/dictionary` with --mecab-dic or ${DIC_ENV}",
            SYSTEM_DIC_DIRS.join(", ")
        ),
    })
}

fn until_nul(text: &str) -> &[u8] {
    let b = text.as_bytes();
    &b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())]
}

/// The bytes of a morpheme. Only a morpheme cut by mecab's 65,535-byte look-ahead can
/// split a character; it is then decoded lossily.
fn surface(text: &[u8], c: &lattice::Candidate) -> String {
    let start = c.surface_start as usize;
    let s = text.get(start..start + c.length as usize).unwrap_or(&[]);
    String::from_utf8_lossy(s).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mecab_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Mecab>();
    }
}
