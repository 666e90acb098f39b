//! What ctlpass(4) (`kmod/ctlpass.4`) promises, read from its source, so
//! that tests hold the module to it: the messages of its DIAGNOSTICS
//! section (`.Bl -diag` items, `%s` standing for any text and `%u` for a
//! number) and the sysctl variables it documents.

use std::sync::OnceLock;

/// The manual page's mdoc source.
pub fn source() -> &'static str {
    static PAGE: OnceLock<String> = OnceLock::new();
    PAGE.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../kmod/ctlpass.4");
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
    })
}

/// The lines of section `name` (after its `.Sh` line, up to the next).
fn section(name: &str) -> impl Iterator<Item = &'static str> {
    let heading = format!(".Sh {name}");
    source()
        .lines()
        .skip_while(move |l| *l != heading)
        .skip(1)
        .take_while(|l| !l.starts_with(".Sh "))
}

/// An mdoc argument as roff reads it: quoted, with `""` for a quote and
/// `\e` for a backslash.
fn unquote(arg: &str) -> String {
    let inner = arg.strip_prefix('"').and_then(|a| a.strip_suffix('"')).unwrap_or(arg);
    inner.replace("\"\"", "\"").replace("\\e", "\\")
}

/// The messages DIAGNOSTICS lists, as printf-like patterns.
pub fn diagnostics() -> Vec<String> {
    section("DIAGNOSTICS")
        .filter_map(|l| l.strip_prefix(".It "))
        .map(unquote)
        .collect()
}

/// Whether `text` matches `pattern`, where `%s` is any text (quoted text
/// from a request may be empty) and `%u` one or more decimal digits.
fn matches(pattern: &str, text: &str) -> bool {
    if let Some(rest) = pattern.strip_prefix("%s") {
        return (0..=text.len())
            .filter(|&i| text.is_char_boundary(i))
            .any(|i| matches(rest, &text[i..]));
    }
    if let Some(rest) = pattern.strip_prefix("%u") {
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        return (1..=digits).any(|i| matches(rest, &text[i..]));
    }
    match (pattern.chars().next(), text.chars().next()) {
        (None, None) => true,
        (Some(p), Some(t)) if p == t => matches(&pattern[p.len_utf8()..], &text[t.len_utf8()..]),
        _ => false,
    }
}

/// The DIAGNOSTICS entry that documents `message`, if one does.
pub fn documenting(message: &str) -> Option<String> {
    diagnostics().into_iter().find(|p| matches(p, message))
}

/// The sysctl variables the page documents (`.It Va` items of SYSCTL
/// VARIABLES), a per-LUN one with `N` for the LUN's number
/// (`kern.cam.ctl.passthrough.lun.N.state`).
pub fn sysctls() -> Vec<String> {
    section("SYSCTL VARIABLES")
        .filter_map(|l| l.strip_prefix(".It Va "))
        .map(|item| {
            // `Va lun.\& Ns Ar N Ns Va .state` reads lun.N.state.
            item.replace("\\&", "")
                .replace(" Ns Ar N Ns Va ", "N")
                .split_whitespace()
                .collect::<String>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_match_text_and_numbers_only_where_they_stand() {
        assert!(matches("LUN %u is being removed", "LUN 12 is being removed"));
        assert!(!matches("LUN %u is being removed", "LUN x is being removed"));
        assert!(!matches("LUN %u is being removed", "LUN  is being removed"));
        assert!(matches(
            "option %s must be a string of UTF-8 text",
            "option \"\" must be a string of UTF-8 text"
        ));
        assert!(matches(
            "%s: READ CAPACITY(%u) failed: %s",
            "da0: READ CAPACITY(16) failed: SCSI status 0x08"
        ));
        assert!(!matches("no SCSI device %s", "no SCSI devices"));
        assert!(!matches("out of memory", "out of memory!"));
        assert!(matches(
            "no SCSI device with %s=%s",
            "no SCSI device with devid=naa.5000c500a1b2c3d4"
        ));
    }

    #[test]
    fn the_page_documents_messages_and_variables() {
        assert!(diagnostics().len() > 40, "{:?}", diagnostics());
        assert!(documenting("the passthrough backend is being unloaded").is_some());
        assert_eq!(documenting("something ctlpass never says"), None);
        let names = sysctls();
        assert!(
            names.contains(&"kern.cam.ctl.passthrough.mode".to_string()),
            "{names:?}"
        );
        assert!(
            names.contains(&"kern.cam.ctl.passthrough.lun.N.state".to_string()),
            "{names:?}"
        );
    }
}
