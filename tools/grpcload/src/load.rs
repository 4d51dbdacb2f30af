//! The load engine: N OS threads, each with a current_thread tokio runtime,
//! its own HTTP/2 connections and workers, and its own statistics (merged
//! after the run, so the hot path takes no locks).
//!
//! Closed loop: each worker sends a call, awaits the full answer, records
//! it, repeats, until t0 + duration; calls in flight then are awaited.
//! Open loop: a scheduler per thread releases call i at t0 + i/R (woken by a
//! timerfd, so not bound to tokio's 1 ms timer tick) to a pool of workers
//! that grows up to the thread's share of --concurrency.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, Version};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::LocalSet;
use tokio::time::Sleep;

use crate::clock::{mono_ns, InstantMap};
use crate::frame::{FrameError, FrameParser, Hasher64};
use crate::schedule::{split_even, ThreadSchedule};
use crate::stats::{Signature, Stats};
use crate::status::{parse_status_value, status_name, OkSet};

static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// Wait before retrying a connection that could not be made.
const RECONNECT_BACKOFF_NS: u64 = 100_000_000;
/// Calls a little late for the drain deadline are still counted if they end
/// within this grace (so a call timing out exactly at the end is a timeout,
/// not cut off).
const DRAIN_GRACE_NS: u64 = 50_000_000;
/// Open loop: t0 is set this far in the future so every thread is waiting
/// for the first call when it is due.
const OPEN_LOOP_LEAD_NS: u64 = 2_000_000;

/// Everything a run needs, shared read-only by all threads.
pub struct Plan {
    pub target: String,
    pub addr: SocketAddr,
    pub uri: Uri,
    pub headers: HeaderMap,
    /// Pre-framed request messages; the hot path only clones these.
    pub requests: Vec<Bytes>,
    pub ok: OkSet,
    pub check_consistency: bool,
    pub rate: Option<f64>,
    pub duration_s: f64,
    pub timeout: Duration,
    pub connections: usize,
    pub concurrency: usize,
    pub threads: usize,
    /// Round-robin position in `requests` (closed loop), across all threads.
    pub counter: AtomicU64,
}

impl Plan {
    /// Builds the plan: resolves the target, pre-builds URI and headers.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        target: &str,
        path: &str,
        requests: Vec<Bytes>,
        ok: OkSet,
        check_consistency: bool,
        rate: Option<f64>,
        duration_s: f64,
        timeout_s: f64,
        connections: usize,
        concurrency: usize,
        threads: usize,
    ) -> Result<Plan, String> {
        use std::net::ToSocketAddrs;
        let addrs: Vec<SocketAddr> = target
            .to_socket_addrs()
            .map_err(|e| format!("bad --target {target:?}: {e}"))?
            .collect();
        let addr = *addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .ok_or_else(|| format!("--target {target:?} resolves to no address"))?;
        let uri: Uri = format!("http://{target}{path}")
            .parse()
            .map_err(|e| format!("bad --target/--call for a URI: {e}"))?;
        let mut headers = HeaderMap::with_capacity(4);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
        headers.insert(
            http::header::USER_AGENT,
            HeaderValue::from_str(&format!("grpcload/{}", crate::VERSION)).expect("ascii"),
        );
        Ok(Plan {
            target: target.to_string(),
            addr,
            uri,
            headers,
            requests,
            ok,
            check_consistency,
            rate,
            duration_s,
            timeout: Duration::from_secs_f64(timeout_s),
            connections,
            concurrency,
            threads,
            counter: AtomicU64::new(0),
        })
    }

    fn open_loop(&self) -> bool {
        self.rate.is_some()
    }
}

// ---------------------------------------------------------------------------
// Call outcome

/// A call that got a grpc-status.
struct Answer {
    status: u32,
    messages: u64,
    bytes: u64,
    hash: u64,
    message: Option<HeaderValue>,
}

enum CallError {
    Connect(String),
    H2(h2::Error),
    Http(u16),
    ContentType,
    Frame(FrameError),
    NoStatus,
    BadStatus,
}

impl CallError {
    fn kind(&self) -> Cow<'static, str> {
        match self {
            CallError::Connect(s) => Cow::Owned(s.clone()),
            CallError::H2(e) => Cow::Owned(h2_kind(e)),
            CallError::Http(c) => Cow::Owned(format!("http {c}")),
            CallError::ContentType => Cow::Borrowed("bad content-type"),
            CallError::Frame(f) => Cow::Borrowed(f.kind()),
            CallError::NoStatus => Cow::Borrowed("no grpc-status"),
            CallError::BadStatus => Cow::Borrowed("bad grpc-status"),
        }
    }
}

fn h2_kind(e: &h2::Error) -> String {
    if let Some(io) = e.get_io() {
        return format!("io: {}", io.kind());
    }
    match e.reason() {
        Some(r) if e.is_go_away() => format!("h2 goaway: {r:?}"),
        Some(r) if e.is_reset() => format!("h2 reset: {r:?}"),
        Some(r) => format!("h2 error: {r:?}"),
        None => format!("h2: {e}"),
    }
}

/// A RST_STREAM leaves the connection usable; any other h2 error (I/O,
/// GOAWAY, protocol) means it has to be re-established.
fn is_connection_error(e: &h2::Error) -> bool {
    !e.is_reset()
}

// ---------------------------------------------------------------------------
// Connections

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ConnState {
    Up,
    Down,
    Connecting,
}

/// One HTTP/2 connection slot; it is re-established when it breaks.
struct Conn {
    sender: RefCell<Option<SendRequest<Bytes>>>,
    /// Bumped on every successful (re)connect; workers cache a sender per generation.
    gen: Cell<u64>,
    state: Cell<ConnState>,
    next_try_ns: Cell<u64>,
    changed: Notify,
    last_err: RefCell<String>,
}

type Cached = Option<(u64, SendRequest<Bytes>)>;

/// Streams this client may open on a connection before the server's SETTINGS
/// say otherwise: enough for every worker sharing it (h2's default is 100;
/// RFC 9113's initial value is unlimited).
fn initial_streams(plan: &Plan) -> usize {
    plan.concurrency.div_ceil(plan.connections).max(100)
}

async fn connect(plan: &Plan) -> Result<(SendRequest<Bytes>, h2::client::Connection<TcpStream, Bytes>), String> {
    let (addr, timeout) = (plan.addr, plan.timeout);
    let tcp = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err("connect: timeout".into()),
        Ok(Err(e)) => return Err(format!("connect: {}", e.kind())),
        Ok(Ok(t)) => t,
    };
    let _ = tcp.set_nodelay(true);
    let hs = h2::client::Builder::new()
        .initial_window_size(4 << 20)
        .initial_connection_window_size(16 << 20)
        .initial_max_send_streams(initial_streams(plan))
        .enable_push(false)
        .handshake::<_, Bytes>(tcp);
    match tokio::time::timeout(timeout, hs).await {
        Err(_) => Err("h2 handshake: timeout".into()),
        Ok(Err(e)) => Err(format!("h2 handshake: {}", h2_kind(&e))),
        Ok(Ok(x)) => Ok(x),
    }
}

impl Conn {
    fn new() -> Conn {
        Conn {
            sender: RefCell::new(None),
            gen: Cell::new(0),
            state: Cell::new(ConnState::Down),
            next_try_ns: Cell::new(0),
            changed: Notify::new(),
            last_err: RefCell::new(String::new()),
        }
    }

    /// Connects this slot (the caller saw it Down). Spawns the connection driver.
    async fn establish(self: &Rc<Self>, ctx: &ThreadCtx, initial: bool) -> Result<(), String> {
        self.state.set(ConnState::Connecting);
        let r = connect(&ctx.plan).await;
        let out = match r {
            Ok((sender, driver)) => {
                let gen = self.gen.get() + 1;
                self.gen.set(gen);
                *self.sender.borrow_mut() = Some(sender);
                self.state.set(ConnState::Up);
                let me = Rc::clone(self);
                tokio::task::spawn_local(async move {
                    let _ = driver.await;
                    me.mark_broken(gen);
                });
                let mut s = ctx.stats.borrow_mut();
                s.connects += 1;
                if !initial {
                    s.reconnects += 1;
                }
                Ok(())
            }
            Err(e) => {
                self.state.set(ConnState::Down);
                self.next_try_ns.set(mono_ns() + RECONNECT_BACKOFF_NS);
                *self.last_err.borrow_mut() = e.clone();
                Err(e)
            }
        };
        self.changed.notify_waiters();
        out
    }

    /// Marks generation `gen` dead (no-op if already replaced). The next user reconnects.
    fn mark_broken(&self, gen: u64) {
        if self.gen.get() == gen && self.state.get() == ConnState::Up {
            self.state.set(ConnState::Down);
            self.sender.borrow_mut().take();
        }
    }

    /// If the slot is down and waiting before its next attempt: until when.
    fn backoff_until(&self, now: u64) -> Option<u64> {
        (self.state.get() == ConnState::Down && self.next_try_ns.get() > now).then(|| self.next_try_ns.get())
    }

    /// Makes `cached` a sender of the current, live connection, connecting if
    /// needed. An error means the connection attempt this call depended on failed.
    async fn ensure(self: &Rc<Self>, ctx: &ThreadCtx, cached: &mut Cached) -> Result<(), String> {
        loop {
            match self.state.get() {
                ConnState::Up => {
                    let g = self.gen.get();
                    if !matches!(cached, Some((cg, _)) if *cg == g) {
                        let s = self.sender.borrow().as_ref().expect("up connection has a sender").clone();
                        *cached = Some((g, s));
                    }
                    return Ok(());
                }
                ConnState::Connecting => {
                    self.changed.notified().await;
                    if self.state.get() == ConnState::Down {
                        return Err(self.last_err.borrow().clone());
                    }
                }
                ConnState::Down => {
                    *cached = None;
                    let now = mono_ns();
                    let nt = self.next_try_ns.get();
                    if nt > now {
                        tokio::time::sleep_until(ctx.imap.at(nt)).await;
                        continue;
                    }
                    self.establish(ctx, false).await?;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Per-thread context

struct Job {
    idx: usize,
    conn: usize,
    sched_ns: u64,
}

struct ThreadCtx {
    plan: Arc<Plan>,
    conns: Vec<Rc<Conn>>,
    stats: RefCell<Stats>,
    imap: InstantMap,
    t0_ns: Cell<u64>,
    t_end_ns: Cell<u64>,
    first_send_ns: Cell<u64>,
    request_bytes: Cell<u64>,
    /// Calls taken by a worker and not recorded yet.
    inflight: Cell<u64>,
    live_workers: Cell<usize>,
    all_done: Notify,
    // open loop
    cap: usize,
    queue: RefCell<VecDeque<Job>>,
    wake: Notify,
    idle: Cell<usize>,
    spawned: Cell<usize>,
    scheduling: Cell<bool>,
}

impl ThreadCtx {
    #[inline]
    fn note_send(&self, t: u64) {
        if t < self.first_send_ns.get() {
            self.first_send_ns.set(t);
        }
    }

    fn worker_exit(&self) {
        self.live_workers.set(self.live_workers.get() - 1);
        if self.live_workers.get() == 0 {
            self.all_done.notify_waiters();
        }
    }

    /// Records one finished call. `res` None = timed out.
    fn record(&self, idx: usize, res: Option<Result<Answer, CallError>>, t_sched: u64, t_send: u64, t_done: u64) {
        let plan = &*self.plan;
        let mut s = self.stats.borrow_mut();
        s.count += 1;
        if t_done > s.last_answer_ns {
            s.last_answer_ns = t_done;
        }
        match res {
            None => {
                s.errors += 1;
                s.status_none += 1;
                s.count_kind("timeout");
            }
            Some(Err(e)) => {
                s.errors += 1;
                s.status_none += 1;
                s.count_kind(&e.kind());
            }
            Some(Ok(a)) => {
                s.count_status(a.status);
                s.messages += a.messages;
                s.response_bytes += a.bytes;
                if plan.ok.contains(a.status) {
                    if plan.check_consistency {
                        let sig = Signature { status: a.status, messages: a.messages, bytes: a.bytes, hash: a.hash };
                        if !s.check_signature(idx, sig) {
                            s.errors += 1;
                            s.inconsistent += 1;
                            s.count_kind("inconsistent answer");
                            return;
                        }
                    }
                    s.ok += 1;
                    s.latency.saturating_record(t_done.saturating_sub(t_sched));
                    if let Some(h) = s.latency_uncorrected.as_mut() {
                        h.saturating_record(t_done.saturating_sub(t_send));
                    }
                    let t0 = self.t0_ns.get();
                    s.count_ok_second(t0, t_done);
                } else {
                    s.errors += 1;
                    match a.message.as_ref().map(|m| m.as_bytes()).filter(|m| !m.is_empty()) {
                        Some(m) if !m.contains(&b'%') && std::str::from_utf8(m).is_ok() => {
                            s.count_kind(std::str::from_utf8(m).expect("checked"));
                        }
                        Some(m) => {
                            let k = crate::status::decode_grpc_message(m);
                            s.count_kind(&k);
                        }
                        None => s.count_kind(&status_name(a.status)),
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// One call

/// Sends request `idx` on `sender` and reads the whole answer.
async fn exchange(ctx: &ThreadCtx, sender: &mut SendRequest<Bytes>, idx: usize) -> Result<Answer, CallError> {
    let plan = &*ctx.plan;
    poll_fn(|cx| sender.poll_ready(cx)).await.map_err(CallError::H2)?;
    let mut req = Request::new(());
    *req.method_mut() = Method::POST;
    *req.uri_mut() = plan.uri.clone();
    *req.version_mut() = Version::HTTP_2;
    *req.headers_mut() = plan.headers.clone();
    let (response, mut send) = sender.send_request(req, false).map_err(CallError::H2)?;
    let body = plan.requests[idx].clone();
    let n = body.len() as u64 - 5;
    send.send_data(body, true).map_err(CallError::H2)?;
    ctx.request_bytes.set(ctx.request_bytes.get() + n);

    let (parts, mut body) = response.await.map_err(CallError::H2)?.into_parts();
    if parts.status != StatusCode::OK {
        return Err(CallError::Http(parts.status.as_u16()));
    }
    match parts.headers.get(CONTENT_TYPE) {
        Some(v) if v.as_bytes().starts_with(b"application/grpc") => {}
        _ => return Err(CallError::ContentType),
    }
    let mut parser = FrameParser::new();
    let mut hasher = plan.check_consistency.then(Hasher64::new);
    let trailers = if body.is_end_stream() {
        None // Trailers-Only: the status is in the headers
    } else {
        while let Some(chunk) = poll_fn(|cx| body.poll_data(cx)).await {
            let chunk = chunk.map_err(CallError::H2)?;
            let _ = body.flow_control().release_capacity(chunk.len());
            parser.feed(&chunk, hasher.as_mut()).map_err(CallError::Frame)?;
        }
        parser.finish().map_err(CallError::Frame)?;
        poll_fn(|cx| body.poll_trailers(cx)).await.map_err(CallError::H2)?
    };
    let src = match &trailers {
        Some(t) if t.contains_key(&GRPC_STATUS) => t,
        _ => &parts.headers,
    };
    let status = match src.get(&GRPC_STATUS) {
        None => return Err(CallError::NoStatus),
        Some(v) => parse_status_value(v.as_bytes()).ok_or(CallError::BadStatus)?,
    };
    let message = if status != 0 { src.get(&GRPC_MESSAGE).cloned() } else { None };
    Ok(Answer {
        status,
        messages: parser.messages,
        bytes: parser.payload_bytes,
        hash: hasher.map(|h| h.finish()).unwrap_or(0),
        message,
    })
}

/// A call on connection slot `conn`: (re)connects if needed, then exchanges.
async fn call(ctx: &ThreadCtx, conn: &Rc<Conn>, cached: &mut Cached, idx: usize) -> Result<Answer, CallError> {
    conn.ensure(ctx, cached).await.map_err(CallError::Connect)?;
    let (gen, sender) = cached.as_mut().expect("ensured");
    let gen = *gen;
    let r = exchange(ctx, sender, idx).await;
    if let Err(CallError::H2(e)) = &r {
        if is_connection_error(e) {
            conn.mark_broken(gen);
            *cached = None;
        }
    }
    r
}

/// Runs `fut` until `deadline_ns`; None if it timed out. `timer` is the
/// worker's long-lived timer, whose deadline is never later than this
/// call's: it is only re-armed when it fires, so most calls never touch the
/// timer wheel.
pub(crate) async fn with_deadline<F: Future>(timer: &mut Pin<Box<Sleep>>, imap: &InstantMap, deadline_ns: u64, fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        loop {
            match timer.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) => {
                    let target = imap.at(deadline_ns);
                    if timer.deadline() >= target {
                        return Poll::Ready(None);
                    }
                    timer.as_mut().reset(target);
                }
            }
        }
    })
    .await
}

// ---------------------------------------------------------------------------
// Closed loop

async fn closed_worker(ctx: Rc<ThreadCtx>, conn_idx: usize) {
    let conn = Rc::clone(&ctx.conns[conn_idx]);
    let plan = Arc::clone(&ctx.plan);
    let n = plan.requests.len() as u64;
    let timeout_ns = plan.timeout.as_nanos() as u64;
    let t_end = ctx.t_end_ns.get();
    let mut cached: Cached = None;
    let mut timer = Box::pin(tokio::time::sleep_until(ctx.imap.at(ctx.t0_ns.get() + timeout_ns)));
    let mut now = mono_ns();
    while now < t_end {
        if let Some(t) = conn.backoff_until(now) {
            if t >= t_end {
                break;
            }
            tokio::time::sleep_until(ctx.imap.at(t)).await;
            now = mono_ns();
            continue;
        }
        let idx = (plan.counter.fetch_add(1, Ordering::Relaxed) % n) as usize;
        let t_send = now;
        ctx.note_send(t_send);
        ctx.inflight.set(ctx.inflight.get() + 1);
        let res = with_deadline(&mut timer, &ctx.imap, t_send + timeout_ns, call(&ctx, &conn, &mut cached, idx)).await;
        now = mono_ns();
        ctx.inflight.set(ctx.inflight.get() - 1);
        ctx.record(idx, res, t_send, t_send, now);
    }
    ctx.worker_exit();
}

// ---------------------------------------------------------------------------
// Open loop

/// A CLOCK_MONOTONIC timerfd registered with the runtime: wakes at an
/// absolute time with microsecond precision.
pub(crate) struct TimerFd {
    fd: AsyncFd<OwnedFd>,
}

impl TimerFd {
    pub(crate) fn new() -> std::io::Result<TimerFd> {
        // SAFETY: plain syscall; the returned fd is owned by OwnedFd below.
        let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: the OwnedFd stays open, and is the same descriptor, for as
        // long as the AsyncFd owns it.
        let fd = unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE)? };
        Ok(TimerFd { fd })
    }

    pub(crate) async fn wait_until(&self, t_ns: u64) -> std::io::Result<()> {
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec {
                tv_sec: (t_ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (t_ns % 1_000_000_000) as libc::c_long,
            },
        };
        let raw = self.fd.as_raw_fd();
        // SAFETY: valid fd and itimerspec; old value not requested.
        let rc = unsafe { libc::timerfd_settime(raw, libc::TFD_TIMER_ABSTIME, &spec, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        loop {
            let mut guard = self.fd.readable().await?;
            let r = guard.try_io(|inner| {
                let mut buf = [0u8; 8];
                // SAFETY: reading 8 bytes into an 8-byte buffer from our timerfd.
                let n = unsafe { libc::read(inner.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
            match r {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

async fn open_scheduler(ctx: Rc<ThreadCtx>, thread: usize) {
    let plan = Arc::clone(&ctx.plan);
    let rate = plan.rate.expect("open loop");
    let n = plan.requests.len() as u64;
    let nconns = ctx.conns.len();
    let mut sched = ThreadSchedule::new(ctx.t0_ns.get(), rate, plan.duration_s, thread, plan.threads);
    let tfd = TimerFd::new().ok();
    let mut rr = 0usize;
    loop {
        let now = mono_ns();
        while let Some((i, due)) = sched.take_due(now) {
            let job = Job { idx: (i % n) as usize, conn: rr % nconns, sched_ns: due };
            rr += 1;
            dispatch(&ctx, job);
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

fn dispatch(ctx: &Rc<ThreadCtx>, job: Job) {
    ctx.queue.borrow_mut().push_back(job);
    if ctx.idle.get() > 0 {
        ctx.idle.set(ctx.idle.get() - 1);
        ctx.wake.notify_one();
    } else if ctx.spawned.get() < ctx.cap {
        ctx.spawned.set(ctx.spawned.get() + 1);
        ctx.live_workers.set(ctx.live_workers.get() + 1);
        tokio::task::spawn_local(open_worker(Rc::clone(ctx)));
    } else {
        ctx.stats.borrow_mut().delayed_by_cap += 1;
    }
}

async fn open_worker(ctx: Rc<ThreadCtx>) {
    let plan = Arc::clone(&ctx.plan);
    let timeout_ns = plan.timeout.as_nanos() as u64;
    let mut cached: Vec<Cached> = (0..ctx.conns.len()).map(|_| None).collect();
    let mut timer = Box::pin(tokio::time::sleep_until(ctx.imap.at(mono_ns() + timeout_ns)));
    loop {
        let job = ctx.queue.borrow_mut().pop_front();
        let Some(job) = job else {
            if !ctx.scheduling.get() {
                break;
            }
            ctx.idle.set(ctx.idle.get() + 1);
            ctx.wake.notified().await;
            continue;
        };
        ctx.inflight.set(ctx.inflight.get() + 1);
        let conn = Rc::clone(&ctx.conns[job.conn]);
        let mut now = mono_ns();
        if let Some(t) = conn.backoff_until(now) {
            tokio::time::sleep_until(ctx.imap.at(t)).await;
            now = mono_ns();
        }
        let t_send = now;
        ctx.note_send(t_send);
        let res = with_deadline(&mut timer, &ctx.imap, t_send + timeout_ns, call(&ctx, &conn, &mut cached[job.conn], job.idx)).await;
        let t_done = mono_ns();
        ctx.inflight.set(ctx.inflight.get() - 1);
        ctx.record(job.idx, res, job.sched_ns, t_send, t_done);
    }
    ctx.worker_exit();
}

// ---------------------------------------------------------------------------
// Threads

/// Shared between the main thread and the load threads for start-up (grpcload
/// and httpload): each thread connects its slots, counts them in `connected`,
/// waits at the barrier; the main thread sets `t0` (0 = abort) and releases
/// them at the barrier's second round.
pub(crate) struct StartLine {
    pub(crate) barrier: Barrier,
    pub(crate) connected: AtomicUsize,
    pub(crate) first_error: Mutex<Option<String>>,
    /// t0 in CLOCK_MONOTONIC ns; 0 = abort.
    pub(crate) t0: AtomicU64,
}

/// Starts `threads` load threads (`body(k, start)`), sets the common start
/// time once they have connected (open loop: a little ahead, so the first
/// calls are not already late), and merges their results. Err with the first
/// connection error when no connection at all could be made.
pub(crate) fn run_threads<S: Send + 'static>(
    name: &str,
    threads: usize,
    open_loop: bool,
    body: impl Fn(usize, Arc<StartLine>) -> S + Send + Sync + 'static,
    merge: impl Fn(&mut S, S),
) -> Result<S, String> {
    let start = Arc::new(StartLine {
        barrier: Barrier::new(threads + 1),
        connected: AtomicUsize::new(0),
        first_error: Mutex::new(None),
        t0: AtomicU64::new(0),
    });
    let body = Arc::new(body);
    let mut handles = Vec::with_capacity(threads);
    for k in 0..threads {
        let start = Arc::clone(&start);
        let body = Arc::clone(&body);
        let h = std::thread::Builder::new()
            .name(format!("{name}-{k}"))
            .spawn(move || body(k, start))
            .map_err(|e| format!("cannot start thread: {e}"))?;
        handles.push(h);
    }
    start.barrier.wait();
    let connected = start.connected.load(Ordering::SeqCst);
    if connected > 0 {
        let lead = if open_loop { OPEN_LOOP_LEAD_NS } else { 0 };
        start.t0.store(mono_ns() + lead, Ordering::SeqCst);
    }
    start.barrier.wait();
    let mut merged: Option<S> = None;
    for h in handles {
        let s = h.join().map_err(|_| "a load thread panicked".to_string())?;
        match merged.as_mut() {
            None => merged = Some(s),
            Some(m) => merge(m, s),
        }
    }
    if connected == 0 {
        return Err(start.first_error.lock().unwrap().take().unwrap_or_else(|| "unknown error".into()));
    }
    Ok(merged.expect("at least one thread"))
}

fn thread_main(plan: Arc<Plan>, k: usize, start: Arc<StartLine>) -> Stats {
    let open = plan.open_loop();
    let slots = if plan.check_consistency { plan.requests.len() } else { 0 };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            *start.first_error.lock().unwrap() = Some(format!("cannot start a runtime: {e}"));
            start.barrier.wait();
            start.barrier.wait();
            return Stats::new(open, slots);
        }
    };
    let local = LocalSet::new();
    let nt = plan.threads;
    let my_conns = split_even(plan.connections, nt, k);
    let ctx = Rc::new(ThreadCtx {
        plan: Arc::clone(&plan),
        conns: (0..my_conns).map(|_| Rc::new(Conn::new())).collect(),
        stats: RefCell::new(Stats::new(open, slots)),
        imap: InstantMap::new(),
        t0_ns: Cell::new(0),
        t_end_ns: Cell::new(0),
        first_send_ns: Cell::new(u64::MAX),
        request_bytes: Cell::new(0),
        inflight: Cell::new(0),
        live_workers: Cell::new(0),
        all_done: Notify::new(),
        cap: split_even(plan.concurrency, nt, k),
        queue: RefCell::new(VecDeque::new()),
        wake: Notify::new(),
        idle: Cell::new(0),
        spawned: Cell::new(0),
        scheduling: Cell::new(open),
    });

    // phase 1: connect every slot (in parallel), let the SETTINGS exchange happen
    let ok = local.block_on(&rt, async {
        let mut handles = Vec::new();
        for c in &ctx.conns {
            let c = Rc::clone(c);
            let ctx = Rc::clone(&ctx);
            handles.push(tokio::task::spawn_local(async move { c.establish(&ctx, true).await }));
        }
        let mut ok = 0usize;
        for h in handles {
            match h.await {
                Ok(Ok(())) => ok += 1,
                Ok(Err(e)) => {
                    let mut fe = start.first_error.lock().unwrap();
                    if fe.is_none() {
                        *fe = Some(e);
                    }
                }
                Err(_) => {}
            }
        }
        if ok > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ok
    });
    start.connected.fetch_add(ok, Ordering::SeqCst);
    start.barrier.wait();
    start.barrier.wait();
    let t0 = start.t0.load(Ordering::SeqCst);
    if t0 == 0 {
        return ctx.stats.replace(Stats::new(open, slots));
    }
    let duration_ns = (plan.duration_s * 1e9).round() as u64;
    let t_end = t0 + duration_ns;
    ctx.t0_ns.set(t0);
    ctx.t_end_ns.set(t_end);
    let drain_deadline = t_end + plan.timeout.as_nanos() as u64 + DRAIN_GRACE_NS;

    // phase 2: the run
    local.block_on(&rt, async {
        if open {
            tokio::task::spawn_local(open_scheduler(Rc::clone(&ctx), k));
        } else {
            // worker w of the whole run uses connection w % C; this thread owns
            // connections c with c % T == k, locally numbered c / T
            for w in 0..plan.concurrency {
                let c = w % plan.connections;
                if c % nt == k {
                    ctx.live_workers.set(ctx.live_workers.get() + 1);
                    tokio::task::spawn_local(closed_worker(Rc::clone(&ctx), c / nt));
                }
            }
        }
        let done = async {
            loop {
                let n = ctx.all_done.notified();
                if ctx.live_workers.get() == 0 && !ctx.scheduling.get() {
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

    let mut s = ctx.stats.replace(Stats::new(open, slots));
    s.cut_off = ctx.inflight.get() + ctx.queue.borrow().len() as u64;
    s.first_send_ns = ctx.first_send_ns.get();
    s.request_bytes = ctx.request_bytes.get();
    drop(local); // cancels what is left (cut-off calls, connection drivers)
    s
}

/// Runs the load and returns the merged statistics. Err if no connection
/// could be made at start-up.
pub fn run(plan: Arc<Plan>) -> Result<Stats, String> {
    let (threads, open) = (plan.threads, plan.open_loop());
    let p = Arc::clone(&plan);
    run_threads("grpcload", threads, open, move |k, start| thread_main(Arc::clone(&p), k, start), |m, s| m.merge(s))
        .map_err(|why| format!("cannot connect to {} ({}): {why}", plan.target, plan.addr))
}
