//! What nodes b and c share as `pipeline.Stage` servers: the listener that
//! closes on SIGTERM, the per-stream reader loop with the in-flight limit,
//! and the acknowledgement stream sent back upstream.
//!
//! Flow control: a stream's reader takes one of the node's MAX_INFLIGHT
//! permits before it reads the next operation; the permit travels with the
//! operation (to the committer at c, into the forwarding lane at b) and comes
//! back with its acknowledgement, and is released only when that
//! acknowledgement is handed to tonic to be sent upstream. At the limit no
//! stream is read, and HTTP/2 flow control pushes back to the upstream node.
//!
//! Cancellation: every hand-off owns what it carries (the operation, its
//! permit, a sender of the stream's acknowledgements), so dropping any of
//! them (a stream reset, a task dropped at shutdown) releases the permit and
//! loses only work that was never acknowledged, which the upstream node still
//! holds and resends.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture, WaitForCancellationFutureOwned};
use tonic::transport::Server;
use tonic::{Status, Streaming};

use crate::digest::{Digest32, valid_id};
use crate::log;
use crate::pb::stage_server::{Stage, StageServer};
use crate::pb::{Ack, Op};

/// An acknowledgement on its way upstream, with the in-flight permit of its
/// operation (released once tonic takes the acknowledgement).
pub struct Relayed {
    pub ack: Ack,
    _permit: OwnedSemaphorePermit,
}

/// The acknowledgements of one upstream stream. Unbounded, but never holds
/// more than the node's in-flight limit: every entry carries a permit.
pub type Outbound = mpsc::UnboundedSender<Result<Relayed, Status>>;

/// Where to acknowledge one operation: the stream it came in on.
pub struct Reply {
    tx: Outbound,
    permit: OwnedSemaphorePermit,
}

impl Reply {
    pub fn new(tx: Outbound, permit: OwnedSemaphorePermit) -> Reply {
        Reply { tx, permit }
    }

    /// Relays an acknowledgement as received from downstream (node b).
    pub fn relay(self, ack: Ack) {
        // The stream may be gone (upstream reset it): the acknowledgement is
        // dropped, the upstream node resends the operation and c answers it
        // as a duplicate.
        let _ = self.tx.send(Ok(Relayed {
            ack,
            _permit: self.permit,
        }));
    }

    /// Acknowledges a committed operation (node c).
    pub fn ack(self, id: String, digest: &Digest32, duplicate: bool) {
        self.relay(Ack {
            id,
            digest: bytes::Bytes::copy_from_slice(digest),
            duplicate,
        });
    }
}

/// The response stream of one Forward call. It ends when every sender is gone
/// (the reader stopped and every operation it took was acknowledged), or
/// with UNAVAILABLE once `abort` fires (the node's grace period is over;
/// the upstream node resends what was not acknowledged).
pub struct AckStream {
    rx: mpsc::UnboundedReceiver<Result<Relayed, Status>>,
    abort: Pin<Box<WaitForCancellationFutureOwned>>,
    done: bool,
}

impl AckStream {
    pub fn new(rx: mpsc::UnboundedReceiver<Result<Relayed, Status>>, abort: CancellationToken) -> Self {
        AckStream {
            rx,
            abort: Box::pin(abort.cancelled_owned()),
            done: false,
        }
    }
}

impl Stream for AckStream {
    type Item = Result<Ack, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        // Acknowledgements ready to go are sent before an abort is noticed.
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(relayed))) => return Poll::Ready(Some(Ok(relayed.ack))),
            Poll::Ready(Some(Err(status))) => {
                this.done = true;
                return Poll::Ready(Some(Err(status)));
            }
            Poll::Ready(None) => {
                this.done = true;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        if this.abort.as_mut().poll(cx).is_ready() {
            this.done = true;
            return Poll::Ready(Some(Err(Status::unavailable("node stopping"))));
        }
        Poll::Pending
    }
}

/// Takes an in-flight permit, then reads the next operation of a stream;
/// `None` once the node stops (`stopped`), or when the stream ends or fails.
/// Stopping is raced against cancel-safe awaits only (acquiring a permit,
/// `Streaming::message`): an operation is either returned whole or left in
/// the stream, never read and lost; one left in the stream was not
/// acknowledged, so the upstream node still holds it and resends it.
/// `stopped` is one long-lived future per stream (registered once, not once
/// per operation).
pub async fn next_op(
    mut stopped: Pin<&mut WaitForCancellationFuture<'_>>,
    inflight: &Arc<Semaphore>,
    inbound: &mut Streaming<Op>,
) -> Option<(Op, OwnedSemaphorePermit)> {
    let take = async {
        let permit = inflight
            .clone()
            .acquire_owned()
            .await
            .expect("the in-flight semaphore is never closed");
        match inbound.message().await {
            Ok(Some(op)) => Some((op, permit)),
            Ok(None) | Err(_) => None,
        }
    };
    tokio::select! {
        biased;
        _ = &mut stopped => None,
        taken = take => taken,
    }
}

/// Serves one upstream stream (the body of `Stage::forward` in b and c): a
/// task reads it with `next_op` under the node's in-flight budget until it
/// ends or the node stops, ends it with INVALID_ARGUMENT at an id outside
/// the contract's alphabet (such an id must never reach the ledger), and
/// hands every operation with the reply that acknowledges it on this stream
/// to `take`, stopping when `take` answers false. The stream's response
/// ends once that task and every reply it handed out are done.
pub fn accept<T, F>(
    inbound: Streaming<Op>,
    inflight: Arc<Semaphore>,
    stop: CancellationToken,
    abort: CancellationToken,
    mut take: T,
) -> AckStream
where
    T: FnMut(Op, Reply) -> F + Send + 'static,
    F: Future<Output = bool> + Send,
{
    let (acks, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut inbound = inbound;
        let mut stopped = std::pin::pin!(stop.cancelled());
        while let Some((op, permit)) = next_op(stopped.as_mut(), &inflight, &mut inbound).await {
            if !valid_id(op.id.as_bytes()) {
                let _ = acks.send(Err(Status::invalid_argument("operation id outside the contract's alphabet")));
                return;
            }
            if !take(op, Reply::new(acks.clone(), permit)).await {
                return;
            }
        }
    });
    AckStream::new(rx, abort)
}

/// The connections for tonic: accepted by a task of its own (TCP_NODELAY on
/// each) that closes the listening socket as soon as `stop` fires, so that
/// new connections are refused at once while the streams already open drain.
/// (tonic keeps an incoming stream it stopped polling until every connection
/// is closed, so closing the socket cannot be left to it.)
pub fn incoming(
    addr: SocketAddr,
    stop: CancellationToken,
) -> io::Result<(ReceiverStream<io::Result<TcpStream>>, SocketAddr)> {
    let listener = bind(addr, 1024)?;
    let local = listener.local_addr()?;
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    // A connection accepted as the node stops is dropped
                    // unserved: the client sees it closed and retries.
                    tokio::select! {
                        biased;
                        _ = stop.cancelled() => break,
                        sent = tx.send(Ok(stream)) => if sent.is_err() { break },
                    }
                }
                Err(e) => {
                    if !matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset) {
                        // Out of descriptors and the like: pause, do not spin.
                        log!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
        drop(listener);
    });
    Ok((ReceiverStream::new(rx), local))
}

/// A listening socket with SO_REUSEADDR (restart right after a kill) and the
/// given backlog.
pub fn bind(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket
        .bind(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("bind {addr}: {e}")))?;
    socket.listen(backlog)
}

/// How long b and c wait after SIGTERM for the streams they serve to drain
/// (every operation taken acknowledged and relayed) before ending them.
pub const GRACE: Duration = Duration::from_secs(3);
/// After the abort, how long tonic gets to send the final statuses.
const ABORT_GRACE: Duration = Duration::from_millis(500);

/// Serves `pipeline.Stage` until SIGTERM/SIGINT, then: the listener is closed
/// and `stop` fires (every stream reader stops reading; tonic sends GOAWAY),
/// the streams end one by one as their last acknowledgement is sent, and
/// after GRACE `abort` ends those still open with UNAVAILABLE.
pub async fn serve<S: Stage>(
    service: S,
    addr: SocketAddr,
    stop: CancellationToken,
    abort: CancellationToken,
    inflight: &Arc<Semaphore>,
    max_inflight: usize,
    what: String,
) -> Result<(), crate::BoxError> {
    let mut signals = crate::Signals::new()?;
    let (incoming, local) = incoming(addr, stop.clone())?;
    let mut server = tokio::spawn(
        Server::builder()
            .add_service(StageServer::new(service))
            .serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned()),
    );
    log!("{what}; gRPC on {local}");

    let signal = tokio::select! {
        outcome = &mut server => {
            return match outcome {
                Ok(Ok(())) => Err("server stopped unexpectedly".into()),
                Ok(Err(e)) => Err(format!("server failed: {e}").into()),
                Err(e) => Err(format!("server task failed: {e}").into()),
            };
        }
        signal = signals.recv() => signal,
    };
    let held = max_inflight - inflight.available_permits();
    log!("{signal}: listener closed, no more reads; draining {held} operations in flight (up to {GRACE:?})");
    stop.cancel();
    if tokio::time::timeout(GRACE, &mut server).await.is_ok() {
        log!("every stream drained");
        return Ok(());
    }
    let held = max_inflight - inflight.available_permits();
    log!("grace period over: ending the streams still open ({held} operations unacknowledged; upstream resends them)");
    abort.cancel();
    if tokio::time::timeout(ABORT_GRACE, &mut server).await.is_err() {
        log!("connections still open after {ABORT_GRACE:?}; closing them");
        server.abort();
    }
    Ok(())
}
