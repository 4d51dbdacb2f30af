//! Node c: the commit stage. A `pipeline.Stage` server (tonic) whose
//! streams are read by one task each: it takes an in-flight permit, reads an
//! operation, computes dC = T(dB) and queues it to the committer thread
//! (ledger.rs), which acknowledges on the operation's stream once its line
//! is durable.
//!
//! SIGTERM (stage::serve): the listener closes and the readers stop reading;
//! the committer commits and acknowledges everything it was given; the
//! streams end once their last acknowledgement is sent (after 3 s at the
//! latest); then the committer, with no sender left, closes the ledger
//! (main.rs joins it) and the process exits.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::digest::Transform;
use crate::ledger::Commit;
use crate::pb::Op;
use crate::pb::stage_server::Stage;
use crate::stage::{AckStream, Reply, accept, serve};
use crate::{BoxError, Config};

struct Committing {
    transform: Transform,
    inflight: Arc<Semaphore>,
    queue: mpsc::Sender<Commit>,
    stop: CancellationToken,
    abort: CancellationToken,
}

pub async fn run(cfg: &Config, queue: mpsc::Sender<Commit>) -> Result<(), BoxError> {
    let inflight = Arc::new(Semaphore::new(cfg.max_inflight));
    let (stop, abort) = (CancellationToken::new(), CancellationToken::new());
    let node = Committing {
        transform: cfg.transform,
        inflight: inflight.clone(),
        queue,
        stop: stop.clone(),
        abort: abort.clone(),
    };
    let what = format!(
        "node c: ledger {}, {} worker threads + 1 committer thread, max in flight {}",
        cfg.ledger.as_ref().expect("c has a ledger").display(),
        cfg.cpus,
        cfg.max_inflight
    );
    serve(node, cfg.addr, stop, abort, &inflight, cfg.max_inflight, what).await
}

#[tonic::async_trait]
impl Stage for Committing {
    type ForwardStream = AckStream;

    async fn forward(&self, request: Request<Streaming<Op>>) -> Result<Response<AckStream>, Status> {
        let (transform, queue) = (self.transform, self.queue.clone());
        let take = move |op: Op, reply: Reply| {
            let commit = Commit {
                digest: transform.apply(&op.digest),
                id: op.id,
                reply,
            };
            let queue = queue.clone();
            // Not raced against anything: once read, the operation reaches the
            // committer (the queue has room for every permit) unless the whole
            // runtime is being dropped, and then it was never acknowledged.
            async move { queue.send(commit).await.is_ok() }
        };
        let (inflight, stop, abort) = (self.inflight.clone(), self.stop.clone(), self.abort.clone());
        Ok(Response::new(accept(request.into_inner(), inflight, stop, abort, take)))
    }
}
