//! `decode()` on arbitrary topics and payloads: it never panics, and a message it accepts
//! re-encodes to one that decodes to the same points.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tripline_model::{DecodeConfig, Message, decode, encode_telemetry};

/// "Now" for the rules measured against the clock (the seeds' times are around it).
const NOW_MS: i64 = 1_795_600_800_000;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    // The first byte picks the topic; for an arbitrary topic, it is the text up to a newline.
    let (topic, payload) = match selector % 4 {
        0 => ("vehicles/car-1/telemetry".to_owned(), rest),
        1 => ("vehicles/car-1/trips".to_owned(), rest),
        2 => ("vehicles/a.b:c-9_Z/telemetry".to_owned(), rest),
        _ => {
            let split = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            (String::from_utf8_lossy(&rest[..split]).into_owned(), rest.get(split + 1..).unwrap_or_default())
        }
    };
    let config = DecodeConfig::default();
    let _ = decode(&topic, payload, &config, Some(NOW_MS));
    if let Ok(Message::Telemetry(telemetry)) = decode(&topic, payload, &config, None) {
        if telemetry.points.is_empty() {
            return;
        }
        let again = encode_telemetry(telemetry.trip_id.as_ref(), &telemetry.points);
        match decode(&topic, &again, &config, None) {
            Ok(Message::Telemetry(decoded)) => {
                assert_eq!(decoded.points, telemetry.points, "re-encoded points decode the same");
                assert_eq!(decoded.trip_id, telemetry.trip_id);
                assert!(decoded.rejected.is_empty(), "kept points stay kept: {:?}", decoded.rejected);
            }
            other => panic!("re-encoded telemetry does not decode: {other:?}"),
        }
    }
});
