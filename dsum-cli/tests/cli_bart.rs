//! End-to-end tests of `summarize` and `generate` on the fixture BART models, and of the
//! errors users get for bad input.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn model(name: &str) -> PathBuf {
    root().join("tests/fixtures/bart/models").join(name)
}

fn cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dsum-cli"))
}

fn read_csv(p: &Path) -> Vec<Vec<String>> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_path(p)
        .unwrap();
    r.records()
        .map(|x| x.unwrap().iter().map(String::from).collect())
        .collect()
}

/// Runs and expects failure: returns stderr, and checks the output was not created.
fn fails(cmd: &mut Command, out: &Path) -> String {
    let o = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        !o.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(
        !out.exists(),
        "{} must not exist after a failure",
        out.display()
    );
    err
}

#[test]
fn summarize_matches_transformers_submission() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sub.csv");
    for bs in ["1", "3"] {
        let o = cli()
            .args(["summarize", "--quiet", "--batch-size", bs, "--model"])
            .arg(model("tiny-a"))
            .arg("--input")
            .arg(root().join("tests/fixtures/data/dialogues.csv"))
            .arg("--output")
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let want = read_csv(&root().join("tests/fixtures/data/summarize_tiny-a.csv"));
        assert_eq!(read_csv(&out), want, "batch size {bs}");
        assert!(!dir.path().join("sub.csv.partial").exists());
    }
}

#[test]
fn generate_jsonl_matches_fixture_cases() {
    let cases: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/bart/generate_cases.json")).unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A beam case with several returned sequences and a greedy case, single-row each.
    for name in ["a_beam4_nrs2", "a_greedy_max_new_12", "b_defaults"] {
        let c = cases
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap();
        let input = dir.path().join("in.jsonl");
        let ids: Vec<u64> = c["rows"][0]["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        std::fs::write(
            &input,
            format!("{}\n", serde_json::json!({ "input_ids": ids })),
        )
        .unwrap();
        let gen_cfg = dir.path().join("gen.json");
        std::fs::write(&gen_cfg, c["kwargs"].to_string()).unwrap();
        let out = dir.path().join("out.jsonl");
        let o = cli()
            .args(["generate", "--quiet", "--model"])
            .arg(model(c["model"].as_str().unwrap()))
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(&out)
            .arg("--generation-config")
            .arg(&gen_cfg)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let line: Value =
            serde_json::from_str(std::fs::read_to_string(&out).unwrap().trim()).unwrap();
        assert_eq!(line["sequences"], c["expected"][0]["sequences"], "{name}");
        assert_eq!(
            line["texts"].as_array().unwrap().len(),
            line["sequences"].as_array().unwrap().len()
        );
    }
}

#[test]
fn bad_inputs_get_clear_errors_and_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sub.csv");
    let good_csv = root().join("tests/fixtures/data/dialogues.csv");
    let summarize = |model: &Path, input: &Path| {
        let mut c = cli();
        c.args(["summarize", "--quiet", "--model"])
            .arg(model)
            .arg("--input")
            .arg(input)
            .arg("--output")
            .arg(&out);
        c
    };

    // Model folder problems.
    let err = fails(&mut summarize(&dir.path().join("nope"), &good_csv), &out);
    assert!(err.contains("nope"), "{err}");
    let broken = dir.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    for f in [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(model("tiny-a").join(f), broken.join(f)).unwrap();
    }
    let err = fails(&mut summarize(&broken, &good_csv), &out);
    assert!(err.contains("model.safetensors"), "{err}");
    let st = std::fs::read(model("tiny-a").join("model.safetensors")).unwrap();
    std::fs::write(broken.join("model.safetensors"), &st[..st.len() / 2]).unwrap();
    let err = fails(&mut summarize(&broken, &good_csv), &out);
    assert!(
        err.contains("model.safetensors") && err.contains("truncated"),
        "{err}"
    );
    std::fs::write(broken.join("model.safetensors"), &st).unwrap();
    let cfg = std::fs::read_to_string(model("tiny-a").join("config.json")).unwrap();
    std::fs::write(
        broken.join("config.json"),
        cfg.replace("\"model_type\": \"bart\"", "\"model_type\": \"t5\""),
    )
    .unwrap();
    let err = fails(&mut summarize(&broken, &good_csv), &out);
    assert!(err.contains("config.json") && err.contains("t5"), "{err}");
    std::fs::write(
        broken.join("config.json"),
        cfg.replace("\"d_model\": 64", "\"d_model\": 32"),
    )
    .unwrap();
    let err = fails(&mut summarize(&broken, &good_csv), &out);
    assert!(err.contains("shape"), "{err}");

    // CSV problems.
    let cases: [(&str, &[u8], &str); 5] = [
        ("nocol.csv", b"fname,text\na,b\n", "dialogue"),
        ("empty.csv", b"", "empty"),
        ("blank.csv", b"fname,dialogue\na,   \n", "empty"),
        ("dup.csv", b"fname,dialogue\na,x\na,y\n", "duplicate"),
        ("latin1.csv", b"fname,dialogue\na,caf\xe9\n", "UTF-8"),
    ];
    for (name, bytes, needle) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let err = fails(&mut summarize(&model("tiny-a"), &p), &out);
        assert!(err.contains(name) && err.contains(needle), "{name}: {err}");
    }
}

#[test]
fn summarize_to_stdout_prints_the_same_submission() {
    let o = cli()
        .args(["summarize", "--quiet", "--output", "-", "--model"])
        .arg(model("tiny-a"))
        .arg("--input")
        .arg(root().join("tests/fixtures/data/dialogues.csv"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(o.stdout.as_slice());
    let got: Vec<Vec<String>> = r
        .records()
        .map(|x| x.unwrap().iter().map(String::from).collect())
        .collect();
    assert_eq!(
        got,
        read_csv(&root().join("tests/fixtures/data/summarize_tiny-a.csv"))
    );
}
