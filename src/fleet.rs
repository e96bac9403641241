//! `tripline tenant create` and `tripline fleet add|import|rotate-secret|revoke`: the registry of
//! tenants, their API keys and their vehicles with their secrets (of keys and secrets only a hash
//! is stored; each is printed once, on stdout).
//!
//! `add` and `import` issue a secret to each named vehicle that has none (registering a vehicle
//! again keeps its secret, so re-importing a fleet locks no device out); `rotate-secret` issues
//! new ones, `revoke` removes them (the vehicle can no longer connect; its data stays). Secrets
//! are printed as CSV `vehicle_id,secret`, which `tripline replay --credentials` reads.

use std::path::Path;

use anyhow::Context;
use tripline_model::{TenantId, VehicleId};
use tripline_store::{AnyStore, Registry, StoreError, StoreResult};

use crate::config::Config;
use crate::remote::{NewSecrets, through_running};
use crate::{Failure, runtime};

/// A new API key: `tl_` and 32 random bytes in hex.
pub(crate) fn new_api_key() -> Result<String, Failure> {
    Ok(format!("tl_{}", crate::random_hex()?))
}

fn registry_failure(error: StoreError) -> Failure {
    Failure::Runtime(error.into())
}

/// `tripline tenant create NAME`: prints the new key alone on stdout.
pub(crate) fn create_tenant(config: &Config, name: &str) -> Result<(), Failure> {
    let tenant = TenantId::parse(name).map_err(|e| Failure::Usage(format!("tenant name {name:?}: {e}")))?;
    let key = new_api_key()?;
    let hash = tripline_query_api::api_key_hash(&key);
    match through_running(&config.data_dir, |remote| remote.create_tenant(tenant.as_str(), &hash)) {
        Some(outcome) => outcome?,
        None => runtime()?.block_on(async {
            let store = crate::config::open_store(config).await?;
            store.create_tenant(&tenant, &hash).await.map_err(registry_failure)
        })?,
    }
    eprintln!("tripline: tenant {tenant} created; its API key follows (shown once, only its hash is stored)");
    #[allow(clippy::print_stdout)] // the key is the command's output
    {
        println!("{key}");
    }
    Ok(())
}

fn parse_vehicles(vehicles: &[String]) -> Result<Vec<VehicleId>, Failure> {
    vehicles.iter().map(|v| VehicleId::parse(v).map_err(|e| Failure::Usage(format!("vehicle id {v:?}: {e}")))).collect()
}

/// `tripline tenant rotate-key NAME` (a new key, printed once) and `tripline tenant revoke-key
/// NAME` (none): the old key answers 401 at once in a running process, and within the key cache's
/// lifetime (30 s) in API processes of other hosts.
pub(crate) fn replace_api_key(config: &Config, name: &str, rotate: bool) -> Result<(), Failure> {
    let tenant = TenantId::parse(name).map_err(|e| Failure::Usage(format!("tenant name {name:?}: {e}")))?;
    let key = if rotate { Some(new_api_key()?) } else { None };
    let hash = key.as_deref().map(tripline_query_api::api_key_hash);
    match through_running(&config.data_dir, |remote| remote.replace_api_key(tenant.as_str(), hash.as_deref())) {
        Some(outcome) => outcome?,
        None => runtime()?.block_on(async {
            let store = crate::config::open_store(config).await?;
            store.replace_api_key(&tenant, hash.as_deref()).await.map(drop).map_err(registry_failure)
        })?,
    }
    match key {
        Some(key) => {
            eprintln!(
                "tripline: tenant {tenant} has a new API key; it follows (shown once); the old one no longer works"
            );
            #[allow(clippy::print_stdout)] // the key is the command's output
            {
                println!("{key}");
            }
        }
        None => eprintln!("tripline: tenant {tenant}'s API key revoked: every request with it answers 401"),
    }
    Ok(())
}

/// `tripline fleet add --tenant NAME VEHICLE_ID…`.
pub(crate) fn add(config: &Config, tenant: &str, vehicles: &[String]) -> Result<(), Failure> {
    let tenant = TenantId::parse(tenant).map_err(|e| Failure::Usage(format!("tenant {tenant:?}: {e}")))?;
    let ids = parse_vehicles(vehicles)?;
    register_all(config, &[(tenant, ids.clone())])?;
    issue_secrets(config, &ids, Issue::Missing)
}

/// `tripline fleet rotate-secret VEHICLE_ID…`: new secrets, the old ones stop working.
pub(crate) fn rotate_secret(config: &Config, vehicles: &[String]) -> Result<(), Failure> {
    issue_secrets(config, &parse_vehicles(vehicles)?, Issue::All)
}

/// `tripline fleet revoke VEHICLE_ID…`: the vehicles can no longer connect.
pub(crate) fn revoke(config: &Config, vehicles: &[String]) -> Result<(), Failure> {
    let ids = parse_vehicles(vehicles)?;
    let secrets: Vec<(VehicleId, Option<String>)> = ids.iter().map(|v| (v.clone(), None)).collect();
    set_secrets(config, secrets, false)?;
    eprintln!(
        "tripline: {} vehicle(s) revoked: they can no longer connect (tripline fleet rotate-secret lets them in again)",
        ids.len()
    );
    Ok(())
}

/// Every vehicle's broker hash (`None` for a secret stored before broker hashes existed), by id.
pub(crate) async fn broker_hashes(store: &AnyStore) -> StoreResult<Vec<(String, Option<String>)>> {
    let mut hashes: Vec<(String, Option<String>)> = store
        .all_vehicle_secrets()
        .await?
        .into_iter()
        .map(|(vehicle, stored)| {
            let hash = tripline_ingest::credentials::stored_broker_hash(&stored).map(str::to_owned);
            (vehicle.as_str().to_owned(), hash)
        })
        .collect();
    hashes.sort();
    Ok(hashes)
}

/// `tripline fleet export --mosquitto DIR`: a Mosquitto password file (every vehicle with its
/// secret's broker hash, and tripline's own account of `[mqtt] username`/`password`), an ACL file
/// (tripline reads `vehicles/+/…`, each vehicle writes only `vehicles/{its id}/…`) and the lines
/// that make a Mosquitto listener use them, so a production Mosquitto enforces what the embedded
/// endpoint does.
pub(crate) fn export_mosquitto(config: &Config, dir: &Path) -> Result<(), Failure> {
    let (user, password) = config.mqtt.account().map_err(Failure::Usage)?.ok_or_else(|| {
        Failure::Usage("set [mqtt] password or password_file first: tripline's own account on the broker".to_owned())
    })?;
    let hashes = match through_running(&config.data_dir, |remote| remote.broker_hashes()) {
        Some(outcome) => outcome?,
        None => runtime()?.block_on(async {
            let store = crate::config::open_store(config).await?;
            broker_hashes(&store).await.map_err(registry_failure)
        })?,
    };
    let own = tripline_ingest::credentials::broker_hash(&password).context("hashing the broker password")?;
    let mut passwords = format!("{user}:{own}\n");
    let mut older = Vec::new();
    for (vehicle, hash) in &hashes {
        if vehicle == &user {
            return Err(Failure::Usage(format!("vehicle {vehicle} has tripline's own user name: set [mqtt] username")));
        }
        match hash {
            Some(hash) => passwords.push_str(&format!("{vehicle}:{hash}\n")),
            None => older.push(vehicle.as_str()),
        }
    }
    let acl = format!(
        "# Written by `tripline fleet export --mosquitto`.\n\
         # tripline's own account reads every vehicle's messages.\n\
         user {user}\n\
         topic read vehicles/+/telemetry\n\
         topic read vehicles/+/trips\n\
         \n\
         # Every other account is a vehicle (user name = vehicle id): it writes its own topics only.\n\
         pattern write vehicles/%u/telemetry\n\
         pattern write vehicles/%u/trips\n"
    );
    let absolute = std::path::absolute(dir).map_err(|e| Failure::Runtime(e.into()))?;
    let listener = format!(
        "# Written by `tripline fleet export --mosquitto`: settings of the listener vehicles and tripline use.\n\
         allow_anonymous false\n\
         password_file {passwords}\n\
         acl_file {acl}\n\
         # A client's id is its user name: nobody takes over another client's session, or tripline's.\n\
         use_username_as_clientid true\n",
        passwords = absolute.join("passwords").display(),
        acl = absolute.join("acl").display(),
    );
    let write = |name: &str, text: &str, private: bool| -> Result<(), Failure> {
        let path = dir.join(name);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, if private { 0o600 } else { 0o644 });
        options
            .open(&path)
            .and_then(|mut file| std::io::Write::write_all(&mut file, text.as_bytes()))
            .with_context(|| format!("writing {}", path.display()))
            .map_err(Failure::from)
    };
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    write("passwords", &passwords, true)?;
    write("acl", &acl, false)?;
    write("listener.conf", &listener, false)?;
    eprintln!(
        "tripline: {} vehicle(s) and tripline's account {user} written to {} (passwords, acl, listener.conf); \
         reload Mosquitto (SIGHUP) to apply",
        hashes.len() - older.len(),
        dir.display()
    );
    if !older.is_empty() {
        eprintln!(
            "tripline: {} vehicle(s) have secrets from before broker hashes and were left out; \
             `tripline fleet rotate-secret` them: {}",
            older.len(),
            older.join(" ")
        );
    }
    Ok(())
}

/// Which vehicles get a new secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Issue {
    /// Those without one.
    Missing,
    /// All named.
    All,
}

/// The vehicles of `vehicles` that have no secret.
pub(crate) async fn without_secret(store: &AnyStore, vehicles: &[VehicleId]) -> StoreResult<Vec<VehicleId>> {
    let mut missing = Vec::new();
    for vehicle in vehicles {
        if store.vehicle_secret(vehicle).await?.is_none() {
            missing.push(vehicle.clone());
        }
    }
    Ok(missing)
}

/// Stores secret hashes (with `only_missing`, only where a vehicle has none); returns the
/// vehicles whose secret was set.
pub(crate) async fn store_secrets(
    store: &AnyStore,
    secrets: Vec<(VehicleId, Option<String>)>,
    only_missing: bool,
) -> StoreResult<Vec<VehicleId>> {
    let secrets = if only_missing {
        let missing = without_secret(store, &secrets.iter().map(|(v, _)| v.clone()).collect::<Vec<_>>()).await?;
        secrets.into_iter().filter(|(v, _)| missing.contains(v)).collect()
    } else {
        secrets
    };
    store.set_vehicle_secrets(&secrets).await?;
    Ok(secrets.into_iter().map(|(v, _)| v).collect())
}

fn set_secrets(
    config: &Config,
    secrets: Vec<(VehicleId, Option<String>)>,
    only_missing: bool,
) -> Result<Vec<VehicleId>, Failure> {
    let body =
        NewSecrets { secrets: secrets.iter().map(|(v, s)| (v.as_str().to_owned(), s.clone())).collect(), only_missing };
    let remote = through_running(&config.data_dir, |remote| remote.set_vehicle_secrets(&body));
    match remote {
        Some(outcome) => outcome?.iter().map(|v| VehicleId::parse(v).map_err(|e| Failure::Runtime(e.into()))).collect(),
        None => runtime()?.block_on(async {
            let store = crate::config::open_store(config).await?;
            store_secrets(&store, secrets, only_missing).await.map_err(registry_failure)
        }),
    }
}

/// Issues secrets: hashes them (on every core: each hash takes tens of milliseconds on
/// purpose), stores the hashes and prints the secrets once, as CSV on stdout.
fn issue_secrets(config: &Config, vehicles: &[VehicleId], issue: Issue) -> Result<(), Failure> {
    let targets = match issue {
        Issue::All => vehicles.to_vec(),
        Issue::Missing => {
            let ids: Vec<String> = vehicles.iter().map(|v| v.as_str().to_owned()).collect();
            match through_running(&config.data_dir, |remote| remote.vehicles_without_secret(&ids)) {
                Some(outcome) => {
                    let missing = outcome?;
                    vehicles.iter().filter(|v| missing.iter().any(|m| m == v.as_str())).cloned().collect()
                }
                None => runtime()?.block_on(async {
                    let store = crate::config::open_store(config).await?;
                    without_secret(&store, vehicles).await.map_err(registry_failure)
                })?,
            }
        }
    };
    let issued = new_secrets(&targets)?;
    let hashes = issued.iter().map(|(v, _, hash)| (v.clone(), Some(hash.clone()))).collect();
    let set = set_secrets(config, hashes, issue == Issue::Missing)?;
    let kept = vehicles.len() - set.len();
    eprintln!(
        "tripline: {} secret(s) issued, shown once below (only their hashes are stored){}",
        set.len(),
        if kept > 0 {
            format!("; {kept} vehicle(s) kept their secret (tripline fleet rotate-secret issues a new one)")
        } else {
            String::new()
        }
    );
    #[allow(clippy::print_stdout)] // the secrets are the command's output
    {
        println!("vehicle_id,secret");
        for (vehicle, secret, _) in issued.iter().filter(|(v, _, _)| set.contains(v)) {
            println!("{vehicle},{secret}");
        }
    }
    Ok(())
}

/// New secrets with their hashes, hashed on every core.
pub(crate) fn new_secrets(vehicles: &[VehicleId]) -> Result<Vec<(VehicleId, String, String)>, Failure> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let per_thread = vehicles.len().div_ceil(cores).max(1);
    std::thread::scope(|scope| {
        let threads: Vec<_> = vehicles
            .chunks(per_thread)
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|vehicle| {
                            let secret = tripline_ingest::credentials::new_secret().context("no randomness")?;
                            let hash =
                                tripline_ingest::credentials::hash_secret(&secret).context("hashing a secret")?;
                            Ok((vehicle.clone(), secret, hash))
                        })
                        .collect::<Result<Vec<_>, Failure>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(vehicles.len());
        for thread in threads {
            out.extend(thread.join().map_err(|_| Failure::Runtime(anyhow::anyhow!("hashing secrets failed")))??);
        }
        Ok(out)
    })
}

/// Registers each tenant's vehicles, through the running process when there is one.
fn register_all(config: &Config, fleets: &[(TenantId, Vec<VehicleId>)]) -> Result<(), Failure> {
    let remote = through_running(&config.data_dir, |remote| {
        for (tenant, vehicles) in fleets {
            let ids: Vec<String> = vehicles.iter().map(|v| v.as_str().to_owned()).collect();
            remote.add_vehicles(tenant.as_str(), &ids)?;
            registered(tenant, vehicles);
        }
        Ok(())
    });
    match remote {
        Some(outcome) => outcome,
        None => runtime()?.block_on(async {
            let store = crate::config::open_store(config).await?;
            for (tenant, vehicles) in fleets {
                store.add_vehicles(tenant, vehicles).await.map_err(registry_failure)?;
                registered(tenant, vehicles);
            }
            Ok(())
        }),
    }
}

fn registered(tenant: &TenantId, vehicles: &[VehicleId]) {
    eprintln!("tripline: {} vehicle(s) registered to tenant {tenant}", vehicles.len());
}

/// Reads `tenant,vehicle_id` rows; every bad row is reported with its line, and nothing is
/// registered unless all rows are good.
pub(crate) fn parse_fleet_csv(text: &str) -> Result<Vec<(TenantId, VehicleId)>, Vec<String>> {
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(text.as_bytes());
    let headers = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => return Err(vec![format!("line 1: {e}")]),
    };
    let (Some(t), Some(v)) =
        (headers.iter().position(|h| h == "tenant"), headers.iter().position(|h| h == "vehicle_id"))
    else {
        return Err(vec!["line 1: the header must name the columns tenant and vehicle_id".to_owned()]);
    };
    let (mut rows, mut errors) = (Vec::new(), Vec::new());
    for (n, record) in reader.records().enumerate() {
        let line = n + 2;
        match record {
            Err(e) => errors.push(format!("line {line}: {e}")),
            Ok(record) => {
                let tenant = TenantId::parse(record.get(t).unwrap_or_default());
                let vehicle = VehicleId::parse(record.get(v).unwrap_or_default());
                match (tenant, vehicle) {
                    (Ok(tenant), Ok(vehicle)) => rows.push((tenant, vehicle)),
                    (Err(e), _) => errors.push(format!("line {line}: tenant: {e}")),
                    (_, Err(e)) => errors.push(format!("line {line}: vehicle_id: {e}")),
                }
            }
        }
    }
    if errors.is_empty() { Ok(rows) } else { Err(errors) }
}

/// `tripline fleet import FILE.csv`.
pub(crate) fn import(config: &Config, file: &Path) -> Result<(), Failure> {
    let text = std::fs::read_to_string(file).with_context(|| file.display().to_string())?;
    let rows = parse_fleet_csv(&text).map_err(|errors| {
        for error in &errors {
            eprintln!("tripline: {}: {error}", file.display());
        }
        Failure::Usage(format!("{}: {} bad row(s); nothing registered", file.display(), errors.len()))
    })?;
    let mut by_tenant: std::collections::BTreeMap<TenantId, Vec<VehicleId>> = std::collections::BTreeMap::new();
    for (tenant, vehicle) in rows {
        by_tenant.entry(tenant).or_default().push(vehicle);
    }
    let fleets = by_tenant.into_iter().collect::<Vec<_>>();
    register_all(config, &fleets)?;
    let vehicles: Vec<VehicleId> = fleets.into_iter().flat_map(|(_, vehicles)| vehicles).collect();
    issue_secrets(config, &vehicles, Issue::Missing)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn fleet_files_are_read_whole_or_refused_with_every_bad_line() {
        let rows = parse_fleet_csv("tenant,vehicle_id\nacme, car-1\nglobex,car-2\n").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].1.as_str(), "car-1");
        let errors = parse_fleet_csv("vehicle_id,tenant\ncar 1,acme\ncar-2,\ncar-3,acme\n").unwrap_err();
        assert_eq!(errors.len(), 2);
        assert!(errors[0].starts_with("line 2: vehicle_id") && errors[1].starts_with("line 3: tenant"), "{errors:?}");
        assert!(parse_fleet_csv("name,id\nacme,car-1\n").is_err());
    }

    #[test]
    fn keys_are_long_and_different() {
        let (a, b) = (new_api_key().ok().unwrap(), new_api_key().ok().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 3 + 64);
    }
}
