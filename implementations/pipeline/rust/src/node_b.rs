//! Node b: the middle stage. A `pipeline.Stage` server (tonic) whose
//! streams are read by one task each: it takes an in-flight permit, reads an
//! operation, computes dB = T(dA) and hands it to the forwarder (long-lived
//! streams to c, with retries); c's acknowledgement comes back to the lane,
//! which relays it on the stream the operation came in on.
//!
//! SIGTERM (stage::serve): the listener closes and the readers stop reading
//! (what a stream still carries is not taken, so a resends it); each stream
//! ends as soon as the last operation it gave b is acknowledged by c and
//! relayed; after 3 s the streams still open end with UNAVAILABLE; exit.
//! Operations b took but could not get acknowledged in time are dropped
//! with the process, never acknowledged: a still holds them and resends
//! them to the restarted b, and c answers those it committed as duplicates.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::digest::Transform;
use crate::forward::{Forwarder, Waiter};
use crate::pb::Op;
use crate::pb::stage_server::Stage;
use crate::stage::{AckStream, Reply, accept, serve};
use crate::{BoxError, Config};

struct Middle {
    transform: Transform,
    inflight: Arc<Semaphore>,
    forwarder: Arc<Forwarder>,
    stop: CancellationToken,
    abort: CancellationToken,
}

pub async fn run(cfg: &Config) -> Result<(), BoxError> {
    let next = cfg.next.as_deref().expect("b has NEXT");
    let inflight = Arc::new(Semaphore::new(cfg.max_inflight));
    let (stop, abort) = (CancellationToken::new(), CancellationToken::new());
    let middle = Middle {
        transform: cfg.transform,
        inflight: inflight.clone(),
        forwarder: Arc::new(Forwarder::start(next, cfg.streams, cfg.max_inflight)?),
        stop: stop.clone(),
        abort: abort.clone(),
    };
    let what = format!(
        "node b: forwarding to {next} on {} streams, {} worker threads, max in flight {}",
        cfg.streams, cfg.cpus, cfg.max_inflight
    );
    serve(middle, cfg.addr, stop, abort, &inflight, cfg.max_inflight, what).await
}

#[tonic::async_trait]
impl Stage for Middle {
    type ForwardStream = AckStream;

    async fn forward(&self, request: Request<Streaming<Op>>) -> Result<Response<AckStream>, Status> {
        let (transform, forwarder) = (self.transform, self.forwarder.clone());
        let take = move |op: Op, reply: Reply| {
            let digest = transform.apply(&op.digest);
            let op = Op {
                id: op.id,
                payload: op.payload,
                digest: Bytes::copy_from_slice(&digest),
            };
            std::future::ready(forwarder.submit(op, Waiter::Relay(reply)))
        };
        let (inflight, stop, abort) = (self.inflight.clone(), self.stop.clone(), self.abort.clone());
        Ok(Response::new(accept(request.into_inner(), inflight, stop, abort, take)))
    }
}
