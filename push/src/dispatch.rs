//! The dispatcher: one task per webhook, each following the change feed into its durable outbox
//! and delivering the outbox in order per vehicle.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;
use tripline_model::time::now_ms;
use tripline_model::{PushMessage, VehicleId};
use tripline_store::{Change, DeliveryAttempt, DeliveryOutcome, OutboxItem, Store, Webhook};
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};

use crate::guard::AddressPolicy;
use crate::{WebhookConfig, sign};

/// Change-feed entries read per request: the feed grows by about one entry per trip write, so a
/// busy fleet adds thousands a second.
const READ_BATCH: usize = 2000;
/// A cursor that passed only entries the webhook does not ask for is written at most this often
/// (it is written at once with any message; a restart reads the passed entries again, in vain).
const CURSOR_EVERY: Duration = Duration::from_secs(2);
/// Wait after a failed store call, doubling up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Bytes of a receiver's answer read at most (the answer is not used).
const MAX_ANSWER_BYTES: u64 = 64 * 1024;

/// Delivers every tenant's webhooks.
pub struct Dispatcher<S> {
    store: S,
    config: Arc<WebhookConfig>,
    agent: ureq::Agent,
}

/// The resolver of webhook requests: the system's, keeping only the addresses the policy allows
/// (so a name cannot lead a request to an internal address, not even by a later answer).
struct GuardedResolver {
    policy: AddressPolicy,
    system: DefaultResolver,
}

impl std::fmt::Debug for GuardedResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedResolver").field("policy", &self.policy).finish_non_exhaustive()
    }
}

impl Resolver for GuardedResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let all = self.system.resolve(uri, config, timeout)?;
        let mut kept = self.system.empty();
        let mut refused = None;
        for address in all.iter() {
            match self.policy.check(address.ip()) {
                Ok(()) => kept.push(*address),
                Err(reason) => refused = Some(reason),
            }
        }
        match refused {
            Some(reason) if kept.is_empty() => Err(ureq::Error::Other(reason.into())),
            _ => Ok(kept),
        }
    }
}

impl<S: Store> Dispatcher<S> {
    /// A dispatcher over `store`.
    pub fn new(store: S, config: WebhookConfig) -> Self {
        let agent_config = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .user_agent(concat!("tripline-webhooks/", env!("CARGO_PKG_VERSION")))
            .build();
        let resolver = GuardedResolver { policy: config.addresses.clone(), system: DefaultResolver::default() };
        let agent =
            ureq::Agent::with_parts(agent_config, ureq::unversioned::transport::DefaultConnector::new(), resolver);
        Dispatcher { store, config: Arc::new(config), agent }
    }

    /// Runs until `stop` turns true: reads the webhooks every `reload` and keeps one task per
    /// webhook (a removed one's task ends, a changed one's task takes the change).
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        crate::metrics::describe();
        let mut tasks: HashMap<String, watch::Sender<Webhook>> = HashMap::new();
        let mut running = JoinSet::new();
        while !*stop.borrow() {
            match self.store.webhooks().await {
                Ok(webhooks) => {
                    let ids: HashSet<String> = webhooks.iter().map(|w| w.id.clone()).collect();
                    // Dropping a webhook's sender ends its task.
                    tasks.retain(|id, _| ids.contains(id));
                    for webhook in webhooks {
                        match tasks.get(&webhook.id) {
                            Some(sender) => {
                                sender.send_if_modified(|current| {
                                    let changed = *current != webhook;
                                    *current = webhook.clone();
                                    changed
                                });
                            }
                            None => {
                                let (sender, receiver) = watch::channel(webhook.clone());
                                let follower = Follower {
                                    store: self.store.clone(),
                                    config: Arc::clone(&self.config),
                                    agent: self.agent.clone(),
                                    webhook: receiver,
                                    stop: stop.clone(),
                                };
                                running.spawn(follower.run());
                                tasks.insert(webhook.id, sender);
                            }
                        }
                    }
                    crate::metrics::webhooks(tasks.len());
                }
                Err(error) => tracing::warn!(%error, "webhooks: reading the list failed; retrying"),
            }
            while running.try_join_next().is_some() {}
            tokio::select! {
                () = tokio::time::sleep(self.config.reload) => {}
                _ = stop.changed() => {}
            }
        }
        tasks.clear();
        while running.join_next().await.is_some() {}
    }
}

/// What one attempt gave.
#[derive(Debug)]
struct Sent {
    item: OutboxItem,
    at_ms: i64,
    status: Option<u16>,
    error: Option<String>,
    latency: Duration,
    retry_after: Option<Duration>,
}

/// One webhook's task.
struct Follower<S> {
    store: S,
    config: Arc<WebhookConfig>,
    agent: ureq::Agent,
    webhook: watch::Receiver<Webhook>,
    stop: watch::Receiver<bool>,
}

impl<S: Store> Follower<S> {
    fn id(&self) -> String {
        self.webhook.borrow().id.clone()
    }

    /// Retries `call` with backoff until it succeeds (`Some`) or the task should end (`None`).
    async fn persist<T, F>(&mut self, what: &str, mut call: impl FnMut() -> F) -> Option<T>
    where
        F: std::future::Future<Output = tripline_store::StoreResult<T>>,
    {
        let mut backoff = FIRST_BACKOFF;
        loop {
            match call().await {
                Ok(value) => return Some(value),
                Err(error) => {
                    tracing::warn!(%error, webhook = %self.id(), "webhooks: {what} failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = self.stop.changed() => {}
                    }
                    if *self.stop.borrow() || self.webhook.has_changed().is_err() {
                        return None;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn run(mut self) {
        let id = self.id();
        let store = self.store.clone();
        let Some(Some((mut cursor, items))) = self.persist("reading the outbox", || store.outbox(&id)).await else {
            return;
        };
        let mut pending: BTreeMap<String, OutboxItem> = items.into_iter().map(|i| (i.key.clone(), i)).collect();
        let mut busy: HashSet<VehicleId> = HashSet::new();
        let mut sends: JoinSet<Sent> = JoinSet::new();
        let mut signal = self.store.feed_signal();
        let mut cursor_written = Instant::now();
        loop {
            if *self.stop.borrow() {
                return;
            }
            // Fill the outbox from the feed while there is room.
            let mut read_more = false;
            if pending.len() < self.config.max_pending {
                if let Some(signal) = &mut signal {
                    signal.borrow_and_update();
                }
                match self.store.read_changes(&cursor, READ_BATCH).await {
                    Ok(batch) if batch.checkpoint != cursor => {
                        let webhook = self.webhook.borrow().clone();
                        let items: Vec<OutboxItem> =
                            batch.changes.iter().flat_map(|c| outbox_items(&webhook, c)).collect();
                        let checkpoint = batch.checkpoint.clone();
                        if !items.is_empty() || cursor_written.elapsed() >= CURSOR_EVERY {
                            let Some(()) =
                                self.persist("writing the outbox", || store.enqueue(&id, &items, &checkpoint)).await
                            else {
                                return;
                            };
                            cursor_written = Instant::now();
                        }
                        read_more = !batch.changes.is_empty();
                        pending.extend(items.into_iter().map(|i| (i.key.clone(), i)));
                        cursor = batch.checkpoint;
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, webhook = %id, "webhooks: reading the change feed failed"),
                }
            }
            crate::metrics::outbox(&id, pending.len(), pending.values().map(|i| i.written_at_ms).min());
            // Start each vehicle's first message when it is due.
            let now = now_ms();
            let mut heads: HashSet<&VehicleId> = HashSet::new();
            let mut next_due: Option<i64> = None;
            for item in pending.values() {
                if busy.contains(&item.vehicle_id) || !heads.insert(&item.vehicle_id) {
                    continue;
                }
                if item.next_at_ms > now {
                    next_due = Some(next_due.map_or(item.next_at_ms, |due| due.min(item.next_at_ms)));
                } else if sends.len() < self.config.concurrency.max(1) {
                    busy.insert(item.vehicle_id.clone());
                    let (agent, webhook, item) = (self.agent.clone(), self.webhook.borrow().clone(), item.clone());
                    sends.spawn_blocking(move || post(&agent, &webhook, item));
                }
            }
            let wait = if read_more {
                Duration::ZERO
            } else {
                let due = next_due
                    .map_or(self.config.poll, |due| Duration::from_millis(u64::try_from(due - now).unwrap_or(0)));
                due.min(self.config.poll)
            };
            tokio::select! {
                Some(done) = sends.join_next(), if !sends.is_empty() => {
                    let mut finished = vec![done];
                    while let Some(more) = sends.try_join_next() {
                        finished.push(more);
                    }
                    // Every attempt that finished, recorded in one write.
                    let settled: Vec<(OutboxItem, DeliveryAttempt)> =
                        finished.into_iter().filter_map(Result::ok).map(|sent| self.outcome(sent)).collect();
                    let Some(()) = self.persist("recording deliveries", || store.settle(&id, &settled)).await else {
                        return;
                    };
                    for (item, attempt) in settled {
                        busy.remove(&item.vehicle_id);
                        if attempt.outcome == DeliveryOutcome::Retrying {
                            pending.insert(item.key.clone(), item);
                        } else {
                            pending.remove(&item.key);
                        }
                    }
                }
                () = tokio::time::sleep(wait) => {}
                _ = signalled(&mut signal), if !read_more => {}
                _ = self.stop.changed() => return,
                changed = self.webhook.changed() => if changed.is_err() { return },
            }
        }
    }

    /// What an attempt gave: the item as it now waits (if it is retried) and the attempt's
    /// record.
    fn outcome(&self, sent: Sent) -> (OutboxItem, DeliveryAttempt) {
        let Sent { mut item, at_ms, status, error, latency, retry_after } = sent;
        let webhook = self.webhook.borrow().clone();
        item.attempts += 1;
        let delivered = status.is_some_and(|s| (200..300).contains(&s));
        let gone = status == Some(410);
        let next_at = if delivered || gone {
            None
        } else {
            let jitter = f64::from(getrandom::u32().unwrap_or(0)) / f64::from(u32::MAX);
            self.config.retry.next_at(item.attempts, now_ms(), item.written_at_ms, jitter, retry_after)
        };
        let outcome = match (delivered, next_at) {
            (true, _) => DeliveryOutcome::Delivered,
            (false, Some(_)) => DeliveryOutcome::Retrying,
            (false, None) => DeliveryOutcome::Failed,
        };
        if let Some(next_at) = next_at {
            item.next_at_ms = next_at;
        }
        let attempt = DeliveryAttempt {
            id: DeliveryAttempt::id_for(&webhook.id, &item.message_id, item.attempts),
            tenant: webhook.tenant.clone(),
            webhook_id: webhook.id.clone(),
            message_id: item.message_id.clone(),
            kind: item.kind,
            vehicle_id: item.vehicle_id.clone(),
            attempt: item.attempts,
            at_ms,
            status,
            error,
            latency_ms: u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
            outcome,
            next_at_ms: next_at,
        };
        crate::metrics::delivery(outcome, item.kind, item.written_at_ms, latency);
        if outcome == DeliveryOutcome::Failed {
            tracing::warn!(webhook = %webhook.id, message = %item.message_id, attempts = item.attempts, ?status, "webhooks: a message is given up");
        }
        (item, attempt)
    }
}

/// Returns when `signal` changes; never without one (or once its sender is gone).
async fn signalled(signal: &mut Option<watch::Receiver<u64>>) {
    match signal {
        Some(receiver) => {
            if receiver.changed().await.is_err() {
                *signal = None;
            }
        }
        None => std::future::pending().await,
    }
}

/// The outbox items of `change` that `webhook` asks for.
fn outbox_items(webhook: &Webhook, change: &Change) -> Vec<OutboxItem> {
    if change.tenant != webhook.tenant {
        return Vec::new();
    }
    change
        .messages()
        .into_iter()
        .enumerate()
        .filter(|(_, message)| webhook.wants(message.kind, message.vehicle_id()))
        .filter_map(|(index, message): (usize, PushMessage)| {
            Some(OutboxItem {
                key: OutboxItem::key_of(change.at_ms, &change.writer, change.seq, index),
                message_id: message.id.clone(),
                kind: message.kind,
                vehicle_id: message.vehicle_id().clone(),
                body: serde_json::to_string(&message).ok()?,
                written_at_ms: change.at_ms,
                attempts: 0,
                next_at_ms: 0,
            })
        })
        .collect()
}

/// One delivery attempt (blocking): the message POSTed with its Standard Webhooks headers.
fn post(agent: &ureq::Agent, webhook: &Webhook, item: OutboxItem) -> Sent {
    let at_ms = now_ms();
    let timestamp_s = at_ms / 1000;
    let mut secrets = vec![webhook.secret.as_str()];
    if let Some(previous) = &webhook.previous_secret
        && at_ms < webhook.previous_until_ms
    {
        secrets.push(previous);
    }
    let signature = sign::header(&secrets, &item.message_id, timestamp_s, item.body.as_bytes());
    let started = Instant::now();
    let answer = agent
        .post(&webhook.url)
        .header("content-type", "application/json")
        .header("webhook-id", &item.message_id)
        .header("webhook-timestamp", timestamp_s.to_string())
        .header("webhook-signature", signature)
        .send(item.body.as_bytes());
    let (status, error, retry_after) = match answer {
        Ok(mut response) => {
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            // Read (a little of) the answer so the connection ends cleanly; it is not used.
            let _ = response.body_mut().with_config().limit(MAX_ANSWER_BYTES).read_to_vec();
            (Some(response.status().as_u16()), None, retry_after)
        }
        Err(error) => (None, Some(error.to_string()), None),
    };
    Sent { item, at_ms, status, error, latency: started.elapsed(), retry_after }
}
