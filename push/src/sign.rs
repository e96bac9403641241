//! Standard Webhooks signatures: HMAC-SHA256 over `{id}.{timestamp}.{body}` with the secret's
//! bytes (`whsec_` and base64), sent as `v1,<base64>`; several, space-separated, while a rotated
//! secret still signs.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The prefix of a symmetric secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// Bytes of a new secret (the convention asks for at least 24).
const SECRET_BYTES: usize = 32;

/// A new secret: 32 random bytes from the operating system, `whsec_` and base64.
pub fn new_secret() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes)?;
    Ok(format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes)))
}

/// The key bytes of a secret (`whsec_` and base64; without the prefix, the base64 alone).
fn key(secret: &str) -> Option<Vec<u8>> {
    STANDARD.decode(secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret)).ok()
}

/// One signature of `body` sent as message `id` at `timestamp_s` (Unix seconds): `v1,<base64>`.
pub fn signature(secret: &str, id: &str, timestamp_s: i64, body: &[u8]) -> Option<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(&key(secret)?).ok()?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp_s.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())))
}

/// The `webhook-signature` header: one signature per secret, space-separated.
pub fn header(secrets: &[&str], id: &str, timestamp_s: i64, body: &[u8]) -> String {
    secrets.iter().filter_map(|secret| signature(secret, id, timestamp_s, body)).collect::<Vec<_>>().join(" ")
}

/// Whether `header` holds a valid signature of `body` by `secret` (what a receiver checks; the
/// comparison takes the same time wherever the bytes differ).
pub fn verify(secret: &str, id: &str, timestamp_s: i64, body: &[u8], header: &str) -> bool {
    let Some(key) = key(secret) else { return false };
    header.split(' ').filter_map(|s| s.strip_prefix("v1,")).any(|given| {
        let Ok(given) = STANDARD.decode(given) else { return false };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key) else { return false };
        mac.update(format!("{id}.{timestamp_s}.").as_bytes());
        mac.update(body);
        mac.verify_slice(&given).is_ok()
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A published known answer of the convention (the reference libraries' test vector).
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;

    #[test]
    fn a_signature_matches_the_conventions_known_answer() {
        assert_eq!(signature(SECRET, ID, TIMESTAMP, BODY).unwrap(), "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn a_rotated_secret_signs_beside_the_new_one_and_either_verifies() {
        let new = new_secret().unwrap();
        assert!(new.starts_with(SECRET_PREFIX) && new.len() > 40);
        let both = header(&[&new, SECRET], ID, TIMESTAMP, BODY);
        assert_eq!(both.split(' ').count(), 2);
        assert!(verify(&new, ID, TIMESTAMP, BODY, &both));
        assert!(verify(SECRET, ID, TIMESTAMP, BODY, &both));
        assert!(!verify(SECRET, ID, TIMESTAMP + 1, BODY, &both), "the timestamp is signed");
        assert!(!verify(SECRET, ID, TIMESTAMP, b"{}", &both), "the body is signed");
        assert!(!verify(&new_secret().unwrap(), ID, TIMESTAMP, BODY, &both), "another secret");
    }
}
