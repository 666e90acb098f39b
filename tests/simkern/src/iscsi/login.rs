//! The Login Phase (RFC 7143, sections 6 and 13), as ctld(8) conducts it
//! for cfiscsi in FreeBSD (usr.sbin/ctld/login.c): the security stage
//! (AuthMethod=None only), the operational parameter negotiation, and the
//! Login Response's status when the login is refused.

use std::io::{Read, Write};

use super::TARGET_NAME;
use super::pdu::{Pdu, op};

/// The data segment length a Login Request may have (MaxRecvDataSegmentLength
/// is not negotiated yet: its default).
const LOGIN_DATA_MAX: usize = 8192;

/// The MaxRecvDataSegmentLength the target declares: the longest data
/// segment it takes in the full feature phase.
pub const MAX_RECV_DATA_SEGMENT_LENGTH: usize = 262_144;

/// The target's MaxBurstLength (the result is the lower of both).
pub const MAX_BURST_LENGTH: usize = 1_048_576;

/// The target's FirstBurstLength (the result is the lower of both).
pub const FIRST_BURST_LENGTH: usize = 65_536;

/// The portal group this portal is in (TargetPortalGroupTag; cfiscsi's
/// port designator says `,t,0x0001`).
pub const PORTAL_GROUP_TAG: u16 = 1;

/// The commands an initiator may have queued (cfiscsi's `maxtags`): the
/// window between ExpCmdSN and MaxCmdSN.
pub const CMDSN_WINDOW: u32 = 256;

/// Login Response status: class (byte 36) and detail (byte 37).
pub mod status {
    /// Success.
    pub const SUCCESS: u16 = 0x0000;
    /// Initiator error (miscellaneous): a malformed request or key.
    pub const INITIATOR_ERROR: u16 = 0x0200;
    /// Authentication failure (no AuthMethod the target takes).
    pub const AUTHENTICATION_FAILURE: u16 = 0x0201;
    /// Not found: no such target name.
    pub const NOT_FOUND: u16 = 0x0203;
    /// Unsupported version.
    pub const UNSUPPORTED_VERSION: u16 = 0x0205;
    /// Missing parameter (InitiatorName, TargetName).
    pub const MISSING_PARAMETER: u16 = 0x0207;
    /// Session does not exist: a login adding a connection to a session
    /// (TSIH not 0), which MaxConnections=1 excludes.
    pub const SESSION_DOES_NOT_EXIST: u16 = 0x020a;
}

/// The session's negotiated parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// The longest data segment the target takes.
    pub max_recv_data_segment_length: usize,
    /// The longest data segment the target may send (the initiator's
    /// MaxRecvDataSegmentLength).
    pub max_send_data_segment_length: usize,
    /// The most data one R2T solicits.
    pub max_burst_length: usize,
    /// The most unsolicited data (immediate and Data-Out) a command has.
    pub first_burst_length: usize,
    /// Data may come in the SCSI Command PDU.
    pub immediate_data: bool,
    /// No unsolicited Data-Out PDUs.
    pub initial_r2t: bool,
}

impl Default for Params {
    /// RFC 7143's defaults.
    fn default() -> Params {
        Params {
            max_recv_data_segment_length: LOGIN_DATA_MAX,
            max_send_data_segment_length: LOGIN_DATA_MAX,
            max_burst_length: 262_144,
            first_burst_length: 65_536,
            immediate_data: true,
            initial_r2t: true,
        }
    }
}

/// A completed login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Established {
    /// InitiatorName.
    pub initiator_name: String,
    /// The initiator's session id part (ISID).
    pub isid: [u8; 6],
    /// SessionType=Discovery.
    pub discovery: bool,
    /// The negotiated parameters.
    pub params: Params,
    /// ExpCmdSN: the CmdSN of the last Login Request (the first command's).
    pub cmdsn: u32,
    /// The StatSN of the next response.
    pub statsn: u32,
}

/// The text keys of a data segment (`key=value`, NUL-terminated), in
/// order; `None` when one has no `=` or is not UTF-8.
pub fn parse_keys(data: &[u8]) -> Option<Vec<(String, String)>> {
    data.split(|&b| b == 0)
        .filter(|k| !k.is_empty())
        .map(|k| {
            let k = std::str::from_utf8(k).ok()?;
            let (key, value) = k.split_once('=')?;
            Some((key.to_owned(), value.to_owned()))
        })
        .collect()
}

/// Text keys as a data segment.
pub fn encode_keys(keys: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in keys {
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// A numerical value in 512..=16777215 (the range of the length keys).
fn length(value: &str) -> Option<usize> {
    value.parse::<usize>().ok().filter(|n| (512..=16_777_215).contains(n))
}

fn yes_no(value: &str) -> Option<bool> {
    match value {
        "Yes" => Some(true),
        "No" => Some(false),
        _ => None,
    }
}

fn answer(yes: bool) -> String {
    if yes { "Yes" } else { "No" }.to_owned()
}

/// What the target has learned and answered so far.
#[derive(Default)]
struct Negotiation {
    initiator_name: Option<String>,
    target_name: Option<String>,
    discovery: bool,
    params: Params,
    /// MaxRecvDataSegmentLength was declared to the initiator.
    declared: bool,
    /// TargetPortalGroupTag was sent.
    tpgt_sent: bool,
}

impl Negotiation {
    /// Answers the keys of one request; `Err` with a Login status.
    fn keys(&mut self, keys: &[(String, String)]) -> Result<Vec<(String, String)>, u16> {
        let mut out = Vec::new();
        let bad = status::INITIATOR_ERROR;
        for (key, value) in keys {
            let reply = match key.as_str() {
                "InitiatorName" => {
                    self.initiator_name = Some(value.clone());
                    None
                }
                "TargetName" => {
                    self.target_name = Some(value.clone());
                    None
                }
                "InitiatorAlias" => None,
                "SessionType" => {
                    self.discovery = match value.as_str() {
                        "Discovery" => true,
                        "Normal" => false,
                        _ => return Err(bad),
                    };
                    None
                }
                "AuthMethod" => {
                    if !value.split(',').any(|v| v == "None") {
                        return Err(status::AUTHENTICATION_FAILURE);
                    }
                    Some("None".to_owned())
                }
                // CRC32C is declined by choosing None when offered, as the
                // portal computes no digests.
                "HeaderDigest" | "DataDigest" => Some(if value.split(',').any(|v| v == "None") {
                    "None".to_owned()
                } else {
                    "Reject".to_owned()
                }),
                "MaxRecvDataSegmentLength" => {
                    self.params.max_send_data_segment_length = length(value).ok_or(bad)?;
                    None
                }
                "MaxBurstLength" => {
                    self.params.max_burst_length = length(value).ok_or(bad)?.min(MAX_BURST_LENGTH);
                    Some(self.params.max_burst_length.to_string())
                }
                "FirstBurstLength" => {
                    self.params.first_burst_length = length(value).ok_or(bad)?.min(FIRST_BURST_LENGTH);
                    Some(self.params.first_burst_length.to_string())
                }
                // AND with the target's Yes.
                "ImmediateData" => {
                    self.params.immediate_data = yes_no(value).ok_or(bad)?;
                    Some(answer(self.params.immediate_data))
                }
                // OR with the target's No.
                "InitialR2T" => {
                    self.params.initial_r2t = yes_no(value).ok_or(bad)?;
                    Some(answer(self.params.initial_r2t))
                }
                // OR with the target's Yes.
                "DataPDUInOrder" | "DataSequenceInOrder" => {
                    yes_no(value).ok_or(bad)?;
                    Some(answer(true))
                }
                // AND with the target's No (RFC 3720's markers).
                "IFMarker" | "OFMarker" => {
                    yes_no(value).ok_or(bad)?;
                    Some(answer(false))
                }
                "MaxConnections" | "MaxOutstandingR2T" => Some(Self::min(value, 1)?),
                "ErrorRecoveryLevel" => Some(Self::min(value, 0)?),
                "DefaultTime2Retain" => Some(Self::min(value, 20)?),
                "DefaultTime2Wait" => {
                    let n: u32 = value.parse().map_err(|_| bad)?;
                    Some(n.max(2).to_string())
                }
                _ => Some("NotUnderstood".to_owned()),
            };
            if let Some(v) = reply {
                out.push((key.clone(), v));
            }
        }
        Ok(out)
    }

    /// The lower of a numerical offer and the target's value.
    fn min(value: &str, ours: u32) -> Result<String, u16> {
        let n: u32 = value.parse().map_err(|_| status::INITIATOR_ERROR)?;
        Ok(n.min(ours).to_string())
    }

    /// Checks the names once the leading request is read.
    fn check_names(&self) -> Result<(), u16> {
        if self.initiator_name.as_deref().is_none_or(str::is_empty) {
            return Err(status::MISSING_PARAMETER);
        }
        if self.discovery {
            return Ok(());
        }
        match self.target_name.as_deref() {
            None => Err(status::MISSING_PARAMETER),
            Some(TARGET_NAME) => Ok(()),
            Some(_) => Err(status::NOT_FOUND),
        }
    }
}

/// Why a login did not complete.
#[derive(Debug, PartialEq, Eq)]
pub enum LoginError {
    /// The connection failed or the initiator broke the protocol (no
    /// response possible).
    Connection,
    /// The login was refused (the Login Response says why).
    Refused,
}

/// Conducts the Login Phase on a new connection: reads Login Requests and
/// answers them until the initiator enters the full feature phase.
pub fn login<C: Read + Write>(conn: &mut C, tsih: u16) -> Result<Established, LoginError> {
    let mut n = Negotiation::default();
    let mut statsn: u32 = 1;
    let mut first = true;
    let mut pending = Vec::new();
    loop {
        let req = Pdu::read(conn, LOGIN_DATA_MAX).map_err(|_| LoginError::Connection)?;
        if req.opcode() != op::LOGIN_REQUEST {
            return Err(LoginError::Connection);
        }
        let flags = req.flags();
        let (transit, cont) = (flags & 0x80 != 0, flags & 0x40 != 0);
        let (csg, nsg) = ((flags >> 2) & 3, flags & 3);
        let cmdsn = req.u32_at(24);
        let mut resp = Pdu::new(op::LOGIN_RESPONSE);
        resp.bhs[8..14].copy_from_slice(&req.bhs[8..14]);
        resp.set_u32(16, req.itt());
        resp.set_u32(24, statsn);
        resp.set_u32(28, cmdsn);
        resp.set_u32(32, cmdsn.wrapping_add(CMDSN_WINDOW - 1));
        statsn = statsn.wrapping_add(1);
        let refuse = |conn: &mut C, mut resp: Pdu, code: u16| {
            resp.bhs[1] = (csg << 2) | nsg;
            resp.bhs[36..38].copy_from_slice(&code.to_be_bytes());
            resp.write(conn).map_err(|_| LoginError::Connection)?;
            Err(LoginError::Refused)
        };
        // Version-min above 0: RFC 7143 is version 0.
        if req.bhs[3] > 0 {
            return refuse(conn, resp, status::UNSUPPORTED_VERSION);
        }
        if first && u16::from_be_bytes([req.bhs[14], req.bhs[15]]) != 0 {
            return refuse(conn, resp, status::SESSION_DOES_NOT_EXIST);
        }
        if csg == 2 || (transit && (nsg == 2 || nsg <= csg)) {
            return refuse(conn, resp, status::INITIATOR_ERROR);
        }
        pending.extend_from_slice(&req.data);
        if cont {
            // More keys follow: an empty response asks for them.
            resp.bhs[1] = csg << 2;
            resp.write(conn).map_err(|_| LoginError::Connection)?;
            continue;
        }
        let Some(keys) = parse_keys(&std::mem::take(&mut pending)) else {
            return refuse(conn, resp, status::INITIATOR_ERROR);
        };
        let mut answers = match n.keys(&keys) {
            Ok(a) => a,
            Err(code) => return refuse(conn, resp, code),
        };
        if first {
            if let Err(code) = n.check_names() {
                return refuse(conn, resp, code);
            }
            first = false;
        }
        if !n.discovery && !n.tpgt_sent {
            answers.push(("TargetPortalGroupTag".into(), PORTAL_GROUP_TAG.to_string()));
            n.tpgt_sent = true;
        }
        if csg == 1 && !n.declared {
            answers.push((
                "MaxRecvDataSegmentLength".into(),
                MAX_RECV_DATA_SEGMENT_LENGTH.to_string(),
            ));
            n.params.max_recv_data_segment_length = MAX_RECV_DATA_SEGMENT_LENGTH;
            n.declared = true;
        }
        let done = transit && nsg == 3;
        resp.bhs[1] = if transit { 0x80 | (csg << 2) | nsg } else { csg << 2 };
        if done {
            resp.bhs[14..16].copy_from_slice(&tsih.to_be_bytes());
        }
        resp.data = encode_keys(&answers);
        resp.write(conn).map_err(|_| LoginError::Connection)?;
        if done {
            let mut isid = [0; 6];
            isid.copy_from_slice(&req.bhs[8..14]);
            let mut params = n.params;
            params.first_burst_length = params.first_burst_length.min(params.max_burst_length);
            return Ok(Established {
                initiator_name: n.initiator_name.unwrap_or_default(),
                isid,
                discovery: n.discovery,
                params,
                cmdsn,
                statsn,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(s: &[(&str, &str)]) -> Vec<(String, String)> {
        s.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn keys_round_trip() {
        let k = keys(&[("InitiatorName", "iqn.x"), ("SessionType", "Normal")]);
        assert_eq!(parse_keys(&encode_keys(&k)), Some(k));
        assert_eq!(parse_keys(b"novalue\0"), None);
    }

    #[test]
    fn operational_keys_are_negotiated() {
        let mut n = Negotiation::default();
        let answers = n
            .keys(&keys(&[
                ("HeaderDigest", "CRC32C,None"),
                ("DataDigest", "CRC32C"),
                ("MaxBurstLength", "16776192"),
                ("FirstBurstLength", "262144"),
                ("InitialR2T", "No"),
                ("MaxOutstandingR2T", "8"),
                ("MaxRecvDataSegmentLength", "65536"),
                ("X-Vendor", "1"),
            ]))
            .unwrap();
        assert_eq!(
            answers,
            keys(&[
                ("HeaderDigest", "None"),
                ("DataDigest", "Reject"),
                ("MaxBurstLength", "1048576"),
                ("FirstBurstLength", "65536"),
                ("InitialR2T", "No"),
                ("MaxOutstandingR2T", "1"),
                ("X-Vendor", "NotUnderstood"),
            ])
        );
        assert_eq!(n.params.max_send_data_segment_length, 65536);
        assert!(!n.params.initial_r2t);
        assert_eq!(n.keys(&keys(&[("MaxBurstLength", "12")])), Err(status::INITIATOR_ERROR));
        assert_eq!(
            n.keys(&keys(&[("AuthMethod", "CHAP")])),
            Err(status::AUTHENTICATION_FAILURE)
        );
    }
}
