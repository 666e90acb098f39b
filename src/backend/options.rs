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

use core::fmt;

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
                let (Ok(path_id), Ok(target_id), Ok(lun_id)) = (p.parse(), t.parse(), l.parse()) else {
                    return Err(bad("bus, target and lun must be numbers"));
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
            Form::Serial => Ok(DeviceName::Serial(value)),
            Form::Periph => {
                let name = value.strip_prefix("/dev/").unwrap_or(value);
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
                let unit = unit.parse().map_err(|_| bad("the unit is not a number"))?;
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
            DeviceName::Serial(s) => write!(f, "serial={s}"),
        }
    }
}

/// `text` split around the first `sep` (an ASCII byte), without the
/// panicking paths of `str::split`.
fn split_at_byte(text: &str, sep: u8) -> Option<(&str, &str)> {
    let i = text.bytes().position(|b| b == sep)?;
    Some((text.get(..i)?, text.get(i + 1..)?))
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
    /// What becomes of the LUN when its device is lost (`lost`).
    pub lost: LostPolicy,
}

/// What becomes of a LUN whose device is lost (option `lost`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LostPolicy {
    /// `lost=offline` (the default): the LUN stays, without a medium, and
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
    /// An option whose value is not a string (or not UTF-8 text).
    NotText(&'a [u8]),
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
}

impl fmt::Display for OptionError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionError::MissingDevice => f.write_str(
                "option \"device\" is required (e.g. device=da3), or \"cam\", \"devid\" or \"serial\" \
                 (cam=0:1:0, devid=naa.5000c500a1b2c3d4, serial=Z1Z3ABCD)",
            ),
            OptionError::NotText(name) => {
                write!(
                    f,
                    "option \"{}\" must be a string of UTF-8 text",
                    crate::scsi::Ascii(name)
                )
            }
            OptionError::BadValue { name, value, expected } => {
                write!(f, "option \"{name}\": \"{value}\" is not {expected}")
            }
            OptionError::Conflict {
                first: (a, va),
                second: (b, vb),
            } => {
                write!(
                    f,
                    "options \"{a}\" ({va}) and \"{b}\" ({vb}) disagree: name the device once"
                )
            }
            OptionError::BadDeviceName { option, text, why } => {
                write!(f, "option \"{option}\": invalid device name \"{text}\": {why}")
            }
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

/// Reads this backend's options from a request's options.
pub fn parse<'a>(options: impl Iterator<Item = RawOption<'a>>) -> Result<LunOptions<'a>, OptionError<'a>> {
    let (mut strict, mut readonly, mut role) = (false, false, HaRole::Primary);
    let mut lost = LostPolicy::Offline;
    // The first option naming the device: its name, value and meaning.
    let mut named: Option<(&'a str, &'a str, DeviceName<'a>)> = None;
    for (name, value) in options {
        let text = |v: Option<&'a [u8]>| {
            v.and_then(|v| core::str::from_utf8(v).ok())
                .ok_or(OptionError::NotText(name))
        };
        if let Some(&(option, form)) = DEVICE_OPTIONS.iter().find(|(o, _)| o.as_bytes() == name) {
            let value = text(value)?;
            let device = DeviceName::parse_option(option, value, form)?;
            match named {
                None => named = Some((option, value, device)),
                Some((first, first_value, d)) if d != device => {
                    return Err(OptionError::Conflict {
                        first: (first, first_value),
                        second: (option, value),
                    });
                }
                Some(_) => {}
            }
            continue;
        }
        match name {
            b"strict" => strict = on_off("strict", text(value)?)?,
            b"readonly" => readonly = on_off("readonly", text(value)?)?,
            b"ha_role" => role = ha_role(text(value)?)?,
            b"lost" => lost = lost_policy(text(value)?)?,
            _ => {}
        }
    }
    let (_, _, device) = named.ok_or(OptionError::MissingDevice)?;
    Ok(LunOptions {
        device,
        strict,
        readonly,
        ha_role: role,
        lost,
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
            "options \"device\" (da0) and \"serial\" (Z1Z3ABCD) disagree: name the device once"
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
                lost: LostPolicy::Offline,
            }
        );
        assert_eq!(
            opts(&[("device", "da1"), ("lost", "remove")]).unwrap().lost,
            LostPolicy::Remove
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
}
