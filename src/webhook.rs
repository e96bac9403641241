//! `tripline webhook add|list|remove|rotate-secret`: a tenant's webhooks. The signing secret is
//! printed once (stdout, CSV `webhook_id,secret` for `add`, the secret alone for
//! `rotate-secret`); a rotated secret goes on signing beside the new one for
//! `[push] webhook_rotation_overlap_h`. While `tripline run` uses an embedded store, the commands
//! go through it (the admin channel); otherwise they open the store.

use serde::{Deserialize, Serialize};
use tripline_model::time::now_ms;
use tripline_model::{NoticeKind, TenantId, VehicleId};
use tripline_store::{AnyStore, ChangeFeed, Registry, StoreError, Webhook, WebhookStore};

use crate::config::Config;
use crate::remote::through_running;
use crate::{Failure, runtime};

/// A webhook operation, as the command asks it (also over the admin channel).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WebhookOp {
    /// A new webhook of `tenant`.
    Add { tenant: String, url: String, types: Vec<String>, vehicles: Vec<String> },
    /// The webhooks (of one tenant).
    List { tenant: Option<String> },
    /// Remove one.
    Remove { id: String },
    /// A new secret; the old one signs beside it for `overlap_s`.
    RotateSecret { id: String, overlap_s: u64 },
}

/// A webhook as `list` shows it (no secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WebhookView {
    id: String,
    tenant: String,
    url: String,
    types: Vec<String>,
    vehicles: Vec<String>,
    created_at: String,
}

/// What an operation answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WebhookAnswer {
    /// Made (or given a new secret): its id and secret.
    Secret { id: String, secret: String },
    /// The webhooks.
    Listed(Vec<WebhookView>),
    /// Removed.
    Removed,
}

/// Why an operation was refused: bad input (exit 2), the store or no randomness for an id or
/// secret (exit 1).
#[derive(Debug)]
pub(crate) enum OpError {
    Usage(String),
    NotFound(String),
    Store(StoreError),
    Push(tripline_push::PushError),
}

impl From<StoreError> for OpError {
    fn from(error: StoreError) -> Self {
        OpError::Store(error)
    }
}

impl From<tripline_push::PushError> for OpError {
    fn from(error: tripline_push::PushError) -> Self {
        OpError::Push(error)
    }
}

impl From<OpError> for Failure {
    fn from(error: OpError) -> Self {
        match error {
            OpError::Usage(reason) | OpError::NotFound(reason) => Failure::Usage(reason),
            OpError::Store(error) => Failure::Runtime(error.into()),
            OpError::Push(error) => Failure::Runtime(error.into()),
        }
    }
}

/// Applies `op` to `store`.
pub(crate) async fn apply(store: &AnyStore, op: WebhookOp) -> Result<WebhookAnswer, OpError> {
    let usage = |e: String| OpError::Usage(e);
    match op {
        WebhookOp::Add { tenant, url, types, vehicles } => {
            let tenant = TenantId::parse(&tenant).map_err(|e| usage(format!("tenant {tenant:?}: {e}")))?;
            if !store.tenant_exists(&tenant).await? {
                return Err(OpError::NotFound(format!("unknown tenant {tenant}")));
            }
            let types = types
                .iter()
                .map(|t| {
                    NoticeKind::parse(t).ok_or_else(|| {
                        usage(format!(
                            "event type {t:?}: expected trip.started, trip.updated, trip.completed or event.detected"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let vehicles = vehicles
                .iter()
                .map(|v| VehicleId::parse(v).map_err(|e| usage(format!("vehicle id {v:?}: {e}"))))
                .collect::<Result<Vec<_>, _>>()?;
            let webhook = Webhook {
                id: tripline_push::new_webhook_id()?,
                tenant,
                url,
                types,
                vehicles,
                secret: tripline_push::new_secret()?,
                previous_secret: None,
                previous_until_ms: 0,
                created_at_ms: now_ms(),
            };
            // It receives what is written from now on.
            let head = store.feed_head().await?;
            store.put_webhook(&webhook, &head).await?;
            Ok(WebhookAnswer::Secret { id: webhook.id, secret: webhook.secret })
        }
        WebhookOp::List { tenant } => {
            let mut webhooks = store.webhooks().await?;
            webhooks.retain(|w| tenant.as_deref().is_none_or(|t| w.tenant.as_str() == t));
            webhooks.sort_by(|a, b| (a.tenant.as_str(), a.created_at_ms).cmp(&(b.tenant.as_str(), b.created_at_ms)));
            Ok(WebhookAnswer::Listed(
                webhooks
                    .into_iter()
                    .map(|w| WebhookView {
                        id: w.id,
                        tenant: w.tenant.as_str().to_owned(),
                        url: w.url,
                        types: w.types.iter().map(|t| t.as_str().to_owned()).collect(),
                        vehicles: w.vehicles.iter().map(|v| v.as_str().to_owned()).collect(),
                        created_at: tripline_model::time::format_rfc3339_ms(w.created_at_ms),
                    })
                    .collect(),
            ))
        }
        WebhookOp::Remove { id } => match store.remove_webhook(&id).await? {
            Some(_) => Ok(WebhookAnswer::Removed),
            None => Err(OpError::NotFound(format!("no webhook {id}"))),
        },
        WebhookOp::RotateSecret { id, overlap_s } => {
            let webhooks = store.webhooks().await?;
            let Some(old) = webhooks.into_iter().find(|w| w.id == id) else {
                return Err(OpError::NotFound(format!("no webhook {id}")));
            };
            let secret = tripline_push::new_secret()?;
            let overlap_ms = i64::try_from(overlap_s.saturating_mul(1000)).unwrap_or(i64::MAX);
            let rotated = Webhook {
                secret: secret.clone(),
                previous_secret: Some(old.secret.clone()),
                previous_until_ms: now_ms().saturating_add(overlap_ms),
                ..old
            };
            store.put_webhook(&rotated, &tripline_store::Checkpoint::default()).await?;
            Ok(WebhookAnswer::Secret { id, secret })
        }
    }
}

/// Runs `op` through the running process, or on the store.
fn execute(config: &Config, op: WebhookOp) -> Result<WebhookAnswer, Failure> {
    match through_running(&config.data_dir, |remote| remote.webhook(&op)) {
        Some(outcome) => outcome,
        None => runtime()?.block_on(async {
            let store = crate::config::open_store(config).await?;
            apply(&store, op).await.map_err(Failure::from)
        }),
    }
}

/// `tripline webhook add --tenant NAME --url URL [--events …] [--vehicle …]`.
pub(crate) fn add(
    config: &Config,
    tenant: &str,
    url: &str,
    types: &[String],
    vehicles: &[String],
) -> Result<(), Failure> {
    let policy = config.push.address_policy().map_err(Failure::Usage)?;
    tripline_push::check_url(url, &policy).map_err(|e| Failure::Usage(e.to_string()))?;
    let op = WebhookOp::Add {
        tenant: tenant.to_owned(),
        url: url.to_owned(),
        types: types.to_vec(),
        vehicles: vehicles.to_vec(),
    };
    let WebhookAnswer::Secret { id, secret } = execute(config, op)? else {
        return Err(Failure::Runtime(anyhow::anyhow!("unexpected answer")));
    };
    eprintln!(
        "tripline: webhook {id} of tenant {tenant} posts to {url}; its id and signing secret follow (the secret is shown once)"
    );
    #[allow(clippy::print_stdout)] // the id and secret are the command's output
    {
        println!("{id},{secret}");
    }
    Ok(())
}

/// `tripline webhook list [--tenant NAME]`: one JSON object per line.
pub(crate) fn list(config: &Config, tenant: Option<&str>) -> Result<(), Failure> {
    let WebhookAnswer::Listed(webhooks) = execute(config, WebhookOp::List { tenant: tenant.map(str::to_owned) })?
    else {
        return Err(Failure::Runtime(anyhow::anyhow!("unexpected answer")));
    };
    #[allow(clippy::print_stdout)] // the list is the command's output
    for webhook in webhooks {
        println!("{}", serde_json::to_string(&webhook).map_err(|e| Failure::Runtime(e.into()))?);
    }
    Ok(())
}

/// `tripline webhook remove ID`: its outbox goes too.
pub(crate) fn remove(config: &Config, id: &str) -> Result<(), Failure> {
    execute(config, WebhookOp::Remove { id: id.to_owned() })?;
    eprintln!("tripline: webhook {id} removed; nothing more is sent to it");
    Ok(())
}

/// `tripline webhook rotate-secret ID`: the new secret alone on stdout.
pub(crate) fn rotate_secret(config: &Config, id: &str) -> Result<(), Failure> {
    let overlap_s = config.push.webhook_rotation_overlap_h.saturating_mul(3600);
    let WebhookAnswer::Secret { secret, .. } =
        execute(config, WebhookOp::RotateSecret { id: id.to_owned(), overlap_s })?
    else {
        return Err(Failure::Runtime(anyhow::anyhow!("unexpected answer")));
    };
    eprintln!(
        "tripline: webhook {id} has a new signing secret; it follows (shown once); the old one signs beside it for {} h",
        config.push.webhook_rotation_overlap_h
    );
    #[allow(clippy::print_stdout)] // the secret is the command's output
    {
        println!("{secret}");
    }
    Ok(())
}
