//! CAM, as the ctlpass peripheral driver sees it: its periphs, their paths
//! and locks, references that keep a periph alive, async event
//! registration, and the callbacks CAM makes into the driver.

use core::cell::UnsafeCell;
use core::ffi::{CStr, c_void};
use core::fmt;
use core::marker::PhantomData;
use core::mem;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

use static_assertions::const_assert_eq;

use super::alloc::KBox;
use super::errno::Errno;
use crate::periph::io::Request;
use crate::periph::{self, Softc};
use crate::scsi::cdb::{CDB_MAX_LEN, Cdb, TaskAttribute};
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
    /// `CAM_SCSI_STATUS_ERROR`: the device returned a SCSI status other
    /// than GOOD.
    pub const SCSI_STATUS_ERROR: CamStatus = CamStatus(sys::CAM_SCSI_STATUS_ERROR);
    /// `CAM_REQ_INVALID`: the CCB was invalid.
    pub const REQ_INVALID: CamStatus = CamStatus(sys::CAM_REQ_INVALID);
    /// `CAM_REQ_ABORTED`: aborted at the periph's or the SIM's request.
    pub const REQ_ABORTED: CamStatus = CamStatus(sys::CAM_REQ_ABORTED);
    /// `CAM_CMD_TIMEOUT`: the command did not complete in time.
    pub const CMD_TIMEOUT: CamStatus = CamStatus(sys::CAM_CMD_TIMEOUT);
    /// `CAM_SEL_TIMEOUT`: the target did not answer selection.
    pub const SEL_TIMEOUT: CamStatus = CamStatus(sys::CAM_SEL_TIMEOUT);
    /// `CAM_DEV_NOT_THERE`: the device is gone.
    pub const DEV_NOT_THERE: CamStatus = CamStatus(sys::CAM_DEV_NOT_THERE);
    /// `CAM_REQUEUE_REQ`: the SIM asks for the command to be sent again.
    pub const REQUEUE_REQ: CamStatus = CamStatus(sys::CAM_REQUEUE_REQ);
    /// `CAM_BUSY`: the SIM is busy.
    pub const BUSY: CamStatus = CamStatus(sys::CAM_BUSY);
    /// `CAM_SCSI_BUSY`: the SCSI bus is busy.
    pub const SCSI_BUSY: CamStatus = CamStatus(sys::CAM_SCSI_BUSY);
    /// `CAM_UNCOR_PARITY`: an uncorrectable parity or CRC error.
    pub const UNCOR_PARITY: CamStatus = CamStatus(sys::CAM_UNCOR_PARITY);
    /// `CAM_DATA_RUN_ERR`: the device moved more or less data than asked.
    pub const DATA_RUN_ERR: CamStatus = CamStatus(sys::CAM_DATA_RUN_ERR);
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
        // SAFETY: `softc` is written only by `periph_ctor`, once, published
        // with Release while the periph may already be on its driver's list
        // (a walker sees NULL or the whole state), and by `periph_dtor`
        // after the last reference is gone; so it is stable while this
        // reference lives.  It is NULL or a pointer from
        // `KBox::<Softc>::into_raw`, and the field is aligned for atomics.
        unsafe {
            AtomicPtr::from_ptr(&raw mut (*self.as_ptr()).softc)
                .load(Ordering::Acquire)
                .cast::<Softc>()
                .as_ref()
        }
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

    /// Asks CAM to abort `ccb`, a CCB of one of this periph's active
    /// requests (`XPT_ABORT`): if CAM or the SIM can, the CCB comes back
    /// soon with `CAM_REQ_ABORTED`; otherwise (`CAM_UA_ABORT`, or whatever
    /// the SIM says) it completes as it would have.  Returns CAM's answer.
    pub fn abort(&self, ccb: ActiveCcb) -> CamStatus {
        // SAFETY: union ccb is plain data; all-zeroes is valid.
        let mut cab: sys::ccb = unsafe { mem::zeroed() };
        // SAFETY: an immediate CCB on the periph's path; the victim is live
        // while its request is active, which the held periph lock (this
        // guard's invariant) keeps so until this returns.  XPT_ABORT does
        // not call the victim's completion from here: CAM queues it.
        unsafe {
            sys::xpt_setup_ccb(&mut cab.ccb_h, self.periph.path().as_ptr(), CAM_PRIORITY_NORMAL);
            cab.ccb_h.func_code = sys::XPT_ABORT;
            cab.cab.abort_ccb = ccb.0.as_ptr();
            sys::xpt_action(&mut cab);
            CamStatus(cab.ccb_h.status & sys::CAM_STATUS_MASK)
        }
    }

    /// Resets the periph's device (`XPT_RESET_DEV`, a bus device reset or
    /// LUN reset as the SIM does it): commands the device runs come back
    /// ended.  The CCB completes (and is freed) later; an error means it
    /// could not be sent.
    pub fn reset_device(&self) -> Result<(), CamStatus> {
        // SAFETY: allocation of a zeroed CCB that belongs to no periph.
        let ccb = unsafe { sys::xpt_alloc_ccb_nowait() };
        if ccb.is_null() {
            return Err(CamStatus::RESRC_UNAVAIL);
        }
        // SAFETY: a fresh CCB set up on the periph's path, whose lock is
        // held; `reset_done` frees it.
        unsafe {
            sys::xpt_setup_ccb(&mut (*ccb).ccb_h, self.periph.path().as_ptr(), CAM_PRIORITY_NORMAL);
            (*ccb).ccb_h.func_code = sys::XPT_RESET_DEV;
            (*ccb).ccb_h.flags = sys::CAM_DIR_NONE;
            (*ccb).ccb_h.cbfcnp = Some(reset_done);
            sys::xpt_action(ccb);
        }
        Ok(())
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

impl Clone for PeriphRef {
    /// Another reference (`cam_periph_doacquire`, which a holder of one may
    /// take even after the periph was invalidated, as pass(4) does for its
    /// abandoned I/O; sys/cam/cam_periph.c, sys/cam/scsi/scsi_pass.c).  It
    /// takes the topology lock, which may be taken with the periph's lock
    /// held.
    fn clone(&self) -> PeriphRef {
        // SAFETY: this reference keeps the periph's count at one or more,
        // as cam_periph_doacquire requires.
        unsafe { sys::cam_periph_doacquire(self.0.as_ptr()) };
        PeriphRef(self.0)
    }
}

impl Drop for PeriphRef {
    fn drop(&mut self) {
        // SAFETY: this reference was counted by cam_periph_acquire (or handed
        // over by cam_periph_acquire_first/next) and is released once.
        unsafe { sys::cam_periph_release(self.0.as_ptr()) }
    }
}

/// A LUN's periph reference, which the LUN can let go of while it lives
/// (its device was lost) and bind again (the device returned).
///
/// Code reaches the periph only while *entered*: the backend enters when
/// CTL hands it an I/O and leaves once it has completed it (and the request
/// carrying it is back in the periph's pool), and anything else that needs
/// the device enters for the time it does.  [`SharedPeriph::let_go`] stops
/// new entries, and the reference is released once nobody is entered: by
/// `let_go` itself, or by the last [`SharedPeriph::leave`].  That is what
/// makes [`SharedPeriph::periph`] valid for an entered caller.
pub struct SharedPeriph {
    /// The periph; its reference is owned here while non-null.
    periph: AtomicPtr<sys::cam_periph>,
    /// Entered callers, and [`LETTING_GO`].
    users: AtomicU32,
}

/// In [`SharedPeriph::users`]: no new caller may enter, and the last to
/// leave takes the reference.
const LETTING_GO: u32 = 1 << 31;
/// In [`SharedPeriph::users`]: no periph may be bound again.
const CLOSED: u32 = 1 << 30;
/// The count of entered callers in [`SharedPeriph::users`].
const USERS: u32 = CLOSED - 1;

impl SharedPeriph {
    /// Shares `periph`.
    pub fn new(periph: PeriphRef) -> SharedPeriph {
        let p = periph.0.as_ptr();
        mem::forget(periph);
        SharedPeriph {
            periph: AtomicPtr::new(p),
            users: AtomicU32::new(0),
        }
    }

    /// Enters, unless the periph is being let go (or was): then false, and
    /// the caller must not use [`SharedPeriph::periph`].
    #[must_use]
    pub fn enter(&self) -> bool {
        let mut n = self.users.load(Ordering::Acquire);
        loop {
            if n & LETTING_GO != 0 || n & USERS == USERS {
                return false;
            }
            match self
                .users
                .compare_exchange_weak(n, n.saturating_add(1), Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(now) => n = now,
            }
        }
    }

    /// Leaves (after a successful [`SharedPeriph::enter`]); if this was
    /// the last caller of a periph being let go, its reference is returned,
    /// to be dropped without the periph's lock held.
    pub fn leave(&self) -> Option<PeriphRef> {
        let before = self.users.fetch_sub(1, Ordering::AcqRel);
        if before & LETTING_GO != 0 && before & USERS == 1 {
            self.take()
        } else {
            None
        }
    }

    /// The periph, for an entered caller (else it may be gone: `None` when
    /// it is).
    pub fn periph(&self) -> Option<&Periph> {
        let p = self.periph.load(Ordering::Acquire);
        // SAFETY: the reference is held while anyone is entered (see the
        // type's documentation), and the caller is.
        NonNull::new(p).map(|p| unsafe { Periph::from_ptr(p.as_ptr()) })
    }

    /// Lets the periph go: nobody may enter any more; the reference is
    /// returned now if nobody is entered, else the last to leave gets it.
    /// Drop it without the periph's lock held.
    pub fn let_go(&self) -> Option<PeriphRef> {
        self.stop(LETTING_GO)
    }

    /// Lets the periph go for good (the LUN is gone): as
    /// [`SharedPeriph::let_go`], and no periph can be bound again.
    pub fn close(&self) -> Option<PeriphRef> {
        self.stop(LETTING_GO | CLOSED)
    }

    fn stop(&self, bits: u32) -> Option<PeriphRef> {
        let before = self.users.fetch_or(bits, Ordering::AcqRel);
        if before & (LETTING_GO | USERS) == 0 {
            self.take()
        } else {
            None
        }
    }

    /// Binds a periph again once the old one was let go and released;
    /// `periph` comes back otherwise.
    pub fn bind(&self, periph: PeriphRef) -> Result<(), PeriphRef> {
        if self.users.load(Ordering::Acquire) != LETTING_GO || !self.periph.load(Ordering::Acquire).is_null() {
            return Err(periph);
        }
        self.periph.store(periph.0.as_ptr(), Ordering::Release);
        mem::forget(periph);
        self.users.store(0, Ordering::Release);
        Ok(())
    }

    /// Whether a periph is bound and not being let go.
    pub fn is_bound(&self) -> bool {
        self.users.load(Ordering::Acquire) & LETTING_GO == 0
    }

    /// Whether the periph was let go and released (it can be bound again).
    pub fn is_released(&self) -> bool {
        self.periph.load(Ordering::Acquire).is_null()
    }

    fn take(&self) -> Option<PeriphRef> {
        NonNull::new(self.periph.swap(ptr::null_mut(), Ordering::AcqRel)).map(PeriphRef)
    }
}

impl Drop for SharedPeriph {
    fn drop(&mut self) {
        // Nobody can be entered: the LUN is going, after its last I/O.
        drop(self.take());
    }
}

/// Data a periph's lock protects: a field of its softc, reached only
/// through [`PeriphLock::locked`].
pub struct PeriphLocked<T>(UnsafeCell<T>);

// SAFETY: the data is only reached with the periph lock held.
unsafe impl<T: Send> Sync for PeriphLocked<T> {}

impl<T> PeriphLocked<T> {
    /// Wraps `data`, for the softc of a periph being constructed.
    pub const fn new(data: T) -> PeriphLocked<T> {
        PeriphLocked(UnsafeCell::new(data))
    }
}

/// A CCB CAM allocated for the periph after [`PeriphLock::schedule`],
/// handed to its start routine with the periph's lock held.  It carries one
/// command ([`StartCcb::scsi_io`]) or goes back ([`StartCcb::release`]).
#[must_use]
pub struct StartCcb(NonNull<sys::ccb>);

impl StartCcb {
    /// Returns the CCB unused (`xpt_release_ccb`).  `lock` is the lock of the
    /// periph the CCB was given to.
    pub fn release(self, lock: &mut PeriphLock<'_>) {
        let _ = lock;
        // SAFETY: a CCB CAM allocated for the periph, whose lock is held.
        unsafe { sys::xpt_release_ccb(self.0.as_ptr()) }
    }

    /// Sends `req.command` to the device (`cam_fill_csio`, `xpt_action`).
    /// CAM calls the completion without the periph lock (`CAM_UNLOCKED`);
    /// it hands the request, with its result, to [`periph::io::done`].
    /// `lock` is the lock of the periph the CCB was given to.
    pub fn scsi_io(self, lock: &mut PeriphLock<'_>, mut req: KBox<Request>) {
        let ccb = self.0.as_ptr();
        let cmd = req.command;
        let tag = match cmd.task_attribute {
            // CAM_TAG_ACTION_NONE would make a tagged device's queue wait; an
            // untagged iSCSI task is ordered like a simple one.
            TaskAttribute::Untagged | TaskAttribute::Simple => sys::MSG_SIMPLE_Q_TAG,
            TaskAttribute::Ordered => sys::MSG_ORDERED_Q_TAG,
            TaskAttribute::HeadOfQueue => sys::MSG_HEAD_OF_Q_TAG,
            TaskAttribute::Aca => sys::MSG_ACA_TASK,
        } as u8;
        let own = |n: u32, buf: &Option<crate::kern::pool::KBuf>| {
            buf.as_ref().filter(|b| n as usize <= b.len()).map(|b| (b.as_ptr(), n))
        };
        let ctl = |n: u32, req: &Request| {
            req.io
                .as_ref()
                .and_then(|io| io.kern_data())
                .filter(|&(_, l)| n <= l)
                .map(|(p, _)| (p, n))
        };
        let data = match cmd.data {
            Data::None => Some((sys::CAM_DIR_NONE, ptr::null_mut(), 0)),
            Data::In(n) => own(n, &req.buf).map(|(p, n)| (sys::CAM_DIR_IN, p, n)),
            Data::Out(n) => own(n, &req.buf).map(|(p, n)| (sys::CAM_DIR_OUT, p, n)),
            Data::InCtl(n) => ctl(n, &req).map(|(p, n)| (sys::CAM_DIR_IN, p, n)),
            Data::OutCtl(n) => ctl(n, &req).map(|(p, n)| (sys::CAM_DIR_OUT, p, n)),
        };
        let Some((dir, data_ptr, len)) = data else {
            // A command whose data is not there: refused before the device.
            req.result = ScsiResult {
                status: CamStatus::REQ_INVALID,
                ..ScsiResult::PENDING
            };
            self.release(lock);
            return periph::io::done(lock, req);
        };
        let Some(q) = lock.locked() else {
            req.result = ScsiResult {
                status: CamStatus::REQ_INVALID,
                ..ScsiResult::PENDING
            };
            self.release(lock);
            return periph::io::done(lock, req);
        };
        // The active queue owns the request; the CCB refers to it.
        req.ccb = Some(ActiveCcb(self.0));
        let req_ptr: *const Request = &*req;
        q.active.push_back(req);
        // SAFETY: the CCB was allocated for this periph, whose lock is held;
        // the data (the request's buffer, or CTL's for the I/O) stays
        // allocated until the request leaves the active queue in scsi_done.
        unsafe {
            let csio = &raw mut (*ccb).csio;
            fill_csio(
                csio,
                &cmd.cdb,
                Some(scsi_done),
                dir | sys::CAM_UNLOCKED,
                tag,
                data_ptr,
                len,
                cmd.timeout_ms,
            );
            (*csio).ccb_h.periph_priv.entries[0].ptr = req_ptr.cast_mut().cast();
            sys::xpt_action(ccb);
        }
    }
}

/// The CCB of a request in its periph's active queue: valid while the
/// request is there, which the periph's lock keeps so (the completion
/// takes it off the queue, under that lock, before the CCB is released).
#[derive(Clone, Copy)]
pub struct ActiveCcb(NonNull<sys::ccb>);

// SAFETY: a CCB address; it is only dereferenced by CAM, in
// `PeriphLock::abort`, under the lock that keeps the CCB allocated.
unsafe impl Send for ActiveCcb {}

/// `cam_fill_csio` with the CDB copied in, autosense into the CCB's own
/// sense buffer and no retries.
///
/// # Safety
///
/// `csio` is a CCB allocated for a periph whose lock is held; `data` holds
/// `len` bytes for as long as the CCB runs.
#[allow(clippy::too_many_arguments)]
unsafe fn fill_csio(
    csio: *mut sys::ccb_scsiio,
    cdb: &Cdb,
    done: Option<unsafe extern "C" fn(*mut sys::cam_periph, *mut sys::ccb)>,
    flags: u32,
    tag: u8,
    data: *mut u8,
    len: u32,
    timeout_ms: u32,
) {
    let bytes = cdb.as_bytes();
    // SAFETY: the caller's contract; the CDB fits the inline bytes
    // (CDB_MAX_LEN == IOCDBLEN).
    unsafe {
        sys::ctlpass_cam_fill_csio(
            csio,
            0,
            done,
            flags | sys::CAM_DATA_VADDR,
            tag,
            data,
            len,
            SENSE_LEN as u8,
            bytes.len() as u8,
            timeout_ms,
        );
        for (dst, src) in (*csio).cdb_io.cdb_bytes.iter_mut().zip(bytes) {
            *dst = *src;
        }
    }
}

/// The completion of a CCB sent by [`StartCcb::scsi_io`].
unsafe extern "C" fn scsi_done(p: *mut sys::cam_periph, ccb: *mut sys::ccb) {
    // SAFETY: CAM calls this once per CCB, without the periph lock
    // (CAM_UNLOCKED); the periph is live, because the request's LUN holds a
    // reference to it until the request completes (an abandoned request
    // holds its own until it is recycled), which is after this.
    // The CCB carries a pointer to the request in the active queue.
    let (periph, req_ptr, result) = unsafe {
        let csio = &(*ccb).csio;
        let result = ScsiResult::of(csio);
        if csio.ccb_h.status & sys::CAM_DEV_QFRZN != 0 {
            // The error froze the device queue; thaw it.
            sys::cam_release_devq(csio.ccb_h.path, 0, 0, 0, 0);
        }
        (
            Periph::from_ptr(p),
            csio.ccb_h.periph_priv.entries[0].ptr.cast_const().cast::<Request>(),
            result,
        )
    };
    let mut lock = periph.lock();
    // SAFETY: the completed CCB, returned with the periph lock held.
    unsafe { sys::xpt_release_ccb(ccb) };
    let req = lock
        .locked()
        .and_then(|q| q.active.remove_first(|r| ptr::eq(r, req_ptr)));
    match req {
        Some(mut req) => {
            req.result = result;
            req.ccb = None;
            periph::io::done(&mut lock, req);
        }
        None => crate::printf!(
            "ctlpass{}: a CCB completed for no active request\n",
            periph.unit_number()
        ),
    }
}

/// The completion of an `XPT_RESET_DEV` sent by
/// [`PeriphLock::reset_device`] (with the periph lock held).
unsafe extern "C" fn reset_done(_periph: *mut sys::cam_periph, ccb: *mut sys::ccb) {
    // SAFETY: CAM hands back the CCB reset_device allocated, done with it.
    unsafe {
        let status = (*ccb).ccb_h.status;
        if status & sys::CAM_DEV_QFRZN != 0 {
            sys::cam_release_devq((*ccb).ccb_h.path, 0, 0, 0, 0);
        }
        if status & sys::CAM_STATUS_MASK != sys::CAM_REQ_CMP {
            crate::printf!(
                "ctlpass: a device reset failed ({})\n",
                CamStatus(status & sys::CAM_STATUS_MASK)
            );
        }
        sys::xpt_free_ccb(ccb);
    }
}

/// The first valid ctlpass periph `pred` accepts, with a reference to it
/// (walking as `CAM_PERIPH_FOREACH` does, each periph referenced while
/// `pred` looks at it).
pub fn find_periph(mut pred: impl FnMut(&Periph) -> bool) -> Option<PeriphRef> {
    walk(|p| pred(p))
}

/// Calls `f` for every valid ctlpass periph with the reference held to it
/// during the call (`CAM_PERIPH_FOREACH`), which `f` may clone.
pub fn for_each_periph(mut f: impl FnMut(&PeriphRef)) {
    let none = walk(|p| {
        f(p);
        false
    });
    debug_assert!(none.is_none());
}

/// Walks the valid ctlpass periphs, each referenced while `pred` looks at
/// it, until `pred` accepts one: that one comes back with its reference.
fn walk(mut pred: impl FnMut(&PeriphRef) -> bool) -> Option<PeriphRef> {
    // SAFETY: acquire_first returns NULL or a periph with a new reference.
    let mut next = unsafe { sys::ctlpass_periph_acquire_first() };
    while let Some(p) = NonNull::new(next) {
        // The walk's reference, lent to `pred`.
        let walked = mem::ManuallyDrop::new(PeriphRef(p));
        if pred(&walked) {
            // It becomes the caller's.
            return Some(mem::ManuallyDrop::into_inner(walked));
        }
        // SAFETY: acquire_next releases our reference to `p` (without the
        // periph lock held) and returns the next periph with a new one.
        next = unsafe { sys::ctlpass_periph_acquire_next(p.as_ptr()) };
    }
    None
}

/// Calls `f` with the driver name, unit and device address of every valid
/// periph of every driver (da3, cd0, pass4, sa0, ctlpass2, ...), walking
/// `periph_drivers` under the topology lock as CAMGETPASSTHRU does, until
/// `f` returns true.  `f` runs with that lock held: it must not lock or
/// sleep.
pub fn walk_periphs(mut f: impl FnMut(&[u8], u32, CamAddress) -> bool) {
    // SAFETY: periph_drivers and each driver's unit list are read under the
    // topology lock, which protects them; a path's ids are immutable.
    unsafe {
        sys::xpt_lock_buses();
        let mut drv = sys::periph_drivers;
        'drivers: while !drv.is_null() && !(*drv).is_null() {
            let name = CStr::from_ptr((**drv).driver_name).to_bytes();
            let mut p = (**drv).units.tqh_first;
            while !p.is_null() {
                if (*p).flags & sys::CAM_PERIPH_INVALID == 0
                    && f(name, (*p).unit_number, Path::from_ptr((*p).path).address())
                {
                    break 'drivers;
                }
                p = (*p).unit_links.tqe_next;
            }
            drv = drv.add(1);
        }
        sys::xpt_unlock_buses();
    }
}

/// `CAM_PRIORITY_NORMAL` (cam.h: `(CAM_RL_NORMAL << 8) + 0x80`), a macro
/// bindgen cannot evaluate.
const CAM_PRIORITY_NORMAL: u32 = (sys::CAM_RL_NORMAL << 8) + 0x80;

/// Bytes of sense data a synchronous command keeps.
pub const SENSE_LEN: usize = sys::SSD_FULL_SIZE as usize;

/// How a SCSI command ended, as the SIM reported it.
#[derive(Clone)]
pub struct ScsiResult {
    /// The CAM status (`ccb_h.status & CAM_STATUS_MASK`).
    pub status: CamStatus,
    /// The SCSI status byte, for `CAM_SCSI_STATUS_ERROR`.
    pub scsi_status: u8,
    /// Bytes of the data buffer not transferred.
    pub resid: u32,
    sense: [u8; SENSE_LEN],
    sense_len: u8,
}

impl ScsiResult {
    /// A command that has not run (`CAM_REQ_INPROG`).
    pub const PENDING: ScsiResult = ScsiResult {
        status: CamStatus::REQ_INPROG,
        scsi_status: 0,
        resid: 0,
        sense: [0; SENSE_LEN],
        sense_len: 0,
    };

    /// A result with the given fields; sense data beyond [`SENSE_LEN`]
    /// bytes is cut.
    pub fn new(status: CamStatus, scsi_status: u8, resid: u32, sense: &[u8]) -> ScsiResult {
        let mut r = ScsiResult {
            status,
            scsi_status,
            resid,
            ..ScsiResult::PENDING
        };
        let n = sense.len().min(SENSE_LEN);
        for (d, s) in r.sense.iter_mut().zip(sense) {
            *d = *s;
        }
        r.sense_len = n as u8;
        r
    }

    /// The result of a completed CCB: status, SCSI status, residual and
    /// the valid part of the autosense data.
    ///
    /// # Safety
    ///
    /// `csio` is a completed `XPT_SCSI_IO` CCB.
    unsafe fn of(csio: &sys::ccb_scsiio) -> ScsiResult {
        let status = csio.ccb_h.status;
        let sense = if status & sys::CAM_AUTOSNS_VALID != 0 {
            let valid = usize::from(csio.sense_len).saturating_sub(usize::from(csio.sense_resid));
            // SAFETY: scsi_sense_data is SENSE_LEN bytes of plain data.
            let bytes = unsafe { &*(&raw const csio.sense_data).cast::<[u8; SENSE_LEN]>() };
            bytes.get(..valid.min(SENSE_LEN)).unwrap_or(&[])
        } else {
            &[]
        };
        ScsiResult::new(
            CamStatus(status & sys::CAM_STATUS_MASK),
            csio.scsi_status,
            csio.resid,
            sense,
        )
    }

    /// Whether the command completed without error.
    pub fn is_ok(&self) -> bool {
        self.status == CamStatus::REQ_CMP
    }

    /// The autosense data, if the device returned any.
    pub fn sense(&self) -> &[u8] {
        self.sense.get(..usize::from(self.sense_len)).unwrap_or(&[])
    }
}

// A sense length fits the CCB's 8-bit sense_len.
static_assertions::const_assert!(SENSE_LEN <= u8::MAX as usize);

/// A SCSI command for a device: what the CCB carries.
#[derive(Clone, Copy, Debug)]
pub struct ScsiCommand {
    /// The CDB.
    pub cdb: Cdb,
    /// Its data.
    pub data: Data,
    /// How the device may order it.
    pub task_attribute: TaskAttribute,
    /// How long the SIM lets it run, in milliseconds.
    pub timeout_ms: u32,
}

/// Where the data of a command is: the CCB points at that memory itself
/// (`CAM_DATA_VADDR`), so what CTL moves and what the device reads or
/// writes are the same bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Data {
    /// No data.
    None,
    /// This many bytes from the device into the request's buffer.
    In(u32),
    /// This many bytes of the request's buffer to the device.
    Out(u32),
    /// This many bytes from the device into the buffer CTL gave the I/O.
    InCtl(u32),
    /// This many bytes of the buffer CTL gave the I/O to the device.
    OutCtl(u32),
}

// A CDB ctlpass sends fits the CCB's inline CDB bytes.
const_assert_eq!(CDB_MAX_LEN, sys::IOCDBLEN as usize);

impl PeriphLock<'_> {
    /// Runs one SCSI command that reads `data_in` (or moves no data, if it
    /// is empty) synchronously: `cam_periph_getccb`, `cam_fill_csio`,
    /// `cam_periph_runccb` (which releases a queue the command froze) and
    /// `xpt_release_ccb`.  CAM releases the periph lock while the command
    /// runs, so this sleeps: for the ioctl path only.
    pub fn run_scsi(&self, cdb: &[u8], data_in: &mut [u8], timeout_ms: u32) -> ScsiResult {
        let failed = ScsiResult {
            status: CamStatus::REQ_CMP_ERR,
            ..ScsiResult::PENDING
        };
        let (Some(cdb), Ok(len)) = (Cdb::new(cdb), u32::try_from(data_in.len())) else {
            return failed;
        };
        let dir = if data_in.is_empty() {
            sys::CAM_DIR_NONE
        } else {
            sys::CAM_DIR_IN
        };
        // SAFETY: the periph lock is held (the guard's invariant), as
        // getccb, runccb and xpt_release_ccb require; the CCB is ours until
        // released; `data_in` outlives the synchronous run.
        unsafe {
            let ccb = sys::cam_periph_getccb(self.periph.as_ptr(), CAM_PRIORITY_NORMAL);
            let csio = &raw mut (*ccb).csio;
            fill_csio(
                csio,
                &cdb,
                None,
                dir,
                sys::MSG_SIMPLE_Q_TAG as u8,
                data_in.as_mut_ptr(),
                len,
                timeout_ms,
            );
            sys::cam_periph_runccb(ccb, None, 0, sys::SF_NO_PRINT, ptr::null_mut());
            let result = ScsiResult::of(&*csio);
            sys::xpt_release_ccb(ccb);
            result
        }
    }

    /// Asks CAM for a CCB for the periph (`xpt_schedule`): the periph's
    /// start routine gets one as soon as the device has an opening, maybe
    /// before this returns.
    pub fn schedule(&mut self) {
        // SAFETY: the periph lock is held, as xpt_schedule requires.
        unsafe { sys::xpt_schedule(self.periph.as_ptr(), CAM_PRIORITY_NORMAL) }
    }

    /// The periph's state that its lock protects.
    pub fn locked(&mut self) -> Option<&mut periph::io::Locked> {
        let softc = self.periph.softc()?;
        // SAFETY: this thread holds the periph's lock (the guard's
        // invariant).  The only other guards of a held lock are those CAM
        // callbacks get when a CAM call made through this guard calls back
        // (periph_start, oninvalidate); every such call borrows this guard,
        // so it cannot happen while the returned reference lives.
        Some(unsafe { &mut *softc.locked.0.get() })
    }

    /// The device's Device Identification VPD page, as CAM's probe kept it
    /// (`XPT_DEV_ADVINFO`), copied into `buf`; empty if CAM has none.
    pub fn device_id_page<'b>(&self, buf: &'b mut [u8]) -> &'b [u8] {
        // SAFETY: ccb_dev_advinfo is plain data; all-zeroes is valid.
        let mut cdai: sys::ccb_dev_advinfo = unsafe { mem::zeroed() };
        // SAFETY: an immediate CCB on the periph's path, with the periph lock
        // held as XPT_DEV_ADVINFO expects; `buf` outlives the call.
        let provided = unsafe {
            sys::xpt_setup_ccb(&mut cdai.ccb_h, self.periph.path().as_ptr(), CAM_PRIORITY_NORMAL);
            cdai.ccb_h.func_code = sys::XPT_DEV_ADVINFO;
            cdai.flags = sys::CDAI_FLAG_NONE;
            cdai.buftype = sys::CDAI_TYPE_SCSI_DEVID;
            cdai.bufsiz = buf.len() as sys::off_t;
            cdai.buf = buf.as_mut_ptr();
            sys::xpt_action((&raw mut cdai).cast());
            if cdai.ccb_h.status & sys::CAM_DEV_QFRZN != 0 {
                sys::cam_release_devq(cdai.ccb_h.path, 0, 0, 0, 0);
            }
            cdai.ccb_h.status & sys::CAM_STATUS_MASK == sys::CAM_REQ_CMP
        };
        let len = if provided {
            usize::try_from(cdai.provsiz).unwrap_or(0).min(buf.len())
        } else {
            0
        };
        buf.get(..len).unwrap_or(&[])
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
            Some(periph_start),
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
            // SAFETY: the periph is live; the state is published whole (see
            // Periph::softc); the destructor takes it back.
            unsafe { AtomicPtr::from_ptr(&raw mut (*p).softc).store(KBox::into_raw(softc).cast(), Ordering::Release) };
            periph::attached();
            sys::CAM_REQ_CMP
        }
        Err(status) => status.0,
    }
}

unsafe extern "C" fn periph_start(p: *mut sys::cam_periph, ccb: *mut sys::ccb) {
    // SAFETY: CAM passes a live periph, with its lock held, and a CCB
    // allocated for it.
    let mut lock = unsafe { PeriphLock::assume_held(Periph::from_ptr(p)) };
    // A CCB from CAM is never null.
    if let Some(ccb) = NonNull::new(ccb) {
        periph::io::start(&mut lock, StartCcb(ccb));
    }
}

unsafe extern "C" fn periph_oninvalidate(p: *mut sys::cam_periph) {
    // SAFETY: CAM passes a live periph with its lock held.
    let mut lock = unsafe { PeriphLock::assume_held(Periph::from_ptr(p)) };
    periph::oninvalidate(&mut lock);
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
