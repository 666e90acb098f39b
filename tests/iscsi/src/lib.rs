//! Real SCSI devices written by others, for differential tests.
//!
//! [`Tgt`] starts a tgtd (the Linux SCSI target daemon) on 127.0.0.1 that
//! serves a disk, a tape and a CD-ROM over iSCSI, each test with its own
//! daemon, ports and backing files. [`IscsiLun`] is a logged-in libiscsi
//! session to one logical unit of such a target (or any other), through
//! which a command descriptor block and its data buffers are sent exactly
//! as given, and the status, sense data and transfer count are returned
//! as the target reported them.
//!
//! Commands are completed by the crate's own event loop over libiscsi's
//! asynchronous interface rather than by `iscsi_scsi_command_sync`: the
//! synchronous calls keep their completion state on their stack, so a
//! command left queued by a transport failure would later be completed
//! (cancelled, when the context is destroyed) into a dead stack frame. Here
//! the completion state lives on the heap and is deliberately leaked when
//! libiscsi may still refer to it.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc, missing_docs)]

mod sys;

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::ptr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a LUN answered to one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The SCSI status byte (0 GOOD, 2 CHECK CONDITION, 8 BUSY, ...).
    pub status: u8,
    /// The sense data exactly as the target returned it (empty when none).
    pub sense: Vec<u8>,
    /// For DATA IN, the bytes placed in `data_in` (what the target sent,
    /// capped by `data_in.len()`); for DATA OUT, the bytes of `data_out`
    /// sent (`data_out.len()` unless the target reported a residual); 0
    /// without data.
    ///
    /// It is the expected length less the residual the target reported
    /// (RFC 7143, 11.4.5.1); without a residual, all of it for GOOD, and
    /// for another status all of it or none, depending on whether DATA-IN
    /// arrived.
    pub transferred: usize,
}

/// A transport failure (connection, login, PDU error): not a SCSI status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// The iSCSI name this crate's initiator logs in with.
const INITIATOR: &CStr = c"iqn.2026-11.org.ctlpass:sim";

/// The libiscsi statuses (above any SCSI status byte) that report a
/// transport failure rather than the target's answer.
const TRANSPORT_STATUSES: [sys::scsi_status; 3] = [
    sys::SCSI_STATUS_CANCELLED,
    sys::SCSI_STATUS_ERROR,
    sys::SCSI_STATUS_TIMEOUT,
];

/// One logged-in iSCSI session to one LUN, usable from several threads (commands are serialised inside).
pub struct IscsiLun {
    /// The session, locked for each request.
    session: Mutex<Session>,
}

/// The libiscsi context of an [`IscsiLun`] and what is known about it.
struct Session {
    /// The context, logged in; owned by the session.
    ctx: *mut sys::iscsi_context,
    /// The LUN the URL named.
    lun: c_int,
    /// Why the session can no longer be used, after a transport failure.
    failed: Option<String>,
    /// DATA-IN commands sent, to vary the canary (see `IscsiLun::execute`).
    reads: u64,
}

// SAFETY: a libiscsi context has no affinity to the thread that created it
// (no thread-local state; errors are kept in the context). A `Session` is only
// reached through the `Mutex` of its `IscsiLun` (or by `Drop`, which has it
// exclusively), so the context is never used by two threads at once; this
// makes `IscsiLun` both `Send` and `Sync`.
unsafe impl Send for Session {}

/// The completion of one asynchronous libiscsi request, written by
/// [`request_done`] and read by the event loop.
///
/// It is heap-allocated and its address is libiscsi's private data for the
/// request; it is freed only once libiscsi has completed the request, and
/// leaked otherwise (libiscsi may still complete it, when the context is
/// destroyed).
struct Pending {
    /// Whether libiscsi has called back.
    finished: bool,
    /// The status libiscsi called back with.
    status: c_int,
    /// For task management, the response code (0 = function complete).
    response: Option<u32>,
    /// The data buffer of a SCSI command, referred to by its task.
    iov: sys::scsi_iovec,
}

impl Pending {
    /// A request that has not completed, for a command with data buffer `iov`.
    fn new(iov: sys::scsi_iovec) -> *mut Pending {
        Box::into_raw(Box::new(Pending {
            finished: false,
            status: 0,
            response: None,
            iov,
        }))
    }

    /// A request without data buffer that has not completed.
    fn without_data() -> *mut Pending {
        Pending::new(sys::scsi_iovec {
            iov_base: ptr::null_mut(),
            iov_len: 0,
        })
    }
}

/// Records the completion of a request whose private data is a `Pending`.
///
/// # Safety
///
/// `private_data` is the pointer `Pending::new` returned, not yet freed, and
/// no reference to that `Pending` is live.
unsafe extern "C" fn request_done(
    _ctx: *mut sys::iscsi_context,
    status: c_int,
    _command_data: *mut c_void,
    private_data: *mut c_void,
) {
    let pending = private_data.cast::<Pending>();
    // SAFETY: per the contract, `pending` is a live, unaliased `Pending`.
    unsafe {
        (*pending).finished = true;
        (*pending).status = status;
    }
}

/// Records the completion of a task-management request (as
/// [`request_done`], plus its response code).
///
/// # Safety
///
/// As for [`request_done`]; and `command_data` is null or, when `status` is
/// `SCSI_STATUS_GOOD`, points to the 32-bit response code (libiscsi's
/// convention for task management).
unsafe extern "C" fn task_mgmt_done(
    ctx: *mut sys::iscsi_context,
    status: c_int,
    command_data: *mut c_void,
    private_data: *mut c_void,
) {
    let pending = private_data.cast::<Pending>();
    if status == sys::SCSI_STATUS_GOOD as c_int && !command_data.is_null() {
        // SAFETY: per the contract, `pending` is a live, unaliased `Pending`
        // and `command_data` points to the response code.
        unsafe { (*pending).response = Some(command_data.cast::<u32>().read_unaligned()) };
    }
    // SAFETY: forwarded contract.
    unsafe { request_done(ctx, status, command_data, private_data) };
}

/// Describes libiscsi's last error on `ctx`.
///
/// # Safety
///
/// `ctx` is a live libiscsi context.
unsafe fn last_error(ctx: *mut sys::iscsi_context) -> String {
    // SAFETY: `ctx` is live; libiscsi returns its NUL-terminated error buffer.
    let msg = unsafe { sys::iscsi_get_error(ctx) };
    if msg.is_null() {
        return "unknown libiscsi error".into();
    }
    // SAFETY: a non-null result is a NUL-terminated string inside the context.
    let msg = unsafe { CStr::from_ptr(msg) }.to_string_lossy().trim_end().to_string();
    if msg.is_empty() {
        "unknown libiscsi error".into()
    } else {
        msg
    }
}

/// Reads a NUL-terminated string from a fixed-size C array.
fn c_array_str(chars: &[c_char]) -> String {
    let bytes: Vec<u8> = chars.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Runs libiscsi's event loop on `ctx` until `pending` completes.
///
/// Returns an error when the connection fails; `pending` may then have
/// completed (libiscsi cancels the requests of a dropped session) or not.
///
/// # Safety
///
/// `ctx` is a live, connected libiscsi context used by no other thread, and
/// `pending` is a live `Pending` to which no reference is live.
unsafe fn run_until_done(ctx: *mut sys::iscsi_context, pending: *const Pending) -> Result<(), String> {
    let mut idle = 0;
    loop {
        // SAFETY: `pending` is live and only written by libiscsi's callback,
        // which runs inside `iscsi_service` below (an opaque call, after
        // which this is read again), not concurrently.
        if unsafe { (*pending).finished } {
            return Ok(());
        }
        // SAFETY: `ctx` is live.
        let fd = unsafe { sys::iscsi_get_fd(ctx) };
        if fd < 0 {
            return Err("not connected".into());
        }
        // SAFETY: `ctx` is live.
        let events = unsafe { sys::iscsi_which_events(ctx) };
        if events == 0 {
            // libiscsi asks for a pause (it is between reconnection attempts,
            // which this crate disables): give up after 10 s of it.
            idle += 1;
            if idle > 100 {
                return Err("libiscsi has nothing to wait for".into());
            }
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        idle = 0;
        let mut pfd = sys::pollfd {
            fd,
            events: events as _,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd.
        let n = unsafe { sys::poll(&mut pfd, 1, 1000) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("poll: {e}"));
        }
        // A timeout still services the context (libiscsi's timers).
        let revents = if n == 0 { 0 } else { c_int::from(pfd.revents) };
        // SAFETY: `ctx` is live and used by this thread only.
        if unsafe { sys::iscsi_service(ctx, revents) } < 0 {
            // SAFETY: `ctx` is live.
            return Err(unsafe { last_error(ctx) });
        }
    }
}

impl IscsiLun {
    /// Logs in to the LUN `url` names (`iscsi://HOST[:PORT]/TARGET-IQN/LUN`) as initiator `iqn.2026-11.org.ctlpass:sim`.
    pub fn connect(url: &str) -> Result<IscsiLun, Error> {
        let c_url = CString::new(url).map_err(|_| Error(format!("{url:?}: NUL in URL")))?;
        // SAFETY: `INITIATOR` is a NUL-terminated string.
        let ctx = unsafe { sys::iscsi_create_context(INITIATOR.as_ptr()) };
        if ctx.is_null() {
            return Err(Error("iscsi_create_context failed".into()));
        }
        // From here on, dropping `session` destroys the context.
        let mut session = Session {
            ctx,
            lun: 0,
            failed: None,
            reads: 0,
        };
        // Commands fail when the target drops the session, instead of being
        // replayed on a new one: the caller decides.
        // SAFETY: `ctx` is live.
        unsafe { sys::iscsi_set_noautoreconnect(ctx, 1) };
        // SAFETY: `ctx` is live and `c_url` NUL-terminated; parsing a full
        // URL also sets the context's target name (and CHAP user, if any).
        let parsed = unsafe { sys::iscsi_parse_full_url(ctx, c_url.as_ptr()) };
        if parsed.is_null() {
            // SAFETY: `ctx` is live.
            return Err(Error(format!("{url}: bad iSCSI URL: {}", unsafe { last_error(ctx) })));
        }
        // SAFETY: a non-null result is a valid `iscsi_url`, freed just below.
        let (portal, lun) = unsafe { (c_array_str(&(*parsed).portal), (*parsed).lun) };
        // SAFETY: `parsed` came from `iscsi_parse_full_url` and is not used again.
        unsafe { sys::iscsi_destroy_url(parsed) };
        session.lun = lun;
        let c_portal = CString::new(portal).map_err(|_| Error(format!("{url}: bad portal")))?;
        // SAFETY: `ctx` is live.
        unsafe {
            sys::iscsi_set_session_type(ctx, sys::ISCSI_SESSION_NORMAL);
            sys::iscsi_set_header_digest(ctx, sys::ISCSI_HEADER_DIGEST_NONE_CRC32C);
        }
        // On failure the synchronous connect cancels what it queued before
        // returning (its completion state is on its stack), so nothing of it
        // is left to complete when the context is destroyed.
        // SAFETY: `ctx` is live and `c_portal` NUL-terminated.
        if unsafe { sys::iscsi_full_connect_sync(ctx, c_portal.as_ptr(), lun) } != 0 {
            // SAFETY: `ctx` is live.
            return Err(Error(format!("{url}: login failed: {}", unsafe { last_error(ctx) })));
        }
        Ok(IscsiLun {
            session: Mutex::new(session),
        })
    }

    /// Locks the session (a panic while it was locked does not make it unusable).
    fn lock(&self) -> MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends one CDB and waits for the target's answer.
    ///
    /// If `data_out` is not empty the command is DATA OUT (`data_out.len()`
    /// bytes); otherwise, if `data_in` is not empty, it is DATA IN (expected
    /// length `data_in.len()`, received in place; the bytes of `data_in`
    /// beyond [`Response::transferred`] are left as they were); otherwise it
    /// has no data. Any SCSI status (CHECK CONDITION included) is an `Ok`
    /// [`Response`]; `Err` is a transport failure, after which the session
    /// refuses further commands.
    pub fn execute(&self, cdb: &[u8], data_out: &[u8], data_in: &mut [u8]) -> Result<Response, Error> {
        if cdb.is_empty() || cdb.len() > sys::SCSI_CDB_MAX_SIZE as usize {
            return Err(Error(format!(
                "CDB of {} bytes (1 to {} allowed)",
                cdb.len(),
                sys::SCSI_CDB_MAX_SIZE
            )));
        }
        let data_len = if data_out.is_empty() {
            data_in.len()
        } else {
            data_out.len()
        };
        if c_int::try_from(data_len).is_err() {
            return Err(Error(format!("transfer of {data_len} bytes")));
        }
        let mut s = self.lock();
        if let Some(why) = &s.failed {
            return Err(Error(format!("session unusable after a transport failure: {why}")));
        }
        if !data_out.is_empty() {
            // libiscsi only reads a DATA OUT buffer.
            let iov = sys::scsi_iovec {
                iov_base: data_out.as_ptr().cast_mut().cast(),
                iov_len: data_out.len(),
            };
            // SAFETY: `iov` describes `data_out`, borrowed for this call.
            let done = unsafe { s.command(cdb, sys::SCSI_XFER_WRITE, iov) }?;
            let transferred = done.residual_transferred(data_out.len()).unwrap_or(data_out.len());
            return Ok(Response {
                status: done.status,
                sense: done.sense,
                transferred,
            });
        }
        if data_in.is_empty() {
            let iov = sys::scsi_iovec {
                iov_base: ptr::null_mut(),
                iov_len: 0,
            };
            // SAFETY: no buffer.
            let done = unsafe { s.command(cdb, sys::SCSI_XFER_NONE, iov) }?;
            return Ok(Response {
                status: done.status,
                sense: done.sense,
                transferred: 0,
            });
        }

        // libiscsi places DATA-IN directly in `data_in` but does not count
        // it, and a target need not report a residual with a status other
        // than GOOD (tgt reports none for a tape READ that meets a filemark,
        // and sends a full buffer of zeros with it). So `data_in` is filled
        // with a pseudo-random canary first, which tells, when nothing else
        // does, whether anything arrived.
        let saved = data_in.to_vec();
        s.reads = s.reads.wrapping_add(1);
        let seed = s.reads ^ (data_in.as_ptr() as u64).rotate_left(32);
        fill_canary(data_in, seed);
        let iov = sys::scsi_iovec {
            iov_base: data_in.as_mut_ptr().cast(),
            iov_len: data_in.len(),
        };
        // SAFETY: `iov` describes `data_in`, borrowed mutably for this call.
        let done = match unsafe { s.command(cdb, sys::SCSI_XFER_READ, iov) } {
            Ok(done) => done,
            Err(e) => {
                data_in.copy_from_slice(&saved);
                return Err(e);
            }
        };
        let expected = data_in.len();
        let complete = [sys::SCSI_STATUS_GOOD, sys::SCSI_STATUS_CONDITION_MET].map(|s| s as u8);
        let transferred = match done.residual_transferred(expected) {
            Some(n) => n,
            // Without a residual, GOOD means all of it (RFC 7143, 11.4.5.1).
            None if complete.contains(&done.status) => expected,
            // Otherwise, nothing arrived, or all of it (there is no residual).
            None if is_canary(data_in, seed) => 0,
            None => expected,
        };
        data_in[transferred..].copy_from_slice(&saved[transferred..]);
        Ok(Response {
            status: done.status,
            sense: done.sense,
            transferred,
        })
    }

    /// Sends the task-management function LOGICAL UNIT RESET for the session's LUN.
    pub fn lun_reset(&self) -> Result<(), Error> {
        let mut s = self.lock();
        if let Some(why) = &s.failed {
            return Err(Error(format!("session unusable after a transport failure: {why}")));
        }
        let ctx = s.ctx;
        let pending = Pending::without_data();
        // SAFETY: `ctx` is live and locked; `pending` stays live until the callback.
        let rc =
            unsafe { sys::iscsi_task_mgmt_lun_reset_async(ctx, s.lun as u32, Some(task_mgmt_done), pending.cast()) };
        if rc != 0 {
            // SAFETY: not queued: `pending` is live and not referred to.
            drop(unsafe { Box::from_raw(pending) });
            // SAFETY: `ctx` is live.
            return Err(Error(format!("cannot send LUN RESET: {}", unsafe { last_error(ctx) })));
        }
        // SAFETY: `ctx` is live and locked; `pending` is live and unreferenced.
        let run = unsafe { run_until_done(ctx, pending) };
        // SAFETY: `pending` is live; libiscsi is not running.
        let (finished, status, response) = unsafe { ((*pending).finished, (*pending).status, (*pending).response) };
        if !finished {
            // Leaked, as for a lost command (see `Session::command`).
            let why = run.err().unwrap_or_else(|| "LUN RESET did not complete".into());
            s.failed = Some(why.clone());
            return Err(Error(format!("LUN RESET lost: {why}")));
        }
        // SAFETY: completed: libiscsi no longer refers to `pending`.
        drop(unsafe { Box::from_raw(pending) });
        if let Err(why) = run {
            s.failed = Some(why.clone());
            return Err(Error(format!("LUN RESET: {why}")));
        }
        if status != sys::SCSI_STATUS_GOOD as c_int {
            if status == sys::SCSI_STATUS_CANCELLED as c_int {
                s.failed = Some("the target dropped the session".into());
            }
            // SAFETY: `ctx` is live.
            let why = unsafe { last_error(ctx) };
            return Err(Error(format!("LUN RESET failed (libiscsi status {status:#x}): {why}")));
        }
        match response {
            Some(0) | None => Ok(()),
            Some(code) => Err(Error(format!(
                "LUN RESET: task management response {code} ({})",
                tmf_response(code)
            ))),
        }
    }
}

impl Drop for IscsiLun {
    fn drop(&mut self) {
        self.session.get_mut().unwrap_or_else(|e| e.into_inner()).logout();
    }
}

/// Names an iSCSI task-management response code (RFC 7143, 11.6.1).
fn tmf_response(code: u32) -> &'static str {
    match code {
        0 => "function complete",
        1 => "task does not exist",
        2 => "LUN does not exist",
        3 => "task still allegiant",
        4 => "task allegiance reassignment not supported",
        5 => "task management function not supported",
        6 => "function authorization failed",
        255 => "function rejected",
        _ => "unknown",
    }
}

/// What a target answered to a SCSI command, as libiscsi reports it.
struct Done {
    /// The SCSI status byte.
    status: u8,
    /// The sense data, for CHECK CONDITION.
    sense: Vec<u8>,
    /// The residual the target reported: a `SCSI_RESIDUAL_*` and the count.
    residual: (sys::scsi_residual, usize),
}

impl Done {
    /// The bytes transferred of `expected` according to the target's residual, if it reported one.
    ///
    /// An underflow is what was not transferred, an overflow what did not
    /// fit, so that all of `expected` was (RFC 7143, 11.4.5.1).
    fn residual_transferred(&self, expected: usize) -> Option<usize> {
        match self.residual {
            (sys::SCSI_RESIDUAL_UNDERFLOW, count) => Some(expected.saturating_sub(count)),
            (sys::SCSI_RESIDUAL_OVERFLOW, _) => Some(expected),
            _ => None,
        }
    }
}

impl Session {
    /// Sends one CDB with data direction `dir` and buffer `iov`, and waits for the target's answer.
    ///
    /// # Safety
    ///
    /// `cdb` is 1 to `SCSI_CDB_MAX_SIZE` bytes long and `iov` describes
    /// memory valid for the whole call, writable for `SCSI_XFER_READ`
    /// (libiscsi places DATA-IN there), readable for `SCSI_XFER_WRITE`, and
    /// is empty for `SCSI_XFER_NONE`.
    unsafe fn command(&mut self, cdb: &[u8], dir: sys::scsi_xfer_dir, iov: sys::scsi_iovec) -> Result<Done, Error> {
        let ctx = self.ctx;
        let mut cdb_bytes = [0u8; sys::SCSI_CDB_MAX_SIZE as usize];
        cdb_bytes[..cdb.len()].copy_from_slice(cdb);
        let xfer_len = c_int::try_from(iov.iov_len).map_err(|_| Error(format!("transfer of {} bytes", iov.iov_len)))?;
        // SAFETY: `cdb_bytes` holds `cdb.len()` bytes (at most
        // SCSI_CDB_MAX_SIZE), which libiscsi copies into the task.
        let task = unsafe { sys::scsi_create_task(cdb.len() as c_int, cdb_bytes.as_mut_ptr(), dir as c_int, xfer_len) };
        if task.is_null() {
            return Err(Error("scsi_create_task: out of memory".into()));
        }
        let has_data = iov.iov_len > 0;
        let pending = Pending::new(iov);
        if has_data {
            // SAFETY: `task` is live; the iovec lives in `pending`, which
            // outlives every use libiscsi makes of the task, and describes
            // memory valid for this call (the caller's contract), which
            // libiscsi only touches while serviced, i.e. within this call.
            unsafe {
                let iov = &raw mut (*pending).iov;
                if dir == sys::SCSI_XFER_WRITE {
                    sys::scsi_task_set_iov_out(task, iov, 1);
                } else {
                    sys::scsi_task_set_iov_in(task, iov, 1);
                }
            }
        }
        // SAFETY: `ctx` is live and ours (`&mut self`); `task` and `pending`
        // are live and stay so until the callback (or forever, see below).
        // No data buffer is passed: the data is in the task's iovector.
        let rc = unsafe {
            sys::iscsi_scsi_command_async(ctx, self.lun, task, Some(request_done), ptr::null_mut(), pending.cast())
        };
        if rc != 0 {
            // Not queued: libiscsi holds nothing of either.
            // SAFETY: `task` and `pending` are live and no longer referred to.
            unsafe {
                sys::scsi_free_scsi_task(task);
                drop(Box::from_raw(pending));
            }
            // SAFETY: `ctx` is live.
            return Err(Error(format!("cannot send the command: {}", unsafe {
                last_error(ctx)
            })));
        }
        // SAFETY: `ctx` is live and ours; `pending` is live and unreferenced.
        let run = unsafe { run_until_done(ctx, pending) };
        // SAFETY: `pending` is live; libiscsi is not running.
        let (finished, status) = unsafe { ((*pending).finished, (*pending).status) };
        if !finished {
            // The command is still queued in the (dead) connection: libiscsi
            // completes it when the context is destroyed, so its task and
            // completion state are leaked, and the session is never serviced
            // again (so the caller's buffer is not touched after we return).
            let why = run.err().unwrap_or_else(|| "command did not complete".into());
            self.failed = Some(why.clone());
            return Err(Error(format!("command lost: {why}")));
        }
        // libiscsi has completed the request and forgotten it.
        // SAFETY: `pending` is live and no longer referred to by libiscsi.
        drop(unsafe { Box::from_raw(pending) });
        if let Err(why) = &run {
            // The answer arrived, but the connection failed afterwards.
            self.failed = Some(why.clone());
        }
        let result = if TRANSPORT_STATUSES.iter().any(|&t| t as c_int == status) || !(0..=0xff).contains(&status) {
            if status == sys::SCSI_STATUS_CANCELLED as c_int && self.failed.is_none() {
                // libiscsi cancels the commands of a session the target dropped.
                self.failed = Some("the target dropped the session".into());
            }
            let why = match &run {
                Err(e) => e.clone(),
                // SAFETY: `ctx` is live.
                Ok(()) => unsafe { last_error(ctx) },
            };
            Err(Error(format!("command failed (libiscsi status {status:#x}): {why}")))
        } else {
            // SAFETY: `task` is live and completed; libiscsi does not use it any more.
            Ok(unsafe { answer(task, status as u8) })
        };
        // SAFETY: `task` came from `scsi_create_task` and is no longer used.
        unsafe { sys::scsi_free_scsi_task(task) };
        result
    }

    /// Logs out, unless the session has failed (best effort).
    fn logout(&mut self) {
        if self.failed.is_some() {
            return;
        }
        let pending = Pending::without_data();
        // SAFETY: `ctx` is live and exclusively ours; `pending` stays live
        // until the callback.
        if unsafe { sys::iscsi_logout_async(self.ctx, Some(request_done), pending.cast()) } != 0 {
            // SAFETY: not queued: `pending` is not referred to.
            drop(unsafe { Box::from_raw(pending) });
            return;
        }
        // SAFETY: as above; `pending` is unreferenced.
        let run = unsafe { run_until_done(self.ctx, pending) };
        // SAFETY: `pending` is live; libiscsi is not running.
        if unsafe { (*pending).finished } {
            // SAFETY: completed: libiscsi no longer refers to `pending`.
            drop(unsafe { Box::from_raw(pending) });
        } else {
            // Leaked: destroying the context completes it (see `command`).
            self.failed = Some(run.err().unwrap_or_default());
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Requests still queued are completed as cancelled into their
        // (leaked, hence live) `Pending`s.
        // SAFETY: `ctx` is live and not used after this.
        unsafe { sys::iscsi_destroy_context(self.ctx) };
    }
}

/// Extracts what the target answered from a completed task with SCSI status `status`.
///
/// # Safety
///
/// `task` is a live task that libiscsi has completed.
unsafe fn answer(task: *const sys::scsi_task, status: u8) -> Done {
    // SAFETY: `task` is live and no longer written by libiscsi.
    let task = unsafe { &*task };
    // For CHECK CONDITION, libiscsi 1.19 keeps the data segment of the SCSI
    // Response PDU in `datain` (it decodes `task.sense` from it): a 2-byte
    // big-endian SenseLength, that many bytes of sense data, then possibly
    // response data and padding. DATA-IN data is never there: it went into
    // the task's iovector, i.e. the caller's buffer.
    let mut sense = Vec::new();
    if status == sys::SCSI_STATUS_CHECK_CONDITION as u8 && !task.datain.data.is_null() && task.datain.size >= 2 {
        // SAFETY: `datain` is a buffer of `datain.size` bytes owned by the task.
        let segment = unsafe { std::slice::from_raw_parts(task.datain.data, task.datain.size as usize) };
        let len = usize::from(u16::from_be_bytes([segment[0], segment[1]]));
        sense = segment[2..segment.len().min(2 + len)].to_vec();
    }
    Done {
        status,
        sense,
        residual: (task.residual_status, task.residual),
    }
}

/// The canary byte stream of `seed` (xorshift64*).
fn canary(seed: u64) -> impl Iterator<Item = u8> {
    let mut x = seed | 1;
    std::iter::repeat_with(move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
    })
}

/// Fills `buf` with the canary of `seed`.
fn fill_canary(buf: &mut [u8], seed: u64) {
    buf.iter_mut().zip(canary(seed)).for_each(|(b, c)| *b = c);
}

/// Whether `buf` holds the canary of `seed`.
fn is_canary(buf: &[u8], seed: u64) -> bool {
    buf.iter().zip(canary(seed)).all(|(&b, c)| b == c)
}

/// A tgtd serving a disk, a tape and a CD on 127.0.0.1, started by scripts/tgt-up.sh in a temporary directory.
///
/// Dropping it stops the daemon with scripts/tgt-down.sh and removes the
/// directory. Each instance has its own TCP port and tgtd control port, so
/// tests can run in parallel. Starting one needs root (tgtd's control
/// socket is in /var/run/tgtd).
pub struct Tgt {
    /// The temporary directory: backing files, tgtd.log, tgtd.pid.
    dir: PathBuf,
    /// tgtd's control port (`tgtadm -C`).
    control: u32,
    /// `iscsi://127.0.0.1:PORT/IQN`.
    target_url: String,
}

/// Temporary directories created by this process.
static TGT_DIRS: AtomicU32 = AtomicU32::new(0);

/// The first port tried for tgtd: below Linux's default ephemeral range
/// (32768-60999), so that outgoing connections do not take it meanwhile.
const PORT_BASE: u16 = 20000;
/// How many ports from `PORT_BASE` are tried.
const PORT_SPAN: u16 = 12000;

impl Tgt {
    /// The disk's LUN: 64 MiB of 512-byte blocks.
    pub const DISK: u32 = 1;
    /// The tape's LUN (a 64 MB cartridge, barcode TAPE0001).
    pub const TAPE: u32 = 2;
    /// The CD-ROM's LUN: 1024 blocks of 2048 bytes.
    pub const CD: u32 = 3;

    /// Starts a tgtd on a free port of 127.0.0.1 with its backing files in a new temporary directory.
    pub fn start() -> Result<Tgt, Error> {
        let up = scripts_dir().join("tgt-up.sh");
        if !up.is_file() {
            return Err(Error(format!("{} not found", up.display())));
        }
        let mut seed = port_seed();
        let mut last = String::new();
        // A port that was free when tried may be taken before tgtd binds
        // it, and a control port may be in use by another tgtd: retry.
        for _ in 0..4 {
            let port = free_port(&mut seed)?;
            let control = u32::from(port);
            let dir = new_dir()?;
            let out = Command::new(&up)
                .arg(&dir)
                .arg(port.to_string())
                .arg(control.to_string())
                .stdin(Stdio::null())
                .output();
            let out = match out {
                Ok(out) => out,
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(Error(format!("cannot run {}: {e}", up.display())));
                }
            };
            let stdout = String::from_utf8_lossy(&out.stdout);
            match stdout.lines().rev().find(|l| l.starts_with("iscsi://")) {
                Some(url) if out.status.success() => {
                    return Ok(Tgt {
                        dir,
                        control,
                        target_url: url.to_string(),
                    });
                }
                _ => {
                    last = format!(
                        "{} ({}): {}",
                        up.display(),
                        out.status,
                        String::from_utf8_lossy(&out.stderr)
                    );
                    // tgt-up.sh stopped the tgtd it started.
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
        }
        Err(Error(format!("cannot start tgtd: {}", last.trim_end())))
    }

    /// The URL of LUN `lun` of the target: `iscsi://127.0.0.1:PORT/IQN/LUN`.
    pub fn url(&self, lun: u32) -> String {
        format!("{}/{lun}", self.target_url)
    }

    /// The temporary directory holding the backing files (disk.img, tape.img, cd.iso) and tgtd.log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The daemon's control port, for `tgtadm -C`.
    pub fn control(&self) -> u32 {
        self.control
    }
}

impl Drop for Tgt {
    fn drop(&mut self) {
        let down = scripts_dir().join("tgt-down.sh");
        let out = Command::new(&down)
            .arg(&self.dir)
            .arg(self.control.to_string())
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(out) if out.status.success() => {
                if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                    eprintln!("warning: cannot remove {}: {e}", self.dir.display());
                }
            }
            Ok(out) => eprintln!(
                "warning: {} {} {} failed ({}): {}; {} kept",
                down.display(),
                self.dir.display(),
                self.control,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim_end(),
                self.dir.display()
            ),
            Err(e) => eprintln!(
                "warning: cannot run {}: {e}; {} kept",
                down.display(),
                self.dir.display()
            ),
        }
    }
}

/// The project's scripts directory.
fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts")
}

/// A seed for choosing ports, different in each process and call.
fn port_seed() -> u32 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let n = TGT_DIRS.load(Ordering::Relaxed);
    (std::process::id().wrapping_mul(0x9e37_79b9) ^ nanos ^ n.wrapping_mul(0x85eb_ca6b)) | 1
}

/// A TCP port of 127.0.0.1 that nothing listens on now.
fn free_port(seed: &mut u32) -> Result<u16, Error> {
    for _ in 0..200 {
        // xorshift32
        *seed ^= *seed << 13;
        *seed ^= *seed >> 17;
        *seed ^= *seed << 5;
        let port = PORT_BASE + (*seed % u32::from(PORT_SPAN)) as u16;
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    Err(Error("no free TCP port on 127.0.0.1".into()))
}

/// Creates a new, empty temporary directory.
fn new_dir() -> Result<PathBuf, Error> {
    loop {
        let n = TGT_DIRS.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ctlpass-tgt-{}-{n}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error(format!("cannot create {}: {e}", dir.display()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iscsi_lun_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<IscsiLun>();
    }

    #[test]
    fn canary_is_reproducible_and_varies() {
        let mut a = [0u8; 64];
        fill_canary(&mut a, 7);
        assert!(is_canary(&a, 7));
        assert!(!is_canary(&a, 8));
        assert!(a.iter().any(|&b| b != a[0]));
        a[63] ^= 1;
        assert!(!is_canary(&a, 7));
    }

    #[test]
    fn residuals() {
        let done = |residual| Done {
            status: 0,
            sense: Vec::new(),
            residual,
        };
        assert_eq!(
            done((sys::SCSI_RESIDUAL_UNDERFLOW, 189)).residual_transferred(255),
            Some(66)
        );
        assert_eq!(
            done((sys::SCSI_RESIDUAL_UNDERFLOW, 300)).residual_transferred(255),
            Some(0)
        );
        assert_eq!(
            done((sys::SCSI_RESIDUAL_OVERFLOW, 10)).residual_transferred(255),
            Some(255)
        );
        assert_eq!(
            done((sys::SCSI_RESIDUAL_NO_RESIDUAL, 0)).residual_transferred(255),
            None
        );
    }
}
