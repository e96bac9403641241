//! Points on ScyllaDB: chunks ([`crate::chunk`]) in `point_chunks((vehicle_id, day), start_ts,
//! stamp)`, one row per chunk; reads ask for the chunks starting in a window of each day and
//! resolve them; a seal writes its sealed chunks, then deletes what they replace.

use futures::{StreamExt, TryStreamExt};
use tripline_model::{TenantId, TripId, VehicleId};

use super::{MAX_CONCURRENT_REQUESTS, ScyllaStore, corrupt};
use crate::chunk::{
    ChunkId, ChunkRow, Resolved, SealPlan, TripPage, check_point_range, chunk_rows, day_ranges, decode,
};
use crate::records::{Page, StoredPoint};
use crate::{PointStore, StoreResult, TripStore};

/// A chunk row as selected: start, stamp, trip, end, sealed, points.
type SelectedChunk = (i64, i64, String, i64, bool, Vec<u8>);

impl ScyllaStore {
    /// Writes chunk rows, a bounded number at a time (each row is one idempotent insert).
    async fn write_chunks(&self, rows: Vec<(VehicleId, ChunkRow)>) -> StoreResult<()> {
        let ttl = self.inner.ttl_s;
        let statement = &self.inner.statements.insert_chunk;
        futures::stream::iter(rows)
            .map(|(vehicle, row)| {
                let values = (
                    vehicle.as_str().to_owned(),
                    row.id.day,
                    row.id.start_ts,
                    row.id.stamp,
                    row.trip_id.as_str().to_owned(),
                    row.end_ts,
                    row.sealed,
                    row.points,
                    ttl,
                );
                self.execute("write points", statement, values)
            })
            .buffer_unordered(MAX_CONCURRENT_REQUESTS)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(())
    }

    /// `vehicle`'s chunks of one day starting in `[from_ms, to_ms)`, in key order.
    async fn day_chunks(&self, vehicle: &VehicleId, day: i32, from_ms: i64, to_ms: i64) -> StoreResult<Vec<ChunkRow>> {
        let values = (vehicle.as_str().to_owned(), day, from_ms, to_ms);
        let rows: Vec<SelectedChunk> = self.rows("points", &self.inner.statements.select_chunks, values).await?;
        rows.into_iter()
            .map(|(start_ts, stamp, trip_id, end_ts, sealed, points)| {
                Ok(ChunkRow {
                    id: ChunkId { day, start_ts, stamp },
                    trip_id: TripId::parse(&trip_id).map_err(|e| corrupt("point_chunks", e))?,
                    end_ts,
                    sealed,
                    points,
                })
            })
            .collect()
    }

    /// Every chunk of `vehicle` that may hold points in `[from_ms, to_ms)`.
    async fn chunks_overlapping(&self, vehicle: &VehicleId, from_ms: i64, to_ms: i64) -> StoreResult<Vec<ChunkRow>> {
        let mut out = Vec::new();
        for (day, lo, hi) in day_ranges(from_ms, to_ms) {
            out.extend(self.day_chunks(vehicle, day, lo, hi).await?.into_iter().filter(|row| row.end_ts >= from_ms));
        }
        Ok(out)
    }

    /// A seal: sealed chunks written, then (unless `delete` is false) the chunks they replace
    /// deleted. Either step may be cut short by a crash; running the seal again finishes it.
    async fn seal(
        &self,
        vehicle: &VehicleId,
        trip_id: &TripId,
        from_ms: i64,
        to_ms: i64,
        delete: bool,
    ) -> StoreResult<bool> {
        let rows = self.chunks_overlapping(vehicle, from_ms, to_ms.saturating_add(1)).await?;
        let Some(plan) = SealPlan::of(vehicle, trip_id, (from_ms, to_ms), &rows)? else { return Ok(false) };
        self.write_chunks(chunk_rows(&plan.points, true)).await?;
        if delete {
            let statement = &self.inner.statements.delete_chunk;
            futures::stream::iter(plan.obsolete)
                .map(|id| {
                    let values = (vehicle.as_str().to_owned(), id.day, id.start_ts, id.stamp);
                    self.execute("seal points", statement, values)
                })
                .buffer_unordered(MAX_CONCURRENT_REQUESTS)
                .try_collect::<Vec<_>>()
                .await?;
        }
        Ok(true)
    }
}

impl PointStore for ScyllaStore {
    async fn write_points(&self, points: &[StoredPoint]) -> StoreResult<()> {
        self.write_chunks(chunk_rows(points, false)).await
    }

    async fn vehicle_points(&self, vehicle: &VehicleId, from_ms: i64, to_ms: i64) -> StoreResult<Vec<StoredPoint>> {
        check_point_range(from_ms, to_ms)?;
        let mut resolved = Resolved::default();
        for row in self.chunks_overlapping(vehicle, from_ms, to_ms).await? {
            resolved.add(row.id.stamp, decode(vehicle, &row.trip_id, &row.points)?);
        }
        Ok(resolved.within(from_ms, to_ms))
    }

    async fn trip_points(
        &self,
        tenant: &TenantId,
        trip_id: &TripId,
        cursor: Option<&str>,
        limit: usize,
    ) -> StoreResult<Option<Page<StoredPoint>>> {
        let Some(trip) = self.trip(tenant, trip_id).await? else { return Ok(None) };
        let mut page = TripPage::for_trip(&trip, cursor, limit)?;
        let (from, to) = page.range();
        'days: for (day, lo, hi) in day_ranges(from, to) {
            for row in self.day_chunks(page.vehicle(), day, lo, hi).await? {
                if page.is_complete(row.id.start_ts) {
                    break 'days;
                }
                page.add(&row)?;
            }
        }
        Ok(Some(page.finish()))
    }

    async fn seal_trip(&self, vehicle: &VehicleId, trip_id: &TripId, from_ms: i64, to_ms: i64) -> StoreResult<bool> {
        self.seal(vehicle, trip_id, from_ms, to_ms, true).await
    }

    async fn seal_trip_interrupted(
        &self,
        vehicle: &VehicleId,
        trip_id: &TripId,
        from_ms: i64,
        to_ms: i64,
    ) -> StoreResult<bool> {
        self.seal(vehicle, trip_id, from_ms, to_ms, false).await
    }
}
