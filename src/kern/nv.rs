//! nvlist(9): the name/value lists LUN options travel in.  ctladm and ctld
//! send strings only.  Every nvlist operation may sleep for memory, so
//! these are for the ioctl path only, never with a mutex held.

use core::ffi::{CStr, c_int, c_void};
use core::marker::PhantomData;
use core::ptr::{self, NonNull};

use super::errno::Errno;
use crate::sys;

/// One element of a list: its name and, for a string, its value.
#[derive(Clone, Copy, Debug)]
pub struct NvPair<'a> {
    /// The element's name.
    pub name: &'a CStr,
    /// The value, if the element is a string.
    pub value: Option<&'a CStr>,
}

/// An nvlist someone else owns (a request's arguments), borrowed.
#[derive(Clone, Copy)]
pub struct NvList<'a> {
    nvl: NonNull<sys::nvlist_t>,
    borrowed: PhantomData<&'a sys::nvlist_t>,
}

impl<'a> NvList<'a> {
    /// # Safety
    ///
    /// `nvl` is NULL or a valid nvlist that outlives `'a` and is not
    /// changed meanwhile.
    pub(super) unsafe fn from_ptr(nvl: *mut sys::nvlist_t) -> Option<NvList<'a>> {
        NonNull::new(nvl).map(|nvl| NvList {
            nvl,
            borrowed: PhantomData,
        })
    }

    fn as_ptr(&self) -> *const sys::nvlist_t {
        self.nvl.as_ptr()
    }

    /// The elements, in order.
    pub fn iter(&self) -> impl Iterator<Item = NvPair<'a>> + 'a {
        let nvl = self.nvl;
        let mut cookie: *mut c_void = ptr::null_mut();
        core::iter::from_fn(move || {
            let mut kind: c_int = 0;
            // SAFETY: iterating a valid list with the cookie nvlist_next gave.
            let name = unsafe { sys::nvlist_next(nvl.as_ptr(), &mut kind, &mut cookie) };
            if name.is_null() {
                return None;
            }
            // SAFETY: element names are NUL-terminated and live as long as
            // the list.
            let name = unsafe { CStr::from_ptr(name) };
            let value = (kind == sys::NV_TYPE_STRING as c_int).then(|| {
                // SAFETY: the element exists and is a string.
                unsafe { CStr::from_ptr(sys::nvlist_get_string(nvl.as_ptr(), name.as_ptr())) }
            });
            Some(NvPair { name, value })
        })
    }

    /// The string element `name`, if there is one.
    pub fn get(&self, name: &CStr) -> Option<&'a CStr> {
        // SAFETY: a valid list; nvlist_get_string is only called for an
        // existing string element (it aborts otherwise).
        unsafe {
            sys::nvlist_exists_string(self.as_ptr(), name.as_ptr())
                .then(|| CStr::from_ptr(sys::nvlist_get_string(self.as_ptr(), name.as_ptr())))
        }
    }
}

/// An nvlist this module owns; destroyed when dropped unless handed over
/// with [`OwnedNvList::into_raw`].
pub struct OwnedNvList(NonNull<sys::nvlist_t>);

// SAFETY: the list is only reached through this owner.
unsafe impl Send for OwnedNvList {}
// SAFETY: shared references only read the list.
unsafe impl Sync for OwnedNvList {}

impl OwnedNvList {
    /// A copy of `list` (`nvlist_clone`).
    pub fn clone_of(list: &NvList<'_>) -> Result<OwnedNvList, Errno> {
        // SAFETY: cloning a valid list.
        Self::checked(unsafe { sys::nvlist_clone(list.as_ptr()) })
    }

    /// An empty list (`nvlist_create`).
    pub fn new() -> Result<OwnedNvList, Errno> {
        // SAFETY: creating a list with no flags.
        Self::checked(unsafe { sys::nvlist_create(0) })
    }

    fn checked(nvl: *mut sys::nvlist_t) -> Result<OwnedNvList, Errno> {
        let list = OwnedNvList(NonNull::new(nvl).ok_or(Errno::ENOMEM)?);
        list.error()?;
        Ok(list)
    }

    /// The list's sticky error (`nvlist_error`), if an operation failed.
    pub fn error(&self) -> Result<(), Errno> {
        // SAFETY: a valid list.
        Errno::result(unsafe { sys::nvlist_error(self.0.as_ptr()) })
    }

    /// The list, borrowed.
    pub fn as_list(&self) -> NvList<'_> {
        NvList {
            nvl: self.0,
            borrowed: PhantomData,
        }
    }

    /// Sets the string element `name` to `value`, replacing it if present.
    pub fn set(&mut self, name: &CStr, value: &CStr) -> Result<(), Errno> {
        // SAFETY: a valid list; the element is freed only if it exists.
        unsafe {
            if sys::nvlist_exists_string(self.0.as_ptr(), name.as_ptr()) {
                sys::nvlist_free_string(self.0.as_ptr(), name.as_ptr());
            }
            sys::nvlist_add_string(self.0.as_ptr(), name.as_ptr(), value.as_ptr());
        }
        self.error()
    }

    /// Gives the list away (to CTL, as a LUN's options); whoever receives
    /// it destroys it.
    pub(super) fn into_raw(self) -> *mut sys::nvlist_t {
        core::mem::ManuallyDrop::new(self).0.as_ptr()
    }

    /// # Safety
    ///
    /// `nvl` came from [`OwnedNvList::into_raw`] and is not owned elsewhere.
    pub(super) unsafe fn from_raw(nvl: *mut sys::nvlist_t) -> Option<OwnedNvList> {
        NonNull::new(nvl).map(OwnedNvList)
    }
}

impl Drop for OwnedNvList {
    fn drop(&mut self) {
        // SAFETY: this owner is the list's only one.
        unsafe { sys::nvlist_destroy(self.0.as_ptr()) }
    }
}
