//! An iSCSI portal for the simulated machine: real iSCSI initiators
//! (libiscsi's `iscsi-inq`, `iscsi-ls`, `iscsi-test-cu`, ...) reach the
//! LUNs of the simulated CTL over TCP, as they reach a FreeBSD target
//! through ctld(8) (login, discovery) and cfiscsi
//! (sys/cam/ctl/ctl_frontend_iscsi.c, the full feature phase).
//!
//! One target, [`TARGET_NAME`], in portal group 1; its iSCSI LUN N is CTL
//! LUN N (a ctld target whose `lun N` lines map N to CTL LUN N).  Each
//! connection is a session (MaxConnections=1, ErrorRecoveryLevel=0) with a
//! receive thread and a send thread.  A normal session registers its
//! initiator (`name,i,0xISID`) with CTL (ctl_add_initiator) and sends its
//! commands through the simulated CTL port ([`crate::ctl::frontend`]),
//! with the Initiator Task Tag as the tag; when it ends, an I_T NEXUS
//! RESET aborts what it left and it waits for CTL to complete it.  A new
//! session of the same initiator id ends the old one (session
//! reinstatement, as cfiscsi_ioctl_handoff does).
//!
//! Followed: RFC 7143; `sys/cam/ctl/ctl_frontend_iscsi.c` of
//! bsdjhb/freebsd (CmdSN window and StatSN rules of
//! cfiscsi_pdu_update_cmdsn and cfiscsi_pdu_prepare, Data-In status and
//! residuals of cfiscsi_datamove_in and cfiscsi_scsi_command_done, task
//! management and logout handling), `sys/cam/ctl/ctl.c` (the task
//! management functions and ctl_add_initiator), and for the Login Phase
//! RFC 7143's negotiation rules, compared with `usr.sbin/ctld/login.c`'s
//! answers (MaxConnections=1, InitialR2T=Yes, ImmediateData as offered).
//!
//! Where it differs from FreeBSD:
//! - a write's data (immediate, unsolicited and R2T-solicited Data-Out) is
//!   collected before the command goes to CTL, where cfiscsi queues the
//!   command at once and sends R2Ts from its data moves; an R2T asks for
//!   up to MaxBurstLength of the rest of the EDTL, not of a data move, and
//!   a write to a LUN that refuses it still has its data collected first;
//! - InitialR2T is negotiated (the target says No; ctld says Yes), so that
//!   unsolicited Data-Out is served;
//! - an opcode it does not take gets a Reject (Command not supported)
//!   where cfiscsi drops the connection; bidirectional commands and
//!   extended CDBs are rejected too, and SCSI commands on a discovery
//!   session are rejected as protocol errors;
//! - task management: CLEAR ACA, TASK REASSIGN, the QUERY functions and
//!   I_T NEXUS RESET are answered "not supported"; TARGET COLD RESET ends
//!   the session that asked, not every session of the target;
//! - no digests (CRC32C is declined by choosing None, where ctld uses
//!   CRC32C when the initiator prefers it), no CHAP, no NOP-In pings of an
//!   idle initiator, and a discovery session's operational keys are
//!   negotiated rather than answered "Irrelevant".

mod login;
mod pdu;
mod session;

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

pub use login::status;
pub use pdu::{Pdu, encode_lun};

/// The one target the portal serves.
pub const TARGET_NAME: &str = "iqn.2026-11.org.freebsd.ctlpass:sim";

/// A connection the portal serves.
struct Conn {
    /// A handle on its socket, to end it.
    stream: TcpStream,
    /// Its initiator id (`name,i,0xISID`) once a normal session is logged
    /// in.
    initiator_id: Option<String>,
    thread: Option<JoinHandle<()>>,
}

/// What the listener and the connections share.
#[derive(Default)]
struct Shared {
    conns: Mutex<Vec<(u64, Conn)>>,
    stopping: AtomicBool,
    /// The last TSIH given.
    tsih: AtomicU16,
}

impl Shared {
    fn conns(&self) -> MutexGuard<'_, Vec<(u64, Conn)>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A listening portal; dropping it closes every connection (their commands
/// complete first) and stops listening.  It must be dropped before the
/// machine shuts down.
pub struct Portal {
    addr: SocketAddr,
    shared: Arc<Shared>,
    listener: Option<JoinHandle<()>>,
}

impl Portal {
    /// Listens on `addr` (port 0: any free port).
    pub fn listen(addr: impl ToSocketAddrs) -> io::Result<Portal> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("ctld".into())
            .spawn(move || accept(listener, s))?;
        Ok(Portal {
            addr,
            shared,
            listener: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The target's URL as libiscsi's tools take it
    /// (`iscsi://HOST:PORT/TARGET`; a LUN number goes after a `/`).
    pub fn url(&self) -> String {
        format!("iscsi://{}/{TARGET_NAME}", self.addr)
    }
}

impl Drop for Portal {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the listener blocked in accept.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.listener.take() {
            let _ = t.join();
        }
        let conns = std::mem::take(&mut *self.shared.conns());
        for (_, c) in &conns {
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
        }
        for (_, mut c) in conns {
            if let Some(t) = c.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// The listener: a thread per connection.
fn accept(listener: TcpListener, shared: Arc<Shared>) {
    let mut next_id = 0u64;
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else {
            continue;
        };
        let Ok(handle) = stream.try_clone() else {
            continue;
        };
        next_id += 1;
        let id = next_id;
        let s = shared.clone();
        let mut conns = shared.conns();
        // Forget the connections that ended.
        conns.retain(|(_, c)| c.thread.as_ref().is_none_or(|t| !t.is_finished()));
        let thread = std::thread::Builder::new()
            .name(format!("cfiscsi{id}"))
            .spawn(move || connection(stream, id, &s));
        let Ok(thread) = thread else {
            continue;
        };
        conns.push((
            id,
            Conn {
                stream: handle,
                initiator_id: None,
                thread: Some(thread),
            },
        ));
    }
}

/// One connection: the Login Phase, then (for a normal session) session
/// reinstatement, the initiator's registration with CTL and the full
/// feature phase.  The socket is shut down at the end (the portal keeps a
/// handle on it).
fn connection(stream: TcpStream, id: u64, shared: &Shared) {
    let Ok(handle) = stream.try_clone() else {
        return;
    };
    serve_connection(stream, id, shared);
    let _ = handle.shutdown(std::net::Shutdown::Both);
}

fn serve_connection(mut stream: TcpStream, id: u64, shared: &Shared) {
    let _ = stream.set_nodelay(true);
    let tsih = match shared.tsih.fetch_add(1, Ordering::Relaxed).wrapping_add(1) {
        0 => shared.tsih.fetch_add(1, Ordering::Relaxed).wrapping_add(1),
        t => t,
    };
    let Ok(established) = login::login(&mut stream, tsih) else {
        return;
    };
    if established.discovery {
        session::serve(stream, established, None);
        return;
    }
    let isid = established.isid;
    let initiator_id = format!(
        "{},i,0x{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        established.initiator_name, isid[0], isid[1], isid[2], isid[3], isid[4], isid[5]
    );
    // Session reinstatement: the older session with this id ends first.
    let older: Vec<JoinHandle<()>> = {
        let mut conns = shared.conns();
        let mut older = Vec::new();
        for (cid, c) in conns.iter_mut() {
            if *cid == id {
                c.initiator_id = Some(initiator_id.clone());
            } else if c.initiator_id.as_deref() == Some(&initiator_id) {
                let _ = c.stream.shutdown(std::net::Shutdown::Both);
                c.initiator_id = None;
                older.extend(c.thread.take());
            }
        }
        older
    };
    for t in older {
        let _ = t.join();
    }
    let Some(initiator) = crate::ctl::add_initiator(&initiator_id) else {
        return;
    };
    session::serve(stream, established, Some(initiator));
}
