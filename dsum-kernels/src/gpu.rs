//! One CUDA device: its context and stream, the kernel modules compiled for it (by NVRTC, on
//! first use, from the sources in `sources.rs`) and a cuBLAS handle.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::cublas::CudaBlas;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DeviceRepr, ValidAsZeroBits,
};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions, Ptx};

use crate::error::{KernelError, Result};
use crate::sources::{Source, PRELUDE};

/// Whether CUDA can be used here, without touching the driver when it is absent (cudarc panics
/// on a missing library).
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen libcuda.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Whether NVRTC can be loaded (needed to compile the kernels).
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen libnvrtc.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Number of CUDA devices (0 without a driver).
pub fn device_count() -> usize {
    if !driver_present() {
        return 0;
    }
    CudaContext::device_count()
        .map(|n| n.max(0) as usize)
        .unwrap_or(0)
}

/// Compile one source to PTX for `arch` (e.g. "compute_90").
pub fn compile(source: &Source, arch: &str) -> Result<Ptx> {
    if !nvrtc_present() {
        return Err(KernelError::NoNvrtc);
    }
    let code = format!(
        "#line 1 \"prelude.cuh\"\n{PRELUDE}\n#line 1 \"{}.cu\"\n{}",
        source.name, source.code
    );
    let opts = CompileOptions {
        options: vec![format!("--gpu-architecture={arch}"), "--std=c++17".into()],
        name: Some(format!("{}.cu", source.name)),
        ..Default::default()
    };
    compile_ptx_with_opts(code, opts).map_err(|e| KernelError::Compile {
        source_name: source.name,
        arch: arch.to_string(),
        log: e.to_string(),
    })
}

/// [`compile`] once per source and architecture in the process: every model load opens its
/// own [`Gpu`] (a `finetune` run evaluates by generation on a fresh one each time), and NVRTC
/// takes a while per source.
fn cached_ptx(source: &'static Source, arch: &str) -> Result<Ptx> {
    static CACHE: OnceLock<Mutex<HashMap<(&'static str, String), Ptx>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = (source.name, arch.to_string());
    if let Some(p) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok(p.clone());
    }
    let ptx = compile(source, arch)?;
    let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
    Ok(c.entry(key).or_insert(ptx).clone())
}

pub struct Gpu {
    ordinal: usize,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    arch: String,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    blas: OnceLock<std::result::Result<Arc<CudaBlas>, String>>,
}

/// The backends allocate a buffer per step through cudarc's stream-ordered `cuMemAllocAsync`,
/// served by the device's default memory pool. By default that pool hands freed memory back
/// to the driver at every synchronization, so each step would pay for a real allocation
/// again; an unlimited release threshold keeps it cached, as PyTorch's caching allocator does.
/// Best effort: a driver that refuses leaves the default in place.
fn keep_freed_memory(ctx: &CudaContext) {
    use cudarc::driver::sys;
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    let mut threshold: u64 = u64::MAX;
    // SAFETY: `pool` is written by the driver for a valid device of a live context; the
    // attribute takes a pointer to a u64, which `threshold` is.
    unsafe {
        if ctx.bind_to_thread().is_ok()
            && sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device())
                == sys::CUresult::CUDA_SUCCESS
        {
            let attr = sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD;
            let _ = sys::cuMemPoolSetAttribute(pool, attr, &mut threshold as *mut u64 as *mut _);
        }
    }
}

impl Gpu {
    /// Open device `ordinal` (`--device cuda:N`).
    pub fn open(ordinal: usize) -> Result<Gpu> {
        if !driver_present() {
            return Err(KernelError::NoDriver);
        }
        let count = device_count();
        if ordinal >= count {
            return Err(KernelError::NoDevice { ordinal, count });
        }
        let ctx = CudaContext::new(ordinal)?;
        if ctx.has_async_alloc() {
            keep_freed_memory(&ctx);
        }
        let (major, minor) = ctx.compute_capability()?;
        let stream = ctx.default_stream();
        Ok(Gpu {
            ordinal,
            ctx,
            stream,
            arch: format!("compute_{major}{minor}"),
            modules: Mutex::new(HashMap::new()),
            blas: OnceLock::new(),
        })
    }

    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// "compute_90" for an H100.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    pub fn name(&self) -> Result<String> {
        Ok(self.ctx.name()?)
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Kernel `name` of `source`, compiling the source for this device's architecture on first
    /// use in the process.
    pub fn function(&self, source: &'static Source, name: &str) -> Result<CudaFunction> {
        let module = {
            let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
            match modules.get(source.name) {
                Some(m) => m.clone(),
                None => {
                    let m = self.ctx.load_module(cached_ptx(source, &self.arch)?)?;
                    modules.insert(source.name, m.clone());
                    m
                }
            }
        };
        Ok(module.load_function(name)?)
    }

    /// The cuBLAS handle, created on first use and bound to this stream.
    pub fn blas(&self) -> Result<Arc<CudaBlas>> {
        self.blas
            .get_or_init(|| {
                CudaBlas::new(self.stream.clone())
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(|e| KernelError::Shape {
                op: "cublas",
                what: e,
            })
    }

    pub fn upload<T: DeviceRepr>(&self, host: &[T]) -> Result<CudaSlice<T>> {
        Ok(self.stream.clone_htod(host)?)
    }

    pub fn download<T: DeviceRepr + Clone + Default>(&self, dev: &CudaSlice<T>) -> Result<Vec<T>> {
        Ok(self.stream.clone_dtoh(dev)?)
    }

    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, n: usize) -> Result<CudaSlice<T>> {
        Ok(self.stream.alloc_zeros::<T>(n)?)
    }

    pub fn synchronize(&self) -> Result<()> {
        Ok(self.stream.synchronize()?)
    }
}
