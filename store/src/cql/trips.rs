//! Trip rows on ScyllaDB, each write announced on the change feed (the entries written beside the
//! rows, readable once both are durable); a write set in its order.

use super::*;
use std::collections::HashMap;

use tripline_model::Notice;

use super::open_trips;
use crate::records::KeptWrite;

/// A trip row's `record` (JSON, schema 1) and `data` (binary, [`crate::trip_encoding`]).
type TripColumns = (Option<String>, Option<Vec<u8>>);

/// The record of a trip row: `data` when written, else the JSON of schema 1.
fn trip_from_row((record, data): TripColumns) -> StoreResult<TripRecord> {
    match (data, record) {
        (Some(data), _) => crate::trip_encoding::decode(&data),
        (None, Some(json)) => crate::trip_encoding::decode(json.as_bytes()),
        (None, None) => Err(corrupt("trips", "a trip row without its record")),
    }
}

impl ScyllaStore {
    /// Writes trip rows, then their change-feed entries (each with the trip's `notices`).
    async fn write_trips(&self, trips: &[TripRecord], notices: &HashMap<TripKey, Vec<Notice>>) -> StoreResult<()> {
        if trips.is_empty() {
            return Ok(());
        }
        let s = &self.inner.statements;
        let ttl = self.inner.ttl_s;
        let rows = trips
            .iter()
            .map(|t| {
                Ok((
                    t.tenant.as_str().to_owned(),
                    t.summary.trip_id.as_str().to_owned(),
                    t.summary.vehicle_id.as_str().to_owned(),
                    crate::trip_encoding::encode(t)?,
                    t.summary.updated_at.timestamp_millis(),
                    ttl,
                ))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let rows = self.execute_each("upsert trip", &s.insert_trip, rows);
        let marks = open_trips::changes(&self.inner.marked, trips.iter().map(|t| (TripKey::of(t), t.summary.status)));
        let rows = futures::future::try_join(rows, self.write_marks(&marks)).map_ok(drop);
        let at_ms = now_ms();
        let changes = trips.iter().map(|t| Change::of_write(t, notices.get(&TripKey::of(t)), at_ms)).collect();
        self.announce(changes, self.inner.written.writes(&[], trips), rows).await?;
        open_trips::written(&self.inner.marked, marks);
        Ok(())
    }

    /// A trip by its row's key columns.
    pub(super) async fn trip_by_columns(
        &self,
        tenant: String,
        trip_id: String,
        vehicle: String,
    ) -> StoreResult<Option<TripRecord>> {
        let rows: Vec<TripColumns> =
            self.rows("trip", &self.inner.statements.select_trip, (tenant, trip_id, vehicle)).await?;
        rows.into_iter().next().map(trip_from_row).transpose()
    }
}

impl TripStore for ScyllaStore {
    async fn upsert_trips(&self, trips: &[TripRecord]) -> StoreResult<()> {
        self.write_trips(trips, &HashMap::new()).await
    }

    async fn delete_trip(&self, tenant: &TenantId, vehicle: &VehicleId, trip_id: &TripId) -> StoreResult<()> {
        let values = (tenant.as_str().to_owned(), trip_id.as_str().to_owned(), vehicle.as_str().to_owned());
        let change = Change { at_ms: now_ms(), ..Change::of(tenant, vehicle, trip_id) };
        let key = change.key();
        let mark = open_trips::MarkChanges { open: Vec::new(), closed: vec![key.clone()] };
        let row = self.execute("delete trip", &self.inner.statements.delete_trip, values);
        let row = futures::future::try_join(row, self.write_marks(&mark)).map_ok(drop);
        let writes = self.inner.written.writes(std::slice::from_ref(&key), &[]);
        self.announce(vec![change], writes, row).await?;
        open_trips::forget(&self.inner.marked, &key);
        Ok(())
    }

    async fn trip(&self, tenant: &TenantId, trip_id: &TripId) -> StoreResult<Option<TripRecord>> {
        let rows: Vec<TripColumns> = self
            .rows(
                "trip",
                &self.inner.statements.select_trips_by_id,
                (tenant.as_str().to_owned(), trip_id.as_str().to_owned()),
            )
            .await?;
        rows.into_iter().next().map(trip_from_row).transpose()
    }

    async fn trip_of_vehicle(
        &self,
        tenant: &TenantId,
        vehicle: &VehicleId,
        trip_id: &TripId,
    ) -> StoreResult<Option<TripRecord>> {
        self.trip_by_columns(tenant.as_str().to_owned(), trip_id.as_str().to_owned(), vehicle.as_str().to_owned()).await
    }

    async fn scan_trips(&self, cursor: Option<&str>, limit: usize) -> StoreResult<Page<TripRecord>> {
        use scylla::response::{PagingState, PagingStateResponse};
        let paging = match cursor {
            Some(text) => PagingState::new_from_raw_bytes(crate::codec::unhex(text)?),
            None => PagingState::start(),
        };
        let (result, response) =
            self.single_page("scan trips", &self.inner.statements.scan_trips, (), paging, limit).await?;
        let rows = result.into_rows_result().map_err(|e| corrupt("trips", e))?;
        let items = rows
            .rows::<TripColumns>()
            .map_err(|e| corrupt("trips", e))?
            .map(|row| row.map_err(|e| corrupt("trips", e)).and_then(trip_from_row))
            .collect::<StoreResult<Vec<_>>>()?;
        let next = match response {
            PagingStateResponse::HasMorePages { state } => state.as_bytes_slice().map(|b| crate::codec::hex(b)),
            PagingStateResponse::NoMorePages => None,
        };
        Ok(Page { items, next })
    }

    async fn scan_open_trips(&self, cursor: Option<&str>, limit: usize) -> StoreResult<Page<TripRecord>> {
        self.open_trips_page(cursor, limit).await
    }

    fn keep_written(&self) {
        // Under the feed's lock, as `announce` numbers its entries: those numbered so far are
        // not kept in memory, every later one is.
        let mut feed = self.inner.feed_state();
        self.inner.written.enable();
        feed.keep_from_now();
    }

    fn take_written(&self, key: &TripKey, writer: &str, seq: u64) -> Option<KeptWrite> {
        self.inner.written.take(key, writer, seq).map(KeptWrite::from)
    }
}

impl BatchWrite for ScyllaStore {
    /// The parts in order (points, rejections, deletions, trips); each part is idempotent, so a
    /// retry after a partial failure rewrites the same rows.
    async fn write_batch(&self, set: &WriteSet) -> StoreResult<()> {
        self.write_points(&set.points).await?;
        self.append_rejections(&set.rejections).await?;
        for TripKey { tenant, vehicle_id: vehicle, trip_id } in &set.deletes {
            self.delete_trip(tenant, vehicle, trip_id).await?;
        }
        self.write_trips(&set.trips, &set.notices).await
    }
}
