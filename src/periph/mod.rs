//! The CAM peripheral driver `ctlpass`: one periph on every SCSI device CAM
//! knows (except CTL's own `camsim` LUNs), holding the device's identity so
//! that the backend can find it by name, address, device id or serial
//! number, and carrying the backend's requests to it (`io`).

pub mod io;

use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::backend::DeviceName;
use crate::kern::alloc::{KBox, Wait};
use crate::kern::cam::{
    self, CamAddress, CamStatus, DeviceLocked, GetDev, Path, PeriphLock, PeriphLocked, SERIAL_NUM_LEN, SIM_NAME_LEN,
};
use crate::kern::cam::{Periph, PeriphRef};
use crate::kern::errno::Errno;
use crate::kern::fmt::FmtBuf;
use crate::printf;
use crate::scsi::inquiry::{Ascii, Inquiry, Qualifier};
use crate::scsi::vpd::DevId;

/// The SIM name of CTL's own CAM frontend (ctl_frontend_cam_sim.c).  Its
/// devices are CTL LUNs: exporting them into CTL again would loop.
const CTL_CAMSIM: &[u8] = b"camsim";

/// Set while the driver detaches (deinit): devices that arrive then,
/// including deferred re-arrivals replayed when an old periph is freed, are
/// not attached.
static DETACHING: AtomicBool = AtomicBool::new(false);

/// The identity of a device, cached when the periph attaches.
pub struct Identity {
    /// Where the device is.
    pub address: CamAddress,
    /// Standard INQUIRY data.
    pub inquiry: Inquiry,
    serial: [u8; SERIAL_NUM_LEN],
    serial_len: usize,
    sim_name: [u8; SIM_NAME_LEN],
    sim_name_len: usize,
    /// The SIM's unit number.
    pub sim_unit: u32,
    /// Largest transfer the SIM accepts, in bytes.
    pub max_io: u32,
}

impl Identity {
    /// The unit serial number (VPD page 0x80) as CAM read it; may be empty.
    pub fn serial(&self) -> &[u8] {
        self.serial.get(..self.serial_len).unwrap_or(&[])
    }

    /// The name of the SIM (host adapter driver) the device is behind.
    pub fn sim_name(&self) -> &[u8] {
        self.sim_name.get(..self.sim_name_len).unwrap_or(&[])
    }
}

/// The driver's state for one periph.
pub struct Softc {
    /// The device's identity.
    pub identity: Identity,
    /// Cleared when the periph is invalidated (the device went away or the
    /// driver detaches).
    valid: AtomicBool,
    /// The LUN the device backs: [`NO_LUN`], [`CLAIMED`] while a request
    /// creates one, or its number.
    lun: AtomicU32,
    /// Reset the device when CTL clears the task set of its LUN (the LUN's
    /// `reset=device`).
    reset_device: AtomicBool,
    /// The I/O queues, under the periph's lock.
    pub locked: PeriphLocked<io::Locked>,
}

/// The device backs no LUN.
const NO_LUN: u32 = u32::MAX;
/// A create request has claimed the device and is still creating the LUN.
const CLAIMED: u32 = u32::MAX - 1;

/// The claim of a LUN on its device: a device backs at most one LUN.  It
/// holds the periph reference the LUN keeps, and gives the device up when
/// dropped, unless the LUN took the reference ([`Claim::into_ref`]).
pub struct Claim {
    periph: Option<PeriphRef>,
}

impl Claim {
    /// Claims the device of `periph`; if it is taken, says by which LUN
    /// (`None`: a create request still in progress).
    pub fn new(periph: PeriphRef) -> Result<Claim, Option<u32>> {
        let Some(softc) = periph.softc() else { return Err(None) };
        match softc
            .lun
            .compare_exchange(NO_LUN, CLAIMED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Ok(Claim { periph: Some(periph) }),
            Err(CLAIMED) => Err(None),
            Err(id) => Err(Some(id)),
        }
    }

    /// The claimed device's periph.
    pub fn periph(&self) -> Option<&PeriphRef> {
        self.periph.as_ref()
    }

    /// Records the number CTL gave the LUN.
    pub fn set_lun(&self, id: u32) {
        if let Some(p) = &self.periph {
            set_lun(p, id);
        }
    }

    /// The periph reference, for the LUN, which gives the device up with
    /// [`release`] when it is done with it.
    pub fn into_ref(mut self) -> Option<PeriphRef> {
        self.periph.take()
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(p) = &self.periph {
            release(p);
        }
    }
}

/// Records the number CTL gave the LUN the device of `periph` backs.
pub fn set_lun(periph: &Periph, id: u32) {
    if let Some(s) = periph.softc() {
        s.lun.store(id, Ordering::Release);
    }
}

/// Gives the device of `periph` up: it backs no LUN any more.
pub fn release(periph: &Periph) {
    set_lun(periph, NO_LUN);
    set_reset_device(periph, false);
}

/// Whether the device of `periph` is reset when CTL clears its LUN's task
/// set (LUN RESET, CLEAR TASK SET) instead of its commands being aborted
/// one by one.
pub fn set_reset_device(periph: &Periph, on: bool) {
    if let Some(s) = periph.softc() {
        s.reset_device.store(on, Ordering::Release);
    }
}

/// Room for a device name (`ctlpass4294967295`).
pub const DEVICE_NAME_LEN: usize = 24;

/// The ctlpass periph of the device an administrator named, with a
/// reference to it; `None` if there is no such (valid) device.
pub fn find(name: &DeviceName<'_>) -> Option<PeriphRef> {
    let on = |address: CamAddress| {
        move |p: &crate::kern::cam::Periph| p.softc().is_some_and(|s| s.is_valid() && s.identity.address == address)
    };
    match *name {
        DeviceName::Periph {
            driver: "ctlpass",
            unit,
        } => cam::find_periph(|p| p.unit_number() == unit && p.softc().is_some_and(Softc::is_valid)),
        DeviceName::Periph { driver, unit } => {
            let mut address = None;
            cam::walk_periphs(|d, u, a| {
                let hit = d == driver.as_bytes() && u == unit;
                if hit {
                    address = Some(a);
                }
                hit
            });
            cam::find_periph(on(address?))
        }
        DeviceName::Address {
            path_id,
            target_id,
            lun_id,
        } => cam::find_periph(on(CamAddress {
            path_id,
            target_id,
            lun_id,
        })),
        DeviceName::Serial(serial) => cam::find_periph(|p| {
            p.softc()
                .is_some_and(|s| s.is_valid() && s.identity.serial() == serial.as_bytes())
        }),
        DeviceName::DevId(text) => cam::find_periph(|p| {
            if !p.softc().is_some_and(Softc::is_valid) {
                return false;
            }
            let mut page = [0u8; 256];
            let lock = p.lock();
            DevId::of(lock.device_id_page(&mut page)).is_some_and(|id| id.matches(text))
        }),
    }
}

/// The name administrators know the periph's device by: its disk, CD,
/// tape or changer periph (`da3`), else its pass periph, else the ctlpass
/// periph itself.
pub fn device_name(periph: &crate::kern::cam::Periph) -> FmtBuf<DEVICE_NAME_LEN> {
    let mut best: Option<(u8, FmtBuf<DEVICE_NAME_LEN>)> = None;
    if let Some(address) = periph.softc().map(|s| s.identity.address) {
        cam::walk_periphs(|driver, unit, a| {
            let rank = match driver {
                b"ctlpass" => 2,
                b"pass" => 1,
                _ => 0,
            };
            if a == address && best.as_ref().is_none_or(|(r, _)| rank < *r) {
                let mut name = FmtBuf::new();
                let _ = write!(name, "{}{unit}", Ascii(driver));
                best = Some((rank, name));
            }
            false
        });
    }
    best.map(|(_, n)| n).unwrap_or_else(|| {
        let mut name = FmtBuf::new();
        let _ = write!(name, "ctlpass{}", periph.unit_number());
        name
    })
}

impl Softc {
    /// Whether the periph still serves its device.
    pub fn is_valid(&self) -> bool {
        self.valid.load(Ordering::Acquire)
    }

    /// Whether its device backs a LUN (or a create request claimed it).
    pub fn backs_lun(&self) -> bool {
        self.lun.load(Ordering::Acquire) != NO_LUN
    }

    /// Whether its device is reset when CTL clears its LUN's task set (see
    /// [`set_reset_device`]).
    pub fn resets_device(&self) -> bool {
        self.reset_device.load(Ordering::Acquire)
    }
}

/// Called when the driver is registered (module load): attach to every SCSI
/// device that exists and to every one that arrives later.
pub fn init() {
    DETACHING.store(false, Ordering::Release);
    if let Err(status) = cam::register_found_device() {
        printf!("ctlpass: cannot register for device arrivals ({status}); no device will be attached\n");
    }
}

/// Called when the driver is unregistered (module unload).  Refused with
/// EBUSY while a LUN uses a device or an abandoned command has not come
/// back from its device; otherwise detaches from every device and returns
/// once all periphs are freed.
pub fn deinit() -> Result<(), Errno> {
    crate::backend::quiesce()?;
    DETACHING.store(true, Ordering::Release);
    cam::deregister_found_device();
    cam::for_each_periph(|periph| periph.lock().invalidate());
    // References held by CAM itself (a completion in progress) are released
    // shortly; wait for the last periph to be freed so that no CAM callback
    // can reach the module once it is gone.
    let mut waited: u32 = 0;
    while !cam::no_periphs() {
        cam::pause(c"ctlpdet", (cam::hz() / 10).max(1));
        waited = waited.wrapping_add(1);
        if waited.is_multiple_of(50) {
            printf!("ctlpass: waiting for periphs to be released\n");
        }
    }
    Ok(())
}

/// `AC_FOUND_DEVICE`: a device arrived (or existed when the driver was
/// registered).  Attach unless it is not SCSI, is one of CTL's own LUNs, or
/// reports no connected logical unit.
pub fn device_found(path: &Path, cgd: &GetDev, locked: &DeviceLocked) {
    if DETACHING.load(Ordering::Acquire) || !cgd.is_scsi() {
        return;
    }
    match Inquiry::parse(cgd.inquiry_data()) {
        Ok(inq) if inq.qualifier == Qualifier::Connected => {}
        _ => return,
    }
    if path.inquire().sim_name() == CTL_CAMSIM {
        return;
    }
    let status = cam::periph_alloc(path, cgd, locked);
    if status != CamStatus::REQ_CMP && status != CamStatus::REQ_INPROG {
        printf!(
            "ctlpass: cannot attach to the device at {} ({status})\n",
            path.address()
        );
    }
}

/// Builds the state of a new periph.  On error CAM frees the periph without
/// calling [`dtor`].
pub fn ctor(lock: &PeriphLock<'_>, cgd: &GetDev) -> Result<KBox<Softc>, CamStatus> {
    let periph = lock.periph();
    let path = periph.path();
    let inquiry = Inquiry::parse(cgd.inquiry_data()).map_err(|_| CamStatus::REQ_CMP_ERR)?;
    let cpi = path.inquire();
    let mut identity = Identity {
        address: path.address(),
        inquiry,
        serial: [0; SERIAL_NUM_LEN],
        serial_len: 0,
        sim_name: [0; SIM_NAME_LEN],
        sim_name_len: 0,
        sim_unit: cpi.sim_unit(),
        max_io: cpi.max_io(),
    };
    identity.serial_len = copy_prefix(&mut identity.serial, cgd.serial_number());
    identity.sim_name_len = copy_prefix(&mut identity.sim_name, cpi.sim_name());
    let softc = KBox::new(
        Softc {
            identity,
            valid: AtomicBool::new(true),
            lun: AtomicU32::new(NO_LUN),
            reset_device: AtomicBool::new(false),
            locked: PeriphLocked::new(io::Locked::default()),
        },
        Wait::NoWait,
    )
    .map_err(|_| {
        printf!("ctlpass{}: no memory for the periph's state\n", periph.unit_number());
        CamStatus::RESRC_UNAVAIL
    })?;
    if let Err(status) = lock.register_lost_device() {
        printf!(
            "ctlpass{}: cannot register for device loss ({status})\n",
            periph.unit_number()
        );
        return Err(status);
    }
    let id = &softc.identity;
    printf!(
        "ctlpass{}: {} {} at scbus{} target {} lun {} ({}{})\n",
        periph.unit_number(),
        id.inquiry.description(),
        id.inquiry.device_type.name(),
        id.address.path_id,
        id.address.target_id,
        id.address.lun_id,
        Ascii(id.sim_name()),
        id.sim_unit,
    );
    Ok(softc)
}

/// The new periph's state is published (after [`ctor`]): an offline LUN
/// may be waiting for its device.
pub fn attached() {
    crate::backend::devices_changed();
}

/// The periph is invalidated: its device is gone or the driver detaches.
/// Requests still waiting for a CCB complete as failed.
pub fn oninvalidate(lock: &mut PeriphLock<'_>) {
    lock.deregister_async();
    if let Some(softc) = lock.periph().softc() {
        softc.valid.store(false, Ordering::Release);
    }
    io::invalidate(lock);
    // A LUN on the device goes offline (or away), from a task.
    crate::backend::devices_changed();
}

/// The last reference to the periph is gone; its state is freed here.
pub fn dtor(lock: &PeriphLock<'_>, softc: KBox<Softc>) {
    drop(softc);
    printf!("ctlpass{}: detached\n", lock.periph().unit_number());
}

/// Copies as much of `src` as fits into `dst`; returns the length copied.
fn copy_prefix(dst: &mut [u8], src: &[u8]) -> usize {
    let n = dst.len().min(src.len());
    for (d, s) in dst.iter_mut().zip(src) {
        *d = *s;
    }
    n
}
