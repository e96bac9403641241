//! The trip-file readers (CSV, JSON Lines, GPX) on arbitrary text: they never panic (a bad
//! record is reported with its line, a bad file is an error).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tripline_model::VehicleId;
use tripline_model::tripfile::{TripFileFormat, parse_trip_file};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let format = match selector % 3 {
        0 => TripFileFormat::Csv,
        1 => TripFileFormat::JsonLines,
        _ => TripFileFormat::Gpx,
    };
    let vehicle = VehicleId::parse("fuzz-car").ok();
    let _ = parse_trip_file(format, text, vehicle.as_ref());
});
