//! `kern.cam.ctl.passthrough`: the backend's tunables, its mode, and one
//! node of statistics per LUN, as an administrator reads them with
//! sysctl(8) (and sets the tunables in loader.conf(5) or with sysctl(8)).
//!
//! ```text
//! kern.cam.ctl.passthrough.mode        string  "A" (stock CTL; "B": patched CTL)
//! kern.cam.ctl.passthrough.pool_size   u64 RWTUN  data buffer bytes per LUN
//! kern.cam.ctl.passthrough.timeout     u32 RWTUN  data command timeout, ms
//! kern.cam.ctl.passthrough.lost        string RWTUN  "offline" or "remove"
//! kern.cam.ctl.passthrough.lun.<id>.*  per LUN: device, state, counters,
//!                                      queue depths, ctl_conf
//! ```
//!
//! sysctl(9) lists a node's children newest first (each OID added with
//! `OID_AUTO` gets a lower number than the one before), so each node's
//! children are added in the reverse of the order they are listed in.

use core::ffi::CStr;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use super::options::LostPolicy;
use super::reply::Failure;
use crate::kern::ctl::{BeLun, LunRef};
use crate::kern::errno::Errno;
use crate::kern::fmt::FmtBuf;
use crate::kern::pool::BUF_MAX;
use crate::kern::sysctl::{Access, Children, Handler, Kind, Req, SysctlCtx};
use crate::periph::io::{self as pio, POOL_BUDGET};

/// How ctlpass runs with CTL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Stock CTL: disks and CDs, their identity mirrored by CTL.
    A,
}

impl Mode {
    /// Its name, as `kern.cam.ctl.passthrough.mode` and `ctladm devlist -v`
    /// show it.
    pub fn name(self) -> &'static CStr {
        match self {
            Mode::A => c"A",
        }
    }
}

/// The mode the backend runs in.
pub fn mode() -> Mode {
    Mode::A
}

/// The pool size bounds: at least one largest buffer, at most 1 GiB.
const POOL_SIZE_MIN: u64 = BUF_MAX as u64;
const POOL_SIZE_MAX: u64 = 1 << 30;
/// The data command timeout bounds, in milliseconds.
const TIMEOUT_MIN: u32 = 1_000;
const TIMEOUT_MAX: u32 = 3_600_000;
/// The data command timeout by default: da(4)'s 60 s.
const TIMEOUT_DEFAULT: u32 = 60_000;

/// The backend's tunables, read where they apply.
pub struct Tunables {
    pool_size: AtomicU64,
    timeout: AtomicU32,
    lost: AtomicU8,
}

/// The tunables' values now.
static TUNABLES: Tunables = Tunables {
    pool_size: AtomicU64::new(POOL_BUDGET as u64),
    timeout: AtomicU32::new(TIMEOUT_DEFAULT),
    lost: AtomicU8::new(LostPolicy::Offline as u8),
};

/// Bytes of data buffers a new LUN may keep (`pool_size`).
pub fn pool_size() -> usize {
    usize::try_from(TUNABLES.pool_size.load(Ordering::Relaxed)).unwrap_or(POOL_BUDGET)
}

/// The timeout of data commands sent to a device, in milliseconds
/// (`timeout`).
pub fn timeout_ms() -> u32 {
    TUNABLES.timeout.load(Ordering::Relaxed)
}

/// What becomes of a LUN created without `lost=` when its device goes
/// away (`lost`).
pub fn lost() -> LostPolicy {
    lost_of(TUNABLES.lost.load(Ordering::Relaxed))
}

fn lost_of(raw: u8) -> LostPolicy {
    if raw == LostPolicy::Remove as u8 {
        LostPolicy::Remove
    } else {
        LostPolicy::Offline
    }
}

fn lost_name(p: LostPolicy) -> &'static str {
    match p {
        LostPolicy::Offline => "offline",
        LostPolicy::Remove => "remove",
    }
}

/// The module's fields (`arg2` of its OIDs).
const MODE: i64 = 0;
const POOL_SIZE: i64 = 1;
const TIMEOUT: i64 = 2;
const LOST: i64 = 3;

impl Handler for Tunables {
    fn handle(&self, field: i64, req: &mut Req) -> Result<(), Errno> {
        match field {
            MODE => req.text(mode().name()),
            POOL_SIZE => {
                if let Some(v) = req.u64(self.pool_size.load(Ordering::Relaxed))? {
                    if !(POOL_SIZE_MIN..=POOL_SIZE_MAX).contains(&v) {
                        return Err(Errno::EINVAL);
                    }
                    self.pool_size.store(v, Ordering::Relaxed);
                }
                Ok(())
            }
            TIMEOUT => {
                if let Some(v) = req.u32(self.timeout.load(Ordering::Relaxed))? {
                    if !(TIMEOUT_MIN..=TIMEOUT_MAX).contains(&v) {
                        return Err(Errno::EINVAL);
                    }
                    self.timeout.store(v, Ordering::Relaxed);
                }
                Ok(())
            }
            LOST => {
                let mut buf = [0u8; 16];
                let current = lost_name(lost_of(self.lost.load(Ordering::Relaxed)));
                if let Some(v) = req.string(current, &mut buf)? {
                    let policy = match v {
                        b"offline" => LostPolicy::Offline,
                        b"remove" => LostPolicy::Remove,
                        _ => return Err(Errno::EINVAL),
                    };
                    self.lost.store(policy as u8, Ordering::Relaxed);
                }
                Ok(())
            }
            _ => Err(Errno::ENOENT),
        }
    }
}

/// The module's OIDs, from backend registration to deregistration, and
/// the `lun` node LUNs hang theirs under.
pub struct ModuleTree {
    /// Dropping it removes the OIDs.
    _ctx: SysctlCtx<&'static Tunables>,
    luns: Children,
}

impl ModuleTree {
    /// Adds the module's OIDs, with the tunables at their defaults unless
    /// the kernel environment sets them (fetched as each is added).  Sleeps.
    pub fn new() -> Result<ModuleTree, Errno> {
        TUNABLES.pool_size.store(POOL_BUDGET as u64, Ordering::Relaxed);
        TUNABLES.timeout.store(TIMEOUT_DEFAULT, Ordering::Relaxed);
        TUNABLES.lost.store(LostPolicy::Offline as u8, Ordering::Relaxed);
        let ctx = SysctlCtx::new(&TUNABLES)?;
        let top = Children::passthrough();
        let luns = ctx.add_node(top, c"lun", c"LUNs, by CTL LUN number")?;
        ctx.add_proc(
            top,
            c"lost",
            Kind::String,
            Access::Tunable,
            LOST,
            c"What becomes of a LUN created without lost= when its device goes away: offline or remove",
        )?;
        ctx.add_proc(
            top,
            c"timeout",
            Kind::U32,
            Access::Tunable,
            TIMEOUT,
            c"Timeout of data commands sent to a device, in milliseconds (1000-3600000)",
        )?;
        ctx.add_proc(
            top,
            c"pool_size",
            Kind::U64,
            Access::Tunable,
            POOL_SIZE,
            c"Bytes of data buffers each new LUN may keep (1 MiB-1 GiB)",
        )?;
        ctx.add_proc(
            top,
            c"mode",
            Kind::String,
            Access::ReadOnly,
            MODE,
            c"A: stock CTL (disks and CDs, identity mirrored); B: CTL with the ctlpass patch",
        )?;
        Ok(ModuleTree { _ctx: ctx, luns })
    }

    /// The `lun` node's children, valid while the tree is.
    pub fn luns(&self) -> Children {
        self.luns
    }
}

/// A LUN's counters, updated where its commands complete.
#[derive(Default)]
pub struct LunStats {
    commands: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    check_condition: AtomicU64,
    transport: AtomicU64,
    timeout: AtomicU64,
    device_lost: AtomicU64,
    resource: AtomicU64,
    aborts: AtomicU64,
    busy: AtomicU64,
}

impl LunStats {
    /// CTL handed the LUN a command.
    pub fn command(&self) {
        self.commands.fetch_add(1, Ordering::Relaxed);
    }

    /// A data move to (`read`) or from the initiator took `bytes`.
    pub fn moved(&self, read: bool, bytes: u32) {
        let c = if read { &self.bytes_read } else { &self.bytes_written };
        c.fetch_add(u64::from(bytes), Ordering::Relaxed);
    }

    /// A command ended; `failure` says how if it failed.
    pub fn ended(&self, failure: Option<Failure>) {
        let c = match failure {
            None => return,
            Some(Failure::CheckCondition) => &self.check_condition,
            Some(Failure::Transport) => &self.transport,
            Some(Failure::Timeout) => &self.timeout,
            Some(Failure::DeviceLost) => &self.device_lost,
            Some(Failure::Resource) => &self.resource,
            Some(Failure::Aborted) => &self.aborts,
            Some(Failure::Busy) => &self.busy,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// A LUN's fields answered by handlers (`arg2` of its OIDs).
const DEVICE: i64 = 0;
const STATE: i64 = 1;
const INCOMING: i64 = 2;
const ACTIVE: i64 = 3;
const ABANDONED: i64 = 4;
const DONE: i64 = 5;
const CTL_CONF: i64 = 6;

impl Handler for BeLun {
    fn handle(&self, field: i64, req: &mut Req) -> Result<(), Errno> {
        match field {
            DEVICE => {
                let name = super::lock()
                    .luns
                    .find_mut(|e| core::ptr::eq(&*e.lun, self))
                    .map(|e| if e.offline { FmtBuf::new() } else { e.place.name });
                req.text(name.unwrap_or_default().as_c_str())
            }
            STATE => req.text(if self.lun().is_online() { c"online" } else { c"offline" }),
            INCOMING | ACTIVE | ABANDONED | DONE => {
                let d = queue_depths(self);
                let v = match field {
                    INCOMING => d.incoming,
                    ACTIVE => d.active,
                    ABANDONED => d.abandoned,
                    _ => d.done,
                };
                req.u32(v).map(drop)
            }
            CTL_CONF => {
                let name = super::lock()
                    .luns
                    .find_mut(|e| core::ptr::eq(&*e.lun, self))
                    .map(|e| e.place.name)
                    .unwrap_or_default();
                let mut text = FmtBuf::<1024>::new();
                ctl_conf(&mut text, self, name.as_str());
                req.text(text.as_c_str())
            }
            _ => Err(Errno::ENOENT),
        }
    }
}

/// The LUN's requests in its device's queues now (none while it has no
/// device).
fn queue_depths(lun: &BeLun) -> pio::QueueDepths {
    let device = lun.lun().device();
    if !device.enter() {
        return pio::QueueDepths::default();
    }
    let depths = device.periph().map(|p| pio::depths(p, lun)).unwrap_or_default();
    drop(device.leave());
    depths
}

/// Adds LUN `lun`'s node under `luns` (`lun.<id>`); dropping the context
/// removes it.  Sleeps.
pub fn lun_node(luns: Children, lun: LunRef) -> Result<SysctlCtx<LunRef>, Errno> {
    let mut id = FmtBuf::<12>::new();
    let _ = write!(id, "{}", lun.id());
    let ctx = SysctlCtx::new(lun)?;
    let node = ctx.add_node(luns, id.as_c_str(), c"A passthrough LUN")?;
    ctx.add_proc(
        node,
        c"ctl_conf",
        Kind::String,
        Access::ReadOnly,
        CTL_CONF,
        c"The ctl.conf(5) lun block that recreates this LUN with ctld, unchanged across ctld restarts",
    )?;
    let queue = ctx.add_node(node, c"queue", c"Requests in the device's queues now")?;
    for (name, field, descr) in [
        (c"done", DONE, c"Requests completed, waiting for the done task"),
        (
            c"abandoned",
            ABANDONED,
            c"Aborted requests whose CCB the SIM could not abort, ended, waiting for the device",
        ),
        (c"active", ACTIVE, c"Requests on the device"),
        (c"incoming", INCOMING, c"Requests waiting for a buffer or a CCB"),
    ] {
        ctx.add_proc(queue, name, Kind::U32, Access::ReadOnly, field, descr)?;
    }
    ctx.add_counter(
        node,
        c"busy",
        |l| &l.lun().stats.busy,
        c"BUSY and TASK SET FULL from the device, passed on",
    )?;
    ctx.add_counter(
        node,
        c"aborts",
        |l| &l.lun().stats.aborts,
        c"Commands ended by task management (or TASK ABORTED)",
    )?;
    let errors = ctx.add_node(node, c"errors", c"Failed commands, by cause")?;
    type Counter = fn(&BeLun) -> &AtomicU64;
    let counters: [(&CStr, Counter, &CStr); 5] = [
        (
            c"resource",
            |l| &l.lun().stats.resource,
            c"Commands refused for lack of memory or SIM resources",
        ),
        (
            c"device_lost",
            |l| &l.lun().stats.device_lost,
            c"Commands ended because the device was gone",
        ),
        (
            c"timeout",
            |l| &l.lun().stats.timeout,
            c"Commands that timed out at the device",
        ),
        (
            c"transport",
            |l| &l.lun().stats.transport,
            c"Commands CAM ended with a transport or SIM error",
        ),
        (
            c"check_condition",
            |l| &l.lun().stats.check_condition,
            c"Commands ended with CHECK CONDITION",
        ),
    ];
    for (name, counter, descr) in counters {
        ctx.add_counter(errors, name, counter, descr)?;
    }
    ctx.add_counter(
        node,
        c"bytes_written",
        |l| &l.lun().stats.bytes_written,
        c"Bytes moved from initiators (DATA-OUT)",
    )?;
    ctx.add_counter(
        node,
        c"bytes_read",
        |l| &l.lun().stats.bytes_read,
        c"Bytes moved to initiators (DATA-IN)",
    )?;
    ctx.add_counter(
        node,
        c"commands",
        |l| &l.lun().stats.commands,
        c"Commands CTL handed the LUN",
    )?;
    ctx.add_proc(
        node,
        c"state",
        Kind::String,
        Access::ReadOnly,
        STATE,
        c"online or offline (device lost)",
    )?;
    ctx.add_proc(
        node,
        c"device",
        Kind::String,
        Access::ReadOnly,
        DEVICE,
        c"The device now (\"\" while lost)",
    )?;
    Ok(ctx)
}

/// ctl.conf(5)'s keywords (usr.sbin/ctld/token.l), which a bare word may
/// not be.
const KEYWORDS: &[&str] = &[
    "alias",
    "auth-group",
    "auth-type",
    "backend",
    "blocksize",
    "chap",
    "chap-mutual",
    "controller",
    "ctl-lun",
    "debug",
    "device-id",
    "device-type",
    "discovery-auth-group",
    "discovery-filter",
    "discovery-tcp",
    "dscp",
    "pcp",
    "foreign",
    "host-address",
    "host-nqn",
    "initiator-name",
    "initiator-portal",
    "listen",
    "listen-iser",
    "lun",
    "maxproc",
    "offload",
    "option",
    "path",
    "pidfile",
    "isns-server",
    "isns-period",
    "isns-timeout",
    "port",
    "portal-group",
    "redirect",
    "serial",
    "size",
    "tag",
    "target",
    "tcp",
    "timeout",
    "transport-group",
    "af11",
    "af12",
    "af13",
    "af21",
    "af22",
    "af23",
    "af31",
    "af32",
    "af33",
    "af41",
    "af42",
    "af43",
    "be",
    "ef",
    "cs0",
    "cs1",
    "cs2",
    "cs3",
    "cs4",
    "cs5",
    "cs6",
    "cs7",
];

/// A string as ctl.conf's lexer (usr.sbin/ctld/token.l) reads it back
/// whole: bare if it is a word of `[a-zA-Z0-9.-@_/:[]]` that is no
/// keyword, else in double quotes, which take any character but `"` and
/// at least one.  `None` if neither can carry it (empty, a `"`, or a
/// control character, which would break the stanza's lines).
fn conf_word(text: &[u8]) -> Option<ConfWord<'_>> {
    let text = core::str::from_utf8(text).ok()?;
    if text.is_empty() || text.chars().any(|c| c == '"' || c.is_control()) {
        return None;
    }
    let bare = text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b".-@_/:[]".contains(&b))
        && !KEYWORDS.contains(&text);
    Some(ConfWord { text, bare })
}

/// A string for ctl.conf, quoted if it must be.
struct ConfWord<'a> {
    text: &'a str,
    bare: bool,
}

impl fmt::Display for ConfWord<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.bare {
            f.write_str(self.text)
        } else {
            write!(f, "\"{}\"", self.text)
        }
    }
}

/// The option that named the LUN's device, as ctl.conf's `path` gives it
/// to ctld (which sends it as `file`): `file` or `device` verbatim, else
/// `cam=`, `devid=` or `serial=` and the option of that name.
fn device_path(lun: &BeLun, out: &mut FmtBuf<320>) {
    if let Some(v) = lun.option(c"file").or_else(|| lun.option(c"device")) {
        let _ = out.write_str(v.to_str().unwrap_or(""));
        return;
    }
    for (name, prefix) in [(c"cam", "cam="), (c"devid", "devid="), (c"serial", "serial=")] {
        if let Some(v) = lun.option(name) {
            let _ = write!(out, "{prefix}{}", v.to_str().unwrap_or(""));
            return;
        }
    }
}

/// Writes the ctl.conf(5) `lun` block that recreates `lun` (named for ctld
/// by its `ctld_name` option, else `device`) so that a ctld restart finds it
/// unchanged: ctld's `lun::changed` compares backend, blocksize, device-id,
/// path and serial with what CTL's LUN list says.  A LUN ctl.conf cannot
/// express gets a comment saying why instead.
fn ctl_conf<const N: usize>(out: &mut FmtBuf<N>, lun: &BeLun, device: &str) {
    let mut path = FmtBuf::<320>::new();
    device_path(lun, &mut path);
    let name = lun.option(c"ctld_name").map_or(device.as_bytes(), CStr::to_bytes);
    let (serial, device_id) = lun.ids();
    let refuse = |out: &mut FmtBuf<N>, what: &str| {
        let _ = write!(out, "# ctl.conf(5) cannot express LUN {}: {what}", lun.id());
    };
    let Some(name) = conf_word(name) else {
        return refuse(out, "no name a ctl.conf string can hold");
    };
    let Some(path_word) = conf_word(path.as_bytes()).filter(|_| !path.truncated()) else {
        return refuse(out, "its device option is no ctl.conf string");
    };
    // An empty serial number or device id is what ctld reads back when
    // ctl.conf has none.
    let (serial_word, device_id_word) = (conf_word(serial), conf_word(device_id));
    if serial_word.is_none() && !serial.is_empty() {
        return refuse(out, "its serial number is no ctl.conf string");
    }
    if device_id_word.is_none() && !device_id.is_empty() {
        return refuse(out, "its device id is no ctl.conf string");
    }
    let _ = write!(
        out,
        "lun {name} {{\n\tbackend passthrough\n\tpath {path_word}\n\tblocksize {}\n",
        lun.geometry().1
    );
    if let Some(s) = serial_word {
        let _ = writeln!(out, "\tserial \"{}\"", s.text);
    }
    if let Some(d) = device_id_word {
        let _ = writeln!(out, "\tdevice-id \"{}\"", d.text);
    }
    let _ = out.write_str("}");
    if out.truncated() {
        *out = FmtBuf::new();
        refuse(out, "the stanza is too long");
    }
}
