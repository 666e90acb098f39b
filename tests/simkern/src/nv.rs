//! nvlist(9) for the simulated kernel: the name/value lists CTL passes LUN
//! options in.  Only string values are modelled (ctladm and ctld send only
//! strings).  As in libnv: adding a name that exists sets the list's error
//! (EEXIST) and adds nothing, getting a missing element aborts (a panic),
//! and allocation sleeps (M_WAITOK), so no mutex may be held.  Lists are
//! counted while they live, so that tests can see one leak.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::{kpanic, lock, sys};

struct NvList {
    items: Vec<(CString, CString)>,
    error: c_int,
}

fn list<'a>(nvl: *const sys::nvlist_t) -> &'a mut NvList {
    if nvl.is_null() {
        kpanic!("nvlist: NULL list");
    }
    // SAFETY: every nvlist_t the simulated kernel hands out is a boxed NvList.
    unsafe { &mut *nvl.cast_mut().cast::<NvList>() }
}

fn name_of(name: *const c_char) -> CString {
    // SAFETY: callers pass NUL-terminated names.
    unsafe { CStr::from_ptr(name) }.to_owned()
}

/// Lists created and not yet destroyed.
static LIVE: AtomicUsize = AtomicUsize::new(0);

fn create(items: Vec<(CString, CString)>) -> *mut sys::nvlist_t {
    lock::assert_may_sleep("nvlist allocation (M_WAITOK)");
    LIVE.fetch_add(1, Ordering::Relaxed);
    Box::into_raw(Box::new(NvList { items, error: 0 })).cast()
}

/// How many lists exist (created and not destroyed), in this process.
pub fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// Builds a list of string pairs, as ctladm and ctld do before an ioctl
/// (names and values are bytes, as their argv is; a NUL cuts one short).
pub fn from_pairs<N: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: impl IntoIterator<Item = (N, V)>) -> *mut sys::nvlist_t {
    let nvl = create(Vec::new());
    for (name, value) in pairs {
        let c_string = |b: &[u8]| CString::new(b.split(|&c| c == 0).next().unwrap_or_default()).unwrap_or_default();
        let (name, value) = (c_string(name.as_ref()), c_string(value.as_ref()));
        // SAFETY: a valid list and NUL-terminated strings.
        unsafe { nvlist_add_string(nvl, name.as_ptr(), value.as_ptr()) };
    }
    nvl
}

/// The string pairs of a list, in order.
pub fn pairs(nvl: *const sys::nvlist_t) -> Vec<(String, String)> {
    list(nvl)
        .items
        .iter()
        .map(|(n, v)| (n.to_string_lossy().into_owned(), v.to_string_lossy().into_owned()))
        .collect()
}

/// `nvlist_create`.
#[unsafe(no_mangle)]
pub extern "C" fn nvlist_create(_flags: c_int) -> *mut sys::nvlist_t {
    create(Vec::new())
}

/// `nvlist_destroy`.
///
/// # Safety
///
/// `nvl` is NULL or a list from this module, not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvlist_destroy(nvl: *mut sys::nvlist_t) {
    if !nvl.is_null() {
        LIVE.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: the caller's contract.
        drop(unsafe { Box::from_raw(nvl.cast::<NvList>()) });
    }
}

/// `nvlist_error`.
#[unsafe(no_mangle)]
pub extern "C" fn nvlist_error(nvl: *const sys::nvlist_t) -> c_int {
    if nvl.is_null() {
        sys::ENOMEM as c_int
    } else {
        list(nvl).error
    }
}

/// `nvlist_empty`.
#[unsafe(no_mangle)]
pub extern "C" fn nvlist_empty(nvl: *const sys::nvlist_t) -> bool {
    list(nvl).items.is_empty()
}

/// `nvlist_clone`.
#[unsafe(no_mangle)]
pub extern "C" fn nvlist_clone(nvl: *const sys::nvlist_t) -> *mut sys::nvlist_t {
    create(list(nvl).items.clone())
}

/// `nvlist_exists`.
///
/// # Safety
///
/// `name` is NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvlist_exists(nvl: *const sys::nvlist_t, name: *const c_char) -> bool {
    let name = name_of(name);
    list(nvl).items.iter().any(|(n, _)| *n == name)
}

/// `nvlist_exists_string`.
///
/// # Safety
///
/// `name` is NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvlist_exists_string(nvl: *const sys::nvlist_t, name: *const c_char) -> bool {
    // SAFETY: the caller's contract; every element is a string.
    unsafe { nvlist_exists(nvl, name) }
}

/// `nvlist_add_string`.
///
/// # Safety
///
/// `name` and `value` are NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvlist_add_string(nvl: *mut sys::nvlist_t, name: *const c_char, value: *const c_char) {
    lock::assert_may_sleep("nvlist_add_string (M_WAITOK)");
    let l = list(nvl);
    let name = name_of(name);
    if l.error != 0 {
        return;
    }
    if l.items.iter().any(|(n, _)| *n == name) {
        l.error = sys::EEXIST as c_int;
        return;
    }
    // SAFETY: the caller's contract.
    l.items.push((name, unsafe { CStr::from_ptr(value) }.to_owned()));
}

/// `nvlist_get_string`: aborts (panics) if there is no such element.
///
/// # Safety
///
/// `name` is NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvlist_get_string(nvl: *const sys::nvlist_t, name: *const c_char) -> *const c_char {
    let wanted = name_of(name);
    match list(nvl).items.iter().find(|(n, _)| *n == wanted) {
        Some((_, v)) => v.as_ptr(),
        None => kpanic!("nvlist_get_string: element {wanted:?} not found"),
    }
}

/// `dnvlist_get_string`: the value, or `defval` if absent.
///
/// # Safety
///
/// `name` is NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dnvlist_get_string(
    nvl: *const sys::nvlist_t,
    name: *const c_char,
    defval: *const c_char,
) -> *const c_char {
    let wanted = name_of(name);
    list(nvl)
        .items
        .iter()
        .find(|(n, _)| *n == wanted)
        .map_or(defval, |(_, v)| v.as_ptr())
}

/// `nvlist_free_string`: removes the element; aborts if absent.
///
/// # Safety
///
/// `name` is NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvlist_free_string(nvl: *mut sys::nvlist_t, name: *const c_char) {
    let wanted = name_of(name);
    let l = list(nvl);
    match l.items.iter().position(|(n, _)| *n == wanted) {
        Some(i) => drop(l.items.remove(i)),
        None => kpanic!("nvlist_free_string: element {wanted:?} not found"),
    }
}

/// `nvlist_next`: the name of the element after `*cookiep` (NULL to
/// start), setting `*typep` to NV_TYPE_STRING; NULL at the end.
///
/// # Safety
///
/// `typep` is NULL or writable; `cookiep` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvlist_next(
    nvl: *const sys::nvlist_t,
    typep: *mut c_int,
    cookiep: *mut *mut c_void,
) -> *const c_char {
    // SAFETY: the caller's contract: the cookie is what we stored, an index + 1.
    let at = unsafe { *cookiep } as usize;
    let Some((name, _)) = list(nvl).items.get(at) else {
        return std::ptr::null();
    };
    // SAFETY: the caller's contract.
    unsafe {
        *cookiep = (at + 1) as *mut c_void;
        if !typep.is_null() {
            *typep = sys::NV_TYPE_STRING as c_int;
        }
    }
    name.as_ptr()
}
