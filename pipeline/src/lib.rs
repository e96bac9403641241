//! # tripline-pipeline
//!
//! The workers that run the enrichment engine ([`tripline_enrich`]) on live messages: one
//! bounded queue per worker (the intake routes each vehicle to one worker, so a vehicle's
//! messages stay in order while vehicles run in parallel), batches of what is queued, the
//! batch's points, rejections and trip records written to the store until durable, and only then
//! each message's [`Completion`], which lets the source acknowledge it ([`worker`]).
//!
//! The engine is pure; everything here that waits (queues, the store, the clock for idle trips)
//! is async and lives in this crate.

pub mod metrics;
mod told;
pub mod worker;

use std::sync::Arc;

use tokio::task::JoinHandle;
use tripline_enrich::Enricher;
use tripline_store::Store;

pub use worker::{Completion, Work, Worker, WorkerConfig};

/// Messages queued per worker: enough for a full batch ([`WorkerConfig::max_batch`], 256) while
/// the previous one is being written, small enough that a stop drains quickly.
pub const WORKER_QUEUE_CAPACITY: usize = 512;

/// The running workers.
pub struct Pool {
    /// One queue per worker; the intake routes each vehicle to one of them. Dropping every
    /// sender lets the workers finish what is queued and end.
    pub queues: Vec<flume::Sender<Work>>,
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
            queues: Vec::with_capacity(workers),
            tasks: Vec::with_capacity(workers),
            depths: Vec::with_capacity(workers),
        };
        for _ in 0..workers {
            let (tx, rx) = flume::bounded::<Work>(WORKER_QUEUE_CAPACITY);
            pool.queues.push(tx);
            pool.depths.push(rx.clone());
            let worker = Worker::new(Arc::clone(engine), store.clone(), config.clone());
            pool.tasks.push(tokio::spawn(worker.run(rx)));
        }
        pool
    }
}
