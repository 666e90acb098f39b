//! Memory from malloc(9), charged to the module's malloc type `ctlpass`
//! (`vmstat -m`), with an explicit choice between sleeping for memory and
//! failing at once.  A failed allocation is an `AllocError`, never a panic.

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::{c_int, c_void};
use core::fmt;
use core::marker::PhantomData;
use core::mem::{self, ManuallyDrop};
use core::ops::{Deref, DerefMut};
use core::ptr::{self, NonNull};

use crate::sys;

/// Whether an allocation may sleep until memory is available.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// `M_NOWAIT`: fail at once when memory is short.  Required wherever
    /// sleeping is not allowed: with a mutex held, in CAM completions and
    /// async callbacks, and on the I/O path.
    NoWait,
    /// `M_WAITOK`: sleep until memory is available; only where the caller may
    /// sleep (ioctl and module event handlers), and never fails.
    WaitOk,
}

impl Wait {
    fn flags(self) -> c_int {
        (match self {
            Wait::NoWait => sys::M_NOWAIT,
            Wait::WaitOk => sys::M_WAITOK,
        }) as c_int
    }
}

/// An allocation failed (`M_NOWAIT` found no memory, or the layout cannot be
/// served by malloc(9)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocError;

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("out of memory")
    }
}

/// The alignment plain malloc(9) guarantees on amd64 (its zones align items to
/// a pointer); larger alignments go through malloc_aligned(9).
pub const MALLOC_ALIGN: usize = mem::align_of::<*const u8>();

/// The largest alignment malloc_aligned(9) supports.
pub const MALLOC_ALIGN_MAX: usize = sys::PAGE_SIZE as usize;

fn malloc_type() -> *mut sys::malloc_type {
    (&raw mut sys::M_CTLPASS).cast()
}

/// Allocates memory for `layout` from the module's malloc type, zeroed if
/// `zero`.  A zero-sized layout still gets a distinct allocation.
pub fn malloc(layout: Layout, wait: Wait, zero: bool) -> Result<NonNull<u8>, AllocError> {
    let mut flags = wait.flags();
    if zero {
        flags |= sys::M_ZERO as c_int;
    }
    let size = layout.size();
    let p = if layout.align() <= MALLOC_ALIGN {
        // SAFETY: malloc(9) with a valid malloc type and exactly one of
        // M_NOWAIT/M_WAITOK; it returns NULL or `size` bytes.
        unsafe { sys::malloc(size, malloc_type(), flags) }
    } else if layout.align() <= MALLOC_ALIGN_MAX {
        // SAFETY: as above; the alignment is a power of two (Layout
        // guarantees it) no larger than PAGE_SIZE, as malloc_aligned(9)
        // requires.
        unsafe { sys::malloc_aligned(size, layout.align(), malloc_type(), flags) }
    } else {
        ptr::null_mut()
    };
    NonNull::new(p.cast()).ok_or(AllocError)
}

/// Returns memory from [`malloc`] to the kernel.
///
/// # Safety
///
/// `p` came from [`malloc`] and is not used afterwards.
pub unsafe fn free(p: NonNull<u8>) {
    // SAFETY: the caller passes memory malloc(9) returned for this malloc type.
    unsafe { sys::free(p.as_ptr().cast::<c_void>(), malloc_type()) }
}

/// A value in memory from malloc(9), freed when the box is dropped.
pub struct KBox<T> {
    ptr: NonNull<T>,
    owns: PhantomData<T>,
}

// SAFETY: a KBox owns its value like a Box does.
unsafe impl<T: Send> Send for KBox<T> {}
// SAFETY: shared references to a KBox only hand out `&T`.
unsafe impl<T: Sync> Sync for KBox<T> {}

impl<T> KBox<T> {
    /// Moves `value` into a new allocation.
    pub fn new(value: T, wait: Wait) -> Result<KBox<T>, AllocError> {
        let ptr = malloc(Layout::new::<T>(), wait, false)?.cast::<T>();
        // SAFETY: `ptr` is fresh, aligned and large enough for a T.
        unsafe { ptr.as_ptr().write(value) };
        Ok(KBox { ptr, owns: PhantomData })
    }

    /// Allocates room for a `T` without a value yet: for values that must
    /// not be lost when memory is short (they stay with the caller until
    /// [`KBox::write`]).
    pub fn new_uninit(wait: Wait) -> Result<KBox<mem::MaybeUninit<T>>, AllocError> {
        let ptr = malloc(Layout::new::<T>(), wait, false)?.cast::<mem::MaybeUninit<T>>();
        Ok(KBox { ptr, owns: PhantomData })
    }

    /// Moves the value out and frees the allocation.
    pub fn into_inner(this: KBox<T>) -> T {
        let ptr = KBox::into_raw(this);
        // SAFETY: the box owned a valid T, read once here; the memory came
        // from `malloc` and nothing refers to it any more.
        unsafe {
            let value = ptr.read();
            free(NonNull::new_unchecked(ptr).cast());
            value
        }
    }

    /// Gives up ownership; the value lives until [`KBox::from_raw`] takes it
    /// back.
    pub fn into_raw(this: KBox<T>) -> *mut T {
        ManuallyDrop::new(this).ptr.as_ptr()
    }

    /// Gives up ownership for good, or until [`KBox::from_raw`].
    pub fn leak<'a>(this: KBox<T>) -> &'a mut T {
        // SAFETY: the value is valid and never freed unless from_raw takes it
        // back.
        unsafe { &mut *KBox::into_raw(this) }
    }

    /// Takes back ownership of a value given up with [`KBox::into_raw`].
    ///
    /// # Safety
    ///
    /// `ptr` came from `KBox::<T>::into_raw` and was not taken back before.
    pub unsafe fn from_raw(ptr: *mut T) -> KBox<T> {
        // SAFETY: the caller passes a pointer from into_raw, which is non-null.
        let ptr = unsafe { NonNull::new_unchecked(ptr) };
        KBox { ptr, owns: PhantomData }
    }
}

impl<T> KBox<mem::MaybeUninit<T>> {
    /// Moves `value` into room from [`KBox::new_uninit`].
    pub fn write(this: KBox<mem::MaybeUninit<T>>, value: T) -> KBox<T> {
        let ptr = KBox::into_raw(this).cast::<T>();
        // SAFETY: the room is aligned and large enough for a T (a
        // MaybeUninit<T> has T's layout) and owned by the box given up above.
        unsafe {
            ptr.write(value);
            KBox::from_raw(ptr)
        }
    }
}

impl<T> Deref for KBox<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the box owns a valid T.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> DerefMut for KBox<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the box owns a valid T, and `&mut self` is unique.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T> Drop for KBox<T> {
    fn drop(&mut self) {
        // SAFETY: the box owns a valid T, dropped exactly once here, in memory
        // from `malloc` that nothing else refers to.
        unsafe {
            ptr::drop_in_place(self.ptr.as_ptr());
            free(self.ptr.cast());
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for KBox<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// The global allocator of the kernel object, for the `alloc` crate.  It
/// never sleeps (`M_NOWAIT`), so it is safe in any context; code that must
/// handle exhaustion uses the fallible `alloc` APIs (`try_reserve`) or
/// [`KBox`].
pub struct KernelAllocator;

// SAFETY: `malloc` returns memory of at least the layout's size and alignment
// or null, and `free` returns it; malloc(9) is thread-safe.
unsafe impl GlobalAlloc for KernelAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        malloc(layout, Wait::NoWait, false).map_or(ptr::null_mut(), NonNull::as_ptr)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        malloc(layout, Wait::NoWait, true).map_or(ptr::null_mut(), NonNull::as_ptr)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        if let Some(p) = NonNull::new(ptr) {
            // SAFETY: GlobalAlloc's contract: `ptr` came from `alloc` above.
            unsafe { free(p) }
        }
    }
}

#[cfg(target_os = "none")]
#[global_allocator]
static GLOBAL: KernelAllocator = KernelAllocator;
