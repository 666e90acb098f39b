//! A simulated FreeBSD machine: boot it with buses and devices, load and
//! unload ctlpass.ko, and look at it the way an administrator would
//! (`camcontrol devlist`, `dmesg`, `vmstat -m`, `kldstat`, `sysctl`).
//!
//! The kernel state is global, as a kernel's is, so one machine runs at a
//! time in a process: `Machine::boot` waits for the previous one to be shut
//! down.

use std::ffi::c_int;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::cam::{self, BusSpec, DeviceSpec};
use crate::devices::{Cdrom, Identity, RamDisk, ScsiDevice};
use crate::{console, ctl, linker, malloc, sysctl};

/// What a machine is built from.
#[derive(Clone)]
pub struct Config {
    /// Buses, whose path ids are their positions.
    pub buses: Vec<BusSpec>,
    /// Whether the ctl module is present (it is a dependency of ctlpass).
    pub ctl: bool,
    /// Extra backends registered with CTL before ctlpass loads.
    pub extra_backends: Vec<&'static str>,
}

fn identity(vendor: &str, product: &str, revision: &str, serial: &str, naa: Option<u64>) -> Identity {
    Identity {
        vendor: vendor.into(),
        product: product.into(),
        revision: revision.into(),
        serial: serial.into(),
        naa,
        eui64: None,
    }
}

impl Config {
    /// One SAS HBA (`mpr0`) whose SIM takes `maxio` bytes at once and
    /// `openings` commands per device, with `devices` at targets 0, 1, ...
    /// (LUN 0), and CTL present.
    pub fn one_bus(maxio: u32, openings: u32, devices: Vec<Arc<dyn ScsiDevice>>) -> Config {
        let devices = (0..)
            .zip(devices)
            .map(|(target, device)| DeviceSpec { target, lun: 0, device })
            .collect();
        Config {
            buses: vec![BusSpec {
                sim_name: "mpr".into(),
                sim_unit: 0,
                maxio,
                openings,
                devices,
            }],
            ctl: true,
            extra_backends: Vec::new(),
        }
    }

    /// A small server: two disks behind a SAS HBA (one with a 20-character
    /// serial number and 4096-byte blocks), a DVD drive on a SATA port, and
    /// a LUN of CTL's own CAM frontend (`camsim`), which ctlpass must leave
    /// alone.
    pub fn standard() -> Config {
        let disk = |i: &Identity, blocks, bs| -> Arc<dyn ScsiDevice> { Arc::new(RamDisk::new(i.clone(), blocks, bs)) };
        Config {
            buses: vec![
                BusSpec {
                    sim_name: "mpr".into(),
                    sim_unit: 0,
                    maxio: 1024 * 1024,
                    openings: 32,
                    devices: vec![
                        DeviceSpec {
                            target: 0,
                            lun: 0,
                            device: disk(
                                &identity(
                                    "SEAGATE",
                                    "ST4000NM0023",
                                    "0004",
                                    "Z1Z3ABCD",
                                    Some(0x5000_c500_a1b2_c3d4),
                                ),
                                16384,
                                512,
                            ),
                        },
                        DeviceSpec {
                            target: 1,
                            lun: 0,
                            device: disk(
                                &identity(
                                    "ATA",
                                    "Samsung SSD 870",
                                    "2B6Q",
                                    "S6PXNM0T123456X78901",
                                    Some(0x5002_5388_a0b1_c2d3),
                                ),
                                2048,
                                4096,
                            ),
                        },
                    ],
                },
                BusSpec {
                    sim_name: "ahcich".into(),
                    sim_unit: 2,
                    maxio: 128 * 1024,
                    // An ATAPI drive takes one command at a time.
                    openings: 1,
                    devices: vec![DeviceSpec {
                        target: 0,
                        lun: 0,
                        device: Arc::new(Cdrom::new(
                            identity("TSSTcorp", "CDDVDW SH-224DB", "SB00", "R8RS6GAB123456", None),
                            Some(vec![0; 2048 * 64]),
                        )),
                    }],
                },
                BusSpec {
                    sim_name: "camsim".into(),
                    sim_unit: 0,
                    maxio: 1024 * 1024,
                    openings: 32,
                    devices: vec![DeviceSpec {
                        target: 0,
                        lun: 0,
                        device: disk(&identity("FREEBSD", "CTLDISK", "0001", "MYSERIAL0000", None), 2048, 512),
                    }],
                },
            ],
            ctl: true,
            extra_backends: Vec::new(),
        }
    }
}

/// One machine; only one exists at a time.
pub struct Machine {
    _one: MutexGuard<'static, ()>,
}

static RUNNING: Mutex<()> = Mutex::new(());

impl Machine {
    /// Boots a machine: CAM probes the devices and FreeBSD's own drivers
    /// attach.  Panics if the machine before it was left in an unknown
    /// state by a failing test.
    pub fn boot(config: Config) -> Machine {
        let one = match RUNNING.lock() {
            Ok(g) => g,
            Err(_) => panic!("an earlier test failed with a machine running; its kernel state is unknown"),
        };
        console::clear();
        malloc::reset();
        sysctl::reset();
        let mut builtins = vec![("kernel", linker::FREEBSD_VERSION), ("cam", 1)];
        if config.ctl {
            builtins.push(("ctl", 1));
        }
        linker::reset(&builtins);
        ctl::boot(&config.extra_backends);
        cam::boot(&config.buses);
        Machine { _one: one }
    }

    /// `kldload ctlpass`.
    pub fn kldload(&self) -> Result<(), c_int> {
        linker::kldload()
    }

    /// `kldunload ctlpass`.
    pub fn kldunload(&self) -> Result<(), c_int> {
        linker::kldunload()
    }

    /// `kldstat -v`: the modules, built-ins first.
    pub fn modules(&self) -> Vec<String> {
        linker::modules()
    }

    /// `camcontrol devlist`.
    pub fn devlist(&self) -> String {
        cam::devlist()
    }

    /// `dmesg`.
    pub fn dmesg(&self) -> String {
        console::dmesg()
    }

    /// Plugs in a device on bus `path_id`.
    pub fn plug(&self, path_id: u32, spec: DeviceSpec) {
        cam::plug(path_id, spec);
    }

    /// Pulls the device at `path_id:target:lun`.
    pub fn unplug(&self, path_id: u32, target: u32, lun: u64) {
        cam::unplug(path_id, target, lun);
    }
}

impl Drop for Machine {
    /// Shuts down: unloads ctlpass if loaded, then stops CAM and CTL.  After
    /// a failed test the state is left as it is (the next boot reports it).
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        if linker::is_loaded()
            && let Err(e) = linker::kldunload()
        {
            panic!("shutdown: kldunload ctlpass failed with errno {e}");
        }
        cam::shutdown();
        ctl::shutdown();
    }
}
