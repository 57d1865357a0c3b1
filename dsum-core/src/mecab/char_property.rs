//! Character categories (`char.bin`, compiled from mecab-ko-dic's `char.def`) and the
//! UTF-8 decoding MeCab uses to look them up. Layout: `csize: u32`, `csize` category names
//! of 32 bytes, then 0xffff packed `CharInfo` words, one per UCS-2 code point 0..0xfffe.
//!
//! MeCab decodes only up to UCS-2: any 4-byte UTF-8 sequence (emoji, supplementary Hanja)
//! maps to code point 0 and so to the category of U+0000; this is reproduced on purpose.

use std::string::String;
use std::vec::Vec;

use super::error::{read_u32, MecabError};

/// The bit fields of MeCab's `CharInfo` (type:18, default_type:8, length:4, group:1,
/// invoke:1, packed from the least significant bit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CharInfo(u32);

impl CharInfo {
    /// Bit set of every category the character belongs to.
    #[inline]
    pub fn types(self) -> u32 {
        self.0 & 0x3ffff
    }
    /// The category whose unknown-word entries are used (index into the name list).
    #[inline]
    pub fn default_type(self) -> usize {
        ((self.0 >> 18) & 0xff) as usize
    }
    /// Unknown words of 1..=length characters are proposed.
    #[inline]
    pub fn length(self) -> usize {
        ((self.0 >> 26) & 0xf) as usize
    }
    /// A run of same-category characters is proposed as one unknown word.
    #[inline]
    pub fn group(self) -> bool {
        (self.0 >> 30) & 1 == 1
    }
    /// Unknown words are proposed even when the dictionary has a match here.
    #[inline]
    pub fn invoke(self) -> bool {
        (self.0 >> 31) & 1 == 1
    }
    #[inline]
    pub fn is_kind_of(self, other: CharInfo) -> bool {
        self.types() & other.types() != 0
    }
}

pub(crate) struct CharProperty {
    names: Vec<String>,
    /// One entry per UCS-2 code point below 0xffff.
    map: Vec<CharInfo>,
}

const TABLE_LEN: usize = 0xffff;

impl CharProperty {
    pub(crate) fn parse(file: &str, bytes: &[u8]) -> Result<Self, MecabError> {
        let Some(csize) = read_u32(bytes, 0) else {
            return Err(MecabError::truncated(file, 4, bytes.len()));
        };
        let needed = 4 + 32 * csize as u64 + 4 * TABLE_LEN as u64;
        if (bytes.len() as u64) < needed {
            return Err(MecabError::truncated(file, needed, bytes.len()));
        }
        if bytes.len() as u64 != needed {
            return Err(MecabError::inconsistent(
                file,
                format!(
                    "{csize} categories need {needed} bytes, file has {}",
                    bytes.len()
                ),
            ));
        }
        let csize = csize as usize;
        let names: Vec<String> = bytes[4..4 + 32 * csize]
            .chunks_exact(32)
            .map(|raw| {
                let end = raw.iter().position(|&c| c == 0).unwrap_or(32);
                String::from_utf8_lossy(&raw[..end]).into_owned()
            })
            .collect();
        let map: Vec<CharInfo> = bytes[4 + 32 * csize..]
            .chunks_exact(4)
            .map(|c| CharInfo(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect();
        if let Some((cp, info)) = map
            .iter()
            .enumerate()
            .find(|(_, i)| i.default_type() >= csize)
        {
            return Err(MecabError::inconsistent(
                file,
                format!(
                    "code point U+{cp:04X} has category {} but only {csize} are defined",
                    info.default_type()
                ),
            ));
        }
        Ok(CharProperty { names, map })
    }

    pub(crate) fn names(&self) -> &[String] {
        &self.names
    }

    /// Category of the character starting at `pos`, and its length in bytes, decoding
    /// exactly like mecab's `utf8_to_ucs2` with the text ending at `end`. At `pos == end`
    /// MeCab reads the terminating NUL (or the byte there, when `end` is a window limit).
    #[inline]
    pub(crate) fn char_info(&self, text: &[u8], pos: usize, end: usize) -> (CharInfo, usize) {
        let (code, len) = decode_ucs2(text, pos, end);
        // U+FFFF is one past MeCab's table; it reads zeroes there.
        (
            self.map.get(code as usize).copied().unwrap_or_default(),
            len,
        )
    }

    pub(crate) fn info_of(&self, code: u16) -> CharInfo {
        self.map.get(code as usize).copied().unwrap_or_default()
    }

    /// Skips characters while each shares a category with the previous one, starting from
    /// `first` (mecab `seekToOtherType`). Returns (stop position, info of the last char read,
    /// byte length of the last char read, number of chars skipped).
    #[inline]
    pub(crate) fn seek_to_other_type(
        &self,
        text: &[u8],
        begin: usize,
        end: usize,
        first: CharInfo,
        mut last: CharInfo,
        mut mblen: usize,
    ) -> (usize, CharInfo, usize, usize) {
        let mut c = first;
        let mut p = begin;
        let mut clen = 0;
        while p != end {
            let (info, len) = self.char_info(text, p, end);
            last = info;
            mblen = len;
            if !c.is_kind_of(info) {
                break;
            }
            p += len;
            clen += 1;
            c = info;
        }
        (p, last, mblen, clen)
    }
}

/// mecab's `utf8_to_ucs2`: code points above U+FFFF (and malformed or cut sequences) give 0.
#[inline]
pub(crate) fn decode_ucs2(text: &[u8], pos: usize, end: usize) -> (u16, usize) {
    let b0 = text.get(pos).copied().unwrap_or(0);
    let len = end.saturating_sub(pos);
    let at = |i: usize| text.get(pos + i).copied().unwrap_or(0) as u16 & 0x3f;
    if b0 < 0x80 {
        (b0 as u16, 1)
    } else if len >= 2 && b0 & 0xe0 == 0xc0 {
        (((b0 as u16 & 0x1f) << 6) | at(1), 2)
    } else if len >= 3 && b0 & 0xf0 == 0xe0 {
        (((b0 as u16 & 0x0f) << 12) | (at(1) << 6) | at(2), 3)
    } else if len >= 4 && b0 & 0xf8 == 0xf0 {
        (0, 4)
    } else if len >= 5 && b0 & 0xfc == 0xf8 {
        (0, 5)
    } else if len >= 6 && b0 & 0xfe == 0xfc {
        (0, 6)
    } else {
        (0, 1)
    }
}
