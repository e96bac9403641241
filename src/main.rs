//! The `tripline` binary: command line, configuration, logging, and the wiring of the roles.
//! Nothing else lives here; every stage is a library crate.

/// jemalloc instead of glibc's malloc: the pipeline allocates and frees many small buffers per
/// message on several threads; with glibc's arenas `tripline bench` (embedded) took a fifth
/// fewer points per second at a fifth more peak memory (docs/benchmarks.md, "Allocator"). Its
/// settings are in `.cargo/config.toml`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod admin;
mod bench;
mod config;
mod demo;
mod fleet;
mod ops;
mod reindex;
mod remote;
mod replay;
mod run;
mod schema;
mod summarize;
mod webhook;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tripline_enrich::{Enricher, Regions};

/// Log filter without `TRIPLINE_LOG`: tripline at info; the embedded store only when something is
/// wrong (it logs its background work); the index's segment manager warns when a merge finishes
/// for segments a commit already replaced, which is harmless; the ScyllaDB driver's connections
/// only when something is wrong (on Cassandra each one says at info that it got no shard
/// information), its cluster's changes (nodes added, removed) at info.
const DEFAULT_LOG: &str =
    "info,lsm_tree=warn,fjall=warn,tantivy::indexer::segment_manager=error,scylla::network::connection=warn";

/// The sample regions bundled with tripline, used when no `regions` file is configured.
const BUNDLED_REGIONS: &str = include_str!("../fixtures/regions.geojson");

/// tripline: telematics trips in over MQTT, enriched, stored, searchable.
#[derive(Debug, Parser)]
#[command(name = "tripline", version, about, long_about = None)]
struct Cli {
    /// Configuration file (TOML); default `./tripline.toml` when present.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enrich trip files offline (CSV, JSON Lines, GPX); one TripSummary JSON per line on stdout.
    Summarize {
        /// Trip files.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// The vehicle id of GPX files (GPX carries none).
        #[arg(long, value_name = "VEHICLE_ID")]
        vehicle: Option<String>,
        /// GeoJSON regions file, instead of the configured or bundled regions.
        #[arg(long, value_name = "FILE")]
        regions: Option<PathBuf>,
    },
    /// Run tripline's roles: MQTT ingest (the embedded endpoint unless `[mqtt] url` is set), the
    /// indexer and the query API, all by default.
    Run {
        /// Roles to run, comma-separated: ingest, indexer, api.
        #[arg(long, value_enum, value_delimiter = ',', default_value = "ingest,indexer,api")]
        roles: Vec<run::Role>,
        /// Also create a demo tenant, print its API key and a `curl` to try, and replay the
        /// bundled fixture trips into this process (once per data directory).
        #[arg(long)]
        demo: bool,
    },
    /// Publish trips from files (CSV, JSON Lines, GPX) over MQTT as vehicles would.
    Replay {
        /// Trip files.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Time factor against the recording (2: twice as fast), or `max`: as fast as the broker
        /// acknowledges.
        #[arg(long, default_value = "max", value_parser = replay::parse_speed)]
        speed: replay::Speed,
        /// Publish each trip as N vehicles (`{vehicle}-1` … `{vehicle}-N`, trip ids likewise).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        vehicles: u32,
        /// Shift each trip's times so that it ends when the replay ends.
        #[arg(long)]
        rebase_time: bool,
        /// Points per message.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
        per_message: u32,
        /// The vehicle id of GPX files (GPX carries none).
        #[arg(long, value_name = "VEHICLE_ID")]
        vehicle: Option<String>,
        /// The broker, `mqtt://host:port` (default: `[mqtt] url`, else the embedded endpoint's
        /// `[mqtt] listen`).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Vehicle secrets: a CSV file `vehicle_id,secret`, as `tripline fleet add|import` print it.
        #[arg(long, value_name = "FILE")]
        credentials: Option<PathBuf>,
    },
    /// Load generator and measurement: a simulated fleet against a `tripline run` of this binary,
    /// and the store-only ceiling, in one run.
    Bench {
        /// Simulated vehicles.
        #[arg(long, default_value_t = 100)]
        vehicles: usize,
        /// Messages per vehicle in the throughput phase.
        #[arg(long, default_value_t = 300)]
        messages: usize,
        /// Points per message (1 Hz samples).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
        points: u32,
        /// Load during the freshness probes, points/s, or `half`: half the measured maximum.
        #[arg(long, default_value = "half", value_parser = bench_rate)]
        rate: BenchRate,
        /// How long to probe freshness, seconds.
        #[arg(long, default_value_t = 30)]
        probe_seconds: u64,
        /// Seed of the simulated fleet.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Store to measure: embedded (in a temporary folder) or scylla (`[scylla]` of the
        /// configuration).
        #[arg(long, value_enum, default_value = "embedded")]
        store: config::StoreKind,
        /// An external broker, `mqtt://host:port` (default: `[mqtt] url`, else the embedded one).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// At the end, connect this many more vehicles that stay idle and report the process's
        /// memory per connection.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=15_000))]
        idle_vehicles: u32,
        /// Live streams held open during the freshness probes (each probe's `trip.started` is
        /// timed to every one, and to a webhook); 0: push is not measured.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(0..=4000))]
        streams: u32,
        /// Print one JSON object instead of the report.
        #[arg(long)]
        json: bool,
    },
    /// Tenants (insurers, fleets) and their API keys.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Register vehicles to tenants.
    Fleet {
        #[command(subcommand)]
        command: FleetCommand,
    },
    /// Webhooks: a tenant's trip and event messages POSTed to its receivers, signed (Standard
    /// Webhooks headers).
    Webhook {
        #[command(subcommand)]
        command: WebhookCommand,
    },
    /// Rebuild the read store (the search index) from the write store; the old index answers
    /// until the new one is complete.
    Reindex,
    /// The ScyllaDB schema.
    Schema {
        #[command(subcommand)]
        command: SchemaCommand,
    },
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Create a tenant; prints its new API key once, alone on stdout (only a hash is stored).
    Create {
        /// The tenant's name (1-64 chars of [A-Za-z0-9._:-]).
        name: String,
    },
    /// Give a tenant a new API key, printed once; the old one stops working.
    RotateKey {
        /// The tenant.
        name: String,
    },
    /// Remove a tenant's API key: every request with it answers 401 (until `rotate-key`).
    RevokeKey {
        /// The tenant.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum FleetCommand {
    /// Register vehicles to a tenant (idempotent; a vehicle of another tenant is an error) and issue
    /// each one without a secret its secret (printed once as CSV `vehicle_id,secret`).
    Add {
        /// The tenant.
        #[arg(long, value_name = "NAME")]
        tenant: String,
        /// Vehicle ids.
        #[arg(required = true, value_name = "VEHICLE_ID")]
        vehicles: Vec<String>,
    },
    /// Register vehicles from a CSV file with the columns `tenant,vehicle_id`.
    Import {
        /// The CSV file.
        file: PathBuf,
    },
    /// Issue vehicles new secrets (printed once as CSV `vehicle_id,secret`); the old ones stop
    /// working.
    RotateSecret {
        /// Vehicle ids.
        #[arg(required = true, value_name = "VEHICLE_ID")]
        vehicles: Vec<String>,
    },
    /// Write Mosquitto's password and ACL files for the fleet and tripline's own account
    /// (`[mqtt] username`, `password`), so an external Mosquitto enforces the same rules.
    Export {
        /// The folder for `passwords`, `acl` and `listener.conf`.
        #[arg(long, value_name = "DIR")]
        mosquitto: PathBuf,
    },
    /// Remove vehicles' secrets: they can no longer connect (their data stays).
    Revoke {
        /// Vehicle ids.
        #[arg(required = true, value_name = "VEHICLE_ID")]
        vehicles: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum WebhookCommand {
    /// Add a webhook: the tenant's messages from now on are POSTed to URL; prints
    /// `webhook_id,secret` once (the secret signs every request).
    Add {
        /// The tenant.
        #[arg(long, value_name = "NAME")]
        tenant: String,
        /// The receiver (`https://…`; an internal address only if `[push] webhook_allowed_networks`
        /// names it).
        #[arg(long)]
        url: String,
        /// Only these message types (repeatable or comma-separated): trip.started, trip.updated,
        /// trip.completed, event.detected; default all.
        #[arg(long = "events", value_name = "TYPE", value_delimiter = ',')]
        events: Vec<String>,
        /// Only these vehicles' messages (repeatable or comma-separated); default all the tenant's.
        #[arg(long = "vehicle", value_name = "VEHICLE_ID", value_delimiter = ',')]
        vehicles: Vec<String>,
    },
    /// List webhooks (one JSON object per line, no secrets).
    List {
        /// Only this tenant's.
        #[arg(long, value_name = "NAME")]
        tenant: Option<String>,
    },
    /// Remove a webhook and the messages waiting for it.
    Remove {
        /// The webhook's id.
        id: String,
    },
    /// Give a webhook a new signing secret, printed once; the old one signs beside it for
    /// `[push] webhook_rotation_overlap_h`.
    RotateSecret {
        /// The webhook's id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum SchemaCommand {
    /// Create or migrate the keyspace and tables (idempotent).
    Apply,
}

/// `tripline bench --rate`: points/s, or half the measured maximum.
#[derive(Clone, Copy, Debug)]
struct BenchRate(Option<f64>);

fn bench_rate(text: &str) -> Result<BenchRate, String> {
    if text == "half" {
        return Ok(BenchRate(None));
    }
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(BenchRate(Some(v))),
        _ => Err(format!("points/s or `half`, not {text:?}")),
    }
}

/// How a command failed: decides the exit code (1 runtime, 2 usage or configuration).
#[derive(Debug)]
pub(crate) enum Failure {
    Usage(String),
    Runtime(anyhow::Error),
}

/// Errors with context (`anyhow::Context`) are runtime failures.
impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure::Runtime(error)
    }
}

/// The regions' GeoJSON: the file `regions_flag` or `[regions]` names, else the bundled sample.
fn regions_geojson(config: &config::Config, regions_flag: Option<&PathBuf>) -> Result<String, Failure> {
    match regions_flag.or(config.regions.as_ref()) {
        Some(path) => {
            std::fs::read_to_string(path).map_err(|e| Failure::Usage(format!("regions file {}: {e}", path.display())))
        }
        None => Ok(BUNDLED_REGIONS.to_owned()),
    }
}

fn enricher(config: &config::Config, regions_flag: Option<&PathBuf>) -> Result<Enricher, Failure> {
    enricher_over(config, regions_flag, &regions_geojson(config, regions_flag)?)
}

/// The engine over the regions of `text` (read from `regions_flag`, `[regions]` or the bundled
/// sample: named in errors).
fn enricher_over(config: &config::Config, regions_flag: Option<&PathBuf>, text: &str) -> Result<Enricher, Failure> {
    let regions = Regions::from_geojson(text).map_err(|e| {
        let source =
            regions_flag.or(config.regions.as_ref()).map_or("bundled regions".into(), |p| p.display().to_string());
        Failure::Usage(format!("{source}: {e}"))
    })?;
    Enricher::new(config.enrich.clone(), regions).map_err(|e| Failure::Usage(e.to_string()))
}

fn run(cli: Cli) -> Result<(), Failure> {
    let config = config::load(cli.config.as_deref()).map_err(Failure::Usage)?;
    match cli.command {
        Command::Summarize { files, vehicle, regions } => {
            let engine = enricher(&config, regions.as_ref())?;
            summarize::run(&files, vehicle.as_deref(), &engine)
        }
        Command::Schema { command: SchemaCommand::Apply } => schema::apply(&config),
        Command::Reindex => reindex::run(&config),
        Command::Bench {
            vehicles,
            messages,
            points,
            rate,
            probe_seconds,
            seed,
            store,
            url,
            json,
            idle_vehicles,
            streams,
        } => {
            let options = bench::BenchOptions {
                vehicles: vehicles.max(1),
                messages: messages.max(1),
                points: points as usize,
                rate: rate.0,
                probe_seconds,
                seed,
                store,
                url,
                json,
                idle_vehicles: idle_vehicles as usize,
                streams: streams as usize,
            };
            bench::run(&config, &options)
        }
        Command::Replay { files, speed, vehicles, rebase_time, per_message, vehicle, url, credentials } => {
            let options = replay::ReplayOptions {
                speed: speed.0,
                vehicles: vehicles as usize,
                rebase_time,
                per_message: per_message as usize,
                gpx_vehicle: vehicle,
                url,
                credentials,
            };
            replay::run(&config, &files, &options)
        }
        Command::Tenant { command: TenantCommand::Create { name } } => fleet::create_tenant(&config, &name),
        Command::Tenant { command: TenantCommand::RotateKey { name } } => fleet::replace_api_key(&config, &name, true),
        Command::Tenant { command: TenantCommand::RevokeKey { name } } => fleet::replace_api_key(&config, &name, false),
        Command::Fleet { command: FleetCommand::Add { tenant, vehicles } } => fleet::add(&config, &tenant, &vehicles),
        Command::Fleet { command: FleetCommand::Import { file } } => fleet::import(&config, &file),
        Command::Fleet { command: FleetCommand::RotateSecret { vehicles } } => fleet::rotate_secret(&config, &vehicles),
        Command::Fleet { command: FleetCommand::Revoke { vehicles } } => fleet::revoke(&config, &vehicles),
        Command::Fleet { command: FleetCommand::Export { mosquitto } } => fleet::export_mosquitto(&config, &mosquitto),
        Command::Webhook { command: WebhookCommand::Add { tenant, url, events, vehicles } } => {
            webhook::add(&config, &tenant, &url, &events, &vehicles)
        }
        Command::Webhook { command: WebhookCommand::List { tenant } } => webhook::list(&config, tenant.as_deref()),
        Command::Webhook { command: WebhookCommand::Remove { id } } => webhook::remove(&config, &id),
        Command::Webhook { command: WebhookCommand::RotateSecret { id } } => webhook::rotate_secret(&config, &id),
        Command::Run { roles, demo } => {
            // Read once: the engine cuts by the regions, the trip explorer draws them.
            let regions = regions_geojson(&config, None)?;
            let engine = enricher_over(&config, None, &regions)?;
            run::run(&config, &roles, engine, regions, demo)
        }
    }
}

/// A random token: 32 bytes in hex (made as a vehicle secret is).
pub(crate) fn random_hex() -> Result<String, Failure> {
    Ok(tripline_ingest::credentials::new_secret().context("no randomness")?)
}

/// A runtime for the commands that talk to services.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| Failure::Runtime(e.into()))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // clap prints help and version itself; everything else is a usage error (exit 2).
            let _ = error.print();
            return if error.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRIPLINE_LOG").unwrap_or_else(|_| DEFAULT_LOG.into()),
        )
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(reason)) => {
            eprintln!("tripline: {reason}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(error)) => {
            eprintln!("tripline: {error:#}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
