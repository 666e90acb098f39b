//! CAM for the simulated kernel: buses (SIMs), devices, paths, async event
//! registration with the replay of `AC_FOUND_DEVICE`, peripheral drivers
//! and periphs with FreeBSD's reference counting (sys/cam/cam_periph.c):
//! `cam_periph_alloc` with its deferral when an invalidated periph still
//! exists, acquire/release, invalidation calling `oninvalidate` and
//! dropping the initial reference, the destructor at the last release and
//! the replay of a deferred arrival after it.  FreeBSD's refusals are kept:
//! acquiring an invalid periph fails, releasing past zero panics, releasing
//! with the periph lock held (or without it, for the `_locked` variant)
//! panics, and a driver without `deinit` cannot be unregistered.
//!
//! Besides ctlpass, the kernel has stand-ins of FreeBSD's own peripheral
//! drivers, `pass` (every device), `da` (direct access), `cd` (CD/DVD), `sa`
//! (tape) and `ch` (changer),
//! attached through the same interfaces, so that `camcontrol devlist` shows
//! what a FreeBSD machine shows.
//!
//! Each device has a SIM (`sim.rs`) that runs the `XPT_SCSI_IO` CCBs of
//! every issuer in order, with a latency, openings, fault injection and
//! counters a test sets and reads ([`set_latency`], [`set_media_rate`],
//! [`set_openings`],
//! [`inject`], [`device_stats`], [`ccb_buffers`]), and CCBs can be sent to
//! a device directly, as a baseline for ctlpass's ([`submit_direct`],
//! [`execute_direct`], [`run_direct`]).

mod direct;
mod fault;
mod io;
pub mod scsi_all;
mod sim;

use std::collections::HashMap;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::sync::{Arc, Mutex};

pub use direct::{
    DirectData, DirectOptions, DirectResult, execute_direct, execute_direct_with, release_devq, run_direct,
    run_direct_with, submit_direct, submit_direct_with,
};
pub use fault::{Count, Effect, Fault, Match, cdb_hash, fixed_sense, lba_range};
pub use io::frozen;
pub use sim::{
    BUFFER_LOG_LEN, DeviceStats, LATENESS_BOUNDS_US, Lateness, ccb_buffers, clear_faults, device_stats, inject,
    reset_ccb_buffers, reset_device_stats, set_abort_support, set_latency, set_media_rate, set_openings,
};

use crate::ctl::Response;
use crate::devices::{Command, GOOD, ScsiDevice};
use crate::lock::KMutex;
use crate::{console, kpanic, malloc, sys};

/// A device to put on a bus at boot, or to plug in later.
#[derive(Clone)]
pub struct DeviceSpec {
    /// SCSI target id.
    pub target: u32,
    /// Logical unit number.
    pub lun: u64,
    /// The emulated device.
    pub device: Arc<dyn ScsiDevice>,
}

/// A bus: one SIM (host adapter driver instance) and its devices.
#[derive(Clone)]
pub struct BusSpec {
    /// The SIM's driver name (`mpr`, `ahcich`, `iscsi`, or `camsim` for
    /// CTL's own frontend).
    pub sim_name: String,
    /// The SIM's unit number.
    pub sim_unit: u32,
    /// The SIM's largest transfer in bytes (0: DFLTPHYS).
    pub maxio: u32,
    /// Commands each device on the bus takes at once (its tagged openings).
    pub openings: u32,
    /// Devices present at boot.
    pub devices: Vec<DeviceSpec>,
}

struct Bus {
    path_id: u32,
    sim_name: String,
    sim_unit: u32,
    maxio: u32,
    openings: u32,
}

#[derive(Clone, Copy)]
struct AsyncReg {
    events: u32,
    callback: unsafe extern "C" fn(*mut c_void, u32, *mut sys::cam_path, *mut c_void),
    arg: usize,
}

struct DeviceState {
    emulated: Arc<dyn ScsiDevice>,
    present: bool,
    /// Periphs on the device, most recently attached first (xpt_add_periph).
    periphs: Vec<usize>,
    /// Async registrations on the device's path.
    asyncs: Vec<AsyncReg>,
}

/// A device (`struct cam_ed`).  It lives while a path refers to it.
pub struct Device {
    path_id: u32,
    target: u32,
    lun: u64,
    mtx: KMutex,
    state: Mutex<DeviceState>,
    /// Its SIM: queue, openings (`ccbq.total_openings`), freeze count.
    sim: Arc<sim::Sim>,
}

impl Device {
    fn state(&self) -> std::sync::MutexGuard<'_, DeviceState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.sim.shutdown();
    }
}

/// The device at `path_id:target:lun` (present or not); panics if CAM has
/// none.
fn device_at(path_id: u32, target: u32, lun: u64) -> Arc<Device> {
    cam()
        .state()
        .devices
        .iter()
        .find(|d| d.path_id == path_id && d.target == target && d.lun == lun)
        .cloned()
        .unwrap_or_else(|| kpanic!("CAM: no device at {path_id}:{target}:{lun}"))
}

/// A path (`struct cam_path`): the module sees a pointer to one.
struct Path {
    device: Arc<Device>,
    /// The periph whose path this is (null for other paths).
    periph: *mut sys::cam_periph,
}

fn path_ref<'a>(p: *mut sys::cam_path) -> &'a Path {
    if p.is_null() {
        kpanic!("CAM: NULL path");
    }
    // SAFETY: every cam_path the simulated kernel hands out is a boxed Path,
    // kept alive while its holder (a periph, or a callback's caller) lives.
    unsafe { &*p.cast::<Path>() }
}

fn new_path(device: &Arc<Device>) -> *mut sys::cam_path {
    Box::into_raw(Box::new(Path {
        device: device.clone(),
        periph: std::ptr::null_mut(),
    }))
    .cast()
}

fn free_path(p: *mut sys::cam_path) {
    // SAFETY: paths are created by new_path and freed once, by their holder.
    drop(unsafe { Box::from_raw(p.cast::<Path>()) });
}

struct Cam {
    /// `xpt_lock_buses`: protects the drivers' unit lists and periph
    /// reference counts.
    topology: KMutex,
    state: Mutex<CamState>,
    periph_type: usize,
    ccb_type: usize,
}

/// `periph_drivers`: the NULL-terminated array of registered peripheral
/// drivers, which lookups by name walk under the topology lock.
#[unsafe(no_mangle)]
pub static mut periph_drivers: *mut *mut sys::periph_driver = std::ptr::null_mut();

/// Rebuilds `periph_drivers` from the registered drivers, under the
/// topology lock (as periphdriver_register replaces the array).
fn publish_drivers(cam: &Cam) {
    let _topo = cam.topology.lock();
    let mut st = cam.state();
    st.drivers_array = st.drivers.iter().copied().chain([0]).collect();
    // SAFETY: written under the topology lock, which readers hold.
    unsafe { periph_drivers = st.drivers_array.as_mut_ptr().cast() };
}

#[derive(Default)]
struct CamState {
    buses: Vec<Bus>,
    devices: Vec<Arc<Device>>,
    wildcard: Vec<AsyncReg>,
    drivers: Vec<usize>,
    /// What `periph_drivers` points to: `drivers` and a NULL.
    drivers_array: Box<[usize]>,
    standins: Vec<usize>,
    /// Device hints that wire a driver's unit to a location
    /// (`hint.da.5.at="scbus3"`, `hint.da.5.target="0"`, ...).
    hints: Vec<Hint>,
    /// What `cam_periph_invalidate` prints for the periphs the stand-ins
    /// announced (xpt_denounce_periph), by periph address.
    denounce: HashMap<usize, String>,
}

/// A device hint wiring unit `unit` of `driver` to a location.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Hint {
    driver: String,
    unit: u32,
    path_id: u32,
    target: u32,
    lun: u64,
}

static CAM: Mutex<Option<Arc<Cam>>> = Mutex::new(None);

fn cam() -> Arc<Cam> {
    CAM.lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_else(|| kpanic!("CAM is not running"))
}

impl Cam {
    fn state(&self) -> std::sync::MutexGuard<'_, CamState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Starts CAM with `buses` (path ids in order) and attaches the stand-in
/// drivers to their devices.
pub(crate) fn boot(buses: &[BusSpec]) {
    let periph_type = malloc::define(c"CAM periph") as usize;
    let ccb_type = malloc::define(c"CAM CCB") as usize;
    let cam = Arc::new(Cam {
        topology: KMutex::new(c"XPT topology lock"),
        state: Mutex::default(),
        periph_type,
        ccb_type,
    });
    *CAM.lock().unwrap_or_else(|e| e.into_inner()) = Some(cam.clone());
    for (path_id, spec) in buses.iter().enumerate() {
        let path_id = path_id as u32;
        cam.state().buses.push(Bus {
            path_id,
            sim_name: spec.sim_name.clone(),
            sim_unit: spec.sim_unit,
            maxio: spec.maxio,
            openings: spec.openings,
        });
        for d in &spec.devices {
            insert_device(&cam, path_id, d);
        }
    }
    for name in ["pass", "da", "cd", "sa", "ch"] {
        let drv = Box::into_raw(Box::new(sys::periph_driver {
            init: None,
            driver_name: CString::new(name).map(CString::into_raw).unwrap_or_default(),
            units: sys::periph_driver__bindgen_ty_1 {
                tqh_first: std::ptr::null_mut(),
                tqh_last: std::ptr::null_mut(),
            },
            generation: 0,
            flags: sys::CAM_PERIPH_DRV_EARLY,
            deinit: None,
        }));
        // SAFETY: a fresh driver; its list head must point at itself.
        unsafe { (*drv).units.tqh_last = &raw mut (*drv).units.tqh_first };
        cam.state().standins.push(drv as usize);
        // SAFETY: a valid periph_driver.
        unsafe { periphdriver_register(drv.cast()) };
    }
    // The stand-ins attach as FreeBSD's drivers do when CAM probes the
    // buses at boot: one registration for all three.
    // SAFETY: registering our own callback on every device.
    unsafe {
        xpt_register_async(
            sys::AC_FOUND_DEVICE as c_int,
            Some(standin_async),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
}

/// Stops CAM: detaches the stand-ins and forgets every device.  The module
/// must be unloaded first.
pub(crate) fn shutdown() {
    let Some(cam) = CAM.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
        return;
    };
    let devices: Vec<Arc<Device>> = cam.state().devices.clone();
    for d in &devices {
        lose(&cam, d);
    }
    // SAFETY: removing the registration made at boot.
    unsafe { xpt_register_async(0, Some(standin_async), std::ptr::null_mut(), std::ptr::null_mut()) };
    let standins = std::mem::take(&mut cam.state().standins);
    for drv in standins {
        let drv = drv as *mut sys::periph_driver;
        // SAFETY: registered at boot; its periphs are all gone now.
        unsafe {
            if !(*drv).units.tqh_first.is_null() {
                kpanic!(
                    "CAM shutdown: a {} periph is still referenced",
                    cstr((*drv).driver_name)
                );
            }
            cam.state().drivers.retain(|&d| d != drv as usize);
            publish_drivers(&cam);
            drop(CString::from_raw((*drv).driver_name));
            drop(Box::from_raw(drv));
        }
    }
    *CAM.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// The devices on the buses now.
fn present_devices(cam: &Cam) -> Vec<Arc<Device>> {
    cam.state()
        .devices
        .iter()
        .filter(|d| d.state().present)
        .cloned()
        .collect()
}

fn cstr(p: *const c_char) -> String {
    // SAFETY: driver and periph names are NUL-terminated strings.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

fn insert_device(cam: &Arc<Cam>, path_id: u32, spec: &DeviceSpec) -> Arc<Device> {
    let mut st = cam.state();
    if let Some(d) = st
        .devices
        .iter()
        .find(|d| d.path_id == path_id && d.target == spec.target && d.lun == spec.lun)
    {
        // A device that went away and is still referenced comes back as
        // the same cam_ed.
        let mut ds = d.state();
        if ds.present {
            kpanic!(
                "CAM: a device is already present at {path_id}:{}:{}",
                spec.target,
                spec.lun
            );
        }
        ds.present = true;
        ds.emulated = spec.device.clone();
        d.sim.set_present(true);
        return d.clone();
    }
    let openings = st
        .buses
        .iter()
        .find(|b| b.path_id == path_id)
        .map_or(1, |b| b.openings.max(1));
    let device = Arc::new(Device {
        path_id,
        target: spec.target,
        lun: spec.lun,
        mtx: KMutex::new(c"CAM device lock"),
        state: Mutex::new(DeviceState {
            emulated: spec.device.clone(),
            present: true,
            periphs: Vec::new(),
            asyncs: Vec::new(),
        }),
        sim: sim::Sim::new(format!("{path_id}:{}:{}", spec.target, spec.lun), openings),
    });
    st.devices.push(device.clone());
    device
}

/// Plugs a device into bus `path_id`; registered drivers are told
/// (`AC_FOUND_DEVICE`).
pub fn plug(path_id: u32, spec: DeviceSpec) {
    let cam = cam();
    if !cam.state().buses.iter().any(|b| b.path_id == path_id) {
        kpanic!("CAM: no bus {path_id}");
    }
    let device = insert_device(&cam, path_id, &spec);
    let regs: Vec<AsyncReg> = cam.state().wildcard.clone();
    for reg in regs.into_iter().filter(|r| r.events & sys::AC_FOUND_DEVICE != 0) {
        if cam
            .state()
            .wildcard
            .iter()
            .any(|r| r.callback as usize == reg.callback as usize && r.arg == reg.arg)
        {
            announce(&device, &reg);
        }
    }
}

/// Unplugs the device at `path_id:target:lun`: its registrations and
/// periphs are told (`AC_LOST_DEVICE`), and it is gone once nothing refers
/// to it.
pub fn unplug(path_id: u32, target: u32, lun: u64) {
    let cam = cam();
    let device = cam
        .state()
        .devices
        .iter()
        .find(|d| d.path_id == path_id && d.target == target && d.lun == lun)
        .cloned();
    match device {
        Some(d) if d.state().present => lose(&cam, &d),
        _ => kpanic!("CAM: no device at {path_id}:{target}:{lun}"),
    }
}

fn lose(cam: &Arc<Cam>, device: &Arc<Device>) {
    device.state().present = false;
    device.sim.set_present(false);
    let path = new_path(device);
    {
        let _g = device.mtx.lock();
        let regs: Vec<AsyncReg> = device.state().asyncs.clone();
        for reg in regs.into_iter().filter(|r| r.events & sys::AC_LOST_DEVICE != 0) {
            let still = device
                .state()
                .asyncs
                .iter()
                .any(|r| r.callback as usize == reg.callback as usize && r.arg == reg.arg);
            if still {
                // SAFETY: a registered async callback, called as xpt_async
                // does, with the device lock held.
                unsafe { (reg.callback)(reg.arg as *mut c_void, sys::AC_LOST_DEVICE, path, std::ptr::null_mut()) };
            }
        }
    }
    free_path(path);
    cam.state()
        .devices
        .retain(|d| !Arc::ptr_eq(d, device) || d.state().present || !d.state().periphs.is_empty());
}

/// Tells one wildcard registration about a device (`xptsetasyncfunc`).
fn announce(device: &Arc<Device>, reg: &AsyncReg) {
    let path = new_path(device);
    let mut cgd: sys::ccb_getdev = fill_getdev(device);
    {
        let _g = device.mtx.lock();
        // SAFETY: a registered async callback, called with the device lock
        // held and a ccb_getdev, as CAM does.
        unsafe {
            (reg.callback)(
                reg.arg as *mut c_void,
                sys::AC_FOUND_DEVICE,
                path,
                (&raw mut cgd).cast(),
            )
        };
    }
    free_path(path);
}

/// Sends a command straight to the device (no CCB, no SIM queue), as the
/// simulated kernel's own probes do.
fn execute(device: &Device, cdb: &[u8], len: usize) -> Response {
    let emulated = device.state().emulated.clone();
    let mut data = vec![0u8; len];
    let outcome = emulated.execute(Command {
        cdb,
        data_out: &[],
        data_in: &mut data,
    });
    data.truncate(outcome.transferred);
    Response {
        status: outcome.status,
        sense: outcome.sense,
        data,
    }
}

fn run(device: &Device, cdb: &[u8], len: usize) -> (u8, Vec<u8>) {
    let r = execute(device, cdb, len);
    (r.status, r.data)
}

/// `XPT_GDEV_TYPE`: what CAM's probe learnt about a device: its INQUIRY
/// data and its unit serial number (VPD page 0x80, spaces trimmed as
/// scsi_xpt.c does).
fn fill_getdev(device: &Device) -> sys::ccb_getdev {
    // SAFETY: ccb_getdev is plain data.
    let mut cgd: sys::ccb_getdev = unsafe { std::mem::zeroed() };
    let inq_len = std::mem::size_of_val(&cgd.inq_data);
    let (status, inq) = run(device, &[0x12, 0, 0, (inq_len >> 8) as u8, inq_len as u8, 0], inq_len);
    if status == GOOD {
        // SAFETY: scsi_inquiry_data is bytes; `inq` is at most its size.
        unsafe { std::ptr::copy_nonoverlapping(inq.as_ptr(), (&raw mut cgd.inq_data).cast::<u8>(), inq.len()) };
    }
    let (status, page) = run(device, &[0x12, 1, 0x80, 1, 0, 0], 256);
    if status == GOOD && page.len() > 4 {
        let serial = &page[4..page.len().min(4 + usize::from(page[3]))];
        let text: &[u8] = {
            let start = serial.iter().position(|&b| b != b' ').unwrap_or(serial.len());
            let end = serial.iter().rposition(|&b| b != b' ').map_or(start, |i| i + 1);
            &serial[start..end.max(start)]
        };
        let n = text.len().min(cgd.serial_num.len());
        cgd.serial_num[..n].copy_from_slice(&text[..n]);
        cgd.serial_num_len = n as u8;
    }
    cgd.protocol = sys::PROTO_SCSI;
    cgd.ccb_h.func_code = sys::XPT_GDEV_TYPE;
    cgd.ccb_h.status = sys::CAM_REQ_CMP;
    cgd
}

fn fill_pathinq(cam: &Cam, path_id: u32, cpi: &mut sys::ccb_pathinq) {
    let st = cam.state();
    let Some(bus) = st.buses.iter().find(|b| b.path_id == path_id) else {
        cpi.ccb_h.status = sys::CAM_PATH_INVALID;
        return;
    };
    cpi.version_num = 1;
    cpi.hba_inquiry = sys::PI_TAG_ABLE as u8;
    cpi.hba_misc = sys::PIM_UNMAPPED;
    cpi.max_target = 255;
    cpi.max_lun = 255;
    cpi.initiator_id = 255;
    for (dst, src) in cpi
        .dev_name
        .iter_mut()
        .zip(bus.sim_name.bytes().take(sys::DEV_IDLEN as usize - 1))
    {
        *dst = src as c_char;
    }
    for (dst, src) in cpi.sim_vid.iter_mut().zip(b"FreeBSD".iter()) {
        *dst = *src as c_char;
    }
    cpi.unit_number = bus.sim_unit;
    cpi.bus_id = 0;
    cpi.base_transfer_speed = BASE_TRANSFER_SPEED;
    cpi.protocol = sys::PROTO_SCSI;
    cpi.transport = sys::XPORT_SAS;
    cpi.maxio = bus.maxio;
    cpi.ccb_h.status = sys::CAM_REQ_CMP;
}

/// `xpt_action`: the immediate CCBs a peripheral driver uses.
///
/// # Safety
///
/// `ccb` is a CCB set up with `xpt_setup_ccb` on a valid path.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xpt_action(ccb: *mut sys::ccb) {
    // SAFETY: the caller passes a set-up CCB.
    let h = unsafe { &mut (*ccb).ccb_h };
    let path = path_ref(h.path);
    match h.func_code {
        // SAFETY: for these function codes the CCB is the matching union
        // member.
        sys::XPT_GDEV_TYPE => unsafe {
            let keep = (*ccb).ccb_h;
            (*ccb).cgd = fill_getdev(&path.device);
            (*ccb).ccb_h = sys::ccb_hdr {
                status: sys::CAM_REQ_CMP,
                ..keep
            };
        },
        // SAFETY: as above.
        sys::XPT_PATH_INQ => unsafe {
            fill_pathinq(&cam(), path.device.path_id, &mut (*ccb).cpi);
        },
        // SAFETY: as above.
        sys::XPT_DEV_ADVINFO => unsafe { advinfo(&path.device, &mut (*ccb).cdai) },
        sys::XPT_SCSI_IO => io::queue_scsi(&path.device, ccb),
        sys::XPT_RESET_DEV => path.device.sim.reset_device(ccb),
        // SAFETY: as above.
        sys::XPT_ABORT => unsafe {
            let victim = (*ccb).cab.abort_ccb;
            (*ccb).ccb_h.status = if victim.is_null() {
                sys::CAM_REQ_INVALID
            } else {
                path_ref((*victim).ccb_h.path).device.sim.abort(victim)
            };
        },
        _ => h.status = sys::CAM_REQ_INVALID,
    }
}

/// `XPT_DEV_ADVINFO` (read only): what CAM's probe kept of the device's
/// Device Identification page and serial number.
fn advinfo(device: &Device, cdai: &mut sys::ccb_dev_advinfo) {
    if cdai.flags & sys::CDAI_FLAG_STORE != 0 {
        cdai.ccb_h.status = sys::CAM_REQ_INVALID;
        return;
    }
    let data: Vec<u8> = match cdai.buftype {
        sys::CDAI_TYPE_SCSI_DEVID => match run(device, &[0x12, 1, 0x83, 1, 0, 0], 256) {
            (GOOD, page) => page,
            _ => Vec::new(),
        },
        // SAFETY: ccb_getdev is plain data.
        sys::CDAI_TYPE_SERIAL_NUM => {
            let cgd = fill_getdev(device);
            cgd.serial_num[..usize::from(cgd.serial_num_len)].to_vec()
        }
        _ => {
            cdai.ccb_h.status = sys::CAM_REQ_INVALID;
            return;
        }
    };
    let n = data.len().min(usize::try_from(cdai.bufsiz).unwrap_or(0));
    if n > 0 {
        // SAFETY: the caller provides `bufsiz` writable bytes at `buf`.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), cdai.buf, n) };
    }
    cdai.provsiz = data.len() as sys::off_t;
    cdai.ccb_h.status = sys::CAM_REQ_CMP;
}

/// `xpt_setup_ccb`.
///
/// # Safety
///
/// `ccb_h` is writable and `path` valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xpt_setup_ccb(ccb_h: *mut sys::ccb_hdr, path: *mut sys::cam_path, priority: u32) {
    let p = path_ref(path);
    // SAFETY: the caller's contract.
    let h = unsafe { &mut *ccb_h };
    h.pinfo.priority = priority;
    h.path = path;
    h.path_id = p.device.path_id;
    h.target_id = p.device.target;
    h.target_lun = p.device.lun;
    h.flags = 0;
    h.xflags = 0;
}

/// `xpt_path_path_id`.
#[unsafe(no_mangle)]
pub extern "C" fn xpt_path_path_id(path: *mut sys::cam_path) -> sys::path_id_t {
    path_ref(path).device.path_id
}

/// `xpt_path_target_id`.
#[unsafe(no_mangle)]
pub extern "C" fn xpt_path_target_id(path: *mut sys::cam_path) -> sys::target_id_t {
    path_ref(path).device.target
}

/// `xpt_path_lun_id`.
#[unsafe(no_mangle)]
pub extern "C" fn xpt_path_lun_id(path: *mut sys::cam_path) -> sys::lun_id_t {
    path_ref(path).device.lun
}

/// `xpt_path_mtx`: the device's lock, which is the periph lock.
#[unsafe(no_mangle)]
pub extern "C" fn xpt_path_mtx(path: *mut sys::cam_path) -> *mut sys::mtx {
    path_ref(path).device.mtx.as_ptr()
}

/// `xpt_lock_buses`.
#[unsafe(no_mangle)]
pub extern "C" fn xpt_lock_buses() {
    cam().topology.lock_raw();
}

/// `xpt_unlock_buses`: the caller must hold the topology lock.
#[unsafe(no_mangle)]
pub extern "C" fn xpt_unlock_buses() {
    cam().topology.unlock_raw();
}

fn same_reg(r: &AsyncReg, cb: sys::ac_callback_t, arg: *mut c_void) -> bool {
    cb.is_some_and(|cb| r.callback as usize == cb as usize) && r.arg == arg as usize
}

/// `xpt_register_async`: registers (or with `event` 0, removes) an async
/// callback on `path`, or on every device when `path` is NULL, replaying
/// `AC_FOUND_DEVICE` for the devices that exist.
///
/// # Safety
///
/// `path` is NULL or valid; `cbarg` is what `cbfunc` expects.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xpt_register_async(
    event: c_int,
    cbfunc: sys::ac_callback_t,
    cbarg: *mut c_void,
    path: *mut sys::cam_path,
) -> sys::cam_status {
    let Some(callback) = cbfunc else {
        return sys::CAM_REQ_INVALID;
    };
    let cam = cam();
    let event = event as u32;
    let update = |list: &mut Vec<AsyncReg>| {
        let found = list.iter().position(|r| same_reg(r, cbfunc, cbarg));
        match (found, event) {
            (Some(i), 0) => {
                list.remove(i);
            }
            (Some(i), e) => list[i].events = e,
            (None, 0) => {}
            (None, e) => list.push(AsyncReg {
                events: e,
                callback,
                arg: cbarg as usize,
            }),
        }
    };
    if path.is_null() {
        update(&mut cam.state().wildcard);
        if event & sys::AC_FOUND_DEVICE != 0 {
            let devices = present_devices(&cam);
            let reg = AsyncReg {
                events: event,
                callback,
                arg: cbarg as usize,
            };
            for d in devices {
                announce(&d, &reg);
            }
        }
    } else {
        update(&mut path_ref(path).device.state().asyncs);
    }
    sys::CAM_REQ_CMP
}

// --- peripheral drivers and periphs (cam_periph.c) ---

/// `periphdriver_register`: adds a driver and, the system being up, calls
/// its `init`.
///
/// # Safety
///
/// `arg` is a `struct periph_driver` that outlives its registration.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn periphdriver_register(arg: *mut c_void) {
    let drv = arg.cast::<sys::periph_driver>();
    let cam = cam();
    cam.state().drivers.push(drv as usize);
    publish_drivers(&cam);
    // SAFETY: the caller's contract.
    if let Some(init) = unsafe { (*drv).init } {
        // SAFETY: a driver's init takes no arguments.
        unsafe { init() };
    }
}

/// `periphdriver_unregister`: a driver without `deinit` cannot go
/// (EOPNOTSUPP); otherwise `deinit` decides.
///
/// # Safety
///
/// `arg` is a registered `struct periph_driver`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn periphdriver_unregister(arg: *mut c_void) -> c_int {
    let drv = arg.cast::<sys::periph_driver>();
    // SAFETY: the caller's contract.
    let (name, deinit) = unsafe { (cstr((*drv).driver_name), (*drv).deinit) };
    let Some(deinit) = deinit else {
        console::print(&format!("CAM periph driver '{name}' doesn't have deinit.\n"));
        return sys::EOPNOTSUPP as c_int;
    };
    // SAFETY: the driver's deinit.
    let error = unsafe { deinit() };
    if error != 0 {
        return error;
    }
    // SAFETY: the driver says it is done; its unit list must be empty.
    if unsafe { !(*drv).units.tqh_first.is_null() } {
        kpanic!("periphdriver_unregister: {name}'s deinit returned 0 with periphs still on its unit list");
    }
    let cam = cam();
    cam.state().drivers.retain(|&d| d != drv as usize);
    publish_drivers(&cam);
    0
}

fn driver_named(cam: &Cam, name: &str) -> Option<*mut sys::periph_driver> {
    cam.state()
        .drivers
        .iter()
        .map(|&d| d as *mut sys::periph_driver)
        .find(|&d| {
            // SAFETY: registered drivers are valid.
            cstr(unsafe { (*d).driver_name }) == name
        })
}

/// `cam_periph_alloc`.  The caller holds the path's lock; the constructor
/// runs with it held.
///
/// # Safety
///
/// The callbacks and `arg` are what the driver expects; `name` names a
/// registered driver; `path` is valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cam_periph_alloc(
    periph_ctor: sys::periph_ctor_t,
    periph_oninvalidate: sys::periph_oninv_t,
    periph_dtor: sys::periph_dtor_t,
    periph_start: sys::periph_start_t,
    name: *mut c_char,
    _type: sys::cam_periph_type,
    path: *mut sys::cam_path,
    ac_callback: sys::ac_callback_t,
    code: sys::ac_code,
    arg: *mut c_void,
) -> sys::cam_status {
    let cam = cam();
    let name_s = cstr(name);
    let device = path_ref(path).device.clone();
    if !device.mtx.owned() {
        kpanic!("cam_periph_alloc: {name_s}: path lock not held");
    }
    let Some(drv) = driver_named(&cam, &name_s) else {
        console::print(&format!("cam_periph_alloc: invalid periph name '{name_s}'\n"));
        return sys::CAM_REQ_INVALID;
    };
    if let Some(old) = find_on(&device, &name_s) {
        // SAFETY: periphs on a device's list are live; the path lock is held.
        let p = unsafe { &mut *old };
        if p.flags & sys::CAM_PERIPH_INVALID != 0 && p.flags & sys::CAM_PERIPH_NEW_DEV_FOUND == 0 {
            p.flags |= sys::CAM_PERIPH_NEW_DEV_FOUND;
            p.deferred_callback = ac_callback;
            p.deferred_ac = code;
            return sys::CAM_REQ_INPROG;
        }
        console::print(&format!(
            "cam_periph_alloc: attempt to re-allocate valid device {name_s}{} rejected flags {:#x} refcount {}\n",
            p.unit_number, p.flags, p.refcount
        ));
        return sys::CAM_REQ_INVALID;
    }
    // SAFETY: a registered malloc type; M_NOWAIT as cam_periph_alloc uses.
    let periph = unsafe {
        crate::malloc::simkern_malloc(
            std::mem::size_of::<sys::cam_periph>(),
            cam.periph_type as *mut sys::malloc_type,
            (sys::M_NOWAIT | sys::M_ZERO) as c_int,
        )
    }
    .cast::<sys::cam_periph>();
    if periph.is_null() {
        return sys::CAM_RESRC_UNAVAIL;
    }
    // SAFETY: fresh, zeroed memory for a cam_periph.
    let p = unsafe { &mut *periph };
    p.periph_start = periph_start;
    p.periph_oninval = periph_oninvalidate;
    p.periph_dtor = periph_dtor;
    p.periph_name = name;
    p.path = new_path(&device);
    // SAFETY: the path was just made for this periph.
    unsafe { (*p.path.cast::<Path>()).periph = periph };
    p.scheduled_priority = io::CAM_PRIORITY_NONE;
    p.immediate_priority = io::CAM_PRIORITY_NONE;
    p.refcount = 1;
    let hints = cam.state().hints.clone();
    {
        let _topo = cam.topology.lock();
        // SAFETY: the driver's unit list is protected by the topology lock.
        unsafe { p.unit_number = next_unit(drv, &name_s, &device, &hints) };
        // SAFETY: as above.
        unsafe { insert_unit(drv, periph) };
    }
    device.state().periphs.insert(0, periph as usize);
    let status = match periph_ctor {
        // SAFETY: the driver's constructor, with the path lock held.
        Some(ctor) => unsafe { ctor(periph, arg) },
        None => sys::CAM_REQ_CMP,
    };
    if status != sys::CAM_REQ_CMP {
        device.state().periphs.retain(|&q| q != periph as usize);
        {
            let _topo = cam.topology.lock();
            // SAFETY: on the list (inserted above), under the topology lock.
            unsafe { remove_unit(drv, periph) };
        }
        free_path(p.path);
        // SAFETY: allocated above with this type.
        unsafe { crate::malloc::simkern_free(periph.cast(), cam.periph_type as *mut sys::malloc_type) };
    }
    status
}

fn find_on(device: &Device, name: &str) -> Option<*mut sys::cam_periph> {
    device
        .state()
        .periphs
        .iter()
        .map(|&p| p as *mut sys::cam_periph)
        .find(|&p| {
            // SAFETY: periphs on a device's list are live.
            cstr(unsafe { (*p).periph_name }) == name
        })
}

/// The unit a new periph of `driver` on `device` gets (camperiphunit and
/// camperiphnextunit): the unit a device hint wires to the device's
/// location, unless a periph already has it (then, as FreeBSD, it says so
/// and the device is not wired); otherwise the lowest unit that is neither
/// in use nor wired by a hint to another location.
///
/// # Safety
///
/// Topology lock held; `drv` valid.
unsafe fn next_unit(drv: *mut sys::periph_driver, driver: &str, device: &Device, hints: &[Hint]) -> u32 {
    let mut used = Vec::new();
    // SAFETY: the caller's contract.
    let mut p = unsafe { (*drv).units.tqh_first };
    while !p.is_null() {
        // SAFETY: units on the list are live.
        unsafe {
            used.push((p as usize, (*p).unit_number));
            p = (*p).unit_links.tqe_next;
        }
    }
    let wired = hints
        .iter()
        .find(|h| h.driver == driver && (h.path_id, h.target, h.lun) == (device.path_id, device.target, device.lun));
    if let Some(h) = wired {
        match used.iter().find(|&&(_, u)| u == h.unit) {
            None => return h.unit,
            Some(&(holder, _)) => {
                let at = path_prefix(holder as *mut sys::cam_periph);
                console::print(&format!(
                    "{at}Duplicate Wired Device entry!\n{at}Second device ({driver} device at scbus{} target {} lun {}) will not be wired\n",
                    device.path_id, device.target, device.lun
                ));
            }
        }
    }
    let start = wired.map_or(0, |h| h.unit);
    (start..)
        .find(|&u| !used.iter().any(|&(_, x)| x == u) && !hints.iter().any(|h| h.driver == driver && h.unit == u))
        .unwrap_or(0)
}

/// Inserts `periph` in unit-number order (TAILQ_INSERT_BEFORE/TAIL).
///
/// # Safety
///
/// Topology lock held; both valid; `periph` not on the list.
unsafe fn insert_unit(drv: *mut sys::periph_driver, periph: *mut sys::cam_periph) {
    // SAFETY: the caller's contract; the TAILQ invariants of queue(3).
    unsafe {
        let mut cur = (*drv).units.tqh_first;
        while !cur.is_null() && (*cur).unit_number < (*periph).unit_number {
            cur = (*cur).unit_links.tqe_next;
        }
        if cur.is_null() {
            (*periph).unit_links.tqe_next = std::ptr::null_mut();
            (*periph).unit_links.tqe_prev = (*drv).units.tqh_last;
            *(*drv).units.tqh_last = periph;
            (*drv).units.tqh_last = &raw mut (*periph).unit_links.tqe_next;
        } else {
            (*periph).unit_links.tqe_prev = (*cur).unit_links.tqe_prev;
            (*periph).unit_links.tqe_next = cur;
            *(*cur).unit_links.tqe_prev = periph;
            (*cur).unit_links.tqe_prev = &raw mut (*periph).unit_links.tqe_next;
        }
        (*drv).generation += 1;
    }
}

/// TAILQ_REMOVE.
///
/// # Safety
///
/// Topology lock held; `periph` on `drv`'s list.
unsafe fn remove_unit(drv: *mut sys::periph_driver, periph: *mut sys::cam_periph) {
    // SAFETY: the caller's contract; the TAILQ invariants of queue(3).
    unsafe {
        let next = (*periph).unit_links.tqe_next;
        if next.is_null() {
            (*drv).units.tqh_last = (*periph).unit_links.tqe_prev;
        } else {
            (*next).unit_links.tqe_prev = (*periph).unit_links.tqe_prev;
        }
        *(*periph).unit_links.tqe_prev = next;
        (*drv).generation += 1;
    }
}

fn periph_device(periph: *mut sys::cam_periph) -> Arc<Device> {
    // SAFETY: a live periph has a valid path.
    path_ref(unsafe { (*periph).path }).device.clone()
}

/// `cam_periph_acquire`: a new reference, unless the periph is invalid
/// (ENOENT); EINVAL for NULL.
///
/// # Safety
///
/// `periph` is NULL or a live periph.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cam_periph_acquire(periph: *mut sys::cam_periph) -> c_int {
    if periph.is_null() {
        return sys::EINVAL as c_int;
    }
    let cam = cam();
    let _topo = cam.topology.lock();
    // SAFETY: live periph, reference count under the topology lock.
    let p = unsafe { &mut *periph };
    if p.flags & sys::CAM_PERIPH_INVALID != 0 {
        return sys::ENOENT as c_int;
    }
    p.refcount += 1;
    0
}

/// `cam_periph_doacquire`: a new reference for a holder of one.
///
/// # Safety
///
/// `periph` is a live periph the caller holds a reference to.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cam_periph_doacquire(periph: *mut sys::cam_periph) {
    let cam = cam();
    let _topo = cam.topology.lock();
    // SAFETY: the caller's contract.
    let p = unsafe { &mut *periph };
    if p.refcount < 1 {
        kpanic!("cam_periph_doacquire with refcount {}", p.refcount);
    }
    p.refcount += 1;
}

/// `cam_periph_release`: must not be called with the periph lock held.
///
/// # Safety
///
/// `periph` is NULL or a periph the caller holds a reference to.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cam_periph_release(periph: *mut sys::cam_periph) {
    if periph.is_null() {
        return;
    }
    let device = periph_device(periph);
    if device.mtx.owned() {
        kpanic!("cam_periph_release: periph lock held");
    }
    let _g = device.mtx.lock();
    // SAFETY: the caller's contract; the lock is held now.
    unsafe { cam_periph_release_locked(periph) };
}

/// `cam_periph_release_locked`: the caller holds the periph lock.  At the
/// last reference the periph is freed (camperiphfree): destructor with the
/// lock held, removal from its driver and device, replay of a deferred
/// arrival, and the memory returned.
///
/// # Safety
///
/// `periph` is a periph the caller holds a reference to, and its lock.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cam_periph_release_locked(periph: *mut sys::cam_periph) {
    if periph.is_null() {
        return;
    }
    let cam = cam();
    let device = periph_device(periph);
    if !device.mtx.owned() {
        kpanic!("cam_periph_release_locked: periph lock not held");
    }
    let last = {
        let _topo = cam.topology.lock();
        // SAFETY: the caller's contract; refcount under the topology lock.
        let p = unsafe { &mut *periph };
        if p.refcount == 0 {
            kpanic!(
                "cam_periph_release_locked_buses: release of {:p} when refcount is zero",
                periph
            );
        }
        p.refcount -= 1;
        if p.refcount == 0 {
            p.flags |= sys::CAM_PERIPH_FREE;
        }
        p.refcount == 0
    };
    if last {
        // SAFETY: the last reference is gone.
        unsafe { periph_free(&cam, &device, periph) };
    }
}

/// camperiphfree.
///
/// # Safety
///
/// `periph` has no reference left; its (device) lock is held.
unsafe fn periph_free(cam: &Cam, device: &Arc<Device>, periph: *mut sys::cam_periph) {
    // SAFETY: the caller's contract.
    let p = unsafe { &mut *periph };
    let name = cstr(p.periph_name);
    if let Some(dtor) = p.periph_dtor {
        // SAFETY: the driver's destructor, with the periph lock held.
        unsafe { dtor(periph) };
    }
    if let Some(drv) = driver_named(cam, &name) {
        let _topo = cam.topology.lock();
        // SAFETY: on its driver's list, under the topology lock.
        unsafe { remove_unit(drv, periph) };
    } else {
        kpanic!(
            "camperiphfree: attempt to free non-existent periph {name}{}",
            p.unit_number
        );
    }
    device.state().periphs.retain(|&q| q != periph as usize);
    if p.flags & sys::CAM_PERIPH_ANNOUNCED != 0 {
        console::print(&format!("{}Periph destroyed\n", path_prefix(periph)));
    }
    if p.flags & sys::CAM_PERIPH_NEW_DEV_FOUND != 0
        && let Some(cb) = p.deferred_callback
    {
        let mut cgd = fill_getdev(device);
        // SAFETY: the deferred arrival, replayed as camperiphfree does:
        // callback_arg NULL, the path lock held.
        unsafe { cb(std::ptr::null_mut(), p.deferred_ac, p.path, (&raw mut cgd).cast()) };
    }

    free_path(p.path);
    // SAFETY: allocated by cam_periph_alloc with this type.
    unsafe { crate::malloc::simkern_free(periph.cast(), cam.periph_type as *mut sys::malloc_type) };
}

/// `cam_periph_invalidate`: the first time, marks the periph invalid, calls
/// its `oninvalidate`, and drops the initial reference.
///
/// # Safety
///
/// `periph` is live and its lock held.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cam_periph_invalidate(periph: *mut sys::cam_periph) {
    let device = periph_device(periph);
    if !device.mtx.owned() {
        kpanic!("cam_periph_invalidate: periph lock not held");
    }
    // SAFETY: the caller's contract.
    let p = unsafe { &mut *periph };
    if p.flags & sys::CAM_PERIPH_INVALID != 0 {
        return;
    }
    if p.flags & sys::CAM_PERIPH_ANNOUNCED != 0
        && let Some(text) = cam().state().denounce.remove(&(periph as usize))
    {
        console::print(&text);
    }
    p.flags |= sys::CAM_PERIPH_INVALID;
    p.flags &= !sys::CAM_PERIPH_NEW_DEV_FOUND;
    if let Some(oninv) = p.periph_oninval {
        // SAFETY: the driver's callback, with the lock held.
        unsafe { oninv(periph) };
    }
    // SAFETY: the initial reference, held since cam_periph_alloc.
    unsafe { cam_periph_release_locked(periph) };
}

/// `cam_periph_async`: the default handling of async events; on
/// `AC_LOST_DEVICE` the periph is invalidated.
///
/// # Safety
///
/// `periph` is live and its lock held.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cam_periph_async(
    periph: *mut sys::cam_periph,
    code: u32,
    _path: *mut sys::cam_path,
    _arg: *mut c_void,
) {
    if code == sys::AC_LOST_DEVICE {
        // SAFETY: the caller's contract.
        unsafe { cam_periph_invalidate(periph) };
    }
}

// --- stand-ins for FreeBSD's pass, da and cd drivers ---

unsafe extern "C" fn standin_async(arg: *mut c_void, code: u32, path: *mut sys::cam_path, cgd: *mut c_void) {
    if !arg.is_null() {
        // SAFETY: a per-periph registration; CAM holds the lock.
        unsafe { cam_periph_async(arg.cast(), code, path, cgd) };
        return;
    }
    if code != sys::AC_FOUND_DEVICE || cgd.is_null() {
        return;
    }
    // SAFETY: AC_FOUND_DEVICE carries a ccb_getdev.
    let kind = unsafe { (*cgd.cast::<sys::ccb_getdev>()).inq_data.device } & 0x1f;
    for (name, wanted) in [
        (c"pass", None),
        (c"da", Some(sys::T_DIRECT as u8)),
        (c"cd", Some(sys::T_CDROM as u8)),
        (c"sa", Some(sys::T_SEQUENTIAL as u8)),
        (c"ch", Some(sys::T_CHANGER as u8)),
    ] {
        if wanted.is_none_or(|t| t == kind) {
            // SAFETY: allocating a stand-in periph with the path lock held.
            unsafe {
                cam_periph_alloc(
                    Some(standin_ctor),
                    Some(standin_oninvalidate),
                    None,
                    None,
                    name.as_ptr().cast_mut(),
                    sys::CAM_PERIPH_BIO,
                    path,
                    Some(standin_async),
                    sys::AC_FOUND_DEVICE,
                    cgd,
                )
            };
        }
    }
}

unsafe extern "C" fn standin_ctor(periph: *mut sys::cam_periph, arg: *mut c_void) -> sys::cam_status {
    // SAFETY: a live periph in its constructor.
    let status = unsafe {
        xpt_register_async(
            sys::AC_LOST_DEVICE as c_int,
            Some(standin_async),
            periph.cast(),
            (*periph).path,
        )
    };
    // SAFETY: a live periph; its name is a driver's name.
    let name = cstr(unsafe { (*periph).periph_name });
    if (name == "da" || name == "cd") && !arg.is_null() {
        // SAFETY: the stand-ins allocate their periphs with the
        // AC_FOUND_DEVICE ccb_getdev as the constructor's argument.
        let cgd = unsafe { &*arg.cast::<sys::ccb_getdev>() };
        // SAFETY: a live periph, its lock held.
        unsafe { announce_periph(periph, cgd) };
    }
    status
}

/// What da(4) and cd(4) print once their probe is done
/// (xpt_announce_periph with the capacity they read), remembering what
/// `cam_periph_invalidate` will print when the device goes.
///
/// # Safety
///
/// `periph` is live and its lock held.
unsafe fn announce_periph(periph: *mut sys::cam_periph, cgd: &sys::ccb_getdev) {
    let device = periph_device(periph);
    // SAFETY: the caller's contract.
    let p = unsafe { &mut *periph };
    let me = format!("{}{}", cstr(p.periph_name), p.unit_number);
    let (sim, openings) = {
        let cam = cam();
        let st = cam.state();
        st.buses
            .iter()
            .find(|b| b.path_id == device.path_id)
            .map_or((String::from("?0"), 1), |b| {
                (format!("{}{}", b.sim_name, b.sim_unit), b.openings)
            })
    };
    // SAFETY: scsi_inquiry_data is bytes.
    let inq: &[u8] = unsafe {
        std::slice::from_raw_parts(
            (&raw const cgd.inq_data).cast::<u8>(),
            std::mem::size_of_val(&cgd.inq_data),
        )
    };
    let serial = &cgd.serial_num[..usize::from(cgd.serial_num_len).min(cgd.serial_num.len())];
    let at = format!(
        "{me} at {sim} bus 0 scbus{} target {} lun {:x}\n",
        device.path_id, device.target, device.lun
    );
    let mut text = format!("{at}{me}: {}", scsi_all::inquiry_line(inq));
    if !serial.is_empty() {
        text += &format!(
            "{me}: Serial Number {}\n",
            String::from_utf8_lossy(&serial[..serial.len().min(60)])
        );
    }
    let speed = BASE_TRANSFER_SPEED;
    text += &format!("{me}: {}.{:03}MB/s transfers\n", speed / 1000, speed % 1000);
    if inq.get(7).is_some_and(|b| b & 0x02 != 0) && openings > 1 {
        text += &format!("{me}: Command Queueing enabled\n");
    }
    text += &format!("{me}: {}\n", capacity_text(&device));
    console::print(&text);
    let mut gone = format!("{at}{me}: {}", scsi_all::inquiry_short(inq));
    if !serial.is_empty() {
        gone += &format!(" s/n {}", String::from_utf8_lossy(&serial[..serial.len().min(60)]));
    }
    gone += " detached\n";
    cam().state().denounce.insert(periph as usize, gone);
    p.flags |= sys::CAM_PERIPH_ANNOUNCED;
}

/// The capacity da(4) and cd(4) announce: `1MB (2048 512 byte sectors)`,
/// from READ CAPACITY(10) (and 16 when the device is larger than 10 can
/// say), or why it could not be read.
fn capacity_text(device: &Device) -> String {
    let rc10 = execute(device, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8);
    let (blocks, block_len) = if rc10.status == GOOD && rc10.data.len() >= 8 {
        let last = scsi_all::be(&rc10.data[..4]);
        if last == 0xffff_ffff {
            let rc16 = execute(device, &[0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0], 32);
            if rc16.status != GOOD || rc16.data.len() < 12 {
                return size_failure(&rc16);
            }
            (scsi_all::be(&rc16.data[..8]) + 1, scsi_all::be(&rc16.data[8..12]))
        } else {
            (last + 1, scsi_all::be(&rc10.data[4..8]))
        }
    } else {
        return size_failure(&rc10);
    };
    format!(
        "{}MB ({blocks} {block_len} byte sectors)",
        blocks * block_len / (1024 * 1024)
    )
}

fn size_failure(r: &Response) -> String {
    match scsi_all::sense_fields(&r.sense) {
        Some((key, asc, ascq)) => format!(
            "Attempt to query device size failed: {}, {}",
            scsi_all::sense_key_name(key),
            scsi_all::asc_name(asc, ascq)
        ),
        None => format!(
            "Attempt to query device size failed: {}",
            scsi_all::status_name(r.status)
        ),
    }
}

/// xpt_print's prefix for a periph's path: `(da3:mpr0:0:2:0): `.
fn path_prefix(periph: *mut sys::cam_periph) -> String {
    let device = periph_device(periph);
    let sim = {
        let cam = cam();
        let st = cam.state();
        st.buses
            .iter()
            .find(|b| b.path_id == device.path_id)
            .map_or(String::from("?0"), |b| format!("{}{}", b.sim_name, b.sim_unit))
    };
    // SAFETY: a live periph.
    let (name, unit) = unsafe { (cstr((*periph).periph_name), (*periph).unit_number) };
    format!("({name}{unit}:{sim}:0:{}:{:x}): ", device.target, device.lun)
}

unsafe extern "C" fn standin_oninvalidate(periph: *mut sys::cam_periph) {
    // SAFETY: a live periph.
    unsafe { xpt_register_async(0, Some(standin_async), periph.cast(), (*periph).path) };
}

// --- inspection ---

/// One device line of `camcontrol devlist`.
pub fn devlist() -> String {
    let cam = cam();
    let mut devices = present_devices(&cam);
    devices.sort_by_key(|d| (d.path_id, d.target, d.lun));
    let mut out = String::new();
    for d in devices {
        let (status, inq) = run(&d, &[0x12, 0, 0, 0, 36, 0], 36);
        let field = |r: std::ops::Range<usize>| -> String {
            let s = if status == GOOD { inq.get(r).unwrap_or(&[]) } else { &[] };
            String::from_utf8_lossy(s).trim_end().to_owned()
        };
        let id = format!("<{} {} {}>", field(8..16), field(16..32), field(32..36));
        let periphs: Vec<String> = {
            let _g = d.mtx.lock();
            d.state()
                .periphs
                .iter()
                .map(|&p| {
                    let p = p as *mut sys::cam_periph;
                    // SAFETY: periphs on the list are live; the lock is held.
                    unsafe { format!("{}{}", cstr((*p).periph_name), (*p).unit_number) }
                })
                .collect()
        };
        out.push_str(&format!(
            "{id:<33}  at scbus{} target {} lun {:x} ({})\n",
            d.path_id,
            d.target,
            d.lun,
            periphs.join(",")
        ));
    }
    out
}

/// The periphs of driver `name` as `(unit, path_id, target, lun, refcount,
/// valid)`, in unit order.
pub fn periphs(name: &str) -> Vec<(u32, u32, u32, u64, u32, bool)> {
    let cam = cam();
    let Some(drv) = driver_named(&cam, name) else {
        return Vec::new();
    };
    let _topo = cam.topology.lock();
    let mut v = Vec::new();
    // SAFETY: the unit list under the topology lock.
    let mut p = unsafe { (*drv).units.tqh_first };
    while !p.is_null() {
        // SAFETY: periphs on the list are live.
        unsafe {
            let d = &path_ref((*p).path).device;
            v.push((
                (*p).unit_number,
                d.path_id,
                d.target,
                d.lun,
                (*p).refcount,
                (*p).flags & sys::CAM_PERIPH_INVALID == 0,
            ));
            p = (*p).unit_links.tqe_next;
        }
    }
    v
}

/// Whether a peripheral driver named `name` is registered.
pub fn driver_registered(name: &str) -> bool {
    driver_named(&cam(), name).is_some()
}

/// A counted reference to the periph `name``unit`, taken as a holder
/// outside the module would (`cam_periph_acquire`), released on drop.
pub struct PeriphHold(*mut sys::cam_periph);

// SAFETY: periph references may be released from any thread.
unsafe impl Send for PeriphHold {}

impl PeriphHold {
    /// Acquires `name``unit`; `Err(errno)` if it is invalid or absent.
    pub fn acquire(name: &str, unit: u32) -> Result<PeriphHold, c_int> {
        let cam = cam();
        let drv = driver_named(&cam, name).ok_or(sys::ENOENT as c_int)?;
        let found = {
            let _topo = cam.topology.lock();
            // SAFETY: the unit list under the topology lock.
            let mut p = unsafe { (*drv).units.tqh_first };
            // SAFETY: periphs on the list are live.
            while !p.is_null() && unsafe { (*p).unit_number } != unit {
                // SAFETY: as above.
                p = unsafe { (*p).unit_links.tqe_next };
            }
            p
        };
        if found.is_null() {
            return Err(sys::ENOENT as c_int);
        }
        // SAFETY: a live periph (the topology lock is released, but freeing
        // it needs its lock and a reference we are about to count).
        match unsafe { cam_periph_acquire(found) } {
            0 => Ok(PeriphHold(found)),
            e => Err(e),
        }
    }

    /// The raw periph, for tests that misuse it on purpose.
    pub fn as_ptr(&self) -> *mut sys::cam_periph {
        self.0
    }
}

impl Drop for PeriphHold {
    fn drop(&mut self) {
        // SAFETY: the reference acquired in `acquire`.
        unsafe { cam_periph_release(self.0) };
    }
}

// --- what the administrator's tools (camcontrol, the shell) use ---

/// The transfer speed every simulated SIM reports (`base_transfer_speed`,
/// in KB/s), as SAS and SATA drivers do.
pub const BASE_TRANSFER_SPEED: u32 = 150_000;

/// A bus as `camcontrol devlist -v` would list it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusInfo {
    /// Its path id (`scbusN`).
    pub path_id: u32,
    /// The SIM's driver name.
    pub sim_name: String,
    /// The SIM's unit number.
    pub sim_unit: u32,
    /// The SIM's largest transfer in bytes.
    pub maxio: u32,
    /// Commands each device on the bus takes at once.
    pub openings: u32,
}

/// Registers a new bus while the system runs (`xpt_bus_register`, as an
/// iSCSI session or a hot-plugged HBA does), with its devices; returns its
/// path id.
pub fn add_bus(spec: &BusSpec) -> u32 {
    let cam = cam();
    let path_id = {
        let mut st = cam.state();
        let path_id = st.buses.len() as u32;
        st.buses.push(Bus {
            path_id,
            sim_name: spec.sim_name.clone(),
            sim_unit: spec.sim_unit,
            maxio: spec.maxio,
            openings: spec.openings,
        });
        path_id
    };
    for d in &spec.devices {
        plug(path_id, d.clone());
    }
    path_id
}

/// The buses, in path id order.
pub fn buses() -> Vec<BusInfo> {
    cam()
        .state()
        .buses
        .iter()
        .map(|b| BusInfo {
            path_id: b.path_id,
            sim_name: b.sim_name.clone(),
            sim_unit: b.sim_unit,
            maxio: b.maxio,
            openings: b.openings,
        })
        .collect()
}

/// The emulated device at `path_id:target:lun` (to plug it in again
/// elsewhere, medium and all).
pub fn device_of(path_id: u32, target: u32, lun: u64) -> Option<Arc<dyn ScsiDevice>> {
    cam()
        .state()
        .devices
        .iter()
        .find(|d| (d.path_id, d.target, d.lun) == (path_id, target, lun))
        .map(|d| d.state().emulated.clone())
}

/// Every device CAM knows as `(path_id, target, lun, present)`: a device
/// that went away stays (not present) while a periph still refers to it,
/// and a device plugged at its location becomes it again.
pub fn devices() -> Vec<(u32, u32, u64, bool)> {
    let mut v: Vec<(u32, u32, u64, bool)> = cam()
        .state()
        .devices
        .iter()
        .map(|d| (d.path_id, d.target, d.lun, d.state().present))
        .collect();
    v.sort();
    v
}

/// Wires unit `unit` of `driver` to a location, as device hints do
/// (`hint.da.5.at="scbus3"`, `hint.da.5.target="0"`, `hint.da.5.lun="0"`):
/// a periph of that driver attaching there gets that unit, and no other
/// device gets it.
pub fn wire_unit(driver: &str, unit: u32, path_id: u32, target: u32, lun: u64) {
    let hint = Hint {
        driver: driver.to_owned(),
        unit,
        path_id,
        target,
        lun,
    };
    let cam = cam();
    let mut st = cam.state();
    st.hints.retain(|h| !(h.driver == hint.driver && h.unit == unit));
    st.hints.push(hint);
}

/// Removes the device hints that wire units to a location.
pub fn unwire(path_id: u32, target: u32, lun: u64) {
    cam()
        .state()
        .hints
        .retain(|h| (h.path_id, h.target, h.lun) != (path_id, target, lun));
}

/// The location `(path_id, target, lun)` of the present device an
/// administrator names: a periph (`da3`, `/dev/da3`, `pass4`, `cd0`, of a
/// valid periph), or `bus:target:lun` as camcontrol takes it.
pub fn locate(name: &str) -> Option<(u32, u32, u64)> {
    let name = name.strip_prefix("/dev/").unwrap_or(name);
    let at = if name.contains(':') {
        let mut parts = name.split(':');
        let (p, t, l) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        (p.parse().ok()?, t.parse().ok()?, l.parse().ok()?)
    } else {
        let split = name.find(|c: char| c.is_ascii_digit())?;
        let (driver, unit) = name.split_at(split);
        let unit: u32 = unit.parse().ok()?;
        let (_, p, t, l, _, valid) = periphs(driver).into_iter().find(|x| x.0 == unit)?;
        if !valid {
            return None;
        }
        (p, t, l)
    };
    devices().contains(&(at.0, at.1, at.2, true)).then_some(at)
}

/// Sends one command straight to the device behind `name` (see
/// [`locate`]), as camcontrol does through pass(4); `None` if there is no
/// such device.
pub fn device_command(name: &str, cdb: &[u8], data_in_len: usize) -> Option<Response> {
    let (p, t, l) = locate(name)?;
    let device = cam()
        .state()
        .devices
        .iter()
        .find(|d| (d.path_id, d.target, d.lun) == (p, t, l) && d.state().present)
        .cloned()?;
    Some(execute(&device, cdb, data_in_len))
}

/// Each simulated function has the type its C prototype declares.
const _: () = {
    let _: [unsafe extern "C" fn(*mut sys::ccb); 2] = [sys::xpt_action, xpt_action];
    let _: [unsafe extern "C" fn(*mut sys::ccb_hdr, *mut sys::cam_path, u32); 2] = [sys::xpt_setup_ccb, xpt_setup_ccb];
    let _: [unsafe extern "C" fn(c_int, sys::ac_callback_t, *mut c_void, *mut sys::cam_path) -> sys::cam_status; 2] =
        [sys::xpt_register_async, xpt_register_async];
    let _: [unsafe extern "C" fn(*mut c_void); 2] = [sys::periphdriver_register, periphdriver_register];
    let _: [unsafe extern "C" fn(*mut c_void) -> c_int; 2] = [sys::periphdriver_unregister, periphdriver_unregister];
    let _: [unsafe extern "C" fn(*mut sys::cam_periph) -> c_int; 2] = [sys::cam_periph_acquire, cam_periph_acquire];
    let _: [unsafe extern "C" fn(*mut sys::cam_periph); 8] = [
        sys::cam_periph_release,
        cam_periph_release,
        sys::cam_periph_release_locked,
        cam_periph_release_locked,
        sys::cam_periph_invalidate,
        cam_periph_invalidate,
        sys::cam_periph_doacquire,
        cam_periph_doacquire,
    ];
    let _: [unsafe extern "C" fn(*mut sys::cam_periph, u32, *mut sys::cam_path, *mut c_void); 2] =
        [sys::cam_periph_async, cam_periph_async];
    let _: [unsafe extern "C" fn(*mut sys::cam_path) -> *mut sys::mtx; 2] = [sys::xpt_path_mtx, xpt_path_mtx];
    let _: [unsafe extern "C" fn(); 4] = [
        sys::xpt_lock_buses,
        xpt_lock_buses,
        sys::xpt_unlock_buses,
        xpt_unlock_buses,
    ];
};
