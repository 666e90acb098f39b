//! The I/O path of a passthrough LUN: each CTL I/O becomes commands for the
//! device, with its data moved between the initiator and the very buffer
//! the device reads or writes (no copy).
//!
//! A request goes through steps; each step ends by handing the request to
//! someone who gives it back later: the periph (for a buffer, or to run a
//! command: back through [`resume`], from the done task) or CTL (to move
//! data: back through [`moved`], from the frontend).  No lock is held
//! between steps, so CTL is never called with one.
//!
//! - Reads: per chunk (at most the device's `maxio`), READ into the
//!   buffer, then move what the device returned to the initiator.
//! - Writes (WRITE, WRITE AND VERIFY, VERIFY with BYTCHK): per chunk, move
//!   the data in, then WRITE (or WRITE AND VERIFY, VERIFY) it.
//! - COMPARE AND WRITE: move both halves in, then one COMPARE AND WRITE, so
//!   that the device keeps it atomic; CTL's write phase that follows is
//!   already done.
//! - WRITE SAME, UNMAP (split to the device's limits), GET LBA STATUS,
//!   VERIFY without data, and the commands sent as they are (SYNCHRONIZE
//!   CACHE, START STOP UNIT, PREVENT ALLOW MEDIUM REMOVAL).

use crate::kern::alloc::KBox;
use crate::kern::cam::{CamStatus, Data, ScsiCommand};
use crate::kern::ctl::{self, Completion, CtlIo, LbaLen, LunRef, MediaEvent, Reply, llf};
use crate::kern::pool::BUF_MAX;
use crate::periph::io::{self as pio, Event, Grant, Request};
use crate::scsi::cdb::{self, Cdb, StartStop, TaskAttribute};
use crate::scsi::sbc::{self, Hints, UnmapCursor, UnmapLimits};
use crate::scsi::vpd::BlockLimits;

use super::reply::{self, Failure, Next};
use super::sysctl::{LunStats, timeout_ms};

/// How the backend sizes the commands it sends a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoLimits {
    /// Blocks of one READ or WRITE.
    pub chunk_blocks: u32,
    /// The device's UNMAP limits, if it can unmap.
    pub unmap: Option<UnmapLimits>,
    /// Blocks of one WRITE SAME (the device's limit, else the CDB's).
    pub write_same_blocks: u32,
    /// Blocks of one COMPARE AND WRITE (of each half): the device takes
    /// both halves in one command, which neither the SIM's `maxio` nor a
    /// buffer lets exceed, nor the device's own limit.
    pub compare_and_write_blocks: u32,
}

impl IoLimits {
    /// The limits for a device with `block_size`-byte blocks whose SIM takes
    /// `max_io` bytes at once and whose Block Limits page says `limits`.
    pub fn new(max_io: u32, block_size: u32, limits: Option<BlockLimits>, can_unmap: bool) -> IoLimits {
        let bs = block_size.max(1);
        let mut bytes = max_io.min(BUF_MAX as u32);
        if let Some(max) = limits.map(|l| l.max_transfer).filter(|&m| m != 0) {
            bytes = bytes.min(max.saturating_mul(bs));
        }
        let l = limits.unwrap_or_default();
        let both_halves = max_io.min(BUF_MAX as u32).checked_div(bs).unwrap_or(0) >> 1;
        IoLimits {
            chunk_blocks: bytes.checked_div(bs).unwrap_or(0).max(1),
            unmap: can_unmap.then_some(UnmapLimits {
                max_lbas: l.max_unmap_lba,
                max_descriptors: l.max_unmap_descriptors,
            }),
            write_same_blocks: match u32::try_from(l.max_write_same) {
                Ok(0) | Err(_) => u32::MAX,
                Ok(n) => n,
            },
            compare_and_write_blocks: match l.max_compare_and_write {
                0 => both_halves,
                n => both_halves.min(u32::from(n)),
            },
        }
    }
}

/// Command timeouts, in milliseconds, where a device may take its time
/// (the data path's is `kern.cam.ctl.passthrough.timeout`).
const START_STOP_TIMEOUT: u32 = 120_000;
const SYNCHRONIZE_CACHE_TIMEOUT: u32 = 120_000;
const PREVENT_ALLOW_TIMEOUT: u32 = 10_000;
const UNMAP_TIMEOUT: u32 = 120_000;
const REQUEST_SENSE_TIMEOUT: u32 = 10_000;

/// How often a command the SIM bounced without sending it
/// (`CAM_REQUEUE_REQ`) is sent again before the initiator is told BUSY.
const RESENDS: u8 = 3;

/// Bytes of sense data REQUEST SENSE asks for.
const SENSE_LEN: u8 = 252;

/// What a data transfer does with its chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// READ: device first, then data to the initiator.
    Read,
    /// WRITE: data from the initiator first, then the device.
    Write,
    /// WRITE AND VERIFY.
    WriteAndVerify,
    /// VERIFY with BYTCHK: the initiator's data compared with the medium.
    Compare,
}

/// A READ, WRITE, WRITE AND VERIFY or VERIFY with data, chunk by chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Transfer {
    kind: Kind,
    lba: u64,
    blocks: u32,
    /// Blocks done (the chunk being worked on starts here).
    done: u32,
    /// Blocks of the chunk being worked on.
    chunk: u32,
    /// Bytes per block.
    bs: u32,
    hints: Hints,
}

impl Transfer {
    fn bytes(&self, blocks: u32) -> u32 {
        blocks.saturating_mul(self.bs)
    }

    fn command(&self) -> Cdb {
        let lba = self.lba.saturating_add(u64::from(self.done));
        match self.kind {
            Kind::Read => sbc::read(lba, self.chunk, self.hints),
            Kind::Write => sbc::write(lba, self.chunk, self.hints),
            Kind::WriteAndVerify => sbc::write_and_verify(lba, self.chunk, self.hints),
            Kind::Compare => sbc::verify(lba, self.chunk, true, self.hints),
        }
    }
}

/// A request's plan and progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Work {
    /// One command sent as the initiator sent it, without data.
    Forward,
    /// A transfer in chunks.
    Transfer(Transfer),
    /// COMPARE AND WRITE: both halves moved in, then one command.
    CompareAndWrite {
        lba: u64,
        blocks: u8,
        bytes: u32,
        hints: Hints,
    },
    /// WRITE SAME, in pieces the device takes, with CTL's block of data.
    WriteSame {
        lba: u64,
        blocks: u32,
        done: u32,
        byte1: u8,
        bs: u32,
        max: u32,
    },
    /// UNMAP, in commands within the device's limits.
    Unmap {
        cursor: UnmapCursor,
        next: UnmapCursor,
        limits: UnmapLimits,
        anchor: bool,
    },
    /// GET LBA STATUS into CTL's buffer.
    GetLbaStatus,
    /// REQUEST SENSE after a CHECK CONDITION that came without sense.
    RequestSense,
}

/// An I/O from CTL (data_submit, config_read, config_write), in CTL's
/// worker thread or the frontend's.
pub fn submit(io: CtlIo) {
    let Some(lun) = io.lun() else {
        return io.complete(internal_failure());
    };
    let stats = &lun.lun().stats;
    stats.command();
    let (work, command) = match plan(&io, lun.geometry().1, lun.lun().io_limits()) {
        Plan::Start(work, command) => (work, command),
        Plan::Reply(reply) => {
            // Answered in the device's place: GOOD, or CHECK CONDITION.
            stats.ended((reply != Reply::Success).then_some(Failure::CheckCondition));
            return io.complete(reply);
        }
    };
    // The LUN's device stays bound until the I/O is complete.
    let device = lun.lun().device();
    if !device.enter() {
        stats.ended(Some(Failure::DeviceLost));
        return io.complete(DEVICE_LOST);
    }
    let Some(periph) = device.periph() else {
        stats.ended(Some(Failure::DeviceLost));
        io.complete(DEVICE_LOST);
        return drop(device.leave());
    };
    let req = match pio::new_request(periph, io, work, command) {
        Ok(req) => req,
        Err(io) => {
            stats.ended(Some(Failure::Resource));
            io.complete(Reply::Busy);
            return drop(device.leave());
        }
    };
    begin(&lun, req);
}

/// What a command gets while the LUN's device is lost: NOT READY, MEDIUM
/// NOT PRESENT (CTL answers most commands itself then; those it passes on,
/// such as PREVENT ALLOW MEDIUM REMOVAL, come here).
const DEVICE_LOST: Reply<'static> = Reply::Sense {
    key: reply::SENSE_KEY_NOT_READY,
    asc: 0x3a,
    ascq: 0x00,
};

/// Queues `req.command` for the LUN's device.
fn issue(lun: &LunRef, req: KBox<Request>) {
    match lun.lun().device().periph() {
        Some(p) => pio::issue(p, req),
        None => orphaned(lun, req),
    }
}

/// A request whose LUN has no periph, which cannot happen: a LUN with I/O
/// in the backend keeps its periph.  The I/O is answered; the request,
/// which has no pool to go back to, is freed.
fn orphaned(lun: &LunRef, req: KBox<Request>) {
    crate::printf!("ctlpass: LUN {}: a request without a device\n", lun.id());
    if let Some(io) = KBox::into_inner(req).io {
        io.complete(internal_failure());
        drop(lun.lun().device().leave());
    }
}

/// What to do with a new I/O.
enum Plan {
    /// Start this work with this first command.
    Start(Work, ScsiCommand),
    /// Complete at once.
    Reply(Reply<'static>),
}

fn internal_failure() -> Reply<'static> {
    Reply::Sense {
        key: ctl::SENSE_KEY_HARDWARE_ERROR,
        asc: 0x44,
        ascq: 0x00,
    }
}

/// ILLEGAL REQUEST.
const ILLEGAL_REQUEST: u8 = 0x05;

fn command(cdb: Cdb, data: Data, task_attribute: TaskAttribute, timeout_ms: u32) -> ScsiCommand {
    ScsiCommand {
        cdb,
        data,
        task_attribute,
        timeout_ms,
    }
}

fn plan(io: &CtlIo, bs: u32, limits: IoLimits) -> Plan {
    let tag = io.task_attribute();
    let cdb = io.cdb();
    let opcode = cdb.first().copied().unwrap_or(0);
    let LbaLen { lba, len, flags } = io.lba_len();
    let hints = Hints {
        fua: flags & llf::FUA != 0,
        dpo: flags & llf::DPO != 0,
    };
    let forward = |timeout| match Cdb::new(cdb::trimmed(cdb)) {
        Some(c) => Plan::Start(Work::Forward, command(c, Data::None, tag, timeout)),
        None => Plan::Reply(internal_failure()),
    };
    match io.completion() {
        Completion::DataSubmit if opcode == sbc::COMPARE_AND_WRITE && flags & llf::WRITE != 0 => {
            // CTL's write phase: the device compared and wrote atomically.
            Plan::Reply(Reply::Success)
        }
        Completion::DataSubmit if opcode == sbc::COMPARE_AND_WRITE && len > limits.compare_and_write_blocks => {
            // INVALID FIELD IN CDB (NUMBER OF LOGICAL BLOCKS), as the
            // device answers beyond its MAXIMUM COMPARE AND WRITE LENGTH
            // (CTL advertises 255 whatever the device takes).
            Plan::Reply(Reply::Sense {
                key: ILLEGAL_REQUEST,
                asc: 0x24,
                ascq: 0x00,
            })
        }
        Completion::DataSubmit if opcode == sbc::COMPARE_AND_WRITE => {
            let blocks = u8::try_from(len).unwrap_or(u8::MAX);
            let bytes = u32::from(blocks).saturating_mul(2).saturating_mul(bs);
            let work = Work::CompareAndWrite {
                lba,
                blocks,
                bytes,
                hints,
            };
            Plan::Start(
                work,
                command(
                    sbc::compare_and_write(lba, blocks, hints),
                    Data::Out(bytes),
                    tag,
                    timeout_ms(),
                ),
            )
        }
        Completion::DataSubmit if flags & llf::VERIFY != 0 => Plan::Start(
            Work::Forward,
            command(sbc::verify(lba, len, false, hints), Data::None, tag, timeout_ms()),
        ),
        Completion::DataSubmit => {
            let kind = match (flags & llf::READ != 0, flags & llf::COMPARE != 0) {
                (true, _) => Kind::Read,
                (false, true) => Kind::Compare,
                (false, false) if is_write_and_verify(opcode) => Kind::WriteAndVerify,
                (false, false) => Kind::Write,
            };
            let chunk = len.min(limits.chunk_blocks).max(1);
            let t = Transfer {
                kind,
                lba,
                blocks: len,
                done: 0,
                chunk,
                bs,
                hints,
            };
            let data = if kind == Kind::Read {
                Data::In(t.bytes(chunk))
            } else {
                Data::Out(t.bytes(chunk))
            };
            Plan::Start(Work::Transfer(t), command(t.command(), data, tag, timeout_ms()))
        }
        Completion::ConfigRead => Plan::Start(
            Work::GetLbaStatus,
            command(
                sbc::get_lba_status(lba, io_data_len(io)),
                Data::InCtl(io_data_len(io)),
                tag,
                timeout_ms(),
            ),
        ),
        Completion::ConfigWrite => match opcode {
            cdb::SYNCHRONIZE_CACHE_10 | cdb::SYNCHRONIZE_CACHE_16 => forward(SYNCHRONIZE_CACHE_TIMEOUT),
            cdb::START_STOP_UNIT => forward(START_STOP_TIMEOUT),
            cdb::PREVENT_ALLOW_MEDIUM_REMOVAL => forward(PREVENT_ALLOW_TIMEOUT),
            sbc::WRITE_SAME_10 | sbc::WRITE_SAME_16 => {
                let byte1 = flags as u8;
                if byte1 & sbc::WS_UNMAP != 0 && limits.unmap.is_none() {
                    // INVALID FIELD IN CDB: this device cannot unmap.
                    return Plan::Reply(Reply::Sense {
                        key: ILLEGAL_REQUEST,
                        asc: 0x24,
                        ascq: 0x00,
                    });
                }
                let max = limits
                    .write_same_blocks
                    .min(if opcode == sbc::WRITE_SAME_10 { 0xffff } else { u32::MAX });
                let first = len.min(max);
                let data = if byte1 & sbc::WS_NDOB != 0 {
                    Data::None
                } else {
                    Data::OutCtl(bs)
                };
                let work = Work::WriteSame {
                    lba,
                    blocks: len,
                    done: 0,
                    byte1,
                    bs,
                    max,
                };
                Plan::Start(
                    work,
                    command(sbc::write_same(lba, first, byte1), data, tag, UNMAP_TIMEOUT),
                )
            }
            sbc::UNMAP => match limits.unmap {
                // INVALID COMMAND OPERATION CODE, as CTL's block backend
                // answers on a LUN that cannot unmap.
                None => Plan::Reply(Reply::Sense {
                    key: ILLEGAL_REQUEST,
                    asc: 0x20,
                    ascq: 0x00,
                }),
                Some(limits) => {
                    let anchor = io.unmap_descriptors().1 & 0x01 != 0;
                    let work = Work::Unmap {
                        cursor: UnmapCursor::default(),
                        next: UnmapCursor::default(),
                        limits,
                        anchor,
                    };
                    Plan::Start(work, command(sbc::unmap(0, anchor), Data::None, tag, UNMAP_TIMEOUT))
                }
            },
            _ => Plan::Reply(Reply::Sense {
                key: ILLEGAL_REQUEST,
                asc: 0x20,
                ascq: 0x00,
            }),
        },
    }
}

fn is_write_and_verify(opcode: u8) -> bool {
    matches!(opcode, 0x2e | 0xae | 0x8e)
}

fn io_data_len(io: &CtlIo) -> u32 {
    io.kern_data().map_or(0, |(_, len)| len)
}

/// The first step of a new request.
fn begin(lun: &LunRef, req: KBox<Request>) {
    match req.work {
        Work::Transfer(t) => need_buffer(lun, req, t.bytes(t.chunk)),
        Work::CompareAndWrite { bytes, .. } => need_buffer(lun, req, bytes),
        Work::Unmap { .. } => need_buffer(lun, req, UNMAP_LIST_LEN),
        _ => issue(lun, req),
    }
}

/// Bytes of an UNMAP parameter list the backend builds: a page, 255
/// descriptors.
const UNMAP_LIST_LEN: u32 = 4096;

/// Gets the request a buffer of `len` bytes, then goes on with it (now, or
/// from the done task when one is returned).
fn need_buffer(lun: &LunRef, req: KBox<Request>, len: u32) {
    let Some(periph) = lun.lun().device().periph() else {
        return orphaned(lun, req);
    };
    match pio::buffer(periph, req, len as usize) {
        Grant::Now(req) => with_buffer(lun, req),
        Grant::Later => {}
        Grant::Failed(req, _) => finish(lun, req, Finish::Reply(Reply::Busy, Some(Failure::Resource))),
    }
}

/// The request has its buffer: move data in, or send the command.
fn with_buffer(lun: &LunRef, req: KBox<Request>) {
    match req.work {
        Work::Transfer(t) if t.kind != Kind::Read => {
            move_data(lun, req, t.bytes(t.done), t.bytes(t.chunk), t.bytes(t.blocks))
        }
        Work::CompareAndWrite { bytes, .. } => move_data(lun, req, 0, bytes, bytes),
        Work::Unmap { .. } => next_unmap(lun, req),
        _ => issue(lun, req),
    }
}

/// Hands CTL `len` bytes of the buffer to move at `offset` of a `total`
/// byte transfer.
fn move_data(lun: &LunRef, req: KBox<Request>, offset: u32, len: u32, total: u32) {
    if let Err(req) = ctl::datamove(req, offset, len, total) {
        finish(lun, req, Finish::Reply(internal_failure(), Some(Failure::Transport)));
    }
}

/// Sends the next UNMAP of the request's descriptors, or completes.
fn next_unmap(lun: &LunRef, mut req: KBox<Request>) {
    let Work::Unmap {
        cursor, limits, anchor, ..
    } = req.work
    else {
        return finish(lun, req, Finish::Reply(internal_failure(), Some(Failure::Transport)));
    };
    // The descriptors live in CTL's buffer of the I/O; the list is built in
    // the request's own.
    let r = &mut *req;
    let batch = match (r.io.as_ref(), r.buf.as_mut()) {
        (Some(io), Some(buf)) => sbc::next_unmap(io.unmap_descriptors().0, cursor, limits, buf.as_mut_slice()),
        _ => return finish(lun, req, Finish::Reply(internal_failure(), Some(Failure::Transport))),
    };
    match batch {
        None => finish(lun, req, Finish::SUCCESS),
        Some((len, next)) => {
            req.work = Work::Unmap {
                cursor,
                next,
                limits,
                anchor,
            };
            let len = len as u32;
            req.command = command(
                sbc::unmap(len as u16, anchor),
                Data::Out(len),
                req.command.task_attribute,
                UNMAP_TIMEOUT,
            );
            issue(lun, req);
        }
    }
}

/// A request the periph gives back (done task, no lock held): its command
/// finished, or the buffer it waited for is there.
pub fn resume(req: KBox<Request>) {
    let Some(lun) = req.io.as_ref().and_then(CtlIo::lun) else {
        // Without an I/O there is nothing to complete, nor a LUN to return
        // the request to: its memory goes back to malloc(9).
        return drop(req);
    };
    if req.is_aborted() {
        // A task management function aborted the I/O: CTL reports that,
        // whatever the device said.
        return finish(&lun, req, Finish::AsIs);
    }
    match req.event {
        Event::BufferGranted => with_buffer(&lun, req),
        Event::DeviceDone => device_done(&lun, req),
    }
}

/// An aborted I/O whose command the device still runs, taken from its
/// request by the periph (which could not abort the command, and gave up
/// waiting for it): it ends now with the status CTL set, as [`resume`]
/// ends an aborted request, and the device may go once it is done.
pub fn abandoned(io: CtlIo) {
    let Some(lun) = io.lun() else {
        return io.complete_as_is();
    };
    lun.lun().stats.ended(Some(Failure::Aborted));
    io.complete_as_is();
    drop(lun.lun().device().leave());
}

/// The device finished the request's command.
fn device_done(lun: &LunRef, mut req: KBox<Request>) {
    let next = reply::next(&req.result);
    match next {
        Next::Resend if req.resends < RESENDS => {
            req.resends = req.resends.saturating_add(1);
            return issue(lun, req);
        }
        Next::Resend => {
            if let Work::Transfer(t) = req.work {
                tell_taken(&mut req, t);
            }
            // The SIM kept bouncing it: the initiator is told BUSY.
            return finish(lun, req, Finish::Reply(Reply::Busy, Some(Failure::Transport)));
        }
        Next::RequestSense if req.work != Work::RequestSense => {
            if let Work::Transfer(t) = req.work {
                tell_taken(&mut req, t);
            }
            return request_sense(lun, req);
        }
        _ => {}
    }
    if req.work == Work::RequestSense {
        return finish(lun, req, Finish::Sensed);
    }
    let ok = matches!(next, Next::Done) && req.result.is_ok();
    match req.work {
        Work::Transfer(t) if t.kind == Kind::Read => {
            // What the device returned goes to the initiator, even when the
            // command failed part way (a medium error), as it would directly;
            // after a transport error nothing the buffer holds is data.
            let transferred = matches!(req.result.status, CamStatus::REQ_CMP | CamStatus::SCSI_STATUS_ERROR);
            let got = if transferred {
                t.bytes(t.chunk).saturating_sub(req.result.resid)
            } else {
                0
            };
            // Each move says how much the transfer has moved so far: a
            // later chunk that moves nothing (CTL does not pass an empty
            // move to the frontend) leaves the last move's total standing.
            move_data(lun, req, t.bytes(t.done), got, t.bytes(t.done).saturating_add(got));
        }
        Work::Transfer(mut t) if ok => {
            if req.result.resid > 0 {
                // GOOD with a residual: the device took less than it was
                // sent, and nothing after it is sent.
                tell_taken(&mut req, t);
                return finish(lun, req, Finish::SUCCESS);
            }
            t.done = t.done.saturating_add(t.chunk);
            match sbc::next_chunk(t.blocks, t.done, t.chunk) {
                None => finish(lun, req, Finish::SUCCESS),
                Some((_, chunk)) => {
                    t.chunk = chunk;
                    req.work = Work::Transfer(t);
                    req.command.cdb = t.command();
                    req.command.data = Data::Out(t.bytes(chunk));
                    with_buffer(lun, req);
                }
            }
        }
        Work::WriteSame {
            lba,
            blocks,
            done,
            byte1,
            bs,
            max,
        } if ok => {
            let done = done.saturating_add(blocks.saturating_sub(done).min(max));
            if done >= blocks {
                return finish(lun, req, Finish::SUCCESS);
            }
            let n = blocks.saturating_sub(done).min(max);
            req.work = Work::WriteSame {
                lba,
                blocks,
                done,
                byte1,
                bs,
                max,
            };
            req.command.cdb = sbc::write_same(lba.saturating_add(u64::from(done)), n, byte1);
            issue(lun, req);
        }
        Work::Unmap {
            next, limits, anchor, ..
        } if ok => {
            req.work = Work::Unmap {
                cursor: next,
                next,
                limits,
                anchor,
            };
            next_unmap(lun, req);
        }
        Work::GetLbaStatus if ok => {
            let got = match req.command.data {
                Data::InCtl(n) => n.saturating_sub(req.result.resid),
                _ => 0,
            };
            if let Some(io) = req.io.as_mut() {
                io.set_data_len(got);
            }
            finish(lun, req, Finish::SUCCESS)
        }
        Work::Transfer(t) => {
            tell_taken(&mut req, t);
            finish(lun, req, Finish::Device)
        }
        _ => finish(lun, req, Finish::Device),
    }
}

/// A transfer ends with its chunk short or failed, and no more data moves:
/// its total becomes what the device took of a write (nothing of the chunk
/// after a transport error) or what reached the initiator of a read, so
/// that the initiator sees the residual it would see directly.
fn tell_taken(req: &mut Request, t: Transfer) {
    let took = match req.result.status {
        _ if t.kind == Kind::Read => 0,
        CamStatus::REQ_CMP | CamStatus::SCSI_STATUS_ERROR => t.bytes(t.chunk).saturating_sub(req.result.resid),
        _ => 0,
    };
    if let Some(io) = req.io.as_mut() {
        io.set_total_len(t.bytes(t.done).saturating_add(took));
    }
}

/// Asks the device for the sense data of a CHECK CONDITION that came
/// without it, into the request's buffer (or one it gets first).
fn request_sense(lun: &LunRef, mut req: KBox<Request>) {
    req.work = Work::RequestSense;
    req.command = command(
        sbc::request_sense(SENSE_LEN),
        Data::In(u32::from(SENSE_LEN)),
        req.command.task_attribute,
        REQUEST_SENSE_TIMEOUT,
    );
    if req.buf.is_some() {
        issue(lun, req);
    } else {
        need_buffer(lun, req, u32::from(SENSE_LEN));
    }
}

/// CTL moved the data of the request (frontend context, no lock held).
pub fn moved(mut req: KBox<Request>) {
    let Some(lun) = req.io.as_ref().and_then(CtlIo::lun) else {
        return drop(req);
    };
    let failed = req.io.as_ref().is_none_or(|io| io.has_error() || io.is_aborted());
    if !failed && let Some(io) = req.io.as_ref() {
        let read = matches!(req.work, Work::Transfer(t) if t.kind == Kind::Read);
        lun.lun().stats.moved(read, io.moved_bytes());
    }
    if failed {
        // CTL or the frontend set the status (a transport error, short
        // data, an abort): the I/O ends with it.
        return finish(&lun, req, Finish::AsIs);
    }
    match req.work {
        Work::Transfer(mut t) if t.kind == Kind::Read => {
            let whole = req.result.is_ok() && req.result.resid == 0;
            if !whole {
                // A short read or an error: the data moved, now the status.
                return finish(&lun, req, Finish::Device);
            }
            t.done = t.done.saturating_add(t.chunk);
            match sbc::next_chunk(t.blocks, t.done, t.chunk) {
                None => finish(&lun, req, Finish::SUCCESS),
                Some((_, chunk)) => {
                    t.chunk = chunk;
                    req.work = Work::Transfer(t);
                    req.command.cdb = t.command();
                    req.command.data = Data::In(t.bytes(chunk));
                    issue(&lun, req);
                }
            }
        }
        // Data in from the initiator: now to the device.
        _ => issue(&lun, req),
    }
}

/// How a request ends.
enum Finish {
    /// With this status, counted as this failure (`None`: a success).
    Reply(Reply<'static>, Option<Failure>),
    /// With the status of the device's last command.
    Device,
    /// With CHECK CONDITION and the sense REQUEST SENSE returned.
    Sensed,
    /// With the status CTL set.
    AsIs,
}

impl Finish {
    /// With GOOD.
    const SUCCESS: Finish = Finish::Reply(Reply::Success, None);
}

/// Counts how `req` ends (`how`) in the LUN's statistics.
fn count(stats: &LunStats, req: &Request, how: &Finish) {
    stats.ended(match how {
        Finish::Reply(_, failure) => *failure,
        Finish::Device => reply::failure(&req.result),
        Finish::Sensed => Some(Failure::CheckCondition),
        // Task management, or a data move that failed (CTL's status).
        Finish::AsIs if req.is_aborted() => Some(Failure::Aborted),
        Finish::AsIs => Some(Failure::Transport),
    });
}

/// Completes the request's I/O and gives the request and its buffer back
/// to the periph's pools.
fn finish(lun: &LunRef, req: KBox<Request>, how: Finish) {
    count(&lun.lun().stats, &req, &how);
    let result = req.result.clone();
    // REQUEST SENSE's data, out of the buffer before it goes back.
    let mut sense = [0u8; SENSE_LEN as usize];
    let mut sensed = 0;
    if let (Finish::Sensed, Some(buf)) = (&how, req.buf.as_ref())
        && result.is_ok()
    {
        sensed = usize::from(SENSE_LEN).saturating_sub(result.resid as usize);
        for (d, s) in sense.iter_mut().zip(buf.as_slice().iter().take(sensed)) {
            *d = *s;
        }
    }
    let start_stop = match (req.work, req.io.as_ref()) {
        (Work::Forward, Some(io)) if result.is_ok() => StartStop::parse(io.cdb()),
        _ => None,
    };
    let Some(periph) = lun.lun().device().periph() else {
        return orphaned(lun, req);
    };
    let Some(io) = pio::release(periph, req) else {
        return;
    };
    if let Some(ss) = start_stop {
        for event in media_events(ss).into_iter().flatten() {
            lun.media_event(event);
        }
    }
    match how {
        Finish::Reply(reply, _) => io.complete(reply),
        Finish::AsIs => io.complete_as_is(),
        Finish::Device => io.complete(reply::of(&result)),
        Finish::Sensed => io.complete(Reply::Status {
            status: reply::CHECK_CONDITION,
            sense: sense.get(..sensed).unwrap_or(&[]),
        }),
    }
    // The I/O is done and its request back: the device may go now.
    drop(lun.lun().device().leave());
}

/// What CTL must be told after a successful START STOP UNIT, in order (as
/// CTL's ramdisk backend does it); nothing for a power condition change.
fn media_events(ss: StartStop) -> [Option<MediaEvent>; 2] {
    match ss {
        StartStop {
            power_condition: 1.., ..
        } => [None, None],
        StartStop {
            start: true,
            load_eject,
            ..
        } => [load_eject.then_some(MediaEvent::Loaded), Some(MediaEvent::Started)],
        StartStop {
            start: false,
            load_eject,
            ..
        } => [Some(MediaEvent::Stopped), load_eject.then_some(MediaEvent::Ejected)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_stop_tells_ctl_what_changed_in_ramdisk_order() {
        let ss = |how| StartStop::parse(&[0x1b, 0, 0, 0, how, 0]).unwrap();
        use MediaEvent::*;
        assert_eq!(media_events(ss(0x01)), [None, Some(Started)]);
        assert_eq!(media_events(ss(0x03)), [Some(Loaded), Some(Started)]);
        assert_eq!(media_events(ss(0x00)), [Some(Stopped), None]);
        assert_eq!(media_events(ss(0x02)), [Some(Stopped), Some(Ejected)]);
        assert_eq!(media_events(ss(0x31)), [None, None]);
    }

    #[test]
    fn limits_follow_maxio_the_block_limits_page_and_the_buffers() {
        let l = IoLimits::new(128 * 1024, 512, None, false);
        assert_eq!((l.chunk_blocks, l.unmap, l.write_same_blocks), (256, None, u32::MAX));
        let page = BlockLimits {
            max_transfer: 64,
            max_unmap_lba: 1000,
            max_unmap_descriptors: 4,
            max_write_same: 2048,
            ..BlockLimits::default()
        };
        let l = IoLimits::new(1 << 20, 4096, Some(page), true);
        assert_eq!(l.chunk_blocks, 64, "the page's MAXIMUM TRANSFER LENGTH");
        assert_eq!(
            l.unmap,
            Some(UnmapLimits {
                max_lbas: 1000,
                max_descriptors: 4
            })
        );
        assert_eq!(l.write_same_blocks, 2048);
        assert_eq!(l.compare_and_write_blocks, 128, "both halves within 1 MiB");
        let caw = |max_io, bs, max| {
            let page = BlockLimits {
                max_compare_and_write: max,
                ..BlockLimits::default()
            };
            IoLimits::new(max_io, bs, Some(page), false).compare_and_write_blocks
        };
        assert_eq!(caw(1 << 20, 512, 255), 255, "the device's limit");
        assert_eq!(caw(64 * 1024, 512, 255), 64, "both halves within maxio");
        assert_eq!(caw(8 << 20, 4096, 0), 128, "no device limit: the buffer's");
        assert_eq!(
            IoLimits::new(8 << 20, 512, None, false).chunk_blocks,
            2048,
            "at most a 1 MiB buffer"
        );
        assert_eq!(IoLimits::new(0, 4096, None, false).chunk_blocks, 1, "at least a block");
    }
}
