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

/// Appends `n` in decimal.
///
/// Twenty bytes are appended (a copy of a constant size, inlined, where one of the number's
/// length is a `memcpy` call), the digits written in place, and the rest cut off. (Digits
/// written to a stack array and then copied stall on store forwarding.)
pub fn push_u64(out: &mut Vec<u8>, n: u64) {
    let len = decimal_len(n);
    let start = out.len();
    out.extend_from_slice(&[0; 20]);
    let mut v = n;
    for d in out.iter_mut().skip(start).take(len).rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.truncate(start + len);
}

/// The number of decimal digits of `n` (1 for 0).
fn decimal_len(n: u64) -> usize {
    let mut len = 1;
    let mut bound = 10u64;
    while len < 20 && n >= bound {
        len += 1;
        bound = bound.saturating_mul(10);
    }
    len
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
    Rfc3339::default().write(out, ms);
}

/// The RFC 3339 writer of [`write_rfc3339_ms`], keeping the date of the last day it wrote: a
/// batch answer writes one stamp per status, mostly of the same few days, so the calendar
/// arithmetic is done once per day seen rather than once per stamp.
///
/// Written by hand: the civil date comes from the day number by Howard Hinnant's
/// `civil_from_days` (proleptic Gregorian, as RFC 3339 asks), the time of day by pairs of
/// digits, and the 24 bytes are appended at once.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rfc3339 {
    /// The day (since the epoch) whose `YYYY-MM-DD` is in `date`, if any.
    day: Option<u64>,
    date: [u8; 10],
}

impl Rfc3339 {
    /// Appends `ms` as [`write_rfc3339_ms`] does.
    pub fn write(&mut self, out: &mut Vec<u8>, ms: u64) {
        // 9999-12-31T23:59:59.999Z: four digits of year.
        const MAX_MS: u64 = 253_402_300_799_999;
        const DAY_MS: u64 = 86_400_000;
        let ms = ms.min(MAX_MS);
        let day = ms / DAY_MS;
        // Below 86 400 000: fits a u32, whose divisions are cheaper.
        let in_day = (ms % DAY_MS) as u32;
        if self.day != Some(day) {
            let (y, m, d) = civil_from_days(day);
            let [y0, y1] = pair((y / 100) as u32);
            let [y2, y3] = pair((y % 100) as u32);
            let [m0, m1] = pair(m as u32);
            let [d0, d1] = pair(d as u32);
            self.date = [y0, y1, y2, y3, b'-', m0, m1, b'-', d0, d1];
            self.day = Some(day);
        }
        let (secs, milli) = (in_day / 1000, in_day % 1000);
        let [h0, h1] = pair(secs / 3600);
        let [mi0, mi1] = pair(secs / 60 % 60);
        let [s0, s1] = pair(secs % 60);
        let [ms0, ms1] = pair(milli / 10);
        let ms2 = b'0' + (milli % 10) as u8;
        let [a, b, c, d, e, f, g, h, i, j] = self.date;
        out.extend_from_slice(&[
            a, b, c, d, e, f, g, h, i, j, b'T', h0, h1, b':', mi0, mi1, b':', s0, s1, b'.', ms0,
            ms1, ms2, b'Z',
        ]);
    }
}

/// The two decimal digits of `v % 100`.
fn pair(v: u32) -> [u8; 2] {
    let v = v % 100;
    [b'0' + (v / 10) as u8, b'0' + (v % 10) as u8]
}

/// Year, month (1–12) and day (1–31) of day `days` since 1970-01-01, proleptic Gregorian.
/// (Howard Hinnant, "chrono-Compatible Low-Level Date Algorithms", `civil_from_days`, for
/// non-negative day numbers: eras of 400 years counted from 0000-03-01.)
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
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
        let mut powers: Vec<u64> = (0..20).map(|e| 10u64.pow(e)).collect();
        powers.extend((1..20).map(|e| 10u64.pow(e) - 1));
        for n in [0, 7, 10, 1234567890, u64::MAX].into_iter().chain(powers) {
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
        // Leap days, the ends of months and centuries.
        assert_eq!(f(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(f(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
        assert_eq!(f(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
    }

    proptest::proptest! {
        /// The hand-written formatter says what humantime (which it replaced) says.
        #[test]
        fn timestamps_as_humantime(ms in 0u64..=253_402_300_799_999) {
            let mut v = Vec::new();
            write_rfc3339_ms(&mut v, ms);
            // The same through a writer that last wrote another stamp (of the same day, or not).
            let mut w = Rfc3339::default();
            let mut again = Vec::new();
            w.write(&mut again, ms ^ 1);
            again.clear();
            w.write(&mut again, ms);
            proptest::prop_assert_eq!(&again, &v);
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
            let expected = humantime::format_rfc3339_millis(t).to_string();
            proptest::prop_assert_eq!(String::from_utf8(v).unwrap(), expected);
        }
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
