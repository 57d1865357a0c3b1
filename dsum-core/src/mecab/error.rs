//! Errors of the Mecab-ko reader. Each names the dictionary file and what is wrong with it,
//! so a broken or foreign dictionary folder is reported, never indexed blindly.

use std::string::String;

#[derive(Debug, thiserror::Error)]
pub enum MecabError {
    /// A file of the dictionary folder could not be read (missing, unreadable).
    #[error("{file}: cannot read: {message}")]
    Io { file: String, message: String },
    /// The file does not start with the expected magic number (not a MeCab dictionary).
    #[error("{file}: wrong magic number (not a compiled MeCab dictionary, or a truncated one)")]
    BadMagic { file: String },
    /// The dictionary was compiled by a MeCab with another binary format version.
    #[error("{file}: dictionary format version {found}, expected {expected}")]
    Version {
        file: String,
        found: u32,
        expected: u32,
    },
    /// The file is shorter than its header says.
    #[error("{file}: truncated: needs {needed} bytes, has {actual}")]
    Truncated {
        file: String,
        needed: u64,
        actual: u64,
    },
    /// Sizes or indices inside the files disagree with each other.
    #[error("{file}: {message}")]
    Inconsistent { file: String, message: String },
}

impl MecabError {
    pub(crate) fn inconsistent(file: &str, message: impl Into<String>) -> Self {
        MecabError::Inconsistent {
            file: file.into(),
            message: message.into(),
        }
    }
    pub(crate) fn truncated(file: &str, needed: u64, actual: usize) -> Self {
        MecabError::Truncated {
            file: file.into(),
            needed,
            actual: actual as u64,
        }
    }
}

/// Little-endian readers over a byte slice that never index out of bounds.
pub(crate) fn read_u32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

pub(crate) fn read_u16(b: &[u8], off: usize) -> Option<u16> {
    let s = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_le_bytes([s[0], s[1]]))
}
