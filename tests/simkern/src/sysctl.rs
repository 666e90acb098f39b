//! sysctl(9) of the simulated kernel, after FreeBSD 15's
//! `sys/kern/kern_sysctl.c`: the static OIDs of a module's `set_sysctl_set`
//! (registered at load, removed at unload), the dynamic ones of
//! `sysctl_add_oid` in contexts (`sysctl_ctx_init`, `sysctl_ctx_free`),
//! loader tunables fetched from the kernel environment when a
//! `CTLFLAG_TUN` OID is registered (`sysctl_load_tunable_by_oid_locked`,
//! `getenv_array` of `kern_environment.c`), the default handlers
//! (`sysctl_handle_32`, `_64`, `_string`), and requests as `sysctl(8)`
//! makes them (`sysctl_root`: `EISDIR` for a node, `EPERM` for a write to a
//! read-only OID, the handler run without the tree lock).
//!
//! Children are kept in OID number order, as the kernel's RB tree keeps
//! them: an `OID_AUTO` OID gets a number below the one before, so a node
//! lists its children newest first.  Dynamic OIDs, their names, and
//! context entries are allocated from the malloc type `sysctloid`, as in
//! FreeBSD, so that a context not freed shows as a leak.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::shell::args::strtoumax;
use crate::{console, malloc, sys};

/// The root of the tree (`sysctl__children`).
static mut ROOT: sys::sysctl_oid_list = sys::sysctl_oid_list {
    rbh_root: std::ptr::null_mut(),
};
/// `kern`.
static mut KERN: sys::sysctl_oid =
    // SAFETY: struct sysctl_oid is plain data; set up by `reset`.
    unsafe { std::mem::zeroed() };
/// `kern.cam`.
static mut KERN_CAM: sys::sysctl_oid =
    // SAFETY: as above.
    unsafe { std::mem::zeroed() };

/// `kern.cam.ctl`, the node CTL (ctl.c) declares and backends hang theirs
/// under.
#[unsafe(no_mangle)]
pub static mut sysctl___kern_cam_ctl: sys::sysctl_oid =
    // SAFETY: as above.
    unsafe { std::mem::zeroed() };

/// `CTL_KERN`.
const CTL_KERN: c_int = 1;

type Oid = *mut sys::sysctl_oid;
type List = *mut sys::sysctl_oid_list;

/// The tree: each list's children, by OID number.
struct Tree {
    /// Children-list address -> OID number -> OID address.
    lists: HashMap<usize, BTreeMap<c_int, usize>>,
    /// The last automatic OID number (`newoid` of sysctl_register_oid).
    newoid: c_int,
    /// `M_SYSCTLOID`.
    mtype: usize,
    /// The kernel environment (kenv(1), loader.conf(5)).
    kenv: BTreeMap<String, String>,
}

// SAFETY: the addresses are of OIDs reached only under the tree's lock (or,
// for a handler's arguments, while it is counted as running).
unsafe impl Send for Tree {}

static TREE: Mutex<Option<Tree>> = Mutex::new(None);
/// Signalled when a dynamic OID's last running handler returns.
static HANDLER_DONE: Condvar = Condvar::new();

fn lock() -> MutexGuard<'static, Option<Tree>> {
    TREE.lock().unwrap_or_else(|e| e.into_inner())
}

fn with<R>(f: impl FnOnce(&mut Tree) -> R) -> R {
    let mut guard = lock();
    f(guard.as_mut().expect("the machine booted"))
}

fn name_of(oid: Oid) -> String {
    // SAFETY: a registered OID has a name.
    unsafe { CStr::from_ptr((*oid).oid_name) }
        .to_string_lossy()
        .into_owned()
}

fn children_of(oid: Oid) -> List {
    // SAFETY: only the address of the children list is taken.
    unsafe { &raw mut (*oid).oid_children }
}

/// The OID whose children `list` is (`SYSCTL_PARENT`), `None` for the root.
fn owner(list: List) -> Option<Oid> {
    if list == &raw mut ROOT {
        return None;
    }
    // oid_children is a sysctl_oid's first field.
    Some(list.cast())
}

/// The full name of `oid` (`kern.cam.ctl...`).
fn path_of(oid: Oid) -> String {
    let mut parts = vec![name_of(oid)];
    // SAFETY: a registered OID's parent list belongs to a registered node.
    let mut up = owner(unsafe { (*oid).oid_parent });
    while let Some(p) = up {
        parts.push(name_of(p));
        // SAFETY: as above.
        up = owner(unsafe { (*p).oid_parent });
    }
    parts.reverse();
    parts.join(".")
}

fn kind(oid: Oid) -> u32 {
    // SAFETY: a valid OID.
    unsafe { (*oid).oid_kind }
}

fn is_node(oid: Oid) -> bool {
    kind(oid) & sys::CTLTYPE == sys::CTLTYPE_NODE
}

fn find_name(t: &Tree, list: List, name: &str) -> Option<Oid> {
    t.lists
        .get(&(list as usize))?
        .values()
        .map(|&o| o as Oid)
        .find(|&o| name_of(o) == name)
}

/// Sets up the nodes the kernel provides (at boot): `kern`, `kern.cam`
/// and CTL's `kern.cam.ctl`; forgets the kernel environment.
pub(crate) fn reset() {
    *lock() = Some(Tree {
        lists: HashMap::new(),
        newoid: 0,
        mtype: malloc::define(c"sysctloid") as usize,
        kenv: BTreeMap::new(),
    });
    // SAFETY: the static nodes are set up once per boot, before any module
    // refers to them; only addresses of the statics are taken.
    unsafe {
        let nodes: [(Oid, List, &'static CStr, c_int, &'static CStr); 3] = [
            (
                &raw mut KERN,
                &raw mut ROOT,
                c"kern",
                CTL_KERN,
                c"High kernel, proc, limits &c",
            ),
            (
                &raw mut KERN_CAM,
                children_of(&raw mut KERN),
                c"cam",
                sys::OID_AUTO,
                c"CAM Subsystem",
            ),
            (
                &raw mut sysctl___kern_cam_ctl,
                children_of(&raw mut KERN_CAM),
                c"ctl",
                sys::OID_AUTO,
                c"CAM Target Layer",
            ),
        ];
        for (oid, parent, name, number, descr) in nodes {
            oid.write(std::mem::zeroed());
            (*oid).oid_parent = parent;
            (*oid).oid_number = number;
            (*oid).oid_kind = sys::CTLTYPE_NODE | sys::CTLFLAG_RW | sys::CTLFLAG_MPSAFE;
            (*oid).oid_name = name.as_ptr();
            (*oid).oid_fmt = c"N".as_ptr();
            (*oid).oid_descr = descr.as_ptr();
            (*oid).oid_refcnt = 1;
        }
        register(&[&raw mut KERN, &raw mut KERN_CAM, &raw mut sysctl___kern_cam_ctl]);
    }
}

/// `kenv name=value` (before `kldload`: a loader tunable).
pub fn kenv_set(name: &str, value: &str) {
    with(|t| t.kenv.insert(name.to_owned(), value.to_owned()));
}

/// `kenv`: every variable, by name.
pub fn kenv_all() -> Vec<(String, String)> {
    with(|t| t.kenv.clone().into_iter().collect())
}

/// `kenv name`.
pub fn kenv_get(name: &str) -> Option<String> {
    with(|t| t.kenv.get(name).cloned())
}

/// `sysctl_register_oid`, with the tree locked; returns the OID if its
/// tunable must be fetched (which runs its handler, without the lock).
fn register_locked(t: &mut Tree, oid: Oid) -> Option<Oid> {
    // SAFETY: a valid OID being registered.
    let parent = unsafe { (*oid).oid_parent };
    if let Some(p) = find_name(t, parent, &name_of(oid)) {
        if is_node(p) {
            // SAFETY: a registered OID, under the lock.
            unsafe { (*p).oid_refcnt += 1 };
        } else {
            console::print(&format!("sysctl_register_oid: can't re-use a leaf ({})!\n", path_of(p)));
        }
        return None;
    }
    // SAFETY: as above.
    let asked = unsafe { (*oid).oid_number };
    let mut number = asked;
    if number < 0 {
        t.newoid -= 1;
        if t.newoid < sys::CTL_AUTO_START as c_int {
            t.newoid = 0x7fff_ffff;
        }
        number = t.newoid;
    }
    let list = t.lists.entry(parent as usize).or_default();
    let mut wrapped = 0;
    while list.contains_key(&number) {
        if number < sys::CTL_AUTO_START as c_int || number == 0x7fff_ffff {
            number = sys::CTL_AUTO_START as c_int;
            wrapped += 1;
            if wrapped > 2 {
                crate::kpanic!("sysctl: Out of OID numbers");
            }
        } else {
            number += 1;
        }
    }
    if (0..sys::CTL_AUTO_START as c_int).contains(&asked) && number >= sys::CTL_AUTO_START as c_int {
        console::print(&format!(
            "sysctl: OID number({asked}) is already in use for '{}'\n",
            name_of(oid)
        ));
    }
    list.insert(number, oid as usize);
    let k = kind(oid);
    // SAFETY: as above.
    unsafe {
        (*oid).oid_number = number;
        if k & sys::CTLTYPE != sys::CTLTYPE_NODE && k & sys::CTLFLAG_TUN != 0 && k & sys::CTLFLAG_NOFETCH == 0 {
            // Only fetched once.
            (*oid).oid_kind |= sys::CTLFLAG_NOFETCH;
            return Some(oid);
        }
    }
    None
}

/// `sysctl_unregister_oid`, with the tree locked.
fn unregister_locked(t: &mut Tree, oid: Oid) {
    // SAFETY: a valid OID.
    let (parent, number) = unsafe { ((*oid).oid_parent, (*oid).oid_number) };
    let removed = t
        .lists
        .get_mut(&(parent as usize))
        .is_some_and(|l| l.get(&number) == Some(&(oid as usize)) && l.remove(&number).is_some());
    if !removed {
        console::print(&format!(
            "sysctl_unregister_oid: failed({}) to unregister sysctl({})\n",
            sys::ENOENT,
            name_of(oid)
        ));
    }
}

/// Registers statically declared OIDs (a module's linker set, at load).
pub(crate) fn register(oids: &[Oid]) {
    let tunables: Vec<Oid> = with(|t| oids.iter().filter_map(|&o| register_locked(t, o)).collect());
    for oid in tunables {
        load_tunable(oid);
    }
}

/// Removes statically declared OIDs (`sysctl_unregister_oid`, at unload).
pub(crate) fn unregister(oids: &[Oid]) {
    with(|t| oids.iter().for_each(|&o| unregister_locked(t, o)));
}

/// A kenv value as an array of `size`-byte unsigned integers
/// (`getenv_array` with `GETENV_UNSIGNED`: strtoq(3) numbers with an
/// optional k, m, g or t, separated by blanks or commas): their bytes, or
/// `None` if it is not such numbers.
fn getenv_array(value: &str, size: usize) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = value;
    while !rest.is_empty() {
        let (v, any, overflow, after) = strtoumax(rest);
        if !any || (rest.trim_start().starts_with('-') && v != 0) {
            return None;
        }
        // strtoq(3) stops at INT64_MAX.
        let v = if overflow || v > i64::MAX as u64 {
            i64::MAX as u64
        } else {
            v
        };
        let (shift, after) = match after.as_bytes().first() {
            Some(b't' | b'T') => (40, &after[1..]),
            Some(b'g' | b'G') => (30, &after[1..]),
            Some(b'm' | b'M') => (20, &after[1..]),
            Some(b'k' | b'K') => (10, &after[1..]),
            None | Some(b' ' | b'\t' | b',') => (0, after),
            Some(_) => return None,
        };
        rest = after.trim_start_matches([' ', '\t', ',']);
        let shifted = (v as i64).wrapping_shl(shift);
        if shifted >> shift != v as i64 {
            return None;
        }
        match size {
            4 => out.extend_from_slice(&u32::try_from(shifted).ok()?.to_ne_bytes()),
            _ => out.extend_from_slice(&(shifted as u64).to_ne_bytes()),
        }
    }
    (!out.is_empty()).then_some(out)
}

/// `sysctl_load_tunable_by_oid_locked`: a `CTLFLAG_TUN` OID takes its value
/// from the kernel environment, through its handler, when registered.
fn load_tunable(oid: Oid) {
    let path = path_of(oid);
    let Some(value) = kenv_get(&path) else {
        return;
    };
    let data = match kind(oid) & sys::CTLTYPE {
        sys::CTLTYPE_U32 | sys::CTLTYPE_UINT => getenv_array(&value, 4),
        sys::CTLTYPE_U64 => getenv_array(&value, 8),
        sys::CTLTYPE_STRING => Some(value.into_bytes()),
        _ => None,
    };
    let Some(data) = data else {
        return;
    };
    let mut req = request(std::ptr::null_mut(), 0, data.as_ptr().cast(), data.len());
    with(|_| enter_handler(oid));
    let error = run_handler(oid, &mut req);
    if error != 0 {
        console::print(&format!("Setting sysctl {path} failed: {error}\n"));
    }
}

/// A request with the kernel's transfer functions (as kernel_sysctl and
/// the tunable fetch make them).
fn request(old: *mut c_void, oldlen: usize, new: *const c_void, newlen: usize) -> sys::sysctl_req {
    sys::sysctl_req {
        td: std::ptr::null_mut(),
        lock: 1, // REQ_UNWIRED
        oldptr: old,
        oldlen,
        oldidx: 0,
        oldfunc: Some(sysctl_old_kernel),
        newptr: new,
        newlen,
        newidx: 0,
        newfunc: Some(sysctl_new_kernel),
        validlen: oldlen,
        flags: 0,
    }
}

/// Counts a handler as running on `oid` if it is dynamic (with the tree
/// locked, where it was found): `sysctl_ctx_free` waits for it.
fn enter_handler(oid: Oid) {
    if kind(oid) & sys::CTLFLAG_DYN != 0 {
        // SAFETY: a registered OID, under the lock.
        unsafe { (*oid).oid_running += 1 };
    }
}

/// `sysctl_root_handler_locked`: runs the handler of an OID counted by
/// [`enter_handler`], without the tree lock.
fn run_handler(oid: Oid, req: &mut sys::sysctl_req) -> c_int {
    // SAFETY: the OID's handler, with its own arguments; the OID stays
    // allocated while counted as running.
    let error = unsafe {
        match (*oid).oid_handler {
            Some(h) => h(oid, (*oid).oid_arg1, (*oid).oid_arg2, req),
            None => sys::EINVAL as c_int,
        }
    };
    if kind(oid) & sys::CTLFLAG_DYN != 0 {
        // SAFETY: as above.
        with(|_| unsafe { (*oid).oid_running -= 1 });
        HANDLER_DONE.notify_all();
    }
    error
}

/// `sysctl_old_kernel`: copies handler output to the request's buffer.
unsafe extern "C" fn sysctl_old_kernel(req: *mut sys::sysctl_req, p: *const c_void, l: usize) -> c_int {
    // SAFETY: the request and `l` bytes at `p` are valid (the handler's
    // contract); the buffer has `oldlen` bytes.
    unsafe {
        let r = &mut *req;
        let mut i = 0;
        if !r.oldptr.is_null() {
            i = if r.oldlen <= r.oldidx {
                0
            } else {
                l.min(r.oldlen - r.oldidx)
            };
            if i > 0 {
                std::ptr::copy(p.cast::<u8>(), r.oldptr.cast::<u8>().add(r.oldidx), i);
            }
        }
        r.oldidx += l;
        if !r.oldptr.is_null() && i != l {
            return sys::ENOMEM as c_int;
        }
    }
    0
}

/// `sysctl_new_kernel`: copies the request's new value to the handler.
unsafe extern "C" fn sysctl_new_kernel(req: *mut sys::sysctl_req, p: *mut c_void, l: usize) -> c_int {
    // SAFETY: as above, for the new value.
    unsafe {
        let r = &mut *req;
        if r.newptr.is_null() {
            return 0;
        }
        if r.newlen - r.newidx < l {
            return sys::EINVAL as c_int;
        }
        std::ptr::copy(r.newptr.cast::<u8>().add(r.newidx), p.cast::<u8>(), l);
        r.newidx += l;
    }
    0
}

fn out(req: *mut sys::sysctl_req, p: *const c_void, l: usize) -> c_int {
    // SAFETY: SYSCTL_OUT: the request's own transfer function.
    unsafe { ((*req).oldfunc.expect("a request has an oldfunc"))(req, p, l) }
}

fn input(req: *mut sys::sysctl_req, p: *mut c_void, l: usize) -> c_int {
    // SAFETY: SYSCTL_IN, likewise.
    unsafe { ((*req).newfunc.expect("a request has a newfunc"))(req, p, l) }
}

macro_rules! handle_fixed {
    ($name:ident, $t:ty) => {
        /// The default handler of a fixed-size integer (kern_sysctl.c):
        /// copies the value (`arg1`, else `arg2`) out, and a new one in.
        ///
        /// # Safety
        ///
        /// Called as a sysctl handler: `arg1` is NULL or the variable.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(
            _oidp: *mut sys::sysctl_oid,
            arg1: *mut c_void,
            arg2: sys::intmax_t,
            req: *mut sys::sysctl_req,
        ) -> c_int {
            let v: $t = if arg1.is_null() {
                arg2 as $t
            } else {
                // SAFETY: the caller's contract: arg1 is the variable.
                unsafe { arg1.cast::<$t>().read() }
            };
            let error = out(req, (&raw const v).cast(), size_of::<$t>());
            // SAFETY: a valid request.
            if error != 0 || unsafe { (*req).newptr.is_null() } {
                return error;
            }
            if arg1.is_null() {
                return sys::EPERM as c_int;
            }
            input(req, arg1, size_of::<$t>())
        }
    };
}

handle_fixed!(sysctl_handle_32, u32);
handle_fixed!(sysctl_handle_64, u64);

/// `sysctl_handle_string`: a NUL-terminated string at `arg1`; `arg2` is
/// its buffer's size (0: a read-only string).
///
/// # Safety
///
/// Called as a sysctl handler: `arg1` is a C string in a buffer of `arg2`
/// bytes (or of its length, when `arg2` is 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sysctl_handle_string(
    oidp: *mut sys::sysctl_oid,
    arg1: *mut c_void,
    arg2: sys::intmax_t,
    req: *mut sys::sysctl_req,
) -> c_int {
    // SAFETY: the caller's contract.
    let text = unsafe { CStr::from_ptr(arg1.cast::<c_char>()) }
        .to_bytes_with_nul()
        .to_vec();
    let mut arg2 = arg2;
    if kind(oidp) & (sys::CTLFLAG_WR | sys::CTLFLAG_TUN) == 0 || arg2 == 0 {
        arg2 = text.len() as sys::intmax_t;
    }
    // SAFETY: a valid request.
    let has_old = unsafe { !(*req).oldptr.is_null() };
    let error = if has_old {
        out(req, text.as_ptr().cast(), text.len())
    } else {
        out(req, std::ptr::null(), text.len())
    };
    // SAFETY: a valid request.
    if error != 0 || unsafe { (*req).newptr.is_null() } {
        return error;
    }
    // SAFETY: as above.
    let left = unsafe { (*req).newlen - (*req).newidx };
    if left as sys::intmax_t >= arg2 {
        return sys::EINVAL as c_int;
    }
    let mut tmp = vec![0u8; left];
    let error = input(req, tmp.as_mut_ptr().cast(), left);
    if error != 0 {
        return error;
    }
    // SAFETY: `left` bytes and a NUL fit the variable's buffer (checked).
    unsafe {
        std::ptr::copy(tmp.as_ptr(), arg1.cast::<u8>(), left);
        arg1.cast::<u8>().add(left).write(0);
    }
    0
}

fn oid_malloc(t: &Tree, size: usize) -> *mut c_void {
    // SAFETY: a registered malloc type; M_WAITOK never fails.
    unsafe { malloc::simkern_malloc(size, t.mtype as *mut _, (sys::M_WAITOK | sys::M_ZERO) as c_int) }
}

fn oid_free(t: &Tree, p: *const c_void) {
    // SAFETY: memory from oid_malloc.
    unsafe { malloc::simkern_free(p.cast_mut(), t.mtype as *mut _) }
}

fn strdup(t: &Tree, s: *const c_char) -> *const c_char {
    // SAFETY: a C string.
    let bytes = unsafe { CStr::from_ptr(s) }.to_bytes_with_nul();
    let p = oid_malloc(t, bytes.len()).cast::<u8>();
    // SAFETY: fresh memory of that size.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len()) };
    p.cast()
}

/// `sysctl_ctx_init`: an empty context (`TAILQ_INIT`).
///
/// # Safety
///
/// `c` is NULL or a context list.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sysctl_ctx_init(c: *mut sys::sysctl_ctx_list) -> c_int {
    if c.is_null() {
        return sys::EINVAL as c_int;
    }
    // SAFETY: the caller's contract.
    unsafe {
        (*c).tqh_first = std::ptr::null_mut();
        (*c).tqh_last = &raw mut (*c).tqh_first;
    }
    0
}

/// `sysctl_ctx_entry_add`: records `oid` at the head of the context.
fn ctx_entry_add(t: &Tree, c: *mut sys::sysctl_ctx_list, oid: Oid) {
    let e = oid_malloc(t, size_of::<sys::sysctl_ctx_entry>()).cast::<sys::sysctl_ctx_entry>();
    // SAFETY: TAILQ_INSERT_HEAD on a list sysctl_ctx_init set up, with a
    // fresh entry.
    unsafe {
        (*e).entry = oid;
        (*e).link.tqe_next = (*c).tqh_first;
        if (*c).tqh_first.is_null() {
            (*c).tqh_last = &raw mut (*e).link.tqe_next;
        } else {
            (*(*c).tqh_first).link.tqe_prev = &raw mut (*e).link.tqe_next;
        }
        (*c).tqh_first = e;
        (*e).link.tqe_prev = &raw mut (*c).tqh_first;
    }
}

/// The entries of a context, first to last.
fn ctx_entries(c: *mut sys::sysctl_ctx_list) -> Vec<*mut sys::sysctl_ctx_entry> {
    let mut v = Vec::new();
    // SAFETY: a context's TAILQ.
    let mut e = unsafe { (*c).tqh_first };
    while !e.is_null() {
        v.push(e);
        // SAFETY: as above.
        e = unsafe { (*e).link.tqe_next };
    }
    v
}

/// `sysctl_add_oid`: a dynamic OID under `parent`, recorded in `clist`;
/// an existing node of that name is shared; NULL if a leaf has the name.
///
/// # Safety
///
/// As sysctl(9) requires: `parent` is a registered node's children list,
/// the strings are C strings, `arg1` suits the handler.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sysctl_add_oid(
    clist: *mut sys::sysctl_ctx_list,
    parent: *mut sys::sysctl_oid_list,
    number: c_int,
    name: *const c_char,
    kind: c_int,
    arg1: *mut c_void,
    arg2: sys::intmax_t,
    handler: Option<
        unsafe extern "C" fn(*mut sys::sysctl_oid, *mut c_void, sys::intmax_t, *mut sys::sysctl_req) -> c_int,
    >,
    fmt: *const c_char,
    descr: *const c_char,
    label: *const c_char,
) -> *mut sys::sysctl_oid {
    if parent.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: a C string (the caller's contract).
    let name_str = unsafe { CStr::from_ptr(name) }.to_string_lossy().into_owned();
    let tunable = with(|t| {
        if let Some(p) = find_name(t, parent, &name_str) {
            if is_node(p) {
                // SAFETY: a registered OID, under the lock.
                unsafe { (*p).oid_refcnt += 1 };
                if !clist.is_null() {
                    ctx_entry_add(t, clist, p);
                }
                return Ok((p, None));
            }
            console::print(&format!("sysctl_add_oid: can't re-use a leaf ({})!\n", path_of(p)));
            return Err(());
        }
        let oid = oid_malloc(t, size_of::<sys::sysctl_oid>()).cast::<sys::sysctl_oid>();
        // SAFETY: a fresh, zeroed OID; the strings are copied.
        unsafe {
            (*oid).oid_parent = parent;
            (*oid).oid_number = number;
            (*oid).oid_refcnt = 1;
            (*oid).oid_name = strdup(t, name);
            (*oid).oid_handler = handler;
            (*oid).oid_kind = sys::CTLFLAG_DYN | kind as u32;
            (*oid).oid_arg1 = arg1;
            (*oid).oid_arg2 = arg2;
            (*oid).oid_fmt = fmt;
            if !descr.is_null() {
                (*oid).oid_descr = strdup(t, descr);
            }
            if !label.is_null() {
                (*oid).oid_label = strdup(t, label);
            }
        }
        if !clist.is_null() {
            ctx_entry_add(t, clist, oid);
        }
        Ok((oid, register_locked(t, oid)))
    });
    match tunable {
        Ok((oid, fetch)) => {
            if let Some(o) = fetch {
                load_tunable(o);
            }
            oid
        }
        Err(()) => std::ptr::null_mut(),
    }
}

type Guard = MutexGuard<'static, Option<Tree>>;

/// `sysctl_remove_oid_locked`: unregisters a dynamic OID (`del`: and frees
/// it, once no handler runs on it).
fn remove_oid_locked(mut guard: Guard, oid: Oid, del: bool) -> (Guard, c_int) {
    if kind(oid) & sys::CTLFLAG_DYN == 0 {
        console::print(&format!(
            "Warning: can't remove non-dynamic nodes ({})!\n",
            name_of(oid)
        ));
        return (guard, sys::EINVAL as c_int);
    }
    let t = guard.as_mut().expect("the machine booted");
    // SAFETY: a registered OID, under the lock.
    let refcnt = unsafe { (*oid).oid_refcnt };
    let child = t
        .lists
        .get(&(children_of(oid) as usize))
        .and_then(|l| l.values().next().copied());
    if is_node(oid)
        && refcnt == 1
        && let Some(child) = child
    {
        console::print(&format!(
            "Warning: failed attempt to remove oid {} with child {}\n",
            name_of(oid),
            name_of(child as Oid)
        ));
        return (guard, sys::ENOTEMPTY as c_int);
    }
    if refcnt > 1 {
        // SAFETY: as above.
        unsafe { (*oid).oid_refcnt -= 1 };
        return (guard, 0);
    }
    unregister_locked(t, oid);
    if del {
        // SAFETY: as above (the flag and counter are read and written under
        // the lock).
        while unsafe { (*oid).oid_running } > 0 {
            // SAFETY: as above.
            unsafe { (*oid).oid_kind |= sys::CTLFLAG_DYING };
            guard = HANDLER_DONE.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
        let t = guard.as_mut().expect("the machine booted");
        t.lists.remove(&(children_of(oid) as usize));
        // SAFETY: the OID and its strings came from oid_malloc and nothing
        // refers to them any more.
        unsafe {
            for s in [(*oid).oid_descr, (*oid).oid_label, (*oid).oid_name] {
                if !s.is_null() {
                    oid_free(t, s.cast());
                }
            }
        }
        oid_free(t, oid.cast());
    }
    (guard, 0)
}

/// `sysctl_ctx_free`: removes every OID of the context (or none, `EBUSY`,
/// if one cannot go: a node with children another context added), waiting
/// for the handlers running on them, and frees the entries.
///
/// # Safety
///
/// `clist` is a context sysctl_ctx_init set up.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sysctl_ctx_free(clist: *mut sys::sysctl_ctx_list) -> c_int {
    let entries = ctx_entries(clist);
    let mut guard = lock();
    // A dry run: unregister only.
    let mut failed = None;
    for (i, &e) in entries.iter().enumerate() {
        // SAFETY: a context entry.
        let (g, error) = remove_oid_locked(guard, unsafe { (*e).entry }, false);
        guard = g;
        if error != 0 {
            failed = Some(i);
            break;
        }
    }
    // Restore what the dry run unregistered, from the end.
    let t = guard.as_mut().expect("the machine booted");
    for &e in entries[..failed.unwrap_or(entries.len())].iter().rev() {
        // SAFETY: as above.
        register_locked(t, unsafe { (*e).entry });
    }
    if failed.is_some() {
        return sys::EBUSY as c_int;
    }
    for e in entries {
        // SAFETY: as above.
        let oid = unsafe { (*e).entry };
        let (g, error) = remove_oid_locked(guard, oid, true);
        guard = g;
        if error != 0 {
            crate::kpanic!("sysctl_remove_oid: corrupt tree, entry: {}", name_of(oid));
        }
        oid_free(guard.as_ref().expect("the machine booted"), e.cast());
    }
    0
}

/// One OID, as `sysctl -a`, `sysctl -d` and `sysctl -t` show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Full name, e.g. `kern.cam.ctl.passthrough`.
    pub name: String,
    /// Whether it is a node (has children) rather than a value.
    pub node: bool,
    /// Its description (`sysctl -d`).
    pub descr: String,
    /// `oid_kind`: type and flags.
    pub kind: u32,
}

fn entry_of(oid: Oid) -> Entry {
    // SAFETY: a registered OID.
    let descr = unsafe { (*oid).oid_descr };
    Entry {
        name: path_of(oid),
        node: is_node(oid),
        descr: if descr.is_null() {
            String::new()
        } else {
            // SAFETY: a C string.
            unsafe { CStr::from_ptr(descr) }.to_string_lossy().into_owned()
        },
        kind: kind(oid),
    }
}

/// `name2oid`: the OID named `name`, if registered.
fn lookup_locked(t: &Tree, name: &str) -> Option<Oid> {
    let mut list = &raw mut ROOT;
    let mut found = None;
    for part in name.split('.') {
        if found.is_some_and(|o| !is_node(o)) {
            return None;
        }
        let o = find_name(t, list, part)?;
        list = children_of(o);
        found = Some(o);
    }
    found
}

/// Appends `oid`'s descendants, depth first, each node's children in OID
/// number order (`CTL_SYSCTL_NEXTNOSKIP`).
fn descendants(t: &Tree, oid: Oid, out: &mut Vec<Entry>) {
    let Some(children) = t.lists.get(&(children_of(oid) as usize)) else {
        return;
    };
    for &c in children.values() {
        out.push(entry_of(c as Oid));
        if is_node(c as Oid) {
            descendants(t, c as Oid, out);
        }
    }
}

/// The OID `name` and, for a node, every OID under it, in the order
/// sysctl(8) walks them; empty if there is no such OID (`name` empty: the
/// whole tree).
pub fn list(name: &str) -> Vec<Entry> {
    with(|t| {
        let mut out = Vec::new();
        if name.is_empty() {
            let root = &raw mut ROOT;
            for &c in t
                .lists
                .get(&(root as usize))
                .map(|l| l.values().copied().collect::<Vec<_>>())
                .unwrap_or_default()
                .iter()
            {
                out.push(entry_of(c as Oid));
                descendants(t, c as Oid, &mut out);
            }
            return out;
        }
        if let Some(o) = lookup_locked(t, name) {
            out.push(entry_of(o));
            if is_node(o) {
                descendants(t, o, &mut out);
            }
        }
        out
    })
}

/// A value as sysctl(8) reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// `CTLTYPE_U32` (and `CTLTYPE_UINT`).
    U32(u32),
    /// `CTLTYPE_U64`.
    U64(u64),
    /// `CTLTYPE_STRING`, up to its NUL.
    String(String),
}

/// `sysctl_root` for `name`: the checks, then the handler; the OID found.
fn call(name: &str, req: &mut sys::sysctl_req) -> Result<Oid, c_int> {
    let oid = with(|t| {
        let oid = lookup_locked(t, name).ok_or(sys::ENOENT as c_int)?;
        // SAFETY: a registered OID, under the lock.
        let handler = unsafe { (*oid).oid_handler };
        if is_node(oid) && handler.is_none() {
            return Err(sys::EISDIR as c_int);
        }
        if !req.newptr.is_null() && kind(oid) & sys::CTLFLAG_WR == 0 {
            return Err(sys::EPERM as c_int);
        }
        if handler.is_none() {
            return Err(sys::EINVAL as c_int);
        }
        enter_handler(oid);
        Ok(oid)
    })?;
    match run_handler(oid, req) {
        0 => Ok(oid),
        e => Err(e),
    }
}

/// Reads `name` as sysctl(8) does: its size first, then into a buffer of
/// twice that; errno on failure (`ENOENT`, `EISDIR` for a node, ...).
pub fn get(name: &str) -> Result<Value, c_int> {
    let mut req = request(std::ptr::null_mut(), 0, std::ptr::null(), 0);
    call(name, &mut req)?;
    let mut buf = vec![0u8; req.oldidx * 2 + 1];
    let mut req = request(buf.as_mut_ptr().cast(), buf.len() - 1, std::ptr::null(), 0);
    let oid = call(name, &mut req)?;
    buf.truncate(req.oldidx.min(buf.len() - 1));
    Ok(match kind(oid) & sys::CTLTYPE {
        sys::CTLTYPE_U32 | sys::CTLTYPE_UINT => Value::U32(u32::from_ne_bytes(
            buf.get(..4)
                .and_then(|b| b.try_into().ok())
                .ok_or(sys::EINVAL as c_int)?,
        )),
        sys::CTLTYPE_U64 => Value::U64(u64::from_ne_bytes(
            buf.get(..8)
                .and_then(|b| b.try_into().ok())
                .ok_or(sys::EINVAL as c_int)?,
        )),
        _ => {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            Value::String(String::from_utf8_lossy(&buf[..end]).into_owned())
        }
    })
}

/// Writes `new` (the value's bytes, as sysctl(8) passes them) to `name`;
/// errno on failure (`EPERM` for a read-only OID, the handler's error).
pub fn set(name: &str, new: &[u8]) -> Result<(), c_int> {
    let mut req = request(std::ptr::null_mut(), 0, new.as_ptr().cast(), new.len());
    call(name, &mut req).map(drop)
}
