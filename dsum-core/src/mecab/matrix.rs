//! The connection-cost matrix (`matrix.bin`): `lsize: u16, rsize: u16`, then `lsize * rsize`
//! i16 costs. The cost of a left node followed by a right node is
//! `cost[left.rc_attr + lsize * right.lc_attr]` (mecab `Connector::cost`).

use std::vec::Vec;

use super::error::{read_u16, MecabError};

pub(crate) struct Matrix {
    pub lsize: usize,
    pub rsize: usize,
    /// (rsize, lsize) row-major: right context id major, left context id minor.
    costs: Vec<i16>,
}

impl Matrix {
    pub(crate) fn parse(file: &str, bytes: &[u8]) -> Result<Self, MecabError> {
        let (Some(lsize), Some(rsize)) = (read_u16(bytes, 0), read_u16(bytes, 2)) else {
            return Err(MecabError::truncated(file, 4, bytes.len()));
        };
        let (lsize, rsize) = (lsize as usize, rsize as usize);
        let needed = 4 + 2 * lsize * rsize;
        if bytes.len() < needed {
            return Err(MecabError::truncated(file, needed as u64, bytes.len()));
        }
        if bytes.len() != needed {
            return Err(MecabError::inconsistent(
                file,
                format!(
                    "{lsize} x {rsize} matrix needs {needed} bytes, file has {}",
                    bytes.len()
                ),
            ));
        }
        if lsize == 0 || rsize == 0 {
            return Err(MecabError::inconsistent(file, "empty connection matrix"));
        }
        let costs = bytes[4..]
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect();
        Ok(Matrix {
            lsize,
            rsize,
            costs,
        })
    }

    /// Callers guarantee `rc < lsize` and `lc < rsize` (checked once when the dictionaries
    /// are loaded); out-of-range ids still cost 0 rather than panic.
    #[inline]
    pub(crate) fn cost(&self, left_rc: u16, right_lc: u16) -> i32 {
        let i = left_rc as usize + self.lsize * right_lc as usize;
        self.costs.get(i).copied().unwrap_or(0) as i32
    }
}
