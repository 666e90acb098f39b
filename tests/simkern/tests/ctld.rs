//! ctld driving passthrough LUNs: the requests FreeBSD 15's ctld sends
//! (`simkern::ctld`, followed from usr.sbin/ctld) on start, reload, stop
//! and after an unclean exit, what the backend answers, and what an
//! initiator sees: LUN numbers, data, unit attentions.  Each request is
//! checked as sent (type, flags, type, block size, size, serial number,
//! device id, options) with its status.  Every machine ends with nothing
//! leaked.

use std::sync::Arc;

use simkern::ctl::frontend::{self, Cmd};
use simkern::devices::{Identity, OtherType, RamDisk, ScsiDevice};
use simkern::shell::Shell;
use simkern::{Config, Machine, ctl, malloc};

fn shell_on(config: Config) -> Shell {
    let mut sh = Shell::new(Machine::boot(config));
    run(&mut sh, "kldload ctlpass");
    sh
}

fn shell() -> Shell {
    shell_on(Config::standard())
}

/// Runs a command that must succeed; its output.
fn run(sh: &mut Shell, command: &str) -> String {
    sh.run(command).unwrap_or_else(|e| panic!("{command} failed:\n{e}"))
}

/// The requests ctld sent since the last call, one line each.
fn sent(sh: &mut Shell) -> Vec<String> {
    sh.ctld().take_sent().iter().map(ToString::to_string).collect()
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

/// Stops ctld (if it runs), removes what is left, unloads, checks leaks.
fn finish(mut sh: Shell) {
    let _ = sh.run("service ctld stop");
    for lun_id in ctl::luns() {
        ctl::lun_request("passthrough", &ctl::Request::Remove { lun_id }, &[]);
    }
    run(&mut sh, "kldunload ctlpass");
    drop(sh);
    assert_eq!(malloc::leaks(), Vec::<String>::new());
}

/// An element of LUN `lun` in CTL's LUN list.
fn element(lun: u32, name: &str) -> Option<String> {
    let xml = ctl::lun_list_xml();
    let start = xml.find(&format!("<lun id=\"{lun}\">"))?;
    let body = &xml[start..start + xml[start..].find("</lun>")?];
    let open = format!("<{name}>");
    let at = body.find(&open)? + open.len();
    Some(body[at..at + body[at..].find('<')?].to_owned())
}

/// TEST UNIT READY: its status, and the sense key, ASC and ASCQ if any.
fn tur(lun: u32) -> (u8, Option<(u8, u8, u8)>) {
    let r = frontend::execute(lun, &Cmd::none(&[0; 6]));
    let sense = (r.sense.len() > 13).then(|| (r.sense[2] & 0x0f, r.sense[12], r.sense[13]));
    (r.status, sense)
}

/// The unit attention a new LUN raises, taken.
const POWER_ON: (u8, Option<(u8, u8, u8)>) = (2, Some((6, 0x29, 0x01)));
const GOOD: (u8, Option<(u8, u8, u8)>) = (0, None);

fn write_blocks(lun: u32, lba: u32, data: &[u8]) {
    let blocks = (data.len() / 512) as u16;
    let mut cdb = [0x2a, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
    assert_eq!(frontend::execute(lun, &Cmd::write(&cdb, data)).status, 0);
}

fn read_blocks(lun: u32, lba: u32, len: usize) -> Vec<u8> {
    let mut cdb = [0x28, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[7..9].copy_from_slice(&((len / 512) as u16).to_be_bytes());
    let r = frontend::execute(lun, &Cmd::read(&cdb, len));
    assert_eq!(r.status, 0);
    r.data
}

/// The brief's ctl.conf, with the device id quoted as ctld's scanner
/// needs it.
const FIRST: &str = "\
debug 1
portal-group pg0 {
\tdiscovery-auth-group no-authentication
\tlisten 0.0.0.0
}
lun backup_disk {
\tbackend passthrough
\tpath \"devid=naa.5000c500a1b2c3d4\"      # any device naming form
\tblocksize 512
\tserial \"Z1Z3ABCD\"
\tdevice-id \"Z1Z3ABCD\"
\toption lost remove
}
target iqn.2012-06.com.example:target0 {
\tauth-group no-authentication
\tportal-group pg0
\tlun 0 backup_disk
\tlun 1 { backend passthrough; path cd0; }
}
";

const CD_WARNING: &str = "blocksize 512 ignored: cd0 has 2048-byte blocks (strict=on refuses this)";

#[test]
fn first_start_and_an_unchanged_reload() {
    let mut sh = shell();
    sh.write_file("/etc/ctl.conf", FIRST);
    let out = run(&mut sh, "service ctld start");
    assert_eq!(
        lines(&out),
        [
            "Starting ctld.",
            "ctld: adding lun \"backup_disk\"",
            "ctld: adding lun \"iqn.2012-06.com.example:target0,lun,1\"",
            &format!("ctld: LUN creation warning: {CD_WARNING}"),
        ]
    );
    assert_eq!(
        sent(&mut sh),
        [
            "create passthrough flags=DEV_TYPE|SERIAL_NUM|DEVID type=0 blocksize=512 size=0 serial=\"Z1Z3ABCD\" \
             device_id=\"Z1Z3ABCD\" [lost=remove file=devid=naa.5000c500a1b2c3d4 ctld_name=backup_disk]: ok, LUN 0"
                .to_string(),
            format!(
                "create passthrough flags=DEV_TYPE type=0 blocksize=512 size=0 [file=cd0 \
                 ctld_name=iqn.2012-06.com.example:target0,lun,1 scsiname=iqn.2012-06.com.example:target0,lun,1]: \
                 warning {CD_WARNING:?}, LUN 1"
            ),
        ]
    );
    // The initiator takes the new LUNs' unit attention, and writes.
    assert_eq!((tur(0), tur(0)), (POWER_ON, GOOD));
    assert_eq!((tur(1), tur(1)), (POWER_ON, GOOD));
    let pattern: Vec<u8> = (0..4096).map(|i| (i * 7 % 251) as u8).collect();
    write_blocks(0, 100, &pattern);

    let out = run(&mut sh, "service ctld reload");
    assert_eq!(
        lines(&out),
        [
            "Reloading ctld config files.",
            "ctld: received SIGHUP, reloading configuration",
            "ctld: obtaining configuration from /etc/ctl.conf",
            "ctld: auth-group \"default\" not defined; going with defaults",
            "ctld: portal-group \"default\" not defined; going with defaults",
            "ctld: transport-group \"default\" not defined; going with defaults",
            "ctld: modifying lun \"backup_disk\", CTL lun 0",
            "ctld: modifying lun \"iqn.2012-06.com.example:target0,lun,1\", CTL lun 1",
        ]
    );
    assert_eq!(
        sent(&mut sh),
        [
            "modify passthrough lun=0 size=0 [lost=remove file=devid=naa.5000c500a1b2c3d4 ctld_name=backup_disk]: ok",
            "modify passthrough lun=1 size=0 [file=cd0 ctld_name=iqn.2012-06.com.example:target0,lun,1 \
             scsiname=iqn.2012-06.com.example:target0,lun,1]: ok",
        ]
    );
    // Same LUNs, same data, no unit attention.
    assert_eq!(ctl::luns(), [0, 1]);
    assert_eq!((tur(0), tur(1)), (GOOD, GOOD));
    assert_eq!(read_blocks(0, 100, 4096), pattern);
    // ctladm's modify without options keeps the LUN's.
    run(&mut sh, "ctladm modify -b passthrough -l 0 -s 8388608");
    assert_eq!(element(0, "ctld_name").as_deref(), Some("backup_disk"));
    assert_eq!(element(0, "lost").as_deref(), Some("remove"));
    // SIGTERM: ctld removes its LUNs.
    let out = run(&mut sh, "service ctld stop");
    assert_eq!(
        lines(&out),
        [
            "Stopping ctld.",
            "ctld: exiting on signal; reloading empty configuration",
            "ctld: removing CTL iSCSI ports and terminating all connections",
            "ctld: changing debug level to 0",
            "ctld: exiting on signal",
            "Waiting for PIDS: 801.",
        ]
    );
    assert_eq!(
        sent(&mut sh),
        ["remove passthrough lun=0: ok", "remove passthrough lun=1: ok"]
    );
    assert_eq!(ctl::luns(), Vec::<u32>::new());
    finish(sh);
}

const BEFORE: &str = "\
debug 1
lun a { backend passthrough; path da0; option lost offline }
lun b { backend passthrough; path cd0; device-type cd }
lun c { backend passthrough; path da1; blocksize 4096 }
";

const AFTER: &str = "\
debug 1
lun a { backend passthrough; path da0; option lost remove }
lun b { backend passthrough; path \"cam=1:0:0\"; device-type cd }
lun e { backend passthrough; path da1; blocksize 4096 }
";

#[test]
fn a_reload_with_changes() {
    let mut sh = shell();
    sh.write_file("/etc/ctl.conf", BEFORE);
    run(&mut sh, "service ctld start");
    assert_eq!(
        sent(&mut sh),
        [
            "create passthrough flags=DEV_TYPE type=0 blocksize=512 size=0 [lost=offline file=da0 ctld_name=a]: ok, LUN 0",
            "create passthrough flags=DEV_TYPE type=5 blocksize=2048 size=0 [file=cd0 ctld_name=b]: ok, LUN 1",
            "create passthrough flags=DEV_TYPE type=0 blocksize=4096 size=0 [file=da1 ctld_name=c]: ok, LUN 2",
        ]
    );
    let pattern = vec![0xa5u8; 512];
    assert_eq!(tur(0), POWER_ON);
    write_blocks(0, 7, &pattern);
    sh.write_file("/etc/ctl.conf", AFTER);
    let out = run(&mut sh, "service ctld reload");
    assert_eq!(
        lines(&out)[6..],
        [
            "ctld: path for lun \"b\", CTL lun 1, changed; removing",
            "ctld: lun \"c\", CTL lun 2 not found in new configuration; removing",
            "ctld: modifying lun \"a\", CTL lun 0",
            "ctld: adding lun \"b\"",
            "ctld: adding lun \"e\"",
        ]
    );
    assert_eq!(
        sent(&mut sh),
        [
            "remove passthrough lun=1: ok",
            "remove passthrough lun=2: ok",
            "modify passthrough lun=0 size=0 [lost=remove file=da0 ctld_name=a]: ok",
            "create passthrough flags=DEV_TYPE type=5 blocksize=2048 size=0 [file=cam=1:0:0 ctld_name=b]: ok, LUN 1",
            "create passthrough flags=DEV_TYPE type=0 blocksize=4096 size=0 [file=da1 ctld_name=e]: ok, LUN 2",
        ]
    );
    // The changed option took effect: LUN 0 now goes with its device.
    assert_eq!(element(0, "lost").as_deref(), Some("remove"));
    assert_eq!(read_blocks(0, 7, 512), pattern);
    assert_eq!(element(1, "periph").as_deref(), Some("cd0"));
    // A size stated wrongly: the modify fails, the rest goes on.
    sh.write_file(
        "/etc/ctl.conf",
        &AFTER.replace("option lost remove", "option lost remove; size 4m"),
    );
    let out = run(&mut sh, "service ctld reload");
    assert_eq!(
        lines(&out)[6..],
        [
            "ctld: modifying lun \"a\", CTL lun 0",
            "ctld: LUN modification error: size 4194304 does not match da0: 16384 blocks of 512 bytes (8388608 bytes)",
            "ctld: failed to modify lun \"a\", CTL lun 0",
            "ctld: modifying lun \"b\", CTL lun 1",
            "ctld: modifying lun \"e\", CTL lun 2",
            "ctld: failed to reload configuration",
        ]
    );
    assert_eq!(sent(&mut sh).len(), 3);
    assert_eq!(ctl::luns(), [0, 1, 2]);
    // An option CTL reads at creation cannot change on a live LUN.
    sh.write_file(
        "/etc/ctl.conf",
        &AFTER.replace("option lost remove", "option lost remove; option vendor ACME"),
    );
    let out = run(&mut sh, "service ctld reload");
    assert_eq!(
        lines(&out)[7..9],
        [
            "ctld: LUN modification error: option \"vendor\" cannot change on a live LUN (to \"ACME\"); \
             remove and create the LUN again",
            "ctld: failed to modify lun \"a\", CTL lun 0",
        ]
    );
    assert_eq!(element(0, "vendor").as_deref(), Some("SEAGATE"));
    sent(&mut sh);
    // lost=remove, taken at run time: the LUN goes with its device, and
    // the next reload says so.
    run(&mut sh, "device remove da0");
    assert!(
        sh.machine()
            .dmesg()
            .contains("ctlpass: LUN 0: da0 is lost; removing the LUN\n")
    );
    assert_eq!(ctl::luns(), [1, 2]);
    finish(sh);
}

const PINNED_AND_NOT: &str = "\
debug 1
lun pinned {
\tbackend passthrough
\tpath da1
\tblocksize 4096
\tserial \"NM0T123456X78901\"
\tdevice-id \"S6PXNM0T123456X78901\"
}
lun plain { backend passthrough; path da0 }
";

#[test]
fn a_restart_after_an_unclean_exit_keeps_pinned_luns() {
    let mut sh = shell();
    sh.write_file("/etc/ctl.conf", PINNED_AND_NOT);
    run(&mut sh, "service ctld start");
    assert_eq!(
        sent(&mut sh),
        [
            "create passthrough flags=DEV_TYPE|SERIAL_NUM|DEVID type=0 blocksize=4096 size=0 \
             serial=\"NM0T123456X78901\" device_id=\"S6PXNM0T123456X78901\" [file=da1 ctld_name=pinned]: ok, LUN 0",
            "create passthrough flags=DEV_TYPE type=0 blocksize=512 size=0 [file=da0 ctld_name=plain]: ok, LUN 1",
        ]
    );
    // What CTL lists is what ctl.conf pins (and what ctld reads back).
    assert_eq!(element(0, "serial_number").as_deref(), Some("NM0T123456X78901"));
    assert_eq!(element(0, "device_id").as_deref(), Some("S6PXNM0T123456X78901"));
    assert_eq!(element(0, "blocksize").as_deref(), Some("4096"));
    assert_eq!(element(0, "file").as_deref(), Some("da1"));
    assert_eq!(element(1, "serial_number").as_deref(), Some("Z1Z3ABCD"));
    assert_eq!((tur(0), tur(0), tur(1), tur(1)), (POWER_ON, GOOD, POWER_ON, GOOD));
    let pattern: Vec<u8> = (0..1024).map(|i| (i % 13) as u8).collect();
    write_blocks(1, 42, &pattern);
    // ctld dies without removing its LUNs; the next one finds them.
    run(&mut sh, "kill -9 801");
    assert_eq!(ctl::luns(), [0, 1]);
    let out = run(&mut sh, "service ctld start");
    assert_eq!(
        lines(&out),
        [
            "Starting ctld.",
            "ctld: device-id for lun \"plain\", CTL lun 1 changed; removing",
            "ctld: modifying lun \"pinned\", CTL lun 0",
            "ctld: adding lun \"plain\"",
        ]
    );
    assert_eq!(
        sent(&mut sh),
        [
            "remove passthrough lun=1: ok",
            "modify passthrough lun=0 size=0 [file=da1 ctld_name=pinned]: ok",
            "create passthrough flags=DEV_TYPE type=0 blocksize=512 size=0 [file=da0 ctld_name=plain]: ok, LUN 1",
        ]
    );
    // The pinned LUN was not disturbed; the other is a new LUN with the
    // same number (the lowest free), the same data, and a unit attention.
    assert_eq!(tur(0), GOOD);
    assert_eq!(tur(1), POWER_ON);
    assert_eq!(read_blocks(1, 42, 1024), pattern);
    // service ctld restart stops ctld first: every LUN is created again.
    run(&mut sh, "service ctld restart");
    assert_eq!(
        sent(&mut sh),
        [
            "remove passthrough lun=0: ok",
            "remove passthrough lun=1: ok",
            "create passthrough flags=DEV_TYPE|SERIAL_NUM|DEVID type=0 blocksize=4096 size=0 \
             serial=\"NM0T123456X78901\" device_id=\"S6PXNM0T123456X78901\" [file=da1 ctld_name=pinned]: ok, LUN 0",
            "create passthrough flags=DEV_TYPE type=0 blocksize=512 size=0 [file=da0 ctld_name=plain]: ok, LUN 1",
        ]
    );
    finish(sh);
}

#[test]
fn a_reload_while_a_device_is_lost() {
    let mut sh = shell();
    sh.write_file("/etc/ctl.conf", "lun a { backend passthrough; path da0 }\n");
    run(&mut sh, "service ctld start");
    run(&mut sh, "device remove da0");
    assert_eq!(element(0, "state").as_deref(), Some("offline"));
    sent(&mut sh);
    let out = run(&mut sh, "service ctld reload");
    assert_eq!(lines(&out), ["Reloading ctld config files."]);
    assert_eq!(
        sent(&mut sh),
        ["modify passthrough lun=0 size=0 [file=da0 ctld_name=a]: ok"]
    );
    // A run-time option may change while the device is away.
    sh.write_file(
        "/etc/ctl.conf",
        "lun a { backend passthrough; path da0; option reset device }\n",
    );
    run(&mut sh, "service ctld reload");
    assert_eq!(element(0, "reset").as_deref(), Some("device"));
    assert_eq!(ctl::luns(), [0]);
    finish(sh);
}

#[test]
fn a_configuration_ctld_refuses_leaves_the_luns_alone() {
    let mut sh = shell();
    sh.write_file("/etc/ctl.conf", "lun a { backend passthrough; path da0 }\n");
    run(&mut sh, "service ctld start");
    sent(&mut sh);
    for (conf, why) in [
        (
            "lun a {\n\tbackend passthrough\n\tpath cam=0:0:0\n}\n",
            "ctld: error in configuration file at line 3 near '=': syntax error",
        ),
        (
            "lun a { backend passthrough; path da0; size 1000 }\n",
            "ctld: invalid size for lun \"a\"; must be multiple of blocksize",
        ),
        (
            "lun a { backend passthrough; path da0; option lost remove; option lost offline }\n",
            "ctld: duplicated option \"lost\"",
        ),
        (
            "lun a { backend passthrough; path da0; path da1 }\n",
            "ctld: path for lun \"a\" specified more than once",
        ),
        (
            "lun a { backend passthrough; path da0; device-type tape }\n",
            "ctld: invalid device-type \"tape\" for lun \"a\"",
        ),
        (
            "target iqn.x { lun 0 b }\n",
            "ctld: unknown LUN named b used for target \"iqn.x\"",
        ),
    ] {
        sh.write_file("/etc/ctl.conf", conf);
        let out = run(&mut sh, "service ctld reload");
        assert_eq!(
            lines(&out),
            [
                "Reloading ctld config files.",
                why,
                "ctld: configuration error, continuing with old configuration"
            ],
            "{conf}"
        );
        assert_eq!(sent(&mut sh), Vec::<String>::new());
    }
    assert_eq!(ctl::luns(), [0]);
    // Refused at start, ctld exits and creates nothing.
    run(&mut sh, "service ctld stop");
    sent(&mut sh);
    let e = sh.run("service ctld start").unwrap_err();
    assert_eq!(
        lines(&e),
        [
            "Starting ctld.",
            "ctld: unknown LUN named b used for target \"iqn.x\"",
            "ctld: configuration error; exiting"
        ]
    );
    // A LUN the kernel refuses: ctld exits, the LUNs it made stay.
    sh.write_file(
        "/etc/ctl.conf",
        "lun a { backend passthrough; path da0 }\nlun b { backend passthrough; path da1; size 1m }\n",
    );
    let e = sh.run("service ctld start").unwrap_err();
    assert_eq!(
        lines(&e),
        [
            "Starting ctld.",
            "ctld: LUN creation error: size 1048576 does not match da1: 2048 blocks of 4096 bytes (8388608 bytes)",
            "ctld: failed to add lun \"b\"",
            "ctld: failed to apply configuration; exiting"
        ]
    );
    assert_eq!(ctl::luns(), [0]);
    assert_eq!(sh.run("service ctld status"), Err("ctld is not running.".into()));
    finish(sh);
}

#[test]
fn every_naming_form_as_path() {
    let mut sh = shell();
    for path in [
        "da0",
        "/dev/da0",
        "pass0",
        "\"cam=0:0:0\"",
        "\"devid=naa.5000c500a1b2c3d4\"",
        "\"serial=Z1Z3ABCD\"",
    ] {
        sh.write_file(
            "/etc/ctl.conf",
            &format!("lun a {{ backend passthrough; path {path} }}\n"),
        );
        run(&mut sh, "service ctld start");
        let file = path.trim_matches('"');
        assert_eq!(
            sent(&mut sh),
            [format!(
                "create passthrough flags=DEV_TYPE type=0 blocksize=512 size=0 [file={file} ctld_name=a]: ok, LUN 0"
            )]
        );
        assert_eq!(element(0, "periph").as_deref(), Some("da0"), "{path}");
        assert_eq!(element(0, "file").as_deref(), Some(file));
        run(&mut sh, "service ctld reload");
        assert_eq!(
            sent(&mut sh),
            [format!("modify passthrough lun=0 size=0 [file={file} ctld_name=a]: ok")]
        );
        run(&mut sh, "service ctld stop");
        assert_eq!(sent(&mut sh), ["remove passthrough lun=0: ok"]);
    }
    finish(sh);
}

#[test]
fn the_disk_and_cd_examples() {
    let mut sh = shell();
    for (example, request) in [
        (
            include_str!("../../../examples/ctl.conf.disk"),
            "create passthrough flags=DEV_TYPE|SERIAL_NUM|DEVID type=0 blocksize=512 size=0 serial=\"Z1Z3ABCD\" \
             device_id=\"Z1Z3ABCD\" [lost=offline file=devid=naa.5000c500a1b2c3d4 ctld_name=backup_disk]: ok, LUN 0",
        ),
        (
            include_str!("../../../examples/ctl.conf.cd"),
            "create passthrough flags=DEV_TYPE|SERIAL_NUM|DEVID type=5 blocksize=2048 size=0 \
             serial=\"R8RS6GAB123456\" device_id=\"R8RS6GAB123456\" [readonly=on file=cd0 ctld_name=dvd]: ok, LUN 0",
        ),
    ] {
        sh.write_file("/etc/ctl.conf", example);
        assert_eq!(run(&mut sh, "service ctld start"), "Starting ctld.\n");
        assert_eq!(sent(&mut sh), [request]);
        // Pinned: a ctld starting after an unclean exit only modifies.
        let pid = sh.ctld().pid().unwrap_or(0);
        run(&mut sh, &format!("kill -9 {pid}"));
        assert_eq!(run(&mut sh, "service ctld start"), "Starting ctld.\n");
        let modify = sent(&mut sh);
        assert_eq!(modify.len(), 1);
        assert!(modify[0].starts_with("modify passthrough lun=0 size=0 ["), "{modify:?}");
        run(&mut sh, "service ctld stop");
        sent(&mut sh);
    }
    finish(sh);
}

#[test]
fn the_tape_example_in_mode_a() {
    let device = |product: &str, serial: &str, kind: u8| -> Arc<dyn ScsiDevice> {
        let identity = Identity {
            vendor: "HP".into(),
            product: product.into(),
            revision: "J5SW".into(),
            serial: serial.into(),
            naa: None,
            eui64: None,
        };
        Arc::new(OtherType {
            disk: RamDisk::new(identity, 16, 512),
            device_type: kind,
        })
    };
    let devices = vec![
        device("Ultrium 6-SCSI", "HU1234ABCD", 0x01),
        device("MSL G3 Series", "DEC1234567", 0x08),
    ];
    let mut sh = shell_on(Config::one_bus(1 << 20, 32, devices));
    sh.write_file("/etc/ctl.conf", include_str!("../../../examples/ctl.conf.tape"));
    let refusal = |name: &str, kind: &str| {
        format!(
            "{name} is a {kind} device; without the CTL patch (Mode B) only Direct Access and CD-ROM devices can be exported"
        )
    };
    let e = sh.run("service ctld start").unwrap_err();
    assert_eq!(
        lines(&e),
        [
            "Starting ctld.".to_string(),
            format!("ctld: LUN creation error: {}", refusal("ch0", "Changer")),
            "ctld: failed to add lun \"changer\"".into(),
            format!("ctld: LUN creation error: {}", refusal("sa0", "Sequential Access")),
            "ctld: failed to add lun \"drive\"".into(),
            "ctld: failed to apply configuration; exiting".into(),
        ]
    );
    assert_eq!(
        sent(&mut sh),
        [
            format!(
                "create passthrough flags=DEV_TYPE type=8 blocksize=512 size=0 [file=ch0 ctld_name=changer]: error {:?}",
                refusal("ch0", "Changer")
            ),
            format!(
                "create passthrough flags=DEV_TYPE type=1 blocksize=512 size=0 [reset=device file=sa0 ctld_name=drive]: \
                 error {:?}",
                refusal("sa0", "Sequential Access")
            ),
        ]
    );
    assert_eq!(ctl::luns(), Vec::<u32>::new());
    finish(sh);
}
