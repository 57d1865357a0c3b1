//! `generate` and `summarize` with Llama-family fixture models: chat-template prompts,
//! `{"messages": ...}` input lines, script blocking.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn messages_lines_render_the_chat_template_like_transformers() {
    let cases: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/llama/chat_cases.json")).unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for c in cases.as_array().unwrap() {
        if c["template_kwargs"]
            .as_object()
            .is_some_and(|o| !o.is_empty())
        {
            continue;
        }
        let input = dir.path().join("in.jsonl");
        std::fs::write(
            &input,
            format!("{}\n", serde_json::json!({ "messages": c["messages"] })),
        )
        .unwrap();
        let out = dir.path().join("out.jsonl");
        let o = Command::new(env!("CARGO_BIN_EXE_dsum-cli"))
            .args(["generate", "--quiet", "--max-new-tokens", "3", "--model"])
            .arg(
                root()
                    .join("tests/fixtures/llama/models")
                    .join(c["model"].as_str().unwrap()),
            )
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let line: Value =
            serde_json::from_str(std::fs::read_to_string(&out).unwrap().trim()).unwrap();
        assert_eq!(line["prompt"], c["rendered"], "{}", c["name"]);
        assert_eq!(line["input_ids"], c["input_ids"], "{}", c["name"]);
        checked += 1;
    }
    assert!(checked >= 10);
}

#[test]
fn summarize_with_a_causal_lm_blocks_scripts_and_writes_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sub.csv");
    let o = Command::new(env!("CARGO_BIN_EXE_dsum-cli"))
        .args([
            "summarize",
            "--max-new-tokens",
            "6",
            "--allow-scripts",
            "hangul,digits,punct",
            "--model",
        ])
        .arg(root().join("tests/fixtures/llama/models/qwen2"))
        .arg("--input")
        .arg(root().join("tests/fixtures/data/dialogues.csv"))
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("blocking"), "{err}");
    let mut r = csv::Reader::from_path(&out).unwrap();
    let rows: Vec<csv::StringRecord> = r.records().map(|x| x.unwrap()).collect();
    assert_eq!(rows.len(), 8);
    for row in rows {
        // No Latin letters may appear once only hangul, digits and punctuation are allowed.
        assert!(
            !row[1].chars().any(|c| c.is_ascii_alphabetic()),
            "{:?}",
            &row[1]
        );
    }
}

#[test]
fn a_gguf_file_is_a_model_argument() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"messages\": [{\"role\": \"user\", \"content\": \"hello\"}]}\n",
    )
    .unwrap();
    let out = dir.path().join("out.jsonl");
    let o = Command::new(env!("CARGO_BIN_EXE_dsum-cli"))
        .args(["generate", "--quiet", "--max-new-tokens", "3", "--model"])
        .arg(root().join("tests/fixtures/gguf/tiny-qwen2.gguf"))
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let line: Value = serde_json::from_str(std::fs::read_to_string(&out).unwrap().trim()).unwrap();
    assert!(line["prompt"].as_str().unwrap().contains("hello"), "{line}");
    assert_eq!(line["sequences"][0].as_array().unwrap().len(), 3);
}

#[test]
fn a_model_without_chat_template_is_a_clear_error_unless_plain_prompts_are_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("model");
    std::fs::create_dir(&m).unwrap();
    let src = root().join("tests/fixtures/llama/models/qwen2");
    for f in std::fs::read_dir(&src).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, m.join(f.file_name().unwrap())).unwrap();
    }
    let cfg = m.join("tokenizer_config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("chat_template");
    std::fs::write(&cfg, v.to_string()).unwrap();
    let out = dir.path().join("sub.csv");
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_dsum-cli"))
            .args(["summarize", "--quiet", "--max-new-tokens", "2", "--model"])
            .arg(&m)
            .arg("--input")
            .arg(root().join("tests/fixtures/data/dialogues.csv"))
            .arg("--output")
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    let o = run(&[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("no chat template")
            && err.contains("--no-chat-template"),
        "{err}"
    );
    assert!(!out.exists());
    let o = run(&["--no-chat-template"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn a_gguf_converted_to_a_folder_generates_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"messages\": [{\"role\": \"user\", \"content\": \"hello there\"}]}\n",
    )
    .unwrap();
    let gguf = root().join("tests/fixtures/gguf/tiny-llama.gguf");
    let folder = dir.path().join("hf");
    let o = Command::new(env!("CARGO_BIN_EXE_dsum-cli"))
        .args(["convert", "--quiet", "--model"])
        .arg(&gguf)
        .arg("--output")
        .arg(&folder)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors",
    ] {
        assert!(folder.join(f).is_file(), "{f}");
    }
    let gen = |model: &Path, out: &str| {
        let out = dir.path().join(out);
        let o = Command::new(env!("CARGO_BIN_EXE_dsum-cli"))
            .args([
                "generate",
                "--quiet",
                "--max-new-tokens",
                "6",
                "--num-beams",
                "2",
                "--model",
            ])
            .arg(model)
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: Value = serde_json::from_str(std::fs::read_to_string(&out).unwrap().trim()).unwrap();
        (v["prompt"].clone(), v["sequences"].clone())
    };
    assert_eq!(gen(&gguf, "a.jsonl"), gen(&folder, "b.jsonl"));
}
