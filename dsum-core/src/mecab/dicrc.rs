//! The settings of `dicrc` that change analysis. Parsed like mecab's `Param::load`: `key =
//! value` lines, `;` or `#` comment lines, the first occurrence of a key wins.
//!
//! `left-space-penalty-factor` is mecab-ko's addition: `posid,cost,posid,cost,...`, a cost
//! added to the connection into a morpheme of that part-of-speech id when whitespace
//! precedes it (so particles and endings are not split off after a space).

use std::string::String;
use std::vec::Vec;

use super::error::MecabError;

/// mecab's `DEFAULT_MAX_GROUPING_SIZE`.
const DEFAULT_MAX_GROUPING_SIZE: usize = 24;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Dicrc {
    /// Indexed by part-of-speech id; 0 for ids without a penalty.
    pub left_space_penalty: Vec<i32>,
    pub max_grouping_size: usize,
    /// `unk-feature`: when set, replaces the feature of every unknown word.
    pub unk_feature: Option<String>,
}

impl Dicrc {
    pub(crate) fn parse(text: &str) -> Result<Self, MecabError> {
        let mut entries: Vec<(String, String)> = Vec::new();
        for line in text.split('\n') {
            if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
                continue;
            }
            let Some(eq) = line.find('=') else {
                return Err(MecabError::inconsistent(
                    "dicrc",
                    format!("format error (no `=`): {line}"),
                ));
            };
            let key = line[..eq].trim_end_matches(is_c_space);
            let value = line[eq + 1..].trim_start_matches(is_c_space);
            if !entries.iter().any(|(k, _)| k == key) {
                entries.push((key.into(), value.into()));
            }
        }
        let get = |key: &str| {
            entries
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };

        if get("bos-feature").is_none_or(str::is_empty) {
            return Err(MecabError::inconsistent(
                "dicrc",
                "bos-feature is undefined",
            ));
        }
        let unk_feature = get("unk-feature")
            .filter(|v| !v.is_empty())
            .map(String::from);

        let max_grouping_size = match get("max-grouping-size").map(atoi) {
            Some(n) if n > 0 => n as usize,
            _ => DEFAULT_MAX_GROUPING_SIZE,
        };

        // mecab-ko copies the value into a 512-byte buffer and reads at most 64 fields.
        let mut table: Vec<Option<i32>> = Vec::new();
        if let Some(v) = get("left-space-penalty-factor") {
            let v = truncate_bytes(v, 511);
            let fields: Vec<&str> = v.split(',').take(64).collect();
            for pair in fields.chunks_exact(2) {
                let posid = strtol(pair[0]) as u16 as usize;
                if table.len() <= posid {
                    table.resize(posid + 1, None);
                }
                // Connector::get_space_penalty_cost returns the first matching entry.
                table[posid].get_or_insert(strtol(pair[1]) as i32);
            }
        }
        let left_space_penalty = table.into_iter().map(|c| c.unwrap_or(0)).collect();
        Ok(Dicrc {
            left_space_penalty,
            max_grouping_size,
            unk_feature,
        })
    }

    #[inline]
    pub(crate) fn space_penalty(&self, posid: u16) -> i32 {
        self.left_space_penalty
            .get(posid as usize)
            .copied()
            .unwrap_or(0)
    }
}

fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

fn truncate_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// C `atoi`: optional leading space and sign, then decimal digits; 0 if none.
fn atoi(s: &str) -> i64 {
    strtol_radix(s, 10)
}

/// C `strtol(s, NULL, 0)`: base from the prefix (`0x` hex, `0` octal, else decimal).
fn strtol(s: &str) -> i64 {
    strtol_radix(s, 0)
}

fn strtol_radix(s: &str, radix: u32) -> i64 {
    let s = s.trim_start_matches(is_c_space);
    let (neg, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits) = if radix == 0 {
        if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            (16, h)
        } else if s.starts_with('0') {
            (8, s)
        } else {
            (10, s)
        }
    } else {
        (radix, s)
    };
    let mut n: i64 = 0;
    for c in digits.chars() {
        let Some(d) = c.to_digit(radix) else { break };
        n = n.saturating_mul(radix as i64).saturating_add(d as i64);
    }
    if neg {
        -n
    } else {
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mecab_ko_penalties() {
        let d = Dicrc::parse(
            "; c\n# c\ncost-factor = 800\nbos-feature = BOS/EOS,*\nleft-space-penalty-factor = 100,3000,120,6000\n",
        )
        .unwrap();
        assert_eq!(d.space_penalty(100), 3000);
        assert_eq!(d.space_penalty(120), 6000);
        assert_eq!(d.space_penalty(7), 0);
        assert_eq!(d.max_grouping_size, 24);
    }

    #[test]
    fn first_entry_wins() {
        let d =
            Dicrc::parse("bos-feature = BOS\nleft-space-penalty-factor = 5,1,5,2\nleft-space-penalty-factor = 5,9\n")
                .unwrap();
        assert_eq!(d.space_penalty(5), 1);
    }

    #[test]
    fn bos_feature_is_required() {
        assert!(Dicrc::parse("cost-factor = 800\n").is_err());
    }
}
