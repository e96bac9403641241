//! Tenants, their API keys (hashed) and their vehicles on ScyllaDB.

use super::*;

impl Registry for ScyllaStore {
    async fn create_tenant(&self, tenant: &TenantId, api_key_hash: &str) -> StoreResult<()> {
        let s = &self.inner.statements;
        let result = self
            .execute("create tenant", &s.insert_tenant, (tenant.as_str().to_owned(), api_key_hash.to_owned(), now_ms()))
            .await?;
        if !applied("tenants", result)? {
            return Err(StoreError::TenantExists { tenant: tenant.clone() });
        }
        self.execute("create api key", &s.insert_api_key, (api_key_hash.to_owned(), tenant.as_str().to_owned()))
            .await?;
        Ok(())
    }

    async fn tenant_for_key(&self, api_key_hash: &str) -> StoreResult<Option<TenantId>> {
        let rows: Vec<(String,)> =
            self.rows("api key", &self.inner.statements.select_api_key, (api_key_hash.to_owned(),)).await?;
        rows.into_iter().next().map(|(t,)| TenantId::parse(&t).map_err(|e| corrupt("api_keys", e))).transpose()
    }

    async fn replace_api_key(&self, tenant: &TenantId, api_key_hash: Option<&str>) -> StoreResult<Option<String>> {
        let s = &self.inner.statements;
        let rows: Vec<(Option<String>,)> =
            self.rows("tenant key", &s.select_tenant_key, (tenant.as_str().to_owned(),)).await?;
        let Some((old,)) = rows.into_iter().next() else {
            return Err(StoreError::UnknownTenant { tenant: tenant.clone() });
        };
        let old = old.filter(|hash| !hash.is_empty());
        // The new key first: a crash between the steps leaves the old key working, never none.
        if let Some(hash) = api_key_hash {
            self.execute("set api key", &s.insert_api_key, (hash.to_owned(), tenant.as_str().to_owned())).await?;
        }
        self.execute(
            "set tenant key",
            &s.update_tenant_key,
            (api_key_hash.unwrap_or_default().to_owned(), tenant.as_str().to_owned()),
        )
        .await?;
        if let Some(old) = &old {
            self.execute("remove api key", &s.delete_api_key, (old.clone(),)).await?;
        }
        Ok(old)
    }

    async fn tenant_exists(&self, tenant: &TenantId) -> StoreResult<bool> {
        let rows: Vec<(String,)> =
            self.rows("tenant", &self.inner.statements.select_tenant, (tenant.as_str().to_owned(),)).await?;
        Ok(!rows.is_empty())
    }

    async fn add_vehicles(&self, tenant: &TenantId, vehicles: &[VehicleId]) -> StoreResult<()> {
        if !self.tenant_exists(tenant).await? {
            return Err(StoreError::UnknownTenant { tenant: tenant.clone() });
        }
        for vehicle in vehicles {
            if let Some(owner) = self.vehicle_tenant(vehicle).await?
                && &owner != tenant
            {
                return Err(StoreError::VehicleOwned { vehicle: vehicle.clone(), owner });
            }
        }
        // Each registration is a lightweight transaction (`IF NOT EXISTS`): of two concurrent
        // `fleet add` for one vehicle, one wins and the other learns the owner.
        let s = &self.inner.statements;
        let rows: Vec<(String, String)> =
            vehicles.iter().map(|v| (v.as_str().to_owned(), tenant.as_str().to_owned())).collect();
        let inserted: Vec<bool> = futures::stream::iter(rows)
            .map(|row| async move { applied("vehicles", self.execute("add vehicle", &s.insert_vehicle, row).await?) })
            .buffered(MAX_CONCURRENT_REQUESTS)
            .try_collect()
            .await?;
        for (vehicle, _) in vehicles.iter().zip(inserted).filter(|(_, inserted)| !inserted) {
            match self.vehicle_tenant(vehicle).await? {
                Some(owner) if &owner != tenant => {
                    return Err(StoreError::VehicleOwned { vehicle: vehicle.clone(), owner });
                }
                _ => {}
            }
        }
        Ok(())
    }

    async fn set_vehicle_secrets(&self, secrets: &[(VehicleId, Option<String>)]) -> StoreResult<()> {
        let s = &self.inner.statements;
        let ids: Vec<(String,)> = secrets.iter().map(|(v, _)| (v.as_str().to_owned(),)).collect();
        let owners: Vec<Vec<(String,)>> = futures::stream::iter(ids)
            .map(|id| self.rows("vehicle", &s.select_vehicle, id))
            .buffered(MAX_CONCURRENT_REQUESTS)
            .try_collect()
            .await?;
        if let Some(((vehicle, _), _)) = secrets.iter().zip(&owners).find(|(_, owner)| owner.is_empty()) {
            return Err(StoreError::UnknownVehicle { vehicle: vehicle.clone() });
        }
        let (set, removed): (Vec<_>, Vec<_>) = secrets.iter().partition(|(_, secret)| secret.is_some());
        let set: Vec<(String, String)> = set
            .into_iter()
            .filter_map(|(v, secret)| secret.clone().map(|hash| (v.as_str().to_owned(), hash)))
            .collect();
        let removed: Vec<(String,)> = removed.into_iter().map(|(v, _)| (v.as_str().to_owned(),)).collect();
        self.execute_each("set vehicle secret", &s.insert_vehicle_secret, set).await?;
        self.execute_each("remove vehicle secret", &s.delete_vehicle_secret, removed).await
    }

    async fn all_vehicle_secrets(&self) -> StoreResult<Vec<(VehicleId, String)>> {
        let rows: Vec<(String, Option<String>)> =
            self.rows("vehicle secrets", &self.inner.statements.select_all_vehicle_secrets, ()).await?;
        rows.into_iter()
            .filter_map(|(vehicle, hash)| hash.map(|hash| (vehicle, hash)))
            .map(|(vehicle, hash)| {
                VehicleId::parse(&vehicle).map(|v| (v, hash)).map_err(|e| corrupt("vehicle_secrets", e))
            })
            .collect()
    }

    async fn vehicle_secret(&self, vehicle: &VehicleId) -> StoreResult<Option<String>> {
        let rows: Vec<(Option<String>,)> = self
            .rows("vehicle secret", &self.inner.statements.select_vehicle_secret, (vehicle.as_str().to_owned(),))
            .await?;
        Ok(rows.into_iter().next().and_then(|(hash,)| hash))
    }

    async fn vehicle_tenant(&self, vehicle: &VehicleId) -> StoreResult<Option<TenantId>> {
        let rows: Vec<(String,)> =
            self.rows("vehicle", &self.inner.statements.select_vehicle, (vehicle.as_str().to_owned(),)).await?;
        rows.into_iter().next().map(|(t,)| TenantId::parse(&t).map_err(|e| corrupt("vehicles", e))).transpose()
    }
}

/// Whether a lightweight transaction applied: its result's first column, `[applied]` (the
/// columns after it, present when it did not apply, are the row that prevented it).
fn applied(table: &'static str, result: QueryResult) -> StoreResult<bool> {
    let rows = result.into_rows_result().map_err(|e| corrupt(table, e))?;
    let row: scylla::value::Row = rows.first_row().map_err(|e| corrupt(table, e))?;
    match row.columns.first() {
        Some(Some(scylla::value::CqlValue::Boolean(applied))) => Ok(*applied),
        other => Err(corrupt(table, format!("no [applied] column in a conditional write's answer: {other:?}"))),
    }
}
