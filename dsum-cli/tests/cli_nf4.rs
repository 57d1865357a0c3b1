//! `dsum-cli nf4 quantize|dequantize`: the tiny Llama's float32 weights quantized exactly as
//! transformers + bitsandbytes saved them (tests/fixtures/nf4), dequantized back to the
//! pure-torch values, other tensors copied; bad input names the file.

use std::path::{Path, PathBuf};
use std::process::Command;

use dsum_core::io::checkpoint::{read_shared, Checkpoint};
use dsum_core::io::convert::write_safetensors;
use dsum_core::io::raw_tensor::{RawTensor, TensorSource};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/nf4")
}

fn cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dsum-cli"))
}

fn open(p: &Path) -> Checkpoint {
    Checkpoint::from_files(vec![(p.display().to_string(), read_shared(p).unwrap())]).unwrap()
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run_err(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!err.contains("panicked"), "{err}");
    err
}

const EXCLUDE: [&str; 6] = [
    "--exclude",
    "embed_tokens",
    "--exclude",
    "lm_head",
    "--exclude",
    "norm",
];

#[test]
fn quantize_reproduces_transformers_and_dequantize_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("q.safetensors");
    let d = tmp.path().join("d.safetensors");
    let src = fixtures().join("tiny-llama/model.safetensors");
    run_ok(
        cli()
            .args(["nf4", "quantize", "--input"])
            .arg(&src)
            .arg("--output")
            .arg(&q)
            .args(["--blocksize", "64", "--double-quant", "--quiet"])
            .args(EXCLUDE),
    );
    // Every tensor equals the one transformers + bitsandbytes wrote.
    let (ours, theirs) = (
        open(&q),
        open(&fixtures().join("tiny-llama-nf4/model.safetensors")),
    );
    assert_eq!(ours.tensor_names(), theirs.tensor_names());
    for n in theirs.tensor_names() {
        let (a, b) = (ours.raw_tensor(&n).unwrap(), theirs.raw_tensor(&n).unwrap());
        assert_eq!((a.dtype, &a.shape), (b.dtype, &b.shape), "{n}");
        assert!(a.bytes() == b.bytes(), "{n}: bytes differ");
    }
    assert!(!tmp.path().join("q.safetensors.partial").exists());

    run_ok(
        cli()
            .args(["nf4", "dequantize", "--input"])
            .arg(&q)
            .arg("--output")
            .arg(&d),
    );
    let (deq, orig, want) = (
        open(&d),
        open(&src),
        open(&fixtures().join("tiny-llama-nf4-dequant.safetensors")),
    );
    assert_eq!(deq.tensor_names(), orig.tensor_names());
    for n in orig.tensor_names() {
        let got = deq.raw_tensor(&n).unwrap();
        assert_eq!(got.shape, orig.raw_tensor(&n).unwrap().shape, "{n}");
        let reference = if want.contains(&n) { &want } else { &orig };
        let (a, b) = (
            got.to_weight("d", &n).unwrap(),
            reference
                .raw_tensor(&n)
                .unwrap()
                .to_weight("w", &n)
                .unwrap(),
        );
        for (x, y) in a.iter().zip(b.iter()) {
            assert!((x - y).abs() <= 1e-6, "{n}: {x} vs {y}");
        }
    }
}

/// The tensors of `inner` that `keep` selects, with `replace` applied: a way to build input
/// files for the CLI from the fixtures.
struct Filtered<'a> {
    inner: &'a Checkpoint,
    keep: fn(&str) -> bool,
    replace: Option<(&'a str, Vec<u8>)>,
}

impl TensorSource for Filtered<'_> {
    fn source_path(&self) -> String {
        self.inner.source_path()
    }
    fn tensor_names(&self) -> Vec<String> {
        self.inner
            .tensor_names()
            .into_iter()
            .filter(|n| (self.keep)(n))
            .collect()
    }
    fn raw_tensor(&self, name: &str) -> dsum_core::Result<RawTensor> {
        let t = self.inner.raw_tensor(name)?;
        match &self.replace {
            Some((n, bytes)) if *n == name => {
                Ok(RawTensor::owned(t.dtype, vec![bytes.len()], bytes.clone()))
            }
            _ => Ok(t),
        }
    }
}

#[test]
fn every_floating_tensor_round_trips_in_its_dtype() {
    // f32, f16 and bf16 tensors of several shapes; without --exclude all are quantized, and
    // dequantize restores names, shapes and dtypes.
    let tmp = tempfile::tempdir().unwrap();
    let (input, q, d) = (
        tmp.path().join("in.safetensors"),
        tmp.path().join("q.safetensors"),
        tmp.path().join("d.safetensors"),
    );
    let cases = open(&fixtures().join("cases.safetensors"));
    let src = Filtered {
        inner: &cases,
        keep: |n| n.ends_with(".input"),
        replace: None,
    };
    write_safetensors(&src, &input).unwrap();
    run_ok(
        cli()
            .args(["nf4", "quantize", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&q)
            .args(["--blocksize", "32", "--double-quant", "--quiet"]),
    );
    run_ok(
        cli()
            .args(["nf4", "dequantize", "--quiet", "--input"])
            .arg(&q)
            .arg("--output")
            .arg(&d),
    );
    let (orig, back) = (open(&input), open(&d));
    assert_eq!(orig.tensor_names(), back.tensor_names());
    let mut dtypes = std::collections::BTreeSet::new();
    for n in orig.tensor_names() {
        let (a, b) = (orig.raw_tensor(&n).unwrap(), back.raw_tensor(&n).unwrap());
        assert_eq!((a.dtype, &a.shape), (b.dtype, &b.shape), "{n}");
        dtypes.insert(format!("{:?}", a.dtype));
        let (x, y) = (a.to_weight("a", &n).unwrap(), b.to_weight("b", &n).unwrap());
        let absmax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (u, v) in x.iter().zip(y.iter()) {
            // Half the largest gap between NF4 codes (0.16), plus the 8-bit scale and output rounding.
            assert!((u - v).abs() <= absmax * 0.17 + 1e-6, "{n}: {u} vs {v}");
        }
    }
    assert_eq!(dtypes.len(), 3, "{dtypes:?}");
}

#[test]
fn bad_input_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.safetensors");
    let missing = tmp.path().join("missing.safetensors");
    let e = run_err(
        cli()
            .args(["nf4", "quantize", "--input"])
            .arg(&missing)
            .arg("--output")
            .arg(&out),
    );
    assert!(e.contains("missing.safetensors"), "{e}");

    let garbage = tmp.path().join("garbage.safetensors");
    std::fs::write(
        &garbage,
        b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all",
    )
    .unwrap();
    let e = run_err(
        cli()
            .args(["nf4", "dequantize", "--input"])
            .arg(&garbage)
            .arg("--output")
            .arg(&out),
    );
    assert!(e.contains("garbage.safetensors"), "{e}");

    let src = fixtures().join("tiny-llama/model.safetensors");
    let e = run_err(
        cli()
            .args(["nf4", "quantize", "--blocksize", "48", "--input"])
            .arg(&src)
            .arg("--output")
            .arg(&out),
    );
    assert!(e.contains("blocksize 48"), "{e}");
    assert!(!out.exists());

    // A 4-bit checkpoint whose quant_state JSON is garbage.
    let nf4 = open(&fixtures().join("tiny-llama-nf4/model.safetensors"));
    let broken = tmp.path().join("broken.safetensors");
    let name = "model.layers.0.mlp.up_proj.weight.quant_state.bitsandbytes__nf4";
    assert!(nf4.contains(name));
    let src = Filtered {
        inner: &nf4,
        keep: |_| true,
        replace: Some((
            name,
            b"{\"quant_type\": \"nf4\", \"blocksize\": 64".to_vec(),
        )),
    };
    write_safetensors(&src, &broken).unwrap();
    let e = run_err(
        cli()
            .args(["nf4", "dequantize", "--input"])
            .arg(&broken)
            .arg("--output")
            .arg(&out),
    );
    assert!(e.contains("broken.safetensors") && e.contains(name), "{e}");
    assert!(!out.exists() && !tmp.path().join("out.safetensors.partial").exists());
}
