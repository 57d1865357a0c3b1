//! ggml tensor types and their dequantization to f32, written after ggml's
//! `dequantize_row_*` (ggml-quants.c) with the same operation order, so results are
//! bit-identical to ggml's reference C (and to gguf-py's numpy `dequantize`, which
//! transformers uses). One function per type; each block is decoded independently.

use std::string::String;
use std::vec::Vec;

use half::{bf16, f16};

/// ggml's `enum ggml_type` numbering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
    BF16,
    /// Any other id (IQ types, ternary types, types newer than this reader).
    Other(u32),
}

impl GgmlType {
    pub fn from_u32(t: u32) -> Self {
        match t {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            9 => GgmlType::Q8_1,
            10 => GgmlType::Q2K,
            11 => GgmlType::Q3K,
            12 => GgmlType::Q4K,
            13 => GgmlType::Q5K,
            14 => GgmlType::Q6K,
            15 => GgmlType::Q8K,
            30 => GgmlType::BF16,
            t => GgmlType::Other(t),
        }
    }

    /// (values per block, bytes per block), `None` for types whose layout is not known here.
    pub fn block(self) -> Option<(u64, u64)> {
        Some(match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q5_0 => (32, 22),
            GgmlType::Q5_1 => (32, 24),
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q8_1 => (32, 36),
            GgmlType::Q2K => (256, 84),
            GgmlType::Q3K => (256, 110),
            GgmlType::Q4K => (256, 144),
            GgmlType::Q5K => (256, 176),
            GgmlType::Q6K => (256, 210),
            GgmlType::Q8K => (256, 292),
            GgmlType::Other(_) => return None,
        })
    }

    /// Bytes taken by `numel` values; `None` when not a whole number of blocks or unknown.
    /// Unknown types are only rejected when a tensor of that type is decoded, so the header
    /// of a file with newer types can still be inspected.
    pub fn byte_size(self, numel: u64) -> Option<u64> {
        match self.block() {
            Some((bs, bb)) if numel.is_multiple_of(bs) => (numel / bs).checked_mul(bb),
            Some(_) => None,
            None => Some(0),
        }
    }
}

/// Types [`dequantize`] decodes.
pub const SUPPORTED: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q4K,
    GgmlType::Q6K,
];

/// Decode `numel` values of type `ty` from `data` (exactly their byte size).
pub fn dequantize(ty: GgmlType, data: &[u8], numel: usize) -> Result<Vec<f32>, String> {
    let decode: fn(&mut [f32], &[u8]) = match ty {
        GgmlType::F32 => dequant_f32,
        GgmlType::F16 => dequant_f16,
        GgmlType::BF16 => dequant_bf16,
        GgmlType::Q8_0 => dequant_q8_0,
        GgmlType::Q4_0 => dequant_q4_0,
        GgmlType::Q4_1 => dequant_q4_1,
        GgmlType::Q4K => dequant_q4_k,
        GgmlType::Q6K => dequant_q6_k,
        _ => {
            return Err(std::format!(
                "tensor type {ty:?} is not supported (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K)"
            ))
        }
    };
    if ty.byte_size(numel as u64) != Some(data.len() as u64) {
        return Err(std::format!(
            "{} bytes do not hold {numel} values of {ty:?}",
            data.len()
        ));
    }
    let mut out = std::vec![0f32; numel];
    decode(&mut out, data);
    Ok(out)
}

fn h(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

pub fn dequant_f32(y: &mut [f32], x: &[u8]) {
    for (o, c) in y.iter_mut().zip(x.chunks_exact(4)) {
        *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
}

pub fn dequant_f16(y: &mut [f32], x: &[u8]) {
    for (o, c) in y.iter_mut().zip(x.chunks_exact(2)) {
        *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
    }
}

pub fn dequant_bf16(y: &mut [f32], x: &[u8]) {
    for (o, c) in y.iter_mut().zip(x.chunks_exact(2)) {
        *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
    }
}

/// block_q8_0 { f16 d; i8 qs[32] }: y = qs * d.
pub fn dequant_q8_0(y: &mut [f32], x: &[u8]) {
    for (yb, b) in y.chunks_exact_mut(32).zip(x.chunks_exact(34)) {
        let d = h(b, 0);
        for (o, &q) in yb.iter_mut().zip(&b[2..34]) {
            *o = (q as i8) as f32 * d;
        }
    }
}

/// block_q4_0 { f16 d; u8 qs[16] }: low nibbles are values 0..16, high nibbles 16..32;
/// y = (q - 8) * d.
pub fn dequant_q4_0(y: &mut [f32], x: &[u8]) {
    for (yb, b) in y.chunks_exact_mut(32).zip(x.chunks_exact(18)) {
        let d = h(b, 0);
        for j in 0..16 {
            let q = b[2 + j];
            yb[j] = ((q & 0x0f) as i32 - 8) as f32 * d;
            yb[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}

/// block_q4_1 { f16 d; f16 m; u8 qs[16] }: y = q * d + m (two roundings, as ggml's C and
/// numpy compute it; no fused multiply-add).
pub fn dequant_q4_1(y: &mut [f32], x: &[u8]) {
    for (yb, b) in y.chunks_exact_mut(32).zip(x.chunks_exact(20)) {
        let (d, m) = (h(b, 0), h(b, 2));
        for j in 0..16 {
            let q = b[4 + j];
            yb[j] = (q & 0x0f) as f32 * d + m;
            yb[j + 16] = (q >> 4) as f32 * d + m;
        }
    }
}

/// ggml's `get_scale_min_k4`: 8 six-bit (scale, min) pairs packed into 12 bytes.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// block_q4_K { f16 d; f16 dmin; u8 scales[12]; u8 qs[128] }: 8 sub-blocks of 32 with a
/// 6-bit scale and min each; y = (d * sc) * q - (dmin * m).
pub fn dequant_q4_k(y: &mut [f32], x: &[u8]) {
    for (yb, b) in y.chunks_exact_mut(256).zip(x.chunks_exact(144)) {
        let (d, dmin) = (h(b, 0), h(b, 2));
        let scales = &b[4..16];
        let qs = &b[16..144];
        for (c, (yc, q)) in yb.chunks_exact_mut(64).zip(qs.chunks_exact(32)).enumerate() {
            let (sc1, m1) = scale_min_k4(2 * c, scales);
            let (sc2, m2) = scale_min_k4(2 * c + 1, scales);
            let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
            for l in 0..32 {
                yc[l] = d1 * (q[l] & 0x0f) as f32 - m1;
                yc[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }
}

/// block_q6_K { u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d }: 6-bit values (4 low bits in
/// `ql`, 2 high bits in `qh`) minus 32, 16 sub-blocks of 16 with an 8-bit scale;
/// y = (d * sc) * q.
pub fn dequant_q6_k(y: &mut [f32], x: &[u8]) {
    for (yb, b) in y.chunks_exact_mut(256).zip(x.chunks_exact(210)) {
        let d = h(b, 208);
        for n in 0..2 {
            let ql = &b[64 * n..64 * n + 64];
            let qh = &b[128 + 32 * n..128 + 32 * n + 32];
            let sc = &b[192 + 8 * n..192 + 8 * n + 8];
            let yc = &mut yb[128 * n..128 * n + 128];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                let s = |k: usize| d * (sc[is + k] as i8) as f32;
                yc[l] = s(0) * q1 as f32;
                yc[l + 32] = s(2) * q2 as f32;
                yc[l + 64] = s(4) * q3 as f32;
                yc[l + 96] = s(6) * q4 as f32;
            }
        }
    }
}
