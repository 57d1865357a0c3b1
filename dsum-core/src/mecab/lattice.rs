//! The Viterbi lattice of mecab 0.996 with mecab-ko's changes (`Tokenizer::lookup`,
//! `Viterbi::viterbi`, `Connector::cost`), reproduced decision for decision so that ties
//! resolve exactly as in the C++:
//!
//! - at each byte position reached by some morpheme, leading whitespace (chars sharing a
//!   category with U+0020) is skipped and kept as part of the node's "rlength";
//! - dictionary matches come from a common-prefix search; unknown words are added from the
//!   character category (invoke / group / length) of the first character;
//! - a right node picks, among nodes ending at its start, the first (in mecab's linked-list
//!   order: latest start position first, then creation order) with the strictly lowest
//!   `cost + matrix + wcost + space penalty`.

use std::vec::Vec;

use super::char_property::CharInfo;
use super::dict::Token;
use super::Mecab;

/// mecab looks at most 65535 bytes ahead of a position.
const MAX_LOOKAHEAD: usize = 65535;
const NONE: u32 = u32::MAX;

/// Where a node's token comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    Sys,
    Unk,
}

/// A proposed morpheme at some lattice position: whitespace, then `length` bytes of surface
/// from `surface_start`. Like mecab's `mecab_node_t`, `length` and `rlength`
/// (whitespace + surface) are 16-bit: only reachable past 65,535 bytes of whitespace, where
/// mecab's wrapped values decide the result and are kept for parity.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Candidate {
    pub surface_start: u32,
    pub length: u16,
    pub rlength: u16,
    pub token: Token,
    pub source: Source,
}

/// A node of the best-path search.
#[derive(Clone, Copy, Debug)]
struct Node {
    cand: Candidate,
    /// Best total cost from BOS up to and including this node.
    cost: i64,
    /// Best predecessor (index into the node arena).
    prev: u32,
    /// Next node ending at the same position (mecab's `enext`).
    enext: u32,
}

/// The best path for one text: the chosen morphemes in order.
pub(crate) fn best_path(mecab: &Mecab, text: &[u8]) -> Vec<Candidate> {
    let len = text.len();
    // Node 0 is BOS: context ids 0, cost 0.
    let bos = Candidate {
        surface_start: 0,
        length: 0,
        rlength: 0,
        token: Token {
            lc_attr: 0,
            rc_attr: 0,
            posid: 0,
            wcost: 0,
            feature: 0,
        },
        source: Source::Sys,
    };
    let mut nodes: Vec<Node> = Vec::with_capacity(len * 4 + 2);
    nodes.push(Node {
        cand: bos,
        cost: 0,
        prev: NONE,
        enext: NONE,
    });
    // end_head[p]: the most recently added node ending at byte p (mecab's end_node_list).
    let mut end_head: Vec<u32> = vec![NONE; len + 1];
    end_head[0] = 0;
    let mut cands: Vec<Candidate> = Vec::with_capacity(32);

    for pos in 0..len {
        if end_head[pos] == NONE {
            continue;
        }
        cands.clear();
        lookup(mecab, text, pos, &mut cands);
        // mecab prepends each new node to its list, so it walks them newest first.
        for &r in cands.iter().rev() {
            let x = pos + r.rlength as usize;
            if x > len {
                // Only the unknown word proposed past the end of trailing whitespace; mecab
                // files it past the sentence where nothing reads it.
                continue;
            }
            let extra = r.token.wcost as i64 + space_penalty(mecab, &r) as i64;
            let Some((best, cost)) =
                best_left(mecab, &nodes, end_head[pos], r.token.lc_attr, extra)
            else {
                continue;
            };
            let id = nodes.len() as u32;
            nodes.push(Node {
                cand: r,
                cost,
                prev: best,
                enext: end_head[x],
            });
            end_head[x] = id;
        }
    }

    // EOS connects to the last position any node ends at.
    let Some(last) = (0..=len).rev().find(|&p| end_head[p] != NONE) else {
        return Vec::new();
    };
    let Some((mut at, _)) = best_left(mecab, &nodes, end_head[last], 0, 0) else {
        return Vec::new();
    };
    let mut path = Vec::new();
    while at != 0 && at != NONE {
        let n = &nodes[at as usize];
        path.push(n.cand);
        at = n.prev;
    }
    path.reverse();
    path
}

/// mecab-ko `Connector::get_space_penalty_cost`: only for nodes preceded by whitespace.
#[inline]
fn space_penalty(mecab: &Mecab, r: &Candidate) -> i32 {
    if r.rlength == r.length {
        0
    } else {
        mecab.dicrc.space_penalty(r.token.posid)
    }
}

/// The first left node (in list order) with the strictly lowest total cost, as mecab's
/// `connect` does; `None` when mecab would report an overflow ("too long sentence").
#[inline]
fn best_left(
    mecab: &Mecab,
    nodes: &[Node],
    head: u32,
    right_lc: u16,
    extra: i64,
) -> Option<(u32, i64)> {
    let mut best_cost: i64 = i32::MAX as i64;
    let mut best = NONE;
    let mut l = head;
    while l != NONE {
        let n = &nodes[l as usize];
        let cost = n.cost + mecab.matrix.cost(n.cand.token.rc_attr, right_lc) as i64 + extra;
        if cost < best_cost {
            best_cost = cost;
            best = l;
        }
        l = n.enext;
    }
    (best != NONE).then_some((best, best_cost))
}

/// mecab `Tokenizer::lookup`: every morpheme that may start at `pos`, in creation order.
fn lookup(mecab: &Mecab, text: &[u8], pos: usize, out: &mut Vec<Candidate>) {
    let cp = &mecab.chars;
    let end = if text.len() - pos >= MAX_LOOKAHEAD {
        pos + MAX_LOOKAHEAD
    } else {
        text.len()
    };

    let (begin2, cinfo, mblen, _) =
        cp.seek_to_other_type(text, pos, end, mecab.space, CharInfo::default(), 0);

    // An empty key makes Darts fall back to `strlen`: past a window that ends in whitespace
    // the search runs on to the end of the text.
    let key = if begin2 == end {
        &text[begin2..]
    } else {
        &text[begin2..end]
    };
    let new = |stop: usize, token: Token, source: Source| Candidate {
        surface_start: begin2 as u32,
        length: (stop - begin2) as u16,
        rlength: (stop - pos) as u16,
        token,
        source,
    };
    mecab.sys.prefix_search(key, |m| {
        if let Some((first, last)) = mecab.sys.token_range(m.value) {
            for i in first..last {
                if let Some(token) = mecab.sys.token(i) {
                    out.push(new(begin2 + m.len, token, Source::Sys));
                }
            }
        }
    });

    if !out.is_empty() && !cinfo.invoke() {
        return;
    }

    let add_unknown = |out: &mut Vec<Candidate>, stop: usize| {
        if let Some(tokens) = mecab.unk_tokens.get(cinfo.default_type()) {
            for &token in tokens {
                out.push(new(stop, token, Source::Unk));
            }
        }
    };

    let mut begin3 = begin2 + mblen;
    if begin3 > end {
        add_unknown(out, begin3);
        if !out.is_empty() {
            return;
        }
    }

    let mut group_end = None;
    if cinfo.group() && begin3 <= end {
        let (stop, _, _, clen) = cp.seek_to_other_type(text, begin3, end, cinfo, cinfo, mblen);
        if clen <= mecab.dicrc.max_grouping_size {
            add_unknown(out, stop);
        }
        group_end = Some(stop);
    }

    for _ in 1..=cinfo.length() {
        if begin3 > end {
            break;
        }
        if Some(begin3) == group_end {
            continue;
        }
        add_unknown(out, begin3);
        let (next, next_len) = cp.char_info(text, begin3, end);
        if !cinfo.is_kind_of(next) {
            break;
        }
        begin3 += next_len;
    }

    if out.is_empty() {
        add_unknown(out, begin3);
    }
}
