//! CTL's `ramdisk` backend, as sys/cam/ctl/ctl_backend_ramdisk.c of
//! FreeBSD 15 (bsdjhb/freebsd at 145c76ce7670) behaves, behind the same C
//! interface (`struct ctl_backend_driver`), registered at boot.
//!
//! A LUN is a black hole by default (writes land in one shared page,
//! reads return zeroes); with `-o capacity=SIZE` it keeps its data in
//! pages of `pblocksize` bytes (default a page), allocated on first write
//! up to the capacity (beyond it writes fail with SPACE ALLOCATION
//! FAILED).  Reads and writes move at most 256 pages per data move, from
//! S/G lists pointing into the pages; the rest continues from the task
//! queue, as FreeBSD's does.  COMPARE (COMPARE AND WRITE, VERIFY with
//! BYTCHK) moves the initiator's data into a buffer of at most 128 KiB at
//! a time and reports MISCOMPARE with the offset of the first differing
//! byte.  WRITE SAME, UNMAP (with ANCHOR), SYNCHRONIZE CACHE, START STOP
//! UNIT (which moves CTL's LUN state), PREVENT ALLOW and GET LBA STATUS
//! are served as config commands.  Options: `capacity`, `pblocksize`,
//! `unmap`, `readonly`, `serseq`, `ha_role`; serial numbers `MYSERIALnnnn`
//! and device ids `MYDEVIDnnnn` unless given.
//!
//! Differences: the page table is a map (its indirect pages are not
//! allocated from `ctlramdisk`), continuations run on the kernel's shared
//! task queue, `lun_attr` is not provided, a modify does not change the HA
//! role, and a remove waits without being interruptible.  FreeBSD's quirks
//! are kept: the compare buffer of an aborted or failed compare is not
//! freed, and WRITE SAME that runs out of space completes through
//! `ctl_data_submit_done`.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::ctl_scsi::{self, Sense};
use crate::{kpanic, malloc, nv, sys, taskqueue};

/// S/G entries per page (SGPP): how many pages one data move covers.
const SGPP: u32 = sys::PAGE_SIZE / std::mem::size_of::<sys::ctl_sg_entry>() as u32;

/// The compare buffer's limit.
const COMPARE_MAX: u32 = 131_072;

// WRITE SAME byte 1 and UNMAP byte 1 (scsi_da.h).
const SWS_NDOB: u32 = 0x01;
const SWS_LBDATA: u32 = 0x02;
const SWS_UNMAP: u32 = 0x08;
const SWS_ANCHOR: u32 = 0x10;
const SU_ANCHOR: u32 = 0x01;

// ctl_be_ramdisk_lun_flags.
const LUN_UNCONFIGURED: u32 = 0x01;
const LUN_WAITING: u32 = 0x04;

/// A page of a LUN's map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Page {
    /// Counted against the capacity, no data (reads as zeroes).
    Anchored,
    /// `pblocksize` bytes from M_RAMDISK.
    Data(*mut u8),
}

/// What ctl_backend_ramdisk_getpage returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PageRef {
    Unmapped,
    Anchored,
    Data(*mut u8),
}

/// getpage_op_t.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Read,
    Write,
    Anchor,
    Other,
}

struct Pages {
    map: BTreeMap<u64, Page>,
    cap_used: u64,
}

/// struct ctl_be_ramdisk_lun.
#[repr(C)]
struct RdLun {
    /// Must be first: CTL hands the backend this pointer.
    cbe_lun: sys::ctl_be_lun,
    io_task: sys::task,
    cont_queue: Mutex<VecDeque<usize>>,
    pages: Mutex<Pages>,
    /// The one page of a black hole (no capacity): every write lands here.
    black_hole: *mut u8,
    zero_page: *mut u8,
    pblocksize: u32,
    pblockmul: u32,
    size_bytes: u64,
    size_blocks: u64,
    cap_bytes: u64,
    /// The size asked for (params.lun_size_bytes).
    lun_size_bytes: u64,
    /// `LUN_*`, changed under the softc lock.
    flags: AtomicU32,
}

// The simulated malloc(9) aligns to 8 bytes unless asked for more.
const _: () = assert!(std::mem::align_of::<RdLun>() <= 8);

struct Softc {
    luns: Vec<usize>,
    num_luns: i32,
    driver: usize,
}

static SOFTC: Mutex<Softc> = Mutex::new(Softc {
    luns: Vec::new(),
    num_luns: 0,
    driver: 0,
});
/// Wakes a remove waiting for `lun_shutdown` (msleep on the LUN).
static SOFTC_CV: Condvar = Condvar::new();

fn softc() -> MutexGuard<'static, Softc> {
    SOFTC.lock().unwrap_or_else(|e| e.into_inner())
}

/// M_RAMDISK (`ctlramdisk`).
static MTYPE: AtomicUsize = AtomicUsize::new(0);

fn mtype() -> *mut sys::malloc_type {
    MTYPE.load(Ordering::Relaxed) as *mut sys::malloc_type
}

fn alloc(len: usize, zero: bool) -> *mut u8 {
    let flags = sys::M_WAITOK | if zero { sys::M_ZERO } else { 0 };
    // SAFETY: M_RAMDISK is registered by the backend's init.
    unsafe { malloc::simkern_malloc(len, mtype(), flags as c_int) }.cast()
}

/// free(9) of M_RAMDISK memory.
///
/// # Safety
///
/// `p` is NULL or M_RAMDISK memory not used again.
unsafe fn release<T>(p: *mut T) {
    // SAFETY: the caller's contract.
    unsafe { malloc::simkern_free(p.cast(), mtype()) };
}

/// The backend's driver structure, for CTL to register at boot.
pub(super) fn driver() -> Box<sys::ctl_backend_driver> {
    // SAFETY: ctl_backend_driver is plain data.
    let mut be: Box<sys::ctl_backend_driver> = Box::new(unsafe { std::mem::zeroed() });
    for (dst, src) in be.name.iter_mut().zip(b"ramdisk") {
        *dst = *src as c_char;
    }
    be.flags = sys::CTL_BE_FLAG_HAS_CONFIG;
    be.init = Some(init);
    be.shutdown = Some(shutdown);
    be.data_submit = Some(submit);
    be.config_read = Some(config_read);
    be.config_write = Some(config_write);
    be.ioctl = Some(ioctl);
    softc().driver = &raw const *be as usize;
    be
}

/// ctl_backend_ramdisk_init.
///
/// # Safety
///
/// CTL calls it once, when it registers the backend.
unsafe extern "C" fn init() -> c_int {
    MTYPE.store(malloc::define(c"ctlramdisk") as usize, Ordering::Relaxed);
    let mut sc = softc();
    sc.luns.clear();
    sc.num_luns = 0;
    0
}

/// ctl_backend_ramdisk_shutdown: every LUN is removed from CTL.
///
/// # Safety
///
/// CTL calls it when it deregisters the backend, with no lock held.
unsafe extern "C" fn shutdown() -> c_int {
    remove_all();
    0
}

/// Removes the LUNs the backend still has (CTL's shutdown).
pub(super) fn remove_all() {
    loop {
        let lun = {
            let mut sc = softc();
            let Some(lun) = sc.luns.pop() else { break };
            sc.num_luns -= 1;
            lun
        };
        // SAFETY: a LUN of this backend that CTL holds; its lun_shutdown
        // frees it (nobody waits for it).
        unsafe { super::ctl_remove_lun(lun as *mut sys::ctl_be_lun) };
    }
}

// --- the I/O path ---

/// ARGS(io).
///
/// # Safety
///
/// `io` is a live I/O.
unsafe fn args<'a>(io: *mut sys::ctl_io) -> &'a mut sys::ctl_lba_len_flags {
    // SAFETY: the caller's contract; ctl_priv holds the structure.
    unsafe { &mut *super::args(io) }
}

/// PRIV(io)->len: blocks handed to data moves so far.
///
/// # Safety
///
/// `io` is a live I/O this backend holds.
unsafe fn moved_blocks<'a>(io: *mut sys::ctl_io) -> &'a mut u32 {
    // SAFETY: the caller's contract; the backend's slot holds a
    // ctl_ptr_len_flags.
    unsafe {
        let p = (&raw mut (*io).io_hdr.ctl_private[sys::CTL_PRIV_BACKEND as usize]).cast::<sys::ctl_ptr_len_flags>();
        &mut (*p).len
    }
}

/// The backend's LUN of an I/O (CTL_BACKEND_LUN).
///
/// # Safety
///
/// `io` is an I/O on a LUN of this backend.
unsafe fn lun_of<'a>(io: *mut sys::ctl_io) -> &'a RdLun {
    // SAFETY: the caller's contract; cbe_lun is the first member.
    unsafe { &*(*io).io_hdr.ctl_private[sys::CTL_PRIV_BACKEND_LUN as usize].ptrs[0].cast::<RdLun>() }
}

/// The I/O's flags (which CTL may change under the backend).
///
/// # Safety
///
/// `io` is a live I/O.
unsafe fn flags(io: *mut sys::ctl_io) -> u32 {
    // SAFETY: the caller's contract.
    unsafe { super::flags_of(io).load(Ordering::Relaxed) }
}

/// Sets CTL flags on an I/O.
///
/// # Safety
///
/// `io` is a live I/O.
unsafe fn set_flags(io: *mut sys::ctl_io, bits: u32) {
    // SAFETY: the caller's contract.
    unsafe { super::flags_of(io).fetch_or(bits, Ordering::Relaxed) };
}

impl RdLun {
    fn blocksize(&self) -> u32 {
        self.cbe_lun.blocksize
    }

    fn pblockexp(&self) -> u32 {
        u32::from(self.cbe_lun.pblockexp)
    }

    /// The LBA's offset in its physical block, in blocks.
    fn lbaoff(&self, lba: u64) -> u32 {
        (lba & !(u64::MAX << self.pblockexp())) as u32
    }

    fn pages(&self) -> MutexGuard<'_, Pages> {
        self.pages.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// ctl_backend_ramdisk_getpage.
    fn getpage(&self, pn: u64, op: Op) -> PageRef {
        if self.cap_bytes == 0 {
            return match op {
                Op::Read => PageRef::Data(self.zero_page),
                Op::Write => PageRef::Data(self.black_hole),
                Op::Anchor => PageRef::Anchored,
                Op::Other => PageRef::Unmapped,
            };
        }
        let mut pages = self.pages();
        let pbs = u64::from(self.pblocksize);
        if matches!(op, Op::Write | Op::Anchor) {
            match pages.map.get(&pn).copied() {
                None if pages.cap_used < self.cap_bytes => {
                    let page = if op == Op::Write {
                        Page::Data(alloc(self.pblocksize as usize, true))
                    } else {
                        Page::Anchored
                    };
                    pages.map.insert(pn, page);
                    pages.cap_used += pbs;
                }
                Some(Page::Anchored) if op == Op::Write => {
                    pages.map.insert(pn, Page::Data(alloc(self.pblocksize as usize, true)));
                }
                _ => {}
            }
        }
        match pages.map.get(&pn).copied() {
            Some(Page::Data(p)) => PageRef::Data(p),
            _ if op == Op::Read => PageRef::Data(self.zero_page),
            Some(Page::Anchored) => PageRef::Anchored,
            None => PageRef::Unmapped,
        }
    }

    /// ctl_backend_ramdisk_unmappage for the pages in `range`.
    fn unmap_pages(&self, first: u64, end: u64) {
        if self.cap_bytes == 0 || first >= end {
            return;
        }
        let mut pages = self.pages();
        let gone: Vec<(u64, Page)> = pages.map.range(first..end).map(|(&k, &v)| (k, v)).collect();
        for (pn, page) in gone {
            pages.map.remove(&pn);
            pages.cap_used -= u64::from(self.pblocksize);
            if let Page::Data(p) = page {
                // SAFETY: the page's memory, no longer mapped.
                unsafe { release(p) };
            }
        }
    }

    /// ctl_backend_ramdisk_anchorpage (beyond the capacity an unmapped
    /// page is anchored without being counted, as FreeBSD does).
    fn anchor_page(&self, pn: u64) {
        if self.cap_bytes == 0 {
            return;
        }
        let mut pages = self.pages();
        match pages.map.get(&pn).copied() {
            None if pages.cap_used < self.cap_bytes => {
                pages.cap_used += u64::from(self.pblocksize);
                pages.map.insert(pn, Page::Anchored);
            }
            Some(Page::Anchored) => {}
            other => {
                if let Some(Page::Data(p)) = other {
                    // SAFETY: the page's memory, replaced by the anchor.
                    unsafe { release(p) };
                }
                pages.map.insert(pn, Page::Anchored);
            }
        }
    }

    /// ctl_backend_ramdisk_delete: zeroes the partial physical blocks at
    /// both ends, unmaps (or anchors) the whole ones.
    fn delete(&self, lba: u64, len: u64, anchor: bool) {
        let op = if anchor { Op::Anchor } else { Op::Other };
        let bs = self.blocksize() as usize;
        let mut p = lba >> self.pblockexp();
        let lbaoff = self.lbaoff(lba);
        if lbaoff != 0 {
            if let PageRef::Data(page) = self.getpage(p, op) {
                let n = len.min(u64::from(self.pblockmul - lbaoff)) as usize * bs;
                // SAFETY: inside the page.
                unsafe { std::ptr::write_bytes(page.add(lbaoff as usize * bs), 0, n) };
            }
            p += 1;
        }
        let lp = (lba + len) >> self.pblockexp();
        let lbaoff = self.lbaoff(lba + len);
        if p <= lp
            && lbaoff != 0
            && let PageRef::Data(page) = self.getpage(lp, op)
        {
            // SAFETY: inside the page.
            unsafe { std::ptr::write_bytes(page, 0, lbaoff as usize * bs) };
        }
        if anchor {
            if self.cap_bytes != 0 {
                for pn in p..lp {
                    self.anchor_page(pn);
                }
            }
        } else {
            self.unmap_pages(p, lp);
        }
    }
}

/// Ends an I/O with SPACE ALLOCATION FAILED WRITE PROTECT (27/07).
///
/// # Safety
///
/// `io` is an I/O this backend holds.
unsafe fn no_space(io: *mut sys::ctl_io) {
    // SAFETY: the caller's contract.
    unsafe {
        super::set_sense(&raw mut (*io).scsiio, &Sense::new(0x07, 0x27, 0x07));
        super::ctl_data_submit_done(io);
    }
}

/// ctl_backend_ramdisk_submit: VERIFY without data succeeds at once;
/// compares and reads/writes start moving data.
///
/// # Safety
///
/// `io` is an I/O CTL hands the backend, on one of its LUNs.
unsafe extern "C" fn submit(io: *mut sys::ctl_io) -> c_int {
    // SAFETY: CTL hands the backend an I/O on one of its LUNs.
    unsafe {
        let flags = args(io).flags;
        if flags & sys::CTL_LLF_VERIFY != 0 {
            super::ctl_io_set_success(io);
            super::ctl_data_submit_done(io);
            return sys::CTL_RETVAL_COMPLETE as c_int;
        }
        *moved_blocks(io) = 0;
        if flags & sys::CTL_LLF_COMPARE != 0 {
            compare(io);
        } else {
            rw(io);
        }
    }
    sys::CTL_RETVAL_COMPLETE as c_int
}

/// ctl_backend_ramdisk_compare: the next piece of the initiator's data
/// into a buffer.
///
/// # Safety
///
/// `io` is a compare this backend holds.
unsafe fn compare(io: *mut sys::ctl_io) {
    // SAFETY: the caller's contract.
    unsafe {
        let lun = lun_of(io);
        let lbas = (args(io).len - *moved_blocks(io)).min(COMPARE_MAX / lun.blocksize());
        let len = lbas * lun.blocksize();
        let s = &raw mut (*io).scsiio;
        (*s).be_move_done = Some(move_done);
        (*s).kern_data_ptr = alloc(len as usize, false);
        (*s).kern_data_len = len;
        (*s).kern_sg_entries = 0;
        set_flags(io, sys::CTL_FLAG_ALLOCATED);
        *moved_blocks(io) += lbas;
        super::ctl_datamove(io);
    }
}

/// ctl_backend_ramdisk_rw: the next piece of a read or write, straight
/// from or into the pages (an S/G list over up to SGPP pages).
///
/// # Safety
///
/// `io` is a read or write this backend holds.
unsafe fn rw(io: *mut sys::ctl_io) {
    // SAFETY: the caller's contract.
    unsafe {
        let lun = lun_of(io);
        let a = *args(io);
        let bs = lun.blocksize();
        let lba = a.lba + u64::from(*moved_blocks(io));
        let lbaoff = lun.lbaoff(lba);
        let lbas = (a.len - *moved_blocks(io)).min((SGPP << lun.pblockexp()) - lbaoff);
        let mut sgs = (lbas + lbaoff + lun.pblockmul - 1) >> lun.pblockexp();
        let mut off = lbaoff * bs;
        let op = if a.flags & sys::CTL_LLF_WRITE != 0 {
            Op::Write
        } else {
            Op::Read
        };
        let s = &raw mut (*io).scsiio;
        if sgs > 1 {
            let entries =
                alloc(std::mem::size_of::<sys::ctl_sg_entry>() * sgs as usize, false).cast::<sys::ctl_sg_entry>();
            (*s).kern_data_ptr = entries.cast();
            let mut len = lbas * bs;
            for i in 0..sgs {
                let PageRef::Data(page) = lun.getpage((lba >> lun.pblockexp()) + u64::from(i), op) else {
                    release(entries);
                    no_space(io);
                    return;
                };
                let n = len.min(lun.pblocksize - off);
                entries.add(i as usize).write(sys::ctl_sg_entry {
                    addr: page.add(off as usize).cast::<c_void>(),
                    len: n as usize,
                });
                len -= n;
                off = 0;
            }
        } else {
            let PageRef::Data(page) = lun.getpage(lba >> lun.pblockexp(), op) else {
                no_space(io);
                return;
            };
            sgs = 0;
            (*s).kern_data_ptr = page.add(off as usize);
        }
        (*s).be_move_done = Some(move_done);
        (*s).kern_data_len = lbas * bs;
        (*s).kern_sg_entries = sgs;
        set_flags(io, sys::CTL_FLAG_ALLOCATED);
        *moved_blocks(io) += lbas;
        if a.flags & sys::CTL_LLF_READ != 0 && a.len <= *moved_blocks(io) {
            super::ctl_io_set_success(io);
            if lun.cbe_lun.serseq >= sys::CTL_LUN_SERSEQ_SOFT {
                super::ctl_serseq_done(io);
            }
        }
        super::ctl_datamove(io);
    }
}

/// ctl_backend_ramdisk_cmp: compares the piece that came with the medium;
/// on a difference, MISCOMPARE with the offset of the first differing
/// byte in the initiator's data.  The buffer is freed.
///
/// # Safety
///
/// `io` is a compare whose piece has moved.
unsafe fn cmp(io: *mut sys::ctl_io) -> bool {
    // SAFETY: the caller's contract.
    unsafe {
        let lun = lun_of(io);
        let bs = lun.blocksize() as usize;
        let s = &raw mut (*io).scsiio;
        let mut lbas = (*s).kern_data_len as usize / bs;
        let mut lba = args(io).lba + u64::from(*moved_blocks(io)) - lbas as u64;
        let mut off = 0usize;
        while lbas > 0 {
            let PageRef::Data(page) = lun.getpage(lba >> lun.pblockexp(), Op::Read) else {
                kpanic!("ramdisk: a read found no page");
            };
            let page = std::slice::from_raw_parts(page.add(lun.lbaoff(lba) as usize * bs), bs);
            let data = std::slice::from_raw_parts((*s).kern_data_ptr.add(off), bs);
            let same = data.iter().zip(page).take_while(|(a, b)| a == b).count();
            off += same;
            if same < bs {
                break;
            }
            lbas -= 1;
            lba += 1;
        }
        release((*s).kern_data_ptr);
        if lbas > 0 {
            let at = off as u64 + u64::from((*s).kern_rel_offset) - u64::from((*s).kern_data_len);
            let sense = Sense {
                info: Some(at),
                ..Sense::new(0x0E, 0x1D, 0x00)
            };
            super::set_sense(s, &sense);
            return true;
        }
        false
    }
}

/// ctl_backend_ramdisk_move_done: the S/G list is freed and the offset
/// advanced; a compare is checked; the next piece is queued to the task
/// queue, or the I/O ends.
///
/// # Safety
///
/// `io` is an I/O whose data move, started by this backend, is done.
unsafe extern "C" fn move_done(io: *mut sys::ctl_io, _samethr: bool) -> c_int {
    // SAFETY: CTL calls this once per data move of an I/O this backend
    // started.
    unsafe {
        let s = &raw mut (*io).scsiio;
        if (*s).kern_sg_entries > 0 {
            release((*s).kern_data_ptr);
        }
        (*s).kern_rel_offset += (*s).kern_data_len;
        if flags(io) & sys::CTL_FLAG_ABORT == 0 && (*io).io_hdr.status & sys::CTL_STATUS_MASK == sys::CTL_STATUS_NONE {
            let go_on = args(io).flags & sys::CTL_LLF_COMPARE == 0 || !cmp(io);
            if go_on {
                if args(io).len > *moved_blocks(io) {
                    let lun = lun_of(io);
                    lun.cont_queue
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push_back(io as usize);
                    taskqueue::taskqueue_enqueue(taskqueue::taskqueue_thread, (&raw const lun.io_task).cast_mut());
                    return 0;
                }
                super::ctl_io_set_success(io);
            }
        }
        super::ctl_data_submit_done(io);
    }
    0
}

/// ctl_backend_ramdisk_worker: the queued pieces, on the task queue.
///
/// # Safety
///
/// `context` is the LUN whose task this is, alive until drained.
unsafe extern "C" fn worker(context: *mut c_void, _pending: c_int) {
    // SAFETY: the task's context is its LUN, which lun_shutdown drains
    // before freeing.
    let lun = unsafe { &*context.cast::<RdLun>() };
    loop {
        let Some(io) = lun.cont_queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front() else {
            break;
        };
        let io = io as *mut sys::ctl_io;
        // SAFETY: a queued I/O of this LUN, the backend's.
        unsafe {
            if args(io).flags & sys::CTL_LLF_COMPARE != 0 {
                compare(io);
            } else {
                rw(io);
            }
        }
    }
}

/// ctl_backend_ramdisk_config_read: GET LBA STATUS of the LBA's physical
/// block (deallocated, anchored or mapped).
///
/// # Safety
///
/// `io` is an I/O CTL hands the backend, on one of its LUNs.
unsafe extern "C" fn config_read(io: *mut sys::ctl_io) -> c_int {
    // SAFETY: CTL hands the backend an I/O on one of its LUNs.
    unsafe {
        let s = &raw mut (*io).scsiio;
        let (op, sa) = ((*s).cdb[0], (*s).cdb[1]);
        if op == 0x9E && sa == 0x12 {
            let lun = lun_of(io);
            let lba = args(io).lba;
            let data = (*s).kern_data_ptr;
            let lbaoff = lun.lbaoff(lba);
            std::ptr::copy_nonoverlapping(lba.to_be_bytes().as_ptr(), data.add(8), 8);
            std::ptr::copy_nonoverlapping((lun.pblockmul - lbaoff).to_be_bytes().as_ptr(), data.add(16), 4);
            *data.add(20) = match lun.getpage(lba >> lun.pblockexp(), Op::Other) {
                PageRef::Unmapped => 1,
                PageRef::Anchored => 2,
                PageRef::Data(_) => 0,
            };
        } else if op == 0x9E {
            super::ctl_set_invalid_field(s, 1, 1, 1, 1, 4);
        } else {
            super::ctl_set_invalid_opcode(s);
        }
        super::ctl_config_read_done(io);
    }
    sys::CTL_RETVAL_COMPLETE as c_int
}

/// ctl_backend_ramdisk_config_write.
///
/// # Safety
///
/// `io` is an I/O CTL hands the backend, on one of its LUNs.
unsafe extern "C" fn config_write(io: *mut sys::ctl_io) -> c_int {
    // SAFETY: CTL hands the backend an I/O on one of its LUNs.
    unsafe {
        let s = &raw mut (*io).scsiio;
        let cbe_lun = (&raw const lun_of(io).cbe_lun).cast_mut();
        match (*s).cdb[0] {
            // SYNCHRONIZE CACHE: no cache to flush; PREVENT ALLOW.
            0x35 | 0x91 | 0x1E => super::ctl_set_success(s),
            // START STOP UNIT: CTL's LUN state follows.
            0x1B => {
                let how = (*s).cdb[4];
                if how & 0xF0 == 0 {
                    if how & 0x01 != 0 {
                        if how & 0x02 != 0 {
                            super::ctl_lun_has_media(cbe_lun);
                        }
                        super::ctl_start_lun(cbe_lun);
                    } else {
                        super::ctl_stop_lun(cbe_lun);
                        if how & 0x02 != 0 {
                            super::ctl_lun_ejected(cbe_lun);
                        }
                    }
                }
                super::ctl_set_success(s);
            }
            0x41 | 0x93 => return write_same(io),
            0x42 => return unmap(io),
            _ => super::ctl_set_invalid_opcode(s),
        }
        super::ctl_config_write_done(io);
    }
    sys::CTL_RETVAL_COMPLETE as c_int
}

/// ctl_backend_ramdisk_ws.
///
/// # Safety
///
/// `io` is a WRITE SAME this backend holds.
unsafe fn write_same(io: *mut sys::ctl_io) -> c_int {
    // SAFETY: the caller's contract.
    unsafe {
        let lun = lun_of(io);
        let s = &raw mut (*io).scsiio;
        let a = *args(io);
        if a.flags & !(SWS_LBDATA | SWS_UNMAP | SWS_ANCHOR | SWS_NDOB) != 0 {
            super::ctl_set_invalid_field(s, 1, 1, 1, 0, 0);
            super::ctl_config_write_done(io);
            return sys::CTL_RETVAL_COMPLETE as c_int;
        }
        if a.flags & SWS_UNMAP != 0 {
            lun.delete(a.lba, u64::from(a.len), a.flags & SWS_ANCHOR != 0);
            super::ctl_set_success(s);
            super::ctl_config_write_done(io);
            return sys::CTL_RETVAL_COMPLETE as c_int;
        }
        let bs = lun.blocksize() as usize;
        for lba in a.lba..a.lba + u64::from(a.len) {
            let PageRef::Data(page) = lun.getpage(lba >> lun.pblockexp(), Op::Write) else {
                // FreeBSD completes this config_write as a data_submit.
                no_space(io);
                return sys::CTL_RETVAL_COMPLETE as c_int;
            };
            let block = page.add(lun.lbaoff(lba) as usize * bs);
            if a.flags & SWS_NDOB != 0 {
                std::ptr::write_bytes(block, 0, bs);
            } else {
                std::ptr::copy_nonoverlapping((*s).kern_data_ptr, block, bs);
            }
            if a.flags & SWS_LBDATA != 0 {
                std::ptr::copy_nonoverlapping((lba as u32).to_be_bytes().as_ptr(), block, 4);
            }
        }
        super::ctl_set_success(s);
        super::ctl_config_write_done(io);
    }
    sys::CTL_RETVAL_COMPLETE as c_int
}

/// ctl_backend_ramdisk_unmap: each descriptor CTL left is deleted (or
/// anchored).
///
/// # Safety
///
/// `io` is an UNMAP this backend holds.
unsafe fn unmap(io: *mut sys::ctl_io) -> c_int {
    // SAFETY: the caller's contract: ARGS is CTL's ctl_ptr_len_flags into
    // its buffer.
    unsafe {
        let lun = lun_of(io);
        let s = &raw mut (*io).scsiio;
        let p = *super::args(io).cast::<sys::ctl_ptr_len_flags>();
        if p.flags & !SU_ANCHOR != 0 {
            super::ctl_set_invalid_field(s, 0, 0, 0, 0, 0);
            super::ctl_config_write_done(io);
            return sys::CTL_RETVAL_COMPLETE as c_int;
        }
        let descriptors = std::slice::from_raw_parts(p.ptr.cast_const(), p.len as usize);
        for d in descriptors.chunks_exact(16) {
            let lba = u64::from_be_bytes(d[..8].try_into().unwrap_or_default());
            let len = u32::from_be_bytes(d[8..12].try_into().unwrap_or_default());
            lun.delete(lba, u64::from(len), p.flags & SU_ANCHOR != 0);
        }
        super::ctl_set_success(s);
        super::ctl_config_write_done(io);
    }
    sys::CTL_RETVAL_COMPLETE as c_int
}

// --- LUN requests ---

/// snprintf into `error_str`.
fn set_error(req: &mut sys::ctl_lun_req, text: &str) {
    req.error_str = [0; 160];
    for (d, s) in req.error_str.iter_mut().zip(text.bytes().take(159)) {
        *d = s as c_char;
    }
    req.status = sys::CTL_LUN_ERROR;
}

/// strncpy of `text` into a fixed field.
fn fill(field: &mut [u8], text: &str) {
    field.fill(0);
    for (d, s) in field.iter_mut().zip(text.bytes()) {
        *d = s;
    }
}

/// ctl_backend_ramdisk_ioctl: LUN requests.
///
/// # Safety
///
/// `addr` is what CTL passes with `cmd` (a `struct ctl_lun_req` for
/// CTL_LUN_REQ).
unsafe extern "C" fn ioctl(
    _dev: *mut sys::cdev,
    cmd: sys::u_long,
    addr: sys::caddr_t,
    _flag: c_int,
    _td: *mut sys::thread,
) -> c_int {
    // SAFETY: the value of a C macro, fixed.
    if cmd != unsafe { sys::simkern_ctl_lun_req } {
        return sys::ENOTTY as c_int;
    }
    // SAFETY: CTL passes a struct ctl_lun_req with CTL_LUN_REQ.
    let req = unsafe { &mut *addr.cast::<sys::ctl_lun_req>() };
    match req.reqtype {
        sys::CTL_LUNREQ_CREATE => create(req),
        sys::CTL_LUNREQ_RM => rm(req),
        sys::CTL_LUNREQ_MODIFY => modify(req),
        other => {
            set_error(
                req,
                &format!("ctl_backend_ramdisk_ioctl: invalid LUN request type {other}"),
            );
            0
        }
    }
}

/// A string option of a LUN.
fn option(options: &[(String, String)], name: &str) -> Option<String> {
    options.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

/// ctl_backend_ramdisk_create.
fn create(req: &mut sys::ctl_lun_req) -> c_int {
    const FUNC: &str = "ctl_backend_ramdisk_create";
    // SAFETY: a create request's union member (copied; written back).
    let mut params = unsafe { req.reqdata.create };
    let options = nv::nvlist_clone(req.args_nvl);
    let pairs = nv::pairs(options);
    let opt = |name| option(&pairs, name);
    // SAFETY: ctl_be_lun is plain data.
    let mut cbe: sys::ctl_be_lun = unsafe { std::mem::zeroed() };
    cbe.options = options;
    cbe.lun_type = if params.flags & sys::CTL_LUN_FLAG_DEV_TYPE != 0 {
        params.device_type
    } else {
        ctl_scsi::T_DIRECT
    };
    // A single node is the active shelf: its LUNs are primary unless told.
    match opt("ha_role") {
        Some(role) if role == "primary" => cbe.flags |= sys::CTL_LUN_FLAG_PRIMARY,
        Some(_) => {}
        None => cbe.flags |= sys::CTL_LUN_FLAG_PRIMARY,
    }
    let bail = |req: &mut sys::ctl_lun_req, text: String| {
        // SAFETY: the clone made above, not used elsewhere.
        unsafe { nv::nvlist_destroy(options) };
        set_error(req, &text);
        0
    };
    let pblocksize = opt("pblocksize")
        .map(|v| ctl_scsi::expand_number(&v).unwrap_or(0) as u32)
        .unwrap_or(sys::PAGE_SIZE);
    if !(512..=131_072).contains(&pblocksize) {
        return bail(req, format!("{FUNC}: unsupported pblocksize {pblocksize}"));
    }
    let (mut pblockmul, mut size_blocks, mut size_bytes, mut cap_bytes) = (1u32, 0u64, 0u64, 0u64);
    if matches!(cbe.lun_type, ctl_scsi::T_DIRECT | ctl_scsi::T_CDROM) {
        cbe.blocksize = match params.blocksize_bytes {
            0 if cbe.lun_type == ctl_scsi::T_CDROM => 2048,
            0 => 512,
            n => n,
        };
        pblockmul = pblocksize / cbe.blocksize;
        if pblockmul < 1 || !pblockmul.is_power_of_two() {
            return bail(
                req,
                format!(
                    "{FUNC}: pblocksize {pblocksize} not exp2 of blocksize {}",
                    cbe.blocksize
                ),
            );
        }
        if params.lun_size_bytes < u64::from(cbe.blocksize) {
            return bail(
                req,
                format!(
                    "{FUNC}: LUN size {} < blocksize {}",
                    params.lun_size_bytes, cbe.blocksize
                ),
            );
        }
        size_blocks = params.lun_size_bytes / u64::from(cbe.blocksize);
        size_bytes = size_blocks * u64::from(cbe.blocksize);
        cbe.maxlba = size_blocks - 1;
        cbe.pblockexp = pblockmul.trailing_zeros() as u16;
        cbe.pblockoff = 0;
        cbe.ublockexp = cbe.pblockexp;
        cbe.ublockoff = 0;
        cbe.atomicblock = pblocksize;
        cbe.opttxferlen = SGPP * pblocksize;
        if let Some(v) = opt("capacity") {
            cap_bytes = ctl_scsi::expand_number(&v).unwrap_or(0);
        }
    }
    params.blocksize_bytes = cbe.blocksize;
    params.lun_size_bytes = size_bytes;
    if opt("unmap").is_none_or(|v| v != "off") {
        cbe.flags |= sys::CTL_LUN_FLAG_UNMAP;
    }
    match opt("readonly") {
        Some(v) if v == "on" => cbe.flags |= sys::CTL_LUN_FLAG_READONLY,
        Some(_) => {}
        None if cbe.lun_type != ctl_scsi::T_DIRECT => cbe.flags |= sys::CTL_LUN_FLAG_READONLY,
        None => {}
    }
    cbe.serseq = match opt("serseq").as_deref() {
        Some("on") => sys::CTL_LUN_SERSEQ_ON,
        Some("read") => sys::CTL_LUN_SERSEQ_READ,
        Some("soft") => sys::CTL_LUN_SERSEQ_SOFT,
        _ => sys::CTL_LUN_SERSEQ_OFF,
    };
    if params.flags & sys::CTL_LUN_FLAG_ID_REQ != 0 {
        cbe.req_lun_id = params.req_lun_id;
        cbe.flags |= sys::CTL_LUN_FLAG_ID_REQ;
    }
    cbe.lun_shutdown = Some(lun_shutdown);
    let (driver, num_luns) = {
        let sc = softc();
        (sc.driver, sc.num_luns)
    };
    cbe.be = driver as *mut sys::ctl_backend_driver;
    if params.flags & sys::CTL_LUN_FLAG_SERIAL_NUM == 0 {
        let sn = format!("MYSERIAL{num_luns:04}");
        fill(&mut cbe.serial_num, &sn);
        fill(&mut params.serial_num, &sn);
    } else {
        cbe.serial_num = params.serial_num;
    }
    if params.flags & sys::CTL_LUN_FLAG_DEVID == 0 {
        let id = format!("MYDEVID{num_luns:04}");
        fill(&mut cbe.device_id, &id);
        fill(&mut params.device_id, &id);
    } else {
        cbe.device_id = params.device_id;
    }
    let lun = alloc(std::mem::size_of::<RdLun>(), true).cast::<RdLun>();
    // SAFETY: fresh memory for one RdLun; the task is set up as TASK_INIT
    // does.
    unsafe {
        let mut io_task: sys::task = std::mem::zeroed();
        io_task.ta_func = Some(worker);
        io_task.ta_context = lun.cast();
        lun.write(RdLun {
            cbe_lun: cbe,
            io_task,
            cont_queue: Mutex::new(VecDeque::new()),
            pages: Mutex::new(Pages {
                map: BTreeMap::new(),
                cap_used: 0,
            }),
            black_hole: if cap_bytes == 0 {
                alloc(pblocksize as usize, false)
            } else {
                std::ptr::null_mut()
            },
            zero_page: alloc(pblocksize as usize, true),
            pblocksize,
            pblockmul,
            size_bytes,
            size_blocks,
            cap_bytes,
            lun_size_bytes: params.lun_size_bytes,
            flags: AtomicU32::new(0),
        });
    }
    req.reqdata.create = params;
    // SAFETY: a filled-in LUN of a registered backend.
    let rc = unsafe { super::ctl_add_lun(lun.cast()) };
    if rc != 0 {
        // SAFETY: CTL refused the LUN: it is still only ours.
        unsafe { free_lun(lun) };
        set_error(
            req,
            &format!("{FUNC}: ctl_add_lun() returned error {rc}, see dmesg for details"),
        );
        return 0;
    }
    {
        let mut sc = softc();
        sc.num_luns += 1;
        sc.luns.insert(0, lun as usize);
    }
    // SAFETY: the LUN stays valid while CTL holds it.
    req.reqdata.create.req_lun_id = unsafe { (*lun).cbe_lun.lun_id };
    req.status = sys::CTL_LUN_OK;
    0
}

/// The LUN of this backend numbered `lun_id`.
fn find(sc: &Softc, lun_id: u32) -> Option<usize> {
    sc.luns
        .iter()
        .copied()
        // SAFETY: listed LUNs are live.
        .find(|&l| unsafe { (*(l as *const RdLun)).cbe_lun.lun_id } == lun_id)
}

/// ctl_backend_ramdisk_rm: the LUN leaves CTL; the request returns once
/// its `lun_shutdown` ran.
fn rm(req: &mut sys::ctl_lun_req) -> c_int {
    // SAFETY: a remove request's union member.
    let lun_id = unsafe { req.reqdata.rm.lun_id };
    let found = {
        let mut sc = softc();
        let found = find(&sc, lun_id);
        if let Some(l) = found {
            sc.luns.retain(|&x| x != l);
            sc.num_luns -= 1;
        }
        found
    };
    let Some(lun) = found.map(|l| l as *mut RdLun) else {
        set_error(
            req,
            &format!("ctl_backend_ramdisk_rm: LUN {lun_id} is not managed by the ramdisk backend"),
        );
        return 0;
    };
    {
        let _sc = softc();
        // SAFETY: the flags are under the softc lock.
        unsafe { (*lun).flags.fetch_or(LUN_WAITING, Ordering::Relaxed) };
    }
    // SAFETY: a LUN CTL holds.
    let rc = unsafe { super::ctl_remove_lun(lun.cast()) };
    if rc != 0 {
        let _sc = softc();
        // SAFETY: as above.
        unsafe { (*lun).flags.fetch_and(!LUN_WAITING, Ordering::Relaxed) };
        set_error(
            req,
            &format!("ctl_backend_ramdisk_rm: error {rc} returned from ctl_remove_lun() for LUN {lun_id}"),
        );
        return 0;
    }
    let mut sc = softc();
    // SAFETY: the flags are under the softc lock; lun_shutdown leaves the
    // LUN to us once it sees LUN_WAITING.
    while unsafe { (*lun).flags.load(Ordering::Relaxed) } & LUN_UNCONFIGURED == 0 {
        sc = SOFTC_CV.wait(sc).unwrap_or_else(|e| e.into_inner());
    }
    drop(sc);
    // SAFETY: lun_shutdown is done with it.
    unsafe {
        std::ptr::drop_in_place(lun);
        release(lun);
    }
    req.status = sys::CTL_LUN_OK;
    0
}

/// ctl_backend_ramdisk_modify: a new size (or the options replaced).
fn modify(req: &mut sys::ctl_lun_req) -> c_int {
    const FUNC: &str = "ctl_backend_ramdisk_modify";
    // SAFETY: a modify request's union member.
    let params = unsafe { &mut req.reqdata.modify };
    let Some(lun) = find(&softc(), params.lun_id).map(|l| l as *mut RdLun) else {
        let text = format!("{FUNC}: LUN {} is not managed by the ramdisk backend", params.lun_id);
        set_error(req, &text);
        return 0;
    };
    // SAFETY: a LUN of ours; LUN requests come one at a time.
    unsafe {
        let l = &mut *lun;
        if params.lun_size_bytes != 0 {
            l.lun_size_bytes = params.lun_size_bytes;
        }
        if !req.args_nvl.is_null() {
            nv::nvlist_destroy(l.cbe_lun.options);
            l.cbe_lun.options = nv::nvlist_clone(req.args_nvl);
        }
        let bs = l.cbe_lun.blocksize;
        if l.lun_size_bytes < u64::from(bs) {
            let text = format!("{FUNC}: LUN size {} < blocksize {bs}", l.lun_size_bytes);
            set_error(req, &text);
            return 0;
        }
        l.size_blocks = l.lun_size_bytes / u64::from(bs);
        l.size_bytes = l.size_blocks * u64::from(bs);
        l.cbe_lun.maxlba = l.size_blocks - 1;
        super::ctl_lun_capacity_changed(&raw mut l.cbe_lun);
        params.lun_size_bytes = l.size_bytes;
    }
    req.status = sys::CTL_LUN_OK;
    0
}

/// Frees a LUN's pages and options.
///
/// # Safety
///
/// `lun` is a LUN no one uses any more.
unsafe fn free_contents(lun: *mut RdLun) {
    // SAFETY: the caller's contract.
    unsafe {
        let l = &mut *lun;
        nv::nvlist_destroy(l.cbe_lun.options);
        release(l.zero_page);
        release(l.black_hole);
        let pages = std::mem::take(&mut l.pages.get_mut().unwrap_or_else(|e| e.into_inner()).map);
        for page in pages.into_values() {
            if let Page::Data(p) = page {
                release(p);
            }
        }
    }
}

/// Frees a LUN CTL never took.
///
/// # Safety
///
/// `lun` is a LUN no one uses.
unsafe fn free_lun(lun: *mut RdLun) {
    // SAFETY: the caller's contract.
    unsafe {
        free_contents(lun);
        std::ptr::drop_in_place(lun);
        release(lun);
    }
}

/// ctl_backend_ramdisk_lun_shutdown: CTL let go of the LUN; its pieces
/// still queued finish first.
///
/// # Safety
///
/// `cbe_lun` is a LUN of this backend CTL let go of.
unsafe extern "C" fn lun_shutdown(cbe_lun: *mut sys::ctl_be_lun) {
    let lun = cbe_lun.cast::<RdLun>();
    // SAFETY: CTL calls this once, after the LUN's last I/O.
    unsafe {
        taskqueue::taskqueue_drain(taskqueue::taskqueue_thread, &raw mut (*lun).io_task);
        free_contents(lun);
        let sc = softc();
        let flags = (*lun).flags.fetch_or(LUN_UNCONFIGURED, Ordering::Relaxed);
        if flags & LUN_WAITING != 0 {
            SOFTC_CV.notify_all();
        } else {
            drop(sc);
            std::ptr::drop_in_place(lun);
            release(lun);
        }
    }
}

const _: () = {
    let _: [sys::be_func_t; 3] = [Some(submit), Some(config_read), Some(config_write)];
    let _: sys::be_ioctl_t = Some(ioctl);
    let _: sys::be_callback_t = Some(lun_shutdown);
    let _: sys::ctl_be_move_done_t = Some(move_done);
    let _: sys::task_fn_t = Some(worker);
};
