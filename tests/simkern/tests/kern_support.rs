//! The crate's kernel support (`ctlpass::kern`) running in the simulated
//! kernel: allocation flags and failures, alignment, the panic path,
//! mutexes and kernel messages.

use std::alloc::{GlobalAlloc, Layout};

use ctlpass::kern::alloc::{AllocError, KBox, KernelAllocator, Wait};
use ctlpass::kern::panic::PANIC_MESSAGE_MAX;
use ctlpass::kern::queue::{Link, Linked, Stailq};
use ctlpass::kern::sync::Mutex;
use simkern::malloc::{self, Request};
use simkern::{Config, Machine, child, sys};

/// The module must be loaded for its malloc type to exist.
fn loaded() -> Machine {
    let m = Machine::boot(Config::standard());
    m.kldload().unwrap();
    m
}

fn last_request() -> Request {
    malloc::requests().pop().expect("a malloc(9) call")
}

#[test]
fn kbox_asks_malloc_for_exactly_the_wait_policy_given() {
    let _m = loaded();
    let b = KBox::new([7u64; 4], Wait::NoWait).unwrap();
    assert_eq!(
        last_request(),
        Request {
            type_name: "ctlpass".into(),
            size: 32,
            align: 1,
            flags: sys::M_NOWAIT as i32,
            ok: true
        }
    );
    assert_eq!(*b, [7; 4]);
    let before = malloc::stats("ctlpass").unwrap().in_use;
    drop(b);
    assert_eq!(
        malloc::stats("ctlpass").unwrap().in_use,
        before - 1,
        "dropping a KBox frees it"
    );
    let b = KBox::new(1u8, Wait::WaitOk).unwrap();
    assert_eq!(last_request().flags, sys::M_WAITOK as i32);
    drop(b);
}

#[test]
fn a_failed_nowait_allocation_is_an_error_not_a_panic() {
    let _m = loaded();
    malloc::fail_nowait("ctlpass", 2);
    assert_eq!(KBox::new(5u32, Wait::NoWait).err(), Some(AllocError));
    // SAFETY: GlobalAlloc with a valid layout; a null result is allowed.
    let p = unsafe { KernelAllocator.alloc(Layout::new::<u64>()) };
    assert!(
        p.is_null(),
        "the global allocator reports failure as null, for the alloc crate to handle"
    );
    assert_eq!(malloc::stats("ctlpass").unwrap().failures, 2);
    assert!(KBox::new(5u32, Wait::NoWait).is_ok(), "only the injected failures fail");
}

#[test]
fn the_global_allocator_never_sleeps_and_honours_alignment() {
    let _m = loaded();
    for (size, align, expect_align) in [(24, 8, 1), (64, 64, 64), (100, 4096, 4096)] {
        let layout = Layout::from_size_align(size, align).unwrap();
        // SAFETY: a valid, non-zero layout.
        let p = unsafe { KernelAllocator.alloc(layout) };
        assert!(!p.is_null());
        assert_eq!(p as usize % align, 0, "{size} bytes aligned to {align}");
        let r = last_request();
        assert_eq!((r.size, r.align, r.flags), (size, expect_align, sys::M_NOWAIT as i32));
        // SAFETY: allocated just above with this layout.
        unsafe { KernelAllocator.dealloc(p, layout) };
    }
    // More than a page of alignment is beyond malloc_aligned(9): refused,
    // without asking the kernel.
    let calls = malloc::request_count();
    // SAFETY: a valid layout.
    let p = unsafe { KernelAllocator.alloc(Layout::from_size_align(16, 8192).unwrap()) };
    assert!(p.is_null());
    assert_eq!(malloc::request_count(), calls);
}

#[test]
fn zeroed_allocations_ask_for_m_zero() {
    let _m = loaded();
    let layout = Layout::from_size_align(256, 16).unwrap();
    // SAFETY: a valid, non-zero layout.
    let p = unsafe { KernelAllocator.alloc_zeroed(layout) };
    assert_eq!(last_request().flags, (sys::M_NOWAIT | sys::M_ZERO) as i32);
    // SAFETY: 256 bytes were allocated.
    assert!(unsafe { std::slice::from_raw_parts(p, 256) }.iter().all(|&b| b == 0));
    // SAFETY: allocated just above with this layout.
    unsafe { KernelAllocator.dealloc(p, layout) };
}

#[test]
fn sleeping_allocations_with_a_mutex_held_stop_the_kernel() {
    const NAME: &str = "sleeping_allocations_with_a_mutex_held_stop_the_kernel";
    if child::is_child(NAME) {
        let _m = loaded();
        let mtx = Box::pin(Mutex::new(0u32));
        // SAFETY: initialised once, never moved (pinned).
        unsafe { mtx.as_ref().init(c"test mutex") };
        let _g = mtx.lock();
        let _ = KBox::new(0u8, Wait::WaitOk);
        unreachable!("the simulated kernel panics first");
    }
    let out = child::run(NAME);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(
            "panic: malloc(M_WAITOK) of \"ctlpass\": sleeping with the following non-sleepable locks held: test mutex"
        ),
        "{stderr}"
    );
}

#[test]
fn a_rust_panic_becomes_a_kernel_panic_with_message_and_location() {
    const NAME: &str = "a_rust_panic_becomes_a_kernel_panic_with_message_and_location";
    if child::is_child(NAME) {
        let _m = loaded();
        // The kernel object's #[panic_handler] calls kernel_panic; a hosted
        // program has std's handler, so the hook takes the same path.
        std::panic::set_hook(Box::new(|info| {
            let msg = info.payload_as_str().unwrap_or("?");
            ctlpass::kern::panic::kernel_panic(&msg, info.location())
        }));
        let line = line!() + 1;
        panic!("periph {} lost its softc (line {line})", 3);
    }
    let out = child::run(NAME);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let expected = regex_like_line(&stderr);
    assert!(expected, "{stderr}");
}

/// Finds `panic: ctlpass: periph 3 lost its softc (line N) at
/// tests/simkern/tests/kern_support.rs:N:9` with the same N twice.
fn regex_like_line(stderr: &str) -> bool {
    stderr.lines().any(|l| {
        let Some(rest) = l.strip_prefix("panic: ctlpass: periph 3 lost its softc (line ") else {
            return false;
        };
        let Some((n, rest)) = rest.split_once(") at tests/simkern/tests/kern_support.rs:") else {
            return false;
        };
        rest == format!("{n}:9")
    })
}

#[test]
fn long_panic_messages_are_cut_to_the_buffer() {
    let msg = "x".repeat(1000);
    let buf = ctlpass::kern::panic::panic_message(&msg, None);
    assert!(buf.truncated());
    assert_eq!(buf.as_bytes().len(), PANIC_MESSAGE_MAX - 1);
    assert!(buf.as_bytes().starts_with(b"ctlpass: xxx"));
    assert!(buf.as_bytes().ends_with(b"x..."));
}

#[test]
fn mutex_guards_hold_the_kernel_mutex_exactly_while_alive() {
    let _m = loaded();
    let mtx = Box::pin(Mutex::new(Vec::<u32>::new()));
    // SAFETY: initialised once, never moved (pinned).
    unsafe { mtx.as_ref().init(c"ctlpass test") };
    {
        let mut g = mtx.lock();
        g.push(1);
        assert_eq!(simkern::lock::held_names(), ["ctlpass test"]);
    }
    assert!(simkern::lock::held_names().is_empty(), "dropping the guard unlocks");
    let shared = std::sync::Arc::new(mtx);
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let shared = shared.clone();
            std::thread::spawn(move || {
                for i in 0..250 {
                    shared.lock().push(t * 1000 + i);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(shared.lock().len(), 1001);
    // SAFETY: no guard is alive and the mutex is not used again.
    unsafe { shared.as_ref().as_ref().destroy() };
}

#[test]
fn locking_a_mutex_twice_stops_the_kernel() {
    const NAME: &str = "locking_a_mutex_twice_stops_the_kernel";
    if child::is_child(NAME) {
        let _m = loaded();
        let mtx = Box::pin(Mutex::new(()));
        // SAFETY: initialised once, never moved (pinned).
        unsafe { mtx.as_ref().init(c"twice") };
        let _a = mtx.lock();
        let _b = mtx.lock();
        unreachable!("the simulated kernel panics first");
    }
    let out = child::run(NAME);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("panic: _mtx_lock_sleep: recursed on non-recursive mutex twice @ "),
        "{stderr}"
    );
    assert!(
        stderr.contains("kmod/ctlpass.c:"),
        "the lock is taken by the shim's mtx_lock: {stderr}"
    );
}

#[test]
fn printf_reaches_the_message_buffer_and_cuts_long_messages() {
    let m = loaded();
    ctlpass::printf!("ctlpass0: {} is {}\n", "da0", 42);
    assert!(m.dmesg().contains("ctlpass0: da0 is 42\n"));
    ctlpass::printf!("{}", "y".repeat(400));
    let line = m.dmesg().lines().last().unwrap().to_owned();
    assert_eq!(line.len(), ctlpass::kern::log::MESSAGE_MAX - 1);
    assert!(line.ends_with("y..."));
}

/// An element for the queue tests.
struct Elem {
    value: u32,
    link: Link<Elem>,
}

// SAFETY: `link` returns the `link` field.
unsafe impl Linked for Elem {
    fn link(&self) -> &Link<Elem> {
        &self.link
    }
}

fn elem(value: u32) -> KBox<Elem> {
    KBox::new(
        Elem {
            value,
            link: Link::new(),
        },
        Wait::NoWait,
    )
    .unwrap()
}

#[test]
fn stailq_is_fifo_appends_in_order_and_frees_what_it_holds() {
    let _m = loaded();
    let before = malloc::stats("ctlpass").unwrap().in_use;
    let mut q = Stailq::new();
    assert!(q.is_empty());
    for v in 1..=3 {
        q.push_back(elem(v));
    }
    assert_eq!(q.len(), 3);
    assert_eq!(q.pop_front().map(|e| e.value), Some(1));
    let mut other = Stailq::new();
    q.append(&mut other);
    other.push_back(elem(4));
    other.push_back(elem(5));
    q.append(&mut other);
    assert_eq!((other.is_empty(), other.len()), (true, 0));
    q.push_back(elem(6));
    let taken = q.take();
    assert!(q.is_empty());
    assert_eq!(taken.len(), 5);
    assert_eq!(taken.into_iter().map(|e| e.value).collect::<Vec<_>>(), [2, 3, 4, 5, 6]);
    let mut q = Stailq::new();
    for v in [1, 2, 3, 4] {
        q.push_back(elem(v));
    }
    if let Some(e) = q.find_mut(|e| e.value == 3) {
        e.value = 30;
    }
    assert_eq!(q.remove_first(|e| e.value == 4).map(|e| e.value), Some(4), "the tail");
    assert_eq!(q.remove_first(|e| e.value == 1).map(|e| e.value), Some(1), "the head");
    assert!(q.remove_first(|e| e.value == 9).is_none());
    q.push_back(elem(5));
    assert_eq!(q.len(), 3);
    assert_eq!(
        q.into_iter().map(|e| e.value).collect::<Vec<_>>(),
        [2, 30, 5],
        "links and tail stay right"
    );
    let mut dropped = Stailq::new();
    dropped.push_back(elem(7));
    dropped.push_back(elem(8));
    drop(dropped);
    assert_eq!(
        malloc::stats("ctlpass").unwrap().in_use,
        before,
        "a dropped queue frees its elements"
    );
}
