//! Compiles every shipped kernel without a GPU: NVRTC to PTX for each `compute_XX`, then ptxas to
//! an `sm_XX` cubin, printing registers and spills per kernel. Any failure exits non-zero (CI).
//!
//!   dsum-ptx-check [--arch 80,90] [--out DIR] [--ptxas PATH]
//!
//! NVRTC is found through LD_LIBRARY_PATH; ptxas through --ptxas, $PTXAS or PATH
//! (tools/cuda/check.sh sets all of it up from the PyPI CUDA wheels).

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use dsum_kernels::sources::ALL;

fn main() -> ExitCode {
    let mut archs = vec!["80".to_string(), "90".to_string()];
    let mut out = std::env::temp_dir().join("dsum-ptx");
    let mut ptxas = std::env::var("PTXAS").unwrap_or_else(|_| "ptxas".into());
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |flag: &str| {
            args.next().unwrap_or_else(|| {
                eprintln!("{flag} needs a value");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--arch" => archs = value("--arch").split(',').map(str::to_string).collect(),
            "--out" => out = PathBuf::from(value("--out")),
            "--ptxas" => ptxas = value("--ptxas"),
            "-h" | "--help" => {
                println!("dsum-ptx-check [--arch 80,90] [--out DIR] [--ptxas PATH]");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("unknown argument {other:?}");
                return ExitCode::from(2);
            }
        }
    }
    if !dsum_kernels::nvrtc_present() {
        eprintln!("error: libnvrtc could not be loaded; run tools/cuda/check.sh, which sets LD_LIBRARY_PATH");
        return ExitCode::FAILURE;
    }
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("error: creating {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    let mut failures = 0;
    let mut kernels = 0;
    for arch in &archs {
        for src in ALL {
            let ptx = match dsum_kernels::compile(src, &format!("compute_{arch}")) {
                Ok(p) => p.to_src(),
                Err(e) => {
                    eprintln!("FAIL {}.cu compute_{arch}: {e}", src.name);
                    failures += 1;
                    continue;
                }
            };
            let ptx_path = out.join(format!("{}.sm_{arch}.ptx", src.name));
            let cubin = out.join(format!("{}.sm_{arch}.cubin", src.name));
            if let Err(e) = std::fs::write(&ptx_path, &ptx) {
                eprintln!("error: writing {}: {e}", ptx_path.display());
                return ExitCode::FAILURE;
            }
            let run = Command::new(&ptxas)
                .arg(format!("-arch=sm_{arch}"))
                .arg("-v")
                .arg(&ptx_path)
                .arg("-o")
                .arg(&cubin)
                .output();
            let output = match run {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("error: running {ptxas}: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let log = String::from_utf8_lossy(&output.stderr).to_string()
                + &String::from_utf8_lossy(&output.stdout);
            if !output.status.success() {
                eprintln!("FAIL {}.cu sm_{arch} (ptxas):\n{log}", src.name);
                failures += 1;
                continue;
            }
            for k in src.kernels.iter() {
                if !ptx.contains(&format!(".entry {k}(")) {
                    eprintln!("FAIL {}.cu: kernel {k} is not in the PTX", src.name);
                    failures += 1;
                }
            }
            kernels += report(src.name, arch, &log);
        }
    }
    if failures > 0 {
        eprintln!("{failures} failure(s)");
        return ExitCode::FAILURE;
    }
    println!(
        "ok: {kernels} kernel builds ({} sources x {} archs), PTX and cubins in {}",
        ALL.len(),
        archs.len(),
        out.display()
    );
    ExitCode::SUCCESS
}

/// Print one line per kernel from ptxas -v: registers, spill stores/loads, shared memory.
fn report(source: &str, arch: &str, log: &str) -> usize {
    let mut name = String::new();
    let mut spills = String::new();
    let mut n = 0;
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            name = rest.split('\'').next().unwrap_or("").to_string();
        } else if line.contains("spill stores") {
            spills = line
                .split("ptxas info    :")
                .last()
                .unwrap_or(line)
                .trim()
                .to_string();
        } else if line.contains("Used") && line.contains("registers") {
            let used = line.split("Used").nth(1).unwrap_or("").trim();
            println!("{source}.cu sm_{arch} {name}: {spills}; used {used}");
            n += 1;
        }
    }
    n
}
