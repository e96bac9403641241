//! The `tripline` binary as an operator runs it.

use std::path::Path;
use std::process::{Command, Output};

use tripline_model::TripSummary;
use tripline_store::ScyllaConfig;
use tripline_testkit::workspace_root;

fn tripline(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tripline"))
        .args(args)
        .current_dir(dir)
        .env_remove("TRIPLINE_LOG")
        .output()
        .expect("run the tripline binary")
}

fn summaries(output: &Output) -> Vec<TripSummary> {
    String::from_utf8(output.stdout.clone()).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

#[test]
fn summarize_prints_the_golden_summaries_of_the_fixtures() {
    let root = workspace_root();
    let output = tripline(
        &[
            "summarize",
            "fixtures/trips/harsh-events.csv",
            "fixtures/trips/no-trip-ids.jsonl",
            "fixtures/trips/night-drive.gpx",
            "--vehicle",
            "fx-night",
        ],
        &root,
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let golden = std::fs::read_to_string(root.join("fixtures/golden/summaries.jsonl")).unwrap();
    assert_eq!(String::from_utf8(output.stdout.clone()).unwrap(), golden);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("1 points dropped: null_island"), "{stderr}");
    assert!(stderr.contains("1 points dropped: implausible_jump"), "{stderr}");
    assert!(stderr.contains("1 duplicate points ignored"), "{stderr}");
}

#[test]
fn summarize_reports_bad_records_and_keeps_the_good_ones() {
    let scratch = tripline_testkit::scratch_dir("cli");
    let dir = scratch.path().to_path_buf();
    std::fs::write(
        dir.join("trip.csv"),
        "vehicle_id,ts,lat,lon,speed_mps\n\
         car-1,2026-11-25T10:00:00Z,52.50000,13.40000,10\n\
         car-1,not-a-time,52.50010,13.40000,10\n\
         car-1,2026-11-25T10:00:01Z,52.50009,13.40000,10\n\
         car 9,2026-11-25T10:00:02Z,52.50018,13.40000,10\n",
    )
    .unwrap();
    let output = tripline(&["summarize", "trip.csv"], &dir);
    assert!(output.status.success());
    let trips = summaries(&output);
    assert_eq!(trips.len(), 1);
    assert_eq!(trips[0].point_count, 2);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("trip.csv:3: skipped") && stderr.contains("trip.csv:5: skipped"), "{stderr}");
}

#[test]
fn usage_and_runtime_failures_have_their_exit_codes() {
    let root = workspace_root();
    let unknown_type = tripline(&["summarize", "Cargo.toml"], &root);
    assert_eq!(unknown_type.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown_type.stderr).contains("unknown trip file type"));
    let missing = tripline(&["summarize", "no-such-file.csv"], &root);
    assert_eq!(missing.status.code(), Some(1));
    let gpx_without_vehicle = tripline(&["summarize", "fixtures/trips/night-drive.gpx"], &root);
    assert_eq!(gpx_without_vehicle.status.code(), Some(2));
    let bad_config = tripline(&["--config", "no-such.toml", "summarize", "fixtures/trips/harsh-events.csv"], &root);
    assert_eq!(bad_config.status.code(), Some(2));
    assert_eq!(tripline(&["no-such-command"], &root).status.code(), Some(2));
}

#[test]
fn configuration_comes_from_file_then_environment() {
    let scratch = tripline_testkit::scratch_dir("cfg");
    let dir = scratch.path().to_path_buf();
    let fixture = workspace_root().join("fixtures/trips/harsh-events.csv");
    std::fs::write(dir.join("tripline.toml"), "[enrich]\ndefault_speed_limit_kmh = 200.0\n").unwrap();
    let file_only = summaries(&tripline(&["summarize", fixture.to_str().unwrap()], &dir));
    assert_eq!(file_only[0].events.speeding, 0, "limit 200 from ./tripline.toml");
    let output = Command::new(env!("CARGO_BIN_EXE_tripline"))
        .args(["summarize", fixture.to_str().unwrap()])
        .current_dir(&dir)
        .env("TRIPLINE_ENRICH__DEFAULT_SPEED_LIMIT_KMH", "100")
        .output()
        .unwrap();
    assert!(summaries(&output)[0].events.speeding >= 1, "limit 100 from the environment wins");
    std::fs::write(dir.join("tripline.toml"), "[enrich]\nno_such_key = 1\n").unwrap();
    assert_eq!(tripline(&["summarize", fixture.to_str().unwrap()], &dir).status.code(), Some(2));
}

#[test]
fn schema_apply_creates_the_keyspace_and_is_idempotent() {
    let keyspace = tripline_testkit::unique_name("cli");
    let Some(cql) = tripline_testkit::cql_config(keyspace.clone(), 0) else { return };
    let scratch = tripline_testkit::scratch_dir("schema");
    let dir = scratch.path().to_path_buf();
    let write_config = |config: &tripline_store::ScyllaConfig| {
        let section = tripline_testkit::scylla_section(config);
        std::fs::write(dir.join("tripline.toml"), format!("store = \"scylla\"\n{section}")).unwrap();
    };
    // The test Cassandra requires a password: without one, or with a wrong one, a clear refusal
    // at once (not a retry until the budget runs out).
    assert!(cql.username.is_some(), "the test Cassandra runs with PasswordAuthenticator");
    for (config, what) in [
        (ScyllaConfig { username: None, password: None, ..cql.clone() }, "no credentials"),
        (ScyllaConfig { password: Some("wrong".to_owned()), ..cql.clone() }, "a wrong password"),
    ] {
        write_config(&config);
        let started = std::time::Instant::now();
        let refused = tripline(&["schema", "apply"], &dir);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(1), "{what}: {stderr}");
        assert!(stderr.contains("refused the credentials"), "{what}: {stderr}");
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "{what}: refused at once");
    }
    // TLS (the test Cassandra offers it beside plain connections): with the authority that signed
    // the node's certificate it works; with another one, a clear refusal at once.
    if let Some(tls_dir) = tripline_testkit::Service::Tls.address().map(std::path::PathBuf::from) {
        write_config(&ScyllaConfig { tls_ca_file: Some(tls_dir.join("ca.pem")), ..cql.clone() });
        let output = tripline(&["schema", "apply"], &dir);
        assert!(output.status.success(), "over TLS: {}", String::from_utf8_lossy(&output.stderr));
        write_config(&ScyllaConfig { tls_ca_file: Some(tls_dir.join("tripline.pem")), ..cql.clone() });
        let started = std::time::Instant::now();
        let refused = tripline(&["schema", "apply"], &dir);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("TLS certificate is not trusted"), "{stderr}");
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "refused at once");
    }
    write_config(&cql);
    for _ in 0..2 {
        let output = tripline(&["schema", "apply"], &dir);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        assert!(
            String::from_utf8_lossy(&output.stderr)
                .contains(&format!("keyspace {keyspace} at schema version {}", tripline_store::SCHEMA_VERSION))
        );
    }
    write_config(&ScyllaConfig { keyspace: "not valid!".to_owned(), ..cql });
    let refused = tripline(&["schema", "apply"], &dir);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not a CQL identifier"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_and_fleets_are_registered_from_the_command_line() {
    use tripline_store::{EmbeddedConfig, EmbeddedStore, Registry};
    let scratch = tripline_testkit::scratch_dir("fleet");
    let dir = scratch.path().to_path_buf();
    let created = tripline(&["tenant", "create", "acme"], &dir);
    assert_eq!(created.status.code(), Some(0), "{}", String::from_utf8_lossy(&created.stderr));
    let key = String::from_utf8(created.stdout).unwrap();
    let key = key.trim_end_matches('\n');
    assert!(key.starts_with("tl_") && !key.contains('\n'), "the key alone on stdout: {key:?}");
    let again = tripline(&["tenant", "create", "acme"], &dir);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    assert_eq!(tripline(&["tenant", "create", "bad name"], &dir).status.code(), Some(2));
    assert_eq!(tripline(&["tenant", "create", "globex"], &dir).status.code(), Some(0));

    assert_eq!(tripline(&["fleet", "add", "--tenant", "acme", "car-1", "car-2"], &dir).status.code(), Some(0));
    let unknown = tripline(&["fleet", "add", "--tenant", "nobody", "car-3"], &dir);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown tenant"));
    let taken = tripline(&["fleet", "add", "--tenant", "globex", "car-1"], &dir);
    assert_eq!(taken.status.code(), Some(1), "a vehicle belongs to one tenant");

    std::fs::write(dir.join("fleet.csv"), "tenant,vehicle_id\nglobex,car-7\nglobex,car-8\n").unwrap();
    assert_eq!(tripline(&["fleet", "import", "fleet.csv"], &dir).status.code(), Some(0));
    std::fs::write(dir.join("bad.csv"), "tenant,vehicle_id\nglobex,car 9\n,car-10\nglobex,car-11\n").unwrap();
    let bad = tripline(&["fleet", "import", "bad.csv"], &dir);
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("line 2") && stderr.contains("line 3"), "{stderr}");

    let store = EmbeddedStore::open(&EmbeddedConfig {
        path: dir.join("tripline-data/store"),
        retention_s: 3600,
        ..EmbeddedConfig::default()
    })
    .unwrap();
    let acme = tripline_model::TenantId::parse("acme").unwrap();
    assert_eq!(store.tenant_for_key(&tripline_query_api::api_key_hash(key)).await.unwrap(), Some(acme.clone()));
    let tenant_of = |v: &str| tripline_model::VehicleId::parse(v).unwrap();
    assert_eq!(store.vehicle_tenant(&tenant_of("car-2")).await.unwrap(), Some(acme));
    assert_eq!(store.vehicle_tenant(&tenant_of("car-8")).await.unwrap().unwrap().as_str(), "globex");
    assert_eq!(store.vehicle_tenant(&tenant_of("car-11")).await.unwrap(), None, "a bad file registers nothing");
    drop(store);
}
