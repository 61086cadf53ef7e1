//! Giving freed heap memory back to the OS after many flows closed.
//!
//! glibc keeps freed small allocations (smoltcp socket metadata, per-flow bookkeeping) in its
//! arenas; after 10,000 UDP flows came and went, RSS stayed at hundreds of MiB although the
//! memory was free. `malloc_trim` returns it.

/// Flows closed since the last trim beyond which the next sweep trims.
pub const TRIM_AFTER_CLOSED: usize = 256;

/// Returns free heap memory to the OS (glibc only; a no-op elsewhere).
#[allow(unsafe_code)]
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
