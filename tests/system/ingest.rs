//! `tripline run --roles ingest` as a separate process against Mosquitto and Cassandra: every
//! point stored exactly once, bad input rejected and kept, a kill -9 loses nothing acknowledged,
//! SIGTERM stops gracefully.

use std::time::Duration;

use tripline_model::{TenantId, TripId, encode_telemetry};
use tripline_store::{RejectionStore, TripStore};

use tripline_testkit::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_stores_every_point_once_survives_kill_9_and_stops_gracefully() {
    let Some(setup) = setup().await else { return };
    let t0 = t0();
    let child = start(&setup.dir);

    // Half the stream, plus bad input: an unknown vehicle, malformed JSON, a null-island point.
    let mut first = messages(&setup.prefix, t0, 0..MESSAGES / 2);
    first.push(("vehicles/stranger-42/telemetry".to_owned(), encode_telemetry(None, &message_points(t0, 0, 0))));
    first.push((format!("vehicles/{}-0/telemetry", setup.prefix), b"{\"points\": [".to_vec()));
    let mut island = message_points(t0, 1, 99);
    island[0].lat = 0.0;
    island[0].lon = 0.0;
    first.push((
        format!("vehicles/{}-1/telemetry", setup.prefix),
        encode_telemetry(Some(&TripId::parse("trip-x").unwrap()), &island),
    ));
    publish(&setup.mqtt_url, first.clone()).await;
    // trip-x adds its 9 good points to vehicle 1's time line.
    let half = VEHICLES * (MESSAGES / 2) * POINTS + (POINTS - 1);
    assert_eq!(wait_for_points(&setup, t0, half).await, half);

    // kill -9 mid-stream: publish the rest, and kill while it is being ingested.
    let rest = messages(&setup.prefix, t0, MESSAGES / 2..MESSAGES);
    let url = setup.mqtt_url.clone();
    let publisher = tokio::spawn(async move { publish(&url, rest).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(child); // kill -9
    publisher.await.unwrap();
    // The same messages published twice: nothing changes.
    publish(&setup.mqtt_url, first).await;

    let mut child = start(&setup.dir);
    let all = VEHICLES * MESSAGES * POINTS + (POINTS - 1);
    assert_eq!(wait_for_points(&setup, t0, all).await, all, "everything the broker held arrives, once");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stored_points(&setup, t0).await, all, "no duplicates");
    let tenant = TenantId::parse("acme").unwrap();
    for v in [0, VEHICLES - 1] {
        let trip = setup.store.trip(&tenant, &TripId::parse(&format!("trip-{v}")).unwrap()).await.unwrap().unwrap();
        assert_eq!(trip.summary.point_count as usize, MESSAGES * POINTS);
    }
    let x = setup.store.trip(&tenant, &TripId::parse("trip-x").unwrap()).await.unwrap().unwrap();
    assert_eq!(x.summary.rejected_point_count, 1);
    let rejections = setup.store.rejections(Some(&tenant), None, 100).await.unwrap().items;
    let reasons: Vec<&str> = rejections.iter().map(|r| r.reason.as_str()).collect();
    assert!(reasons.contains(&"malformed_json") && reasons.contains(&"null_island"), "{reasons:?}");
    assert_eq!(reasons.len(), 2, "a redelivered bad message is stored once: {reasons:?}");
    let unowned = setup.store.rejections(None, None, 100).await.unwrap().items;
    assert!(unowned.iter().any(|r| r.reason.as_str() == "unknown_vehicle"));

    sigterm(&mut child);
    assert!(child.stderr_contains("stopped;"), "{:?}", child.stderr.lock().unwrap());
}
