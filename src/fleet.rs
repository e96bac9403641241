//! `tripline tenant create` and `tripline fleet add|import`: the registry of tenants, their API
//! keys (only a hash is stored) and their vehicles.

use std::path::Path;

use tripline_model::{TenantId, VehicleId};
use tripline_store::{Registry, StoreError};

use crate::admin::through_running;
use crate::config::Config;
use crate::{Failure, runtime};

/// A new API key: `tl_` and 32 random bytes in hex.
pub(crate) fn new_api_key() -> Result<String, Failure> {
    Ok(format!("tl_{}", crate::admin::random_hex()?))
}

fn registry_failure(error: StoreError) -> Failure {
    Failure::Runtime(anyhow::anyhow!("{error}"))
}

/// `tripline tenant create NAME`: prints the new key alone on stdout.
pub(crate) fn create_tenant(config: &Config, name: &str) -> Result<(), Failure> {
    let tenant = TenantId::parse(name).map_err(|e| Failure::Usage(format!("tenant name {name:?}: {e}")))?;
    let key = new_api_key()?;
    let hash = tripline_query_api::api_key_hash(&key);
    match through_running(&config.data_dir, |remote| remote.create_tenant(tenant.as_str(), &hash)) {
        Some(outcome) => outcome?,
        None => runtime()?.block_on(async {
            let store = crate::run::open_store(config).await?;
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

/// `tripline fleet add --tenant NAME VEHICLE_ID…`.
pub(crate) fn add(config: &Config, tenant: &str, vehicles: &[String]) -> Result<(), Failure> {
    let tenant = TenantId::parse(tenant).map_err(|e| Failure::Usage(format!("tenant {tenant:?}: {e}")))?;
    let ids = vehicles
        .iter()
        .map(|v| VehicleId::parse(v).map_err(|e| Failure::Usage(format!("vehicle id {v:?}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    register_all(config, &[(tenant, ids)])
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
            let store = crate::run::open_store(config).await?;
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
    let text =
        std::fs::read_to_string(file).map_err(|e| Failure::Runtime(anyhow::anyhow!("{}: {e}", file.display())))?;
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
    register_all(config, &by_tenant.into_iter().collect::<Vec<_>>())
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
