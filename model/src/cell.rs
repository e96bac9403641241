//! Geohash cells: the places a trip passed, as strings whose prefixes are the enclosing cells.
//! The read store indexes every prefix, so "did the trip pass through this box" is a term lookup
//! on the cells that cover the box.

use std::collections::BTreeSet;

/// Precision of the cells kept per trip: 6 characters ≈ 1.2 km × 0.6 km.
pub const TRIP_CELL_PRECISION: usize = 6;

const BASE32: &[u8; 32] = b"0123456789bcdefghjkmnpqrstuvwxyz";

/// The geohash of a WGS84 position (`precision` characters, at most 12).
pub fn geohash(lat: f64, lon: f64, precision: usize) -> String {
    let (mut lat_range, mut lon_range) = ((-90.0_f64, 90.0_f64), (-180.0_f64, 180.0_f64));
    let mut out = String::with_capacity(precision);
    let mut even = true;
    let (mut bits, mut value) = (0, 0usize);
    while out.len() < precision.min(12) {
        let (range, coordinate) = if even { (&mut lon_range, lon) } else { (&mut lat_range, lat) };
        let mid = (range.0 + range.1) / 2.0;
        value <<= 1;
        if coordinate >= mid {
            value |= 1;
            range.0 = mid;
        } else {
            range.1 = mid;
        }
        even = !even;
        bits += 1;
        if bits == 5 {
            out.push(char::from(BASE32[value]));
            bits = 0;
            value = 0;
        }
    }
    out
}

/// The bounding box of a geohash cell: (min_lon, min_lat, max_lon, max_lat); `None` for a
/// character outside the geohash alphabet.
pub fn bounds(hash: &str) -> Option<(f64, f64, f64, f64)> {
    let (mut lat_range, mut lon_range) = ((-90.0_f64, 90.0_f64), (-180.0_f64, 180.0_f64));
    let mut even = true;
    for c in hash.bytes() {
        let value = BASE32.iter().position(|b| *b == c)?;
        for shift in (0..5).rev() {
            let bit = (value >> shift) & 1 == 1;
            let range = if even { &mut lon_range } else { &mut lat_range };
            let mid = (range.0 + range.1) / 2.0;
            if bit {
                range.0 = mid;
            } else {
                range.1 = mid;
            }
            even = !even;
        }
    }
    Some((lon_range.0, lat_range.0, lon_range.1, lat_range.1))
}

/// The distinct cells (at [`TRIP_CELL_PRECISION`]) that positions fall in, sorted.
pub fn cells(positions: impl IntoIterator<Item = (f64, f64)>) -> Vec<String> {
    let set: BTreeSet<String> =
        positions.into_iter().map(|(lat, lon)| geohash(lat, lon, TRIP_CELL_PRECISION)).collect();
    set.into_iter().collect()
}

/// Cells of `precision` characters covering the box, or `None` when that would take more than
/// `max_cells` (the caller then tries a coarser precision).
pub fn covering(
    (min_lon, min_lat, max_lon, max_lat): (f64, f64, f64, f64),
    precision: usize,
    max_cells: usize,
) -> Option<Vec<String>> {
    // Cell size at this precision, from the cell of the box's corner.
    let (w, s, e, n) = bounds(&geohash(min_lat, min_lon, precision))?;
    let (step_lon, step_lat) = (e - w, n - s);
    let columns = ((max_lon - w) / step_lon).floor() as usize + 1;
    let rows = ((max_lat - s) / step_lat).floor() as usize + 1;
    if columns.saturating_mul(rows) > max_cells {
        return None;
    }
    let mut out = BTreeSet::new();
    for row in 0..rows {
        for column in 0..columns {
            let lat = (s + (row as f64 + 0.5) * step_lat).min(89.999_999);
            let lon = (w + (column as f64 + 0.5) * step_lon).min(179.999_999);
            out.insert(geohash(lat, lon, precision));
        }
    }
    Some(out.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geohash_matches_known_values() {
        // Well-known reference points of the geohash scheme.
        assert_eq!(geohash(57.64911, 10.40744, 11), "u4pruydqqvj");
        assert_eq!(geohash(52.520008, 13.404954, 6), "u33dc0");
        assert_eq!(geohash(-33.8688, 151.2093, 5), "r3gx2");
    }

    #[test]
    fn a_cell_contains_its_position() {
        let (w, s, e, n) = bounds("u33dc0").unwrap();
        assert!(w <= 13.404954 && 13.404954 <= e && s <= 52.520008 && 52.520008 <= n);
        assert!(bounds("u3a").is_none(), "'a' is not in the alphabet");
    }

    #[test]
    fn covering_cells_cover_the_box_and_respect_the_limit() {
        let bbox = (13.38, 52.51, 13.42, 52.53);
        let cells = covering(bbox, 6, 100).unwrap();
        assert!(cells.contains(&geohash(52.520008, 13.404954, 6)));
        for (lat, lon) in [(52.51, 13.38), (52.53, 13.42), (52.515, 13.41)] {
            assert!(cells.contains(&geohash(lat, lon, 6)), "{lat},{lon}");
        }
        assert!(covering(bbox, 9, 100).is_none(), "too many fine cells");
    }
}
