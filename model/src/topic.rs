//! MQTT topics of the contract: `vehicles/{vehicle_id}/telemetry` and `vehicles/{vehicle_id}/trips`.

use crate::ModelError;
use crate::ids::VehicleId;

/// Topic filter for every vehicle's telemetry.
pub const TELEMETRY_FILTER: &str = "vehicles/+/telemetry";
/// Topic filter for every vehicle's trip markers.
pub const TRIPS_FILTER: &str = "vehicles/+/trips";

/// What a topic carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopicKind {
    /// `vehicles/{id}/telemetry`: a Telemetry payload.
    Telemetry,
    /// `vehicles/{id}/trips`: a TripMarker payload.
    Trips,
}

/// A parsed contract topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topic {
    /// The vehicle named by the topic; authoritative over anything in the payload.
    pub vehicle_id: VehicleId,
    /// What the payload should be.
    pub kind: TopicKind,
}

impl Topic {
    /// Parses `vehicles/{vehicle_id}/telemetry|trips`.
    pub fn parse(topic: &str) -> Result<Topic, ModelError> {
        let invalid = || ModelError::InvalidTopic { topic: topic.chars().take(200).collect() };
        let mut parts = topic.split('/');
        let (Some("vehicles"), Some(vehicle), Some(kind), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        let kind = match kind {
            "telemetry" => TopicKind::Telemetry,
            "trips" => TopicKind::Trips,
            _ => return Err(invalid()),
        };
        let vehicle_id = VehicleId::parse(vehicle).map_err(|_| invalid())?;
        Ok(Topic { vehicle_id, kind })
    }

    /// The topic a vehicle publishes telemetry to.
    pub fn telemetry(vehicle_id: &VehicleId) -> String {
        format!("vehicles/{vehicle_id}/telemetry")
    }

    /// The topic a vehicle publishes trip markers to.
    pub fn trips(vehicle_id: &VehicleId) -> String {
        format!("vehicles/{vehicle_id}/trips")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_topics_parse_and_format_back() {
        let id = VehicleId::parse("car-7").unwrap();
        let t = Topic::parse(&Topic::telemetry(&id)).unwrap();
        assert_eq!((t.vehicle_id.clone(), t.kind), (id.clone(), TopicKind::Telemetry));
        assert_eq!(Topic::parse(&Topic::trips(&id)).unwrap().kind, TopicKind::Trips);
    }

    #[test]
    fn other_topics_are_invalid() {
        for bad in [
            "vehicles/car-7",
            "vehicles/car 7/telemetry",
            "vehicles/car-7/telemetry/x",
            "cars/a/telemetry",
            "vehicles//trips",
            "vehicles/a/status",
        ] {
            assert!(Topic::parse(bad).is_err(), "{bad}");
        }
    }
}
