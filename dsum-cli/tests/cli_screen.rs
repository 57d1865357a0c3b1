//! `screen` ranks models by the same ROUGE that `score` computes, reports a failing model
//! without stopping, and writes its results.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn screen_scores_equal_score_on_its_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("screen");
    // The third model does not exist: it gets an error row while the others still run.
    let models = [
        "tests/fixtures/llama/models/llama-tied",
        "tests/fixtures/bart/models/tiny-c",
        "no/such-model-dir",
    ]
    .map(|m| root().join(m).display().to_string())
    .join(",");
    let data = root().join("tests/fixtures/data/dialogues.csv");
    let o = Command::new(env!("CARGO_BIN_EXE_dsum-cli"))
        .args([
            "screen",
            "--quiet",
            "--max-new-tokens",
            "8",
            "--models",
            &models,
            "--output-dir",
        ])
        .arg(&out)
        .arg("--input")
        .arg(&data)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let tokenize = v["tokenize"].as_str().unwrap();
    let ms = v["models"].as_array().unwrap();
    assert_eq!(ms.len(), 3);
    assert!(
        ms[0]["final_score"].as_f64() >= ms[1]["final_score"].as_f64(),
        "best first"
    );
    assert!(
        ms[2]["error"].as_str().unwrap().contains("such-model-dir"),
        "{}",
        ms[2]
    );
    assert!(out.join("results.md").is_file() && out.join("results.csv").is_file());
    for m in &ms[..2] {
        assert!(m["parameters"].as_u64().unwrap() > 0);
        let pred = dir.path().join("pred.csv");
        let mut w = csv::Writer::from_path(&pred).unwrap();
        w.write_record(["fname", "summary"]).unwrap();
        for p in m["predictions"].as_array().unwrap() {
            w.write_record([p["fname"].as_str().unwrap(), p["summary"].as_str().unwrap()])
                .unwrap();
        }
        w.flush().unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_dsum-cli"))
            .args([
                "score",
                "--json",
                "--empty",
                "zero",
                "--tokenize",
                tokenize,
                "--pred",
            ])
            .arg(&pred)
            .arg("--ref")
            .arg(&data)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let s: Value = serde_json::from_slice(&o.stdout).unwrap();
        let (a, b) = (
            s["final_score"].as_f64().unwrap(),
            m["final_score"].as_f64().unwrap(),
        );
        assert!(
            (a - b).abs() < 1e-9,
            "{}: score {a} vs screen {b}",
            m["model"]
        );
    }
}

#[test]
fn screen_reads_a_toml_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("screen.toml");
    let r = root();
    std::fs::write(
        &cfg,
        format!(
            "input = {:?}\nlimit = 3\noutput_dir = \"out\"\nallow_scripts = \"hangul,digits,punct\"\n[generation]\nmax_new_tokens = 5\n\n[[models]]\nname = \"qwen3\"\npath = {:?}\ntemplate_kwargs = {{ enable_thinking = false }}\n",
            r.join("tests/fixtures/data/dialogues.csv").display().to_string(),
            r.join("tests/fixtures/llama/models/qwen3").display().to_string(),
        ),
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_dsum-cli"))
        .args(["screen", "--quiet", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("out/results.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(v["models"][0]["model"], "qwen3");
    assert_eq!(v["models"][0]["rows"], 3);
    assert!(dir.path().join("out/predictions/qwen3.csv").is_file());
    // A misspelled key is an error naming the file, not silently ignored.
    std::fs::write(&cfg, "inputt = \"x.csv\"\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_dsum-cli"))
        .args(["screen", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("screen.toml") && err.contains("inputt"),
        "{err}"
    );
}
