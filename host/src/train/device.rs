//! The compute device a command runs on, and the checks that turn a missing GPU stack into one
//! clear error (burn-cuda loads the driver and NVRTC on its device thread and panics there).

use anyhow::Result;
#[cfg(not(feature = "cuda"))]
use anyhow::bail;
use burn::prelude::*;

/// Compute device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// burn's Flex CPU backend (default; pure Rust, multi-threaded).
    Cpu,
    /// burn-cuda on GPU 0 (build with `--features cuda`).
    Cuda,
}

/// The device for `backend`.
pub fn device_for(backend: Backend) -> Result<Device> {
    match backend {
        Backend::Cpu => Ok(Device::flex()),
        #[cfg(feature = "cuda")]
        Backend::Cuda => {
            cuda::check_stack()?;
            Ok(Device::cuda(0))
        }
        #[cfg(not(feature = "cuda"))]
        Backend::Cuda => bail!(
            "this cdnet was built without CUDA; rebuild with `cargo build --release -p cdnet-host --features cuda`"
        ),
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use anyhow::{Result, bail};
    use libloading::{Library, Symbol};

    /// Sonames cudarc tries, in its order, for the CUDA 13 driver API this build binds to.
    const DRIVER: [&str; 2] = ["libcuda.so.1", "libcuda.so"];
    const NVRTC: [&str; 4] = ["libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.1"];

    fn open(names: &[&str]) -> Option<Library> {
        // SAFETY: loading the NVIDIA libraries runs only their initialisers, as cudarc's own
        // loading does a moment later.
        names.iter().find_map(|name| unsafe { Library::new(*name) }.ok())
    }

    /// The driver loads, initialises and sees a GPU, and NVRTC (burn-cuda's kernel compiler) loads.
    pub fn check_stack() -> Result<()> {
        let Some(driver) = open(&DRIVER) else {
            bail!("no NVIDIA driver here (libcuda.so.1 not found): install it, or use --backend cpu");
        };
        let count = gpu_count(&driver)?;
        if count == 0 {
            bail!("the NVIDIA driver sees no GPU (cuDeviceGetCount = 0): check nvidia-smi, or use --backend cpu");
        }
        if open(&NVRTC).is_none() {
            bail!(
                "NVRTC (libnvrtc.so), which compiles burn-cuda's kernels, was not found: install the CUDA \
                 toolkit's NVRTC or put its lib folder on LD_LIBRARY_PATH"
            );
        }
        Ok(())
    }

    fn gpu_count(driver: &Library) -> Result<i32> {
        type CuInit = unsafe extern "C" fn(u32) -> i32;
        type CuDeviceGetCount = unsafe extern "C" fn(*mut i32) -> i32;
        // SAFETY: both symbols have these C signatures in every CUDA driver API version; `count`
        // outlives the call.
        unsafe {
            let init: Symbol<CuInit> = driver.get(b"cuInit\0")?;
            let device_count: Symbol<CuDeviceGetCount> = driver.get(b"cuDeviceGetCount\0")?;
            let status = init(0);
            if status != 0 {
                bail!(
                    "the NVIDIA driver failed to initialise (cuInit error {status}): check nvidia-smi, or use --backend cpu"
                );
            }
            let mut count = 0;
            let status = device_count(&mut count);
            if status != 0 {
                bail!("cuDeviceGetCount failed (error {status}): check nvidia-smi, or use --backend cpu");
            }
            Ok(count)
        }
    }
}
