//! A small XML reader for the documents CTL's list ioctls return (what
//! ctladm reads with expat): elements with attributes, character data with
//! the predefined and numeric entities, comments and declarations skipped.

/// What the reader reports, in document order (expat's start, end and
/// character data handlers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// An element starts, with its attributes.
    Start(String, Vec<(String, String)>),
    /// An element ends.
    End(String),
    /// Character data.
    Text(String),
}

/// Decodes `&amp;`, `&lt;`, `&gt;`, `&quot;`, `&apos;` and `&#N;`/`&#xN;`.
fn unescape(text: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let end = rest[at..]
            .find(';')
            .ok_or_else(|| format!("unterminated entity in {text:?}"))?
            + at;
        let name = &rest[at + 1..end];
        let c = match name {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = name.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else {
                    name.strip_prefix('#').and_then(|d| d.parse().ok())
                };
                code.and_then(char::from_u32)
                    .ok_or_else(|| format!("undefined entity &{name};"))?
            }
        };
        out.push(c);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')
}

/// Parses a start tag's inside (`lun id="0"`, without `<`, `>` or `/`).
fn start_tag(inside: &str) -> Result<(String, Vec<(String, String)>), String> {
    let name_end = inside.find(|c: char| !is_name_char(c)).unwrap_or(inside.len());
    let name = &inside[..name_end];
    if name.is_empty() {
        return Err(format!("bad tag <{inside}>"));
    }
    let mut attrs = Vec::new();
    let mut rest = inside[name_end..].trim_start();
    while !rest.is_empty() {
        let eq = rest.find('=').ok_or_else(|| format!("bad attribute in <{inside}>"))?;
        let key = rest[..eq].trim();
        let after = rest[eq + 1..].trim_start();
        let quote = after.chars().next().filter(|&q| q == '"' || q == '\'');
        let quote = quote.ok_or_else(|| format!("unquoted attribute in <{inside}>"))?;
        let close = after[1..]
            .find(quote)
            .ok_or_else(|| format!("unterminated attribute in <{inside}>"))?
            + 1;
        if key.is_empty() || !key.chars().all(is_name_char) {
            return Err(format!("bad attribute name in <{inside}>"));
        }
        attrs.push((key.to_owned(), unescape(&after[1..close])?));
        rest = after[close + 1..].trim_start();
    }
    Ok((name.to_owned(), attrs))
}

/// Reads a whole document; `Err` says where it is not well formed.
pub(crate) fn parse(doc: &str) -> Result<Vec<Event>, String> {
    let mut events = Vec::new();
    let mut open: Vec<String> = Vec::new();
    let mut rest = doc;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("<!--") {
            let end = after.find("-->").ok_or("unterminated comment")?;
            rest = &after[end + 3..];
        } else if let Some(after) = rest.strip_prefix("<?") {
            let end = after.find("?>").ok_or("unterminated declaration")?;
            rest = &after[end + 2..];
        } else if let Some(after) = rest.strip_prefix("</") {
            let end = after.find('>').ok_or("unterminated end tag")?;
            let name = after[..end].trim();
            match open.pop() {
                Some(o) if o == name => events.push(Event::End(name.to_owned())),
                o => {
                    return Err(format!(
                        "</{name}> closes {}",
                        o.map_or("nothing".into(), |o| format!("<{o}>"))
                    ));
                }
            }
            rest = &after[end + 1..];
        } else if let Some(after) = rest.strip_prefix('<') {
            let mut quote = None;
            let end = after
                .char_indices()
                .find(|&(_, c)| match quote {
                    Some(q) => {
                        if c == q {
                            quote = None;
                        }
                        false
                    }
                    None if c == '"' || c == '\'' => {
                        quote = Some(c);
                        false
                    }
                    None => c == '>',
                })
                .map(|(i, _)| i)
                .ok_or("unterminated start tag")?;
            let inside = &after[..end];
            let (inside, empty) = match inside.strip_suffix('/') {
                Some(i) => (i, true),
                None => (inside, false),
            };
            let (name, attrs) = start_tag(inside.trim())?;
            events.push(Event::Start(name.clone(), attrs));
            if empty {
                events.push(Event::End(name));
            } else {
                open.push(name);
            }
            rest = &after[end + 1..];
        } else {
            let end = rest.find('<').unwrap_or(rest.len());
            let text = unescape(&rest[..end])?;
            if open.is_empty() {
                if !text.trim().is_empty() {
                    return Err(format!("text outside the document element: {text:?}"));
                }
            } else {
                events.push(Event::Text(text));
            }
            rest = &rest[end..];
        }
    }
    match open.last() {
        Some(o) => Err(format!("<{o}> is not closed")),
        None => Ok(events),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ctls_lun_list() {
        let doc = "<?xml version=\"1.0\"?>\n<ctllunlist>\n<lun id=\"3\">\n\t<serial_number>A&amp;B &lt;1&gt;</serial_number>\n\t<x/>\n</lun>\n</ctllunlist>\n";
        let e = parse(doc).unwrap();
        assert_eq!(e[0], Event::Start("ctllunlist".into(), vec![]));
        assert_eq!(e[2], Event::Start("lun".into(), vec![("id".into(), "3".into())]));
        assert!(e.contains(&Event::Text("A&B <1>".into())));
        assert!(e.contains(&Event::Start("x".into(), vec![])));
        assert_eq!(e.last(), Some(&Event::End("ctllunlist".into())));
    }

    #[test]
    fn refuses_what_is_not_well_formed() {
        assert!(parse("<a><b></a>").is_err());
        assert!(parse("<a>").is_err());
        assert!(parse("<a>&bogus;</a>").is_err());
        assert!(parse("<a x=1></a>").is_err());
    }
}
