//! Trip files, as `tripline replay` and `tripline summarize` read them: CSV with a header, JSON
//! Lines, or GPX. One record per point with the Telemetry point fields plus `vehicle_id` and an
//! optional `trip_id` (GPX: the vehicle is given by the caller, one `trk` per trip).
//!
//! Parsing works on text already read; a bad record is reported with its line and skipped, never
//! fatal and never silent.

use std::path::Path;

use quick_xml::events::Event as XmlEvent;

use crate::ModelError;
use crate::ids::{TripId, VehicleId};
use crate::point::RawPoint;

/// The three trip file formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TripFileFormat {
    /// Comma-separated values with a header naming the point fields.
    Csv,
    /// One JSON object per line.
    JsonLines,
    /// GPS Exchange Format 1.0 / 1.1.
    Gpx,
}

impl TripFileFormat {
    /// The format a file name suggests: `.csv`, `.jsonl` / `.ndjson`, `.gpx`.
    pub fn from_path(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(TripFileFormat::Csv),
            "jsonl" | "ndjson" => Some(TripFileFormat::JsonLines),
            "gpx" => Some(TripFileFormat::Gpx),
            _ => None,
        }
    }
}

/// One point of a trip file.
#[derive(Clone, Debug, PartialEq)]
pub struct FileRecord {
    /// Which input the record came from (an index the caller assigns; 0 from the parser).
    pub source: usize,
    /// 1-based line (CSV, JSON Lines) or point number (GPX) in the file.
    pub line: usize,
    /// The vehicle.
    pub vehicle_id: VehicleId,
    /// The trip, when the file names one.
    pub trip_id: Option<TripId>,
    /// GPX only: the index of the `trk` the point belongs to (a trip even without a name).
    pub track: Option<usize>,
    /// The point's fields.
    pub point: RawPoint,
}

/// A record that could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordError {
    /// Which input the record came from (as [`FileRecord::source`]).
    pub source: usize,
    /// 1-based line or point number.
    pub line: usize,
    /// What is wrong.
    pub detail: String,
}

/// What a trip file held.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParsedTripFile {
    /// Readable records, in file order.
    pub records: Vec<FileRecord>,
    /// Records skipped, with why.
    pub errors: Vec<RecordError>,
}

/// Parses a trip file's text. `gpx_vehicle` names the vehicle of a GPX file (required there).
pub fn parse_trip_file(
    format: TripFileFormat,
    text: &str,
    gpx_vehicle: Option<&VehicleId>,
) -> Result<ParsedTripFile, ModelError> {
    match format {
        TripFileFormat::Csv => parse_csv(text),
        TripFileFormat::JsonLines => Ok(parse_json_lines(text)),
        TripFileFormat::Gpx => {
            let vehicle = gpx_vehicle.ok_or_else(|| ModelError::Schema {
                detail: "a GPX file needs its vehicle id (--vehicle)".to_owned(),
            })?;
            parse_gpx(text, vehicle)
        }
    }
}

fn parse_ids(vehicle: Option<&str>, trip: Option<&str>) -> Result<(VehicleId, Option<TripId>), String> {
    let vehicle = vehicle.ok_or("missing vehicle_id")?;
    let vehicle_id = VehicleId::parse(vehicle).map_err(|e| e.to_string())?;
    let trip_id = trip.filter(|t| !t.is_empty()).map(TripId::parse).transpose().map_err(|e| e.to_string())?;
    Ok((vehicle_id, trip_id))
}

fn parse_csv(text: &str) -> Result<ParsedTripFile, ModelError> {
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).flexible(true).from_reader(text.as_bytes());
    let headers = reader.headers().map_err(|e| ModelError::Schema { detail: format!("CSV header: {e}") })?.clone();
    let column = |name: &str| headers.iter().position(|h| h == name);
    for required in ["vehicle_id", "lat", "lon"] {
        if column(required).is_none() {
            return Err(ModelError::Schema { detail: format!("CSV header has no `{required}` column") });
        }
    }
    if column("ts").is_none() && column("ts_ms").is_none() {
        return Err(ModelError::Schema { detail: "CSV header has neither `ts` nor `ts_ms`".to_owned() });
    }
    let known = [
        "vehicle_id",
        "trip_id",
        "seq",
        "ts",
        "ts_ms",
        "lat",
        "lon",
        "speed_mps",
        "heading_deg",
        "accuracy_m",
        "alt_m",
        "ignition",
        "odometer_m",
    ];
    let unknown_columns = u32::try_from(headers.iter().filter(|h| !known.contains(h)).count()).unwrap_or(u32::MAX);
    let mut parsed = ParsedTripFile::default();
    for (index, row) in reader.records().enumerate() {
        let line = index + 2;
        let row = match row {
            Ok(row) => row,
            Err(error) => {
                parsed.errors.push(RecordError { source: 0, line, detail: error.to_string() });
                continue;
            }
        };
        let cell = |name: &str| column(name).and_then(|i| row.get(i)).filter(|v| !v.is_empty());
        let record = (|| -> Result<FileRecord, String> {
            let (vehicle_id, trip_id) = parse_ids(cell("vehicle_id"), cell("trip_id"))?;
            let float = |name: &str| -> Result<Option<f64>, String> {
                cell(name).map(|v| v.parse::<f64>().map_err(|_| format!("`{name}` is not a number: {v:?}"))).transpose()
            };
            let int = |name: &str| -> Result<Option<i64>, String> {
                cell(name)
                    .map(|v| v.parse::<i64>().map_err(|_| format!("`{name}` is not an integer: {v:?}")))
                    .transpose()
            };
            let seq = cell("seq")
                .map(|v| v.parse::<u64>().map_err(|_| format!("`seq` is not a counter: {v:?}")))
                .transpose()?;
            let ignition = cell("ignition")
                .map(|v| match v.to_ascii_lowercase().as_str() {
                    "true" | "1" => Ok(true),
                    "false" | "0" => Ok(false),
                    _ => Err(format!("`ignition` is not a boolean: {v:?}")),
                })
                .transpose()?;
            let point = RawPoint {
                seq,
                ts: cell("ts").map(str::to_owned),
                ts_ms: int("ts_ms")?,
                lat: float("lat")?,
                lon: float("lon")?,
                speed_mps: float("speed_mps")?,
                heading_deg: float("heading_deg")?,
                accuracy_m: float("accuracy_m")?,
                alt_m: float("alt_m")?,
                ignition,
                odometer_m: float("odometer_m")?,
                unknown_fields: unknown_columns,
            };
            Ok(FileRecord { source: 0, line, vehicle_id, trip_id, track: None, point })
        })();
        match record {
            Ok(record) => parsed.records.push(record),
            Err(detail) => parsed.errors.push(RecordError { source: 0, line, detail }),
        }
    }
    Ok(parsed)
}

fn parse_json_lines(text: &str) -> ParsedTripFile {
    let mut parsed = ParsedTripFile::default();
    for (index, raw_line) in text.lines().enumerate() {
        let line = index + 1;
        if raw_line.trim().is_empty() {
            continue;
        }
        let record = (|| -> Result<FileRecord, String> {
            let mut object: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(raw_line).map_err(|e| e.to_string())?;
            let take_str = |object: &mut serde_json::Map<String, serde_json::Value>, key: &str| match object.remove(key)
            {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s)),
                Some(other) => Err(format!("`{key}` must be a string, got {other}")),
            };
            let vehicle = take_str(&mut object, "vehicle_id")?;
            let trip = take_str(&mut object, "trip_id")?;
            let (vehicle_id, trip_id) = parse_ids(vehicle.as_deref(), trip.as_deref())?;
            let point: RawPoint =
                serde_json::from_value(serde_json::Value::Object(object)).map_err(|e| e.to_string())?;
            Ok(FileRecord { source: 0, line, vehicle_id, trip_id, track: None, point })
        })();
        match record {
            Ok(record) => parsed.records.push(record),
            Err(detail) => parsed.errors.push(RecordError { source: 0, line, detail }),
        }
    }
    parsed
}

/// Which GPX child element's text is being read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum GpxText {
    None,
    TrackName,
    Time,
    Elevation,
    Speed,
    Course,
}

fn parse_gpx(text: &str, vehicle: &VehicleId) -> Result<ParsedTripFile, ModelError> {
    let mut reader = quick_xml::Reader::from_str(text);
    reader.config_mut().trim_text(true);
    let mut parsed = ParsedTripFile::default();
    let mut track: Option<usize> = None;
    let mut tracks_seen = 0usize;
    let mut track_name: Option<TripId> = None;
    let mut point: Option<RawPoint> = None;
    let mut reading = GpxText::None;
    let mut point_number = 0usize;
    let xml_error =
        |e: &dyn std::fmt::Display, pos: u64| ModelError::Schema { detail: format!("GPX at byte {pos}: {e}") };
    loop {
        let event = reader.read_event().map_err(|e| xml_error(&e, reader.buffer_position()))?;
        match event {
            XmlEvent::Start(ref element) | XmlEvent::Empty(ref element)
                if element.local_name().as_ref() == b"trkpt" =>
            {
                point_number += 1;
                let mut raw = RawPoint::default();
                for attribute in element.attributes().flatten() {
                    let value = attribute.unescape_value().map(|v| v.into_owned()).unwrap_or_default();
                    match attribute.key.local_name().as_ref() {
                        b"lat" => raw.lat = value.trim().parse().ok(),
                        b"lon" => raw.lon = value.trim().parse().ok(),
                        _ => {}
                    }
                }
                if matches!(event, XmlEvent::Empty(_)) {
                    finish_gpx_point(&mut parsed, raw, point_number, vehicle, &track_name, track);
                } else {
                    point = Some(raw);
                }
            }
            XmlEvent::Start(element) => {
                reading = match element.local_name().as_ref() {
                    b"trk" => {
                        track = Some(tracks_seen);
                        tracks_seen += 1;
                        track_name = None;
                        GpxText::None
                    }
                    b"name" if point.is_none() && track.is_some() => GpxText::TrackName,
                    b"time" if point.is_some() => GpxText::Time,
                    b"ele" if point.is_some() => GpxText::Elevation,
                    b"speed" if point.is_some() => GpxText::Speed,
                    b"course" if point.is_some() => GpxText::Course,
                    _ => GpxText::None,
                };
            }
            XmlEvent::Text(content) => {
                let value = content.decode().map(|v| v.trim().to_owned()).unwrap_or_default();
                match (reading, point.as_mut()) {
                    (GpxText::TrackName, _) => track_name = TripId::parse(&value).ok(),
                    (GpxText::Time, Some(p)) => p.ts = Some(value),
                    (GpxText::Elevation, Some(p)) => p.alt_m = value.parse().ok(),
                    (GpxText::Speed, Some(p)) => p.speed_mps = value.parse().ok(),
                    (GpxText::Course, Some(p)) => p.heading_deg = value.parse().ok(),
                    _ => {}
                }
            }
            XmlEvent::End(element) => {
                reading = GpxText::None;
                match element.local_name().as_ref() {
                    b"trkpt" => {
                        if let Some(raw) = point.take() {
                            finish_gpx_point(&mut parsed, raw, point_number, vehicle, &track_name, track);
                        }
                    }
                    b"trk" => track = None,
                    _ => {}
                }
            }
            XmlEvent::Eof => break,
            _ => {}
        }
    }
    Ok(parsed)
}

fn finish_gpx_point(
    parsed: &mut ParsedTripFile,
    point: RawPoint,
    line: usize,
    vehicle: &VehicleId,
    track_name: &Option<TripId>,
    track: Option<usize>,
) {
    parsed.records.push(FileRecord {
        source: 0,
        line,
        vehicle_id: vehicle.clone(),
        trip_id: track_name.clone(),
        track,
        point,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_records_map_columns_by_name_and_report_bad_rows() {
        let text = "vehicle_id,ts,lat,lon,speed_mps,ignition,extra\n\
                    car-1,2026-11-25T10:00:00Z,52.5,13.4,10.5,true,x\n\
                    car-1,2026-11-25T10:00:05Z,52.6,13.4,,0,y\n\
                    car 2,2026-11-25T10:00:05Z,52.6,13.4,,,\n\
                    car-1,2026-11-25T10:00:10Z,north,13.4,,,\n";
        let parsed = parse_trip_file(TripFileFormat::Csv, text, None).unwrap();
        assert_eq!(parsed.records.len(), 2);
        assert_eq!(parsed.records[0].point.speed_mps, Some(10.5));
        assert_eq!(parsed.records[1].point.ignition, Some(false));
        assert_eq!(parsed.records[1].point.unknown_fields, 1);
        assert_eq!(parsed.errors.iter().map(|e| e.line).collect::<Vec<_>>(), vec![4, 5]);
    }

    #[test]
    fn csv_without_required_columns_is_refused() {
        assert!(parse_trip_file(TripFileFormat::Csv, "vehicle_id,lat,lon\n", None).is_err());
    }

    #[test]
    fn json_lines_take_ids_out_and_keep_point_fields() {
        let text = "{\"vehicle_id\": \"car-1\", \"trip_id\": \"t1\", \"ts_ms\": 5, \"lat\": 1, \"lon\": 2}\n\
                    \n\
                    {broken\n\
                    {\"trip_id\": \"t1\", \"ts_ms\": 5, \"lat\": 1, \"lon\": 2}\n";
        let parsed = parse_trip_file(TripFileFormat::JsonLines, text, None).unwrap();
        assert_eq!(parsed.records.len(), 1);
        assert_eq!(parsed.records[0].trip_id.as_ref().map(TripId::as_str), Some("t1"));
        assert_eq!(parsed.records[0].point.unknown_fields, 0);
        assert_eq!(parsed.errors.iter().map(|e| e.line).collect::<Vec<_>>(), vec![3, 4]);
    }

    #[test]
    fn gpx_tracks_become_trips() {
        let text = r#"<?xml version="1.0"?><gpx version="1.1" xmlns="http://www.topografix.com/GPX/1/1">
            <trk><name>morning</name><trkseg>
              <trkpt lat="52.5" lon="13.4"><ele>34</ele><time>2026-11-25T10:00:00Z</time></trkpt>
              <trkpt lat="52.6" lon="13.4"><time>2026-11-25T10:00:05Z</time><speed>9.5</speed></trkpt>
            </trkseg></trk>
            <trk><name>not a valid id!</name><trkseg><trkpt lat="1" lon="2"/></trkseg></trk>
        </gpx>"#;
        let vehicle = VehicleId::parse("car-1").unwrap();
        let parsed = parse_trip_file(TripFileFormat::Gpx, text, Some(&vehicle)).unwrap();
        assert_eq!(parsed.records.len(), 3);
        assert_eq!(parsed.records[0].trip_id.as_ref().map(TripId::as_str), Some("morning"));
        assert_eq!(parsed.records[0].point.alt_m, Some(34.0));
        assert_eq!(parsed.records[1].point.speed_mps, Some(9.5));
        assert_eq!((parsed.records[2].trip_id.clone(), parsed.records[2].track), (None, Some(1)));
        assert!(parse_trip_file(TripFileFormat::Gpx, text, None).is_err());
        assert!(parse_trip_file(TripFileFormat::Gpx, "<gpx><trk>", Some(&vehicle)).is_ok_and(|p| p.records.is_empty()));
    }
}
