//! wsload: a WebSocket load generator (RFC 6455 client, no extensions).
//!
//! Three modes:
//! * closed loop: N connections, each with K messages in flight; every echo
//!   that arrives before the end releases the next message;
//! * open loop (`--rate`): message i is due at t0 + i/rate, on connection
//!   i mod N; its latency counts from that due time, so a server that stalls
//!   cannot hide the wait (coordinated omission corrected by construction);
//! * ramp (`--ramp 0,1000,5000`): idle connections opened in steps; at each
//!   step the server is asked to collect garbage (`--gc-path`), given time to
//!   settle, then held while the caller samples its memory; the step's
//!   window is reported in CLOCK_MONOTONIC seconds.
//!
//! Every message is derived from (connection, sequence) (`crate::ws`), so
//! each echo is checked byte for byte against what was sent, and in order.
//! Server pings are answered; close frames are counted by code.
//!
//! Each thread runs a current_thread tokio runtime with its share of the
//! connections (connection c belongs to thread c mod T). A connection is one
//! task that owns its socket and buffers and works on readiness: it reads
//! and checks whatever arrived, then writes whatever is queued.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};
use tokio::task::LocalSet;

use crate::cli::{num, seconds};
use crate::clock::{mono_ns, ns_to_s, InstantMap};
use crate::load::{run_threads, StartLine, TimerFd};
use crate::report::{jf, jstr, latency};
use crate::schedule::{split_even, ThreadSchedule};
use crate::stats::Stats;
use crate::ws::{self, Pools};

const RECONNECT_BACKOFF_NS: u64 = 100_000_000;
const DRAIN_GRACE_NS: u64 = 50_000_000;
const LATE_NS: u64 = 1_000_000;
/// Timeouts are checked at this granularity (the timer is not re-armed per message).
const TICK_NS: u64 = 100_000_000;
/// How long a closing handshake may take once the run is over.
const CLOSE_WAIT_NS: u64 = 2_000_000_000;

pub const USAGE: &str = "\
usage: wsload --target HOST:PORT [--path /connect] [--connections 1000] [--inflight 1]
              [--size 2048] [--kind text|binary] [--duration 6] [--timeout 10]
              [--rate R] [--max-inflight 256] [--threads 1] [--connect-concurrency 128]
              [--ramp 0,1000,5000,10000 --hold 5 --settle 2 [--gc-path /langbench-gc]]
              [--max-message 1048576] [--out FILE] [--version]

  --target               server address (ws:// over plain TCP), e.g. 127.0.0.1:8080
  --path                 request path of the opening handshake (default /connect)
  --connections          WebSocket connections (default 1000)
  --inflight             closed loop: messages in flight on each connection (default 1)
  --size                 bytes per message (default 2048)
  --kind                 text (printable ASCII, valid UTF-8) or binary (default text)
  --duration             seconds during which messages start (default 6; 5s, 500ms work)
  --timeout              seconds an echo may take, and to drain at the end (default 10)
  --rate                 open loop: message i is due at t0 + i/rate, on connection i mod N
  --max-inflight         open loop: messages in flight per connection before sends wait
  --threads              OS threads, each with its own runtime and connections (default 1)
  --connect-concurrency  opening handshakes in progress at once, per thread (default 128)
  --ramp                 idle-connection steps (connections open in all, non-decreasing)
  --hold                 ramp: seconds each step is held (its memory window; default 5)
  --settle               ramp: seconds between the GC request and the hold (default 2)
  --gc-path              ramp: HTTP GET this path before each settle (expects 2xx)
  --max-message          largest frame accepted from the server (default 1 MiB)
  --out                  write the JSON result here (default stdout)";

#[derive(Debug, Clone)]
pub struct WsConfig {
    pub target: String,
    pub path: String,
    pub connections: usize,
    pub inflight: usize,
    pub size: usize,
    pub text: bool,
    pub duration_s: f64,
    pub timeout_s: f64,
    pub rate: Option<f64>,
    pub max_inflight: usize,
    pub threads: usize,
    pub connect_concurrency: usize,
    pub ramp: Option<Vec<usize>>,
    pub hold_s: f64,
    pub settle_s: f64,
    pub gc_path: Option<String>,
    pub max_message: usize,
    pub out: Option<PathBuf>,
}

pub enum WsParsed {
    Run(Box<WsConfig>),
    Help,
    Version,
}

fn positive_s(name: &str, v: &str) -> Result<f64, String> {
    // 0 is allowed for --settle
    if v.trim() == "0" {
        return Ok(0.0);
    }
    seconds(name, v)
}

pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<WsParsed, String> {
    let mut c = WsConfig {
        target: String::new(),
        path: "/connect".into(),
        connections: 1000,
        inflight: 1,
        size: 2048,
        text: true,
        duration_s: 6.0,
        timeout_s: 10.0,
        rate: None,
        max_inflight: 256,
        threads: 1,
        connect_concurrency: 128,
        ramp: None,
        hold_s: 5.0,
        settle_s: 2.0,
        gc_path: None,
        max_message: 1 << 20,
        out: None,
    };
    let mut target = None;
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(WsParsed::Help),
            "-V" | "--version" => return Ok(WsParsed::Version),
            _ => {}
        }
        let mut value = || -> Result<String, String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it.next().ok_or_else(|| format!("{name} needs a value")),
            }
        };
        match name.as_str() {
            "--target" => target = Some(value()?),
            "--path" => c.path = value()?,
            "--connections" | "-c" => c.connections = num(&name, &value()?)?,
            "--inflight" => c.inflight = num(&name, &value()?)?,
            "--size" => c.size = num(&name, &value()?)?,
            "--kind" => {
                c.text = match value()?.as_str() {
                    "text" => true,
                    "binary" => false,
                    other => return Err(format!("--kind: {other:?} is neither text nor binary")),
                }
            }
            "--duration" | "-d" => c.duration_s = seconds(&name, &value()?)?,
            "--timeout" => c.timeout_s = seconds(&name, &value()?)?,
            "--rate" | "-r" => {
                let r: f64 = num(&name, &value()?)?;
                if !r.is_finite() || r <= 0.0 {
                    return Err(format!("{name}: must be > 0"));
                }
                c.rate = Some(r);
            }
            "--max-inflight" => c.max_inflight = num(&name, &value()?)?,
            "--threads" | "-t" => c.threads = num(&name, &value()?)?,
            "--connect-concurrency" => c.connect_concurrency = num(&name, &value()?)?,
            "--ramp" => {
                let mut steps = Vec::new();
                for s in value()?.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    steps.push(num::<usize>("--ramp", s)?);
                }
                if steps.is_empty() || steps.windows(2).any(|w| w[1] < w[0]) {
                    return Err("--ramp: a non-empty, non-decreasing list of connection counts".into());
                }
                c.ramp = Some(steps);
            }
            "--hold" => c.hold_s = seconds(&name, &value()?)?,
            "--settle" => c.settle_s = positive_s(&name, &value()?)?,
            "--gc-path" => c.gc_path = Some(value()?),
            "--max-message" => c.max_message = num(&name, &value()?)?,
            "--out" | "-o" => c.out = Some(PathBuf::from(value()?)),
            other if other.starts_with('-') => return Err(format!("unknown option {other} (see --help)")),
            other => {
                if target.is_some() {
                    return Err(format!("unexpected argument {other:?}"));
                }
                target = Some(other.to_string());
            }
        }
    }
    c.target = target.ok_or("--target is required")?;
    if !c.path.starts_with('/') || c.path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!("--path {:?}: must start with / and hold no spaces or control characters", c.path));
    }
    if let Some(g) = &c.gc_path {
        if !g.starts_with('/') || g.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(format!("--gc-path {g:?}: must start with / and hold no spaces or control characters"));
        }
    }
    for (v, what) in [(c.inflight, "--inflight"), (c.threads, "--threads"), (c.max_inflight, "--max-inflight"),
        (c.connect_concurrency, "--connect-concurrency")]
    {
        if v == 0 {
            return Err(format!("{what} must be >= 1"));
        }
    }
    if c.ramp.is_none() {
        if c.connections == 0 {
            return Err("--connections must be >= 1".into());
        }
        if c.threads > c.connections {
            return Err(format!("--threads ({}) must not exceed --connections ({})", c.threads, c.connections));
        }
    }
    if c.size == 0 || c.size > ws::MAX_MESSAGE {
        return Err(format!("--size: 1 to {} bytes", ws::MAX_MESSAGE));
    }
    if c.max_message < c.size {
        return Err("--max-message must be at least --size".into());
    }
    Ok(WsParsed::Run(Box::new(c)))
}

// ---------------------------------------------------------------------------
// Plan and statistics

pub struct WsPlan {
    pub cfg: WsConfig,
    pub addr: SocketAddr,
    pub pools: Pools,
    pub timeout_ns: u64,
}

impl WsPlan {
    pub fn new(cfg: WsConfig) -> Result<WsPlan, String> {
        let addr = crate::cli::resolve_target(&cfg.target)?;
        let timeout_ns = (cfg.timeout_s * 1e9).round() as u64;
        Ok(WsPlan { cfg, addr, pools: Pools::new(), timeout_ns })
    }

    fn opcode(&self) -> u8 {
        if self.cfg.text {
            ws::OP_TEXT
        } else {
            ws::OP_BINARY
        }
    }
}

/// Per-second latency histograms: 1 µs .. 60 s, 2 significant digits.
fn second_histogram() -> Histogram<u32> {
    Histogram::new_with_bounds(1_000, 60_000_000_000, 2).expect("histogram bounds")
}

#[derive(Debug)]
pub struct WsStats {
    /// count/ok/errors/cut_off/reconnects/latency/per_second/connects as in
    /// grpcload; a "call" here is one message and its echo.
    pub base: Stats,
    pub sent: u64,
    pub late: u64,
    pub unsent: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Close frames received, by status code.
    pub closes: BTreeMap<u16, u64>,
    /// Of those, the ones the server began (not an answer to our close).
    pub server_closes: u64,
    /// Connections on which our close got no close frame back in time.
    pub close_unanswered: u64,
    /// Connections that ended without any close frame (reset, EOF).
    pub dropped: u64,
    pub pings: u64,
    /// Connect + opening handshake, per successful connection.
    pub handshake: Histogram<u64>,
    pub connect_failures: u64,
    /// Latency of the answers completed in each second since t0.
    pub seconds: Vec<Histogram<u32>>,
}

impl WsStats {
    pub fn new(open_loop: bool) -> WsStats {
        WsStats {
            base: Stats::new(open_loop, 0),
            sent: 0,
            late: 0,
            unsent: 0,
            bytes_sent: 0,
            bytes_received: 0,
            closes: BTreeMap::new(),
            server_closes: 0,
            close_unanswered: 0,
            dropped: 0,
            pings: 0,
            handshake: crate::stats::new_histogram(),
            connect_failures: 0,
            seconds: Vec::new(),
        }
    }

    pub fn merge(&mut self, o: WsStats) {
        self.base.merge(o.base);
        self.sent += o.sent;
        self.late += o.late;
        self.unsent += o.unsent;
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        for (k, v) in o.closes {
            *self.closes.entry(k).or_insert(0) += v;
        }
        self.server_closes += o.server_closes;
        self.close_unanswered += o.close_unanswered;
        self.dropped += o.dropped;
        self.pings += o.pings;
        self.handshake.add(&o.handshake).expect("same bounds");
        self.connect_failures += o.connect_failures;
        while self.seconds.len() < o.seconds.len() {
            self.seconds.push(second_histogram());
        }
        for (a, b) in self.seconds.iter_mut().zip(o.seconds.iter()) {
            a.add(b).expect("same bounds");
        }
    }

    fn fail(&mut self, kind: &str, n: u64) {
        if n == 0 {
            return;
        }
        self.base.count += n;
        self.base.errors += n;
        if let Some(c) = self.base.error_kinds.get_mut(kind) {
            *c += n;
        } else {
            self.base.error_kinds.insert(kind.to_string(), n);
        }
    }
}

// ---------------------------------------------------------------------------
// Per-thread context

struct Ctx {
    plan: Arc<WsPlan>,
    stats: RefCell<WsStats>,
    imap: InstantMap,
    t0_ns: Cell<u64>,
    t_end_ns: Cell<u64>,
    first_send_ns: Cell<u64>,
    /// Messages written and not resolved yet.
    inflight: Cell<u64>,
    live: Cell<usize>,
    all_done: Notify,
    scheduling: Cell<bool>,
    /// Open loop: each connection's queue of due times.
    slots: RefCell<Vec<Rc<Slot>>>,
}

#[derive(Default)]
struct Slot {
    queue: RefCell<VecDeque<u64>>,
    wake: Notify,
}

impl Ctx {
    fn new(plan: Arc<WsPlan>) -> Ctx {
        let open = plan.cfg.rate.is_some();
        Ctx {
            plan,
            stats: RefCell::new(WsStats::new(open)),
            imap: InstantMap::new(),
            t0_ns: Cell::new(0),
            t_end_ns: Cell::new(u64::MAX),
            first_send_ns: Cell::new(u64::MAX),
            inflight: Cell::new(0),
            live: Cell::new(0),
            all_done: Notify::new(),
            scheduling: Cell::new(open),
            slots: RefCell::new(Vec::new()),
        }
    }

    fn exit(&self) {
        self.live.set(self.live.get() - 1);
        if self.live.get() == 0 {
            self.all_done.notify_waiters();
        }
    }

    fn ok(&self, t_sched: u64, t_send: u64, t_done: u64) {
        let mut st = self.stats.borrow_mut();
        let t0 = self.t0_ns.get();
        let lat = t_done.saturating_sub(t_sched);
        {
            let s = &mut st.base;
            s.count += 1;
            s.ok += 1;
            s.latency.saturating_record(lat);
            if let Some(h) = s.latency_uncorrected.as_mut() {
                h.saturating_record(t_done.saturating_sub(t_send));
            }
            s.count_ok_second(t0, t_done);
            if t_done > s.last_answer_ns {
                s.last_answer_ns = t_done;
            }
        }
        let sec = (t_done.saturating_sub(t0) / 1_000_000_000) as usize;
        while st.seconds.len() <= sec {
            st.seconds.push(second_histogram());
        }
        st.seconds[sec].saturating_record(lat.max(1_000));
    }
}

// ---------------------------------------------------------------------------
// Connections

/// Why a connection's loop ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The run is over and nothing is in flight: close politely.
    Done,
    /// The connection broke (error kind); in-flight messages already counted.
    Broken,
    /// Our close was answered (or the server closed): the socket is finished.
    Closed,
}

struct Conn {
    c: u64,
    stream: Option<TcpStream>,
    rbuf: Vec<u8>,
    rpos: usize,
    rlen: usize,
    wbuf: Vec<u8>,
    wpos: usize,
    /// (sequence, due time, send time) of every message awaiting its echo.
    fifo: VecDeque<(u64, u64, u64)>,
    seq: u64,
    frag: Vec<u8>,
    frag_op: u8,
    rng: u64,
    close_sent: bool,
    connected_before: bool,
    next_try_ns: u64,
}

impl Conn {
    fn new(c: u64, rcap: usize) -> Conn {
        Conn {
            c,
            stream: None,
            rbuf: vec![0; rcap],
            rpos: 0,
            rlen: 0,
            wbuf: Vec::new(),
            wpos: 0,
            fifo: VecDeque::new(),
            seq: 0,
            frag: Vec::new(),
            frag_op: 0,
            rng: 0x9E37_79B9_7F4A_7C15 ^ (c.wrapping_add(1)).wrapping_mul(0xBF58_476D_1CE4_E5B9),
            close_sent: false,
            connected_before: false,
            next_try_ns: 0,
        }
    }

    #[inline]
    fn mask_key(&mut self) -> [u8; 4] {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng as u32).to_ne_bytes()
    }

    fn reset_io(&mut self) {
        self.stream = None;
        self.rpos = 0;
        self.rlen = 0;
        self.wbuf.clear();
        self.wpos = 0;
        self.frag.clear();
        self.frag_op = 0;
        self.close_sent = false;
    }

    /// TCP connect and opening handshake, within the plan's timeout.
    async fn connect(&mut self, ctx: &Ctx) -> Result<(), Cow<'static, str>> {
        let t = mono_ns();
        let timeout = Duration::from_nanos(ctx.plan.timeout_ns);
        let r = tokio::time::timeout(timeout, self.handshake(ctx)).await;
        let r = match r {
            Err(_) => Err(Cow::Borrowed("connect: timeout")),
            Ok(r) => r,
        };
        let mut st = ctx.stats.borrow_mut();
        match r {
            Ok(()) => {
                st.base.connects += 1;
                if self.connected_before {
                    st.base.reconnects += 1;
                }
                self.connected_before = true;
                st.handshake.saturating_record(mono_ns() - t);
                Ok(())
            }
            Err(e) => {
                self.reset_io();
                st.connect_failures += 1;
                self.next_try_ns = mono_ns() + RECONNECT_BACKOFF_NS;
                Err(e)
            }
        }
    }

    async fn handshake(&mut self, ctx: &Ctx) -> Result<(), Cow<'static, str>> {
        self.reset_io();
        let s = TcpStream::connect(ctx.plan.addr).await.map_err(|e| Cow::Owned(format!("connect: {}", e.kind())))?;
        let _ = s.set_nodelay(true);
        let key = ws::client_key(self.c.wrapping_mul(0x100_0000_01B3) ^ mono_ns());
        let mut req = Vec::with_capacity(256);
        ws::put_handshake(&mut req, &ctx.plan.cfg.target, &ctx.plan.cfg.path, &key);
        let mut off = 0;
        while off < req.len() {
            s.writable().await.map_err(|e| io_kind("connect", &e))?;
            match s.try_write(&req[off..]) {
                Ok(n) => off += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(io_kind("connect", &e)),
            }
        }
        let mut head = Vec::with_capacity(512);
        let mut buf = [0u8; 4096];
        loop {
            s.readable().await.map_err(|e| io_kind("connect", &e))?;
            match s.try_read(&mut buf) {
                Ok(0) => return Err(Cow::Borrowed("handshake: connection closed")),
                Ok(n) => head.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(io_kind("connect", &e)),
            }
            if let Some(used) = ws::check_handshake_answer(&head, &key)? {
                // frames may follow the head in the same read
                let rest = &head[used..];
                if rest.len() > self.rbuf.len() {
                    self.rbuf.resize(rest.len(), 0);
                }
                self.rbuf[..rest.len()].copy_from_slice(rest);
                self.rlen = rest.len();
                self.rpos = 0;
                self.stream = Some(s);
                return Ok(());
            }
        }
    }

    /// Queues message `seq` (masked) and remembers it.
    #[inline]
    fn queue_message(&mut self, ctx: &Ctx, t_sched: u64, now: u64) {
        let plan = &ctx.plan;
        let key = self.mask_key();
        ws::put_frame_head(&mut self.wbuf, plan.opcode(), plan.cfg.size, Some(key));
        let at = self.wbuf.len();
        ws::put_message(&mut self.wbuf, &plan.pools, self.c, self.seq, plan.cfg.size, plan.cfg.text);
        ws::apply_mask(&mut self.wbuf[at..], key, 0);
        self.fifo.push_back((self.seq, t_sched, now));
        self.seq += 1;
        ctx.inflight.set(ctx.inflight.get() + 1);
        if now < ctx.first_send_ns.get() {
            ctx.first_send_ns.set(now);
        }
        let mut st = ctx.stats.borrow_mut();
        st.sent += 1;
        if now > t_sched + LATE_NS {
            st.late += 1;
        }
    }

    fn queue_control(&mut self, opcode: u8, payload: &[u8]) {
        let key = self.mask_key();
        ws::put_frame(&mut self.wbuf, opcode, payload, Some(key));
    }

    fn queue_close(&mut self, code: u16) {
        if !self.close_sent {
            self.queue_control(ws::OP_CLOSE, &code.to_be_bytes());
            self.close_sent = true;
        }
    }

    /// Writes what is queued: Ok(true) when everything went out.
    fn flush(&mut self, ctx: &Ctx) -> std::io::Result<bool> {
        let Some(s) = self.stream.as_ref() else { return Ok(true) };
        while self.wpos < self.wbuf.len() {
            match s.try_write(&self.wbuf[self.wpos..]) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.wpos += n;
                    ctx.stats.borrow_mut().bytes_sent += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        self.wbuf.clear();
        self.wpos = 0;
        Ok(true)
    }

    /// Reads what is there: Ok(false) at end of stream.
    fn fill(&mut self, ctx: &Ctx) -> std::io::Result<bool> {
        let Some(s) = self.stream.as_ref() else { return Ok(false) };
        {
            if self.rpos == self.rlen {
                self.rpos = 0;
                self.rlen = 0;
            } else if self.rlen == self.rbuf.len() && self.rpos > 0 {
                self.rbuf.copy_within(self.rpos..self.rlen, 0);
                self.rlen -= self.rpos;
                self.rpos = 0;
            }
            if self.rlen == self.rbuf.len() {
                // a frame larger than the buffer: parse_frames grows it
                return Ok(true);
            }
            // one read per readiness event (see ws::read_once)
            let got = match ws::read_once(s, &mut self.rbuf[self.rlen..])? {
                None => return Ok(true),
                Some(0) => return Ok(false),
                Some(n) => n,
            };
            self.rlen += got;
            ctx.stats.borrow_mut().bytes_received += got as u64;
            Ok(true)
        }
    }

    /// Parses and handles every complete frame in the read buffer.
    /// `more`: closed loop, queue the next message for each echo.
    fn parse_frames(&mut self, ctx: &Ctx, more: bool) -> Result<Option<End>, Cow<'static, str>> {
        let plan = &ctx.plan;
        loop {
            let avail = &self.rbuf[self.rpos..self.rlen];
            let Some(h) = ws::parse_frame_head(avail, plan.cfg.max_message).map_err(Cow::Borrowed)? else {
                self.make_room(14); // the longest frame header
                return Ok(None);
            };
            if h.mask.is_some() {
                return Err(Cow::Borrowed("ws: masked frame from server"));
            }
            let total = h.head_len + h.len;
            if avail.len() < total {
                self.make_room(total);
                return Ok(None);
            }
            let (a, b) = (self.rpos + h.head_len, self.rpos + total);
            self.rpos += total;
            match h.opcode {
                ws::OP_TEXT | ws::OP_BINARY | ws::OP_CONT => {
                    if h.opcode == ws::OP_CONT {
                        if self.frag_op == 0 {
                            return Err(Cow::Borrowed("ws: continuation without a message"));
                        }
                        self.frag.extend_from_slice(&self.rbuf[a..b]);
                        if self.frag.len() > plan.cfg.max_message {
                            return Err(Cow::Borrowed("ws: message too large"));
                        }
                        if h.fin {
                            let msg = std::mem::take(&mut self.frag);
                            let op = self.frag_op;
                            self.frag_op = 0;
                            self.on_message(ctx, op, &msg, more);
                            self.frag = msg;
                            self.frag.clear();
                        }
                    } else if self.frag_op != 0 {
                        return Err(Cow::Borrowed("ws: new message inside a fragmented one"));
                    } else if h.fin {
                        let msg = std::mem::take(&mut self.rbuf);
                        self.on_message(ctx, h.opcode, &msg[a..b], more);
                        self.rbuf = msg;
                    } else {
                        self.frag_op = h.opcode;
                        self.frag.clear();
                        self.frag.extend_from_slice(&self.rbuf[a..b]);
                    }
                }
                ws::OP_PING => {
                    ctx.stats.borrow_mut().pings += 1;
                    let payload = self.rbuf[a..b].to_vec();
                    if !self.close_sent {
                        self.queue_control(ws::OP_PONG, &payload);
                    }
                }
                ws::OP_PONG => {}
                ws::OP_CLOSE => {
                    let code = ws::close_code(&self.rbuf[a..b]);
                    let mut st = ctx.stats.borrow_mut();
                    *st.closes.entry(code).or_insert(0) += 1;
                    if self.close_sent {
                        return Ok(Some(End::Closed));
                    }
                    st.server_closes += 1;
                    drop(st);
                    // answer with the same code, then report the close as the error
                    let echo = if code == 1005 { 1000 } else { code };
                    self.queue_close(echo);
                    let _ = self.flush(ctx);
                    return Err(Cow::Owned(format!("closed by server: {code}")));
                }
                _ => unreachable!("parse_frame_head checks opcodes"),
            }
        }
    }

    /// Makes room in the read buffer for a frame of `need` bytes.
    fn make_room(&mut self, need: usize) {
        if self.rpos > 0 && self.rpos == self.rlen {
            self.rpos = 0;
            self.rlen = 0;
        }
        if self.rbuf.len() - self.rpos < need {
            if self.rpos > 0 {
                self.rbuf.copy_within(self.rpos..self.rlen, 0);
                self.rlen -= self.rpos;
                self.rpos = 0;
            }
            if self.rbuf.len() < need {
                self.rbuf.resize(need, 0);
            }
        }
    }

    /// One data message: it must be the echo of the oldest one in flight.
    #[inline]
    fn on_message(&mut self, ctx: &Ctx, op: u8, payload: &[u8], more: bool) {
        let plan = &ctx.plan;
        let now = mono_ns();
        let Some((seq, t_sched, t_send)) = self.fifo.pop_front() else {
            ctx.stats.borrow_mut().fail("ws: message nothing was sent for", 1);
            return;
        };
        ctx.inflight.set(ctx.inflight.get() - 1);
        if ctx.inflight.get() == 0 && !ctx.scheduling.get() {
            // open loop, schedule over: the connections waiting to close
            for s in ctx.slots.borrow().iter() {
                s.wake.notify_one();
            }
        }
        if op == plan.opcode() && ws::is_message(payload, &plan.pools, self.c, seq, plan.cfg.size, plan.cfg.text) {
            ctx.ok(t_sched, t_send, now);
        } else {
            let kind = if op != plan.opcode() { "echo: wrong frame type" } else { "echo: wrong bytes" };
            ctx.stats.borrow_mut().fail(kind, 1);
        }
        if more && now < ctx.t_end_ns.get() {
            self.queue_message(ctx, now, now);
        }
    }

    /// Counts every message in flight as failed with `kind` and drops the socket.
    fn broken(&mut self, ctx: &Ctx, kind: &str) {
        let n = self.fifo.len() as u64;
        self.fifo.clear();
        ctx.inflight.set(ctx.inflight.get() - n);
        let mut st = ctx.stats.borrow_mut();
        st.fail(kind, n.max(1));
        if !kind.starts_with("closed by server") {
            st.dropped += 1;
        }
        drop(st);
        self.reset_io();
    }

    /// The main loop of a connected slot; returns when the run is over for it
    /// (Done) or when the connection broke (Broken).
    async fn run(&mut self, ctx: &Ctx, slot: Option<&Slot>, timer: &mut std::pin::Pin<Box<tokio::time::Sleep>>) -> End {
        let plan = Arc::clone(&ctx.plan);
        let closed_loop = slot.is_none();
        loop {
            // open loop: whatever is due goes out, up to the per-connection cap
            if let Some(sl) = slot {
                let now = mono_ns();
                while self.fifo.len() < plan.cfg.max_inflight {
                    let Some(due) = sl.queue.borrow_mut().pop_front() else { break };
                    self.queue_message(ctx, due, now);
                }
            }
            if let Err(e) = self.flush(ctx) {
                self.broken(ctx, &io_kind("io", &e));
                return End::Broken;
            }
            let now = mono_ns();
            let over = if closed_loop {
                now >= ctx.t_end_ns.get()
            } else {
                !ctx.scheduling.get() && slot.is_some_and(|s| s.queue.borrow().is_empty())
            };
            // no connection closes before every echo of the run is in (or
            // failed): 1,000 close handshakes at once would delay the last
            // echoes of the others, an artefact in the final second's tail
            if over && self.fifo.is_empty() && ctx.inflight.get() == 0 {
                return End::Done;
            }
            if let Some(&(_, _, t_send)) = self.fifo.front() {
                if now >= t_send + plan.timeout_ns {
                    self.broken(ctx, "timeout");
                    return End::Broken;
                }
            }
            let pending_write = self.wpos < self.wbuf.len();
            let interest = if pending_write { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
            let wake = {
                let stream = self.stream.as_ref().expect("connected");
                let due = async {
                    match slot {
                        Some(s) => s.wake.notified().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    biased;
                    r = stream.ready(interest) => Some(r),
                    _ = due => None,
                    _ = timer.as_mut() => {
                        // re-arm lazily: the next tick
                        let next = mono_ns() + TICK_NS;
                        timer.as_mut().reset(ctx.imap.at(next));
                        None
                    }
                }
            };
            match wake {
                None => continue,
                Some(Err(e)) => {
                    self.broken(ctx, &io_kind("io", &e));
                    return End::Broken;
                }
                Some(Ok(ready)) => {
                    if ready.is_readable() || ready.is_read_closed() {
                        match self.fill(ctx) {
                            Ok(true) => {}
                            Ok(false) => {
                                self.broken(ctx, "io: connection closed");
                                return End::Broken;
                            }
                            Err(e) => {
                                self.broken(ctx, &io_kind("io", &e));
                                return End::Broken;
                            }
                        }
                        match self.parse_frames(ctx, closed_loop) {
                            Ok(_) => {}
                            Err(k) => {
                                self.broken(ctx, &k);
                                return End::Broken;
                            }
                        }
                    }
                }
            }
        }
    }

    /// The closing handshake: our close (1000), then wait for the server's
    /// close frame until `deadline`. Frames that arrive meanwhile are handled.
    async fn close(&mut self, ctx: &Ctx, deadline: u64) {
        if self.stream.is_none() {
            return;
        }
        self.queue_close(1000);
        let until = ctx.imap.at(deadline);
        loop {
            if self.flush(ctx).is_err() {
                ctx.stats.borrow_mut().dropped += 1;
                break;
            }
            let pending_write = self.wpos < self.wbuf.len();
            let interest = if pending_write { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
            let r = {
                let stream = self.stream.as_ref().expect("connected");
                tokio::time::timeout_at(until, stream.ready(interest)).await
            };
            match r {
                Err(_) => {
                    ctx.stats.borrow_mut().close_unanswered += 1;
                    break;
                }
                Ok(Err(_)) => {
                    ctx.stats.borrow_mut().dropped += 1;
                    break;
                }
                Ok(Ok(ready)) => {
                    if ready.is_readable() || ready.is_read_closed() {
                        match self.fill(ctx) {
                            Ok(true) => {}
                            _ => {
                                ctx.stats.borrow_mut().dropped += 1;
                                break;
                            }
                        }
                        match self.parse_frames(ctx, false) {
                            Ok(Some(End::Closed)) => break,
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                }
            }
        }
        // whatever was still in flight will not be answered now
        let n = self.fifo.len() as u64;
        self.fifo.clear();
        ctx.inflight.set(ctx.inflight.get() - n);
        ctx.stats.borrow_mut().base.cut_off += n;
        self.reset_io();
    }
}

fn io_kind(what: &str, e: &std::io::Error) -> Cow<'static, str> {
    Cow::Owned(format!("{what}: {}", e.kind()))
}

// ---------------------------------------------------------------------------
// Timed runs (closed and open loop)

async fn conn_task(ctx: Rc<Ctx>, mut conn: Conn, slot: Option<Rc<Slot>>) {
    let plan = Arc::clone(&ctx.plan);
    let mut timer = Box::pin(tokio::time::sleep_until(ctx.imap.at(mono_ns() + TICK_NS)));
    let closed_loop = slot.is_none();
    if closed_loop && conn.stream.is_some() {
        let now = mono_ns();
        for _ in 0..plan.cfg.inflight {
            conn.queue_message(&ctx, now, now);
        }
    }
    loop {
        if conn.stream.is_none() {
            let now = mono_ns();
            let running = if closed_loop { now < ctx.t_end_ns.get() } else { ctx.scheduling.get() };
            if !running {
                break;
            }
            if conn.next_try_ns > now {
                tokio::time::sleep_until(ctx.imap.at(conn.next_try_ns)).await;
                continue;
            }
            if let Err(e) = conn.connect(&ctx).await {
                ctx.stats.borrow_mut().fail(&e, 1);
                continue;
            }
            if closed_loop {
                let now = mono_ns();
                for _ in 0..plan.cfg.inflight {
                    conn.queue_message(&ctx, now, now);
                }
            }
        }
        match conn.run(&ctx, slot.as_deref(), &mut timer).await {
            End::Done => {
                let deadline = mono_ns() + CLOSE_WAIT_NS;
                conn.close(&ctx, deadline).await;
                break;
            }
            End::Broken | End::Closed => continue,
        }
    }
    if let Some(s) = &slot {
        // open loop: due messages this connection never got to send
        let n = s.queue.borrow_mut().drain(..).count() as u64;
        ctx.stats.borrow_mut().unsent += n;
    }
    ctx.exit();
}

async fn open_scheduler(ctx: Rc<Ctx>, thread: usize) {
    let plan = Arc::clone(&ctx.plan);
    let rate = plan.cfg.rate.expect("open loop");
    let mut sched = ThreadSchedule::new(ctx.t0_ns.get(), rate, plan.cfg.duration_s, thread, plan.cfg.threads);
    let slots: Vec<Rc<Slot>> = ctx.slots.borrow().clone();
    let n = slots.len() as u64;
    let tfd = TimerFd::new().ok();
    loop {
        let now = mono_ns();
        while let Some((i, due)) = sched.take_due(now) {
            // global message i goes to connection i mod N; this thread owns
            // the connections c = k + jT, and its messages i = k + mT
            let s = &slots[((i / plan.cfg.threads as u64) % n) as usize];
            s.queue.borrow_mut().push_back(due);
            s.wake.notify_one();
        }
        let Some(next) = sched.next_due() else { break };
        let waited = match &tfd {
            Some(t) => t.wait_until(next).await.is_ok(),
            None => false,
        };
        if !waited {
            tokio::time::sleep_until(ctx.imap.at(next)).await;
        }
    }
    ctx.scheduling.set(false);
    for s in &slots {
        s.wake.notify_one();
    }
    ctx.all_done.notify_waiters();
}

/// Connects `conns` with at most `limit` handshakes at once; returns them with
/// the number that succeeded and the first error.
async fn connect_all(ctx: &Rc<Ctx>, conns: Vec<Conn>, limit: usize) -> (Vec<Conn>, usize, Option<String>) {
    let sem = Rc::new(Semaphore::new(limit));
    let mut handles = Vec::with_capacity(conns.len());
    for mut c in conns {
        let ctx = Rc::clone(ctx);
        let sem = Rc::clone(&sem);
        handles.push(tokio::task::spawn_local(async move {
            let _permit = sem.acquire().await.expect("semaphore open");
            let r = c.connect(&ctx).await;
            (c, r)
        }));
    }
    let (mut out, mut ok, mut first) = (Vec::with_capacity(handles.len()), 0usize, None);
    for h in handles {
        let (c, r) = h.await.expect("connect task");
        match r {
            Ok(()) => ok += 1,
            Err(e) => {
                first.get_or_insert_with(|| e.into_owned());
            }
        }
        out.push(c);
    }
    (out, ok, first)
}

fn new_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))
}

fn read_buffer(plan: &WsPlan) -> usize {
    (2 * (plan.cfg.size + 14)).clamp(4096, 1 << 20)
}

fn thread_main(plan: Arc<WsPlan>, k: usize, start: Arc<StartLine>) -> WsStats {
    let open = plan.cfg.rate.is_some();
    let rt = match new_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            *start.first_error.lock().unwrap() = Some(e);
            start.barrier.wait();
            start.barrier.wait();
            return WsStats::new(open);
        }
    };
    let local = LocalSet::new();
    let nt = plan.cfg.threads;
    let ctx = Rc::new(Ctx::new(Arc::clone(&plan)));
    let mine = split_even(plan.cfg.connections, nt, k);
    let rcap = read_buffer(&plan);
    let conns: Vec<Conn> = (0..mine).map(|j| Conn::new((j * nt + k) as u64, rcap)).collect();

    // phase 1: connect every slot
    let (mut conns, ok) = local.block_on(&rt, async {
        let (conns, ok, first) = connect_all(&ctx, conns, plan.cfg.connect_concurrency).await;
        if let Some(e) = first {
            let mut fe = start.first_error.lock().unwrap();
            if fe.is_none() {
                *fe = Some(e);
            }
        }
        (conns, ok)
    });
    // a slot that could not connect at start-up (connect_failures) tries
    // again during the run, where each failed attempt is an error
    start.connected.fetch_add(ok, Ordering::SeqCst);
    start.barrier.wait();
    start.barrier.wait();
    let t0 = start.t0.load(Ordering::SeqCst);
    if t0 == 0 {
        return ctx.stats.replace(WsStats::new(open));
    }
    let t_end = t0 + (plan.cfg.duration_s * 1e9).round() as u64;
    ctx.t0_ns.set(t0);
    ctx.t_end_ns.set(t_end);
    let drain_deadline = t_end + plan.timeout_ns + CLOSE_WAIT_NS + DRAIN_GRACE_NS;

    local.block_on(&rt, async {
        ctx.live.set(conns.len());
        let mut slots = Vec::new();
        if open {
            *ctx.slots.borrow_mut() = (0..conns.len()).map(|_| Rc::new(Slot::default())).collect();
            slots = ctx.slots.borrow().clone();
            tokio::task::spawn_local(open_scheduler(Rc::clone(&ctx), k));
        }
        for (j, c) in conns.drain(..).enumerate() {
            let slot = if open { Some(Rc::clone(&slots[j])) } else { None };
            tokio::task::spawn_local(conn_task(Rc::clone(&ctx), c, slot));
        }
        let done = async {
            loop {
                let n = ctx.all_done.notified();
                if ctx.live.get() == 0 && !ctx.scheduling.get() {
                    break;
                }
                n.await;
            }
        };
        tokio::select! {
            _ = done => {}
            _ = tokio::time::sleep_until(ctx.imap.at(drain_deadline)) => {}
        }
    });
    let mut s = ctx.stats.replace(WsStats::new(open));
    s.base.cut_off += ctx.inflight.get();
    s.unsent += ctx.slots.borrow().iter().map(|sl| sl.queue.borrow().len() as u64).sum::<u64>();
    s.base.first_send_ns = ctx.first_send_ns.get();
    drop(local);
    s
}

/// Closed or open loop: runs the load and returns the merged statistics.
pub fn run(plan: Arc<WsPlan>) -> Result<WsStats, String> {
    let (threads, open) = (plan.cfg.threads, plan.cfg.rate.is_some());
    let p = Arc::clone(&plan);
    run_threads("wsload", threads, open, move |k, start| thread_main(Arc::clone(&p), k, start), |m, s| m.merge(s))
        .map_err(|why| format!("cannot connect to {} ({}): {why}", plan.cfg.target, plan.addr))
}

// ---------------------------------------------------------------------------
// Ramp: idle connections held in steps

/// One step of a ramp, as reported.
#[derive(Debug, Clone)]
pub struct Step {
    pub connections: usize,
    /// Connections open (handshake done, first echo checked, not closed) at the hold's end.
    pub open: usize,
    pub opened: usize,
    pub failed: usize,
    pub open_s: f64,
    pub gc: Option<String>,
    pub t0: u64,
    pub t1: u64,
    /// /proc/net/sockstat (+ sockstat6) at the hold's end: TCP sockets in use
    /// (IPv4 and IPv6) and the kernel memory of TCP buffers (bytes) of this
    /// network namespace (both ends of a loopback connection count).
    pub tcp_inuse: Option<u64>,
    pub tcp_mem_bytes: Option<u64>,
}

/// (TCP sockets in use, TCP buffer memory in bytes) from /proc/net/sockstat
/// ("TCP: inuse N orphan N tw N alloc N mem PAGES").
pub fn sockstat_tcp(text: &str, page: u64) -> (Option<u64>, Option<u64>) {
    let Some(line) = text.lines().find(|l| l.starts_with("TCP:")) else { return (None, None) };
    let words: Vec<&str> = line.split_whitespace().collect();
    let field = |name: &str| words.iter().position(|w| *w == name).and_then(|i| words.get(i + 1)).and_then(|v| v.parse::<u64>().ok());
    (field("inuse"), field("mem").map(|p| p * page))
}

/// TCP6 sockets in use from /proc/net/sockstat6 ("TCP6: inuse N"); the
/// buffer memory of sockstat's TCP line already covers both families.
pub fn sockstat6_tcp(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("TCP6:"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    words.iter().position(|w| *w == "inuse").and_then(|i| words.get(i + 1)).and_then(|v| v.parse::<u64>().ok())
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if v > 0 {
        v as u64
    } else {
        4096
    }
}

enum Cmd {
    Open(usize),
    Close,
}

struct RampShared {
    alive: AtomicUsize,
}

/// Opens one ramp connection: handshake, one echo (checked), then idles,
/// answering pings, until `stop` changes; then closes.
async fn ramp_conn(ctx: Rc<Ctx>, mut conn: Conn, shared: Arc<RampShared>, mut stop: tokio::sync::watch::Receiver<bool>,
    sem: Rc<Semaphore>, done: Rc<Cell<usize>>, failed: Rc<Cell<usize>>) {
    // connect (at most `connect_concurrency` at once), then one echo, checked
    let opened = {
        let _permit = sem.acquire().await.expect("semaphore open");
        match conn.connect(&ctx).await {
            Err(e) => {
                ctx.stats.borrow_mut().fail(&e, 1);
                false
            }
            Ok(()) => {
                let now = mono_ns();
                conn.queue_message(&ctx, now, now);
                let deadline = ctx.imap.at(now + ctx.plan.timeout_ns);
                match tokio::time::timeout_at(deadline, first_echo(&ctx, &mut conn)).await {
                    Err(_) => {
                        conn.broken(&ctx, "timeout");
                        false
                    }
                    // first_echo counted the failure
                    Ok(r) => r.is_ok(),
                }
            }
        }
    };
    done.set(done.get() + 1);
    if !opened {
        failed.set(failed.get() + 1);
        return;
    }
    shared.alive.fetch_add(1, Ordering::SeqCst);
    // idle: answer pings, count whatever else arrives
    let mut alive = true;
    loop {
        if *stop.borrow() {
            break;
        }
        if conn.flush(&ctx).is_err() {
            conn.broken(&ctx, "io: write failed while idle");
            alive = false;
            break;
        }
        let pending_write = conn.wpos < conn.wbuf.len();
        let interest = if pending_write { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
        let r = {
            let stream = conn.stream.as_ref().expect("connected");
            tokio::select! {
                r = stream.ready(interest) => Some(r),
                _ = stop.changed() => None,
            }
        };
        match r {
            None => break,
            Some(Err(e)) => {
                conn.broken(&ctx, &io_kind("io", &e));
                alive = false;
                break;
            }
            Some(Ok(ready)) => {
                if ready.is_readable() || ready.is_read_closed() {
                    let res = match conn.fill(&ctx) {
                        Ok(true) => conn.parse_frames(&ctx, false).map(|_| ()),
                        Ok(false) => Err(Cow::Borrowed("io: connection closed while idle")),
                        Err(e) => Err(io_kind("io", &e)),
                    };
                    if let Err(k) = res {
                        conn.broken(&ctx, &k);
                        alive = false;
                        break;
                    }
                }
            }
        }
    }
    if alive {
        conn.close(&ctx, mono_ns() + CLOSE_WAIT_NS).await;
    }
    shared.alive.fetch_sub(1, Ordering::SeqCst);
}

async fn first_echo(ctx: &Ctx, conn: &mut Conn) -> Result<(), String> {
    loop {
        if let Err(e) = conn.flush(ctx) {
            let k = io_kind("io", &e);
            conn.broken(ctx, &k);
            return Err(k.into_owned());
        }
        if conn.fifo.is_empty() {
            return Ok(());
        }
        // frames already buffered behind the handshake answer
        if conn.rlen > conn.rpos {
            if let Err(k) = conn.parse_frames(ctx, false) {
                conn.broken(ctx, &k);
                return Err(k.into_owned());
            }
            if conn.fifo.is_empty() {
                return Ok(());
            }
        }
        let ready = {
            let stream = conn.stream.as_ref().expect("connected");
            stream.ready(Interest::READABLE).await
        };
        match ready {
            Err(e) => {
                let k = io_kind("io", &e);
                conn.broken(ctx, &k);
                return Err(k.into_owned());
            }
            Ok(_) => match conn.fill(ctx) {
                Ok(true) => {
                    if let Err(k) = conn.parse_frames(ctx, false) {
                        conn.broken(ctx, &k);
                        return Err(k.into_owned());
                    }
                }
                Ok(false) => {
                    conn.broken(ctx, "io: connection closed");
                    return Err("io: connection closed".into());
                }
                Err(e) => {
                    let k = io_kind("io", &e);
                    conn.broken(ctx, &k);
                    return Err(k.into_owned());
                }
            },
        }
    }
}

fn ramp_thread(plan: Arc<WsPlan>, k: usize, shared: Arc<RampShared>, mut rx: tokio::sync::mpsc::UnboundedReceiver<Cmd>,
    tx: std::sync::mpsc::Sender<(usize, usize, usize)>) -> WsStats {
    let rt = match new_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wsload: {e}");
            let _ = tx.send((k, 0, usize::MAX));
            return WsStats::new(false);
        }
    };
    let local = LocalSet::new();
    let ctx = Rc::new(Ctx::new(Arc::clone(&plan)));
    ctx.t0_ns.set(mono_ns());
    let nt = plan.cfg.threads;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sem = Rc::new(Semaphore::new(plan.cfg.connect_concurrency));
    local.block_on(&rt, async {
        let mut have = 0usize;
        let mut tasks = Vec::new();
        while let Some(cmd) = rx.recv().await {
            match cmd {
                Cmd::Open(total) => {
                    // this thread's share of `total` connections in all
                    let want = split_even(total, nt, k);
                    let done = Rc::new(Cell::new(0usize));
                    let failed = Rc::new(Cell::new(0usize));
                    let n = want.saturating_sub(have);
                    for j in have..want {
                        let conn = Conn::new((j * nt + k) as u64, 4096);
                        tasks.push(tokio::task::spawn_local(ramp_conn(Rc::clone(&ctx), conn, Arc::clone(&shared),
                            stop_rx.clone(), Rc::clone(&sem), Rc::clone(&done), Rc::clone(&failed))));
                    }
                    have = have.max(want);
                    while done.get() < n {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    let _ = tx.send((k, n - failed.get(), failed.get()));
                }
                Cmd::Close => {
                    let _ = stop_tx.send(true);
                    for t in tasks.drain(..) {
                        let _ = t.await;
                    }
                    let _ = tx.send((k, 0, 0));
                    break;
                }
            }
        }
    });
    let mut s = ctx.stats.replace(WsStats::new(false));
    s.base.first_send_ns = ctx.first_send_ns.get();
    s
}

/// GET `path` on a fresh connection; the answer's status code, or why not.
pub fn gc_request(addr: SocketAddr, host: &str, path: &str, timeout: Duration) -> String {
    let go = || -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.windows(2).any(|w| w == b"\r\n") {
            let n = s.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let line = String::from_utf8_lossy(&buf);
        let code = line.split(' ').nth(1).unwrap_or("").chars().take(3).collect::<String>();
        Ok(if code.len() == 3 { code } else { "no answer".to_string() })
    };
    match go() {
        Ok(code) => code,
        Err(e) => format!("error: {}", e.kind()),
    }
}

/// The ramp: steps of idle connections, each GC-requested, settled and held.
pub fn run_ramp(plan: Arc<WsPlan>) -> Result<(WsStats, Vec<Step>), String> {
    let steps_wanted = plan.cfg.ramp.clone().expect("ramp");
    let nt = plan.cfg.threads;
    let shared = Arc::new(RampShared { alive: AtomicUsize::new(0) });
    let (rtx, rrx) = std::sync::mpsc::channel();
    let mut cmd_tx = Vec::new();
    let mut handles = Vec::new();
    for k in 0..nt {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        cmd_tx.push(tx);
        let (p, sh, rtx) = (Arc::clone(&plan), Arc::clone(&shared), rtx.clone());
        handles.push(
            std::thread::Builder::new()
                .name(format!("wsload-{k}"))
                .spawn(move || ramp_thread(p, k, sh, rx, rtx))
                .map_err(|e| format!("cannot start thread: {e}"))?,
        );
    }
    let mut steps = Vec::new();
    let mut opened_total = 0usize;
    let mut first_fail: Option<String> = None;
    for &n in &steps_wanted {
        let t_open = mono_ns();
        for tx in &cmd_tx {
            let _ = tx.send(Cmd::Open(n));
        }
        let (mut opened, mut failed) = (0usize, 0usize);
        for _ in 0..nt {
            let (_, o, f) = rrx.recv().map_err(|_| "a load thread died".to_string())?;
            if f == usize::MAX {
                return Err("a load thread could not start its runtime".into());
            }
            opened += o;
            failed += f;
        }
        opened_total += opened;
        if failed > 0 && first_fail.is_none() {
            first_fail = Some(format!("{failed} of {} connections failed at the {n}-connection step", n));
        }
        let open_s = ns_to_s(mono_ns() - t_open);
        let gc = plan.cfg.gc_path.as_deref().map(|p| {
            gc_request(plan.addr, &plan.cfg.target, p, Duration::from_nanos(plan.timeout_ns.max(30_000_000_000)))
        });
        if plan.cfg.settle_s > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(plan.cfg.settle_s));
        }
        let t0 = mono_ns();
        std::thread::sleep(Duration::from_secs_f64(plan.cfg.hold_s));
        let t1 = mono_ns();
        let (tcp4, tcp_mem_bytes) = match std::fs::read_to_string("/proc/net/sockstat") {
            Ok(t) => sockstat_tcp(&t, page_size()),
            Err(_) => (None, None),
        };
        // IPv6 sockets (a JVM's, even for 127.0.0.1) are counted apart
        let tcp6 = std::fs::read_to_string("/proc/net/sockstat6").ok().and_then(|t| sockstat6_tcp(&t));
        let tcp_inuse = tcp4.map(|n| n + tcp6.unwrap_or(0));
        steps.push(Step {
            connections: n,
            open: shared.alive.load(Ordering::SeqCst),
            opened,
            failed,
            open_s,
            gc,
            t0,
            t1,
            tcp_inuse,
            tcp_mem_bytes,
        });
    }
    for tx in &cmd_tx {
        let _ = tx.send(Cmd::Close);
    }
    let mut merged: Option<WsStats> = None;
    for h in handles {
        let s = h.join().map_err(|_| "a load thread panicked".to_string())?;
        match merged.as_mut() {
            None => merged = Some(s),
            Some(m) => m.merge(s),
        }
    }
    let mut st = merged.expect("at least one thread");
    if let (Some(a), Some(b)) = (steps.first(), steps.last()) {
        st.base.first_send_ns = st.base.first_send_ns.min(a.t0);
        st.base.last_answer_ns = st.base.last_answer_ns.max(b.t1);
    }
    if opened_total == 0 && steps_wanted.iter().any(|&n| n > 0) {
        return Err(format!(
            "cannot connect to {} ({}): {}",
            plan.cfg.target,
            plan.addr,
            st.base.error_kinds.keys().next().cloned().unwrap_or_else(|| "no connection opened".into())
        ));
    }
    Ok((st, steps))
}

// ---------------------------------------------------------------------------
// Report

pub fn to_json(cfg: &WsConfig, st: &WsStats, steps: Option<&[Step]>, cpu_s: f64, nofile: u64) -> String {
    use std::fmt::Write as _;
    let s = &st.base;
    let mut o = String::with_capacity(4096);
    let (t0, t1) = if s.first_send_ns == u64::MAX {
        ("null".to_string(), "null".to_string())
    } else {
        (jf(ns_to_s(s.first_send_ns)), jf(ns_to_s(s.last_answer_ns.max(s.first_send_ns))))
    };
    let mode = if cfg.ramp.is_some() {
        "ramp"
    } else if cfg.rate.is_some() {
        "open"
    } else {
        "closed"
    };
    o.push('{');
    let _ = write!(o, "\"tool\":\"wsload\",\"version\":{}", jstr(crate::VERSION));
    let _ = write!(o, ",\"target\":{},\"path\":{},\"mode\":\"{mode}\"", jstr(&cfg.target), jstr(&cfg.path));
    let _ = write!(o, ",\"connections\":{},\"inflight\":{},\"max_inflight\":{}", cfg.connections, cfg.inflight, cfg.max_inflight);
    let _ = write!(o, ",\"size\":{},\"kind\":\"{}\"", cfg.size, if cfg.text { "text" } else { "binary" });
    let _ = write!(o, ",\"rate\":{}", cfg.rate.map(jf).unwrap_or_else(|| "null".into()));
    let _ = write!(o, ",\"threads\":{},\"duration_s\":{},\"timeout_s\":{}", cfg.threads, jf(cfg.duration_s), jf(cfg.timeout_s));
    let _ = write!(o, ",\"send_t0\":{t0},\"send_t1\":{t1}");
    let _ = write!(
        o,
        ",\"count\":{},\"ok\":{},\"errors\":{},\"cut_off\":{},\"unsent\":{},\"sent\":{},\"late\":{}",
        s.count, s.ok, s.errors, s.cut_off, st.unsent, st.sent, st.late
    );
    let _ = write!(o, ",\"connects\":{},\"reconnects\":{},\"connect_failures\":{}", s.connects, s.reconnects, st.connect_failures);
    o.push_str(",\"error_kinds\":{");
    let mut kinds: Vec<(&String, &u64)> = s.error_kinds.iter().collect();
    kinds.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (i, (name, n)) in kinds.iter().enumerate() {
        let _ = write!(o, "{}{}:{}", if i > 0 { "," } else { "" }, jstr(name), n);
    }
    o.push_str("},\"closes\":{");
    for (i, (code, n)) in st.closes.iter().enumerate() {
        let _ = write!(o, "{}\"{code}\":{n}", if i > 0 { "," } else { "" });
    }
    o.push('}');
    let _ = write!(
        o,
        ",\"server_closes\":{},\"close_unanswered\":{},\"dropped\":{},\"pings\":{}",
        st.server_closes, st.close_unanswered, st.dropped, st.pings
    );
    let _ = write!(o, ",\"bytes_sent\":{},\"bytes_received\":{}", st.bytes_sent, st.bytes_received);
    let _ = write!(o, ",\"latency_ms\":{}", latency(&s.latency));
    let _ = write!(
        o,
        ",\"latency_uncorrected_ms\":{}",
        s.latency_uncorrected.as_ref().map(latency).unwrap_or_else(|| "null".into())
    );
    let _ = write!(o, ",\"handshake_ms\":{}", latency(&st.handshake));
    o.push_str(",\"per_second\":[");
    for (i, n) in s.per_second.iter().enumerate() {
        let _ = write!(o, "{}{}", if i > 0 { "," } else { "" }, n);
    }
    o.push_str("],\"per_second_latency_ms\":[");
    for (i, h) in st.seconds.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        if h.is_empty() {
            o.push_str("null");
        } else {
            let ms = |ns: u64| jf(ns as f64 / 1e6);
            let _ = write!(
                o,
                "{{\"p50\":{},\"p99\":{},\"max\":{}}}",
                ms(h.value_at_quantile(0.5)),
                ms(h.value_at_quantile(0.99)),
                ms(h.max())
            );
        }
    }
    o.push(']');
    if let Some(steps) = steps {
        let _ = write!(o, ",\"hold_s\":{},\"settle_s\":{},\"gc_path\":{}", jf(cfg.hold_s), jf(cfg.settle_s),
            cfg.gc_path.as_deref().map(jstr).unwrap_or_else(|| "null".into()));
        o.push_str(",\"steps\":[");
        for (i, stp) in steps.iter().enumerate() {
            let _ = write!(
                o,
                "{}{{\"connections\":{},\"open\":{},\"opened\":{},\"failed\":{},\"open_s\":{},\"gc\":{},\"t0\":{},\"t1\":{},\"tcp_inuse\":{},\"tcp_mem_bytes\":{}}}",
                if i > 0 { "," } else { "" },
                stp.connections,
                stp.open,
                stp.opened,
                stp.failed,
                jf(stp.open_s),
                stp.gc.as_deref().map(jstr).unwrap_or_else(|| "null".into()),
                jf(ns_to_s(stp.t0)),
                jf(ns_to_s(stp.t1)),
                stp.tcp_inuse.map(|v| v.to_string()).unwrap_or_else(|| "null".into()),
                stp.tcp_mem_bytes.map(|v| v.to_string()).unwrap_or_else(|| "null".into())
            );
        }
        o.push(']');
    }
    let _ = write!(o, ",\"nofile\":{nofile},\"cpu_s\":{}", jf(cpu_s));
    o.push('}');
    o
}

/// Raises the open-file limit to the hard limit; returns the soft limit now.
pub fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid, initialised rlimit.
    unsafe {
        let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 0;
        }
        if r.rlim_cur < r.rlim_max {
            let want = libc::rlimit { rlim_cur: r.rlim_max, rlim_max: r.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return r.rlim_max as u64;
            }
        }
        r.rlim_cur as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<WsConfig, String> {
        match parse_args(s.split_whitespace().map(String::from))? {
            WsParsed::Run(c) => Ok(*c),
            _ => Err("not a run".into()),
        }
    }

    #[test]
    fn sockstat() {
        let t = "sockets: used 290\nTCP: inuse 12 orphan 0 tw 3 alloc 15 mem 7\nUDP: inuse 2 mem 1\n";
        assert_eq!(sockstat_tcp(t, 4096), (Some(12), Some(7 * 4096)));
        assert_eq!(sockstat_tcp("UDP: inuse 2 mem 1\n", 4096), (None, None));
        assert_eq!(sockstat6_tcp("TCP6: inuse 1001\nUDP6: inuse 0\n"), Some(1001));
        assert_eq!(sockstat6_tcp("UDP6: inuse 0\n"), None);
    }

    #[test]
    fn arguments() {
        let c = p("--target 127.0.0.1:1").unwrap();
        assert_eq!((c.connections, c.inflight, c.size, c.text, c.threads), (1000, 1, 2048, true, 1));
        assert_eq!((c.path.as_str(), c.duration_s, c.timeout_s, c.rate), ("/connect", 6.0, 10.0, None));
        let c = p("--target=h:1 --kind binary --size 8192 --rate 5000 --connections 10 --threads 2").unwrap();
        assert_eq!((c.text, c.size, c.rate, c.threads), (false, 8192, Some(5000.0), 2));
        let c = p("--target h:1 --ramp 0,1000,1000,5000 --hold 1 --settle 0 --gc-path /langbench-gc").unwrap();
        assert_eq!(c.ramp, Some(vec![0, 1000, 1000, 5000]));
        assert_eq!((c.hold_s, c.settle_s, c.gc_path.as_deref()), (1.0, 0.0, Some("/langbench-gc")));
        for bad in [
            "--connections 4",
            "--target h:1 --connections 0",
            "--target h:1 --threads 3 --connections 2",
            "--target h:1 --rate 0",
            "--target h:1 --kind utf16",
            "--target h:1 --size 0",
            "--target h:1 --size 300000",
            "--target h:1 --inflight 0",
            "--target h:1 --ramp 5,1",
            "--target h:1 --path connect",
            "--target h:1 --gc-path x",
            "--target h:1 --max-message 10",
            "--target h:1 --bogus",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
    }
}
