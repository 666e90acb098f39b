//! The simulated kernel itself: it must behave as FreeBSD does where
//! ctlpass depends on it, including refusing (or panicking on) what
//! FreeBSD refuses, so that a module bug shows up as it would on a real
//! kernel.

use std::ffi::{c_int, c_void};
use std::sync::Mutex;

use ctlpass::kern::alloc::{KBox, Wait};
use simkern::cam::{self, PeriphHold};
use simkern::{Config, Machine, child, ctl, malloc, sys};

/// Runs `f` in a child process and returns its standard error, asserting
/// that the simulated kernel panicked.
fn panics(name: &str) -> String {
    let out = child::run(name);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{name} did not stop the kernel: {stderr}");
    assert!(stderr.contains("panic: "), "{stderr}");
    stderr
}

static EVENTS: Mutex<Vec<(u32, u32, u32, u64)>> = Mutex::new(Vec::new());

unsafe extern "C" fn record(_arg: *mut c_void, code: u32, path: *mut sys::cam_path, _data: *mut c_void) {
    let id = (
        code,
        simkern::cam::xpt_path_path_id(path),
        simkern::cam::xpt_path_target_id(path),
        simkern::cam::xpt_path_lun_id(path),
    );
    EVENTS.lock().unwrap().push(id);
}

fn events() -> Vec<(u32, u32, u32, u64)> {
    std::mem::take(&mut *EVENTS.lock().unwrap())
}

#[test]
fn async_registration_replays_arrivals_and_stops_when_removed() {
    let m = Machine::boot(Config::standard());
    events();
    // SAFETY: a callback with the ac_callback_t signature.
    let status = unsafe {
        cam::xpt_register_async(
            sys::AC_FOUND_DEVICE as c_int,
            Some(record),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    assert_eq!(status, sys::CAM_REQ_CMP);
    let f = sys::AC_FOUND_DEVICE;
    assert_eq!(
        events(),
        [(f, 0, 0, 0), (f, 0, 1, 0), (f, 1, 0, 0), (f, 2, 0, 0)],
        "every existing device, replayed"
    );
    m.unplug(0, 1, 0);
    assert_eq!(events(), [], "a wildcard AC_FOUND_DEVICE registration hears of no loss");
    let spec = simkern::cam::DeviceSpec {
        target: 1,
        lun: 0,
        device: Config::standard().buses[0].devices[1].device.clone(),
    };
    m.plug(0, spec.clone());
    assert_eq!(events(), [(f, 0, 1, 0)]);
    // SAFETY: removing the registration made above.
    unsafe { cam::xpt_register_async(0, Some(record), std::ptr::null_mut(), std::ptr::null_mut()) };
    m.unplug(0, 1, 0);
    m.plug(0, spec);
    assert_eq!(events(), [], "deregistered");
}

#[test]
fn invalid_periphs_and_null_cannot_be_acquired() {
    let m = Machine::boot(Config::standard());
    // SAFETY: NULL is an allowed argument.
    assert_eq!(
        unsafe { cam::cam_periph_acquire(std::ptr::null_mut()) },
        sys::EINVAL as c_int
    );
    let hold = PeriphHold::acquire("pass", 0).unwrap();
    m.unplug(0, 0, 0);
    // SAFETY: the periph is alive (we hold a reference) but invalid.
    assert_eq!(unsafe { cam::cam_periph_acquire(hold.as_ptr()) }, sys::ENOENT as c_int);
    assert_eq!(cam::periphs("pass")[0], (0, 0, 0, 0, 1, false));
    drop(hold);
    assert_eq!(cam::periphs("pass")[0].0, 1, "pass0 freed with its last reference");
}

#[test]
fn a_driver_without_deinit_cannot_be_unregistered() {
    let m = Machine::boot(Config::standard());
    let mut drv = sys::periph_driver {
        init: None,
        driver_name: c"nodeinit".as_ptr().cast_mut(),
        units: sys::periph_driver__bindgen_ty_1 {
            tqh_first: std::ptr::null_mut(),
            tqh_last: std::ptr::null_mut(),
        },
        generation: 0,
        flags: 0,
        deinit: None,
    };
    drv.units.tqh_last = &raw mut drv.units.tqh_first;
    // SAFETY: a valid driver that outlives its registration.
    unsafe { cam::periphdriver_register((&raw mut drv).cast()) };
    assert!(cam::driver_registered("nodeinit"));
    // SAFETY: as above.
    assert_eq!(
        unsafe { cam::periphdriver_unregister((&raw mut drv).cast()) },
        sys::EOPNOTSUPP as c_int
    );
    assert!(
        m.dmesg()
            .contains("CAM periph driver 'nodeinit' doesn't have deinit.\n")
    );
    assert!(cam::driver_registered("nodeinit"), "still registered");
}

static ALLOC_STATUS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

unsafe extern "C" fn allocate_again(_arg: *mut c_void, code: u32, path: *mut sys::cam_path, cgd: *mut c_void) {
    if code != sys::AC_FOUND_DEVICE {
        return;
    }
    for name in [c"pass", c"nosuchdriver"] {
        // SAFETY: called from an AC_FOUND_DEVICE callback, with the path lock
        // held, as cam_periph_alloc requires.
        let status = unsafe {
            cam::cam_periph_alloc(
                None,
                None,
                None,
                None,
                name.as_ptr().cast_mut(),
                sys::CAM_PERIPH_BIO,
                path,
                None,
                0,
                cgd,
            )
        };
        ALLOC_STATUS.lock().unwrap().push(status);
    }
}

#[test]
fn a_second_periph_of_a_driver_on_a_device_is_refused() {
    let m = Machine::boot(Config::standard());
    // SAFETY: a callback with the ac_callback_t signature.
    unsafe {
        cam::xpt_register_async(
            sys::AC_FOUND_DEVICE as c_int,
            Some(allocate_again),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    let statuses = std::mem::take(&mut *ALLOC_STATUS.lock().unwrap());
    assert_eq!(statuses, [sys::CAM_REQ_INVALID; 8]);
    let dmesg = m.dmesg();
    assert!(
        dmesg.contains("cam_periph_alloc: attempt to re-allocate valid device pass0 rejected flags 0x0 refcount 1\n")
    );
    assert!(dmesg.contains("cam_periph_alloc: invalid periph name 'nosuchdriver'\n"));
    // SAFETY: removing the registration made above.
    unsafe { cam::xpt_register_async(0, Some(allocate_again), std::ptr::null_mut(), std::ptr::null_mut()) };
}

#[test]
fn releasing_a_periph_with_its_lock_held_stops_the_kernel() {
    const NAME: &str = "releasing_a_periph_with_its_lock_held_stops_the_kernel";
    if child::is_child(NAME) {
        let _m = Machine::boot(Config::standard());
        let hold = PeriphHold::acquire("pass", 0).unwrap();
        // SAFETY: a live periph's path and lock.
        unsafe {
            ctlpass::sys::ctlpass_periph_lock(hold.as_ptr().cast());
            cam::cam_periph_release(hold.as_ptr());
        }
        unreachable!();
    }
    assert!(panics(NAME).contains("panic: cam_periph_release: periph lock held"));
}

#[test]
fn invalidating_a_periph_without_its_lock_stops_the_kernel() {
    const NAME: &str = "invalidating_a_periph_without_its_lock_stops_the_kernel";
    if child::is_child(NAME) {
        let _m = Machine::boot(Config::standard());
        let hold = PeriphHold::acquire("pass", 0).unwrap();
        // SAFETY: a live periph, deliberately without its lock.
        unsafe { cam::cam_periph_invalidate(hold.as_ptr()) };
        unreachable!();
    }
    assert!(panics(NAME).contains("panic: cam_periph_invalidate: periph lock not held"));
}

#[test]
fn a_duplicate_backend_name_is_refused() {
    let _m = Machine::boot(Config::standard());
    let mut be: sys::ctl_backend_driver = unsafe { std::mem::zeroed() };
    for (d, s) in be.name.iter_mut().zip(b"block") {
        *d = *s as std::ffi::c_char;
    }
    // SAFETY: a valid driver that outlives any registration.
    assert_eq!(unsafe { ctl::ctl_backend_register(&raw mut be) }, -1);
    assert_eq!(ctl::backends(), ["block", "ramdisk"]);
}

#[test]
fn deregistering_a_backend_that_was_never_registered_faults() {
    const NAME: &str = "deregistering_a_backend_that_was_never_registered_faults";
    if child::is_child(NAME) {
        let _m = Machine::boot(Config::standard());
        let mut be: sys::ctl_backend_driver = unsafe { std::mem::zeroed() };
        be.name[0] = b'x' as std::ffi::c_char;
        // SAFETY: a valid driver (without shutdown), never registered.
        unsafe { ctl::ctl_backend_deregister(&raw mut be) };
        unreachable!();
    }
    assert!(panics(NAME).contains("STAILQ_REMOVE of backend x, which is not registered"));
}

#[test]
fn malloc_refuses_bad_flags() {
    const NAME: &str = "malloc_refuses_bad_flags";
    if child::is_child(NAME) {
        let m = Machine::boot(Config::standard());
        m.kldload().unwrap();
        // SAFETY: the module's malloc type, with neither M_NOWAIT nor M_WAITOK.
        unsafe { malloc::simkern_malloc(8, (&raw mut ctlpass::sys::M_CTLPASS).cast(), sys::M_ZERO as c_int) };
        unreachable!();
    }
    assert!(panics(NAME).contains("panic: malloc: bad malloc flags: 0x100 (type ctlpass)"));
}

#[test]
fn freeing_what_was_not_allocated_stops_the_kernel() {
    const NAME: &str = "freeing_what_was_not_allocated_stops_the_kernel";
    if child::is_child(NAME) {
        let m = Machine::boot(Config::standard());
        m.kldload().unwrap();
        let mut x = 0u64;
        // SAFETY: deliberately wrong: `x` is not from malloc(9).
        unsafe { malloc::simkern_free((&raw mut x).cast(), (&raw mut ctlpass::sys::M_CTLPASS).cast()) };
        unreachable!();
    }
    assert!(panics(NAME).contains("has not been allocated"));
}

#[test]
fn memory_left_at_unload_is_reported_as_freebsd_does() {
    let m = Machine::boot(Config::standard());
    m.kldload().unwrap();
    std::mem::forget(KBox::new(0u32, Wait::NoWait).unwrap());
    m.kldunload().unwrap();
    assert_eq!(
        malloc::leaks(),
        ["Warning: memory type ctlpass leaked memory on destroy (1 allocations, 4 bytes leaked).\n"]
    );
    assert!(
        m.dmesg()
            .contains("Warning: memory type ctlpass leaked memory on destroy")
    );
}
