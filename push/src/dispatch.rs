//! The dispatcher: one task per webhook, each following the change feed into its durable outbox
//! and delivering the outbox in order per vehicle.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;
use tripline_model::time::now_ms;
use tripline_model::{PushMessage, VehicleId};
use tripline_store::{Backoff, Change, Checkpoint, DeliveryAttempt, DeliveryOutcome, OutboxItem, Store, Webhook};
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

/// What a webhook's task holds: its feed cursor, the messages waiting (by outbox key, so in
/// feed order), the vehicles with an attempt running and the attempts.
struct Outbox {
    cursor: Checkpoint,
    pending: BTreeMap<String, OutboxItem>,
    busy: HashSet<VehicleId>,
    sends: JoinSet<Sent>,
    cursor_written: Instant,
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
        let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
        loop {
            match call().await {
                Ok(value) => return Some(value),
                Err(error) => {
                    tracing::warn!(%error, webhook = %self.id(), "webhooks: {what} failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff.failed()) => {}
                        _ = self.stop.changed() => {}
                    }
                    if *self.stop.borrow() || self.webhook.has_changed().is_err() {
                        return None;
                    }
                }
            }
        }
    }

    async fn run(mut self) {
        let id = self.id();
        let store = self.store.clone();
        let Some(Some((cursor, items))) = self.persist("reading the outbox", || store.outbox(&id)).await else {
            return;
        };
        let mut outbox = Outbox {
            cursor,
            pending: items.into_iter().map(|i| (i.key.clone(), i)).collect(),
            busy: HashSet::new(),
            sends: JoinSet::new(),
            cursor_written: Instant::now(),
        };
        let mut signal = self.store.feed_signal();
        while !*self.stop.borrow() {
            let Some(read_more) = self.fill(&mut outbox, &mut signal).await else { return };
            crate::metrics::outbox(&id, outbox.pending.len(), outbox.pending.values().map(|i| i.written_at_ms).min());
            let now = now_ms();
            let next_due = self.start_due(&mut outbox, now);
            let wait = if read_more {
                Duration::ZERO
            } else {
                let due = next_due
                    .map_or(self.config.poll, |due| Duration::from_millis(u64::try_from(due - now).unwrap_or(0)));
                due.min(self.config.poll)
            };
            tokio::select! {
                Some(done) = outbox.sends.join_next(), if !outbox.sends.is_empty() => {
                    let mut finished = vec![done];
                    while let Some(more) = outbox.sends.try_join_next() {
                        finished.push(more);
                    }
                    let sent = finished.into_iter().filter_map(Result::ok).collect();
                    if self.settle(&mut outbox, sent).await.is_none() {
                        return;
                    }
                }
                () = tokio::time::sleep(wait) => {}
                _ = signalled(&mut signal), if !read_more => {}
                _ = self.stop.changed() => return,
                changed = self.webhook.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Fills the outbox from the change feed while it has room: the messages the webhook asks
    /// for are written with the cursor after them. Whether more may be waiting in the feed;
    /// `None` when the task should end.
    async fn fill(&mut self, outbox: &mut Outbox, signal: &mut Option<watch::Receiver<u64>>) -> Option<bool> {
        if outbox.pending.len() >= self.config.max_pending {
            return Some(false);
        }
        if let Some(signal) = signal {
            signal.borrow_and_update();
        }
        let batch = match self.store.read_changes(&outbox.cursor, READ_BATCH).await {
            Ok(batch) if batch.checkpoint != outbox.cursor => batch,
            Ok(_) => return Some(false),
            Err(error) => {
                tracing::warn!(%error, webhook = %self.id(), "webhooks: reading the change feed failed");
                return Some(false);
            }
        };
        let webhook = self.webhook.borrow().clone();
        let items: Vec<OutboxItem> = batch.changes.iter().flat_map(|c| outbox_items(&webhook, c)).collect();
        if !items.is_empty() || outbox.cursor_written.elapsed() >= CURSOR_EVERY {
            let store = self.store.clone();
            let checkpoint = &batch.checkpoint;
            self.persist("writing the outbox", || store.enqueue(&webhook.id, &items, checkpoint)).await?;
            outbox.cursor_written = Instant::now();
        }
        outbox.pending.extend(items.into_iter().map(|i| (i.key.clone(), i)));
        outbox.cursor = batch.checkpoint;
        Some(!batch.changes.is_empty())
    }

    /// Starts each vehicle's first waiting message that is due, while sends are free; the time
    /// the next one falls due, if one waits.
    fn start_due(&self, outbox: &mut Outbox, now: i64) -> Option<i64> {
        let mut heads: HashSet<&VehicleId> = HashSet::new();
        let mut next_due: Option<i64> = None;
        for item in outbox.pending.values() {
            if outbox.busy.contains(&item.vehicle_id) || !heads.insert(&item.vehicle_id) {
                continue;
            }
            if item.next_at_ms > now {
                next_due = Some(next_due.map_or(item.next_at_ms, |due| due.min(item.next_at_ms)));
            } else if outbox.sends.len() < self.config.concurrency.max(1) {
                outbox.busy.insert(item.vehicle_id.clone());
                let (agent, webhook, item) = (self.agent.clone(), self.webhook.borrow().clone(), item.clone());
                outbox.sends.spawn_blocking(move || post_or_report_panic(&agent, &webhook, item));
            }
        }
        next_due
    }

    /// Records every attempt that finished in one write; each item then leaves the outbox or
    /// waits for its retry. `None` when the task should end.
    async fn settle(&mut self, outbox: &mut Outbox, sent: Vec<Sent>) -> Option<()> {
        let settled: Vec<(OutboxItem, DeliveryAttempt)> = sent.into_iter().map(|sent| self.outcome(sent)).collect();
        let (store, id) = (self.store.clone(), self.id());
        self.persist("recording deliveries", || store.settle(&id, &settled)).await?;
        for (item, attempt) in settled {
            outbox.busy.remove(&item.vehicle_id);
            if attempt.outcome == DeliveryOutcome::Retrying {
                outbox.pending.insert(item.key.clone(), item);
            } else {
                outbox.pending.remove(&item.key);
            }
        }
        Some(())
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

/// [`post`], and a panic in it reported as a failed attempt (so its vehicle's messages go on).
fn post_or_report_panic(agent: &ureq::Agent, webhook: &Webhook, item: OutboxItem) -> Sent {
    let at_ms = now_ms();
    let kept = item.clone();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| post(agent, webhook, item))).unwrap_or_else(|_| Sent {
        item: kept,
        at_ms,
        status: None,
        error: Some("the delivery attempt panicked".to_owned()),
        latency: Duration::ZERO,
        retry_after: None,
    })
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
