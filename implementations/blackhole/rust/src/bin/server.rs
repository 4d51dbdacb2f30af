//! blackhole server: answers 200 to any HTTP/1.1 request and records it
//! (scenarios/blackhole/README.md).
//!
//! hyper 1.x `server::conn::http1` on a tokio multi-threaded runtime with
//! LANGBENCH_CPUS workers. A handler reads the body (1 MiB limit), hands the
//! request to the recorder through a tokio mpsc channel bounded in requests
//! and, by a semaphore, in bytes (waiting for room when either is full:
//! backpressure, never loss) and answers 200. The
//! recorder is one dedicated OS thread: it builds each FlatBuffers record in
//! a reused builder and writes it, length-prefixed, through an LZ4 frame
//! encoder into `NAME.lz4.tmp`, flushed at least once a second, renamed to
//! `NAME.lz4` when the file is closed (rotation or shutdown).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use blackhole::MAX_BODY;
use blackhole::fbr::{Request as FbRequest, RequestArgs};
use bytes::{Bytes, BytesMut};
use flatbuffers::FlatBufferBuilder;
use http::header::{EXPECT, HeaderName};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body as _, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
use tokio::net::{TcpListener, TcpSocket};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// Records the hand-off holds at most; a request waits for room beyond it.
const QUEUE_BOUND: usize = 1024;
/// Body and header bytes the hand-off holds at most (default of
/// BLACKHOLE_QUEUE_BYTES), counted in KiB permits of a semaphore; a request
/// waits for room beyond it, one larger than the whole bound passes alone.
const QUEUE_BYTES: u64 = 8 << 20;
/// Records the writer takes from the queue at a time.
const WRITER_BATCH: usize = 256;
/// A body over the limit with a Content-Length up to this much more is read
/// and discarded before the 413, so that the client reads the answer instead
/// of a reset; beyond it (or with Expect: 100-continue) 413 and close.
const OVERSIZE_DRAIN: u64 = 4 << 20;
/// How long requests in flight may take to finish after SIGTERM.
const GRACE: Duration = Duration::from_secs(2);
/// The recorder flushes the compressor and the file at least this often.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn log(msg: std::fmt::Arguments) {
    eprintln!("blackhole-server: {msg}");
}

// ------------------------------------------------------------------ config

struct Config {
    addr: SocketAddr,
    cpus: usize,
    record: bool,
    dir: PathBuf,
    rotate_bytes: u64,
    rotate_after: Duration,
    /// The byte bound of the hand-off in KiB (semaphore permits), >= 1.
    queue_kib: u32,
}

fn env_or(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match env_or(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a valid number")),
    }
}

impl Config {
    fn from_env() -> Result<Config, String> {
        let host = env_or("HOST").unwrap_or_else(|| "127.0.0.1".into());
        let port: u16 = env_num("PORT", 8080)?;
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
            .map_err(|e| format!("HOST={host}: {e}"))?
            .next()
            .ok_or_else(|| format!("HOST={host}: no address"))?;
        let default_cpus = thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let cpus = env_num("LANGBENCH_CPUS", default_cpus)?.max(1);
        let record = match env_or("RECORD").as_deref().map(str::trim) {
            None | Some("1") => true,
            Some("0") => false,
            Some(v) => return Err(format!("RECORD={v:?}: expected 0 or 1")),
        };
        let dir = env_or("BLACKHOLE_DIR")
            .or_else(|| env_or("LANGBENCH_INSTANCE_DIR"))
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("recordings"));
        let rotate_bytes: u64 = env_num("BLACKHOLE_ROTATE_BYTES", 134_217_728)?;
        let rotate_seconds: f64 = env_num("BLACKHOLE_ROTATE_SECONDS", 60.0)?;
        if rotate_bytes == 0 || rotate_seconds.is_nan() || rotate_seconds <= 0.0 {
            return Err("BLACKHOLE_ROTATE_BYTES and BLACKHOLE_ROTATE_SECONDS must be > 0".into());
        }
        let queue_bytes: u64 = env_num("BLACKHOLE_QUEUE_BYTES", QUEUE_BYTES)?;
        let queue_kib = u32::try_from(queue_bytes.div_ceil(1024))
            .ok()
            .filter(|&k| k > 0)
            .ok_or("BLACKHOLE_QUEUE_BYTES must be > 0 and < 4 TiB")?;
        Ok(Config {
            addr,
            cpus,
            record,
            dir,
            rotate_bytes,
            rotate_after: Duration::from_secs_f64(rotate_seconds),
            queue_kib,
        })
    }
}

// ------------------------------------------------------------------ main

fn main() -> ExitCode {
    let cfg = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            log(format_args!("configuration: {e}"));
            return ExitCode::from(2);
        }
    };

    // The recorder thread (RECORD=1 only: RECORD=0 creates no folder, no file).
    let (tx, writer) = if cfg.record {
        if let Err(e) = fs::create_dir_all(&cfg.dir) {
            log(format_args!("cannot create {}: {e}", cfg.dir.display()));
            return ExitCode::from(1);
        }
        let (tx, rx) = mpsc::channel::<Msg>(QUEUE_BOUND);
        let rec = Recorder::new(&cfg);
        let handle = thread::Builder::new()
            .name("bh-writer".into())
            .spawn(move || rec.run(rx))
            .expect("spawn the writer thread");
        let room = Arc::new(Semaphore::new(cfg.queue_kib as usize));
        let kib = cfg.queue_kib;
        (Some(Queue { tx, room, kib }), Some(handle))
    } else {
        (None, None)
    };

    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.cpus)
        .thread_name("bh-worker")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log(format_args!("tokio runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    let served = rt.block_on(serve(&cfg, tx));
    // Drops every task still running (connections past the grace period,
    // the ticker), and with them the last senders of the queue.
    rt.shutdown_timeout(Duration::from_millis(200));
    if let Err(e) = served {
        log(format_args!("{e}"));
        return ExitCode::from(1);
    }
    if let Some(handle) = writer {
        match handle.join() {
            Ok(s) => log(format_args!(
                "recorder closed: {} records, {} files, {} stream bytes",
                s.records, s.files, s.stream_bytes
            )),
            Err(_) => return ExitCode::from(1),
        }
    }
    log(format_args!("stopped"));
    ExitCode::SUCCESS
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(4096)
}

/// The hand-off to the recorder: at most QUEUE_BOUND records and `kib` KiB of
/// body and header bytes queued and not yet written. A handler takes its
/// permits (KiB, rounded up; FIFO) before it sends; the writer gives them back
/// by dropping the record once written.
struct Queue {
    tx: mpsc::Sender<Msg>,
    room: Arc<Semaphore>,
    kib: u32,
}

struct State {
    queue: Option<Queue>,
}

async fn serve(cfg: &Config, queue: Option<Queue>) -> io::Result<()> {
    let listener = bind(cfg.addr).map_err(|e| io::Error::new(e.kind(), format!("bind {}: {e}", cfg.addr)))?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;

    // The ticker: wakes the recorder once a second so that it flushes and
    // rotates by age while no record arrives. When the queue is full records
    // are flowing and the recorder checks its clock after every batch anyway.
    let ticker = queue.as_ref().map(|q| q.tx.clone()).map(|tx| {
        tokio::spawn(async move {
            let mut every = tokio::time::interval(FLUSH_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(Msg::Tick) {
                    break;
                }
            }
        })
    });

    let state = Arc::new(State { queue });
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .keep_alive(true)
        .pipeline_flush(true);
    let graceful = GracefulShutdown::new();
    log(format_args!(
        "listening on {}, {} worker thread(s), record={}, dir={}, rotate {} bytes / {:?}, queue {} records / {} KiB",
        cfg.addr,
        cfg.cpus,
        u8::from(cfg.record),
        cfg.dir.display(),
        cfg.rotate_bytes,
        cfg.rotate_after,
        QUEUE_BOUND,
        cfg.queue_kib
    ));

    loop {
        tokio::select! {
            biased;
            _ = term.recv() => break,
            _ = int.recv() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let state = state.clone();
                    let conn = h1.serve_connection(
                        TokioIo::new(stream),
                        service_fn(move |req| handle(req, state.clone())),
                    );
                    let conn = graceful.watch(conn);
                    // Errors of one connection (client gone, bad request) are
                    // that connection's business: nothing logged per request.
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                }
                Err(e) => {
                    // ECONNABORTED and the like concern one connection; EMFILE
                    // and ENFILE pass after a pause.
                    if !matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset) {
                        log(format_args!("accept: {e}"));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
    }

    // SIGTERM: stop accepting, let requests in flight finish (idle keep-alive
    // connections close at once), then let the recorder drain.
    drop(listener);
    let open = graceful.count();
    if tokio::time::timeout(GRACE, graceful.shutdown()).await.is_err() {
        log(format_args!(
            "shutdown: connections still busy after {GRACE:?}, closing them"
        ));
    } else {
        log(format_args!("shutdown: {open} connection(s) finished"));
    }
    if let Some(t) = ticker {
        t.abort();
    }
    drop(state);
    Ok(())
}

// ------------------------------------------------------------------ handler

type HandlerError = Box<dyn std::error::Error + Send + Sync>;

fn answer(status: StatusCode) -> Response<Empty<Bytes>> {
    let mut r = Response::new(Empty::new());
    *r.status_mut() = status;
    r
}

/// The request body, de-chunked; `None` when it is over the limit.
/// An error (the client hung up, a bad chunk) ends the connection unanswered.
async fn read_body(mut body: Incoming, size_hint: Option<u64>) -> Result<Option<Bytes>, hyper::Error> {
    let mut first: Option<Bytes> = None;
    let mut rest: Option<BytesMut> = None;
    let mut total: usize = 0;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else { continue }; // trailers
        total += data.len();
        if total > MAX_BODY {
            // Over the limit: discard the rest (bounded by OVERSIZE_DRAIN).
            first = None;
            rest = None;
            if total as u64 > MAX_BODY as u64 + OVERSIZE_DRAIN {
                return Ok(None);
            }
            continue;
        }
        match (&mut first, &mut rest) {
            (None, None) => first = Some(data),
            (Some(f), None) => {
                let cap = size_hint.map_or(f.len() + data.len(), |n| n as usize);
                let mut b = BytesMut::with_capacity(cap.max(f.len() + data.len()));
                b.extend_from_slice(f);
                b.extend_from_slice(&data);
                first = None;
                rest = Some(b);
            }
            (_, Some(b)) => b.extend_from_slice(&data),
        }
    }
    if total > MAX_BODY {
        return Ok(None);
    }
    Ok(Some(match (first, rest) {
        (Some(f), _) => f,
        (None, Some(b)) => b.freeze(),
        (None, None) => Bytes::new(),
    }))
}

async fn handle(req: Request<Incoming>, state: Arc<State>) -> Result<Response<Empty<Bytes>>, HandlerError> {
    let (parts, body) = req.into_parts();
    let declared = body.size_hint().exact();
    if let Some(len) = declared {
        // Content-Length over the limit: 413 at once when the client waits
        // for 100-continue or when the body is too big to be worth reading.
        if len > MAX_BODY as u64
            && (parts.headers.contains_key(EXPECT) || len > MAX_BODY as u64 + OVERSIZE_DRAIN)
        {
            return Ok(answer(StatusCode::PAYLOAD_TOO_LARGE));
        }
    }
    let Some(body) = read_body(body, declared).await? else {
        return Ok(answer(StatusCode::PAYLOAD_TOO_LARGE));
    };
    if let Some(q) = &state.queue {
        // Room in bytes first (a request larger than the whole bound waits
        // for an empty queue), then a slot in the channel.
        let head: usize = parts
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum();
        let kib = u32::try_from((head + body.len()).div_ceil(1024)).map_or(q.kib, |k| k.min(q.kib));
        let room = q.room.clone().acquire_many_owned(kib).await;
        let room = room.expect("the semaphore is never closed");
        let rec = Record {
            method: parts.method,
            uri: parts.uri,
            headers: parts.headers,
            body,
            _room: room,
        };
        if q.tx.send(Msg::Rec(rec)).await.is_err() {
            // The recorder is gone (it exits the process on a write error).
            return Ok(answer(StatusCode::SERVICE_UNAVAILABLE));
        }
    }
    // hyper writes `content-length: 0` for the empty body.
    Ok(answer(StatusCode::OK))
}

// ------------------------------------------------------------------ recorder

struct Record {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    /// Its share of the byte bound, given back when the writer drops the
    /// record after writing it.
    _room: OwnedSemaphorePermit,
}

// Records travel inline (no box: no allocation per request); a tick is rare.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Rec(Record),
    Tick,
}

struct OpenFile {
    enc: FrameEncoder<BufWriter<File>>,
    tmp: PathBuf,
    done: PathBuf,
    opened: Instant,
    stream_bytes: u64,
    dirty: bool,
    last_flush: Instant,
}

#[derive(Default)]
struct Stats {
    records: u64,
    files: u64,
    stream_bytes: u64,
}

struct Recorder {
    dir: PathBuf,
    prefix: String,
    id_prefix: String,
    rotate_bytes: u64,
    rotate_after: Duration,
    seq: u64,
    next_id: u64,
    file: Option<OpenFile>,
    fbb: FlatBufferBuilder<'static>,
    headers: String,
    scratch: String,
    stats: Stats,
}

/// Header bytes as text: UTF-8 when they are, else ISO-8859-1.
fn text(b: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(b) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(b.iter().map(|&c| c as char).collect()),
    }
}

fn fatal(what: &str, path: &Path, e: io::Error) -> ! {
    log(format_args!("FATAL: {what} {}: {e}", path.display()));
    std::process::exit(1);
}

impl Recorder {
    fn new(cfg: &Config) -> Recorder {
        let start_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let pid = std::process::id();
        Recorder {
            dir: cfg.dir.clone(),
            // One writer: writer number 0. Files sort by name in the order written.
            prefix: format!("bh-{start_ms}-{pid}-0-"),
            id_prefix: format!("bh-{start_ms}-{pid}-"),
            rotate_bytes: cfg.rotate_bytes,
            rotate_after: cfg.rotate_after,
            seq: 0,
            next_id: 0,
            file: None,
            fbb: FlatBufferBuilder::with_capacity(64 * 1024),
            headers: String::with_capacity(1024),
            scratch: String::with_capacity(64),
            stats: Stats::default(),
        }
    }

    fn run(mut self, mut rx: mpsc::Receiver<Msg>) -> Stats {
        let mut batch = Vec::with_capacity(WRITER_BATCH);
        loop {
            // Returns 0 only once every sender is gone and the queue is empty.
            if rx.blocking_recv_many(&mut batch, WRITER_BATCH) == 0 {
                break;
            }
            let mut tick = false;
            for msg in batch.drain(..) {
                match msg {
                    Msg::Rec(r) => self.write(&r),
                    Msg::Tick => tick = true,
                }
            }
            self.maintain(tick);
        }
        self.close();
        self.stats
    }

    /// Flush and rotate by age: after every batch, and on every tick.
    fn maintain(&mut self, tick: bool) {
        let Some(f) = &mut self.file else { return };
        let now = Instant::now();
        if now.duration_since(f.opened) >= self.rotate_after {
            self.close();
        } else if f.dirty && (tick || now.duration_since(f.last_flush) >= FLUSH_EVERY) {
            let r = f.enc.flush().and_then(|_| f.enc.get_mut().flush());
            if let Err(e) = r {
                fatal("flush", &f.tmp, e);
            }
            f.dirty = false;
            f.last_flush = now;
        }
    }

    fn open(&mut self) {
        let name = format!("{}{:06}.lz4", self.prefix, self.seq);
        self.seq += 1;
        let done = self.dir.join(&name);
        let tmp = self.dir.join(name + ".tmp");
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .unwrap_or_else(|e| fatal("create", &tmp, e));
        // 64 KiB independent blocks, no block checksums, a content checksum
        // (xxHash32) at the end of the frame; one frame per file.
        let info = FrameInfo::new()
            .block_size(BlockSize::Max64KB)
            .block_mode(BlockMode::Independent)
            .content_checksum(true);
        let now = Instant::now();
        self.file = Some(OpenFile {
            enc: FrameEncoder::with_frame_info(info, BufWriter::with_capacity(256 * 1024, file)),
            tmp,
            done,
            opened: now,
            stream_bytes: 0,
            dirty: false,
            last_flush: now,
        });
    }

    fn close(&mut self) {
        let Some(f) = self.file.take() else { return };
        let file = f
            .enc
            .finish()
            .map_err(io::Error::other)
            .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
            .unwrap_or_else(|e| fatal("finish", &f.tmp, e));
        drop(file);
        if let Err(e) = fs::rename(&f.tmp, &f.done) {
            fatal("rename", &f.tmp, e);
        }
        self.stats.files += 1;
    }

    fn write(&mut self, r: &Record) {
        let fbb = &mut self.fbb;
        fbb.reset();
        let id = match r.headers.get(X_REQUEST_ID).filter(|v| !v.is_empty()) {
            Some(v) => fbb.create_string(&text(v.as_bytes())),
            None => {
                self.scratch.clear();
                let _ = write!(self.scratch, "{}{}", self.id_prefix, self.next_id);
                self.next_id += 1;
                fbb.create_string(&self.scratch)
            }
        };
        let method = fbb.create_string(r.method.as_str());
        let uri = match (r.uri.scheme(), r.uri.authority(), r.uri.path_and_query()) {
            (None, None, Some(pq)) => fbb.create_string(pq.as_str()),
            _ => {
                self.scratch.clear();
                let _ = write!(self.scratch, "{}", r.uri);
                fbb.create_string(&self.scratch)
            }
        };
        // The header block, names lower case (hyper's HeaderMap), lines in
        // the order received except that repeated names are grouped at the
        // first one's place.
        self.headers.clear();
        for (name, value) in r.headers.iter() {
            self.headers.push_str(name.as_str());
            self.headers.push_str(": ");
            self.headers.push_str(&text(value.as_bytes()));
            self.headers.push_str("\r\n");
        }
        let headers = fbb.create_string(&self.headers);
        let body = (!r.body.is_empty()).then(|| fbb.create_vector(&r.body[..]));
        let root = FbRequest::create(
            fbb,
            &RequestArgs {
                id: Some(id),
                method: Some(method),
                uri: Some(uri),
                headers: Some(headers),
                body,
            },
        );
        fbb.finish_minimal(root);

        if self.file.is_none() {
            self.open();
        }
        let Some(f) = self.file.as_mut() else {
            unreachable!()
        };
        let data = self.fbb.finished_data();
        let len = data.len() as u64;
        let r = f
            .enc
            .write_all(&len.to_le_bytes())
            .and_then(|_| f.enc.write_all(data));
        if let Err(e) = r {
            fatal("write", &f.tmp, e);
        }
        f.dirty = true;
        f.stream_bytes += 8 + len;
        self.stats.records += 1;
        self.stats.stream_bytes += 8 + len;
        if f.stream_bytes >= self.rotate_bytes {
            self.close();
        }
    }
}
