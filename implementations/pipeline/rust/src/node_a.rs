//! Node a: the HTTP/1.1 entry (hyper 1, `server::conn::http1`).
//!
//! `POST /op/{id}`: the handler takes one of MAX_INFLIGHT permits before it
//! reads the body (at the limit it waits, so its connection is not read any
//! further: backpressure on the client), reads the body (413 over
//! MAX_PAYLOAD), computes dA, hands the operation to the forwarder and
//! answers 200 with C's digest once the acknowledgement arrives.
//!
//! The permit and the operation belong to the forwarder from then on: if the
//! client hangs up, hyper drops the handler, but the operation is still sent
//! (and resent) until acknowledged, and the permit is released only then.
//!
//! SIGTERM: the listener is closed, every connection finishes the request it
//! is serving and closes (idle keep-alive connections close at once); after
//! 4 s the requests still waiting are answered 503; exit.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::{Semaphore, oneshot};
use tokio_util::sync::CancellationToken;

use crate::digest::{Transform, hex, valid_id};
use crate::forward::{Forwarder, Waiter};
use crate::pb::Op;
use crate::stage::bind;
use crate::{BoxError, Config, Signals, log};

/// How long requests in flight may wait for their acknowledgement after
/// SIGTERM before they are answered 503.
const GRACE: Duration = Duration::from_secs(4);
/// After the 503s, how long the connections get to write them and close.
const CLOSE_GRACE: Duration = Duration::from_millis(400);
/// A body over the limit is read (and discarded) up to this much more, so
/// that the client reads the 413 instead of a connection reset.
const OVERSIZE_DRAIN: u64 = 1 << 20;

struct Entry {
    transform: Transform,
    max_payload: usize,
    inflight: Arc<Semaphore>,
    forwarder: Forwarder,
    /// Fired 4 s after SIGTERM: waiting requests answer 503.
    give_up: CancellationToken,
}

pub async fn run(cfg: &Config) -> Result<(), BoxError> {
    let mut signals = Signals::new()?;
    let listener = bind(cfg.addr, 4096)?;
    let next = cfg.next.as_deref().expect("a has NEXT");
    let entry = Arc::new(Entry {
        transform: cfg.transform,
        max_payload: cfg.max_payload,
        inflight: Arc::new(Semaphore::new(cfg.max_inflight)),
        forwarder: Forwarder::start(next, cfg.streams, cfg.max_inflight)?,
        give_up: CancellationToken::new(),
    });

    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .keep_alive(true)
        .pipeline_flush(true);
    let graceful = GracefulShutdown::new();
    log!(
        "node a: HTTP/1.1 on {}, forwarding to {next} on {} streams, {} worker threads, max in flight {}",
        cfg.addr,
        cfg.streams,
        cfg.cpus,
        cfg.max_inflight
    );

    let signal = loop {
        tokio::select! {
            biased;
            signal = signals.recv() => break signal,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let entry = entry.clone();
                    let conn = h1.serve_connection(
                        TokioIo::new(stream),
                        service_fn(move |req| handle(req, entry.clone())),
                    );
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        // A client that hangs up or sends garbage only ends
                        // its own connection.
                        let _ = conn.await;
                    });
                }
                Err(e) => {
                    if !matches!(e.kind(), std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset) {
                        log!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
    };

    drop(listener);
    let held = cfg.max_inflight - entry.inflight.available_permits();
    log!("{signal}: listener closed, waiting up to {GRACE:?} for {held} operations in flight");
    let mut drained = std::pin::pin!(graceful.shutdown());
    if tokio::time::timeout(GRACE, &mut drained).await.is_err() {
        let held = cfg.max_inflight - entry.inflight.available_permits();
        log!("grace period over: answering 503 to the requests still waiting ({held} operations held)");
        entry.give_up.cancel();
        if tokio::time::timeout(CLOSE_GRACE, drained).await.is_err() {
            log!("connections still open after {CLOSE_GRACE:?}; closing them");
        }
    }
    Ok(())
}

type Answer = Response<Full<Bytes>>;

fn answer(status: StatusCode) -> Answer {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

async fn handle(req: Request<Incoming>, entry: Arc<Entry>) -> Result<Answer, BoxError> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    let Some(id) = path.strip_prefix("/op/") else {
        let status = if path == "/healthz" && matches!(parts.method, Method::GET | Method::HEAD) {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        };
        drain(body, entry.max_payload).await;
        return Ok(answer(status));
    };
    if parts.method != Method::POST {
        drain(body, entry.max_payload).await;
        return Ok(answer(StatusCode::METHOD_NOT_ALLOWED));
    }
    if !valid_id(id.as_bytes()) {
        drain(body, entry.max_payload).await;
        return Ok(answer(StatusCode::BAD_REQUEST));
    }
    let limit = entry.max_payload;
    if body.size_hint().exact().is_some_and(|n| n > limit as u64) {
        drain(body, limit).await;
        return Ok(answer(StatusCode::PAYLOAD_TOO_LARGE));
    }

    // The request counts from here until it is acknowledged.
    let permit = entry
        .inflight
        .clone()
        .acquire_owned()
        .await
        .expect("the in-flight semaphore is never closed");
    let Some(payload) = read_body(body, limit).await? else {
        return Ok(answer(StatusCode::PAYLOAD_TOO_LARGE));
    };
    let digest = entry.transform.apply_parts(&[id.as_bytes(), b"\n".as_slice(), payload.as_ref()]);
    let (tx, rx) = oneshot::channel();
    let op = Op {
        id: id.to_owned(),
        payload,
        digest: Bytes::copy_from_slice(&digest),
    };
    if !entry.forwarder.submit(op, Waiter::Http(tx, permit)) {
        return Ok(answer(StatusCode::SERVICE_UNAVAILABLE));
    }
    tokio::select! {
        acked = rx => match acked {
            Ok(digest) => {
                let mut r = Response::new(Full::new(Bytes::from(hex(&digest))));
                r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                Ok(r)
            }
            // The forwarder is gone: the process is stopping.
            Err(_) => Ok(answer(StatusCode::SERVICE_UNAVAILABLE)),
        },
        _ = entry.give_up.cancelled() => Ok(answer(StatusCode::SERVICE_UNAVAILABLE)),
    }
}

/// The body, de-chunked, in one buffer; `None` when it is over `limit` (read
/// and discarded up to OVERSIZE_DRAIN more, so the client reads the answer).
/// An error (the client hung up, a bad chunk) ends the connection.
async fn read_body(mut body: Incoming, limit: usize) -> Result<Option<Bytes>, hyper::Error> {
    let declared = body.size_hint().exact();
    let mut first: Option<Bytes> = None;
    let mut gathered: Option<BytesMut> = None;
    let mut total: u64 = 0;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else { continue }; // trailers
        total += data.len() as u64;
        if total > limit as u64 {
            first = None;
            gathered = None;
            if total > limit as u64 + OVERSIZE_DRAIN {
                return Ok(None);
            }
            continue;
        }
        match (&mut first, &mut gathered) {
            (None, None) => first = Some(data),
            (Some(f), None) => {
                let cap = declared.map_or(0, |n| n as usize).max(f.len() + data.len());
                let mut b = BytesMut::with_capacity(cap);
                b.extend_from_slice(f);
                b.extend_from_slice(&data);
                first = None;
                gathered = Some(b);
            }
            (_, Some(b)) => b.extend_from_slice(&data),
        }
    }
    if total > limit as u64 {
        return Ok(None);
    }
    Ok(Some(match (first, gathered) {
        (Some(f), _) => f,
        (None, Some(b)) => b.freeze(),
        (None, None) => Bytes::new(),
    }))
}

/// Reads and discards a body the answer does not need, so that the
/// connection can be kept alive; gives up (the connection closes after the
/// answer) beyond `limit` + OVERSIZE_DRAIN bytes.
async fn drain(mut body: Incoming, limit: usize) {
    if body.is_end_stream() {
        return;
    }
    let mut total: u64 = 0;
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            total += data.len() as u64;
            if total > limit as u64 + OVERSIZE_DRAIN {
                break;
            }
        }
    }
}
