//! `dsum-cli morphs`: output format, dictionary lookup and errors.
//!
//! Parity tests need `DSUM_MECAB_DIC` (site-packages/mecab_ko_dic/dictionary); without it they
//! print a skip notice, except under `CI`, where that is a failure.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn dictionary_dir() -> Option<PathBuf> {
    match std::env::var_os("DSUM_MECAB_DIC").filter(|v| !v.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir)),
        None if std::env::var_os("CI").is_some() => {
            panic!("DSUM_MECAB_DIC is not set: CI must provide the mecab-ko-dic folder (pip install python-mecab-ko-dic)")
        }
        None => {
            // Written past the test harness's capture, once, so the skip is visible.
            static NOTICE: std::sync::Once = std::sync::Once::new();
            NOTICE.call_once(|| {
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED: set DSUM_MECAB_DIC to a mecab-ko-dic folder \
                     (site-packages/mecab_ko_dic/dictionary) to run the Mecab-ko parity tests"
                );
            });
            None
        }
    }
}

fn morphs(args: &[&str], env_dic: Option<&str>, stdin: &str) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dsum-cli"));
    cmd.arg("morphs").args(args).env_remove("DSUM_MECAB_DIC");
    if let Some(dic) = env_dic {
        cmd.env("DSUM_MECAB_DIC", dic);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The command may exit before reading its input: a broken pipe here is fine.
    let stdin_pipe = child.stdin.take();
    let _ = stdin_pipe.map(|mut p| p.write_all(stdin.as_bytes()));
    child.wait_with_output().unwrap()
}

const INPUT: &str =
    "#Person1#: 11,500원 입니다.\n아버지가방에들어가신다\n\n  ㅋㅋㅋ 어쩔티비 😀  \n";

#[test]
fn prints_morphemes_per_line() {
    let Some(dir) = dictionary_dir() else { return };
    let out = morphs(&["--mecab-dic", dir.to_str().unwrap()], None, INPUT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "# Person 1 #: 11 , 500 원 입니다 .\n아버지 가 방 에 들어가 신다\n\nㅋㅋㅋ 어쩔 티비 😀\n"
    );
}

#[test]
fn prints_tags_with_pos() {
    let Some(dir) = dictionary_dir() else { return };
    // The dictionary comes from the environment variable here.
    let out = morphs(
        &["--pos"],
        Some(dir.to_str().unwrap()),
        "안녕하세요 반갑습니다\r\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "안녕/NNG 하/XSV 세요/EP+EF 반갑/VA 습니다/EF\n"
    );
}

#[test]
fn missing_dictionary_file_is_named() {
    let dir = std::env::temp_dir().join(format!("dsum-cli-morphs-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = morphs(&["--mecab-dic", dir.to_str().unwrap()], None, "가\n");
    std::fs::remove_dir_all(&dir).ok();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sys.dic"), "{err}");
}

#[test]
fn no_dictionary_anywhere_explains_how_to_get_one() {
    let system = [
        "/usr/local/lib/mecab/dic/mecab-ko-dic",
        "/usr/lib/mecab/dic/mecab-ko-dic",
    ];
    if system
        .iter()
        .any(|d| std::path::Path::new(d).join("sys.dic").is_file())
    {
        eprintln!("SKIPPED: a system mecab-ko-dic is installed");
        return;
    }
    let out = morphs(&[], None, "가\n");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pip install python-mecab-ko-dic"), "{err}");
    assert!(err.contains("DSUM_MECAB_DIC"), "{err}");
}

#[test]
fn invalid_utf8_line_is_an_error_not_a_panic() {
    let Some(dir) = dictionary_dir() else { return };
    let mut child = Command::new(env!("CARGO_BIN_EXE_dsum-cli"))
        .args(["morphs", "--mecab-dic", dir.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The command may exit before reading its input: a broken pipe here is fine.
    let stdin_pipe = child.stdin.take();
    let _ = stdin_pipe.map(|mut p| p.write_all(b"\xff\xfe\n"));
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1"));
}
