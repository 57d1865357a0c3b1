//! Scaled dot-product attention of one sequence against a key/value cache.
//!
//! Shapes (one sequence): q and out are `[T, H*dh]` (T new query tokens), the caches are
//! `[KV, cap, dh]` (KV = H without grouped-query attention) with the first `len` positions valid. Causal attention lets the query at
//! absolute position `past + t` see keys `0..=past + t`; `key_mask[j] == false` hides key j
//! (padding). This is the same computation as transformers' eager attention
//! (softmax(q·kᵀ·scale + mask)·v).

use super::matmul::{dot, matmul_acc_seq};
use super::softmax::{exp_sub_sum, softmax_inplace};

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
    debug_assert!(q.len() >= t * h * dh && out.len() >= t * h * dh && h % kv_h.max(1) == 0);
    debug_assert!(k.len() >= kv_h * cap * dh && v.len() >= kv_h * cap * dh && len <= cap);
    if t >= GEMM_MIN_T && len >= GEMM_MIN_T {
        attention_gemm(out, q, k, v, s, causal_past, key_mask, scale);
    } else {
        attention_loop(out, q, k, v, s, causal_past, key_mask, scale);
    }
}

/// The per-query loop: the reference for `attention_gemm`, and the fast path for decoding
/// (one or a few queries).
#[allow(clippy::too_many_arguments)]
pub fn attention_loop(
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

/// Below this many queries (and keys) the per-query loop wins; above it (encoder, prompts)
/// the two products of every head go through `gemm`.
const GEMM_MIN_T: usize = 16;

/// Same computation as the loop version, per head: scores = q·kᵀ, mask, softmax, out = p·v,
/// the two products through `gemm`, or in the browser (wasm32 + simd128, which `gemm` has no
/// kernel for) through `packed_gemm`.
#[allow(clippy::too_many_arguments)]
fn attention_gemm(
    out: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    s: &AttnShape,
    causal_past: Option<usize>,
    key_mask: Option<&[bool]>,
    scale: f32,
) {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    let (scores, values): (ScoresFn, ValuesFn) = (
        scores_packed::<super::packed_gemm::Simd128>,
        values_packed::<super::packed_gemm::Simd128>,
    );
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    let (scores, values): (ScoresFn, ValuesFn) = (scores_gemm, values_gemm);
    attention_heads(
        out,
        q,
        k,
        v,
        s,
        causal_past,
        key_mask,
        scale,
        scores,
        values,
    );
}

/// p[t, len] = scale · q_h · k_hᵀ, with q_h the dh columns of head `hi` in q's rows of
/// stride c and k_h `[len, dh]`.
type ScoresFn = fn(&mut [f32], &[f32], usize, usize, &[f32], usize, usize, usize, f32);
/// o[t, dh] = p[t, len] · v_h[len, dh].
type ValuesFn = fn(&mut [f32], &[f32], &[f32], usize, usize, usize);

#[allow(clippy::too_many_arguments)]
fn attention_heads(
    out: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    s: &AttnShape,
    causal_past: Option<usize>,
    key_mask: Option<&[bool]>,
    scale: f32,
    scores: ScoresFn,
    values: ValuesFn,
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
    let head = |hi: usize| -> Vec<f32> {
        let g = hi / group;
        let kh = &k[g * cap * dh..g * cap * dh + len * dh];
        let vh = &v[g * cap * dh..g * cap * dh + len * dh];
        let mut p = vec![0f32; t * len];
        scores(&mut p, q, hi, c, kh, t, len, dh, scale);
        for ti in 0..t {
            let row = &mut p[ti * len..(ti + 1) * len];
            let visible = causal_past
                .map(|past| (past + ti + 1).min(len))
                .unwrap_or(len);
            for (j, x) in row.iter_mut().enumerate() {
                if j >= visible || key_mask.is_some_and(|m| !m[j]) {
                    *x = f32::NEG_INFINITY;
                }
            }
            softmax_inplace(row);
        }
        let mut o = vec![0f32; t * dh];
        values(&mut o, &p, vh, t, len, dh);
        o
    };
    #[cfg(feature = "rayon")]
    let heads: Vec<Vec<f32>> = {
        use rayon::prelude::*;
        (0..h).into_par_iter().map(head).collect()
    };
    #[cfg(not(feature = "rayon"))]
    let heads: Vec<Vec<f32>> = (0..h).map(head).collect();
    for (hi, o) in heads.iter().enumerate() {
        for ti in 0..t {
            out[ti * c + hi * dh..ti * c + (hi + 1) * dh]
                .copy_from_slice(&o[ti * dh..(ti + 1) * dh]);
        }
    }
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[allow(clippy::too_many_arguments)]
fn scores_gemm(
    p: &mut [f32],
    q: &[f32],
    hi: usize,
    c: usize,
    kh: &[f32],
    t: usize,
    len: usize,
    dh: usize,
    scale: f32,
) {
    assert!(p.len() == t * len && kh.len() == len * dh && (t - 1) * c + (hi + 1) * dh <= q.len());
    // SAFETY: q holds T rows of stride c with dh values at offset hi*dh; kh is [len, dh];
    // p is [t, len] — every index stays inside those slices.
    unsafe {
        gemm::gemm(
            t,
            len,
            dh,
            p.as_mut_ptr(),
            1,
            len as isize,
            false,
            q.as_ptr().add(hi * dh),
            1,
            c as isize,
            kh.as_ptr(),
            dh as isize,
            1,
            0.0,
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
fn values_gemm(o: &mut [f32], p: &[f32], vh: &[f32], t: usize, len: usize, dh: usize) {
    assert!(o.len() == t * dh && p.len() == t * len && vh.len() == len * dh);
    // SAFETY: p is [t, len], vh is [len, dh], o is [t, dh].
    unsafe {
        gemm::gemm(
            t,
            dh,
            len,
            o.as_mut_ptr(),
            1,
            dh as isize,
            false,
            p.as_ptr(),
            1,
            len as isize,
            vh.as_ptr(),
            1,
            dh as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// [`ScoresFn`] through `packed_gemm`: q_h copied to `[t, dh]`, k_h packed as the weight.
#[cfg(any(test, all(target_arch = "wasm32", target_feature = "simd128")))]
#[allow(clippy::too_many_arguments)]
fn scores_packed<V: super::packed_gemm::F32x4>(
    p: &mut [f32],
    q: &[f32],
    hi: usize,
    c: usize,
    kh: &[f32],
    t: usize,
    len: usize,
    dh: usize,
    scale: f32,
) {
    use super::packed_gemm::{gemm_packed, pack_rows, packed_len};
    let qh: Vec<f32> = (0..t)
        .flat_map(|ti| &q[ti * c + hi * dh..ti * c + (hi + 1) * dh])
        .copied()
        .collect();
    let mut panels = vec![0f32; packed_len(len, dh)];
    pack_rows(&mut panels, len, dh, |j, row| {
        row.copy_from_slice(&kh[j * dh..(j + 1) * dh])
    });
    p.fill(0.0);
    gemm_packed::<V>(p, len, &qh, &panels, t, dh, len);
    p.iter_mut().for_each(|x| *x *= scale);
}

/// [`ValuesFn`] through `packed_gemm`: the columns of v_h packed as the weight's rows.
#[cfg(any(test, all(target_arch = "wasm32", target_feature = "simd128")))]
fn values_packed<V: super::packed_gemm::F32x4>(
    o: &mut [f32],
    p: &[f32],
    vh: &[f32],
    t: usize,
    len: usize,
    dh: usize,
) {
    use super::packed_gemm::{gemm_packed, pack_rows, packed_len};
    let mut panels = vec![0f32; packed_len(dh, len)];
    pack_rows(&mut panels, dh, len, |j, row| {
        row.iter_mut()
            .enumerate()
            .for_each(|(r, x)| *x = vh[r * dh + j])
    });
    o.fill(0.0);
    gemm_packed::<V>(o, dh, p, &panels, t, len, dh);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn gemm_path_matches_loop(t in 16usize..40, extra in 0usize..20, kv_h in 1usize..3, group in 1usize..3,
                                  dh in 1usize..20, causal: bool, seed in 0u64..1000) {
            let h = kv_h * group;
            let len = t + extra;
            let cap = len + 3;
            let mut st = seed.wrapping_add(7);
            let mut rnd = || { st = st.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); ((st >> 33) as f32 / (1u64 << 31) as f32) - 0.5 };
            let q: Vec<f32> = (0..t * h * dh).map(|_| rnd()).collect();
            let k: Vec<f32> = (0..kv_h * cap * dh).map(|_| rnd()).collect();
            let v: Vec<f32> = (0..kv_h * cap * dh).map(|_| rnd()).collect();
            let mask: Vec<bool> = (0..len).map(|j| j == 0 || rnd() > -0.3).collect();
            let s = AttnShape { t, h, kv_h, dh, cap, len };
            let past = if causal { Some(len - t) } else { None };
            let mut a = vec![0f32; t * h * dh];
            let mut b = vec![0f32; t * h * dh];
            attention_loop(&mut a, &q, &k, &v, &s, past, Some(&mask), 0.7);
            attention_gemm(&mut b, &q, &k, &v, &s, past, Some(&mask), 0.7);
            for (x, y) in a.iter().zip(&b) {
                prop_assert!((x - y).abs() <= 1e-5, "{x} vs {y}");
            }
            // The browser's products, through the portable twin of their simd128 kernel.
            use crate::ops::packed_gemm::Portable;
            let mut w = vec![0f32; t * h * dh];
            attention_heads(&mut w, &q, &k, &v, &s, past, Some(&mask), 0.7,
                            scores_packed::<Portable>, values_packed::<Portable>);
            for (x, y) in a.iter().zip(&w) {
                prop_assert!((x - y).abs() <= 1e-5, "{x} vs {y}");
            }
        }
    }
}

// ---- training: full-sequence attention that keeps its probabilities, and backward -------

/// Layout of one sequence for training: q/out `[T, H*dh]`, k/v `[S, KV*dh]` (projection
/// outputs as they are, heads interleaved; strides do the head split).
#[derive(Clone, Copy, Debug)]
pub struct TrainAttn {
    pub t: usize,
    pub s: usize,
    pub h: usize,
    pub kv_h: usize,
    pub dh: usize,
    /// Query t sees keys 0..=t (decoder self-attention; requires s == t).
    pub causal: bool,
    pub scale: f32,
}

impl TrainAttn {
    fn group(&self) -> usize {
        self.h / self.kv_h.max(1)
    }
}

/// Causal attention works on blocks of this many queries: a block multiplies only against
/// the keys it can see (0..block end), which skips ~3/8 of the products at T = 256.
const CAUSAL_BLOCK: usize = 64;

/// Query blocks `(t0, t1, keys visible to the block)`.
fn query_blocks(a: &TrainAttn) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
    let blk = if a.causal { CAUSAL_BLOCK } else { a.t.max(1) };
    (0..a.t).step_by(blk).map(move |t0| {
        let t1 = (t0 + blk).min(a.t);
        (t0, t1, if a.causal { t1.min(a.s) } else { a.s })
    })
}

/// Runs `f(head, chunk of x, chunk of y)` for every head, on all threads when there is
/// enough work (each head's products then run single-threaded).
fn for_each_head<F>(x: &mut [f32], xc: usize, y: &mut [f32], yc: usize, work: usize, f: F)
where
    F: Fn(usize, &mut [f32], &mut [f32]) + Send + Sync,
{
    #[cfg(feature = "rayon")]
    if work >= 1 << 16 {
        use rayon::prelude::*;
        x.par_chunks_mut(xc)
            .zip(y.par_chunks_mut(yc))
            .enumerate()
            .for_each(|(hh, (a, b))| f(hh, a, b));
        return;
    }
    let _ = work;
    x.chunks_mut(xc)
        .zip(y.chunks_mut(yc))
        .enumerate()
        .for_each(|(hh, (a, b))| f(hh, a, b));
}

/// out = softmax(q·kᵀ·scale + mask)·v for every head; returns the probabilities [H, T, S]
/// that the backward pass needs (0 where masked). `key_mask[j] == false` hides key j.
/// Softmax runs in f32 like transformers' eager attention (exp within 2 ulp, see
/// `softmax::exp_fast`). Heads run in parallel with the `rayon` feature.
pub fn attention_train_forward(
    out: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    key_mask: Option<&[bool]>,
    a: &TrainAttn,
) -> Vec<f32> {
    let TrainAttn {
        t, s, h, kv_h, dh, ..
    } = *a;
    let (qs, ks) = (h * dh, kv_h * dh);
    let mut probs = vec![0f32; h * t * s];
    out[..t * qs].iter_mut().for_each(|o| *o = 0.0);
    if probs.is_empty() || dh == 0 {
        return probs;
    }
    // Each head's output [T, dh], scattered into the interleaved [T, H*dh] afterwards.
    let mut per_head = vec![0f32; h * t * dh];
    let head = |hh: usize, p: &mut [f32], o: &mut [f32]| {
        let g = hh / a.group();
        for (t0, t1, sv) in query_blocks(a) {
            let p_blk = &mut p[t0 * s..];
            matmul_acc_seq(
                p_blk,
                (s, 1),
                &q[t0 * qs + hh * dh..],
                (qs, 1),
                &k[g * dh..],
                (1, ks),
                t1 - t0,
                dh,
                sv,
            );
            for ti in t0..t1 {
                let row = &mut p[ti * s..ti * s + sv];
                let mut max = f32::NEG_INFINITY;
                for (j, x) in row.iter_mut().enumerate() {
                    let visible = (!a.causal || j <= ti) && key_mask.is_none_or(|m| m[j]);
                    *x = if visible {
                        *x * a.scale
                    } else {
                        f32::NEG_INFINITY
                    };
                    max = max.max(*x);
                }
                if max == f32::NEG_INFINITY {
                    row.iter_mut().for_each(|x| *x = 0.0);
                    continue;
                }
                let inv = 1.0 / exp_sub_sum(row, max);
                row.iter_mut().for_each(|x| *x *= inv);
            }
            matmul_acc_seq(
                &mut o[t0 * dh..],
                (dh, 1),
                &p[t0 * s..],
                (s, 1),
                &v[g * dh..],
                (ks, 1),
                t1 - t0,
                sv,
                dh,
            );
        }
    };
    for_each_head(
        &mut probs,
        t * s,
        &mut per_head,
        t * dh,
        h * t * s * dh,
        head,
    );
    for (hh, o) in per_head.chunks_exact(t * dh).enumerate() {
        for (ti, row) in o.chunks_exact(dh).enumerate() {
            out[ti * qs + hh * dh..ti * qs + (hh + 1) * dh].copy_from_slice(row);
        }
    }
    probs
}

/// Backward of [`attention_train_forward`]; dq, dk, dv accumulate (GQA: the heads of a
/// group add into their shared key/value head). Heads run in parallel with the `rayon`
/// feature, each into its own buffers, summed into dq/dk/dv at the end.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    dout: &[f32],
    probs: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    a: &TrainAttn,
) {
    let TrainAttn {
        t, s, h, kv_h, dh, ..
    } = *a;
    let (qs, ks) = (h * dh, kv_h * dh);
    if h * t * s * dh == 0 {
        return;
    }
    // Per head: dQ [T, dh]; dK then dV, each [S, dh].
    let mut dq_h = vec![0f32; h * t * dh];
    let mut dkv_h = vec![0f32; h * 2 * s * dh];
    let head = |hh: usize, dqh: &mut [f32], dkvh: &mut [f32]| {
        let g = hh / a.group();
        let p = &probs[hh * t * s..(hh + 1) * t * s];
        let (dkh, dvh) = dkvh.split_at_mut(s * dh);
        let mut ds = Vec::new();
        for (t0, t1, sv) in query_blocks(a) {
            let tb = t1 - t0;
            let (p_blk, do_blk, q_blk) = (
                &p[t0 * s..],
                &dout[t0 * qs + hh * dh..],
                &q[t0 * qs + hh * dh..],
            );
            // dV += Pᵀ·dO ; dP = dO·Vᵀ
            matmul_acc_seq(dvh, (dh, 1), p_blk, (1, s), do_blk, (qs, 1), sv, tb, dh);
            ds.clear();
            ds.resize(tb * sv, 0.0);
            matmul_acc_seq(
                &mut ds,
                (sv, 1),
                do_blk,
                (qs, 1),
                &v[g * dh..],
                (1, ks),
                tb,
                dh,
                sv,
            );
            // dS = P ⊙ (dP - Σ_j dP·P) · scale
            for (dr, pr) in ds.chunks_exact_mut(sv).zip(p_blk.chunks(s)) {
                let pr = &pr[..sv];
                let dot: f32 = dr.iter().zip(pr).map(|(d, p)| d * p).sum();
                dr.iter_mut()
                    .zip(pr)
                    .for_each(|(d, p)| *d = p * (*d - dot) * a.scale);
            }
            // dQ += dS·K ; dK += dSᵀ·Q
            matmul_acc_seq(
                &mut dqh[t0 * dh..],
                (dh, 1),
                &ds,
                (sv, 1),
                &k[g * dh..],
                (ks, 1),
                tb,
                sv,
                dh,
            );
            matmul_acc_seq(dkh, (dh, 1), &ds, (1, sv), q_blk, (qs, 1), sv, tb, dh);
        }
    };
    for_each_head(
        &mut dq_h,
        t * dh,
        &mut dkv_h,
        2 * s * dh,
        h * t * s * dh,
        head,
    );
    for hh in 0..h {
        let g = hh / a.group();
        for (ti, row) in dq_h[hh * t * dh..(hh + 1) * t * dh]
            .chunks_exact(dh)
            .enumerate()
        {
            let dst = &mut dq[ti * qs + hh * dh..ti * qs + (hh + 1) * dh];
            dst.iter_mut().zip(row).for_each(|(d, x)| *d += x);
        }
        let (dkh, dvh) = dkv_h[hh * 2 * s * dh..(hh + 1) * 2 * s * dh].split_at(s * dh);
        for j in 0..s {
            let at = j * ks + g * dh;
            let (src_k, src_v) = (&dkh[j * dh..(j + 1) * dh], &dvh[j * dh..(j + 1) * dh]);
            dk[at..at + dh]
                .iter_mut()
                .zip(src_k)
                .for_each(|(d, x)| *d += x);
            dv[at..at + dh]
                .iter_mut()
                .zip(src_v)
                .for_each(|(d, x)| *d += x);
        }
    }
}

/// [`attention_train_forward`] for `rows` sequences laid end to end (q/out `[rows·T, H·dh]`,
/// k/v `[rows·S, KV·dh]`, `key_mask` `[rows, S]`); the probabilities of each row.
pub fn attention_train_forward_rows(
    out: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    key_mask: Option<&[bool]>,
    rows: usize,
    a: &TrainAttn,
) -> Vec<Vec<f32>> {
    let (qn, kn) = (a.t * a.h * a.dh, a.s * a.kv_h * a.dh);
    (0..rows)
        .map(|r| {
            attention_train_forward(
                &mut out[r * qn..(r + 1) * qn],
                &q[r * qn..(r + 1) * qn],
                &k[r * kn..(r + 1) * kn],
                &v[r * kn..(r + 1) * kn],
                key_mask.map(|m| &m[r * a.s..(r + 1) * a.s]),
                a,
            )
        })
        .collect()
}

/// [`attention_backward`] for the layout of [`attention_train_forward_rows`].
#[allow(clippy::too_many_arguments)]
pub fn attention_backward_rows(
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    dout: &[f32],
    probs: &[Vec<f32>],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    a: &TrainAttn,
) {
    let (qn, kn) = (a.t * a.h * a.dh, a.s * a.kv_h * a.dh);
    for (r, p) in probs.iter().enumerate() {
        let (qr, kr) = (r * qn..(r + 1) * qn, r * kn..(r + 1) * kn);
        attention_backward(
            &mut dq[qr.clone()],
            &mut dk[kr.clone()],
            &mut dv[kr.clone()],
            &dout[qr.clone()],
            p,
            &q[qr],
            &k[kr.clone()],
            &v[kr],
            a,
        );
    }
}

#[cfg(test)]
mod train_tests {
    use super::*;
    use crate::ops::gradcheck::{check, rand_vec};

    fn run(a: TrainAttn, mask: Option<Vec<bool>>) {
        let (qs, ks) = (a.h * a.dh, a.kv_h * a.dh);
        let q = rand_vec(a.t * qs, 51);
        let k = rand_vec(a.s * ks, 52);
        let v = rand_vec(a.s * ks, 53);
        let dout = rand_vec(a.t * qs, 54);
        let m = mask.as_deref();
        let loss = |q: &[f32], k: &[f32], v: &[f32]| {
            let mut o = vec![0f32; a.t * qs];
            attention_train_forward(&mut o, q, k, v, m, &a);
            o.iter()
                .zip(&dout)
                .map(|(x, g)| (x * g) as f64)
                .sum::<f64>()
        };
        let mut o = vec![0f32; a.t * qs];
        let probs = attention_train_forward(&mut o, &q, &k, &v, m, &a);
        let (mut dq, mut dk, mut dv) = (
            vec![0f32; q.len()],
            vec![0f32; k.len()],
            vec![0f32; v.len()],
        );
        attention_backward(&mut dq, &mut dk, &mut dv, &dout, &probs, &q, &k, &v, &a);
        check("dq", &q, &dq, |x| loss(x, &k, &v));
        check("dk", &k, &dk, |x| loss(&q, x, &v));
        check("dv", &v, &dv, |x| loss(&q, &k, x));
    }

    #[test]
    fn causal_gqa_attention_backward_matches_finite_differences() {
        let a = TrainAttn {
            t: 5,
            s: 5,
            h: 4,
            kv_h: 2,
            dh: 3,
            causal: true,
            scale: 0.6,
        };
        run(a, Some(vec![true, true, true, true, false]));
    }

    #[test]
    fn cross_attention_backward_matches_finite_differences() {
        let a = TrainAttn {
            t: 3,
            s: 6,
            h: 2,
            kv_h: 2,
            dh: 4,
            causal: false,
            scale: 0.5,
        };
        run(a, Some(vec![true, true, false, true, true, false]));
    }

    /// Shapes past one causal block and big enough for the per-head threads: forward
    /// against the inference loop, backward against the textbook formulas in f64.
    #[test]
    fn blocked_parallel_attention_matches_reference() {
        let a = TrainAttn {
            t: 150,
            s: 150,
            h: 4,
            kv_h: 2,
            dh: 16,
            causal: true,
            scale: 0.25,
        };
        let (t, h, kv_h, dh) = (a.t, a.h, a.kv_h, a.dh);
        let (qs, ks) = (h * dh, kv_h * dh);
        let q = rand_vec(t * qs, 71);
        let k = rand_vec(t * ks, 72);
        let v = rand_vec(t * ks, 73);
        let dout = rand_vec(t * qs, 74);
        let mask: Vec<bool> = (0..t).map(|j| j % 11 != 5).collect();
        let mut got = vec![0f32; t * qs];
        let probs = attention_train_forward(&mut got, &q, &k, &v, Some(&mask), &a);
        // Inference layout: caches [KV, cap, dh].
        let split = |x: &[f32]| {
            let mut o = vec![0f32; x.len()];
            for j in 0..t {
                for g in 0..kv_h {
                    for i in 0..dh {
                        o[(g * t + j) * dh + i] = x[j * ks + g * dh + i];
                    }
                }
            }
            o
        };
        let shape = AttnShape {
            t,
            h,
            kv_h,
            dh,
            cap: t,
            len: t,
        };
        let mut want = vec![0f32; t * qs];
        attention_loop(
            &mut want,
            &q,
            &split(&k),
            &split(&v),
            &shape,
            Some(0),
            Some(&mask),
            a.scale,
        );
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "forward {g} vs {w}");
        }
        let (mut dq, mut dk, mut dv) = (
            vec![0f32; q.len()],
            vec![0f32; k.len()],
            vec![0f32; v.len()],
        );
        attention_backward(&mut dq, &mut dk, &mut dv, &dout, &probs, &q, &k, &v, &a);
        let (mut rq, mut rk, mut rv) = (
            vec![0f64; q.len()],
            vec![0f64; k.len()],
            vec![0f64; v.len()],
        );
        for hh in 0..h {
            let g = hh / (h / kv_h);
            for i in 0..t {
                let p = |j: usize| probs[(hh * t + i) * t + j] as f64;
                let dov = |j: usize| -> f64 {
                    (0..dh)
                        .map(|c| dout[i * qs + hh * dh + c] as f64 * v[j * ks + g * dh + c] as f64)
                        .sum()
                };
                let dot: f64 = (0..t).map(|j| p(j) * dov(j)).sum();
                for j in 0..t {
                    let ds = p(j) * (dov(j) - dot) * a.scale as f64;
                    for c in 0..dh {
                        rv[j * ks + g * dh + c] += p(j) * dout[i * qs + hh * dh + c] as f64;
                        rq[i * qs + hh * dh + c] += ds * k[j * ks + g * dh + c] as f64;
                        rk[j * ks + g * dh + c] += ds * q[i * qs + hh * dh + c] as f64;
                    }
                }
            }
        }
        for (name, got, want) in [("dq", &dq, &rq), ("dk", &dk, &rk), ("dv", &dv, &rv)] {
            for (g, w) in got.iter().zip(want.iter()) {
                assert!((*g as f64 - w).abs() < 1e-4, "{name}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn train_forward_matches_inference_attention() {
        let (t, h, dh) = (6, 2, 4);
        let q = rand_vec(t * h * dh, 61);
        let k = rand_vec(t * h * dh, 62);
        let v = rand_vec(t * h * dh, 63);
        let a = TrainAttn {
            t,
            s: t,
            h,
            kv_h: h,
            dh,
            causal: true,
            scale: 0.5,
        };
        let mut got = vec![0f32; t * h * dh];
        attention_train_forward(&mut got, &q, &k, &v, None, &a);
        // Inference layout: caches [H, cap, dh].
        let split = |x: &[f32]| {
            let mut o = vec![0f32; x.len()];
            for ti in 0..t {
                for hh in 0..h {
                    for i in 0..dh {
                        o[(hh * t + ti) * dh + i] = x[ti * h * dh + hh * dh + i];
                    }
                }
            }
            o
        };
        let shape = AttnShape {
            t,
            h,
            kv_h: h,
            dh,
            cap: t,
            len: t,
        };
        let mut want = vec![0f32; t * h * dh];
        attention_loop(
            &mut want,
            &q,
            &split(&k),
            &split(&v),
            &shape,
            Some(0),
            None,
            0.5,
        );
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "{g} vs {w}");
        }
    }
}
