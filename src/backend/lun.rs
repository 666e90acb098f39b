//! Creating, removing and modifying passthrough LUNs (`CTL_LUNREQ_*`), in
//! the requesting process's context, where sleeping is allowed.
//!
//! Create: read the options, find the device (taking a periph reference
//! before any lock is dropped), claim it (a device backs one LUN), probe its
//! identity with synchronous commands, plan the LUN from it, and hand it to
//! CTL.  Remove: ask CTL, then wait until CTL calls `lun_shutdown` (when the
//! LUN's last I/O is done); a signal ends the wait and leaves the rest to
//! `lun_shutdown`.  Modify: take the options that may change at run time,
//! read the capacity again and tell CTL if it changed.

use core::ffi::CStr;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};

use super::identity::{self, About, Plan, PlanError, Probe};
use super::io::IoLimits;
use super::options::{self, DeviceName, OptionError, Shown};
use super::sysctl::{self, LunStats};
use super::{Entry, Retired, lock};
use crate::kern::alloc::{KBox, Wait};
use crate::kern::cam::{CamAddress, CamStatus, Periph, PeriphLock, PeriphRef, ScsiResult, SharedPeriph};
use crate::kern::ctl::{LunConfig, LunFlags, LunRef, LunReq, MediaEvent, Sbuf};
use crate::kern::errno::Errno;
use crate::kern::fmt::FmtBuf;
use crate::kern::nv::{NvList, OwnedNvList};
use crate::kern::sysctl::SysctlCtx;
use crate::periph::{self, Claim, DEVICE_NAME_LEN};
use crate::printf;
use crate::scsi::capacity::{self, Capacity, CapacityError};
use crate::scsi::cdb;
use crate::scsi::inquiry::{Ascii, Inquiry, PeripheralType, ShortInquiry};
use crate::scsi::sense::{Sense, key};
use crate::scsi::vpd::{self, BlockLimits, DevId, Provisioning};

/// Text for `error_str` (CTL keeps 160 bytes of it, NUL included).
type Message = FmtBuf<160>;

/// A device's name, as administrators know it (`da3`).
pub(super) type Name = FmtBuf<DEVICE_NAME_LEN>;

/// Why a LUN request failed, or (for `Warning`) what it did not do as asked;
/// displayed, it is the `error_str` ctladm and ctld show.
enum LunError<'a> {
    /// A missing or bad option.
    Option(OptionError<'a>),
    /// No valid SCSI device has that name.
    NoDevice(DeviceName<'a>),
    /// The device backs a LUN already (`None`: a create request is still
    /// making it).
    Exported { name: Name, lun: Option<u32> },
    /// The device did not answer a probe.
    Probe { name: Name, error: ProbeError },
    /// The device cannot be exported as asked.
    Plan { name: Name, error: PlanError },
    /// Memory ran out.
    NoMemory,
    /// The LUN's options could not be copied or set.
    Options(Errno),
    /// CTL did not take the LUN: the number asked for, if any, and the
    /// device of the passthrough LUN that has that number, if one does.
    Add {
        error: Errno,
        asked: Option<u32>,
        holder: Option<Name>,
    },
    /// No passthrough LUN has this number.
    NoLun(u32),
    /// The LUN is being removed.
    Removing(u32),
    /// The remove request was interrupted by a signal; `lun_shutdown` will
    /// finish the removal.
    Interrupted(u32),
    /// Modify: an option that cannot change on a live LUN, and its new
    /// value (`None`: no longer given).
    Fixed { option: FmtBuf<64>, now: Option<&'a CStr> },
    /// Modify: a size asked for that is not the LUN's, whose device cannot
    /// say its capacity now (lost, or without a medium).
    SizeUnknown { name: Name, asked: u64, known: u64 },
    /// Modify: the device's block size changed.
    BlockSizeChanged { name: Name, from: u32, to: u32 },
}

impl fmt::Display for LunError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LunError::Option(e) => write!(f, "{e}"),
            LunError::NoDevice(name @ DeviceName::Periph { .. }) => write!(f, "no SCSI device {name}"),
            LunError::NoDevice(name) => write!(f, "no SCSI device with {name}"),
            LunError::Exported { name, lun: Some(id) } => {
                write!(f, "{} is already exported as LUN {id}", name.as_str())
            }
            LunError::Exported { name, lun: None } => {
                write!(f, "{} is being exported by another request", name.as_str())
            }
            LunError::Probe { name, error } => write!(f, "{}: {error}", name.as_str()),
            LunError::Plan { name, error } => write!(f, "{}", About(&name.as_str(), *error)),
            LunError::NoMemory => f.write_str("out of memory"),
            LunError::Options(e) => write!(f, "cannot set the LUN's options: {e}"),
            LunError::Add {
                error: Errno::ENOSPC,
                asked: Some(id),
                holder: Some(name),
            } => write!(f, "LUN {id} is in use: it exports {}", name.as_str()),
            // ctl_add_lun (sys/cam/ctl/ctl.c) refuses both with ENOSPC and
            // says which on the console.
            LunError::Add {
                error: Errno::ENOSPC,
                asked: Some(id),
                holder: None,
            } => write!(
                f,
                "LUN {id} is in use by another backend or beyond CTL's limit (kern.cam.ctl.max_luns; see dmesg)"
            ),
            LunError::Add {
                error: Errno::ENOSPC,
                asked: None,
                ..
            } => f.write_str("CTL has no free LUN number (kern.cam.ctl.max_luns)"),
            LunError::Add { error, .. } => write!(f, "ctl_add_lun failed: {error}"),
            LunError::NoLun(id) => write!(f, "no passthrough LUN {id}"),
            LunError::Removing(id) => write!(f, "LUN {id} is being removed"),
            LunError::Interrupted(id) => {
                write!(f, "interrupted; LUN {id} will be removed when its last I/O completes")
            }
            LunError::Fixed { option, now } => {
                let now = now.map_or(b"(unset)".as_slice(), |v| v.to_bytes());
                write!(
                    f,
                    "option {} cannot change on a live LUN (to {}); remove and create the LUN again",
                    Shown::quoted(option.as_str().as_bytes()),
                    Shown::quoted(now)
                )
            }
            LunError::SizeUnknown { name, asked, known } => write!(
                f,
                "size {asked} is not the LUN's {known} bytes, and {} cannot say its capacity now",
                name.as_str()
            ),
            LunError::BlockSizeChanged { name, from, to } => write!(
                f,
                "{}'s block size changed from {from} to {to}; remove and create the LUN again",
                name.as_str()
            ),
        }
    }
}

/// A probe command that failed, or answered what cannot be used.
#[derive(Clone, Copy, Debug)]
enum ProbeError {
    /// INQUIRY failed.
    Inquiry(Failure),
    /// The INQUIRY data is too short.
    InquiryData(ShortInquiry),
    /// READ CAPACITY(16) or (10) failed.
    Capacity { cdb_len: u8, failure: Failure },
    /// The READ CAPACITY data cannot be used.
    CapacityData(CapacityError),
    /// More than 2^32 blocks, and no READ CAPACITY(16) to say how many.
    TooLarge,
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeError::Inquiry(failure) => write!(f, "INQUIRY failed: {failure}"),
            ProbeError::InquiryData(e) => write!(f, "{e}"),
            ProbeError::Capacity { cdb_len, failure } => write!(f, "READ CAPACITY({cdb_len}) failed: {failure}"),
            ProbeError::CapacityData(e) => write!(f, "{e}"),
            ProbeError::TooLarge => {
                f.write_str("the device is too large for READ CAPACITY(10) and has no READ CAPACITY(16)")
            }
        }
    }
}

/// The `error_str` text of `e`.
fn message(e: &dyn fmt::Display) -> Message {
    let mut m = Message::new();
    // Writing to a FmtBuf never fails; it truncates.
    let _ = write!(m, "{e}");
    m
}

/// Where a LUN's device is now: what `devlist -v` shows of it, kept in the
/// backend's record of the LUN (a device that returns may be elsewhere).
#[derive(Clone, Copy)]
pub(super) struct Place {
    /// The device's name (`da3`).
    pub(super) name: Name,
    /// Its CAM address.
    address: CamAddress,
    /// The SIM and its unit (`mpr0`).
    sim: FmtBuf<24>,
    /// The ctlpass periph's unit.
    unit: u32,
}

impl Place {
    /// Where the device of `periph` is.
    fn of(periph: &Periph) -> Place {
        let mut sim = FmtBuf::new();
        let mut address = CamAddress {
            path_id: 0,
            target_id: 0,
            lun_id: 0,
        };
        if let Some(s) = periph.softc() {
            let _ = write!(sim, "{}{}", Ascii(s.identity.sim_name()), s.identity.sim_unit);
            address = s.identity.address;
        }
        Place {
            name: periph::device_name(periph),
            address,
            sim,
            unit: periph.unit_number(),
        }
    }
}

/// A passthrough LUN: the device it exports, held until CTL is done.
pub struct Lun {
    /// The device's periph, let go while the device is lost.
    device: SharedPeriph,
    /// The device is bound and CTL knows it has its medium: cleared when
    /// the device is lost, set once it is back.
    online: AtomicBool,
    /// The device's unit serial number, by which (or by `devid`) it is
    /// found again when it returns.
    serial: FmtBuf<256>,
    /// The device's NAA or EUI-64 designator, as text.
    devid: FmtBuf<48>,
    /// The largest transfer the SIM takes, in bytes.
    max_io: u32,
    /// The device's whole serial number, when CTL shows only its tail.
    long_serial: Option<FmtBuf<256>>,
    /// How commands for the device are sized.
    io: IoLimits,
    /// Bytes of data buffers the LUN's device may keep
    /// (`kern.cam.ctl.passthrough.pool_size` when it was created).
    pool_size: usize,
    /// Its counters (`kern.cam.ctl.passthrough.lun.<id>`).
    pub(super) stats: LunStats,
}

impl Lun {
    /// Whether the device is bound and CTL knows the LUN has its medium.
    pub(super) fn is_online(&self) -> bool {
        self.online.load(Ordering::Acquire)
    }

    /// How commands for the device are sized.
    pub(super) fn io_limits(&self) -> IoLimits {
        self.io
    }

    /// The device's periph, which callers reach only while entered.
    pub(crate) fn device(&self) -> &SharedPeriph {
        &self.device
    }

    /// How the device is found again when it returns: its device id, else
    /// its serial number.
    pub(super) fn identity(&self) -> DeviceName<'_> {
        if self.devid.as_str().is_empty() {
            DeviceName::Serial(self.serial.as_str())
        } else {
            DeviceName::DevId(self.devid.as_str())
        }
    }

    /// The device is lost: the LUN lets its periph go (the last I/O to
    /// leave releases it if any is left).
    pub(super) fn lose_device(&self) {
        self.online.store(false, Ordering::Release);
        drop(self.device.let_go());
    }

    /// CTL is done with the LUN: the device backs no LUN any more, and its
    /// periph reference goes.
    pub(super) fn close_device(&self) {
        self.online.store(false, Ordering::Release);
        if self.device.enter() {
            if let Some(p) = self.device.periph() {
                periph::io::trim(p);
                periph::release(p);
            }
            drop(self.device.leave());
        }
        drop(self.device.close());
    }

    /// Writes `lun_info`'s elements, with where the device is (`place`).
    /// Called with CTL's mutexes held: reads only what never changes, and
    /// atomics.
    pub(super) fn info(&self, place: Option<&Place>, sb: &mut Sbuf) {
        if let Some(p) = place {
            sb.element("periph", format_args!("{}", p.name.as_str()));
            sb.element("ctlpass", format_args!("ctlpass{}", p.unit));
        }
        let state = if self.is_online() { "online" } else { "offline" };
        sb.element("state", format_args!("{state}"));
        if let Some(p) = place {
            sb.element("cam_path", format_args!("{}", p.address));
            sb.element("sim", format_args!("{}", p.sim.as_str()));
        }
        if !self.devid.as_str().is_empty() {
            sb.element("devid", format_args!("{}", self.devid.as_str()));
        }
        sb.element("maxio", format_args!("{}", self.max_io));
        sb.element(
            "mode",
            format_args!("{}", super::sysctl::mode().name().to_str().unwrap_or("")),
        );
        if let Some(serial) = &self.long_serial {
            sb.element("device_serial", format_args!("{}", serial.as_str()));
        }
    }
}

impl Drop for Lun {
    fn drop(&mut self) {
        // The device backs no LUN any more (if it is still bound).
        if self.device.enter() {
            if let Some(p) = self.device.periph() {
                periph::release(p);
            }
            drop(self.device.leave());
        }
    }
}

/// Command timeouts, in milliseconds: identity pages answer at once; a
/// spinning-up disk may take its time over READ CAPACITY.
const INQUIRY_TIMEOUT: u32 = 10_000;
const CAPACITY_TIMEOUT: u32 = 30_000;

/// How often a probe is retried after a unit attention (a reset or a
/// medium change the device reports once).
const UNIT_ATTENTION_RETRIES: usize = 3;

/// A probe command that failed.
#[derive(Clone, Copy, Debug)]
struct Failure {
    status: CamStatus,
    scsi_status: u8,
    sense: Option<Sense>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.sense {
            Some(s) => write!(f, "sense key {:#x}, ASC/ASCQ {:#04x}/{:#04x}", s.key, s.asc, s.ascq),
            None if self.status == CamStatus::SCSI_STATUS_ERROR => {
                write!(f, "SCSI status {:#04x}", self.scsi_status)
            }
            None => write!(f, "{}", self.status),
        }
    }
}

/// Runs a probe command; returns the bytes read.
fn run(lock: &PeriphLock<'_>, cdb: &[u8], buf: &mut [u8], timeout: u32) -> Result<usize, Failure> {
    let mut last = None;
    for _ in 0..UNIT_ATTENTION_RETRIES {
        let r: ScsiResult = lock.run_scsi(cdb, buf, timeout);
        if r.is_ok() {
            return Ok(buf.len().saturating_sub(r.resid as usize));
        }
        let failure = Failure {
            status: r.status,
            scsi_status: r.scsi_status,
            sense: Sense::parse(r.sense()),
        };
        if failure.sense.is_none_or(|s| s.key != key::UNIT_ATTENTION) {
            return Err(failure);
        }
        last = Some(failure);
    }
    Err(last.unwrap_or(Failure {
        status: CamStatus::REQ_CMP_ERR,
        scsi_status: 0,
        sense: None,
    }))
}

/// Buffers for the identity probes, allocated before the periph lock is
/// taken (a sleeping allocation cannot be made under it).
struct Buffers {
    inquiry: [u8; 96],
    pages: [u8; 255],
    serial: [u8; 255],
    devid: [u8; 255],
    limits: [u8; 64],
    provisioning: [u8; 8],
    capacity: [u8; cdb::READ_CAPACITY_16_LEN],
}

impl Buffers {
    fn new() -> Result<KBox<Buffers>, LunError<'static>> {
        KBox::new(
            Buffers {
                inquiry: [0; 96],
                pages: [0; 255],
                serial: [0; 255],
                devid: [0; 255],
                limits: [0; 64],
                provisioning: [0; 8],
                capacity: [0; cdb::READ_CAPACITY_16_LEN],
            },
            Wait::WaitOk,
        )
        .map_err(|_| LunError::NoMemory)
    }
}

/// Reads a VPD page; the bytes read, or none if the device refuses.
fn read_vpd<'b>(lock: &PeriphLock<'_>, page: u8, buf: &'b mut [u8]) -> &'b [u8] {
    let len = u16::try_from(buf.len()).unwrap_or(u16::MAX);
    match run(lock, &cdb::inquiry(Some(page), len), buf, INQUIRY_TIMEOUT) {
        Ok(n) => buf.get(..n).unwrap_or(&[]),
        Err(_) => &[],
    }
}

/// Reads a VPD page if the device lists it.
fn vpd_page<'b>(lock: &PeriphLock<'_>, supported: &[u8], page: u8, buf: &'b mut [u8]) -> &'b [u8] {
    if vpd::supports(supported, page) {
        read_vpd(lock, page, buf)
    } else {
        &[]
    }
}

/// Reads the geometry: READ CAPACITY(16) for a disk (READ CAPACITY(10) if
/// the device does not know it), READ CAPACITY(10) for a CD.  `Ok(None)`
/// when there is no medium.
fn read_capacity(lock: &PeriphLock<'_>, kind: PeripheralType, buf: &mut [u8]) -> Result<Option<Capacity>, ProbeError> {
    if kind == PeripheralType::DIRECT {
        match run(lock, &cdb::read_capacity_16(), buf, CAPACITY_TIMEOUT) {
            Ok(n) => {
                return capacity::parse_16(buf.get(..n).unwrap_or(&[]))
                    .map(Some)
                    .map_err(ProbeError::CapacityData);
            }
            Err(f) if f.sense.is_some_and(|s| s.is_illegal_request()) => {}
            Err(failure) => return Err(ProbeError::Capacity { cdb_len: 16, failure }),
        }
    }
    let buf10 = buf.get_mut(..cdb::READ_CAPACITY_10_LEN).unwrap_or(&mut []);
    match run(lock, &cdb::read_capacity_10(), buf10, CAPACITY_TIMEOUT) {
        Ok(n) => {
            let c = capacity::parse_10(buf10.get(..n).unwrap_or(&[])).map_err(ProbeError::CapacityData)?;
            if c.last_lba == u64::from(u32::MAX) {
                return Err(ProbeError::TooLarge);
            }
            Ok(Some(c))
        }
        Err(f) if f.sense.is_some_and(|s| s.is_medium_not_present()) && kind == PeripheralType::CDROM => Ok(None),
        Err(failure) => Err(ProbeError::Capacity { cdb_len: 10, failure }),
    }
}

/// Reads the device's identity and geometry.
fn probe<'b>(periph: &PeriphRef, bufs: &'b mut Buffers) -> Result<Probe<'b>, ProbeError> {
    let lock = periph.lock();
    let n = run(
        &lock,
        &cdb::inquiry(None, bufs.inquiry.len() as u16),
        &mut bufs.inquiry,
        INQUIRY_TIMEOUT,
    )
    .map_err(ProbeError::Inquiry)?;
    let inquiry = Inquiry::parse(bufs.inquiry.get(..n).unwrap_or(&[])).map_err(ProbeError::InquiryData)?;
    let supported = read_vpd(&lock, vpd::SUPPORTED_PAGES, &mut bufs.pages);
    let serial = vpd::unit_serial_number(vpd_page(&lock, supported, vpd::UNIT_SERIAL_NUMBER, &mut bufs.serial));
    let devid_page = vpd_page(&lock, supported, vpd::DEVICE_IDENTIFICATION, &mut bufs.devid);
    let (limits, provisioning) = if inquiry.device_type == PeripheralType::DIRECT {
        (
            BlockLimits::parse(vpd_page(&lock, supported, vpd::BLOCK_LIMITS, &mut bufs.limits)),
            Provisioning::parse(vpd_page(
                &lock,
                supported,
                vpd::LOGICAL_BLOCK_PROVISIONING,
                &mut bufs.provisioning,
            )),
        )
    } else {
        (None, None)
    };
    let capacity = match inquiry.device_type {
        t @ (PeripheralType::DIRECT | PeripheralType::CDROM) => read_capacity(&lock, t, &mut bufs.capacity)?,
        _ => None,
    };
    Ok(Probe {
        inquiry,
        serial,
        devid_page,
        capacity,
        limits,
        provisioning,
    })
}

/// The options the backend adds to a LUN's own, mirrored from the device
/// (by `identity_options`, in this order): a modify that does not send
/// them keeps them.
const MIRRORED: [&CStr; 9] = [
    c"vendor",
    c"product",
    c"revision",
    c"naa",
    c"eui",
    c"removable",
    c"unmap_max_lba",
    c"unmap_max_descr",
    c"write_same_max_lba",
];

/// Adds the identity CTL emulates to the LUN's options (vendor, product,
/// revision, designators, limits), unless the administrator set them.
fn identity_options(options: &mut OwnedNvList, plan: &Plan<'_>, inquiry: &Inquiry) -> Result<(), Errno> {
    type Text = FmtBuf<72>;
    fn text(value: fmt::Arguments<'_>) -> Option<Text> {
        let mut t = Text::new();
        let _ = t.write_fmt(value);
        Some(t)
    }
    fn hex(id: &[u8]) -> Text {
        let mut t = Text::new();
        for b in id {
            let _ = write!(t, "{b:02x}");
        }
        t
    }
    fn nonzero(n: u64) -> Option<Text> {
        if n == 0 { None } else { text(format_args!("{n}")) }
    }
    let limit = |f: fn(&BlockLimits) -> u64| plan.unmap_limits.as_ref().and_then(|l| nonzero(f(l)));
    // One value for each of MIRRORED, in its order.
    let values: [Option<Text>; MIRRORED.len()] = [
        text(format_args!("{}", Ascii(&inquiry.vendor))),
        text(format_args!("{}", Ascii(&inquiry.product))),
        text(format_args!("{}", Ascii(&inquiry.revision))),
        plan.naa.map(hex),
        plan.eui.map(hex),
        plan.removable.then(|| text(format_args!("on"))).flatten(),
        limit(|l| u64::from(l.max_unmap_lba)),
        limit(|l| u64::from(l.max_unmap_descriptors)),
        limit(|l| l.max_write_same),
    ];
    for (name, value) in MIRRORED.into_iter().zip(values) {
        if let Some(v) = value
            && options.as_list().get(name).is_none()
        {
            options.set(name, v.as_c_str())?;
        }
    }
    Ok(())
}

/// A LUN a create request made, and what it did not do as asked.
struct Created {
    lun: LunRef,
    lun_type: u8,
    warning: Option<Message>,
}

/// `CTL_LUNREQ_CREATE`.
pub(super) fn create(req: &mut LunReq<'_>) {
    match create_lun(req).map_err(|e| message(&e)) {
        Ok(Created { lun, lun_type, warning }) => {
            req.set_created(&lun, lun_type);
            if let Some(w) = warning {
                req.set_warning(format_args!("{}", w.as_str()));
            }
        }
        Err(m) => req.set_error(format_args!("{}", m.as_str())),
    }
}

fn create_lun<'r>(req: &'r LunReq<'_>) -> Result<Created, LunError<'r>> {
    let asked = req.create_params();
    let args = req.args().ok_or(LunError::Option(OptionError::MissingDevice))?;
    let opts = options::parse(args.iter().map(|p| (p.name.to_bytes(), p.value.map(CStr::to_bytes))))
        .map_err(LunError::Option)?;
    let (serial, device_id) = (asked.serial_num.as_ref(), asked.device_id.as_ref());
    options::check_ids(serial.map(|s| &s[..]), device_id.map(|d| &d[..])).map_err(LunError::Option)?;
    // The periph reference is taken before any lock is dropped.
    let periph = periph::find(&opts.device).ok_or(LunError::NoDevice(opts.device))?;
    let mut options = OwnedNvList::clone_of(&args).map_err(LunError::Options)?;
    let name = periph::device_name(&periph);
    let claim = Claim::new(periph).map_err(|lun| LunError::Exported { name, lun })?;
    let Some(claimed) = claim.periph() else {
        return Err(LunError::NoDevice(opts.device));
    };
    periph::set_reset_device(claimed, opts.reset_device);
    let pool_size = sysctl::pool_size();
    periph::io::set_pool_size(claimed, pool_size);
    let mut bufs = Buffers::new()?;
    let probed = probe(claimed, &mut bufs).map_err(|error| LunError::Probe { name, error })?;
    let plan = identity::plan(&probed, &asked, &opts).map_err(|error| LunError::Plan { name, error })?;
    identity_options(&mut options, &plan, &probed.inquiry).map_err(LunError::Options)?;
    let max_io = claimed.softc().map_or(0, |s| s.identity.max_io);
    let place = Place::of(claimed);
    let mut serial = FmtBuf::new();
    let _ = write!(serial, "{}", Ascii(probed.serial));
    let mut devid = FmtBuf::new();
    if let Some(id) = DevId::of(probed.devid_page) {
        let _ = write!(devid, "{id}");
    }
    let long_serial = plan.serial_truncated.then(|| {
        let mut s = FmtBuf::new();
        let _ = write!(s, "{}", Ascii(probed.serial));
        s
    });
    let lun_type = plan.lun.lun_type;
    let warning = plan.warning.map(|w| message(&About(&name.as_str(), w)));
    let config = LunConfig {
        params: plan.lun,
        req_lun_id: asked.lun_id.unwrap_or(0),
        options,
    };
    let io = IoLimits::new(
        max_io,
        plan.lun.blocksize,
        probed.limits,
        plan.lun.flags.contains(LunFlags::UNMAP),
    );
    drop(bufs);
    let Some(periph) = claim.into_ref() else {
        return Err(LunError::NoDevice(opts.device));
    };
    let lun = Lun {
        device: SharedPeriph::new(periph),
        online: AtomicBool::new(true),
        serial,
        devid,
        max_io,
        long_serial,
        io,
        pool_size,
        stats: LunStats::default(),
    };
    let lun = LunRef::new(config, lun).map_err(|_| LunError::NoMemory)?;
    // The backend's record of the LUN, listed once CTL has it (a remove
    // request cannot find a LUN CTL does not know).
    let entry = Entry::new(
        lun.clone(),
        place,
        opts.lost.unwrap_or_else(sysctl::lost),
        opts.reset_device,
    );
    let mut entry = KBox::new(entry, Wait::WaitOk).map_err(|_| LunError::NoMemory)?;
    let id = lun.add().map_err(|error| LunError::Add {
        error,
        asked: asked.lun_id,
        holder: asked.lun_id.and_then(exporting),
    })?;
    // Its sysctl node, now that CTL gave it its number.  The `lun` node
    // stays while requests run (unload waits for them).
    let luns = lock().tree.as_ref().map(sysctl::ModuleTree::luns);
    match luns.map(|l| sysctl::lun_node(l, lun.clone())) {
        Some(Ok(node)) => entry.sysctl = Some(node),
        Some(Err(e)) => printf!("ctlpass: LUN {id}: no sysctl node: {e}\n"),
        None => {}
    }
    if lun.lun().device.enter() {
        if let Some(p) = lun.lun().device.periph() {
            periph::set_lun(p, id);
        }
        drop(lun.lun().device.leave());
    }
    lock().luns.push_back(entry);
    Ok(Created { lun, lun_type, warning })
}

/// The device passthrough LUN `id` exports, if there is one.
fn exporting(id: u32) -> Option<Name> {
    lock().luns.find_mut(|e| e.lun.id() == id).map(|e| e.place.name)
}

/// The LUN a remove or modify request names, unless it is being removed;
/// for a remove, it is marked as being removed, with the request waiting,
/// and its sysctl node comes along to be freed.
fn lookup(id: u32, for_removal: bool) -> Result<(LunRef, Option<SysctlCtx<LunRef>>), LunError<'static>> {
    let mut be = lock();
    match be.luns.find_mut(|e| e.lun.id() == id) {
        Some(e) if e.removing => Err(LunError::Removing(id)),
        Some(e) => {
            e.removing = for_removal;
            e.waiter = for_removal;
            let node = if for_removal { e.sysctl.take() } else { None };
            Ok((e.lun.clone(), node))
        }
        None => Err(LunError::NoLun(id)),
    }
}

/// `CTL_LUNREQ_RM`: returns once CTL has shut the LUN down.
pub(super) fn remove(req: &mut LunReq<'_>) {
    let id = req.lun_id();
    let lun = match lookup(id, true) {
        Ok((l, node)) => {
            // The node goes first, here where sleeping is allowed: its
            // handlers read the LUN.
            drop(node);
            l
        }
        Err(e) => return req.set_error(format_args!("{e}")),
    };
    lun.remove();
    let mut be = lock();
    let mut removed = None;
    while let Some(entry) = be.entry(&lun) {
        if entry.shut_down {
            removed = be.luns.remove_first(|e| e.lun.same(&lun));
            break;
        }
        if be.sleep(lun.lun(), c"ctlprm", true).is_err() {
            // Interrupted: lun_shutdown finishes the removal.
            if let Some(entry) = be.entry(&lun) {
                entry.waiter = false;
            }
            drop(be);
            return req.set_error(format_args!("{}", LunError::Interrupted(id)));
        }
    }
    drop(be);
    drop((removed, lun));
    req.set_ok();
}

/// Whether the LUN's device is lost (its periph invalidated), and the LUN
/// has not let it go yet.
pub(super) fn lost(lun: &LunRef) -> bool {
    let device = lun.lun().device();
    if !device.enter() {
        return false;
    }
    let gone = device
        .periph()
        .is_none_or(|p| !p.softc().is_some_and(periph::Softc::is_valid));
    // Not being let go, so this returns nothing.
    drop(device.leave());
    gone
}

/// Binds an offline LUN to its device if it is back (same device id or
/// serial number, the same block size, room for the LUN's transfers):
/// reads its capacity, tells CTL if it changed, and brings the medium back.
/// Returns where the device now is.
pub(super) fn rebind(lun: &LunRef, reset_device: bool) -> Option<Place> {
    let l = lun.lun();
    let periph = periph::find(&l.identity())?;
    let claim = Claim::new(periph).ok()?;
    let p = claim.periph()?;
    let place = Place::of(p);
    let name = place.name;
    let (kind, max_io) = p.softc().map_or((PeripheralType(0), 0), |s| {
        (s.identity.inquiry.device_type, s.identity.max_io)
    });
    let (maxlba, blocksize) = lun.geometry();
    let mut buf = [0u8; cdb::READ_CAPACITY_16_LEN];
    let cap = match read_capacity(&p.lock(), kind, &mut buf) {
        Ok(c) => c,
        Err(e) => {
            printf!(
                "ctlpass: LUN {}: {} is back, but {e}; still offline\n",
                lun.id(),
                name.as_str()
            );
            return None;
        }
    };
    if let Some(c) = cap
        && c.block_size != blocksize
    {
        printf!(
            "ctlpass: LUN {}: {} is back with {}-byte blocks instead of {blocksize}; still offline\n",
            lun.id(),
            name.as_str(),
            c.block_size
        );
        return None;
    }
    if max_io < l.max_io {
        printf!(
            "ctlpass: LUN {}: {} is back behind a SIM taking {max_io} bytes at once, not {}; still offline\n",
            lun.id(),
            name.as_str(),
            l.max_io
        );
        return None;
    }
    periph::set_reset_device(p, reset_device);
    periph::io::set_pool_size(p, l.pool_size);
    claim.set_lun(lun.id());
    let periph = claim.into_ref()?;
    if let Err(periph) = l.device.bind(periph) {
        // The LUN is being removed.
        periph::release(&periph);
        return None;
    }
    if let Some(c) = cap {
        if c.last_lba != maxlba {
            lun.capacity_changed(c.last_lba, u16::from(c.physical_exponent), c.lowest_aligned);
        }
        lun.media_event(MediaEvent::Loaded);
    }
    l.online.store(true, Ordering::Release);
    printf!("ctlpass: LUN {}: {} is back; online\n", lun.id(), name.as_str());
    Some(place)
}

/// `CTL_LUNREQ_MODIFY`: takes the options the request sends (ctld sends
/// them all on every reload; ctladm `-o` its own, none with only `-s`,
/// and then the LUN keeps its own), reads the device's capacity again
/// (after a volume grew or shrank) and tells CTL if it changed.  Asking
/// for what the LUN already is never fails: not while the device is lost,
/// nor without a medium (the size CTL knows is the answer).
pub(super) fn modify(req: &mut LunReq<'_>) {
    match modify_lun(req).map_err(|e| message(&e)) {
        Ok(size) => req.set_modified(size),
        Err(m) => req.set_error(format_args!("{}", m.as_str())),
    }
}

/// The options that take effect on a live LUN; CTL reads the rest when
/// the LUN is created.
const RUNTIME: [&str; 2] = ["lost", "reset"];

/// The option list a modify's options make, the mirrored ones kept: `None`
/// if it is the LUN's own.  An option that differs and cannot change on a
/// live LUN is the error.
fn new_options<'r>(lun: &LunRef, args: &NvList<'r>) -> Result<Option<OwnedNvList>, LunError<'r>> {
    let mut list = OwnedNvList::clone_of(args).map_err(LunError::Options)?;
    let old = lun.options();
    if let Some(old) = old {
        for name in MIRRORED {
            if let (Some(v), None) = (old.get(name), args.get(name)) {
                list.set(name, v).map_err(LunError::Options)?;
            }
        }
    }
    let new = list.as_list();
    let old_names = old.iter().flat_map(|o| o.iter());
    let mut changed = false;
    for p in new.iter().chain(old_names) {
        let (was, now) = (old.and_then(|o| o.get(p.name)), new.get(p.name));
        if was == now {
            continue;
        }
        changed = true;
        let name = p.name.to_str().unwrap_or("");
        if !RUNTIME.contains(&name) {
            let mut option = FmtBuf::new();
            let _ = option.write_str(name);
            return Err(LunError::Fixed {
                option,
                now: args.get(p.name),
            });
        }
    }
    Ok(changed.then_some(list))
}

/// Takes a modify's options and re-reads the capacity of the LUN's device;
/// its size in bytes.
fn modify_lun<'r>(req: &'r LunReq<'_>) -> Result<u64, LunError<'r>> {
    let (id, asked) = (req.lun_id(), req.modify_size());
    let (lun, _) = lookup(id, false)?;
    let args = req.args().filter(|a| a.iter().next().is_some());
    let update = match args {
        Some(args) => {
            let opts = options::parse(args.iter().map(|p| (p.name.to_bytes(), p.value.map(CStr::to_bytes))))
                .map_err(LunError::Option)?;
            new_options(&lun, &args)?.map(|list| (list, opts.lost, opts.reset_device))
        }
        None => None,
    };
    let name = lock().entry(&lun).map_or_else(FmtBuf::new, |e| e.place.name);
    let (maxlba, blocksize) = lun.geometry();
    let known = if maxlba > 0 {
        maxlba.saturating_add(1).saturating_mul(u64::from(blocksize))
    } else {
        0
    };
    let device = lun.lun().device();
    // The capacity now, if the device is there, has one, and has a medium.
    let mut cap = None;
    if device.enter() {
        if let Some(p) = device.periph() {
            let kind = PeripheralType(p.softc().map_or(0, |s| s.identity.inquiry.device_type.0));
            let mut buf = [0u8; cdb::READ_CAPACITY_16_LEN];
            if kind == PeripheralType::DIRECT || kind == PeripheralType::CDROM {
                cap = Some(read_capacity(&p.lock(), kind, &mut buf).map_err(|error| LunError::Probe { name, error }));
            }
            if let Some((_, _, reset)) = &update {
                periph::set_reset_device(p, *reset);
            }
        }
        drop(device.leave());
    }
    let cap = cap.unwrap_or(Ok(None))?;
    let bytes = cap.map_or(known, |c| c.bytes());
    if asked != 0 && asked != bytes {
        return Err(match cap {
            Some(device) => LunError::Plan {
                name,
                error: PlanError::SizeMismatch { asked, device },
            },
            None => LunError::SizeUnknown { name, asked, known },
        });
    }
    if let Some(c) = cap {
        if c.block_size != blocksize {
            return Err(LunError::BlockSizeChanged {
                name,
                from: blocksize,
                to: c.block_size,
            });
        }
        if c.last_lba != maxlba {
            lun.capacity_changed(c.last_lba, u16::from(c.physical_exponent), c.lowest_aligned);
        }
    }
    if let Some((list, lost, reset)) = update {
        let retired = lun.replace_options(list).map(Retired::new);
        let mut be = lock();
        if let Some(e) = be.entry(&lun) {
            e.lost = lost.unwrap_or_else(sysctl::lost);
            e.reset_device = reset;
            if let Some(r) = retired.and_then(|r| KBox::new(r, Wait::NoWait).ok()) {
                e.retired.push_back(r);
            }
        }
    }
    Ok(bytes)
}
