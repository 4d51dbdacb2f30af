//! ws-echo server with fastwebsockets (scenarios/ws-echo/README.md).
//!
//! hyper 1.x (`server::conn::http1`, upgrades enabled) serves the HTTP routes;
//! /connect is answered by fastwebsockets' `upgrade` (101 with
//! Sec-WebSocket-Accept, no extension, no subprotocol). The upgraded TCP
//! stream is taken back from hyper (`Upgraded::downcast`, with the bytes
//! hyper had read past the request), split into its borrowed read and write
//! halves and handed to fastwebsockets' split API: `FragmentCollectorRead`
//! reassembles messages, `WebSocketWrite` writes frames. One task per
//! connection: a `select!` loop over the pending read of the next message
//! (kept across turns: fastwebsockets' reads are not cancel-safe), a 5 s ping
//! ticker, the 15 s silence deadline and the shutdown token. Pings and closes
//! from the client are answered here (auto_pong and auto_close off: their
//! answers would have to be written from inside the pending read); the close
//! frames that go with refused input (1007, 1009, 1002) are sent here too.
//! The write half is a gathering writer (`Coalesce`): the answers to the
//! messages one read brought in go out with one write(2).
//!
//! Runtime: one current_thread tokio runtime per CPU (LANGBENCH_CPUS), each
//! with its own listener (SO_REUSEPORT when there are several), serving its
//! connections start to end. Measured (tokio-tungstenite variant) at 1 CPU
//! and 1,000 connections in a closed loop, the multi-threaded scheduler's p99
//! was 90-160 ms against 11-15 ms here: with ~1,000 tasks woken at once its
//! 256-slot local queue overflows into the global queue, which it visits
//! rarely.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io::{self, Cursor, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use fastwebsockets::upgrade::{UpgradeFut, is_upgrade_request};
use fastwebsockets::{
    CloseCode, FragmentCollectorRead, Frame, OpCode, Payload, Role, WebSocketError, WebSocketRead,
    WebSocketWrite, after_handshake_split,
};
use http::header::{HeaderValue, SEC_WEBSOCKET_VERSION};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::{Instant, MissedTickBehavior, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The contract's message size limit: a larger message closes with 1009.
const MAX_MESSAGE: usize = 1 << 20;
/// Frames written between two flushes are gathered up to this size (one
/// write(2) per read batch); a batch that grows past it is written as it
/// grows.
const WRITE_BUFFER: usize = 64 << 10;
/// A ping to every connection this often.
const PING_EVERY: Duration = Duration::from_secs(5);
/// A connection from which nothing arrived for this long is closed.
const SILENCE: Duration = Duration::from_secs(15);
/// A write (echo, pong, ping, close) that cannot complete in this time (the
/// client reads nothing) drops the connection.
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
const SETTINGS: &str = "one current_thread runtime per CPU; fastwebsockets 0.10: max message 1 MiB, echoes of a read batch flushed together (write buffer 64 KiB), ping every 5 s, close after 15 s of silence";

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

/// The server side of the opening handshake, by fastwebsockets: 101 and a
/// task that takes the connection over once hyper has written the answer.
/// It answers no Sec-WebSocket-Extensions (permessage-deflate is not taken)
/// and no subprotocol.
fn upgrade(mut req: Request<Incoming>, shared: Shared) -> Response<Body> {
    if !is_upgrade_request(&req) {
        let mut r = answer(StatusCode::UPGRADE_REQUIRED, "WebSocket upgrade required\n");
        r.headers_mut()
            .insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
        r.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("Upgrade"));
        return r;
    }
    match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok((response, fut)) => {
            let stop = shared.stop.clone();
            shared.tasks.spawn(take_over(fut, stop));
            let (parts, _) = response.into_parts();
            Response::from_parts(parts, Full::default())
        }
        Err(WebSocketError::InvalidSecWebsocketVersion) => {
            let mut r = answer(StatusCode::UPGRADE_REQUIRED, "unsupported WebSocket version\n");
            r.headers_mut()
                .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
            r
        }
        Err(_) => answer(StatusCode::BAD_REQUEST, "bad WebSocket handshake\n"),
    }
}

/// Once hyper has sent the 101: the TCP stream back from hyper, with what it
/// had read past the request (a client may send frames without waiting),
/// then the session on its borrowed halves.
async fn take_over(fut: UpgradeFut, stop: CancellationToken) {
    let Ok(ws) = fut.await else {
        return; // the client left during the handshake
    };
    let parts = match ws.into_inner().into_inner().downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => parts,
        Err(_) => {
            log(format_args!("upgrade: not the TCP stream served (bug)"));
            return;
        }
    };
    let mut tcp = parts.io.into_inner();
    // hyper's frozen read buffer would keep its whole allocation alive: the
    // rare early bytes are copied out instead.
    let early = if parts.read_buf.is_empty() {
        Bytes::new()
    } else {
        Bytes::copy_from_slice(&parts.read_buf)
    };
    drop(parts.read_buf);
    let refused = {
        let (r, w) = tcp.split();
        let (rd, wr) = after_handshake_split(Cursor::new(early).chain(r), Coalesce::new(w), Role::Server);
        session(rd, wr, stop).await
    };
    if refused {
        linger(&mut tcp).await;
    }
}

// ------------------------------------------------------------------ output

/// The write half under fastwebsockets' writer: frames are gathered in a
/// buffer that is allocated at the first write (an idle connection holds
/// none) and written out by `flush`, or as soon as they would take it past
/// WRITE_BUFFER; a frame of WRITE_BUFFER or more is written straight
/// through. tokio's BufWriter would allocate its whole capacity for every
/// connection up front.
struct Coalesce<W> {
    inner: W,
    buf: Vec<u8>,
    /// Bytes of `buf` already written (a flush cut short by a full socket
    /// carries on from here).
    done: usize,
}

impl<W: AsyncWrite + Unpin> Coalesce<W> {
    fn new(inner: W) -> Self {
        Coalesce {
            inner,
            buf: Vec::new(),
            done: 0,
        }
    }

    /// Writes out what is gathered (not flushing the socket itself).
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.done < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.done..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.done += n;
        }
        self.buf.clear();
        self.done = 0;
        Poll::Ready(Ok(()))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Coalesce<W> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(data)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        parts: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if this.buf.len() + len > WRITE_BUFFER {
            ready!(this.poll_drain(cx))?;
        }
        if len >= WRITE_BUFFER {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, parts);
        }
        for p in parts {
            this.buf.extend_from_slice(p);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

// ------------------------------------------------------------------ WebSocket

/// Why the server ends a session with its own close frame.
enum End {
    /// A message or frame the server refuses: close with this code, then
    /// FIN and drain (the stream can no longer be read as frames).
    Refused(u16, &'static str),
    /// Nothing arrived for SILENCE.
    Silent,
    /// SIGTERM.
    Shutdown,
}

/// The close code for a fastwebsockets error, or None when the connection
/// is gone and there is nobody to tell.
fn refusal(e: &WebSocketError) -> Option<(u16, &'static str)> {
    use WebSocketError as E;
    match e {
        E::FrameTooLarge => Some((1009, "message too big")),
        E::InvalidUTF8 => Some((1007, "invalid UTF-8")),
        E::InvalidFragment
        | E::InvalidContinuationFrame
        | E::InvalidCloseFrame
        | E::InvalidCloseCode
        | E::ReservedBitsNotZero
        | E::ControlFrameFragmented
        | E::PingFrameTooLarge
        | E::InvalidValue => Some((1002, "protocol error")),
        _ => None, // EOF, I/O error
    }
}

/// The answer to the client's close: its code; 1000 when it had none; 1002
/// for a malformed payload or a code not to be sent; 1007 for a reason that
/// is not UTF-8 (auto_close is off, so these checks are ours).
fn close_answer(p: &[u8]) -> u16 {
    match p.len() {
        0 => 1000,
        1 => 1002,
        _ => {
            let code = u16::from_be_bytes([p[0], p[1]]);
            if !CloseCode::from(code).is_allowed() {
                1002
            } else if std::str::from_utf8(&p[2..]).is_err() {
                1007
            } else {
                code
            }
        }
    }
}

/// The read of the next whole message (or control frame), owning the reader
/// and giving it back with the result, so that the loop can keep it pending
/// across turns.
async fn next_message<S: AsyncRead + Unpin>(
    mut rx: FragmentCollectorRead<S>,
) -> (FragmentCollectorRead<S>, Result<Frame<'static>, WebSocketError>) {
    // With auto_pong and auto_close off the reader has nothing to send.
    let res = rx
        .read_frame(&mut |_: Frame<'static>| std::future::ready(Ok::<(), Infallible>(())))
        .await;
    (rx, res)
}

/// Queues one frame (written with the batch's flush, or at once when the
/// gathered output passes WRITE_BUFFER); false when the connection is gone
/// or the client has not read for WRITE_TIMEOUT.
async fn queue<W: AsyncWrite + Unpin>(wr: &mut WebSocketWrite<W>, frame: Frame<'_>) -> bool {
    matches!(timeout(WRITE_TIMEOUT, wr.write_frame(frame)).await, Ok(Ok(())))
}

/// Writes out everything queued; false as for `queue`.
async fn flush<W: AsyncWrite + Unpin>(wr: &mut WebSocketWrite<W>) -> bool {
    matches!(timeout(WRITE_TIMEOUT, wr.flush()).await, Ok(Ok(())))
}

/// Writes one frame and everything queued before it.
async fn send<W: AsyncWrite + Unpin>(wr: &mut WebSocketWrite<W>, frame: Frame<'_>) -> bool {
    queue(wr, frame).await && flush(wr).await
}

/// The session; true when it ended with a refusal (our close frame sent),
/// after which the caller lingers on the TCP stream.
async fn session<R, W>(mut rd: WebSocketRead<R>, mut wr: WebSocketWrite<W>, stop: CancellationToken) -> bool
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    rd.set_auto_pong(false);
    rd.set_auto_close(false);
    // fastwebsockets refuses a frame of max_message_size bytes or more: + 1
    // lets a frame of exactly 1 MiB through.
    rd.set_max_message_size(MAX_MESSAGE + 1);
    let read = next_message(FragmentCollectorRead::new(rd));

    let start = Instant::now();
    let mut ping = tokio::time::interval_at(start + PING_EVERY, PING_EVERY);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The silence deadline is re-armed lazily, when it fires, from the time
    // of the last frame: no timer work per message.
    let mut last_seen = start;
    let silence = sleep_until(start + SILENCE);
    // Registered once (not per loop turn) with the token shared by all.
    let stopped = stop.cancelled();
    tokio::pin!(read, silence, stopped);

    let end = 'session: loop {
        tokio::select! {
            (rx, res) = read.as_mut() => {
                // A read batch: this message and every one already readable
                // (buffered, or in the socket) are handled and their answers
                // queued, then flushed together, as Netty's flush on
                // channelReadComplete does. The batch ends where the read
                // would wait, or where tokio's cooperative budget (128
                // socket operations per task turn) makes the socket answer
                // Pending, so one busy connection cannot hold the runtime.
                let (mut rx, mut res) = (rx, res);
                loop {
                    let frame = match res {
                        Ok(frame) => frame,
                        Err(e) => match refusal(&e) {
                            // The answers queued so far go out before the close.
                            Some((code, reason)) => break 'session End::Refused(code, reason),
                            None => return false,
                        },
                    };
                    last_seen = Instant::now();
                    match frame.opcode {
                        OpCode::Text | OpCode::Binary => {
                            // The collector bounds each frame, not the sum of
                            // a fragmented message's frames.
                            if frame.payload.len() > MAX_MESSAGE {
                                break 'session End::Refused(1009, "message too big");
                            }
                            if !queue(&mut wr, Frame::new(true, frame.opcode, None, frame.payload)).await {
                                return false;
                            }
                        }
                        OpCode::Ping => {
                            if !queue(&mut wr, Frame::pong(frame.payload)).await {
                                return false;
                            }
                        }
                        OpCode::Close => {
                            // Answered behind the queued echoes, then dropping
                            // the halves closes TCP from this side.
                            let code = close_answer(&frame.payload);
                            let _ = send(&mut wr, Frame::close(code, b"")).await;
                            return false;
                        }
                        OpCode::Pong | OpCode::Continuation => {}
                    }
                    read.set(next_message(rx));
                    // One poll of the next read, in this task's context: a
                    // message already readable comes back Ready; Pending
                    // leaves the read registered for the select! above.
                    match poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await {
                        Poll::Ready((next_rx, next_res)) => {
                            rx = next_rx;
                            res = next_res;
                        }
                        Poll::Pending => break,
                    }
                }
                if !flush(&mut wr).await {
                    return false;
                }
            }
            _ = ping.tick() => {
                if !send(&mut wr, Frame::new(true, OpCode::Ping, None, Payload::Borrowed(&[]))).await {
                    return false;
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

    let (code, reason) = match end {
        End::Refused(code, reason) => return send(&mut wr, Frame::close(code, reason.as_bytes())).await,
        End::Silent => (1000, "no frame for 15 s"),
        End::Shutdown => (1001, "server shutting down"),
    };
    // Our close, then the client's close (or its TCP close) awaited for
    // CLOSE_WAIT on the read still pending; what arrives meanwhile is dropped.
    let _ = timeout(CLOSE_WAIT, async {
        if !send(&mut wr, Frame::close(code, reason.as_bytes())).await {
            return;
        }
        loop {
            let (rx, res) = read.as_mut().await;
            match res {
                Ok(frame) if frame.opcode != OpCode::Close => read.set(next_message(rx)),
                _ => break,
            }
        }
    })
    .await;
    false
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
