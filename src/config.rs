//! Configuration: a TOML file (`--config FILE`, else `./tripline.toml` when present), overridden
//! by `TRIPLINE_*` environment variables (`__` separates sections, e.g.
//! `TRIPLINE_ENRICH__MAX_SPEED_KMH=200`), overridden by flags.

use std::path::{Path, PathBuf};

use anyhow::Context;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use tripline_enrich::EnrichConfig;
use tripline_indexer::IndexerConfig;
use tripline_store::{
    AnyStore, DEFAULT_REJECTION_RETENTION_DAYS, DEFAULT_RETENTION_DAYS, EmbeddedStore, ScyllaConfig, ScyllaStore,
};

use crate::Failure;

/// Top-level keys; environment variables naming anything else are not configuration.
const KEYS: &[&str] = &[
    "data_dir",
    "regions",
    "enrich",
    "store",
    "scylla",
    "retention_days",
    "rejection_retention_days",
    "mqtt",
    "ingest",
    "indexer",
    "http",
    "push",
    "ui",
];

/// The MQTT side.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct MqttConfig {
    /// External broker, `mqtt://host:port`.
    pub(crate) url: Option<String>,
    /// Where the embedded MQTT endpoint listens (used when no `url` is set); default
    /// `127.0.0.1:1883`.
    pub(crate) listen: Option<std::net::SocketAddr>,
    /// Vehicle connections the embedded endpoint accepts at most (default 10,000).
    pub(crate) max_connections: Option<usize>,
    /// Messages per vehicle connection received and not yet acknowledged at most (default 256).
    pub(crate) in_flight: Option<usize>,
    /// Lets vehicles connect to the embedded endpoint without credentials and publish as any
    /// vehicle (default false: user name = vehicle id, password = its secret). For closed test
    /// set-ups only.
    pub(crate) allow_anonymous: bool,
    /// No longer used (the embedded endpoint holds no message log); accepted so that older
    /// configuration files still load, with a warning.
    pub(crate) buffer_mb: Option<usize>,
    /// Client id of the ingest role (the broker keeps its session by it).
    pub(crate) client_id: Option<String>,
    /// tripline's own account on an external broker: user name (default `tripline` when a
    /// password is set).
    pub(crate) username: Option<String>,
    /// Its password (prefer `password_file`).
    pub(crate) password: Option<String>,
    /// A file holding its password (first line).
    pub(crate) password_file: Option<PathBuf>,
    /// Shared-subscription group for several ingest processes.
    pub(crate) shared_group: Option<String>,
    /// PEM file of the authorities that signed the broker's certificate (`mqtts://` urls; also
    /// what `replay` trusts).
    pub(crate) tls_ca_file: Option<PathBuf>,
    /// tripline's own certificate chain (PEM): the embedded endpoint serves TLS with it; to an
    /// external broker it is tripline's client certificate.
    pub(crate) tls_cert_file: Option<PathBuf>,
    /// The private key of `tls_cert_file` (PEM).
    pub(crate) tls_key_file: Option<PathBuf>,
    /// Embedded endpoint: PEM file of the authorities whose client certificates vehicles may
    /// present instead of a password (the certificate's common name is the vehicle id).
    pub(crate) tls_client_ca_file: Option<PathBuf>,
}

/// Where a broker is, from an `mqtt://host:port` or `mqtts://host:port` url.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BrokerUrl {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// `mqtts://`: TLS.
    pub(crate) tls: bool,
}

impl BrokerUrl {
    /// Parses `mqtt://host[:port]` (default port 1883) or `mqtts://host[:port]` (8883).
    pub(crate) fn parse(url: &str) -> Result<BrokerUrl, String> {
        let (rest, tls, default_port) = if let Some(rest) = url.strip_prefix("mqtts://") {
            (rest, true, 8883)
        } else if let Some(rest) = url.strip_prefix("mqtt://") {
            (rest, false, 1883)
        } else {
            return Err(format!("[mqtt] url {url:?}: expected mqtt://host:port or mqtts://host:port"));
        };
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().map_err(|_| format!("[mqtt] url {url:?}: bad port"))?),
            None => (rest, default_port),
        };
        if host.is_empty() {
            return Err(format!("[mqtt] url {url:?}: no host"));
        }
        Ok(BrokerUrl { host: host.to_owned(), port, tls })
    }
}

impl MqttConfig {
    /// tripline's own account on an external broker, if a password is configured.
    pub(crate) fn account(&self) -> Result<Option<(String, String)>, String> {
        let password = match (&self.password, &self.password_file) {
            (Some(_), Some(_)) => return Err("[mqtt] password and password_file: set one".to_owned()),
            (Some(password), None) => password.clone(),
            (None, Some(file)) => std::fs::read_to_string(file)
                .map_err(|e| format!("[mqtt] password_file {}: {e}", file.display()))?
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
            (None, None) => return Ok(None),
        };
        Ok(Some((self.username.clone().unwrap_or_else(|| "tripline".to_owned()), password)))
    }

    /// tripline's certificate and key files, if both are set (one alone is an error).
    fn own_certificate(&self) -> Result<Option<(&Path, &Path)>, String> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Ok(Some((cert, key))),
            (None, None) => Ok(None),
            _ => Err("[mqtt] tls_cert_file and tls_key_file: set both or neither".to_owned()),
        }
    }

    /// The TLS client configuration for a `mqtts://` broker: trusting `tls_ca_file`, presenting
    /// tripline's own certificate when one is set (`with_identity`).
    pub(crate) fn client_tls(&self, with_identity: bool) -> Result<tripline_ingest::tls::ClientTls, String> {
        let ca = self.tls_ca_file.as_deref().ok_or("an mqtts:// broker needs [mqtt] tls_ca_file")?;
        let identity = if with_identity { self.own_certificate()? } else { None };
        let config = tripline_ingest::tls::client_config(ca, identity).map_err(|e| format!("[mqtt] TLS: {e}"))?;
        Ok(tripline_ingest::tls::Tls(config))
    }

    /// The embedded endpoint's TLS, when `tls_cert_file` and `tls_key_file` are set.
    pub(crate) fn server_tls(&self) -> Result<Option<tripline_ingest::tls::ServerTls>, String> {
        let Some((cert, key)) = self.own_certificate()? else {
            if self.tls_client_ca_file.is_some() {
                return Err("[mqtt] tls_client_ca_file needs tls_cert_file and tls_key_file".to_owned());
            }
            return Ok(None);
        };
        let config = tripline_ingest::tls::server_config(cert, key, self.tls_client_ca_file.as_deref())
            .map_err(|e| format!("[mqtt] TLS: {e}"))?;
        Ok(Some(tripline_ingest::tls::Tls(config)))
    }
}

/// The HTTP side: the query API, health and metrics.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct HttpConfig {
    /// Where the HTTP server listens.
    pub(crate) listen: std::net::SocketAddr,
    /// Where the admin channel listens (`tenant`, `fleet`, `reindex` reach a running process
    /// there, with the token of `data_dir/admin.json`); default: a free loopback port.
    pub(crate) admin_listen: std::net::SocketAddr,
    /// Requests per second per API key, on average.
    pub(crate) rate_per_s: f64,
    /// Requests per API key at once after being idle.
    pub(crate) burst: f64,
    /// Failed authentications per second a client address may cause on average (then 429).
    pub(crate) failed_auth_per_s: f64,
    /// Failed authentications a client address may cause at once.
    pub(crate) failed_auth_burst: f64,
    /// Connections served at once per listener; more are closed at once.
    pub(crate) max_connections: usize,
    /// Requests handled at once per listener; more are answered 503 at once.
    pub(crate) max_in_flight: usize,
    /// How long a client may take to send a request's headers (also how long an idle
    /// keep-alive connection stays open), milliseconds.
    pub(crate) header_timeout_ms: u64,
    /// How long a request may take to be answered, milliseconds (then 503).
    pub(crate) request_timeout_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        let limits = tripline_query_api::ApiConfig::default();
        HttpConfig {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            rate_per_s: limits.rate_per_s,
            burst: limits.burst,
            failed_auth_per_s: limits.failed_auth_per_s,
            failed_auth_burst: limits.failed_auth_burst,
            max_connections: 1024,
            max_in_flight: 256,
            header_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
        }
    }
}

/// The ingest role.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct IngestConfig {
    /// Enrichment workers; default four per core, at least 8 (each waits for its batch to be
    /// durable, so more of them keep more write sets in flight: docs/benchmarks.md, Decisions).
    pub(crate) workers: usize,
    /// On a graceful stop, how long to wait for in-flight messages to become durable, seconds.
    pub(crate) drain_s: u64,
    /// How long ingest may stay disconnected from an external broker before the process gives up
    /// and exits non-zero (for its supervisor to restart it), seconds.
    pub(crate) give_up_s: u64,
    /// Trips each worker holds in memory at most; beyond it the least recently active leave
    /// memory (and are reopened from the store when a message comes).
    pub(crate) max_live_trips: usize,
    /// Bytes of messages received and not yet durable at most, MiB (all queues and batches
    /// together); at the bound ingest reads no more until completions make room.
    pub(crate) max_in_flight_mb: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let max_live_trips = tripline_pipeline::WorkerConfig::default().max_live_trips;
        let max_in_flight_mb = tripline_ingest::budget::DEFAULT_IN_FLIGHT_BYTES / (1024 * 1024);
        IngestConfig { workers: (4 * cores).max(8), drain_s: 10, give_up_s: 300, max_live_trips, max_in_flight_mb }
    }
}

/// Push to insurers: the live stream (`GET /v1/stream`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct PushConfig {
    /// `trip.updated` is told at most this often per trip, seconds (a trip's start, completion
    /// and events are always told).
    pub(crate) trip_update_every_s: u64,
    /// Live streams one API key may hold open at once (then 429).
    pub(crate) max_streams_per_key: usize,
    /// A stream idle this long gets a heartbeat comment, seconds.
    pub(crate) heartbeat_s: u64,
    /// Recent messages the API keeps for its streams, MiB; a stream further behind is closed
    /// and resumes from the store with its last id.
    pub(crate) stream_buffer_mb: usize,
    /// Networks webhook receivers may be in although internal (loopback, private, link-local…),
    /// CIDR notation, e.g. `["127.0.0.1/32"]`; default none.
    pub(crate) webhook_allowed_networks: Vec<String>,
    /// Wait after a failed delivery, seconds; doubles (with ±20 % jitter) up to
    /// `webhook_retry_max_s`.
    pub(crate) webhook_retry_first_s: f64,
    /// The longest wait between attempts, seconds.
    pub(crate) webhook_retry_max_s: f64,
    /// A message is given up when a delivery fails this long after it was written, hours.
    pub(crate) webhook_give_up_h: f64,
    /// How long a receiver may take to answer, seconds.
    pub(crate) webhook_timeout_s: f64,
    /// How long a rotated secret goes on signing beside the new one, hours.
    pub(crate) webhook_rotation_overlap_h: u64,
}

impl Default for PushConfig {
    fn default() -> Self {
        let stream = tripline_query_api::StreamConfig::default();
        let hooks = tripline_push::WebhookConfig::default();
        PushConfig {
            trip_update_every_s: tripline_pipeline::WorkerConfig::default().trip_update_every.as_secs(),
            max_streams_per_key: stream.max_per_key,
            heartbeat_s: stream.heartbeat.as_secs(),
            stream_buffer_mb: stream.ring_bytes / (1024 * 1024),
            webhook_allowed_networks: Vec::new(),
            webhook_retry_first_s: hooks.retry.first.as_secs_f64(),
            webhook_retry_max_s: hooks.retry.max.as_secs_f64(),
            webhook_give_up_h: hooks.retry.give_up_after.as_secs_f64() / 3600.0,
            webhook_timeout_s: hooks.timeout.as_secs_f64(),
            webhook_rotation_overlap_h: hooks.rotation_overlap.as_secs() / 3600,
        }
    }
}

impl PushConfig {
    /// The networks receivers may be in although internal.
    pub(crate) fn address_policy(&self) -> Result<tripline_push::AddressPolicy, String> {
        let allowed = self
            .webhook_allowed_networks
            .iter()
            .map(|n| tripline_push::Network::parse(n).map_err(|e| format!("[push] webhook_allowed_networks: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(tripline_push::AddressPolicy { allowed })
    }

    /// Webhook delivery's settings.
    pub(crate) fn webhooks(&self) -> Result<tripline_push::WebhookConfig, String> {
        let seconds = |value: f64, key: &str| {
            std::time::Duration::try_from_secs_f64(value)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| format!("[push] {key}: a positive number"))
        };
        Ok(tripline_push::WebhookConfig {
            retry: tripline_push::RetrySchedule {
                first: seconds(self.webhook_retry_first_s, "webhook_retry_first_s")?,
                max: seconds(self.webhook_retry_max_s, "webhook_retry_max_s")?,
                give_up_after: seconds(self.webhook_give_up_h * 3600.0, "webhook_give_up_h")?,
            },
            timeout: seconds(self.webhook_timeout_s, "webhook_timeout_s")?,
            addresses: self.address_policy()?,
            rotation_overlap: std::time::Duration::from_secs(self.webhook_rotation_overlap_h.saturating_mul(3600)),
            ..tripline_push::WebhookConfig::default()
        })
    }

    /// The live stream's settings.
    pub(crate) fn stream(&self) -> tripline_query_api::StreamConfig {
        tripline_query_api::StreamConfig {
            max_per_key: self.max_streams_per_key.max(1),
            heartbeat: std::time::Duration::from_secs(self.heartbeat_s.max(1)),
            ring_bytes: self.stream_buffer_mb.max(1) * 1024 * 1024,
            ..tripline_query_api::StreamConfig::default()
        }
    }
}

/// Which write store to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StoreKind {
    /// The embedded LSM store under `data_dir`.
    #[default]
    Embedded,
    /// ScyllaDB (or Cassandra) at `[scylla] nodes`.
    Scylla,
}

impl std::fmt::Display for StoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreKind::Embedded => "embedded",
            StoreKind::Scylla => "scylla",
        })
    }
}

/// The whole configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// Where embedded data lives.
    #[serde(default = "default_data_dir")]
    pub(crate) data_dir: PathBuf,
    /// GeoJSON regions (name, speed_limit_kmh, timezone); default: the bundled sample regions.
    #[serde(default)]
    pub(crate) regions: Option<PathBuf>,
    /// Enrichment thresholds.
    #[serde(default)]
    pub(crate) enrich: EnrichConfig,
    /// The write store.
    #[serde(default = "default_store")]
    pub(crate) store: StoreKind,
    /// ScyllaDB connection and schema.
    #[serde(default)]
    pub(crate) scylla: ScyllaConfig,
    /// How long points and trips are kept.
    #[serde(default = "default_retention_days")]
    pub(crate) retention_days: u32,
    /// How long rejections are kept.
    #[serde(default = "default_rejection_retention_days")]
    pub(crate) rejection_retention_days: u32,
    /// MQTT.
    #[serde(default)]
    pub(crate) mqtt: MqttConfig,
    /// The ingest role.
    #[serde(default)]
    pub(crate) ingest: IngestConfig,
    /// The indexer role.
    #[serde(default)]
    pub(crate) indexer: IndexerConfig,
    /// HTTP.
    #[serde(default)]
    pub(crate) http: HttpConfig,
    /// Push to insurers.
    #[serde(default)]
    pub(crate) push: PushConfig,
    /// The trip explorer page.
    #[serde(default)]
    pub(crate) ui: tripline_query_api::UiConfig,
}

fn default_store() -> StoreKind {
    StoreKind::Embedded
}

fn default_retention_days() -> u32 {
    DEFAULT_RETENTION_DAYS
}

fn default_rejection_retention_days() -> u32 {
    DEFAULT_REJECTION_RETENTION_DAYS
}

impl Config {
    /// The embedded store's settings: `{data_dir}/store`.
    pub(crate) fn embedded(&self) -> tripline_store::EmbeddedConfig {
        tripline_store::EmbeddedConfig {
            path: self.data_dir.join("store"),
            retention_s: u64::from(self.retention_days) * 86_400,
            rejection_retention_s: u64::from(self.rejection_retention_days) * 86_400,
        }
    }

    /// The ScyllaDB settings with the retentions applied.
    pub(crate) fn scylla(&self) -> ScyllaConfig {
        ScyllaConfig {
            retention_s: u64::from(self.retention_days) * 86_400,
            rejection_retention_s: u64::from(self.rejection_retention_days) * 86_400,
            ..self.scylla.clone()
        }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./tripline-data")
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: default_data_dir(),
            regions: None,
            enrich: EnrichConfig::default(),
            store: default_store(),
            scylla: ScyllaConfig::default(),
            retention_days: default_retention_days(),
            rejection_retention_days: default_rejection_retention_days(),
            mqtt: MqttConfig::default(),
            ingest: IngestConfig::default(),
            indexer: IndexerConfig::default(),
            http: HttpConfig::default(),
            push: PushConfig::default(),
            ui: tripline_query_api::UiConfig::default(),
        }
    }
}

/// Loads the configuration; the error is one line for stderr.
pub(crate) fn load(file: Option<&Path>) -> Result<Config, String> {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    match file {
        Some(path) if !path.is_file() => return Err(format!("config file {} does not exist", path.display())),
        Some(path) => figment = figment.merge(Toml::file(path)),
        None if Path::new("tripline.toml").is_file() => figment = figment.merge(Toml::file("tripline.toml")),
        None => {}
    }
    let env = Env::prefixed("TRIPLINE_")
        .filter(|key| {
            let key = key.as_str().to_ascii_lowercase();
            let first = key.split("__").next().unwrap_or_default().to_owned();
            KEYS.contains(&first.as_str())
        })
        .split("__");
    let config: Config = figment.merge(env).extract().map_err(|error| format!("configuration: {error}"))?;
    config.ui.validate().map_err(|error| format!("configuration: ui: {error}"))?;
    Ok(config)
}

/// Creates `dir` (and its parents) if needed and makes it private to its owner (0700): it holds
/// the embedded store, the index and the admin token.
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    Ok(())
}

/// Writes `bytes` to `path` readable by its owner only (0600, also when the file existed
/// before), through a temporary file renamed into place.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    std::io::Write::write_all(&mut options.open(&tmp)?, bytes)?;
    #[cfg(unix)]
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    std::fs::rename(&tmp, path)
}

/// The broker of an `mqtt://` or `mqtts://` url.
pub(crate) fn mqtt_endpoint(url: &str) -> Result<BrokerUrl, Failure> {
    BrokerUrl::parse(url).map_err(Failure::Usage)
}

/// Opens the configured write store.
pub(crate) async fn open_store(config: &Config) -> Result<AnyStore, Failure> {
    Ok(match config.store {
        StoreKind::Embedded => {
            private_dir(&config.data_dir).with_context(|| format!("data directory {}", config.data_dir.display()))?;
            let embedded = config.embedded();
            AnyStore::Embedded(EmbeddedStore::open(&embedded).map_err(|e| {
                Failure::Runtime(anyhow::anyhow!(
                    "embedded store in {}: {e} (only one process can open it: is `tripline run` using it?)",
                    embedded.path.display()
                ))
            })?)
        }
        StoreKind::Scylla => AnyStore::Scylla(ScyllaStore::connect(&config.scylla()).await.context("scylla")?),
    })
}
