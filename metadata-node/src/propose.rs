//! Batching of client writes into Raft proposals.
//!
//! Every Raft entry costs a synced log append on each member, a replication
//! round trip and a synced state-machine batch. Client writes that arrive
//! while earlier ones are being committed are therefore gathered and
//! proposed as one entry (a [`Batch`]): under load the cost of an entry is
//! shared by everything that queued behind it, and a lone write still goes
//! out at once. At most [`IN_FLIGHT`] batches are being committed at a time,
//! which is what lets the next batch grow.
//!
//! Each waiter gets the result of its own request; when the proposal fails
//! (not the leader, Raft stopped) every waiter of the batch gets that error
//! and its client retries with the same request id.

use crate::typ::{Batch, ClientWriteError, Raft, RaftError, WriteRequest};
use cairn_core::command::CommandResult;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Writes proposed in one entry at most.
pub const MAX_BATCH: usize = 512;
/// Proposals being committed at once.
pub const IN_FLIGHT: usize = 4;
/// Writes waiting to be proposed before callers wait to enqueue.
const QUEUE: usize = 8192;

/// The outcome one waiter gets.
pub type WriteOutcome = Result<CommandResult, RaftError<ClientWriteError>>;

struct Pending {
    req: WriteRequest,
    reply: oneshot::Sender<WriteOutcome>,
}

/// Why a write could not even be queued: the node is shutting down.
#[derive(Debug, thiserror::Error)]
#[error("the metadata node is shutting down")]
pub struct ShuttingDown;

/// The queue in front of Raft; cheap to share, ends with its last handle.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<Pending>,
}

impl Proposer {
    /// Starts the batching task for `raft`.
    pub fn start(raft: Raft) -> Proposer {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(raft, rx));
        Proposer { tx }
    }

    /// Proposes `req` (with whatever else is waiting) and returns its result
    /// once the entry is committed and applied on this leader.
    pub async fn write(&self, req: WriteRequest) -> Result<WriteOutcome, ShuttingDown> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Pending { req, reply }).await.map_err(|_| ShuttingDown)?;
        rx.await.map_err(|_| ShuttingDown)
    }
}

async fn run(raft: Raft, mut rx: mpsc::Receiver<Pending>) {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let Some(first) = rx.recv().await else { return };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            let (reqs, replies): (Vec<WriteRequest>, Vec<oneshot::Sender<WriteOutcome>>) =
                batch.into_iter().map(|p| (p.req, p.reply)).unzip();
            let n = reqs.len();
            match raft.client_write(Batch(reqs)).await {
                Ok(resp) if resp.data.len() == n => {
                    for (reply, result) in replies.into_iter().zip(resp.data) {
                        // A caller that went away no longer needs its answer.
                        let _ = reply.send(Ok(result));
                    }
                }
                Ok(resp) => {
                    // Cannot happen: apply answers every request of a batch.
                    tracing::error!(sent = n, answered = resp.data.len(), "batch answered partly");
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
            drop(permit);
        });
    }
}
