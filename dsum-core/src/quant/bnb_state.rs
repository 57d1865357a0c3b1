//! The bitsandbytes serialization of a 4-bit weight, as transformers saves a 4-bit model
//! (`QuantState.as_dict(packed=True)` under the weight's name):
//!
//! | tensor                                  | dtype | shape                  |
//! |-----------------------------------------|-------|------------------------|
//! | `W`                                     | u8    | `[numel.div_ceil(2), 1]` |
//! | `W.absmax`                              | f32 (u8 when double-quantized) | `[blocks]` |
//! | `W.quant_map`                           | f32   | `[16]`                 |
//! | `W.nested_absmax` (double quant)        | f32   | `[blocks.div_ceil(256)]` |
//! | `W.nested_quant_map` (double quant)     | f32   | `[256]`                |
//! | `W.quant_state.bitsandbytes__nf4`       | u8    | JSON bytes             |
//!
//! The JSON is Python's `json.dumps` of `{"quant_type", "blocksize", "dtype", "shape"[,
//! "nested_blocksize", "nested_dtype", "nested_offset"]}`; it is written byte for byte the same
//! (Python's float repr included) so files compare equal.

use std::string::{String, ToString};
use std::vec::Vec;

use safetensors::tensor::Dtype;
use serde_json::Value;

use super::dynamic_map::DoubleQuant;
use super::nf4::{checked_numel, Absmax, Nf4Dtype, Nf4Tensor, NF4_CODE};
use crate::error::{Error, Result};
use crate::io::raw_tensor::{RawTensor, TensorSource};

/// Suffix of the tensor that marks a 4-bit NF4 weight.
pub const QUANT_STATE_SUFFIX: &str = ".quant_state.bitsandbytes__nf4";

/// Suffixes of the statistics stored next to a 4-bit weight `W`.
pub const STATE_SUFFIXES: [&str; 5] = [
    ".absmax",
    ".quant_map",
    ".nested_absmax",
    ".nested_quant_map",
    QUANT_STATE_SUFFIX,
];

/// The names of the NF4 weights among `names` (those with a `W.quant_state.bitsandbytes__nf4`).
pub fn nf4_weight_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    names
        .into_iter()
        .filter_map(|n| n.strip_suffix(QUANT_STATE_SUFFIX).map(|w| w.to_string()))
        .collect()
}

/// True when `name` is one of the statistics tensors of the 4-bit weight `weight`.
pub fn is_state_of(name: &str, weight: &str) -> bool {
    name.strip_prefix(weight)
        .is_some_and(|rest| STATE_SUFFIXES.contains(&rest))
}

/// Python's `repr(float)`: the shortest digits that round-trip, fixed notation for decimal
/// exponents -4..16, otherwise `d.ddde-XX`.
pub fn py_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "NaN".to_string();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.to_string();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.to_string();
    }
    // Rust's `{:e}` gives the same shortest round-trip digits: "d.ddd" "e" exponent.
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let sign = if x < 0.0 { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let body = if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                format!("{digits}{}.0", "0".repeat(int_len - digits.len()))
            } else {
                format!("{}.{}", &digits[..int_len], &digits[int_len..])
            }
        } else {
            format!("0.{}{digits}", "0".repeat((-exp - 1) as usize))
        };
        format!("{sign}{body}")
    } else {
        let m = if digits.len() == 1 {
            digits.clone()
        } else {
            format!("{}.{}", &digits[..1], &digits[1..])
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{m}e{esign}{:02}", exp.abs())
    }
}

/// The `W.quant_state.bitsandbytes__nf4` JSON, byte-identical to bitsandbytes'.
pub fn quant_state_json(t: &Nf4Tensor) -> String {
    let shape: Vec<String> = t.shape().iter().map(|d| d.to_string()).collect();
    let mut s = format!(
        "{{\"quant_type\": \"nf4\", \"blocksize\": {}, \"dtype\": \"{}\", \"shape\": [{}]",
        t.blocksize(),
        t.dtype().name(),
        shape.join(", ")
    );
    if let Absmax::Double(d) = t.absmax() {
        s.push_str(&format!(
            ", \"nested_blocksize\": {}, \"nested_dtype\": \"float32\", \"nested_offset\": {}",
            d.nested_blocksize,
            py_float_repr(d.offset as f64)
        ));
    }
    s.push('}');
    s
}

fn f32_tensor(values: &[f32]) -> RawTensor {
    let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    RawTensor::owned(Dtype::F32, std::vec![values.len()], bytes)
}

/// The tensors bitsandbytes stores for the 4-bit weight `name`, in `as_dict(packed=True)` order.
pub fn to_bnb_tensors(name: &str, t: &Nf4Tensor) -> Vec<(String, RawTensor)> {
    let mut out = Vec::with_capacity(6);
    out.push((
        name.to_string(),
        RawTensor::owned(
            Dtype::U8,
            std::vec![t.packed().len(), 1],
            t.packed().to_vec(),
        ),
    ));
    match t.absmax() {
        Absmax::Plain(a) => out.push((format!("{name}.absmax"), f32_tensor(a))),
        Absmax::Double(d) => out.push((
            format!("{name}.absmax"),
            RawTensor::owned(Dtype::U8, std::vec![d.codes.len()], d.codes.clone()),
        )),
    }
    out.push((format!("{name}.quant_map"), f32_tensor(&NF4_CODE)));
    if let Absmax::Double(d) = t.absmax() {
        out.push((
            format!("{name}.nested_absmax"),
            f32_tensor(&d.nested_absmax),
        ));
        out.push((
            format!("{name}.nested_quant_map"),
            f32_tensor(&d.nested_code),
        ));
    }
    let json = quant_state_json(t).into_bytes();
    out.push((
        format!("{name}{QUANT_STATE_SUFFIX}"),
        RawTensor::owned(Dtype::U8, std::vec![json.len()], json),
    ));
    out
}

/// Reads the 4-bit weight `name` (and its statistics) from `src`.
pub fn from_bnb(src: &dyn TensorSource, name: &str) -> Result<Nf4Tensor> {
    let path = src.source_path();
    let err = |tensor: &str, message: String| Error::Tensor {
        path: path.clone(),
        name: tensor.to_string(),
        message,
    };
    let state_name = format!("{name}{QUANT_STATE_SUFFIX}");
    let json = read_u8(src, &state_name)?;
    let state = parse_quant_state(&json).map_err(|m| err(&state_name, m))?;
    let numel = checked_numel(&state.shape)
        .ok_or_else(|| err(&state_name, format!("shape {:?} overflows", state.shape)))?;

    // Sizes are checked against the JSON before anything is decoded or allocated from them.
    let packed = read_u8(src, name)?;
    if packed.len() != numel.div_ceil(2) {
        return Err(err(
            name,
            format!(
                "{} packed bytes, but the quant_state shape {:?} needs {}",
                packed.len(),
                state.shape,
                numel.div_ceil(2)
            ),
        ));
    }
    let blocks = numel.div_ceil(state.blocksize);
    let absmax_name = format!("{name}.absmax");
    let qmap_name = format!("{name}.quant_map");
    let qmap = read_f32(src, &qmap_name)?;
    if qmap.len() != 16 {
        return Err(err(
            &qmap_name,
            format!("{} values (expected the 16 NF4 codes)", qmap.len()),
        ));
    }
    let absmax = match &state.nested {
        None => {
            let a = read_f32(src, &absmax_name)?;
            if a.len() != blocks {
                return Err(err(
                    &absmax_name,
                    format!("{} values, expected {blocks} (one per block)", a.len()),
                ));
            }
            Absmax::Plain(a)
        }
        Some((nested_blocksize, offset)) => {
            let codes = read_u8(src, &absmax_name)?;
            if codes.len() != blocks {
                return Err(err(
                    &absmax_name,
                    format!("{} codes, expected {blocks} (one per block)", codes.len()),
                ));
            }
            let nested_name = format!("{name}.nested_absmax");
            let nested_absmax = read_f32(src, &nested_name)?;
            let want = blocks.div_ceil(*nested_blocksize);
            if nested_absmax.len() != want {
                return Err(err(
                    &nested_name,
                    format!("{} values, expected {want}", nested_absmax.len()),
                ));
            }
            let map_name = format!("{name}.nested_quant_map");
            let nested_code = read_f32(src, &map_name)?;
            if nested_code.len() != 256 {
                return Err(err(
                    &map_name,
                    format!("{} values, expected 256", nested_code.len()),
                ));
            }
            Absmax::Double(DoubleQuant {
                codes,
                nested_absmax,
                nested_code,
                nested_blocksize: *nested_blocksize,
                offset: *offset,
            })
        }
    };
    Nf4Tensor::from_parts(state.shape, state.blocksize, packed, absmax, state.dtype)
        .map_err(|e| err(name, e.to_string()))
}

/// The fields of a quant_state JSON.
struct QuantState {
    blocksize: usize,
    dtype: Nf4Dtype,
    shape: Vec<usize>,
    /// (nested_blocksize, nested_offset) when double-quantized.
    nested: Option<(usize, f32)>,
}

fn parse_quant_state(bytes: &[u8]) -> core::result::Result<QuantState, String> {
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("quant_state is not valid JSON: {e}"))?;
    let obj = v
        .as_object()
        .ok_or_else(|| "quant_state is not a JSON object".to_string())?;
    const KNOWN: [&str; 7] = [
        "quant_type",
        "blocksize",
        "dtype",
        "shape",
        "nested_blocksize",
        "nested_dtype",
        "nested_offset",
    ];
    if let Some(k) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(format!("quant_state has an unknown key `{k}`"));
    }
    let field = |k: &str| obj.get(k).ok_or_else(|| format!("quant_state lacks `{k}`"));
    let uint = |k: &str| -> core::result::Result<usize, String> {
        field(k)?
            .as_u64()
            .and_then(|x| usize::try_from(x).ok())
            .ok_or_else(|| format!("quant_state `{k}` is not a non-negative integer"))
    };
    match field("quant_type")?.as_str() {
        Some("nf4") => {}
        Some(other) => return Err(format!("quant_type `{other}` is not supported (only nf4)")),
        None => return Err("quant_state `quant_type` is not a string".to_string()),
    }
    let blocksize = uint("blocksize")?;
    super::nf4::check_blocksize(blocksize).map_err(|e| e.to_string())?;
    let dtype_name = field("dtype")?.as_str().unwrap_or("");
    let dtype = Nf4Dtype::from_name(dtype_name).ok_or_else(|| {
        format!("quant_state dtype `{dtype_name}` is not float32, float16 or bfloat16")
    })?;
    let shape = field("shape")?
        .as_array()
        .ok_or_else(|| "quant_state `shape` is not a list".to_string())?
        .iter()
        .map(|d| d.as_u64().and_then(|x| usize::try_from(x).ok()))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| {
            "quant_state `shape` holds something other than non-negative integers".to_string()
        })?;
    let nested = if obj.contains_key("nested_offset")
        || obj.contains_key("nested_blocksize")
        || obj.contains_key("nested_dtype")
    {
        let nb = uint("nested_blocksize")?;
        if nb == 0 {
            return Err("quant_state `nested_blocksize` is 0".to_string());
        }
        if field("nested_dtype")?.as_str() != Some("float32") {
            return Err("quant_state `nested_dtype` is not float32".to_string());
        }
        let off = field("nested_offset")?
            .as_f64()
            .filter(|x| x.is_finite())
            .ok_or_else(|| "quant_state `nested_offset` is not a finite number".to_string())?;
        Some((nb, off as f32))
    } else {
        None
    };
    Ok(QuantState {
        blocksize,
        dtype,
        shape,
        nested,
    })
}

fn read_raw(src: &dyn TensorSource, name: &str, dtype: Dtype) -> Result<RawTensor> {
    let t = src.raw_tensor(name)?;
    if t.dtype != dtype {
        return Err(Error::Tensor {
            path: src.source_path(),
            name: name.to_string(),
            message: format!("dtype {:?}, expected {dtype:?}", t.dtype),
        });
    }
    Ok(t)
}

fn read_u8(src: &dyn TensorSource, name: &str) -> Result<Vec<u8>> {
    Ok(read_raw(src, name, Dtype::U8)?.bytes().to_vec())
}

fn read_f32(src: &dyn TensorSource, name: &str) -> Result<Vec<f32>> {
    let t = read_raw(src, name, Dtype::F32)?;
    Ok(t.bytes()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// What a whole-file conversion did.
#[cfg(feature = "std")]
#[derive(Debug, Default)]
pub struct FileSummary {
    /// Tensors quantized to NF4 (or dequantized from it).
    pub converted: usize,
    /// Tensors copied unchanged.
    pub copied: usize,
}

#[cfg(feature = "std")]
fn open_file(input: &std::path::Path) -> Result<crate::io::checkpoint::Checkpoint> {
    let bytes = crate::io::checkpoint::read_shared(input)?;
    crate::io::checkpoint::Checkpoint::from_files(std::vec![(input.display().to_string(), bytes)])
}

/// Write `tensors` to a safetensors file at `output` atomically, with transformers'
/// `{"format": "pt"}` metadata. Two tensors with one name are an error.
#[cfg(feature = "std")]
fn write_file(output: &std::path::Path, tensors: &[(String, RawTensor)]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for (n, _) in tensors {
        if !seen.insert(n.as_str()) {
            return Err(Error::checkpoint(
                output.display().to_string(),
                format!("two output tensors would be named `{n}` (a 4-bit weight's statistics clash with an input tensor)"),
            ));
        }
    }
    let views: Vec<(&str, &RawTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    let tmp = crate::io::atomic::temp_path(output);
    safetensors::tensor::serialize_to_file(views, Some(meta), &tmp).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(output.display().to_string(), e)
    })?;
    crate::io::atomic::commit(&tmp, output)
}

/// Quantize every floating tensor (F32, F16, BF16) of the safetensors file `input` to NF4 in
/// bitsandbytes' layout and write `output`; tensors whose name contains one of `exclude`, other
/// dtypes, empty tensors and 4-bit weights already in the file are copied unchanged.
#[cfg(feature = "std")]
pub fn quantize_file(
    input: &std::path::Path,
    output: &std::path::Path,
    blocksize: usize,
    double_quant: bool,
    exclude: &[String],
) -> Result<FileSummary> {
    super::nf4::check_blocksize(blocksize)?;
    let src = open_file(input)?;
    let path = src.source_path();
    let names = src.tensor_names();
    let existing = nf4_weight_names(names.iter().map(|s| s.as_str()));
    let mut out = Vec::with_capacity(names.len());
    let mut summary = FileSummary::default();
    for name in &names {
        let raw = src.raw_tensor(name)?;
        let keep = exclude.iter().any(|e| name.contains(e.as_str()))
            || existing.iter().any(|w| w == name || is_state_of(name, w));
        let dtype = match raw.dtype {
            Dtype::F32 => Nf4Dtype::F32,
            Dtype::F16 => Nf4Dtype::F16,
            Dtype::BF16 => Nf4Dtype::BF16,
            _ => {
                summary.copied += 1;
                out.push((name.clone(), raw));
                continue;
            }
        };
        // An empty tensor has no blocks to quantize: bitsandbytes-compatible files keep it as is.
        if keep || raw.shape.contains(&0) {
            summary.copied += 1;
            out.push((name.clone(), raw));
            continue;
        }
        let values = raw.to_weight(&path, name)?;
        let t = Nf4Tensor::quantize(&values, raw.shape.clone(), blocksize, double_quant)
            .map_err(|e| Error::Tensor {
                path: path.clone(),
                name: name.clone(),
                message: e.to_string(),
            })?
            .with_dtype(dtype);
        out.extend(to_bnb_tensors(name, &t));
        summary.converted += 1;
    }
    write_file(output, &out)?;
    Ok(summary)
}

/// Dequantize every 4-bit NF4 weight of the safetensors file `input` (bitsandbytes' layout)
/// back to its recorded dtype and shape and write `output`; other tensors are copied.
#[cfg(feature = "std")]
pub fn dequantize_file(input: &std::path::Path, output: &std::path::Path) -> Result<FileSummary> {
    let src = open_file(input)?;
    let names = src.tensor_names();
    let weights = nf4_weight_names(names.iter().map(|s| s.as_str()));
    let mut out = Vec::with_capacity(names.len());
    let mut summary = FileSummary::default();
    for name in &names {
        if weights.iter().any(|w| is_state_of(name, w)) {
            continue;
        }
        if !weights.contains(name) {
            out.push((name.clone(), src.raw_tensor(name)?));
            summary.copied += 1;
            continue;
        }
        let t = from_bnb(&src, name)?;
        let values = t.dequantize();
        let (dtype, bytes): (Dtype, Vec<u8>) = match t.dtype() {
            Nf4Dtype::F32 => (
                Dtype::F32,
                values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            Nf4Dtype::F16 => (
                Dtype::F16,
                values
                    .iter()
                    .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                    .collect(),
            ),
            Nf4Dtype::BF16 => (
                Dtype::BF16,
                values
                    .iter()
                    .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                    .collect(),
            ),
        };
        out.push((
            name.clone(),
            RawTensor::owned(dtype, t.shape().to_vec(), bytes),
        ));
        summary.converted += 1;
    }
    write_file(output, &out)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_float_repr() {
        for (x, want) in [
            (2.4338951110839844, "2.4338951110839844"),
            (1.0, "1.0"),
            (0.5, "0.5"),
            (1e-05, "1e-05"),
            (0.0001, "0.0001"),
            (-3.5e-7, "-3.5e-07"),
            (1e16, "1e+16"),
            (123456789012345.0, "123456789012345.0"),
            (1.25e20, "1.25e+20"),
            (0.0, "0.0"),
        ] {
            assert_eq!(py_float_repr(x), want);
        }
    }

    #[test]
    fn garbage_quant_state_is_an_error() {
        for bad in [
            &b"not json"[..],
            b"[1, 2]",
            b"{\"quant_type\": \"fp4\", \"blocksize\": 64, \"dtype\": \"float32\", \"shape\": [2]}",
            b"{\"quant_type\": \"nf4\", \"blocksize\": 48, \"dtype\": \"float32\", \"shape\": [2]}",
            b"{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"int8\", \"shape\": [2]}",
            b"{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float32\", \"shape\": [-2]}",
            b"{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float32\"}",
            b"{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float32\", \"shape\": [2], \"nested_offset\": 1.0}",
            b"{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float32\", \"shape\": [2], \"x\": 1}",
        ] {
            assert!(parse_quant_state(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
