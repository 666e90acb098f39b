//! mutex(9) for the simulated kernel: the functions a module's `mtx_lock`
//! and friends compile to (with `LOCK_DEBUG`, as for every module), with the
//! checks FreeBSD makes under INVARIANTS and WITNESS: recursion on a
//! non-recursive mutex, unlocking a mutex one does not own, using a
//! destroyed mutex, and sleeping with a mutex held.  A wait of more than
//! `DEADLOCK_SECONDS` panics instead of hanging the test.

use std::cell::RefCell;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::kpanic;
use crate::sys;

const MTX_UNOWNED: usize = 0x4;
const MTX_DESTROYED: usize = 0x6;
const DEADLOCK_SECONDS: u64 = 30;

thread_local! {
    /// The mutexes this thread holds, innermost last.
    static HELD: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
    static THREAD_TOKEN: u64 = const { 0 };
}

/// A value identifying the current thread, usable as a lock owner (aligned,
/// never one of the MTX_* flag values).
fn curthread() -> usize {
    THREAD_TOKEN.with(|t| std::ptr::from_ref(t) as usize)
}

fn word<'a>(c: *mut usize) -> &'a AtomicUsize {
    // SAFETY: `c` is the mtx_lock word of a struct mtx (callers pass
    // &m->mtx_lock); AtomicUsize has usize's layout.
    unsafe { AtomicUsize::from_ptr(c) }
}

fn mtx_of(c: *mut usize) -> *mut sys::mtx {
    c.cast::<u8>()
        .wrapping_sub(std::mem::offset_of!(sys::mtx, mtx_lock))
        .cast()
}

fn name_of(c: *mut usize) -> String {
    // SAFETY: the mtx containing `c` was initialised with a name.
    let name = unsafe { (*mtx_of(c)).lock_object.lo_name };
    if name.is_null() {
        return "(uninitialised)".into();
    }
    // SAFETY: lo_name is the static name given to mtx_init.
    unsafe { CStr::from_ptr(name) }.to_string_lossy().into_owned()
}

fn location(file: *const c_char, line: c_int) -> String {
    if file.is_null() {
        return "?".into();
    }
    // SAFETY: __FILE__ strings are NUL-terminated.
    format!("{}:{line}", unsafe { CStr::from_ptr(file) }.to_string_lossy())
}

/// `mtx_init(9)`.
///
/// # Safety
///
/// `c` is the `mtx_lock` word of a writable `struct mtx`; `name` is a
/// NUL-terminated string that outlives the mutex.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _mtx_init(c: *mut usize, name: *const c_char, _type: *const c_char, opts: c_int) {
    let m = mtx_of(c);
    // SAFETY: the caller passes a struct mtx it owns.
    unsafe {
        (*m).lock_object.lo_name = name;
        (*m).lock_object.lo_flags = sys::LO_INITIALIZED
            | if opts as u32 & sys::MTX_RECURSE != 0 {
                sys::LO_RECURSABLE
            } else {
                0
            };
        (*m).lock_object.lo_data = 0;
    }
    word(c).store(MTX_UNOWNED, Ordering::Release);
}

/// `mtx_destroy(9)`: the mutex must be unowned, or owned (not recursed) by
/// the caller.
///
/// # Safety
///
/// `c` belongs to an initialised `struct mtx`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _mtx_destroy(c: *mut usize) {
    let owner = word(c).load(Ordering::Acquire);
    if owner == curthread() {
        forget_held(c);
    } else if owner != MTX_UNOWNED {
        kpanic!("mtx_destroy of mutex {} held by another thread", name_of(c));
    }
    word(c).store(MTX_DESTROYED, Ordering::Release);
}

/// `mtx_lock(9)`.
///
/// # Safety
///
/// `c` belongs to an initialised `struct mtx`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __mtx_lock_flags(c: *mut usize, _opts: c_int, file: *const c_char, line: c_int) {
    let me = curthread();
    let w = word(c);
    let current = w.load(Ordering::Acquire);
    if current == MTX_DESTROYED || current == 0 {
        kpanic!(
            "mtx_lock() of destroyed or uninitialised mutex {} @ {}",
            name_of(c),
            location(file, line)
        );
    }
    if current == me {
        // SAFETY: initialised struct mtx (checked above).
        let lo = unsafe { &mut (*mtx_of(c)).lock_object };
        if lo.lo_flags & sys::LO_RECURSABLE == 0 {
            kpanic!(
                "_mtx_lock_sleep: recursed on non-recursive mutex {} @ {}",
                name_of(c),
                location(file, line)
            );
        }
        lo.lo_data += 1;
        return;
    }
    let mut start = None;
    let mut spins = 0u32;
    while w
        .compare_exchange_weak(MTX_UNOWNED, me, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        let start = *start.get_or_insert_with(Instant::now);
        spins += 1;
        if spins < 64 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
            if spins.is_multiple_of(1024) && start.elapsed() > Duration::from_secs(DEADLOCK_SECONDS) {
                kpanic!(
                    "deadlock: waited {DEADLOCK_SECONDS} s for mutex {} @ {} (this thread holds: {})",
                    name_of(c),
                    location(file, line),
                    held_names().join(", ")
                );
            }
        }
    }
    HELD.with(|h| h.borrow_mut().push(c as usize));
}

/// `mtx_unlock(9)`.
///
/// # Safety
///
/// `c` belongs to an initialised `struct mtx`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __mtx_unlock_flags(c: *mut usize, _opts: c_int, file: *const c_char, line: c_int) {
    let w = word(c);
    if w.load(Ordering::Acquire) != curthread() {
        kpanic!(
            "mtx_unlock() of mutex {} not owned by this thread @ {}",
            name_of(c),
            location(file, line)
        );
    }
    // SAFETY: this thread owns the (initialised) mutex.
    let lo = unsafe { &mut (*mtx_of(c)).lock_object };
    if lo.lo_data > 0 {
        lo.lo_data -= 1;
        return;
    }
    forget_held(c);
    w.store(MTX_UNOWNED, Ordering::Release);
}

fn forget_held(c: *mut usize) {
    HELD.with(|h| {
        let mut h = h.borrow_mut();
        if let Some(i) = h.iter().rposition(|&a| a == c as usize) {
            h.remove(i);
        }
    });
}

/// Names of the mutexes the current thread holds.
pub fn held_names() -> Vec<String> {
    HELD.with(|h| h.borrow().iter().map(|&c| name_of(c as *mut usize)).collect())
}

/// Whether the current thread holds no mutex (and so may sleep).
pub fn holds_none() -> bool {
    HELD.with(|h| h.borrow().is_empty())
}

/// WITNESS's check before sleeping: panics if the current thread holds any
/// mutex.
pub fn assert_may_sleep(what: &str) {
    if !holds_none() {
        kpanic!(
            "{what}: sleeping with the following non-sleepable locks held: {}",
            held_names().join(", ")
        );
    }
}

/// A mutex owned by the simulated kernel itself (device mutexes, the
/// topology lock), using the same implementation as the module's.
pub struct KMutex(Box<sys::mtx>);

// SAFETY: the mutex word is only accessed atomically.
unsafe impl Send for KMutex {}
// SAFETY: as above.
unsafe impl Sync for KMutex {}

impl KMutex {
    /// An initialised mutex named `name`.
    pub fn new(name: &'static CStr) -> KMutex {
        // SAFETY: struct mtx is plain data.
        let mut m: Box<sys::mtx> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: a fresh, boxed (so never moving) struct mtx.
        unsafe { _mtx_init((&raw mut m.mtx_lock).cast(), name.as_ptr(), std::ptr::null(), 0) };
        KMutex(m)
    }

    /// The `struct mtx`, for `xpt_path_mtx` and friends.
    pub fn as_ptr(&self) -> *mut sys::mtx {
        std::ptr::from_ref(&*self.0).cast_mut()
    }

    /// Locks it; the guard unlocks.
    pub fn lock(&self) -> KMutexGuard<'_> {
        self.lock_raw();
        KMutexGuard(self)
    }

    /// Whether the current thread holds it (`mtx_owned`).
    pub fn owned(&self) -> bool {
        let c = self
            .as_ptr()
            .cast::<u8>()
            .wrapping_add(std::mem::offset_of!(sys::mtx, mtx_lock));
        word(c.cast()).load(Ordering::Acquire) == curthread()
    }

    /// Locks it without a guard, for kernel functions that lock and unlock
    /// in separate calls (`xpt_lock_buses`, `xpt_unlock_buses`).
    pub fn lock_raw(&self) {
        // SAFETY: initialised in `new`.
        unsafe { __mtx_lock_flags((&raw mut (*self.as_ptr()).mtx_lock).cast(), 0, c"simkern".as_ptr(), 0) };
    }

    /// Unlocks a mutex locked with [`KMutex::lock_raw`]; panics (the
    /// simulated kernel's) unless the current thread holds it.
    pub fn unlock_raw(&self) {
        // SAFETY: initialised in `new`; ownership is checked by the unlock.
        unsafe { __mtx_unlock_flags((&raw mut (*self.as_ptr()).mtx_lock).cast(), 0, c"simkern".as_ptr(), 0) };
    }
}

/// Holds a [`KMutex`].
pub struct KMutexGuard<'a>(&'a KMutex);

impl Drop for KMutexGuard<'_> {
    fn drop(&mut self) {
        self.0.unlock_raw();
    }
}

/// The simulated kernel's clock: `hz` ticks a second.
#[unsafe(no_mangle)]
pub static mut hz: c_int = 1000;

/// One tick as an sbintime_t (1 << 32 is a second).
#[unsafe(no_mangle)]
pub static mut tick_sbt: sys::sbintime_t = (1 << 32) / 1000;

/// The largest raw transfer the kernel allows (`kern.maxphys`).
#[unsafe(no_mangle)]
pub static mut maxphys: sys::u_long = 1024 * 1024;

/// `pause_sbt(9)` (what `pause(9)` compiles to): sleeps; the caller must
/// hold no mutex.
///
/// # Safety
///
/// `wmesg` is a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pause_sbt(
    wmesg: *const c_char,
    sbt: sys::sbintime_t,
    _pr: sys::sbintime_t,
    _flags: c_int,
) -> c_int {
    // SAFETY: the caller passes a wait message string.
    let wmesg = unsafe { CStr::from_ptr(wmesg) }.to_string_lossy();
    assert_may_sleep(&format!("pause(\"{wmesg}\")"));
    let nanos = (i128::from(sbt.max(0)) * 1_000_000_000) >> 32;
    std::thread::sleep(Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)));
    0
}

/// Wait channels: a generation number per channel, bumped by wakeup(9).
static SLEEPQ: std::sync::Mutex<Option<std::collections::HashMap<usize, u64>>> = std::sync::Mutex::new(None);
static SLEEPQ_CV: std::sync::Condvar = std::sync::Condvar::new();
/// A signal for the next interruptible sleep (PCATCH), as if the user
/// pressed ^C in the process doing the sleeping ioctl.
static SIGNAL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Delivers a signal to the next interruptible sleep (`msleep` with
/// PCATCH), which then returns EINTR.
pub fn post_signal() {
    SIGNAL.store(true, Ordering::SeqCst);
}

/// `_sleep` (what msleep(9) compiles to): releases the interlock `lock` (a
/// mutex the caller holds), sleeps on `chan` until wakeup(9), the timeout
/// (`sbt`, 0 for none) or, with PCATCH, a signal; then takes the interlock
/// again.  Returns 0, EWOULDBLOCK on timeout, or EINTR.
///
/// # Safety
///
/// `lock` is the lock_object of a `struct mtx` the caller holds; `wmesg` is
/// NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _sleep(
    chan: *const c_void,
    lock: *mut sys::lock_object,
    pri: c_int,
    wmesg: *const c_char,
    sbt: sys::sbintime_t,
    _pr: sys::sbintime_t,
    _flags: c_int,
) -> c_int {
    let c: *mut usize = lock
        .cast::<u8>()
        .wrapping_add(std::mem::offset_of!(sys::mtx, mtx_lock))
        .cast();
    if word(c).load(Ordering::Acquire) != curthread() {
        // SAFETY: the caller passes a wait message.
        let wmesg = unsafe { CStr::from_ptr(wmesg) }.to_string_lossy();
        kpanic!("msleep(\"{wmesg}\"): interlock {} not held", name_of(c));
    }
    // The lock_object is the first member of struct mtx.
    assert_may_sleep_holding(lock.cast::<sys::mtx>(), "msleep");
    let deadline = (sbt > 0).then(|| {
        Instant::now()
            + Duration::from_nanos(u64::try_from((i128::from(sbt) * 1_000_000_000) >> 32).unwrap_or(u64::MAX))
    });
    let mut q = SLEEPQ.lock().unwrap_or_else(|e| e.into_inner());
    let key = chan as usize;
    let start = *q.get_or_insert_with(Default::default).entry(key).or_insert(0);
    // SAFETY: the caller holds the interlock.
    unsafe { __mtx_unlock_flags(c, 0, c"msleep".as_ptr(), 0) };
    let result = loop {
        if q.as_ref().and_then(|m| m.get(&key)).is_some_and(|&g| g != start) {
            break 0;
        }
        if pri as u32 & sys::PCATCH != 0 && SIGNAL.swap(false, Ordering::SeqCst) {
            break sys::EINTR as c_int;
        }
        let wait = match deadline {
            Some(d) if Instant::now() >= d => break sys::EWOULDBLOCK as c_int,
            Some(d) => d - Instant::now(),
            None => Duration::from_millis(50),
        };
        q = SLEEPQ_CV
            .wait_timeout(q, wait.min(Duration::from_millis(50)))
            .unwrap_or_else(|e| e.into_inner())
            .0;
    };
    drop(q);
    // SAFETY: re-taking the interlock the caller held.
    unsafe { __mtx_lock_flags(c, 0, c"msleep".as_ptr(), 0) };
    result
}

/// wakeup(9): wakes every thread sleeping on `chan`.
#[unsafe(no_mangle)]
pub extern "C" fn wakeup(chan: *const c_void) {
    let mut q = SLEEPQ.lock().unwrap_or_else(|e| e.into_inner());
    *q.get_or_insert_with(Default::default).entry(chan as usize).or_insert(0) += 1;
    SLEEPQ_CV.notify_all();
}

/// WITNESS's check before a sleep that releases `interlock`: panics if the
/// current thread holds any other mutex.
pub fn assert_may_sleep_holding(interlock: *mut sys::mtx, what: &str) {
    let c = interlock
        .cast::<u8>()
        .wrapping_add(std::mem::offset_of!(sys::mtx, mtx_lock)) as usize;
    let others: Vec<String> = HELD.with(|h| {
        h.borrow()
            .iter()
            .filter(|&&a| a != c)
            .map(|&a| name_of(a as *mut usize))
            .collect()
    });
    if !others.is_empty() {
        kpanic!(
            "{what}: sleeping with non-sleepable locks held besides the interlock: {}",
            others.join(", ")
        );
    }
}
