//! CAM, as the ctlpass peripheral driver sees it: its periphs, their paths
//! and locks, references that keep a periph alive, async event
//! registration, and the callbacks CAM makes into the driver.

use core::cell::UnsafeCell;
use core::ffi::{CStr, c_void};
use core::fmt;
use core::marker::PhantomData;
use core::mem;
use core::ptr::{self, NonNull};

use static_assertions::const_assert_eq;

use super::alloc::KBox;
use super::errno::Errno;
use crate::periph::{self, Softc};
use crate::sys;

/// Longest unit serial number CAM keeps (`ccb_getdev.serial_num`).
pub const SERIAL_NUM_LEN: usize = 252;
/// Longest SIM driver name (`ccb_pathinq.dev_name`, `DEV_IDLEN`), NUL included.
pub const SIM_NAME_LEN: usize = sys::DEV_IDLEN as usize;

/// The length of an array field, named by a function that borrows it.
const fn array_len<S, T, const N: usize>(_field: fn(&S) -> &[T; N]) -> usize {
    N
}

// The lengths the periph's identity cache uses are CAM's.
const_assert_eq!(SERIAL_NUM_LEN, array_len(|g: &sys::ccb_getdev| &g.serial_num));
const_assert_eq!(SIM_NAME_LEN, array_len(|p: &sys::ccb_pathinq| &p.dev_name));
// `crate::scsi::Inquiry` decodes the fields of struct scsi_inquiry_data.
const_assert_eq!(sys::SID_VENDOR_SIZE, 8);
const_assert_eq!(sys::SID_PRODUCT_SIZE, 16);
const_assert_eq!(sys::SID_REVISION_SIZE, 4);
const_assert_eq!(mem::offset_of!(sys::scsi_inquiry_data, vendor), 8);
const_assert_eq!(mem::offset_of!(sys::scsi_inquiry_data, revision), 32);
static_assertions::const_assert!(mem::size_of::<sys::scsi_inquiry_data>() >= crate::scsi::Inquiry::MIN_LEN);

/// A CAM status code (`cam_status`, the low bits of `ccb_h.status`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CamStatus(pub sys::cam_status);

impl CamStatus {
    /// `CAM_REQ_CMP`: done.
    pub const REQ_CMP: CamStatus = CamStatus(sys::CAM_REQ_CMP);
    /// `CAM_REQ_CMP_ERR`: failed.
    pub const REQ_CMP_ERR: CamStatus = CamStatus(sys::CAM_REQ_CMP_ERR);
    /// `CAM_REQ_INPROG`: in progress (for a periph: attachment deferred).
    pub const REQ_INPROG: CamStatus = CamStatus(sys::CAM_REQ_INPROG);
    /// `CAM_RESRC_UNAVAIL`: out of resources.
    pub const RESRC_UNAVAIL: CamStatus = CamStatus(sys::CAM_RESRC_UNAVAIL);
}

impl fmt::Debug for CamStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CAM status {:#x}", self.0)
    }
}

impl fmt::Display for CamStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The bus, target and LUN of a device, as `camcontrol devlist` shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CamAddress {
    /// `scbusN`.
    pub path_id: u32,
    /// Target id.
    pub target_id: u32,
    /// Logical unit number.
    pub lun_id: u64,
}

impl fmt::Display for CamAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.path_id, self.target_id, self.lun_id)
    }
}

/// A CAM path: the route from the XPT to one device.
#[repr(transparent)]
pub struct Path(sys::cam_path);

impl Path {
    /// # Safety
    ///
    /// `p` is a valid path for `'a`.
    unsafe fn from_ptr<'a>(p: *mut sys::cam_path) -> &'a Path {
        // SAFETY: Path is a transparent wrapper; validity is the caller's.
        unsafe { &*p.cast::<Path>() }
    }

    fn as_ptr(&self) -> *mut sys::cam_path {
        ptr::from_ref(self).cast_mut().cast()
    }

    /// Where the device is.
    pub fn address(&self) -> CamAddress {
        // SAFETY: the path is valid (it is borrowed); these read its ids.
        unsafe {
            CamAddress {
                path_id: sys::xpt_path_path_id(self.as_ptr()),
                target_id: sys::xpt_path_target_id(self.as_ptr()),
                lun_id: sys::xpt_path_lun_id(self.as_ptr()),
            }
        }
    }

    /// Asks the SIM behind the path about itself (`XPT_PATH_INQ`).
    pub fn inquire(&self) -> PathInq {
        // SAFETY: ccb_pathinq is plain data; all-zeroes is a valid value.
        let mut cpi: sys::ccb_pathinq = unsafe { mem::zeroed() };
        // SAFETY: the path is valid and `cpi` is a writable ccb_pathinq.
        unsafe { sys::ctlpass_xpt_path_inq(&mut cpi, self.as_ptr()) };
        PathInq(cpi)
    }
}

/// What a SIM reports about itself and its bus (`struct ccb_pathinq`).
pub struct PathInq(sys::ccb_pathinq);

impl PathInq {
    /// The SIM's driver name (`dev_name`, e.g. `mpr` or `camsim`).
    pub fn sim_name(&self) -> &[u8] {
        c_chars(&self.0.dev_name)
    }

    /// The SIM's unit number.
    pub fn sim_unit(&self) -> u32 {
        self.0.unit_number
    }

    /// The largest transfer the SIM accepts, in bytes: `maxio`, with 0
    /// meaning `DFLTPHYS`, capped at the kernel's `maxphys` (the rule da(4)
    /// and pass(4) apply).
    pub fn max_io(&self) -> u32 {
        // SAFETY: reading the kernel's maxphys tunable, set at boot.
        let maxphys = unsafe { sys::maxphys };
        let maxio = if self.0.maxio == 0 { sys::DFLTPHYS } else { self.0.maxio };
        u32::try_from(maxphys).map_or(maxio, |cap| maxio.min(cap))
    }
}

/// The bytes of a fixed-size C string field, up to its first NUL.
fn c_chars(field: &[core::ffi::c_char]) -> &[u8] {
    // SAFETY: c_char and u8 have the same size and alignment.
    let bytes: &[u8] = unsafe { &*(ptr::from_ref(field) as *const [u8]) };
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    bytes.get(..end).unwrap_or(&[])
}

/// What CAM knows about a device when it reports it (`struct ccb_getdev`).
#[repr(transparent)]
pub struct GetDev(sys::ccb_getdev);

impl GetDev {
    /// Whether the device speaks SCSI (`PROTO_SCSI`).
    pub fn is_scsi(&self) -> bool {
        self.0.protocol == sys::PROTO_SCSI
    }

    /// The device's standard INQUIRY data as CAM keeps it.
    pub fn inquiry_data(&self) -> &[u8] {
        let inq = &self.0.inq_data;
        // SAFETY: scsi_inquiry_data is a C structure of bytes, without
        // padding; viewing it as bytes reads initialised memory.
        unsafe { core::slice::from_raw_parts(ptr::from_ref(inq).cast::<u8>(), mem::size_of_val(inq)) }
    }

    /// The unit serial number CAM read from VPD page 0x80 (may be empty).
    pub fn serial_number(&self) -> &[u8] {
        let len = usize::from(self.0.serial_num_len);
        self.0.serial_num.get(..len).unwrap_or(&self.0.serial_num)
    }
}

/// A periph of the ctlpass driver.  References to it come from CAM (in
/// callbacks, valid for the call) or from a [`PeriphRef`].
#[repr(transparent)]
pub struct Periph(UnsafeCell<sys::cam_periph>);

impl Periph {
    /// # Safety
    ///
    /// `p` is a live ctlpass periph for `'a`.
    unsafe fn from_ptr<'a>(p: *mut sys::cam_periph) -> &'a Periph {
        // SAFETY: Periph is a transparent wrapper; validity is the caller's.
        unsafe { &*p.cast::<Periph>() }
    }

    fn as_ptr(&self) -> *mut sys::cam_periph {
        self.0.get()
    }

    /// The unit number: `ctlpassN`.
    pub fn unit_number(&self) -> u32 {
        // SAFETY: set by cam_periph_alloc before the periph is published and
        // never changed afterwards.
        unsafe { (*self.as_ptr()).unit_number }
    }

    /// The path to the periph's device.
    pub fn path(&self) -> &Path {
        // SAFETY: set by cam_periph_alloc and valid until the periph is freed,
        // which a reference to the periph prevents.
        unsafe { Path::from_ptr((*self.as_ptr()).path) }
    }

    /// The driver's state, set up by the constructor.
    pub fn softc(&self) -> Option<&Softc> {
        // SAFETY: `softc` is written only by `periph_ctor` (before the periph
        // is visible to anyone else) and `periph_dtor` (after the last
        // reference is gone), so it is stable while this reference lives; it
        // is NULL or a pointer from `KBox::<Softc>::into_raw`.
        unsafe { (*self.as_ptr()).softc.cast::<Softc>().as_ref() }
    }

    /// Takes the periph's lock (the device mutex, `cam_periph_lock`).
    pub fn lock(&self) -> PeriphLock<'_> {
        // SAFETY: the periph is live, so its path and mutex are.
        unsafe { sys::ctlpass_periph_lock(self.as_ptr()) };
        PeriphLock {
            periph: self,
            unlock: true,
            not_send: PhantomData,
        }
    }

    /// Takes a counted reference (`cam_periph_acquire`); fails with ENOENT
    /// once the periph has been invalidated.
    pub fn acquire(&self) -> Result<PeriphRef, Errno> {
        // SAFETY: the periph is live; acquire takes the topology lock itself.
        Errno::result(unsafe { sys::cam_periph_acquire(self.as_ptr()) })?;
        // A live periph pointer is never null.
        Ok(PeriphRef(NonNull::from(&self.0).cast()))
    }
}

/// Proof that a periph's lock is held.  Guards made with [`Periph::lock`]
/// release it when dropped; those CAM callbacks receive (it calls them with
/// the lock held) leave it held.
pub struct PeriphLock<'a> {
    periph: &'a Periph,
    unlock: bool,
    not_send: PhantomData<*mut ()>,
}

impl<'a> PeriphLock<'a> {
    /// # Safety
    ///
    /// The current thread holds `periph`'s lock for `'a`.
    unsafe fn assume_held(periph: &'a Periph) -> PeriphLock<'a> {
        PeriphLock {
            periph,
            unlock: false,
            not_send: PhantomData,
        }
    }

    /// The locked periph.
    pub fn periph(&self) -> &'a Periph {
        self.periph
    }

    /// Invalidates the periph (`cam_periph_invalidate`): it takes no new
    /// references, its `oninvalidate` runs now, and it is freed once the
    /// last reference is released.
    pub fn invalidate(&self) {
        // SAFETY: the lock is held (the guard's invariant), as
        // cam_periph_invalidate requires.
        unsafe { sys::cam_periph_invalidate(self.periph.as_ptr()) }
    }

    /// Registers for `AC_LOST_DEVICE` on the periph's own path.
    pub fn register_lost_device(&self) -> Result<(), CamStatus> {
        register_async(
            sys::AC_LOST_DEVICE,
            self.periph.as_ptr().cast(),
            self.periph.path().as_ptr(),
        )
    }

    /// Removes the registration made by [`PeriphLock::register_lost_device`].
    pub fn deregister_async(&self) {
        let _ = register_async(0, self.periph.as_ptr().cast(), self.periph.path().as_ptr());
    }
}

impl Drop for PeriphLock<'_> {
    fn drop(&mut self) {
        if self.unlock {
            // SAFETY: this guard took the lock in `Periph::lock`.
            unsafe { sys::ctlpass_periph_unlock(self.periph.as_ptr()) }
        }
    }
}

/// A counted reference to a periph: CAM frees a periph only after its last
/// reference is released.  Dropping it calls `cam_periph_release`, which
/// takes the periph's lock, so it must not be dropped with that lock held.
pub struct PeriphRef(NonNull<sys::cam_periph>);

// SAFETY: periph references may be taken and released from any thread.
unsafe impl Send for PeriphRef {}
// SAFETY: a shared PeriphRef only hands out `&Periph`, whose methods are
// safe from any thread.
unsafe impl Sync for PeriphRef {}

impl core::ops::Deref for PeriphRef {
    type Target = Periph;
    fn deref(&self) -> &Periph {
        // SAFETY: the reference keeps the periph alive.
        unsafe { Periph::from_ptr(self.0.as_ptr()) }
    }
}

impl Drop for PeriphRef {
    fn drop(&mut self) {
        // SAFETY: this reference was counted by cam_periph_acquire (or handed
        // over by cam_periph_acquire_first/next) and is released once.
        unsafe { sys::cam_periph_release(self.0.as_ptr()) }
    }
}

/// Calls `f` for every valid ctlpass periph, holding a reference to it during
/// the call (`CAM_PERIPH_FOREACH`).
pub fn for_each_periph(mut f: impl FnMut(&Periph)) {
    // SAFETY: acquire_first returns NULL or a periph with a new reference.
    let mut next = unsafe { sys::ctlpass_periph_acquire_first() };
    while let Some(p) = NonNull::new(next) {
        // SAFETY: the reference taken for us keeps the periph alive.
        f(unsafe { Periph::from_ptr(p.as_ptr()) });
        // SAFETY: acquire_next releases our reference to `p` (without the
        // periph lock held) and returns the next periph with a new one.
        next = unsafe { sys::ctlpass_periph_acquire_next(p.as_ptr()) };
    }
}

/// Whether the ctlpass driver has no periphs left, valid or not.
pub fn no_periphs() -> bool {
    // SAFETY: the unit list of our own driver is read under the topology
    // lock, which protects it.
    unsafe {
        sys::xpt_lock_buses();
        let empty = (&raw const sys::ctlpass_periph_driver.units.tqh_first).read().is_null();
        sys::xpt_unlock_buses();
        empty
    }
}

/// Sleeps for `ticks` clock ticks (pause(9)).
pub fn pause(wmesg: &'static CStr, ticks: i32) {
    // SAFETY: pause(9) with a static wait message; the callers may sleep.
    unsafe { sys::ctlpass_pause(wmesg.as_ptr(), ticks) }
}

/// The kernel's clock ticks per second.
pub fn hz() -> i32 {
    // SAFETY: reading the kernel's hz, set at boot.
    unsafe { sys::hz }
}

fn register_async(events: sys::ac_code, arg: *mut c_void, path: *mut sys::cam_path) -> Result<(), CamStatus> {
    // SAFETY: ctlpass_async has the ac_callback_t signature; `arg` and `path`
    // are NULL or live objects, as xpt_register_async requires.
    let status = unsafe { sys::xpt_register_async(events as i32, Some(ctlpass_async), arg, path) };
    if status == sys::CAM_REQ_CMP {
        Ok(())
    } else {
        Err(CamStatus(status))
    }
}

/// Registers the driver for `AC_FOUND_DEVICE` on every path; CAM replays
/// the event for every device that exists already.
pub fn register_found_device() -> Result<(), CamStatus> {
    register_async(sys::AC_FOUND_DEVICE, ptr::null_mut(), ptr::null_mut())
}

/// Removes the registration made by [`register_found_device`].
pub fn deregister_found_device() {
    let _ = register_async(0, ptr::null_mut(), ptr::null_mut());
}

/// Creates a ctlpass periph on `path` (`cam_periph_alloc`).  The constructor
/// runs before this returns.  `REQ_INPROG` means an invalidated ctlpass
/// periph still exists there: CAM creates the new one when the old is freed.
///
/// `_lock` is the path's device lock, which the caller holds.
pub fn periph_alloc(path: &Path, cgd: &GetDev, _lock: &DeviceLocked) -> CamStatus {
    // SAFETY: the callbacks have the signatures CAM expects, the name is a
    // static string, and `path`/`cgd` are live for the call (they are
    // borrowed); the caller holds the path's lock.
    CamStatus(unsafe {
        sys::cam_periph_alloc(
            Some(periph_ctor),
            Some(periph_oninvalidate),
            Some(periph_dtor),
            None,
            c"ctlpass".as_ptr().cast_mut(),
            sys::CAM_PERIPH_BIO,
            path.as_ptr(),
            Some(ctlpass_async),
            sys::AC_FOUND_DEVICE,
            ptr::from_ref(cgd).cast_mut().cast(),
        )
    })
}

/// Proof that the lock of the device an async callback is about is held
/// (CAM delivers async events with it held).
pub struct DeviceLocked(PhantomData<*mut ()>);

/// The async event callback (`ac_callback_t`) for both registrations: the
/// driver-wide one (`callback_arg` NULL) and each periph's own.
unsafe extern "C" fn ctlpass_async(callback_arg: *mut c_void, code: u32, path: *mut sys::cam_path, arg: *mut c_void) {
    let locked = DeviceLocked(PhantomData);
    if callback_arg.is_null() {
        if code == sys::AC_FOUND_DEVICE && !path.is_null() && !arg.is_null() {
            // SAFETY: for AC_FOUND_DEVICE, CAM passes the device's path and a
            // ccb_getdev, both valid for the call.
            let (path, cgd) = unsafe { (Path::from_ptr(path), &*arg.cast::<GetDev>()) };
            periph::device_found(path, cgd, &locked);
        }
        return;
    }
    // A per-periph registration: `callback_arg` is the periph.
    // SAFETY: the periph registered itself and deregisters before it is
    // freed, so it is live for the call.
    let periph = unsafe { Periph::from_ptr(callback_arg.cast()) };
    // CAM's default handling: on AC_LOST_DEVICE the periph is invalidated.
    // SAFETY: the periph is live and CAM holds its lock during the call, as
    // cam_periph_async expects.
    unsafe { sys::cam_periph_async(periph.as_ptr(), code, path, arg) }
}

unsafe extern "C" fn periph_ctor(p: *mut sys::cam_periph, arg: *mut c_void) -> sys::cam_status {
    // SAFETY: CAM passes the new periph, with its lock held, and the
    // ccb_getdev given to cam_periph_alloc.
    let (periph, cgd) = unsafe { (Periph::from_ptr(p), &*arg.cast::<GetDev>()) };
    // SAFETY: CAM calls constructors with the periph's lock held.
    let lock = unsafe { PeriphLock::assume_held(periph) };
    match periph::ctor(&lock, cgd) {
        Ok(softc) => {
            // SAFETY: the periph is not yet visible to anyone else; the
            // destructor takes the softc back.
            unsafe { (*p).softc = KBox::into_raw(softc).cast() };
            sys::CAM_REQ_CMP
        }
        Err(status) => status.0,
    }
}

unsafe extern "C" fn periph_oninvalidate(p: *mut sys::cam_periph) {
    // SAFETY: CAM passes a live periph with its lock held.
    let lock = unsafe { PeriphLock::assume_held(Periph::from_ptr(p)) };
    periph::oninvalidate(&lock);
}

unsafe extern "C" fn periph_dtor(p: *mut sys::cam_periph) {
    // SAFETY: CAM calls the destructor once, after the last reference is
    // gone, with the periph's lock held; `softc` came from KBox::into_raw in
    // the constructor (which succeeded, or there would be no destructor call).
    let softc = unsafe {
        let softc = mem::replace(&mut (*p).softc, ptr::null_mut());
        KBox::from_raw(softc.cast::<Softc>())
    };
    // SAFETY: as above.
    let lock = unsafe { PeriphLock::assume_held(Periph::from_ptr(p)) };
    periph::dtor(&lock, softc);
}
