//! Vehicle credentials on the embedded endpoint: MQTT user name = vehicle id, password = the
//! vehicle's secret.
//!
//! A secret is 32 random bytes in hex, issued by `tripline fleet add|import|rotate-secret` and
//! shown once; the store keeps only its hashes ([`hash_secret`]): Argon2id (a PHC string, salted,
//! [`PARAMS`]) for the embedded endpoint, and beside it Mosquitto's `$7$` form (PBKDF2-HMAC-SHA512)
//! that `tripline fleet export --mosquitto` writes into a Mosquitto password file. The
//! secrets are machine-made with 256 bits of entropy, so the hash's work factor is not what
//! protects them against a stolen registry (no guessing reaches 2^256); it is kept moderate (8 MiB,
//! one pass: milliseconds) because a whole fleet reconnects after a restart. A hash of other
//! parameters (a PHC string says its own) still verifies. Once a vehicle's secret is verified, the
//! endpoint remembers the SHA-256 of that secret next to the stored hash it matched, and a later
//! CONNECT with the same secret while the store holds the same hash is accepted on that. A rotated or revoked secret
//! changes or removes the stored hash, so the remembered answer no longer applies. At most
//! [`VERIFYING_AT_ONCE`] hashes are verified at a time.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tripline_model::VehicleId;
use tripline_store::Registry;

use crate::endpoint::{Authenticate, Credentials, Identity, Refusal};

/// Argon2 verifications running at once (each takes [`PARAMS`]' memory and one core).
pub const VERIFYING_AT_ONCE: usize = 2;
/// Argon2id parameters of new hashes: 8 MiB, one pass, one lane (see the module doc).
pub const PARAMS: (u32, u32, u32) = (8 * 1024, 1, 1);

fn hasher() -> Argon2<'static> {
    let (memory_kib, passes, lanes) = PARAMS;
    let params = argon2::Params::new(memory_kib, passes, lanes, None).unwrap_or_default();
    Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}
/// Verified secrets remembered at most (beyond it the least used are forgotten).
const REMEMBERED: usize = 200_000;

/// A new vehicle secret: 32 random bytes in hex.
pub fn new_secret() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Why a secret could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The system gave no randomness for a salt.
    #[error("no randomness: {0}")]
    NoRandomness(#[from] getrandom::Error),
    /// Argon2 refused (its own message).
    #[error("argon2: {0}")]
    Argon2(String),
}

/// PBKDF2 iterations of the broker hash (Mosquitto's own tool uses 101; the string carries it).
pub const BROKER_HASH_ITERATIONS: u32 = 1000;

/// The stored form of a secret: its Argon2id hash with a random salt (a PHC string), a space, and
/// its broker hash ([`broker_hash`]). Neither contains a space.
pub fn hash_secret(secret: &str) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| HashError::Argon2(e.to_string()))?;
    let argon2 = hasher().hash_password(secret.as_bytes(), &salt).map_err(|e| HashError::Argon2(e.to_string()))?;
    Ok(format!("{argon2} {}", broker_hash(secret)?))
}

/// Mosquitto's password-file form of a secret: `$7$<iterations>$<salt>$<hash>`, PBKDF2-HMAC-SHA512
/// over a random 12-byte salt, both in standard base64.
pub fn broker_hash(secret: &str) -> Result<String, HashError> {
    use base64::Engine as _;
    let mut salt = [0u8; 12];
    getrandom::fill(&mut salt)?;
    let mut hash = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<sha2::Sha512>(secret.as_bytes(), &salt, BROKER_HASH_ITERATIONS, &mut hash);
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(format!("$7${BROKER_HASH_ITERATIONS}${}${}", b64.encode(salt), b64.encode(hash)))
}

/// The broker hash of a stored secret (`None` for one stored before broker hashes existed).
pub fn stored_broker_hash(stored: &str) -> Option<&str> {
    stored.split(' ').nth(1).filter(|hash| hash.starts_with("$7$"))
}

/// Whether `secret` matches the stored form (a malformed one matches nothing).
pub fn secret_matches(secret: &str, stored: &str) -> bool {
    secret_matches_in(secret, stored, &mut Vec::new())
}

/// [`secret_matches`] with Argon2's working memory in `memory` (grown to what the stored
/// parameters need, and kept): a fleet reconnecting would otherwise allocate and free megabytes
/// per check, which the allocator does not always give back.
fn secret_matches_in(secret: &str, stored: &str, memory: &mut Vec<argon2::Block>) -> bool {
    let argon2 = stored.split(' ').next().unwrap_or_default();
    let Ok(hash) = PasswordHash::new(argon2) else { return false };
    // The parameters come from the stored string, whatever `hasher` uses now.
    let (Ok(params), Ok(algorithm)) = (argon2::Params::try_from(&hash), argon2::Algorithm::try_from(hash.algorithm))
    else {
        return false;
    };
    let Ok(version) = argon2::Version::try_from(hash.version.unwrap_or(0x13)) else { return false };
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else { return false };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else { return false };
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, argon2::Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    let computed = Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        secret.as_bytes(),
        salt,
        &mut out,
        &mut memory[..blocks],
    );
    // `Output`'s comparison takes constant time.
    computed.is_ok() && argon2::password_hash::Output::new(&out).is_ok_and(|out| out == expected)
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Authenticates vehicles against the registry's secret hashes.
pub struct VehicleAuth<R> {
    registry: R,
    verifying: Semaphore,
    /// Argon2 working memory, one per verification at once, reused.
    memory: Mutex<Vec<Vec<argon2::Block>>>,
    /// Vehicle → (the stored hash a secret was verified against, that secret's SHA-256).
    verified: quick_cache::sync::Cache<String, (String, [u8; 32])>,
}

impl<R> VehicleAuth<R> {
    /// Checks credentials against `registry`.
    pub fn new(registry: R) -> VehicleAuth<R> {
        VehicleAuth {
            registry,
            verifying: Semaphore::new(VERIFYING_AT_ONCE),
            memory: Mutex::default(),
            verified: quick_cache::sync::Cache::new(REMEMBERED),
        }
    }

    fn remembered(&self, vehicle: &str, stored: &str, secret: &[u8; 32]) -> bool {
        self.verified.get(vehicle).is_some_and(|(hash, digest)| hash == stored && &digest == secret)
    }

    fn remember(&self, vehicle: String, stored: String, secret: [u8; 32]) {
        self.verified.insert(vehicle, (stored, secret));
    }
}

impl<R: Registry + Send + Sync + 'static> VehicleAuth<R> {
    async fn check(&self, credentials: Credentials) -> Result<Identity, Refusal> {
        if let Some(name) = credentials.certificate_cn {
            return self.check_certificate(name, credentials.username).await;
        }
        let (Some(user), Some(secret)) = (credentials.username, credentials.password) else {
            return Err(Refusal::BadCredentials);
        };
        let Ok(vehicle) = VehicleId::parse(&user) else { return Err(Refusal::BadCredentials) };
        let stored = match self.registry.vehicle_secret(&vehicle).await {
            Ok(Some(stored)) => stored,
            // Unknown, or revoked: the same answer, so that ids cannot be probed.
            Ok(None) => return Err(Refusal::BadCredentials),
            Err(error) => {
                tracing::warn!(%error, "vehicle credentials could not be read");
                return Err(Refusal::Unavailable);
            }
        };
        let hashed = digest(&secret);
        if self.remembered(&user, &stored, &hashed) {
            return Ok(Identity::Vehicle(user));
        }
        let Ok(_permit) = self.verifying.acquire().await else { return Err(Refusal::Unavailable) };
        let mut memory = self.memory.lock().unwrap_or_else(PoisonError::into_inner).pop().unwrap_or_default();
        let against = stored.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let matches = secret_matches_in(&secret, &against, &mut memory);
            (matches, memory)
        })
        .await;
        let matches = match checked {
            Ok((matches, memory)) => {
                self.memory.lock().unwrap_or_else(PoisonError::into_inner).push(memory);
                matches
            }
            Err(_) => false,
        };
        if !matches {
            return Err(Refusal::BadCredentials);
        }
        self.remember(user.clone(), stored, hashed);
        Ok(Identity::Vehicle(user))
    }
}

impl<R: Registry + Send + Sync + 'static> VehicleAuth<R> {
    /// A client certificate the endpoint verified names the vehicle by its common name; the
    /// vehicle must be registered and not revoked (it still has a secret). A user name, if any,
    /// must be that vehicle's.
    async fn check_certificate(&self, name: String, username: Option<String>) -> Result<Identity, Refusal> {
        if username.as_ref().is_some_and(|user| *user != name) {
            return Err(Refusal::BadCredentials);
        }
        let Ok(vehicle) = VehicleId::parse(&name) else { return Err(Refusal::BadCredentials) };
        match self.registry.vehicle_secret(&vehicle).await {
            Ok(Some(_)) => Ok(Identity::Vehicle(name)),
            Ok(None) => Err(Refusal::BadCredentials),
            Err(error) => {
                tracing::warn!(%error, "vehicle credentials could not be read");
                Err(Refusal::Unavailable)
            }
        }
    }
}

impl<R: Registry + Send + Sync + 'static> Authenticate for VehicleAuth<R> {
    fn authenticate(
        &self,
        credentials: Credentials,
    ) -> Pin<Box<dyn Future<Output = Result<Identity, Refusal>> + Send + '_>> {
        Box::pin(self.check(credentials))
    }
}

/// Shared, for the endpoint.
impl<R: Registry + Send + Sync + 'static> VehicleAuth<R> {
    /// This authenticator as the endpoint takes it.
    pub fn shared(self) -> Arc<dyn Authenticate> {
        Arc::new(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_matches_its_hash_only() {
        let secret = new_secret().ok().unwrap_or_default();
        assert_eq!(secret.len(), 64);
        let hash = hash_secret(&secret).unwrap_or_default();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(stored_broker_hash(&hash).is_some_and(|b| b.starts_with("$7$1000$")), "{hash}");
        assert!(secret_matches(&secret, &hash));
        assert!(!secret_matches("guess", &hash));
        assert!(!secret_matches(&secret, "not a hash"));
        assert_ne!(hash_secret(&secret).unwrap_or_default(), hash, "salted");
        // A hash of other parameters verifies by the parameters it states.
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap_or_else(|_| unreachable!());
        let other = Argon2::default().hash_password(b"other", &salt).map(|h| h.to_string()).unwrap_or_default();
        assert!(secret_matches("other", &other) && !secret_matches("another", &other), "{other}");
    }

    #[test]
    fn the_broker_hash_is_pbkdf2_sha512_as_mosquitto_reads_it() {
        use base64::Engine as _;
        let hash = broker_hash("s3cret").unwrap_or_default();
        let parts: Vec<&str> = hash.split('$').collect();
        assert_eq!(parts[..3], ["", "7", "1000"], "{hash}");
        let b64 = base64::engine::general_purpose::STANDARD;
        let salt = b64.decode(parts[3]).unwrap_or_default();
        assert_eq!(salt.len(), 12);
        let mut expected = [0u8; 64];
        pbkdf2::pbkdf2_hmac::<sha2::Sha512>(b"s3cret", &salt, 1000, &mut expected);
        assert_eq!(b64.decode(parts[4]).unwrap_or_default(), expected);
    }
}
