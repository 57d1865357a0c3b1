//! Scaled dot-product attention of one sequence against a key/value cache.
//!
//! Shapes (one sequence): q and out are `[T, H*dh]` (T new query tokens), the caches are
//! `[KV, cap, dh]` (KV = H without grouped-query attention) with the first `len` positions valid. Causal attention lets the query at
//! absolute position `past + t` see keys `0..=past + t`; `key_mask[j] == false` hides key j
//! (padding). This is the same computation as transformers' eager attention
//! (softmax(q·kᵀ·scale + mask)·v).

use super::matmul::dot;
use super::softmax::softmax_inplace;

pub struct AttnShape {
    pub t: usize,
    /// Query heads.
    pub h: usize,
    /// Key/value heads (grouped-query attention: query head i reads kv head i / (h / kv_h)).
    pub kv_h: usize,
    pub dh: usize,
    pub cap: usize,
    pub len: usize,
}

#[allow(clippy::too_many_arguments)]
pub fn attention_forward(
    out: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    s: &AttnShape,
    causal_past: Option<usize>,
    key_mask: Option<&[bool]>,
    scale: f32,
) {
    let AttnShape {
        t,
        h,
        kv_h,
        dh,
        cap,
        len,
    } = *s;
    let c = h * dh;
    let group = h / kv_h.max(1);
    debug_assert!(q.len() >= t * c && out.len() >= t * c && h % kv_h.max(1) == 0);
    debug_assert!(k.len() >= kv_h * cap * dh && v.len() >= kv_h * cap * dh && len <= cap);
    let head = |hi: usize, o: &mut [f32]| {
        // o is [T, dh] for this head.
        let g = hi / group;
        let kh = &k[g * cap * dh..g * cap * dh + len * dh];
        let vh = &v[g * cap * dh..g * cap * dh + len * dh];
        let mut p = vec![0f32; len];
        for ti in 0..t {
            let qi = &q[ti * c + hi * dh..ti * c + (hi + 1) * dh];
            let visible = match causal_past {
                Some(past) => (past + ti + 1).min(len),
                None => len,
            };
            for j in 0..len {
                let masked = j >= visible || key_mask.is_some_and(|m| !m[j]);
                p[j] = if masked {
                    f32::NEG_INFINITY
                } else {
                    dot(qi, &kh[j * dh..(j + 1) * dh]) * scale
                };
            }
            softmax_inplace(&mut p);
            let oi = &mut o[ti * dh..(ti + 1) * dh];
            oi.iter_mut().for_each(|x| *x = 0.0);
            for j in 0..len {
                let pj = p[j];
                if pj != 0.0 {
                    for (x, &vv) in oi.iter_mut().zip(&vh[j * dh..(j + 1) * dh]) {
                        *x += pj * vv;
                    }
                }
            }
        }
    };
    let mut per_head = vec![0f32; h * t * dh];
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        if t * len * dh * h >= 1 << 16 {
            per_head
                .par_chunks_mut(t * dh)
                .enumerate()
                .for_each(|(hi, o)| head(hi, o));
        } else {
            per_head
                .chunks_mut(t * dh)
                .enumerate()
                .for_each(|(hi, o)| head(hi, o));
        }
    }
    #[cfg(not(feature = "rayon"))]
    per_head
        .chunks_mut(t * dh)
        .enumerate()
        .for_each(|(hi, o)| head(hi, o));
    for hi in 0..h {
        for ti in 0..t {
            out[ti * c + hi * dh..ti * c + (hi + 1) * dh]
                .copy_from_slice(&per_head[(hi * t + ti) * dh..(hi * t + ti + 1) * dh]);
        }
    }
}
