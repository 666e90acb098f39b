//! How a command's end at the device becomes the status of the CTL I/O: the
//! device's own SCSI status and sense pass through verbatim; CAM's transport
//! errors become what an initiator can act on.  This is the one table of
//! that mapping: [`next`] says whether the command is done, must be sent
//! again or needs its sense fetched; [`of`] gives the reply.

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
const CHECK_CONDITION: u8 = 0x02;

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
