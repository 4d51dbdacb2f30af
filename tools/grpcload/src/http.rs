//! HTTP/1.1 pieces of httpload that need no I/O: the body pool (identical to
//! blackhole.py's `body_for`), request building into a reused buffer, and an
//! incremental response parser (status line, headers, Content-Length or
//! chunked body, split anywhere across reads).

use std::sync::Arc;

/// Size of the body pool: 1,048,576 little-endian xorshift32 words.
pub const POOL_BYTES: usize = 4 << 20;
/// xorshift32 seed of the pool (blackhole.py POOL_SEED).
pub const POOL_SEED: u32 = 2463534242;
/// The offset into the pool is taken modulo POOL_BYTES - this (blackhole.py LOAD_BODY).
pub const LOAD_BODY: usize = 2048;
/// A response head larger than this is a "bad response".
pub const MAX_HEAD: usize = 64 << 10;

/// The 4 MiB pool of xorshift32 output (Marsaglia's 13/17/5). Each word is the
/// state after the three steps, stored little-endian.
pub fn make_pool() -> Vec<u8> {
    let mut out = Vec::with_capacity(POOL_BYTES);
    let mut x = POOL_SEED;
    for _ in 0..POOL_BYTES / 4 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// Appends the body of request (c, n) whose id is `id`: the id, a colon, and
/// pool bytes from offset (n*4099 + c*65537) mod (POOL_BYTES - 2048), wrapping
/// to the pool's start if needed, `size` bytes in all. Byte-identical to
/// blackhole.py `body_for(id, size)` (its "tid" is c).
pub fn put_body(out: &mut Vec<u8>, pool: &[u8], id: &[u8], c: u64, n: u64, size: usize) {
    let head = id.len() + 1;
    if size <= head {
        let take = size.min(id.len());
        out.extend_from_slice(&id[..take]);
        if size == head {
            out.push(b':');
        }
        return;
    }
    out.extend_from_slice(id);
    out.push(b':');
    let m = (POOL_BYTES - LOAD_BODY) as u64;
    let off = ((n % m) * 4099 + (c % m) * 65537) % m;
    let mut off = off as usize;
    let mut rest = size - head;
    while rest > 0 {
        let take = rest.min(pool.len() - off);
        out.extend_from_slice(&pool[off..off + take]);
        rest -= take;
        off = 0;
    }
}

/// Appends the decimal form of `v` without going through fmt.
#[inline]
pub fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(Vec<u8>),
    Conn,
    N,
    Id,
    Nonce,
}

/// A path template with `{conn}`, `{n}`, `{id}` and `{nonce}` placeholders.
#[derive(Debug, Clone)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    pub fn parse(s: &str) -> Result<Template, String> {
        if s.is_empty() || s.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(format!("--path {s:?}: must be non-empty, without spaces or control characters"));
        }
        let mut parts = Vec::new();
        let mut lit = Vec::new();
        let mut rest = s;
        while let Some(i) = rest.find('{') {
            let after = &rest[i..];
            let found = [("{conn}", Part::Conn), ("{n}", Part::N), ("{id}", Part::Id), ("{nonce}", Part::Nonce)]
                .into_iter()
                .find(|(k, _)| after.starts_with(k));
            match found {
                Some((k, p)) => {
                    lit.extend_from_slice(&rest.as_bytes()[..i]);
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    }
                    parts.push(p);
                    rest = &rest[i + k.len()..];
                }
                None => {
                    lit.extend_from_slice(&rest.as_bytes()[..=i]);
                    rest = &rest[i + 1..];
                }
            }
        }
        lit.extend_from_slice(rest.as_bytes());
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Template { parts })
    }

    #[inline]
    pub fn put(&self, out: &mut Vec<u8>, c: u64, n: u64, id: &[u8], nonce: &[u8]) {
        for p in &self.parts {
            match p {
                Part::Lit(b) => out.extend_from_slice(b),
                Part::Conn => push_u64(out, c),
                Part::N => push_u64(out, n),
                Part::Id => out.extend_from_slice(id),
                Part::Nonce => out.extend_from_slice(nonce),
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyMode {
    /// id + ":" + pool slice, `body_bytes` long.
    Pool,
    /// No body.
    None,
}

/// Everything needed to build request (c, n); shared read-only by all threads.
#[derive(Debug)]
pub struct RequestSpec {
    pub method: String,
    pub template: Template,
    /// `Host: <target>\r\n`
    host_line: Vec<u8>,
    /// `<name>: ` of the id header, if any.
    id_header: Option<Vec<u8>>,
    /// Every --header as `Name: value\r\n`, concatenated.
    extra: Vec<u8>,
    pub body: BodyMode,
    pub body_bytes: usize,
    pub nonce: String,
    pub pool: Arc<Vec<u8>>,
    /// The method's response never has a body (HEAD).
    pub head_request: bool,
}

impl RequestSpec {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        method: &str,
        path: &str,
        host: &str,
        id_header: Option<&str>,
        headers: &[String],
        body: BodyMode,
        body_bytes: usize,
        nonce: &str,
    ) -> Result<RequestSpec, String> {
        let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
        if !token(method) {
            return Err(format!("--method {method:?}: not an HTTP method token"));
        }
        if let Some(h) = id_header {
            if !token(h) {
                return Err(format!("--id-header {h:?}: not a header name"));
            }
        }
        if nonce.is_empty() || nonce.bytes().any(|b| !b.is_ascii_graphic() || b == b'/' || b == b'?' || b == b'#') {
            return Err(format!("--nonce {nonce:?}: use visible ASCII without / ? #"));
        }
        let mut extra = Vec::new();
        for h in headers {
            let (name, value) = h.split_once(':').ok_or_else(|| format!("--header {h:?}: expected 'Name: value'"))?;
            let (name, value) = (name.trim(), value.trim());
            if !token(name) || value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                return Err(format!("--header {h:?}: bad name or value"));
            }
            let lname = name.to_ascii_lowercase();
            if lname == "content-length" || lname == "transfer-encoding" || lname == "host" {
                return Err(format!("--header {h:?}: {name} is set by httpload"));
            }
            extra.extend_from_slice(name.as_bytes());
            extra.extend_from_slice(b": ");
            extra.extend_from_slice(value.as_bytes());
            extra.extend_from_slice(b"\r\n");
        }
        let pool = Arc::new(if body == BodyMode::Pool && body_bytes > 0 { make_pool() } else { Vec::new() });
        Ok(RequestSpec {
            method: method.to_string(),
            template: Template::parse(path)?,
            host_line: format!("Host: {host}\r\n").into_bytes(),
            id_header: id_header.map(|h| format!("{h}: ").into_bytes()),
            extra,
            body,
            body_bytes: if body == BodyMode::Pool { body_bytes } else { 0 },
            nonce: nonce.to_string(),
            pool,
            head_request: method.eq_ignore_ascii_case("HEAD"),
        })
    }

    fn sends_empty_length(&self) -> bool {
        matches!(self.method.as_str(), "POST" | "PUT" | "PATCH")
    }

    /// Writes request (c, n) into `out` (cleared first); `id` is scratch for
    /// the id. Returns nothing: `out` holds the complete request.
    #[inline]
    pub fn build(&self, out: &mut Vec<u8>, id: &mut Vec<u8>, c: u64, n: u64) {
        id.clear();
        id.extend_from_slice(self.nonce.as_bytes());
        id.push(b'-');
        push_u64(id, c);
        id.push(b'-');
        push_u64(id, n);
        out.clear();
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        self.template.put(out, c, n, id, self.nonce.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        out.extend_from_slice(&self.host_line);
        if let Some(h) = &self.id_header {
            out.extend_from_slice(h);
            out.extend_from_slice(id);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(&self.extra);
        match self.body {
            BodyMode::Pool => {
                out.extend_from_slice(b"Content-Length: ");
                push_u64(out, self.body_bytes as u64);
                out.extend_from_slice(b"\r\n\r\n");
                put_body(out, &self.pool, id, c, n, self.body_bytes);
            }
            BodyMode::None => {
                if self.sends_empty_length() {
                    out.extend_from_slice(b"Content-Length: 0\r\n");
                }
                out.extend_from_slice(b"\r\n");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Response parsing

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body (1xx, 204, 304, answer to HEAD, or Content-Length: 0).
    Empty,
    Length(u64),
    Chunked,
    /// Neither length nor chunked: the body ends when the server closes.
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Bytes of the status line and headers, the blank line included.
    pub len: usize,
    pub status: u16,
    pub body: BodyKind,
    /// The connection must be closed after this answer.
    pub close: bool,
}

/// The error kind of a malformed answer.
pub const BAD: &str = "bad response";

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', r @ ..] = s {
        s = r;
    }
    while let [r @ .., b' ' | b'\t'] = s {
        s = r;
    }
    s
}

fn has_token(value: &[u8], token: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|t| trim(t).eq_ignore_ascii_case(token))
}

/// Parses a response head at the start of `buf`. Ok(None): incomplete (read
/// more). `head_request`: the request was HEAD, so no body follows.
pub fn parse_head(buf: &[u8], head_request: bool) -> Result<Option<Head>, &'static str> {
    // the end of the head: the first empty line (CRLF CRLF, or bare LF LF)
    let mut end = None;
    let mut i = 0;
    while let Some(p) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + p;
        let next = &buf[nl + 1..];
        if next.first() == Some(&b'\n') {
            end = Some(nl + 2);
            break;
        }
        if next.len() >= 2 && next[0] == b'\r' && next[1] == b'\n' {
            end = Some(nl + 3);
            break;
        }
        if next.is_empty() || (next.len() == 1 && next[0] == b'\r') {
            break;
        }
        i = nl + 1;
    }
    let Some(len) = end else {
        if buf.len() >= MAX_HEAD {
            return Err(BAD);
        }
        // reject obvious garbage early rather than waiting for 64 KiB
        let n = buf.len().min(7);
        if buf[..n] != b"HTTP/1."[..n] {
            return Err(BAD);
        }
        return Ok(None);
    };
    let mut lines = buf[..len].split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line = lines.next().ok_or(BAD)?;
    // HTTP/1.x SSS[ reason]
    if status_line.len() < 12 || &status_line[..7] != b"HTTP/1." || status_line[8] != b' ' {
        return Err(BAD);
    }
    let minor = status_line[7];
    if !minor.is_ascii_digit() {
        return Err(BAD);
    }
    let code = &status_line[9..12];
    if !code.iter().all(u8::is_ascii_digit) || (status_line.len() > 12 && status_line[12] != b' ') {
        return Err(BAD);
    }
    let status = code.iter().fold(0u16, |a, &d| a * 10 + (d - b'0') as u16);
    if status < 100 {
        return Err(BAD);
    }
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut other_te = false;
    let mut close = minor == b'0';
    for line in lines {
        if line.is_empty() {
            break;
        }
        let colon = line.iter().position(|&b| b == b':').ok_or(BAD)?;
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.is_empty() || name.iter().any(|&b| b == b' ' || b == b'\t') {
            return Err(BAD);
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
                return Err(BAD);
            }
            let v = value.iter().fold(0u64, |a, &d| a * 10 + (d - b'0') as u64);
            if content_length.is_some_and(|c| c != v) {
                return Err(BAD);
            }
            content_length = Some(v);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // chunked must be the last coding
            let last = value.rsplit(|&b| b == b',').next().map(trim).unwrap_or(b"");
            if last.eq_ignore_ascii_case(b"chunked") {
                chunked = true;
                other_te = false;
            } else {
                chunked = false;
                other_te = true;
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            if has_token(value, b"close") {
                close = true;
            } else if has_token(value, b"keep-alive") && minor == b'0' {
                close = false;
            }
        }
    }
    let body = if (100..200).contains(&status) || status == 204 || status == 304 || head_request {
        BodyKind::Empty
    } else if chunked {
        BodyKind::Chunked
    } else if other_te {
        BodyKind::UntilClose
    } else {
        match content_length {
            Some(0) => BodyKind::Empty,
            Some(n) => BodyKind::Length(n),
            None => BodyKind::UntilClose,
        }
    };
    if body == BodyKind::UntilClose {
        close = true;
    }
    Ok(Some(Head { len, status, body, close }))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading the hex size; `digits` seen so far, `ext` after a ';' or blank.
    Size { val: u64, digits: u8, ext: bool },
    SizeLf { val: u64 },
    Data(u64),
    DataCr,
    DataLf,
    /// Trailer section: bytes on the current line.
    Trailer { len: u64 },
    TrailerLf { len: u64 },
}

/// Consumes a response body as it arrives, without keeping it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyReader {
    Done,
    Length(u64),
    Chunked(ChunkState),
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkState(Chunk);

impl BodyReader {
    pub fn new(kind: BodyKind) -> BodyReader {
        match kind {
            BodyKind::Empty => BodyReader::Done,
            BodyKind::Length(n) => BodyReader::Length(n),
            BodyKind::Chunked => BodyReader::Chunked(ChunkState(Chunk::Size { val: 0, digits: 0, ext: false })),
            BodyKind::UntilClose => BodyReader::UntilClose,
        }
    }

    pub fn is_done(&self) -> bool {
        *self == BodyReader::Done
    }

    /// Consumes body bytes from `buf`; returns how many were used. When the
    /// body is complete the state is Done and the rest of `buf` is left.
    pub fn feed(&mut self, buf: &[u8]) -> Result<usize, &'static str> {
        match self {
            BodyReader::Done => Ok(0),
            BodyReader::UntilClose => Ok(buf.len()),
            BodyReader::Length(n) => {
                let take = (*n).min(buf.len() as u64);
                *n -= take;
                if *n == 0 {
                    *self = BodyReader::Done;
                }
                Ok(take as usize)
            }
            BodyReader::Chunked(ChunkState(st)) => {
                let mut i = 0;
                while i < buf.len() {
                    let b = buf[i];
                    *st = match *st {
                        Chunk::Data(rem) => {
                            let take = rem.min((buf.len() - i) as u64);
                            i += take as usize;
                            let rem = rem - take;
                            if rem == 0 {
                                Chunk::DataCr
                            } else {
                                Chunk::Data(rem)
                            }
                        }
                        Chunk::Size { val, digits, ext } => {
                            i += 1;
                            match b {
                                b'\r' if digits == 0 => return Err(BAD),
                                b'\r' => Chunk::SizeLf { val },
                                b'\n' => {
                                    if digits == 0 {
                                        return Err(BAD);
                                    }
                                    if val == 0 {
                                        Chunk::Trailer { len: 0 }
                                    } else {
                                        Chunk::Data(val)
                                    }
                                }
                                _ if ext => Chunk::Size { val, digits, ext },
                                b';' | b' ' | b'\t' => {
                                    if digits == 0 {
                                        return Err(BAD);
                                    }
                                    Chunk::Size { val, digits, ext: true }
                                }
                                _ => {
                                    let d = (b as char).to_digit(16).ok_or(BAD)? as u64;
                                    if digits >= 15 {
                                        return Err(BAD);
                                    }
                                    Chunk::Size { val: val * 16 + d, digits: digits + 1, ext }
                                }
                            }
                        }
                        Chunk::SizeLf { val } => {
                            i += 1;
                            if b != b'\n' {
                                return Err(BAD);
                            }
                            if val == 0 {
                                Chunk::Trailer { len: 0 }
                            } else {
                                Chunk::Data(val)
                            }
                        }
                        Chunk::DataCr => {
                            i += 1;
                            match b {
                                b'\r' => Chunk::DataLf,
                                b'\n' => Chunk::Size { val: 0, digits: 0, ext: false },
                                _ => return Err(BAD),
                            }
                        }
                        Chunk::DataLf => {
                            i += 1;
                            if b != b'\n' {
                                return Err(BAD);
                            }
                            Chunk::Size { val: 0, digits: 0, ext: false }
                        }
                        Chunk::Trailer { len } => {
                            i += 1;
                            match b {
                                b'\r' => Chunk::TrailerLf { len },
                                b'\n' if len == 0 => {
                                    *self = BodyReader::Done;
                                    return Ok(i);
                                }
                                b'\n' => Chunk::Trailer { len: 0 },
                                _ => {
                                    if len > MAX_HEAD as u64 {
                                        return Err(BAD);
                                    }
                                    Chunk::Trailer { len: len + 1 }
                                }
                            }
                        }
                        Chunk::TrailerLf { len } => {
                            i += 1;
                            if b != b'\n' {
                                return Err(BAD);
                            }
                            if len == 0 {
                                *self = BodyReader::Done;
                                return Ok(i);
                            }
                            Chunk::Trailer { len: 0 }
                        }
                    };
                }
                Ok(i)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fnv(d: &[u8]) -> u64 {
        let mut h: u64 = 0xcbf29ce484222325;
        for &b in d {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        h
    }

    // Expected values computed with scenarios/blackhole/blackhole.py:
    // pool()[:16], body_for(id, size), and FNV-1a 64 of the bytes.
    #[test]
    fn pool_and_bodies_match_blackhole_py() {
        let pool = make_pool();
        assert_eq!(pool.len(), POOL_BYTES);
        let w = |i: usize| u32::from_le_bytes(pool[i * 4..i * 4 + 4].try_into().unwrap());
        assert_eq!([w(0), w(1), w(2), w(3)], [723471715, 2497366906, 2064144800, 2008045182]);
        assert_eq!(w(POOL_BYTES / 4 - 1), 1871819548);
        assert_eq!(fnv(&pool), 0x6087d962b8b4aa8e);

        let body = |id: &str, c: u64, n: u64, size: usize| {
            let mut out = Vec::new();
            put_body(&mut out, &pool, id.as_bytes(), c, n, size);
            out
        };
        let b = body("abc123-3-7", 3, 7, 2048);
        assert_eq!(b.len(), 2048);
        assert_eq!(&b[..24], b"abc123-3-7:\xbf\xa21\xd0\x0c!\xa0h\xcc~\xb3\xfcY");
        assert_eq!(b[2040..], [0xb1, 0xf7, 0x72, 0x46, 0xe3, 0xb9, 0x1d, 0x6e]);
        assert_eq!(fnv(&b), 0x257af42f29272ecb);
        let b = body("abc123-0-1", 0, 1, 2048);
        assert_eq!(&b[..24], b"abc123-0-1:\x12o\xd2\xdc\xb9GW\xb5Q\xc9\x97\xe4\x90");
        assert_eq!(fnv(&b), 0x50b4f43755ac22ac);
        assert_eq!(body("nonce-12-345678", 12, 345678, 5), b"nonce");
        assert_eq!(body("ab-1-2", 1, 2, 7), b"ab-1-2:");
        assert_eq!(body("ab-1-2", 1, 2, 0), b"");
        // larger than the pool: wraps around to the pool's start
        let b = body("zz-1-1023", 1, 1023, POOL_BYTES + 1000);
        assert_eq!(b.len(), POOL_BYTES + 1000);
        assert_eq!(&b[..11], b"zz-1-1023:\n");
        assert_eq!(fnv(&b), 0x25beecf3c978a4a4);
    }

    #[test]
    fn numbers() {
        for v in [0u64, 7, 10, 99, 100, 12345, u64::MAX] {
            let mut o = Vec::new();
            push_u64(&mut o, v);
            assert_eq!(o, v.to_string().into_bytes());
        }
    }

    #[test]
    fn builds_requests() {
        let spec = RequestSpec::new(
            "POST",
            "/bh/{conn}/{n}?id={id}&x={nonce}{z}",
            "127.0.0.1:8080",
            Some("X-Request-ID"),
            &["X-A: b c".to_string()],
            BodyMode::Pool,
            2048,
            "abc123",
        )
        .unwrap();
        let (mut out, mut id) = (Vec::new(), Vec::new());
        spec.build(&mut out, &mut id, 3, 7);
        let head = b"POST /bh/3/7?id=abc123-3-7&x=abc123{z} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\
X-Request-ID: abc123-3-7\r\nX-A: b c\r\nContent-Length: 2048\r\n\r\n";
        assert_eq!(&out[..head.len()], &head[..]);
        assert_eq!(out.len(), head.len() + 2048);
        assert_eq!(fnv(&out[head.len()..]), 0x257af42f29272ecb);
        // the buffer is reused
        spec.build(&mut out, &mut id, 0, 1);
        assert!(out.starts_with(b"POST /bh/0/1?id=abc123-0-1&"));
        assert_eq!(fnv(&out[out.len() - 2048..]), 0x50b4f43755ac22ac);

        let spec = RequestSpec::new("POST", "/x", "h:1", None, &[], BodyMode::None, 2048, "n").unwrap();
        spec.build(&mut out, &mut id, 0, 1);
        assert_eq!(out, b"POST /x HTTP/1.1\r\nHost: h:1\r\nContent-Length: 0\r\n\r\n");
        let spec = RequestSpec::new("GET", "/{id}", "h:1", None, &[], BodyMode::None, 0, "n").unwrap();
        spec.build(&mut out, &mut id, 2, 9);
        assert_eq!(out, b"GET /n-2-9 HTTP/1.1\r\nHost: h:1\r\n\r\n");
        assert!(RequestSpec::new("PO ST", "/", "h", None, &[], BodyMode::None, 0, "n").is_err());
        assert!(RequestSpec::new("GET", "/a b", "h", None, &[], BodyMode::None, 0, "n").is_err());
        assert!(RequestSpec::new("GET", "/", "h", None, &["nocolon".into()], BodyMode::None, 0, "n").is_err());
        assert!(RequestSpec::new("GET", "/", "h", None, &["Content-Length: 3".into()], BodyMode::None, 0, "n").is_err());
    }

    /// Feeds `data` in pieces of `step` bytes; returns (status, close, bytes used).
    fn parse_split(data: &[u8], step: usize, head_req: bool) -> Result<(u16, bool, usize, BodyKind), &'static str> {
        let mut avail = 0;
        let head = loop {
            avail = (avail + step).min(data.len());
            match parse_head(&data[..avail], head_req)? {
                Some(h) => break h,
                None if avail == data.len() => return Err("incomplete head"),
                None => {}
            }
        };
        let mut body = BodyReader::new(head.body);
        let mut pos = head.len;
        while !body.is_done() {
            if pos >= avail {
                if avail == data.len() {
                    if body == BodyReader::UntilClose {
                        return Ok((head.status, head.close, data.len(), head.body));
                    }
                    return Err("incomplete body");
                }
                avail = (avail + step).min(data.len());
            }
            pos += body.feed(&data[pos..avail])?;
        }
        Ok((head.status, head.close, pos, head.body))
    }

    #[test]
    fn parses_responses_split_anywhere() {
        let cases: Vec<(&[u8], u16, bool)> = vec![
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 200, false),
            (b"HTTP/1.1 200 OK\r\nServer: x\r\ncontent-length:0\r\n\r\n", 200, false),
            (b"HTTP/1.1 413 Request Entity Too Large\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc", 413, true),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\n",
                200,
                false,
            ),
            (b"HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n0\r\n\r\n", 200, false),
            (b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n", 204, false),
            (b"HTTP/1.1 304 Not Modified\r\n\r\n", 304, false),
            (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, true),
            (b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok", 200, false),
            (b"HTTP/1.1 200 OK\r\nConnection: foo, Close\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 200, true),
            (b"HTTP/1.1 200\r\nContent-Length: 1\r\n\r\nx", 200, false),
            (b"HTTP/1.1 200 OK\nContent-Length: 1\n\nx", 200, false),
        ];
        for (data, status, close) in cases {
            // the bytes of a next answer after this one must be left alone
            let mut d = data.to_vec();
            d.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
            for step in [1, 2, 3, 7, 1000] {
                let what = format!("{:?} step {step}", String::from_utf8_lossy(data));
                let r = parse_split(data, step, false).unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!((r.0, r.1, r.2), (status, close, data.len()), "{what}");
                let r = parse_split(&d, step, false).unwrap_or_else(|e| panic!("{what} + next: {e}"));
                assert_eq!(r.2, data.len(), "{what} + next");
            }
        }
        // a body until close
        let r = parse_split(b"HTTP/1.1 200 OK\r\n\r\nsome body", 4, false).unwrap();
        assert_eq!((r.0, r.1, r.3), (200, true, BodyKind::UntilClose));
        // HEAD: no body whatever Content-Length says
        let r = parse_split(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", 5, true).unwrap();
        assert_eq!((r.0, r.2, r.3), (200, 39, BodyKind::Empty));
        // the chunked reader stops exactly at the end of the body
        let d = b"3\r\nabc\r\n0\r\n\r\nHTTP";
        let mut b = BodyReader::new(BodyKind::Chunked);
        assert_eq!(b.feed(d), Ok(d.len() - 4));
        assert!(b.is_done());
    }

    #[test]
    fn rejects_bad_responses() {
        for bad in [
            &b"HTTP/2 200 OK\r\n\r\n"[..],
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"hello world\r\n\r\n",
            b"garbage",
        ] {
            assert_eq!(parse_head(bad, false), Err(BAD), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nA: b\r\n", false), Ok(None));
        assert_eq!(parse_head(b"HTT", false), Ok(None));
        for bad_chunks in [&b"zz\r\n"[..], b"\r\n", b"3\r\nabcX", b"3\r\nabc\rX", b"1\nx\r\n0\r\nA\rB"] {
            let mut b = BodyReader::new(BodyKind::Chunked);
            assert_eq!(b.feed(bad_chunks), Err(BAD), "{:?}", String::from_utf8_lossy(bad_chunks));
        }
    }
}
