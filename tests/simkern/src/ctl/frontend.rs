//! The simulator's iSCSI target port, CTL's frontend as cfiscsi
//! (sys/cam/ctl/ctl_frontend_iscsi.c) serves it, and the initiator behind
//! it that tests, `ctlpass-sim` and benchmarks send commands through.
//!
//! Each command carries the initiator's buffer, which is a scatter/gather
//! list of uneven segments ([`SEGMENT_SIZES`], cycling), and its expected
//! data transfer length (EDTL: the buffer's size).  The port builds a
//! `union ctl_io` for it (nexus, 16-byte CDB as iSCSI delivers it, task
//! attribute, a unique tag) and queues it to CTL.  A data move
//! (`fe_datamove`) copies between the initiator's buffer, from byte
//! `kern_rel_offset` of the transfer, and the kernel buffer (flat, or a
//! `ctl_sg_entry` list), and ends in `ctl_datamove_done`.  As in cfiscsi, a DATA-IN move is done at
//! once, on the thread that called `ctl_datamove` (`samethr` true:
//! cfiscsi_datamove_in queues its Data-In PDUs and returns), while a
//! DATA-OUT move completes later on one of the port's threads ([`WORKERS`]
//! of them, fed by a queue; `samethr` false), as Data-Out PDUs answering
//! an R2T arrive on a connection's receive thread.  [`set_deferred_data_in`]
//! moves DATA-IN to the port's threads too, as a frontend whose transport
//! completes each move asynchronously does (CTL's CAM target frontend).
//! The residual the initiator sees is, as cfiscsi_scsi_command_done
//! computes it, EDTL minus `kern_total_len` when the I/O completes (0 if
//! the backend never set it: full underflow); negative is an overflow.
//!
//! Where the model differs from cfiscsi:
//! - a DATA-IN move that would run past the initiator's buffer is refused
//!   as a transport error (`port_status` [`PORT_STATUS_OVERRUN`], which
//!   CTL turns into INTERNAL TARGET FAILURE) instead of being truncated to
//!   the EDTL; DATA-OUT moves are cut at the EDTL as cfiscsi cuts them,
//!   which leaves `kern_data_resid` non-zero (INVALID FIELD IN COMMAND
//!   INFORMATION UNIT);
//! - the data of commands CTL answers itself (INQUIRY, MODE SENSE, ...)
//!   lands in the initiator's buffer without a data move, cut at the EDTL;
//! - an aborted command gets a TASK ABORTED status where cfiscsi sends no
//!   SCSI response (the initiator learns the end from the task management
//!   response); [`start`]'s [`Completion`] says which these are, so that
//!   the iSCSI portal (`crate::iscsi`) sends none;
//! - CTL's serialization of commands (ORDERED, HEAD OF QUEUE, overlapping
//!   ranges) is not modelled: commands run as they arrive.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::idle::Doorbell;
use crate::{kpanic, lock, malloc, sys};

/// The sizes of the initiator's buffer segments, in order and cycling, so
/// that data moves cross segment boundaries at odd offsets.
pub const SEGMENT_SIZES: [usize; 6] = [512, 4096, 1000, 65536, 7, 8192];

/// Threads serving data moves.
pub const WORKERS: usize = 1;

/// `port_status` of a DATA-IN move refused because it would run past the
/// initiator's buffer.
pub const PORT_STATUS_OVERRUN: u32 = 1;

/// `port_status` of a data move that failed in the transport
/// ([`set_failing_moves`]: the connection dropped, a digest error).
pub const PORT_STATUS_TRANSPORT: u32 = 2;

/// How many kernel buffer segments [`DatamoveStats::segments`] keeps.
pub const SEGMENT_LOG_LIMIT: usize = 1 << 20;

/// How long an initiator waits for a command before the simulated kernel
/// declares it lost (a backend that never completes an I/O).
const COMMAND_DEADLINE: Duration = Duration::from_secs(60);

/// Bytes of the buffer CTL's own answers are built in (more than any of
/// them needs).
const SCRATCH_LEN: usize = 64 * 1024;

/// The task attribute of a command (the iSCSI ATTR field).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TaskAttr {
    /// SIMPLE.
    #[default]
    Simple,
    /// ORDERED.
    Ordered,
    /// HEAD OF QUEUE.
    HeadOfQueue,
    /// UNTAGGED.
    Untagged,
    /// ACA.
    Aca,
}

impl TaskAttr {
    fn tag_type(self) -> sys::ctl_tag_type {
        match self {
            TaskAttr::Simple => sys::CTL_TAG_SIMPLE,
            TaskAttr::Ordered => sys::CTL_TAG_ORDERED,
            TaskAttr::HeadOfQueue => sys::CTL_TAG_HEAD_OF_QUEUE,
            TaskAttr::Untagged => sys::CTL_TAG_UNTAGGED,
            TaskAttr::Aca => sys::CTL_TAG_ACA,
        }
    }
}

/// One command from the initiator.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cmd {
    /// The CDB (up to 16 bytes go in the iSCSI PDU; longer ones are kept
    /// whole).
    pub cdb: Vec<u8>,
    /// The data sent (its length is the EDTL of a write); shared, as the
    /// port only reads it.
    pub data_out: Arc<[u8]>,
    /// The buffer for data received (the EDTL of a read).  A command has
    /// data one way at most.
    pub data_in_len: usize,
    /// The task attribute.
    pub task: TaskAttr,
    /// The initiator (its index on the port: the nexus's `initid`).
    pub initiator: u32,
}

impl Cmd {
    /// A SIMPLE command without data.
    pub fn none(cdb: &[u8]) -> Cmd {
        Cmd {
            cdb: cdb.to_vec(),
            ..Cmd::default()
        }
    }

    /// A SIMPLE command receiving up to `len` bytes.
    pub fn read(cdb: &[u8], len: usize) -> Cmd {
        Cmd {
            cdb: cdb.to_vec(),
            data_in_len: len,
            ..Cmd::default()
        }
    }

    /// A SIMPLE command sending `data`.
    pub fn write(cdb: &[u8], data: &[u8]) -> Cmd {
        Cmd {
            cdb: cdb.to_vec(),
            data_out: data.into(),
            ..Cmd::default()
        }
    }

    /// A SIMPLE command sending `data`, which other commands may share.
    pub fn write_shared(cdb: &[u8], data: Arc<[u8]>) -> Cmd {
        Cmd {
            cdb: cdb.to_vec(),
            data_out: data,
            ..Cmd::default()
        }
    }
}

/// What the initiator sees of one command.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    /// SCSI status.
    pub status: u8,
    /// Sense data (for CHECK CONDITION).
    pub sense: Vec<u8>,
    /// The bytes that landed in the initiator's buffer (DATA-IN), from its
    /// start to the end of the furthest data move.
    pub data: Vec<u8>,
    /// EDTL minus the transfer length the target reported: positive an
    /// underflow, negative an overflow.
    pub residual: i64,
}

/// Data moves of one LUN.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LunDatamoves {
    /// Data moves served (refused ones included).
    pub datamoves: u64,
    /// Bytes copied.
    pub bytes: u64,
}

/// What the port's data moves did since boot or the last
/// [`reset_datamove_stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DatamoveStats {
    /// Data moves served (refused ones included).
    pub datamoves: u64,
    /// Bytes copied.
    pub bytes: u64,
    /// The same, per LUN.
    pub per_lun: BTreeMap<u32, LunDatamoves>,
    /// The kernel buffer segments the moves used, as (address, length),
    /// in order, up to [`SEGMENT_LOG_LIMIT`].
    pub segments: Vec<(usize, usize)>,
    /// Segments not kept in `segments` (past the limit).
    pub segments_dropped: u64,
}

impl DatamoveStats {
    /// How many of [`DatamoveStats::segments`] lie inside one of `buffers`
    /// (address, length): with the data buffers of a backend's CCBs, the
    /// moves that used the CCBs' memory rather than a copy of it.
    pub fn segments_within(&self, buffers: &[(usize, usize)]) -> usize {
        // The buffers sorted, overlapping ones merged (a buffer used again
        // is logged again), so that each segment is one binary search.
        let mut ranges: Vec<(usize, usize)> = buffers
            .iter()
            .map(|&(base, size)| (base, base.saturating_add(size)))
            .collect();
        ranges.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(ranges.len());
        for (start, end) in ranges {
            match merged.last_mut() {
                Some(last) if start < last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        self.segments
            .iter()
            .filter(|&&(addr, len)| {
                let i = merged.partition_point(|&(start, _)| start <= addr);
                i > 0 && addr.saturating_add(len) <= merged[i - 1].1
            })
            .count()
    }
}

static STATS: Mutex<Option<DatamoveStats>> = Mutex::new(None);

fn stats() -> MutexGuard<'static, Option<DatamoveStats>> {
    STATS.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the port's data moves did (see [`DatamoveStats`]).
pub fn datamove_stats() -> DatamoveStats {
    stats().clone().unwrap_or_default()
}

/// Forgets the data move statistics.
pub fn reset_datamove_stats() {
    *stats() = None;
}

// --- the initiator's buffer ---

/// The initiator's buffer: segments of [`SEGMENT_SIZES`], cycling.
struct SgBuffer {
    segs: Vec<Vec<u8>>,
}

impl SgBuffer {
    /// A buffer holding `data`.
    fn from_data(data: &[u8]) -> SgBuffer {
        let mut buf = SgBuffer::zeroed(data.len());
        buf.fill(data);
        buf
    }

    /// A zeroed buffer of `len` bytes.
    fn zeroed(len: usize) -> SgBuffer {
        let mut segs = Vec::new();
        let mut left = len;
        for &size in SEGMENT_SIZES.iter().cycle() {
            if left == 0 {
                break;
            }
            let n = size.min(left);
            segs.push(vec![0; n]);
            left -= n;
        }
        SgBuffer { segs }
    }

    /// Its size in bytes.
    fn len(&self) -> usize {
        self.segs.iter().map(Vec::len).sum()
    }

    /// Overwrites it with `data`, which is as long as it.
    fn fill(&mut self, data: &[u8]) {
        let mut rest = data;
        for seg in &mut self.segs {
            let (head, tail) = rest.split_at(seg.len());
            seg.copy_from_slice(head);
            rest = tail;
        }
    }

    /// Calls `f` with the pieces of bytes `off..off + len`, in order.
    fn pieces_mut(&mut self, off: usize, len: usize, mut f: impl FnMut(&mut [u8])) {
        let (mut start, mut left) = (off, len);
        for seg in &mut self.segs {
            if left == 0 {
                break;
            }
            if start >= seg.len() {
                start -= seg.len();
                continue;
            }
            let n = (seg.len() - start).min(left);
            f(&mut seg[start..start + n]);
            left -= n;
            start = 0;
        }
    }

    /// The first `len` bytes, contiguous.
    fn to_vec(&self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        for seg in &self.segs {
            let n = seg.len().min(len - out.len());
            out.extend_from_slice(&seg[..n]);
            if out.len() == len {
                break;
            }
        }
        out
    }
}

/// Walks a kernel buffer (segments of (address, length)) while copying.
struct KernelCursor<'a> {
    segs: &'a [(*mut u8, usize)],
    index: usize,
    offset: usize,
}

impl KernelCursor<'_> {
    /// Copies `piece.len()` bytes to (`into_kernel`) or from the kernel
    /// buffer, advancing.
    ///
    /// # Safety
    ///
    /// The segments are valid for the bytes copied, which the caller
    /// checked they hold.
    unsafe fn copy(&mut self, piece: &mut [u8], into_kernel: bool) {
        let mut done = 0;
        while done < piece.len() {
            let (addr, len) = self.segs[self.index];
            let n = (len - self.offset).min(piece.len() - done);
            // SAFETY: the caller's contract: `addr + offset` has `n` valid
            // bytes; the initiator's buffer is distinct memory.
            unsafe {
                let k = addr.add(self.offset);
                if into_kernel {
                    std::ptr::copy_nonoverlapping(piece.as_ptr().add(done), k, n);
                } else {
                    std::ptr::copy_nonoverlapping(k, piece.as_mut_ptr().add(done), n);
                }
            }
            done += n;
            self.offset += n;
            if self.offset == len {
                self.index += 1;
                self.offset = 0;
            }
        }
    }
}

// --- per command state ---

/// What [`start`] calls when its command ends: the response, and whether
/// the initiator is sent a status (false for a command its own initiator
/// aborted, `CTL_FLAG_ABORT` without `CTL_FLAG_ABORT_STATUS`, for which
/// cfiscsi_scsi_command_done sends no SCSI Response).
pub type Completion = Box<dyn FnOnce(Response, bool) + Send>;

/// Where a command's response goes.
enum Sink {
    /// An initiator thread waiting for this command alone.
    Wait(Arc<Waiter>),
    /// A run of commands ([`run_with`]), at this index.
    Run(Arc<Runner>, usize),
    /// A transport that sends the response on ([`start`]).
    Call(Completion),
}

impl Sink {
    /// Whether the response carries the data received.
    fn wants_data(&self) -> bool {
        match self {
            Sink::Wait(_) | Sink::Call(_) => true,
            Sink::Run(r, _) => r.keep_data,
        }
    }

    /// Hands over the response, and the initiator's buffer back;
    /// `status_sent` as [`Completion`] says.
    fn deliver(self, response: Response, buf: SgBuffer, status_sent: bool) {
        match self {
            Sink::Wait(w) => {
                *w.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(response);
                w.cv.notify_all();
            }
            Sink::Run(r, index) => r.complete(index, response, buf),
            Sink::Call(f) => f(response, status_sent),
        }
    }
}

#[derive(Default)]
struct Waiter {
    slot: Mutex<Option<Response>>,
    cv: Condvar,
}

/// What the port keeps for a command CTL holds (cfiscsi's request PDU and
/// its private fields), in `ctl_private[CTL_PRIV_FRONTEND]`.
struct Task {
    buf: SgBuffer,
    /// Bytes the initiator can receive.
    read_len: usize,
    /// Bytes the initiator sends.
    write_len: usize,
    /// Expected data transfer length.
    edtl: usize,
    /// End of the furthest DATA-IN move.
    received: usize,
    /// A data move is under way.
    moving: bool,
    lun: u32,
    sink: Sink,
}

/// The task of an I/O the port submitted.
///
/// # Safety
///
/// `io` is an I/O CTL holds that came from the port.
unsafe fn task_of(io: *mut sys::ctl_io) -> *mut Task {
    // SAFETY: the caller's contract.
    let task = unsafe { (*io).io_hdr.ctl_private[sys::CTL_PRIV_FRONTEND as usize].ptrs[0] }.cast::<Task>();
    if task.is_null() {
        kpanic!("cfiscsi: I/O {io:p} did not come from the port");
    }
    task
}

static NEXT_TAG: AtomicU64 = AtomicU64::new(1);

/// DATA-IN moves go to the port's threads ([`set_deferred_data_in`]).
static DEFERRED_DATA_IN: AtomicBool = AtomicBool::new(false);

/// The port's transport takes the kernel buffers as they are
/// ([`set_zero_copy`]).
static ZERO_COPY: AtomicBool = AtomicBool::new(false);

/// Whether the port's transport sends and receives data in the kernel
/// buffers themselves, as an offloading NIC placing data directly (cxgbei's
/// DDP, iSER) does, instead of copying between them and the initiator's
/// buffer (the default).  Moves are accounted as before ([`datamove_stats`]),
/// but no byte reaches the initiator or the kernel buffers: benchmarks use
/// it to time the backend rather than the simulator's copies.
pub fn set_zero_copy(on: bool) {
    ZERO_COPY.store(on, Ordering::Relaxed);
}

static FAILING_MOVES: AtomicBool = AtomicBool::new(false);

/// Whether every data move fails in the transport (`port_status`
/// [`PORT_STATUS_TRANSPORT`], no data moved), as when connections drop.
pub fn set_failing_moves(on: bool) {
    FAILING_MOVES.store(on, Ordering::Relaxed);
}

/// Whether DATA-IN moves complete later on the port's threads (`samethr`
/// false) instead of at once as cfiscsi's do (the default).
pub fn set_deferred_data_in(on: bool) {
    DEFERRED_DATA_IN.store(on, Ordering::Relaxed);
}

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_LEN]);
}

/// Builds the I/O of `cmd` for LUN `lun` with tag `tag` and queues it to
/// CTL, with `buf` (as long as the EDTL, holding the data of a write) as
/// the initiator's buffer; the response goes to `sink`, possibly before
/// this returns.
fn submit(lun: u32, cmd: &Cmd, tag: u64, buf: SgBuffer, sink: Sink) {
    assert!(
        cmd.data_out.is_empty() || cmd.data_in_len == 0,
        "bidirectional commands are not supported (CDB {:02x?})",
        cmd.cdb
    );
    let (read_len, write_len) = (cmd.data_in_len, cmd.data_out.len());
    let edtl = read_len.max(write_len);
    // SAFETY: CTL's I/O type is registered at boot; the initiator's thread
    // holds no lock.
    let io = unsafe {
        malloc::simkern_malloc(
            std::mem::size_of::<sys::ctl_io>(),
            super::io_type(),
            (sys::M_WAITOK | sys::M_ZERO) as c_int,
        )
    }
    .cast::<sys::ctl_io>();
    // SAFETY: a fresh, zeroed I/O, the port's until queued.
    unsafe {
        let s = &mut (*io).scsiio;
        s.io_hdr.io_type = sys::CTL_IO_SCSI;
        s.io_hdr.nexus = sys::ctl_nexus {
            initid: cmd.initiator,
            targ_port: super::PORT.targ_port,
            targ_lun: lun,
            targ_mapped_lun: lun,
        };
        s.io_hdr.status = sys::CTL_STATUS_NONE;
        // iSCSI carries 16 CDB bytes; cfiscsi says so in cdb_len.
        let n = cmd.cdb.len().min(s.cdb.len());
        s.cdb[..n].copy_from_slice(&cmd.cdb[..n]);
        s.cdb_len = n.max(16) as u8;
        s.tag_type = cmd.task.tag_type();
        s.tag_num = tag;
    }
    // SAFETY: as above; the scratch buffer takes CTL's own answers.
    let checked = SCRATCH.with(|scratch| unsafe { super::precheck(io, &mut scratch.borrow_mut()) });
    match checked {
        Ok(outcome) => {
            let n = outcome.transferred.min(read_len);
            let data = SCRATCH.with(|scratch| scratch.borrow()[..n].to_vec());
            // SAFETY: CTL did not take the I/O; it is the port's to free.
            unsafe { malloc::simkern_free(io.cast(), super::io_type()) };
            sink.deliver(
                Response {
                    status: outcome.status,
                    sense: outcome.sense,
                    data,
                    residual: edtl as i64 - outcome.transferred as i64,
                },
                buf,
                true,
            );
        }
        Err(disposition) => {
            let task = Box::new(Task {
                buf,
                read_len,
                write_len,
                edtl,
                received: 0,
                moving: false,
                lun,
                sink,
            });
            // SAFETY: CTL took the I/O; the port's state rides in its
            // frontend slot until fe_done.
            unsafe {
                (*io).io_hdr.ctl_private[sys::CTL_PRIV_FRONTEND as usize].ptrs[0] =
                    Box::into_raw(task).cast::<c_void>();
                super::start(io, disposition);
            }
        }
    }
}

/// fe_datamove: moves DATA-IN at once, and queues DATA-OUT to the port's
/// threads.
///
/// # Safety
///
/// `io` is an I/O CTL holds that came from the port, set up for a move.
pub(super) unsafe fn datamove(io: *mut sys::ctl_io) {
    // SAFETY: the caller's contract.
    let data_in = unsafe {
        let task = task_of(io);
        if (*task).moving {
            kpanic!("cfiscsi_datamove: I/O {io:p} is already moving data (ctl_datamove again before be_move_done)");
        }
        (*task).moving = true;
        (*io).io_hdr.flags & sys::CTL_FLAG_DATA_MASK == sys::CTL_FLAG_DATA_IN
    };
    if data_in && !DEFERRED_DATA_IN.load(Ordering::Relaxed) {
        // SAFETY: the caller's contract.
        unsafe { serve(io, true) };
    } else {
        enqueue(io);
    }
}

/// The kernel buffer of a move: (address, length) segments covering
/// `len` bytes, as cfiscsi walks them (its KASSERTs become panics).
///
/// # Safety
///
/// `io` is an I/O set up for a move.
unsafe fn kernel_segments(io: *mut sys::ctl_io, len: usize) -> Vec<(*mut u8, usize)> {
    // SAFETY: the caller's contract.
    let s = unsafe { &(*io).scsiio };
    let segs: Vec<(*mut u8, usize)> = if s.kern_sg_entries == 0 {
        vec![(s.kern_data_ptr, len)]
    } else {
        // SAFETY: with kern_sg_entries, kern_data_ptr is a ctl_sg_entry
        // array of that many entries.
        let entries = unsafe {
            std::slice::from_raw_parts(
                s.kern_data_ptr.cast::<sys::ctl_sg_entry>().cast_const(),
                s.kern_sg_entries as usize,
            )
        };
        let mut segs = Vec::with_capacity(entries.len());
        let mut left = len;
        for e in entries {
            if left == 0 {
                break;
            }
            if e.len == 0 {
                kpanic!("cfiscsi_datamove: I/O {io:p}: S/G entry of length 0 (KASSERT sg_len > 0)");
            }
            let n = e.len.min(left);
            segs.push((e.addr.cast::<u8>(), n));
            left -= n;
        }
        if left > 0 {
            kpanic!(
                "cfiscsi_datamove: I/O {io:p}: kern_data_len {len} exceeds its {} S/G entries (KASSERT i < ctl_sg_count)",
                entries.len()
            );
        }
        segs
    };
    if segs.iter().any(|&(addr, n)| addr.is_null() && n > 0) {
        kpanic!("cfiscsi_datamove: I/O {io:p}: NULL kernel buffer");
    }
    segs
}

/// One data move (cfiscsi_datamove_in/out), on the thread that asked for
/// it (`samethr`) or on a port thread.
///
/// # Safety
///
/// `io` is an I/O set up for a move that the port holds.
unsafe fn serve(io: *mut sys::ctl_io, samethr: bool) {
    // SAFETY: the caller's contract: the backend waits for be_move_done
    // and leaves the I/O and its buffers to the port meanwhile.
    unsafe {
        let task = &mut *task_of(io);
        let s = &raw mut (*io).scsiio;
        let off = (*s).kern_rel_offset as usize;
        let len = (*s).kern_data_len as usize;
        let data_in = (*io).io_hdr.flags & sys::CTL_FLAG_DATA_MASK == sys::CTL_FLAG_DATA_IN;
        let copy = !ZERO_COPY.load(Ordering::Relaxed);
        let (segs, moved) = if FAILING_MOVES.load(Ordering::Relaxed) {
            (*io).io_hdr.port_status = PORT_STATUS_TRANSPORT;
            (Vec::new(), 0)
        } else if data_in {
            if off.saturating_add(len) > task.read_len {
                (*io).io_hdr.port_status = PORT_STATUS_OVERRUN;
                (Vec::new(), 0)
            } else {
                let segs = kernel_segments(io, len);
                let mut cursor = KernelCursor {
                    segs: &segs,
                    index: 0,
                    offset: 0,
                };
                if copy {
                    task.buf.pieces_mut(off, len, |piece| cursor.copy(piece, false));
                }
                task.received = task.received.max(off + len);
                (segs, len)
            }
        } else {
            let n = len.min(task.write_len.saturating_sub(off));
            let segs = kernel_segments(io, n);
            let mut cursor = KernelCursor {
                segs: &segs,
                index: 0,
                offset: 0,
            };
            if copy {
                task.buf.pieces_mut(off, n, |piece| cursor.copy(piece, true));
            }
            (segs, n)
        };
        (*s).kern_data_resid -= moved as u32;
        record(task.lun, &segs, moved);
        task.moving = false;
        super::ctl_datamove_done(io, samethr);
    }
    if !samethr && !lock::holds_none() {
        kpanic!(
            "be_move_done returned to the port with locks held: {:?}",
            lock::held_names()
        );
    }
}

fn record(lun: u32, segs: &[(*mut u8, usize)], moved: usize) {
    let mut guard = stats();
    let st = guard.get_or_insert_with(DatamoveStats::default);
    st.datamoves += 1;
    st.bytes += moved as u64;
    let per = st.per_lun.entry(lun).or_default();
    per.datamoves += 1;
    per.bytes += moved as u64;
    for &(addr, len) in segs {
        if st.segments.len() < SEGMENT_LOG_LIMIT {
            st.segments.push((addr as usize, len));
        } else {
            st.segments_dropped += 1;
        }
    }
}

/// fe_done (cfiscsi_scsi_command_done): the initiator gets the status, the
/// sense, its data and the residual; the I/O is freed.
///
/// # Safety
///
/// `io` is an I/O CTL completed that came from the port; it is freed.
pub(super) unsafe fn done(io: *mut sys::ctl_io) {
    // SAFETY: the caller's contract: CTL is done with the I/O.
    let (task, response, status_sent) = unsafe {
        let task = Box::from_raw(task_of(io));
        (*io).io_hdr.ctl_private[sys::CTL_PRIV_FRONTEND as usize].ptrs[0] = std::ptr::null_mut();
        if task.moving {
            kpanic!("ctl_done: I/O {io:p} completed while the port moves its data");
        }
        let s = &(*io).scsiio;
        match s.io_hdr.status & sys::CTL_STATUS_MASK {
            sys::CTL_SUCCESS | sys::CTL_SCSI_ERROR | sys::CTL_CMD_ABORTED => {}
            other => kpanic!("a backend completed an I/O with status {other:#x}, which CTL cannot report"),
        }
        let n = usize::from(s.sense_len).min(std::mem::size_of_val(&s.sense_data));
        let sense = std::slice::from_raw_parts((&raw const s.sense_data).cast::<u8>(), n).to_vec();
        let data = if task.sink.wants_data() {
            task.buf.to_vec(task.received)
        } else {
            Vec::new()
        };
        let response = Response {
            status: s.scsi_status,
            sense,
            data,
            residual: task.edtl as i64 - i64::from(s.kern_total_len),
        };
        let flags = s.io_hdr.flags;
        let status_sent = flags & sys::CTL_FLAG_ABORT == 0 || flags & sys::CTL_FLAG_ABORT_STATUS != 0;
        malloc::simkern_free(io.cast(), super::io_type());
        (task, response, status_sent)
    };
    let Task { buf, sink, .. } = *task;
    sink.deliver(response, buf, status_sent);
}

// --- the port's threads ---

#[derive(Default)]
struct Pool {
    queue: VecDeque<usize>,
    stop: bool,
    threads: Vec<JoinHandle<()>>,
    /// Threads blocked on [`POOL_CV`].
    sleeping: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    queue: VecDeque::new(),
    stop: false,
    threads: Vec::new(),
    sleeping: 0,
});
static POOL_CV: Condvar = Condvar::new();
static POOL_WORK: Doorbell = Doorbell::new();

fn pool() -> MutexGuard<'static, Pool> {
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the port's threads (at boot), clears the statistics and sets
/// the port's defaults.
pub(super) fn start_port() {
    reset_datamove_stats();
    set_zero_copy(false);
    set_deferred_data_in(false);
    set_failing_moves(false);
    spawn_threads();
}

/// Starts the port's threads if they are not running.
fn spawn_threads() {
    let mut p = pool();
    if !p.threads.is_empty() {
        return;
    }
    p.stop = false;
    for i in 0..WORKERS {
        let t = std::thread::Builder::new()
            .name(format!("cfiscsi{i}"))
            .spawn(worker)
            .unwrap_or_else(|e| kpanic!("cannot start the port's threads: {e}"));
        p.threads.push(t);
    }
}

/// Stops the port's threads once their queue is empty (at shutdown).
pub(super) fn stop_port() {
    let threads = {
        let mut p = pool();
        p.stop = true;
        std::mem::take(&mut p.threads)
    };
    POOL_CV.notify_all();
    for t in threads {
        let _ = t.join();
    }
}

fn enqueue(io: *mut sys::ctl_io) {
    if pool().threads.is_empty() {
        spawn_threads();
    }
    let mut p = pool();
    p.queue.push_back(io as usize);
    POOL_WORK.ring();
    let wake = p.sleeping > 0;
    drop(p);
    if wake {
        POOL_CV.notify_one();
    }
}

/// A port thread: serves queued moves, waiting for them as every simulated
/// kernel thread waits ([`crate::idle`]).
fn worker() {
    loop {
        let io = {
            let mut p = pool();
            loop {
                if let Some(io) = p.queue.pop_front() {
                    break Some(io);
                }
                if p.stop {
                    break None;
                }
                let seen = POOL_WORK.seen();
                drop(p);
                POOL_WORK.poll(seen);
                p = pool();
                if p.queue.is_empty() && !p.stop {
                    p.sleeping += 1;
                    p = POOL_CV.wait(p).unwrap_or_else(|e| e.into_inner());
                    p.sleeping -= 1;
                }
            }
        };
        match io {
            // SAFETY: queued by datamove for an I/O set up for a move.
            Some(io) => unsafe { serve(io as *mut sys::ctl_io, false) },
            None => return,
        }
    }
}

// --- the initiator ---

/// A fresh initiator buffer for `cmd`.
fn buffer_for(cmd: &Cmd) -> SgBuffer {
    if cmd.data_out.is_empty() {
        SgBuffer::zeroed(cmd.data_in_len)
    } else {
        SgBuffer::from_data(&cmd.data_out)
    }
}

/// A tag for a command of the simulator's initiator.
fn next_tag() -> u64 {
    NEXT_TAG.fetch_add(1, Ordering::Relaxed)
}

/// Sends `cmd` to LUN `lun` and waits for its response.
pub fn execute(lun: u32, cmd: &Cmd) -> Response {
    let waiter = Arc::new(Waiter::default());
    submit(lun, cmd, next_tag(), buffer_for(cmd), Sink::Wait(waiter.clone()));
    let mut slot = waiter.slot.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if let Some(response) = slot.take() {
            return response;
        }
        let (guard, timeout) = waiter
            .cv
            .wait_timeout(slot, COMMAND_DEADLINE)
            .unwrap_or_else(|e| e.into_inner());
        slot = guard;
        if timeout.timed_out() && slot.is_none() {
            kpanic!("an I/O on LUN {lun} was never completed (CDB {:02x?})", cmd.cdb);
        }
    }
}

/// Sends `cmd` to LUN `lun` with tag `tag` (cfiscsi's: the Initiator Task
/// Tag, unique per initiator among its commands in flight, which ABORT TASK
/// names) and returns at once; `done` gets the response when CTL completes
/// the command, possibly before this returns, on any thread.  A transport
/// with several commands in flight (the iSCSI portal) sends with it.
pub fn start(lun: u32, cmd: &Cmd, tag: u64, done: Completion) {
    submit(lun, cmd, tag, buffer_for(cmd), Sink::Call(done));
}

/// Sends `cmds` to LUN `lun` keeping `queue_depth` of them in flight, and
/// returns their responses in the order the commands were given (they may
/// complete in any order).
pub fn run(lun: u32, cmds: impl IntoIterator<Item = Cmd>, queue_depth: usize) -> Vec<Response> {
    run_with(lun, cmds, queue_depth, true)
}

/// A run of commands: each completion sends the next command, on the
/// thread that completed it (as a busy initiator answers a response with
/// its next command, and as [`crate::cam::run_direct`] does), so that no
/// initiator thread stands between two commands.
struct Runner {
    lun: u32,
    keep_data: bool,
    total: usize,
    state: Mutex<RunState>,
    finished: Condvar,
}

struct RunState {
    pending: VecDeque<(usize, Cmd)>,
    responses: Vec<Option<Response>>,
    done: usize,
    /// Initiator buffers to use again (without `keep_data`).
    buffers: Vec<SgBuffer>,
    /// Completions that arrived on a thread while it was sending a
    /// command of this run: the commands they free are sent by that
    /// thread's loop in [`Runner::send`], not by a nested call.
    deferred: usize,
}

thread_local! {
    /// The run this thread is sending a command of, if any.
    static SENDING: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl Runner {
    fn lock(&self) -> MutexGuard<'_, RunState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends up to `n` more commands, and those that completions arriving
    /// meanwhile on this thread free.
    fn send(self: &Arc<Self>, mut n: usize) {
        let me = Arc::as_ptr(self) as usize;
        let outer = SENDING.with(|s| s.replace(me));
        while n > 0 {
            let (index, cmd, buf) = {
                let mut st = self.lock();
                let Some((index, cmd)) = st.pending.pop_front() else {
                    break;
                };
                let edtl = cmd.data_in_len.max(cmd.data_out.len());
                let reused = st.buffers.iter().position(|b| b.len() == edtl);
                let buf = match reused.map(|i| st.buffers.swap_remove(i)) {
                    Some(mut b) => {
                        // A zero-copy transport places the data itself.
                        if !cmd.data_out.is_empty() && !ZERO_COPY.load(Ordering::Relaxed) {
                            b.fill(&cmd.data_out);
                        }
                        b
                    }
                    None => buffer_for(&cmd),
                };
                (index, cmd, buf)
            };
            submit(self.lun, &cmd, next_tag(), buf, Sink::Run(self.clone(), index));
            n = n - 1 + std::mem::take(&mut self.lock().deferred);
        }
        SENDING.with(|s| s.set(outer));
    }

    /// Takes the response of command `index` and sends the next command.
    fn complete(self: &Arc<Self>, index: usize, response: Response, buf: SgBuffer) {
        {
            let mut st = self.lock();
            if st.responses[index].replace(response).is_some() {
                kpanic!("command {index} on LUN {} completed twice", self.lun);
            }
            st.done += 1;
            if !self.keep_data {
                st.buffers.push(buf);
            }
            if st.done == self.total {
                self.finished.notify_all();
            }
            if SENDING.with(|s| s.get()) == Arc::as_ptr(self) as usize {
                st.deferred += 1;
                return;
            }
        }
        self.send(1);
    }
}

/// [`run`]; without `keep_data` the responses have no data (their
/// residuals say what moved) and the initiator's buffers are used again,
/// so that a long run of large transfers allocates `queue_depth` of them.
pub fn run_with(lun: u32, cmds: impl IntoIterator<Item = Cmd>, queue_depth: usize, keep_data: bool) -> Vec<Response> {
    let pending: VecDeque<(usize, Cmd)> = cmds.into_iter().enumerate().collect();
    let total = pending.len();
    let runner = Arc::new(Runner {
        lun,
        keep_data,
        total,
        state: Mutex::new(RunState {
            pending,
            responses: vec![None; total],
            done: 0,
            buffers: Vec::new(),
            deferred: 0,
        }),
        finished: Condvar::new(),
    });
    runner.send(queue_depth.max(1));
    let mut st = runner.lock();
    let mut last = (st.done, std::time::Instant::now());
    while st.done < total {
        let (g, _) = runner
            .finished
            .wait_timeout(st, Duration::from_secs(1))
            .unwrap_or_else(|e| e.into_inner());
        st = g;
        if st.done != last.0 {
            last = (st.done, std::time::Instant::now());
        } else if last.1.elapsed() >= COMMAND_DEADLINE {
            kpanic!("no command on LUN {lun} completed in {COMMAND_DEADLINE:?}");
        }
    }
    std::mem::take(&mut st.responses)
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.unwrap_or_else(|| kpanic!("command {i} on LUN {lun} has no response")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_cut_unevenly() {
        let data: Vec<u8> = (0..20000u32).map(|i| i as u8).collect();
        let buf = SgBuffer::from_data(&data);
        let sizes: Vec<usize> = buf.segs.iter().map(Vec::len).collect();
        assert_eq!(sizes, [512, 4096, 1000, 14392]);
        assert_eq!(buf.to_vec(data.len()), data);
        assert_eq!(buf.to_vec(600), data[..600]);
        let z = SgBuffer::zeroed(75_200);
        let sizes: Vec<usize> = z.segs.iter().map(Vec::len).collect();
        assert_eq!(sizes, [512, 4096, 1000, 65536, 7, 4049]);
    }

    #[test]
    fn copies_cross_both_kinds_of_segments() {
        // A kernel S/G list of three odd pieces, copied into the
        // initiator's buffer at an odd offset, then back.
        let mut k1: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let mut k2: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let mut k3: Vec<u8> = (0..77u32).map(|i| (i + 100) as u8).collect();
        let expected = [k1.clone(), k2.clone(), k3.clone()].concat();
        let segs = [
            (k1.as_mut_ptr(), k1.len()),
            (k2.as_mut_ptr(), k2.len()),
            (k3.as_mut_ptr(), k3.len()),
        ];
        let mut buf = SgBuffer::zeroed(6000);
        let mut cursor = KernelCursor {
            segs: &segs,
            index: 0,
            offset: 0,
        };
        // SAFETY: the segments are the vectors above, 5377 bytes in all.
        buf.pieces_mut(333, expected.len(), |piece| unsafe { cursor.copy(piece, false) });
        let got = buf.to_vec(6000);
        assert_eq!(&got[333..333 + expected.len()], &expected[..]);
        assert!(got[..333].iter().chain(&got[333 + expected.len()..]).all(|&b| b == 0));
        let mut back = vec![0u8; expected.len()];
        let back_segs = [(back.as_mut_ptr(), back.len())];
        let mut cursor = KernelCursor {
            segs: &back_segs,
            index: 0,
            offset: 0,
        };
        // SAFETY: one segment of the bytes copied.
        buf.pieces_mut(333, expected.len(), |piece| unsafe { cursor.copy(piece, true) });
        assert_eq!(back, expected);
    }

    #[test]
    fn segments_within_buffers() {
        let st = DatamoveStats {
            segments: vec![(0x1000, 0x200), (0x1100, 0x100), (0x5000, 0x10)],
            ..DatamoveStats::default()
        };
        assert_eq!(st.segments_within(&[(0x1000, 0x200)]), 2);
        assert_eq!(st.segments_within(&[(0x1080, 0x200)]), 1);
        assert_eq!(st.segments_within(&[]), 0);
    }
}
