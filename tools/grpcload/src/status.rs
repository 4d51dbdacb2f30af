//! gRPC status codes: names as Go's grpc codes.Code.String() prints them,
//! parsing of grpc-status / grpc-message header values, and the set of
//! statuses that count as a successful call.

use std::borrow::Cow;

/// Names of codes 0..=16, indexed by code.
pub const NAMES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// Name of a status code; unknown codes are "Code(N)".
pub fn status_name(code: u32) -> Cow<'static, str> {
    match NAMES.get(code as usize) {
        Some(n) => Cow::Borrowed(n),
        None => Cow::Owned(format!("Code({code})")),
    }
}

/// Parses a status given by name (case-insensitive, Go spelling; "Cancelled"
/// is accepted too), by number, or as "Code(N)".
pub fn parse_status(s: &str) -> Option<u32> {
    let t = s.trim();
    if let Ok(n) = t.parse::<u32>() {
        return Some(n);
    }
    if let Some(inner) = t.strip_prefix("Code(").and_then(|r| r.strip_suffix(')')) {
        return inner.trim().parse().ok();
    }
    if t.eq_ignore_ascii_case("cancelled") {
        return Some(1);
    }
    let norm: String = t.chars().filter(|c| *c != '_').collect();
    NAMES.iter().position(|n| n.eq_ignore_ascii_case(&norm)).map(|p| p as u32)
}

/// Parses a grpc-status header value (ASCII decimal) without allocating.
pub fn parse_status_value(v: &[u8]) -> Option<u32> {
    if v.is_empty() || v.len() > 9 {
        return None;
    }
    let mut n: u32 = 0;
    for &b in v {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + (b - b'0') as u32;
    }
    Some(n)
}

/// Decodes a grpc-message value (percent-encoded UTF-8).
pub fn decode_grpc_message(v: &[u8]) -> String {
    if !v.contains(&b'%') {
        return String::from_utf8_lossy(v).into_owned();
    }
    let hex = |b: u8| -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    };
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%' && i + 2 < v.len() {
            if let (Some(h), Some(l)) = (hex(v[i + 1]), hex(v[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(v[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The statuses that make a call successful (--ok-status).
#[derive(Debug, Clone)]
pub struct OkSet {
    known: [bool; 17],
    other: Vec<u32>,
}

impl OkSet {
    /// Parses a comma-separated list of status names or numbers.
    pub fn parse(list: &str) -> Result<OkSet, String> {
        let mut set = OkSet { known: [false; 17], other: Vec::new() };
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let code = parse_status(item).ok_or_else(|| format!("--ok-status: unknown status {item:?}"))?;
            set.insert(code);
        }
        if set.known.iter().all(|k| !k) && set.other.is_empty() {
            return Err("--ok-status: empty list".into());
        }
        Ok(set)
    }

    pub fn insert(&mut self, code: u32) {
        match self.known.get_mut(code as usize) {
            Some(k) => *k = true,
            None => self.other.push(code),
        }
    }

    #[inline]
    pub fn contains(&self, code: u32) -> bool {
        match self.known.get(code as usize) {
            Some(k) => *k,
            None => self.other.contains(&code),
        }
    }
}

impl Default for OkSet {
    fn default() -> Self {
        let mut s = OkSet { known: [false; 17], other: Vec::new() };
        s.insert(0);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_go() {
        let expect = [
            (0, "OK"),
            (1, "Canceled"),
            (2, "Unknown"),
            (3, "InvalidArgument"),
            (4, "DeadlineExceeded"),
            (5, "NotFound"),
            (6, "AlreadyExists"),
            (7, "PermissionDenied"),
            (8, "ResourceExhausted"),
            (9, "FailedPrecondition"),
            (10, "Aborted"),
            (11, "OutOfRange"),
            (12, "Unimplemented"),
            (13, "Internal"),
            (14, "Unavailable"),
            (15, "DataLoss"),
            (16, "Unauthenticated"),
        ];
        for (c, n) in expect {
            assert_eq!(status_name(c), n);
            assert_eq!(parse_status(n), Some(c));
        }
        assert_eq!(status_name(17), "Code(17)");
        assert_eq!(status_name(1234), "Code(1234)");
    }

    #[test]
    fn parse_names_numbers_and_code_form() {
        assert_eq!(parse_status("notfound"), Some(5));
        assert_eq!(parse_status("NOT_FOUND"), Some(5));
        assert_eq!(parse_status("Cancelled"), Some(1));
        assert_eq!(parse_status("12"), Some(12));
        assert_eq!(parse_status("Code(42)"), Some(42));
        assert_eq!(parse_status("Bogus"), None);
    }

    #[test]
    fn header_values() {
        assert_eq!(parse_status_value(b"0"), Some(0));
        assert_eq!(parse_status_value(b"16"), Some(16));
        assert_eq!(parse_status_value(b""), None);
        assert_eq!(parse_status_value(b"1x"), None);
        assert_eq!(parse_status_value(b"-1"), None);
        assert_eq!(decode_grpc_message(b"note not found"), "note not found");
        assert_eq!(decode_grpc_message(b"50%25 off%0A"), "50% off\n");
        assert_eq!(decode_grpc_message(b"caf%C3%A9"), "caf\u{e9}");
        assert_eq!(decode_grpc_message(b"bad %zz and %4"), "bad %zz and %4");
    }

    #[test]
    fn ok_set() {
        let s = OkSet::parse("OK, NotFound").unwrap();
        assert!(s.contains(0) && s.contains(5) && !s.contains(2) && !s.contains(99));
        let d = OkSet::default();
        assert!(d.contains(0) && !d.contains(5));
        let o = OkSet::parse("Code(77)").unwrap();
        assert!(o.contains(77) && !o.contains(0));
        assert!(OkSet::parse("Nope").is_err());
        assert!(OkSet::parse(" , ").is_err());
    }
}
