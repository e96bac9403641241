//! The ingest pipeline in this process, without the binary: tripline's own MQTT endpoint on a
//! free port, the intake, the enrichment workers and an embedded store, wired as `tripline run
//! --roles ingest` wires them ([`spawn_pipeline`]). A vehicle publishes; a PUBACK means durable.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::watch;
use tripline_enrich::Enricher;
use tripline_ingest::credentials::{VehicleAuth, hash_secret};
use tripline_ingest::endpoint::{Endpoint, EndpointConfig};
use tripline_ingest::intake::{IntakeCounters, run_intake};
use tripline_ingest::source::SourceCounters;
use tripline_model::{DecodeConfig, RejectReason, TenantId, TripId, VehicleId, encode_telemetry};
use tripline_pipeline::{Pool, WorkerConfig};
use tripline_store::{EmbeddedStore, PointStore, Registry, RejectionStore, TripStore};
use tripline_testkit::fleet_message_points;

/// The secret every vehicle of a spawned pipeline has.
const SECRET: &str = "a-vehicle-secret";

/// A running in-process pipeline; stops (its tasks end with the runtime) when dropped.
struct SpawnedPipeline {
    store: EmbeddedStore,
    tenant: TenantId,
    endpoint: Endpoint,
    _store_dir: tripline_store::TempDir,
    _intake_counters: watch::Receiver<IntakeCounters>,
    _status: watch::Receiver<SourceCounters>,
}

/// Starts the pipeline over a new embedded store with `vehicles` registered to tenant `acme`, each
/// with [`SECRET`]: the endpoint listens on a free port.
async fn spawn_pipeline(vehicles: &[&str]) -> SpawnedPipeline {
    let (store, store_dir) = EmbeddedStore::for_test(Duration::from_secs(30 * 86_400)).unwrap();
    let tenant = TenantId::parse("acme").unwrap();
    store.create_tenant(&tenant, "not-a-key-hash").await.unwrap();
    let ids: Vec<VehicleId> = vehicles.iter().map(|v| VehicleId::parse(v).unwrap()).collect();
    store.add_vehicles(&tenant, &ids).await.unwrap();
    let hash = hash_secret(SECRET).unwrap();
    store.set_vehicle_secrets(&ids.iter().map(|v| (v.clone(), Some(hash.clone()))).collect::<Vec<_>>()).await.unwrap();

    let pool = Pool::start(2, &Arc::new(Enricher::for_test()), &store, &WorkerConfig::default());
    let (deliveries_tx, deliveries) = flume::bounded(256);
    // No one asks for a stop: the intake runs until its deliveries end (the endpoint drops).
    let (_, shutdown) = watch::channel(false);
    let (counters_tx, intake_counters) = watch::channel(IntakeCounters::default());
    tokio::spawn(run_intake(store.clone(), DecodeConfig::default(), deliveries, pool.queues, shutdown, counters_tx));
    let (status_tx, status) = watch::channel(SourceCounters::default());
    let config = EndpointConfig { listen: "127.0.0.1:0".parse().unwrap(), ..EndpointConfig::default() };
    let auth = VehicleAuth::new(store.clone()).shared();
    let endpoint = Endpoint::start(config, auth, deliveries_tx, Duration::from_secs(5), status_tx).await.unwrap();
    SpawnedPipeline {
        store,
        tenant,
        endpoint,
        _store_dir: store_dir,
        _intake_counters: intake_counters,
        _status: status,
    }
}

/// Publishes `payloads` as `vehicle` (QoS 1) and returns once every one is acknowledged.
async fn publish_acknowledged(pipeline: &SpawnedPipeline, vehicle: &str, payloads: Vec<(String, Vec<u8>)>) {
    let addr = pipeline.endpoint.local_addr();
    let mut options = MqttOptions::new(tripline_testkit::unique_name("pipeline"), addr.ip().to_string(), addr.port());
    options.set_credentials(vehicle, SECRET);
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let n = payloads.len();
    for (topic, payload) in payloads {
        client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
    }
    let acked = tokio::time::timeout(Duration::from_secs(30), async {
        let mut acked = 0;
        while acked < n {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(error) => panic!("connection ended: {error}"),
            }
        }
        acked
    })
    .await;
    assert_eq!(acked.ok(), Some(n), "every message acknowledged within 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_vehicle_was_acknowledged_is_already_durable() {
    let pipeline = spawn_pipeline(&["car-1"]).await;
    let trip = TripId::parse("trip-1").unwrap();
    let t0 = tripline_model::time::now_ms() - 3_600_000;
    let mut payloads: Vec<(String, Vec<u8>)> = (0..5)
        .map(|m| {
            ("vehicles/car-1/telemetry".to_owned(), encode_telemetry(Some(&trip), &fleet_message_points(t0, 0, m, 10)))
        })
        .collect();
    payloads.push(("vehicles/car-1/telemetry".to_owned(), b"{not json".to_vec()));
    publish_acknowledged(&pipeline, "car-1", payloads).await;

    // Read at once, without waiting: the acknowledgements came after the writes.
    let page = pipeline.store.trip_points(&pipeline.tenant, &trip, None, 1000).await.unwrap().unwrap();
    assert_eq!(page.items.len(), 50, "every acknowledged point is stored");
    let record = pipeline.store.trip(&pipeline.tenant, &trip).await.unwrap().expect("the trip is stored");
    assert_eq!(record.summary.point_count, 50);
    let rejections = pipeline.store.rejections(Some(&pipeline.tenant), None, 10).await.unwrap();
    assert_eq!(rejections.items.iter().map(|r| r.reason).collect::<Vec<_>>(), vec![RejectReason::MalformedJson]);
}
