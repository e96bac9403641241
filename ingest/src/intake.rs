//! From a delivery to a routed item: decode and validate, find the vehicle's tenant, build the
//! rejection records, and hand the item on ([`Handoff`]: the pipeline's worker queues).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tripline_model::time::now_ms;

use tokio::sync::watch;
use tripline_model::{DecodeConfig, Decoded, Message, RejectReason, Rejection, TenantId, VehicleId, decode};
use tripline_store::Registry;

use crate::source::Delivery;
use crate::tenants::{Lookup, Tenants};

/// A decoded message and the delivery to complete once its results are durable.
#[derive(Debug)]
pub struct Routed {
    /// What to do.
    pub item: Decoded,
    /// Complete after the item's writes are durable.
    pub delivery: Delivery,
}

/// Where the intake hands each routed delivery: in the binary, the pipeline's worker queues
/// (`tripline_pipeline::Queues`, which pick a vehicle's worker).
pub trait Handoff: Send {
    /// Hands `routed` on. `vehicle` is the vehicle its topic names (none for a topic naming no
    /// vehicle); one vehicle's deliveries come in receive order and must stay in it. False when
    /// no one receives any more.
    fn hand(&self, vehicle: Option<&VehicleId>, routed: Routed) -> impl Future<Output = bool> + Send;
}

/// One queue receiving everything, in receive order.
impl Handoff for flume::Sender<Routed> {
    async fn hand(&self, _vehicle: Option<&VehicleId>, routed: Routed) -> bool {
        self.send_async(routed).await.is_ok()
    }
}

/// Turns one delivery into a routed item. Pure apart from the registry lookup.
pub fn classify(
    topic: &str,
    payload: &[u8],
    config: &DecodeConfig,
    now_ms: i64,
    tenant_of: impl Fn(&VehicleId) -> Option<TenantId>,
) -> Decoded {
    let reject = |reason: RejectReason, detail: String, vehicle: Option<VehicleId>, tenant: Option<TenantId>| {
        let (payload_kept, payload_size, payload_sha256) = Rejection::kept_payload(payload);
        Decoded::Rejected(Rejection {
            id: Rejection::id_for(topic, payload, None),
            tenant,
            vehicle_id: vehicle,
            received_at_ms: now_ms,
            reason,
            detail,
            topic: topic.to_owned(),
            point_index: None,
            payload: payload_kept,
            payload_size,
            payload_sha256,
        })
    };
    match decode(topic, payload, config, Some(now_ms)) {
        Err(rejection) => {
            let tenant = rejection.vehicle_id.as_ref().and_then(&tenant_of);
            reject(rejection.reason, rejection.detail, rejection.vehicle_id, tenant)
        }
        Ok(message) => {
            let vehicle = match &message {
                Message::Telemetry(t) => t.vehicle_id.clone(),
                Message::Marker { vehicle_id, .. } => vehicle_id.clone(),
            };
            let Some(tenant) = tenant_of(&vehicle) else {
                let detail = format!("vehicle {vehicle} is not registered to any tenant");
                return reject(RejectReason::UnknownVehicle, detail, Some(vehicle), None);
            };
            match message {
                Message::Telemetry(telemetry) => {
                    let rejections = telemetry
                        .rejected
                        .iter()
                        .map(|dropped| {
                            let index = u32::try_from(dropped.index).unwrap_or(u32::MAX);
                            let point = serde_json::to_vec(&dropped.point).unwrap_or_default();
                            let (payload_kept, payload_size, payload_sha256) = Rejection::kept_payload(&point);
                            Rejection {
                                id: Rejection::id_for(topic, payload, Some(index)),
                                tenant: Some(tenant.clone()),
                                vehicle_id: Some(vehicle.clone()),
                                received_at_ms: now_ms,
                                reason: dropped.reason,
                                detail: dropped.detail.clone(),
                                topic: topic.to_owned(),
                                point_index: Some(index),
                                payload: payload_kept,
                                payload_size,
                                payload_sha256,
                            }
                        })
                        .collect();
                    Decoded::Telemetry { tenant, telemetry, rejections }
                }
                Message::Marker { vehicle_id, marker, .. } => Decoded::Marker { tenant, vehicle_id, marker },
            }
        }
    }
}

/// The rejection of a message `publisher` was not authorized to publish to `topic`: stored as
/// the publisher's (its tenant sees it), not as the vehicle the topic names.
pub fn refused(topic: &str, payload: &[u8], publisher: &VehicleId, tenant: Option<TenantId>, now_ms: i64) -> Decoded {
    let (payload_kept, payload_size, payload_sha256) = Rejection::kept_payload(payload);
    Decoded::Rejected(Rejection {
        // Not the id the same bytes would have as the topic's vehicle's own rejection.
        id: Rejection::id_for(&format!("{publisher} as {topic}"), payload, None),
        tenant,
        vehicle_id: Some(publisher.clone()),
        received_at_ms: now_ms,
        reason: RejectReason::NotAuthorized,
        detail: format!("vehicle {publisher} may publish only to vehicles/{publisher}/…, not to {topic}"),
        topic: topic.to_owned(),
        point_index: None,
        payload: payload_kept,
        payload_size,
        payload_sha256,
    })
}

/// Counters of the intake.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IntakeCounters {
    /// Messages decoded into work.
    pub messages: u64,
    /// Points kept by the decoder.
    pub points: u64,
    /// Rejections by reason code.
    pub rejections: Vec<(RejectReason, u64)>,
}

/// Registry lookups of never-seen vehicles running at once; more wait their turn.
pub const MAX_LOOKUPS: usize = 32;
/// Deliveries held while their vehicle's tenant is looked up; at this many the intake reads no
/// more deliveries until lookups answer (the broker's in-flight window usually binds first).
pub const MAX_PARKED: usize = 10_000;

/// Runs the intake: deliveries in, routed items out to `handoff`, until the deliveries end or
/// `shutdown` turns true. Returning drops `handoff` (the worker queues' senders), so the workers
/// finish what is queued and stop.
///
/// A vehicle the intake knows nothing usable about is looked up beside the loop: its messages
/// wait (in order) for the answer while every other vehicle's go on, so a fleet coming online
/// after a restart is not looked up one vehicle after another. When the deliveries end, the
/// messages still waiting for an answer are routed once it comes; on `shutdown` they are left
/// unacknowledged, for the broker to deliver again.
pub async fn run_intake<R: Registry + Clone + Send + Sync + 'static>(
    registry: R,
    config: DecodeConfig,
    deliveries: flume::Receiver<Delivery>,
    handoff: impl Handoff,
    mut shutdown: watch::Receiver<bool>,
    counters: watch::Sender<IntakeCounters>,
) {
    let tenants = Arc::new(Mutex::new(Tenants::default()));
    let mut router = Router { config, handoff, counters, rejected: HashMap::new(), totals: IntakeCounters::default() };
    let (answer_tx, answers) = flume::unbounded::<(VehicleId, Option<TenantId>)>();
    let mut lookups = Lookups::default();
    let (mut source_open, mut watch_shutdown) = (true, true);
    loop {
        if !source_open && lookups.parked == 0 {
            break;
        }
        let event = tokio::select! {
            biased;
            changed = shutdown.changed(), if watch_shutdown => match changed {
                Ok(()) if *shutdown.borrow() => break,
                Ok(()) => continue,
                // No one can ask for a stop any more: run until the deliveries end.
                Err(_) => { watch_shutdown = false; continue }
            },
            answer = answers.recv_async() => match answer { Ok(answer) => Event::Answer(answer), Err(_) => break },
            delivery = deliveries.recv_async(), if source_open && lookups.parked < MAX_PARKED => match delivery {
                Ok(delivery) => Event::Delivery(delivery),
                Err(_) => { source_open = false; continue }
            },
        };
        match event {
            Event::Answer((vehicle, tenant)) => {
                lock(&tenants).refreshed(vehicle.clone(), tenant, Instant::now());
                for delivery in lookups.answered(&vehicle) {
                    if !router.route(delivery, Some(&vehicle), &tenants).await {
                        return;
                    }
                }
                if let Some(next) = lookups.next_to_fetch() {
                    tokio::spawn(fetch(registry.clone(), next, answer_tx.clone(), shutdown.clone()));
                }
            }
            Event::Delivery(delivery) => {
                let vehicle = delivery.vehicle();
                if let Some(vehicle) = &vehicle {
                    if lookups.is_waiting(vehicle) {
                        lookups.park(vehicle.clone(), delivery);
                        continue;
                    }
                    let lookup = lock(&tenants).lookup(vehicle, Instant::now());
                    match lookup {
                        Lookup::Use(_) => {}
                        Lookup::UseAndRefresh(_) => {
                            tokio::spawn(refresh(registry.clone(), Arc::clone(&tenants), vehicle.clone()));
                        }
                        Lookup::Fetch => {
                            if lookups.park(vehicle.clone(), delivery) {
                                tokio::spawn(fetch(
                                    registry.clone(),
                                    vehicle.clone(),
                                    answer_tx.clone(),
                                    shutdown.clone(),
                                ));
                            }
                            continue;
                        }
                    }
                }
                if !router.route(delivery, vehicle.as_ref(), &tenants).await {
                    return;
                }
            }
        }
    }
}

/// What woke the intake.
enum Event {
    Delivery(Delivery),
    /// A never-seen (or aged unknown) vehicle's registry answer.
    Answer((VehicleId, Option<TenantId>)),
}

/// Vehicles being looked up, and their deliveries held until the answer.
#[derive(Default)]
struct Lookups {
    waiting: HashMap<VehicleId, VecDeque<Delivery>>,
    /// Waiting vehicles whose lookup has not started ([`MAX_LOOKUPS`] run at once; every
    /// other waiting vehicle's lookup is running).
    queued: VecDeque<VehicleId>,
    parked: usize,
}

impl Lookups {
    fn is_waiting(&self, vehicle: &VehicleId) -> bool {
        self.waiting.contains_key(vehicle)
    }

    fn running(&self) -> usize {
        self.waiting.len() - self.queued.len()
    }

    /// Holds `delivery` until `vehicle`'s answer. Returns whether the caller starts the lookup
    /// now (the vehicle's first held delivery, and a lookup slot free).
    fn park(&mut self, vehicle: VehicleId, delivery: Delivery) -> bool {
        self.parked += 1;
        if let Some(held) = self.waiting.get_mut(&vehicle) {
            held.push_back(delivery);
            return false;
        }
        let start = self.running() < MAX_LOOKUPS;
        if !start {
            self.queued.push_back(vehicle.clone());
        }
        self.waiting.insert(vehicle, VecDeque::from([delivery]));
        start
    }

    /// The answer for `vehicle` came: its held deliveries, in receive order.
    fn answered(&mut self, vehicle: &VehicleId) -> VecDeque<Delivery> {
        let held = self.waiting.remove(vehicle).unwrap_or_default();
        self.parked -= held.len();
        held
    }

    /// The next queued vehicle to look up, taking the slot an answer freed.
    fn next_to_fetch(&mut self) -> Option<VehicleId> {
        if self.running() < MAX_LOOKUPS { self.queued.pop_front() } else { None }
    }
}

/// Classifies deliveries and hands them on, counting what it saw.
struct Router<H> {
    config: DecodeConfig,
    handoff: H,
    counters: watch::Sender<IntakeCounters>,
    rejected: HashMap<RejectReason, u64>,
    totals: IntakeCounters,
}

impl<H: Handoff> Router<H> {
    /// Routes one delivery (`vehicle`: as its topic names it) with the tenants known now.
    /// Returns false when the workers are gone.
    async fn route(&mut self, delivery: Delivery, vehicle: Option<&VehicleId>, tenants: &Mutex<Tenants>) -> bool {
        let topic = delivery.publish.topic.clone();
        let item = {
            let known = lock(tenants);
            match delivery.refused_publisher() {
                Some(publisher) => {
                    refused(&topic, &delivery.publish.payload, publisher, known.tenant(publisher), now_ms())
                }
                None => classify(&topic, &delivery.publish.payload, &self.config, now_ms(), |v| known.tenant(v)),
            }
        };
        self.totals.messages += 1;
        match &item {
            Decoded::Telemetry { telemetry, rejections, .. } => {
                let points = telemetry.points.len() + rejections.iter().filter(|r| r.point_index.is_some()).count();
                self.totals.points += points as u64;
                crate::metrics::message_received(points);
                for r in rejections {
                    *self.rejected.entry(r.reason).or_default() += 1;
                    crate::metrics::rejected(r.reason);
                }
            }
            Decoded::Rejected(r) => {
                crate::metrics::message_received(0);
                *self.rejected.entry(r.reason).or_default() += 1;
                crate::metrics::rejected(r.reason);
            }
            Decoded::Marker { .. } => crate::metrics::message_received(0),
        }
        let received_at = delivery.received_at();
        if !self.handoff.hand(vehicle, Routed { item, delivery }).await {
            return false;
        }
        crate::metrics::handed_off(received_at.elapsed().as_secs_f64());
        let mut by_reason: Vec<(RejectReason, u64)> = self.rejected.iter().map(|(r, n)| (*r, *n)).collect();
        by_reason.sort();
        self.totals.rejections = by_reason;
        self.counters.send_replace(self.totals.clone());
        true
    }
}

/// Looks a vehicle up for the intake, retrying until it answers or `shutdown`.
async fn fetch<R: Registry>(
    registry: R,
    vehicle: VehicleId,
    answers: flume::Sender<(VehicleId, Option<TenantId>)>,
    mut shutdown: watch::Receiver<bool>,
) {
    let started = Instant::now();
    loop {
        match registry.vehicle_tenant(&vehicle).await {
            Ok(tenant) => {
                crate::metrics::looked_up(started.elapsed().as_secs_f64());
                let _ = answers.send((vehicle, tenant));
                return;
            }
            Err(error) => {
                tracing::warn!(%error, %vehicle, "registry lookup failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    changed = shutdown.changed() => if changed.is_err() || *shutdown.borrow() { return },
                }
            }
        }
    }
}

/// The remembered tenants (every change of them is one map update: a panic elsewhere cannot
/// leave them half done).
fn lock(tenants: &Mutex<Tenants>) -> MutexGuard<'_, Tenants> {
    tenants.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Refreshes a known vehicle's tenant beside the intake loop.
async fn refresh<R: Registry>(registry: R, tenants: Arc<Mutex<Tenants>>, vehicle: VehicleId) {
    let answer = registry.vehicle_tenant(&vehicle).await;
    let mut tenants = lock(&tenants);
    match answer {
        Ok(tenant) => tenants.refreshed(vehicle, tenant, Instant::now()),
        Err(error) => {
            tracing::debug!(%error, %vehicle, "registry refresh failed; the known tenant stays");
            tenants.refresh_failed(&vehicle);
        }
    }
}

#[cfg(test)]
mod tests {
    use rumqttc::{Publish, QoS};
    use tokio::sync::Notify;
    use tripline_store::StoreResult;

    use super::*;
    use crate::ack::AckTracker;

    /// A registry where every vehicle but `slow` belongs to `acme` at once; `slow`'s answer
    /// waits for `gate`.
    #[derive(Clone)]
    struct GatedRegistry {
        gate: Arc<Notify>,
    }

    impl Registry for GatedRegistry {
        async fn create_tenant(&self, _: &TenantId, _: &str) -> StoreResult<()> {
            Ok(())
        }
        async fn tenant_for_key(&self, _: &str) -> StoreResult<Option<TenantId>> {
            Ok(None)
        }
        async fn replace_api_key(&self, _: &TenantId, _: Option<&str>) -> StoreResult<Option<String>> {
            Ok(None)
        }
        async fn tenant_exists(&self, _: &TenantId) -> StoreResult<bool> {
            Ok(true)
        }
        async fn add_vehicles(&self, _: &TenantId, _: &[VehicleId]) -> StoreResult<()> {
            Ok(())
        }
        async fn set_vehicle_secrets(&self, _: &[(VehicleId, Option<String>)]) -> StoreResult<()> {
            Ok(())
        }
        async fn vehicle_secret(&self, _: &VehicleId) -> StoreResult<Option<String>> {
            Ok(None)
        }
        async fn all_vehicle_secrets(&self) -> StoreResult<Vec<(VehicleId, String)>> {
            Ok(Vec::new())
        }
        async fn vehicle_tenant(&self, vehicle: &VehicleId) -> StoreResult<Option<TenantId>> {
            if vehicle.as_str() == "slow" {
                self.gate.notified().await;
            }
            Ok(Some(TenantId::parse("acme").unwrap()))
        }
    }

    struct Harness {
        deliveries: flume::Sender<Delivery>,
        routed: flume::Receiver<Routed>,
        shutdown: watch::Sender<bool>,
        gate: Arc<Notify>,
        tracker: AckTracker<()>,
        done: flume::Sender<crate::ack::Ticket>,
        task: tokio::task::JoinHandle<()>,
        /// The time of the first point: now, since the intake judges points by the clock.
        start_ms: i64,
    }

    impl Harness {
        fn start() -> Harness {
            let gate = Arc::new(Notify::new());
            let (deliveries, deliveries_rx) = flume::bounded(64);
            let (worker, routed) = flume::unbounded();
            let (shutdown, shutdown_rx) = watch::channel(false);
            let (counters, _) = watch::channel(IntakeCounters::default());
            let registry = GatedRegistry { gate: gate.clone() };
            let task = tokio::spawn(run_intake(
                registry,
                DecodeConfig::default(),
                deliveries_rx,
                worker,
                shutdown_rx,
                counters,
            ));
            let (done, _) = flume::unbounded();
            let start_ms = tripline_model::time::now_ms() - 60_000;
            Harness { deliveries, routed, shutdown, gate, tracker: AckTracker::default(), done, task, start_ms }
        }

        async fn send(&mut self, vehicle: &str, n: i64) {
            let payload =
                format!(r#"{{"points": [{{"ts_ms": {}, "lat": 51.6, "lon": 7.8}}]}}"#, self.start_ms + n * 1000);
            let publish = Publish::new(format!("vehicles/{vehicle}/telemetry"), QoS::AtLeastOnce, payload);
            let ticket = self.tracker.register(());
            self.deliveries.send_async(Delivery::new(publish, ticket, self.done.clone())).await.unwrap();
        }

        /// The next routed message as (vehicle, point time offset in seconds).
        async fn next(&self) -> (String, i64) {
            let routed = tokio::time::timeout(Duration::from_secs(5), self.routed.recv_async()).await.unwrap().unwrap();
            let Decoded::Telemetry { telemetry, .. } = routed.item else { panic!("telemetry expected") };
            (telemetry.vehicle_id.to_string(), (telemetry.points[0].ts_ms - self.start_ms) / 1000)
        }
    }

    #[tokio::test]
    async fn a_vehicle_being_looked_up_holds_up_only_its_own_messages() {
        let mut h = Harness::start();
        h.send("slow", 1).await;
        h.send("fast", 1).await;
        h.send("slow", 2).await;
        h.send("fast", 2).await;
        assert_eq!(h.next().await, ("fast".to_owned(), 1));
        assert_eq!(h.next().await, ("fast".to_owned(), 2));
        assert!(h.routed.is_empty(), "slow's messages wait for its answer");
        h.gate.notify_one();
        assert_eq!(h.next().await, ("slow".to_owned(), 1));
        assert_eq!(h.next().await, ("slow".to_owned(), 2), "in receive order");
        h.send("slow", 3).await;
        assert_eq!(h.next().await, ("slow".to_owned(), 3), "the answer is remembered");
        h.shutdown.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), h.task).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn messages_waiting_for_an_answer_are_routed_after_the_deliveries_end() {
        let mut h = Harness::start();
        h.send("slow", 1).await;
        h.send("fast", 1).await;
        assert_eq!(h.next().await, ("fast".to_owned(), 1));
        // The deliveries end: the intake's only sender goes.
        drop(std::mem::replace(&mut h.deliveries, flume::bounded(1).0));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!h.task.is_finished(), "the intake waits for the held message");
        h.gate.notify_one();
        assert_eq!(h.next().await, ("slow".to_owned(), 1));
        tokio::time::timeout(Duration::from_secs(5), h.task).await.unwrap().unwrap();
    }

    const NOW: i64 = 1_795_600_800_000;

    fn acme(v: &VehicleId) -> Option<TenantId> {
        (v.as_str() != "stranger").then(|| TenantId::parse("acme").unwrap())
    }

    #[test]
    fn unknown_vehicles_are_rejected_with_their_reason() {
        let payload = format!(r#"{{"points": [{{"ts_ms": {NOW}, "lat": 1, "lon": 1}}]}}"#);
        let item = classify("vehicles/stranger/telemetry", payload.as_bytes(), &DecodeConfig::default(), NOW, acme);
        let Decoded::Rejected(r) = item else { panic!("rejection expected") };
        assert_eq!(
            (r.reason, r.tenant, r.vehicle_id.map(|v| v.to_string())),
            (RejectReason::UnknownVehicle, None, Some("stranger".to_owned()))
        );
        assert_eq!(r.payload, payload.as_bytes());
    }

    #[test]
    fn dropped_points_become_rejections_of_the_tenant_with_stable_ids() {
        let payload = format!(
            r#"{{"points": [{{"ts_ms": {NOW}, "lat": 1, "lon": 1}}, {{"ts_ms": {NOW}, "lat": 0, "lon": 0}}]}}"#
        );
        let classify_once =
            || classify("vehicles/car-1/telemetry", payload.as_bytes(), &DecodeConfig::default(), NOW, acme);
        let Decoded::Telemetry { tenant, telemetry, rejections } = classify_once() else {
            panic!("telemetry expected")
        };
        assert_eq!(tenant.as_str(), "acme");
        assert_eq!(telemetry.points.len(), 1);
        assert_eq!(rejections.len(), 1);
        assert_eq!((rejections[0].reason, rejections[0].point_index), (RejectReason::NullIsland, Some(1)));
        let Decoded::Telemetry { rejections: again, .. } = classify_once() else { panic!() };
        assert_eq!(again[0].id, rejections[0].id, "a redelivery maps to the same rejection");
    }

    #[test]
    fn malformed_messages_of_known_vehicles_belong_to_their_tenant() {
        let item = classify("vehicles/car-1/telemetry", b"{oops", &DecodeConfig::default(), NOW, acme);
        let Decoded::Rejected(r) = item else { panic!("rejection expected") };
        assert_eq!((r.reason, r.tenant.map(|t| t.to_string())), (RejectReason::MalformedJson, Some("acme".to_owned())));
    }
}
