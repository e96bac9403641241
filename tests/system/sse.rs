//! A Server-Sent Events client, as an insurer would write one: a streaming HTTP GET read line by
//! line on a thread of its own.

use std::io::BufRead;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// One event received.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Received {
    pub(crate) event: String,
    pub(crate) id: String,
    pub(crate) data: Value,
}

impl Received {
    /// The message's stable id (`data.id`).
    pub(crate) fn message_id(&self) -> &str {
        self.data["id"].as_str().unwrap_or_default()
    }

    /// The vehicle it is about.
    pub(crate) fn vehicle(&self) -> &str {
        self.data["data"]["vehicle_id"].as_str().unwrap_or_default()
    }

    /// The trip it is about.
    pub(crate) fn trip(&self) -> &str {
        self.data["data"]["trip_id"].as_str().unwrap_or_default()
    }
}

/// A stream being read.
pub(crate) struct Stream {
    received: Arc<Mutex<Vec<Received>>>,
    reader: JoinHandle<()>,
}

/// Opens `GET /v1/stream{query}` with `key` (resuming after `last_event_id`), waits until the
/// server says it is live, and reads it until it ends or `max` events arrived (then hangs up).
pub(crate) fn open(api: &str, key: &str, query: &str, last_event_id: Option<&str>, max: Option<usize>) -> Stream {
    let mut request =
        ureq::get(format!("http://{api}/v1/stream{query}")).header("Authorization", format!("Bearer {key}"));
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    let response = request.call().unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut lines = std::io::BufReader::new(response.into_body().into_reader()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), ": stream open", "the stream says it is live first");
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&received);
    let reader = std::thread::spawn(move || {
        let (mut event, mut id, mut data) = (String::new(), String::new(), String::new());
        for line in lines {
            let Ok(line) = line else { return };
            if line.is_empty() {
                if !data.is_empty() {
                    let parsed = serde_json::from_str(&data).unwrap();
                    let mut all = sink.lock().unwrap();
                    all.push(Received { event: std::mem::take(&mut event), id: id.clone(), data: parsed });
                    if max.is_some_and(|max| all.len() >= max) {
                        return;
                    }
                }
                data.clear();
                event.clear();
            } else if let Some(value) = line.strip_prefix("event: ") {
                event = value.to_owned();
            } else if let Some(value) = line.strip_prefix("id: ") {
                id = value.to_owned();
            } else if let Some(value) = line.strip_prefix("data: ") {
                data.push_str(value);
            }
        }
    });
    Stream { received, reader }
}

impl Stream {
    /// Everything received so far.
    pub(crate) fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until the reader has hung up (after `max` events) or `timeout` passed; what it got.
    pub(crate) fn finish(self, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        while !self.reader.is_finished() {
            assert!(Instant::now() < deadline, "the stream ended within {timeout:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        self.received()
    }

    /// Waits until `done` holds for what was received and nothing more came for `quiet`.
    pub(crate) fn settle(
        &self,
        timeout: Duration,
        quiet: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        let (mut count, mut since) = (usize::MAX, Instant::now());
        loop {
            let now = self.received();
            if now.len() != count {
                (count, since) = (now.len(), Instant::now());
            } else if done(&now) && since.elapsed() >= quiet {
                return now;
            }
            assert!(Instant::now() < deadline, "the stream settled within {timeout:?}: {} events", now.len());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
