//! `GET /v1/stream`: Server-Sent Events of the key's tenant, fed by the change feed.
//!
//! A trip write's change-feed entry carries what it tells insurers ([`tripline_model::push::TripNotices`]); reading
//! the feed from a position therefore tells the same messages in the same order. Each event's
//! `id` is a cursor (`Cursor` below): the feed position after it (per writer, plus how many messages of a
//! partly sent entry went out). A client that reconnects with `Last-Event-ID` gets exactly what
//! it missed.
//!
//! One [`Hub`] per API process follows the feed from its head (from the first stream on) and
//! keeps the latest messages in a ring bounded by bytes, each serialised once. A stream reads
//! the ring at its own pace, woken only when entries of its tenant arrive; one resuming from
//! before the ring reads the store first, then joins the ring. A stream that falls behind the
//! ring (a slow client) is closed: it resumes with its last id. Nothing is buffered per stream
//! beyond a few events.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::response::sse::Event as SseEvent;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tripline_model::{EventKind, NoticeKind, PushData, TenantId, VehicleId};
use tripline_store::{Backoff, Change, ChangeFeed, Checkpoint};

use crate::error::ApiError;

/// Entries read from the feed per request.
const READ_BATCH: usize = 500;
/// Events queued for one stream's connection at most: the ring is the buffer, not the stream.
pub(crate) const STREAM_QUEUE: usize = 16;
/// How long one event may wait for a slow client before its stream is closed.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Wait after a failed feed read, doubling up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Settings of the live stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamConfig {
    /// Streams one API key may hold open at once (then 429).
    pub max_per_key: usize,
    /// A comment line is sent after this long without an event, so proxies keep the connection.
    pub heartbeat: Duration,
    /// Bytes of recent messages the hub keeps for streams to read.
    pub ring_bytes: usize,
    /// How often the hub reads the feed when idle (entries written in the process wake it at
    /// once).
    pub poll: Duration,
    /// How long the feed keeps entries: a `Last-Event-ID` older than this gets `stream.reset`.
    pub retention: Duration,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            max_per_key: 100,
            heartbeat: Duration::from_secs(15),
            ring_bytes: 16 * 1024 * 1024,
            poll: Duration::from_millis(100),
            retention: Duration::from_secs(tripline_store::FEED_RETENTION_S),
        }
    }
}

/// A position in the stream: the feed checkpoint after the last event sent, and for an entry
/// whose messages went out only in part, how many did. The event `id`, as URL-safe base64.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Cursor {
    /// After the entries sent whole (postcard writes a one-field struct as the field alone).
    checkpoint: Checkpoint,
    /// Writer, sequence number and messages sent of the entry sent in part.
    partial: Option<(String, u64, u32)>,
    /// When the entry of the last event was written (for the retention check).
    at_ms: i64,
}

impl Cursor {
    pub(crate) fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(postcard::to_stdvec(self).unwrap_or_default())
    }

    pub(crate) fn decode(text: &str) -> Option<Cursor> {
        let bytes = URL_SAFE_NO_PAD.decode(text.trim()).ok()?;
        postcard::from_bytes(&bytes).ok()
    }

    /// Messages of entry `seq` of `writer` already sent: `None` when all of them were.
    fn sent_of(&self, writer: &str, seq: u64) -> Option<usize> {
        if seq <= self.checkpoint.position(writer) {
            return None;
        }
        match &self.partial {
            Some((w, s, sent)) if w == writer && *s == seq => Some(*sent as usize),
            _ => Some(0),
        }
    }

    /// Message `index` of the `count` of an entry went out.
    fn advance(&mut self, entry: &Entry, index: usize, count: usize) {
        if index + 1 >= count {
            self.checkpoint.advance(&entry.writer, entry.seq);
            self.partial = None;
        } else {
            self.checkpoint.advance(&entry.writer, entry.seq - 1);
            self.partial = Some((entry.writer.to_string(), entry.seq, u32::try_from(index + 1).unwrap_or(u32::MAX)));
        }
        self.at_ms = entry.at_ms;
    }

    /// Passes over everything up to `checkpoint` (entries read and all sent, or told nothing).
    fn pass(&mut self, checkpoint: &Checkpoint) {
        self.checkpoint.advance_to(checkpoint);
        if let Some((writer, seq, _)) = &self.partial
            && self.checkpoint.position(writer) >= *seq
        {
            self.partial = None;
        }
    }
}

/// One message, serialised once for every stream.
#[derive(Debug)]
struct Out {
    kind: NoticeKind,
    vehicle: VehicleId,
    event: Option<EventKind>,
    json: String,
}

/// A change-feed entry that tells something.
#[derive(Debug)]
struct Entry {
    writer: Arc<str>,
    seq: u64,
    tenant: TenantId,
    at_ms: i64,
    messages: Vec<Out>,
}

impl Entry {
    fn of(change: &Change) -> Option<Entry> {
        let messages: Vec<Out> = change
            .messages()
            .into_iter()
            .map(|message| Out {
                kind: message.kind,
                vehicle: message.vehicle_id().clone(),
                event: match &message.data {
                    PushData::Event(event) => Some(event.event.kind),
                    PushData::Trip(_) => None,
                },
                json: serde_json::to_string(&message).unwrap_or_default(),
            })
            .collect();
        (!messages.is_empty()).then(|| Entry {
            writer: Arc::from(change.writer.as_str()),
            seq: change.seq,
            tenant: change.tenant.clone(),
            at_ms: change.at_ms,
            messages,
        })
    }

    fn bytes(&self) -> usize {
        std::mem::size_of::<Entry>() + self.messages.iter().map(|m| m.json.len() + 64).sum::<usize>()
    }
}

/// What one stream asks for: `vehicle_id`, `type` and `event` (each repeatable; none: all).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct StreamFilter {
    pub(crate) vehicles: Vec<VehicleId>,
    pub(crate) kinds: Vec<NoticeKind>,
    pub(crate) events: Vec<EventKind>,
}

impl StreamFilter {
    fn wants(&self, out: &Out) -> bool {
        (self.vehicles.is_empty() || self.vehicles.contains(&out.vehicle))
            && (self.kinds.is_empty() || self.kinds.contains(&out.kind))
            && (self.events.is_empty() || out.event.is_none_or(|kind| self.events.contains(&kind)))
    }
}

/// The latest entries that tell something. Every such entry after `start` and up to `head` is
/// in `entries`, in the order read (per writer, by sequence number).
#[derive(Debug, Default)]
struct Ring {
    start: Checkpoint,
    head: Checkpoint,
    /// Index of `entries[0]` among all entries ever kept.
    first: u64,
    entries: VecDeque<Arc<Entry>>,
    bytes: usize,
}

impl Ring {
    fn end(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    fn push(&mut self, entry: Entry, limit_bytes: usize) {
        self.bytes += entry.bytes();
        self.entries.push_back(Arc::new(entry));
        while self.bytes > limit_bytes && self.entries.len() > 1 {
            let Some(old) = self.entries.pop_front() else { break };
            self.bytes -= old.bytes();
            self.first += 1;
            self.start.advance(&old.writer, old.seq);
        }
    }
}

/// Where a stream reads next in the ring.
enum Read {
    /// Entries from the index on, and the index after them.
    Entries(Vec<Arc<Entry>>, u64),
    /// The stream fell behind: its entries left the ring.
    Behind,
}

/// The API process's follower of the feed, shared by every stream.
#[derive(Debug)]
pub struct Hub {
    config: StreamConfig,
    ring: Mutex<Ring>,
    /// True once the follower knows the feed's head (streams wait for it).
    ready: watch::Sender<bool>,
    /// Per tenant, bumped when the ring gained entries of that tenant: a stream wakes for its
    /// own tenant's messages only.
    tenants: Mutex<HashMap<TenantId, watch::Sender<u64>>>,
    following: std::sync::atomic::AtomicBool,
    /// Open streams per API key hash.
    open: Mutex<HashMap<String, usize>>,
}

/// An open stream, counted against its key until dropped.
pub(crate) struct Admission {
    hub: Arc<Hub>,
    key_hash: String,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut open = self.hub.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.key_hash) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key_hash);
            }
        }
        crate::metrics::stream_closed();
    }
}

impl Hub {
    /// A hub that starts following the feed with its first stream.
    pub fn new(config: StreamConfig) -> Arc<Hub> {
        Arc::new(Hub {
            config,
            ring: Mutex::default(),
            ready: watch::channel(false).0,
            tenants: Mutex::default(),
            following: std::sync::atomic::AtomicBool::new(false),
            open: Mutex::default(),
        })
    }

    /// Its settings.
    pub(crate) fn config(&self) -> &StreamConfig {
        &self.config
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a stream of `key_hash`, or refuses it beyond the key's limit.
    pub(crate) fn admit(self: &Arc<Hub>, key_hash: &str) -> Result<Admission, ApiError> {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(key_hash.to_owned()).or_default();
        if *count >= self.config.max_per_key.max(1) {
            crate::metrics::stream_refused();
            return Err(ApiError::too_many_streams(self.config.max_per_key));
        }
        *count += 1;
        crate::metrics::stream_opened();
        Ok(Admission { hub: Arc::clone(self), key_hash: key_hash.to_owned() })
    }

    /// Starts following `store`'s feed, once.
    fn follow<S: ChangeFeed + Clone + Send + Sync + 'static>(self: &Arc<Hub>, store: &S) {
        if self.following.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        tokio::spawn(follow(store.clone(), Arc::downgrade(self)));
    }

    /// A receiver woken when the ring gains entries of `tenant`.
    fn tenant_signal(&self, tenant: &TenantId) -> watch::Receiver<u64> {
        let mut tenants = self.tenants.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Senders nobody listens to any more go (a tenant whose streams all closed).
        tenants.retain(|_, sender| sender.receiver_count() > 0);
        tenants.entry(tenant.clone()).or_insert_with(|| watch::channel(0).0).subscribe()
    }

    /// Wakes the streams of the tenants that gained entries.
    fn wake(&self, gained: &HashSet<TenantId>) {
        let tenants = self.tenants.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for tenant in gained {
            if let Some(sender) = tenants.get(tenant) {
                sender.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    }

    /// Waits until the follower knows the feed's head.
    async fn ready(&self) {
        let _ = self.ready.subscribe().wait_for(|ready| *ready).await;
    }

    fn read(&self, from: u64, limit: usize) -> Read {
        let ring = self.ring();
        if from < ring.first {
            return Read::Behind;
        }
        let skip = usize::try_from(from - ring.first).unwrap_or(usize::MAX);
        let entries: Vec<Arc<Entry>> = ring.entries.iter().skip(skip).take(limit).cloned().collect();
        let next = from + entries.len() as u64;
        Read::Entries(entries, next)
    }
}

/// The follower: reads the feed from its head into the ring while the hub lives.
async fn follow<S: ChangeFeed>(store: S, hub: Weak<Hub>) {
    let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
    let mut signal = store.feed_signal();
    let head = loop {
        match store.feed_head().await {
            Ok(head) => break head,
            Err(error) => {
                tracing::warn!(%error, "live stream: reading the change feed's head failed; retrying");
                tokio::time::sleep(backoff.failed()).await;
            }
        }
    };
    let (poll, limit) = match hub.upgrade() {
        Some(hub) => {
            let mut ring = hub.ring();
            ring.start = head.clone();
            ring.head = head;
            hub.ready.send_replace(true);
            (hub.config.poll, hub.config.ring_bytes)
        }
        None => return,
    };
    loop {
        let Some(from) = hub.upgrade().map(|hub| hub.ring().head.clone()) else { return };
        if let Some(signal) = &mut signal {
            signal.borrow_and_update();
        }
        let batch = match store.read_changes(&from, READ_BATCH).await {
            Ok(batch) => batch,
            Err(error) => {
                tracing::warn!(%error, "live stream: reading the change feed failed; retrying");
                tokio::time::sleep(backoff.failed()).await;
                continue;
            }
        };
        backoff.succeeded();
        let idle = batch.changes.is_empty();
        let Some(hub) = hub.upgrade() else { return };
        let mut gained = HashSet::new();
        {
            let mut ring = hub.ring();
            for entry in batch.changes.iter().filter_map(Entry::of) {
                gained.insert(entry.tenant.clone());
                ring.push(entry, limit);
            }
            ring.head = batch.checkpoint;
        }
        // Streams wake only when their tenant has something new to read (most feed entries
        // tell nothing, and most of the rest are other tenants').
        hub.wake(&gained);
        drop(hub);
        if idle {
            match &mut signal {
                Some(signal) => {
                    let _ = tokio::time::timeout(poll, signal.changed()).await;
                }
                None => tokio::time::sleep(poll).await,
            }
        }
    }
}

/// Where a stream starts.
#[derive(Debug)]
pub(crate) enum Start {
    /// From now.
    Now,
    /// After the event with this id.
    After(Cursor),
    /// From now, after a `stream.reset` event saying why the id given cannot be resumed.
    Reset(&'static str),
}

impl Start {
    /// From the request's `Last-Event-ID`, if any.
    pub(crate) fn of(last_event_id: Option<&str>, retention: Duration) -> Start {
        let Some(text) = last_event_id.filter(|t| !t.trim().is_empty()) else { return Start::Now };
        match Cursor::decode(text) {
            None => Start::Reset("unknown_id"),
            Some(cursor) => {
                let oldest = tripline_model::time::now_ms() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
                if cursor.at_ms != 0 && cursor.at_ms < oldest { Start::Reset("expired") } else { Start::After(cursor) }
            }
        }
    }
}

/// One stream's producer: sends `tenant`'s messages that `filter` wants from `start` on, until
/// the client goes, falls behind, or the hub ends.
pub(crate) async fn produce<S: ChangeFeed + Clone + Send + Sync + 'static>(
    hub: Arc<Hub>,
    store: S,
    tenant: TenantId,
    filter: StreamFilter,
    start: Start,
    events: mpsc::Sender<SseEvent>,
    admission: Admission,
) {
    hub.follow(&store);
    hub.ready().await;
    let mut stream = Producer { tenant, filter, events, cursor: Cursor::default(), _admission: admission };
    // A stream from now is positioned at the ring's end (which the head checkpoint describes)
    // before it says it is live, so nothing written after that is missed.
    enum Begin {
        AtEnd { head: Checkpoint, end: u64, reset: Option<&'static str> },
        After(Cursor),
    }
    let at_end = |reset| {
        let ring = hub.ring();
        Begin::AtEnd { head: ring.head.clone(), end: ring.end(), reset }
    };
    let begin = match start {
        Start::Now => at_end(None),
        Start::Reset(reason) => at_end(Some(reason)),
        Start::After(cursor) => Begin::After(cursor),
    };
    // Live: a comment tells the client (and any proxy) first.
    if !stream.send(SseEvent::default().comment("stream open")).await {
        return;
    }
    let mut index = match begin {
        Begin::AtEnd { head, end, reset } => {
            stream.cursor = Cursor { checkpoint: head, ..Cursor::default() };
            if let Some(reason) = reset {
                let data = serde_json::json!({"reason": reason, "message": reset_message(reason)});
                let event = SseEvent::default().event("stream.reset").id(stream.cursor.encode()).data(data.to_string());
                if !stream.send(event).await {
                    return;
                }
            }
            end
        }
        Begin::After(cursor) => {
            stream.cursor = cursor;
            match stream.catch_up(&hub, &store).await {
                Some(first) => first,
                None => return,
            }
        }
    };
    let mut grown = hub.tenant_signal(&stream.tenant);
    loop {
        grown.borrow_and_update();
        match hub.read(index, READ_BATCH) {
            Read::Behind => {
                crate::metrics::stream_dropped("slow_client");
                return;
            }
            Read::Entries(entries, next) => {
                index = next;
                let idle = entries.is_empty();
                for entry in entries {
                    if !stream.send_entry(&entry).await {
                        return;
                    }
                }
                if idle {
                    tokio::select! {
                        changed = grown.changed() => if changed.is_err() { return },
                        () = stream.events.closed() => return,
                    }
                }
            }
        }
    }
}

fn reset_message(reason: &str) -> &'static str {
    match reason {
        "expired" => "the Last-Event-ID is older than the change feed keeps; the stream goes on from now",
        _ => "the Last-Event-ID is not one this API issued; the stream goes on from now",
    }
}

/// A stream's state while producing.
struct Producer {
    tenant: TenantId,
    filter: StreamFilter,
    events: mpsc::Sender<SseEvent>,
    cursor: Cursor,
    /// Counts the stream against its key while it runs.
    _admission: Admission,
}

impl Producer {
    /// Queues an event; `false` when the client is gone or too slow.
    async fn send(&self, event: SseEvent) -> bool {
        match tokio::time::timeout(SEND_TIMEOUT, self.events.send(event)).await {
            Ok(Ok(())) => true,
            Ok(Err(_)) => false,
            Err(_) => {
                crate::metrics::stream_dropped("send_timeout");
                false
            }
        }
    }

    /// Sends what `entry` tells this stream and has not been sent.
    async fn send_entry(&mut self, entry: &Entry) -> bool {
        if entry.tenant != self.tenant {
            return true;
        }
        let Some(sent) = self.cursor.sent_of(&entry.writer, entry.seq) else { return true };
        let count = entry.messages.len();
        for (index, out) in entry.messages.iter().enumerate().skip(sent) {
            if !self.filter.wants(out) {
                continue;
            }
            self.cursor.advance(entry, index, count);
            let event = SseEvent::default().event(out.kind.as_str()).id(self.cursor.encode()).data(out.json.as_str());
            if !self.send(event).await {
                return false;
            }
            crate::metrics::stream_event_sent(out.kind, entry.at_ms);
        }
        true
    }

    /// Reads the store from the cursor until it reaches the ring's start; then the ring index to
    /// go on from (`None`: the client went away).
    async fn catch_up<S: ChangeFeed>(&mut self, hub: &Hub, store: &S) -> Option<u64> {
        let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
        loop {
            let start = {
                let ring = hub.ring();
                if self.cursor.checkpoint.covers(&ring.start) {
                    return Some(ring.first);
                }
                ring.start.clone()
            };
            let batch = match store.read_changes(&self.cursor.checkpoint, READ_BATCH).await {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(%error, "live stream: reading the change feed to resume failed; retrying");
                    if self.events.is_closed() {
                        return None;
                    }
                    tokio::time::sleep(backoff.failed()).await;
                    continue;
                }
            };
            backoff.succeeded();
            for entry in batch.changes.iter().filter_map(Entry::of) {
                if !self.send_entry(&entry).await {
                    return None;
                }
            }
            self.cursor.pass(&batch.checkpoint);
            if batch.changes.is_empty() && !batch.checkpoint.covers(&start) {
                // The store has nothing more for now, though the ring's start is further on
                // (read ahead of the published watermarks): the ring follows.
                return Some(hub.ring().first);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn entry(writer: &str, seq: u64, messages: usize) -> Entry {
        let out = || Out {
            kind: NoticeKind::TripStarted,
            vehicle: VehicleId::parse("car-1").unwrap(),
            event: None,
            json: String::new(),
        };
        Entry {
            writer: Arc::from(writer),
            seq,
            tenant: TenantId::parse("acme").unwrap(),
            at_ms: 7,
            messages: (0..messages).map(|_| out()).collect(),
        }
    }

    #[test]
    fn a_cursor_resumes_within_an_entry_sent_in_part() {
        let mut cursor = Cursor::default();
        let first = entry("w1", 4, 3);
        assert_eq!(cursor.sent_of("w1", 4), Some(0));
        cursor.advance(&first, 0, 3);
        let resumed = Cursor::decode(&cursor.encode()).unwrap();
        assert_eq!(resumed, cursor);
        assert_eq!(resumed.checkpoint.position("w1"), 3, "the entry is read again");
        assert_eq!(resumed.sent_of("w1", 4), Some(1), "its first message is not sent again");
        cursor.advance(&first, 2, 3);
        assert_eq!(cursor.sent_of("w1", 4), None);
        assert_eq!(cursor.checkpoint.position("w1"), 4);
        assert_eq!(cursor.sent_of("w2", 1), Some(0), "another writer's entries are new");
        assert_eq!(cursor.at_ms, 7);
    }

    #[test]
    fn an_id_this_api_did_not_issue_resets_the_stream() {
        let retention = Duration::from_secs(3600);
        assert!(matches!(Start::of(None, retention), Start::Now));
        assert!(matches!(Start::of(Some("not base64!"), retention), Start::Reset("unknown_id")));
        // An empty position is the feed's start.
        assert!(matches!(Start::of(Some("AAAA"), retention), Start::After(c) if c == Cursor::default()));
        let old = Cursor { at_ms: 1, ..Cursor::default() };
        assert!(matches!(Start::of(Some(&old.encode()), retention), Start::Reset("expired")));
        let fresh = Cursor { at_ms: tripline_model::time::now_ms(), ..Cursor::default() };
        assert!(matches!(Start::of(Some(&fresh.encode()), retention), Start::After(c) if c == fresh));
    }

    #[test]
    fn a_stream_wakes_for_its_own_tenants_entries_only() {
        let hub = Hub::new(StreamConfig::default());
        let (acme, globex) = (TenantId::parse("acme").unwrap(), TenantId::parse("globex").unwrap());
        let signal = hub.tenant_signal(&acme);
        hub.wake(&[globex].into());
        assert!(!signal.has_changed().unwrap(), "another tenant's entries");
        hub.wake(&[acme.clone()].into());
        assert!(signal.has_changed().unwrap());
        drop(signal);
        let _other = hub.tenant_signal(&TenantId::parse("initech").unwrap());
        assert!(!hub.tenants.lock().unwrap().contains_key(&acme), "a tenant without streams is forgotten");
    }

    #[test]
    fn a_stream_behind_the_ring_is_told_so() {
        let hub = Hub::new(StreamConfig { ring_bytes: entry("w1", 1, 1).bytes() * 2, ..StreamConfig::default() });
        for seq in 1..=5 {
            let limit = hub.config.ring_bytes;
            hub.ring().push(entry("w1", seq, 1), limit);
        }
        assert!(matches!(hub.read(0, 10), Read::Behind), "a slow stream's entries left the ring");
        let Read::Entries(entries, next) = hub.read(3, 10) else { panic!("entries 3 and 4 are kept") };
        assert_eq!((entries.iter().map(|e| e.seq).collect::<Vec<_>>(), next), (vec![4, 5], 5));
    }

    #[test]
    fn the_ring_keeps_its_byte_bound_and_moves_its_start_past_what_it_drops() {
        let mut ring = Ring::default();
        let size = entry("w1", 1, 2).bytes();
        for seq in 1..=10 {
            ring.push(entry(if seq % 2 == 0 { "w2" } else { "w1" }, seq, 2), size * 4);
        }
        assert_eq!(ring.entries.len(), 4);
        assert_eq!((ring.first, ring.end()), (6, 10));
        assert_eq!((ring.start.position("w1"), ring.start.position("w2")), (5, 6));
        assert!(ring.entries.iter().all(|e| e.seq > 6));
    }
}
