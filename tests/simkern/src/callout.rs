//! callout(9) for the simulated kernel: MPSAFE callouts (`callout_init`
//! with `mpsafe` 1), scheduled with `callout_reset_sbt_on` (what
//! `callout_reset` compiles to), stopped or drained with
//! `_callout_stop_safe` (`callout_stop`, `callout_drain`), and run by one
//! softclock thread, one at a time, with no lock held.
//!
//! As in FreeBSD, `callout_pending` reads `CALLOUT_PENDING` in `c_iflags`,
//! a callout re-armed from its own function runs again, and draining
//! waits for a running function to return.  A callout still pending when
//! ctlpass.ko is unloaded would fire into unloaded code: the linker checks
//! [`pending`] and panics.

use std::collections::BTreeMap;
use std::ffi::{c_int, c_void};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::fasthash::FastMap;
use crate::{kpanic, lock, sys};

/// One second as an sbintime_t.
const SBT_1S: i64 = 1 << 32;

#[derive(Default)]
struct Wheel {
    /// Pending callouts by (deadline, sequence): their addresses.
    due: BTreeMap<(Instant, u64), usize>,
    /// The key of each pending callout in `due`.
    keys: FastMap<usize, (Instant, u64)>,
    /// The callout whose function runs now.
    running: Option<usize>,
    seq: u64,
    /// Callout functions run so far.
    fired: u64,
}

static WHEEL: Mutex<Option<Wheel>> = Mutex::new(None);
static CHANGED: Condvar = Condvar::new();
static THREAD: OnceLock<()> = OnceLock::new();

fn wheel() -> MutexGuard<'static, Option<Wheel>> {
    WHEEL.lock().unwrap_or_else(|e| e.into_inner())
}

fn with<R>(f: impl FnOnce(&mut Wheel) -> R) -> R {
    f(wheel().get_or_insert_with(Wheel::default))
}

/// Sets or clears `CALLOUT_PENDING` in the callout's `c_iflags`.
///
/// # Safety
///
/// `c` is a live callout.
unsafe fn set_pending(c: *mut sys::callout, on: bool) {
    let bit = sys::CALLOUT_PENDING as i16;
    // SAFETY: the caller's contract; the wheel's lock serialises writers.
    unsafe {
        if on {
            (*c).c_iflags |= bit;
        } else {
            (*c).c_iflags &= !bit;
        }
    }
}

/// `callout_init`: sets up an MPSAFE callout (the simulated kernel has no
/// Giant).
///
/// # Safety
///
/// `c` points to memory for a callout that is not pending.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn callout_init(c: *mut sys::callout, mpsafe: c_int) {
    if mpsafe == 0 {
        kpanic!("callout_init: only MPSAFE callouts are simulated");
    }
    if with(|w| w.keys.contains_key(&(c as usize)) || w.running == Some(c as usize)) {
        kpanic!("callout_init: callout {c:p} is pending or running");
    }
    // SAFETY: the caller's contract; as kern_timeout.c's callout_init,
    // zeroed, with no lock to take around the function.
    unsafe {
        std::ptr::write_bytes(c, 0, 1);
        (*c).c_iflags = sys::CALLOUT_RETURNUNLOCKED as i16;
    }
}

/// `callout_reset_sbt_on`: (re)schedules `c` to call `func(arg)` `sbt`
/// from now (sbintime_t); returns 1 if it was pending (and is now
/// rescheduled), else 0.
///
/// # Safety
///
/// `c` was set up with `callout_init` and stays valid until it is stopped
/// or has fired.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn callout_reset_sbt_on(
    c: *mut sys::callout,
    sbt: sys::sbintime_t,
    _precision: sys::sbintime_t,
    func: Option<unsafe extern "C" fn(*mut c_void)>,
    arg: *mut c_void,
    _cpu: c_int,
    _flags: c_int,
) -> c_int {
    let Some(func) = func else {
        kpanic!("callout_reset: no function");
    };
    let nanos = (i128::from(sbt.max(0)) * 1_000_000_000 / i128::from(SBT_1S)) as u64;
    let deadline = Instant::now() + Duration::from_nanos(nanos);
    start_thread();
    let was = with(|w| {
        let key = (deadline, w.seq);
        w.seq += 1;
        let old = w.keys.insert(c as usize, key);
        if let Some(old) = old {
            w.due.remove(&old);
        }
        w.due.insert(key, c as usize);
        // SAFETY: the caller's contract; the wheel's lock is held.
        unsafe {
            (*c).c_func = Some(func);
            (*c).c_arg = arg;
            set_pending(c, true);
        }
        old.is_some()
    });
    CHANGED.notify_all();
    c_int::from(was)
}

/// `_callout_stop_safe`: cancels `c` if pending (returns 1, else 0); with
/// `CS_DRAIN` also waits until its function is not running (it sleeps,
/// and must not be called from the callout itself).
///
/// # Safety
///
/// `c` was set up with `callout_init`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _callout_stop_safe(c: *mut sys::callout, flags: c_int) -> c_int {
    let drain = flags & sys::CS_DRAIN as c_int != 0;
    if drain {
        lock::assert_may_sleep("callout_drain");
    }
    let mut g = wheel();
    let w = g.get_or_insert_with(Wheel::default);
    let cancelled = match w.keys.remove(&(c as usize)) {
        Some(key) => {
            w.due.remove(&key);
            // SAFETY: the caller's contract; the wheel's lock is held.
            unsafe { set_pending(c, false) };
            true
        }
        None => false,
    };
    if drain {
        if IN_SOFTCLOCK.with(std::cell::Cell::get) && g.as_ref().and_then(|w| w.running) == Some(c as usize) {
            kpanic!("callout_drain: called from the callout's own function");
        }
        while g.as_ref().and_then(|w| w.running) == Some(c as usize) {
            g = CHANGED.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }
    c_int::from(cancelled)
}

thread_local! {
    static IN_SOFTCLOCK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn start_thread() {
    THREAD.get_or_init(|| {
        std::thread::Builder::new()
            .name("softclock".into())
            .spawn(softclock)
            .unwrap_or_else(|e| kpanic!("cannot start the softclock thread: {e}"));
    });
}

/// The softclock thread: runs each callout when it is due.
fn softclock() {
    IN_SOFTCLOCK.with(|f| f.set(true));
    let mut g = wheel();
    loop {
        let w = g.get_or_insert_with(Wheel::default);
        let now = Instant::now();
        let next = w.due.first_key_value().map(|(&k, &c)| (k, c));
        match next {
            Some((key, c)) if key.0 <= now => {
                w.due.remove(&key);
                w.keys.remove(&c);
                w.running = Some(c);
                let callout = c as *mut sys::callout;
                // SAFETY: a pending callout is valid until it fires; its
                // function and argument were set by callout_reset.
                let (func, arg) = unsafe {
                    set_pending(callout, false);
                    ((*callout).c_func, (*callout).c_arg)
                };
                drop(g);
                if let Some(func) = func {
                    // SAFETY: the function the callout's owner scheduled.
                    unsafe { func(arg) };
                }
                if !lock::holds_none() {
                    kpanic!("a callout function returned holding {:?}", lock::held_names());
                }
                g = wheel();
                if let Some(w) = g.as_mut() {
                    w.running = None;
                    w.fired += 1;
                }
                CHANGED.notify_all();
            }
            Some((key, _)) => {
                let wait = key.0.saturating_duration_since(now);
                g = CHANGED.wait_timeout(g, wait).unwrap_or_else(|e| e.into_inner()).0;
            }
            None => g = CHANGED.wait(g).unwrap_or_else(|e| e.into_inner()),
        }
    }
}

/// How many callouts are pending or running.
pub fn pending() -> usize {
    with(|w| w.keys.len() + usize::from(w.running.is_some()))
}

/// How many callout functions have run since boot.
pub fn fired() -> u64 {
    with(|w| w.fired)
}
