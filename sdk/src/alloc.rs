//! The plugin's global allocator on wasm32 (feature `allocator`, on by default).
//!
//! JSON work allocates several times per record (every key and string of a parsed `Value`, the
//! map's tables) and frees it all again before the next record. wasi-libc's dlmalloc took about a
//! fifth of the JSON mask's guest time on that pattern (docs/benchmarks.md, "Plugins"). Here a
//! block of up to [`MAX_SMALL`] bytes comes from a free list per size class (multiples of
//! [`GRANULE`]): taking and returning one is a pointer swap, and a block freed by one record is
//! the next record's. Free lists are refilled from [`CHUNK`]-byte chunks of the system allocator;
//! larger blocks go to the system allocator directly.
//!
//! Small-block memory is kept for reuse by blocks of the same class and never handed back, so a
//! plugin's memory is its peak of small blocks per class plus what the system allocator holds;
//! the `memory` limit of the spec bounds both. Plugins are single-threaded (wasm32 without
//! `atomics`), so the free lists need no lock.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ptr;

/// Size classes are multiples of this; it is also the alignment of every small block.
pub(crate) const GRANULE: usize = 16;
/// Number of size classes: blocks of 16, 32, ... [`MAX_SMALL`] bytes.
const CLASSES: usize = 32;
/// The largest block served from the free lists.
pub(crate) const MAX_SMALL: usize = GRANULE * CLASSES;
/// Free lists are refilled from chunks of this size.
pub(crate) const CHUNK: usize = 64 * 1024;

struct State {
    /// The first free block of each class; a free block holds the address of the next.
    free: [*mut u8; CLASSES],
    /// The unused part of the current chunk.
    next: *mut u8,
    end: *mut u8,
}

/// Size-class free lists over the system allocator.
pub(crate) struct SizeClasses(UnsafeCell<State>);

// SAFETY: a wasm32 plugin without the `atomics` feature has exactly one thread, so the state is
// never touched concurrently.
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
unsafe impl Sync for SizeClasses {}

impl SizeClasses {
    pub(crate) const fn new() -> Self {
        Self(UnsafeCell::new(State {
            free: [ptr::null_mut(); CLASSES],
            next: ptr::null_mut(),
            end: ptr::null_mut(),
        }))
    }

    /// The class of a layout served from the free lists, or `None` for the system allocator.
    #[inline]
    fn class(layout: Layout) -> Option<usize> {
        (layout.size() <= MAX_SMALL && layout.align() <= GRANULE)
            .then(|| layout.size().saturating_sub(1) / GRANULE)
    }

    /// A block of `class` carved from the current chunk, or from a new one.
    #[cold]
    unsafe fn carve(&self, class: usize) -> *mut u8 {
        let size = (class + 1) * GRANULE;
        // SAFETY: single-threaded (see `Sync`); no other reference to the state is live.
        let s = unsafe { &mut *self.0.get() };
        if (s.end as usize) - (s.next as usize) < size {
            // The rest of the old chunk (under MAX_SMALL bytes) is left unused.
            // SAFETY: CHUNK is non-zero and GRANULE a power of two.
            let chunk = unsafe { System.alloc(Layout::from_size_align_unchecked(CHUNK, GRANULE)) };
            if chunk.is_null() {
                return chunk;
            }
            s.next = chunk;
            // SAFETY: the chunk is CHUNK bytes long.
            s.end = unsafe { chunk.add(CHUNK) };
        }
        let block = s.next;
        // SAFETY: at least `size` bytes are left in the chunk (checked above).
        s.next = unsafe { block.add(size) };
        block
    }
}

// SAFETY: every small block is GRANULE-aligned (chunks are, and sizes are multiples of it) and at
// least as large as its layout; a block is on at most one free list, and only while it is free.
unsafe impl GlobalAlloc for SizeClasses {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = Self::class(layout) else {
            // SAFETY: forwarded with the caller's guarantees.
            return unsafe { System.alloc(layout) };
        };
        // SAFETY: single-threaded (see `Sync`); no other reference to the state is live.
        let s = unsafe { &mut *self.0.get() };
        let head = s.free[class];
        if head.is_null() {
            // SAFETY: `class` is in range.
            return unsafe { self.carve(class) };
        }
        // SAFETY: a free block holds the address of the next free block of its class.
        s.free[class] = unsafe { head.cast::<*mut u8>().read() };
        head
    }

    #[inline]
    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        let Some(class) = Self::class(layout) else {
            // SAFETY: a block of this layout came from the system allocator.
            return unsafe { System.dealloc(block, layout) };
        };
        // SAFETY: single-threaded (see `Sync`); no other reference to the state is live.
        let s = unsafe { &mut *self.0.get() };
        // SAFETY: the block is ours, at least GRANULE bytes and GRANULE-aligned, and no longer
        // used by the caller, so it can hold the list's link.
        unsafe { block.cast::<*mut u8>().write(s.free[class]) };
        s.free[class] = block;
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if Self::class(layout).is_none() {
            // SAFETY: forwarded with the caller's guarantees.
            return unsafe { System.alloc_zeroed(layout) };
        }
        // SAFETY: forwarded with the caller's guarantees.
        let block = unsafe { self.alloc(layout) };
        if !block.is_null() {
            // SAFETY: the block holds at least `layout.size()` bytes.
            unsafe { block.write_bytes(0, layout.size()) };
        }
        block
    }

    #[inline]
    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees that `new_size`, rounded up to the alignment, does not
        // overflow `isize`.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (Self::class(layout), Self::class(new)) {
            // SAFETY: forwarded with the caller's guarantees.
            (None, None) => unsafe { System.realloc(block, layout, new_size) },
            // The block already has room for the new size.
            (Some(a), Some(b)) if a == b => block,
            _ => {
                // SAFETY: `new` is a valid layout (see above).
                let moved = unsafe { self.alloc(new) };
                if !moved.is_null() {
                    // SAFETY: both blocks hold at least the bytes copied and do not overlap.
                    unsafe {
                        ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                        self.dealloc(block, layout);
                    }
                }
                moved
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn a_freed_block_is_the_next_block_of_its_class() {
        let a = SizeClasses::new();
        unsafe {
            let x = a.alloc(layout(24, 8));
            let y = a.alloc(layout(30, 4));
            assert_ne!(x, y);
            a.dealloc(x, layout(24, 8));
            // 17..=32 bytes share a class: the freed block comes back first.
            assert_eq!(a.alloc(layout(32, 16)), x);
            // Another class does not take it.
            a.dealloc(y, layout(30, 4));
            let z = a.alloc(layout(8, 8));
            assert_ne!(z, y);
            assert_eq!(a.alloc(layout(17, 1)), y);
        }
    }

    #[test]
    fn blocks_are_aligned_sized_and_do_not_overlap() {
        let a = SizeClasses::new();
        let mut blocks = Vec::new();
        // Enough blocks to need several chunks.
        for i in 0..20_000usize {
            let size = 1 + (i * 37) % MAX_SMALL;
            let l = layout(size, 1 << (i % 5));
            let p = unsafe { a.alloc(l) };
            assert!(!p.is_null());
            assert_eq!(p as usize % l.align(), 0);
            unsafe { p.write_bytes(i as u8, size) };
            blocks.push((p, l, i as u8));
        }
        for (p, l, fill) in &blocks {
            let bytes = unsafe { std::slice::from_raw_parts(*p, l.size()) };
            assert!(bytes.iter().all(|b| b == fill), "a block was overwritten");
        }
        for (p, l, _) in blocks {
            unsafe { a.dealloc(p, l) };
        }
    }

    #[test]
    fn large_and_overaligned_blocks_use_the_system_allocator_and_realloc_keeps_bytes() {
        let a = SizeClasses::new();
        unsafe {
            // The classes a wrongly routed block would land in already have a chunk.
            let primed = [a.alloc(layout(64, 16)), a.alloc(layout(MAX_SMALL, 16))];
            let big = a.alloc(layout(MAX_SMALL + 1, 8));
            let aligned = a.alloc(layout(64, 64));
            assert_eq!(aligned as usize % 64, 0);
            a.dealloc(aligned, layout(64, 64));
            a.dealloc(big, layout(MAX_SMALL + 1, 8));
            // Freed, they went back to the system, not to a class's free list, whose next block
            // would be exactly them.
            let next = [a.alloc(layout(64, 16)), a.alloc(layout(MAX_SMALL, 16))];
            assert_ne!(next[0], aligned);
            assert_ne!(next[1], big);
            for (p, size) in primed
                .into_iter()
                .chain(next)
                .zip([64, MAX_SMALL, 64, MAX_SMALL])
            {
                a.dealloc(p, layout(size, 16));
            }

            // Growing through small classes into the system allocator and back keeps the bytes.
            let mut p = a.alloc(layout(5, 1));
            p.copy_from_nonoverlapping(b"hello".as_ptr(), 5);
            let mut size = 5;
            for new_size in [12, 16, 100, 4000, 40, 5] {
                p = a.realloc(p, layout(size, 1), new_size);
                assert!(!p.is_null());
                size = new_size;
                assert_eq!(std::slice::from_raw_parts(p, 5), b"hello");
            }
            // Within a class the block stays where it is.
            assert_eq!(a.realloc(p, layout(5, 1), 16), p);
            a.dealloc(p, layout(16, 1));

            let z = a.alloc_zeroed(layout(48, 8));
            assert!(std::slice::from_raw_parts(z, 48).iter().all(|b| *b == 0));
        }
    }
}
