//! ws-echo server with tokio-tungstenite (scenarios/ws-echo/README.md).
//!
//! hyper 1.x (`server::conn::http1`, upgrades enabled) serves the HTTP routes
//! and answers the WebSocket handshake on /connect itself: 101 with the
//! Sec-WebSocket-Accept of tungstenite's `derive_accept_key`, no extension,
//! no subprotocol. The upgraded TCP stream is taken back from hyper
//! (`Upgraded::downcast`, with the bytes hyper had read past the request) and
//! handed to `tokio_tungstenite::WebSocketStream` as a server-side stream.
//! One task per connection: a `select!` loop over the stream, a 5 s ping
//! ticker, the 15 s silence deadline and the shutdown token. tungstenite
//! reassembles fragments, validates UTF-8, enforces the 1 MiB limit and
//! answers pings and closes; its errors only end the stream, so the close
//! frame that goes with them (1007, 1009, 1002) is sent here. The echoes of
//! the messages one read brought in are queued and flushed together (one
//! write(2) a batch instead of one an echo).
//!
//! Runtime: one current_thread tokio runtime per CPU (LANGBENCH_CPUS), each
//! with its own listener (SO_REUSEPORT when there are several), serving its
//! connections start to end. Measured at 1 CPU and 1,000 connections in a
//! closed loop, the multi-threaded scheduler's p99 was 90-160 ms against
//! 11-15 ms here: with ~1,000 tasks woken at once its 256-slot local queue
//! overflows into the global queue, which it visits rarely.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use http::header::{
    CONNECTION, HeaderMap, HeaderName, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::{Instant, MissedTickBehavior, sleep_until, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The contract's message size limit: a larger message closes with 1009.
const MAX_MESSAGE: usize = 1 << 20;
/// tungstenite's read buffer: allocated (and zeroed) for every connection,
/// it is also the most one read(2) takes.
const READ_BUFFER: usize = 8 << 10;
/// Echoes of one read batch are queued and written together (one write(2)
/// when the batch is done); a batch that grows past this is written as it
/// grows, so a connection's queued output stays near this size plus a frame.
const WRITE_BUFFER: usize = 64 << 10;
/// Queued output beyond which a write fails (backpressure bound): one
/// maximal echo plus control frames on top of a batch; every batch is
/// flushed before the next wait for input, so it is never reached by a
/// well-behaved client.
const MAX_WRITE_BUFFER: usize = 2 << 20;
/// A ping to every connection this often.
const PING_EVERY: Duration = Duration::from_secs(5);
/// A connection from which nothing arrived for this long is closed.
const SILENCE: Duration = Duration::from_secs(15);
/// A write (echo, ping, close) that cannot complete in this time (the client
/// reads nothing) drops the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// After our close frame: how long the client's close (or its TCP close)
/// is awaited before the connection is dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// SIGTERM: how long the connections get to finish their close handshake.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(3);
/// An HTTP request's header block (and an idle keep-alive connection) must
/// arrive within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const LISTEN_BACKLOG: u32 = 4096;
/// The start line's summary of the settings.
const SETTINGS: &str = "one current_thread runtime per CPU; tokio-tungstenite 0.30: read buffer 8 KiB, echoes of a read batch flushed together (write buffer 64 KiB), max message and frame 1 MiB, ping every 5 s, close after 15 s of silence";

fn log(msg: std::fmt::Arguments) {
    eprintln!("ws-echo-server: {msg}");
}

// ------------------------------------------------------------------ config

struct Config {
    addr: SocketAddr,
    cpus: usize,
}

fn env_or(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Config {
    fn from_env() -> Result<Config, String> {
        let host = env_or("HOST").unwrap_or_else(|| "127.0.0.1".into());
        let port: u16 = match env_or("PORT") {
            None => 8080,
            Some(p) => p
                .trim()
                .parse()
                .map_err(|_| format!("PORT={p:?} is not a port number"))?,
        };
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
            .map_err(|e| format!("HOST={host}: {e}"))?
            .next()
            .ok_or_else(|| format!("HOST={host}: no address"))?;
        let cpus = match env_or("LANGBENCH_CPUS") {
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
            Some(c) => c
                .trim()
                .parse::<usize>()
                .map_err(|_| format!("LANGBENCH_CPUS={c:?} is not a number"))?
                .max(1),
        };
        Ok(Config { addr, cpus })
    }
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        // Write coalescing up to WRITE_BUFFER: the echoes of the messages
        // one read brought in are flushed together (see `session`).
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
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
    // One current_thread runtime per CPU, each with its own listener (the
    // kernel spreads connections over SO_REUSEPORT listeners), built and
    // bound here so that a bind error stops the start.
    let mut workers = Vec::with_capacity(cfg.cpus);
    for _ in 0..cfg.cpus {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                log(format_args!("tokio runtime: {e}"));
                return ExitCode::from(1);
            }
        };
        let listener = {
            let _in = rt.enter();
            bind(cfg.addr, cfg.cpus > 1)
        };
        match listener {
            Ok(l) => workers.push((rt, l)),
            Err(e) => {
                log(format_args!("bind {}: {e}", cfg.addr));
                return ExitCode::from(1);
            }
        }
    }
    let shared = Shared {
        stop: CancellationToken::new(),
        tasks: TaskTracker::new(),
    };
    log(format_args!(
        "listening on {}, {} ({} CPU(s))",
        cfg.addr, SETTINGS, cfg.cpus
    ));

    let mut workers = workers.into_iter();
    let (rt, listener) = workers.next().expect("at least one CPU");
    for (i, (wrt, wl)) in workers.enumerate() {
        let shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("ws-worker-{}", i + 1))
            .spawn(move || {
                wrt.block_on(async move {
                    accept_loop(wl, shared.clone()).await;
                    // Keeps this runtime driving its connections until all
                    // have closed (or the main thread exits the process).
                    shared.tasks.wait().await;
                })
            });
        if let Err(e) = spawned {
            log(format_args!("worker thread: {e}"));
            return ExitCode::from(1);
        }
    }
    // The first runtime runs on the main thread, with the signals.
    let served = rt.block_on(async {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        // SIGTERM: the listeners close, then every connection sends its
        // close (1001) and waits up to CLOSE_WAIT for the client's.
        let open = shared.tasks.len();
        shared.tasks.close();
        shared.stop.cancel();
        let _ = accept.await;
        log(format_args!("shutdown: closing {open} connection(s)"));
        if timeout(SHUTDOWN_WAIT, shared.tasks.wait()).await.is_err() {
            log(format_args!(
                "shutdown: {} connection(s) still open after {SHUTDOWN_WAIT:?}, dropped",
                shared.tasks.len()
            ));
        }
        io::Result::Ok(())
    });
    if let Err(e) = served {
        log(format_args!("signals: {e}"));
        return ExitCode::from(1);
    }
    log(format_args!("stopped"));
    // Returning exits the process: the other runtimes' threads and whatever
    // connection was still open go with it.
    ExitCode::SUCCESS
}

fn bind(addr: SocketAddr, reuseport: bool) -> io::Result<TcpListener> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    // Only with several listeners: with one, a port already taken (a server
    // left over) must fail the bind, not share the port.
    if reuseport {
        sock.set_reuseport(true)?;
    }
    sock.bind(addr)?;
    sock.listen(LISTEN_BACKLOG)
}

/// What every connection task holds: the shutdown token and the tracker that
/// the shutdown waits on (both shared by all runtimes).
#[derive(Clone)]
struct Shared {
    stop: CancellationToken,
    tasks: TaskTracker,
}

/// One runtime's accept loop, until the shutdown token is cancelled; the
/// listener is closed when it returns.
async fn accept_loop(listener: TcpListener, shared: Shared) {
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    let stopped = shared.stop.cancelled();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            biased;
            () = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let conn = h1
                        .serve_connection(TokioIo::new(stream), service_fn({
                            let shared = shared.clone();
                            move |req| route(req, shared.clone())
                        }))
                        .with_upgrades();
                    let stop = shared.stop.clone();
                    shared.tasks.spawn(async move {
                        tokio::pin!(conn);
                        // Errors of one connection are its own business:
                        // nothing is logged per connection.
                        tokio::select! {
                            _ = conn.as_mut() => {}
                            () = stop.cancelled() => {
                                conn.as_mut().graceful_shutdown();
                                let _ = conn.await;
                            }
                        }
                    });
                }
                Err(e) => {
                    // ECONNABORTED and the like concern one connection;
                    // EMFILE and ENFILE pass after a pause.
                    if !matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset) {
                        log(format_args!("accept: {e}"));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
    }
}

// ------------------------------------------------------------------ HTTP

type Body = Full<Bytes>;

fn answer(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}

async fn route(req: Request<Incoming>, shared: Shared) -> Result<Response<Body>, Infallible> {
    Ok(match (req.method(), req.uri().path()) {
        (&Method::GET, "/connect") => upgrade(req, shared),
        (&Method::GET | &Method::HEAD, "/healthz") => answer(StatusCode::OK, "ok\n"),
        // Rust has no garbage collector: nothing to collect.
        (&Method::GET, "/langbench-gc") => answer(StatusCode::NO_CONTENT, ""),
        _ => answer(StatusCode::NOT_FOUND, "not found\n"),
    })
}

/// True when one of the comma-separated tokens of header `name` is `token`
/// (ASCII case-insensitive).
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// A Sec-WebSocket-Key is the base64 form of 16 bytes: 22 characters of the
/// base64 alphabet and "==".
fn valid_key(key: &HeaderValue) -> bool {
    let k = key.as_bytes();
    k.len() == 24
        && k.ends_with(b"==")
        && k[..22]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
}

/// The server side of the opening handshake (RFC 6455 section 4.2): 101 and a
/// task that takes the connection over once hyper has written the answer.
/// Extensions (permessage-deflate) and subprotocols offered are not taken.
fn upgrade(mut req: Request<Incoming>, shared: Shared) -> Response<Body> {
    let h = req.headers();
    if !has_token(h, UPGRADE, "websocket") || !has_token(h, CONNECTION, "upgrade") {
        let mut r = answer(StatusCode::UPGRADE_REQUIRED, "WebSocket upgrade required\n");
        r.headers_mut()
            .insert(UPGRADE, HeaderValue::from_static("websocket"));
        r.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        return r;
    }
    if h.get(SEC_WEBSOCKET_VERSION).is_none_or(|v| v.as_bytes() != b"13") {
        let mut r = answer(StatusCode::UPGRADE_REQUIRED, "unsupported WebSocket version\n");
        r.headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return r;
    }
    let key = match h.get(SEC_WEBSOCKET_KEY) {
        Some(k) if valid_key(k) && req.version() >= Version::HTTP_11 => k,
        _ => return answer(StatusCode::BAD_REQUEST, "bad WebSocket handshake\n"),
    };
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    let stop = shared.stop.clone();
    shared.tasks.spawn(take_over(on_upgrade, stop));

    let mut r = answer(StatusCode::SWITCHING_PROTOCOLS, "");
    let hs = r.headers_mut();
    hs.insert(UPGRADE, HeaderValue::from_static("websocket"));
    hs.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    hs.insert(
        SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
    );
    r
}

/// Once hyper has sent the 101: the TCP stream back from hyper, with what it
/// had read past the request (a client may send frames without waiting).
async fn take_over(on_upgrade: OnUpgrade, stop: CancellationToken) {
    let Ok(upgraded) = on_upgrade.await else {
        return; // the client left during the handshake
    };
    let parts = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => parts,
        Err(_) => {
            log(format_args!("upgrade: not the TCP stream served (bug)"));
            return;
        }
    };
    let tcp = parts.io.into_inner();
    // hyper's read buffer, frozen, even empty, keeps its whole allocation
    // (8 KiB) alive: the rare early bytes are copied out and it is dropped
    // before the session.
    let early = (!parts.read_buf.is_empty()).then(|| parts.read_buf.to_vec());
    drop(parts.read_buf);
    let cfg = Some(ws_config());
    let ws = match early {
        None => WebSocketStream::from_raw_socket(tcp, Role::Server, cfg).await,
        Some(early) => WebSocketStream::from_partially_read(tcp, early, Role::Server, cfg).await,
    };
    session(ws, stop).await;
}

// ------------------------------------------------------------------ WebSocket

/// Why the server ends a session with its own close frame.
enum End {
    /// A message or frame the server refuses: close with this code, then
    /// FIN and drain (the stream can no longer be read as frames).
    Refused(CloseCode, &'static str),
    /// Nothing arrived for SILENCE.
    Silent,
    /// SIGTERM.
    Shutdown,
}

/// The close code for a tungstenite error, or None when the connection is
/// gone (or closed cleanly) and there is nobody to tell.
fn refusal(e: &WsError) -> Option<(CloseCode, &'static str)> {
    match e {
        WsError::Capacity(_) => Some((CloseCode::Size, "message too big")),
        WsError::Utf8(_) => Some((CloseCode::Invalid, "invalid UTF-8")),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        WsError::Protocol(_) => Some((CloseCode::Protocol, "protocol error")),
        _ => None, // I/O error, ConnectionClosed, AlreadyClosed
    }
}

/// Writes (and flushes) one message; false when the connection is gone or
/// the client has not read for WRITE_TIMEOUT.
async fn send(ws: &mut WebSocketStream<TcpStream>, msg: Message) -> bool {
    matches!(timeout(WRITE_TIMEOUT, ws.send(msg)).await, Ok(Ok(())))
}

/// What one frame read asks of the session.
enum Step {
    /// Carry on reading.
    Next,
    /// The connection is gone, or closed by the client and answered.
    Gone,
    /// The session ends with our close frame.
    Refuse(CloseCode, &'static str),
}

/// Handles one item of the stream; an echo is queued (`feed`), not flushed.
async fn handle(ws: &mut WebSocketStream<TcpStream>, item: Option<Result<Message, WsError>>) -> Step {
    match item {
        Some(Ok(msg)) => match msg {
            Message::Text(_) | Message::Binary(_) => {
                // Written to the socket only when the queue passes
                // WRITE_BUFFER; the batch's flush writes the rest.
                match timeout(WRITE_TIMEOUT, ws.feed(msg)).await {
                    Ok(Ok(())) => Step::Next,
                    _ => Step::Gone,
                }
            }
            // tungstenite has queued the pong: the batch's flush (or the
            // next read) writes it.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Step::Next,
            Message::Close(_) => {
                // tungstenite has queued the answer (the same code and
                // reason) behind the echoes; flushing it ends the session,
                // and dropping the stream closes TCP from this side.
                let _ = timeout(WRITE_TIMEOUT, ws.flush()).await;
                Step::Gone
            }
        },
        Some(Err(e)) => match refusal(&e) {
            Some((code, reason)) => Step::Refuse(code, reason),
            None => Step::Gone,
        },
        None => Step::Gone,
    }
}

async fn session(mut ws: WebSocketStream<TcpStream>, stop: CancellationToken) {
    let start = Instant::now();
    let mut ping = tokio::time::interval_at(start + PING_EVERY, PING_EVERY);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The silence deadline is re-armed lazily, when it fires, from the time
    // of the last frame: no timer work per message.
    let mut last_seen = start;
    let silence = sleep_until(start + SILENCE);
    // Registered once (not per loop turn) with the token shared by all.
    let stopped = stop.cancelled();
    tokio::pin!(silence, stopped);

    let end = 'session: loop {
        tokio::select! {
            item = ws.next() => {
                // A read batch: this frame and every one already readable
                // (buffered, or in the socket) are handled, their echoes
                // queued, then flushed together, as Netty's flush on
                // channelReadComplete does. The batch ends where a read
                // would wait, or where tokio's cooperative budget (128
                // socket operations per task turn) makes the socket answer
                // Pending, so one busy connection cannot hold the runtime.
                let mut item = item;
                loop {
                    if matches!(item, Some(Ok(_))) {
                        last_seen = Instant::now();
                    }
                    match handle(&mut ws, item).await {
                        Step::Next => {}
                        Step::Gone => return,
                        // The echoes queued so far go out before the close.
                        Step::Refuse(code, reason) => break 'session End::Refused(code, reason),
                    }
                    match ws.next().now_or_never() {
                        Some(next) => item = next,
                        None => break,
                    }
                }
                if !matches!(timeout(WRITE_TIMEOUT, ws.flush()).await, Ok(Ok(()))) {
                    return;
                }
            }
            _ = ping.tick() => {
                if !send(&mut ws, Message::Ping(Bytes::new())).await {
                    return;
                }
            }
            () = &mut silence => {
                let due = last_seen + SILENCE;
                if due > Instant::now() {
                    silence.as_mut().reset(due);
                } else {
                    break End::Silent;
                }
            }
            () = &mut stopped => break End::Shutdown,
        }
    };

    match end {
        End::Refused(code, reason) => {
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            if send(&mut ws, Message::Close(Some(frame))).await {
                linger(ws.get_mut()).await;
            }
        }
        End::Silent => close(&mut ws, CloseCode::Normal, "no frame for 15 s").await,
        End::Shutdown => close(&mut ws, CloseCode::Away, "server shutting down").await,
    }
}

/// Our close frame, then the client's close (or its TCP close) awaited for
/// CLOSE_WAIT; what arrives meanwhile is dropped. The stream is then dropped,
/// which closes TCP.
async fn close(ws: &mut WebSocketStream<TcpStream>, code: CloseCode, reason: &'static str) {
    let _ = timeout(CLOSE_WAIT, async {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        if ws.close(Some(frame)).await.is_ok() {
            // Ends (None) once the client's close has arrived.
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}

/// After a refusal: our FIN, then whatever the client still sends is read
/// and dropped until it closes (or CLOSE_WAIT), so that it reads our close
/// frame instead of a reset (closing with unread data sends a RST).
async fn linger(tcp: &mut TcpStream) {
    let _ = timeout(CLOSE_WAIT, async {
        if tcp.shutdown().await.is_err() {
            return;
        }
        // On the heap: a buffer in the future would make every session's
        // task that much larger.
        let mut sink = vec![0u8; 16 << 10];
        while let Ok(n) = tcp.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}
