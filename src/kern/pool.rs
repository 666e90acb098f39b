//! Memory kept for reuse, so that the I/O path allocates nothing in its
//! steady state: a [`Slab`] of objects of one type, and a [`BufPool`] of
//! data buffers in power-of-two size classes under a byte budget.  Both
//! grow with `M_NOWAIT` allocations when they have nothing to hand out and
//! give their memory back to malloc(9) when trimmed or dropped.

use core::alloc::Layout;
use core::marker::PhantomData;
use core::mem::{self, MaybeUninit};
use core::ptr::NonNull;

use super::alloc::{self, AllocError, KBox, Wait};

/// A free slot: its memory holds the next free slot.
struct FreeSlot {
    next: Option<NonNull<FreeSlot>>,
}

/// Memory for values of type `T`, recycled: [`Slab::room`] reuses a slot
/// freed by [`Slab::recycle`] before asking malloc(9) for one.
pub struct Slab<T> {
    free: Option<NonNull<FreeSlot>>,
    /// Slots allocated and not given back to malloc(9).
    slots: usize,
    owns: PhantomData<T>,
}

// SAFETY: the free slots are plain memory owned by the slab.
unsafe impl<T: Send> Send for Slab<T> {}

impl<T> Slab<T> {
    /// A free slot can hold its link.
    const FITS: () = assert!(
        mem::size_of::<T>() >= mem::size_of::<FreeSlot>() && mem::align_of::<T>() >= mem::align_of::<FreeSlot>(),
        "a slab's type must be at least as large and aligned as a pointer"
    );

    /// An empty slab.
    pub const fn new() -> Slab<T> {
        Slab {
            free: None,
            slots: 0,
            owns: PhantomData,
        }
    }

    /// Slots allocated and not given back to malloc(9).
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Room for a value: a recycled slot, or a new one (`M_NOWAIT`); fill
    /// it with [`KBox::write`].
    pub fn room(&mut self) -> Result<KBox<MaybeUninit<T>>, AllocError> {
        let () = Self::FITS;
        match self.free {
            Some(slot) => {
                // SAFETY: a free slot holds a FreeSlot written by `recycle`.
                self.free = unsafe { slot.as_ref().next };
                // SAFETY: the slot's memory was a KBox<T>'s, given up by
                // `recycle`; viewed as uninitialised room for a T.
                Ok(unsafe { KBox::from_raw(slot.as_ptr().cast::<MaybeUninit<T>>()) })
            }
            None => {
                let room = KBox::<T>::new_uninit(Wait::NoWait)?;
                self.slots = self.slots.saturating_add(1);
                Ok(room)
            }
        }
    }

    /// Takes the value out of `b` and keeps its memory for the next
    /// [`Slab::room`].  `b` must come from this slab's `room`.
    pub fn recycle(&mut self, b: KBox<T>) -> T {
        let p = KBox::into_raw(b);
        // SAFETY: `p` holds a valid T, read out once; its memory, large and
        // aligned enough for a FreeSlot (FITS), becomes a free slot.
        unsafe {
            let value = p.read();
            let slot = p.cast::<FreeSlot>();
            slot.write(FreeSlot { next: self.free });
            self.free = Some(NonNull::new_unchecked(slot));
            value
        }
    }

    /// Gives every free slot back to malloc(9).
    pub fn trim(&mut self) {
        while let Some(slot) = self.free {
            // SAFETY: a free slot, unlinked here and freed once.
            unsafe {
                self.free = slot.as_ref().next;
                alloc::free(slot.cast());
            }
            self.slots = self.slots.saturating_sub(1);
        }
    }
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab::new()
    }
}

impl<T> Drop for Slab<T> {
    fn drop(&mut self) {
        self.trim();
    }
}

/// A data buffer from a [`BufPool`] (or made on its own): `len` bytes of
/// malloc(9) memory, returned to its pool or freed when dropped.
pub struct KBuf {
    ptr: NonNull<u8>,
    class: u8,
}

// SAFETY: a KBuf owns its memory like a Box<[u8]> does.
unsafe impl Send for KBuf {}
// SAFETY: as above.
unsafe impl Sync for KBuf {}

/// The smallest buffer: one page (a 4 KiB read takes one).
const MIN_SHIFT: u32 = 12;
/// The largest: 1 MiB, the largest chunk the backend moves at once.
const MAX_SHIFT: u32 = 20;
/// How many size classes there are.
const CLASSES: usize = (MAX_SHIFT - MIN_SHIFT + 1) as usize;

/// The largest buffer a [`BufPool`] hands out, in bytes.
pub const BUF_MAX: usize = 1 << MAX_SHIFT;

impl KBuf {
    /// Bytes the buffer holds.
    pub fn len(&self) -> usize {
        1 << (MIN_SHIFT + u32::from(self.class))
    }

    /// A buffer is never empty (its smallest class is a page); for clippy.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The buffer's bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the buffer owns len() initialised bytes (zeroed when
        // allocated), borrowed through self.
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len()) }
    }

    /// The buffer's bytes, to change.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the buffer owns len() initialised bytes, borrowed mutably
        // through self.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len()) }
    }

    /// Where the bytes are, for a CCB or a datamove.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    fn layout(class: u8) -> Layout {
        let size = class_size(u32::from(class));
        // A power of two no larger than 1 MiB: always a valid layout.
        Layout::from_size_align(size, mem::align_of::<usize>()).unwrap_or(Layout::new::<usize>())
    }
}

impl Drop for KBuf {
    fn drop(&mut self) {
        // SAFETY: the buffer's memory came from alloc::malloc and is freed
        // once, here (a pool keeps buffers as FreeSlots, not KBufs).
        unsafe { alloc::free(self.ptr) }
    }
}

/// The size class that holds `len` bytes, if one does.
fn class_of(len: usize) -> Option<u8> {
    let shift = len.max(1).next_power_of_two().trailing_zeros().max(MIN_SHIFT);
    (shift <= MAX_SHIFT).then(|| shift.saturating_sub(MIN_SHIFT) as u8)
}

/// The bytes of a buffer of size class `class`.
fn class_size(class: u32) -> usize {
    1usize
        .checked_shl(MIN_SHIFT.saturating_add(class))
        .unwrap_or(usize::MAX)
}

/// Why a [`BufPool`] handed out no buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolError {
    /// The budget is used up by buffers in use: wait for one to come back.
    Exhausted,
    /// More than [`BUF_MAX`] bytes were asked for.
    TooLarge,
    /// malloc(9) had no memory (`M_NOWAIT`).
    NoMemory,
}

impl From<AllocError> for PoolError {
    fn from(_: AllocError) -> PoolError {
        PoolError::NoMemory
    }
}

/// Data buffers in power-of-two size classes (4 KiB to 1 MiB), kept for
/// reuse, with at most `budget` bytes allocated at once.  When a class has
/// no free buffer and the budget is used up, free buffers of other classes
/// are given back to make room; only when every byte is in use must the
/// caller wait.
pub struct BufPool {
    free: [Option<NonNull<FreeSlot>>; CLASSES],
    /// Bytes allocated (free and in use).
    allocated: usize,
    /// Bytes in the free lists.
    idle: usize,
    budget: usize,
}

// SAFETY: the free buffers are plain memory owned by the pool.
unsafe impl Send for BufPool {}

impl BufPool {
    /// An empty pool that may hold `budget` bytes (at least one largest
    /// buffer).
    pub const fn new(budget: usize) -> BufPool {
        BufPool {
            free: [None; CLASSES],
            allocated: 0,
            idle: 0,
            budget: if budget < BUF_MAX { BUF_MAX } else { budget },
        }
    }

    /// Sets the budget (at least one largest buffer): buffers beyond it
    /// are given back as they return and room is made.
    pub fn set_budget(&mut self, budget: usize) {
        self.budget = budget.max(BUF_MAX);
    }

    /// Bytes allocated, free and in use.
    pub fn allocated(&self) -> usize {
        self.allocated
    }

    /// A buffer of at least `len` bytes.
    pub fn get(&mut self, len: usize) -> Result<KBuf, PoolError> {
        let class = class_of(len).ok_or(PoolError::TooLarge)?;
        let size = 1usize << (MIN_SHIFT + u32::from(class));
        let head = self.free.get_mut(usize::from(class)).ok_or(PoolError::TooLarge)?;
        if let Some(slot) = *head {
            // SAFETY: a free buffer of this class holds a FreeSlot.
            *head = unsafe { slot.as_ref().next };
            self.idle = self.idle.saturating_sub(size);
            return Ok(KBuf {
                ptr: slot.cast(),
                class,
            });
        }
        // Make room from idle buffers of other classes, largest first.
        for (other, head) in self.free.iter_mut().enumerate().rev() {
            let freed = class_size(other as u32);
            while self.allocated.saturating_add(size) > self.budget {
                let Some(slot) = *head else { break };
                // SAFETY: a free buffer of class `other`, unlinked and freed.
                unsafe {
                    *head = slot.as_ref().next;
                    alloc::free(slot.cast());
                }
                self.allocated = self.allocated.saturating_sub(freed);
                self.idle = self.idle.saturating_sub(freed);
            }
        }
        if self.allocated.saturating_add(size) > self.budget {
            return Err(PoolError::Exhausted);
        }
        // Zeroed once, so that every byte of a buffer is initialised.
        let ptr = alloc::malloc(KBuf::layout(class), Wait::NoWait, true)?;
        self.allocated = self.allocated.saturating_add(size);
        Ok(KBuf { ptr, class })
    }

    /// Takes a buffer back for reuse.  `buf` must come from this pool.
    pub fn put(&mut self, buf: KBuf) {
        let Some(head) = self.free.get_mut(usize::from(buf.class)) else {
            // Not a pool buffer (no such class): freed as it drops.
            return;
        };
        let buf = mem::ManuallyDrop::new(buf);
        let slot = buf.ptr.cast::<FreeSlot>();
        // SAFETY: the buffer (at least a page, pointer-aligned) becomes a
        // free slot of its class; the KBuf is not dropped.
        unsafe { slot.as_ptr().write(FreeSlot { next: *head }) };
        *head = Some(slot);
        self.idle = self.idle.saturating_add(buf.len());
    }

    /// Gives every free buffer back to malloc(9).
    pub fn trim(&mut self) {
        for (class, head) in self.free.iter_mut().enumerate() {
            while let Some(slot) = *head {
                // SAFETY: a free buffer, unlinked and freed once.
                unsafe {
                    *head = slot.as_ref().next;
                    alloc::free(slot.cast());
                }
                let size = class_size(class as u32);
                self.allocated = self.allocated.saturating_sub(size);
                self.idle = self.idle.saturating_sub(size);
            }
        }
    }
}

impl Drop for BufPool {
    fn drop(&mut self) {
        self.trim();
    }
}
