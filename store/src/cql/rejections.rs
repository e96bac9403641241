//! Rejected messages and points on ScyllaDB, newest first per tenant.

use super::*;

impl RejectionStore for ScyllaStore {
    async fn append_rejections(&self, rejections: &[Rejection]) -> StoreResult<()> {
        let s = &self.inner.statements;
        let ttl = self.inner.ttl_s;
        for rejection in rejections {
            let mut rejection = rejection.clone();
            let first: Vec<(i64,)> = self.rows("rejection id", &s.select_rejection_id, (rejection.id.clone(),)).await?;
            match first.first() {
                Some((at,)) => rejection.received_at_ms = *at,
                None => {
                    self.execute(
                        "rejection id",
                        &s.insert_rejection_id,
                        (rejection.id.clone(), rejection.received_at_ms, ttl),
                    )
                    .await?;
                }
            }
            let tenant = rejection.tenant.as_ref().map_or(UNOWNED, TenantId::as_str).to_owned();
            let day = day_of(rejection.received_at_ms);
            let json = serde_json::to_string(&rejection).map_err(|e| corrupt("rejections", e))?;
            self.execute(
                "rejection",
                &s.insert_rejection,
                (tenant.clone(), day, rejection.received_at_ms, rejection.id.clone(), json, ttl),
            )
            .await?;
            self.execute("rejection day", &s.insert_rejection_day, (tenant, day, ttl)).await?;
        }
        Ok(())
    }

    async fn rejections(
        &self,
        tenant: Option<&TenantId>,
        cursor: Option<&str>,
        limit: usize,
    ) -> StoreResult<Page<Rejection>> {
        let after = cursor.map(parse_rejection_cursor).transpose()?;
        let tenant = tenant.map_or(UNOWNED, TenantId::as_str).to_owned();
        let s = &self.inner.statements;
        let newest_day = after.as_ref().map_or(i32::MAX, |(at, _)| day_of(*at));
        let days: Vec<(i32,)> =
            self.rows("rejection days", &s.select_rejection_days, (tenant.clone(), newest_day)).await?;
        let limit_i32 = i32::try_from(limit.max(1)).unwrap_or(i32::MAX);
        let mut items: Vec<Rejection> = Vec::new();
        for (day,) in days {
            if items.len() >= limit {
                break;
            }
            let want = limit_i32 - i32::try_from(items.len()).unwrap_or(0);
            let rows: Vec<(String,)> = match after.as_ref().filter(|(at, _)| day_of(*at) == day) {
                Some((at, id)) => {
                    self.rows("rejections", &s.select_rejections_before, (tenant.clone(), day, *at, id.clone(), want))
                        .await?
                }
                None => self.rows("rejections", &s.select_rejections, (tenant.clone(), day, want)).await?,
            };
            for (json,) in rows {
                items.push(serde_json::from_str(&json).map_err(|e| corrupt("rejections", e))?);
            }
        }
        items.truncate(limit);
        let next =
            (items.len() == limit).then(|| items.last().map(|r| rejection_cursor(r.received_at_ms, &r.id))).flatten();
        Ok(Page { items, next })
    }
}
