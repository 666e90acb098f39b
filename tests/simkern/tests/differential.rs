//! Differential tests: the same command stream sent directly to a device
//! and through a ctlpass LUN (CTL's iSCSI port, the backend, CAM) to an
//! identical one gives byte-identical data, status, sense and residual, for
//! emulated disks and CDs with injected failures, and for the disk and CD of
//! a real tgtd.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use simkern::cam::lba_range;
use simkern::ctl::frontend::Response;
use simkern::ctl::{self, Cmd, Request};
use simkern::devices::{Cdrom, Command, Identity, Outcome, RamDisk, ScsiDevice};
use simkern::remote::IscsiDevice;
use simkern::{Config, Machine, malloc, sys};

/// A failure a device applies to the commands of a kind (READ, WRITE,
/// VERIFY: any CDB length, as ctlpass may send another length than the
/// initiator) touching an LBA: a status with sense, after moving the blocks
/// before that LBA.
#[derive(Clone)]
struct Fault {
    /// The 10-byte operation code of the kind.
    opcode: u8,
    lba: u64,
    status: u8,
    sense: Vec<u8>,
}

/// A device that fails as its faults say.
struct Faulty<D> {
    inner: D,
    faults: Mutex<Vec<Fault>>,
    block: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<D: ScsiDevice> ScsiDevice for Faulty<D> {
    fn device_type(&self) -> u8 {
        self.inner.device_type()
    }

    fn identity(&self) -> &Identity {
        self.inner.identity()
    }

    fn execute(&self, cmd: Command<'_>) -> Outcome {
        let r = lba_range(cmd.cdb);
        let hit = lock(&self.faults)
            .iter()
            .find(|f| kind(cmd.cdb) == Some(f.opcode) && r.as_ref().is_some_and(|r| r.contains(&f.lba)))
            .cloned();
        let (Some(f), Some(start)) = (hit, r.map(|r| r.start)) else {
            return self.inner.execute(cmd);
        };
        let blocks = (f.lba - start) as usize;
        let bytes = (blocks * self.block).min(cmd.data_in.len().max(cmd.data_out.len()));
        if blocks > 0 {
            let mut cdb = cmd.cdb.to_vec();
            match cdb.len() {
                10 => cdb[7..9].copy_from_slice(&(blocks as u16).to_be_bytes()),
                _ => cdb[10..14].copy_from_slice(&(blocks as u32).to_be_bytes()),
            }
            let out = &cmd.data_out[..cmd.data_out.len().min(bytes)];
            let n = cmd.data_in.len().min(bytes);
            self.inner.execute(Command {
                cdb: &cdb,
                data_out: out,
                data_in: &mut cmd.data_in[..n],
            });
        }
        Outcome {
            status: f.status,
            sense: f.sense,
            transferred: bytes,
        }
    }
}

/// The 10-byte operation code of a READ, WRITE or VERIFY of any length.
fn kind(cdb: &[u8]) -> Option<u8> {
    match cdb.first()? {
        op @ (0x28 | 0x2a | 0x2f) => Some(*op),
        0x88 => Some(0x28),
        0x8a => Some(0x2a),
        0x8f => Some(0x2f),
        _ => None,
    }
}

/// What the initiator sees of a command sent to `device` directly.
fn direct(device: &dyn ScsiDevice, cmd: &Cmd) -> Response {
    let mut data = vec![0u8; cmd.data_in_len];
    let o = device.execute(Command {
        cdb: &cmd.cdb,
        data_out: &cmd.data_out,
        data_in: &mut data,
    });
    let edtl = cmd.data_in_len.max(cmd.data_out.len());
    data.truncate(if cmd.data_in_len > 0 { o.transferred } else { 0 });
    Response {
        status: o.status,
        sense: o.sense,
        data,
        residual: edtl as i64 - o.transferred as i64,
    }
}

/// Boots a machine with `device` as da0 (or cd0) behind a SIM that takes
/// `maxio` bytes, exports it, and takes the power-on unit attention.
fn lun_on(device: Arc<dyn ScsiDevice>, maxio: u32) -> (Machine, u32) {
    let m = Machine::boot(Config::one_bus(maxio, 32, vec![device]));
    m.kldload().unwrap();
    let req = Request::create();
    let r = ctl::lun_request("passthrough", &req, &[("cam", "0:0:0")]);
    assert_eq!(r.status, sys::CTL_LUN_OK, "{r:?}");
    let lun = r.created.unwrap().3;
    assert_eq!(ctl::execute(lun, &Cmd::none(&[0; 6])).sense[12], 0x29);
    (m, lun)
}

fn shut_down(m: Machine, lun: u32) {
    assert_eq!(
        ctl::lun_request("passthrough", &Request::Remove { lun_id: lun }, &[]).status,
        sys::CTL_LUN_OK
    );
    m.kldunload().unwrap();
    assert_eq!(malloc::leaks(), Vec::<String>::new());
    drop(m);
}

fn rw(op: u8, lba: u64, blocks: u32) -> Vec<u8> {
    if let (Ok(l), Ok(b)) = (u32::try_from(lba), u16::try_from(blocks))
        && op & 0xe0 == 0x20
    {
        let mut c = vec![op, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        c[2..6].copy_from_slice(&l.to_be_bytes());
        c[7..9].copy_from_slice(&b.to_be_bytes());
        return c;
    }
    let mut c = vec![op, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&blocks.to_be_bytes());
    c
}

/// A deterministic stream of reads, writes, verifies and cache flushes
/// over `blocks` blocks of `bs` bytes, transfers up to `max` blocks.
fn stream(n: usize, blocks: u64, bs: usize, max: u32, writes: bool) -> Vec<Cmd> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|i| {
            let len = 1 + (next() % u64::from(max)) as u32;
            let lba = next() % (blocks - u64::from(len));
            // MMC devices have no 16-byte READ: a CD stream (no writes) keeps to 10 bytes.
            let sixteen = writes && i % 5 == 0;
            let (r, w, v) = if sixteen {
                (0x88, 0x8a, 0x8f)
            } else {
                (0x28, 0x2a, 0x2f)
            };
            match (next() % 10, writes) {
                (0..=3, true) => {
                    let data: Vec<u8> = (0..len as usize * bs).map(|j| (j as u64 ^ next()) as u8).collect();
                    Cmd::write(&rw(w, lba, len), &data)
                }
                (4, true) => Cmd::none(&rw(v, lba, len)),
                (5, true) => Cmd::none(&rw(0x35, lba, len)),
                _ => Cmd::read(&rw(r, lba, len), len as usize * bs),
            }
        })
        .collect()
}

fn sense(key: u8, asc: u8, ascq: u8, info: u32) -> Vec<u8> {
    let mut s = vec![0u8; 18];
    s[0] = 0xf0;
    s[2] = key;
    s[3..7].copy_from_slice(&info.to_be_bytes());
    s[7] = 10;
    s[12] = asc;
    s[13] = ascq;
    s
}

/// Runs `cmds` on `reference` directly and through a LUN on `device`,
/// which starts identical; every response must be the same.
fn compare(reference: &dyn ScsiDevice, device: Arc<dyn ScsiDevice>, maxio: u32, cmds: &[Cmd]) {
    let (m, lun) = lun_on(device, maxio);
    for (i, cmd) in cmds.iter().enumerate() {
        let expected = direct(reference, cmd);
        let got = ctl::execute(lun, cmd);
        let what = format!("command {i}: {:02x?}", cmd.cdb);
        assert_eq!(
            (got.status, &got.sense, got.residual),
            (expected.status, &expected.sense, expected.residual),
            "{what}"
        );
        assert_eq!(got.data.len(), expected.data.len(), "{what}: data length");
        assert!(
            got.data == expected.data,
            "{what}: data differ from byte {:?}",
            got.data.iter().zip(&expected.data).position(|(a, b)| a != b)
        );
    }
    shut_down(m, lun);
}

fn identity(serial: &str) -> Identity {
    Identity {
        vendor: "HGST".into(),
        product: "HUH721212AL5200".into(),
        revision: "A3D0".into(),
        serial: serial.into(),
        naa: Some(0x5000_cca2_7b1c_0001),
        eui64: None,
    }
}

fn faulty_disk() -> Faulty<RamDisk> {
    let faults = vec![
        Fault {
            opcode: 0x28,
            lba: 3000,
            status: 2,
            sense: sense(0x03, 0x11, 0x00, 3000),
        },
        Fault {
            opcode: 0x2a,
            lba: 5000,
            status: 2,
            sense: sense(0x03, 0x0c, 0x00, 5000),
        },
        Fault {
            opcode: 0x28,
            lba: 7000,
            status: 0x08,
            sense: Vec::new(),
        },
        Fault {
            opcode: 0x2f,
            lba: 1234,
            status: 2,
            sense: sense(0x0e, 0x1d, 0x00, 1234),
        },
    ];
    Faulty {
        inner: RamDisk::new(identity("8HK2X3ZA"), 8192, 512),
        faults: Mutex::new(faults),
        block: 512,
    }
}

#[test]
fn an_emulated_disk_under_faults_answers_the_same_through_its_lun() {
    let cmds = stream(400, 8192, 512, 300, true);
    let reference = faulty_disk();
    // maxio 64 KiB: transfers over 128 blocks are split on the way.
    compare(&reference, Arc::new(faulty_disk()), 64 * 1024, &cmds);
}

#[test]
fn an_emulated_cd_answers_the_same_through_its_lun() {
    let image: Vec<u8> = (0..512 * 2048).map(|i| (i % 251) as u8).collect();
    let faults = vec![Fault {
        opcode: 0x28,
        lba: 300,
        status: 2,
        sense: sense(0x03, 0x11, 0x05, 300),
    }];
    let cd = || Faulty {
        inner: Cdrom::new(identity("R8RS6GAB"), Some(image.clone())),
        faults: Mutex::new(faults.clone()),
        block: 2048,
    };
    let cmds = stream(200, 512, 2048, 100, false);
    compare(&cd(), Arc::new(cd()), 128 * 1024, &cmds);
}

/// Two fresh tgtd daemons serve identical disks and CDs: one is read
/// directly over iSCSI, the other through a ctlpass LUN.
#[test]
fn tgtd_disk_and_cd_answer_the_same_through_their_luns() {
    let start = || iscsi_lun::Tgt::start().unwrap_or_else(|e| panic!("tgtd is needed (scripts/install-deps.sh): {e}"));
    let (a, b) = (start(), start());
    for (lun, bs, blocks, writes) in [
        (iscsi_lun::Tgt::DISK, 512, 131_072, true),
        (iscsi_lun::Tgt::CD, 2048, 1024, false),
    ] {
        let reference = IscsiDevice::connect(&a.url(lun)).unwrap();
        let device = Arc::new(IscsiDevice::connect(&b.url(lun)).unwrap());
        let cmds = stream(150, blocks, bs, 256, writes);
        compare(&reference, device, 128 * 1024, &cmds);
    }
}
