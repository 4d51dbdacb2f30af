//! httpload: an HTTP/1.1 load generator (keep-alive, one request in flight
//! per connection, closed or open loop). It shares the clock, the statistics
//! (HDR histograms, per-thread and merged after the run), the report helpers
//! and the open-loop schedule with grpcload; the HTTP/1.1 pieces without I/O
//! are in `crate::http`.
//!
//! Each thread runs a current_thread tokio runtime with its share of the
//! connections. A connection is one task that owns its socket, its read
//! buffer and its request buffer: it builds request (c, n) in place, writes
//! it, and parses the answer as it arrives.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::LocalSet;

use crate::cli::{num, seconds};
use crate::clock::{mono_ns, ns_to_s, InstantMap};
use crate::http::{parse_head, BodyKind, BodyMode, BodyReader, RequestSpec, BAD, MAX_HEAD};
use crate::load::{run_threads, with_deadline, StartLine, TimerFd};
use crate::report::{jf, jstr, latency};
use crate::schedule::{split_even, ThreadSchedule};
use crate::stats::Stats;

/// Wait before retrying a connection that could not be made.
const RECONNECT_BACKOFF_NS: u64 = 100_000_000;
/// Requests ending within this grace after the drain deadline still count
/// (so one timing out exactly at the end is a timeout, not cut off).
const DRAIN_GRACE_NS: u64 = 50_000_000;
/// Open loop: a request sent more than this after its due time is `late`.
const LATE_NS: u64 = 1_000_000;
/// Read buffer per connection (a response head must fit in MAX_HEAD).
const READ_BUF: usize = MAX_HEAD + (64 << 10);

pub const USAGE: &str = "\
usage: httpload --target HOST:PORT [--connections 64] [--duration 6] [--drain-timeout 10]
                [--threads 1] [--rate R] [--method GET] [--path /] [--id-header NAME]
                [--body pool|none] [--body-bytes 2048] [--nonce STR] [--ok-status 200,...]
                [--header 'Name: value']... [--acked-out FILE] [--out FILE] [--version]

  --target         server address (HTTP/1.1 over plain TCP), e.g. 127.0.0.1:8080
  --connections    keep-alive connections, one request in flight on each (default 64);
                   open loop: the pool size, i.e. the maximum in flight
  --duration       seconds during which requests start (default 6; 5s, 500ms work)
  --drain-timeout  seconds to await answers after the end, and the per-request
                   timeout counted from the send (default 10)
  --threads        OS threads, each with its own runtime and connections (default 1)
  --rate           open loop: request i is due at t0 + i/rate
  --method         request method (default GET)
  --path           path template; {conn}, {n}, {id}, {nonce} are substituted (default /)
  --id-header      send the request id (NONCE-CONN-N) in this header
  --body           pool: id + ':' + a slice of the 4 MiB xorshift32 pool (blackhole's
                   bodies); none: no body. Default: pool for POST/PUT/PATCH, else none
  --body-bytes     body size with --body pool (default 2048)
  --nonce          first part of every id (default: random hex)
  --ok-status      status codes counted as success (default 200)
  --header         extra request header (repeatable)
  --acked-out      write the id of every request answered with an ok status here,
                   one per line (the operations the client saw acknowledged)
  --out            write the JSON result here (default stdout)";

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub target: String,
    pub connections: usize,
    pub duration_s: f64,
    pub drain_timeout_s: f64,
    pub threads: usize,
    pub rate: Option<f64>,
    pub method: String,
    pub path: String,
    pub id_header: Option<String>,
    pub body: BodyMode,
    pub body_bytes: usize,
    pub nonce: String,
    pub ok_status: Vec<u16>,
    pub headers: Vec<String>,
    pub acked_out: Option<PathBuf>,
    pub out: Option<PathBuf>,
}

pub enum HttpParsed {
    Run(Box<HttpConfig>),
    Help,
    Version,
}

fn default_nonce() -> String {
    let x = mono_ns() ^ ((std::process::id() as u64) << 40) ^ 0x9e37_79b9_7f4a_7c15;
    let x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    format!("{:010x}", (x ^ (x >> 29)) & 0xff_ffff_ffff)
}

fn parse_ok(list: &str) -> Result<Vec<u16>, String> {
    let mut v = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match item.parse::<u16>() {
            Ok(c) if (100..=999).contains(&c) => v.push(c),
            _ => return Err(format!("--ok-status: {item:?} is not a status code (100-999)")),
        }
    }
    if v.is_empty() {
        return Err("--ok-status: empty list".into());
    }
    Ok(v)
}

pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<HttpParsed, String> {
    let mut target = None;
    let mut connections = 64usize;
    let mut duration_s = 6.0;
    let mut drain_timeout_s = 10.0;
    let mut threads = 1usize;
    let mut rate = None;
    let mut method = "GET".to_string();
    let mut path = "/".to_string();
    let mut id_header = None;
    let mut body = None;
    let mut body_bytes = 2048usize;
    let mut nonce = None;
    let mut ok_status = vec![200u16];
    let mut headers = Vec::new();
    let mut acked_out = None;
    let mut out = None;

    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(HttpParsed::Help),
            "-V" | "--version" => return Ok(HttpParsed::Version),
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
            "--connections" | "-c" => connections = num(&name, &value()?)?,
            "--duration" | "-d" => duration_s = seconds(&name, &value()?)?,
            "--drain-timeout" | "--timeout" => drain_timeout_s = seconds(&name, &value()?)?,
            "--threads" | "-t" => threads = num(&name, &value()?)?,
            "--rate" | "-r" => {
                let r: f64 = num(&name, &value()?)?;
                if !r.is_finite() || r <= 0.0 {
                    return Err(format!("{name}: must be > 0"));
                }
                rate = Some(r);
            }
            "--method" | "-m" => method = value()?,
            "--path" => path = value()?,
            "--id-header" => id_header = Some(value()?),
            "--body" => {
                body = Some(match value()?.as_str() {
                    "pool" => BodyMode::Pool,
                    "none" => BodyMode::None,
                    other => return Err(format!("--body: {other:?} is neither pool nor none")),
                })
            }
            "--body-bytes" => body_bytes = num(&name, &value()?)?,
            "--nonce" => nonce = Some(value()?),
            "--ok-status" => ok_status = parse_ok(&value()?)?,
            "--header" | "-H" => headers.push(value()?),
            "--acked-out" => acked_out = Some(PathBuf::from(value()?)),
            "--out" | "-o" => out = Some(PathBuf::from(value()?)),
            other if other.starts_with('-') => return Err(format!("unknown option {other} (see --help)")),
            other => {
                if target.is_some() {
                    return Err(format!("unexpected argument {other:?}"));
                }
                target = Some(other.to_string());
            }
        }
    }
    let target = target.ok_or("--target is required")?;
    if connections == 0 {
        return Err("--connections must be >= 1".into());
    }
    if threads == 0 {
        return Err("--threads must be >= 1".into());
    }
    if threads > connections {
        return Err(format!("--threads ({threads}) must not exceed --connections ({connections})"));
    }
    if body_bytes > 1 << 30 {
        return Err("--body-bytes: at most 1 GiB".into());
    }
    let body = body.unwrap_or(if matches!(method.as_str(), "POST" | "PUT" | "PATCH") { BodyMode::Pool } else { BodyMode::None });
    Ok(HttpParsed::Run(Box::new(HttpConfig {
        target,
        connections,
        duration_s,
        drain_timeout_s,
        threads,
        rate,
        method,
        path,
        id_header,
        body,
        body_bytes,
        nonce: nonce.unwrap_or_else(default_nonce),
        ok_status,
        headers,
        acked_out,
        out,
    })))
}

// ---------------------------------------------------------------------------
// Plan and statistics

/// Everything a run needs, shared read-only by all threads.
pub struct HttpPlan {
    pub cfg: HttpConfig,
    pub addr: SocketAddr,
    pub spec: RequestSpec,
    ok: Vec<bool>,
    pub timeout_ns: u64,
}

impl HttpPlan {
    pub fn new(cfg: HttpConfig) -> Result<HttpPlan, String> {
        let addr = crate::cli::resolve_target(&cfg.target)?;
        let spec = RequestSpec::new(
            &cfg.method,
            &cfg.path,
            &cfg.target,
            cfg.id_header.as_deref(),
            &cfg.headers,
            cfg.body,
            cfg.body_bytes,
            &cfg.nonce,
        )?;
        let mut ok = vec![false; 1000];
        for &c in &cfg.ok_status {
            ok[c as usize] = true;
        }
        let timeout_ns = (cfg.drain_timeout_s * 1e9).round() as u64;
        Ok(HttpPlan { cfg, addr, spec, ok, timeout_ns })
    }

    fn open_loop(&self) -> bool {
        self.cfg.rate.is_some()
    }
}

/// grpcload's per-thread `Stats` (counts, error kinds, HDR histograms,
/// per-second OKs, send window) plus what is HTTP-specific.
#[derive(Debug)]
pub struct HttpStats {
    pub base: Stats,
    /// Answers by numeric status (index = code, 0..1000).
    pub status: Vec<u64>,
    pub late: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// With --acked-out: the ids of the requests answered with an ok
    /// status, each followed by '\n' (in the order the answers came).
    pub acked: Vec<u8>,
}

impl HttpStats {
    pub fn new(open_loop: bool) -> HttpStats {
        HttpStats {
            base: Stats::new(open_loop, 0),
            status: vec![0; 1000],
            late: 0,
            bytes_sent: 0,
            bytes_received: 0,
            acked: Vec::new(),
        }
    }

    /// Writes the acknowledged ids (--acked-out), one per line.
    pub fn write_acked(&self, path: &std::path::Path) -> Result<(), String> {
        std::fs::write(path, &self.acked).map_err(|e| format!("--acked-out {}: {e}", path.display()))
    }

    pub fn merge(&mut self, o: HttpStats) {
        self.base.merge(o.base);
        for (a, b) in self.status.iter_mut().zip(o.status) {
            *a += b;
        }
        self.late += o.late;
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.acked.extend_from_slice(&o.acked);
    }
}

/// How one request ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Answer(u16),
    Fail(Cow<'static, str>),
    Timeout,
}

fn io_kind(e: &std::io::Error) -> Cow<'static, str> {
    Cow::Owned(format!("io: {}", e.kind()))
}

// ---------------------------------------------------------------------------
// Per-thread context

struct Ctx {
    plan: Arc<HttpPlan>,
    stats: RefCell<HttpStats>,
    imap: InstantMap,
    t0_ns: Cell<u64>,
    t_end_ns: Cell<u64>,
    first_send_ns: Cell<u64>,
    bytes_sent: Cell<u64>,
    bytes_received: Cell<u64>,
    /// Requests taken (closed loop: written; open loop: taken from the
    /// queue) and not recorded yet.
    inflight: Cell<u64>,
    live: Cell<usize>,
    all_done: Notify,
    // open loop
    queue: RefCell<VecDeque<u64>>,
    wake: Notify,
    idle: Cell<usize>,
    scheduling: Cell<bool>,
}

impl Ctx {
    fn record(&self, out: Outcome, t_sched: u64, t_send: u64, t_done: u64) {
        let mut st = self.stats.borrow_mut();
        let s = &mut st.base;
        s.count += 1;
        if t_done > s.last_answer_ns {
            s.last_answer_ns = t_done;
        }
        match out {
            Outcome::Timeout => {
                s.errors += 1;
                s.count_kind("timeout");
            }
            Outcome::Fail(k) => {
                s.errors += 1;
                s.count_kind(&k);
            }
            Outcome::Answer(code) => {
                if self.plan.ok[code as usize] {
                    s.ok += 1;
                    s.latency.saturating_record(t_done.saturating_sub(t_sched));
                    if let Some(h) = s.latency_uncorrected.as_mut() {
                        h.saturating_record(t_done.saturating_sub(t_send));
                    }
                    s.count_ok_second(self.t0_ns.get(), t_done);
                } else {
                    s.errors += 1;
                    let mut k = *b"http 000";
                    k[5] = b'0' + (code / 100) as u8;
                    k[6] = b'0' + (code / 10 % 10) as u8;
                    k[7] = b'0' + (code % 10) as u8;
                    s.count_kind(std::str::from_utf8(&k).expect("ascii"));
                }
                st.status[code as usize] += 1;
            }
        }
    }

    #[inline]
    fn note_send(&self, t: u64) {
        if t < self.first_send_ns.get() {
            self.first_send_ns.set(t);
        }
    }

    fn exit(&self) {
        self.live.set(self.live.get() - 1);
        if self.live.get() == 0 {
            self.all_done.notify_waiters();
        }
    }
}

// ---------------------------------------------------------------------------
// Connections

/// One connection slot: its socket (None while down), buffers and counters.
struct Conn {
    /// Global connection index (the {conn} of the ids).
    c: u64,
    /// Requests built on this slot so far (the {n} of the last one).
    n: u64,
    stream: Option<TcpStream>,
    rbuf: Box<[u8]>,
    start: usize,
    end: usize,
    wbuf: Vec<u8>,
    idbuf: Vec<u8>,
    next_try_ns: u64,
    connected_before: bool,
}

fn read_some<'a>(stream: &'a mut TcpStream, buf: &'a mut [u8]) -> impl std::future::Future<Output = std::io::Result<usize>> + 'a {
    poll_fn(move |cx| {
        let mut rb = ReadBuf::new(&mut buf[..]);
        match Pin::new(&mut *stream).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(rb.filled().len())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    })
}

impl Conn {
    fn new(c: u64, body_bytes: usize) -> Conn {
        Conn {
            c,
            n: 0,
            stream: None,
            rbuf: vec![0u8; READ_BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            wbuf: Vec::with_capacity(body_bytes + 512),
            idbuf: Vec::with_capacity(64),
            next_try_ns: 0,
            connected_before: false,
        }
    }

    fn drop_stream(&mut self) {
        self.stream = None;
        self.start = 0;
        self.end = 0;
    }

    /// Connects this slot. On failure the slot waits RECONNECT_BACKOFF_NS
    /// before the next attempt.
    async fn connect(&mut self, ctx: &Ctx) -> Result<(), String> {
        let timeout = Duration::from_nanos(ctx.plan.timeout_ns);
        let r = match tokio::time::timeout(timeout, TcpStream::connect(ctx.plan.addr)).await {
            Err(_) => Err("connect: timeout".to_string()),
            Ok(Err(e)) => Err(format!("connect: {}", e.kind())),
            Ok(Ok(t)) => Ok(t),
        };
        match r {
            Ok(t) => {
                let _ = t.set_nodelay(true);
                self.stream = Some(t);
                self.start = 0;
                self.end = 0;
                let mut s = ctx.stats.borrow_mut();
                s.base.connects += 1;
                if self.connected_before {
                    s.base.reconnects += 1;
                }
                self.connected_before = true;
                Ok(())
            }
            Err(e) => {
                self.next_try_ns = mono_ns() + RECONNECT_BACKOFF_NS;
                Err(e)
            }
        }
    }

    /// Builds the next request of this slot into the write buffer.
    #[inline]
    fn build_next(&mut self, ctx: &Ctx) {
        self.n += 1;
        ctx.plan.spec.build(&mut self.wbuf, &mut self.idbuf, self.c, self.n);
    }

    /// Writes the built request and reads one whole answer:
    /// Ok((status, connection must close)).
    async fn exchange(&mut self, ctx: &Ctx) -> Result<(u16, bool), Cow<'static, str>> {
        let head_request = ctx.plan.spec.head_request;
        let stream = self.stream.as_mut().expect("connected");
        let mut off = 0;
        while off < self.wbuf.len() {
            let n = poll_fn(|cx| Pin::new(&mut *stream).poll_write(cx, &self.wbuf[off..])).await.map_err(|e| io_kind(&e))?;
            if n == 0 {
                return Err(Cow::Borrowed("io: write zero"));
            }
            off += n;
            ctx.bytes_sent.set(ctx.bytes_sent.get() + n as u64);
        }
        let head = loop {
            if self.start < self.end {
                match parse_head(&self.rbuf[self.start..self.end], head_request) {
                    Err(e) => return Err(Cow::Borrowed(e)),
                    Ok(Some(h)) => {
                        self.start += h.len;
                        if (100..200).contains(&h.status) && h.status != 101 {
                            continue; // an interim answer: the real one follows
                        }
                        break h;
                    }
                    Ok(None) => {}
                }
            }
            if self.start > 0 {
                self.rbuf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.rbuf.len() {
                return Err(Cow::Borrowed(BAD));
            }
            let n = read_some(stream, &mut self.rbuf[self.end..]).await.map_err(|e| io_kind(&e))?;
            if n == 0 {
                return Err(Cow::Borrowed("io: connection closed"));
            }
            self.end += n;
            ctx.bytes_received.set(ctx.bytes_received.get() + n as u64);
        };
        let mut body = BodyReader::new(head.body);
        loop {
            let used = body.feed(&self.rbuf[self.start..self.end]).map_err(Cow::Borrowed)?;
            self.start += used;
            if body.is_done() {
                break;
            }
            // the body took everything there was
            self.start = 0;
            self.end = 0;
            let n = read_some(stream, &mut self.rbuf[..]).await.map_err(|e| io_kind(&e))?;
            if n == 0 {
                if head.body == BodyKind::UntilClose {
                    break;
                }
                return Err(Cow::Borrowed("io: connection closed"));
            }
            self.end = n;
            ctx.bytes_received.set(ctx.bytes_received.get() + n as u64);
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        Ok((head.status, head.close))
    }

    /// Sends the next request (the slot is connected) and records it.
    /// `t_sched` is its due time (open loop) or None (closed loop: the send).
    async fn one_request(&mut self, ctx: &Ctx, timer: &mut Pin<Box<tokio::time::Sleep>>, t_sched: Option<u64>) {
        self.build_next(ctx);
        let t_send = mono_ns();
        ctx.note_send(t_send);
        let t_sched = t_sched.unwrap_or(t_send);
        if t_send > t_sched + LATE_NS {
            ctx.stats.borrow_mut().late += 1;
        }
        let deadline = t_send + ctx.plan.timeout_ns;
        let res = with_deadline(timer, &ctx.imap, deadline, self.exchange(ctx)).await;
        let t_done = mono_ns();
        let out = match res {
            None => {
                self.drop_stream();
                Outcome::Timeout
            }
            Some(Err(k)) => {
                self.drop_stream();
                Outcome::Fail(k)
            }
            Some(Ok((status, close))) => {
                if close {
                    self.drop_stream();
                }
                Outcome::Answer(status)
            }
        };
        ctx.inflight.set(ctx.inflight.get() - 1);
        if let Outcome::Answer(code) = out {
            if ctx.plan.ok[code as usize] && ctx.plan.cfg.acked_out.is_some() {
                let mut st = ctx.stats.borrow_mut();
                st.acked.extend_from_slice(&self.idbuf);
                st.acked.push(b'\n');
            }
        }
        ctx.record(out, t_sched, t_send, t_done);
    }
}

// ---------------------------------------------------------------------------
// Closed loop: each connection sends, awaits the answer, repeats.

async fn closed_conn(ctx: Rc<Ctx>, mut conn: Conn) {
    let t_end = ctx.t_end_ns.get();
    let mut timer = Box::pin(tokio::time::sleep_until(ctx.imap.at(ctx.t0_ns.get() + ctx.plan.timeout_ns)));
    loop {
        let now = mono_ns();
        if now >= t_end {
            break;
        }
        if conn.stream.is_none() {
            if conn.next_try_ns > now {
                if conn.next_try_ns >= t_end {
                    break;
                }
                tokio::time::sleep_until(ctx.imap.at(conn.next_try_ns)).await;
                continue;
            }
            if let Err(e) = conn.connect(&ctx).await {
                ctx.record(Outcome::Fail(Cow::Owned(e)), now, now, mono_ns());
                continue;
            }
        }
        ctx.inflight.set(ctx.inflight.get() + 1);
        conn.one_request(&ctx, &mut timer, None).await;
    }
    ctx.exit();
}

// ---------------------------------------------------------------------------
// Open loop: a scheduler releases due requests to a queue; every idle
// connection of the thread takes the oldest one.

async fn open_scheduler(ctx: Rc<Ctx>, thread: usize) {
    let plan = Arc::clone(&ctx.plan);
    let rate = plan.cfg.rate.expect("open loop");
    let mut sched = ThreadSchedule::new(ctx.t0_ns.get(), rate, plan.cfg.duration_s, thread, plan.cfg.threads);
    let tfd = TimerFd::new().ok();
    loop {
        let now = mono_ns();
        while let Some((_, due)) = sched.take_due(now) {
            ctx.queue.borrow_mut().push_back(due);
            if ctx.idle.get() > 0 {
                ctx.idle.set(ctx.idle.get() - 1);
                ctx.wake.notify_one();
            } else {
                ctx.stats.borrow_mut().base.delayed_by_cap += 1;
            }
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
    ctx.wake.notify_waiters();
    ctx.all_done.notify_waiters();
}

async fn open_conn(ctx: Rc<Ctx>, mut conn: Conn) {
    let mut timer = Box::pin(tokio::time::sleep_until(ctx.imap.at(ctx.t0_ns.get() + ctx.plan.timeout_ns)));
    loop {
        let job = ctx.queue.borrow_mut().pop_front();
        let Some(due) = job else {
            if !ctx.scheduling.get() {
                break;
            }
            ctx.idle.set(ctx.idle.get() + 1);
            ctx.wake.notified().await;
            continue;
        };
        ctx.inflight.set(ctx.inflight.get() + 1);
        if conn.stream.is_none() {
            let now = mono_ns();
            if conn.next_try_ns > now {
                tokio::time::sleep_until(ctx.imap.at(conn.next_try_ns)).await;
            }
            if let Err(e) = conn.connect(&ctx).await {
                let t = mono_ns();
                ctx.inflight.set(ctx.inflight.get() - 1);
                ctx.record(Outcome::Fail(Cow::Owned(e)), due, t, t);
                continue;
            }
        }
        conn.one_request(&ctx, &mut timer, Some(due)).await;
    }
    ctx.exit();
}

// ---------------------------------------------------------------------------
// Threads


fn thread_main(plan: Arc<HttpPlan>, k: usize, start: Arc<StartLine>) -> HttpStats {
    let open = plan.open_loop();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            *start.first_error.lock().unwrap() = Some(format!("cannot start a runtime: {e}"));
            start.barrier.wait();
            start.barrier.wait();
            return HttpStats::new(open);
        }
    };
    let local = LocalSet::new();
    let nt = plan.cfg.threads;
    let ctx = Rc::new(Ctx {
        plan: Arc::clone(&plan),
        stats: RefCell::new(HttpStats::new(open)),
        imap: InstantMap::new(),
        t0_ns: Cell::new(0),
        t_end_ns: Cell::new(0),
        first_send_ns: Cell::new(u64::MAX),
        bytes_sent: Cell::new(0),
        bytes_received: Cell::new(0),
        inflight: Cell::new(0),
        live: Cell::new(0),
        all_done: Notify::new(),
        queue: RefCell::new(VecDeque::new()),
        wake: Notify::new(),
        idle: Cell::new(0),
        scheduling: Cell::new(open),
    });
    // this thread owns the connections c with c % T == k
    let mine = split_even(plan.cfg.connections, nt, k);
    let mut conns: Vec<Conn> = (0..mine).map(|j| Conn::new((j * nt + k) as u64, plan.spec.body_bytes)).collect();

    // phase 1: connect every slot, in parallel
    let ok = local.block_on(&rt, async {
        let mut handles = Vec::new();
        for mut c in conns.drain(..) {
            let ctx = Rc::clone(&ctx);
            handles.push(tokio::task::spawn_local(async move {
                let r = c.connect(&ctx).await;
                c.connected_before = r.is_ok();
                (c, r)
            }));
        }
        let mut ok = 0usize;
        for h in handles {
            let (c, r) = h.await.expect("connect task");
            match r {
                Ok(()) => ok += 1,
                Err(e) => {
                    let mut fe = start.first_error.lock().unwrap();
                    if fe.is_none() {
                        *fe = Some(e);
                    }
                }
            }
            conns.push(c);
        }
        ok
    });
    // the initial connects are not reconnects, and connects is not reported
    start.connected.fetch_add(ok, Ordering::SeqCst);
    start.barrier.wait();
    start.barrier.wait();
    let t0 = start.t0.load(Ordering::SeqCst);
    if t0 == 0 {
        return ctx.stats.replace(HttpStats::new(open));
    }
    let t_end = t0 + (plan.cfg.duration_s * 1e9).round() as u64;
    ctx.t0_ns.set(t0);
    ctx.t_end_ns.set(t_end);
    let drain_deadline = t_end + plan.timeout_ns + DRAIN_GRACE_NS;

    // phase 2: the run
    local.block_on(&rt, async {
        ctx.live.set(conns.len());
        if open {
            tokio::task::spawn_local(open_scheduler(Rc::clone(&ctx), k));
            for c in conns.drain(..) {
                tokio::task::spawn_local(open_conn(Rc::clone(&ctx), c));
            }
        } else {
            for c in conns.drain(..) {
                tokio::task::spawn_local(closed_conn(Rc::clone(&ctx), c));
            }
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

    let mut s = ctx.stats.replace(HttpStats::new(open));
    s.base.cut_off = ctx.inflight.get() + ctx.queue.borrow().len() as u64;
    s.base.first_send_ns = ctx.first_send_ns.get();
    s.bytes_sent = ctx.bytes_sent.get();
    s.bytes_received = ctx.bytes_received.get();
    drop(local); // cancels what is left (cut-off requests)
    s
}

/// Runs the load and returns the merged statistics. Err if no connection
/// at all could be made at start-up.
pub fn run(plan: Arc<HttpPlan>) -> Result<HttpStats, String> {
    let (threads, open) = (plan.cfg.threads, plan.open_loop());
    let p = Arc::clone(&plan);
    run_threads("httpload", threads, open, move |k, start| thread_main(Arc::clone(&p), k, start), |m, s| m.merge(s))
        .map_err(|why| format!("cannot connect to {} ({}): {why}", plan.cfg.target, plan.addr))
}

// ---------------------------------------------------------------------------
// Report

/// The result JSON, in the style (and with the field names) of grpcload's.
pub fn to_json(cfg: &HttpConfig, st: &HttpStats, cpu_s: f64) -> String {
    use std::fmt::Write;
    let s = &st.base;
    let mut o = String::with_capacity(1024);
    let (t0, t1) = if s.first_send_ns == u64::MAX {
        ("null".to_string(), "null".to_string())
    } else {
        (jf(ns_to_s(s.first_send_ns)), jf(ns_to_s(s.last_answer_ns.max(s.first_send_ns))))
    };
    let open = cfg.rate.is_some();
    o.push('{');
    let _ = write!(o, "\"tool\":\"httpload\",\"version\":{}", jstr(crate::VERSION));
    let _ = write!(o, ",\"target\":{},\"method\":{},\"path\":{}", jstr(&cfg.target), jstr(&cfg.method), jstr(&cfg.path));
    let _ = write!(o, ",\"mode\":\"{}\",\"connections\":{}", if open { "open" } else { "closed" }, cfg.connections);
    let _ = write!(o, ",\"rate\":{}", cfg.rate.map(jf).unwrap_or_else(|| "null".into()));
    let _ = write!(o, ",\"threads\":{},\"duration_s\":{}", cfg.threads, jf(cfg.duration_s));
    let _ = write!(o, ",\"drain_timeout_s\":{}", jf(cfg.drain_timeout_s));
    let _ = write!(o, ",\"send_t0\":{t0},\"send_t1\":{t1}");
    let _ = write!(
        o,
        ",\"count\":{},\"ok\":{},\"errors\":{},\"cut_off\":{},\"reconnects\":{}",
        s.count, s.ok, s.errors, s.cut_off, s.reconnects
    );
    let _ = write!(o, ",\"late\":{},\"delayed_by_cap\":{}", st.late, s.delayed_by_cap);
    o.push_str(",\"status_codes\":{");
    let mut first = true;
    for (code, &n) in st.status.iter().enumerate() {
        if n > 0 {
            let _ = write!(o, "{}\"{code}\":{n}", if first { "" } else { "," });
            first = false;
        }
    }
    o.push_str("},\"error_kinds\":{");
    let mut kinds: Vec<(&String, &u64)> = s.error_kinds.iter().collect();
    kinds.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (i, (name, n)) in kinds.iter().enumerate() {
        let _ = write!(o, "{}{}:{}", if i > 0 { "," } else { "" }, jstr(name), n);
    }
    o.push('}');
    let _ = write!(o, ",\"bytes_sent\":{},\"bytes_received\":{}", st.bytes_sent, st.bytes_received);
    let _ = write!(o, ",\"latency_ms\":{}", latency(&s.latency));
    let _ = write!(
        o,
        ",\"latency_uncorrected_ms\":{}",
        s.latency_uncorrected.as_ref().map(latency).unwrap_or_else(|| "null".into())
    );
    o.push_str(",\"per_second\":[");
    for (i, n) in s.per_second.iter().enumerate() {
        let _ = write!(o, "{}{}", if i > 0 { "," } else { "" }, n);
    }
    o.push(']');
    let body = match cfg.body {
        BodyMode::Pool => "pool",
        BodyMode::None => "none",
    };
    let body_bytes = if cfg.body == BodyMode::Pool { cfg.body_bytes } else { 0 };
    let _ = write!(o, ",\"body\":\"{body}\",\"body_bytes\":{body_bytes}");
    let _ = write!(o, ",\"id_header\":{}", cfg.id_header.as_deref().map(jstr).unwrap_or_else(|| "null".into()));
    let _ = write!(o, ",\"nonce\":{}", jstr(&cfg.nonce));
    let acked = cfg.acked_out.as_ref().map(|p| jstr(&p.display().to_string())).unwrap_or_else(|| "null".into());
    let _ = write!(o, ",\"acked_out\":{acked}");
    let _ = write!(o, ",\"cpu_s\":{}", jf(cpu_s));
    o.push('}');
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<HttpConfig, String> {
        match parse_args(s.split_whitespace().map(String::from))? {
            HttpParsed::Run(c) => Ok(*c),
            _ => Err("not a run".into()),
        }
    }

    #[test]
    fn arguments() {
        let c = p("--target 127.0.0.1:1").unwrap();
        assert_eq!((c.connections, c.threads, c.duration_s, c.drain_timeout_s), (64, 1, 6.0, 10.0));
        assert_eq!((c.method.as_str(), c.path.as_str(), c.body), ("GET", "/", BodyMode::None));
        assert_eq!(c.ok_status, vec![200]);
        assert_eq!(c.nonce.len(), 10);
        let c = p("--target=h:1 --method POST --rate 2000 --duration 4s --ok-status 200,204 --header X-A:b -H X-B:c").unwrap();
        assert_eq!((c.body, c.body_bytes, c.rate), (BodyMode::Pool, 2048, Some(2000.0)));
        assert_eq!(c.ok_status, vec![200, 204]);
        assert_eq!(c.headers, vec!["X-A:b", "X-B:c"]);
        let c = p("--target h:1 --method POST --body none --nonce abc").unwrap();
        assert_eq!((c.body, c.nonce.as_str(), c.acked_out), (BodyMode::None, "abc", None));
        let c = p("--target h:1 --acked-out /tmp/x.txt").unwrap();
        assert_eq!(c.acked_out, Some(PathBuf::from("/tmp/x.txt")));
        for bad in [
            "--connections 4",
            "--target h:1 --connections 0",
            "--target h:1 --threads 3 --connections 2",
            "--target h:1 --rate 0",
            "--target h:1 --body zip",
            "--target h:1 --ok-status 20",
            "--target h:1 --bogus",
            "--target h:1 --duration -1",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
    }
}
