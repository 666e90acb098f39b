//! Kernel mutexes (mutex(9), `MTX_DEF`) that own the data they protect: the
//! data is reachable only through a guard, and a guard exists only while the
//! mutex is held.

use core::cell::UnsafeCell;
use core::ffi::{CStr, c_int};
use core::marker::PhantomData;
use core::mem;
use core::ops::{Deref, DerefMut};
use core::ptr;

use super::errno::Errno;
use crate::sys;

/// A mutex(9) protecting a `T`.
///
/// A kernel mutex cannot move once initialised, so a `Mutex` lives in a
/// `static` or in memory that never moves (a [`KBox`](super::alloc::KBox)),
/// is initialised once with [`Mutex::init`] before its first use, and is
/// destroyed with [`Mutex::destroy`] after its last.
pub struct Mutex<T> {
    mtx: UnsafeCell<sys::mtx>,
    data: UnsafeCell<T>,
}

// SAFETY: the data is only reached through a guard, which exists only while
// the kernel mutex is held, so at most one thread uses it at a time.
unsafe impl<T: Send> Sync for Mutex<T> {}
// SAFETY: as above; the mutex itself may be used from any thread.
unsafe impl<T: Send> Send for Mutex<T> {}

impl<T> Mutex<T> {
    /// A mutex around `data`, not yet initialised.
    pub const fn new(data: T) -> Self {
        Mutex {
            // SAFETY: struct mtx is plain data; all-zeroes is its state before
            // mtx_init(9), which `init` calls.
            mtx: UnsafeCell::new(unsafe { mem::zeroed() }),
            data: UnsafeCell::new(data),
        }
    }

    /// Initialises the kernel mutex (mtx_init(9), `MTX_DEF`).
    ///
    /// # Safety
    ///
    /// Called once, before any `lock`, and not again unless `destroy` ran in
    /// between; the mutex does not move until `destroy`.
    pub unsafe fn init(&self, name: &'static CStr) {
        // SAFETY: `mtx` stays put and is not yet initialised (caller's
        // contract).
        unsafe { sys::ctlpass_mtx_init(self.mtx.get(), name.as_ptr()) }
    }

    /// Destroys the kernel mutex (mtx_destroy(9)).
    ///
    /// # Safety
    ///
    /// The mutex was initialised, is not held, and is not locked again unless
    /// `init` runs first.
    pub unsafe fn destroy(&self) {
        // SAFETY: the mutex is initialised and unowned (caller's contract).
        unsafe { sys::ctlpass_mtx_destroy(self.mtx.get()) }
    }

    /// Blocks until the mutex is held; the guard releases it.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        // SAFETY: the mutex was initialised (contract of `init`, which every
        // owner runs before sharing the mutex).
        unsafe { sys::ctlpass_mtx_lock(self.mtx.get()) };
        MutexGuard {
            mutex: self,
            not_send: PhantomData,
        }
    }
}

/// Proof that a [`Mutex`] is held; gives access to its data and releases it
/// when dropped.  A mutex(9) is released by the thread that acquired it, so a
/// guard cannot be sent to another thread.
pub struct MutexGuard<'a, T> {
    mutex: &'a Mutex<T>,
    not_send: PhantomData<*mut ()>,
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves the mutex is held by this thread.
        unsafe { &*self.mutex.data.get() }
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves the mutex is held, and `&mut self` is unique.
        unsafe { &mut *self.mutex.data.get() }
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: this thread holds the mutex (the guard's invariant).
        unsafe { sys::ctlpass_mtx_unlock(self.mutex.mtx.get()) }
    }
}

impl<T> MutexGuard<'_, T> {
    /// Sleeps on `chan` (msleep(9)), releasing the mutex meanwhile and
    /// holding it again when woken by [`wakeup`] on the same channel.  An
    /// interruptible sleep also ends when the process gets a signal
    /// (EINTR or ERESTART).  Sleeps: never with another mutex held.
    pub fn sleep<C>(&mut self, chan: &C, wmesg: &'static CStr, interruptible: bool) -> Result<(), Errno> {
        let pri = (sys::PRIBIO | if interruptible { sys::PCATCH } else { 0 }) as c_int;
        // SAFETY: this thread holds the mutex (the guard's invariant), as
        // msleep requires of its interlock; the channel is only an address.
        Errno::result(unsafe {
            sys::ctlpass_msleep(ptr::from_ref(chan).cast(), self.mutex.mtx.get(), pri, wmesg.as_ptr(), 0)
        })
    }
}

/// Wakes every thread sleeping on `chan` (wakeup(9)).
pub fn wakeup<C>(chan: &C) {
    // SAFETY: the channel is only an address.
    unsafe { sys::wakeup(ptr::from_ref(chan).cast()) }
}
