//! Forwarding to the next node over long-lived `Stage.Forward` streams,
//! with retries: used by node a (towards b) and node b (towards c).
//!
//! The forwarder is a set of lanes. Each lane is one task that owns one
//! stream (on its own HTTP/2 connection) and the table of the operations it
//! sent and that were not acknowledged yet; an operation goes to the lane
//! chosen by a hash of its id. Nothing is shared between lanes and nothing
//! is locked: submitting is a send on the lane's channel.
//!
//! - An operation stays in its lane's table until an acknowledgement for its
//!   id arrives, whatever happens to streams, connections or the code that
//!   submitted it (an HTTP client that hung up, an upstream stream that was
//!   reset): it is never dropped unacknowledged while the process lives.
//! - When the stream fails or ends, the lane reconnects (an attempt every
//!   50 ms, each bounded by a 100 ms connect timeout, while the next node is
//!   down) and sends every operation of its table again. The next node (c in
//!   the end) de-duplicates, so an operation delivered twice is committed
//!   once.
//! - Copies of an id submitted while the id is pending are not sent again:
//!   they wait for the same acknowledgement (c's digest is the answer for
//!   every copy: the first commit of an id wins).
//! - An acknowledgement for an id the lane no longer waits for is dropped.
//!
//! Memory is bounded by the caller: every waiter holds one of the node's
//! MAX_INFLIGHT permits, so a lane never holds more operations than that.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::future::Future;
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Streaming;
use tonic::transport::{Channel, Endpoint};

use crate::log;
use crate::pb::stage_client::StageClient;
use crate::pb::{Ack, Op};
use crate::stage::Reply;
use crate::BoxError;

/// Pause between connection attempts while the next node is down.
const RETRY_EVERY: Duration = Duration::from_millis(50);
/// Bound of one connection attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(100);

/// Who waits for an operation's acknowledgement.
pub enum Waiter {
    /// Node a: the HTTP request (C's digest), and the request's in-flight
    /// permit, released when the acknowledgement arrives even if the client
    /// has gone.
    Http(oneshot::Sender<Bytes>, OwnedSemaphorePermit),
    /// Node b: the upstream stream the operation came in on.
    Relay(Reply),
}

impl Waiter {
    fn done(self, ack: Ack) {
        match self {
            Waiter::Http(tx, permit) => {
                let _ = tx.send(ack.digest);
                drop(permit);
            }
            Waiter::Relay(reply) => reply.relay(ack),
        }
    }
}

struct Submit {
    op: Op,
    waiter: Waiter,
}

/// The handle the node submits operations to.
pub struct Forwarder {
    lanes: Box<[mpsc::UnboundedSender<Submit>]>,
    hasher: std::collections::hash_map::RandomState,
}

impl Forwarder {
    /// Starts `streams` lanes towards `next` (`host:port`) on the current
    /// runtime. They connect in the background and retry until they can.
    pub fn start(next: &str, streams: usize, max_inflight: usize) -> Result<Forwarder, BoxError> {
        let endpoint = Endpoint::from_shared(format!("http://{next}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        let lanes = (0..streams)
            .map(|index| {
                let (tx, rx) = mpsc::unbounded_channel();
                let lane = Lane {
                    index,
                    next: next.to_owned(),
                    endpoint: endpoint.clone(),
                    submissions: rx,
                    pending: HashMap::with_capacity(max_inflight.div_ceil(streams)),
                };
                tokio::spawn(lane.run());
                tx
            })
            .collect();
        Ok(Forwarder {
            lanes,
            hasher: Default::default(),
        })
    }

    /// Hands an operation to its lane. False only when the lanes are gone
    /// (the runtime is shutting down).
    pub fn submit(&self, op: Op, waiter: Waiter) -> bool {
        let lane = (self.hasher.hash_one(op.id.as_str()) % self.lanes.len() as u64) as usize;
        self.lanes[lane].send(Submit { op, waiter }).is_ok()
    }
}

/// An operation sent and not acknowledged yet (its id is the table's key).
struct Pending {
    payload: Bytes,
    digest: Bytes,
    first: Waiter,
    more: Vec<Waiter>,
}

struct Lane {
    index: usize,
    next: String,
    endpoint: Endpoint,
    submissions: mpsc::UnboundedReceiver<Submit>,
    pending: HashMap<String, Pending>,
}

impl Lane {
    async fn run(mut self) {
        while let Some(channel) = self.connect().await {
            log!(
                "stream {} to {}: connected, sending {} unacknowledged operations",
                self.index,
                self.next,
                self.pending.len()
            );
            let started = Instant::now();
            self.session(channel).await;
            // A stream that fails at once (a node answering every call with
            // an error) is not retried in a tight loop.
            let pause = tokio::time::sleep_until((started + RETRY_EVERY).into());
            if self.accepting(pause).await.is_none() {
                return;
            }
        }
    }

    /// Connects, retrying while the next node is down. Keeps taking
    /// submissions meanwhile (they wait in the table). `None` once the node
    /// is shutting down (no submitter left).
    async fn connect(&mut self) -> Option<Channel> {
        let mut failures = 0u32;
        loop {
            let started = Instant::now();
            let endpoint = self.endpoint.clone();
            match self.accepting(endpoint.connect()).await? {
                Ok(channel) => {
                    if failures > 0 {
                        log!(
                            "stream {} to {}: reconnected after {failures} failed attempts",
                            self.index,
                            self.next
                        );
                    }
                    return Some(channel);
                }
                Err(e) => {
                    if failures == 0 {
                        log!(
                            "stream {} to {}: cannot connect ({}), retrying every {RETRY_EVERY:?}",
                            self.index,
                            self.next,
                            error_chain(&e)
                        );
                    }
                    failures += 1;
                    self.accepting(tokio::time::sleep_until((started + RETRY_EVERY).into()))
                        .await?;
                }
            }
        }
    }

    /// Runs `fut` while taking submissions into the table (not sent: there is
    /// no stream). `None` when the submitters are gone.
    async fn accepting<F: Future>(&mut self, fut: F) -> Option<F::Output> {
        let mut fut = std::pin::pin!(fut);
        loop {
            tokio::select! {
                biased;
                out = &mut fut => return Some(out),
                submit = self.submissions.recv() => self.accept(submit?, None),
            }
        }
    }

    /// One stream: sends the table, then every new operation, and completes
    /// the waiters of every acknowledgement, until the stream fails or ends.
    async fn session(&mut self, channel: Channel) {
        let (tx, rx) = mpsc::unbounded_channel::<Op>();
        for (id, p) in &self.pending {
            let _ = tx.send(Op {
                id: id.clone(),
                payload: p.payload.clone(),
                digest: p.digest.clone(),
            });
        }
        let mut client = StageClient::new(channel);
        // The call resolves when the next node sends its response headers,
        // which some servers only do with their first acknowledgement: the
        // lane keeps taking and sending operations while it waits.
        let mut call = std::pin::pin!(client.forward(UnboundedReceiverStream::new(rx)));
        let mut acks: Option<Streaming<Ack>> = None;
        let reason = loop {
            tokio::select! {
                biased;
                response = &mut call, if acks.is_none() => match response {
                    Ok(response) => acks = Some(response.into_inner()),
                    Err(status) => break format!("call failed: {}", status.message()),
                },
                ack = next_ack(&mut acks), if acks.is_some() => match ack {
                    Ok(Some(ack)) => self.complete(ack),
                    Ok(None) => break "stream ended".to_owned(),
                    Err(status) => break format!("stream failed: {}", status.message()),
                },
                submit = self.submissions.recv() => match submit {
                    Some(submit) => {
                        self.accept(submit, Some(&tx));
                        // Take what else is queued in one go.
                        for _ in 0..256 {
                            match self.submissions.try_recv() {
                                Ok(submit) => self.accept(submit, Some(&tx)),
                                Err(_) => break,
                            }
                        }
                    }
                    None => return,
                },
            }
        };
        log!(
            "stream {} to {}: {reason}; {} operations unacknowledged, reconnecting",
            self.index,
            self.next,
            self.pending.len()
        );
    }

    /// Puts an operation in the table and, with a live stream, sends it; a
    /// copy of a pending id only joins the waiters.
    fn accept(&mut self, submit: Submit, live: Option<&mpsc::UnboundedSender<Op>>) {
        let Submit { op, waiter } = submit;
        match self.pending.entry(op.id) {
            Entry::Occupied(mut pending) => pending.get_mut().more.push(waiter),
            Entry::Vacant(slot) => {
                if let Some(tx) = live {
                    // If the stream just failed the send fails too; the
                    // operation is in the table and goes with the next one.
                    let _ = tx.send(Op {
                        id: slot.key().clone(),
                        payload: op.payload.clone(),
                        digest: op.digest.clone(),
                    });
                }
                slot.insert(Pending {
                    payload: op.payload,
                    digest: op.digest,
                    first: waiter,
                    more: Vec::new(),
                });
            }
        }
    }

    fn complete(&mut self, ack: Ack) {
        if let Some(pending) = self.pending.remove(&ack.id) {
            for waiter in pending.more {
                waiter.done(ack.clone());
            }
            pending.first.done(ack);
        }
    }
}

async fn next_ack(acks: &mut Option<Streaming<Ack>>) -> Result<Option<Ack>, tonic::Status> {
    match acks {
        Some(stream) => stream.message().await,
        None => std::future::pending().await,
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
