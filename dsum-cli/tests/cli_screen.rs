//! `screen` ranks models by the same ROUGE that `score` computes.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn screen_scores_equal_score_on_its_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("screen.json");
    let models = [
        "tests/fixtures/llama/models/llama-tied",
        "tests/fixtures/bart/models/tiny-c",
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
            "--output",
        ])
        .arg(&report)
        .arg("--input")
        .arg(&data)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let tokenize = v["tokenize"].as_str().unwrap();
    let ms = v["models"].as_array().unwrap();
    assert_eq!(ms.len(), 2);
    assert!(
        ms[0]["final_score"].as_f64() >= ms[1]["final_score"].as_f64(),
        "best first"
    );
    for m in ms {
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
