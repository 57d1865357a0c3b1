//! Kill-safety of `finetune`: a run killed with SIGKILL, or stopped with SIGINT (Ctrl-C),
//! leaves only complete checkpoints, and `--resume` continues from the newest one to the same
//! per-step losses and the same final adapter as a run that was never interrupted.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn write_config(dir: &Path, out: &Path) -> PathBuf {
    let f = root().join("tests/fixtures");
    let cfg = format!(
        r#"[model]
path = "{m}"
[data]
train = "{d}"
max_source_len = 48
max_target_len = 24
[method]
kind = "lora"
r = 4
alpha = 8
dropout = 0.1
[optim]
lr = 1e-3
scheduler = "cosine"
warmup_ratio = 0.1
[train]
batch_size = 2
epochs = 12
seed = 7
save_every = 3
keep_checkpoints = 2
[output]
dir = "{o}"
"#,
        m = f.join("bart/models/tiny-c").display(),
        d = f.join("data/dialogues.csv").display(),
        o = out.display()
    );
    let p = dir.join(format!(
        "{}.toml",
        out.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&p, cfg).unwrap();
    p
}

fn finetune(cfg: &Path, resume: bool) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dsum-cli"));
    c.args(["finetune", "--quiet", "--threads", "1", "--config"])
        .arg(cfg);
    if resume {
        c.arg("--resume");
    }
    c
}

/// (step, loss) of every optimizer step in metrics.jsonl.
fn losses(out: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("loss").is_some())
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
        .collect()
}

/// Every checkpoint folder holds the complete set of files (written atomically).
fn checkpoints_complete(out: &Path) {
    let Ok(dirs) = std::fs::read_dir(out.join("checkpoints")) else {
        return;
    };
    for d in dirs {
        let d = d.unwrap().path();
        let name = d.file_name().unwrap().to_string_lossy().to_string();
        if !name.starts_with("step-") || name.contains('.') {
            continue; // `.partial` / `.deleting` / `.old`: an interrupted save or removal, never used
        }
        for f in [
            "adapter_model.safetensors",
            "optimizer.safetensors",
            "trainer_state.json",
        ] {
            assert!(d.join(f).is_file(), "{name}/{f} missing");
        }
    }
}

/// Start a run and interrupt it with `signal` once a new checkpoint appears; false if the
/// run finished first.
fn interrupt(cfg: &Path, out: &Path, signal: &str, resume: bool) -> bool {
    let mut child = finetune(cfg, resume)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    // Complete checkpoints only (a `.partial` folder is a save in progress).
    let have = |out: &Path| {
        std::fs::read_dir(out.join("checkpoints"))
            .map(|d| {
                d.filter(|e| {
                    let n = e.as_ref().unwrap().file_name();
                    !n.to_string_lossy().ends_with(".partial")
                })
                .count()
            })
            .unwrap_or(0)
    };
    let before = have(out);
    while have(out) <= before && start.elapsed() < Duration::from_secs(120) {
        if child.try_wait().unwrap().is_some() {
            return false; // finished before the signal: nothing to interrupt
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    if signal == "-INT" {
        assert!(
            status.success() || status.code().is_some(),
            "Ctrl-C must end the run cleanly: {status:?}"
        );
    }
    checkpoints_complete(out);
    assert!(!out.join("final").exists() || out.join("final/adapter_model.safetensors").is_file());
    true
}

#[test]
fn killed_and_interrupted_runs_resume_to_the_same_result() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("whole");
    let cfg = write_config(tmp.path(), &whole);
    let o = finetune(&cfg, false).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want = losses(&whole);
    assert!(want.len() >= 30, "{} steps", want.len());

    let cut = tmp.path().join("cut");
    let cfg = write_config(tmp.path(), &cut);
    // The first kill lands at the first checkpoint of 48 steps, so the run is really cut.
    assert!(
        interrupt(&cfg, &cut, "-KILL", false),
        "the run finished before the kill"
    );
    assert!(!cut.join("final").exists(), "a killed run has no final/");
    interrupt(&cfg, &cut, "-INT", true);
    interrupt(&cfg, &cut, "-KILL", true);
    if !cut.join("final").exists() {
        let o = finetune(&cfg, true).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let got = losses(&cut);
    assert_eq!(got.len(), want.len(), "steps after resuming");
    for ((s, a), (_, b)) in got.iter().zip(&want) {
        assert_eq!(a, b, "step {s}: resumed loss differs");
    }
    let read = |p: PathBuf| std::fs::read(p).unwrap();
    assert_eq!(
        read(cut.join("final/adapter_model.safetensors")),
        read(whole.join("final/adapter_model.safetensors")),
        "final adapters differ"
    );
}
