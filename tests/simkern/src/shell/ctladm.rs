//! ctladm(8) in ctlpass-sim: LUN requests (`create`, `remove`, `modify`),
//! `devlist`, and the commands an initiator sends (`inquiry`, `readcap`,
//! `tur`, `start`, `stop`), with ctladm's syntax, messages and output
//! formats (usr.sbin/ctladm/ctladm.c and sys/cam/ctl/ctl_util.c of FreeBSD
//! 15); and ctlpass-sim's own data commands, `read`, `write` and `cdb`,
//! which send READ, WRITE or any CDB through the simulated iSCSI port.
//!
//! Where ctlpass-sim differs: the commands go through the simulated iSCSI
//! port (initiator 0, port 1, so paths read `(0:1:LUN/LUN): `) rather
//! than CTL's ioctl port; an error's first line leaves out the tag and
//! priority the simulated frontend does not report; `tur`, `start`,
//! `stop` and `readcapacity` fail when the LUN answers with an error
//! (ctladm prints it and exits 0); options getopt does not know fail
//! rather than being skipped; and only the commands above are
//! implemented.

use super::args::{self, getopt};
use super::xml::{self, Event};
use crate::cam::scsi_all;
use crate::ctl::{self, Cmd, Reply, Request, Response, frontend};
use crate::sys;

/// ctladm's commands, in its option table's order, and whether each takes
/// a LUN argument.
const COMMANDS: &[(&str, bool, &str)] = &[
    ("adddev", false, ""),
    ("create", false, "b:B:d:l:o:s:S:t:"),
    ("delay", true, "T:l:t:"),
    ("devid", true, ""),
    ("devlist", false, "b:vx"),
    ("dumpooa", false, ""),
    ("dumpstructs", false, ""),
    ("help", false, ""),
    ("inject", true, "cd:i:p:r:s:"),
    ("inquiry", true, ""),
    ("islist", false, "vx"),
    ("islogout", false, "ac:i:p:"),
    ("isterminate", false, "ac:i:p:"),
    ("lunlist", false, ""),
    ("lunmap", false, "p:l:L:"),
    ("modesense", true, "P:S:dlm:c:"),
    ("modify", false, "b:l:o:s:"),
    ("nvlist", false, "vx"),
    ("port", false, "lo:O:d:crp:qt:w:W:x"),
    ("portlist", false, "f:ilp:qvx"),
    ("prin", true, "a:"),
    ("prout", true, "a:k:r:s:"),
    ("read", true, "Nb:c:d:f:l:"),
    ("readcapacity", true, "c:"),
    ("remove", false, "b:l:o:"),
    ("reportluns", true, ""),
    ("reqsense", true, ""),
    ("rtpg", true, ""),
    ("start", true, "i"),
    ("stop", true, "i"),
    ("synccache", true, "b:c:il:r"),
    ("tur", true, ""),
    ("write", true, "Nb:c:d:f:l:"),
    ("-?", false, ""),
    ("-h", false, ""),
];

/// ctladm's general options.
const MAIN_OPTS: &str = "C:D:I:";

/// The device ctladm opens.
const CTL_DEFAULT_DEV: &str = "/dev/cam/ctl";

/// What `ctladm help` prints in ctlpass-sim: the commands it implements.
const USAGE: &str = "\
Usage (the commands ctlpass-sim implements):
         ctladm tur         [dev_id][general options]
         ctladm inquiry     [dev_id][general options]
         ctladm readcap     [dev_id][general options] [-c cdbsize]
         ctladm start       [dev_id][general options] [-i]
         ctladm stop        [dev_id][general options] [-i]
         ctladm create      <-b backend> [-B blocksize] [-d device_id]
                            [-l lun_id] [-o name=value] [-s size_bytes]
                            [-S serial_num] [-t dev_type]
         ctladm remove      <-b backend> <-l lun_id> [-o name=value]
         ctladm modify      <-b backend> <-l lun_id> <-s size_bytes>
         ctladm devlist     [-b backend] [-v] [-x]
         ctladm help
General Options:
-C retries               : specify the number of times to retry this command
";

/// ctladm's getoption: an exact name, or a prefix of exactly one.
fn getoption(arg: &str) -> Result<(&'static str, bool, &'static str), String> {
    let mut found = None;
    let mut matches = 0;
    for &(name, lun, opts) in COMMANDS {
        if name.starts_with(arg) {
            found = Some((name, lun, opts));
            if name == arg {
                return Ok((name, lun, opts));
            }
            matches += 1;
            if matches > 1 {
                return Err(format!("ctladm: ambiguous option {arg}"));
            }
        }
    }
    found.ok_or_else(|| format!("ctladm: option {arg} not found"))
}

/// Runs `ctladm ARGS` (`args[0]` is the command, possibly abbreviated).
pub(super) fn run(args: &[&str]) -> Result<String, String> {
    let Some(&first) = args.first() else {
        return Err(USAGE.trim_end().to_owned());
    };
    let (command, needs_lun, subopts) = getoption(first)?;
    let mut optstart = 1;
    let mut lun = 0;
    if needs_lun {
        match args.get(1) {
            Some(a) if a.starts_with(|c: char| c.is_ascii_digit()) => lun = args::strtoul(a) as u32,
            _ => return Err(format!("ctladm: option {first} requires a lun argument")),
        }
        optstart = 2;
    }
    let combined = format!("{MAIN_OPTS}{subopts}");
    let (opts, _operands) = getopt(&args[optstart..], &combined).map_err(|e| format!("ctladm: {e}"))?;
    let mut retries = 0i64;
    for &(c, value) in &opts {
        let value = value.unwrap_or("");
        match c {
            'C' => retries = args::strtoul(value) as i64,
            'D' if value != CTL_DEFAULT_DEV => {
                return Err(format!("ctladm: error opening {value}: {}", args::strerror(2)));
            }
            'I' if args::strtoul(value) != 0 => {
                return Err(format!(
                    "ctladm: -I {value}: the simulated CTL has one initiator, 0, on its iSCSI port"
                ));
            }
            _ => {}
        }
    }
    match command {
        "create" => create(&opts),
        "remove" => remove(&opts),
        "modify" => modify(&opts),
        "devlist" => devlist(&opts),
        "inquiry" => inquiry(lun, retries),
        "readcapacity" => read_capacity(lun, retries, &opts),
        "tur" => tur(lun, retries),
        "start" | "stop" => start_stop(lun, retries, command == "start", &opts),
        "help" | "-?" | "-h" => Ok(USAGE.to_owned()),
        other => Err(format!("ctladm: {other}: not implemented in ctlpass-sim")),
    }
}

// --- LUN requests ---

/// ctladm's `-o name=value` (strsep twice: the value ends at the next
/// `=`, so `-o device=cam=0:1:0` sends `device=cam`, as on FreeBSD).
fn add_option(options: &mut Vec<(String, String)>, arg: &str, func: &str) -> Result<(), String> {
    let mut parts = arg.split('=');
    let name = parts.next().unwrap_or("");
    let Some(value) = parts.next() else {
        return Err(format!("ctladm: {func}: option -o takes \"name=value\"argument"));
    };
    options.push((name.to_owned(), value.to_owned()));
    Ok(())
}

/// Packs the options as nvlist_pack does: a name given twice is an error
/// (EEXIST) in an nvlist of unique names.
fn pack(options: &[(String, String)], func: &str) -> Result<(), String> {
    for (i, (name, _)) in options.iter().enumerate() {
        if options[..i].iter().any(|(n, _)| n == name) {
            return Err(format!(
                "ctladm: {func}: error packing nvlist: {}",
                args::strerror(args::EEXIST)
            ));
        }
    }
    Ok(())
}

/// `-s`: expand_number(3), or `auto` (0).
fn size_arg(value: &str, func: &str) -> Result<u64, String> {
    if value.eq_ignore_ascii_case("auto") {
        return Ok(0);
    }
    args::expand_number(value).map_err(|e| format!("ctladm: {func}: invalid -s argument: {}", args::strerror(e)))
}

/// Sends a LUN request; `Ok` with ctladm's warning line (if any), `Err`
/// with its error.
fn lun_request(
    backend: &str,
    request: &Request,
    options: &[(String, String)],
    func: &str,
    what: &str,
) -> Result<(Reply, String), String> {
    let pairs: Vec<(&str, &str)> = options.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let reply = ctl::lun_request(backend, request, &pairs);
    if let Some(errno) = reply.error.strip_prefix("error issuing CTL_LUN_REQ ioctl: errno ") {
        let errno = errno.parse().unwrap_or(0);
        return Err(format!(
            "ctladm: {func}: error issuing CTL_LUN_REQ ioctl: {}",
            args::strerror(errno)
        ));
    }
    match reply.status {
        sys::CTL_LUN_OK => Ok((reply, String::new())),
        sys::CTL_LUN_WARNING => {
            let warning = format!("ctladm: LUN {what} warning: {}\n", reply.error);
            Ok((reply, warning))
        }
        sys::CTL_LUN_ERROR => Err(format!("ctladm: LUN {what} error: {}", reply.error)),
        other => Err(format!("ctladm: unknown LUN {what} status: {other}")),
    }
}

/// What strlcpy(3) leaves of `text` in a field of `size` bytes (ctladm
/// copies `-S` and `-d` so, into CTL's 16 and 64).
fn strlcpy(text: &str, size: usize) -> String {
    let bytes = text.as_bytes();
    String::from_utf8_lossy(&bytes[..bytes.len().min(size - 1)]).into_owned()
}

fn create(opts: &[(char, Option<&str>)]) -> Result<String, String> {
    const FUNC: &str = "cctl_create_lun";
    let (mut backend, mut blocksize, mut device_id, mut lun_id) = (None, 0u32, None, None);
    let (mut size, mut serial, mut device_type) = (0u64, None, 0u8);
    let mut options = Vec::new();
    for &(c, value) in opts {
        let v = value.unwrap_or("");
        match c {
            'b' => backend = Some(v),
            'B' => blocksize = args::strtoul(v) as u32,
            'd' => device_id = Some(strlcpy(v, 64)),
            'l' => lun_id = Some(args::strtoul(v) as u32),
            'o' => add_option(&mut options, v, FUNC)?,
            's' => size = size_arg(v, FUNC)?,
            'S' => serial = Some(strlcpy(v, 16)),
            't' => device_type = args::strtoul(v) as u8,
            _ => {}
        }
    }
    let Some(backend) = backend else {
        return Err(format!("ctladm: {FUNC}: backend name (-b) must be specified"));
    };
    pack(&options, FUNC)?;
    let request = Request::Create {
        device_type,
        size,
        blocksize,
        lun_id,
        serial: serial.clone(),
        device_id: device_id.clone(),
    };
    let (reply, warning) = lun_request(backend, &request, &options, FUNC, "creation")?;
    let (device_type, size, blocksize, lun, serial, devid) = reply.created.unwrap_or((
        device_type,
        size,
        blocksize,
        lun_id.unwrap_or(0),
        serial.unwrap_or_default(),
        device_id.unwrap_or_default(),
    ));
    let backend: String = backend.chars().take(31).collect();
    Ok(format!(
        "{warning}LUN created successfully\n\
         backend:       {backend}\n\
         device type:   {device_type}\n\
         LUN size:      {size} bytes\n\
         blocksize      {blocksize} bytes\n\
         LUN ID:        {}\n\
         Serial Number: {serial}\n\
         Device ID:     {devid}\n",
        lun as i32
    ))
}

/// `-b` and `-l` of remove and modify, and their options.
type Target<'a> = (Option<&'a str>, Option<u32>, Vec<(String, String)>, Option<u64>);

fn target_args<'a>(opts: &[(char, Option<&'a str>)], func: &str) -> Result<Target<'a>, String> {
    let (mut backend, mut lun_id, mut options, mut size) = (None, None, Vec::new(), None);
    for &(c, value) in opts {
        let v = value.unwrap_or("");
        match c {
            'b' => backend = Some(v),
            'l' => lun_id = Some(args::strtoul(v) as u32),
            'o' => add_option(&mut options, v, func)?,
            's' => size = Some(size_arg(v, func)?),
            _ => {}
        }
    }
    if backend.is_none() {
        return Err(format!("ctladm: {func}: backend name (-b) must be specified"));
    }
    if lun_id.is_none() {
        return Err(format!("ctladm: {func}: LUN id (-l) must be specified"));
    }
    Ok((backend, lun_id, options, size))
}

fn remove(opts: &[(char, Option<&str>)]) -> Result<String, String> {
    const FUNC: &str = "cctl_rm_lun";
    let (backend, lun_id, options, _) = target_args(opts, FUNC)?;
    let (backend, lun_id) = (backend.unwrap_or(""), lun_id.unwrap_or(0));
    pack(&options, FUNC)?;
    let (_, warning) = lun_request(backend, &Request::Remove { lun_id }, &options, FUNC, "removal")?;
    Ok(format!("{warning}LUN {} removed successfully\n", lun_id as i32))
}

fn modify(opts: &[(char, Option<&str>)]) -> Result<String, String> {
    const FUNC: &str = "cctl_modify_lun";
    let (backend, lun_id, options, size) = target_args(opts, FUNC)?;
    let (backend, lun_id) = (backend.unwrap_or(""), lun_id.unwrap_or(0));
    if size.is_none() && options.is_empty() {
        return Err(format!("ctladm: {FUNC}: size (-s) or options (-o) must be specified"));
    }
    pack(&options, FUNC)?;
    let request = Request::Modify {
        lun_id,
        size: size.unwrap_or(0),
    };
    let (_, warning) = lun_request(backend, &request, &options, FUNC, "modification")?;
    Ok(format!("{warning}LUN {} modified successfully\n", lun_id as i32))
}

// --- devlist ---

/// One LUN as cctl_devlist keeps it; `None` is an empty element (which
/// FreeBSD's printf shows as `(null)`).
#[derive(Default)]
struct Lun {
    id: u64,
    backend: Option<String>,
    size: u64,
    blocksize: u32,
    serial: Option<String>,
    device_id: Option<String>,
    attrs: Vec<(String, Option<String>)>,
}

/// The LUN list as cctl_start_element, cctl_end_element and
/// cctl_char_handler build it: each element's own character data is its
/// value; elements other than the fixed ones, in the order they end,
/// become the `-v` attributes (`lun_type` among them).
fn lun_list(doc: &str) -> Result<Vec<Lun>, String> {
    let events = xml::parse(doc).map_err(|e| format!("ctladm: cctl_devlist: Unable to parse XML: {e}"))?;
    let mut luns = Vec::new();
    let mut current: Option<Lun> = None;
    let mut texts: Vec<String> = Vec::new();
    for event in events {
        match event {
            Event::Start(name, attrs) => {
                texts.push(String::new());
                if name == "lun" {
                    if current.is_some() {
                        return Err("ctladm: cctl_start_element: improper lun element nesting".into());
                    }
                    let mut lun = Lun::default();
                    for (k, v) in attrs {
                        if k != "id" {
                            return Err(format!("ctladm: cctl_start_element: invalid LUN attribute {k} = {v}"));
                        }
                        lun.id = args::strtoul(&v);
                    }
                    current = Some(lun);
                }
            }
            Event::Text(t) => {
                if let Some(last) = texts.last_mut() {
                    last.push_str(&t);
                }
            }
            Event::End(name) => {
                let text = texts.pop().unwrap_or_default();
                if name == "ctllunlist" {
                    continue;
                }
                let Some(lun) = current.as_mut() else {
                    return Err(format!("ctladm: cctl_end_element: cur_lun == NULL! (name = {name})"));
                };
                let value = (!text.is_empty()).then_some(text);
                let number = || args::strtoul(value.as_deref().unwrap_or(""));
                match name.as_str() {
                    "backend_type" => lun.backend = value,
                    "size" => lun.size = number(),
                    "blocksize" => lun.blocksize = number() as u32,
                    "serial_number" => lun.serial = value,
                    "device_id" => lun.device_id = value,
                    "lun" => luns.extend(current.take()),
                    _ => lun.attrs.push((name, value)),
                }
            }
        }
    }
    Ok(luns)
}

fn devlist(opts: &[(char, Option<&str>)]) -> Result<String, String> {
    let (mut backend, mut verbose, mut dump_xml) = (None, false, false);
    for &(c, value) in opts {
        match c {
            'b' => backend = value,
            'v' => verbose = true,
            'x' => dump_xml = true,
            _ => {}
        }
    }
    let doc = ctl::lun_list_xml();
    if dump_xml {
        return Ok(doc);
    }
    let null = |s: &Option<String>| s.clone().unwrap_or_else(|| "(null)".into());
    let mut out = format!(
        "LUN Backend  {:>18} {:>4} {:<16} {:<16}\n",
        "Size (Blocks)", "BS", "Serial Number", "Device ID"
    );
    for lun in lun_list(&doc)? {
        if backend.is_some_and(|b| lun.backend.as_deref() != Some(b)) {
            continue;
        }
        out += &format!(
            "{:>3} {:<8} {:>18} {:>4} {:<16} {:<16}\n",
            lun.id,
            null(&lun.backend),
            lun.size,
            lun.blocksize,
            null(&lun.serial),
            null(&lun.device_id)
        );
        if verbose {
            for (name, value) in &lun.attrs {
                out += &format!("      {name}={}\n", null(value));
            }
        }
    }
    Ok(out)
}

// --- commands to a LUN ---

/// ctl_scsi_path_string for the simulated initiator's nexus.
fn path(lun: u32) -> String {
    format!("(0:{}:{lun}/{lun}): ", ctl::port().targ_port)
}

/// cctl_do_io: the command, sent again while it fails and retries are left.
fn send(lun: u32, retries: i64, cdb: &[u8], len: usize) -> Response {
    let mut left = retries;
    loop {
        let r = ctl::command(lun, cdb, len);
        if r.status == 0 || left <= 0 {
            return r;
        }
        left -= 1;
    }
}

/// ctl_io_error_print: the command, CTL's status, the SCSI status and the
/// sense data (the first line without the tag and priority).
fn error_text(lun: u32, cdb: &[u8], r: &Response) -> String {
    scsi_all::command_error(
        &path(lun),
        cdb,
        "CTL Status: SCSI Error",
        "SCSI Status",
        r.status,
        &r.sense,
    )
}

fn inquiry(lun: u32, retries: i64) -> Result<String, String> {
    let cdb = [0x12, 0, 0, 0x01, 0x00, 0];
    let r = send(lun, retries, &cdb, 256);
    if r.status != 0 {
        return Err(error_text(lun, &cdb, &r));
    }
    Ok(format!("{}{}", path(lun), scsi_all::inquiry_line(&r.data)))
}

fn read_capacity(lun: u32, retries: i64, opts: &[(char, Option<&str>)]) -> Result<String, String> {
    let mut cdbsize = 10;
    for &(c, value) in opts {
        if c == 'c' {
            cdbsize = args::strtoul(value.unwrap_or("")) as i64;
        }
    }
    if cdbsize != 10 && cdbsize != 16 {
        return Err(format!(
            "ctladm: cctl_read_capacity: invalid cdbsize {cdbsize}, valid sizes are 10 and 16"
        ));
    }
    loop {
        let cdb: Vec<u8> = if cdbsize == 10 {
            vec![0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        } else {
            vec![0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0]
        };
        let r = send(lun, retries, &cdb, 32);
        if r.status != 0 {
            return Err(error_text(lun, &cdb, &r));
        }
        let data = [r.data, vec![0; 12]].concat();
        let (maxlba, blocksize) = if cdbsize == 10 {
            (scsi_all::be(&data[..4]), scsi_all::be(&data[4..8]))
        } else {
            (scsi_all::be(&data[..8]), scsi_all::be(&data[8..12]))
        };
        if cdbsize == 10 && maxlba == 0xffff_ffff {
            cdbsize = 16;
            continue;
        }
        return Ok(format!("Disk Capacity: {maxlba}, Blocksize: {}\n", blocksize as i32));
    }
}

fn tur(lun: u32, retries: i64) -> Result<String, String> {
    let cdb = [0u8; 6];
    let r = send(lun, retries, &cdb, 0);
    if r.status != 0 {
        return Err(error_text(lun, &cdb, &r));
    }
    Ok("Unit is ready\n".into())
}

fn start_stop(lun: u32, retries: i64, start: bool, opts: &[(char, Option<&str>)]) -> Result<String, String> {
    let immediate = opts.iter().any(|&(c, _)| c == 'i');
    let cdb = [0x1b, u8::from(immediate), 0, 0, u8::from(start), 0];
    let r = send(lun, retries, &cdb, 0);
    if r.status != 0 {
        return Err(error_text(lun, &cdb, &r));
    }
    Ok(format!(
        "{} LUN {} successfully\n",
        path(lun),
        if start { "started" } else { "stopped" }
    ))
}

// --- data: ctlpass-sim's own read, write and cdb ---
//
// Not ctladm's `read` and `write` (which take -l, -d, -f, -b): an
// initiator's commands through the simulated iSCSI port, with the data
// in files or shown as `hexdump -C` shows it.

/// A number of a `read`, `write` or `cdb` argument: decimal, `0x` hex or
/// `0` octal, nothing after it.
fn number(text: &str, command: &str, what: &str) -> Result<u64, String> {
    match args::strtoumax(text) {
        (n, true, false, "") => Ok(n),
        _ => Err(format!("{command}: invalid {what} '{text}'")),
    }
}

/// The frontend's response as ctladm's error printing takes it.
fn plain(r: &frontend::Response) -> Response {
    Response {
        status: r.status,
        sense: r.sense.clone(),
        data: r.data.clone(),
    }
}

/// The LUN's block size, from READ CAPACITY(10) (a unit attention is
/// retried, as CAM's error recovery does).
fn block_size(lun: u32) -> Result<u64, String> {
    let cdb = [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let mut r = ctl::command(lun, &cdb, 8);
    for _ in 0..4 {
        if scsi_all::sense_fields(&r.sense).is_none_or(|(key, _, _)| key != 0x06) {
            break;
        }
        r = ctl::command(lun, &cdb, 8);
    }
    if r.status != 0 {
        return Err(error_text(lun, &cdb, &r));
    }
    match scsi_all::be(r.data.get(4..8).unwrap_or(&[])) {
        0 => Err(format!("(0:1:{lun}/{lun}): READ CAPACITY(10) reports no block size")),
        bs => Ok(bs),
    }
}

/// READ(10)/WRITE(10), or the 16-byte form when the LBA or the length
/// needs it.
fn rw_cdb(write: bool, lba: u64, blocks: u64, command: &str) -> Result<Vec<u8>, String> {
    if let (Ok(lba), Ok(blocks)) = (u32::try_from(lba), u16::try_from(blocks)) {
        let mut cdb = vec![if write { 0x2A } else { 0x28 }, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        cdb[2..6].copy_from_slice(&lba.to_be_bytes());
        cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
        return Ok(cdb);
    }
    let Ok(blocks) = u32::try_from(blocks) else {
        return Err(format!("{command}: {blocks} blocks are more than one command moves"));
    };
    let mut cdb = vec![
        if write { 0x8A } else { 0x88 },
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ];
    cdb[2..10].copy_from_slice(&lba.to_be_bytes());
    cdb[10..14].copy_from_slice(&blocks.to_be_bytes());
    Ok(cdb)
}

/// `read N LBA BLOCKS [FILE]`: READ(10) or READ(16) of BLOCKS blocks (of
/// the LUN's block size) from LBA; the data goes to FILE, or is shown as
/// `hexdump -C` shows it.
pub(super) fn read(words: &[&str]) -> Result<String, String> {
    let (lun, lba, blocks, file) = match words {
        [lun, lba, blocks] => (lun, lba, blocks, None),
        [lun, lba, blocks, file] => (lun, lba, blocks, Some(file)),
        _ => return Err("usage: read LUN LBA BLOCKS [FILE]".into()),
    };
    let lun = u32::try_from(number(lun, "read", "LUN")?).map_err(|_| format!("read: invalid LUN '{lun}'"))?;
    let (lba, blocks) = (number(lba, "read", "LBA")?, number(blocks, "read", "block count")?);
    let bs = block_size(lun)?;
    let cdb = rw_cdb(false, lba, blocks, "read")?;
    let len = usize::try_from(blocks.saturating_mul(bs)).map_err(|_| "read: too much data".to_string())?;
    let r = ctl::execute(lun, &Cmd::read(&cdb, len));
    if r.status != 0 {
        return Err(error_text(lun, &cdb, &plain(&r)));
    }
    match file {
        Some(file) => {
            std::fs::write(file, &r.data).map_err(|e| format!("read: {file}: {e}"))?;
            Ok(String::new())
        }
        None => Ok(hexdump(&r.data)),
    }
}

/// `write N LBA BLOCKS FILE`: WRITE(10) or WRITE(16) of BLOCKS blocks from
/// FILE, which must hold exactly that many blocks of the LUN's size.
pub(super) fn write(words: &[&str]) -> Result<String, String> {
    let [lun, lba, blocks, file] = words else {
        return Err("usage: write LUN LBA BLOCKS FILE".into());
    };
    let lun = u32::try_from(number(lun, "write", "LUN")?).map_err(|_| format!("write: invalid LUN '{lun}'"))?;
    let (lba, blocks) = (number(lba, "write", "LBA")?, number(blocks, "write", "block count")?);
    let data = std::fs::read(file).map_err(|e| format!("write: {file}: {e}"))?;
    let bs = block_size(lun)?;
    let want = blocks.saturating_mul(bs);
    if data.len() as u64 != want {
        return Err(format!(
            "write: {file} has {} bytes; {blocks} blocks of {bs} bytes are {want}",
            data.len()
        ));
    }
    let cdb = rw_cdb(true, lba, blocks, "write")?;
    let r = ctl::execute(lun, &Cmd::write(&cdb, &data));
    if r.status != 0 {
        return Err(error_text(lun, &cdb, &plain(&r)));
    }
    Ok(String::new())
}

/// `cdb N HEX [in=LEN | out=FILE]`: a raw CDB (hex digits, spaces allowed
/// between them) with LEN bytes of buffer for data in, or FILE's bytes
/// sent.  It prints the SCSI status (and a residual that is not 0), then
/// the data received as `hexdump -C` shows it; a status other than GOOD
/// fails, with ctladm's error lines.
pub(super) fn cdb(words: &[&str]) -> Result<String, String> {
    const USAGE: &str = "usage: cdb LUN HEX [in=LEN | out=FILE]";
    let Some((lun, rest)) = words.split_first() else {
        return Err(USAGE.into());
    };
    let lun = u32::try_from(number(lun, "cdb", "LUN")?).map_err(|_| format!("cdb: invalid LUN '{lun}'"))?;
    let (hex, data): (&[&str], Option<&str>) = match rest.split_last() {
        Some((last, hex)) if last.starts_with("in=") || last.starts_with("out=") => (hex, Some(last)),
        _ => (rest, None),
    };
    let digits: String = hex.concat();
    if digits.is_empty() || !digits.len().is_multiple_of(2) || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("cdb: invalid CDB '{}'", hex.join(" ")));
    }
    let bytes: Vec<u8> = (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap_or(0))
        .collect();
    if bytes.len() > 32 {
        return Err(format!("cdb: a CDB has at most 32 bytes, not {}", bytes.len()));
    }
    let cmd = match data {
        Some(d) if d.starts_with("in=") => {
            let len = number(&d[3..], "cdb", "length")?;
            Cmd::read(
                &bytes,
                usize::try_from(len).map_err(|_| format!("cdb: invalid length '{}'", &d[3..]))?,
            )
        }
        Some(d) => {
            let file = &d[4..];
            let data = std::fs::read(file).map_err(|e| format!("cdb: {file}: {e}"))?;
            Cmd::write(&bytes, &data)
        }
        None => Cmd::none(&bytes),
    };
    let r = ctl::execute(lun, &cmd);
    if r.status != 0 {
        return Err(error_text(lun, &bytes, &plain(&r)));
    }
    let mut out = format!("{}SCSI Status: {}\n", path(lun), scsi_all::status_name(r.status));
    if r.residual != 0 {
        out += &format!("{}Residual: {}\n", path(lun), r.residual);
    }
    Ok(out + &hexdump(&r.data))
}

/// `hexdump -C`: offset, 16 bytes in two groups of 8, the printable
/// characters; a line like the one before it is shown once as `*`; the
/// length ends it (nothing for no data).
fn hexdump(data: &[u8]) -> String {
    let mut out = String::new();
    let mut previous: Option<&[u8]> = None;
    let mut starred = false;
    for (i, line) in data.chunks(16).enumerate() {
        if line.len() == 16 && previous == Some(line) {
            if !starred {
                out += "*\n";
                starred = true;
            }
            continue;
        }
        previous = Some(line);
        starred = false;
        let mut hex = String::new();
        for j in 0..16 {
            match line.get(j) {
                Some(b) => hex += &format!("{b:02x} "),
                None => hex += "   ",
            }
            if j == 7 {
                hex.push(' ');
            }
        }
        let text: String = line
            .iter()
            .map(|&b| if (0x20..0x7f).contains(&b) { char::from(b) } else { '.' })
            .collect();
        out += &format!("{:08x}  {hex} |{text}|\n", i * 16);
    }
    if !data.is_empty() {
        out += &format!("{:08x}\n", data.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hexdump_reads_as_hexdump_c() {
        assert_eq!(
            hexdump(b"hello\n"),
            "00000000  68 65 6c 6c 6f 0a                                 |hello.|\n00000006\n"
        );
        let mut data = b"0123456789abcdefghij".to_vec();
        data.extend([0u8; 48]);
        assert_eq!(
            hexdump(&data),
            "00000000  30 31 32 33 34 35 36 37  38 39 61 62 63 64 65 66  |0123456789abcdef|\n\
             00000010  67 68 69 6a 00 00 00 00  00 00 00 00 00 00 00 00  |ghij............|\n\
             00000020  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|\n\
             *\n\
             00000040  00 00 00 00                                       |....|\n\
             00000044\n"
        );
        assert_eq!(hexdump(&[]), "");
    }

    #[test]
    fn data_commands_check_their_arguments() {
        assert_eq!(read(&["0", "1"]), Err("usage: read LUN LBA BLOCKS [FILE]".into()));
        assert_eq!(read(&["0", "x", "1"]), Err("read: invalid LBA 'x'".into()));
        assert_eq!(write(&["0", "0", "1"]), Err("usage: write LUN LBA BLOCKS FILE".into()));
        assert_eq!(cdb(&["0", "2800", "0"]), Err("cdb: invalid CDB '2800 0'".into()));
        assert_eq!(cdb(&["0"]), Err("cdb: invalid CDB ''".into()));
        assert_eq!(
            rw_cdb(false, 1 << 32, 1, "read"),
            Ok(vec![0x88, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0])
        );
        assert_eq!(rw_cdb(true, 5, 2, "write"), Ok(vec![0x2A, 0, 0, 0, 0, 5, 0, 0, 2, 0]));
        assert_eq!(
            rw_cdb(false, 0, 1 << 16, "read"),
            Ok(vec![0x88, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0])
        );
    }

    #[test]
    fn commands_are_found_by_unique_prefix() {
        assert_eq!(getoption("readcap").map(|c| c.0), Ok("readcapacity"));
        assert_eq!(getoption("stop").map(|c| c.0), Ok("stop"));
        assert_eq!(getoption("re"), Err("ctladm: ambiguous option re".into()));
        assert_eq!(getoption("frob"), Err("ctladm: option frob not found".into()));
    }

    #[test]
    fn devlist_keeps_what_cctl_devlist_keeps() {
        let doc = "<ctllunlist>\n<lun id=\"2\">\n\t<backend_type>passthrough</backend_type>\n\t<lun_type>0</lun_type>\n\t<size>2048</size>\n\t<blocksize>512</blocksize>\n\t<serial_number>S&amp;N</serial_number>\n\t<device_id></device_id>\n\t<periph>da3</periph>\n\t<empty></empty>\n</lun>\n</ctllunlist>\n";
        let luns = lun_list(doc).unwrap();
        assert_eq!(luns.len(), 1);
        let l = &luns[0];
        assert_eq!((l.id, l.size, l.blocksize), (2, 2048, 512));
        assert_eq!((l.serial.as_deref(), l.device_id.as_deref()), (Some("S&N"), None));
        assert_eq!(
            l.attrs,
            [
                ("lun_type".into(), Some("0".into())),
                ("periph".into(), Some("da3".into())),
                ("empty".into(), None)
            ]
        );
        assert!(lun_list("<ctllunlist><lun id=\"1\" x=\"2\"></lun></ctllunlist>").is_err());
    }

    #[test]
    fn option_values_end_at_the_next_equals_sign() {
        let mut o = Vec::new();
        add_option(&mut o, "device=cam=0:1:0", "f").unwrap();
        assert_eq!(o, [("device".to_string(), "cam".to_string())]);
        assert!(add_option(&mut o, "device", "f").is_err());
    }
}
