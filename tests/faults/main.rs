//! Faults of the real services while tripline runs. A binary of its own: it stops the shared
//! Cassandra, which must not happen while other tests use it (cargo runs test binaries one after
//! another).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::process::Command;
use std::time::{Duration, Instant};

use tripline_testkit::harness::*;

/// The services script, or `None` after a loud notice (a failure under `CI=true`).
fn services_script() -> Option<String> {
    let script = std::env::var("TRIPLINE_SERVICES_SCRIPT").ok().filter(|s| !s.is_empty());
    if script.is_none() {
        let message = "TRIPLINE_SERVICES_SCRIPT is not set: run through scripts/test.sh";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
        eprintln!("\n!!! SKIPPED: {message}\n");
    }
    script
}

fn cassandra(script: &str, action: &str) {
    assert!(Command::new("bash").args([script, action, "cassandra"]).status().unwrap().success(), "{action} cassandra");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_acknowledged_while_cassandra_is_down_and_everything_lands_after() {
    let Some(script) = services_script() else { return };
    let Some(setup) = setup().await else { return };
    let t0 = t0();
    let mut child = start(&setup.dir);
    let first = messages(&setup.prefix, t0, 0..MESSAGES / 2);
    publish(&setup.mqtt_url, first).await;
    let half = VEHICLES * (MESSAGES / 2) * POINTS;
    assert_eq!(wait_for_points(&setup, t0, half).await, half);

    // Cassandra goes away for 20 s while the fleet keeps publishing.
    cassandra(&script, "stop");
    let outage = Instant::now();
    publish(&setup.mqtt_url, messages(&setup.prefix, t0, MESSAGES / 2..MESSAGES)).await;
    let mut peak_rss_mb: f64 = 0.0;
    while outage.elapsed() < Duration::from_secs(20) {
        peak_rss_mb = peak_rss_mb.max(rss_mb(child.child.id()));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // SIGTERM with the store still down: the stop has a deadline ([ingest] drain_s = 5 here, plus
    // 5 s), exits 0, and acknowledges nothing it could not write — if anything had been
    // acknowledged during the outage, this stop would lose it for good.
    let stopping = Instant::now();
    let term = Command::new("kill").args(["-TERM", &child.child.id().to_string()]).status().unwrap();
    assert!(term.success());
    let exit = loop {
        if let Some(exit) = child.child.try_wait().unwrap() {
            break exit;
        }
        assert!(stopping.elapsed() < Duration::from_secs(30), "no exit 30 s after SIGTERM with the store down");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let stop_took = stopping.elapsed();
    assert!(exit.success(), "a stop with the store down still exits 0: {exit}");
    assert!(stop_took < Duration::from_secs(10), "stopped within drain_s + 5 s: {stop_took:?}");
    drop(child);
    cassandra(&script, "start");
    let _child = start(&setup.dir);
    let all = VEHICLES * MESSAGES * POINTS;
    assert_eq!(wait_for_points(&setup, t0, all).await, all, "full catch-up, nothing lost");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(stored_points(&setup, t0).await, all, "no duplicates");
    eprintln!(
        "cassandra outage of 20 s: ingest peak RSS {peak_rss_mb:.0} MB, SIGTERM with the store down exited in \
         {stop_took:?}, caught up {:?} after the outage began",
        outage.elapsed()
    );
    assert!(peak_rss_mb < 512.0, "memory stays bounded during the outage: {peak_rss_mb} MB");
}
