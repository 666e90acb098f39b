//! What FreeBSD's tools use to read their arguments: getopt(3), strtoul(3)
//! with base 0, expand_number(3), and strerror(3) with FreeBSD's texts.

/// The options getopt(3) found, in order, with their arguments, and the
/// operands after them.
pub(super) type Parsed<'a> = (Vec<(char, Option<&'a str>)>, Vec<&'a str>);

/// getopt(3) over `args` with the option string `spec` (`"b:vx"`): options
/// until the first operand or `--`.  `Err` with getopt's own complaint
/// (`illegal option -- q`, `option requires an argument -- b`).
pub(super) fn getopt<'a>(args: &[&'a str], spec: &str) -> Result<Parsed<'a>, String> {
    let mut opts = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = args[i];
        if arg == "--" {
            i += 1;
            break;
        }
        if !arg.starts_with('-') || arg == "-" {
            break;
        }
        i += 1;
        for (at, c) in arg.char_indices().skip(1) {
            let Some(pos) = spec.find(c).filter(|_| c != ':') else {
                return Err(format!("illegal option -- {c}"));
            };
            if spec[pos + c.len_utf8()..].starts_with(':') {
                let rest = &arg[at + c.len_utf8()..];
                let value = if !rest.is_empty() {
                    rest
                } else if i < args.len() {
                    i += 1;
                    args[i - 1]
                } else {
                    return Err(format!("option requires an argument -- {c}"));
                };
                opts.push((c, Some(value)));
                break;
            }
            opts.push((c, None));
        }
    }
    Ok((opts, args[i..].to_vec()))
}

/// strtoumax(3) with base 0 (decimal, `0x` hex, `0` octal): the value,
/// whether any digit was read, whether it overflowed (the value is then
/// `u64::MAX`), and the text after the number.  A minus sign negates as C
/// does (modulo 2^64).
pub(crate) fn strtoumax(text: &str) -> (u64, bool, bool, &str) {
    let s = text.trim_start();
    let (negative, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let hex = (s.starts_with("0x") || s.starts_with("0X")) && s[2..].starts_with(|c: char| c.is_ascii_hexdigit());
    let (radix, digits) = if hex {
        (16, &s[2..])
    } else if s.starts_with('0') {
        (8, s)
    } else {
        (10, s)
    };
    let end = digits.find(|c: char| !c.is_digit(radix)).unwrap_or(digits.len());
    if end == 0 {
        return (0, false, false, text);
    }
    let mut value: u64 = 0;
    let mut overflow = false;
    for c in digits[..end].chars() {
        let d = u64::from(c.to_digit(radix).unwrap_or(0));
        match value.checked_mul(u64::from(radix)).and_then(|v| v.checked_add(d)) {
            Some(v) => value = v,
            None => overflow = true,
        }
    }
    if overflow {
        return (u64::MAX, true, true, &digits[end..]);
    }
    (
        if negative { value.wrapping_neg() } else { value },
        true,
        false,
        &digits[end..],
    )
}

/// strtoul(3) with base 0 as FreeBSD's tools call it: what it can read, 0
/// if nothing.
pub(super) fn strtoul(text: &str) -> u64 {
    strtoumax(text).0
}

/// expand_number(3): a number with an optional unit (b, k, m, g, t, p, e:
/// powers of 1024); `Err(errno)` (EINVAL, ERANGE) as FreeBSD's does.
pub(super) fn expand_number(text: &str) -> Result<u64, i32> {
    let (number, any, overflow, rest) = strtoumax(text);
    if overflow {
        return Err(ERANGE);
    }
    if !any {
        return Err(EINVAL);
    }
    let shift = match rest.chars().next().map(|c| c.to_ascii_lowercase()) {
        None | Some('b') => return Ok(number),
        Some('k') => 10,
        Some('m') => 20,
        Some('g') => 30,
        Some('t') => 40,
        Some('p') => 50,
        Some('e') => 60,
        Some(_) => return Err(EINVAL),
    };
    if (number << shift) >> shift != number {
        return Err(ERANGE);
    }
    Ok(number << shift)
}

/// FreeBSD's EINVAL.
pub(super) const EINVAL: i32 = 22;
/// FreeBSD's ERANGE.
pub(super) const ERANGE: i32 = 34;
/// FreeBSD's EEXIST.
pub(super) const EEXIST: i32 = 17;

/// strerror(3) with FreeBSD's numbers and texts (the simulated kernel's
/// errno values are FreeBSD's).
pub(super) fn strerror(errno: i32) -> String {
    let text = match errno {
        1 => "Operation not permitted",
        2 => "No such file or directory",
        3 => "No such process",
        4 => "Interrupted system call",
        5 => "Input/output error",
        6 => "Device not configured",
        7 => "Argument list too long",
        8 => "Exec format error",
        9 => "Bad file descriptor",
        12 => "Cannot allocate memory",
        13 => "Permission denied",
        14 => "Bad address",
        16 => "Device busy",
        17 => "File exists",
        19 => "Operation not supported by device",
        22 => "Invalid argument",
        25 => "Inappropriate ioctl for device",
        28 => "No space left on device",
        34 => "Result too large",
        35 => "Resource temporarily unavailable",
        45 => "Operation not supported",
        78 => "Function not implemented",
        _ => return format!("Unknown error: {errno}"),
    };
    text.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getopt_reads_options_as_bsd_getopt_does() {
        let (o, rest) = getopt(&["-vx", "-bpassthrough", "-o", "a=b", "0", "-v"], "b:o:vx").unwrap();
        assert_eq!(
            o,
            [('v', None), ('x', None), ('b', Some("passthrough")), ('o', Some("a=b"))]
        );
        assert_eq!(rest, ["0", "-v"]);
        assert_eq!(getopt(&["-q"], "vx"), Err("illegal option -- q".into()));
        assert_eq!(getopt(&["-b"], "b:"), Err("option requires an argument -- b".into()));
        assert_eq!(getopt(&["--", "-v"], "v").unwrap().1, ["-v"]);
    }

    #[test]
    fn numbers_read_as_strtoul_and_expand_number() {
        assert_eq!(strtoul("0x10"), 16);
        assert_eq!(strtoul("010"), 8);
        assert_eq!(strtoul("12abc"), 12);
        assert_eq!(strtoul("abc"), 0);
        assert_eq!(expand_number("1G"), Ok(1 << 30));
        assert_eq!(expand_number("64k"), Ok(65536));
        assert_eq!(expand_number("512b"), Ok(512));
        assert_eq!(expand_number("4096"), Ok(4096));
        assert_eq!(expand_number("1x"), Err(EINVAL));
        assert_eq!(expand_number(""), Err(EINVAL));
        assert_eq!(expand_number("16E"), Err(ERANGE));
        assert_eq!(expand_number("99999999999999999999"), Err(ERANGE));
    }
}
