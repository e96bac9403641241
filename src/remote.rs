//! The admin channel's client end, and what both ends share: a command reaches the running
//! `tripline run` of its data directory through `data_dir/admin.json` (its admin listener and
//! token), sends the requests below, and falls back to opening the store itself when no process
//! answers. The server end is `admin.rs`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::Failure;

/// What `run` publishes in `data_dir/admin.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct AdminFile {
    /// `host:port` of the process's admin listener.
    pub(crate) http: String,
    /// The bearer token of `/admin/v1/…`.
    pub(crate) token: String,
    /// The process id, for operators.
    pub(crate) pid: u32,
}

pub(crate) fn admin_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.json")
}

/// Where the last rebuild is.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RebuildState {
    /// None started since the process started.
    #[default]
    Idle,
    Running,
    Done,
    Failed,
}

/// The state of the last rebuild, as `GET /admin/v1/reindex` answers it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct RebuildStatus {
    pub(crate) state: RebuildState,
    /// Trips written into the new generation so far.
    pub(crate) trips: u64,
    /// Trips in the index in use when the rebuild started (for a progress estimate).
    pub(crate) estimate: u64,
    /// The generation built (when done).
    pub(crate) generation: Option<String>,
    /// Trips per second (when done).
    pub(crate) rate: Option<f64>,
    /// Why it failed.
    pub(crate) error: Option<String>,
}

/// `POST /admin/v1/tenants`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct NewTenant {
    pub(crate) name: String,
    pub(crate) api_key_hash: String,
}

/// `POST /admin/v1/tenant-keys`: a tenant's new key hash, or none (revoked).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct NewKey {
    pub(crate) tenant: String,
    pub(crate) api_key_hash: Option<String>,
}

/// `POST /admin/v1/vehicles`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct NewVehicles {
    pub(crate) tenant: String,
    pub(crate) vehicle_ids: Vec<String>,
}

/// Secret hashes to store (`None` removes one); the vehicle ids are answered with those set.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct NewSecrets {
    pub(crate) secrets: Vec<(String, Option<String>)>,
    /// Set only where a vehicle has no secret yet.
    pub(crate) only_missing: bool,
}

/// A running `tripline run` reached through its `admin.json`.
#[derive(Debug)]
pub(crate) struct Remote {
    base: String,
    token: String,
    agent: ureq::Agent,
}

/// What a remote call answered that was not success.
#[derive(Debug)]
pub(crate) enum RemoteError {
    /// Nobody answers there: the process is gone.
    Unreachable,
    /// The process refused: status and reason.
    Refused(u16, String),
}

impl Remote {
    /// The running process publishing `admin.json` in `data_dir`, if there is one.
    pub(crate) fn find(data_dir: &Path) -> Option<Remote> {
        let text = std::fs::read_to_string(admin_path(data_dir)).ok()?;
        let file: AdminFile = serde_json::from_str(&text).ok()?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .new_agent();
        Some(Remote { base: format!("http://{}", file.http), token: file.token, agent })
    }

    fn call<T: Serialize>(&self, method: &str, path: &str, body: Option<&T>) -> Result<String, RemoteError> {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", self.token);
        let response = match (method, body) {
            ("POST", Some(body)) => self.agent.post(&url).header("Authorization", &auth).send_json(body),
            ("POST", None) => self.agent.post(&url).header("Authorization", &auth).send_empty(),
            _ => self.agent.get(&url).header("Authorization", &auth).call(),
        };
        let mut response = response.map_err(|_| RemoteError::Unreachable)?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        if (200..300).contains(&status) {
            return Ok(text);
        }
        if status == 401 || status == 404 {
            // Another program on that port, or a process of an older run: not ours.
            return Err(RemoteError::Unreachable);
        }
        let reason = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or(text);
        Err(RemoteError::Refused(status, reason))
    }

    pub(crate) fn create_tenant(&self, name: &str, api_key_hash: &str) -> Result<(), RemoteError> {
        let body = NewTenant { name: name.to_owned(), api_key_hash: api_key_hash.to_owned() };
        self.call("POST", "/admin/v1/tenants", Some(&body)).map(drop)
    }

    pub(crate) fn replace_api_key(&self, tenant: &str, api_key_hash: Option<&str>) -> Result<(), RemoteError> {
        let body = NewKey { tenant: tenant.to_owned(), api_key_hash: api_key_hash.map(str::to_owned) };
        self.call("POST", "/admin/v1/tenant-keys", Some(&body)).map(drop)
    }

    pub(crate) fn add_vehicles(&self, tenant: &str, vehicles: &[String]) -> Result<(), RemoteError> {
        let body = NewVehicles { tenant: tenant.to_owned(), vehicle_ids: vehicles.to_vec() };
        self.call("POST", "/admin/v1/vehicles", Some(&body)).map(drop)
    }

    pub(crate) fn set_vehicle_secrets(&self, body: &NewSecrets) -> Result<Vec<String>, RemoteError> {
        let text = self.call("POST", "/admin/v1/vehicle-secrets", Some(body))?;
        serde_json::from_str(&text).map_err(|e| RemoteError::Refused(200, e.to_string()))
    }

    pub(crate) fn broker_hashes(&self) -> Result<Vec<(String, Option<String>)>, RemoteError> {
        let text = self.call::<()>("GET", "/admin/v1/vehicle-secrets", None)?;
        serde_json::from_str(&text).map_err(|e| RemoteError::Refused(200, e.to_string()))
    }

    pub(crate) fn vehicles_without_secret(&self, ids: &[String]) -> Result<Vec<String>, RemoteError> {
        let text = self.call("POST", "/admin/v1/vehicle-secrets/missing", Some(&ids.to_vec()))?;
        serde_json::from_str(&text).map_err(|e| RemoteError::Refused(200, e.to_string()))
    }

    /// `POST /admin/v1/webhooks` with a webhook operation; its answer.
    pub(crate) fn webhook<Op: Serialize, Answer: DeserializeOwned>(&self, op: &Op) -> Result<Answer, RemoteError> {
        let text = self.call("POST", "/admin/v1/webhooks", Some(op))?;
        serde_json::from_str(&text).map_err(|e| RemoteError::Refused(200, e.to_string()))
    }

    pub(crate) fn start_reindex(&self) -> Result<RebuildStatus, RemoteError> {
        let text = self.call::<()>("POST", "/admin/v1/reindex", None)?;
        serde_json::from_str(&text).map_err(|e| RemoteError::Refused(200, e.to_string()))
    }

    pub(crate) fn reindex_status(&self) -> Result<RebuildStatus, RemoteError> {
        let text = self.call::<()>("GET", "/admin/v1/reindex", None)?;
        serde_json::from_str(&text).map_err(|e| RemoteError::Refused(200, e.to_string()))
    }
}

/// Runs `op` through the running process publishing `admin.json` in `data_dir`; `None` when no
/// such process answers (the caller opens the store itself).
pub(crate) fn through_running<T>(
    data_dir: &Path,
    op: impl FnOnce(&Remote) -> Result<T, RemoteError>,
) -> Option<Result<T, Failure>> {
    let remote = Remote::find(data_dir)?;
    match op(&remote) {
        Ok(value) => Some(Ok(value)),
        Err(RemoteError::Unreachable) => None,
        // Bad input is a usage error, as it is without a running process.
        Err(RemoteError::Refused(400, reason)) => Some(Err(Failure::Usage(reason))),
        Err(RemoteError::Refused(_, reason)) => Some(Err(Failure::Runtime(anyhow::anyhow!(reason)))),
    }
}
