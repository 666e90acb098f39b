//! CTL's data path in the simulated kernel, proved without ctlpass: CTL's
//! own `ramdisk` backend (the model of ctl_backend_ramdisk.c) and a
//! recording backend registered here with `ctl_backend_register`, behind
//! the simulated iSCSI port.  Each command's bytes, status, sense and
//! residual are checked exactly; every machine ends with no I/O in
//! flight, CTL's and ramdisk's memory given back (but for the parameter
//! list FreeBSD 15 leaks on an UNMAP out of range) and no leak reported.

use std::ffi::{c_char, c_int, c_void};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use simkern::cdb::{cdb10, cdb16};
use simkern::ctl::frontend::{self, PORT_STATUS_OVERRUN, Response};
use simkern::ctl::{self, Cmd, Request, TaskAttr};
use simkern::{Config, Machine, child, malloc, sys};

// --- CDBs ---

fn read10(lba: u32, blocks: u16) -> Vec<u8> {
    cdb10(0x28, 0, lba, blocks)
}

fn write10(lba: u32, blocks: u16) -> Vec<u8> {
    cdb10(0x2A, 0, lba, blocks)
}

fn caw(lba: u64, blocks: u8) -> Vec<u8> {
    let mut c = cdb16(0x89, 0, lba, 0);
    c[13] = blocks;
    c
}

fn get_lba_status(lba: u64, alloc: u32) -> Vec<u8> {
    cdb16(0x9E, 0x12, lba, alloc)
}

fn unmap_cdb(byte1: u8, len: u16) -> Vec<u8> {
    let mut c = vec![0x42, byte1, 0, 0, 0, 0, 0, 0, 0, 0];
    c[7..9].copy_from_slice(&len.to_be_bytes());
    c
}

/// An UNMAP parameter list of (lba, blocks) descriptors.
fn unmap_list(descriptors: &[(u64, u32)]) -> Vec<u8> {
    let desc_len = (descriptors.len() * 16) as u16;
    let mut list = Vec::new();
    list.extend_from_slice(&(desc_len + 6).to_be_bytes());
    list.extend_from_slice(&desc_len.to_be_bytes());
    list.extend_from_slice(&[0; 4]);
    for &(lba, blocks) in descriptors {
        list.extend_from_slice(&lba.to_be_bytes());
        list.extend_from_slice(&blocks.to_be_bytes());
        list.extend_from_slice(&[0; 4]);
    }
    list
}

/// Bytes that differ from block to block and command to command.
fn pattern(seed: u32, len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(31) ^ seed.wrapping_mul(0x9E37_79B9) ^ (i >> 9)) as u8)
        .collect()
}

/// Fixed-format sense with a key, an ASC/ASCQ, INFORMATION (VALID) and
/// sense-key-specific bytes, as CTL builds it.
fn sense(key: u8, asc: u8, ascq: u8, info: Option<u32>, sks: Option<[u8; 3]>) -> Vec<u8> {
    let mut s = vec![0u8; 18];
    s[0] = 0x70;
    s[2] = key;
    s[7] = 10;
    s[12] = asc;
    s[13] = ascq;
    if let Some(info) = info {
        s[0] |= 0x80;
        s[3..7].copy_from_slice(&info.to_be_bytes());
    }
    if let Some(sks) = sks {
        s[15..18].copy_from_slice(&sks);
    }
    s
}

fn good(data: Vec<u8>, residual: i64) -> Response {
    Response {
        status: 0,
        sense: Vec::new(),
        data,
        residual,
    }
}

fn check(sense: Vec<u8>, data: Vec<u8>, residual: i64) -> Response {
    Response {
        status: 2,
        sense,
        data,
        residual,
    }
}

// --- machines and LUNs ---

fn boot() -> Machine {
    Machine::boot(Config::standard())
}

fn in_use(name: &str) -> u64 {
    malloc::stats(name).map_or(0, |s| s.in_use)
}

/// Ends a machine: nothing in flight, no LUN left, CTL's and ramdisk's
/// memory back but `leaked_ctlmem` buffers, no leak report.
fn finish(m: Machine, leaked_ctlmem: u64) {
    assert_eq!(ctl::luns(), Vec::<u32>::new(), "every LUN removed");
    assert_eq!(ctl::outstanding(), 0, "no I/O in CTL");
    assert_eq!(in_use("ctlio"), 0, "every I/O freed");
    assert_eq!(in_use("ctlmem"), leaked_ctlmem, "CTL's buffers");
    assert_eq!(in_use("ctlramdisk"), 0, "ramdisk's memory");
    assert_eq!(malloc::leaks(), Vec::<String>::new());
    drop(m);
}

/// A ramdisk LUN of `size` bytes whose power-on unit attention is
/// consumed.
fn ramdisk(size: u64, options: &[(&str, &str)]) -> u32 {
    let request = Request::Create {
        device_type: 0,
        size,
        blocksize: 0,
        lun_id: None,
        serial: None,
        device_id: None,
    };
    let reply = ctl::lun_request("ramdisk", &request, options);
    assert_eq!(reply.status, sys::CTL_LUN_OK, "{}", reply.error);
    let lun = reply.created.expect("created").3;
    let ua = ctl::execute(lun, &Cmd::none(&[0; 6]));
    assert_eq!(&ua.sense[12..14], &[0x29, 0x01], "power on");
    lun
}

fn remove_ramdisk(lun: u32) {
    let reply = ctl::lun_request("ramdisk", &Request::Remove { lun_id: lun }, &[]);
    assert_eq!(reply.status, sys::CTL_LUN_OK, "{}", reply.error);
}

fn exec(lun: u32, cmd: Cmd) -> Response {
    ctl::execute(lun, &cmd)
}

fn read(lun: u32, lba: u32, blocks: u16) -> Vec<u8> {
    let r = exec(lun, Cmd::read(&read10(lba, blocks), usize::from(blocks) * 512));
    assert_eq!((r.status, r.residual), (0, 0), "{r:?}");
    r.data
}

fn write(lun: u32, lba: u32, data: &[u8]) {
    let r = exec(lun, Cmd::write(&write10(lba, (data.len() / 512) as u16), data));
    assert_eq!(r, good(Vec::new(), 0));
}

// --- a recording backend ---

/// What the recording backend saw of one call.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Call {
    entry: &'static str,
    opcode: u8,
    lba: u64,
    len: u32,
    flags: u32,
    io_cont: bool,
    thread: String,
    /// UNMAP: the descriptors CTL passed; WRITE SAME: the block.
    data: Vec<u8>,
}

#[derive(Default)]
struct Recorder {
    calls: Vec<Call>,
    /// data_submits are parked instead of completed.
    hold: bool,
    parked: Vec<usize>,
    /// (port_status, samethr, status, sense) seen by be_move_done.
    moves: Vec<(u32, bool, u32, Vec<u8>)>,
    /// Complete config_writes twice (a backend bug).
    twice: bool,
    /// Move data with an S/G list shorter than kern_data_len (a bug).
    short_sg: bool,
    shut_down: bool,
}

static RECORDER: Mutex<Option<Recorder>> = Mutex::new(None);

fn recorder() -> MutexGuard<'static, Option<Recorder>> {
    RECORDER.lock().unwrap_or_else(|e| e.into_inner())
}

fn with_rec<R>(f: impl FnOnce(&mut Recorder) -> R) -> R {
    f(recorder().get_or_insert_with(Recorder::default))
}

/// Records a call; for UNMAP and WRITE SAME with data, the bytes CTL
/// passed.
///
/// # Safety
///
/// `io` is an I/O CTL handed the recorder.
unsafe fn note(io: *mut sys::ctl_io, entry: &'static str) {
    // SAFETY: the caller's contract.
    let call = unsafe {
        let s = &(*io).scsiio;
        let priv_ = &s.io_hdr.ctl_private[sys::CTL_PRIV_LBA_LEN as usize];
        let a = *(priv_ as *const sys::ctl_priv).cast::<sys::ctl_lba_len_flags>();
        let mut data = Vec::new();
        let (lba, len, flags) = if s.cdb[0] == 0x42 {
            let p = *(priv_ as *const sys::ctl_priv).cast::<sys::ctl_ptr_len_flags>();
            data = std::slice::from_raw_parts(p.ptr, p.len as usize).to_vec();
            (p.ptr as u64 - s.kern_data_ptr as u64, p.len, p.flags)
        } else {
            if s.io_hdr.flags & sys::CTL_FLAG_ALLOCATED != 0 && entry == "config_write" {
                data = std::slice::from_raw_parts(s.kern_data_ptr, s.kern_data_len as usize).to_vec();
            }
            (a.lba, a.len, a.flags)
        };
        Call {
            entry,
            opcode: s.cdb[0],
            lba,
            len,
            flags,
            io_cont: s.io_hdr.flags & sys::CTL_FLAG_IO_CONT != 0,
            thread: std::thread::current().name().unwrap_or("").to_owned(),
            data,
        }
    };
    with_rec(|r| r.calls.push(call));
}

/// The recorder's data_submit: records, then parks the I/O or completes it.
///
/// # Safety
///
/// `io` is an I/O CTL hands the recorder.
unsafe extern "C" fn rec_submit(io: *mut sys::ctl_io) -> c_int {
    // SAFETY: CTL hands us an I/O of our LUN.
    unsafe { note(io, "data_submit") };
    if with_rec(|r| {
        if r.hold {
            r.parked.push(io as usize);
        }
        r.hold
    }) {
        return 0;
    }
    // SAFETY: as above.
    unsafe {
        ctl::ctl_set_success(&raw mut (*io).scsiio);
        ctl::ctl_data_submit_done(io);
    }
    0
}

/// The recorder's config_write: records and completes (twice if told).
///
/// # Safety
///
/// `io` is an I/O CTL hands the recorder.
unsafe extern "C" fn rec_config_write(io: *mut sys::ctl_io) -> c_int {
    // SAFETY: CTL hands us an I/O of our LUN.
    unsafe {
        note(io, "config_write");
        ctl::ctl_set_success(&raw mut (*io).scsiio);
        ctl::ctl_config_write_done(io);
        if with_rec(|r| r.twice) {
            ctl::ctl_config_write_done(io);
        }
    }
    0
}

/// The recorder's config_read: records and leaves CTL's answer.
///
/// # Safety
///
/// `io` is an I/O CTL hands the recorder.
unsafe extern "C" fn rec_config_read(io: *mut sys::ctl_io) -> c_int {
    // SAFETY: CTL hands us an I/O of our LUN (CTL's answer stays).
    unsafe {
        note(io, "config_read");
        ctl::ctl_config_read_done(io);
    }
    0
}

/// The recorder's be_move_done: records what CTL set, then completes.
///
/// # Safety
///
/// `io` is a parked I/O whose data move is done.
unsafe extern "C" fn rec_move_done(io: *mut sys::ctl_io, samethr: bool) -> c_int {
    // SAFETY: CTL calls this once for the data move started below.
    unsafe {
        let s = &(*io).scsiio;
        let sense = std::slice::from_raw_parts((&raw const s.sense_data).cast::<u8>(), usize::from(s.sense_len));
        let seen = (s.io_hdr.port_status, samethr, s.io_hdr.status, sense.to_vec());
        with_rec(|r| r.moves.push(seen));
        ctl::ctl_data_submit_done(io);
    }
    0
}

/// The recorder's lun_shutdown: frees the LUN.
///
/// # Safety
///
/// `be_lun` is the recorder's LUN, which CTL let go of.
unsafe extern "C" fn rec_lun_shutdown(be_lun: *mut sys::ctl_be_lun) {
    // SAFETY: the LUN was boxed by recording_lun and CTL is done with it.
    drop(unsafe { Box::from_raw(be_lun) });
    with_rec(|r| r.shut_down = true);
}

/// The buffer parked reads move (static: it outlives their moves).
static BUFFER: Mutex<[u8; 4096]> = Mutex::new([0x5A; 4096]);

/// Moves 512 bytes of the parked I/Os to the initiator.
fn release_parked() {
    let parked = with_rec(|r| std::mem::take(&mut r.parked));
    let short = with_rec(|r| r.short_sg);
    let buf = BUFFER.lock().unwrap().as_mut_ptr();
    for io in parked {
        let io = io as *mut sys::ctl_io;
        // SAFETY: a parked I/O is ours until be_move_done; the buffer is
        // static.
        unsafe {
            let s = &raw mut (*io).scsiio;
            (*s).be_move_done = Some(rec_move_done);
            if short {
                // One 100-byte S/G entry for a 512-byte move.
                let entry = Box::leak(Box::new(sys::ctl_sg_entry {
                    addr: buf.cast::<c_void>(),
                    len: 100,
                }));
                (*s).kern_data_ptr = (entry as *mut sys::ctl_sg_entry).cast();
                (*s).kern_sg_entries = 1;
            } else {
                (*s).kern_data_ptr = buf;
                (*s).kern_sg_entries = 0;
            }
            (*s).kern_data_len = 512;
            (*s).kern_total_len = 512;
            ctl::ctl_datamove(io);
        }
    }
}

/// Registers the recording backend and gives it a LUN of `blocks`
/// 512-byte blocks; returns the LUN number (its power-on UA consumed)
/// and the driver.
fn recording_lun(blocks: u64) -> (u32, *mut sys::ctl_backend_driver) {
    *recorder() = Some(Recorder::default());
    // SAFETY: plain data.
    let mut be: Box<sys::ctl_backend_driver> = Box::new(unsafe { std::mem::zeroed() });
    for (d, s) in be.name.iter_mut().zip(b"recorder") {
        *d = *s as c_char;
    }
    be.flags = sys::CTL_BE_FLAG_HAS_CONFIG;
    be.data_submit = Some(rec_submit);
    be.config_read = Some(rec_config_read);
    be.config_write = Some(rec_config_write);
    let be = Box::into_raw(be);
    // SAFETY: a driver without init, leaked until deregistered.
    assert_eq!(unsafe { ctl::ctl_backend_register(be) }, 0);
    // SAFETY: plain data.
    let mut lun: Box<sys::ctl_be_lun> = Box::new(unsafe { std::mem::zeroed() });
    lun.lun_type = 0;
    lun.flags = sys::CTL_LUN_FLAG_PRIMARY | sys::CTL_LUN_FLAG_UNMAP;
    lun.maxlba = blocks - 1;
    lun.blocksize = 512;
    lun.serial_num = *b"RECORDER0001    ";
    lun.lun_shutdown = Some(rec_lun_shutdown);
    lun.be = be;
    let lun = Box::into_raw(lun);
    // SAFETY: a filled-in LUN of a registered backend.
    assert_eq!(unsafe { ctl::ctl_add_lun(lun) }, 0);
    // SAFETY: CTL wrote the number back.
    let id = unsafe { (*lun).lun_id };
    assert_eq!(ctl::execute(id, &Cmd::none(&[0; 6])).sense[12], 0x29);
    with_rec(|r| r.calls.clear());
    (id, be)
}

/// Removes the recording LUN and backend.
fn remove_recording(lun: u32, be: *mut sys::ctl_backend_driver) {
    let be_lun = ctl::be_lun_of(lun).expect("the recording LUN");
    // SAFETY: our LUN, idle.
    assert_eq!(unsafe { ctl::ctl_remove_lun(be_lun) }, 0);
    assert!(with_rec(|r| r.shut_down), "lun_shutdown ran");
    // SAFETY: registered above, no LUN left.
    assert_eq!(unsafe { ctl::ctl_backend_deregister(be) }, 0);
    // SAFETY: deregistered.
    drop(unsafe { Box::from_raw(be) });
}

fn calls() -> Vec<Call> {
    with_rec(|r| std::mem::take(&mut r.calls))
}

// --- reads and writes ---

#[test]
fn reads_and_writes_move_exactly_the_blocks_asked_for() {
    let m = boot();
    let lun = ramdisk(4 << 20, &[("capacity", "4M")]);
    let data = pattern(1, 300 * 512);
    frontend::reset_datamove_stats();
    write(lun, 5, &data);
    // 300 blocks from LBA 5 of 4 KiB pages: one move over 39 pages, the
    // first entered 5 blocks in.
    let st = ctl::datamove_stats();
    assert_eq!((st.datamoves, st.bytes, st.segments.len()), (1, 153_600, 39));
    assert_eq!(st.segments[0].1, 3 * 512);
    assert_eq!(st.segments[1..38].iter().map(|s| s.1).sum::<usize>(), 37 * 4096);
    assert_eq!(st.segments[38].1, 512);
    assert_eq!(st.per_lun[&lun].datamoves, 1);
    assert_eq!(read(lun, 5, 300), data);
    // The blocks around are untouched (zero).
    assert_eq!(read(lun, 0, 5), vec![0; 5 * 512]);
    assert_eq!(read(lun, 305, 3), vec![0; 3 * 512]);
    // READ(6)/WRITE(6), (12) and (16) reach the same blocks.
    let r6 = exec(lun, Cmd::read(&[0x08, 0, 0, 7, 2, 0], 1024));
    assert_eq!(r6, good(data[1024..2048].to_vec(), 0));
    let six = pattern(6, 512);
    assert_eq!(
        exec(lun, Cmd::write(&[0x0A, 0, 0x01, 0x00, 1, 0], &six)),
        good(vec![], 0)
    );
    let r12 = exec(lun, Cmd::read(&[0xA8, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0], 512));
    assert_eq!(r12.data, six);
    let twelve = pattern(12, 1024);
    let w12 = [0xAA, 0, 0, 0, 2, 0, 0, 0, 0, 2, 0, 0];
    assert_eq!(exec(lun, Cmd::write(&w12, &twelve)), good(vec![], 0));
    let r16 = exec(lun, Cmd::read(&cdb16(0x88, 0, 512, 2), 1024));
    assert_eq!(r16, good(twelve, 0));
    remove_ramdisk(lun);
    finish(m, 0);
}

#[test]
fn a_large_transfer_moves_in_pieces_of_256_pages() {
    let m = boot();
    let lun = ramdisk(8 << 20, &[("capacity", "8M")]);
    let data = pattern(2, 3 << 20);
    frontend::reset_datamove_stats();
    let w = exec(lun, Cmd::write(&cdb16(0x8A, 0, 1, 6144), &data));
    assert_eq!(w, good(vec![], 0));
    // 1 MiB pieces from LBA 1 (pages of 8 blocks): 2047, 2048, 2048, 1 blocks.
    let st = ctl::datamove_stats();
    assert_eq!((st.datamoves, st.bytes), (4, 3 << 20));
    let r = exec(lun, Cmd::read(&cdb16(0x88, 0, 1, 6144), 3 << 20));
    assert_eq!((r.status, r.residual, r.data == data), (0, 0, true));
    assert_eq!(ctl::datamove_stats().datamoves, 8);
    remove_ramdisk(lun);
    finish(m, 0);
}

#[test]
fn residuals_follow_the_initiators_buffer() {
    let m = boot();
    let lun = ramdisk(1 << 20, &[("capacity", "1M")]);
    write(lun, 0, &pattern(3, 1024));
    // A larger buffer: underflow.
    let r = exec(lun, Cmd::read(&read10(0, 2), 2048));
    assert_eq!(r, good(pattern(3, 1024), 1024));
    // A smaller buffer: the move is refused, CTL reports an internal
    // failure with the port status as retry count; the initiator was told
    // 1024 bytes.
    let r = exec(lun, Cmd::read(&read10(0, 2), 512));
    let failure = sense(0x04, 0x44, 0x00, None, Some([0x80, 0, PORT_STATUS_OVERRUN as u8]));
    assert_eq!(r, check(failure, vec![], -512));
    // Short DATA-OUT: INVALID FIELD IN COMMAND INFORMATION UNIT, which
    // ctl_error.c reports as ABORTED COMMAND.
    let r = exec(lun, Cmd::write(&write10(4, 2), &pattern(4, 512)));
    assert_eq!(r, check(sense(0x0B, 0x0E, 0x03, None, None), vec![], -512));
    assert_eq!(read(lun, 4, 1), pattern(4, 512), "what came was written");
    // More data than the command takes: underflow.
    let r = exec(lun, Cmd::write(&write10(8, 1), &pattern(5, 1024)));
    assert_eq!(r, good(vec![], 512));
    // CTL's own answers: cut at the buffer, the residual against what CTL
    // had.
    let r = exec(lun, Cmd::read(&[0x12, 0, 0, 0, 36, 0], 100));
    assert_eq!((r.status, r.data.len(), r.residual), (0, 36, 64));
    let r = exec(lun, Cmd::read(&[0x12, 0, 0, 0, 96, 0], 36));
    assert_eq!((r.status, r.data.len(), r.residual), (0, 36, -60));
    // No data at all: full underflow.
    assert_eq!(exec(lun, Cmd::read(&[0; 6], 512)), good(vec![], 512));
    // A zero-length READ completes in CTL.
    assert_eq!(exec(lun, Cmd::read(&read10(0, 0), 512)), good(vec![], 512));
    remove_ramdisk(lun);
    finish(m, 0);
}

#[test]
fn lba_range_and_lun_state_are_checked_before_the_backend() {
    let m = boot();
    let lun = ramdisk(1 << 20, &[("capacity", "1M")]);
    let r = exec(lun, Cmd::read(&read10(2047, 2), 1024));
    assert_eq!(r, check(sense(0x05, 0x21, 0x00, Some(2048), None), vec![], 1024));
    // STOP through the backend: ramdisk stops CTL's LUN, reads fail
    // NOT READY until START.
    assert_eq!(exec(lun, Cmd::none(&[0x1B, 0, 0, 0, 0, 0])), good(vec![], 0));
    let r = exec(lun, Cmd::read(&read10(0, 1), 512));
    assert_eq!(r, check(sense(0x02, 0x04, 0x02, None, None), vec![], 512));
    assert_eq!(exec(lun, Cmd::none(&[0x1B, 0, 0, 0, 1, 0])), good(vec![], 0));
    assert_eq!(read(lun, 0, 1), vec![0; 512]);
    let sync = exec(lun, Cmd::none(&cdb16(0x91, 0, 0, 0)));
    assert_eq!(sync, good(vec![], 0));
    remove_ramdisk(lun);
    finish(m, 0);
}

#[test]
fn a_black_hole_reads_zeroes() {
    let m = boot();
    let lun = ramdisk(1 << 20, &[]);
    write(lun, 3, &pattern(7, 4096));
    assert_eq!(read(lun, 3, 8), vec![0; 4096]);
    remove_ramdisk(lun);
    finish(m, 0);
}

// --- compare ---

#[test]
fn compare_and_write_writes_only_after_a_match() {
    let m = boot();
    let lun = ramdisk(1 << 20, &[("capacity", "1M")]);
    let (a, b, c) = (pattern(10, 1024), pattern(11, 1024), pattern(12, 1024));
    write(lun, 10, &a);
    // Compare A, write B: two moves, the second at offset 1024.
    frontend::reset_datamove_stats();
    let r = exec(lun, Cmd::write(&caw(10, 2), &[a.clone(), b.clone()].concat()));
    assert_eq!(r, good(vec![], 0));
    assert_eq!(ctl::datamove_stats().datamoves, 2);
    assert_eq!(read(lun, 10, 2), b);
    // A compare that differs at byte 517: MISCOMPARE with that offset;
    // nothing written.
    let mut wrong = b.clone();
    wrong[517] ^= 0xFF;
    let r = exec(lun, Cmd::write(&caw(10, 2), &[wrong, c.clone()].concat()));
    assert_eq!(r, check(sense(0x0E, 0x1D, 0x00, Some(517), None), vec![], 0));
    assert_eq!(read(lun, 10, 2), b);
    // VERIFY with BYTCHK compares too; without it nothing moves.
    let mut v = cdb10(0x2F, 0, 10, 2);
    v[1] = 0x02;
    assert_eq!(exec(lun, Cmd::write(&v, &b)), good(vec![], 0));
    assert_eq!(
        exec(lun, Cmd::write(&v, &c)),
        check(sense(0x0E, 0x1D, 0x00, Some(0), None), vec![], 0)
    );
    assert_eq!(exec(lun, Cmd::none(&cdb10(0x2F, 0, 10, 2))), good(vec![], 0));
    remove_ramdisk(lun);
    finish(m, 0);
}

#[test]
fn compare_and_write_continues_through_io_cont() {
    let m = boot();
    let (lun, be) = recording_lun(1000);
    let r = exec(lun, Cmd::write(&caw(7, 1), &pattern(1, 1024)));
    // The recorder moves no data: its compare "succeeds" at once, and the
    // residual is what CTL's kern_total_len leaves (all 1024 bytes).
    assert_eq!(r, good(vec![], 0));
    let seen: Vec<(u64, u32, u32, bool)> = calls().iter().map(|c| (c.lba, c.len, c.flags, c.io_cont)).collect();
    assert_eq!(
        seen,
        [(7, 1, sys::CTL_LLF_COMPARE, true), (7, 1, sys::CTL_LLF_WRITE, false)]
    );
    // Without write cache, CTL adds FUA; WRITE AND VERIFY always has it.
    let r = exec(lun, Cmd::write(&cdb16(0x8E, 0x10, 3, 1), &[0; 512]));
    assert_eq!(r.status, 0);
    let c = &calls()[0];
    assert_eq!(
        (c.opcode, c.flags),
        (0x8E, sys::CTL_LLF_WRITE | sys::CTL_LLF_FUA | sys::CTL_LLF_DPO)
    );
    remove_recording(lun, be);
    finish(m, 0);
}

// --- WRITE SAME ---

#[test]
fn write_same_to_the_last_lba() {
    let m = boot();
    let lun = ramdisk(1 << 20, &[("capacity", "1M")]);
    let block = pattern(20, 512);
    frontend::reset_datamove_stats();
    // NUMBER OF BLOCKS 0 from LBA 2040: the last 8 blocks.
    let r = exec(lun, Cmd::write(&cdb10(0x41, 0, 2040, 0), &block));
    assert_eq!(r, good(vec![], 0));
    assert_eq!(ctl::datamove_stats().datamoves, 1, "CTL moved the block in");
    assert_eq!(in_use("ctlmem"), 0, "and freed its buffer");
    assert_eq!(read(lun, 2040, 8), block.repeat(8));
    assert_eq!(read(lun, 2039, 1), vec![0; 512]);
    // LBDATA puts each block's LBA in its first four bytes.
    let mut ws = cdb10(0x41, 0, 100, 2);
    ws[1] = 0x02;
    assert_eq!(exec(lun, Cmd::write(&ws, &block)), good(vec![], 0));
    let got = read(lun, 100, 2);
    assert_eq!(
        (&got[..4], &got[4..512], &got[512..516]),
        (&[0, 0, 0, 100][..], &block[4..], &[0, 0, 0, 101][..])
    );
    // NDOB: zeroes, nothing moved.
    let moves = ctl::datamove_stats().datamoves;
    assert_eq!(exec(lun, Cmd::none(&cdb16(0x93, 0x01, 2044, 0))), good(vec![], 0));
    assert_eq!(ctl::datamove_stats().datamoves, moves);
    assert_eq!(read(lun, 2040, 8), [block.repeat(4), vec![0; 2048]].concat());
    // ANCHOR needs UNMAP: INVALID FIELD IN CDB, byte 1 bit 0.
    let mut ws = cdb16(0x93, 0x10, 0, 1);
    let r = exec(lun, Cmd::write(&ws, &block));
    assert_eq!(r, check(sense(0x05, 0x24, 0x00, None, Some([0xC8, 0, 1])), vec![], 512));
    // Past the end.
    ws = cdb16(0x93, 0, 2047, 2);
    let r = exec(lun, Cmd::write(&ws, &block));
    assert_eq!(r, check(sense(0x05, 0x21, 0x00, Some(2048), None), vec![], 512));
    // UNMAP bit: the blocks read as zeroes again.
    assert_eq!(exec(lun, Cmd::none(&cdb16(0x93, 0x09, 2040, 8))), good(vec![], 0));
    assert_eq!(read(lun, 2040, 8), vec![0; 4096]);
    remove_ramdisk(lun);
    finish(m, 0);
}

#[test]
fn write_same_beyond_four_billion_blocks_goes_in_pieces() {
    let m = boot();
    let (lun, be) = recording_lun(1 << 33);
    let r = exec(lun, Cmd::none(&cdb16(0x93, 0x01, 0, 0)));
    assert_eq!(r, good(vec![], 0));
    let seen: Vec<(u64, u32, bool)> = calls().iter().map(|c| (c.lba, c.len, c.io_cont)).collect();
    let piece = 1u32 << 31;
    assert_eq!(
        seen,
        [
            (0, piece, true),
            (1 << 31, piece, true),
            (1 << 32, piece, true),
            (3 << 31, piece, false)
        ]
    );
    // With data, CTL moves the block in and calls config_write from the
    // port's thread (ctl_config_move_done).
    let block = pattern(30, 512);
    let r = exec(lun, Cmd::write(&cdb16(0x93, 0, (1 << 33) - 5, 0), &block));
    assert_eq!(r, good(vec![], 0));
    let c = calls();
    assert_eq!(c.len(), 1);
    assert_eq!(
        (c[0].lba, c[0].len, c[0].flags, &c[0].data),
        ((1 << 33) - 5, 5, 0, &block)
    );
    assert!(c[0].thread.starts_with("cfiscsi"), "{}", c[0].thread);
    remove_recording(lun, be);
    finish(m, 0);
}

// --- UNMAP and GET LBA STATUS ---

#[test]
fn unmap_deallocates_and_get_lba_status_tells() {
    let m = boot();
    let lun = ramdisk(1 << 20, &[("capacity", "1M")]);
    write(lun, 0, &pattern(40, 64 * 512));
    let status = |lba: u64| exec(lun, Cmd::read(&get_lba_status(lba, 24), 24));
    let descriptor = |lba: u64, blocks: u32, state: u8| {
        let mut d = vec![0, 0, 0, 20, 0, 0, 0, 0];
        d.extend_from_slice(&lba.to_be_bytes());
        d.extend_from_slice(&blocks.to_be_bytes());
        d.extend_from_slice(&[state, 0, 0, 0]);
        d
    };
    // Mapped, to the end of the 8-block page.
    assert_eq!(status(11), good(descriptor(11, 5, 0), 0));
    // Never written: deallocated.
    assert_eq!(status(800), good(descriptor(800, 8, 1), 0));
    // Pages 1 and 2, and half of page 3 (zeroed, stays mapped); a
    // trailing empty descriptor is dropped.
    let list = unmap_list(&[(8, 20), (0, 0)]);
    let r = exec(lun, Cmd::write(&unmap_cdb(0, list.len() as u16), &list));
    assert_eq!(r, good(vec![], 0));
    assert_eq!(in_use("ctlmem"), 0);
    assert_eq!(status(8), good(descriptor(8, 8, 1), 0));
    assert_eq!(status(24), good(descriptor(24, 8, 0), 0));
    let data = pattern(40, 64 * 512);
    assert_eq!(read(lun, 0, 64), [&data[..4096], &[0; 10240], &data[14336..]].concat());
    // An allocation length below the descriptor: cut, the rest a residual.
    assert_eq!(
        exec(lun, Cmd::read(&get_lba_status(8, 16), 24)),
        good(descriptor(8, 8, 1)[..16].to_vec(), 8)
    );
    assert_eq!(exec(lun, Cmd::read(&get_lba_status(8, 0), 24)), good(vec![], 24));
    let r = exec(lun, Cmd::read(&get_lba_status(2048, 24), 24));
    assert_eq!(r, check(sense(0x05, 0x21, 0x00, Some(2048), None), vec![], 24));
    // ANCHOR: anchored pages read as zeroes and say so.
    let list = unmap_list(&[(32, 8)]);
    let r = exec(lun, Cmd::write(&unmap_cdb(0x01, list.len() as u16), &list));
    assert_eq!(r, good(vec![], 0));
    assert_eq!(status(32), good(descriptor(32, 8, 2), 0));
    remove_ramdisk(lun);
    finish(m, 0);
}

#[test]
fn unmap_parameter_lists_are_validated() {
    let m = boot();
    let (lun, be) = recording_lun(1000);
    let bad_list = sense(0x05, 0x26, 0x00, None, None);
    let send = |list: &[u8]| exec(lun, Cmd::write(&unmap_cdb(0, list.len() as u16), list));
    // Shorter than its header.
    assert_eq!(send(&[0, 6, 0, 0]), check(bad_list.clone(), vec![], 0));
    // A descriptor length that is not a multiple of 16.
    let mut list = unmap_list(&[(1, 1)]);
    list[3] = 8;
    assert_eq!(send(&list), check(bad_list.clone(), vec![], 0));
    // A data length that runs past what came.
    let mut list = unmap_list(&[(1, 1)]);
    list[1] = 40;
    assert_eq!(send(&list), check(bad_list, vec![], 0));
    // Nothing but empty descriptors: done, the backend never asked.
    assert_eq!(send(&unmap_list(&[(5, 0), (6, 0)])), good(vec![], 0));
    // A zero-length list: nothing moves, and it is too short.
    let r = exec(lun, Cmd::none(&unmap_cdb(0, 0)));
    assert_eq!(r, check(sense(0x05, 0x26, 0x00, None, None), vec![], 0));
    assert!(calls().is_empty());
    assert_eq!(in_use("ctlmem"), 0, "CTL freed each list");
    // Two descriptors and two empty ones: CTL passes the two, from the
    // first descriptor (offset 8 of its buffer), with ANCHOR.
    let list = unmap_list(&[(10, 4), (0, 0), (990, 10), (0, 0)]);
    let r = exec(lun, Cmd::write(&unmap_cdb(0x01, list.len() as u16), &list));
    assert_eq!(r, good(vec![], 0));
    let c = calls();
    assert_eq!((c[0].entry, c[0].lba, c[0].len, c[0].flags), ("config_write", 8, 48, 1));
    assert_eq!(c[0].data, list[8..56]);
    // A descriptor past the end: LBA OUT OF RANGE, and the list is not
    // freed (ctl_unmap's ctl_done without free, as in FreeBSD 15).
    let list = unmap_list(&[(10, 4), (995, 6)]);
    assert_eq!(send(&list), check(sense(0x05, 0x21, 0x00, Some(1000), None), vec![], 0));
    assert_eq!(in_use("ctlmem"), 1);
    assert!(calls().is_empty());
    remove_recording(lun, be);
    finish(m, 1);
}

// --- aborts and the port ---

#[test]
fn an_aborted_io_fails_its_data_move_and_ends_task_aborted() {
    let m = boot();
    let (lun, be) = recording_lun(1000);
    with_rec(|r| r.hold = true);
    let reader = std::thread::spawn(move || ctl::execute(lun, &Cmd::read(&read10(1, 1), 512)));
    let deadline = Instant::now() + Duration::from_secs(10);
    while with_rec(|r| r.parked.is_empty()) {
        assert!(Instant::now() < deadline, "the READ reaches the backend");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(ctl::task_management(ctl::Tmf::AbortTaskSet { lun, initiator: 0 }), 1);
    release_parked();
    let r = reader.join().unwrap();
    // No byte moved; the residual is the port's reading of the
    // kern_total_len the backend set (cfiscsi sends no response at all).
    assert_eq!(
        r,
        Response {
            status: ctl::TASK_ABORTED,
            sense: Vec::new(),
            data: Vec::new(),
            residual: 0,
        }
    );
    // be_move_done ran inside ctl_datamove, after CTL set the port status
    // and the internal failure.
    let moves = with_rec(|r| r.moves.clone());
    let failure = sense(0x04, 0x44, 0x00, None, Some([0x80, 0x7A, 0x69]));
    assert_eq!(
        moves,
        [(
            ctl::PORT_STATUS_ABORTED,
            true,
            sys::CTL_SCSI_ERROR | sys::CTL_AUTOSENSE,
            failure
        )]
    );
    let dmesg = m.dmesg();
    let line = dmesg
        .lines()
        .find(|l| l.starts_with("ctl_datamove: tag 0x"))
        .expect("ctl_datamove's message");
    let tag = line["ctl_datamove: tag 0x".len()..].split(' ').next().unwrap_or("");
    assert!(u64::from_str_radix(tag, 16).is_ok(), "{line}");
    assert_eq!(line, format!("ctl_datamove: tag 0x{tag} on (0:1:{lun}) aborted"));
    assert_eq!(ctl::datamove_stats().datamoves, 0, "the port never saw it");
    remove_recording(lun, be);
    finish(m, 0);
}

#[test]
fn a_second_completion_stops_the_kernel() {
    const NAME: &str = "a_second_completion_stops_the_kernel";
    if child::is_child(NAME) {
        let _m = boot();
        let (lun, _be) = recording_lun(1000);
        with_rec(|r| r.twice = true);
        ctl::execute(lun, &Cmd::none(&cdb10(0x35, 0, 0, 0)));
        unreachable!("the simulated kernel panics first");
    }
    let out = child::run(NAME);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("panic: ConfigWrite: I/O 0x"), "{stderr}");
    assert!(
        stderr.contains("is not outstanding (completed twice, or never submitted)"),
        "{stderr}"
    );
}

#[test]
fn a_move_longer_than_its_sg_list_stops_the_kernel() {
    const NAME: &str = "a_move_longer_than_its_sg_list_stops_the_kernel";
    if child::is_child(NAME) {
        let _m = boot();
        let (lun, _be) = recording_lun(1000);
        with_rec(|r| {
            r.hold = true;
            r.short_sg = true;
        });
        let reader = std::thread::spawn(move || ctl::execute(lun, &Cmd::read(&read10(1, 1), 512)));
        while with_rec(|r| r.parked.is_empty()) {
            std::thread::sleep(Duration::from_millis(1));
        }
        release_parked();
        let _ = reader.join();
        unreachable!("the simulated kernel panics first");
    }
    let out = child::run(NAME);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("kern_data_len 512 exceeds its 1 S/G entries (KASSERT i < ctl_sg_count)"),
        "{stderr}"
    );
}

// --- many commands at once ---

/// The region of 8 blocks command `i` of the mixed run owns.
fn region(i: usize) -> u32 {
    (i as u32) * 8
}

#[test]
fn a_thousand_mixed_commands_at_queue_depth_32() {
    let m = boot();
    let lun = ramdisk(8 << 20, &[("capacity", "8M")]);
    // Every region starts with known data.
    let fill: Vec<Cmd> = (0..1000)
        .map(|i| Cmd::write(&write10(region(i), 8), &pattern(i as u32, 4096)))
        .collect();
    for r in ctl::run(lun, fill, 32) {
        assert_eq!(r, good(vec![], 0));
    }
    let attrs = [
        TaskAttr::Simple,
        TaskAttr::Ordered,
        TaskAttr::HeadOfQueue,
        TaskAttr::Untagged,
    ];
    let cmd = |i: usize| -> Cmd {
        let lba = region(i);
        let old = pattern(i as u32, 4096);
        let mut c = match i % 8 {
            0 => Cmd::write(&write10(lba, 3), &pattern(1000 + i as u32, 1536)),
            1 => Cmd::read(&read10(lba, 8), 4096),
            2 => Cmd::read(&cdb16(0x88, 0, u64::from(lba) + 1, 5), 5 * 512 + 100),
            3 => Cmd::none(&[0; 6]),
            4 => Cmd::write(
                &caw(u64::from(lba), 1),
                &[&old[..512], &pattern(2000 + i as u32, 512)].concat(),
            ),
            5 => Cmd::write(&cdb10(0x41, 0, lba + 6, 2), &pattern(3000 + i as u32, 512)),
            6 => Cmd::read(&get_lba_status(u64::from(lba), 24), 24),
            _ => Cmd::read(&[0x12, 0, 0, 0, 36, 0], 36),
        };
        c.task = attrs[i % 4];
        c
    };
    let responses = ctl::run(lun, (0..1000).map(cmd), 32);
    assert_eq!(responses.len(), 1000);
    for (i, r) in responses.iter().enumerate() {
        let old = pattern(i as u32, 4096);
        let what = format!("command {i}: {r:?}");
        assert_eq!(r.status, 0, "{what}");
        match i % 8 {
            1 => assert_eq!((&r.data, r.residual), (&old, 0), "{what}"),
            2 => assert_eq!((&r.data[..], r.residual), (&old[512..3072], 100), "{what}"),
            6 => assert_eq!((r.data.len(), r.data[20], r.residual), (24, 0, 0), "{what}"),
            7 => assert_eq!((r.data.len(), r.residual), (36, 0), "{what}"),
            _ => assert_eq!((r.data.len(), r.residual), (0, 0), "{what}"),
        }
    }
    // What the writes left.
    let check_cmds: Vec<Cmd> = (0..1000).map(|i| Cmd::read(&read10(region(i), 8), 4096)).collect();
    for (i, r) in ctl::run(lun, check_cmds, 32).into_iter().enumerate() {
        let mut expected = pattern(i as u32, 4096);
        match i % 8 {
            0 => expected[..1536].copy_from_slice(&pattern(1000 + i as u32, 1536)),
            4 => expected[..512].copy_from_slice(&pattern(2000 + i as u32, 512)),
            5 => {
                let block = pattern(3000 + i as u32, 512);
                expected[3072..].copy_from_slice(&block.repeat(2));
            }
            _ => {}
        }
        assert_eq!(r.data, expected, "region {i}");
    }
    assert_eq!(ctl::outstanding(), 0);
    remove_ramdisk(lun);
    finish(m, 0);
}
