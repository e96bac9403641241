//! The bench's push measurement: 1,000 live streams (`?type=trip.started`) and a webhook receiver
//! (`--events trip.started`) follow the child while the probes publish; each probe trip's
//! `trip.started` is timed from its publish to its arrival on every stream (`push_ms`) and at the
//! receiver (`webhook_ms`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tripline_model::TripId;

use super::Freshness;
use crate::Failure;

/// Arrival times of the probes' `trip.started`, by trip id.
type Arrivals = Arc<Mutex<HashMap<String, Vec<Instant>>>>;

/// What follows the child's push side.
pub(super) struct PushWatch {
    streamed: Arrivals,
    hooked: Arrivals,
    open: Arc<AtomicUsize>,
}

/// The trip id in a message's JSON, when it is a `trip.started` of a probe (`marker` in its id).
fn probe_start(line: &str, marker: &str) -> Option<String> {
    if !line.contains("\"trip.started\"") || !line.contains(marker) {
        return None;
    }
    let json = line.strip_prefix("data: ").unwrap_or(line);
    let message: serde_json::Value = serde_json::from_str(json).ok()?;
    message["data"]["trip_id"].as_str().map(str::to_owned)
}

/// Notes that `trip`'s `trip.started` arrived now.
fn arrived(arrivals: &Arrivals, trip: String) {
    arrivals.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry(trip).or_default().push(Instant::now());
}

/// Opens `streams` streams on `http` with `key` and adds a webhook (through the child's admin
/// channel, `data_dir`) to a receiver in this process; returns once every stream is open.
pub(super) async fn watch(
    http: &str,
    key: &str,
    data_dir: &Path,
    tenant: &str,
    marker: &str,
    streams: usize,
) -> Result<PushWatch, Failure> {
    let watch = PushWatch { streamed: Arrivals::default(), hooked: Arrivals::default(), open: Arc::default() };
    let receiver = start_receiver(Arc::clone(&watch.hooked), marker.to_owned()).await?;
    let op = crate::webhook::WebhookOp::Add {
        tenant: tenant.to_owned(),
        url: format!("http://{receiver}/hooks"),
        types: vec!["trip.started".to_owned()],
        vehicles: Vec::new(),
    };
    match crate::remote::through_running(data_dir, |remote| remote.webhook::<_, crate::webhook::WebhookAnswer>(&op)) {
        Some(added) => {
            added?;
        }
        None => return Err(Failure::Runtime(anyhow::anyhow!("the child's admin channel does not answer"))),
    }
    for _ in 0..streams {
        let (streamed, open) = (Arc::clone(&watch.streamed), Arc::clone(&watch.open));
        tokio::spawn(follow_stream(http.to_owned(), key.to_owned(), marker.to_owned(), streamed, open));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while watch.open.load(Ordering::Relaxed) < streams {
        if Instant::now() > deadline {
            return Err(Failure::Runtime(anyhow::anyhow!(
                "{} of {streams} live streams opened within 60 s",
                watch.open.load(Ordering::Relaxed)
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(watch)
}

/// The webhook receiver, on a free loopback port: notes each probe's `trip.started` in `hooked`.
async fn start_receiver(hooked: Arrivals, marker: String) -> Result<std::net::SocketAddr, Failure> {
    let app = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move |body: String| {
            let (hooked, marker) = (Arc::clone(&hooked), marker.clone());
            async move {
                if let Some(trip) = probe_start(&body, &marker) {
                    arrived(&hooked, trip);
                }
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("a webhook receiver")?;
    let receiver = listener.local_addr().context("a webhook receiver")?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(receiver)
}

/// One live stream: counted in `open` once open, each probe's `trip.started` noted in
/// `streamed`, until the child closes it.
async fn follow_stream(http: String, key: String, marker: String, streamed: Arrivals, open: Arc<AtomicUsize>) {
    let Ok(mut socket) = tokio::net::TcpStream::connect(&http).await else { return };
    // Each asks for trip starts, as the webhook does: a stream of every message of a simulated
    // fleet (a trip every second or two per vehicle) to each of 1,000 clients would measure this
    // machine's two cores more than tripline.
    let request =
        format!("GET /v1/stream?type=trip.started HTTP/1.1\r\nHost: {http}\r\nAuthorization: Bearer {key}\r\n\r\n");
    if socket.write_all(request.as_bytes()).await.is_err() {
        return;
    }
    let mut lines = tokio::io::BufReader::new(socket).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line == ": stream open" {
            open.fetch_add(1, Ordering::Relaxed);
        } else if let Some(trip) = probe_start(&line, &marker) {
            arrived(&streamed, trip);
        }
    }
}

impl PushWatch {
    /// Publish → arrival of each probe's `trip.started`: on every stream (a stream that never got
    /// one counts `give_up`), and at the webhook receiver.
    pub(super) fn delays(&self, sent: &[(TripId, Instant)], give_up: Duration) -> (Freshness, Freshness) {
        let of = |arrivals: &Arrivals, expected: usize| {
            let arrivals = arrivals.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut delays = Vec::new();
            for (trip, at) in sent {
                let got = arrivals.get(trip.as_str()).map_or(&[][..], Vec::as_slice);
                delays
                    .extend(got.iter().take(expected).map(|t| t.saturating_duration_since(*at).as_secs_f64() * 1000.0));
                delays.extend(std::iter::repeat_n(give_up.as_secs_f64() * 1000.0, expected.saturating_sub(got.len())));
            }
            Freshness::of(delays)
        };
        (of(&self.streamed, self.open.load(Ordering::Relaxed)), of(&self.hooked, 1))
    }
}
