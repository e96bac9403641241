//! The embedded MQTT endpoint's own cost per message: a raw MQTT 3.1.1 client sends batches of
//! 1,000 QoS 1 PUBLISH packets (10-point telemetry, ~1 KB each) over one connection and waits for
//! their 1,000 PUBACKs; a consumer completes each delivery as it arrives (no pipeline, no store).
//! Time per batch / 1,000 is the wall time per message of the endpoint with that client and
//! consumer beside it on the same runtime.

#![allow(clippy::unwrap_used)] // a benchmark fails loudly

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rumqttc::mqttbytes::v4;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tripline_ingest::endpoint::{AllowAnyone, Endpoint, EndpointConfig};
use tripline_ingest::source::SourceCounters;

const BATCH: usize = 1000;

fn payload() -> Vec<u8> {
    let points: Vec<String> = (0..10)
        .map(|i| {
            format!(
                r#"{{"ts_ms":{},"lat":51.{:04},"lon":7.{:04},"speed_mps":13.2,"heading_deg":88.0,"accuracy_m":4.0,"seq":{i}}}"#,
                1_764_000_000_000_i64 + i * 1000,
                5000 + i,
                3000 + i
            )
        })
        .collect();
    format!(r#"{{"trip_id":"t-1","points":[{}]}}"#, points.join(",")).into_bytes()
}

fn endpoint_cost(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (endpoint, mut stream) = rt.block_on(async {
        let (out, deliveries) = flume::bounded(4096);
        let (status, _) = watch::channel(SourceCounters::default());
        let config =
            EndpointConfig { listen: "127.0.0.1:0".parse().unwrap(), in_flight: BATCH, ..EndpointConfig::default() };
        let endpoint =
            Endpoint::start(config, Arc::new(AllowAnyone), out, Duration::from_secs(5), status).await.unwrap();
        tokio::spawn(async move {
            while let Ok(delivery) = deliveries.recv_async().await {
                delivery.complete();
            }
        });
        let mut stream = TcpStream::connect(endpoint.local_addr()).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let mut connect = BytesMut::new();
        v4::Connect::new("bench-car").write(&mut connect).unwrap();
        stream.write_all(&connect).await.unwrap();
        let mut connack = [0u8; 4];
        stream.read_exact(&mut connack).await.unwrap();
        assert_eq!(connack[3], 0, "accepted");
        (endpoint, stream)
    });
    let mut batch = BytesMut::new();
    let body = payload();
    for pkid in 1..=BATCH as u16 {
        let mut publish = v4::Publish::new("vehicles/bench-car/telemetry", rumqttc::QoS::AtLeastOnce, body.clone());
        publish.pkid = pkid;
        publish.write(&mut batch).unwrap();
    }
    let mut acks = vec![0u8; 4 * BATCH];
    let mut group = c.benchmark_group("endpoint");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("1000 QoS 1 publishes to their PUBACKs", |b| {
        b.iter_custom(|iterations| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iterations {
                    stream.write_all(&batch).await.unwrap();
                    stream.read_exact(&mut acks).await.unwrap();
                }
                started.elapsed()
            })
        });
    });
    group.finish();
    rt.block_on(async {
        drop(stream);
        endpoint.close().await.unwrap();
    });
}

criterion_group!(benches, endpoint_cost);
criterion_main!(benches);
