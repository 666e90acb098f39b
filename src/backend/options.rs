//! The options of a passthrough LUN (`ctladm create -o name=value`, or a
//! LUN's `path` and `option` lines in ctl.conf): which device, and how.
//! Options this backend does not know are left for CTL (vendor, product,
//! naa, removable, ...).

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

impl<'a> DeviceName<'a> {
    /// Parses a device name.
    pub fn parse(text: &'a str) -> Result<DeviceName<'a>, OptionError<'a>> {
        let bad = |why| OptionError::BadDeviceName { text, why };
        if let Some(addr) = text.strip_prefix("cam=") {
            let parts = split_at_byte(addr, b':').and_then(|(p, rest)| Some((p, split_at_byte(rest, b':')?)));
            let Some((p, (t, l))) = parts.filter(|(_, (_, l))| !l.as_bytes().contains(&b':')) else {
                return Err(bad("expected cam=bus:target:lun"));
            };
            let (Ok(path_id), Ok(target_id), Ok(lun_id)) = (p.parse(), t.parse(), l.parse()) else {
                return Err(bad("bus, target and lun must be numbers"));
            };
            return Ok(DeviceName::Address {
                path_id,
                target_id,
                lun_id,
            });
        }
        if let Some(id) = text.strip_prefix("devid=") {
            let (scheme, hex) = split_at_byte(id, b'.').ok_or(bad("expected devid=naa.<hex> or devid=eui.<hex>"))?;
            let scheme_ok = scheme.eq_ignore_ascii_case("naa") || scheme.eq_ignore_ascii_case("eui");
            if !scheme_ok || ![16, 24, 32].contains(&hex.len()) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(
                    "expected devid=naa.<hex> or devid=eui.<hex> with 16, 24 or 32 hex digits",
                ));
            }
            return Ok(DeviceName::DevId(id));
        }
        if let Some(serial) = text.strip_prefix("serial=") {
            return if serial.is_empty() {
                Err(bad("the serial number is empty"))
            } else {
                Ok(DeviceName::Serial(serial))
            };
        }
        let name = text.strip_prefix("/dev/").unwrap_or(text);
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
    /// `device` and `file` name different devices.
    Conflict {
        /// The `device` option.
        device: &'a str,
        /// The `file` option.
        file: &'a str,
    },
    /// A device name that cannot be parsed.
    BadDeviceName {
        /// The name.
        text: &'a str,
        /// What is wrong with it.
        why: &'static str,
    },
}

impl fmt::Display for OptionError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionError::MissingDevice => f.write_str(
                "option \"device\" is required (e.g. device=da3, cam=0:1:0, devid=naa.5000c500a1b2c3d4 or serial=Z1Z3ABCD)",
            ),
            OptionError::NotText(name) => {
                write!(f, "option \"{}\" must be a string of UTF-8 text", crate::scsi::Ascii(name))
            }
            OptionError::BadValue { name, value, expected } => {
                write!(f, "option \"{name}\": \"{value}\" is not {expected}")
            }
            OptionError::Conflict { device, file } => {
                write!(f, "options \"device\" ({device}) and \"file\" ({file}) name different devices")
            }
            OptionError::BadDeviceName { text, why } => write!(f, "invalid device name \"{text}\": {why}"),
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

/// Reads this backend's options from a request's options.
pub fn parse<'a>(options: impl Iterator<Item = RawOption<'a>>) -> Result<LunOptions<'a>, OptionError<'a>> {
    let (mut device, mut file, mut strict, mut readonly, mut role) = (None, None, false, false, HaRole::Primary);
    for (name, value) in options {
        let text = |v: Option<&'a [u8]>| {
            v.and_then(|v| core::str::from_utf8(v).ok())
                .ok_or(OptionError::NotText(name))
        };
        match name {
            b"device" => device = Some(text(value)?),
            b"file" => file = Some(text(value)?),
            b"strict" => strict = on_off("strict", text(value)?)?,
            b"readonly" => readonly = on_off("readonly", text(value)?)?,
            b"ha_role" => role = ha_role(text(value)?)?,
            _ => {}
        }
    }
    let device = match (device, file) {
        (Some(d), Some(f)) if DeviceName::parse(d)? != DeviceName::parse(f)? => {
            return Err(OptionError::Conflict { device: d, file: f });
        }
        (Some(d), _) | (None, Some(d)) => DeviceName::parse(d)?,
        (None, None) => return Err(OptionError::MissingDevice),
    };
    Ok(LunOptions {
        device,
        strict,
        readonly,
        ha_role: role,
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
        assert_eq!(e("da"), "invalid device name \"da\": no unit number");
        assert_eq!(
            e("DA3"),
            "invalid device name \"DA3\": expected a device like da3, cam=0:1:0, devid=naa.<hex> or serial=<serial>"
        );
        assert_eq!(e("da3x"), "invalid device name \"da3x\": the unit is not a number");
        assert_eq!(
            e("cam=1:2"),
            "invalid device name \"cam=1:2\": expected cam=bus:target:lun"
        );
        assert_eq!(
            e("cam=a:b:c"),
            "invalid device name \"cam=a:b:c\": bus, target and lun must be numbers"
        );
        assert_eq!(
            e("devid=naa.123"),
            "invalid device name \"devid=naa.123\": expected devid=naa.<hex> or devid=eui.<hex> with 16, 24 or 32 hex digits"
        );
        assert_eq!(
            e("serial="),
            "invalid device name \"serial=\": the serial number is empty"
        );
        assert!(DeviceName::parse("devid=xyz.5000c500a1b2c3d4").is_err());
        assert!(DeviceName::parse("devid=naa.5000c500a1b2c3zz").is_err());
        assert!(DeviceName::parse("da99999999999").is_err());
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
                ha_role: HaRole::Primary
            }
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
            "option \"device\" is required (e.g. device=da3, cam=0:1:0, devid=naa.5000c500a1b2c3d4 or serial=Z1Z3ABCD)"
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
            "options \"device\" (da0) and \"file\" (da1) name different devices"
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
