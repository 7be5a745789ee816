//! glibc allocator tuning for a board with little RAM.
//!
//! Loading a bundle (decoding the protobuf, optimising, packing weights) allocates and frees large
//! buffers. glibc raises its mmap threshold each time such a block is freed, so those buffers land
//! on the heap and the process keeps the load-time peak resident. While loading we map every block
//! over 128 KiB (returned to the system on free); once loaded we raise the threshold again, so the
//! per-frame activation buffers come from the heap without page faults, and trim what the load left.
//! Measured with b3 at 224 (docs/performance.md): peak RSS 123 → 98 MiB fp32, 84 → 70 MiB int8, same
//! latency.
//! Other C libraries (musl) are left alone.

/// Call before loading a bundle, while the process is still single-threaded.
pub fn map_large_blocks_while_loading() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning (0 is returned for an unsupported option).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Call once the bundle is loaded: heap allocation for the frame loop, load garbage trimmed.
pub fn loading_done() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: as above; malloc_trim only returns free heap pages to the system.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 * 1024 * 1024);
        libc::malloc_trim(0);
    }
}
