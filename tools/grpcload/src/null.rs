//! grpc-null: a minimal h2c gRPC server that answers every call with a
//! pre-built response, as fast as possible. It exists to measure the
//! loader's own ceiling, so it must be cheaper per call than any real server.
//!
//! It does not use an HTTP/2 library. [`Session`] is a hand-written,
//! deliberately partial HTTP/2 server endpoint (prior-knowledge h2c):
//!
//! * request header blocks are never HPACK-decoded (the answer is the same
//!   for every request): only the stream id and the END_STREAM/END_HEADERS
//!   flags are looked at, so the client's HPACK state is irrelevant;
//! * request DATA is discarded; its flow-control credit is given back in
//!   large batches (huge windows are advertised up front);
//! * when a request stream ends, the pre-encoded answer (HEADERS, DATA,
//!   trailers) is copied to the output and only the stream ids are patched.
//!   The response header blocks use HPACK statelessly (static table and
//!   literals without indexing, no Huffman), so they never change;
//! * the client's flow-control windows (connection and stream) are honoured:
//!   an answer that does not fit is queued and its DATA is sent as
//!   WINDOW_UPDATEs arrive.
//!
//! The I/O layer is a plain level-triggered epoll loop per thread: read
//! everything available, process every complete frame, then write all the
//! answers produced with one `send`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use crate::frame::frame_message;

pub const USAGE: &str = "\
usage: grpc-null --listen HOST:PORT [--messages N] [--bytes B] [--threads N]

  --listen    address to listen on (h2c, plain TCP); port 0 picks a free port
  --messages  gRPC messages in every answer (default 1)
  --bytes     payload bytes of each message (default 100; 0 = empty message,
              1 is impossible; any other size is exact)
  --threads   OS threads, each with a current_thread runtime and its own
              SO_REUSEPORT listener (default 1)";

#[derive(Debug, Clone)]
pub struct NullConfig {
    pub listen: String,
    pub messages: usize,
    pub bytes: usize,
    pub threads: usize,
}

pub enum NullParsed {
    Run(NullConfig),
    Help,
    Version,
}

pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<NullParsed, String> {
    let mut listen = None;
    let mut messages = 1usize;
    let mut bytes = 100usize;
    let mut threads = 1usize;
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        if name == "-h" || name == "--help" {
            return Ok(NullParsed::Help);
        }
        if name == "-V" || name == "--version" {
            return Ok(NullParsed::Version);
        }
        let value = match inline {
            Some(v) => v,
            None => it.next().ok_or_else(|| format!("{name} needs a value"))?,
        };
        let num = |v: &str| v.trim().parse::<usize>().map_err(|_| format!("{name}: invalid value {v:?}"));
        match name.as_str() {
            "--listen" => listen = Some(value),
            "--messages" => messages = num(&value)?,
            "--bytes" => bytes = num(&value)?,
            "--threads" => threads = num(&value)?,
            _ => return Err(format!("unknown option {name} (see --help)")),
        }
    }
    let listen = listen.ok_or("--listen is required")?;
    if threads == 0 {
        return Err("--threads must be >= 1".into());
    }
    if bytes == 1 {
        return Err("--bytes 1: no protobuf message is exactly 1 byte long (use 0 or >= 2)".into());
    }
    Ok(NullParsed::Run(NullConfig { listen, messages, bytes, threads }))
}

fn varint_len(mut v: usize) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(out: &mut Vec<u8>, mut v: usize) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Tag of field 15, wire type 2 (length-delimited): (15 << 3) | 2.
const FILLER_TAG: u8 = 0x7a;

/// One field 15 of exactly `total` bytes (tag + length + filler), if possible.
fn filler_field(total: usize, out: &mut Vec<u8>) -> bool {
    for vl in 1..=5 {
        if total < 1 + vl {
            return false;
        }
        let len = total - 1 - vl;
        if varint_len(len) == vl {
            out.push(FILLER_TAG);
            put_varint(out, len);
            out.resize(out.len() + len, b'x');
            return true;
        }
    }
    false
}

/// A protobuf message of exactly `bytes` bytes that every message type can
/// parse: one unknown length-delimited field number 15 full of filler. The
/// few sizes one field cannot hit exactly (130, 16387, ...: where the length
/// varint grows by a byte) get a second, empty field 15 (2 bytes).
pub fn response_message(bytes: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(bytes);
    if bytes == 0 {
        return Ok(out);
    }
    if bytes == 1 {
        return Err("no protobuf message is exactly 1 byte long".into());
    }
    if !filler_field(bytes, &mut out) {
        out.clear();
        let ok = filler_field(bytes - 2, &mut out);
        assert!(ok, "bytes-2 is always reachable when bytes is not");
        out.extend_from_slice(&[FILLER_TAG, 0]);
    }
    debug_assert_eq!(out.len(), bytes);
    Ok(out)
}

// ---------------------------------------------------------------------------
// HTTP/2 wire constants (RFC 9113)

/// The client connection preface.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;

const T_DATA: u8 = 0x0;
const T_HEADERS: u8 = 0x1;
const T_PRIORITY: u8 = 0x2;
const T_RST_STREAM: u8 = 0x3;
const T_SETTINGS: u8 = 0x4;
const T_PUSH_PROMISE: u8 = 0x5;
const T_PING: u8 = 0x6;
const T_GOAWAY: u8 = 0x7;
const T_WINDOW_UPDATE: u8 = 0x8;
const T_CONTINUATION: u8 = 0x9;

const F_END_STREAM: u8 = 0x1;
const F_ACK: u8 = 0x1;
const F_END_HEADERS: u8 = 0x4;

const S_HEADER_TABLE_SIZE: u16 = 0x1;
const S_MAX_CONCURRENT_STREAMS: u16 = 0x3;
const S_INITIAL_WINDOW_SIZE: u16 = 0x4;
const S_MAX_FRAME_SIZE: u16 = 0x5;

const E_PROTOCOL_ERROR: u32 = 0x1;
const E_FLOW_CONTROL_ERROR: u32 = 0x3;
const E_FRAME_SIZE_ERROR: u32 = 0x6;

/// Largest frame payload we accept (we leave SETTINGS_MAX_FRAME_SIZE at its
/// default) and largest DATA frame we send (every peer accepts 16384).
pub const MAX_FRAME: usize = 16384;
/// Default flow-control window (connection, and streams until SETTINGS).
const DEFAULT_WINDOW: i64 = 65_535;
const MAX_WINDOW: i64 = (1 << 31) - 1;
/// Receive windows we grant the client, so that request bodies never wait.
const OUR_STREAM_WINDOW: u32 = 1 << 24;
const OUR_CONN_WINDOW: u32 = 1 << 30;
/// Consumed request bytes after which credit is given back (half the window,
/// so the client always has at least half of it left).
const STREAM_UPDATE_AT: u32 = OUR_STREAM_WINDOW / 2;
const CONN_UPDATE_AT: u64 = (OUR_CONN_WINDOW / 2) as u64;
const OUR_MAX_CONCURRENT_STREAMS: u32 = 1 << 20;

/// `:status: 200` (static index 8), then `content-type: application/grpc` as
/// a literal without indexing with the indexed name 31 (4-bit prefix: 15 +
/// 16), no Huffman.
pub const RESPONSE_HEADER_BLOCK: &[u8] = b"\x88\x0f\x10\x10application/grpc";
/// `grpc-status: 0` as a literal without indexing with a new name.
pub const TRAILER_BLOCK: &[u8] = b"\x00\x0bgrpc-status\x010";
/// HPACK dynamic table size update to 0. Put before the next response header
/// block whenever the client sends SETTINGS_HEADER_TABLE_SIZE: a size of 0 is
/// always allowed, and we never use the dynamic table anyway.
const TABLE_SIZE_ZERO: u8 = 0x20;

fn put_frame_header(out: &mut Vec<u8>, len: usize, ty: u8, flags: u8, stream: u32) {
    debug_assert!(len < 1 << 24);
    let l = (len as u32).to_be_bytes();
    let s = stream.to_be_bytes();
    out.extend_from_slice(&[l[1], l[2], l[3], ty, flags, s[0], s[1], s[2], s[3]]);
}

fn put_window_update(out: &mut Vec<u8>, stream: u32, inc: u32) {
    put_frame_header(out, 4, T_WINDOW_UPDATE, 0, stream);
    out.extend_from_slice(&inc.to_be_bytes());
}

/// Our side of the connection preface: SETTINGS (max concurrent streams, a
/// large initial stream window) and a connection WINDOW_UPDATE to a large
/// connection window.
pub fn server_preface(out: &mut Vec<u8>) {
    put_frame_header(out, 12, T_SETTINGS, 0, 0);
    out.extend_from_slice(&S_MAX_CONCURRENT_STREAMS.to_be_bytes());
    out.extend_from_slice(&OUR_MAX_CONCURRENT_STREAMS.to_be_bytes());
    out.extend_from_slice(&S_INITIAL_WINDOW_SIZE.to_be_bytes());
    out.extend_from_slice(&OUR_STREAM_WINDOW.to_be_bytes());
    put_window_update(out, 0, OUR_CONN_WINDOW - DEFAULT_WINDOW as u32);
}

// ---------------------------------------------------------------------------
// The answer, pre-encoded

/// The response sent to every call, encoded once.
pub struct Canned {
    /// The N gRPC-framed messages: the response body.
    pub data: Vec<u8>,
    /// HEADERS, DATA frame(s) (at most [`MAX_FRAME`] each) and trailers
    /// HEADERS for stream 0: the whole answer when flow control allows it.
    full: Vec<u8>,
    /// Offsets of the stream ids to patch in `full`.
    id_at: Vec<usize>,
    /// The response HEADERS frame alone (stream id at byte 5).
    headers: Vec<u8>,
    /// The same with a dynamic table size update first.
    headers_tsu: Vec<u8>,
    /// The trailers HEADERS frame alone (END_STREAM | END_HEADERS).
    trailers: Vec<u8>,
}

fn patch_id(buf: &mut [u8], at: usize, id: u32) {
    buf[at..at + 4].copy_from_slice(&id.to_be_bytes());
}

impl Canned {
    pub fn new(messages: usize, bytes: usize) -> Result<Canned, String> {
        let msg = frame_message(&response_message(bytes)?);
        let total = msg.len().checked_mul(messages).ok_or("--messages x --bytes is too large")?;
        if total > 1 << 30 {
            return Err("--messages x --bytes is too large (more than 1 GiB per answer)".into());
        }
        let mut data = Vec::with_capacity(total);
        for _ in 0..messages {
            data.extend_from_slice(&msg);
        }

        let mut headers = Vec::new();
        put_frame_header(&mut headers, RESPONSE_HEADER_BLOCK.len(), T_HEADERS, F_END_HEADERS, 0);
        headers.extend_from_slice(RESPONSE_HEADER_BLOCK);
        let mut headers_tsu = Vec::new();
        put_frame_header(&mut headers_tsu, RESPONSE_HEADER_BLOCK.len() + 1, T_HEADERS, F_END_HEADERS, 0);
        headers_tsu.push(TABLE_SIZE_ZERO);
        headers_tsu.extend_from_slice(RESPONSE_HEADER_BLOCK);
        let mut trailers = Vec::new();
        put_frame_header(&mut trailers, TRAILER_BLOCK.len(), T_HEADERS, F_END_STREAM | F_END_HEADERS, 0);
        trailers.extend_from_slice(TRAILER_BLOCK);

        let mut full = Vec::with_capacity(headers.len() + data.len() + data.len() / MAX_FRAME * 9 + 9 + trailers.len());
        let mut id_at = Vec::new();
        id_at.push(5);
        full.extend_from_slice(&headers);
        for chunk in data.chunks(MAX_FRAME) {
            id_at.push(full.len() + 5);
            put_frame_header(&mut full, chunk.len(), T_DATA, 0, 0);
            full.extend_from_slice(chunk);
        }
        id_at.push(full.len() + 5);
        full.extend_from_slice(&trailers);
        Ok(Canned { data, full, id_at, headers, headers_tsu, trailers })
    }

    /// Appends the whole answer for `stream` (flow control permitting).
    #[inline]
    pub fn put_full(&self, out: &mut Vec<u8>, stream: u32) {
        let start = out.len();
        out.extend_from_slice(&self.full);
        let b = &mut out[start..];
        for &at in &self.id_at {
            patch_id(b, at, stream);
        }
    }

    fn put_headers(&self, out: &mut Vec<u8>, stream: u32, table_size_update: bool) {
        let start = out.len();
        out.extend_from_slice(if table_size_update { &self.headers_tsu } else { &self.headers });
        patch_id(&mut out[start..], 5, stream);
    }

    /// DATA frames for `data[from..from + len]`, at most [`MAX_FRAME`] each.
    fn put_data(&self, out: &mut Vec<u8>, stream: u32, from: usize, len: usize) {
        for chunk in self.data[from..from + len].chunks(MAX_FRAME) {
            put_frame_header(out, chunk.len(), T_DATA, 0, stream);
            out.extend_from_slice(chunk);
        }
    }

    fn put_trailers(&self, out: &mut Vec<u8>, stream: u32) {
        let start = out.len();
        out.extend_from_slice(&self.trailers);
        patch_id(&mut out[start..], 5, stream);
    }
}

// ---------------------------------------------------------------------------
// The protocol engine (no I/O)

/// A request stream whose request has not ended yet.
#[derive(Debug, Clone, Copy)]
struct Open {
    id: u32,
    /// WINDOW_UPDATE credit the client granted before we answered.
    credit: i64,
    /// Request bytes received and not yet given back.
    unacked: u32,
}

/// An answer whose DATA waits for flow-control window (its HEADERS are sent).
#[derive(Debug, Clone, Copy)]
struct Pending {
    id: u32,
    window: i64,
    /// Bytes of `Canned::data` already sent.
    sent: usize,
}

/// The connection must be closed (anything in `out`, e.g. a GOAWAY, may be
/// sent first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close;

/// One HTTP/2 server connection, minus the I/O: [`Session::feed`] consumes
/// the bytes read and appends everything to send to [`Session::out`].
pub struct Session {
    /// Bytes to send (the I/O layer removes what it wrote).
    pub out: Vec<u8>,
    preface_seen: bool,
    /// Our send window on the connection, granted by the client.
    conn_window: i64,
    /// The client's SETTINGS_INITIAL_WINDOW_SIZE.
    peer_initial_window: i64,
    table_size_update: bool,
    open: Vec<Open>,
    pending: VecDeque<Pending>,
    /// Inside a header block: (stream, END_STREAM of its HEADERS frame).
    continuation: Option<(u32, bool)>,
    last_stream: u32,
    conn_unacked: u64,
    goaway_received: bool,
}

impl Default for Session {
    fn default() -> Self {
        Self::new()
    }
}

impl Session {
    /// A new session; `out` already holds our preface.
    pub fn new() -> Session {
        let mut out = Vec::with_capacity(64 * 1024);
        server_preface(&mut out);
        Session {
            out,
            preface_seen: false,
            conn_window: DEFAULT_WINDOW,
            peer_initial_window: DEFAULT_WINDOW,
            table_size_update: false,
            open: Vec::new(),
            pending: VecDeque::new(),
            continuation: None,
            last_stream: 0,
            conn_unacked: 0,
            goaway_received: false,
        }
    }

    /// The client sent GOAWAY and every stream it had opened is answered:
    /// the connection can be closed once `out` is written.
    pub fn finished(&self) -> bool {
        self.goaway_received && self.open.is_empty() && self.pending.is_empty() && self.continuation.is_none()
    }

    /// Consumes every complete frame at the start of `input` and returns the
    /// number of bytes consumed (a partial frame at the end is left for the
    /// next call, with more bytes after it). `Err(Close)` on a protocol error.
    pub fn feed(&mut self, input: &[u8], canned: &Canned) -> Result<usize, Close> {
        let mut pos = 0;
        if !self.preface_seen {
            let n = input.len().min(PREFACE.len());
            if input[..n] != PREFACE[..n] {
                return Err(Close);
            }
            if n < PREFACE.len() {
                return Ok(0);
            }
            self.preface_seen = true;
            pos = PREFACE.len();
        }
        let mut res = Ok(());
        while input.len() - pos >= FRAME_HEADER {
            let h = &input[pos..pos + FRAME_HEADER];
            let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
            if len > MAX_FRAME {
                res = Err(E_FRAME_SIZE_ERROR);
                break;
            }
            if input.len() - pos - FRAME_HEADER < len {
                break;
            }
            let (ty, flags) = (h[3], h[4]);
            let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
            let payload = &input[pos + FRAME_HEADER..pos + FRAME_HEADER + len];
            pos += FRAME_HEADER + len;
            if let Err(code) = self.frame(ty, flags, stream, payload, canned) {
                res = Err(code);
                break;
            }
        }
        if self.conn_unacked >= CONN_UPDATE_AT {
            put_window_update(&mut self.out, 0, self.conn_unacked as u32);
            self.conn_unacked = 0;
        }
        if !self.pending.is_empty() {
            self.flush_pending(canned);
        }
        match res {
            Ok(()) => Ok(pos),
            Err(code) => {
                self.goaway(code);
                Err(Close)
            }
        }
    }

    fn goaway(&mut self, code: u32) {
        put_frame_header(&mut self.out, 8, T_GOAWAY, 0, 0);
        self.out.extend_from_slice(&self.last_stream.to_be_bytes());
        self.out.extend_from_slice(&code.to_be_bytes());
    }

    #[inline]
    fn find_open(&self, stream: u32) -> Option<usize> {
        // requests usually end right after they start: search from the end
        self.open.iter().rposition(|o| o.id == stream)
    }

    #[inline]
    fn frame(&mut self, ty: u8, flags: u8, stream: u32, payload: &[u8], canned: &Canned) -> Result<(), u32> {
        if let Some((s, _)) = self.continuation {
            if ty != T_CONTINUATION || stream != s {
                return Err(E_PROTOCOL_ERROR);
            }
        }
        match ty {
            T_DATA => {
                if stream == 0 {
                    return Err(E_PROTOCOL_ERROR);
                }
                let len = payload.len() as u32;
                self.conn_unacked += len as u64;
                if let Some(i) = self.find_open(stream) {
                    if flags & F_END_STREAM != 0 {
                        let o = self.open.swap_remove(i);
                        self.respond(stream, o.credit, canned);
                    } else {
                        let o = &mut self.open[i];
                        o.unacked += len;
                        if o.unacked >= STREAM_UPDATE_AT {
                            let inc = o.unacked;
                            o.unacked = 0;
                            put_window_update(&mut self.out, stream, inc);
                        }
                    }
                }
                // DATA on a closed or unknown stream: discarded (it still
                // counts against the connection window, given back above)
            }
            T_HEADERS => {
                if stream == 0 {
                    return Err(E_PROTOCOL_ERROR);
                }
                let end_stream = flags & F_END_STREAM != 0;
                if flags & F_END_HEADERS == 0 {
                    self.continuation = Some((stream, end_stream));
                } else {
                    self.header_block(stream, end_stream, canned);
                }
            }
            T_CONTINUATION => match self.continuation {
                Some((s, end_stream)) if s == stream => {
                    if flags & F_END_HEADERS != 0 {
                        self.continuation = None;
                        self.header_block(stream, end_stream, canned);
                    }
                }
                _ => return Err(E_PROTOCOL_ERROR),
            },
            T_PRIORITY => {}
            T_RST_STREAM => {
                if payload.len() != 4 {
                    return Err(E_FRAME_SIZE_ERROR);
                }
                if stream == 0 {
                    return Err(E_PROTOCOL_ERROR);
                }
                if let Some(i) = self.find_open(stream) {
                    self.open.swap_remove(i);
                }
                if let Some(i) = self.pending.iter().position(|p| p.id == stream) {
                    self.pending.remove(i);
                }
            }
            T_SETTINGS => {
                if stream != 0 {
                    return Err(E_PROTOCOL_ERROR);
                }
                if flags & F_ACK != 0 {
                    if !payload.is_empty() {
                        return Err(E_FRAME_SIZE_ERROR);
                    }
                    return Ok(());
                }
                if !payload.len().is_multiple_of(6) {
                    return Err(E_FRAME_SIZE_ERROR);
                }
                for s in payload.chunks_exact(6) {
                    let id = u16::from_be_bytes([s[0], s[1]]);
                    let v = u32::from_be_bytes([s[2], s[3], s[4], s[5]]);
                    match id {
                        S_HEADER_TABLE_SIZE => self.table_size_update = true,
                        S_INITIAL_WINDOW_SIZE => {
                            if v as i64 > MAX_WINDOW {
                                return Err(E_FLOW_CONTROL_ERROR);
                            }
                            let delta = v as i64 - self.peer_initial_window;
                            self.peer_initial_window = v as i64;
                            for p in self.pending.iter_mut() {
                                p.window += delta;
                            }
                        }
                        // we never send DATA frames above the minimum anyway
                        S_MAX_FRAME_SIZE if !(16384..=16_777_215).contains(&v) => return Err(E_PROTOCOL_ERROR),
                        _ => {}
                    }
                }
                put_frame_header(&mut self.out, 0, T_SETTINGS, F_ACK, 0);
            }
            T_PUSH_PROMISE => return Err(E_PROTOCOL_ERROR),
            T_PING => {
                if payload.len() != 8 {
                    return Err(E_FRAME_SIZE_ERROR);
                }
                if stream != 0 {
                    return Err(E_PROTOCOL_ERROR);
                }
                if flags & F_ACK == 0 {
                    put_frame_header(&mut self.out, 8, T_PING, F_ACK, 0);
                    self.out.extend_from_slice(payload);
                }
            }
            T_GOAWAY => {
                if stream != 0 {
                    return Err(E_PROTOCOL_ERROR);
                }
                self.goaway_received = true;
            }
            T_WINDOW_UPDATE => {
                if payload.len() != 4 {
                    return Err(E_FRAME_SIZE_ERROR);
                }
                let inc = (u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff) as i64;
                if stream == 0 {
                    self.conn_window += inc;
                } else if let Some(p) = self.pending.iter_mut().find(|p| p.id == stream) {
                    p.window += inc;
                } else if let Some(i) = self.find_open(stream) {
                    self.open[i].credit += inc;
                }
            }
            _ => {} // unknown frame types are ignored
        }
        Ok(())
    }

    /// A complete request header block (headers or trailers) on `stream`.
    fn header_block(&mut self, stream: u32, end_stream: bool, canned: &Canned) {
        if let Some(i) = self.find_open(stream) {
            // request trailers
            if end_stream {
                let o = self.open.swap_remove(i);
                self.respond(stream, o.credit, canned);
            }
        } else if stream & 1 == 1 && stream > self.last_stream {
            self.last_stream = stream;
            if end_stream {
                self.respond(stream, 0, canned);
            } else {
                self.open.push(Open { id: stream, credit: 0, unacked: 0 });
            }
        }
        // else: a closed stream or an even id: ignored
    }

    /// The request on `stream` is complete: answer it.
    #[inline]
    fn respond(&mut self, stream: u32, credit: i64, canned: &Canned) {
        let len = canned.data.len() as i64;
        let window = self.peer_initial_window + credit;
        if len <= self.conn_window && len <= window && self.pending.is_empty() && !self.table_size_update {
            canned.put_full(&mut self.out, stream);
            self.conn_window -= len;
            return;
        }
        canned.put_headers(&mut self.out, stream, std::mem::take(&mut self.table_size_update));
        if len == 0 {
            canned.put_trailers(&mut self.out, stream);
        } else {
            self.pending.push_back(Pending { id: stream, window, sent: 0 });
        }
    }

    /// Sends as much queued DATA as the windows allow, oldest answer first,
    /// and the trailers of every answer whose DATA is all sent.
    fn flush_pending(&mut self, canned: &Canned) {
        let total = canned.data.len();
        let mut i = 0;
        while i < self.pending.len() && self.conn_window > 0 {
            let p = &mut self.pending[i];
            let n = (total - p.sent).min(self.conn_window.min(p.window).max(0) as usize);
            if n > 0 {
                canned.put_data(&mut self.out, p.id, p.sent, n);
                p.sent += n;
                p.window -= n as i64;
                self.conn_window -= n as i64;
            }
            if p.sent == total {
                let id = p.id;
                self.pending.remove(i);
                canned.put_trailers(&mut self.out, id);
            } else {
                i += 1;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// I/O: one epoll loop per thread

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

const LISTENER: u64 = u64::MAX;
/// Output not yet written above which a connection is not read any more.
const OUT_HIGH: usize = 8 << 20;
/// Reads per readiness event when the buffer keeps filling up.
const MAX_READS: usize = 4;
const READ_BUF: usize = 256 * 1024;

struct Conn {
    fd: RawFd,
    s: Session,
    /// Bytes of an incomplete frame from the previous read.
    leftover: Vec<u8>,
    /// Bytes of `s.out` already written.
    written: usize,
    /// The epoll events we are registered for.
    events: u32,
}

impl Drop for Conn {
    fn drop(&mut self) {
        unsafe { libc::close(self.fd) };
    }
}

struct Poller {
    epfd: RawFd,
}

impl Poller {
    fn ctl(&self, op: i32, fd: RawFd, events: u32, token: u64) -> bool {
        let mut ev = libc::epoll_event { events, u64: token };
        unsafe { libc::epoll_ctl(self.epfd, op, fd, &mut ev) == 0 }
    }
}

impl Conn {
    /// Writes what it can of the output; registers for EPOLLOUT if some is
    /// left, and stops reading while too much is left. False: close it.
    fn flush(&mut self, poller: &Poller, token: u64) -> bool {
        while self.written < self.s.out.len() {
            let rest = &self.s.out[self.written..];
            let n = unsafe { libc::send(self.fd, rest.as_ptr().cast(), rest.len(), libc::MSG_NOSIGNAL) };
            if n < 0 {
                match errno() {
                    libc::EINTR => continue,
                    libc::EAGAIN => break,
                    _ => return false,
                }
            }
            self.written += n as usize;
            if (n as usize) < rest.len() {
                break; // the socket buffer is full: the next send would fail
            }
        }
        let left = self.s.out.len() - self.written;
        if left == 0 {
            self.s.out.clear();
            self.written = 0;
            if self.s.finished() {
                return false;
            }
        }
        let want = match left {
            0 => libc::EPOLLIN as u32,
            l if l < OUT_HIGH => (libc::EPOLLIN | libc::EPOLLOUT) as u32,
            _ => libc::EPOLLOUT as u32,
        };
        if want != self.events {
            if !poller.ctl(libc::EPOLL_CTL_MOD, self.fd, want, token) {
                return false;
            }
            self.events = want;
        }
        true
    }

    /// Reads what is there, processes it, writes the answers. False: close it.
    fn on_readable(&mut self, rbuf: &mut [u8], canned: &Canned, poller: &Poller, token: u64) -> bool {
        if self.written > 0 {
            // output left from an earlier partial write: drop the written part
            self.s.out.drain(..self.written);
            self.written = 0;
        }
        for _ in 0..MAX_READS {
            let lo = self.leftover.len();
            rbuf[..lo].copy_from_slice(&self.leftover);
            let room = rbuf.len() - lo;
            let n = unsafe { libc::recv(self.fd, rbuf[lo..].as_mut_ptr().cast(), room, 0) };
            if n == 0 {
                // EOF: send what is ready if possible, then close
                self.flush(poller, token);
                return false;
            }
            if n < 0 {
                match errno() {
                    libc::EINTR => continue,
                    libc::EAGAIN => break,
                    _ => return false,
                }
            }
            let n = n as usize;
            let total = lo + n;
            match self.s.feed(&rbuf[..total], canned) {
                Ok(used) => {
                    self.leftover.clear();
                    self.leftover.extend_from_slice(&rbuf[used..total]);
                }
                Err(Close) => {
                    self.flush(poller, token);
                    return false;
                }
            }
            if n < room || self.s.out.len() >= OUT_HIGH {
                break;
            }
        }
        self.flush(poller, token)
    }
}

fn accept_all(lfd: RawFd, poller: &Poller, conns: &mut Vec<Option<Conn>>, free: &mut Vec<usize>) {
    loop {
        let fd = unsafe {
            libc::accept4(lfd, std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
        };
        if fd < 0 {
            match errno() {
                libc::EAGAIN => return,
                libc::EINTR | libc::ECONNABORTED => continue,
                e => {
                    // e.g. out of file descriptors: do not spin
                    eprintln!("grpc-null: accept: {}", std::io::Error::from_raw_os_error(e));
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    return;
                }
            }
        }
        let one: libc::c_int = 1;
        unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        let idx = free.pop().unwrap_or_else(|| {
            conns.push(None);
            conns.len() - 1
        });
        let mut c = Conn { fd, s: Session::new(), leftover: Vec::new(), written: 0, events: libc::EPOLLIN as u32 };
        if !poller.ctl(libc::EPOLL_CTL_ADD, fd, c.events, idx as u64) || !c.flush(poller, idx as u64) {
            free.push(idx);
            continue; // dropping c closes fd
        }
        conns[idx] = Some(c);
    }
}

/// Serves one listener forever (returns only on an epoll failure).
fn serve(lfd: RawFd, canned: &Canned) -> String {
    let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epfd < 0 {
        return format!("epoll_create1: {}", std::io::Error::last_os_error());
    }
    let poller = Poller { epfd };
    if !poller.ctl(libc::EPOLL_CTL_ADD, lfd, libc::EPOLLIN as u32, LISTENER) {
        return format!("epoll_ctl: {}", std::io::Error::last_os_error());
    }
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut rbuf = vec![0u8; READ_BUF];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    loop {
        let n = unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), events.len() as i32, -1) };
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return format!("epoll_wait: {}", std::io::Error::last_os_error());
        }
        for ev in &events[..n as usize] {
            let (token, ev) = (ev.u64, ev.events);
            if token == LISTENER {
                accept_all(lfd, &poller, &mut conns, &mut free);
                continue;
            }
            let idx = token as usize;
            let Some(c) = conns.get_mut(idx).and_then(|c| c.as_mut()) else { continue };
            let mut keep = true;
            if ev & (libc::EPOLLIN | libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0 {
                keep = c.on_readable(&mut rbuf, canned, &poller, token);
            }
            if keep && ev & libc::EPOLLOUT as u32 != 0 {
                keep = c.flush(&poller, token);
            }
            if !keep {
                conns[idx] = None; // closing the fd also removes it from epoll
                free.push(idx);
            }
        }
    }
}

fn bind(addr: SocketAddr, reuseport: bool) -> std::io::Result<RawFd> {
    use std::io::Error;
    let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::last_os_error());
    }
    let fail = |fd: RawFd| {
        let e = Error::last_os_error();
        unsafe { libc::close(fd) };
        Err(e)
    };
    let one: libc::c_int = 1;
    let optlen = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    let opt = (&one as *const libc::c_int).cast();
    if unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, opt, optlen) } != 0 {
        return fail(fd);
    }
    if reuseport && unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, opt, optlen) } != 0 {
        return fail(fd);
    }
    let rc = match addr {
        SocketAddr::V4(a) => {
            let sa = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            unsafe {
                libc::bind(
                    fd,
                    (&sa as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        SocketAddr::V6(a) => {
            let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sa.sin6_port = a.port().to_be();
            sa.sin6_addr = libc::in6_addr { s6_addr: a.ip().octets() };
            sa.sin6_flowinfo = a.flowinfo();
            sa.sin6_scope_id = a.scope_id();
            unsafe {
                libc::bind(
                    fd,
                    (&sa as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    if rc != 0 || unsafe { libc::listen(fd, 1024) } != 0 {
        return fail(fd);
    }
    Ok(fd)
}

fn local_addr(fd: RawFd) -> std::io::Result<SocketAddr> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let l = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    let a = l.local_addr();
    let _ = l.into_raw_fd();
    a
}

extern "C" fn on_signal(_: libc::c_int) {
    unsafe { libc::_exit(0) };
}

/// Runs the server until SIGTERM/SIGINT (then exits the process with 0).
pub fn run(cfg: NullConfig) -> Result<(), String> {
    use std::net::ToSocketAddrs;
    let addr = cfg
        .listen
        .to_socket_addrs()
        .map_err(|e| format!("bad --listen {:?}: {e}", cfg.listen))?
        .next()
        .ok_or_else(|| format!("--listen {:?} resolves to no address", cfg.listen))?;
    let canned: &'static Canned = Box::leak(Box::new(Canned::new(cfg.messages, cfg.bytes)?));

    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
        if unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) } != 0 {
            return Err(format!("sigaction: {}", std::io::Error::last_os_error()));
        }
    }

    let reuseport = cfg.threads > 1;
    let first = bind(addr, reuseport).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bound = local_addr(first).map_err(|e| e.to_string())?;
    let mut fds = vec![first];
    for _ in 1..cfg.threads {
        fds.push(bind(bound, true).map_err(|e| format!("cannot listen on {bound}: {e}"))?);
    }
    for (k, &fd) in fds.iter().enumerate().skip(1) {
        std::thread::Builder::new()
            .name(format!("grpc-null-{k}"))
            .spawn(move || {
                let e = serve(fd, canned);
                eprintln!("grpc-null: {e}");
                std::process::exit(1);
            })
            .map_err(|e| format!("cannot start thread: {e}"))?;
    }
    eprintln!("listening on {bound}");
    Err(serve(first, canned))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks the fields of an encoded message; returns (field, wire type, len) triples.
    fn fields(mut b: &[u8]) -> Vec<(u64, u8, usize)> {
        fn varint(b: &mut &[u8]) -> u64 {
            let mut v = 0u64;
            let mut shift = 0;
            loop {
                let x = b[0];
                *b = &b[1..];
                v |= ((x & 0x7f) as u64) << shift;
                if x < 0x80 {
                    return v;
                }
                shift += 7;
            }
        }
        let mut out = Vec::new();
        while !b.is_empty() {
            let tag = varint(&mut b);
            assert_eq!(tag & 7, 2);
            let len = varint(&mut b) as usize;
            out.push((tag >> 3, (tag & 7) as u8, len));
            b = &b[len..];
        }
        out
    }

    #[test]
    fn exact_sizes_and_valid_encoding() {
        for bytes in (2..400).chain([16385, 16386, 16387, 16388, 16389, 100_000]) {
            let m = response_message(bytes).unwrap();
            assert_eq!(m.len(), bytes, "size {bytes}");
            let f = fields(&m);
            assert!(f.iter().all(|&(n, w, _)| n == 15 && w == 2), "size {bytes}: {f:?}");
            assert!(f.len() <= 2);
        }
        assert_eq!(response_message(0).unwrap(), Vec::<u8>::new());
        assert!(response_message(1).is_err());
        assert_eq!(response_message(3).unwrap(), vec![0x7a, 1, b'x']);
        assert_eq!(fields(&response_message(100).unwrap()), vec![(15, 2, 98)]);
        assert_eq!(fields(&response_message(130).unwrap()), vec![(15, 2, 126), (15, 2, 0)]);
    }

    #[test]
    fn decodes_as_a_real_message() {
        use prost::Message;
        let proto = "syntax = \"proto3\"; package n; message Note { string title = 1; string content = 2; }";
        let dir = std::env::temp_dir().join(format!("grpc-null-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("n.proto"), proto).unwrap();
        let pool = crate::proto::load_pool(&dir.join("n.proto"), &[]).unwrap();
        let desc = pool.get_message_by_name("n.Note").unwrap();
        for bytes in [0, 2, 3, 100, 130, 300, 20000] {
            let m = response_message(bytes).unwrap();
            let d = prost_reflect::DynamicMessage::decode(desc.clone(), &m[..]).unwrap();
            // unknown fields are kept and re-encoded as they were
            assert_eq!(d.encode_to_vec(), m, "size {bytes}");
        }
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn canned_data_is_framed() {
        let c = Canned::new(3, 10).unwrap();
        assert_eq!(c.data.len(), 3 * 15);
        let mut p = crate::frame::FrameParser::new();
        p.feed(&c.data, None).unwrap();
        p.finish().unwrap();
        assert_eq!((p.messages, p.payload_bytes), (3, 30));
        assert_eq!(Canned::new(0, 100).unwrap().data.len(), 0);
    }

    // ---- HTTP/2 engine tests ------------------------------------------------

    type Frame = (u8, u8, u32, Vec<u8>);

    /// Splits a byte string into frames; panics on a partial frame.
    fn frames(mut b: &[u8]) -> Vec<Frame> {
        let mut out = Vec::new();
        while !b.is_empty() {
            assert!(b.len() >= 9, "partial frame header");
            let len = u32::from_be_bytes([0, b[0], b[1], b[2]]) as usize;
            assert!(b.len() >= 9 + len, "partial frame");
            let stream = u32::from_be_bytes([b[5], b[6], b[7], b[8]]);
            assert_eq!(stream >> 31, 0, "reserved bit set");
            out.push((b[3], b[4], stream, b[9..9 + len].to_vec()));
            b = &b[9 + len..];
        }
        out
    }

    /// A test-only HPACK decoder for the representations a stateless encoder
    /// may use: indexed static entries, literals (any indexing mode) with an
    /// indexed static name or a new name, dynamic table size updates, no
    /// Huffman. Entries the encoder asks to index are not looked up later.
    type Decoded = (Vec<(String, String)>, Vec<u64>);

    fn hpack_decode(mut b: &[u8]) -> Result<Decoded, String> {
        const STATIC: &[(&str, &str)] = &[
            (":authority", ""),
            (":method", "GET"),
            (":method", "POST"),
            (":path", "/"),
            (":path", "/index.html"),
            (":scheme", "http"),
            (":scheme", "https"),
            (":status", "200"),
            (":status", "204"),
            (":status", "206"),
            (":status", "304"),
            (":status", "400"),
            (":status", "404"),
            (":status", "500"),
        ];
        fn int(b: &mut &[u8], prefix: u32) -> Result<u64, String> {
            let max = (1u64 << prefix) - 1;
            let first = *b.first().ok_or("eof")? as u64 & max;
            *b = &b[1..];
            if first < max {
                return Ok(first);
            }
            let (mut v, mut shift) = (max, 0);
            loop {
                let x = *b.first().ok_or("eof in integer")?;
                *b = &b[1..];
                v += ((x & 0x7f) as u64) << shift;
                shift += 7;
                if x < 0x80 {
                    return Ok(v);
                }
            }
        }
        fn string(b: &mut &[u8]) -> Result<String, String> {
            if b.first().ok_or("eof")? & 0x80 != 0 {
                return Err("huffman not supported".into());
            }
            let n = int(b, 7)? as usize;
            if b.len() < n {
                return Err("eof in string".into());
            }
            let s = String::from_utf8(b[..n].to_vec()).map_err(|e| e.to_string())?;
            *b = &b[n..];
            Ok(s)
        }
        let name_of = |i: u64| -> Result<String, String> {
            match i {
                31 => Ok("content-type".into()),
                1..=14 => Ok(STATIC[i as usize - 1].0.into()),
                _ => Err(format!("name index {i} not in this test table")),
            }
        };
        let mut fields = Vec::new();
        let mut size_updates = Vec::new();
        let mut seen_field = false;
        while !b.is_empty() {
            let c = b[0];
            if c & 0x80 != 0 {
                let i = int(&mut b, 7)?;
                let (n, v) = STATIC.get((i as usize).wrapping_sub(1)).ok_or(format!("index {i}"))?;
                fields.push((n.to_string(), v.to_string()));
                seen_field = true;
            } else if c & 0xe0 == 0x20 {
                if seen_field {
                    return Err("table size update after a field".into());
                }
                size_updates.push(int(&mut b, 5)?);
            } else {
                let prefix = if c & 0x40 != 0 { 6 } else { 4 };
                let i = int(&mut b, prefix)?;
                let name = if i == 0 { string(&mut b)? } else { name_of(i)? };
                let value = string(&mut b)?;
                fields.push((name, value));
                seen_field = true;
            }
        }
        Ok((fields, size_updates))
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    /// Checks one complete answer on `stream` in `f` (frames of that stream
    /// only): headers, DATA holding `n` messages of `b` bytes, trailers.
    fn check_answer(f: &[Frame], stream: u32, n: u64, b: u64) {
        let f: Vec<&Frame> = f.iter().filter(|x| x.2 == stream).collect();
        assert!(f.len() >= 2, "{f:?}");
        let (ty, flags, _, ref block) = *f[0];
        assert_eq!((ty, flags), (T_HEADERS, F_END_HEADERS));
        assert_eq!(
            hpack_decode(block).unwrap().0,
            pairs(&[(":status", "200"), ("content-type", "application/grpc")])
        );
        let mut p = crate::frame::FrameParser::new();
        for x in &f[1..f.len() - 1] {
            assert_eq!((x.0, x.1), (T_DATA, 0));
            assert!(x.3.len() <= MAX_FRAME);
            p.feed(&x.3, None).unwrap();
        }
        p.finish().unwrap();
        assert_eq!((p.messages, p.payload_bytes), (n, n * b));
        let (ty, flags, _, ref block) = *f[f.len() - 1];
        assert_eq!((ty, flags), (T_HEADERS, F_END_STREAM | F_END_HEADERS));
        assert_eq!(hpack_decode(block).unwrap().0, pairs(&[("grpc-status", "0")]));
    }

    #[test]
    fn answer_frames_unary_and_stream() {
        for (n, b, data_frames) in [(1usize, 397usize, 1usize), (19, 397, 1), (0, 397, 0), (3, 0, 1), (200, 4000, 49)] {
            let c = Canned::new(n, b).unwrap();
            let mut out = Vec::new();
            c.put_full(&mut out, 0x7fff_fffd);
            c.put_full(&mut out, 1);
            let f = frames(&out);
            assert_eq!(f.len(), 2 * (2 + data_frames), "n={n} b={b}");
            for s in [0x7fff_fffd, 1] {
                let mine: Vec<Frame> = f.iter().filter(|x| x.2 == s).cloned().collect();
                assert_eq!(mine.len(), 2 + data_frames);
                assert_eq!(mine[0].3.len(), 20);
                assert_eq!(mine.last().unwrap().3.len(), 15);
                let data: usize = mine.iter().filter(|x| x.0 == T_DATA).map(|x| x.3.len()).sum();
                assert_eq!(data, n * (b + 5));
                check_answer(&f, s, n as u64, b as u64);
            }
        }
        // exact bytes of the unary answer
        let c = Canned::new(1, 397).unwrap();
        let mut out = Vec::new();
        c.put_full(&mut out, 5);
        assert_eq!(&out[..9], &[0, 0, 20, 1, 4, 0, 0, 0, 5]);
        assert_eq!(&out[29..38], &[0, 0x01, 0x92, 0, 0, 0, 0, 0, 5]); // 402 bytes
        assert_eq!(&out[38..43], &[0, 0, 0, 0x01, 0x8d]); // message of 397 bytes
        assert_eq!(&out[440..449], &[0, 0, 15, 1, 5, 0, 0, 0, 5]);
        assert_eq!(out.len(), 449 + 15);
    }

    #[test]
    fn hpack_blocks_decode() {
        assert_eq!(
            hpack_decode(RESPONSE_HEADER_BLOCK).unwrap(),
            (pairs(&[(":status", "200"), ("content-type", "application/grpc")]), vec![])
        );
        assert_eq!(hpack_decode(TRAILER_BLOCK).unwrap(), (pairs(&[("grpc-status", "0")]), vec![]));
        let c = Canned::new(1, 10).unwrap();
        assert_eq!(
            hpack_decode(&c.headers_tsu[9..]).unwrap(),
            (pairs(&[(":status", "200"), ("content-type", "application/grpc")]), vec![0])
        );
        // the decoder itself: a literal with incremental indexing and a new
        // name, then one with the indexed name 31 (6-bit prefix)
        assert_eq!(hpack_decode(b"\x40\x01a\x01b\x5f\x01c").unwrap().0, pairs(&[("a", "b"), ("content-type", "c")]));
        assert!(hpack_decode(b"\x88\x20").is_err());
    }

    fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        put_frame_header(&mut v, payload.len(), ty, flags, stream);
        v.extend_from_slice(payload);
        v
    }

    fn settings(list: &[(u16, u32)]) -> Vec<u8> {
        let mut p = Vec::new();
        for &(id, v) in list {
            p.extend_from_slice(&id.to_be_bytes());
            p.extend_from_slice(&v.to_be_bytes());
        }
        frame(T_SETTINGS, 0, 0, &p)
    }

    fn window_update(stream: u32, inc: u32) -> Vec<u8> {
        frame(T_WINDOW_UPDATE, 0, stream, &inc.to_be_bytes())
    }

    /// A request like grpcload's: HEADERS (some HPACK bytes we never decode)
    /// then one DATA frame with END_STREAM.
    fn request(stream: u32) -> Vec<u8> {
        let mut v = frame(T_HEADERS, F_END_HEADERS, stream, b"\x83\x86\x44\x0b/n.S/Method\x41\x01x");
        v.extend(frame(T_DATA, F_END_STREAM, stream, &[0, 0, 0, 0, 3, 0x0a, 1, b'x']));
        v
    }

    /// Feeds `input` in chunks of the given sizes the way the I/O layer
    /// does (keeping an incomplete frame for the next round); returns the
    /// output (after our preface).
    fn run_session(s: &mut Session, c: &Canned, input: &[u8], chunk: usize) -> Result<Vec<u8>, Close> {
        let mut buf = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            let used = s.feed(&buf, c)?;
            buf.drain(..used);
        }
        assert!(buf.is_empty(), "unconsumed bytes");
        Ok(std::mem::take(&mut s.out))
    }

    fn new_session() -> Session {
        let mut s = Session::new();
        let preface = std::mem::take(&mut s.out);
        let f = frames(&preface);
        assert_eq!(f.len(), 2);
        assert_eq!((f[0].0, f[0].1, f[0].2), (T_SETTINGS, 0, 0));
        assert_eq!(f[0].3, [0, 3, 0, 0x10, 0, 0, 0, 4, 1, 0, 0, 0]);
        assert_eq!((f[1].0, f[1].2), (T_WINDOW_UPDATE, 0));
        s
    }

    #[test]
    fn frames_split_anywhere() {
        let c = Canned::new(19, 397).unwrap();
        let mut input = PREFACE.to_vec();
        input.extend(settings(&[(S_INITIAL_WINDOW_SIZE, 4 << 20), (0xfe03, 1)]));
        input.extend(window_update(0, 16 << 20));
        input.extend(request(1));
        input.extend(frame(T_PRIORITY, 0, 3, &[0, 0, 0, 0, 16]));
        input.extend(request(3));
        input.extend(frame(0xfa, 0, 0, b"unknown frame type"));
        input.extend(frame(T_PING, 0, 0, b"12345678"));
        input.extend(frame(T_PING, F_ACK, 0, b"ignored!"));
        input.extend(frame(T_SETTINGS, F_ACK, 0, b""));
        let whole = run_session(&mut new_session(), &c, &input, input.len()).unwrap();
        let f = frames(&whole);
        assert_eq!((f[0].0, f[0].1, f[0].2, f[0].3.len()), (T_SETTINGS, F_ACK, 0, 0));
        check_answer(&f, 1, 19, 397);
        check_answer(&f, 3, 19, 397);
        let last = f.last().unwrap();
        assert_eq!((last.0, last.1, last.2, &last.3[..]), (T_PING, F_ACK, 0, &b"12345678"[..]));
        assert_eq!(f.len(), 1 + 3 + 3 + 1);
        for chunk in [1, 2, 3, 7, 9, 10, 23, 24, 25, 100] {
            assert_eq!(run_session(&mut new_session(), &c, &input, chunk).unwrap(), whole, "chunk {chunk}");
        }
        for cut in 0..input.len() {
            let mut s = new_session();
            let mut buf = input.clone();
            let n = s.feed(&buf[..cut], &c).unwrap();
            buf.drain(..n);
            assert_eq!(s.feed(&buf, &c).unwrap(), buf.len(), "cut {cut}");
            assert_eq!(s.out, whole, "cut {cut}");
        }
    }

    #[test]
    fn stream_window_is_honoured() {
        // 5 messages of 995 bytes: 5000 bytes of DATA; the client allows 1000 per stream
        let c = Canned::new(5, 995).unwrap();
        let mut s = new_session();
        let mut input = PREFACE.to_vec();
        input.extend(settings(&[(S_INITIAL_WINDOW_SIZE, 1000)]));
        input.extend(request(1));
        let f = frames(&run_session(&mut s, &c, &input, 1 << 20).unwrap());
        let kinds: Vec<(u8, usize)> = f.iter().map(|x| (x.0, x.3.len())).collect();
        assert_eq!(kinds, vec![(T_SETTINGS, 0), (T_HEADERS, 20), (T_DATA, 1000)]);
        // WINDOW_UPDATE for another stream or a closed one changes nothing
        assert!(run_session(&mut s, &c, &window_update(9, 100), 100).unwrap().is_empty());
        let f = frames(&run_session(&mut s, &c, &window_update(1, 2500), 100).unwrap());
        assert_eq!(f.iter().map(|x| (x.0, x.3.len())).collect::<Vec<_>>(), vec![(T_DATA, 2500)]);
        // the client raises the initial window: the delta applies to open streams
        let f = frames(&run_session(&mut s, &c, &settings(&[(S_INITIAL_WINDOW_SIZE, 2000)]), 100).unwrap());
        assert_eq!(f.iter().map(|x| (x.0, x.3.len())).collect::<Vec<_>>(), vec![(T_SETTINGS, 0), (T_DATA, 1000)]);
        let f = frames(&run_session(&mut s, &c, &window_update(1, 10_000), 100).unwrap());
        assert_eq!(f.iter().map(|x| (x.0, x.1, x.3.len())).collect::<Vec<_>>(), vec![(T_DATA, 0, 500), (T_HEADERS, 5, 15)]);
        assert!(s.pending.is_empty());
    }

    #[test]
    fn connection_window_is_honoured() {
        // 200 x 4000 bytes: 801000 bytes per answer, the default connection window is 65535
        let c = Canned::new(200, 4000).unwrap();
        let mut s = new_session();
        let mut input = PREFACE.to_vec();
        input.extend(settings(&[(S_INITIAL_WINDOW_SIZE, 1 << 30)]));
        input.extend(request(1));
        input.extend(request(3));
        let mut all = run_session(&mut s, &c, &input, 1 << 20).unwrap();
        let data = |b: &[u8]| frames(b).iter().filter(|x| x.0 == T_DATA).map(|x| x.3.len()).sum::<usize>();
        assert_eq!(data(&all), 65535);
        let mut rounds = 0;
        while !s.pending.is_empty() {
            let o = run_session(&mut s, &c, &window_update(0, 30_000), 100).unwrap();
            assert_eq!(data(&o), 30_000.min(2 * 801_000 - data(&all)));
            all.extend(o);
            rounds += 1;
        }
        assert_eq!(rounds, (2 * 801_000 - 65535 + 29_999) / 30_000);
        let f = frames(&all);
        check_answer(&f, 1, 200, 4000);
        check_answer(&f, 3, 200, 4000);
        // the first answer was served first
        let last1 = f.iter().rposition(|x| x.2 == 1).unwrap();
        let first3data = f.iter().position(|x| x.2 == 3 && x.0 == T_DATA).unwrap();
        assert!(last1 < first3data);
    }

    #[test]
    fn early_stream_credit_and_reset() {
        let c = Canned::new(1, 995).unwrap(); // 1000 bytes of DATA
        let mut s = new_session();
        let mut input = PREFACE.to_vec();
        input.extend(settings(&[(S_INITIAL_WINDOW_SIZE, 0)]));
        input.extend(frame(T_HEADERS, F_END_HEADERS, 1, b"\x83"));
        input.extend(window_update(1, 1000));
        input.extend(frame(T_DATA, F_END_STREAM, 1, b""));
        // stream 3: no credit, then reset by the client while waiting
        input.extend(frame(T_HEADERS, F_END_HEADERS | F_END_STREAM, 3, b"\x83"));
        input.extend(frame(T_RST_STREAM, 0, 3, &8u32.to_be_bytes()));
        input.extend(window_update(3, 1000));
        // stream 5: reset before its request ends; its DATA is then ignored
        input.extend(frame(T_HEADERS, F_END_HEADERS, 5, b"\x83"));
        input.extend(frame(T_RST_STREAM, 0, 5, &8u32.to_be_bytes()));
        input.extend(window_update(5, 1000));
        input.extend(frame(T_DATA, F_END_STREAM, 5, b""));
        let f = frames(&run_session(&mut s, &c, &input, 7).unwrap());
        check_answer(&f, 1, 1, 995);
        let s3: Vec<_> = f.iter().filter(|x| x.2 == 3).collect();
        assert_eq!(s3.len(), 1); // its HEADERS only
        assert!(!f.iter().any(|x| x.2 == 5));
        assert!(s.pending.is_empty() && s.open.is_empty());
    }

    #[test]
    fn continuation_trailers_and_table_size() {
        let c = Canned::new(2, 10).unwrap();
        let mut s = new_session();
        let mut input = PREFACE.to_vec();
        input.extend(settings(&[(S_HEADER_TABLE_SIZE, 0)]));
        input.extend(frame(T_HEADERS, F_END_STREAM, 1, b"\x83\x86"));
        input.extend(frame(T_CONTINUATION, 0, 1, b"\x84"));
        input.extend(frame(T_CONTINUATION, F_END_HEADERS, 1, b"\x41\x01x"));
        // stream 3: body in two DATA frames, then request trailers end it
        input.extend(frame(T_HEADERS, F_END_HEADERS, 3, b"\x83"));
        input.extend(frame(T_DATA, 0, 3, b"abc"));
        input.extend(frame(T_DATA, 0x8, 3, b"\x02de\0\0")); // padded
        input.extend(frame(T_HEADERS, F_END_HEADERS | F_END_STREAM, 3, b"\x40\x01a\x01b"));
        let f = frames(&run_session(&mut s, &c, &input, 5).unwrap());
        assert_eq!(f[0].0, T_SETTINGS);
        // the first header block after the SETTINGS ACK starts with a size update to 0
        let h1 = f.iter().find(|x| x.2 == 1).unwrap();
        assert_eq!(hpack_decode(&h1.3).unwrap().1, vec![0]);
        let h3 = f.iter().find(|x| x.2 == 3).unwrap();
        assert_eq!(hpack_decode(&h3.3).unwrap().1, Vec::<u64>::new());
        check_answer(&f, 1, 2, 10);
        check_answer(&f, 3, 2, 10);
        // a frame in the middle of a header block is an error
        let mut s = new_session();
        let mut input = PREFACE.to_vec();
        input.extend(frame(T_HEADERS, 0, 1, b"\x83"));
        input.extend(frame(T_PING, 0, 0, b"12345678"));
        assert_eq!(run_session(&mut s, &c, &input, 1000), Err(Close));
    }

    #[test]
    fn request_credit_is_given_back() {
        let c = Canned::new(1, 10).unwrap();
        let mut s = new_session();
        run_session(&mut s, &c, PREFACE, 24).unwrap();
        run_session(&mut s, &c, &frame(T_HEADERS, F_END_HEADERS, 1, b"\x83"), 100).unwrap();
        let chunk = frame(T_DATA, 0, 1, &[0u8; MAX_FRAME]);
        let mut stream_inc = 0u64;
        let mut conn_inc = 0u64;
        let total_frames = (CONN_UPDATE_AT as usize / MAX_FRAME) + 1;
        for _ in 0..total_frames {
            let used = s.feed(&chunk, &c).unwrap();
            assert_eq!(used, chunk.len());
            for (ty, _, stream, p) in frames(&std::mem::take(&mut s.out)) {
                assert_eq!(ty, T_WINDOW_UPDATE);
                let inc = u32::from_be_bytes(p[..4].try_into().unwrap()) as u64;
                if stream == 0 {
                    conn_inc += inc;
                } else {
                    stream_inc += inc;
                }
            }
        }
        let sent = (total_frames * MAX_FRAME) as u64;
        // the client never has less than half of each window left
        assert!(sent - stream_inc < OUR_STREAM_WINDOW as u64 / 2 + MAX_FRAME as u64, "{sent} {stream_inc}");
        assert!(sent - conn_inc < OUR_CONN_WINDOW as u64 / 2 + MAX_FRAME as u64, "{sent} {conn_inc}");
        assert!(conn_inc > 0 && stream_inc > 0);
    }

    #[test]
    fn protocol_errors_close() {
        let c = Canned::new(1, 10).unwrap();
        // HTTP/1.1 instead of the preface
        assert_eq!(Session::new().feed(b"GET / HTTP/1.1\r\n", &c), Err(Close));
        assert_eq!(Session::new().feed(b"PRI * HTTP/2.0\r\n\r\nXX", &c), Err(Close));
        assert_eq!(Session::new().feed(b"PRI * HTTP", &c), Ok(0));
        // a frame above 16384 bytes: GOAWAY(FRAME_SIZE_ERROR) is queued
        let mut s = new_session();
        let mut input = PREFACE.to_vec();
        input.extend(request(1));
        input.extend_from_slice(&[0, 0x40, 0x01, 0, 0, 0, 0, 0, 3]);
        assert_eq!(s.feed(&input, &c), Err(Close));
        let f = frames(&std::mem::take(&mut s.out));
        let g = f.last().unwrap();
        assert_eq!((g.0, &g.3[..]), (T_GOAWAY, &[0, 0, 0, 1, 0, 0, 0, 6][..]));
        check_answer(&f, 1, 1, 10);
        // malformed fixed-size frames and frames on the wrong stream
        for bad in [
            frame(T_PING, 0, 0, b"1234"),
            frame(T_SETTINGS, 0, 1, b""),
            frame(T_SETTINGS, 0, 0, b"12345"),
            frame(T_WINDOW_UPDATE, 0, 0, b"123"),
            frame(T_RST_STREAM, 0, 0, b"1234"),
            frame(T_DATA, 0, 0, b""),
            frame(T_PUSH_PROMISE, F_END_HEADERS, 1, b"\0\0\0\x02"),
            frame(T_CONTINUATION, F_END_HEADERS, 1, b""),
            settings(&[(S_INITIAL_WINDOW_SIZE, 1 << 31)]),
            settings(&[(S_MAX_FRAME_SIZE, 100)]),
        ] {
            let mut s = new_session();
            let mut input = PREFACE.to_vec();
            input.extend(bad);
            assert_eq!(s.feed(&input, &c), Err(Close));
        }
    }

    #[test]
    fn goaway_finishes_after_open_streams() {
        let c = Canned::new(1, 10).unwrap();
        let mut s = new_session();
        let mut input = PREFACE.to_vec();
        input.extend(frame(T_HEADERS, F_END_HEADERS, 1, b"\x83"));
        input.extend(frame(T_GOAWAY, 0, 0, &[0u8; 8]));
        run_session(&mut s, &c, &input, 1000).unwrap();
        assert!(!s.finished());
        let f = frames(&run_session(&mut s, &c, &frame(T_DATA, F_END_STREAM, 1, b""), 100).unwrap());
        check_answer(&f, 1, 1, 10);
        assert!(s.finished());
    }

    /// End to end over TCP with an independent client (the h2 crate).
    #[test]
    fn serves_h2_client() {
        for (n, b) in [(1usize, 397usize), (19, 397), (200, 4000)] {
            let fd = bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
            let addr = local_addr(fd).unwrap();
            let canned: &'static Canned = Box::leak(Box::new(Canned::new(n, b).unwrap()));
            std::thread::spawn(move || serve(fd, canned));
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                // small windows: the 800 KB answers need many WINDOW_UPDATEs
                let (client, conn) = h2::client::Builder::new()
                    .initial_window_size(20_000)
                    .initial_connection_window_size(70_000)
                    .handshake::<_, bytes::Bytes>(tcp)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                let mut tasks = Vec::new();
                for _ in 0..8 {
                    let mut client = client.clone();
                    tasks.push(tokio::spawn(async move {
                        for _ in 0..20 {
                            client = client.ready().await.unwrap();
                            let req = http::Request::post("/n.S/M")
                                .header("content-type", "application/grpc")
                                .body(())
                                .unwrap();
                            let (resp, mut send) = client.send_request(req, false).unwrap();
                            send.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 3, 0x0a, 1, b'x']), true).unwrap();
                            let resp = resp.await.unwrap();
                            assert_eq!(resp.status(), 200);
                            assert_eq!(resp.headers()["content-type"], "application/grpc");
                            let mut body = resp.into_body();
                            let mut p = crate::frame::FrameParser::new();
                            while let Some(chunk) = body.data().await {
                                let chunk = chunk.unwrap();
                                let _ = body.flow_control().release_capacity(chunk.len());
                                p.feed(&chunk, None).unwrap();
                            }
                            p.finish().unwrap();
                            assert_eq!((p.messages, p.payload_bytes), (n as u64, (n * b) as u64));
                            let t = body.trailers().await.unwrap().unwrap();
                            assert_eq!(t["grpc-status"], "0");
                        }
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
            });
        }
    }
}
