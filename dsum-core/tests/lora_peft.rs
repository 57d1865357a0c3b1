//! PEFT adapters written by peft (tools/fixtures/make_lora_fixtures.py ->
//! tests/fixtures/lora/): loading, `all-linear` / name matching against the base model,
//! merging (against peft's `merge_and_unload`), and a save/load round trip.

use std::path::PathBuf;

use dsum_core::io::checkpoint::Checkpoint;
use dsum_core::lora::adapter::{self, linear_modules, match_targets, Adapter};
use dsum_core::lora::config::Targets;
use dsum_core::lora::merge::merge;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn open(path: PathBuf) -> Checkpoint {
    let bytes = dsum_core::io::checkpoint::read_shared(&path).unwrap();
    Checkpoint::from_files(vec![(path.display().to_string(), bytes)]).unwrap()
}

fn check_merge(case: &str, base: &str) {
    let dir = root().join("tests/fixtures/lora").join(case);
    let adapter = Adapter::load(&dir).unwrap();
    let base_ck = Checkpoint::open_dir(&root().join("tests/fixtures").join(base)).unwrap();
    let merged = merge(&base_ck, &adapter, case).unwrap();
    let want = open(dir.join("merged.safetensors"));
    let mut n = 0;
    for name in want.names() {
        let shape = want.shape(name).unwrap().to_vec();
        let (w, g) = (
            want.get(name, &shape).unwrap(),
            merged.get(name, &shape).unwrap(),
        );
        let base_w = base_ck.get(name, &shape).unwrap();
        assert!(
            w.iter().zip(base_w.iter()).any(|(a, b)| a != b),
            "{name}: merge changed nothing"
        );
        for (a, b) in g.iter().zip(w.iter()) {
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                "{case} {name}: {a} vs peft {b}"
            );
        }
        n += 1;
    }
    assert_eq!(n, adapter.modules.len());
    // Untouched tensors pass through.
    for name in base_ck.names().filter(|n| !want.contains(n)) {
        let shape = base_ck.shape(name).unwrap().to_vec();
        assert_eq!(
            &*merged.get(name, &shape).unwrap(),
            &*base_ck.get(name, &shape).unwrap()
        );
    }
}

#[test]
fn merge_matches_peft_merge_and_unload() {
    check_merge("llama3-all-linear", "llama/models/llama3-rope");
    check_merge("bart-rslora", "bart/models/tiny-a");
}

#[test]
fn all_linear_selects_what_peft_selected() {
    let dir = root().join("tests/fixtures/lora/llama3-all-linear");
    let adapter = Adapter::load(&dir).unwrap();
    assert_eq!(adapter.config.r, 4);
    let base =
        Checkpoint::open_dir(&root().join("tests/fixtures/llama/models/llama3-rope")).unwrap();
    let modules: Vec<String> = linear_modules(&base).into_iter().map(|m| m.0).collect();
    let chosen = match_targets(&modules, &Targets::AllLinear, "cfg").unwrap();
    let from_peft: Vec<String> = adapter.modules.iter().map(|m| m.path.clone()).collect();
    assert_eq!(chosen, from_peft);
    // peft wrote the expanded list; reading it back selects the same modules.
    let Targets::Names(listed) = &adapter.config.targets else {
        panic!()
    };
    assert_eq!(
        match_targets(&modules, &Targets::Names(listed.clone()), "cfg").unwrap(),
        from_peft
    );

    // BART names select encoder and decoder (self and cross attention) modules.
    let bart = Checkpoint::open_dir(&root().join("tests/fixtures/bart/models/tiny-a")).unwrap();
    let bm: Vec<String> = linear_modules(&bart).into_iter().map(|m| m.0).collect();
    let names = |v: &[&str]| Targets::Names(v.iter().map(|s| s.to_string()).collect());
    let got = match_targets(&bm, &names(&["q_proj", "v_proj", "fc1"]), "cfg").unwrap();
    let bart_adapter = Adapter::load(&root().join("tests/fixtures/lora/bart-rslora")).unwrap();
    let want: Vec<String> = bart_adapter
        .modules
        .iter()
        .map(|m| m.path.clone())
        .collect();
    assert_eq!(got, want);
    assert!(!bm
        .iter()
        .any(|m| m.contains("embed") || m.contains("shared") || m.contains("lm_head")));

    let e = match_targets(
        &bm,
        &names(&["q_proj", "gate_proj"]),
        "run.toml: [method] targets",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("run.toml") && e.contains("`gate_proj`") && e.contains("fc1"),
        "{e}"
    );
}

#[test]
fn saved_adapter_loads_back_with_the_same_tensors() {
    let src = Adapter::load(&root().join("tests/fixtures/lora/bart-rslora")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let keys: Vec<(String, String)> = src
        .modules
        .iter()
        .map(|m| {
            (
                adapter::peft_key(&m.path, false),
                adapter::peft_key(&m.path, true),
            )
        })
        .collect();
    let mut tensors: Vec<(&str, &[usize], &[f32])> = Vec::new();
    for (m, (ka, kb)) in src.modules.iter().zip(&keys) {
        tensors.push((ka, &m.a.shape, &m.a));
        tensors.push((kb, &m.b.shape, &m.b));
    }
    let paths: Vec<String> = src.modules.iter().map(|m| m.path.clone()).collect();
    adapter::save(tmp.path(), &src.config, "base", false, &paths, &tensors).unwrap();
    let back = Adapter::load(tmp.path()).unwrap();
    assert_eq!(back.config, src.config);
    for (a, b) in back.modules.iter().zip(&src.modules) {
        assert_eq!(a.path, b.path);
        assert_eq!(&*a.a, &*b.a);
        assert_eq!(&*a.b, &*b.b);
    }
    // Errors name the folder.
    let e = Adapter::load(&tmp.path().join("nope"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("adapter_config.json"), "{e}");
}
