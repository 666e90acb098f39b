//! CCBs sent to a device directly, without ctlpass: a baseline for its
//! benchmarks and the other side of differential tests.
//!
//! A direct command is an `XPT_SCSI_IO` CCB as a careful kernel consumer
//! would send one, through the very path ctlpass's CCBs take:
//!
//! - the CCB is allocated as for an immediate request
//!   (`xpt_alloc_ccb_nowait`: `M_CAMCCB`, zeroed, charged to no periph, so
//!   not limited by a periph's allocation against the openings) on a path
//!   of its own (`xpt_create_path`), set up with `xpt_setup_ccb` and filled
//!   as `cam_fill_csio` does: no retries, `MSG_SIMPLE_Q_TAG`, autosense
//!   into the CCB's own sense buffer (`SSD_FULL_SIZE`), a 60 s timeout,
//!   `CAM_UNLOCKED` (the callback runs without the device lock), the CDB
//!   inline or, past 16 bytes, through `CAM_CDB_POINTER`, and the data as
//!   `CAM_DATA_VADDR` or a `CAM_DATA_SG` list of kernel virtual addresses;
//! - `xpt_action` queues it on the device's SIM, behind the device's other
//!   CCBs, with the same openings, latency, faults and freezing rules;
//! - on completion the callback reads status, SCSI status, residual and
//!   autosense data (if `CAM_AUTOSNS_VALID`), thaws the queue if the CCB
//!   froze it (`cam_release_devq`, unless told not to), frees the path and
//!   the CCB (`xpt_free_path`, `xpt_free_ccb`), and hands the result on.
//!
//! It does not retry, recover (no `cam_periph_error`), send REQUEST SENSE
//! after a CHECK CONDITION without autosense, or abort; the caller sees
//! what the SIM reported.

use std::collections::VecDeque;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{Device, device_at, free_path, io, new_path, xpt_action, xpt_setup_ccb};
use crate::{kpanic, sys};

/// `CAM_PRIORITY_NORMAL`: `(CAM_RL_NORMAL << 8) + 0x80`, CAM_RL_NORMAL
/// being 4 (cam.h).
const CAM_PRIORITY_NORMAL: u32 = (4 << 8) + 0x80;

/// `MSG_SIMPLE_Q_TAG` (scsi_message.h).
const MSG_SIMPLE_Q_TAG: u8 = 0x20;

/// `SSD_FULL_SIZE`: the size of `struct scsi_sense_data`.
const SSD_FULL_SIZE: usize = std::mem::size_of::<sys::scsi_sense_data>();

/// The data of a direct command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirectData {
    /// No data (`CAM_DIR_NONE`).
    None,
    /// Room for this many bytes from the device (`CAM_DIR_IN`).
    In(u32),
    /// These bytes to the device (`CAM_DIR_OUT`); shared, as the device
    /// only reads them.
    Out(Arc<[u8]>),
    /// Room from the device in segments of these lengths, sent as a
    /// `CAM_DATA_SG` list.
    InSg(Vec<u32>),
    /// These segments to the device, as a `CAM_DATA_SG` list.
    OutSg(Vec<Vec<u8>>),
}

/// How a direct command ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirectResult {
    /// The CAM status (`ccb_h.status & CAM_STATUS_MASK`).
    pub cam_status: u32,
    /// The status flags (`ccb_h.status & !CAM_STATUS_MASK`:
    /// `CAM_DEV_QFRZN`, `CAM_AUTOSNS_VALID`).
    pub flags: u32,
    /// The SCSI status byte.
    pub scsi_status: u8,
    /// The autosense data, if valid (`sense_len - sense_resid` bytes).
    pub sense: Vec<u8>,
    /// The bytes read (`dxfer_len - resid` of them), for data-in.
    pub data: Vec<u8>,
    /// The residual.
    pub resid: u32,
}

impl DirectResult {
    /// Whether the command completed (`CAM_REQ_CMP`).
    pub fn is_ok(&self) -> bool {
        self.cam_status == sys::CAM_REQ_CMP
    }

    /// Whether the CCB froze the device queue (`CAM_DEV_QFRZN`).
    pub fn froze(&self) -> bool {
        self.flags & sys::CAM_DEV_QFRZN != 0
    }
}

/// How a direct CCB is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectOptions {
    /// Thaw the device queue if the CCB froze it (default); without, the
    /// queue stays frozen until [`release_devq`].
    pub release_frozen: bool,
    /// Extra CCB flags (`CAM_DIS_AUTOSENSE`, ...).
    pub ccb_flags: u32,
    /// The tag action (default `MSG_SIMPLE_Q_TAG`).
    pub tag_action: u8,
    /// The timeout in milliseconds (default 60,000).
    pub timeout_ms: u32,
    /// Bytes of sense data the CCB takes (default `SSD_FULL_SIZE`).
    pub sense_len: u8,
}

impl Default for DirectOptions {
    fn default() -> DirectOptions {
        DirectOptions {
            release_frozen: true,
            ccb_flags: 0,
            tag_action: MSG_SIMPLE_Q_TAG,
            timeout_ms: 60_000,
            sense_len: SSD_FULL_SIZE as u8,
        }
    }
}

/// What a direct CCB carries besides itself, from submission to
/// completion (through `periph_priv`).
struct Request {
    done: Box<dyn FnOnce(DirectResult) + Send>,
    /// The data-in room of a flat transfer.
    flat: Vec<u8>,
    /// The data-out bytes of a flat transfer.
    shared: Option<Arc<[u8]>>,
    /// The segments' buffers of a `CAM_DATA_SG` transfer.
    segments: Vec<Vec<u8>>,
    /// The `bus_dma_segment_t` list describing them.
    sg: Vec<sys::bus_dma_segment_t>,
    /// A CDB too long for the CCB's inline bytes.
    long_cdb: Vec<u8>,
    release: bool,
    data_in: bool,
}

/// Sends `cdb` with `data` to the device at `path_id:target:lun` as an
/// `XPT_SCSI_IO` CCB through `xpt_action`; `done` gets the result, on the
/// device's SIM thread (so it must not wait for another command of that
/// device; it may submit more).
pub fn submit_direct(
    path_id: u32,
    target: u32,
    lun: u64,
    cdb: &[u8],
    data: DirectData,
    done: Box<dyn FnOnce(DirectResult) + Send>,
) {
    submit_direct_with(path_id, target, lun, cdb, data, &DirectOptions::default(), done);
}

/// [`submit_direct`] with options.
pub fn submit_direct_with(
    path_id: u32,
    target: u32,
    lun: u64,
    cdb: &[u8],
    data: DirectData,
    opts: &DirectOptions,
    done: Box<dyn FnOnce(DirectResult) + Send>,
) {
    submit(&device_at(path_id, target, lun), cdb, Buffers::from(data), opts, done);
}

/// The buffers of a direct command.
enum Buffers {
    None,
    In(Vec<u8>),
    Out(Arc<[u8]>),
    InSg(Vec<Vec<u8>>),
    OutSg(Vec<Vec<u8>>),
}

impl From<DirectData> for Buffers {
    fn from(d: DirectData) -> Buffers {
        match d {
            DirectData::None => Buffers::None,
            DirectData::In(n) => Buffers::In(vec![0; n as usize]),
            DirectData::Out(v) => Buffers::Out(v),
            DirectData::InSg(lens) => Buffers::InSg(lens.into_iter().map(|n| vec![0; n as usize]).collect()),
            DirectData::OutSg(v) => Buffers::OutSg(v),
        }
    }
}

fn submit(
    device: &Arc<Device>,
    cdb: &[u8],
    data: Buffers,
    opts: &DirectOptions,
    done: Box<dyn FnOnce(DirectResult) + Send>,
) {
    if cdb.is_empty() || cdb.len() > usize::from(u8::MAX) {
        kpanic!("submit_direct: a CDB of {} bytes", cdb.len());
    }
    let mut req = Box::new(Request {
        done,
        flat: Vec::new(),
        shared: None,
        segments: Vec::new(),
        sg: Vec::new(),
        long_cdb: Vec::new(),
        release: opts.release_frozen,
        data_in: false,
    });
    let (dir, sg) = match data {
        Buffers::None => (sys::CAM_DIR_NONE, false),
        Buffers::In(v) => {
            req.flat = v;
            req.data_in = true;
            (sys::CAM_DIR_IN, false)
        }
        Buffers::Out(v) => {
            req.shared = Some(v);
            (sys::CAM_DIR_OUT, false)
        }
        Buffers::InSg(v) => {
            req.segments = v;
            req.data_in = true;
            (sys::CAM_DIR_IN, true)
        }
        Buffers::OutSg(v) => {
            req.segments = v;
            (sys::CAM_DIR_OUT, true)
        }
    };
    let (data_ptr, dxfer_len, sglist_cnt) = if sg {
        req.sg = req
            .segments
            .iter_mut()
            .map(|s| sys::bus_dma_segment_t {
                ds_addr: s.as_mut_ptr() as sys::bus_addr_t,
                ds_len: s.len() as sys::bus_size_t,
            })
            .collect();
        let total: usize = req.segments.iter().map(Vec::len).sum();
        (req.sg.as_mut_ptr().cast::<u8>(), total, req.sg.len())
    } else if let Some(out) = &req.shared {
        // The device reads data-out only (CAM_DIR_OUT).
        (out.as_ptr().cast_mut(), out.len(), 0)
    } else {
        (req.flat.as_mut_ptr(), req.flat.len(), 0)
    };
    let (Ok(dxfer_len), Ok(sglist_cnt)) = (u32::try_from(dxfer_len), u16::try_from(sglist_cnt)) else {
        kpanic!("submit_direct: {dxfer_len} bytes in {sglist_cnt} segments");
    };
    let inline = std::mem::size_of::<sys::cdb_t>();
    let mut flags = dir | sys::CAM_UNLOCKED | opts.ccb_flags;
    flags |= if sg { sys::CAM_DATA_SG } else { sys::CAM_DATA_VADDR };
    if cdb.len() > inline {
        req.long_cdb = cdb.to_vec();
        flags |= sys::CAM_CDB_POINTER;
    }
    let path = new_path(device);
    let ccb = io::alloc_ccb_nowait();
    // SAFETY: a fresh, zeroed CCB for this path; the buffers it points to
    // live in `req`, which the CCB carries until its completion.
    unsafe {
        xpt_setup_ccb(&raw mut (*ccb).ccb_h, path, CAM_PRIORITY_NORMAL);
        let csio = &mut (*ccb).csio;
        csio.ccb_h.func_code = sys::XPT_SCSI_IO;
        csio.ccb_h.flags = flags;
        csio.ccb_h.retry_count = 0;
        csio.ccb_h.cbfcnp = Some(direct_done);
        csio.ccb_h.timeout = opts.timeout_ms;
        csio.data_ptr = data_ptr;
        csio.dxfer_len = dxfer_len;
        csio.sglist_cnt = sglist_cnt;
        csio.sense_len = opts.sense_len;
        csio.cdb_len = cdb.len() as u8;
        csio.tag_action = opts.tag_action;
        if cdb.len() > inline {
            csio.cdb_io.cdb_ptr = req.long_cdb.as_mut_ptr();
        } else {
            csio.cdb_io.cdb_bytes[..cdb.len()].copy_from_slice(cdb);
        }
        csio.ccb_h.periph_priv.entries[0].ptr = Box::into_raw(req).cast::<c_void>();
        xpt_action(ccb);
    }
}

/// The completion of a direct CCB (called by the done path without the
/// device lock, for `CAM_UNLOCKED`).
unsafe extern "C" fn direct_done(_periph: *mut sys::cam_periph, ccb: *mut sys::ccb) {
    // SAFETY: a completed direct CCB, carrying the Request submit gave it;
    // it is ours again, and freed here.
    let (req, result) = unsafe {
        let csio = &(*ccb).csio;
        let mut req = Box::from_raw(csio.ccb_h.periph_priv.entries[0].ptr.cast::<Request>());
        let status = csio.ccb_h.status;
        let sense = if status & sys::CAM_AUTOSNS_VALID != 0 {
            let valid = usize::from(csio.sense_len)
                .saturating_sub(usize::from(csio.sense_resid))
                .min(SSD_FULL_SIZE);
            std::slice::from_raw_parts((&raw const csio.sense_data).cast::<u8>(), valid).to_vec()
        } else {
            Vec::new()
        };
        let moved = csio.dxfer_len.saturating_sub(csio.resid) as usize;
        let data = if !req.data_in {
            Vec::new()
        } else if req.segments.is_empty() {
            let mut v = std::mem::take(&mut req.flat);
            v.truncate(moved);
            v
        } else {
            let mut v = Vec::with_capacity(moved);
            for s in &req.segments {
                let n = s.len().min(moved - v.len());
                v.extend_from_slice(&s[..n]);
            }
            v
        };
        let result = DirectResult {
            cam_status: status & sys::CAM_STATUS_MASK,
            flags: status & !sys::CAM_STATUS_MASK,
            scsi_status: csio.scsi_status,
            sense,
            data,
            resid: csio.resid,
        };
        let path = csio.ccb_h.path;
        if status & sys::CAM_DEV_QFRZN != 0 && req.release {
            super::io::cam_release_devq(path, 0, 0, 0, 0);
        }
        free_path(path);
        io::free_ccb(ccb);
        (req, result)
    };
    (req.done)(result);
}

fn not_on_sim_thread(what: &str) {
    if super::sim::in_sim_thread() {
        kpanic!("{what}: called on a SIM thread, which would wait for itself");
    }
}

/// Sends one command directly (see [`submit_direct`]) and waits for its
/// result (polling for up to a millisecond, then sleeping).  Not for
/// completion callbacks.
pub fn execute_direct(path_id: u32, target: u32, lun: u64, cdb: &[u8], data: DirectData) -> DirectResult {
    execute_direct_with(path_id, target, lun, cdb, data, &DirectOptions::default())
}

/// [`execute_direct`] with options.
pub fn execute_direct_with(
    path_id: u32,
    target: u32,
    lun: u64,
    cdb: &[u8],
    data: DirectData,
    opts: &DirectOptions,
) -> DirectResult {
    not_on_sim_thread("execute_direct");
    let waiter = Arc::new(Waiter {
        ready: AtomicBool::new(false),
        result: Mutex::new(None),
        cv: Condvar::new(),
    });
    let w = waiter.clone();
    submit_direct_with(
        path_id,
        target,
        lun,
        cdb,
        data,
        opts,
        Box::new(move |r| {
            *w.result.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
            w.ready.store(true, Ordering::Release);
            w.cv.notify_all();
        }),
    );
    waiter.wait()
}

/// Where [`execute_direct`] waits for its result.
struct Waiter {
    ready: AtomicBool,
    result: Mutex<Option<DirectResult>>,
    cv: Condvar,
}

impl Waiter {
    /// Polls for the result for a while (yielding the CPU: a futex wake-up
    /// costs tens of µs on a VM), then sleeps for it.
    fn wait(&self) -> DirectResult {
        let poll_end = Instant::now() + WAIT_POLL;
        while !self.ready.load(Ordering::Acquire) && Instant::now() < poll_end {
            std::thread::yield_now();
        }
        let mut slot = self.result.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(r) = slot.take() {
                return r;
            }
            slot = self.cv.wait(slot).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// How long [`execute_direct`] polls for its result before it sleeps.
const WAIT_POLL: Duration = Duration::from_millis(1);

/// Thaws the queue of the device at `path_id:target:lun` once
/// (`cam_release_devq`); returns the freeze count left.
pub fn release_devq(path_id: u32, target: u32, lun: u64) -> u32 {
    let device = device_at(path_id, target, lun);
    let path = new_path(&device);
    let n = super::io::cam_release_devq(path, 0, 0, 0, 0);
    free_path(path);
    n
}

/// A queue-depth run: its commands, results and recycled buffers.
struct Runner {
    device: Arc<Device>,
    keep_data: bool,
    total: usize,
    state: Mutex<RunState>,
    finished: Condvar,
}

struct RunState {
    pending: VecDeque<(usize, Vec<u8>, DirectData)>,
    results: Vec<Option<DirectResult>>,
    done: usize,
    /// Data-in buffers to use again (without `keep_data`).
    pool: Vec<Vec<u8>>,
}

impl Runner {
    fn lock(&self) -> std::sync::MutexGuard<'_, RunState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn issue(self: &Arc<Self>, i: usize, cdb: Vec<u8>, data: DirectData) {
        let buffers = match data {
            DirectData::In(n) if !self.keep_data => {
                let mut b = self.lock().pool.pop().unwrap_or_default();
                b.resize(n as usize, 0);
                Buffers::In(b)
            }
            d => Buffers::from(d),
        };
        let me = self.clone();
        submit(
            &self.device,
            &cdb,
            buffers,
            &DirectOptions::default(),
            Box::new(move |r| me.finish(i, r)),
        );
    }

    fn finish(self: &Arc<Self>, i: usize, mut r: DirectResult) {
        let next = {
            let mut st = self.lock();
            if !self.keep_data && r.data.capacity() > 0 {
                st.pool.push(std::mem::take(&mut r.data));
            }
            st.results[i] = Some(r);
            st.done += 1;
            if st.done == self.total {
                self.finished.notify_all();
            }
            st.pending.pop_front()
        };
        if let Some((j, cdb, data)) = next {
            self.issue(j, cdb, data);
        }
    }
}

/// Runs `cmds` on the device at `path_id:target:lun` directly, keeping
/// `queue_depth` of them outstanding (each completion submits the next,
/// on the SIM thread: no thread per command); returns their results in
/// the order of `cmds`.
pub fn run_direct(
    path_id: u32,
    target: u32,
    lun: u64,
    cmds: Vec<(Vec<u8>, DirectData)>,
    queue_depth: usize,
) -> Vec<DirectResult> {
    run_direct_with(path_id, target, lun, cmds, queue_depth, true)
}

/// [`run_direct`]; without `keep_data` the results have no data (their
/// residuals say what moved) and the data-in buffers are used again, so
/// that a long run of large reads needs `queue_depth` buffers only.
pub fn run_direct_with(
    path_id: u32,
    target: u32,
    lun: u64,
    cmds: Vec<(Vec<u8>, DirectData)>,
    queue_depth: usize,
    keep_data: bool,
) -> Vec<DirectResult> {
    not_on_sim_thread("run_direct");
    let total = cmds.len();
    if total == 0 {
        return Vec::new();
    }
    let runner = Arc::new(Runner {
        device: device_at(path_id, target, lun),
        keep_data,
        total,
        state: Mutex::new(RunState {
            pending: cmds.into_iter().enumerate().map(|(i, (c, d))| (i, c, d)).collect(),
            results: vec![None; total],
            done: 0,
            pool: Vec::new(),
        }),
        finished: Condvar::new(),
    });
    let first: Vec<(usize, Vec<u8>, DirectData)> = {
        let mut st = runner.lock();
        let n = queue_depth.clamp(1, total);
        st.pending.drain(..n).collect()
    };
    for (i, cdb, data) in first {
        runner.issue(i, cdb, data);
    }
    let mut st = runner.lock();
    while st.done < total {
        st = runner.finished.wait(st).unwrap_or_else(|e| e.into_inner());
    }
    std::mem::take(&mut st.results)
        .into_iter()
        .map(|r| r.unwrap_or_else(|| kpanic!("run_direct: a command without a result")))
        .collect()
}
