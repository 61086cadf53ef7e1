//! The global allocator: large blocks straight from `mmap`, everything else from the system
//! allocator.
//!
//! Every smoltcp TCP socket owns two large zeroed buffers (512 KiB each by default). From
//! glibc, even an `mmap`ed block starts with a header that malloc writes, so each buffer made
//! its first page resident: 8 KiB per connection that never moved a byte, 80 MiB for 10,000
//! idle connections. Mapped here, with no header, a buffer's pages become resident only when
//! data passes through them, and all of them go back to the OS when the socket closes.

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks at least this large are mapped directly.
const MAP_THRESHOLD: usize = 128 * 1024;
const PAGE: usize = 4096;

/// Maps large blocks, hands the rest to [`System`].
pub struct PageAlloc;

fn mapped(layout: &Layout) -> bool {
    layout.size() >= MAP_THRESHOLD && layout.align() <= PAGE
}

#[allow(unsafe_code)]
// SAFETY (whole impl): mapped blocks are page-aligned fresh mappings of `size` bytes (at least
// `align`), released with the same size the caller passes back in `layout`, as GlobalAlloc
// guarantees; other blocks go to System with the same layout they were allocated with.
unsafe impl GlobalAlloc for PageAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !mapped(&layout) {
            return unsafe { System.alloc(layout) };
        }
        map(layout.size())
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !mapped(&layout) {
            return unsafe { System.alloc_zeroed(layout) };
        }
        // Fresh anonymous pages are zero already, and stay unresident until written.
        map(layout.size())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !mapped(&layout) {
            return unsafe { System.dealloc(ptr, layout) };
        }
        unsafe {
            libc::munmap(ptr.cast(), layout.size());
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        match (mapped(&layout), mapped(&new_layout)) {
            (false, false) => unsafe { System.realloc(ptr, layout, new_size) },
            (true, true) => {
                let p = unsafe {
                    libc::mremap(ptr.cast(), layout.size(), new_size, libc::MREMAP_MAYMOVE)
                };
                if p == libc::MAP_FAILED {
                    std::ptr::null_mut()
                } else {
                    p.cast()
                }
            }
            _ => {
                let new = unsafe { self.alloc(new_layout) };
                if !new.is_null() {
                    unsafe {
                        std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                }
                new
            }
        }
    }
}

#[allow(unsafe_code)]
fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping touches no existing memory.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p.cast()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(unsafe_code)]
    fn large_blocks_are_zeroed_writable_and_resizable() {
        let a = PageAlloc;
        for size in [MAP_THRESHOLD - 1, MAP_THRESHOLD, 512 * 1024 + 3] {
            let layout = Layout::from_size_align(size, 8).unwrap();
            // SAFETY: the layout is non-zero; the block is used within its size and freed once.
            unsafe {
                let p = a.alloc_zeroed(layout);
                assert!(!p.is_null());
                let s = std::slice::from_raw_parts_mut(p, size);
                assert!(s.iter().all(|&b| b == 0));
                s[size - 1] = 7;
                let grown = a.realloc(p, layout, size * 2);
                assert!(!grown.is_null());
                assert_eq!(*grown.add(size - 1), 7);
                let grown_layout = Layout::from_size_align(size * 2, 8).unwrap();
                let shrunk = a.realloc(grown, grown_layout, 1000);
                assert!(!shrunk.is_null());
                assert_eq!(*shrunk, 0);
                a.dealloc(shrunk, Layout::from_size_align(1000, 8).unwrap());
            }
        }
    }
}
