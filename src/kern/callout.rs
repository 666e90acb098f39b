//! callout(9): a function the kernel calls after a delay, from its
//! softclock thread, with no lock held (`callout_init` MPSAFE).

use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::mem;
use core::ptr;

use crate::sys;

/// A callout in a `static`: initialised at module load, armed any number
/// of times, drained before the module goes.  Its function runs in the
/// softclock thread: it must not sleep.
pub struct Callout {
    callout: UnsafeCell<sys::callout>,
    func: fn(),
}

// SAFETY: the callout structure is only touched by callout(9), which
// serialises access, and by `init` before any arming; `func` is immutable.
unsafe impl Sync for Callout {}

impl Callout {
    /// A callout that runs `func`, not yet initialised.
    pub const fn new(func: fn()) -> Callout {
        Callout {
            // SAFETY: struct callout is plain data; callout_init fills it.
            callout: UnsafeCell::new(unsafe { mem::zeroed() }),
            func,
        }
    }

    /// Sets the callout up (`callout_init`, MPSAFE).
    ///
    /// # Safety
    ///
    /// The callout is neither pending nor running (at module load, or
    /// after [`Callout::drain`]).
    pub unsafe fn init(&'static self) {
        // SAFETY: the caller's contract.
        unsafe { sys::callout_init(self.callout.get(), 1) }
    }

    /// Arms the callout to run after `ticks` clock ticks (rearming it if it
    /// is pending); never sleeps.
    pub fn reset(&'static self, ticks: i32) {
        // SAFETY: an initialised static callout; the argument is the static
        // itself.
        unsafe {
            sys::ctlpass_callout_reset(
                self.callout.get(),
                ticks.max(1),
                Some(run),
                ptr::from_ref(self).cast_mut().cast(),
            )
        };
    }

    /// Stops the callout and waits until its function is not running;
    /// sleeps.
    pub fn drain(&'static self) {
        // SAFETY: an initialised static callout.
        unsafe { sys::ctlpass_callout_drain(self.callout.get()) };
    }
}

/// `callout_func_t`: runs the function of the callout passed as argument.
unsafe extern "C" fn run(arg: *mut c_void) {
    // SAFETY: `reset` made the argument a pointer to a static Callout.
    let callout = unsafe { &*arg.cast::<Callout>() };
    (callout.func)();
}
