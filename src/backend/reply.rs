//! How a command's end at the device becomes the status of the CTL I/O: the
//! device's own SCSI status and sense pass through verbatim; CAM's transport
//! errors become what an initiator can act on.  This is the one table of
//! that mapping: [`next`] says whether the command is done, must be sent
//! again or needs its sense fetched; [`of`] gives the reply; [`failure`]
//! the class a failed command is counted in (`kern.cam.ctl.passthrough.
//! lun.N.errors` and its siblings, see [`Failure`]).

use crate::kern::cam::{CamStatus, ScsiResult};
use crate::kern::ctl::{Reply, SENSE_KEY_HARDWARE_ERROR};

/// NOT READY.
pub(super) const SENSE_KEY_NOT_READY: u8 = 0x02;
/// ABORTED COMMAND: the initiator may retry.
const SENSE_KEY_ABORTED_COMMAND: u8 = 0x0b;

/// What to do after a command ended with `result`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// It ended: reply with [`of`].
    Done,
    /// The SIM bounced it before the device saw it (`CAM_REQUEUE_REQ`):
    /// send it again (also a write: it never ran).
    Resend,
    /// CHECK CONDITION without autosense: ask the device for its sense
    /// data (REQUEST SENSE).
    RequestSense,
}

/// SCSI status CHECK CONDITION.
pub(super) const CHECK_CONDITION: u8 = 0x02;
/// SCSI status CONDITION MET: success, for PRE-FETCH.
const CONDITION_MET: u8 = 0x04;
/// SCSI status BUSY.
const BUSY: u8 = 0x08;
/// SCSI status TASK SET FULL.
const TASK_SET_FULL: u8 = 0x28;
/// SCSI status TASK ABORTED.
const TASK_ABORTED: u8 = 0x40;

/// Why a command CTL handed the LUN failed, as the LUN's statistics count
/// it: every failed command in exactly one class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// `errors.check_condition`: the device ended it with an error status
    /// other than those below, CHECK CONDITION (with its sense data,
    /// fetched with REQUEST SENSE when it came without) or the rarer
    /// RESERVATION CONFLICT and ACA ACTIVE; and the commands ctlpass
    /// answers with CHECK CONDITION in the device's place, never sending
    /// them (ILLEGAL REQUEST for a COMPARE AND WRITE longer than the device
    /// takes, an UNMAP or WRITE SAME with UNMAP on a device that cannot
    /// unmap, an opcode it does not forward).
    CheckCondition,
    /// `errors.transport`: CAM ended it with a transport or SIM error
    /// (selection timeout, bus reset, BDR sent, parity and data run errors,
    /// a SIM or bus busy, an abort the initiator did not ask for, any other
    /// CAM error), or the SIM kept bouncing it (`CAM_REQUEUE_REQ` more
    /// than ctlpass resends: BUSY to the initiator); or the data move
    /// between CTL and the initiator failed (or could not be set up).
    Transport,
    /// `errors.timeout`: the device did not answer in time
    /// (`CAM_CMD_TIMEOUT`).
    Timeout,
    /// `errors.device_lost`: the device was gone (`CAM_DEV_NOT_THERE`, a
    /// periph invalidated with the command waiting, a LUN offline).
    DeviceLost,
    /// `errors.resource`: no memory for the request or its data buffer,
    /// or the SIM short of resources (`CAM_RESRC_UNAVAIL`); the initiator
    /// was told BUSY.
    Resource,
    /// `aborts`: task management ended it (ABORT TASK, ABORT TASK SET,
    /// CLEAR TASK SET, LUN RESET, I_T NEXUS RESET: CTL's status, or none),
    /// or the device answered TASK ABORTED.
    Aborted,
    /// `busy`: the device answered BUSY or TASK SET FULL, passed on.
    Busy,
}

/// The class of a command that ended at the device with `result`, `None`
/// if it succeeded.
pub fn failure(result: &ScsiResult) -> Option<Failure> {
    match result.status {
        CamStatus::REQ_CMP => None,
        CamStatus::SCSI_STATUS_ERROR => match result.scsi_status {
            0 | CONDITION_MET => None,
            BUSY | TASK_SET_FULL => Some(Failure::Busy),
            TASK_ABORTED => Some(Failure::Aborted),
            _ => Some(Failure::CheckCondition),
        },
        CamStatus::CMD_TIMEOUT => Some(Failure::Timeout),
        CamStatus::DEV_NOT_THERE => Some(Failure::DeviceLost),
        CamStatus::RESRC_UNAVAIL => Some(Failure::Resource),
        _ => Some(Failure::Transport),
    }
}

/// What to do after a command ended with `result`.
pub fn next(result: &ScsiResult) -> Next {
    match result.status {
        CamStatus::REQUEUE_REQ => Next::Resend,
        CamStatus::SCSI_STATUS_ERROR if result.scsi_status == CHECK_CONDITION && result.sense().is_empty() => {
            Next::RequestSense
        }
        _ => Next::Done,
    }
}

/// The reply for a command that ended with `result`.
pub fn of(result: &ScsiResult) -> Reply<'_> {
    let sense = |key, asc, ascq| Reply::Sense { key, asc, ascq };
    match result.status {
        CamStatus::REQ_CMP => Reply::Success,
        CamStatus::SCSI_STATUS_ERROR => Reply::Status {
            status: result.scsi_status,
            sense: result.sense(),
        },
        // The SIM or the bus is busy, or short of resources (or bounced the
        // command more often than it is resent): try again.
        CamStatus::REQUEUE_REQ | CamStatus::BUSY | CamStatus::SCSI_BUSY | CamStatus::RESRC_UNAVAIL => Reply::Busy,
        // LOGICAL UNIT NOT READY, CAUSE NOT REPORTABLE: the device vanished.
        CamStatus::DEV_NOT_THERE | CamStatus::SEL_TIMEOUT => sense(SENSE_KEY_NOT_READY, 0x04, 0x00),
        // COMMAND TIMEOUT DURING PROCESSING.
        CamStatus::CMD_TIMEOUT => sense(SENSE_KEY_ABORTED_COMMAND, 0x2e, 0x02),
        // The SIM aborted it (a reset, a recovery): as CTL's ctl_set_aborted.
        CamStatus::REQ_ABORTED => sense(SENSE_KEY_ABORTED_COMMAND, 0x45, 0x00),
        // SCSI PARITY ERROR (a CRC error on the way).
        CamStatus::UNCOR_PARITY => sense(SENSE_KEY_ABORTED_COMMAND, 0x47, 0x00),
        // DATA PHASE ERROR.
        CamStatus::DATA_RUN_ERR => sense(SENSE_KEY_ABORTED_COMMAND, 0x4b, 0x00),
        // INTERNAL TARGET FAILURE.
        _ => sense(SENSE_KEY_HARDWARE_ERROR, 0x44, 0x00),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys;

    fn reply_to(status: CamStatus) -> Reply<'static> {
        let r = std::boxed::Box::leak(std::boxed::Box::new(ScsiResult::new(status, 0, 0, &[])));
        of(r)
    }

    fn sense(key: u8, asc: u8, ascq: u8) -> Reply<'static> {
        Reply::Sense { key, asc, ascq }
    }

    #[test]
    fn what_comes_next() {
        let r = |status, scsi, sense: &[u8]| next(&ScsiResult::new(status, scsi, 0, sense));
        assert_eq!(r(CamStatus::REQ_CMP, 0, &[]), Next::Done);
        assert_eq!(r(CamStatus::REQUEUE_REQ, 0, &[]), Next::Resend);
        assert_eq!(r(CamStatus::SCSI_STATUS_ERROR, 0x02, &[]), Next::RequestSense);
        assert_eq!(r(CamStatus::SCSI_STATUS_ERROR, 0x02, &[0x70, 0, 3]), Next::Done);
        assert_eq!(
            r(CamStatus::SCSI_STATUS_ERROR, 0x08, &[]),
            Next::Done,
            "BUSY has no sense"
        );
    }

    #[test]
    fn every_failure_has_one_class() {
        let class = |status, scsi| failure(&ScsiResult::new(status, scsi, 0, &[]));
        assert_eq!(class(CamStatus::REQ_CMP, 0), None);
        assert_eq!(class(CamStatus::SCSI_STATUS_ERROR, 0x04), None, "CONDITION MET");
        assert_eq!(class(CamStatus::SCSI_STATUS_ERROR, 0x02), Some(Failure::CheckCondition));
        assert_eq!(class(CamStatus::SCSI_STATUS_ERROR, 0x18), Some(Failure::CheckCondition));
        assert_eq!(class(CamStatus::SCSI_STATUS_ERROR, 0x08), Some(Failure::Busy));
        assert_eq!(class(CamStatus::SCSI_STATUS_ERROR, 0x28), Some(Failure::Busy));
        assert_eq!(class(CamStatus::SCSI_STATUS_ERROR, 0x40), Some(Failure::Aborted));
        assert_eq!(class(CamStatus::CMD_TIMEOUT, 0), Some(Failure::Timeout));
        assert_eq!(class(CamStatus::DEV_NOT_THERE, 0), Some(Failure::DeviceLost));
        assert_eq!(class(CamStatus::RESRC_UNAVAIL, 0), Some(Failure::Resource));
        for status in [
            CamStatus::SEL_TIMEOUT,
            CamStatus::REQ_ABORTED,
            CamStatus::UNCOR_PARITY,
            CamStatus::DATA_RUN_ERR,
            CamStatus::REQUEUE_REQ,
            CamStatus::BUSY,
            CamStatus::SCSI_BUSY,
            CamStatus(sys::CAM_SCSI_BUS_RESET),
            CamStatus(sys::CAM_REQ_CMP_ERR),
        ] {
            assert_eq!(class(status, 0), Some(Failure::Transport), "{status}");
        }
    }

    #[test]
    fn success() {
        assert_eq!(reply_to(CamStatus::REQ_CMP), Reply::Success);
    }

    #[test]
    fn device_status_and_sense_pass_verbatim() {
        let s = [0x72, 0x03, 0x11, 0x00, 0, 0, 0, 0];
        let r = ScsiResult::new(CamStatus::SCSI_STATUS_ERROR, 0x02, 0, &s);
        assert_eq!(
            of(&r),
            Reply::Status {
                status: 0x02,
                sense: &s
            }
        );
        for status in [0x08, 0x18, 0x28] {
            let r = ScsiResult::new(CamStatus::SCSI_STATUS_ERROR, status, 0, &[]);
            assert_eq!(of(&r), Reply::Status { status, sense: &[] });
        }
    }

    #[test]
    fn busy_transports_ask_for_a_retry() {
        for status in [
            CamStatus::REQUEUE_REQ,
            CamStatus::BUSY,
            CamStatus::SCSI_BUSY,
            CamStatus::RESRC_UNAVAIL,
        ] {
            assert_eq!(reply_to(status), Reply::Busy, "{status}");
        }
    }

    #[test]
    fn a_vanished_device_is_not_ready() {
        assert_eq!(reply_to(CamStatus::DEV_NOT_THERE), sense(0x02, 0x04, 0x00));
        assert_eq!(reply_to(CamStatus::SEL_TIMEOUT), sense(0x02, 0x04, 0x00));
    }

    #[test]
    fn timeouts_and_aborts_are_aborted_commands() {
        assert_eq!(reply_to(CamStatus::CMD_TIMEOUT), sense(0x0b, 0x2e, 0x02));
        assert_eq!(reply_to(CamStatus::REQ_ABORTED), sense(0x0b, 0x45, 0x00));
    }

    #[test]
    fn transport_corruption_is_an_aborted_command() {
        assert_eq!(reply_to(CamStatus::UNCOR_PARITY), sense(0x0b, 0x47, 0x00));
        assert_eq!(reply_to(CamStatus::DATA_RUN_ERR), sense(0x0b, 0x4b, 0x00));
    }

    #[test]
    fn anything_else_is_an_internal_target_failure() {
        for status in [
            sys::CAM_REQ_CMP_ERR,
            sys::CAM_REQ_INVALID,
            sys::CAM_PROVIDE_FAIL,
            sys::CAM_REQ_INPROG,
        ] {
            assert_eq!(reply_to(CamStatus(status)), sense(0x04, 0x44, 0x00));
        }
    }
}
