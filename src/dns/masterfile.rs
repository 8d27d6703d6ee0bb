//! Reading RFC 1035 master files: tokens with line numbers, the `$ORIGIN` and `$TTL` directives,
//! owners, TTLs and classes, and every record's data in wire form (see [`crate::dns::rdata_text`]).
//! Errors name the line. Pure: text in, records out; what makes a zone is [`crate::dns::zonefile`].

use hickory_proto::rr::{Name, RecordType};

use crate::dns::rdata_text;

/// One record of a master file, its data in uncompressed wire form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterRecord {
    /// The line the record starts on (1-based).
    pub line: usize,
    pub name: Name,
    pub ttl: u32,
    pub rtype: u16,
    pub rdata: Vec<u8>,
}

/// A bad line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

/// One token: its text (escapes kept as written) and whether it was quoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub text: String,
    pub quoted: bool,
}

/// One logical entry (parentheses join lines): its first line, whether it started with blank
/// space (the owner is the previous one), and its tokens.
struct Entry {
    line: usize,
    blank_owner: bool,
    tokens: Vec<Token>,
}

fn entries(text: &str) -> Result<Vec<Entry>, LineError> {
    let mut out = Vec::new();
    let mut line = 1;
    let mut chars = text.chars().peekable();
    let mut current: Option<Entry> = None;
    let mut depth = 0usize;
    let mut at_line_start = true;
    let err = |line, message: &str| LineError {
        line,
        message: message.into(),
    };
    while let Some(c) = chars.next() {
        match c {
            '\n' => {
                line += 1;
                if depth == 0 {
                    out.extend(current.take().filter(|e| !e.tokens.is_empty()));
                    at_line_start = true;
                }
                continue;
            }
            ';' => {
                while chars.peek().is_some_and(|c| *c != '\n') {
                    chars.next();
                }
                continue;
            }
            _ => {}
        }
        let entry = current.get_or_insert_with(|| Entry {
            line,
            blank_owner: at_line_start && (c == ' ' || c == '\t'),
            tokens: Vec::new(),
        });
        at_line_start = false;
        match c {
            ' ' | '\t' | '\r' => {}
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| err(line, "')' without '('"))?;
            }
            '"' => {
                let start = line;
                let mut text = String::new();
                loop {
                    match chars.next() {
                        None => return Err(err(start, "unterminated quoted string")),
                        Some('"') => break,
                        Some('\\') => {
                            text.push('\\');
                            if let Some(next) = chars.next() {
                                line += usize::from(next == '\n');
                                text.push(next);
                            }
                        }
                        Some(c) => {
                            line += usize::from(c == '\n');
                            text.push(c);
                        }
                    }
                }
                entry.tokens.push(Token { text, quoted: true });
            }
            c => {
                let mut text = String::from(c);
                let mut escaped = c == '\\';
                while let Some(&next) = chars.peek() {
                    if !escaped && matches!(next, ' ' | '\t' | '\r' | '\n' | ';' | '(' | ')' | '"')
                    {
                        break;
                    }
                    escaped = !escaped && next == '\\';
                    text.push(next);
                    chars.next();
                }
                entry.tokens.push(Token {
                    text,
                    quoted: false,
                });
            }
        }
    }
    if depth > 0 {
        let start = current.as_ref().map_or(line, |e| e.line);
        return Err(err(start, "'(' without ')'"));
    }
    out.extend(current.filter(|e| !e.tokens.is_empty()));
    Ok(out)
}

/// A TTL: seconds, or BIND-style units (`1h30m`, `2d`, `1w`).
pub fn parse_ttl(text: &str) -> Option<u32> {
    if let Ok(n) = text.parse::<u32>() {
        return Some(n);
    }
    let mut total: u64 = 0;
    let mut number: Option<u64> = None;
    for c in text.chars() {
        if let Some(d) = c.to_digit(10) {
            number = Some(number.unwrap_or(0) * 10 + d as u64);
            if number > Some(u32::MAX as u64) {
                return None;
            }
            continue;
        }
        let unit = match c.to_ascii_lowercase() {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return None,
        };
        total += number.take()? * unit;
    }
    if number.is_some() {
        return None;
    }
    u32::try_from(total).ok()
}

/// A record type by mnemonic or as `TYPEnnn` (RFC 3597); the reserved types 0 and 65535 (RFC 6895
/// section 3.1) are none: the store uses them as markers.
pub fn parse_type(text: &str) -> Option<u16> {
    let upper = text.to_ascii_uppercase();
    if let Some(n) = upper.strip_prefix("TYPE") {
        return n.parse().ok().filter(|t| !matches!(*t, 0 | 65535));
    }
    match upper.as_str() {
        // Types hickory does not name.
        "LOC" => Some(29),
        "RP" => Some(17),
        "AFSDB" => Some(18),
        "SPF" => Some(99),
        "URI" => Some(256),
        "APL" => Some(42),
        "DNAME" => Some(39),
        "NULL" => Some(10),
        _ => match upper.parse::<RecordType>() {
            Ok(RecordType::Unknown(_)) | Err(_) => None,
            Ok(t) => Some(u16::from(t)),
        },
    }
}

fn is_class(text: &str) -> bool {
    let upper = text.to_ascii_uppercase();
    matches!(upper.as_str(), "IN" | "CH" | "CS" | "HS") || upper.starts_with("CLASS")
}

/// A domain name in a master file: absolute, `@`, or relative to `origin`.
pub fn parse_name(text: &str, origin: Option<&Name>) -> Result<Name, String> {
    if text == "@" {
        return origin.cloned().ok_or_else(|| "@ without an origin".into());
    }
    let name = Name::from_ascii(text).map_err(|e| format!("bad name {text:?}: {e}"))?;
    if name.is_fqdn() {
        return Ok(name);
    }
    let origin = origin.ok_or_else(|| format!("relative name {text:?} without an origin"))?;
    name.append_domain(origin)
        .map_err(|e| format!("bad name {text:?}: {e}"))
}

/// The records of a master file, in file order, and its final origin. `origin` is the starting
/// origin (from the file name); `$ORIGIN` replaces it.
pub fn read(
    text: &str,
    origin: Option<Name>,
) -> Result<(Option<Name>, Vec<MasterRecord>), LineError> {
    let mut origin = origin;
    let mut default_ttl: Option<u32> = None;
    let mut last_ttl: Option<u32> = None;
    let mut owner: Option<Name> = None;
    let mut records = Vec::new();
    for entry in entries(text)? {
        let line = entry.line;
        let fail = |message: String| LineError { line, message };
        let mut tokens = entry.tokens.iter().peekable();
        let first = &entry.tokens[0];
        if !entry.blank_owner && !first.quoted && first.text.starts_with('$') {
            let arg = entry.tokens.get(1).map(|t| t.text.as_str());
            match (first.text.to_ascii_uppercase().as_str(), arg) {
                ("$ORIGIN", Some(arg)) => {
                    let name = parse_name(arg, origin.as_ref()).map_err(fail)?;
                    origin = Some(name);
                }
                ("$TTL", Some(arg)) => {
                    default_ttl =
                        Some(parse_ttl(arg).ok_or_else(|| fail(format!("bad TTL {arg:?}")))?);
                }
                ("$INCLUDE", _) => return Err(fail("$INCLUDE is not supported".into())),
                (directive, _) => return Err(fail(format!("bad directive {directive}"))),
            }
            continue;
        }
        if !entry.blank_owner {
            let t = tokens.next().expect("entries are not empty");
            owner = Some(parse_name(&t.text, origin.as_ref()).map_err(fail)?);
        }
        let name = owner.clone().ok_or_else(|| fail("no owner name".into()))?;
        let mut ttl = None;
        let mut rtype = None;
        for t in tokens.by_ref() {
            if t.text.starts_with(|c: char| c.is_ascii_digit()) && ttl.is_none() {
                ttl =
                    Some(parse_ttl(&t.text).ok_or_else(|| fail(format!("bad TTL {:?}", t.text)))?);
            } else if is_class(&t.text) {
                if !t.text.eq_ignore_ascii_case("IN") {
                    return Err(fail(format!("class {} is not served (only IN)", t.text)));
                }
            } else {
                rtype = Some(
                    parse_type(&t.text)
                        .ok_or_else(|| fail(format!("unknown record type {:?}", t.text)))?,
                );
                break;
            }
        }
        let rtype = rtype.ok_or_else(|| fail("no record type".into()))?;
        let ttl = match ttl {
            Some(ttl) => {
                last_ttl = Some(ttl);
                ttl
            }
            None => default_ttl
                .or(last_ttl)
                .ok_or_else(|| fail("no TTL and no $TTL".into()))?,
        };
        let rdata_tokens: Vec<&Token> = tokens.collect();
        let rdata = rdata_text::encode(rtype, &rdata_tokens, origin.as_ref())
            .map_err(|e| fail(format!("{name} {}: {e}", type_name(rtype))))?;
        records.push(MasterRecord {
            line,
            name,
            ttl,
            rtype,
            rdata,
        });
    }
    Ok((origin, records))
}

/// A type's mnemonic for messages.
pub fn type_name(rtype: u16) -> String {
    match RecordType::from(rtype) {
        RecordType::Unknown(n) => match n {
            17 => "RP".into(),
            18 => "AFSDB".into(),
            29 => "LOC".into(),
            42 => "APL".into(),
            99 => "SPF".into(),
            256 => "URI".into(),
            _ => format!("TYPE{n}"),
        },
        t => t.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Option<Name> {
        Some(Name::from_ascii("acme.com.").unwrap())
    }

    #[test]
    fn parentheses_join_lines_and_comments_are_dropped() {
        let text = "@ 60 IN SOA ns1 host (\n 1 ; serial\n 2 3 4 5 )\nwww A 192.0.2.1 ; c\n";
        let (_, records) = read(text, origin()).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].line, 1);
        assert_eq!(records[1].line, 4);
        assert_eq!(records[1].ttl, 60, "the last explicit TTL");
        assert_eq!(records[1].name.to_ascii(), "www.acme.com.");
    }

    #[test]
    fn blank_owner_repeats_the_previous_one() {
        let text = "$TTL 1h\nwww A 192.0.2.1\n  AAAA 2001:db8::1\n";
        let (_, records) = read(text, origin()).unwrap();
        assert_eq!(records[1].name.to_ascii(), "www.acme.com.");
        assert_eq!(records[1].ttl, 3600);
    }

    #[test]
    fn errors_name_the_line() {
        let text = "$TTL 60\nwww A 192.0.2.1\n\nbad A not-an-address\n";
        let err = read(text, origin()).unwrap_err();
        assert_eq!(err.line, 4, "{err}");
        let err = read("$TTL 60\nx BOGUS 1\n", origin()).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.message.contains("BOGUS"), "{err}");
        let err = read("$TTL 60\nx TXT \"open\n\n", origin()).unwrap_err();
        assert_eq!(err.line, 2);
    }

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("1h30m"), Some(5400));
        assert_eq!(parse_ttl("2D"), Some(172_800));
        assert_eq!(parse_ttl("1x"), None);
        assert_eq!(parse_ttl("5h3"), None);
    }

    #[test]
    fn types_by_mnemonic_and_number() {
        assert_eq!(parse_type("a"), Some(1));
        assert_eq!(parse_type("TYPE65534"), Some(65534));
        assert_eq!(parse_type("TYPE0"), None);
        assert_eq!(parse_type("TYPE65535"), None);
        assert_eq!(parse_type("loc"), Some(29));
        assert_eq!(parse_type("WHAT"), None);
    }
}
