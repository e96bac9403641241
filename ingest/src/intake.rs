//! From a delivery to a routed item: decode and validate, find the vehicle's tenant, build the
//! rejection records, and route by vehicle to a worker queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tripline_model::time::now_ms;

use tokio::sync::watch;
use tripline_model::{DecodeConfig, Message, RejectReason, Telemetry, TenantId, TripMarker, VehicleId, decode};
use tripline_store::{Registry, Rejection};

use crate::route::worker_for;
use crate::source::Delivery;
use crate::tenants::{Lookup, Tenants};

/// A decoded message, ready for the enrichment workers.
#[derive(Debug)]
pub enum Decoded {
    /// Telemetry of a registered vehicle, and the rejections of the points the decoder dropped.
    Telemetry {
        /// The vehicle's tenant.
        tenant: TenantId,
        /// The message.
        telemetry: Telemetry,
        /// One record per dropped point.
        rejections: Vec<Rejection>,
    },
    /// A trip marker of a registered vehicle.
    Marker {
        /// The vehicle's tenant.
        tenant: TenantId,
        /// The vehicle.
        vehicle_id: VehicleId,
        /// The marker.
        marker: TripMarker,
    },
    /// A message that cannot be used.
    Rejected(Rejection),
}

/// A decoded message and the delivery to complete once its results are durable.
#[derive(Debug)]
pub struct Routed {
    /// What to do.
    pub item: Decoded,
    /// Complete after the item's writes are durable.
    pub delivery: Delivery,
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
        Decoded::Rejected(Rejection {
            id: Rejection::id_for(topic, payload, None),
            tenant,
            vehicle_id: vehicle,
            received_at_ms: now_ms,
            reason,
            detail,
            topic: topic.to_owned(),
            point_index: None,
            payload: payload.to_vec(),
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
                            Rejection {
                                id: Rejection::id_for(topic, payload, Some(index)),
                                tenant: Some(tenant.clone()),
                                vehicle_id: Some(vehicle.clone()),
                                received_at_ms: now_ms,
                                reason: dropped.reason,
                                detail: dropped.detail.clone(),
                                topic: topic.to_owned(),
                                point_index: Some(index),
                                payload: serde_json::to_vec(&dropped.point).unwrap_or_default(),
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

/// Runs the intake: deliveries in, routed items (mapped by `into_work`) out to
/// `workers[worker_for(vehicle)]`, until the deliveries end or `shutdown` turns true. Returning
/// drops the worker queues' senders, so the workers finish what is queued and stop.
pub async fn run_intake<R: Registry + Clone + Send + Sync + 'static, W>(
    registry: R,
    config: DecodeConfig,
    deliveries: flume::Receiver<Delivery>,
    workers: Vec<flume::Sender<W>>,
    into_work: impl Fn(Routed) -> W,
    mut shutdown: watch::Receiver<bool>,
    counters: watch::Sender<IntakeCounters>,
) {
    let tenants = Arc::new(Mutex::new(Tenants::default()));
    let mut rejected: HashMap<RejectReason, u64> = HashMap::new();
    let mut totals = IntakeCounters::default();
    loop {
        let delivery = tokio::select! {
            biased;
            _ = shutdown.changed() => if *shutdown.borrow() { break } else { continue },
            delivery = deliveries.recv_async() => match delivery { Ok(d) => d, Err(_) => break },
        };
        let topic = delivery.publish.topic.clone();
        // Look the vehicle up before decoding (the lookup is async, the decoder is not).
        let topic_vehicle = tripline_model::Topic::parse(&topic).ok().map(|t| t.vehicle_id);
        if let Some(vehicle) = &topic_vehicle {
            let lookup = lock(&tenants).lookup(vehicle, Instant::now());
            match lookup {
                Lookup::Use(_) => {}
                Lookup::UseAndRefresh(_) => {
                    tokio::spawn(refresh(registry.clone(), Arc::clone(&tenants), vehicle.clone()));
                }
                Lookup::Fetch => {
                    let tenant = loop {
                        match registry.vehicle_tenant(vehicle).await {
                            Ok(tenant) => break tenant,
                            Err(error) => {
                                tracing::warn!(%error, %vehicle, "registry lookup failed; retrying");
                                tokio::time::sleep(Duration::from_millis(500)).await;
                            }
                        }
                    };
                    lock(&tenants).refreshed(vehicle.clone(), tenant, Instant::now());
                }
            }
        }
        let item = {
            let known = lock(&tenants);
            classify(&topic, &delivery.publish.payload, &config, now_ms(), |v| known.tenant(v))
        };
        totals.messages += 1;
        match &item {
            Decoded::Telemetry { telemetry, rejections, .. } => {
                let points = telemetry.points.len() + rejections.iter().filter(|r| r.point_index.is_some()).count();
                totals.points += points as u64;
                crate::metrics::message_received(points);
                for r in rejections {
                    *rejected.entry(r.reason).or_default() += 1;
                    crate::metrics::rejected(r.reason);
                }
            }
            Decoded::Rejected(r) => {
                crate::metrics::message_received(0);
                *rejected.entry(r.reason).or_default() += 1;
                crate::metrics::rejected(r.reason);
            }
            Decoded::Marker { .. } => crate::metrics::message_received(0),
        }
        let index = topic_vehicle.as_ref().map_or(0, |v| worker_for(v, workers.len()));
        let Some(queue) = workers.get(index) else { break };
        if queue.send_async(into_work(Routed { item, delivery })).await.is_err() {
            break;
        }
        let mut by_reason: Vec<(RejectReason, u64)> = rejected.iter().map(|(r, n)| (*r, *n)).collect();
        by_reason.sort();
        totals.rejections = by_reason;
        counters.send_replace(totals.clone());
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
    use super::*;

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
