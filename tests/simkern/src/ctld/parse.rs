//! ctl.conf as ctld reads it: the tokens of usr.sbin/ctld/token.l and the
//! grammar of parse.y (FreeBSD 15), with their actions' checks and
//! messages.
//!
//! The scanner is flex's: the longest match wins, a keyword over a string
//! of the same length; a string is a run of letters, digits and
//! `.-@_/:[]`, or anything but `"` between double quotes (at least one
//! character); any other character is a string of its own (so `cam=0:1:0`
//! is three tokens, and a device name with `=` must be quoted); `#` to the
//! end of the line is a comment; `{`, `}` and `;` are tokens.  The parser
//! reads a token ahead only where bison's tables need one, so that
//! "near '...'" in a message names the token bison would have read.

use super::Log;
use super::conf::Conf;
use crate::shell::args::expand_number;

/// token.l's keywords (reserved words: a LUN cannot be named `lun`).
/// ctlpass has its own copy (`src/backend/sysctl.rs`, to quote what it
/// prints); this one is kept apart on purpose, so that the model reading
/// ctlpass's `ctl_conf` back does not share the module's mistakes.
const KEYWORDS: &[&str] = &[
    "alias",
    "auth-group",
    "auth-type",
    "backend",
    "blocksize",
    "chap",
    "chap-mutual",
    "controller",
    "ctl-lun",
    "debug",
    "device-id",
    "device-type",
    "discovery-auth-group",
    "discovery-filter",
    "discovery-tcp",
    "dscp",
    "pcp",
    "foreign",
    "host-address",
    "host-nqn",
    "initiator-name",
    "initiator-portal",
    "listen",
    "listen-iser",
    "lun",
    "maxproc",
    "offload",
    "option",
    "path",
    "pidfile",
    "isns-server",
    "isns-period",
    "isns-timeout",
    "port",
    "portal-group",
    "redirect",
    "serial",
    "size",
    "tag",
    "target",
    "tcp",
    "timeout",
    "transport-group",
    "af11",
    "af12",
    "af13",
    "af21",
    "af22",
    "af23",
    "af31",
    "af32",
    "af33",
    "af41",
    "af42",
    "af43",
    "be",
    "ef",
    "cs0",
    "cs1",
    "cs2",
    "cs3",
    "cs4",
    "cs5",
    "cs6",
    "cs7",
];

/// A token.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    /// A keyword.
    Kw(&'static str),
    /// `STR`.
    Str(String),
    /// `{`.
    Open,
    /// `}`.
    Close,
    /// `;`.
    Semi,
    /// The end of the file.
    Eof,
}

fn is_str_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '@' | '_' | '/' | ':' | '[' | ']')
}

/// The scanner and the parser's state: the token read ahead, flex's
/// `yytext` and `lineno`.
struct Parser<'a, 'l> {
    rest: &'a str,
    lineno: u32,
    yytext: String,
    ahead: Option<Tok>,
    conf: &'a mut Conf,
    log: &'l mut Log,
}

/// Why parsing stopped: a message was logged (yyparse returns 1).
struct Stop;

type Parsed<T = ()> = Result<T, Stop>;

impl Parser<'_, '_> {
    /// `yylex`.
    fn lex(&mut self) -> Tok {
        loop {
            let mut chars = self.rest.chars();
            let Some(c) = chars.next() else {
                self.yytext.clear();
                return Tok::Eof;
            };
            if c == ' ' || c == '\t' {
                self.rest = &self.rest[1..];
                continue;
            }
            if self.rest.starts_with("\r\n") || c == '\n' {
                self.lineno += 1;
                self.rest = &self.rest[if c == '\n' { 1 } else { 2 }..];
                continue;
            }
            if c == '#' {
                let end = self.rest.find('\n').unwrap_or(self.rest.len());
                self.rest = &self.rest[end..];
                continue;
            }
            let (len, tok) = if c == '"'
                && let Some(close) = self.rest[1..].find('"').filter(|&n| n > 0)
            {
                (close + 2, Tok::Str(self.rest[1..close + 1].to_owned()))
            } else if is_str_char(c) {
                let len = self.rest.find(|c: char| !is_str_char(c)).unwrap_or(self.rest.len());
                let word = &self.rest[..len];
                let tok = match KEYWORDS.iter().find(|&&k| k == word) {
                    Some(k) => Tok::Kw(k),
                    None => Tok::Str(word.to_owned()),
                };
                (len, tok)
            } else {
                let len = c.len_utf8();
                let tok = match c {
                    '{' => Tok::Open,
                    '}' => Tok::Close,
                    ';' => Tok::Semi,
                    _ => Tok::Str(c.to_string()),
                };
                (len, tok)
            };
            self.yytext = self.rest[..len].to_owned();
            self.rest = &self.rest[len..];
            return tok;
        }
    }

    fn peek(&mut self) -> &Tok {
        if self.ahead.is_none() {
            self.ahead = Some(self.lex());
        }
        self.ahead.as_ref().unwrap_or(&Tok::Eof)
    }

    fn next(&mut self) -> Tok {
        match self.ahead.take() {
            Some(t) => t,
            None => self.lex(),
        }
    }

    /// `yyerror`.
    fn yyerror(&mut self, what: &str) -> Stop {
        self.log.warnx(format!(
            "error in configuration file at line {} near '{}': {what}",
            self.lineno, self.yytext
        ));
        Stop
    }

    fn syntax_error(&mut self) -> Stop {
        self.peek();
        self.yyerror("syntax error")
    }

    fn string(&mut self) -> Parsed<String> {
        self.peek();
        match self.next() {
            Tok::Str(s) => Ok(s),
            other => {
                self.ahead = Some(other);
                Err(self.syntax_error())
            }
        }
    }

    fn expect(&mut self, tok: Tok) -> Parsed {
        if *self.peek() == tok {
            self.next();
            Ok(())
        } else {
            Err(self.syntax_error())
        }
    }

    /// An action's result: `false` stops the parse (its message is out).
    fn ok(&self, ok: bool) -> Parsed {
        if ok { Ok(()) } else { Err(Stop) }
    }

    /// `expand_number` of a `STR`, or yyerror's "invalid numeric value".
    fn number(&mut self, text: &str) -> Parsed<u64> {
        expand_number(text).map_err(|_| self.yyerror("invalid numeric value"))
    }

    /// `{ entries }` after a block's name: `entry` parses one entry whose
    /// keyword it is given, or says it is not one of the block's.
    fn block(&mut self, mut entry: impl FnMut(&mut Self, &'static str) -> Parsed<bool>) -> Parsed {
        self.expect(Tok::Open)?;
        loop {
            match self.peek().clone() {
                Tok::Close => {
                    self.next();
                    return Ok(());
                }
                Tok::Kw(k) => {
                    self.next();
                    if !entry(self, k)? {
                        self.ahead = Some(Tok::Kw(k));
                        return Err(self.syntax_error());
                    }
                    if *self.peek() == Tok::Semi {
                        self.next();
                    }
                }
                _ => return Err(self.syntax_error()),
            }
        }
    }

    /// `statements`.
    fn statements(&mut self) -> Parsed {
        loop {
            let k = match self.peek().clone() {
                Tok::Eof => return Ok(()),
                Tok::Kw(k) => k,
                _ => return Err(self.syntax_error()),
            };
            self.next();
            match k {
                "debug" => {
                    let s = self.string()?;
                    self.conf.debug = self.number(&s)? as i32;
                }
                "timeout" | "maxproc" | "isns-period" | "isns-timeout" => {
                    let s = self.string()?;
                    self.number(&s)?;
                }
                "pidfile" => {
                    self.string()?;
                    let ok = self.conf.set_pidfile_path(self.log);
                    self.ok(ok)?;
                }
                "isns-server" => {
                    self.string()?;
                }
                "auth-group" => self.auth_group()?,
                "portal-group" => self.portal_group()?,
                "lun" => {
                    let name = self.string()?;
                    let ok = self.conf.add_lun(self.log, &name).is_some();
                    self.ok(ok)?;
                    self.block(|p, k| p.lun_entry(&name, k))?;
                }
                "target" => self.target()?,
                _ => {
                    self.ahead = Some(Tok::Kw(k));
                    return Err(self.syntax_error());
                }
            }
            if *self.peek() == Tok::Semi {
                self.next();
            }
        }
    }

    fn auth_group(&mut self) -> Parsed {
        let name = self.string()?;
        let ok = self.conf.start_auth_group(self.log, &name);
        self.ok(ok)?;
        self.block(|p, k| {
            let strings = match k {
                "auth-type" | "host-address" | "host-nqn" | "initiator-name" | "initiator-portal" => 1,
                "chap" => 2,
                "chap-mutual" => 4,
                _ => return Ok(false),
            };
            for _ in 0..strings {
                p.string()?;
            }
            Ok(true)
        })
    }

    fn portal_group(&mut self) -> Parsed {
        let name = self.string()?;
        let ok = self.conf.start_portal_group(self.log, &name);
        self.ok(ok)?;
        self.block(|p, k| {
            match k {
                "foreign" => {}
                "discovery-auth-group" => {
                    let ag = p.string()?;
                    let ok = p.conf.use_auth_group(p.log, &ag, &name);
                    p.ok(ok)?;
                }
                "discovery-filter" | "listen" | "listen-iser" | "offload" | "redirect" => {
                    p.string()?;
                }
                "option" => {
                    p.string()?;
                    p.string()?;
                }
                "tag" | "pcp" => {
                    let s = p.string()?;
                    p.number(&s)?;
                }
                "dscp" => match p.peek().clone() {
                    Tok::Kw(
                        "be" | "ef" | "cs0" | "cs1" | "cs2" | "cs3" | "cs4" | "cs5" | "cs6" | "cs7" | "af11" | "af12"
                        | "af13" | "af21" | "af22" | "af23" | "af31" | "af32" | "af33" | "af41" | "af42" | "af43",
                    ) => {
                        p.next();
                    }
                    _ => {
                        let s = p.string()?;
                        if s != "0x" {
                            p.number(&s)?;
                        }
                    }
                },
                _ => return Ok(false),
            }
            Ok(true)
        })
    }

    fn target(&mut self) -> Parsed {
        let name = self.string()?;
        let t = self.conf.add_target(self.log, &name);
        let t = t.ok_or(Stop)?;
        self.block(|p, k| p.target_entry(&t, k))
    }

    fn target_entry(&mut self, t: &str, k: &'static str) -> Parsed<bool> {
        match k {
            "alias" => {
                self.string()?;
                let ok = self.conf.set_target_alias(self.log, t);
                self.ok(ok)?;
            }
            "auth-group" => {
                let ag = self.string()?;
                let ok = self.conf.set_target_auth_group(self.log, t, &ag);
                self.ok(ok)?;
            }
            "auth-type" | "chap" | "chap-mutual" | "initiator-name" | "initiator-portal" => {
                let strings = match k {
                    "chap" => 2,
                    "chap-mutual" => 4,
                    _ => 1,
                };
                for _ in 0..strings {
                    self.string()?;
                }
                let ok = self.conf.use_private_auth(self.log, t, k);
                self.ok(ok)?;
            }
            "portal-group" => {
                let pg = self.string()?;
                let ag = match self.peek() {
                    Tok::Str(_) => Some(self.string()?),
                    _ => None,
                };
                let ok = self.conf.add_target_portal_group(self.log, t, &pg, ag.as_deref());
                self.ok(ok)?;
            }
            "port" => {
                let port = self.string()?;
                let ok = self.conf.add_target_port(self.log, t, &port);
                self.ok(ok)?;
            }
            "redirect" => {
                let addr = self.string()?;
                let ok = self.conf.set_target_redirection(self.log, t, &addr);
                self.ok(ok)?;
            }
            "lun" => {
                let number = self.string()?;
                // Bison reads one token ahead to tell `lun N {` from
                // `lun N name`.
                match self.peek().clone() {
                    Tok::Open => {
                        let id = self.number(&number)? as u32;
                        let name = self.conf.start_target_lun(self.log, t, id).ok_or(Stop)?;
                        self.block(|p, k| p.lun_entry(&name, k))?;
                    }
                    Tok::Str(_) => {
                        let lun = self.string()?;
                        let id = self.number(&number)? as u32;
                        let ok = self.conf.add_target_lun(self.log, t, id, &lun);
                        self.ok(ok)?;
                    }
                    _ => return Err(self.syntax_error()),
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn lun_entry(&mut self, name: &str, k: &'static str) -> Parsed<bool> {
        if !matches!(
            k,
            "backend" | "blocksize" | "device-id" | "device-type" | "ctl-lun" | "option" | "path" | "serial" | "size"
        ) {
            return Ok(false);
        }
        let value = self.string()?;
        let number = match k {
            "blocksize" | "ctl-lun" | "size" => self.number(&value)?,
            _ => 0,
        };
        let option_value = if k == "option" { self.string()? } else { String::new() };
        let log = &mut *self.log;
        let lun = self.conf.luns.get_mut(name).ok_or(Stop)?;
        let ok = match k {
            "backend" => lun.set_backend(log, &value),
            "blocksize" => lun.set_blocksize(log, number),
            "ctl-lun" => lun.set_ctl_lun(log, number as u32),
            "device-id" => lun.set_device_id(log, &value),
            "device-type" => lun.set_device_type(log, &value),
            "option" => lun.add_option(log, &value, &option_value),
            "path" => lun.set_path(log, &value),
            "serial" => lun.set_serial(log, &value),
            _ => lun.set_size(log, number),
        };
        self.ok(ok)?;
        Ok(true)
    }
}

/// `parse_conf`: reads `text` into `conf`; `false` once a message says why
/// not.
pub fn parse_conf(text: &str, conf: &mut Conf, log: &mut Log) -> bool {
    let mut p = Parser {
        rest: text,
        lineno: 1,
        yytext: String::new(),
        ahead: None,
        conf,
        log,
    };
    p.statements().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (bool, Conf, Vec<String>) {
        let mut conf = Conf::for_file();
        let mut log = Log::default();
        let ok = parse_conf(text, &mut conf, &mut log);
        (ok, conf, log.lines)
    }

    #[test]
    fn tokens_are_flexs() {
        let (ok, conf, log) =
            parse("lun a { path \"cam=0:1:0\"; option lost remove } # c\r\nlun \"b c\" {\n\tpath da3\n\tsize 1m\n}\n");
        assert!(ok, "{log:?}");
        assert_eq!(conf.luns["a"].path, "cam=0:1:0");
        assert_eq!(conf.luns["a"].options, [("lost".to_string(), "remove".to_string())]);
        assert_eq!(conf.luns["b c"].size, 1 << 20);
    }

    #[test]
    fn errors_say_where_as_ctld_does() {
        let (ok, _, log) = parse("lun a {\n\tpath cam=0:1:0\n}\n");
        assert!(!ok);
        assert_eq!(
            log,
            ["ctld: error in configuration file at line 2 near '=': syntax error"]
        );
        let (_, _, log) = parse("lun a {\n\tsize 1x\n}\n");
        assert_eq!(
            log,
            ["ctld: error in configuration file at line 2 near '1x': invalid numeric value"]
        );
        let (_, _, log) = parse("target iqn.x {\n\tlun z {\n");
        assert_eq!(
            log,
            ["ctld: error in configuration file at line 2 near '{': invalid numeric value"]
        );
        let (_, _, log) = parse("lun a { }\nlun a { }\n");
        assert_eq!(log, ["ctld: duplicated lun \"a\""]);
        let (_, _, log) = parse("lun a {\n");
        assert_eq!(
            log,
            ["ctld: error in configuration file at line 2 near '': syntax error"]
        );
        let (_, _, log) = parse("lun lun { }");
        assert_eq!(
            log,
            ["ctld: error in configuration file at line 1 near 'lun': syntax error"]
        );
    }

    #[test]
    fn target_luns_are_named_after_the_target() {
        let (ok, conf, log) =
            parse("lun d { path da0 }\ntarget IQN.2012-06.com.example:t0 {\n\tlun 0 d\n\tlun 1 { path cd0; }\n}\n");
        assert!(ok, "{log:?}");
        let t = &conf.targets["iqn.2012-06.com.example:t0"];
        assert_eq!(t.luns[&0], "d");
        assert_eq!(t.luns[&1], "iqn.2012-06.com.example:t0,lun,1");
        assert_eq!(
            conf.luns["iqn.2012-06.com.example:t0,lun,1"].scsiname,
            "iqn.2012-06.com.example:t0,lun,1"
        );
        let (_, _, log) = parse("target iqn.x { lun 0 nope }");
        assert_eq!(log, ["ctld: unknown LUN named nope used for target \"iqn.x\""]);
        let (_, _, log) = parse("target iqn.x { lun 1024 { } }");
        assert_eq!(log, ["ctld: LUN 1024 too big for target \"iqn.x\""]);
    }
}
