//! The options of a passthrough LUN (`ctladm create -o name=value`, or a
//! LUN's `path` and `option` lines in ctl.conf): which device, and how.
//! Options this backend does not know are left for CTL (vendor, product,
//! naa, removable, ...).
//!
//! The device is named by one of the options `device` (and `file`, which
//! ctld sends for `path`): `da3`, `/dev/da3`, `pass4`, ... or, as in
//! ctl.conf, `cam=0:1:0`, `devid=naa.<hex>`, `serial=<serial>`; or by the
//! options `cam`, `devid` and `serial` themselves (`ctladm create -o
//! cam=0:1:0`: ctladm cuts an option's value at its next `=`).
//!
//! Every option is checked before any is used, for what CTL does with the
//! options a LUN keeps: `ctladm devlist` and ctld read them back from
//! CTL's LUN list, where sys/cam/ctl/ctl.c (`CTL_LUN_LIST`) prints each as
//! an XML element named after the option, its value unescaped; a name or
//! value that is not XML there would make the whole list unreadable, for
//! every LUN.  Sizes are bounded, and messages show what they quote
//! shortened and escaped (see [`Shown`]).

use core::fmt::{self, Write};

use crate::kern::cam::SERIAL_NUM_LEN;

/// How an administrator names the device a LUN exports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceName<'a> {
    /// A periph of any driver: `da3`, `/dev/da3`, `cd0`, `pass4`, `sa0`
    /// (also `nsa0`, `esa0`), `ctlpass2`.  Renumbering changes it.
    Periph {
        /// The driver (`da`, `cd`, `pass`, ...).
        driver: &'a str,
        /// The unit number.
        unit: u32,
    },
    /// `cam=path:target:lun`, as `camcontrol devlist` shows the device.
    Address {
        /// `scbusN`.
        path_id: u32,
        /// Target id.
        target_id: u32,
        /// LUN.
        lun_id: u64,
    },
    /// `devid=naa.<hex>` or `devid=eui.<hex>`: the device's NAA or EUI-64
    /// designator (VPD page 0x83), which survives renumbering.
    DevId(&'a str),
    /// `serial=<string>`: the device's unit serial number (VPD page 0x80).
    Serial(&'a str),
}

/// The forms of a device name.
#[derive(Clone, Copy)]
enum Form {
    /// `da3`, `/dev/da3`, ...
    Periph,
    /// `0:1:0`.
    Address,
    /// `naa.<hex>`, `eui.<hex>`.
    DevId,
    /// A serial number.
    Serial,
}

/// The options that name a device, and the form of their values (`None`:
/// any form, with its prefix).
const DEVICE_OPTIONS: [(&str, Option<Form>); 5] = [
    ("device", None),
    ("file", None),
    ("cam", Some(Form::Address)),
    ("devid", Some(Form::DevId)),
    ("serial", Some(Form::Serial)),
];

impl<'a> DeviceName<'a> {
    /// Parses the value of option `device` or `file`: a periph name, or a
    /// name in another form with its prefix (`cam=`, `devid=`, `serial=`).
    pub fn parse(text: &'a str) -> Result<DeviceName<'a>, OptionError<'a>> {
        Self::parse_option("device", text, None)
    }

    /// Parses the value of option `option`, of form `form` (`None`: any
    /// form, prefixed).
    fn parse_option(option: &'a str, text: &'a str, form: Option<Form>) -> Result<DeviceName<'a>, OptionError<'a>> {
        let (form, value) = match form {
            Some(f) => (f, text),
            None => [
                ("cam=", Form::Address),
                ("devid=", Form::DevId),
                ("serial=", Form::Serial),
            ]
            .into_iter()
            .find_map(|(prefix, f)| Some((f, text.strip_prefix(prefix)?)))
            .unwrap_or((Form::Periph, text)),
        };
        let bad = |why| OptionError::BadDeviceName { option, text, why };
        match form {
            Form::Address => {
                let parts = split_at_byte(value, b':').and_then(|(p, rest)| Some((p, split_at_byte(rest, b':')?)));
                let Some((p, (t, l))) = parts.filter(|(_, (_, l))| !l.as_bytes().contains(&b':')) else {
                    return Err(bad("expected bus:target:lun, as camcontrol devlist shows (e.g. 0:1:0)"));
                };
                if ![p, t, l].iter().all(|n| is_decimal(n)) {
                    return Err(bad("bus, target and lun must be numbers"));
                }
                let (Ok(path_id), Ok(target_id), Ok(lun_id)) = (p.parse(), t.parse(), l.parse()) else {
                    return Err(bad("bus, target or lun is out of range"));
                };
                Ok(DeviceName::Address {
                    path_id,
                    target_id,
                    lun_id,
                })
            }
            Form::DevId => {
                let (scheme, hex) = split_at_byte(value, b'.').ok_or(bad("expected naa.<hex> or eui.<hex>"))?;
                let scheme_ok = scheme.eq_ignore_ascii_case("naa") || scheme.eq_ignore_ascii_case("eui");
                if !scheme_ok || ![16, 24, 32].contains(&hex.len()) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad("expected naa.<hex> or eui.<hex> with 16, 24 or 32 hex digits"));
                }
                Ok(DeviceName::DevId(value))
            }
            Form::Serial if value.is_empty() => Err(bad("the serial number is empty")),
            // CAM keeps no more of a serial number (ccb_getdev), so a
            // longer one matches no device.
            Form::Serial if value.len() > SERIAL_NUM_LEN => {
                Err(bad("longer than any serial number CAM keeps (252 bytes)"))
            }
            Form::Serial => Ok(DeviceName::Serial(value)),
            Form::Periph => {
                let name = value.strip_prefix("/dev/").unwrap_or(value);
                if name.is_empty() {
                    return Err(bad("the name is empty"));
                }
                let split = name
                    .bytes()
                    .position(|b| b.is_ascii_digit())
                    .ok_or(bad("no unit number"))?;
                let (Some(driver), Some(unit)) = (name.get(..split), name.get(split..)) else {
                    return Err(bad("no unit number"));
                };
                if driver.is_empty() || !driver.bytes().all(|b| b.is_ascii_lowercase()) {
                    return Err(bad(
                        "expected a device like da3, cam=0:1:0, devid=naa.<hex> or serial=<serial>",
                    ));
                }
                if !is_decimal(unit) {
                    return Err(bad("the unit is not a number"));
                }
                if unit.len() > 1 && unit.starts_with('0') {
                    return Err(bad("the unit number has a leading zero"));
                }
                let unit = unit.parse().map_err(|_| bad("the unit number is too large"))?;
                // sa(4)'s no-rewind and eject-on-close nodes name the same drive.
                let driver = match driver {
                    "nsa" | "esa" => "sa",
                    d => d,
                };
                Ok(DeviceName::Periph { driver, unit })
            }
        }
    }
}

/// Whether `text` is a non-empty run of decimal digits (`str::parse` also
/// takes a sign).
fn is_decimal(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

impl fmt::Display for DeviceName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceName::Periph { driver, unit } => write!(f, "{driver}{unit}"),
            DeviceName::Address {
                path_id,
                target_id,
                lun_id,
            } => write!(f, "cam={path_id}:{target_id}:{lun_id}"),
            DeviceName::DevId(id) => write!(f, "devid={id}"),
            DeviceName::Serial(s) => write!(f, "serial={}", Shown::bare(s.as_bytes())),
        }
    }
}

/// `text` split around the first `sep` (an ASCII byte), without the
/// panicking paths of `str::split`.
fn split_at_byte(text: &str, sep: u8) -> Option<(&str, &str)> {
    let i = text.bytes().position(|b| b == sep)?;
    Some((text.get(..i)?, text.get(i.checked_add(1)?..)?))
}

/// Options a request may carry, at most: CTL reads about thirty, and ctld
/// sends a LUN's `option` lines and two of its own.
pub const MAX_OPTIONS: usize = 256;
/// Bytes of an option's name, at most (CTL's longest is 20).
pub const MAX_NAME_LEN: usize = 64;
/// Bytes of an option's value, at most: `PATH_MAX`, for the longest thing
/// an option holds (a path).
pub const MAX_VALUE_LEN: usize = 1024;
// The messages spell these out.
static_assertions::const_assert_eq!(MAX_NAME_LEN, 64);
static_assertions::const_assert_eq!(SERIAL_NUM_LEN, 252);

/// Characters of a name or value a message quotes; more are elided.  A
/// 32-digit `devid` fits whole.
const SHOWN_CHARS: usize = 48;

/// Text from a request as a message quotes it: at most [`SHOWN_CHARS`]
/// characters (then `...` and the length in bytes), with control
/// characters, quotes, backslashes and bytes that are not UTF-8 escaped
/// (`\x1b`, `\"`, `\xff`), so that a message stays one readable line of
/// CTL's 160 bytes whatever was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shown<'a> {
    text: &'a [u8],
    quoted: bool,
}

impl<'a> Shown<'a> {
    /// `text` in double quotes.
    pub fn quoted(text: &'a [u8]) -> Shown<'a> {
        Shown { text, quoted: true }
    }

    /// `text` without quotes (where parentheses or a prefix enclose it).
    pub fn bare(text: &'a [u8]) -> Shown<'a> {
        Shown { text, quoted: false }
    }
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quote = if self.quoted { "\"" } else { "" };
        f.write_str(quote)?;
        let mut shown = 0usize;
        for chunk in self.text.utf8_chunks() {
            let bad_bytes = chunk.invalid().iter().map(|&b| Err(b));
            for item in chunk.valid().chars().map(Ok).chain(bad_bytes) {
                if shown == SHOWN_CHARS {
                    return write!(f, "...{quote} ({} bytes)", self.text.len());
                }
                shown = shown.saturating_add(1);
                match item {
                    Ok(c @ ('"' | '\\')) => write!(f, "\\{c}")?,
                    Ok(c) if c.is_control() => write!(f, "\\x{:02x}", u32::from(c))?,
                    Ok(c) => f.write_char(c)?,
                    Err(b) => write!(f, "\\x{b:02x}")?,
                }
            }
        }
        f.write_str(quote)
    }
}

/// The options of a passthrough LUN that this backend reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LunOptions<'a> {
    /// The device (option `device`, or `file`, which ctld sends for `path`).
    pub device: DeviceName<'a>,
    /// Refuse, rather than warn about and ignore, a block size that is not
    /// the device's (`strict=on`).
    pub strict: bool,
    /// Export the device read-only (`readonly=on`).
    pub readonly: bool,
    /// The LUN's role in a CTL HA pair (`ha_role`).
    pub ha_role: HaRole,
    /// What becomes of the LUN when its device is lost (`lost`; `None`:
    /// not given, `kern.cam.ctl.passthrough.lost` decides).
    pub lost: Option<LostPolicy>,
    /// Reset the device when CTL clears the LUN's task set (`reset`).
    pub reset_device: bool,
}

/// What becomes of a LUN whose device is lost (option `lost`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LostPolicy {
    /// `lost=offline` (the default of `kern.cam.ctl.passthrough.lost`):
    /// the LUN stays, without a medium, and
    /// binds to the device again when it returns (same device id or
    /// serial number).
    #[default]
    Offline,
    /// `lost=remove`: the LUN is removed.
    Remove,
}

/// The role of a LUN in a CTL HA pair (option `ha_role`, as CTL's own
/// backends read it).  A single node serves its LUNs as primary; a
/// secondary LUN answers NOT READY until the HA peer hands it over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HaRole {
    /// `ha_role=primary` (the default).
    #[default]
    Primary,
    /// `ha_role=secondary`.
    Secondary,
}

/// An option this backend cannot accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionError<'a> {
    /// No `device` (nor `file`) option.
    MissingDevice,
    /// More than [`MAX_OPTIONS`] options.
    TooMany,
    /// An option's name that CTL's LUN list cannot carry.
    BadName {
        /// The name.
        name: &'a [u8],
        /// What is wrong with it.
        why: &'static str,
    },
    /// An option whose value is not a string (or not UTF-8 text).
    NotText(&'a [u8]),
    /// A value longer than [`MAX_VALUE_LEN`].
    TooLong {
        /// The option.
        name: &'a str,
        /// The value's length in bytes.
        len: usize,
    },
    /// A value with a character CTL's LUN list cannot carry.
    Unlistable {
        /// The option.
        name: &'a str,
        /// Its value.
        value: &'a str,
        /// The character.
        found: char,
    },
    /// An option with a value it does not take.
    BadValue {
        /// The option.
        name: &'a str,
        /// Its value.
        value: &'a str,
        /// The values it takes.
        expected: &'static str,
    },
    /// Two options name devices, not the same way.
    Conflict {
        /// The first option and its value.
        first: (&'a str, &'a str),
        /// The other option and its value.
        second: (&'a str, &'a str),
        /// Whether both name it in the same form (two different devices),
        /// or in two forms that may or may not name one.
        same_form: bool,
    },
    /// A device name that cannot be parsed.
    BadDeviceName {
        /// The option.
        option: &'a str,
        /// Its value.
        text: &'a str,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A serial number or device id of the request itself (`ctladm -S`,
    /// `-d`; `serial` and `device-id` in ctl.conf) that is not printable
    /// ASCII, as SPC-5 has them (VPD pages 0x80 and 0x83).
    NotAscii {
        /// Which field.
        field: &'static str,
        /// The first byte that is not.
        byte: u8,
        /// Its offset.
        at: usize,
    },
}

impl fmt::Display for OptionError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionError::MissingDevice => f.write_str(
                "option \"device\" is required (e.g. device=da3), or \"cam\", \"devid\" or \"serial\" \
                 (cam=0:1:0, devid=naa.5000c500a1b2c3d4, serial=Z1Z3ABCD)",
            ),
            OptionError::TooMany => write!(f, "more than {MAX_OPTIONS} options (CTL reads about thirty)"),
            OptionError::BadName { name, why } => write!(f, "option name {}: {why}", Shown::quoted(name)),
            OptionError::NotText(name) => write!(f, "option {} must be a string of UTF-8 text", Shown::quoted(name)),
            OptionError::TooLong { name, len } => {
                write!(
                    f,
                    "option \"{name}\": the value has {len} bytes, at most {MAX_VALUE_LEN} are taken"
                )
            }
            OptionError::Unlistable { name, value, found } => write!(
                f,
                "option \"{name}\": {} in {} would make CTL's LUN list unreadable (ctladm devlist, ctld)",
                Char(*found),
                Shown::quoted(value.as_bytes())
            ),
            OptionError::BadValue { name, value, expected } => {
                write!(
                    f,
                    "option \"{name}\": {} is not {expected}",
                    Shown::quoted(value.as_bytes())
                )
            }
            OptionError::Conflict {
                first: (a, va),
                second: (b, vb),
                same_form,
            } => {
                let why = if *same_form {
                    "disagree: name the device once"
                } else {
                    "both name the device: name it once"
                };
                write!(
                    f,
                    "options \"{a}\" ({}) and \"{b}\" ({}) {why}",
                    Shown::bare(va.as_bytes()),
                    Shown::bare(vb.as_bytes())
                )
            }
            OptionError::BadDeviceName { option, text, why } => {
                write!(
                    f,
                    "option \"{option}\": invalid device name {}: {why}",
                    Shown::quoted(text.as_bytes())
                )
            }
            OptionError::NotAscii { field, byte, at } => {
                write!(
                    f,
                    "the {field} has byte \\x{byte:02x} at offset {at}: only printable ASCII is taken"
                )
            }
        }
    }
}

/// A character as a message names it: `'&'`, or a control character's code.
struct Char(char);

impl fmt::Display for Char {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_control() {
            write!(f, "control character \\x{:02x}", u32::from(self.0))
        } else {
            write!(f, "'{}'", self.0)
        }
    }
}

/// One option as the request carries it: a name and, if it is a string,
/// its value.
pub type RawOption<'a> = (&'a [u8], Option<&'a [u8]>);

fn on_off<'a>(name: &'a str, value: &'a str) -> Result<bool, OptionError<'a>> {
    match value {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(OptionError::BadValue {
            name,
            value,
            expected: "\"on\" or \"off\"",
        }),
    }
}

fn ha_role(value: &str) -> Result<HaRole, OptionError<'_>> {
    match value {
        "primary" => Ok(HaRole::Primary),
        "secondary" => Ok(HaRole::Secondary),
        _ => Err(OptionError::BadValue {
            name: "ha_role",
            value,
            expected: "\"primary\" or \"secondary\"",
        }),
    }
}

fn reset(value: &str) -> Result<bool, OptionError<'_>> {
    match value {
        "device" => Ok(true),
        "none" => Ok(false),
        _ => Err(OptionError::BadValue {
            name: "reset",
            value,
            expected: "\"device\" or \"none\"",
        }),
    }
}

fn lost_policy(value: &str) -> Result<LostPolicy, OptionError<'_>> {
    match value {
        "offline" => Ok(LostPolicy::Offline),
        "remove" => Ok(LostPolicy::Remove),
        _ => Err(OptionError::BadValue {
            name: "lost",
            value,
            expected: "\"offline\" or \"remove\"",
        }),
    }
}

/// An option's name, if CTL's LUN list can carry it as an element name:
/// ASCII letters, digits, `_`, `-`, `.` and `:`, starting with a letter
/// or `_`, at most [`MAX_NAME_LEN`] bytes.
fn checked_name(name: &[u8]) -> Result<&str, OptionError<'_>> {
    let bad = |why| OptionError::BadName { name, why };
    let first_ok = name.first().is_some_and(|&b| b.is_ascii_alphabetic() || b == b'_');
    if name.is_empty() {
        return Err(bad("empty (ctladm -o takes name=value)"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(bad("longer than 64 bytes"));
    }
    let chars_ok = name
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    if !first_ok || !chars_ok {
        return Err(bad(
            "CTL's LUN list takes letters, digits, '_', '-', '.' and ':', first a letter or '_'",
        ));
    }
    core::str::from_utf8(name).map_err(|_| bad("not ASCII"))
}

/// An option's value, if CTL's LUN list can carry it as element text: a
/// string of UTF-8 text without control characters, `<` or `&`, at most
/// [`MAX_VALUE_LEN`] bytes.
fn checked_value<'a>(name: &'a str, value: Option<&'a [u8]>) -> Result<&'a str, OptionError<'a>> {
    let value = value.ok_or(OptionError::NotText(name.as_bytes()))?;
    if value.len() > MAX_VALUE_LEN {
        return Err(OptionError::TooLong { name, len: value.len() });
    }
    let text = core::str::from_utf8(value).map_err(|_| OptionError::NotText(name.as_bytes()))?;
    match text.chars().find(|&c| c.is_control() || c == '<' || c == '&') {
        Some(found) => Err(OptionError::Unlistable {
            name,
            value: text,
            found,
        }),
        None => Ok(text),
    }
}

/// Checks the serial number and device id a create request gives CTL
/// itself (NUL-padded fields): printable ASCII, as SPC-5 has them.
pub fn check_ids(serial: Option<&[u8]>, device_id: Option<&[u8]>) -> Result<(), OptionError<'static>> {
    for (field, bytes) in [("serial number (-S)", serial), ("device id (-d)", device_id)] {
        let text = bytes.unwrap_or(&[]).iter().take_while(|&&b| b != 0);
        if let Some((at, &byte)) = text.enumerate().find(|(_, b)| !(0x20..0x7f).contains(*b)) {
            return Err(OptionError::NotAscii { field, byte, at });
        }
    }
    Ok(())
}

/// What [`parse`] has read so far.
struct Reading<'a> {
    strict: bool,
    readonly: bool,
    role: HaRole,
    lost: Option<LostPolicy>,
    reset_device: bool,
    /// The first option naming the device: its name, value and meaning.
    named: Option<(&'a str, &'a str, DeviceName<'a>)>,
}

impl<'a> Reading<'a> {
    /// Takes one (checked) option.
    fn take(&mut self, name: &'a str, value: &'a str) -> Result<(), OptionError<'a>> {
        if let Some(&(option, form)) = DEVICE_OPTIONS.iter().find(|(o, _)| *o == name) {
            let device = DeviceName::parse_option(option, value, form)?;
            match self.named {
                None => self.named = Some((option, value, device)),
                Some((first, first_value, d)) if d != device => {
                    return Err(OptionError::Conflict {
                        first: (first, first_value),
                        second: (option, value),
                        same_form: core::mem::discriminant(&d) == core::mem::discriminant(&device),
                    });
                }
                Some(_) => {}
            }
            return Ok(());
        }
        match name {
            "strict" => self.strict = on_off("strict", value)?,
            "readonly" => self.readonly = on_off("readonly", value)?,
            "ha_role" => self.role = ha_role(value)?,
            "lost" => self.lost = Some(lost_policy(value)?),
            "reset" => self.reset_device = reset(value)?,
            _ => {}
        }
        Ok(())
    }
}

/// Reads this backend's options from a request's options.  Every option,
/// this backend's or CTL's, is first checked for what CTL can keep and
/// list; the first that cannot be is the error, before any option's
/// meaning is.
pub fn parse<'a>(options: impl Iterator<Item = RawOption<'a>>) -> Result<LunOptions<'a>, OptionError<'a>> {
    let mut reading = Reading {
        strict: false,
        readonly: false,
        role: HaRole::Primary,
        lost: None,
        reset_device: false,
        named: None,
    };
    let mut meaning_error = None;
    for (i, (name, value)) in options.enumerate() {
        if i == MAX_OPTIONS {
            return Err(OptionError::TooMany);
        }
        let name = checked_name(name)?;
        let value = checked_value(name, value)?;
        if meaning_error.is_none() {
            meaning_error = reading.take(name, value).err();
        }
    }
    if let Some(e) = meaning_error {
        return Err(e);
    }
    let (_, _, device) = reading.named.ok_or(OptionError::MissingDevice)?;
    Ok(LunOptions {
        device,
        strict: reading.strict,
        readonly: reading.readonly,
        ha_role: reading.role,
        lost: reading.lost,
        reset_device: reading.reset_device,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;

    fn opts<'a>(pairs: &'a [(&'a str, &'a str)]) -> Result<LunOptions<'a>, OptionError<'a>> {
        parse(pairs.iter().map(|(n, v)| (n.as_bytes(), Some(v.as_bytes()))))
    }

    #[test]
    fn device_names() {
        let p = |t| DeviceName::parse(t).unwrap();
        assert_eq!(p("da3"), DeviceName::Periph { driver: "da", unit: 3 });
        assert_eq!(p("/dev/da3"), DeviceName::Periph { driver: "da", unit: 3 });
        assert_eq!(p("cd0"), DeviceName::Periph { driver: "cd", unit: 0 });
        assert_eq!(
            p("pass14"),
            DeviceName::Periph {
                driver: "pass",
                unit: 14
            }
        );
        assert_eq!(p("/dev/nsa1"), DeviceName::Periph { driver: "sa", unit: 1 });
        assert_eq!(p("esa0"), DeviceName::Periph { driver: "sa", unit: 0 });
        assert_eq!(
            p("cam=2:0:17"),
            DeviceName::Address {
                path_id: 2,
                target_id: 0,
                lun_id: 17
            }
        );
        assert_eq!(
            p("devid=naa.5000c500a1b2c3d4"),
            DeviceName::DevId("naa.5000c500a1b2c3d4")
        );
        assert_eq!(
            p("devid=EUI.0102030405060708090a0b0c"),
            DeviceName::DevId("EUI.0102030405060708090a0b0c")
        );
        assert_eq!(p("serial=ZA 1234"), DeviceName::Serial("ZA 1234"));
        assert_eq!(format!("{}", p("/dev/nsa1")), "sa1");
        assert_eq!(format!("{}", p("cam=2:0:17")), "cam=2:0:17");
    }

    #[test]
    fn bad_device_names_say_why() {
        let e = |t| format!("{}", DeviceName::parse(t).unwrap_err());
        assert_eq!(e("da"), "option \"device\": invalid device name \"da\": no unit number");
        assert_eq!(
            e("DA3"),
            "option \"device\": invalid device name \"DA3\": expected a device like da3, cam=0:1:0, devid=naa.<hex> or serial=<serial>"
        );
        assert_eq!(
            e("da3x"),
            "option \"device\": invalid device name \"da3x\": the unit is not a number"
        );
        assert_eq!(
            e("cam=1:2"),
            "option \"device\": invalid device name \"cam=1:2\": expected bus:target:lun, as camcontrol devlist shows (e.g. 0:1:0)"
        );
        assert_eq!(
            e("cam=a:b:c"),
            "option \"device\": invalid device name \"cam=a:b:c\": bus, target and lun must be numbers"
        );
        assert_eq!(
            e("devid=naa.123"),
            "option \"device\": invalid device name \"devid=naa.123\": expected naa.<hex> or eui.<hex> with 16, 24 or 32 hex digits"
        );
        assert_eq!(
            e("serial="),
            "option \"device\": invalid device name \"serial=\": the serial number is empty"
        );
        assert!(DeviceName::parse("devid=xyz.5000c500a1b2c3d4").is_err());
        assert!(DeviceName::parse("devid=naa.5000c500a1b2c3zz").is_err());
        assert!(DeviceName::parse("da99999999999").is_err());
    }

    #[test]
    fn options_of_their_own_name_the_device_as_ctladm_can_send_them() {
        let device = |pairs| opts(pairs).map(|o| o.device);
        let address = DeviceName::Address {
            path_id: 0,
            target_id: 1,
            lun_id: 0,
        };
        assert_eq!(device(&[("cam", "0:1:0")]), Ok(address));
        assert_eq!(
            device(&[("devid", "naa.5000c500a1b2c3d4")]),
            Ok(DeviceName::DevId("naa.5000c500a1b2c3d4"))
        );
        assert_eq!(device(&[("serial", "Z1Z3ABCD")]), Ok(DeviceName::Serial("Z1Z3ABCD")));
        assert_eq!(
            device(&[("file", "cam=0:1:0"), ("cam", "0:1:0")]),
            Ok(address),
            "the same name twice"
        );
        let e = |pairs| format!("{}", opts(pairs).unwrap_err());
        assert_eq!(
            e(&[("cam", "0:1")]),
            "option \"cam\": invalid device name \"0:1\": expected bus:target:lun, as camcontrol devlist shows (e.g. 0:1:0)"
        );
        assert_eq!(
            e(&[("serial", "")]),
            "option \"serial\": invalid device name \"\": the serial number is empty"
        );
        assert_eq!(
            e(&[("device", "da0"), ("serial", "Z1Z3ABCD")]),
            "options \"device\" (da0) and \"serial\" (Z1Z3ABCD) both name the device: name it once",
            "they may name the same device: not a disagreement"
        );
        assert_eq!(
            e(&[("serial", "Z1Z3ABCD"), ("device", "serial=Z1Z3ABCE")]),
            "options \"serial\" (Z1Z3ABCD) and \"device\" (serial=Z1Z3ABCE) disagree: name the device once"
        );
    }

    #[test]
    fn options() {
        let o = opts(&[("device", "da1"), ("vendor", "X"), ("readonly", "on")]).unwrap();
        assert_eq!(
            o,
            LunOptions {
                device: DeviceName::Periph { driver: "da", unit: 1 },
                strict: false,
                readonly: true,
                ha_role: HaRole::Primary,
                lost: None,
                reset_device: false,
            }
        );
        assert!(opts(&[("device", "da1"), ("reset", "device")]).unwrap().reset_device);
        assert_eq!(
            format!("{}", opts(&[("device", "da1"), ("reset", "bus")]).unwrap_err()),
            "option \"reset\": \"bus\" is not \"device\" or \"none\""
        );
        assert_eq!(
            opts(&[("device", "da1"), ("lost", "remove")]).unwrap().lost,
            Some(LostPolicy::Remove)
        );
        assert_eq!(
            format!("{}", opts(&[("device", "da1"), ("lost", "later")]).unwrap_err()),
            "option \"lost\": \"later\" is not \"offline\" or \"remove\""
        );
        assert_eq!(
            opts(&[("device", "da1"), ("ha_role", "secondary")]).unwrap().ha_role,
            HaRole::Secondary
        );
        assert!(
            opts(&[("file", "/dev/cd0"), ("strict", "on")]).unwrap().strict,
            "ctld sends path as file"
        );
        assert!(
            opts(&[("device", "da0"), ("file", "/dev/da0")]).is_ok(),
            "both, naming the same device"
        );
        let e = |pairs| format!("{}", opts(pairs).unwrap_err());
        assert_eq!(
            e(&[("vendor", "X")]),
            "option \"device\" is required (e.g. device=da3), or \"cam\", \"devid\" or \"serial\" (cam=0:1:0, devid=naa.5000c500a1b2c3d4, serial=Z1Z3ABCD)"
        );
        assert_eq!(
            e(&[("device", "da0"), ("readonly", "maybe")]),
            "option \"readonly\": \"maybe\" is not \"on\" or \"off\""
        );
        assert_eq!(
            e(&[("device", "da0"), ("ha_role", "leader")]),
            "option \"ha_role\": \"leader\" is not \"primary\" or \"secondary\""
        );
        assert_eq!(
            e(&[("device", "da0"), ("file", "da1")]),
            "options \"device\" (da0) and \"file\" (da1) disagree: name the device once"
        );
        let not_text = parse([(&b"device"[..], None)].into_iter()).unwrap_err();
        assert_eq!(
            format!("{not_text}"),
            "option \"device\" must be a string of UTF-8 text"
        );
        let bad_utf8 = parse([(&b"device"[..], Some(&b"da\xff"[..]))].into_iter()).unwrap_err();
        assert_eq!(bad_utf8, OptionError::NotText(b"device"));
    }

    #[test]
    fn quoted_text_is_short_escaped_and_one_line() {
        let q = |t: &[u8]| format!("{}", Shown::quoted(t));
        assert_eq!(q(b"da0"), "\"da0\"");
        assert_eq!(q(b""), "\"\"");
        assert_eq!(q(b"a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(q(b"da0\n\x1b[2J"), "\"da0\\x0a\\x1b[2J\"");
        assert_eq!(q(b"\xff\xfe\xc3\xa9"), "\"\\xff\\xfe\u{e9}\"");
        assert_eq!(q(&[b'x'; 48]), format!("\"{}\"", "x".repeat(48)), "48 characters whole");
        assert_eq!(q(&[b'x'; 49]), format!("\"{}...\" (49 bytes)", "x".repeat(48)));
        assert_eq!(
            format!("{}", Shown::bare(&[b'y'; 300])),
            format!("{}... (300 bytes)", "y".repeat(48))
        );
    }

    #[test]
    fn names_and_values_are_what_ctls_lun_list_can_carry() {
        let one = |n: &'static [u8], v: &'static [u8]| {
            parse([(&b"device"[..], Some(&b"da0"[..])), (n, Some(v))].into_iter()).map(|_| ())
        };
        assert_eq!(one(b"avail-threshold", b"1g"), Ok(()));
        assert_eq!(one(b"_x.y:z9", b"caf\xc3\xa9 > ok"), Ok(()));
        assert_eq!(
            one(b"", b"x"),
            Err(OptionError::BadName {
                name: b"",
                why: "empty (ctladm -o takes name=value)"
            })
        );
        assert!(matches!(one(b"9lives", b"x"), Err(OptionError::BadName { .. })));
        assert!(matches!(one(b"a b", b"x"), Err(OptionError::BadName { .. })));
        assert!(matches!(one(b"\xc3\xa9", b"x"), Err(OptionError::BadName { .. })));
        assert_eq!(
            one(b"vendor", b"AT&T"),
            Err(OptionError::Unlistable {
                name: "vendor",
                value: "AT&T",
                found: '&'
            })
        );
        assert!(matches!(
            one(b"vendor", b"<"),
            Err(OptionError::Unlistable { found: '<', .. })
        ));
        assert!(matches!(
            one(b"vendor", b"a\x7fb"),
            Err(OptionError::Unlistable { found: '\x7f', .. })
        ));
        assert_eq!(one(b"vendor", b"\xff"), Err(OptionError::NotText(b"vendor")));
        let long = std::vec![b'v'; MAX_VALUE_LEN + 1];
        let long_value = parse([(&b"device"[..], Some(&b"da0"[..])), (&b"vendor"[..], Some(&long[..]))].into_iter());
        assert_eq!(
            long_value.map(|_| ()),
            Err(OptionError::TooLong {
                name: "vendor",
                len: 1025
            })
        );
        let non_string = parse([(&b"device"[..], Some(&b"da0"[..])), (&b"vendor"[..], None)].into_iter());
        assert_eq!(non_string.map(|_| ()), Err(OptionError::NotText(b"vendor")));
        // An option CTL cannot carry is the error even after one whose
        // meaning is wrong.
        let order = parse([(&b"device"[..], Some(&b"da"[..])), (&b"x y"[..], Some(&b"1"[..]))].into_iter());
        assert!(matches!(order, Err(OptionError::BadName { .. })));
    }

    #[test]
    fn at_most_256_options() {
        let names: std::vec::Vec<std::string::String> = (0..MAX_OPTIONS).map(|i| format!("o{i}")).collect();
        let with = |n: usize| {
            let options = names.iter().take(n).map(|o| (o.as_bytes(), Some(&b"v"[..])));
            parse(options.chain([(&b"device"[..], Some(&b"da0"[..]))])).map(|_| ())
        };
        assert_eq!(with(MAX_OPTIONS - 1), Ok(()));
        assert_eq!(with(MAX_OPTIONS), Err(OptionError::TooMany));
    }

    #[test]
    fn unit_numbers_and_addresses_say_what_is_wrong() {
        let e = |t| format!("{}", DeviceName::parse(t).unwrap_err());
        assert_eq!(
            e("da4294967296"),
            "option \"device\": invalid device name \"da4294967296\": the unit number is too large"
        );
        assert_eq!(
            e("da03"),
            "option \"device\": invalid device name \"da03\": the unit number has a leading zero"
        );
        assert_eq!(
            e("/dev/"),
            "option \"device\": invalid device name \"/dev/\": the name is empty"
        );
        assert_eq!(
            e("cam=0:+1:0"),
            "option \"device\": invalid device name \"cam=0:+1:0\": bus, target and lun must be numbers"
        );
        assert_eq!(
            e("cam=0:0:18446744073709551616"),
            "option \"device\": invalid device name \"cam=0:0:18446744073709551616\": bus, target or lun is out of range"
        );
        assert_eq!(
            DeviceName::parse("cam=4294967295:0:18446744073709551615"),
            Ok(DeviceName::Address {
                path_id: u32::MAX,
                target_id: 0,
                lun_id: u64::MAX
            })
        );
        assert_eq!(
            DeviceName::parse("da4294967295"),
            Ok(DeviceName::Periph {
                driver: "da",
                unit: u32::MAX
            })
        );
        let serial = std::string::String::from("serial=") + &"S".repeat(SERIAL_NUM_LEN + 1);
        assert!(e(&serial).ends_with("(260 bytes): longer than any serial number CAM keeps (252 bytes)"));
        assert!(DeviceName::parse(&serial[..serial.len() - 1]).is_ok());
    }

    #[test]
    fn the_requests_own_serial_number_and_device_id_are_printable_ascii() {
        assert_eq!(check_ids(Some(b"Z1Z3ABCD\0\0\0\0\0\0\0\0"), Some(&[0; 64])), Ok(()));
        assert_eq!(check_ids(None, None), Ok(()));
        assert_eq!(
            check_ids(Some(b"AB\x01\0"), None),
            Err(OptionError::NotAscii {
                field: "serial number (-S)",
                byte: 1,
                at: 2
            })
        );
        let e = check_ids(None, Some(b"\x80")).unwrap_err();
        assert_eq!(
            format!("{e}"),
            "the device id (-d) has byte \\x80 at offset 0: only printable ASCII is taken"
        );
    }
}
