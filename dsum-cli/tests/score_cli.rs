//! `dsum-cli score` end to end on the fixture CSVs (tests/fixtures/rouge/cli/): the `--json`
//! numbers and the `--per-item` CSV against what pltrdy `rouge` 1.0.1 and `rouge_score`
//! 0.1.2 give for the same files (tools/fixtures/make_rouge_fixtures.py), and the errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const TOL: f64 = 1e-12;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/rouge/cli")
}

fn dsum(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dsum-cli"))
        .arg("score")
        .args(args)
        .output()
        .expect("runs dsum-cli")
}

fn fx(name: &str) -> String {
    fixtures().join(name).display().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn close(got: &Value, want: &Value, what: &str) {
    let (g, w) = (got.as_f64(), want.as_f64());
    match (g, w) {
        (Some(g), Some(w)) => assert!((g - w).abs() <= TOL, "{what}: dsum {g} reference {w}"),
        _ => panic!("{what}: dsum {got} reference {want}"),
    }
}

fn metrics(want: &Value) -> Vec<&'static str> {
    ["rouge-1", "rouge-2", "rouge-l", "rouge-lsum"]
        .into_iter()
        .filter(|m| want.get(*m).is_some())
        .collect()
}

fn compare_metrics(got: &Value, want: &Value, what: &str) {
    assert_eq!(
        got.get("rouge-lsum").is_some(),
        want.get("rouge-lsum").is_some(),
        "{what}: rouge-lsum"
    );
    for m in metrics(want) {
        for k in ["p", "r", "f"] {
            close(&got[m][k], &want[m][k], &format!("{what} {m} {k}"));
        }
    }
}

#[test]
fn json_and_per_item_match_the_reference_packages() {
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("expected.json")).expect("expected.json"),
    )
    .expect("json");
    let dir = tempfile::tempdir().expect("tempdir");
    let mecab_dic = std::env::var("DSUM_MECAB_DIC").ok();
    for (n, case) in expected.as_array().expect("cases").iter().enumerate() {
        let s = |k: &str| case[k].as_str().expect("string").to_string();
        let what = format!(
            "case {n}: {} {} {} {} {}",
            s("ref"),
            s("flavor"),
            s("tokenize"),
            s("multi_ref"),
            s("empty")
        );
        let items_csv = dir.path().join(format!("items{n}.csv"));
        let (pred, reference, items_path) = (
            fx("pred.csv"),
            fx(&s("ref")),
            items_csv.display().to_string(),
        );
        let mut args = vec![
            "--pred",
            &pred,
            "--ref",
            &reference,
            "--json",
            "--per-item",
            &items_path,
        ];
        let (flavor, tokenize, multi_ref, empty) =
            (s("flavor"), s("tokenize"), s("multi_ref"), s("empty"));
        args.extend([
            "--flavor",
            &flavor,
            "--tokenize",
            &tokenize,
            "--multi-ref",
            &multi_ref,
            "--empty",
            &empty,
        ]);
        if tokenize == "mecab" {
            let Some(dic) = &mecab_dic else {
                // Without a dictionary the verb must fail cleanly, naming the problem.
                args.extend(["--mecab-dic", "/nonexistent-mecab-dic"]);
                let o = dsum(&args);
                assert!(
                    !o.status.success() && stderr(&o).contains("mecab"),
                    "{what}: {}",
                    stderr(&o)
                );
                continue;
            };
            args.extend(["--mecab-dic", dic.as_str()]);
        }
        let o = dsum(&args);
        assert!(o.status.success(), "{what}: {}", stderr(&o));
        let got: Value = serde_json::from_slice(&o.stdout).expect("--json prints JSON");
        let want = &case["expected"];
        compare_metrics(&got, want, &what);
        close(
            &got["final_score"],
            &want["final_score"],
            &format!("{what} final_score"),
        );
        assert_eq!(got["count"], want["count"], "{what}: count");

        // items, in prediction order, in the JSON and in the CSV (full precision)
        let (gi, wi) = (
            got["items"].as_array().expect("items"),
            want["items"].as_array().expect("items"),
        );
        assert_eq!(gi.len(), wi.len(), "{what}: items");
        let table = std::fs::read_to_string(&items_csv).expect("per-item csv");
        let mut lines = table.lines();
        let header: Vec<&str> = lines.next().expect("header").split(',').collect();
        let mut want_header = vec!["fname".to_string()];
        for m in metrics(want) {
            want_header.extend(["p", "r", "f"].map(|k| format!("{m}-{k}")));
        }
        assert_eq!(header, want_header, "{what}: per-item header");
        for ((g, w), line) in gi.iter().zip(wi).zip(lines) {
            assert_eq!(g["fname"], w["fname"], "{what}");
            compare_metrics(g, w, &format!("{what} item {}", w["fname"]));
            let cells: Vec<&str> = line.split(',').collect();
            assert_eq!(Some(cells[0]), w["fname"].as_str(), "{what}: csv row order");
            for (c, col) in cells[1..].iter().zip(&header[1..]) {
                let (m, k) = col.rsplit_once('-').expect("metric-stat");
                let parsed: f64 = c.parse().expect("float cell");
                // full precision: the cell is the shortest text that parses back to itself
                assert_eq!(format!("{parsed}"), *c, "{what}: csv {col} precision");
                close(
                    &Value::from(parsed),
                    &w[m][k],
                    &format!("{what}: csv {col} of {}", w["fname"]),
                );
            }
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left behind");
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p.display().to_string()
}

#[test]
fn readable_table_has_topics_worst_rows_and_empty_warning() {
    let o = dsum(&["--pred", &fx("pred.csv"), "--ref", &fx("ref.csv")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for needle in [
        "rouge-1",
        "rouge-2",
        "rouge-l",
        "final score",
        "by topic",
        "병원",
        "worst 5 rows",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }
    let err = stderr(&o);
    assert!(
        err.contains("empty predictions") && err.contains("test_4 (line 6)"),
        "{err}"
    );
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let pred = write(d, "p.csv", "fname,summary\na,x y\nb,y z\nc,z\n");
    let refs = write(d, "r.csv", "fname,summary\na,x y\nb,y\nd,w\n");
    let e = stderr(&dsum(&["--pred", &pred, "--ref", &refs]));
    assert!(
        e.contains("do not have the same fnames")
            && e.contains("only in")
            && e.contains("c")
            && e.contains("d"),
        "{e}"
    );

    let dup = write(d, "dup.csv", "fname,summary\na,x\na,y\n");
    let e = stderr(&dsum(&["--pred", &dup, "--ref", &refs]));
    assert!(
        e.contains("dup.csv") && e.contains("duplicate fname: `a` (lines 2 and 3)"),
        "{e}"
    );

    let nocol = write(d, "nocol.csv", "fname,text\na,x\n");
    let e = stderr(&dsum(&["--pred", &pred, "--ref", &nocol]));
    assert!(
        e.contains("nocol.csv") && e.contains("missing column `summary`"),
        "{e}"
    );

    let empty_file = write(d, "empty.csv", "");
    let e = stderr(&dsum(&["--pred", &empty_file, "--ref", &refs]));
    assert!(e.contains("empty.csv") && e.contains("empty file"), "{e}");

    let p2 = write(d, "p2.csv", "fname,summary\na,...\nb,y z\n");
    let r2 = write(d, "r2.csv", "fname,summary\na,x y\nb,y\n");
    let o = dsum(&["--pred", &p2, "--ref", &r2, "--empty", "error"]);
    assert!(
        !o.status.success() && stderr(&o).contains("a (line 2)"),
        "{}",
        stderr(&o)
    );
    let o = dsum(&["--pred", &p2, "--ref", &r2, "--empty", "skip", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["count"], 1);
    assert!(stderr(&o).contains("a (line 2)"));

    let missing = dir.path().join("no-such-dic").display().to_string();
    let e = stderr(&dsum(&[
        "--pred",
        &p2,
        "--ref",
        &r2,
        "--tokenize",
        "mecab",
        "--mecab-dic",
        &missing,
    ]));
    assert!(e.contains("no-such-dic"), "{e}");
    let e = stderr(&dsum(&["--pred", &p2, "--ref", &r2, "--flavor", "bleu"]));
    assert!(e.contains("--flavor") && e.contains("rouge-score"), "{e}");
    let o = dsum(&[
        "--pred",
        &p2,
        "--ref",
        &r2,
        "--per-item",
        "/nonexistent-dir/x.csv",
    ]);
    assert!(
        !o.status.success() && stderr(&o).contains("/nonexistent-dir/x.csv"),
        "{}",
        stderr(&o)
    );

    // an empty reference (pltrdy would raise "Reference is empty.") is a warned row
    let r3 = write(d, "r3.csv", "fname,summary\nb,y\na,...\n");
    let p3 = write(d, "p3.csv", "fname,summary\na,x y\nb,y z\n");
    let o = dsum(&["--pred", &p3, "--ref", &r3, "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("r3.csv") && e.contains("empty references") && e.contains("a (line 3)"),
        "{e}"
    );
    // several references: an empty one is left out, the others still count
    let r4 = write(d, "r4.csv", "fname,summary1,summary2\na,...,x y\nb,y z,\n");
    let v: Value = serde_json::from_slice(&dsum(&["--pred", &p3, "--ref", &r4, "--json"]).stdout)
        .expect("json");
    assert_eq!(
        (v["count"].as_u64(), v["empty"].as_u64()),
        (Some(2), Some(0))
    );
    assert!(v["rouge-1"]["f"].as_f64().unwrap_or(0.0) > 0.99, "{v}");
}

#[test]
fn default_tokenizer_warns_that_it_deletes_hangul() {
    let o = dsum(&[
        "--pred",
        &fx("pred.csv"),
        "--ref",
        &fx("ref.csv"),
        "--flavor",
        "rouge-score",
    ]);
    assert!(o.status.success());
    assert!(
        stderr(&o).contains("deletes every character outside [a-z0-9]"),
        "{}",
        stderr(&o)
    );
}
