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

/// Same computation as the loop version, per head: scores = q·kᵀ (gemm), mask, softmax,
/// out = p·v (gemm, written straight into the interleaved `[T, H*dh]` output).
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

/// out = softmax(q·kᵀ·scale + mask)·v for every head; returns the probabilities [H, T, S]
/// that the backward pass needs. `key_mask[j] == false` hides key j. Softmax runs in f32
/// with exact exp, like transformers' eager attention.
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
    for hh in 0..h {
        let g = hh / a.group();
        let p = &mut probs[hh * t * s..(hh + 1) * t * s];
        super::matmul::matmul_acc(
            p,
            (s, 1),
            &q[hh * dh..],
            (qs, 1),
            &k[g * dh..],
            (1, ks),
            t,
            dh,
            s,
        );
        for (ti, row) in p.chunks_exact_mut(s).enumerate() {
            let visible = |j: usize| (!a.causal || j <= ti) && key_mask.is_none_or(|m| m[j]);
            let mut max = f32::NEG_INFINITY;
            for (j, x) in row.iter_mut().enumerate() {
                *x = if visible(j) {
                    *x * a.scale
                } else {
                    f32::NEG_INFINITY
                };
                max = max.max(*x);
            }
            let mut sum = 0f32;
            for x in row.iter_mut() {
                *x = if *x == f32::NEG_INFINITY {
                    0.0
                } else {
                    libm::expf(*x - max)
                };
                sum += *x;
            }
            if sum > 0.0 {
                let inv = 1.0 / sum;
                row.iter_mut().for_each(|x| *x *= inv);
            }
        }
        super::matmul::matmul_acc(
            &mut out[hh * dh..],
            (qs, 1),
            p,
            (s, 1),
            &v[g * dh..],
            (ks, 1),
            t,
            s,
            dh,
        );
    }
    probs
}

/// Backward of [`attention_train_forward`]; dq, dk, dv accumulate (GQA: the heads of a
/// group add into their shared key/value head).
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
    use super::matmul::matmul_acc;
    let TrainAttn {
        t, s, h, kv_h, dh, ..
    } = *a;
    let (qs, ks) = (h * dh, kv_h * dh);
    let mut ds = vec![0f32; t * s];
    for hh in 0..h {
        let g = hh / a.group();
        let p = &probs[hh * t * s..(hh + 1) * t * s];
        // dV += Pᵀ·dO ; dP = dO·Vᵀ
        matmul_acc(
            &mut dv[g * dh..],
            (ks, 1),
            p,
            (1, s),
            &dout[hh * dh..],
            (qs, 1),
            s,
            t,
            dh,
        );
        ds.iter_mut().for_each(|x| *x = 0.0);
        matmul_acc(
            &mut ds,
            (s, 1),
            &dout[hh * dh..],
            (qs, 1),
            &v[g * dh..],
            (1, ks),
            t,
            dh,
            s,
        );
        // dS = P ⊙ (dP - Σ_j dP·P) · scale
        for (dr, pr) in ds.chunks_exact_mut(s).zip(p.chunks_exact(s)) {
            let dot: f32 = dr.iter().zip(pr).map(|(d, p)| d * p).sum();
            dr.iter_mut()
                .zip(pr)
                .for_each(|(d, p)| *d = p * (*d - dot) * a.scale);
        }
        // dQ += dS·K ; dK += dSᵀ·Q
        matmul_acc(
            &mut dq[hh * dh..],
            (qs, 1),
            &ds,
            (s, 1),
            &k[g * dh..],
            (ks, 1),
            t,
            s,
            dh,
        );
        matmul_acc(
            &mut dk[g * dh..],
            (ks, 1),
            &ds,
            (1, s),
            &q[hh * dh..],
            (qs, 1),
            s,
            t,
            dh,
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
