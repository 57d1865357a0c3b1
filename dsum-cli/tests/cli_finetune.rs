//! `dsum-cli finetune`'s config errors, `merge` against peft's merge_and_unload, and
//! `summarize --adapter` (the adapter merged at load gives the merged model's output).

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dsum-cli"))
}

fn fixture(p: &str) -> String {
    root().join("tests/fixtures").join(p).display().to_string()
}

/// A valid config for the fixture BART, with `extra` TOML appended to the tables.
fn config(dir: &Path, model: &str, method: &str, extra_data: &str, extra: &str) -> PathBuf {
    let text = format!(
        "[model]\npath = {model:?}\n\n[data]\ntrain = {train:?}\n{extra_data}\n\n[method]\n{method}\n\n\
         [train]\nbatch_size = 4\nepochs = 1\n\n[output]\ndir = {out:?}\n{extra}\n",
        model = fixture(model),
        train = fixture("data/dialogues.csv"),
        out = dir.join("run").display().to_string(),
    );
    let p = dir.join("run.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn fails(args: &[&str], cfg: &Path) -> String {
    let o = cli()
        .args(args)
        .arg("--config")
        .arg(cfg)
        .arg("--quiet")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "expected failure: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    err
}

#[test]
fn config_errors_name_the_key_and_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let bart = "bart/models/tiny-a";

    let cfg = config(tmp.path(), bart, "kind = \"lora\"\nrank = 8", "", "");
    let e = fails(&["finetune"], &cfg);
    assert!(
        e.contains("run.toml") && e.contains("unknown field `rank`"),
        "{e}"
    );

    let cfg = config(tmp.path(), bart, "r = 8", "", "");
    let e = fails(&["finetune"], &cfg);
    assert!(
        e.contains("run.toml") && e.contains("missing field `kind`"),
        "{e}"
    );

    let cfg = config(tmp.path(), bart, "kind = \"adapter\"", "", "");
    let e = fails(&["finetune"], &cfg);
    assert!(
        e.contains("run.toml") && e.contains("\"lora\", \"qlora\" or \"full\""),
        "{e}"
    );

    let cfg = config(
        tmp.path(),
        bart,
        "kind = \"lora\"\ntargets = [\"q_proj\", \"gate_proj\"]",
        "",
        "",
    );
    let e = fails(&["finetune"], &cfg);
    assert!(
        e.contains("[method] targets") && e.contains("`gate_proj`") && e.contains("out_proj"),
        "{e}"
    );

    let empty = tmp.path().join("empty.csv");
    std::fs::write(&empty, "fname,dialogue,summary,topic\n").unwrap();
    let dev = format!("dev = {:?}", empty.display().to_string());
    let cfg = config(tmp.path(), bart, "kind = \"lora\"", &dev, "");
    let e = fails(&["finetune"], &cfg);
    assert!(e.contains("empty.csv") && e.contains("no rows"), "{e}");

    let init = root()
        .join("tests/fixtures/lora/bart-rslora")
        .display()
        .to_string();
    let cfg = config(
        tmp.path(),
        bart,
        &format!("kind = \"lora\"\ninit_adapter = {init:?}"),
        "",
        "",
    );
    let e = fails(&["finetune"], &cfg);
    assert!(
        e.contains("init_adapter") && e.contains("r 2, alpha 6"),
        "{e}"
    );

    let cfg = config(tmp.path(), bart, "kind = \"lora\"", "", "");
    let e = fails(&["finetune", "--resume"], &cfg);
    assert!(e.contains("--resume: no checkpoint"), "{e}");
    assert!(!tmp.path().join("run/metrics.jsonl").exists());

    std::fs::create_dir_all(tmp.path().join("run")).unwrap();
    std::fs::write(tmp.path().join("run/metrics.jsonl"), "").unwrap();
    let e = fails(&["finetune"], &cfg);
    assert!(
        e.contains("already holds a run") && e.contains("--resume"),
        "{e}"
    );
}

/// `configs/finetune-tiny.toml` runs end to end once the trainable models are built in;
/// until then the only acceptable failure is the factory's "not yet available".
#[test]
fn tiny_config_trains_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("tiny");
    let o = cli()
        .args(["finetune", "--quiet", "--config"])
        .arg(root().join("configs/finetune-tiny.toml"))
        .arg("--output-dir")
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    for f in [
        "metrics.jsonl",
        "run.json",
        "final/adapter_config.json",
        "final/adapter_model.safetensors",
    ] {
        assert!(out.join(f).is_file(), "{f} missing; {err}");
    }
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert!(
        run["name"]
            .as_str()
            .unwrap()
            .starts_with("tiny_ep2_bs16_lr0.001_"),
        "{run}"
    );
    assert_eq!(run["status"], "finished");
    // One metrics line per optimizer step with a finite loss, and eval lines with ROUGE.
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps: Vec<&serde_json::Value> = lines.iter().filter(|l| l.get("loss").is_some()).collect();
    assert!(!steps.is_empty(), "{metrics}");
    assert!(
        steps
            .iter()
            .all(|l| l["loss"].as_f64().unwrap().is_finite()),
        "{metrics}"
    );
    assert!(metrics.contains("rouge"), "{metrics}");
}

#[test]
fn merge_matches_peft_and_summarize_adapter_uses_it() {
    let tmp = tempfile::tempdir().unwrap();
    let merged = tmp.path().join("merged");
    let adapter = root().join("tests/fixtures/lora/bart-rslora");
    let o = cli()
        .args([
            "merge",
            "--model",
            &fixture("bart/models/tiny-a"),
            "--adapter",
        ])
        .arg(&adapter)
        .arg("--output")
        .arg(&merged)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "generation_config.json",
    ] {
        assert!(merged.join(f).is_file(), "{f}");
    }
    // Adapted tensors equal peft's merge_and_unload.
    use dsum_core::io::checkpoint::{read_shared, Checkpoint};
    let ours = Checkpoint::open_dir(&merged).unwrap();
    let pp = adapter.join("merged.safetensors");
    let peft = Checkpoint::from_files(vec![(pp.display().to_string(), read_shared(&pp).unwrap())])
        .unwrap();
    let names: Vec<&str> = peft.names().collect();
    assert_eq!(
        names.len(),
        2 * 2 * 3 + 2 * 2,
        "q/v in self and cross attention, fc1"
    );
    for name in names {
        let shape = peft.shape(name).unwrap().to_vec();
        let (a, b) = (
            ours.get(name, &shape).unwrap(),
            peft.get(name, &shape).unwrap(),
        );
        for (x, y) in a.iter().zip(b.iter()) {
            assert!(
                (x - y).abs() <= 1e-6 * y.abs().max(1.0),
                "{name}: {x} vs {y}"
            );
        }
    }
    // A second merge into the same folder is refused (nothing overwritten).
    let o = cli()
        .args([
            "merge",
            "--model",
            &fixture("bart/models/tiny-a"),
            "--adapter",
        ])
        .arg(&adapter)
        .arg("--output")
        .arg(&merged)
        .output()
        .unwrap();
    assert!(!o.status.success());

    // summarize --adapter == summarize on the merged folder.
    let input = fixture("data/dialogues.csv");
    let summarize = |model: &str, extra: &[&str], out: &Path| {
        let o = cli()
            .args([
                "summarize",
                "--quiet",
                "--max-new-tokens",
                "8",
                "--model",
                model,
                "--input",
                &input,
                "--output",
            ])
            .arg(out)
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read_to_string(out).unwrap()
    };
    let a = summarize(
        &fixture("bart/models/tiny-a"),
        &["--adapter", &adapter.display().to_string()],
        &tmp.path().join("a.csv"),
    );
    let b = summarize(
        &merged.display().to_string(),
        &[],
        &tmp.path().join("b.csv"),
    );
    let base = summarize(
        &fixture("bart/models/tiny-a"),
        &[],
        &tmp.path().join("c.csv"),
    );
    assert_eq!(a, b);
    assert_ne!(a, base, "the adapter changed nothing");

    // An adapter for another model is a clear error.
    let o = cli()
        .args([
            "summarize",
            "--quiet",
            "--model",
            &fixture("bart/models/tiny-a"),
            "--input",
            &input,
            "--output",
        ])
        .arg(tmp.path().join("d.csv"))
        .arg("--adapter")
        .arg(root().join("tests/fixtures/lora/llama3-all-linear"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("another model") && !err.contains("panicked"),
        "{err}"
    );
}

/// The tensors of one safetensors file: name -> (dtype, shape, bytes).
fn raw_tensors(
    path: &Path,
) -> std::collections::BTreeMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, t)| (n, (t.dtype(), t.shape().to_vec(), t.data().to_vec())))
        .collect()
}

/// A model folder of the llama3-rope fixture whose weights are peft's bf16 copy of it.
fn bf16_base(dir: &Path) -> PathBuf {
    let base = dir.join("base-bf16");
    std::fs::create_dir_all(&base).unwrap();
    for e in std::fs::read_dir(root().join("tests/fixtures/llama/models/llama3-rope")).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "model.safetensors" {
            std::fs::copy(e.path(), base.join(e.file_name())).unwrap();
        }
    }
    let bf16 = root().join("tests/fixtures/lora/llama3-all-linear/bf16");
    std::fs::copy(
        bf16.join("base.safetensors"),
        base.join("model.safetensors"),
    )
    .unwrap();
    base
}

fn merge_into(base: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    cli()
        .arg("merge")
        .arg("--model")
        .arg(base)
        .arg("--adapter")
        .arg(root().join("tests/fixtures/lora/llama3-all-linear"))
        .arg("--output")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

// A bf16 base merges into a bf16 model, as peft's merge_and_unload + save_pretrained write it
// (tools/fixtures/make_merge_dtype_fixtures.py): the same tensors, dtypes and bytes.
#[test]
fn merge_keeps_a_bf16_base_in_bf16_as_peft_does() {
    let tmp = tempfile::tempdir().unwrap();
    let base = bf16_base(tmp.path());
    let out = tmp.path().join("merged");
    let o = merge_into(&base, &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ours = raw_tensors(&out.join("model.safetensors"));
    let peft =
        raw_tensors(&root().join("tests/fixtures/lora/llama3-all-linear/bf16/merged.safetensors"));
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        peft.keys().collect::<Vec<_>>()
    );
    let base_t = raw_tensors(&base.join("model.safetensors"));
    let mut changed = 0;
    for (name, (dtype, shape, bytes)) in &peft {
        let (d, s, b) = &ours[name];
        assert_eq!((d, s), (dtype, shape), "{name}");
        assert!(b == bytes, "{name}: bytes differ from peft's");
        changed += (base_t[name].2 != *bytes) as usize;
    }
    // The 7 linear layers of each of the 2 layers moved; nothing else did.
    assert_eq!(changed, 14);
}

#[test]
fn merge_dtype_flag_converts_every_tensor_and_rejects_unknown_names() {
    let tmp = tempfile::tempdir().unwrap();
    let base = bf16_base(tmp.path());
    let out = tmp.path().join("merged-f32");
    let o = merge_into(&base, &out, &["--dtype", "f32"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ours = raw_tensors(&out.join("model.safetensors"));
    let peft =
        raw_tensors(&root().join("tests/fixtures/lora/llama3-all-linear/bf16/merged.safetensors"));
    for (name, (dtype, _, bytes)) in &ours {
        assert_eq!(*dtype, safetensors::Dtype::F32, "{name}");
        // Rounded to bf16, each f32 value is peft's bf16 value.
        let want = &peft[name].2;
        for (i, c) in bytes.chunks_exact(4).enumerate() {
            let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            let b = half::bf16::from_f32(v).to_le_bytes();
            assert_eq!(&b[..], &want[2 * i..2 * i + 2], "{name}[{i}]");
        }
    }
    // f16: every tensor is the f32 output rounded to f16 once.
    let out16 = tmp.path().join("merged-f16");
    let o = merge_into(&base, &out16, &["--dtype", "f16"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let half16 = raw_tensors(&out16.join("model.safetensors"));
    assert_eq!(half16.len(), ours.len());
    for (name, (dtype, _, bytes)) in &half16 {
        assert_eq!(*dtype, safetensors::Dtype::F16, "{name}");
        let want: Vec<u8> = ours[name]
            .2
            .chunks_exact(4)
            .flat_map(|c| {
                half::f16::from_f32(f32::from_le_bytes([c[0], c[1], c[2], c[3]])).to_le_bytes()
            })
            .collect();
        assert!(*bytes == want, "{name}: not the f32 values rounded to f16");
    }
    let o = merge_into(&base, &tmp.path().join("bad"), &["--dtype", "int8"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--dtype int8") && err.contains("bf16"),
        "{err}"
    );
    assert!(!tmp.path().join("bad").exists());
}
