//! Writers shared by every front end: integers, booleans, RFC 3339 timestamps, JSON string
//! literals and XML character data, each appended to a byte buffer without an intermediate
//! `String`.
//!
//! Architecture Invariant: this is a leaf module. It imports nothing from this crate, so the HTTP
//! connection, the router, the JSON API and SOAP can all use it without importing each other.
//!
//! These functions never fail: anything they are given has a valid rendering (timestamps past
//! year 9999 are clamped, characters XML cannot carry are replaced).

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::time::{Duration, UNIX_EPOCH};

/// Appends `n` in decimal.
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        if let Some(d) = digits.get_mut(i) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(i..).unwrap_or_default());
}

/// `true` or `false`, as JSON and `xs:boolean` spell them.
pub fn bool_str(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

/// Appends `ms` (since the Unix epoch) as RFC 3339 UTC with milliseconds and `Z`, e.g.
/// `2026-11-25T10:00:00.123Z`. Times past year 9999 are clamped to its last millisecond.
pub fn write_rfc3339_ms(out: &mut Vec<u8>, ms: u64) {
    // 9999-12-31T23:59:59.999Z: humantime refuses anything later.
    const MAX_MS: u64 = 253_402_300_799_999;
    let t = UNIX_EPOCH + Duration::from_millis(ms.min(MAX_MS));
    let start = out.len();
    if write!(Bytes(out), "{}", humantime::format_rfc3339_millis(t)).is_err() {
        out.truncate(start);
        out.extend_from_slice(b"9999-12-31T23:59:59.999Z");
    }
}

/// `fmt::Write` into a byte buffer, so formatting needs no intermediate `String`.
struct Bytes<'a>(&'a mut Vec<u8>);

impl fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Appends `s` as a JSON string literal.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(s.as_bytes().get(start..i).unwrap_or_default());
        if esc.is_empty() {
            let hi = HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0');
            let lo = HEX.get(usize::from(b & 0xf)).copied().unwrap_or(b'0');
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', hi, lo]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(s.as_bytes().get(start..).unwrap_or_default());
    out.push(b'"');
}

/// Appends `s` as escaped XML character data, replacing characters XML 1.0 cannot carry (C0
/// controls other than tab, LF and CR; U+FFFE; U+FFFF) by U+FFFD.
pub fn write_xml_text(out: &mut Vec<u8>, s: &str) {
    let legal = |c: char| matches!(c, '\t' | '\n' | '\r' | ' '..='\u{FFFD}' | '\u{10000}'..);
    let clean: Cow<'_, str> = if s.chars().all(legal) {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(
            s.chars()
                .map(|c| if legal(c) { c } else { '\u{FFFD}' })
                .collect(),
        )
    };
    out.extend_from_slice(quick_xml::escape::escape(clean).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers() {
        let mut v = Vec::new();
        for n in [0, 7, 10, 1234567890, u64::MAX] {
            v.clear();
            push_u64(&mut v, n);
            assert_eq!(v, n.to_string().as_bytes());
        }
    }

    #[test]
    fn timestamps() {
        let f = |ms| {
            let mut v = Vec::new();
            write_rfc3339_ms(&mut v, ms);
            String::from_utf8(v).unwrap()
        };
        assert_eq!(f(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(f(1_764_064_800_123), "2025-11-25T10:00:00.123Z");
        assert_eq!(f(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        assert_eq!(f(u64::MAX), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn json_strings() {
        let f = |s: &str| {
            let mut v = Vec::new();
            write_json_str(&mut v, s);
            String::from_utf8(v).unwrap()
        };
        assert_eq!(f(""), r#""""#);
        assert_eq!(
            f("a\"b\\c\n\r\t\u{1}\u{1f}é北\u{2028}"),
            "\"a\\\"b\\\\c\\n\\r\\t\\u0001\\u001fé北\u{2028}\""
        );
        let s = "x\u{0}y\"\u{7f}";
        assert_eq!(serde_json::from_str::<String>(&f(s)).unwrap(), s);
    }
}
