//! sysctl(9): the OIDs the module adds at run time under
//! `kern.cam.ctl.passthrough` (the node the shim declares statically), each
//! set in a context that removes them all at once, and the handlers' side of
//! a request.  Followed: FreeBSD 15 `sys/sys/sysctl.h` (what
//! `SYSCTL_ADD_NODE`, `SYSCTL_ADD_U64` and `SYSCTL_ADD_PROC` pass to
//! `sysctl_add_oid`) and `sys/kern/kern_sysctl.c` (`sysctl_ctx_free` waits
//! for running handlers; `sysctl_handle_*` copy values out and in).
//!
//! Adding and freeing OIDs sleeps (malloc `M_WAITOK`, the sysctl lock): a
//! context is built and dropped where sleeping is allowed, with no mutex
//! held.

use core::ffi::{CStr, c_int, c_void};
use core::mem;
use core::ops::Deref;
use core::ptr::{self, NonNull};
use core::sync::atomic::AtomicU64;

use super::alloc::{KBox, Wait};
use super::errno::Errno;
use crate::sys;

/// A node's list of children, where OIDs are added (`SYSCTL_CHILDREN`).
/// One from [`SysctlCtx::add_node`] is valid while that context lives; its
/// holder uses it no longer.
#[derive(Clone, Copy)]
pub struct Children(NonNull<sys::sysctl_oid_list>);

// SAFETY: an address that sysctl(9) reaches under its own lock.
unsafe impl Send for Children {}
// SAFETY: as above.
unsafe impl Sync for Children {}

impl Children {
    /// The children of `kern.cam.ctl.passthrough`, which exists while the
    /// module is loaded.
    pub fn passthrough() -> Children {
        // SAFETY: only the address of the shim's static node's list is
        // taken; a field's address is never null.
        unsafe {
            Children(NonNull::new_unchecked(
                &raw mut sys::sysctl___kern_cam_ctl_passthrough.oid_children,
            ))
        }
    }
}

/// What an OID holds, as sysctl(8) reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `CTLTYPE_U32`, format `IU`.
    U32,
    /// `CTLTYPE_U64`, format `QU`.
    U64,
    /// `CTLTYPE_STRING`, format `A`.
    String,
}

impl Kind {
    fn bits(self) -> (u32, &'static CStr) {
        match self {
            Kind::U32 => (sys::CTLTYPE_U32, c"IU"),
            Kind::U64 => (sys::CTLTYPE_U64, c"QU"),
            Kind::String => (sys::CTLTYPE_STRING, c"A"),
        }
    }
}

/// Who may change an OID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `CTLFLAG_RD`.
    ReadOnly,
    /// `CTLFLAG_RWTUN`: writable, and a loader tunable fetched from the
    /// kernel environment when the OID is added.
    Tunable,
}

impl Access {
    fn bits(self) -> u32 {
        match self {
            Access::ReadOnly => sys::CTLFLAG_RD,
            Access::Tunable => sys::CTLFLAG_RWTUN,
        }
    }
}

/// A value that answers for OIDs added with [`SysctlCtx::add_proc`]: the
/// OID's `field` (its `arg2`) says which of its values is asked for.
pub trait Handler: Sync {
    /// Answers `req` for `field`: reads the value out, and takes a new one
    /// in if the request brings one.
    fn handle(&self, field: i64, req: &mut Req) -> Result<(), Errno>;
}

/// What keeps a context's [`Handler`] alive: dereferences to the same
/// address for as long as it exists, wherever it moves.
///
/// # Safety
///
/// `deref` returns the same address from creation to drop.
pub unsafe trait Owner: Deref<Target: Handler + Sized> {}

// SAFETY: a static does not move.
unsafe impl<T: Handler> Owner for &'static T {}

/// A sysctl context (`struct sysctl_ctx_list`) and the owner of the value
/// its handlers read: dropping it removes every OID it added
/// (`sysctl_ctx_free`, which waits for running handlers), then the owner.
/// It sleeps; it is dropped where sleeping is allowed, with no mutex held.
pub struct SysctlCtx<A: Owner> {
    list: mem::ManuallyDrop<KBox<sys::sysctl_ctx_list>>,
    owner: mem::ManuallyDrop<A>,
}

// SAFETY: the list is reached only through sysctl(9), which locks; the
// owner's target is Sync (a Handler).
unsafe impl<A: Owner + Send> Send for SysctlCtx<A> {}
// SAFETY: as above.
unsafe impl<A: Owner + Sync> Sync for SysctlCtx<A> {}

/// sysctl(9) handler arguments (`SYSCTL_HANDLER_ARGS`).
type HandlerFn = unsafe extern "C" fn(*mut sys::sysctl_oid, *mut c_void, sys::intmax_t, *mut sys::sysctl_req) -> c_int;

impl<A: Owner> SysctlCtx<A> {
    /// An empty context (`sysctl_ctx_init`) for OIDs answered by `owner`.
    pub fn new(owner: A) -> Result<SysctlCtx<A>, Errno> {
        // SAFETY: struct sysctl_ctx_list is plain data, initialised below.
        let list =
            KBox::new(unsafe { mem::zeroed::<sys::sysctl_ctx_list>() }, Wait::WaitOk).map_err(|_| Errno::ENOMEM)?;
        let ctx = SysctlCtx {
            list: mem::ManuallyDrop::new(list),
            owner: mem::ManuallyDrop::new(owner),
        };
        // SAFETY: the list is in memory that does not move until the
        // context is freed.
        Errno::result(unsafe { sys::sysctl_ctx_init(ctx.list_ptr()) })?;
        Ok(ctx)
    }

    fn list_ptr(&self) -> *mut sys::sysctl_ctx_list {
        ptr::from_ref::<sys::sysctl_ctx_list>(&**self.list).cast_mut()
    }

    fn owner_ptr(&self) -> *mut c_void {
        ptr::from_ref::<A::Target>(&self.owner).cast_mut().cast()
    }

    /// `sysctl_add_oid` into this context; the new OID.
    ///
    /// # Safety
    ///
    /// `arg1` and `handler` match `kind` as sysctl(9) expects, and `arg1`
    /// stays valid until the context is freed.
    #[allow(clippy::too_many_arguments)]
    unsafe fn add(
        &self,
        parent: Children,
        name: &CStr,
        kind: u32,
        arg1: *mut c_void,
        arg2: i64,
        handler: Option<HandlerFn>,
        fmt: &'static CStr,
        descr: &CStr,
    ) -> Result<NonNull<sys::sysctl_oid>, Errno> {
        // SAFETY: a valid context and parent list (see `Children`); name and
        // description are copied; the caller's contract covers arg1.
        let oid = unsafe {
            sys::sysctl_add_oid(
                self.list_ptr(),
                parent.0.as_ptr(),
                sys::OID_AUTO,
                name.as_ptr(),
                kind as c_int,
                arg1,
                arg2,
                handler,
                fmt.as_ptr(),
                descr.as_ptr(),
                ptr::null(),
            )
        };
        // sysctl_add_oid refuses a name a leaf of the parent has.
        NonNull::new(oid).ok_or(Errno::EEXIST)
    }

    /// Adds the node `name` under `parent` (`SYSCTL_ADD_NODE`, read-only,
    /// no handler); its children.
    pub fn add_node(&self, parent: Children, name: &CStr, descr: &CStr) -> Result<Children, Errno> {
        let kind = sys::CTLTYPE_NODE | sys::CTLFLAG_RD | sys::CTLFLAG_MPSAFE;
        // SAFETY: a node has no argument nor handler.
        let oid = unsafe { self.add(parent, name, kind, ptr::null_mut(), 0, None, c"N", descr)? };
        // SAFETY: only the address of the new node's children is taken; a
        // field's address is never null.
        Ok(Children(unsafe {
            NonNull::new_unchecked(&raw mut (*oid.as_ptr()).oid_children)
        }))
    }

    /// Adds the read-only counter `name` (`SYSCTL_ADD_U64`), a field of the
    /// owner's value.
    pub fn add_counter(
        &self,
        parent: Children,
        name: &CStr,
        counter: impl FnOnce(&A::Target) -> &AtomicU64,
        descr: &CStr,
    ) -> Result<(), Errno> {
        let kind = sys::CTLTYPE_U64 | sys::CTLFLAG_RD | sys::CTLFLAG_MPSAFE;
        let arg1 = counter(&self.owner).as_ptr().cast::<c_void>();
        // SAFETY: sysctl_handle_64 reads a uint64_t at arg1, a field of the
        // owner's value, which lives until the context is freed; an
        // AtomicU64 has a u64's layout, and a read-only OID never writes it.
        unsafe { self.add(parent, name, kind, arg1, 0, Some(sys::sysctl_handle_64), c"QU", descr)? };
        Ok(())
    }

    /// Adds the OID `name`, answered by the owner's value for `field`
    /// (`SYSCTL_ADD_PROC`).
    pub fn add_proc(
        &self,
        parent: Children,
        name: &CStr,
        kind: Kind,
        access: Access,
        field: i64,
        descr: &CStr,
    ) -> Result<(), Errno> {
        let (ctltype, fmt) = kind.bits();
        let kind = ctltype | access.bits() | sys::CTLFLAG_MPSAFE;
        let handler: HandlerFn = trampoline::<A::Target>;
        // SAFETY: the trampoline reads arg1 as the owner's value, which
        // lives until the context is freed.
        unsafe { self.add(parent, name, kind, self.owner_ptr(), field, Some(handler), fmt, descr)? };
        Ok(())
    }
}

impl<A: Owner> Drop for SysctlCtx<A> {
    fn drop(&mut self) {
        // SAFETY: a context initialised by `new`; sysctl_ctx_free waits for
        // the handlers running on its OIDs.
        if let Err(e) = Errno::result(unsafe { sys::sysctl_ctx_free(self.list_ptr()) }) {
            // The OIDs stay (a node of the context has children another
            // context added): their handlers may still run, so the owner and
            // the list are left alive.
            crate::printf!("ctlpass: sysctl_ctx_free: {e}; its OIDs stay\n");
            return;
        }
        // SAFETY: each dropped once, after the last handler returned and
        // the OIDs that referred to them were freed.
        unsafe {
            mem::ManuallyDrop::drop(&mut self.owner);
            mem::ManuallyDrop::drop(&mut self.list);
        }
    }
}

/// The handler of every OID added with [`SysctlCtx::add_proc`]: hands the
/// request to the owner's value.
///
/// # Safety
///
/// Called by sysctl(9) for such an OID: `arg1` is the context owner's
/// `T`, valid until the context is freed (which waits for this call), and
/// `oidp` and `req` are valid for the call.
unsafe extern "C" fn trampoline<T: Handler>(
    oidp: *mut sys::sysctl_oid,
    arg1: *mut c_void,
    arg2: sys::intmax_t,
    req: *mut sys::sysctl_req,
) -> c_int {
    // SAFETY: the caller's contract.
    let value = unsafe { &*arg1.cast::<T>() };
    let mut req = Req { oidp, req };
    Errno::to_raw(value.handle(arg2, &mut req))
}

/// A sysctl request, as a handler sees it: the OID and `struct
/// sysctl_req`, answered through the kernel's `sysctl_handle_*`.
pub struct Req {
    oidp: *mut sys::sysctl_oid,
    req: *mut sys::sysctl_req,
}

impl Req {
    /// Whether the request brings a new value (`req->newptr`).
    fn writes(&self) -> bool {
        // SAFETY: a valid request for the handler's call.
        unsafe { !(*self.req).newptr.is_null() }
    }

    /// Answers with `value`; the new value, if the request writes one
    /// (`sysctl_handle_32`).
    pub fn u32(&mut self, value: u32) -> Result<Option<u32>, Errno> {
        let mut v = value;
        // SAFETY: a valid OID and request; arg1 points at a local u32.
        Errno::result(unsafe { sys::sysctl_handle_32(self.oidp, (&raw mut v).cast(), 0, self.req) })?;
        Ok(self.writes().then_some(v))
    }

    /// Answers with `value`; the new value, if the request writes one
    /// (`sysctl_handle_64`).
    pub fn u64(&mut self, value: u64) -> Result<Option<u64>, Errno> {
        let mut v = value;
        // SAFETY: a valid OID and request; arg1 points at a local u64.
        Errno::result(unsafe { sys::sysctl_handle_64(self.oidp, (&raw mut v).cast(), 0, self.req) })?;
        Ok(self.writes().then_some(v))
    }

    /// Answers with the read-only string `text` (`sysctl_handle_string`
    /// with no buffer length).
    pub fn text(&mut self, text: &CStr) -> Result<(), Errno> {
        // SAFETY: a valid OID and request; with arg2 0 the string is only
        // read, up to its NUL.
        Errno::result(unsafe { sys::sysctl_handle_string(self.oidp, text.as_ptr().cast_mut().cast(), 0, self.req) })
    }

    /// Answers with `current` (cut to fit `buf`) and returns the new string
    /// if the request writes one: EINVAL if it does not fit `buf` with its
    /// NUL (`sysctl_handle_string` with `buf` as the variable).
    pub fn string<'b>(&mut self, current: &str, buf: &'b mut [u8]) -> Result<Option<&'b [u8]>, Errno> {
        let room = buf.len().saturating_sub(1);
        let n = current.len().min(room);
        for (d, s) in buf
            .iter_mut()
            .zip(current.as_bytes().iter().take(n).chain(core::iter::repeat(&0)))
        {
            *d = *s;
        }
        if buf.is_empty() {
            return Err(Errno::EINVAL);
        }
        // SAFETY: a valid OID and request; arg1 is `buf`, NUL-terminated,
        // of arg2 bytes, which the kernel reads and writes within.
        Errno::result(unsafe {
            sys::sysctl_handle_string(self.oidp, buf.as_mut_ptr().cast(), buf.len() as sys::intmax_t, self.req)
        })?;
        if !self.writes() {
            return Ok(None);
        }
        let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        Ok(Some(buf.get(..len).unwrap_or(&[])))
    }
}
