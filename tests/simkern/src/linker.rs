//! The kernel linker and module system of the simulated kernel: `kldload`
//! and `kldunload` of ctlpass.ko, whose code is linked into this program.
//! As FreeBSD's linker does with a real .ko, it reads the module's linker
//! sets: module metadata (modules and their dependencies), sysctl OIDs,
//! SYSINITs and SYSUNINITs, and runs them in FreeBSD's order:
//!
//! load: check dependencies, register modules, register OIDs, run the
//! SYSINITs sorted by subsystem and order (among them each module's
//! `module_register_init`, which sends MOD_LOAD; a module whose MOD_LOAD
//! fails gets MOD_UNLOAD and is released, and the file stays loaded);
//!
//! unload: MOD_QUIESCE every module (a veto stops the unload), then
//! MOD_UNLOAD each, most recently loaded first (an error stops the unload,
//! leaving the modules not yet unloaded in place), then remove the OIDs and
//! run the SYSUNINITs in reverse order.

use std::ffi::{CStr, c_int, c_void};
use std::sync::Mutex;

use crate::{console, kpanic, sys, sysctl};

/// `__FreeBSD_version` of the simulated kernel (15.0-RELEASE, as the
/// headers).
pub const FREEBSD_VERSION: c_int = 1_500_045;

/// The name of the only loadable file, whose code is linked in.
pub const CTLPASS_KO: &str = "ctlpass.ko";

unsafe extern "C" {
    static __start_set_sysinit_set: [*const sys::sysinit; 0];
    static __stop_set_sysinit_set: [*const sys::sysinit; 0];
    static __start_set_sysuninit_set: [*const sys::sysinit; 0];
    static __stop_set_sysuninit_set: [*const sys::sysinit; 0];
    static __start_set_sysctl_set: [*mut sys::sysctl_oid; 0];
    static __stop_set_sysctl_set: [*mut sys::sysctl_oid; 0];
    static __start_set_modmetadata_set: [*const sys::mod_metadata; 0];
    static __stop_set_modmetadata_set: [*const sys::mod_metadata; 0];
}

/// The entries of a linker set, given the symbols that bound it.
fn linker_set<T: Copy>(start: *const [T; 0], stop: *const [T; 0]) -> Vec<T> {
    let (start, stop) = (start.cast::<T>(), stop.cast::<T>());
    // SAFETY: the linker places the set's entries contiguously between its
    // __start_ and __stop_ symbols.
    let len = unsafe { stop.offset_from(start) };
    (0..usize::try_from(len).unwrap_or(0))
        .map(|i| {
            // SAFETY: `i` is within the set.
            unsafe { *start.add(i) }
        })
        .collect()
}

struct Module {
    name: String,
    version: c_int,
    handler: sys::modeventhand_t,
    arg: *mut c_void,
    /// Whether it belongs to ctlpass.ko (the others are built in).
    in_file: bool,
}

// SAFETY: the raw pointers are to statics of the linked-in module.
unsafe impl Send for Module {}

#[derive(Default)]
struct Linker {
    /// All modules; those of the file are kept in its unload order (most
    /// recently loaded first).
    modules: Vec<Module>,
    loaded: bool,
}

static LINKER: Mutex<Option<Linker>> = Mutex::new(None);
/// Serialises kldload and kldunload (FreeBSD's kld_sx).
static KLD: Mutex<()> = Mutex::new(());

fn with<R>(f: impl FnOnce(&mut Linker) -> R) -> R {
    let mut guard = LINKER.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(Linker::default))
}

/// Sets up the modules built into the kernel (at boot).
pub(crate) fn reset(builtins: &[(&str, c_int)]) {
    let modules = builtins
        .iter()
        .map(|&(name, version)| Module {
            name: name.into(),
            version,
            handler: None,
            arg: std::ptr::null_mut(),
            in_file: false,
        })
        .collect();
    *LINKER.lock().unwrap_or_else(|e| e.into_inner()) = Some(Linker { modules, loaded: false });
}

/// Whether ctlpass.ko is loaded.
pub fn is_loaded() -> bool {
    with(|l| l.loaded)
}

/// The names of the loaded modules, `kldstat -v` style: built-ins first, then
/// the file's in unload order.
pub fn modules() -> Vec<String> {
    with(|l| l.modules.iter().map(|m| m.name.clone()).collect())
}

fn cstr(p: *const std::ffi::c_char) -> String {
    // SAFETY: module metadata strings are static C strings.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

struct Metadata {
    modules: Vec<*const sys::moduledata>,
    depends: Vec<(String, sys::mod_depend)>,
}

fn metadata() -> Metadata {
    // SAFETY: only the addresses of the set bounds are taken.
    let set = linker_set(
        &raw const __start_set_modmetadata_set,
        &raw const __stop_set_modmetadata_set,
    );
    let mut md = Metadata {
        modules: Vec::new(),
        depends: Vec::new(),
    };
    for m in set {
        // SAFETY: entries point to static struct mod_metadata.
        let m = unsafe { &*m };
        match m.md_type as u32 {
            sys::MDT_MODULE => md.modules.push(m.md_data.cast()),
            // SAFETY: an MDT_DEPEND's data is a struct mod_depend.
            sys::MDT_DEPEND => md
                .depends
                .push((cstr(m.md_cval), unsafe { *m.md_data.cast::<sys::mod_depend>() })),
            _ => {}
        }
    }
    md
}

fn sorted_sysinits(
    start: *const [*const sys::sysinit; 0],
    stop: *const [*const sys::sysinit; 0],
) -> Vec<*const sys::sysinit> {
    let mut v = linker_set(start, stop);
    // SAFETY: entries point to static struct sysinit.
    v.sort_by_key(|&s| unsafe { ((*s).subsystem, (*s).order) });
    v
}

/// `kldload ctlpass`: errno on failure, as kldload(2) reports it.
pub fn kldload() -> Result<(), c_int> {
    let _kld = KLD.lock().unwrap_or_else(|e| e.into_inner());
    if is_loaded() {
        return Err(sys::EEXIST as c_int);
    }
    let md = metadata();
    let own: Vec<String> = md
        .modules
        .iter()
        .map(|&d| {
            // SAFETY: MDT_MODULE data is a static moduledata_t.
            cstr(unsafe { (*d).name })
        })
        .collect();
    for (dep, range) in &md.depends {
        if own.contains(dep) {
            continue;
        }
        let ok = with(|l| {
            l.modules
                .iter()
                .any(|m| m.name == *dep && m.version >= range.md_ver_minimum && m.version <= range.md_ver_maximum)
        });
        if !ok {
            console::print(&format!(
                "KLD {CTLPASS_KO}: depends on {dep} - not available or version mismatch\n"
            ));
            return Err(sys::ENOENT as c_int);
        }
    }
    for &data in &md.modules {
        // SAFETY: MDT_MODULE data is a static moduledata_t.
        let (name, handler, arg) = unsafe { (cstr((*data).name), (*data).evhand, (*data).priv_) };
        if with(|l| l.modules.iter().any(|m| m.name == name)) {
            console::print(&format!(
                "module_register: cannot register {name} from {CTLPASS_KO}; already loaded\n"
            ));
            with(|l| l.modules.retain(|m| !m.in_file));
            return Err(sys::EEXIST as c_int);
        }
        with(|l| {
            l.modules.push(Module {
                name,
                version: 0,
                handler,
                arg,
                in_file: true,
            })
        });
    }
    with(|l| l.loaded = true);
    // SAFETY: only the addresses of the set bounds are taken.
    sysctl::register(&linker_set(
        &raw const __start_set_sysctl_set,
        &raw const __stop_set_sysctl_set,
    ));
    // SAFETY: as above.
    for si in sorted_sysinits(&raw const __start_set_sysinit_set, &raw const __stop_set_sysinit_set) {
        // SAFETY: a SYSINIT's function takes its udata.
        unsafe {
            if let Some(func) = (*si).func {
                func((*si).udata);
            }
        }
    }
    Ok(())
}

fn event(handler: sys::modeventhand_t, arg: *mut c_void, what: sys::modeventtype) -> c_int {
    match handler {
        // SAFETY: a module's event handler, called as the kernel does; the
        // module handle is not used by ctlpass's handlers.
        Some(h) => unsafe { h(std::ptr::null_mut(), what as c_int, arg) },
        None => 0,
    }
}

/// `module_register_init`: the SYSINIT of every DECLARE_MODULE.
///
/// # Safety
///
/// `arg` is the module's static moduledata_t.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn module_register_init(arg: *const c_void) {
    let data = arg.cast::<sys::moduledata>();
    // SAFETY: the caller's contract.
    let name = cstr(unsafe { (*data).name });
    let Some((handler, priv_)) = with(|l| l.modules.iter().find(|m| m.name == name).map(|m| (m.handler, m.arg))) else {
        kpanic!("module_register_init: module named {name} not found");
    };
    let error = event(handler, priv_, sys::MOD_LOAD);
    if error != 0 {
        event(handler, priv_, sys::MOD_UNLOAD);
        with(|l| l.modules.retain(|m| m.name != name));
        console::print(&format!(
            "module_register_init: MOD_LOAD ({name}, {:p}, {priv_:p}) error {error}\n",
            arg
        ));
    } else {
        // Move it to the head of the file's modules: unload runs in
        // reverse order of load.
        with(|l| {
            if let Some(i) = l.modules.iter().position(|m| m.name == name) {
                let m = l.modules.remove(i);
                let first_in_file = l.modules.iter().position(|m| m.in_file).unwrap_or(l.modules.len());
                l.modules.insert(first_in_file, m);
            }
        });
    }
}

/// `kldunload ctlpass`: errno on failure, as kldunload(2) reports it.
pub fn kldunload() -> Result<(), c_int> {
    let _kld = KLD.lock().unwrap_or_else(|e| e.into_inner());
    if !is_loaded() {
        return Err(sys::ENOENT as c_int);
    }
    let file_modules = || {
        with(|l| {
            l.modules
                .iter()
                .filter(|m| m.in_file)
                .map(|m| (m.name.clone(), m.handler, m.arg))
                .collect::<Vec<_>>()
        })
    };
    for (_, handler, arg) in file_modules() {
        let error = event(handler, arg, sys::MOD_QUIESCE);
        if error != 0 && error != sys::EOPNOTSUPP as c_int && error != sys::EINVAL as c_int {
            return Err(error);
        }
    }
    for (name, handler, arg) in file_modules() {
        let error = event(handler, arg, sys::MOD_UNLOAD);
        if error != 0 {
            return Err(error);
        }
        with(|l| l.modules.retain(|m| m.name != name));
    }
    // SAFETY: only the addresses of the set bounds are taken.
    sysctl::unregister(&linker_set(
        &raw const __start_set_sysctl_set,
        &raw const __stop_set_sysctl_set,
    ));
    // SAFETY: as above.
    let mut uninits = sorted_sysinits(
        &raw const __start_set_sysuninit_set,
        &raw const __stop_set_sysuninit_set,
    );
    uninits.reverse();
    for si in uninits {
        // SAFETY: a SYSUNINIT's function takes its udata.
        unsafe {
            if let Some(func) = (*si).func {
                func((*si).udata);
            }
        }
    }
    // The module's code goes now: a callout still armed would call into it
    // (ctlpass.ko is the only code that arms callouts).
    if crate::callout::pending() != 0 {
        kpanic!("kldunload: {CTLPASS_KO} left a callout pending");
    }
    with(|l| l.loaded = false);
    Ok(())
}
