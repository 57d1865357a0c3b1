//! Typed errors of the core. Every error that comes from user input names the file (or
//! field) and what was wrong; the CLI only adds context.

use std::string::String;

pub type Result<T, E = Error> = core::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    /// A safetensors / checkpoint problem: truncated file, bad header, missing tensor...
    #[error("{path}: {message}")]
    Checkpoint { path: String, message: String },
    /// A tensor exists but has the wrong shape or dtype.
    #[error("{path}: tensor `{name}`: {message}")]
    Tensor {
        path: String,
        name: String,
        message: String,
    },
    /// A config.json / generation_config.json problem.
    #[error("{path}: {message}")]
    Config { path: String, message: String },
    /// tokenizer.json could not be loaded or used.
    #[error("{path}: {message}")]
    Tokenizer { path: String, message: String },
    /// An input data problem (CSV, JSONL): names the file and row.
    #[error("{path}: {message}")]
    Data { path: String, message: String },
    /// Invalid generation settings or inputs.
    #[error("invalid generation settings: {0}")]
    Generation(String),
    /// Training stopped (non-finite loss, a checkpoint of another model...).
    #[error("{0}")]
    Train(String),
    /// Invalid NF4 / bitsandbytes quantization input (blocksize, shape, values).
    #[error("NF4: {0}")]
    Quant(String),
    /// A feature that was not compiled in.
    #[error("{0}")]
    NotCompiled(&'static str),
    /// `--device` is not `cpu`, `cuda` or `cuda:N`.
    #[error("invalid device `{0}`: expected cpu, cuda or cuda:N (N the index of a GPU, from 0)")]
    InvalidDevice(String),
    /// `--device cuda` on a build without the CUDA backend.
    #[error(
        "this dsum was built without CUDA; rebuild with `--features cuda` (or `cuda-13` for CUDA 13)"
    )]
    NotCompiledWithCuda,
    /// The CUDA backend failed: no driver or device, a kernel that did not compile or launch.
    /// (Not a `#[source]`: the message already holds it, and error chains would repeat it.)
    #[cfg(feature = "dsum-kernels")]
    #[error("CUDA: {0}")]
    Cuda(dsum_kernels::KernelError),
}

#[cfg(feature = "dsum-kernels")]
impl From<dsum_kernels::KernelError> for Error {
    fn from(e: dsum_kernels::KernelError) -> Self {
        Error::Cuda(e)
    }
}

impl Error {
    pub fn io(path: impl Into<String>, e: impl core::fmt::Display) -> Self {
        Error::Io {
            path: path.into(),
            message: e.to_string(),
        }
    }
    pub fn checkpoint(path: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.into(),
            message: message.into(),
        }
    }
    pub fn config(path: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            path: path.into(),
            message: message.into(),
        }
    }
    pub fn data(path: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Data {
            path: path.into(),
            message: message.into(),
        }
    }
}
