//! The trip explorer page (`GET /`) in a real browser: headless Chromium from Debian's packages,
//! driven over WebDriver (`chromedriver`), against `tripline run --demo` and a second tenant.
//! Screenshots go to `$CARGO_TARGET_TMPDIR/explorer/` (not committed), for a person to look at.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, MOUSE_BUTTON_LEFT, MouseActions, PointerAction};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tripline_model::{MarkerEvent, Point, TripId, TripMarker, encode_marker, encode_telemetry};
use tripline_testkit::{Service, unique_name};

use tripline_testkit::harness::*;

/// A chromedriver of our own and a session in it; both end with the test.
struct Browser {
    driver: Child,
    client: Client,
    port: u16,
    /// The browser's profile folder, of this test alone.
    profile: std::path::PathBuf,
}

impl Drop for Browser {
    /// Ends chromedriver and the browser it started (found by its profile folder, which only
    /// its processes name: a test that panics never closes its session).
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = Command::new("pkill").arg("-KILL").arg("-f").arg(self.profile.as_os_str()).status();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Browser {
    async fn start(chromedriver: &str, width: u32, height: u32) -> Browser {
        let port = free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile = std::env::temp_dir().join(unique_name("explorer-chromium"));
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         format!("--window-size={width},{height}"), "--lang=en-GB",
                         format!("--user-data-dir={}", profile.display())],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let Value::Object(capabilities) = capabilities else { unreachable!() };
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(client) => break client,
                Err(error) => {
                    assert!(Instant::now() < deadline, "no WebDriver session: {error}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        Browser { driver, client, port, profile }
    }

    /// Waits for the element at `css`.
    async fn element(&self, css: &str) -> fantoccini::elements::Element {
        match self.client.wait().at_most(Duration::from_secs(20)).for_element(Locator::Css(css)).await {
            Ok(element) => element,
            Err(error) => panic!("no {css} on the page ({error}); {}", self.failure().await),
        }
    }

    /// What a failed wait reports: a screenshot (`failed.png`), the console and the page.
    async fn failure(&self) -> String {
        self.screenshot("failed.png").await;
        let page = self.client.source().await.unwrap_or_default();
        let console = self.console().await;
        format!("the console: {console:#?}; the page: {page}")
    }

    /// Waits until the element at `css` says `text`.
    async fn text_at(&self, css: &str, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(element) = self.client.find(Locator::Css(css)).await
                && let Ok(shown) = element.text().await
                && shown.contains(text)
            {
                return shown;
            }
            if Instant::now() > deadline {
                panic!("{css} never said {text:?}; {}", self.failure().await);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn count(&self, css: &str) -> usize {
        self.client.find_all(Locator::Css(css)).await.unwrap().len()
    }

    async fn screenshot(&self, name: &str) {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("explorer");
        std::fs::create_dir_all(&dir).unwrap();
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(dir.join(name), png).unwrap();
        eprintln!("explorer screenshot: {}", dir.join(name).display());
    }

    /// What the browser's console logged (Chromium's log through chromedriver's `se/log`).
    async fn console(&self) -> Vec<Value> {
        let session = self.client.session_id().await.unwrap().expect("a session");
        let answer: Value = ureq::post(&format!("http://127.0.0.1:{}/session/{session}/se/log", self.port))
            .send_json(json!({ "type": "browser" }))
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap();
        answer["value"].as_array().cloned().unwrap_or_default()
    }
}

/// Publishes `payloads` as `vehicle` (its secret) to tripline's own MQTT endpoint on `port`, and
/// waits until each is acknowledged.
async fn publish_as(port: u16, vehicle: &str, secret: &str, payloads: Vec<Vec<u8>>) {
    publish_to(port, vehicle, secret, "telemetry", payloads).await;
}

/// Publishes `payloads` as `vehicle` on its topic `vehicles/{vehicle}/{kind}`, each acknowledged.
async fn publish_to(port: u16, vehicle: &str, secret: &str, kind: &str, payloads: Vec<Vec<u8>>) {
    let mut options = rumqttc::MqttOptions::new(unique_name("device"), "127.0.0.1", port);
    options.set_credentials(vehicle, secret);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 64);
    let n = payloads.len();
    for payload in payloads {
        client.publish(format!("vehicles/{vehicle}/{kind}"), rumqttc::QoS::AtLeastOnce, false, payload).await.unwrap();
    }
    let mut acked = 0;
    tokio::time::timeout(Duration::from_secs(30), async {
        while acked < n {
            if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = eventloop.poll().await.unwrap() {
                acked += 1;
            }
        }
    })
    .await
    .expect("every message acknowledged");
}

/// A 1×1 transparent PNG.
const TILE_PNG: [u8; 68] = [
    137, 80, 78, 71, 13, 10, 26, 10, 0, 0, 0, 13, 73, 72, 68, 82, 0, 0, 0, 1, 0, 0, 0, 1, 8, 4, 0, 0, 0, 181, 28, 12,
    2, 0, 0, 0, 11, 73, 68, 65, 84, 120, 218, 99, 100, 96, 0, 0, 0, 6, 0, 2, 48, 129, 208, 47, 0, 0, 0, 0, 73, 69, 78,
    68, 174, 66, 96, 130,
];

/// A tile server on a free port that answers every request with [`TILE_PNG`]; the number of
/// requests it answered.
fn tile_server() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = std::sync::Arc::clone(&served);
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                TILE_PNG.len()
            );
            let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(&TILE_PNG));
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    (port, served)
}

fn get_json(api: &str, path: &str, key: &str) -> Value {
    ureq::get(&format!("{api}{path}"))
        .header("Authorization", &format!("Bearer {key}"))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap()
}

/// Waits until `path` answers at least one trip for `key`; the answer.
fn trips_when_found(api: &str, path: &str, key: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = get_json(api, path, key);
        if answer["total"].as_u64().unwrap_or(0) > 0 {
            return answer;
        }
        assert!(Instant::now() < deadline, "no trip at {path}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insurer_searches_opens_a_trip_and_pages_its_points_in_a_real_browser() {
    let Some(chromedriver) = Service::Chromedriver.address() else { return };
    let scratch = tripline_testkit::scratch_dir("explorer");
    let dir = scratch.path().to_path_buf();
    let mqtt_port = free_port();
    let (tile_port, tiles_served) = tile_server();
    std::fs::write(
        dir.join("tripline.toml"),
        format!(
            "[mqtt]\nlisten = \"127.0.0.1:{}\"\n[http]\nlisten = \"127.0.0.1:0\"\nrate_per_s = 100000\nburst = 100000\n\
             [push]\ntrip_update_every_s = 1\n\
             [ui]\ntile_url = \"http://127.0.0.1:{tile_port}/{{z}}/{{x}}/{{y}}.png\"\ntile_attribution = \"test tiles\"\n",
            mqtt_port
        ),
    )
    .unwrap();
    // Another tenant with a trip of its own, beside the demo tenant's fixture trips.
    let other_key = ok_stdout(&dir, &["tenant", "create", "other"]).trim().to_owned();
    std::fs::write(dir.join("secrets.csv"), ok_stdout(&dir, &["fleet", "add", "--tenant", "other", "other-car"]))
        .unwrap();
    let running = start_until(&dir, &["run", "--demo"], "fixture trip(s) replayed");
    let key = std::fs::read_to_string(dir.join("tripline-data/demo-key")).unwrap().trim().to_owned();
    let api = format!("http://{}", running.http());
    // A trip id the demo tenant does not have (trip ids are per vehicle: the demo's fixture trip
    // ids may well exist in another tenant too).
    let other_trip = unique_name("other-trip").replace('_', "-");
    let lines: Vec<String> = (0..20)
        .map(|i| {
            json!({ "vehicle_id": "other-car", "trip_id": other_trip, "ts_ms": t0() + i * 1000,
                    "lat": 50.0 + f64::from(i as u32) * 1e-4, "lon": 8.0 })
            .to_string()
        })
        .collect();
    std::fs::write(dir.join("other.jsonl"), lines.join("\n")).unwrap();
    ok_stdout(&dir, &["replay", "--credentials", "secrets.csv", "other.jsonl"]);
    trips_when_found(&api, "/v1/trips?vehicle_id=other-car", &other_key);
    let braking = trips_when_found(&api, "/v1/trips?event=harsh_braking&limit=1000", &key);
    let braking_total = braking["total"].as_u64().unwrap();

    let browser = Browser::start(&chromedriver, 1280, 800).await;
    let page = format!("{api}/");

    // A wrong key: the 401 message, nothing else.
    browser.client.goto(&page).await.unwrap();
    browser.element("#api-key").await.send_keys("tl_not_a_key").await.unwrap();
    browser.element("#key-form button[type=submit]").await.click().await.unwrap();
    let said = browser.text_at("#notice", "401").await;
    assert!(said.contains("not accepted"), "{said}");

    // The demo key; search by event.
    browser.element("#forget-key").await.click().await.unwrap();
    browser.element("#api-key").await.send_keys(&key).await.unwrap();
    browser.element("#key-form button[type=submit]").await.click().await.unwrap();
    browser.element("#trips-table").await;
    assert!(!browser.element("#notice").await.is_displayed().await.unwrap(), "no error once the key is right");
    browser.element("input[name=event][value=harsh_braking]").await.click().await.unwrap();
    browser.element("#search button[type=submit]").await.click().await.unwrap();
    let footer = browser.text_at(".pager span", &format!("{braking_total} trip")).await;
    let url = browser.client.current_url().await.unwrap();
    assert!(url.as_str().contains("event=harsh_braking"), "the search is in the URL: {url} ({footer})");
    let rows = browser.count("#trips-table tbody tr").await;
    assert_eq!(rows as u64, braking_total.min(50), "one row per trip found");
    browser.screenshot("trips.png").await;
    // The URL alone brings the same search back (shared or reloaded).
    browser.client.goto(url.as_str()).await.unwrap();
    browser.client.refresh().await.unwrap();
    browser.text_at(".pager span", &format!("{braking_total} trip")).await;
    assert!(
        browser
            .element("input[name=event][value=harsh_braking]")
            .await
            .prop("checked")
            .await
            .unwrap()
            .is_some_and(|v| v == "true")
    );

    // An area drawn on the map of the trips' starts becomes the search's bbox.
    browser.client.goto(&format!("{api}/#trips")).await.unwrap();
    browser.element("#trips-table").await;
    let draw = browser.client.find(Locator::XPath("//button[text()='Draw area on map']")).await.unwrap();
    draw.click().await.unwrap();
    let map = browser.element(".bbox-map svg").await;
    let target = serde_json::to_value(&map).unwrap();
    browser.client.execute("arguments[0].scrollIntoView({block: 'center'});", vec![target]).await.unwrap();
    let drag = MouseActions::new("mouse".to_owned())
        .then(PointerAction::MoveToElement { element: map.clone(), duration: None, x: -150.0, y: -120.0 })
        .then(PointerAction::Down { button: MOUSE_BUTTON_LEFT })
        .then(PointerAction::MoveToElement {
            element: map,
            duration: Some(Duration::from_millis(200)),
            x: 150.0,
            y: 120.0,
        })
        .then(PointerAction::Up { button: MOUSE_BUTTON_LEFT });
    browser.client.perform_actions(drag).await.unwrap();
    let bbox = browser.element("input[name=bbox]").await.prop("value").await.unwrap().unwrap_or_default();
    let corners: Vec<f64> = bbox.split(',').filter_map(|v| v.parse().ok()).collect();
    assert!(corners.len() == 4 && corners[0] < corners[2] && corners[1] < corners[3], "a drawn box: {bbox:?}");
    browser.element("#search button[type=submit]").await.click().await.unwrap();
    browser.text_at("#status", "found").await;
    let url = browser.client.current_url().await.unwrap();
    assert!(url.as_str().contains("bbox="), "the drawn area is in the URL: {url}");

    // Open the first trip: its track, one marker per event, the event's figures on click.
    browser.client.goto(&format!("{api}/#trips?event=harsh_braking")).await.unwrap();
    browser.text_at(".pager span", &format!("{braking_total} trip")).await;
    let first = braking["trips"][0]["trip_id"].as_str().unwrap().to_owned();
    let detail = get_json(&api, &format!("/v1/trips/{first}"), &key);
    let events = detail["event_list"].as_array().unwrap().len();
    browser.element("#trips-table tbody tr a").await.click().await.unwrap();
    browser.element("#trip-map svg .track").await;
    assert_eq!(browser.text_at("#trip-title", &first).await, format!("Trip {first}"));
    assert!(browser.count("#trip-map .track").await >= 1);
    // Raster tiles from the configured server underneath, allowed by the page's policy.
    assert!(browser.count("#trip-map .tiles image").await >= 1, "tiles drawn");
    browser.text_at("#trip-map svg", "test tiles").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while tiles_served.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the browser fetched no tile");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(browser.count("#trip-map .event-marker").await, events, "a marker per event");
    assert!(events > 0, "the trip found by harsh braking has events");
    let rejected = browser.count("#trip-map .rejected").await;
    let rejected_points = detail["rejected_point_count"].as_u64().unwrap() as usize;
    eprintln!("trip {first}: {rejected} of its {rejected_points} rejected points placed on the map");
    assert!(rejected <= rejected_points);
    browser.element("#trip-map .event-marker").await.click().await.unwrap();
    let kind = detail["event_list"][0]["kind"].as_str().unwrap().replace('_', " ");
    browser.text_at("#event-detail", &kind).await;
    browser.text_at("#trip-figures", detail["vehicle_id"].as_str().unwrap()).await;
    // Keyboard: a marker takes the focus and opens with Enter.
    let markers = browser.client.find_all(Locator::Css("#trip-map .event-marker")).await.unwrap();
    markers.last().unwrap().send_keys("\u{E007}").await.unwrap();
    browser.text_at("#event-detail", "Peak").await;
    browser.screenshot("trip.png").await;

    // Page through the points.
    let points = detail["point_count"].as_u64().unwrap();
    assert!(points > 50, "the trip has more than one page of points: {points}");
    browser.text_at("#points-table caption", "Points 1–50").await;
    let first_time = browser.element("#points-table tbody tr td:nth-child(2)").await.text().await.unwrap();
    browser.element("#points-next").await.click().await.unwrap();
    browser.text_at("#points-table caption", "Points 51–").await;
    let next_time = browser.element("#points-table tbody tr td:nth-child(2)").await.text().await.unwrap();
    assert_ne!(first_time, next_time, "the next page has other points");
    browser.element("#points-prev").await.click().await.unwrap();
    browser.text_at("#points-table caption", "Points 1–50").await;

    // Regions' outlines: the night drive runs through the bundled region "Chemnitz".
    browser.client.goto(&format!("{api}/#trip/fx-night-1")).await.unwrap();
    browser.element("#trip-map svg .track").await;
    assert!(browser.count("#trip-map .region").await >= 1, "the region's outline is drawn");
    browser.text_at("#trip-map .region-name", "Chemnitz").await;

    // Another tenant's trip: not found, like one that does not exist.
    browser.client.goto(&format!("{api}/#trip/{other_trip}")).await.unwrap();
    browser.text_at("#not-found", "There is no trip").await;

    // The fleet: stats by day as bars, and by vehicle.
    browser.client.goto(&format!("{api}/#fleet?from=2020-01-01T00:00:00.000Z&tz=Europe%2FBerlin")).await.unwrap();
    browser.element("#day-chart rect.bar").await;
    assert!(browser.count("#vehicle-table tbody tr").await >= 1);
    browser.screenshot("fleet.png").await;

    // A live trip: its figures and its map follow the points as they arrive (through the live
    // stream); past a page of points (1,000), an update reads on from the last page only.
    let live_car = unique_name("live").replace('_', "-");
    std::fs::write(dir.join("live.csv"), ok_stdout(&dir, &["fleet", "add", "--tenant", "demo", &live_car])).unwrap();
    let secret = secret_of(&std::fs::read_to_string(dir.join("live.csv")).unwrap(), &live_car);
    let start_ms = t0() + 3_600_000 - 1_200_000;
    // Straight from a device (a replay would end the trip after its file).
    let part = |range: std::ops::Range<i64>, per_message: usize| {
        let points: Vec<Point> = range
            .map(|i| Point {
                speed_mps: Some(11.0),
                accuracy_m: Some(5.0),
                ..Point::new(start_ms + i * 1000, 51.67 + i as f64 * 1e-4, 7.80)
            })
            .collect();
        let payloads: Vec<Vec<u8>> = points
            .chunks(per_message)
            .map(|chunk| encode_telemetry(Some(&TripId::parse("live-trip").unwrap()), chunk))
            .collect();
        publish_as(mqtt_port, &live_car, &secret, payloads)
    };
    part(0..15, 5).await;
    trips_when_found(&api, &format!("/v1/trips?vehicle_id={live_car}"), &key);
    browser.client.goto(&format!("{api}/#trip/live-trip")).await.unwrap();
    browser.text_at("#trip-figures", "15 kept").await;
    browser.element("#trip-map svg[data-points='15']").await;
    browser.element("#live-badge").await;
    browser.element("main[data-live=following]").await;
    part(15..40, 5).await;
    browser.text_at("#trip-figures", "40 kept").await;
    browser.element("#trip-map svg[data-points='40']").await;
    part(40..1040, 50).await;
    browser.text_at("#trip-figures", "1040 kept").await;
    browser.element("#trip-map svg[data-points='1040']").await;
    part(1040..1060, 5).await;
    browser.text_at("#trip-figures", "1060 kept").await;
    browser.element("#trip-map svg[data-points='1060']").await;
    // Its end: the page says so and stops following (the stream is closed).
    let end = TripMarker {
        trip_id: TripId::parse("live-trip").unwrap(),
        event: MarkerEvent::End,
        ts_ms: start_ms + 1_060_000,
    };
    publish_to(mqtt_port, &live_car, &secret, "trips", vec![encode_marker(&end)]).await;
    browser.text_at("#trip-figures", "completed").await;
    browser.element("main:not([data-live])").await;
    assert_eq!(browser.count("#live-badge").await, 0, "no live badge on a completed trip");

    // A phone's width: the trip still fits, without sideways scrolling.
    browser.client.set_window_size(390, 844).await.unwrap();
    browser.client.goto(&format!("{api}/#trip/{first}")).await.unwrap();
    browser.element("#trip-map svg .track").await;
    let overflow = browser
        .client
        .execute("return document.documentElement.scrollWidth - window.innerWidth;", vec![])
        .await
        .unwrap();
    assert!(overflow.as_i64().unwrap_or(i64::MAX) <= 1, "sideways scrolling on a phone: {overflow}");
    browser.screenshot("trip-phone.png").await;

    // No script error, no policy violation: only the loads this test meant to fail (the wrong
    // key's 401, the other tenant's trip's 404).
    let problems: Vec<Value> = browser
        .console()
        .await
        .into_iter()
        .filter(|entry| entry["level"] == "SEVERE" || entry["level"] == "WARNING")
        .filter(|entry| {
            let message = entry["message"].as_str().unwrap_or_default();
            !(message.contains("Failed to load resource") && (message.contains("401") || message.contains("404")))
        })
        .collect();
    assert!(problems.is_empty(), "the page logged problems: {problems:#?}");
    browser.client.clone().close().await.unwrap();
    drop(browser);
    drop(running);
}
