//! taskqueue(9) for the simulated kernel: `taskqueue_thread`, the kernel's
//! shared queue, served by one thread; `taskqueue_enqueue` (a pending task
//! is only counted again) and `taskqueue_drain`, which sleeps until the
//! task is neither queued nor running.  The thread waits for work as every
//! simulated kernel thread does ([`crate::idle`]).

use std::collections::VecDeque;
use std::ffi::c_int;
use std::sync::{Condvar, Mutex, OnceLock};

use crate::idle::Doorbell;
use crate::{kpanic, lock, sys};

/// Tasks waiting and the one running, by address.
#[derive(Default)]
struct Queue {
    waiting: VecDeque<usize>,
    running: Option<usize>,
    /// The thread is blocked on [`CHANGED`].
    sleeping: bool,
}

static QUEUE: Mutex<Queue> = Mutex::new(Queue {
    waiting: VecDeque::new(),
    running: None,
    sleeping: false,
});
static CHANGED: Condvar = Condvar::new();
static WORK: Doorbell = Doorbell::new();
static THREAD: OnceLock<()> = OnceLock::new();

/// The address `taskqueue_thread` points to (the queue itself is `QUEUE`).
static THREAD_QUEUE_TAG: u8 = 0;

/// `taskqueue_thread`: the kernel's shared task queue.
#[unsafe(no_mangle)]
pub static mut taskqueue_thread: *mut sys::taskqueue = (&raw const THREAD_QUEUE_TAG).cast_mut().cast();

fn queue() -> std::sync::MutexGuard<'static, Queue> {
    QUEUE.lock().unwrap_or_else(|e| e.into_inner())
}

fn check(tq: *mut sys::taskqueue, what: &str) {
    // SAFETY: reading the address of our own static.
    if tq != unsafe { taskqueue_thread } {
        kpanic!("{what}: only taskqueue_thread is simulated");
    }
}

/// `taskqueue_enqueue`: queues `task`, or counts one more request if it is
/// already queued.  Never sleeps.
///
/// # Safety
///
/// `task` was set up with TASK_INIT and stays valid until drained.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn taskqueue_enqueue(tq: *mut sys::taskqueue, task: *mut sys::task) -> c_int {
    check(tq, "taskqueue_enqueue");
    THREAD.get_or_init(|| {
        std::thread::Builder::new()
            .name("taskq".into())
            .spawn(run)
            .unwrap_or_else(|e| kpanic!("cannot start taskqueue_thread: {e}"));
    });
    let mut q = queue();
    // SAFETY: the caller's contract; ta_pending is protected by the queue lock.
    unsafe {
        if (*task).ta_pending > 0 {
            (*task).ta_pending = (*task).ta_pending.saturating_add(1);
            return 0;
        }
        (*task).ta_pending = 1;
    }
    q.waiting.push_back(task as usize);
    WORK.ring();
    let sleeping = std::mem::take(&mut q.sleeping);
    drop(q);
    if sleeping {
        CHANGED.notify_all();
    }
    0
}

/// `taskqueue_drain`: sleeps until `task` is neither queued nor running.
///
/// # Safety
///
/// `task` was set up with TASK_INIT.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn taskqueue_drain(tq: *mut sys::taskqueue, task: *mut sys::task) {
    check(tq, "taskqueue_drain");
    lock::assert_may_sleep("taskqueue_drain");
    let t = task as usize;
    let mut q = queue();
    while q.waiting.contains(&t) || q.running == Some(t) {
        q = CHANGED.wait(q).unwrap_or_else(|e| e.into_inner());
    }
}

/// Waits until no task is queued or running.
pub fn wait_idle() {
    let mut q = queue();
    while !q.waiting.is_empty() || q.running.is_some() {
        q = CHANGED.wait(q).unwrap_or_else(|e| e.into_inner());
    }
}

/// Waits (up to `limit`) until no callout is pending and no task queued or
/// running: what a pulled or new device set off is done, and a periodic
/// scan holds no reference.  Returns whether the kernel settled.
pub fn settle(limit: std::time::Duration) -> bool {
    let t0 = std::time::Instant::now();
    loop {
        wait_idle();
        if crate::callout::pending() == 0 {
            wait_idle();
            return true;
        }
        if t0.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// The queue's thread: runs each task with the count of requests it
/// collected, no lock held.
fn run() {
    let mut q = queue();
    loop {
        let Some(t) = q.waiting.pop_front() else {
            let seen = WORK.seen();
            drop(q);
            WORK.poll(seen);
            q = queue();
            if q.waiting.is_empty() {
                q.sleeping = true;
                q = CHANGED.wait_while(q, |q| q.sleeping).unwrap_or_else(|e| e.into_inner());
            }
            continue;
        };
        let task = t as *mut sys::task;
        // SAFETY: a queued task is valid until drained, and drain waits for
        // it to finish running.
        let (func, context, pending) = unsafe {
            let pending = (*task).ta_pending;
            (*task).ta_pending = 0;
            ((*task).ta_func, (*task).ta_context, pending)
        };
        q.running = Some(t);
        drop(q);
        if let Some(f) = func {
            // SAFETY: the task's function with its context, as taskqueue(9)
            // calls it.
            unsafe { f(context, c_int::from(pending)) };
        }
        if !lock::holds_none() {
            kpanic!("a task returned with locks held: {:?}", lock::held_names());
        }
        q = queue();
        q.running = None;
        // Only taskqueue_drain waits for a task to finish.
        CHANGED.notify_all();
    }
}

/// Another subsystem's long task occupying `taskqueue_thread` (see
/// [`hold`]): tasks enqueued meanwhile wait, as on a busy FreeBSD kernel.
pub struct Held {
    task: *mut sys::task,
}

static HELD: Mutex<(bool, bool)> = Mutex::new((false, false));
static HELD_CHANGED: Condvar = Condvar::new();

/// The held task: says it runs, then waits to be let go.
unsafe extern "C" fn held_task(_context: *mut std::ffi::c_void, _pending: c_int) {
    let mut h = HELD.lock().unwrap_or_else(|e| e.into_inner());
    h.0 = true;
    HELD_CHANGED.notify_all();
    while !h.1 {
        h = HELD_CHANGED.wait(h).unwrap_or_else(|e| e.into_inner());
    }
    *h = (false, false);
    HELD_CHANGED.notify_all();
}

/// Occupies `taskqueue_thread` until the returned [`Held`] is dropped;
/// returns once the thread is held.  One hold at a time.
pub fn hold() -> Held {
    // SAFETY: struct task is plain data; all-zeroes is an idle task.
    let mut task: Box<sys::task> = Box::new(unsafe { std::mem::zeroed() });
    task.ta_func = Some(held_task);
    let task = Box::into_raw(task);
    // SAFETY: taskqueue_thread, and a task that lives until drained in drop.
    unsafe { taskqueue_enqueue(taskqueue_thread, task) };
    let mut h = HELD.lock().unwrap_or_else(|e| e.into_inner());
    while !h.0 {
        h = HELD_CHANGED.wait(h).unwrap_or_else(|e| e.into_inner());
    }
    Held { task }
}

impl Drop for Held {
    fn drop(&mut self) {
        HELD.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        HELD_CHANGED.notify_all();
        // SAFETY: the task was enqueued by hold; drain waits for it to end.
        unsafe {
            taskqueue_drain(taskqueue_thread, self.task);
            drop(Box::from_raw(self.task));
        }
    }
}
