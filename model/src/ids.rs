//! Identifiers, validated once at the edge: 1–64 characters of `[A-Za-z0-9._:-]`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ModelError;

/// Longest identifier the contract allows, in bytes (the alphabet is ASCII).
pub const MAX_ID_LEN: usize = 64;

fn is_id_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-')
}

/// Checks an identifier against the contract's rule; `kind` names it in the error.
fn validate_id(kind: &'static str, value: &str) -> Result<(), ModelError> {
    if value.is_empty() || value.len() > MAX_ID_LEN || !value.bytes().all(is_id_char) {
        return Err(ModelError::InvalidId { kind, value: value.chars().take(80).collect() });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        ///
        /// Shared text: a clone (one per stored point, message and trip record) is a reference
        /// count, not an allocation.
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String))]
        pub struct $name(std::sync::Arc<str>);

        impl $name {
            /// Validates `value` (1–64 chars of `[A-Za-z0-9._:-]`).
            pub fn parse(value: &str) -> Result<Self, ModelError> {
                validate_id($kind, value)?;
                Ok(Self(std::sync::Arc::from(value)))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = ModelError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Self::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A vehicle, as named in its MQTT topic `vehicles/{vehicle_id}/…`.
    VehicleId,
    "vehicle_id"
);
id_type!(
    /// A trip: given by the device, or derived deterministically by tripline's trip cutter.
    TripId,
    "trip_id"
);

id_type!(
    /// A tenant (insurer or fleet): owns vehicles and API keys, and sees only its own data.
    TenantId,
    "tenant"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_the_contract_alphabet() {
        for ok in ["a", "car-1", "VIN:WVW.ZZZ_1", &"x".repeat(64)] {
            assert_eq!(VehicleId::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn ids_reject_empty_long_and_foreign_characters() {
        for bad in ["", &"x".repeat(65), "car 1", "car/1", "car+1", "wagen-ä", "#"] {
            let err = TripId::parse(bad).unwrap_err();
            assert!(matches!(err, ModelError::InvalidId { kind: "trip_id", .. }), "{bad:?}");
        }
    }

    #[test]
    fn ids_deserialize_through_validation() {
        assert!(serde_json::from_str::<VehicleId>("\"ok-1\"").is_ok());
        assert!(serde_json::from_str::<VehicleId>("\"not ok\"").is_err());
    }
}
