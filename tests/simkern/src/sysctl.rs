//! The sysctl tree of the simulated kernel: the OIDs modules declare in
//! their `set_sysctl_set`, registered at load and removed at unload, under
//! the parents the kernel and CTL provide.

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::sync::Mutex;

use crate::{kpanic, sys};

/// `kern.cam.ctl`, the node CTL (ctl.c) declares and backends hang theirs
/// under.
#[unsafe(no_mangle)]
pub static mut sysctl___kern_cam_ctl: sys::sysctl_oid =
    // SAFETY: struct sysctl_oid is plain data; an all-zero OID is an empty node.
    unsafe { std::mem::zeroed() };

struct Oid {
    ptr: usize,
    kind: u32,
    descr: String,
}

#[derive(Default)]
struct Tree {
    /// Children-list address -> the path of the node that owns it.
    parents: BTreeMap<usize, String>,
    /// Full name -> OID.
    oids: BTreeMap<String, Oid>,
}

static TREE: Mutex<Option<Tree>> = Mutex::new(None);

fn with<R>(f: impl FnOnce(&mut Tree) -> R) -> R {
    let mut guard = TREE.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(Tree::default))
}

/// Sets up the nodes the kernel provides (at boot).
pub(crate) fn reset() {
    let mut tree = Tree::default();
    // SAFETY: only the address of the children list is taken.
    let list = unsafe { &raw mut sysctl___kern_cam_ctl.oid_children } as usize;
    tree.parents.insert(list, "kern.cam.ctl".into());
    *TREE.lock().unwrap_or_else(|e| e.into_inner()) = Some(tree);
}

/// Registers statically declared OIDs (`sysctl_register_oid`), parents
/// first; panics, as FreeBSD does, on a parent it does not know or a name
/// registered twice.
pub(crate) fn register(oids: &[*mut sys::sysctl_oid]) {
    let mut pending: Vec<*mut sys::sysctl_oid> = oids.to_vec();
    while !pending.is_empty() {
        let before = pending.len();
        pending.retain(|&oid| !with(|t| try_register(t, oid)));
        if pending.len() == before {
            // SAFETY: OIDs in a linker set are valid statics.
            let name = unsafe { CStr::from_ptr((*pending[0]).oid_name) }.to_string_lossy();
            kpanic!("sysctl_register_oid: parent of OID {name} not found");
        }
    }
}

fn try_register(t: &mut Tree, oid: *mut sys::sysctl_oid) -> bool {
    // SAFETY: OIDs in a linker set are valid statics with a static name.
    let (parent, name, kind, descr) = unsafe {
        let o = &*oid;
        let descr = if o.oid_descr.is_null() {
            String::new()
        } else {
            CStr::from_ptr(o.oid_descr).to_string_lossy().into_owned()
        };
        (
            o.oid_parent as usize,
            CStr::from_ptr(o.oid_name).to_string_lossy().into_owned(),
            o.oid_kind,
            descr,
        )
    };
    let Some(path) = t.parents.get(&parent).map(|p| format!("{p}.{name}")) else {
        return false;
    };
    if t.oids.contains_key(&path) {
        kpanic!("sysctl_register_oid: can't re-use oid {path}");
    }
    // SAFETY: only the address of the children list is taken.
    let children = unsafe { &raw mut (*oid).oid_children } as usize;
    t.parents.insert(children, path.clone());
    t.oids.insert(
        path,
        Oid {
            ptr: oid as usize,
            kind,
            descr,
        },
    );
    true
}

/// Removes statically declared OIDs (`sysctl_unregister_oid`).
pub(crate) fn unregister(oids: &[*mut sys::sysctl_oid]) {
    with(|t| {
        for &oid in oids {
            if let Some(path) = t
                .oids
                .iter()
                .find(|(_, o)| o.ptr == oid as usize)
                .map(|(p, _)| p.clone())
            {
                t.oids.remove(&path);
                t.parents.retain(|_, p| *p != path);
            }
        }
    });
}

/// One entry of `sysctl -a`-like output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Full name, e.g. `kern.cam.ctl.passthrough`.
    pub name: String,
    /// Whether it is a node (has children) rather than a value.
    pub node: bool,
    /// Its description (`sysctl -d`).
    pub descr: String,
}

/// The OIDs whose name is `prefix` or starts with `prefix.`.
pub fn list(prefix: &str) -> Vec<Entry> {
    with(|t| {
        t.oids
            .iter()
            .filter(|(name, _)| *name == prefix || name.starts_with(&format!("{prefix}.")) || prefix.is_empty())
            .map(|(name, o)| Entry {
                name: name.clone(),
                node: o.kind & sys::CTLTYPE == sys::CTLTYPE_NODE,
                descr: o.descr.clone(),
            })
            .collect()
    })
}
