//! `tripline run --demo`: a demo tenant with an API key (kept in `data_dir/demo-key`, so a
//! restart prints the same one), its vehicles registered, and the bundled fixture trips replayed
//! into the running process once, time-rebased so they are recent.

use std::path::Path;

use anyhow::Context;
use tripline_model::tripfile::{TripFileFormat, parse_trip_file};
use tripline_model::{TenantId, VehicleId};
use tripline_store::{AnyStore, Registry, StoreError};

use crate::Failure;
use crate::replay::{Plan, ReplayOptions};

/// The demo tenant's name.
pub(crate) const TENANT: &str = "demo";
/// The vehicle of the bundled GPX trip.
const GPX_VEHICLE: &str = "fx-night";
/// The bundled fixture trips (the same files the tests use).
const FIXTURES: [(&str, &str); 3] = [
    ("harsh-events.csv", include_str!("../fixtures/trips/harsh-events.csv")),
    ("no-trip-ids.jsonl", include_str!("../fixtures/trips/no-trip-ids.jsonl")),
    ("night-drive.gpx", include_str!("../fixtures/trips/night-drive.gpx")),
];

/// The demo's key, and the fixture trips to replay when the tenant was just created.
#[derive(Debug)]
pub(crate) struct Demo {
    pub(crate) key: String,
    /// `None` when an earlier demo run of this data directory replayed them.
    pub(crate) replay: Option<Plan>,
    /// The demo vehicles' secrets (issued for the replay).
    pub(crate) secrets: crate::replay::Secrets,
}

fn fixture_records() -> Result<Vec<tripline_model::tripfile::FileRecord>, Failure> {
    let gpx_vehicle = VehicleId::parse(GPX_VEHICLE).map_err(|e| Failure::Runtime(e.into()))?;
    let mut records = Vec::new();
    for (source, (name, text)) in FIXTURES.iter().enumerate() {
        let format = TripFileFormat::from_path(Path::new(name))
            .ok_or_else(|| Failure::Runtime(anyhow::anyhow!("fixture {name}: unknown type")))?;
        let parsed = parse_trip_file(format, text, Some(&gpx_vehicle)).with_context(|| format!("fixture {name}"))?;
        records.extend(parsed.records.into_iter().map(|mut r| {
            r.source = source;
            r
        }));
    }
    Ok(records)
}

/// Creates (or finds) the demo tenant, its key and its vehicles.
pub(crate) async fn prepare(data_dir: &Path, store: &AnyStore) -> Result<Demo, Failure> {
    let tenant = TenantId::parse(TENANT).map_err(|e| Failure::Runtime(e.into()))?;
    let key_file = data_dir.join("demo-key");
    let known = std::fs::read_to_string(&key_file).ok().map(|k| k.trim().to_owned());
    let (key, fresh) = match known {
        Some(key)
            if store.tenant_for_key(&tripline_query_api::api_key_hash(&key)).await.context("demo tenant")?.as_ref()
                == Some(&tenant) =>
        {
            (key, false)
        }
        _ => {
            let key = crate::fleet::new_api_key()?;
            store.create_tenant(&tenant, &tripline_query_api::api_key_hash(&key)).await.map_err(|e| match e {
                StoreError::TenantExists { .. } => Failure::Usage(format!(
                    "a tenant named {TENANT:?} exists but its key is not in {}: use another data_dir for the demo",
                    key_file.display()
                )),
                other => anyhow::Error::new(other).context("demo tenant").into(),
            })?;
            write_private(&key_file, &key)?;
            (key, true)
        }
    };
    let records = fixture_records()?;
    let mut vehicles: Vec<VehicleId> = records.iter().map(|r| r.vehicle_id.clone()).collect();
    vehicles.sort();
    vehicles.dedup();
    store.add_vehicles(&tenant, &vehicles).await.context("demo tenant")?;
    let mut secrets = crate::replay::Secrets::new();
    let replay = if fresh {
        // The demo's vehicles get secrets of their own, used by its replay only.
        let issued = tokio::task::block_in_place(|| crate::fleet::new_secrets(&vehicles))?;
        let hashes: Vec<_> = issued.iter().map(|(v, _, hash)| (v.clone(), Some(hash.clone()))).collect();
        store.set_vehicle_secrets(&hashes).await.context("demo tenant")?;
        secrets = issued.into_iter().map(|(v, secret, _)| (v.as_str().to_owned(), secret)).collect();
        let options = ReplayOptions { rebase_time: true, ..ReplayOptions::default() };
        let plan = crate::replay::plan(records, &options, tripline_model::time::now_ms())
            .map_err(|e| anyhow::anyhow!("the demo's trips: {e}"))?;
        Some(plan)
    } else {
        None
    };
    Ok(Demo { key, replay, secrets })
}

/// Prints the key and requests to try; on the first demo run of the data directory, replays the
/// fixture trips to the broker at `host:port` once ingest is ready.
pub(crate) fn start(demo: Demo, http: std::net::SocketAddr, broker: (String, u16), mut ready: IngestStatus) {
    let Demo { key, replay, secrets } = demo;
    announce(&key, http);
    let Some(plan) = replay else {
        eprintln!("tripline: demo: fixture trips were replayed on the first demo run of this data directory");
        return;
    };
    tokio::spawn(async move {
        if ready.wait_for(|s| s.ready).await.is_err() {
            return;
        }
        let (host, port) = broker;
        let target = crate::replay::Target { host, port, tls: None };
        match crate::replay::publish(&target, plan, None, &secrets).await {
            Ok(report) => eprintln!(
                "tripline: demo: {} fixture trip(s) replayed ({} points, {} messages acknowledged)",
                report.trips, report.points, report.acknowledged
            ),
            Err(Failure::Runtime(error)) => tracing::error!(error = %error, "demo replay failed"),
            Err(Failure::Usage(error)) => tracing::error!(%error, "demo replay failed"),
        }
    });
}

/// Ingest's status, to wait for it to be ready.
type IngestStatus = tokio::sync::watch::Receiver<tripline_ingest::source::SourceCounters>;

fn write_private(path: &Path, text: &str) -> Result<(), Failure> {
    crate::config::write_private(path, format!("{text}\n").as_bytes())
        .with_context(|| format!("writing {}", path.display()))
        .map_err(Failure::from)
}

/// What the demo prints: the key and a request to paste.
fn announce(key: &str, http: std::net::SocketAddr) {
    #[allow(clippy::print_stdout)] // the demo's instructions are the command's output
    {
        println!();
        println!("tripline demo: open the trip explorer at http://{http}/ and enter the API key");
        println!("tripline demo: tenant {TENANT:?}, API key (also in data_dir/demo-key):");
        println!("  {key}");
        println!("Search its trips, riskiest first:");
        println!("  curl -H 'Authorization: Bearer {key}' 'http://{http}/v1/trips?sort=score'");
        println!("Stats per event kind:");
        println!("  curl -H 'Authorization: Bearer {key}' 'http://{http}/v1/stats?group_by=event_kind'");
        println!();
    }
}
