//! The passthrough I/O path in the simulated kernel: every command CTL
//! hands the backend reaches the device as the right CDB (FUA, DPO and the
//! range kept, split at the device's maxio) and comes back with the
//! device's own data, status, sense and residual.  A recording wrapper
//! shows what the device received; a scripted one makes it fail.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use simkern::cam::lba_range;
use simkern::cdb::{cdb10, cdb16};
use simkern::ctl::frontend::Response;
use simkern::ctl::{self, Cmd, Reply, Request};
use simkern::devices::{Cdrom, Command, Identity, Outcome, RamDisk, ScsiDevice};
use simkern::{Config, Machine, malloc, sys};

// --- a device that records what it receives and fails when told ---

/// What the device does instead of executing a command.
#[derive(Clone, Debug)]
struct Fail {
    /// Commands whose CDB starts with this operation code...
    opcode: u8,
    /// ...and whose range holds this LBA (decoded from a 10- or 16-byte
    /// CDB), if given.
    lba: Option<u64>,
    /// The status.
    status: u8,
    /// Its sense data.
    sense: Vec<u8>,
    /// Blocks moved before the failure, counted from the command's LBA
    /// (`None`: up to the failing LBA).
    moved: Option<usize>,
}

/// A device wrapper: logs each CDB, and fails the commands a rule matches.
struct Scripted<D> {
    inner: D,
    log: Mutex<Vec<Vec<u8>>>,
    fails: Mutex<Vec<Fail>>,
    block: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<D: ScsiDevice> Scripted<D> {
    fn new(inner: D, block: usize) -> Scripted<D> {
        Scripted {
            inner,
            log: Mutex::default(),
            fails: Mutex::default(),
            block,
        }
    }

    fn fail(&self, f: Fail) {
        lock(&self.fails).push(f);
    }

    /// The CDBs received since the last call, INQUIRY, TEST UNIT READY,
    /// READ CAPACITY and REQUEST SENSE left out.
    fn received(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *lock(&self.log))
            .into_iter()
            .filter(|c| !(matches!(c[0], 0x12 | 0x00 | 0x25 | 0x03) || (c[0] == 0x9e && c[1] == 0x10)))
            .collect()
    }
}

impl<D: ScsiDevice> ScsiDevice for Scripted<D> {
    fn device_type(&self) -> u8 {
        self.inner.device_type()
    }

    fn identity(&self) -> &Identity {
        self.inner.identity()
    }

    fn execute(&self, cmd: Command<'_>) -> Outcome {
        lock(&self.log).push(cmd.cdb.to_vec());
        let hit = lock(&self.fails)
            .iter()
            .find(|f| {
                cmd.cdb.first() == Some(&f.opcode)
                    && f.lba
                        .is_none_or(|lba| lba_range(cmd.cdb).is_some_and(|r| r.contains(&lba)))
            })
            .cloned();
        let Some(f) = hit else { return self.inner.execute(cmd) };
        let start = lba_range(cmd.cdb).map_or(0, |r| r.start);
        let blocks = f.moved.unwrap_or_else(|| f.lba.map_or(0, |l| (l - start) as usize));
        let bytes = (blocks * self.block).min(cmd.data_in.len().max(cmd.data_out.len()));
        // The blocks before the failure are read (or written) for real.
        if bytes > 0 {
            let mut cdb = cmd.cdb.to_vec();
            match cdb.len() {
                10 => cdb[7..9].copy_from_slice(&(blocks as u16).to_be_bytes()),
                _ => cdb[10..14].copy_from_slice(&(blocks as u32).to_be_bytes()),
            }
            let (out, input) = (cmd.data_out, cmd.data_in);
            let part_out = &out[..out.len().min(bytes)];
            let n = input.len().min(bytes);
            self.inner.execute(Command {
                cdb: &cdb,
                data_out: part_out,
                data_in: &mut input[..n],
            });
        }
        Outcome {
            status: f.status,
            sense: f.sense,
            transferred: bytes,
        }
    }
}

/// Fixed-format sense: key, ASC/ASCQ, and INFORMATION if given.
fn sense(key: u8, asc: u8, ascq: u8, info: Option<u32>) -> Vec<u8> {
    let mut s = vec![0u8; 18];
    s[0] = 0x70;
    s[2] = key;
    s[7] = 10;
    s[12] = asc;
    s[13] = ascq;
    if let Some(i) = info {
        s[0] |= 0x80;
        s[3..7].copy_from_slice(&i.to_be_bytes());
    }
    s
}

// --- machine and LUN ---

fn identity(serial: &str) -> Identity {
    Identity {
        vendor: "SEAGATE".into(),
        product: "ST4000NM0023".into(),
        revision: "0004".into(),
        serial: serial.into(),
        naa: Some(0x5000_c500_a1b2_c3d4),
        eui64: None,
    }
}

/// A machine with `devices` on one bus whose SIM takes `maxio` bytes, the
/// module loaded, and a LUN on the first device.
fn machine(maxio: u32, devices: Vec<Arc<dyn ScsiDevice>>) -> (Machine, u32) {
    let m = Machine::boot(Config::one_bus(maxio, 32, devices));
    m.kldload().unwrap();
    let req = Request::create();
    let r: Reply = ctl::lun_request("passthrough", &req, &[("cam", "0:0:0")]);
    assert_eq!(r.status, sys::CTL_LUN_OK, "{r:?}");
    let lun = r.created.unwrap().3;
    // The power-on unit attention, once.
    assert_eq!(ctl::execute(lun, &Cmd::none(&[0; 6])).sense[12], 0x29);
    (m, lun)
}

fn shut_down(m: Machine, lun: u32) {
    let r = ctl::lun_request("passthrough", &Request::Remove { lun_id: lun }, &[]);
    assert_eq!(r.status, sys::CTL_LUN_OK);
    m.kldunload().unwrap();
    assert_eq!(malloc::leaks(), Vec::<String>::new());
    drop(m);
}

fn disk(blocks: u64) -> Arc<Scripted<RamDisk>> {
    Arc::new(Scripted::new(
        RamDisk::new(identity("Z1Z3ABCD"), blocks, 512).with_unmap(true),
        512,
    ))
}

fn data(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7) ^ seed ^ (i >> 9) as u8)
        .collect()
}

fn ok(r: &Response) {
    assert_eq!((r.status, r.sense.as_slice(), r.residual), (0, &[][..], 0), "{r:?}");
}

// --- tests ---

#[test]
fn reads_and_writes_of_every_size_reach_the_device_with_fua_and_dpo() {
    let d = disk(1 << 20);
    let (m, lun) = machine(1 << 20, vec![d.clone()]);
    let payload = data(1, 8 * 512);
    // WRITE(10) with FUA, WRITE(6), WRITE(12), WRITE(16): each lands.
    ok(&ctl::execute(lun, &Cmd::write(&cdb10(0x2a, 0x08, 100, 8), &payload)));
    ok(&ctl::execute(lun, &Cmd::write(&[0x0a, 0, 0, 200, 8, 0], &payload)));
    ok(&ctl::execute(
        lun,
        &Cmd::write(&[0xaa, 0x10, 0, 0, 1, 44, 0, 0, 0, 8, 0, 0], &payload),
    ));
    ok(&ctl::execute(lun, &Cmd::write(&cdb16(0x8a, 0, 4096, 8), &payload)));
    assert_eq!(
        d.received(),
        [
            cdb10(0x2a, 0x08, 100, 8),
            cdb10(0x2a, 0x00, 200, 8),
            cdb10(0x2a, 0x10, 300, 8),
            cdb10(0x2a, 0x00, 4096, 8)
        ],
        "each becomes WRITE(10), FUA and DPO kept"
    );
    for (cdb, lba) in [
        (cdb10(0x28, 0x18, 100, 8), 100),
        (vec![0x08, 0, 0, 200, 8, 0], 200),
        (vec![0xa8, 0, 0, 0, 1, 44, 0, 0, 0, 8, 0, 0], 300),
        (cdb16(0x88, 0, 4096, 8), 4096),
    ] {
        let r = ctl::execute(lun, &Cmd::read(&cdb, 8 * 512));
        ok(&r);
        assert_eq!(r.data, payload, "READ of LBA {lba}");
    }
    assert_eq!(d.received()[0], cdb10(0x28, 0x18, 100, 8));
    shut_down(m, lun);
}

#[test]
fn a_transfer_larger_than_maxio_is_split_invisibly() {
    let d = disk(4096);
    let (m, lun) = machine(64 * 1024, vec![d.clone()]);
    let payload = data(3, 300 * 512);
    let w = ctl::execute(lun, &Cmd::write(&cdb10(0x2a, 0x08, 10, 300), &payload));
    ok(&w);
    assert_eq!(
        d.received(),
        [
            cdb10(0x2a, 0x08, 10, 128),
            cdb10(0x2a, 0x08, 138, 128),
            cdb10(0x2a, 0x08, 266, 44)
        ],
        "chunks of 64 KiB, FUA on each"
    );
    let r = ctl::execute(lun, &Cmd::read(&cdb16(0x88, 0, 10, 300), 300 * 512));
    ok(&r);
    assert_eq!(r.data, payload);
    assert_eq!(
        d.received(),
        [
            cdb10(0x28, 0, 10, 128),
            cdb10(0x28, 0, 138, 128),
            cdb10(0x28, 0, 266, 44)
        ]
    );
    shut_down(m, lun);
}

#[test]
fn reads_complete_when_the_port_moves_their_data_later_on_its_own_thread() {
    // A frontend whose DATA-IN moves end asynchronously (samethr false), as
    // CTL's CAM target frontend does, instead of at once as cfiscsi's do.
    let d = disk(4096);
    let (m, lun) = machine(64 * 1024, vec![d.clone()]);
    ctl::frontend::set_deferred_data_in(true);
    let payload = data(9, 300 * 512);
    ok(&ctl::execute(lun, &Cmd::write(&cdb10(0x2a, 0, 10, 300), &payload)));
    let cmds = (0..64u32).map(|i| Cmd::read(&cdb10(0x28, 0, 10 + i, 300 - i as u16), (300 - i as usize) * 512));
    for (i, r) in ctl::run(lun, cmds, 16).iter().enumerate() {
        ok(r);
        assert_eq!(r.data, payload[i * 512..], "read {i}");
    }
    shut_down(m, lun);
}

#[test]
fn a_medium_error_in_a_later_chunk_keeps_the_devices_sense_and_the_whole_residual() {
    let d = disk(4096);
    let (m, lun) = machine(64 * 1024, vec![d.clone()]);
    let payload = data(4, 300 * 512);
    ok(&ctl::execute(lun, &Cmd::write(&cdb10(0x2a, 0, 10, 300), &payload)));
    d.received();
    let medium = sense(0x03, 0x11, 0x00, Some(200));
    d.fail(Fail {
        opcode: 0x28,
        lba: Some(200),
        status: 2,
        sense: medium.clone(),
        moved: None,
    });
    let r = ctl::execute(lun, &Cmd::read(&cdb10(0x28, 0, 10, 300), 300 * 512));
    assert_eq!(
        (r.status, r.sense.clone()),
        (2, medium),
        "the device's sense, INFORMATION = the bad LBA"
    );
    // The blocks before LBA 200 arrived; the residual is the rest.
    assert_eq!(r.data.len(), 190 * 512);
    assert_eq!(r.data[..], payload[..190 * 512]);
    assert_eq!(r.residual, 110 * 512);
    assert_eq!(
        d.received(),
        [cdb10(0x28, 0, 10, 128), cdb10(0x28, 0, 138, 128)],
        "no chunk after the failure"
    );
    // The same read sent to the device directly gives the same.
    let mut direct = vec![0u8; 300 * 512];
    let o = d.execute(Command {
        cdb: &cdb10(0x28, 0, 10, 300),
        data_out: &[],
        data_in: &mut direct,
    });
    assert_eq!((o.status, o.transferred), (2, 190 * 512));
    shut_down(m, lun);
}

#[test]
fn device_statuses_without_sense_pass_verbatim() {
    let d = disk(4096);
    let (m, lun) = machine(1 << 20, vec![d.clone()]);
    for status in [0x08, 0x18, 0x28] {
        d.fail(Fail {
            opcode: 0x2a,
            lba: None,
            status,
            sense: Vec::new(),
            moved: Some(0),
        });
        let r = ctl::execute(lun, &Cmd::write(&cdb10(0x2a, 0, 0, 1), &[0; 512]));
        assert_eq!((r.status, r.sense.len()), (status, 0), "{r:?}");
        lock(&d.fails).clear();
    }
    shut_down(m, lun);
}

#[test]
fn a_short_read_reports_the_devices_residual() {
    let d = disk(4096);
    let (m, lun) = machine(1 << 20, vec![d.clone()]);
    ok(&ctl::execute(lun, &Cmd::write(&cdb10(0x2a, 0, 0, 8), &data(5, 4096))));
    d.fail(Fail {
        opcode: 0x28,
        lba: None,
        status: 0,
        sense: Vec::new(),
        moved: Some(3),
    });
    let r = ctl::execute(lun, &Cmd::read(&cdb10(0x28, 0, 0, 8), 8 * 512));
    assert_eq!((r.status, r.residual, r.data.len()), (0, 5 * 512, 3 * 512));
    assert_eq!(r.data, data(5, 4096)[..3 * 512]);
    shut_down(m, lun);
}

#[test]
fn verify_write_and_verify_and_compare_and_write() {
    let d = disk(4096);
    let (m, lun) = machine(1 << 20, vec![d.clone()]);
    let payload = data(6, 4 * 512);
    ok(&ctl::execute(lun, &Cmd::write(&cdb10(0x2e, 0x10, 40, 4), &payload)));
    ok(&ctl::execute(lun, &Cmd::none(&cdb10(0x2f, 0, 40, 4))));
    ok(&ctl::execute(lun, &Cmd::write(&cdb10(0x2f, 0x02, 40, 4), &payload)));
    let mut other = payload.clone();
    other[700] ^= 1;
    let miscompare = ctl::execute(lun, &Cmd::write(&cdb10(0x2f, 0x02, 40, 4), &other));
    assert_eq!(
        (miscompare.status, miscompare.sense[2] & 0x0f, miscompare.sense[12]),
        (2, 0x0e, 0x1d)
    );
    assert_eq!(
        d.received(),
        [
            cdb10(0x2e, 0x10, 40, 4),
            cdb10(0x2f, 0, 40, 4),
            cdb10(0x2f, 0x02, 40, 4),
            cdb10(0x2f, 0x02, 40, 4)
        ],
        "WRITE AND VERIFY and VERIFY reach the device as such"
    );
    // COMPARE AND WRITE: one command on the device, atomic there.
    let new = data(7, 2 * 512);
    let caw = |cmp: &[u8]| {
        let mut c = cdb16(0x89, 0, 40, 0);
        c[13] = 2;
        ctl::execute(lun, &Cmd::write(&c, &[cmp, &new].concat()))
    };
    let bad = caw(&other[..1024]);
    assert_eq!(
        (bad.status, bad.sense[2] & 0x0f, bad.sense[12]),
        (2, 0x0e, 0x1d),
        "the device's MISCOMPARE"
    );
    ok(&caw(&payload[..1024]));
    let back = ctl::execute(lun, &Cmd::read(&cdb10(0x28, 0, 40, 2), 1024));
    assert_eq!(back.data, new);
    let sent = d.received();
    assert_eq!(
        sent.iter().filter(|c| c[0] == 0x89).count(),
        2,
        "one COMPARE AND WRITE per command: {sent:?}"
    );
    assert!(sent.iter().all(|c| c[0] != 0x2a), "no separate write");
    shut_down(m, lun);
}

#[test]
fn synchronize_cache_write_same_unmap_and_get_lba_status() {
    let d = disk(4096);
    let (m, lun) = machine(1 << 20, vec![d.clone()]);
    ok(&ctl::execute(lun, &Cmd::none(&cdb10(0x35, 0x02, 0, 0))));
    ok(&ctl::execute(lun, &Cmd::none(&cdb16(0x91, 0, 8, 16))));
    let block = data(8, 512);
    ok(&ctl::execute(lun, &Cmd::write(&cdb10(0x41, 0, 64, 16), &block)));
    let r = ctl::execute(lun, &Cmd::read(&cdb10(0x28, 0, 64, 16), 16 * 512));
    assert_eq!(r.data, block.repeat(16));
    // UNMAP of two ranges, then GET LBA STATUS shows the first deallocated.
    let mut list = vec![0, 38, 0, 32, 0, 0, 0, 0];
    for (lba, n) in [(64u64, 8u32), (200, 4)] {
        list.extend_from_slice(&lba.to_be_bytes());
        list.extend_from_slice(&n.to_be_bytes());
        list.extend_from_slice(&[0; 4]);
    }
    ok(&ctl::execute(
        lun,
        &Cmd::write(&[0x42, 0, 0, 0, 0, 0, 0, 0, 40, 0], &list),
    ));
    let gls = ctl::execute(lun, &Cmd::read(&cdb16(0x9e, 0x12, 64, 64), 64));
    assert_eq!(gls.status, 0);
    let mut direct = vec![0u8; 64];
    let o = d.execute(Command {
        cdb: &cdb16(0x9e, 0x12, 64, 64),
        data_out: &[],
        data_in: &mut direct,
    });
    assert_eq!(gls.data, direct[..o.transferred], "the device's own LBA status");
    assert_eq!(gls.data[8 + 12] & 0x0f, 1, "deallocated");
    let sent = d.received();
    let ops: Vec<u8> = sent.iter().map(|c| c[0]).collect();
    assert_eq!(ops, [0x35, 0x91, 0x41, 0x28, 0x42, 0x9e, 0x9e], "{sent:?}");
    assert_eq!(
        sent[0],
        cdb10(0x35, 0x02, 0, 0),
        "SYNCHRONIZE CACHE as the initiator sent it"
    );
    assert_eq!(
        sent[4],
        [0x42, 0, 0, 0, 0, 0, 0, 0, 40, 0],
        "one UNMAP with both descriptors"
    );
    shut_down(m, lun);
}

#[test]
fn unmap_on_a_device_that_cannot_is_refused_before_it() {
    let d = Arc::new(Scripted::new(RamDisk::new(identity("NOTHIN"), 4096, 512), 512));
    let (m, lun) = machine(1 << 20, vec![d.clone()]);
    let ws = ctl::execute(lun, &Cmd::write(&cdb10(0x41, 0x08, 0, 8), &[0; 512]));
    assert_eq!(
        (ws.status, ws.sense[2] & 0x0f, ws.sense[12]),
        (2, 0x05, 0x24),
        "WRITE SAME with UNMAP: INVALID FIELD IN CDB"
    );
    let list = [0, 22, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0, 0];
    let un = ctl::execute(lun, &Cmd::write(&[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], &list));
    assert_eq!(
        (un.status, un.sense[2] & 0x0f, un.sense[12]),
        (2, 0x05, 0x20),
        "UNMAP: INVALID COMMAND OPERATION CODE"
    );
    assert!(d.received().is_empty());
    shut_down(m, lun);
}

#[test]
fn a_cd_reads_through_its_lun() {
    let image: Vec<u8> = data(9, 64 * 2048);
    let cd = Arc::new(Cdrom::new(identity("R8RS6GAB"), Some(image.clone())));
    let (m, lun) = machine(128 * 1024, vec![cd]);
    let r = ctl::execute(lun, &Cmd::read(&cdb10(0x28, 0, 2, 64 - 2), 62 * 2048));
    ok(&r);
    assert_eq!(r.data, image[2 * 2048..]);
    shut_down(m, lun);
}

#[test]
fn a_thousand_mixed_commands_at_queue_depth_32_complete_once_each() {
    let d = disk(1 << 16);
    let (m, lun) = machine(64 * 1024, vec![d.clone()]);
    let mut cmds = Vec::new();
    for i in 0..1000u32 {
        let lba = (i * 37) % 60_000;
        let n = 1 + (i % 200) as u16;
        cmds.push(match i % 3 {
            0 => Cmd::write(&cdb10(0x2a, 0, lba, n), &data(i as u8, usize::from(n) * 512)),
            1 => Cmd::read(&cdb10(0x28, 0, lba, n), usize::from(n) * 512),
            _ => Cmd::none(&cdb10(0x35, 0, lba, n)),
        });
    }
    let rs = ctl::run(lun, cmds, 32);
    assert_eq!(rs.len(), 1000);
    assert!(
        rs.iter().all(|r| r.status == 0 && r.residual == 0),
        "{:?}",
        rs.iter().find(|r| r.status != 0)
    );
    shut_down(m, lun);
}
