//! GPU tests: every kernel against its CPU reference in dsum-core over random shapes (proptest),
//! plus the NVRTC compile of every source. Without a GPU (or without NVRTC) the tests are listed
//! as ignored, so a run without CUDA shows what it did not check instead of passing silently.

use std::sync::{Arc, OnceLock};

use dsum_kernels::Gpu;
use libtest_mimic::{Arguments, Failed, Trial};

mod cases;

/// A GPU test: name and body.
pub type GpuTest = (&'static str, fn(&Gpu) -> Result<(), String>);

fn gpu() -> Result<Arc<Gpu>, String> {
    static GPU: OnceLock<Result<Arc<Gpu>, String>> = OnceLock::new();
    GPU.get_or_init(|| Gpu::open(0).map(Arc::new).map_err(|e| e.to_string()))
        .clone()
}

fn main() {
    let args = Arguments::from_args();
    let has_gpu = dsum_kernels::device_count() > 0;
    let has_nvrtc = dsum_kernels::nvrtc_present();
    let mut trials = Vec::new();
    for src in dsum_kernels::sources::ALL {
        let name = format!("compile::{}", src.name);
        trials.push(
            Trial::test(name, move || {
                for arch in ["compute_80", "compute_90"] {
                    dsum_kernels::compile(src, arch).map_err(|e| Failed::from(e.to_string()))?;
                }
                Ok(())
            })
            .with_ignored_flag(!has_nvrtc),
        );
    }
    for &(name, body) in cases::ALL.iter().flat_map(|m| m.iter()) {
        trials.push(
            Trial::test(format!("gpu::{name}"), move || {
                let g = gpu().map_err(Failed::from)?;
                body(&g).map_err(Failed::from)
            })
            .with_ignored_flag(!has_gpu),
        );
    }
    if !has_gpu {
        eprintln!(
            "dsum-kernels: no CUDA device here; the {} GPU tests below are IGNORED, not passed",
            trials
                .iter()
                .filter(|t| t.name().starts_with("gpu::"))
                .count()
        );
    }
    if !has_nvrtc {
        eprintln!("dsum-kernels: libnvrtc not found; the kernel compile tests are IGNORED (tools/cuda/check.sh runs them)");
    }
    libtest_mimic::run(&args, trials).exit();
}
