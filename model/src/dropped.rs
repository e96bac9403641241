//! What a trip dropped, as kept with it: enough for a reopened trip to count its rejected points
//! exactly as before, however often they are redelivered.

use serde::{Deserialize, Serialize};

use crate::Point;
use crate::hash::Fnv1a64;

/// A trip's dropped points (not part of the API's summary): the points dropped as implausible
/// jumps, whole (a reopened trip folds them again and drops the same ones), and the decoder's
/// rejected points by [key](point_key) (counted once however often they arrive). The engine
/// bounds both lists; beyond its bounds only counts are kept.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DroppedPoints {
    /// Points dropped as implausible jumps (up to the engine's bound).
    pub jumps: Vec<Point>,
    /// Jumps beyond those in `jumps`.
    pub jumps_beyond: u64,
    /// Keys of the decoder's rejected points.
    pub rejected_keys: Vec<u64>,
    /// Decoder-rejected points beyond those in `rejected_keys` (counted without telling repeats).
    pub rejected_beyond: u64,
}

impl DroppedPoints {
    /// Nothing dropped.
    pub fn is_empty(&self) -> bool {
        self.jumps.is_empty() && self.jumps_beyond == 0 && self.rejected_keys.is_empty() && self.rejected_beyond == 0
    }

    /// Dropped points in all.
    pub fn count(&self) -> u64 {
        self.jumps.len() as u64 + self.jumps_beyond + self.rejected_keys.len() as u64 + self.rejected_beyond
    }
}

/// A point's identity among a trip's dropped points: FNV-1a over its time, sequence number and
/// coordinates. Stable across releases (it is stored).
pub fn point_key(point: &Point) -> u64 {
    Fnv1a64::default()
        .write(&point.ts_ms.to_le_bytes())
        .write(&point.seq.unwrap_or(u64::MAX).to_le_bytes())
        .write(&point.lat.to_bits().to_le_bytes())
        .write(&point.lon.to_bits().to_le_bytes())
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(ts_ms: i64, seq: Option<u64>, lat: f64) -> Point {
        Point { seq, ..Point::new(ts_ms, lat, 13.4) }
    }

    #[test]
    fn a_point_key_depends_on_time_sequence_and_position_only() {
        let a = point(1_000, Some(1), 52.5);
        assert_eq!(point_key(&a), point_key(&Point { speed_mps: Some(3.0), ..a.clone() }));
        assert_ne!(point_key(&a), point_key(&point(1_001, Some(1), 52.5)));
        assert_ne!(point_key(&a), point_key(&point(1_000, None, 52.5)));
        assert_ne!(point_key(&a), point_key(&point(1_000, Some(1), 52.500_001)));
        // Stored with trips: the value must never change.
        assert_eq!(point_key(&a), 0x5c80_fe69_00c7_bf4c);
    }
}
