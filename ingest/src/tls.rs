//! TLS for tripline's MQTT, with rustls and its `ring` provider: the client configuration of
//! tripline's own connection to a broker (`mqtts://`), and the embedded endpoint's server
//! configuration, which may ask vehicles for client certificates whose subject's common name
//! (CN) is the vehicle id.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, ServerConfig};
pub use tripline_store::tls::{certificates, client_config, private_key, provider, roots};
use x509_cert::der::{Decode, asn1::PrintableStringRef, oid::ObjectIdentifier};

/// A TLS configuration inside a settings struct: shared, compared by identity.
pub struct Tls<T>(pub Arc<T>);

/// tripline's client side (to a broker).
pub type ClientTls = Tls<ClientConfig>;
/// The embedded endpoint's server side.
pub type ServerTls = Tls<ServerConfig>;

impl<T> Clone for Tls<T> {
    fn clone(&self) -> Self {
        Tls(Arc::clone(&self.0))
    }
}

impl<T> std::fmt::Debug for Tls<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

impl<T> PartialEq for Tls<T> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// The object identifier of a name's common name (CN).
const COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");

/// A server presenting the chain of `cert_file` with the key of `key_file`. With `client_ca`,
/// clients may present a certificate issued by one of its authorities (verified; the CN names
/// the vehicle); clients without one still connect and authenticate with their password.
///
/// # Errors
/// A file that cannot be read or used.
pub fn server_config(cert_file: &Path, key_file: &Path, client_ca: Option<&Path>) -> Result<Arc<ServerConfig>, String> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certificates(cert_file)?, private_key(key_file)?)
        .map_err(|e| format!("{}: {e}", key_file.display()))?;
    Ok(Arc::new(config))
}

/// The common name (CN) of a certificate's subject, if it has one.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let cert = x509_cert::Certificate::from_der(cert.as_ref()).ok()?;
    cert.tbs_certificate.subject.0.iter().flat_map(|rdn| rdn.0.iter()).find(|atv| atv.oid == COMMON_NAME).and_then(
        |atv| {
            atv.value
                .decode_as::<String>()
                .ok()
                .or_else(|| atv.value.decode_as::<PrintableStringRef<'_>>().ok().map(|s| s.as_str().to_owned()))
        },
    )
}
