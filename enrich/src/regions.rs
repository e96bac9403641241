//! Named areas with an optional speed limit and time zone, read from a GeoJSON FeatureCollection
//! and indexed with an R-tree.

use chrono_tz::Tz;
use geo::{Area, BoundingRect, Contains, Coord, LineString, MultiPolygon, Point, Polygon};
use rstar::primitives::{GeomWithData, Rectangle};
use rstar::{AABB, RTree, RTreeObject};
use serde::Deserialize;

use crate::EnrichError;

/// Index of a region in its [`Regions`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RegionId(pub u32);

/// One region.
#[derive(Clone, Debug)]
pub struct Region {
    /// Display and search name (`properties.name`).
    pub name: String,
    /// Speed limit inside (`properties.speed_limit_kmh`).
    pub speed_limit_kmh: Option<f64>,
    /// IANA zone for local time inside (`properties.timezone`).
    pub timezone: Option<Tz>,
    shape: MultiPolygon<f64>,
    area_deg2: f64,
    /// No other region's bounding box touches this one's: a point inside is in no other region.
    isolated: bool,
}

type Entry = GeomWithData<Rectangle<[f64; 2]>, u32>;

/// A set of regions. A position belongs to the smallest region containing it.
#[derive(Clone, Debug, Default)]
pub struct Regions {
    regions: Vec<Region>,
    tree: RTree<Entry>,
}

#[derive(Deserialize)]
struct FeatureCollection {
    features: Vec<Feature>,
}

#[derive(Deserialize)]
struct Feature {
    properties: Properties,
    geometry: Geometry,
}

#[derive(Deserialize)]
struct Properties {
    name: String,
    #[serde(default)]
    speed_limit_kmh: Option<f64>,
    #[serde(default)]
    timezone: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "type", content = "coordinates")]
enum Geometry {
    Polygon(Vec<Vec<[f64; 2]>>),
    MultiPolygon(Vec<Vec<Vec<[f64; 2]>>>),
}

fn polygon(rings: Vec<Vec<[f64; 2]>>) -> Polygon<f64> {
    let mut rings = rings
        .into_iter()
        .map(|ring| LineString::from(ring.into_iter().map(|[x, y]| Coord { x, y }).collect::<Vec<_>>()));
    let exterior = rings.next().unwrap_or_else(|| LineString::new(Vec::new()));
    Polygon::new(exterior, rings.collect())
}

impl Regions {
    /// No regions at all.
    pub fn empty() -> Self {
        Regions::default()
    }

    /// Reads a GeoJSON FeatureCollection of Polygon / MultiPolygon features whose properties
    /// carry `name` and optionally `speed_limit_kmh` and `timezone` (IANA).
    pub fn from_geojson(text: &str) -> Result<Self, EnrichError> {
        let collection: FeatureCollection =
            serde_json::from_str(text).map_err(|error| EnrichError::Regions { detail: error.to_string() })?;
        let mut regions = Vec::with_capacity(collection.features.len());
        for feature in collection.features {
            let Properties { name, speed_limit_kmh, timezone } = feature.properties;
            let timezone = timezone
                .map(|tz| {
                    tz.parse::<Tz>().map_err(|_| EnrichError::Regions {
                        detail: format!("region {name:?}: unknown time zone {tz:?}"),
                    })
                })
                .transpose()?;
            if let Some(limit) = speed_limit_kmh
                && !(limit.is_finite() && limit > 0.0)
            {
                return Err(EnrichError::Regions {
                    detail: format!("region {name:?}: speed limit {limit} is not positive"),
                });
            }
            let shape = match feature.geometry {
                Geometry::Polygon(rings) => MultiPolygon(vec![polygon(rings)]),
                Geometry::MultiPolygon(polygons) => MultiPolygon(polygons.into_iter().map(polygon).collect()),
            };
            if shape.bounding_rect().is_none() {
                return Err(EnrichError::Regions { detail: format!("region {name:?} has no coordinates") });
            }
            let area_deg2 = shape.unsigned_area();
            regions.push(Region { name, speed_limit_kmh, timezone, shape, area_deg2, isolated: false });
        }
        Ok(Self::build(regions))
    }

    fn build(mut regions: Vec<Region>) -> Self {
        let entries: Vec<Entry> = regions
            .iter()
            .enumerate()
            .filter_map(|(i, region)| {
                let rect = region.shape.bounding_rect()?;
                let id = u32::try_from(i).ok()?;
                Some(GeomWithData::new(
                    Rectangle::from_corners([rect.min().x, rect.min().y], [rect.max().x, rect.max().y]),
                    id,
                ))
            })
            .collect();
        let tree = RTree::bulk_load(entries);
        for entry in tree.iter() {
            let others =
                tree.locate_in_envelope_intersecting(&entry.geom().envelope()).filter(|e| e.data != entry.data).count();
            if let Some(region) = regions.get_mut(entry.data as usize) {
                region.isolated = others == 0;
            }
        }
        Regions { regions, tree }
    }

    /// How many regions there are.
    pub fn len(&self) -> usize {
        self.regions.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// The region with id `id`.
    pub fn get(&self, id: RegionId) -> Option<&Region> {
        self.regions.get(id.0 as usize)
    }

    /// The smallest region containing (`lat`, `lon`), if any.
    pub fn locate(&self, lat: f64, lon: f64) -> Option<RegionId> {
        let point = Point::new(lon, lat);
        let mut best: Option<(f64, u32)> = None;
        for entry in self.tree.locate_in_envelope_intersecting(&AABB::from_point([lon, lat])) {
            let region = &self.regions[entry.data as usize];
            if region.shape.contains(&point) {
                let candidate = (region.area_deg2, entry.data);
                if best.is_none_or(|b| candidate.0 < b.0 || (candidate.0 == b.0 && candidate.1 < b.1)) {
                    best = Some(candidate);
                }
            }
        }
        best.map(|(_, id)| RegionId(id))
    }

    /// [`Regions::locate`], answered from `hint` (the previous point's region) when that region
    /// contains the position and overlaps no other, which gives the same answer faster.
    pub fn locate_near(&self, lat: f64, lon: f64, hint: Option<RegionId>) -> Option<RegionId> {
        if let Some(region) = hint.and_then(|id| self.get(id))
            && region.isolated
            && region.shape.contains(&Point::new(lon, lat))
        {
            return hint;
        }
        self.locate(lat, lon)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "big", "timezone": "Europe/Berlin"},
         "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]]}},
        {"type": "Feature", "properties": {"name": "small", "speed_limit_kmh": 50},
         "geometry": {"type": "MultiPolygon", "coordinates": [[[[2, 2], [4, 2], [4, 4], [2, 4], [2, 2]]]]}},
        {"type": "Feature", "properties": {"name": "far"},
         "geometry": {"type": "Polygon", "coordinates": [[[20, 20], [21, 20], [21, 21], [20, 21], [20, 20]]]}}
    ]}"#;

    #[test]
    fn the_smallest_containing_region_wins() {
        let regions = Regions::from_geojson(SAMPLE).unwrap();
        let name = |lat, lon| regions.locate(lat, lon).and_then(|id| regions.get(id)).map(|r| r.name.as_str());
        assert_eq!(name(3.0, 3.0), Some("small"));
        assert_eq!(name(8.0, 8.0), Some("big"));
        assert_eq!(name(20.5, 20.5), Some("far"));
        assert_eq!(name(15.0, 15.0), None);
    }

    #[test]
    fn the_hint_never_changes_the_answer() {
        let regions = Regions::from_geojson(SAMPLE).unwrap();
        let big = regions.locate(8.0, 8.0);
        assert_eq!(regions.locate_near(3.0, 3.0, big), regions.locate(3.0, 3.0));
        let far = regions.locate(20.5, 20.5);
        assert_eq!(regions.locate_near(20.7, 20.7, far), far);
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        assert!(Regions::from_geojson("{").is_err());
        let bad_tz = SAMPLE.replace("Europe/Berlin", "Mars/Olympus");
        let error = Regions::from_geojson(&bad_tz).unwrap_err().to_string();
        assert!(error.contains("Mars/Olympus"), "{error}");
    }
}
