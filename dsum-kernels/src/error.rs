//! Errors of the CUDA backend.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum KernelError {
    /// libcuda (the driver) could not be loaded: no NVIDIA driver on this machine.
    #[error(
        "no CUDA driver found (libcuda could not be loaded); run on the CPU with --device cpu"
    )]
    NoDriver,
    /// NVRTC (the run-time compiler) could not be loaded.
    #[error(
        "the CUDA run-time compiler (libnvrtc) could not be loaded; add its folder to LD_LIBRARY_PATH"
    )]
    NoNvrtc,
    #[error("CUDA device {ordinal} does not exist ({count} found)")]
    NoDevice { ordinal: usize, count: usize },
    #[error("CUDA driver: {0}")]
    Driver(#[from] cudarc::driver::DriverError),
    #[error("cuBLAS: {0}")]
    Blas(#[from] cudarc::cublas::result::CublasError),
    #[error("compiling kernel source {source_name}.cu for {arch}: {log}")]
    Compile {
        source_name: &'static str,
        arch: String,
        log: String,
    },
    #[error("{op}: {what}")]
    Shape { op: &'static str, what: String },
}

pub type Result<T> = std::result::Result<T, KernelError>;

/// Shape check used by every launcher: a wrong length is an error, never an out-of-bounds write.
pub(crate) fn check_len(op: &'static str, name: &str, got: usize, want: usize) -> Result<()> {
    if got < want {
        return Err(KernelError::Shape {
            op,
            what: format!("{name} holds {got} elements, {want} needed"),
        });
    }
    Ok(())
}

/// A dimension passed to a kernel as `int`: larger values are an error, never a wrapped size.
pub(crate) fn check_i32(op: &'static str, name: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| KernelError::Shape {
        op,
        what: format!("{name} = {v} exceeds the kernels' int range"),
    })
}
