//! Schema 1 → 2: points stored one row each (`points`) move into chunks (`point_chunks`).
//!
//! `tripline schema apply` on a keyspace that still has the `points` table reads it whole (the
//! driver pages through it), writes its points as chunks in groups of [`MOVE_BATCH_POINTS`], and
//! drops the table once everything is written. Interrupted, it runs again at the next `schema
//! apply`: points written into chunks twice read back once. Run it while no `tripline run`
//! writes to the keyspace (writers of schema 1 would keep writing the old table).

use futures::TryStreamExt;
use tripline_model::{Point, TripId, VehicleId};

use super::{ScyllaStore, classify, classify_text, corrupt, run_cql};
use crate::records::{Derived, StoredPoint};
use crate::retry::Attempt;
use crate::{PointStore, StoreResult};

/// Points written per round while moving.
const MOVE_BATCH_POINTS: usize = 50_000;

/// The table of schema 1.
const LEGACY_TABLE: &str = "points";

/// A row of schema 1's `points` table.
type LegacyRow = (
    String,
    i64,
    String,
    Option<i64>,
    f64,
    f64,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<bool>,
    Option<f64>,
    Vec<u8>,
);

fn legacy_point(row: LegacyRow) -> StoreResult<StoredPoint> {
    let (vehicle, ts, trip_id, seq, lat, lon, speed_mps, heading_deg, accuracy_m, alt_m, ignition, odometer_m, derived) =
        row;
    let derived: Derived = postcard::from_bytes(&derived).map_err(|e| corrupt(LEGACY_TABLE, e))?;
    Ok(StoredPoint {
        vehicle_id: VehicleId::parse(&vehicle).map_err(|e| corrupt(LEGACY_TABLE, e))?,
        trip_id: TripId::parse(&trip_id).map_err(|e| corrupt(LEGACY_TABLE, e))?,
        point: Point {
            seq: seq.map(|s| s as u64),
            ts_ms: ts,
            lat,
            lon,
            speed_mps,
            heading_deg,
            accuracy_m,
            alt_m,
            ignition,
            odometer_m,
        },
        derived,
    })
}

impl ScyllaStore {
    /// Moves schema 1's point rows into chunks and drops their table; returns how many moved
    /// (0 when there is no such table).
    pub(crate) async fn move_points_to_chunks(&self, keyspace: &str) -> StoreResult<u64> {
        let session = &self.inner.session;
        let exists = self
            .inner
            .retry
            .run("schema tables", || async {
                let result = session
                    .query_unpaged(
                        "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ? AND table_name = ?",
                        (keyspace, LEGACY_TABLE),
                    )
                    .await
                    .map_err(|e| classify(&e))?;
                let rows = result.into_rows_result().map_err(|e| Attempt::Permanent(e.to_string()))?;
                Ok(rows.rows_num() > 0)
            })
            .await?;
        if !exists {
            return Ok(0);
        }
        let select = format!(
            "SELECT vehicle_id, ts, trip_id, seq, lat, lon, speed_mps, heading_deg, accuracy_m, alt_m, ignition, \
             odometer_m, derived FROM {keyspace}.{LEGACY_TABLE}"
        );
        let moved = self
            .inner
            .retry
            .run("move points to chunks", || async {
                let mut rows = session
                    .query_iter(select.as_str(), ())
                    .await
                    .map_err(|e| classify_text(e.to_string()))?
                    .rows_stream::<LegacyRow>()
                    .map_err(|e| Attempt::Permanent(e.to_string()))?;
                let (mut pending, mut moved) = (Vec::with_capacity(MOVE_BATCH_POINTS), 0u64);
                while let Some(row) = rows.try_next().await.map_err(|e| classify_text(e.to_string()))? {
                    pending.push(legacy_point(row).map_err(|e| Attempt::Permanent(e.to_string()))?);
                    if pending.len() == MOVE_BATCH_POINTS {
                        moved += self.write_moved(&mut pending).await?;
                    }
                }
                moved += self.write_moved(&mut pending).await?;
                Ok(moved)
            })
            .await?;
        let drop = format!("DROP TABLE IF EXISTS {keyspace}.{LEGACY_TABLE}");
        run_cql(session, &self.inner.retry, "drop old points", &drop).await?;
        Ok(moved)
    }

    async fn write_moved(&self, points: &mut Vec<StoredPoint>) -> Result<u64, Attempt> {
        let count = points.len() as u64;
        self.write_points(points).await.map_err(|e| Attempt::Transient(e.to_string()))?;
        points.clear();
        Ok(count)
    }
}
