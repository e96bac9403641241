//! schemathesis (from PyPI) against `/openapi.json` with the demo tenant's key, on the demo's
//! trips: no 5xx, and every response as the document says (status, content type, body schema).
//! Its settings, and why one check is off, are in `testkit/schemathesis.toml`.

use std::process::Command;

use tripline_testkit::{Service, workspace_root};

use tripline_testkit::harness::*;

/// Seconds of generated requests: enough for every operation's coverage and fuzzing phases.
const MAX_TIME_S: &str = "60";

#[test]
fn every_generated_request_is_answered_as_the_openapi_document_says() {
    let Some(schemathesis) = Service::Schemathesis.address() else { return };
    let scratch = tripline_testkit::scratch_dir("schemathesis");
    let dir = scratch.path().to_path_buf();
    std::fs::write(
        dir.join("tripline.toml"),
        format!(
            "[mqtt]\nlisten = \"127.0.0.1:{}\"\n[http]\nlisten = \"127.0.0.1:0\"\nrate_per_s = 100000\nburst = 100000\n",
            free_port()
        ),
    )
    .unwrap();
    let running = start_until(&dir, &["run", "--demo"], "fixture trip(s) replayed");
    let key = std::fs::read_to_string(dir.join("tripline-data/demo-key")).unwrap().trim().to_owned();
    let api = format!("http://{}", running.http());
    let output = Command::new(&schemathesis)
        .arg("--config-file")
        .arg(workspace_root().join("testkit/schemathesis.toml"))
        .args(["run", &format!("{api}/openapi.json"), "--max-time", MAX_TIME_S, "--seed", "20261203"])
        .args(["--header", &format!("Authorization: Bearer {key}")])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    let summary: Vec<&str> = report.lines().filter(|l| l.contains("generated") || l.contains("passed")).collect();
    eprintln!("schemathesis for {MAX_TIME_S} s: {summary:?}");
    assert!(output.status.success(), "{report}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(running.stderr_contains("query API on"), "the API served throughout");
    drop(running);
}
