//! WebSocket pieces without I/O, shared by wsload (the client) and ws-null
//! (the reference echo server): the opening handshake (RFC 6455 section 4,
//! with SHA-1 and base64 for Sec-WebSocket-Accept), frame headers, masking,
//! and wsload's messages, which are derived from (connection, sequence) so
//! that every echo can be checked byte for byte without keeping a copy.

use std::borrow::Cow;

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// The GUID of RFC 6455 section 1.3.
pub const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// An opening-handshake answer larger than this is refused.
pub const MAX_HANDSHAKE: usize = 16 << 10;

// ---------------------------------------------------------------------------
// SHA-1 (FIPS 180-4) and base64 (RFC 4648), only for the handshake

/// One read(2) from a socket tokio watches. `Some(n)`: n bytes (0: end of
/// stream); `None`: nothing there.
///
/// A read that fills less than the space offered has drained the socket: it
/// is reported to tokio as WouldBlock (its bytes kept), which clears the
/// readiness and spares the next read, which would only return EAGAIN (one
/// syscall in three of an echo). tokio clears only the readiness it handed
/// out, so data that arrives meanwhile is a new event and wakes the task.
pub fn read_once(s: &tokio::net::TcpStream, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
    use std::os::fd::AsRawFd;
    let space = buf.len();
    let mut got = None;
    let r = s.try_io(tokio::io::Interest::READABLE, || {
        // SAFETY: buf is valid for writes of buf.len() bytes.
        let n = unsafe { libc::recv(s.as_raw_fd(), buf.as_mut_ptr().cast(), space, 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = n as usize;
        got = Some(n);
        if n > 0 && n < space {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        Ok(())
    });
    match r {
        Ok(()) => Ok(got),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(got),
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0];
    let mut msg = data.to_vec();
    let bits = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bits.to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a.rotate_left(5).wrapping_add(f).wrapping_add(e).wrapping_add(k).wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (i, x) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}

pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for ch in data.chunks(3) {
        let n = (ch[0] as u32) << 16 | (*ch.get(1).unwrap_or(&0) as u32) << 8 | *ch.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= ch.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Sec-WebSocket-Accept for a Sec-WebSocket-Key.
pub fn accept_for(key: &[u8]) -> String {
    let mut v = key.to_vec();
    v.extend_from_slice(GUID);
    base64(&sha1(&v))
}

// ---------------------------------------------------------------------------
// Opening handshake

/// A client's 16-byte nonce, base64-encoded, from a 64-bit seed.
pub fn client_key(seed: u64) -> String {
    let mut x = seed | 1;
    let mut b = [0u8; 16];
    for chunk in b.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    base64(&b)
}

/// Appends a client's opening handshake (no extension, no subprotocol).
pub fn put_handshake(out: &mut Vec<u8>, host: &str, path: &str, key: &str) {
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\r\nSec-WebSocket-Version: 13\r\nUser-Agent: wsload/");
    out.extend_from_slice(crate::VERSION.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

fn header_has_token(value: &str, token: &str) -> bool {
    value.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Checks a server's answer to the opening handshake. Ok(None): incomplete;
/// Ok(Some(n)): valid, the head is n bytes long (frames may follow it).
pub fn check_handshake_answer(buf: &[u8], key: &str) -> Result<Option<usize>, Cow<'static, str>> {
    let Some(end) = find_head_end(buf) else {
        if buf.len() > MAX_HANDSHAKE {
            return Err(Cow::Borrowed("handshake: answer too large"));
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end - 4]).map_err(|_| Cow::Borrowed("handshake: answer not text"))?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    let mut parts = status.splitn(3, ' ');
    let (proto, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !proto.starts_with("HTTP/1.") {
        return Err(Cow::Borrowed("handshake: not an HTTP answer"));
    }
    if code != "101" {
        return Err(Cow::Owned(format!("handshake: http {}", code.chars().take(3).collect::<String>())));
    }
    let (mut upgrade, mut connection, mut accept, mut extensions) = (false, false, None, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(Cow::Borrowed("handshake: malformed header"));
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade = header_has_token(value, "websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            connection = header_has_token(value, "upgrade");
        } else if name.eq_ignore_ascii_case("sec-websocket-accept") {
            accept = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("sec-websocket-extensions") && !value.is_empty() {
            extensions = true;
        }
    }
    if !upgrade || !connection {
        return Err(Cow::Borrowed("handshake: no Upgrade: websocket / Connection: Upgrade"));
    }
    if accept.as_deref() != Some(accept_for(key.as_bytes()).as_str()) {
        return Err(Cow::Borrowed("handshake: wrong Sec-WebSocket-Accept"));
    }
    if extensions {
        // none was offered (RFC 6455 4.1: the client must fail the connection)
        return Err(Cow::Borrowed("handshake: extension not offered"));
    }
    Ok(Some(end))
}

/// The server side: the Sec-WebSocket-Key of a complete upgrade request.
/// Ok(None): incomplete; Ok(Some((head length, key))).
pub fn parse_upgrade_request(buf: &[u8]) -> Result<Option<(usize, String)>, &'static str> {
    let Some(end) = find_head_end(buf) else {
        return if buf.len() > MAX_HANDSHAKE { Err("request too large") } else { Ok(None) };
    };
    let head = std::str::from_utf8(&buf[..end - 4]).map_err(|_| "request not text")?;
    let mut lines = head.split("\r\n");
    let req = lines.next().unwrap_or("");
    if !req.starts_with("GET ") {
        return Err("not a GET");
    }
    let mut key = None;
    for line in lines {
        if let Some((n, v)) = line.split_once(':') {
            if n.trim().eq_ignore_ascii_case("sec-websocket-key") {
                key = Some(v.trim().to_string());
            }
        }
    }
    key.map(|k| Some((end, k))).ok_or("no Sec-WebSocket-Key")
}

/// Appends the server's 101 answer for a key.
pub fn put_upgrade_answer(out: &mut Vec<u8>, key: &str) {
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ");
    out.extend_from_slice(accept_for(key.as_bytes()).as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

// ---------------------------------------------------------------------------
// Frames

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    pub fin: bool,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    pub len: usize,
    /// Bytes of the header itself (2 to 14).
    pub head_len: usize,
}

/// Parses a frame header at the start of `buf`. Ok(None): more bytes needed.
/// Frames larger than `max_len` are an error (the caller closes with 1009).
pub fn parse_frame_head(buf: &[u8], max_len: usize) -> Result<Option<FrameHead>, &'static str> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err("ws: reserved bits set");
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    match opcode {
        OP_CONT | OP_TEXT | OP_BINARY => {}
        OP_CLOSE | OP_PING | OP_PONG => {
            if !fin || (b1 & 0x7F) > 125 {
                return Err("ws: bad control frame");
            }
        }
        _ => return Err("ws: unknown opcode"),
    }
    let masked = b1 & 0x80 != 0;
    let (len, mut at) = match b1 & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let v = u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes"));
            if v >> 63 != 0 {
                return Err("ws: bad length");
            }
            (v, 10)
        }
        n => (n as u64, 2),
    };
    if len > max_len as u64 {
        return Err("ws: frame too large");
    }
    let mask = if masked {
        if buf.len() < at + 4 {
            return Ok(None);
        }
        let m = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
        at += 4;
        Some(m)
    } else {
        None
    };
    Ok(Some(FrameHead { fin, opcode, mask, len: len as usize, head_len: at }))
}

/// Appends a final frame header (masked when `mask` is given).
#[inline]
pub fn put_frame_head(out: &mut Vec<u8>, opcode: u8, len: usize, mask: Option<[u8; 4]>) {
    out.push(0x80 | opcode);
    let m = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(m | len as u8);
    } else if len <= 0xFFFF {
        out.push(m | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if let Some(k) = mask {
        out.extend_from_slice(&k);
    }
}

/// XORs `buf` with the mask key, `buf[0]` being byte `offset` of the payload.
#[inline]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let mut k = key;
    k.rotate_left(offset % 4);
    let k8 = u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]]);
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes(c.try_into().expect("8 bytes")) ^ k8;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= k[i % 4];
    }
}

/// Appends a whole final frame.
pub fn put_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) {
    put_frame_head(out, opcode, payload.len(), mask);
    let at = out.len();
    out.extend_from_slice(payload);
    if let Some(k) = mask {
        apply_mask(&mut out[at..], k, 0);
    }
}

/// The status code of a close frame's payload (1005 when it has none, as
/// RFC 6455 7.1.5 says; a one-byte payload is invalid: 1002).
pub fn close_code(payload: &[u8]) -> u16 {
    match payload.len() {
        0 => 1005,
        1 => 1002,
        _ => u16::from_be_bytes([payload[0], payload[1]]),
    }
}

// ---------------------------------------------------------------------------
// wsload's messages

/// Bytes of each pool (text: printable ASCII; binary: all byte values).
pub const MSG_POOL: usize = 1 << 20;
/// Longest message wsload sends (the pool offset is taken modulo
/// MSG_POOL - MAX_MESSAGE so that a message never runs off the pool).
pub const MAX_MESSAGE: usize = 256 << 10;
/// The header of every message: "<conn, 8 hex>.<seq, 12 hex>." (22 bytes).
pub const MSG_HEAD: usize = 22;

/// The two pools, from the same xorshift32 stream as httpload's bodies.
pub struct Pools {
    pub text: Vec<u8>,
    pub binary: Vec<u8>,
}

impl Pools {
    pub fn new() -> Pools {
        let mut text = Vec::with_capacity(MSG_POOL);
        let mut binary = Vec::with_capacity(MSG_POOL);
        let mut x: u32 = 2463534242;
        while binary.len() < MSG_POOL {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            for b in x.to_le_bytes() {
                binary.push(b);
                // 95 printable ASCII characters, 0x20..=0x7E: valid UTF-8 at any cut
                text.push(0x20 + (b as u32 * 95 / 256) as u8);
            }
        }
        Pools { text, binary }
    }

    fn pool(&self, text: bool) -> &[u8] {
        if text {
            &self.text
        } else {
            &self.binary
        }
    }
}

impl Default for Pools {
    fn default() -> Self {
        Pools::new()
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[inline]
fn put_hex(out: &mut [u8], mut v: u64) {
    for b in out.iter_mut().rev() {
        *b = HEX[(v & 15) as usize];
        v >>= 4;
    }
}

#[inline]
fn msg_head(c: u64, seq: u64) -> [u8; MSG_HEAD] {
    let mut h = [b'.'; MSG_HEAD];
    put_hex(&mut h[0..8], c & 0xFFFF_FFFF);
    put_hex(&mut h[9..21], seq & 0xFFFF_FFFF_FFFF);
    h
}

#[inline]
fn msg_offset(c: u64, seq: u64) -> usize {
    let m = (MSG_POOL - MAX_MESSAGE) as u64;
    (((seq % m) * 4099 + (c % m) * 65537) % m) as usize
}

/// Appends message `seq` of connection `c`: its 22-byte header (cut to `size`
/// if shorter), then `size - 22` pool bytes from an offset derived from (c,
/// seq). Text messages are printable ASCII, so valid UTF-8.
#[inline]
pub fn put_message(out: &mut Vec<u8>, pools: &Pools, c: u64, seq: u64, size: usize, text: bool) {
    let h = msg_head(c, seq);
    if size <= MSG_HEAD {
        out.extend_from_slice(&h[..size]);
        return;
    }
    out.extend_from_slice(&h);
    let off = msg_offset(c, seq);
    out.extend_from_slice(&pools.pool(text)[off..off + size - MSG_HEAD]);
}

/// Whether `got` is exactly message `seq` of connection `c`.
#[inline]
pub fn is_message(got: &[u8], pools: &Pools, c: u64, seq: u64, size: usize, text: bool) -> bool {
    if got.len() != size {
        return false;
    }
    let h = msg_head(c, seq);
    if size <= MSG_HEAD {
        return got == &h[..size];
    }
    let off = msg_offset(c, seq);
    got[..MSG_HEAD] == h && got[MSG_HEAD..] == pools.pool(text)[off..off + size - MSG_HEAD]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn sha1_and_base64_known_answers() {
        assert_eq!(hex(&sha1(b"abc")), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(hex(&sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        let long = vec![b'a'; 1_000_000];
        assert_eq!(hex(&sha1(&long)), "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        // RFC 6455 section 1.3's example
        assert_eq!(accept_for(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(client_key(7).len(), 24);
    }

    #[test]
    fn handshake_answers() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let good = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x00";
        assert_eq!(check_handshake_answer(good, key).unwrap(), Some(good.len() - 2));
        assert_eq!(check_handshake_answer(&good[..40], key).unwrap(), None);
        let bad_accept = b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: xxx\r\n\r\n";
        assert!(check_handshake_answer(bad_accept, key).unwrap_err().contains("Accept"));
        let not_found = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(check_handshake_answer(not_found, key).unwrap_err(), "handshake: http 404");
        let deflate = b"HTTP/1.1 101 S\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n";
        assert!(check_handshake_answer(deflate, key).is_err());
        let mut req = Vec::new();
        put_handshake(&mut req, "h:1", "/connect", key);
        let (n, k) = parse_upgrade_request(&req).unwrap().unwrap();
        assert_eq!((n, k.as_str()), (req.len(), key));
        let mut ans = Vec::new();
        put_upgrade_answer(&mut ans, &k);
        assert_eq!(check_handshake_answer(&ans, key).unwrap(), Some(ans.len()));
    }

    #[test]
    fn frames_round_trip_at_every_length_form() {
        for len in [0usize, 1, 125, 126, 127, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            for mask in [None, Some([1u8, 2, 3, 250])] {
                let mut f = Vec::new();
                put_frame(&mut f, OP_BINARY, &payload, mask);
                for cut in [0, 1, 3, f.len().min(9)] {
                    if cut < f.len() - payload.len() {
                        assert_eq!(parse_frame_head(&f[..cut], 1 << 20).unwrap(), None, "len {len} cut {cut}");
                    }
                }
                let h = parse_frame_head(&f, 1 << 20).unwrap().unwrap();
                assert_eq!((h.fin, h.opcode, h.len, h.mask), (true, OP_BINARY, len, mask));
                let mut body = f[h.head_len..].to_vec();
                if let Some(k) = h.mask {
                    // unmask in two pieces at an odd split: the offset carries on
                    let split = body.len() / 3 | 1;
                    let split = split.min(body.len());
                    let (a, b) = body.split_at_mut(split);
                    apply_mask(a, k, 0);
                    apply_mask(b, k, split);
                }
                assert_eq!(body, payload, "len {len}");
            }
        }
        assert_eq!(parse_frame_head(&[0x81, 126, 1, 0], 255), Err("ws: frame too large"));
        assert_eq!(parse_frame_head(&[0xC1, 0], 255), Err("ws: reserved bits set"));
        assert_eq!(parse_frame_head(&[0x89, 126, 0, 200], 1 << 20), Err("ws: bad control frame"));
        assert_eq!(parse_frame_head(&[0x08, 0], 1 << 20), Err("ws: bad control frame"));
        assert_eq!(parse_frame_head(&[0x83, 0], 1 << 20), Err("ws: unknown opcode"));
        assert_eq!(close_code(&[0x03, 0xE8, b'x']), 1000);
        assert_eq!(close_code(&[]), 1005);
    }

    #[test]
    fn messages_are_exact_and_distinct() {
        let pools = Pools::new();
        assert!(pools.text.iter().all(|b| (0x20..=0x7E).contains(b)));
        assert!(std::str::from_utf8(&pools.text).is_ok());
        let mut seen = std::collections::HashSet::new();
        for size in [1usize, 22, 23, 500, 2048, 8192, MAX_MESSAGE] {
            for text in [true, false] {
                for (c, seq) in [(0u64, 0u64), (3, 1), (3, 2), (9999, 123_456_789)] {
                    let mut m = Vec::new();
                    put_message(&mut m, &pools, c, seq, size, text);
                    assert_eq!(m.len(), size);
                    assert!(is_message(&m, &pools, c, seq, size, text));
                    if size > MSG_HEAD {
                        assert!(!is_message(&m, &pools, c, seq + 1, size, text));
                        let mut flip = m.clone();
                        *flip.last_mut().unwrap() ^= 1;
                        assert!(!is_message(&flip, &pools, c, seq, size, text));
                        assert!(seen.insert((m.clone(), text)));
                    }
                    if text {
                        assert!(std::str::from_utf8(&m).is_ok());
                    }
                }
            }
        }
        let mut m = Vec::new();
        put_message(&mut m, &pools, 0x2a, 0x1f, 30, true);
        assert_eq!(&m[..MSG_HEAD], b"0000002a.00000000001f.");
    }
}
