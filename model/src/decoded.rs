//! A message as ingest hands it to the pipeline: decoded, its vehicle's tenant found, its
//! rejection records built. The one work item from the intake to the workers.

use crate::decode::{PointRejection, Telemetry};
use crate::ids::{TenantId, VehicleId};
use crate::point::Point;
use crate::reject::Rejection;
use crate::wire::TripMarker;

/// A decoded message of a vehicle, or the rejection of one that cannot be used.
#[derive(Debug)]
pub enum Decoded {
    /// Telemetry of a registered vehicle, and the rejections of the points the decoder dropped.
    Telemetry {
        /// The vehicle's tenant.
        tenant: TenantId,
        /// The message.
        telemetry: Telemetry,
        /// One record per dropped point.
        rejections: Vec<Rejection>,
    },
    /// A trip marker of a registered vehicle.
    Marker {
        /// The vehicle's tenant.
        tenant: TenantId,
        /// The vehicle.
        vehicle_id: VehicleId,
        /// The marker.
        marker: TripMarker,
    },
    /// A message that cannot be used: only its rejection is stored.
    Rejected(Rejection),
}

impl Decoded {
    /// About how many bytes the item holds in memory: what a batch's byte bound counts.
    pub fn size_bytes(&self) -> usize {
        let rejection = |r: &Rejection| std::mem::size_of::<Rejection>() + r.payload.len() + r.detail.len();
        std::mem::size_of::<Decoded>()
            + match self {
                Decoded::Telemetry { telemetry, rejections, .. } => {
                    telemetry.points.len() * std::mem::size_of::<Point>()
                        + telemetry.rejected.len() * std::mem::size_of::<PointRejection>()
                        + rejections.iter().map(rejection).sum::<usize>()
                }
                Decoded::Marker { .. } => 0,
                Decoded::Rejected(r) => rejection(r),
            }
    }
}
