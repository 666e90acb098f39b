//! The full feature phase of one connection (one session: MaxConnections
//! is 1), as cfiscsi (sys/cam/ctl/ctl_frontend_iscsi.c) serves it: CmdSN
//! window, SCSI commands through the simulated CTL port, Data-Out and
//! R2T, Data-In and SCSI Response, task management, NOP, Text
//! (SendTargets), Logout, and Reject for what it does not take.

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::TARGET_NAME;
use super::login::{self, CMDSN_WINDOW, Established, PORTAL_GROUP_TAG, Params};
use super::pdu::{self, FINAL, Pdu, RESERVED_TAG, ReadError, op};
use crate::ctl::frontend::{self, Cmd, Response, TaskAttr};
use crate::ctl::{self, Tmf};

/// SCSI status TASK ABORTED.
const TASK_ABORTED: u8 = ctl::TASK_ABORTED;

/// Reject reasons (RFC 7143, 11.17.1).
mod reject {
    /// Command not supported.
    pub const COMMAND_NOT_SUPPORTED: u8 = 0x05;
    /// Protocol error (a command on a discovery session).
    pub const PROTOCOL_ERROR: u8 = 0x04;
}

/// Task management functions (RFC 7143, 11.5.1) and responses (11.6.1).
mod tmf {
    pub const ABORT_TASK: u8 = 1;
    pub const ABORT_TASK_SET: u8 = 2;
    pub const CLEAR_TASK_SET: u8 = 4;
    pub const LOGICAL_UNIT_RESET: u8 = 5;
    pub const TARGET_WARM_RESET: u8 = 6;
    pub const TARGET_COLD_RESET: u8 = 7;
    pub const FUNCTION_COMPLETE: u8 = 0;
    pub const LUN_DOES_NOT_EXIST: u8 = 2;
    pub const NOT_SUPPORTED: u8 = 5;
}

/// What the response side of the session keeps (cfiscsi_pdu_prepare's
/// fields), under one lock so that StatSN follows the send order.
struct State {
    /// PDUs for the writer thread; `None` once the session ended.
    out: Option<Sender<Vec<u8>>>,
    /// The StatSN of the next response.
    statsn: u32,
    /// ExpCmdSN.
    cmdsn: u32,
    /// Commands received and not yet answered (cfiscsi's
    /// `cs_outstanding_ctl_pdus`).
    outstanding: u32,
}

/// One logged-in session.
pub(super) struct Session {
    /// CTL's initiator id of the nexus (none for a discovery session).
    initiator: Option<u32>,
    params: Params,
    /// The address the initiator reached (SendTargets' TargetAddress).
    portal: SocketAddr,
    state: Mutex<State>,
    /// Signalled when `outstanding` drops to 0.
    idle: Condvar,
}

/// A write whose data the portal is still collecting.
struct Collect {
    lun: u32,
    lun_field: [u8; 8],
    cmd: Cmd,
    edtl: usize,
    data: Vec<u8>,
    /// The unsolicited data ended (F on the command or a Data-Out, or
    /// InitialR2T=Yes).
    unsolicited_done: bool,
    /// The R2T being answered: (TTT, end offset of its burst).
    r2t: Option<(u32, usize)>,
    /// DataSN expected next in the current sequence.
    datasn: u32,
    /// R2TSN of the next R2T.
    r2tsn: u32,
}

/// Why the session ends.
#[derive(Debug)]
enum End {
    /// The connection closed or failed.
    Closed,
    /// The initiator broke the protocol (why), or asked for it (TARGET
    /// COLD RESET).
    Dropped(String),
    /// Logout: the response is sent.
    LoggedOut,
}

impl Session {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a response, filling StatSN, ExpCmdSN and MaxCmdSN and
    /// advancing StatSN as cfiscsi_pdu_prepare does (not for R2T, a NOP-In
    /// that asks nothing, or a Data-In without status).
    fn send(&self, mut pdu: Pdu) {
        let mut st = self.lock();
        let opcode = pdu.opcode();
        let data_in_without_status = opcode == op::DATA_IN && pdu.flags() & 0x01 == 0;
        let advance =
            !(opcode == op::R2T || (opcode == op::NOP_IN && pdu.itt() == RESERVED_TAG) || data_in_without_status);
        if !data_in_without_status {
            pdu.set_u32(24, st.statsn);
        }
        pdu.set_u32(28, st.cmdsn);
        let room = CMDSN_WINDOW.saturating_sub(st.outstanding);
        pdu.set_u32(32, st.cmdsn.wrapping_sub(1).wrapping_add(room));
        if advance {
            st.statsn = st.statsn.wrapping_add(1);
        }
        if let Some(out) = &st.out {
            // A writer that stopped (the connection failed) drops it.
            let _ = out.send(pdu.to_bytes());
        }
    }

    /// One more command in flight.
    fn hold(&self) {
        self.lock().outstanding += 1;
    }

    /// A command answered (or dropped).
    fn release(&self) {
        let mut st = self.lock();
        st.outstanding -= 1;
        if st.outstanding == 0 {
            self.idle.notify_all();
        }
    }

    /// cfiscsi_pdu_update_cmdsn: whether to handle a PDU.  Immediate ones
    /// and Data-Out carry no CmdSN to check; ExpCmdSN advances past the
    /// expected one; one outside the window is ignored; a gap means lost
    /// PDUs, which ends the session.
    fn update_cmdsn(&self, req: &Pdu) -> Result<bool, End> {
        if req.immediate() || req.opcode() == op::DATA_OUT {
            return Ok(true);
        }
        let cmdsn = req.u32_at(24);
        let mut st = self.lock();
        if cmdsn == st.cmdsn {
            st.cmdsn = cmdsn.wrapping_add(1);
            return Ok(true);
        }
        let last = st.cmdsn.wrapping_sub(1).wrapping_add(CMDSN_WINDOW);
        if pdu::sn_lt(cmdsn, st.cmdsn) || pdu::sn_lt(last, cmdsn) {
            return Ok(false);
        }
        Err(End::Dropped(format!("CmdSN {cmdsn} while {} was expected", st.cmdsn)))
    }
}

/// A response PDU for request `req`: opcode, F bit, its ITT.
fn response_to(req: &Pdu, opcode: u8) -> Pdu {
    let mut p = Pdu::new(opcode);
    p.bhs[1] = FINAL;
    p.set_u32(16, req.itt());
    p
}

/// Sets the residual flags and count (bytes 1 and 44) of a SCSI Response
/// or a Data-In with status.
fn set_residual(p: &mut Pdu, residual: i64) {
    if residual > 0 {
        p.bhs[1] |= 0x02;
    } else if residual < 0 {
        p.bhs[1] |= 0x04;
    }
    p.set_u32(44, u32::try_from(residual.unsigned_abs()).unwrap_or(u32::MAX));
}

/// The writer thread: sends queued PDUs in order until the session drops
/// its end of the queue.
fn writer(stream: TcpStream, queue: Receiver<Vec<u8>>) {
    let mut w = BufWriter::new(&stream);
    while let Ok(bytes) = queue.recv() {
        let mut batch = vec![bytes];
        batch.extend(queue.try_iter());
        if batch
            .iter()
            .try_for_each(|b| w.write_all(b))
            .and_then(|()| w.flush())
            .is_err()
        {
            // The connection failed: the receive side notices.
            let _ = stream.shutdown(std::net::Shutdown::Both);
            break;
        }
    }
}

/// The connection of a logged-in session: serves it until it ends, then
/// terminates its tasks as cfiscsi_session_terminate_tasks does.
pub(super) fn serve(stream: TcpStream, login: Established, initiator: Option<u32>) {
    let portal = match stream.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let (tx, rx) = mpsc::channel();
    let writer = std::thread::Builder::new()
        .name("cfiscsi-tx".into())
        .spawn(move || writer(write_half, rx));
    let Ok(writer) = writer else {
        return;
    };
    let session = Arc::new(Session {
        initiator,
        params: login.params,
        portal,
        state: Mutex::new(State {
            out: Some(tx),
            statsn: login.statsn,
            cmdsn: login.cmdsn,
            outstanding: 0,
        }),
        idle: Condvar::new(),
    });
    let mut conn = Connection {
        session: session.clone(),
        collecting: HashMap::new(),
        next_ttt: 1,
    };
    if let Err(End::Dropped(why)) = conn.run(&stream) {
        // CFISCSI_SESSION_WARN.
        crate::console::print(&format!(
            "WARNING: {} ({}): {why}; dropping connection\n",
            stream
                .peer_addr()
                .map_or_else(|_| "?".to_owned(), |a| a.ip().to_string()),
            login.initiator_name
        ));
    }
    conn.terminate();
    session.lock().out = None;
    let _ = writer.join();
}

/// The receive side of a session (cfiscsi's receive thread).
struct Connection {
    session: Arc<Session>,
    /// Writes whose data is being collected, by ITT.
    collecting: HashMap<u32, Collect>,
    /// The next Target Transfer Tag.
    next_ttt: u32,
}

impl Connection {
    fn run(&mut self, stream: &TcpStream) -> Result<(), End> {
        let mut r = BufReader::new(stream);
        let max = self.session.params.max_recv_data_segment_length;
        loop {
            let req = match Pdu::read(&mut r, max) {
                Ok(p) => p,
                Err(ReadError::Io(_)) => return Err(End::Closed),
                Err(e @ ReadError::TooLong { .. }) => return Err(End::Dropped(e.to_string())),
            };
            if !self.session.update_cmdsn(&req)? {
                continue;
            }
            match req.opcode() {
                op::NOP_OUT => self.nop_out(&req),
                op::SCSI_COMMAND => self.scsi_command(req)?,
                op::DATA_OUT => self.data_out(req)?,
                op::TASK_REQUEST => self.task_request(&req)?,
                op::TEXT_REQUEST => self.text_request(&req),
                op::LOGOUT_REQUEST => {
                    self.logout(&req)?;
                }
                _ => self.reject(&req, reject::COMMAND_NOT_SUPPORTED),
            }
        }
    }

    /// Reject: the PDU's header goes back with the reason.
    fn reject(&self, req: &Pdu, reason: u8) {
        let mut p = Pdu::new(op::REJECT);
        p.bhs[1] = FINAL;
        p.bhs[2] = reason;
        p.set_u32(16, RESERVED_TAG);
        p.data = req.bhs.to_vec();
        self.session.send(p);
    }

    /// NOP-Out: a ping the initiator wants answered gets a NOP-In with its
    /// data; one answering the target's ping (ITT reserved) none.
    fn nop_out(&self, req: &Pdu) {
        if req.itt() == RESERVED_TAG {
            return;
        }
        let mut p = response_to(req, op::NOP_IN);
        p.set_u32(20, RESERVED_TAG);
        p.data = req.data.clone();
        self.session.send(p);
    }

    /// Text Request: SendTargets lists the one target at the address the
    /// initiator came to; other keys are not understood.
    fn text_request(&self, req: &Pdu) {
        let keys = login::parse_keys(&req.data).unwrap_or_default();
        let mut answers = Vec::new();
        for (key, value) in keys {
            if key == "SendTargets" {
                if value == "All" || value == TARGET_NAME || value.is_empty() {
                    answers.push(("TargetName".to_owned(), TARGET_NAME.to_owned()));
                    answers.push((
                        "TargetAddress".to_owned(),
                        format!("{},{PORTAL_GROUP_TAG}", self.session.portal),
                    ));
                }
            } else {
                answers.push((key, "NotUnderstood".to_owned()));
            }
        }
        let mut p = response_to(req, op::TEXT_RESPONSE);
        p.set_u32(20, RESERVED_TAG);
        p.data = login::encode_keys(&answers);
        self.session.send(p);
    }

    /// Logout Request: closing the session or connection is answered and
    /// ends it; recovery is not supported; another reason breaks the
    /// protocol.
    fn logout(&self, req: &Pdu) -> Result<(), End> {
        let response = match req.flags() & 0x7f {
            0 | 1 => 0,
            2 => 2,
            reason => return Err(End::Dropped(format!("logout reason {reason}"))),
        };
        let mut p = response_to(req, op::LOGOUT_RESPONSE);
        p.bhs[2] = response;
        self.session.send(p);
        if response == 0 { Err(End::LoggedOut) } else { Ok(()) }
    }

    /// SCSI Command: a read or a command without data goes to CTL at once;
    /// a write once its data is collected.
    fn scsi_command(&mut self, req: Pdu) -> Result<(), End> {
        let Some(initiator) = self.session.initiator else {
            self.reject(&req, reject::PROTOCOL_ERROR);
            return Ok(());
        };
        let flags = req.flags();
        let (read, write) = (flags & 0x40 != 0, flags & 0x20 != 0);
        let edtl = req.u32_at(20) as usize;
        if (read && write) || req.bhs[4] != 0 {
            // Bidirectional commands and extended CDBs.
            self.reject(&req, reject::COMMAND_NOT_SUPPORTED);
            return Ok(());
        }
        let params = self.session.params;
        if !req.data.is_empty()
            && (!params.immediate_data || !write || req.data.len() > edtl.min(params.first_burst_length))
        {
            return Err(End::Dropped(format!(
                "{} bytes of immediate data (ImmediateData={}, EDTL {edtl})",
                req.data.len(),
                params.immediate_data
            )));
        }
        let task = match flags & 0x07 {
            1 => TaskAttr::Simple,
            2 => TaskAttr::Ordered,
            3 => TaskAttr::HeadOfQueue,
            4 => TaskAttr::Aca,
            _ => TaskAttr::Untagged,
        };
        let cmd = Cmd {
            cdb: req.bhs[32..48].to_vec(),
            data_in_len: if read { edtl } else { 0 },
            task,
            initiator,
            ..Cmd::default()
        };
        let lun_field = req.lun_field();
        let lun = pdu::decode_lun(lun_field);
        self.session.hold();
        if !write || edtl == 0 {
            self.submit(req.itt(), lun, lun_field, cmd, edtl);
            return Ok(());
        }
        let itt = req.itt();
        let collect = Collect {
            lun,
            lun_field,
            cmd,
            edtl,
            data: req.data,
            unsolicited_done: params.initial_r2t || flags & FINAL != 0,
            r2t: None,
            datasn: 0,
            r2tsn: 0,
        };
        self.collected(itt, collect);
        Ok(())
    }

    /// Goes on with a write after data arrived: to CTL when complete, else
    /// an R2T for the next burst once the unsolicited data ended.
    fn collected(&mut self, itt: u32, mut c: Collect) {
        if c.data.len() == c.edtl {
            let cmd = Cmd {
                data_out: std::mem::take(&mut c.data).into(),
                ..c.cmd
            };
            self.submit(itt, c.lun, c.lun_field, cmd, c.edtl);
            return;
        }
        if c.unsolicited_done && c.r2t.is_none() {
            let offset = c.data.len();
            let len = (c.edtl - offset).min(self.session.params.max_burst_length);
            // cfiscsi's TTTs count up, skipping the reserved value.
            let ttt = self.next_ttt;
            self.next_ttt = match ttt.wrapping_add(1) {
                RESERVED_TAG => 0,
                next => next,
            };
            let mut p = Pdu::new(op::R2T);
            p.bhs[1] = FINAL;
            p.bhs[8..16].copy_from_slice(&c.lun_field);
            p.set_u32(16, itt);
            p.set_u32(20, ttt);
            p.set_u32(36, c.r2tsn);
            p.set_u32(40, offset as u32);
            p.set_u32(44, len as u32);
            c.r2tsn += 1;
            c.r2t = Some((ttt, offset + len));
            c.datasn = 0;
            self.session.send(p);
        }
        self.collecting.insert(itt, c);
    }

    /// SCSI Data-Out: unsolicited (TTT reserved) or answering the R2T
    /// whose TTT it carries; in order (DataPDUInOrder, DataSequenceInOrder).
    fn data_out(&mut self, req: Pdu) -> Result<(), End> {
        let itt = req.itt();
        let ttt = req.u32_at(20);
        let bad = |why: &str| End::Dropped(format!("Data-Out ITT {itt:#x} TTT {ttt:#x}: {why}"));
        let Some(mut c) = self.collecting.remove(&itt) else {
            return Err(bad("no such write"));
        };
        let end = match c.r2t {
            None if ttt == RESERVED_TAG && !c.unsolicited_done => c.edtl.min(self.session.params.first_burst_length),
            Some((t, end)) if t == ttt => end,
            _ => return Err(bad("not expected")),
        };
        if req.u32_at(36) != c.datasn {
            return Err(bad(&format!(
                "DataSN {} while {} was expected",
                req.u32_at(36),
                c.datasn
            )));
        }
        if req.u32_at(40) as usize != c.data.len() || c.data.len() + req.data.len() > end {
            return Err(bad(&format!(
                "{} bytes at offset {}, expected up to {} at {}",
                req.data.len(),
                req.u32_at(40),
                end - c.data.len(),
                c.data.len()
            )));
        }
        c.datasn += 1;
        c.data.extend_from_slice(&req.data);
        if req.flags() & FINAL != 0 {
            if c.r2t.is_some() {
                if c.data.len() != end {
                    return Err(bad("the burst ended short"));
                }
                c.r2t = None;
            } else {
                c.unsolicited_done = true;
            }
        }
        self.collected(itt, c);
        Ok(())
    }

    /// Hands a command to CTL through the port; its response goes back
    /// from whichever thread completes it.
    fn submit(&self, itt: u32, lun: u32, lun_field: [u8; 8], cmd: Cmd, edtl: usize) {
        let session = self.session.clone();
        let read = cmd.data_in_len > 0;
        let done = move |r: Response, status_sent: bool| {
            if status_sent {
                session.respond(itt, lun_field, read, edtl, &r);
            }
            session.release();
        };
        frontend::start(lun, &cmd, u64::from(itt), Box::new(done));
    }

    /// Task Management Function Request, as cfiscsi_pdu_handle_task_request
    /// and CTL's ctl_run_task carry it out.
    fn task_request(&mut self, req: &Pdu) -> Result<(), End> {
        let function = req.flags() & 0x7f;
        let lun = pdu::decode_lun(req.lun_field());
        let initiator = self.session.initiator.unwrap_or(0);
        let lun_exists = ctl::luns().contains(&lun);
        let rtt = req.u32_at(20);
        let response = match function {
            _ if self.session.initiator.is_none() => tmf::NOT_SUPPORTED,
            tmf::ABORT_TASK | tmf::ABORT_TASK_SET | tmf::CLEAR_TASK_SET | tmf::LOGICAL_UNIT_RESET if !lun_exists => {
                tmf::LUN_DOES_NOT_EXIST
            }
            tmf::ABORT_TASK => {
                self.abort_collecting(|itt, _| itt == rtt, false);
                ctl::task_management(Tmf::AbortTask {
                    lun,
                    initiator,
                    tag: u64::from(rtt),
                });
                tmf::FUNCTION_COMPLETE
            }
            tmf::ABORT_TASK_SET => {
                self.abort_collecting(|_, c| c.lun == lun, false);
                ctl::task_management(Tmf::AbortTaskSet { lun, initiator });
                tmf::FUNCTION_COMPLETE
            }
            tmf::CLEAR_TASK_SET => {
                self.abort_collecting(|_, c| c.lun == lun, true);
                ctl::task_management(Tmf::ClearTaskSet { lun });
                tmf::FUNCTION_COMPLETE
            }
            tmf::LOGICAL_UNIT_RESET => {
                self.abort_collecting(|_, c| c.lun == lun, true);
                ctl::task_management(Tmf::LunReset { lun, initiator });
                tmf::FUNCTION_COMPLETE
            }
            tmf::TARGET_WARM_RESET | tmf::TARGET_COLD_RESET => {
                self.abort_collecting(|_, _| true, true);
                ctl::task_management(Tmf::TargetReset { initiator });
                tmf::FUNCTION_COMPLETE
            }
            _ => tmf::NOT_SUPPORTED,
        };
        let mut p = response_to(req, op::TASK_RESPONSE);
        p.bhs[2] = response;
        self.session.send(p);
        if function == tmf::TARGET_COLD_RESET && response == tmf::FUNCTION_COMPLETE {
            return Err(End::Dropped("TARGET COLD RESET".into()));
        }
        Ok(())
    }

    /// Ends the writes still collecting data that `hit` selects, as CTL
    /// ends aborted commands: with TASK ABORTED when `with_status`
    /// (`CTL_FLAG_ABORT_STATUS`), else silently.
    fn abort_collecting(&mut self, hit: impl Fn(u32, &Collect) -> bool, with_status: bool) {
        let itts: Vec<u32> = self
            .collecting
            .iter()
            .filter(|(itt, c)| hit(**itt, c))
            .map(|(itt, _)| *itt)
            .collect();
        for itt in itts {
            let Some(c) = self.collecting.remove(&itt) else {
                continue;
            };
            if with_status {
                let r = Response {
                    status: TASK_ABORTED,
                    residual: c.edtl as i64,
                    ..Response::default()
                };
                self.session.respond(itt, c.lun_field, false, c.edtl, &r);
            }
            self.session.release();
        }
    }

    /// cfiscsi_session_terminate_tasks: the writes still collecting are
    /// dropped, an I_T NEXUS RESET aborts the commands in CTL, and the
    /// session waits for them; then the initiator leaves the port.
    fn terminate(&mut self) {
        self.abort_collecting(|_, _| true, false);
        let Some(initiator) = self.session.initiator else {
            return;
        };
        ctl::task_management(Tmf::ITNexusReset { initiator });
        let mut st = self.session.lock();
        while st.outstanding > 0 {
            st = self.session.idle.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        drop(st);
        ctl::remove_initiator(initiator);
    }
}

impl Session {
    /// cfiscsi_datamove_in and cfiscsi_scsi_command_done: the data as
    /// Data-In PDUs of at most the initiator's MaxRecvDataSegmentLength,
    /// the last with the status when it is GOOD without sense, else a
    /// SCSI Response (with the sense data).
    fn respond(&self, itt: u32, lun_field: [u8; 8], read: bool, edtl: usize, r: &Response) {
        let data = if read {
            &r.data[..r.data.len().min(edtl)]
        } else {
            &[][..]
        };
        let chunks: Vec<&[u8]> = data.chunks(self.params.max_send_data_segment_length.max(1)).collect();
        let with_status = r.status == 0 && r.sense.is_empty();
        for (i, chunk) in chunks.iter().enumerate() {
            let mut p = Pdu::new(op::DATA_IN);
            p.bhs[8..16].copy_from_slice(&lun_field);
            p.set_u32(16, itt);
            p.set_u32(20, RESERVED_TAG);
            p.set_u32(36, i as u32);
            p.set_u32(40, (i * self.params.max_send_data_segment_length) as u32);
            p.data = chunk.to_vec();
            if i + 1 == chunks.len() {
                p.bhs[1] = FINAL;
                if with_status {
                    p.bhs[1] |= 0x01;
                    p.bhs[3] = r.status;
                    set_residual(&mut p, r.residual);
                }
            }
            self.send(p);
        }
        if with_status && !chunks.is_empty() {
            return;
        }
        let mut p = Pdu::new(op::SCSI_RESPONSE);
        p.bhs[1] = FINAL;
        p.bhs[3] = r.status;
        p.set_u32(16, itt);
        p.set_u32(36, chunks.len() as u32);
        set_residual(&mut p, r.residual);
        if !r.sense.is_empty() {
            p.data = (r.sense.len() as u16).to_be_bytes().to_vec();
            p.data.extend_from_slice(&r.sense);
        }
        self.send(p);
    }
}
