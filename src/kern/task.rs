//! task(9) on the kernel's shared `taskqueue_thread`: work deferred to a
//! thread that may call CTL, from contexts that may not (CAM completions).

use core::cell::UnsafeCell;
use core::ffi::{c_int, c_void};
use core::mem;
use core::ptr;

use crate::sys;

/// A task in a `static`: initialised at module load, enqueued any number
/// of times (enqueueing a pending task does nothing more), drained before
/// the module goes.  Its function runs in the taskqueue's thread, where it
/// may sleep and take any lock.
pub struct Task {
    task: UnsafeCell<sys::task>,
    func: fn(),
}

// SAFETY: the task structure is only touched by taskqueue(9), which
// serialises access, and by `init` before any enqueue; `func` is immutable.
unsafe impl Sync for Task {}

impl Task {
    /// A task that runs `func`, not yet initialised.
    pub const fn new(func: fn()) -> Task {
        Task {
            // SAFETY: struct task is plain data; TASK_INIT fills it.
            task: UnsafeCell::new(unsafe { mem::zeroed() }),
            func,
        }
    }

    /// Sets the task up (TASK_INIT).
    ///
    /// # Safety
    ///
    /// The task is not pending or running (at module load, or after
    /// [`Task::drain`]).
    pub unsafe fn init(&'static self) {
        // SAFETY: the caller's contract; the context is this static task.
        unsafe { sys::ctlpass_task_init(self.task.get(), Some(run), ptr::from_ref(self).cast_mut().cast()) }
    }

    /// Queues the task on `taskqueue_thread`; never sleeps.
    pub fn enqueue(&'static self) {
        // SAFETY: an initialised static task on the kernel's thread queue.
        unsafe { sys::taskqueue_enqueue(sys::taskqueue_thread, self.task.get()) };
    }

    /// Waits until the task is neither pending nor running; sleeps.
    pub fn drain(&'static self) {
        // SAFETY: as above.
        unsafe { sys::taskqueue_drain(sys::taskqueue_thread, self.task.get()) }
    }
}

/// `task_fn_t`: runs the function of the task passed as context.
unsafe extern "C" fn run(context: *mut c_void, _pending: c_int) {
    // SAFETY: `init` made the context a pointer to a static Task.
    let task = unsafe { &*context.cast::<Task>() };
    (task.func)();
}
