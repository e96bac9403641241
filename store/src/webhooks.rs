//! Webhooks: a tenant's subscriptions, each with a durable outbox of messages to deliver and
//! the record of every delivery attempt.
//!
//! A webhook's outbox is filled from the change feed: the messages of the entries after the
//! webhook's feed cursor that it asks for are written to the outbox together with the cursor
//! after them, so an entry's messages are either in the outbox or still ahead of the cursor
//! (the feed keeps them [`crate::FEED_RETENTION_S`]), never lost in between.

use std::future::Future;

use serde::{Deserialize, Serialize};
use tripline_model::hash::Fnv1a64;
use tripline_model::{NoticeKind, TenantId, VehicleId};

use crate::{Checkpoint, Page, StoreResult};

/// How long delivery attempts are listed: 7 days.
pub const DELIVERY_RETENTION_S: u64 = 7 * 86_400;

/// A tenant's webhook: where its messages go, which ones, and the secret that signs them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    /// `wh_` and 16 hex digits.
    pub id: String,
    /// The tenant whose messages it receives.
    pub tenant: TenantId,
    /// Where they are POSTed.
    pub url: String,
    /// Message types it receives (empty: all).
    #[serde(default)]
    pub types: Vec<NoticeKind>,
    /// Vehicles whose messages it receives (empty: all of the tenant's).
    #[serde(default)]
    pub vehicles: Vec<VehicleId>,
    /// The signing secret (`whsec_` and base64), shown once when made.
    pub secret: String,
    /// The secret before the last rotation, still signing beside the new one until
    /// `previous_until_ms`, so a receiver can switch without losing a message.
    #[serde(default)]
    pub previous_secret: Option<String>,
    /// Until when the previous secret signs, Unix milliseconds.
    #[serde(default)]
    pub previous_until_ms: i64,
    /// When it was made, Unix milliseconds.
    pub created_at_ms: i64,
}

impl Webhook {
    /// Whether it receives a message of `kind` about `vehicle`.
    pub fn wants(&self, kind: NoticeKind, vehicle: &VehicleId) -> bool {
        (self.types.is_empty() || self.types.contains(&kind))
            && (self.vehicles.is_empty() || self.vehicles.contains(vehicle))
    }
}

/// A message waiting in a webhook's outbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxItem {
    /// Its place in the outbox: messages are delivered in key order per vehicle
    /// ([`OutboxItem::key_of`]).
    pub key: String,
    /// The message's stable id (`webhook-id`).
    pub message_id: String,
    /// Its type.
    pub kind: NoticeKind,
    /// The vehicle it is about.
    pub vehicle_id: VehicleId,
    /// The request body (the message's JSON).
    pub body: String,
    /// When the change was written, Unix milliseconds: the message is given up 24 h (the
    /// configured time) after it.
    pub written_at_ms: i64,
    /// Attempts made so far.
    pub attempts: u32,
    /// When to try next, Unix milliseconds.
    pub next_at_ms: i64,
}

impl OutboxItem {
    /// The key of message `index` of change-feed entry `seq` of `writer`, written at
    /// `written_at_ms`: time first, so the outbox reads in the order things happened across
    /// writers; within a writer, its sequence order.
    pub fn key_of(written_at_ms: i64, writer: &str, seq: u64, index: usize) -> String {
        format!("{:015}-{writer}-{seq:020}-{index:04}", written_at_ms.max(0))
    }
}

/// How a delivery attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOutcome {
    /// The receiver answered 2xx.
    Delivered,
    /// It did not; another attempt is due at `next_at_ms`.
    Retrying,
    /// It did not, and the message is given up (too old, or the webhook's receiver refuses
    /// for good).
    Failed,
}

/// One delivery attempt, as `GET /v1/webhooks/deliveries` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryAttempt {
    /// Hex id of the attempt.
    pub id: String,
    /// The webhook's tenant.
    pub tenant: TenantId,
    /// The webhook.
    pub webhook_id: String,
    /// The message (`webhook-id`).
    pub message_id: String,
    /// Its type.
    pub kind: NoticeKind,
    /// The vehicle it is about.
    pub vehicle_id: VehicleId,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// When it was made, Unix milliseconds.
    pub at_ms: i64,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    /// Why it failed without a status (connection refused, timeout, a refused address).
    pub error: Option<String>,
    /// How long it took.
    pub latency_ms: u64,
    /// How it ended.
    pub outcome: DeliveryOutcome,
    /// When the next attempt is due (`retrying`).
    pub next_at_ms: Option<i64>,
}

impl DeliveryAttempt {
    /// The id of attempt `attempt` of `message_id` to `webhook_id`.
    pub fn id_for(webhook_id: &str, message_id: &str, attempt: u32) -> String {
        let hash = |seed: u64| {
            Fnv1a64::with_seed(seed)
                .write(webhook_id.as_bytes())
                .write(&[0])
                .write(message_id.as_bytes())
                .write(&attempt.to_le_bytes())
                .finish()
        };
        format!("{:016x}{:016x}", hash(0xcbf2_9ce4_8422_2325), hash(0x8422_2325_cbf2_9ce4))
    }

    /// The page cursor that continues after this attempt.
    pub fn cursor(&self) -> String {
        crate::codec::rejection_cursor(self.at_ms, &self.id)
    }
}

/// Webhooks, their outboxes and delivery attempts.
pub trait WebhookStore {
    /// Adds a webhook that receives the messages after feed position `from`, or replaces one
    /// (same id: a new secret; `from` is then ignored).
    fn put_webhook(&self, webhook: &Webhook, from: &Checkpoint) -> impl Future<Output = StoreResult<()>> + Send;
    /// Removes a webhook and its outbox; the removed webhook, if there was one.
    fn remove_webhook(&self, id: &str) -> impl Future<Output = StoreResult<Option<Webhook>>> + Send;
    /// Every webhook of every tenant.
    fn webhooks(&self) -> impl Future<Output = StoreResult<Vec<Webhook>>> + Send;
    /// A webhook's feed cursor and the messages waiting in its outbox, in key order (`None`:
    /// no such webhook).
    fn outbox(&self, id: &str) -> impl Future<Output = StoreResult<Option<(Checkpoint, Vec<OutboxItem>)>>> + Send;
    /// Adds messages to a webhook's outbox and moves its feed cursor to `cursor`, in that order
    /// (idempotent: the same items again rewrite the same rows). Nothing for a removed webhook.
    fn enqueue(
        &self,
        id: &str,
        items: &[OutboxItem],
        cursor: &Checkpoint,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Records attempts to deliver items, in one write: a delivered or failed message leaves
    /// the outbox, one to retry stays as its item says (its attempts and next time).
    fn settle(
        &self,
        id: &str,
        settled: &[(OutboxItem, DeliveryAttempt)],
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// A tenant's delivery attempts, newest first, a page at a time (kept
    /// [`DELIVERY_RETENTION_S`]).
    fn deliveries(
        &self,
        tenant: &TenantId,
        cursor: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = StoreResult<Page<DeliveryAttempt>>> + Send;
}
