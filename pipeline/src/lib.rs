//! # tripline-pipeline
//!
//! The workers that run the enrichment engine ([`tripline_enrich`]) on live messages: one
//! bounded queue per worker, each vehicle routed to one of them ([`Queues`], the intake's
//! [`Handoff`]: a vehicle's messages stay in order while vehicles run in parallel), batches of
//! what is queued, the batch's points, rejections and trip records written to the store until
//! durable, and only then each message's [`Completion`], which completes its delivery so the
//! source can acknowledge it ([`worker`]).
//!
//! The engine is pure; everything here that waits (queues, the store, the clock for idle trips)
//! is async and lives in this crate.

pub mod metrics;
mod route;
pub mod sweep;
mod told;
pub mod worker;

use std::sync::Arc;

use tokio::task::JoinHandle;
use tripline_enrich::Enricher;
use tripline_ingest::intake::{Handoff, Routed};
use tripline_model::VehicleId;
use tripline_store::Store;

pub use route::worker_for;
pub use worker::{Completion, Work, Worker, WorkerConfig};

/// Messages queued per worker: enough for a full batch ([`WorkerConfig::max_batch`], 256) while
/// the previous one is being written, small enough that a stop drains quickly.
pub const WORKER_QUEUE_CAPACITY: usize = 512;

/// The running workers.
pub struct Pool {
    /// The workers' queues, for the intake. Dropping them lets the workers finish what is
    /// queued and end.
    pub queues: Queues,
    /// The workers' tasks, in queue order.
    pub tasks: Vec<JoinHandle<()>>,
    /// Receivers of the queues, only to sample their depths: holding a sender would keep a
    /// worker's queue open and the worker running after a stop.
    pub depths: Vec<flume::Receiver<Work>>,
}

impl Pool {
    /// Starts `workers` workers (at least one) over `store`, each with `config`.
    pub fn start<S: Store>(workers: usize, engine: &Arc<Enricher>, store: &S, config: &WorkerConfig) -> Pool {
        let workers = workers.max(1);
        let mut pool = Pool {
            queues: Queues { senders: Vec::with_capacity(workers) },
            tasks: Vec::with_capacity(workers),
            depths: Vec::with_capacity(workers),
        };
        let forgotten = Arc::default();
        let mut adopt = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (tx, rx) = flume::bounded::<Work>(WORKER_QUEUE_CAPACITY);
            pool.queues.senders.push(tx);
            pool.depths.push(rx.clone());
            let (adopt_tx, adopt_rx) = flume::bounded(1);
            adopt.push(adopt_tx);
            let worker = Worker::new(Arc::clone(engine), store.clone(), config.clone())
                .counting_forgotten(Arc::clone(&forgotten));
            pool.tasks.push(tokio::spawn(worker.run_adopting(rx, adopt_rx)));
        }
        // Not among the tasks a stop waits for: it ends once the workers are gone.
        tokio::spawn(sweep::run(store.clone(), adopt, forgotten));
        pool
    }
}

/// The workers' queues: each vehicle's messages go to the worker [`worker_for`] names.
pub struct Queues {
    senders: Vec<flume::Sender<Work>>,
}

impl Queues {
    /// Queues `work` on its vehicle's worker (the first for none); false when the workers are
    /// gone.
    pub async fn send(&self, vehicle: Option<&VehicleId>, work: Work) -> bool {
        let index = vehicle.map_or(0, |v| worker_for(v, self.senders.len()));
        match self.senders.get(index) {
            Some(queue) => queue.send_async(work).await.is_ok(),
            None => false,
        }
    }
}

/// A routed delivery becomes work whose completion completes the delivery (letting the source
/// acknowledge it, in receive order).
impl Handoff for Queues {
    async fn hand(&self, vehicle: Option<&VehicleId>, Routed { item, delivery }: Routed) -> bool {
        self.send(vehicle, Work::new(item, Box::new(move || delivery.complete()))).await
    }
}
