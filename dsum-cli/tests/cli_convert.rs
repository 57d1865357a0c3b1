//! `dsum-cli convert` (.bin to safetensors, bit-exact) and `--model org/name` resolved from a
//! Hugging Face cache folder laid out like Python's.

use std::path::{Path, PathBuf};
use std::process::Command;

use dsum_core::io::checkpoint::Checkpoint;
use dsum_core::io::raw_tensor::TensorSource;

const COMMIT: &str = "89abcdef0123456789abcdef0123456789abcdef";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dsum-cli"))
}

/// tiny-b's config/tokenizer files with the `.bin` weights torch wrote for it.
fn bin_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let orig = root().join("tests/fixtures/bart/models/tiny-b");
    for e in std::fs::read_dir(&orig).unwrap() {
        let p = e.unwrap().path();
        if !p.to_string_lossy().ends_with(".safetensors") {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    std::fs::copy(
        root().join("tests/fixtures/bin/tiny-b/pytorch_model.bin"),
        dir.path().join("pytorch_model.bin"),
    )
    .unwrap();
    dir
}

fn assert_bit_identical(a: &Path, b: &Path) {
    let (a, b) = (
        Checkpoint::open_dir(a).unwrap(),
        Checkpoint::open_dir(b).unwrap(),
    );
    assert_eq!(a.tensor_names(), b.tensor_names());
    for n in a.tensor_names() {
        let (x, y) = (a.raw_tensor(&n).unwrap(), b.raw_tensor(&n).unwrap());
        assert!(
            x.dtype == y.dtype && x.shape == y.shape && x.bytes() == y.bytes(),
            "{n}"
        );
    }
}

fn run_ok(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{err}");
    err
}

fn run_err(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "expected failure: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn convert_bin_to_safetensors_bit_exact() {
    let src = bin_folder();
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("tiny-b-st");
    let msg = run_ok(
        cli()
            .args(["convert", "--model"])
            .arg(src.path())
            .arg("--output")
            .arg(&target),
    );
    assert!(msg.contains("tensors"), "{msg}");
    assert!(target.join("config.json").is_file() && target.join("tokenizer.json").is_file());
    assert_bit_identical(&target, &root().join("tests/fixtures/bart/models/tiny-b"));

    // Not over an existing folder.
    let err = run_err(
        cli()
            .args(["convert", "--quiet", "--model"])
            .arg(src.path())
            .arg("--output")
            .arg(&target),
    );
    assert!(err.contains("not empty"), "{err}");
}

#[test]
fn malicious_bin_is_refused_with_the_global_named() {
    let src = tempfile::tempdir().unwrap();
    std::fs::copy(
        root().join("tests/fixtures/bart/models/tiny-b/config.json"),
        src.path().join("config.json"),
    )
    .unwrap();
    std::fs::copy(
        root().join("tests/fixtures/bin/malicious_os_system.bin"),
        src.path().join("pytorch_model.bin"),
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("x");
    let err = run_err(
        cli()
            .args(["convert", "--quiet", "--model"])
            .arg(src.path())
            .arg("--output")
            .arg(&target),
    );
    assert!(
        err.contains("os.system") && err.contains("pytorch_model.bin"),
        "{err}"
    );
    assert!(!target.exists() && !out.path().join("x.partial").exists());
}

/// A Python-like cache: refs/main, blobs, relative snapshot symlinks.
fn python_cache(repo: &str) -> tempfile::TempDir {
    let cache = tempfile::tempdir().unwrap();
    let repo_dir = cache
        .path()
        .join(format!("models--{}", repo.replace('/', "--")));
    let snap = repo_dir.join("snapshots").join(COMMIT);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::create_dir_all(repo_dir.join("blobs")).unwrap();
    std::fs::write(repo_dir.join("refs/main"), COMMIT).unwrap();
    let orig = root().join("tests/fixtures/bart/models/tiny-b");
    for (i, e) in std::fs::read_dir(&orig).unwrap().enumerate() {
        let p = e.unwrap().path();
        let tag = format!("{i:040x}");
        std::fs::copy(&p, repo_dir.join("blobs").join(&tag)).unwrap();
        let link = snap.join(p.file_name().unwrap());
        #[cfg(unix)]
        std::os::unix::fs::symlink(Path::new("../../blobs").join(&tag), &link).unwrap();
        #[cfg(not(unix))]
        std::fs::copy(&p, &link).unwrap();
    }
    cache
}

#[test]
fn repo_ids_resolve_from_the_hf_cache() {
    let cache = python_cache("dsum-test/tiny-b");
    let out = tempfile::tempdir().unwrap();
    let input = out.path().join("in.jsonl");
    std::fs::write(&input, "{\"input_ids\": [0, 5, 17, 42, 2]}\n").unwrap();
    let gen = |model: &str, name: &str| {
        let o = out.path().join(name);
        run_ok(
            cli()
                .env("HF_HUB_CACHE", cache.path())
                .env("HF_HUB_OFFLINE", "1")
                .args(["generate", "--quiet", "--model", model, "--input"])
                .arg(&input)
                .arg("--output")
                .arg(&o)
                .args(["--max-new-tokens", "8"]),
        );
        std::fs::read_to_string(o).unwrap()
    };
    let folder = root().join("tests/fixtures/bart/models/tiny-b");
    assert_eq!(
        gen("dsum-test/tiny-b", "a.jsonl"),
        gen(folder.to_str().unwrap(), "b.jsonl")
    );
    assert!(!gen("dsum-test/tiny-b@main", "c.jsonl").is_empty());

    // Offline and not cached: a friendly error naming the repo.
    let err = run_err(
        cli()
            .env("HF_HUB_CACHE", cache.path())
            .env("HF_HUB_OFFLINE", "1")
            .args(["convert", "--model", "dsum-test/missing", "--output"])
            .arg(out.path().join("m")),
    );
    assert!(
        err.contains("dsum-test/missing") && err.contains("HF_HUB_OFFLINE"),
        "{err}"
    );
    // A path that is neither a folder nor a repo id.
    let err = run_err(cli().args(["convert", "--model", "no/such/dir", "--output", "x"]));
    assert!(err.contains("no/such/dir"), "{err}");
}
