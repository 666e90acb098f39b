//! malloc(9) for the simulated kernel, with `vmstat -m` statistics per
//! malloc type, the checks of an INVARIANTS/WITNESS kernel (bad flags,
//! freeing memory that was not allocated or with the wrong type, sleeping
//! allocations with a mutex held, alignment requests malloc_aligned(9)
//! refuses), leak reports when a type is destroyed, and injected failures
//! of `M_NOWAIT` allocations.
//!
//! Plain malloc(9) guarantees only pointer alignment here (memory is handed
//! out 8 bytes past a 16-byte boundary), so code that needs more and does
//! not ask for it through malloc_aligned(9) fails its tests.

use std::alloc::Layout;
use std::collections::{HashMap, VecDeque};
use std::ffi::{CStr, c_int, c_void};
use std::sync::{Arc, Mutex};

use crate::fasthash::FastMap;
use crate::{console, kpanic, lock, sys};

/// How many of the latest malloc(9) calls [`requests`] keeps.
pub const REQUEST_LOG_LEN: usize = 4096;

/// Statistics of one malloc type, as `vmstat -m` shows them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TypeStats {
    /// The type's short description (`ks_shortdesc`).
    pub name: String,
    /// Allocations not yet freed.
    pub in_use: u64,
    /// Bytes not yet freed.
    pub bytes: u64,
    /// Allocations made.
    pub requests: u64,
    /// Allocations refused (injected `M_NOWAIT` failures).
    pub failures: u64,
}

/// One call to malloc(9), as a test may inspect it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The malloc type's name.
    pub type_name: String,
    /// Bytes asked for.
    pub size: usize,
    /// Alignment asked for (1 for plain malloc).
    pub align: usize,
    /// The flags (M_NOWAIT, M_WAITOK, M_ZERO).
    pub flags: c_int,
    /// Whether the allocation succeeded.
    pub ok: bool,
}

struct Live {
    base: usize,
    layout: Layout,
    size: usize,
    mtp: usize,
}

/// What a malloc type allocated and freed over its whole life, including
/// after it was destroyed (for the allocation balance of a module).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Balance {
    /// Successful allocations.
    pub allocated: u64,
    /// Frees.
    pub freed: u64,
}

impl Balance {
    /// Allocations never freed.
    pub fn outstanding(&self) -> u64 {
        self.allocated - self.freed
    }
}

/// A malloc(9) call as logged (its type by name, shared).
struct Logged {
    type_name: Arc<str>,
    size: usize,
    align: usize,
    flags: c_int,
    ok: bool,
}

/// A registered type: its statistics, and its name to share.
struct Type {
    stats: TypeStats,
    name: Arc<str>,
    /// Its allocations and frees, added to [`State::balances`] when the
    /// type is destroyed.
    balance: Balance,
}

#[derive(Default)]
struct State {
    /// Balances of destroyed types, by name.
    balances: HashMap<Arc<str>, Balance>,
    types: FastMap<usize, Type>,
    live: FastMap<usize, Live>,
    /// The latest calls, up to [`REQUEST_LOG_LEN`].
    requests: VecDeque<Logged>,
    /// Calls since boot.
    request_count: u64,
    /// Type name -> M_NOWAIT allocations to refuse, counting down; u64::MAX
    /// refuses all.
    fail_nowait: HashMap<String, u64>,
    leaks: Vec<String>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    let mut guard = STATE.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(State::default))
}

/// Forgets every type and statistic (at boot); memory still allocated by an
/// earlier boot stays allocated.
pub(crate) fn reset() {
    *STATE.lock().unwrap_or_else(|e| e.into_inner()) = Some(State::default());
}

fn type_name(mtp: *mut sys::malloc_type) -> String {
    // SAFETY: a malloc type's short description is a static string.
    unsafe { CStr::from_ptr((*mtp).ks_shortdesc) }
        .to_string_lossy()
        .into_owned()
}

/// Registers a malloc type the simulated kernel itself uses.
pub fn define(name: &'static CStr) -> *mut sys::malloc_type {
    // SAFETY: struct malloc_type is plain data.
    let mut mt: Box<sys::malloc_type> = Box::new(unsafe { std::mem::zeroed() });
    mt.ks_shortdesc = name.as_ptr();
    let mtp = Box::into_raw(mt);
    // SAFETY: a fresh malloc type.
    unsafe { malloc_init(mtp.cast()) };
    mtp
}

/// `malloc_init`: a module's `MALLOC_DEFINE` registers its type at load.
///
/// # Safety
///
/// `data` is a `struct malloc_type` with a short description.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_init(data: *mut c_void) {
    let mtp = data.cast::<sys::malloc_type>();
    let name = type_name(mtp);
    with(|s| {
        s.types.insert(
            mtp as usize,
            Type {
                name: name.as_str().into(),
                balance: Balance::default(),
                stats: TypeStats {
                    name,
                    ..TypeStats::default()
                },
            },
        )
    });
}

/// `malloc_uninit`: a module's type is destroyed at unload; memory still
/// allocated is reported as leaked, in FreeBSD's words.
///
/// # Safety
///
/// `data` is a malloc type registered with `malloc_init`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_uninit(data: *mut c_void) {
    let key = data as usize;
    let removed = with(|s| {
        let t = s.types.remove(&key)?;
        let b = s.balances.entry(t.name.clone()).or_default();
        b.allocated += t.balance.allocated;
        b.freed += t.balance.freed;
        Some(t)
    });
    let Some(Type { stats, .. }) = removed else {
        kpanic!("malloc_uninit: type {} was not initialised", type_name(data.cast()));
    };
    if stats.in_use > 0 {
        let msg = format!(
            "Warning: memory type {} leaked memory on destroy ({} allocations, {} bytes leaked).\n",
            stats.name, stats.in_use, stats.bytes
        );
        console::print(&msg);
        with(|s| s.leaks.push(msg));
    }
}

impl State {
    fn log(&mut self, type_name: &Arc<str>, size: usize, align: usize, flags: c_int, ok: bool) {
        if self.requests.len() == REQUEST_LOG_LEN {
            self.requests.pop_front();
        }
        self.requests.push_back(Logged {
            type_name: type_name.clone(),
            size,
            align,
            flags,
            ok,
        });
        self.request_count += 1;
    }
}

fn allocate(size: usize, align: usize, mtp: *mut sys::malloc_type, flags: c_int) -> *mut c_void {
    let key = mtp as usize;
    let wait = flags as u32 & (sys::M_NOWAIT | sys::M_WAITOK);
    // The type's name, and whether this allocation is refused.
    let checked = with(|s| {
        let name = s.types.get(&key)?.name.clone();
        let refuse = wait == sys::M_NOWAIT
            && !s.fail_nowait.is_empty()
            && match s.fail_nowait.get_mut(&*name) {
                Some(n) if *n > 0 => {
                    if *n != u64::MAX {
                        *n -= 1;
                    }
                    true
                }
                _ => false,
            };
        if refuse {
            s.log(&name, size, align, flags, false);
            if let Some(t) = s.types.get_mut(&key) {
                t.stats.failures += 1;
            }
        }
        Some((name, refuse))
    });
    let Some((name, refuse)) = checked else {
        kpanic!("malloc: unknown malloc type {:p}", mtp);
    };
    if wait != sys::M_NOWAIT && wait != sys::M_WAITOK {
        kpanic!("malloc: bad malloc flags: {flags:#x} (type {name})");
    }
    if wait == sys::M_WAITOK && !lock::holds_none() {
        lock::assert_may_sleep(&format!("malloc(M_WAITOK) of \"{name}\""));
    }
    if refuse {
        return std::ptr::null_mut();
    }
    // Hand out memory that is 8-aligned but not 16-aligned unless asked.
    let pad = if align <= 8 { 8 } else { 0 };
    let Ok(layout) = Layout::from_size_align(size.max(1) + pad, align.max(16)) else {
        kpanic!("malloc: impossible layout: size {size} align {align}");
    };
    // SAFETY: the layout has a non-zero size.
    let base = unsafe { std::alloc::alloc(layout) };
    if base.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    let p = base.wrapping_add(pad);
    let fill = if flags as u32 & sys::M_ZERO != 0 { 0 } else { 0xde };
    // SAFETY: `p` starts `size` writable bytes inside the allocation.
    unsafe { std::ptr::write_bytes(p, fill, size) };
    with(|s| {
        s.log(&name, size, align, flags, true);
        s.live.insert(
            p as usize,
            Live {
                base: base as usize,
                layout,
                size,
                mtp: key,
            },
        );
        if let Some(t) = s.types.get_mut(&key) {
            t.stats.in_use += 1;
            t.stats.bytes += size as u64;
            t.stats.requests += 1;
        }
        match s.balances.get_mut(&*name) {
            Some(b) => b.allocated += 1,
            None => {
                s.balances.insert(name, Balance { allocated: 1, freed: 0 });
            }
        }
    });
    p.cast()
}

/// malloc(9) (linked under this name by hosted builds; see ctlpass's build.rs).
///
/// # Safety
///
/// `mtp` is a registered malloc type.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn simkern_malloc(size: usize, mtp: *mut sys::malloc_type, flags: c_int) -> *mut c_void {
    allocate(size, 1, mtp, flags)
}

/// malloc_aligned(9): `align` must be a power of two no larger than a page
/// (KASSERTs in kern_malloc.c).
///
/// # Safety
///
/// `mtp` is a registered malloc type.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_aligned(
    size: usize,
    align: usize,
    mtp: *mut sys::malloc_type,
    flags: c_int,
) -> *mut c_void {
    if !align.is_power_of_two() || align > sys::PAGE_SIZE as usize {
        kpanic!("malloc_domainset_aligned: wrong align {align:#x} size {size:#x}");
    }
    allocate(size, align, mtp, flags)
}

/// free(9) (linked under this name by hosted builds).
///
/// # Safety
///
/// `addr` is NULL or memory from malloc(9) of type `mtp`, not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn simkern_free(addr: *mut c_void, mtp: *mut sys::malloc_type) {
    if addr.is_null() {
        return;
    }
    let freed = with(|s| {
        let live = s.live.remove(&(addr as usize))?;
        if live.mtp == mtp as usize
            && let Some(t) = s.types.get_mut(&live.mtp)
        {
            t.stats.in_use -= 1;
            t.stats.bytes -= live.size as u64;
            t.balance.freed += 1;
        }
        Some(live)
    });
    let Some(live) = freed else {
        kpanic!("free: address {addr:p} has not been allocated");
    };
    if live.mtp != mtp as usize {
        kpanic!(
            "free: type mismatch for {addr:p}: freed as {}, allocated as another type",
            type_name(mtp)
        );
    }
    // SAFETY: the allocation is dead; poison it, then return it.
    unsafe {
        std::ptr::write_bytes(addr.cast::<u8>(), 0xde, live.size);
        std::alloc::dealloc(live.base as *mut u8, live.layout);
    }
}

/// `vmstat -m`: statistics of every registered malloc type, by name.
pub fn vmstat_m() -> Vec<TypeStats> {
    let mut v: Vec<TypeStats> = with(|s| s.types.values().map(|t| t.stats.clone()).collect());
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// Statistics of the malloc type named `name`, if registered.
pub fn stats(name: &str) -> Option<TypeStats> {
    vmstat_m().into_iter().find(|t| t.name == name)
}

/// The latest malloc(9) calls since boot (up to [`REQUEST_LOG_LEN`]),
/// oldest first.
pub fn requests() -> Vec<Request> {
    with(|s| {
        s.requests
            .iter()
            .map(|l| Request {
                type_name: l.type_name.to_string(),
                size: l.size,
                align: l.align,
                flags: l.flags,
                ok: l.ok,
            })
            .collect()
    })
}

/// How many malloc(9) calls were made since boot.
pub fn request_count() -> u64 {
    with(|s| s.request_count)
}

/// The allocation balance of every malloc type since boot, by name.
pub fn balances() -> Vec<(String, Balance)> {
    let mut v: Vec<(String, Balance)> = with(|s| {
        let mut all = s.balances.clone();
        for t in s.types.values() {
            let b = all.entry(t.name.clone()).or_default();
            b.allocated += t.balance.allocated;
            b.freed += t.balance.freed;
        }
        all.into_iter().map(|(n, b)| (n.to_string(), b)).collect()
    });
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// The leak warnings printed when malloc types were destroyed.
pub fn leaks() -> Vec<String> {
    with(|s| s.leaks.clone())
}

/// Makes the next `count` `M_NOWAIT` allocations of type `name` fail
/// (`u64::MAX`: all of them, until changed).
pub fn fail_nowait(name: &str, count: u64) {
    with(|s| s.fail_nowait.insert(name.to_owned(), count));
}
