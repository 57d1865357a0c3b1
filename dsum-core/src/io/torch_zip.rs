//! The zip container of `torch.save` (PyTorch >= 1.6): a central directory of *stored*
//! entries, `<archive>/data.pkl`, `<archive>/data/<key>` storages and `<archive>/byteorder`.
//! Parsed by hand (PKWARE APPNOTE 4.3, with the zip64 records PyTorch writes for files over
//! 4 GiB) because we need each entry's absolute data offset to borrow storages from the map.

use std::collections::HashMap;
use std::string::{String, ToString};

use crate::error::{Error, Result};

const EOCD_SIG: u32 = 0x0605_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const LOCAL_SIG: u32 = 0x0403_4b50;

/// Where one entry's bytes are in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZipEntry {
    /// Absolute offset of the first data byte.
    pub start: usize,
    pub len: usize,
}

/// The entries of a zip file by name; only uncompressed (stored) entries are accepted.
pub struct ZipIndex {
    pub entries: HashMap<String, ZipEntry>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// True when `bytes` start like a zip file (a local header).
pub fn is_zip(bytes: &[u8]) -> bool {
    u32_at(bytes, 0) == Some(LOCAL_SIG)
}

impl ZipIndex {
    /// Read the central directory of `bytes`; `path` names the file in errors.
    pub fn parse(bytes: &[u8], path: &str) -> Result<Self> {
        let bad = |m: &str| Error::checkpoint(path.to_string(), format!("corrupt zip: {m}"));
        let usize_of = |v: u64| usize::try_from(v).map_err(|_| bad("offset too large"));
        // The end-of-central-directory record is in the last 22 + 65535 bytes.
        let lo = bytes.len().saturating_sub(22 + 65_535);
        let eocd = (lo..bytes.len().saturating_sub(21))
            .rev()
            .find(|&i| u32_at(bytes, i) == Some(EOCD_SIG))
            .ok_or_else(|| bad("no end-of-central-directory record (truncated file?)"))?;
        let mut count = u64::from(u16_at(bytes, eocd + 10).ok_or_else(|| bad("short EOCD"))?);
        let mut cd_size = u64::from(u32_at(bytes, eocd + 12).ok_or_else(|| bad("short EOCD"))?);
        let mut cd_off = u64::from(u32_at(bytes, eocd + 16).ok_or_else(|| bad("short EOCD"))?);
        if count == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_off == 0xFFFF_FFFF {
            let loc = eocd
                .checked_sub(20)
                .filter(|&l| u32_at(bytes, l) == Some(ZIP64_LOCATOR_SIG))
                .ok_or_else(|| bad("zip64 sizes without a zip64 locator"))?;
            let rec = usize_of(u64_at(bytes, loc + 8).ok_or_else(|| bad("short zip64 locator"))?)?;
            if u32_at(bytes, rec) != Some(ZIP64_EOCD_SIG) {
                return Err(bad("zip64 locator does not point at a zip64 record"));
            }
            count = u64_at(bytes, rec + 32).ok_or_else(|| bad("short zip64 record"))?;
            cd_size = u64_at(bytes, rec + 40).ok_or_else(|| bad("short zip64 record"))?;
            cd_off = u64_at(bytes, rec + 48).ok_or_else(|| bad("short zip64 record"))?;
        }
        let cd_off = usize_of(cd_off)?;
        let cd_end = cd_off
            .checked_add(usize_of(cd_size)?)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| bad("central directory outside the file"))?;
        // Each central record is at least 46 bytes: a bound on `count` before allocating.
        if count > ((cd_end - cd_off) / 46) as u64 {
            return Err(bad("more entries than the central directory can hold"));
        }
        let mut entries = HashMap::new();
        let mut at = cd_off;
        for _ in 0..count {
            if u32_at(bytes, at) != Some(CENTRAL_SIG) || at + 46 > cd_end {
                return Err(bad("bad central directory record"));
            }
            let method = u16_at(bytes, at + 10).ok_or_else(|| bad("short record"))?;
            let mut csize = u64::from(u32_at(bytes, at + 20).ok_or_else(|| bad("short record"))?);
            let mut usize_ = u64::from(u32_at(bytes, at + 24).ok_or_else(|| bad("short record"))?);
            let name_len = usize::from(u16_at(bytes, at + 28).ok_or_else(|| bad("short record"))?);
            let extra_len = usize::from(u16_at(bytes, at + 30).ok_or_else(|| bad("short record"))?);
            let comment_len =
                usize::from(u16_at(bytes, at + 32).ok_or_else(|| bad("short record"))?);
            let mut local = u64::from(u32_at(bytes, at + 42).ok_or_else(|| bad("short record"))?);
            let name_end = at + 46 + name_len;
            let extra_end = name_end + extra_len;
            if extra_end + comment_len > cd_end {
                return Err(bad("central directory record overruns the directory"));
            }
            let name = std::str::from_utf8(&bytes[at + 46..name_end])
                .map_err(|_| bad("entry name is not UTF-8"))?
                .to_string();
            // zip64 extended information: the 8-byte values that were saturated, in order.
            let mut x = name_end;
            while x + 4 <= extra_end {
                let id = u16_at(bytes, x).unwrap_or(0);
                let n = usize::from(u16_at(bytes, x + 2).unwrap_or(0));
                let body_end = (x + 4 + n).min(extra_end);
                if id == 1 {
                    let mut p = x + 4;
                    for v in [&mut usize_, &mut csize, &mut local] {
                        if *v == 0xFFFF_FFFF {
                            if p + 8 > body_end {
                                return Err(bad("short zip64 extra field"));
                            }
                            *v = u64_at(bytes, p).unwrap_or(0);
                            p += 8;
                        }
                    }
                }
                x = x + 4 + n;
            }
            at = extra_end + comment_len;
            if method != 0 {
                return Err(Error::checkpoint(
                    path.to_string(),
                    format!("zip entry `{name}` is compressed (method {method}); PyTorch checkpoints store entries uncompressed"),
                ));
            }
            if csize != usize_ {
                return Err(bad("stored entry with different compressed and real sizes"));
            }
            let local = usize_of(local)?;
            if u32_at(bytes, local) != Some(LOCAL_SIG) {
                return Err(bad("entry does not point at a local header"));
            }
            let lname = usize::from(u16_at(bytes, local + 26).ok_or_else(|| bad("short header"))?);
            let lextra = usize::from(u16_at(bytes, local + 28).ok_or_else(|| bad("short header"))?);
            let start = local + 30 + lname + lextra;
            let len = usize_of(csize)?;
            if start.checked_add(len).is_none_or(|e| e > bytes.len()) {
                return Err(bad(&format!(
                    "entry `{name}` extends past the end of the file"
                )));
            }
            entries.insert(name, ZipEntry { start, len });
        }
        Ok(ZipIndex { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&b""[..], b"PK\x03\x04", b"PK\x05\x06", &[0u8; 100]] {
            assert!(ZipIndex::parse(bytes, "x").is_err());
        }
    }
}
