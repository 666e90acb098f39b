//! `backend::options`: the options of `ctladm create -o name=value` and
//! ctl.conf.  A device name that parses names the device its canonical
//! form names (a periph name is its own canonical form, less `/dev/` and
//! with sa(4)'s other nodes as `sa`); a form-specific option (`cam`,
//! `devid`, `serial`) means what the same value behind its prefix in
//! `device` means.  For any list of options, `parse` agrees with a model
//! read off the module's documentation: every option is first checked for
//! what CTL's LUN list can carry (names, values, sizes, how many), the
//! first that cannot be is the error; then the first option whose meaning
//! is wrong (a device name, a conflicting second one, a value the option
//! does not take); else the device options name one device and the others
//! take their last value.  Every error's message is one line.
//!
//! Input: options separated by newlines, `name=value` (cut at the first
//! `=`), or a bare name for an option whose value is not a string.

#![no_main]

use ctlpass::backend::options::{
    self, DeviceName, HaRole, LostPolicy, MAX_NAME_LEN, MAX_OPTIONS, MAX_VALUE_LEN, OptionError, RawOption,
};
use libfuzzer_sys::fuzz_target;

/// The options that name the device.
const DEVICE_OPTIONS: [&str; 5] = ["device", "file", "cam", "devid", "serial"];

/// A device name as a key that two names share exactly when they are
/// equal (a serial number whole: a message shortens it).
fn key(name: &DeviceName<'_>) -> String {
    match name {
        DeviceName::Serial(s) => format!("serial={s}"),
        other => other.to_string(),
    }
}

/// What option `name` with `value` names, as the value of `device` would
/// (the key of the name).
fn named(name: &str, value: &str) -> Option<String> {
    let text = match name {
        "device" | "file" => value.to_string(),
        _ => format!("{name}={value}"),
    };
    DeviceName::parse(&text).ok().map(|d| key(&d))
}

/// The device name checks, for `text` as the value of `device`.
fn check_name(text: &str) {
    let Ok(name) = DeviceName::parse(text) else {
        return;
    };
    let shown = name.to_string();
    match name {
        DeviceName::Periph { driver, .. } => {
            assert!(!driver.is_empty() && driver.bytes().all(|b| b.is_ascii_lowercase()));
            let bare = text.strip_prefix("/dev/").unwrap_or(text);
            let (drv, unit) = bare.split_at(bare.find(|c: char| c.is_ascii_digit()).unwrap_or(bare.len()));
            let canonical = match drv {
                "nsa" | "esa" => format!("sa{unit}"),
                _ => bare.to_string(),
            };
            assert_eq!(shown, canonical, "{text:?}");
        }
        DeviceName::Serial(s) => {
            assert!(!s.is_empty() && s.len() <= 252, "{text:?}");
            assert!(shown.starts_with("serial="));
            assert!(!shown.contains(|c: char| c.is_control()), "{shown:?}");
            return;
        }
        DeviceName::Address { .. } | DeviceName::DevId(_) => {}
    }
    assert_eq!(DeviceName::parse(&shown), Ok(name), "{text:?} shows as {shown:?}");
}

/// Why the model refuses a list of options: the option at fault and how.
#[derive(Debug, PartialEq, Eq)]
enum Fault<'a> {
    TooMany,
    Name(&'a [u8]),
    NotText(&'a [u8]),
    TooLong(&'a [u8]),
    Unlistable(&'a [u8], char),
    /// A value, device name or second device option that is wrong.
    Meaning(&'a [u8]),
    /// Two device options of the same form naming different devices.
    Conflict(&'a [u8], bool),
    MissingDevice,
}

/// The crate's error as the model says it.
fn fault<'a>(e: &OptionError<'a>) -> Fault<'a> {
    match *e {
        OptionError::MissingDevice => Fault::MissingDevice,
        OptionError::TooMany => Fault::TooMany,
        OptionError::BadName { name, .. } => Fault::Name(name),
        OptionError::NotText(name) => Fault::NotText(name),
        OptionError::TooLong { name, .. } => Fault::TooLong(name.as_bytes()),
        OptionError::Unlistable { name, found, .. } => Fault::Unlistable(name.as_bytes(), found),
        OptionError::BadValue { name, .. } => Fault::Meaning(name.as_bytes()),
        OptionError::BadDeviceName { option, .. } => Fault::Meaning(option.as_bytes()),
        OptionError::Conflict {
            second: (name, _),
            same_form,
            ..
        } => Fault::Conflict(name.as_bytes(), same_form),
        OptionError::NotAscii { .. } => panic!("parse checks no request field"),
    }
}

/// What the model reads: the device's key, strict, readonly, ha_role, lost
/// and reset.
type Read = (String, bool, bool, HaRole, Option<LostPolicy>, bool);

/// Whether CTL's LUN list can carry `name` as an element name.
fn listable_name(name: &[u8]) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && (name[0].is_ascii_alphabetic() || name[0] == b'_')
        && name.iter().all(|&b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
}

/// The form of a device name's key (`cam=`, `devid=`, `serial=`, or a
/// periph).
fn form(key: &str) -> &str {
    ["cam=", "devid=", "serial="]
        .into_iter()
        .find(|p| key.starts_with(p))
        .unwrap_or("")
}

/// What `parse` must give for `list`.
fn model<'a>(list: &[RawOption<'a>]) -> Result<Read, Fault<'a>> {
    let (mut strict, mut readonly, mut role) = (false, false, HaRole::Primary);
    let (mut lost, mut reset) = (None, false);
    let mut device: Option<String> = None;
    let mut meaning: Option<Fault<'a>> = None;
    for (i, &(name, value)) in list.iter().enumerate() {
        if i == MAX_OPTIONS {
            return Err(Fault::TooMany);
        }
        if !listable_name(name) {
            return Err(Fault::Name(name));
        }
        let value = value.ok_or(Fault::NotText(name))?;
        if value.len() > MAX_VALUE_LEN {
            return Err(Fault::TooLong(name));
        }
        let text = std::str::from_utf8(value).map_err(|_| Fault::NotText(name))?;
        if let Some(c) = text.chars().find(|&c| c.is_control() || c == '<' || c == '&') {
            return Err(Fault::Unlistable(name, c));
        }
        if meaning.is_some() {
            continue;
        }
        let option = std::str::from_utf8(name).expect("a listable name is ASCII");
        let wrong = || Some(Fault::Meaning(name));
        match (option, text) {
            ("strict", "on" | "off") => strict = text == "on",
            ("readonly", "on" | "off") => readonly = text == "on",
            ("ha_role", "primary") => role = HaRole::Primary,
            ("ha_role", "secondary") => role = HaRole::Secondary,
            ("lost", "offline") => lost = Some(LostPolicy::Offline),
            ("lost", "remove") => lost = Some(LostPolicy::Remove),
            ("reset", "device" | "none") => reset = text == "device",
            ("strict" | "readonly" | "ha_role" | "lost" | "reset", _) => meaning = wrong(),
            _ if DEVICE_OPTIONS.contains(&option) => match (named(option, text), &device) {
                (None, _) => meaning = wrong(),
                (Some(this), None) => device = Some(this),
                (Some(this), Some(first)) if *first != this => {
                    meaning = Some(Fault::Conflict(name, form(first) == form(&this)));
                }
                (Some(_), Some(_)) => {}
            },
            _ => {}
        }
    }
    if let Some(m) = meaning {
        return Err(m);
    }
    let device = device.ok_or(Fault::MissingDevice)?;
    Ok((device, strict, readonly, role, lost, reset))
}

fuzz_target!(|data: &[u8]| {
    let list: Vec<RawOption<'_>> = data
        .split(|&b| b == b'\n')
        .map(|entry| match entry.iter().position(|&b| b == b'=') {
            Some(i) => (&entry[..i], Some(&entry[i + 1..])),
            None => (entry, None),
        })
        .collect();
    for &(name, value) in &list {
        if let Some(text) = value.and_then(|v| std::str::from_utf8(v).ok()) {
            check_name(text);
            if let Ok(name) = std::str::from_utf8(name)
                && DEVICE_OPTIONS.contains(&name)
                && text.len() <= MAX_VALUE_LEN
                && !text.contains(|c: char| c.is_control() || c == '<' || c == '&')
            {
                let direct = options::parse([(name.as_bytes(), Some(text.as_bytes()))].into_iter());
                assert_eq!(direct.ok().map(|o| key(&o.device)), named(name, text), "{name}={text}");
            }
        }
    }

    let parsed = options::parse(list.iter().copied());
    match (&parsed, model(&list)) {
        (Ok(o), Ok(want)) => {
            let got = (key(&o.device), o.strict, o.readonly, o.ha_role, o.lost, o.reset_device);
            assert_eq!(got, want);
        }
        (Err(e), Err(want)) => {
            let message = e.to_string();
            assert!(
                !message.is_empty() && !message.contains(|c: char| c.is_control()),
                "{message:?}"
            );
            assert_eq!(fault(e), want, "{message}");
        }
        (got, want) => panic!("parse gave {got:?}, the model {want:?}"),
    }
});
