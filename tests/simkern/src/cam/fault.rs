//! Faults the simulated SIM injects into a device's commands: what a fault
//! matches ([`Match`]), how often it fires ([`Count`]) and what it does
//! ([`Effect`]).
//!
//! Matching is deterministic: it depends only on the commands a device's
//! SIM starts, in the order it starts them, and on their CDBs.  A
//! pseudo-random match is a function of the CDB bytes and a seed, so a
//! command stream sent directly ([`super::submit_direct`]) and the same
//! stream sent through ctlpass see the same faults.
//!
//! Several faults may match one command: every [`Effect::Delay`] that fires
//! adds its delay, and the first other fault that fires (in the order they
//! were injected) decides the command's fate.  Each fault counts the
//! commands that meet its criteria, whether it fires or not.

use std::ops::Range;
use std::time::Duration;

use crate::devices::{BUSY, CHECK_CONDITION, GOOD, RESERVATION_CONFLICT, TASK_SET_FULL};

/// Which commands a fault applies to; every criterion given must hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Match {
    /// Operation codes (CDB byte 0) the command may have; empty for any.
    pub opcodes: Vec<u8>,
    /// Logical blocks the command must touch (see [`lba_range`]); commands
    /// that address no block (or zero blocks) do not match.
    pub lbas: Option<Range<u64>>,
    /// Pseudo-random selection: `(seed, probability)`.  A command is chosen
    /// when a hash of the seed and its CDB bytes falls below `probability`
    /// (0.0 never, 1.0 always), so the same CDB is always chosen, or never.
    pub random: Option<(u64, f64)>,
    /// The fault fires from the `nth` command meeting the criteria above
    /// on (1: the first; 0 counts as 1), for as many commands as its
    /// [`Count`] allows.
    pub nth: u64,
}

impl Match {
    /// Every command.
    pub fn any() -> Match {
        Match::default()
    }

    /// Commands with operation code `op`.
    pub fn opcode(op: u8) -> Match {
        Match::any().or_opcode(op)
    }

    /// Commands with one of the operation codes `ops`.
    pub fn opcodes(ops: &[u8]) -> Match {
        Match {
            opcodes: ops.to_vec(),
            ..Match::any()
        }
    }

    /// Also commands with operation code `op`.
    pub fn or_opcode(mut self, op: u8) -> Match {
        self.opcodes.push(op);
        self
    }

    /// Only commands touching a block of `lbas`.
    pub fn lbas(self, lbas: Range<u64>) -> Match {
        Match {
            lbas: Some(lbas),
            ..self
        }
    }

    /// Only commands the seeded hash of their CDB selects with
    /// `probability`.
    pub fn random(self, seed: u64, probability: f64) -> Match {
        Match {
            random: Some((seed, probability)),
            ..self
        }
    }

    /// Fire from the `n`-th matching command on (1-based).
    pub fn nth(self, n: u64) -> Match {
        Match { nth: n, ..self }
    }

    /// Whether a command with this CDB meets the criteria (the `nth`
    /// criterion aside).
    pub fn matches(&self, cdb: &[u8]) -> bool {
        let Some(&op) = cdb.first() else {
            return false;
        };
        if !self.opcodes.is_empty() && !self.opcodes.contains(&op) {
            return false;
        }
        if let Some(want) = &self.lbas {
            match lba_range(cdb) {
                Some(r) if r.start < want.end && want.start < r.end && r.start < r.end => {}
                _ => return false,
            }
        }
        if let Some((seed, p)) = self.random
            && !chosen(seed, p, cdb)
        {
            return false;
        }
        true
    }
}

/// How many times a fault fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Count {
    /// Once, then it is spent.
    Once,
    /// `k` times.
    Times(u64),
    /// Every time it matches, until cleared.
    Always,
}

/// What a fault does to the command it fires on.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// The command is not executed; the SIM reports SCSI status `status`
    /// (`CAM_SCSI_STATUS_ERROR`, or `CAM_REQ_CMP` for GOOD) with `sense` as
    /// autosense data if it is not empty (`CAM_AUTOSNS_VALID`), and nothing
    /// transferred (`resid = dxfer_len`).
    Status {
        /// The SCSI status byte.
        status: u8,
        /// Sense data (any format); empty for none.
        sense: Vec<u8>,
    },
    /// The command is not executed; the SIM reports CHECK CONDITION
    /// without autosense (`CAM_SCSI_STATUS_ERROR`, no
    /// `CAM_AUTOSNS_VALID`), and the device answers the next REQUEST SENSE
    /// it gets with `sense`.
    NoAutosense {
        /// What the next REQUEST SENSE returns.
        sense: Vec<u8>,
    },
    /// The command is not executed; the CCB completes with this CAM status
    /// (`CAM_CMD_TIMEOUT`, `CAM_SEL_TIMEOUT`, `CAM_REQUEUE_REQ`, ...) and
    /// nothing transferred.
    Cam(u32),
    /// The command is executed, but only the first `bytes` bytes of the
    /// data move, and the SIM reports SCSI status `status` with `sense`
    /// (as for [`Effect::Status`]) and the residual.  DATA-IN: the device
    /// fills at most `bytes` bytes and only they reach the CCB's buffer;
    /// `resid = dxfer_len - ` what it filled.  DATA-OUT: the device gets
    /// only the first `bytes` bytes (a WRITE or WRITE AND VERIFY is cut to
    /// the whole blocks among them, so those blocks are written); `resid =
    /// dxfer_len - bytes`.  The device's own status is not reported.
    Short {
        /// Bytes that move.
        bytes: u32,
        /// The SCSI status reported.
        status: u8,
        /// Sense data reported (autosense); empty for none.
        sense: Vec<u8>,
    },
    /// The command completes this much later than the device's latency
    /// says; it combines with the effect of another fault.
    Delay(Duration),
}

impl Effect {
    /// CHECK CONDITION with fixed-format sense data `key`/`asc`/`ascq`.
    pub fn check_condition(key: u8, asc: u8, ascq: u8) -> Effect {
        Effect::Status {
            status: CHECK_CONDITION,
            sense: fixed_sense(key, asc, ascq, None),
        }
    }

    /// BUSY, without sense data.
    pub fn busy() -> Effect {
        Effect::Status {
            status: BUSY,
            sense: Vec::new(),
        }
    }

    /// TASK SET FULL, without sense data.
    pub fn task_set_full() -> Effect {
        Effect::Status {
            status: TASK_SET_FULL,
            sense: Vec::new(),
        }
    }

    /// RESERVATION CONFLICT, without sense data.
    pub fn reservation_conflict() -> Effect {
        Effect::Status {
            status: RESERVATION_CONFLICT,
            sense: Vec::new(),
        }
    }

    /// A transfer cut short after `bytes` bytes, reported as GOOD with the
    /// residual.
    pub fn short(bytes: u32) -> Effect {
        Effect::Short {
            bytes,
            status: GOOD,
            sense: Vec::new(),
        }
    }

    /// A read that fails after `bytes` bytes with MEDIUM ERROR,
    /// UNRECOVERED READ ERROR (03/11/00) at logical block `lba` (in the
    /// sense data's INFORMATION field).
    pub fn medium_error(bytes: u32, lba: u32) -> Effect {
        Effect::Short {
            bytes,
            status: CHECK_CONDITION,
            sense: fixed_sense(0x03, 0x11, 0x00, Some(lba)),
        }
    }
}

/// A fault to inject with [`super::inject`].
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    /// The commands it applies to.
    pub when: Match,
    /// How many times it fires.
    pub count: Count,
    /// What it does.
    pub effect: Effect,
}

impl Fault {
    /// A fault that fires once.
    pub fn new(when: Match, effect: Effect) -> Fault {
        Fault {
            when,
            count: Count::Once,
            effect,
        }
    }

    /// The same fault, firing `k` times.
    pub fn times(self, k: u64) -> Fault {
        Fault {
            count: Count::Times(k),
            ..self
        }
    }

    /// The same fault, firing every time it matches.
    pub fn always(self) -> Fault {
        Fault {
            count: Count::Always,
            ..self
        }
    }
}

/// Fixed-format sense data (response code 0x70, 18 bytes, ADDITIONAL
/// SENSE LENGTH 10) with `key`, `asc`, `ascq` and, if given, the
/// INFORMATION field (VALID set).
pub fn fixed_sense(key: u8, asc: u8, ascq: u8, info: Option<u32>) -> Vec<u8> {
    let mut s = vec![0u8; 18];
    s[0] = 0x70;
    s[2] = key & 0x0f;
    if let Some(info) = info {
        s[0] |= 0x80;
        s[3..7].copy_from_slice(&info.to_be_bytes());
    }
    s[7] = 10;
    s[12] = asc;
    s[13] = ascq;
    s
}

fn be(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0, |acc, &b| (acc << 8) | u64::from(b))
}

/// The logical blocks a command touches, `lba..lba + blocks`, for the
/// commands that address blocks in their CDB: READ, WRITE, WRITE AND
/// VERIFY and VERIFY (6, 10, 12, 16), WRITE SAME (10, 16), SYNCHRONIZE
/// CACHE and PRE-FETCH (10, 16) and COMPARE AND WRITE.  READ(6) and
/// WRITE(6) with a length of 0 move 256 blocks; SYNCHRONIZE CACHE,
/// PRE-FETCH and WRITE SAME with a length of 0 reach the end of the medium
/// (`u64::MAX` here).  `None` for other commands and short CDBs.
pub fn lba_range(cdb: &[u8]) -> Option<Range<u64>> {
    let op = *cdb.first()?;
    let need = match op >> 5 {
        0 => 6,
        1 | 2 => 10,
        5 => 12,
        4 => 16,
        _ => return None,
    };
    if cdb.len() < need {
        return None;
    }
    let (lba, blocks, zero_is_all) = match op {
        // READ(6), WRITE(6)
        0x08 | 0x0a => {
            let n = u64::from(cdb[4]);
            (be(&cdb[1..4]) & 0x1f_ffff, if n == 0 { 256 } else { n }, false)
        }
        // READ, WRITE, WRITE AND VERIFY, VERIFY (10)
        0x28 | 0x2a | 0x2e | 0x2f => (be(&cdb[2..6]), be(&cdb[7..9]), false),
        // SYNCHRONIZE CACHE(10), PRE-FETCH(10), WRITE SAME(10)
        0x35 | 0x34 | 0x41 => (be(&cdb[2..6]), be(&cdb[7..9]), true),
        // READ, WRITE, WRITE AND VERIFY, VERIFY (12)
        0xa8 | 0xaa | 0xae | 0xaf => (be(&cdb[2..6]), be(&cdb[6..10]), false),
        // READ, WRITE, WRITE AND VERIFY, VERIFY (16)
        0x88 | 0x8a | 0x8e | 0x8f => (be(&cdb[2..10]), be(&cdb[10..14]), false),
        // SYNCHRONIZE CACHE(16), PRE-FETCH(16), WRITE SAME(16)
        0x91 | 0x90 | 0x93 => (be(&cdb[2..10]), be(&cdb[10..14]), true),
        // COMPARE AND WRITE: NUMBER OF LOGICAL BLOCKS in byte 13.
        0x89 => (be(&cdb[2..10]), u64::from(cdb[13]), false),
        _ => return None,
    };
    let end = if blocks == 0 && zero_is_all {
        u64::MAX
    } else {
        lba.saturating_add(blocks)
    };
    Some(lba..end)
}

/// A WRITE or WRITE AND VERIFY of `dxfer_len` bytes cut to the whole
/// blocks among its first `keep` bytes: the shortened CDB and the bytes it
/// writes (0: nothing to execute).  `None` for other commands, or when the
/// block size cannot be told from `dxfer_len`.
pub(super) fn shorten_write(cdb: &[u8], dxfer_len: usize, keep: usize) -> Option<(Vec<u8>, usize)> {
    let op = *cdb.first()?;
    if !matches!(op, 0x0a | 0x2a | 0x2e | 0xaa | 0xae | 0x8a | 0x8e) {
        return None;
    }
    let r = lba_range(cdb)?;
    let blocks = usize::try_from(r.end - r.start).ok()?;
    if blocks == 0 || dxfer_len == 0 || !dxfer_len.is_multiple_of(blocks) {
        return None;
    }
    let block = dxfer_len / blocks;
    let kept = (keep / block).min(blocks);
    let mut c = cdb.to_vec();
    match op {
        // kept < blocks <= 256: it fits, and 0 is never sent (it means 256).
        0x0a => c[4] = kept as u8,
        0x2a | 0x2e => c[7..9].copy_from_slice(&(kept as u16).to_be_bytes()),
        0xaa | 0xae => c[6..10].copy_from_slice(&(kept as u32).to_be_bytes()),
        _ => c[10..14].copy_from_slice(&(kept as u32).to_be_bytes()),
    }
    Some((c, kept * block))
}

/// A 64-bit hash of `seed` and `bytes` (FNV-1a, then a final mix), the
/// same on every run and platform.
pub fn cdb_hash(seed: u64, bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Whether the seeded hash of `cdb` selects it with `probability`.
fn chosen(seed: u64, probability: f64, cdb: &[u8]) -> bool {
    let x = (cdb_hash(seed, cdb) >> 11) as f64 / (1u64 << 53) as f64;
    x < probability
}

/// An injected fault and its counters.
pub(super) struct Rule {
    fault: Fault,
    /// Commands that met its criteria so far.
    seen: u64,
    /// Times it fired.
    fired: u64,
}

impl Rule {
    fn spent(&self) -> bool {
        match self.fault.count {
            Count::Once => self.fired >= 1,
            Count::Times(k) => self.fired >= k,
            Count::Always => false,
        }
    }
}

/// What the SIM does with a command it starts.
#[derive(Debug, PartialEq)]
pub(super) enum Action {
    /// Execute it on the device.
    Execute,
    /// [`Effect::Status`].
    Status(u8, Vec<u8>),
    /// [`Effect::NoAutosense`].
    NoAutosense(Vec<u8>),
    /// [`Effect::Cam`].
    Cam(u32),
    /// [`Effect::Short`].
    Short(u32, u8, Vec<u8>),
}

/// A device's injected faults.
#[derive(Default)]
pub(super) struct Faults {
    rules: Vec<Rule>,
}

impl Faults {
    pub(super) fn inject(&mut self, fault: Fault) {
        self.rules.push(Rule {
            fault,
            seen: 0,
            fired: 0,
        });
    }

    pub(super) fn clear(&mut self) {
        self.rules.clear();
    }

    /// Decides the fate of a command with this CDB: the action, the extra
    /// delay, and how many faults fired.
    pub(super) fn decide(&mut self, cdb: &[u8]) -> (Action, Duration, u64) {
        let mut action = Action::Execute;
        let mut delay = Duration::ZERO;
        let mut fired = 0;
        if self.rules.is_empty() {
            return (action, delay, fired);
        }
        let mut decided = false;
        for rule in &mut self.rules {
            if !rule.fault.when.matches(cdb) {
                continue;
            }
            rule.seen += 1;
            if rule.seen < rule.fault.when.nth.max(1) || rule.spent() {
                continue;
            }
            let fire = match &rule.fault.effect {
                Effect::Delay(d) => {
                    delay += *d;
                    true
                }
                _ if decided => false,
                Effect::Status { status, sense } => {
                    action = Action::Status(*status, sense.clone());
                    true
                }
                Effect::NoAutosense { sense } => {
                    action = Action::NoAutosense(sense.clone());
                    true
                }
                Effect::Cam(s) => {
                    action = Action::Cam(*s);
                    true
                }
                Effect::Short { bytes, status, sense } => {
                    action = Action::Short(*bytes, *status, sense.clone());
                    true
                }
            };
            if fire {
                decided |= !matches!(rule.fault.effect, Effect::Delay(_));
                rule.fired += 1;
                fired += 1;
            }
        }
        self.rules.retain(|r| !r.spent());
        (action, delay, fired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lba_ranges_of_block_commands() {
        let read10 = [0x28, 0, 0, 0, 0, 0x10, 0, 0, 8, 0];
        assert_eq!(lba_range(&read10), Some(16..24));
        let read6_256 = [0x08, 0x01, 0x00, 0x02, 0, 0];
        assert_eq!(lba_range(&read6_256), Some(0x10002..0x10002 + 256));
        let mut read16 = [0u8; 16];
        read16[0] = 0x88;
        read16[2..10].copy_from_slice(&0x1_0000_0000u64.to_be_bytes());
        read16[10..14].copy_from_slice(&4u32.to_be_bytes());
        assert_eq!(lba_range(&read16), Some(0x1_0000_0000..0x1_0000_0004));
        let read12 = [0xa8, 0, 0, 0, 0, 7, 0, 0, 0, 3, 0, 0];
        assert_eq!(lba_range(&read12), Some(7..10));
        let sync10_all = [0x35, 0, 0, 0, 0, 100, 0, 0, 0, 0];
        assert_eq!(lba_range(&sync10_all), Some(100..u64::MAX));
        let mut caw = [0u8; 16];
        caw[0] = 0x89;
        caw[9] = 5;
        caw[13] = 1;
        assert_eq!(lba_range(&caw), Some(5..6));
        let mut ws16 = [0u8; 16];
        ws16[0] = 0x93;
        ws16[9] = 9;
        ws16[13] = 2;
        assert_eq!(lba_range(&ws16), Some(9..11));
        assert_eq!(lba_range(&[0x12, 0, 0, 0, 36, 0]), None, "INQUIRY addresses no block");
        let write10 = [0x2a, 0, 0, 0, 0, 8, 0, 0, 8, 0];
        assert_eq!(
            shorten_write(&write10, 4096, 1500),
            Some((vec![0x2a, 0, 0, 0, 0, 8, 0, 0, 2, 0], 1024))
        );
        assert_eq!(
            shorten_write(&write10, 4096, 100),
            Some((vec![0x2a, 0, 0, 0, 0, 8, 0, 0, 0, 0], 0))
        );
        assert_eq!(shorten_write(&read10, 4096, 100), None);
        assert_eq!(lba_range(&[0x28, 0, 0]), None, "short CDB");
    }

    #[test]
    fn matching_is_by_opcode_range_and_hash() {
        let read = |lba: u32, n: u16| {
            let mut c = vec![0x28, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            c[2..6].copy_from_slice(&lba.to_be_bytes());
            c[7..9].copy_from_slice(&n.to_be_bytes());
            c
        };
        let m = Match::opcode(0x28).lbas(100..200);
        assert!(m.matches(&read(96, 8)), "overlaps the start");
        assert!(m.matches(&read(199, 1)));
        assert!(!m.matches(&read(200, 8)));
        assert!(!m.matches(&read(92, 8)), "ends at 100");
        assert!(!m.matches(&read(150, 0)), "touches no block");
        let mut write = read(150, 1);
        write[0] = 0x2a;
        assert!(!m.matches(&write));
        let r = Match::any().random(7, 0.5);
        let picked: Vec<bool> = (0..64).map(|i| r.matches(&read(i, 1))).collect();
        let again: Vec<bool> = (0..64).map(|i| r.matches(&read(i, 1))).collect();
        assert_eq!(picked, again, "the same CDBs are chosen every time");
        let n = picked.iter().filter(|&&b| b).count();
        assert!((16..=48).contains(&n), "about half chosen: {n}");
        assert!(!Match::any().random(7, 0.0).matches(&read(1, 1)));
        assert!(Match::any().random(7, 1.0).matches(&read(1, 1)));
    }

    #[test]
    fn nth_count_and_precedence() {
        let mut f = Faults::default();
        f.inject(Fault::new(Match::opcode(0x00).nth(2), Effect::busy()).times(2));
        f.inject(Fault::new(Match::opcode(0x00), Effect::Delay(Duration::from_millis(1))).always());
        f.inject(Fault::new(Match::opcode(0x00), Effect::Cam(11)).always());
        let tur = [0u8; 6];
        let d = Duration::from_millis(1);
        assert_eq!(f.decide(&tur), (Action::Cam(11), d, 2), "BUSY waits for the 2nd");
        assert_eq!(f.decide(&tur), (Action::Status(BUSY, Vec::new()), d, 2));
        assert_eq!(f.decide(&tur), (Action::Status(BUSY, Vec::new()), d, 2));
        assert_eq!(f.decide(&tur), (Action::Cam(11), d, 2), "BUSY is spent");
        assert_eq!(f.decide(&[0x12, 0, 0, 0, 36, 0]), (Action::Execute, Duration::ZERO, 0));
        f.clear();
        assert_eq!(f.decide(&tur), (Action::Execute, Duration::ZERO, 0));
    }
}
