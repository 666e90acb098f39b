//! Devices that are not emulated: a LUN of a real iSCSI target (tgtd on
//! 127.0.0.1 in the tests) whose every command the simulated SIM forwards
//! through libiscsi, and a gate that holds a device's commands until a test
//! lets them through (to look at ctlpass with commands in flight).

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use iscsi_lun::IscsiLun;

use crate::console;
use crate::devices::{CHECK_CONDITION, Command, GOOD, Identity, Outcome, ScsiDevice};

/// A LUN of an iSCSI target, as a device on a simulated bus.
pub struct IscsiDevice {
    lun: IscsiLun,
    device_type: u8,
    identity: Identity,
}

impl IscsiDevice {
    /// Logs in to the LUN at `url` (`iscsi://host:port/iqn/lun`) and reads
    /// its identity (standard INQUIRY, unit serial number).
    pub fn connect(url: &str) -> Result<IscsiDevice, String> {
        // libiscsi's errors name the URL already.
        let lun = IscsiLun::connect(url).map_err(|e| e.to_string())?;
        let mut inq = [0u8; 96];
        let r = lun
            .execute(&[0x12, 0, 0, 0, 96, 0], &[], &mut inq)
            .map_err(|e| format!("{url}: INQUIRY: {e}"))?;
        if r.status != GOOD || r.transferred < 36 {
            return Err(format!("{url}: INQUIRY failed with status {:#04x}", r.status));
        }
        let text = |b: &[u8]| String::from_utf8_lossy(b).trim_end().to_string();
        let mut page = [0u8; 255];
        let serial = match lun.execute(&[0x12, 1, 0x80, 0, 255, 0], &[], &mut page) {
            Ok(r) if r.status == GOOD && r.transferred >= 4 => {
                let end = (4 + usize::from(page[3])).min(r.transferred);
                text(&page[4..end]).trim_start().to_string()
            }
            _ => String::new(),
        };
        let identity = Identity {
            vendor: text(&inq[8..16]),
            product: text(&inq[16..32]),
            revision: text(&inq[32..36]),
            serial,
            naa: None,
            eui64: None,
        };
        Ok(IscsiDevice {
            lun,
            device_type: inq[0] & 0x1f,
            identity,
        })
    }
}

impl ScsiDevice for IscsiDevice {
    fn device_type(&self) -> u8 {
        self.device_type
    }

    fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Sends the command as it is.  A transport failure (the target went
    /// away) is reported as a device would: CHECK CONDITION, ABORTED
    /// COMMAND, LOGICAL UNIT COMMUNICATION FAILURE (08/00).
    fn execute(&self, cmd: Command<'_>) -> Outcome {
        match self.lun.execute(cmd.cdb, cmd.data_out, cmd.data_in) {
            Ok(r) => Outcome {
                status: r.status,
                sense: r.sense,
                transferred: r.transferred,
            },
            Err(e) => {
                console::print(&format!("iscsi: {e}\n"));
                let mut sense = vec![0u8; 18];
                sense[0] = 0x70;
                sense[2] = 0x0b;
                sense[7] = 10;
                sense[12] = 0x08;
                Outcome {
                    status: CHECK_CONDITION,
                    sense,
                    transferred: 0,
                }
            }
        }
    }
}

/// A device whose commands can be held: while the gate is closed, every
/// command waits in `execute` until it opens.
///
/// The device's SIM thread waits with it: no other command of the device
/// starts or completes meanwhile.
pub struct Gated<D> {
    inner: D,
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    closed: bool,
    waiting: usize,
}

impl<D: ScsiDevice> Gated<D> {
    /// `inner` behind an open gate.
    pub fn new(inner: D) -> Gated<D> {
        Gated {
            inner,
            state: Mutex::default(),
            changed: Condvar::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Holds every command from now on.
    pub fn close(&self) {
        self.state().closed = true;
    }

    /// Lets the held commands, and every later one, through.
    pub fn open(&self) {
        self.state().closed = false;
        self.changed.notify_all();
    }

    /// Waits up to `timeout` until `n` commands are held; says whether they
    /// are.
    pub fn wait_held(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.state();
        while st.waiting < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self
                .changed
                .wait_timeout(st, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }
}

impl<D: ScsiDevice> ScsiDevice for Gated<D> {
    fn device_type(&self) -> u8 {
        self.inner.device_type()
    }

    fn identity(&self) -> &Identity {
        self.inner.identity()
    }

    fn execute(&self, cmd: Command<'_>) -> Outcome {
        {
            let mut st = self.state();
            if st.closed {
                st.waiting += 1;
                self.changed.notify_all();
                while st.closed {
                    st = self.changed.wait(st).unwrap_or_else(PoisonError::into_inner);
                }
                st.waiting -= 1;
            }
        }
        self.inner.execute(cmd)
    }
}
