//! Kill-safety of `summarize`: killed with SIGKILL or SIGINT at pseudo-random points, the
//! output file is never partial (absent, or the complete submission), `--resume` skips the
//! rows already in `OUT.partial` (dropping a half-written last row), and the file a chain
//! of interrupted runs ends with is byte-identical to an uninterrupted run.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// The fixture dialogues repeated under distinct fnames: `n` rows.
fn write_input(path: &Path, n: usize) {
    let mut r = csv::Reader::from_path(fixtures().join("data/dialogues.csv")).unwrap();
    let rows: Vec<(String, String)> = r
        .records()
        .map(|x| {
            let x = x.unwrap();
            (x[0].to_string(), x[1].to_string())
        })
        .collect();
    let mut w = csv::Writer::from_path(path).unwrap();
    w.write_record(["fname", "dialogue"]).unwrap();
    for i in 0..n {
        let (f, d) = &rows[i % rows.len()];
        w.write_record([format!("{f}_{i}"), d.clone()]).unwrap();
    }
    w.flush().unwrap();
}

fn summarize(input: &Path, out: &Path, resume: bool) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dsum-cli"));
    c.args([
        "summarize",
        "--quiet",
        "--batch-size",
        "2",
        "--threads",
        "1",
    ])
    .args(["--max-new-tokens", "12", "--num-beams", "2", "--model"])
    .arg(fixtures().join("bart/models/tiny-a"))
    .arg("--input")
    .arg(input)
    .arg("--output")
    .arg(out)
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    if resume {
        c.arg("--resume");
    }
    c
}

/// xorshift: reproducible "random" kill delays.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Newline-terminated lines in `partial` (the header included).
fn complete_rows(partial: &Path) -> usize {
    let Ok(b) = fs::read(partial) else { return 0 };
    b.iter().filter(|&&c| c == b'\n').count()
}

fn kill_and_resume(signal: &str, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    write_input(&input, 60);

    let expected_path = dir.path().join("expected.csv");
    let o = summarize(&input, &expected_path, false).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let expected = fs::read(&expected_path).unwrap();

    let out = dir.path().join("out.csv");
    let partial = dir.path().join("out.csv.partial");
    let mut rng = Rng(seed);
    let (mut kills, mut resumed) = (0, 0);
    for round in 0..40 {
        let mut child = summarize(&input, &out, round > 0).spawn().unwrap();
        // Kill points follow progress, not the clock (this machine's load varies): once
        // 1 to 6 more rows are in the partial file, then 0 to 15 ms later, which lands
        // anywhere in a batch, including in the middle of writing a row. The first round
        // also tries a kill during model loading.
        let target = complete_rows(&partial) + 1 + (rng.next() % 6) as usize;
        if round == 0 {
            std::thread::sleep(Duration::from_millis(rng.next() % 30));
        } else {
            while complete_rows(&partial) < target && child.try_wait().unwrap().is_none() {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(rng.next() % 16));
        }
        if signal == "KILL" {
            let _ = child.kill();
        } else {
            let _ = Command::new("kill")
                .args([&format!("-{signal}"), &child.id().to_string()])
                .status();
        }
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("panicked"), "{err}");
        if err.contains("resuming:") {
            resumed += 1;
        }
        if o.status.success() {
            break; // finished before the signal arrived
        }
        kills += 1;
        // Never a partial output: the final name appears only by rename of a complete file.
        if out.exists() {
            assert_eq!(
                fs::read(&out).unwrap(),
                expected,
                "partial {}",
                out.display()
            );
            break;
        }
        if signal == "INT" && complete_rows(&partial) > 1 {
            assert!(
                err.contains("--resume"),
                "SIGINT should say how to resume: {err}"
            );
        }
    }
    // Finish whatever is left.
    if !out.exists() {
        let o = summarize(&input, &out, true).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    eprintln!("{signal}: {kills} runs interrupted, {resumed} resumed");
    assert!(kills > 0, "no run was interrupted; the test proves nothing");
    assert!(resumed > 0, "no run resumed from a partial file");
    assert!(!partial.exists(), "the partial file must be renamed away");
    assert_eq!(
        String::from_utf8(fs::read(&out).unwrap()).unwrap(),
        String::from_utf8(expected).unwrap(),
        "interrupted + resumed runs must equal an uninterrupted run"
    );
}

#[test]
fn sigkill_at_random_points_never_leaves_a_partial_output() {
    kill_and_resume("KILL", 0x9e37_79b9_7f4a_7c15);
}

#[test]
fn sigint_at_random_points_never_leaves_a_partial_output() {
    kill_and_resume("INT", 0x2545_f491_4f6c_dd1d);
}

/// A row cut in half by a kill (here: by hand, mid-character) is summarized again, not kept.
#[test]
fn resume_drops_a_half_written_last_row() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    write_input(&input, 6);
    let expected_path = dir.path().join("expected.csv");
    assert!(summarize(&input, &expected_path, false)
        .status()
        .unwrap()
        .success());
    let expected = fs::read(&expected_path).unwrap();
    // Keep the header, two rows and part of the third (inside a multi-byte character).
    let lines: Vec<usize> = expected
        .iter()
        .enumerate()
        .filter(|(_, &c)| c == b'\n')
        .map(|(i, _)| i)
        .collect();
    let mut cut = lines[2] + 1 + 7;
    while cut < expected.len() && expected[cut] < 0xC0 && expected[cut] >= 0x80 {
        cut += 1;
    }
    cut += 1; // one byte into the character (or past an ASCII one)
    let out = dir.path().join("out.csv");
    fs::write(dir.path().join("out.csv.partial"), &expected[..cut]).unwrap();
    let o = summarize(&input, &out, true).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("resuming: 2 rows"), "{err}");
    assert_eq!(fs::read(&out).unwrap(), expected);
}
