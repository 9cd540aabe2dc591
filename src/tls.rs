//! HTTPS served by hookfan itself, from `[server.tls]` (PEM files), with rustls and `ring`. The
//! certificate can be replaced while running: a reload reads the files again, and new
//! connections get the new certificate.

use std::fmt;
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::Tls;

/// The certificate new connections get; a reload swaps it.
pub struct Certificate(RwLock<Arc<CertifiedKey>>);

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Certificate")
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

impl Certificate {
    /// Reads the files again, without using them yet: see [`Certificate::swap`].
    pub fn read(tls: &Tls) -> Result<Arc<CertifiedKey>, String> {
        load(tls).map(Arc::new)
    }

    /// Serves `key` from the next handshake on.
    pub fn swap(&self, key: Arc<CertifiedKey>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = key;
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate chain and its key, checked to belong together.
fn load(tls: &Tls) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read the certificate {}: {e}", tls.cert.display()))?;
    if chain.is_empty() {
        return Err(format!("no certificate in {}", tls.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| format!("cannot read the private key {}: {e}", tls.key.display()))?;
    CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| format!("the certificate and key do not make a TLS setup: {e}"))
}

/// The server side of TLS, and the handle that swaps its certificate.
pub fn server_config(tls: &Tls) -> Result<(rustls::ServerConfig, Arc<Certificate>), String> {
    let certificate = Arc::new(Certificate(RwLock::new(Arc::new(load(tls)?))));
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(certificate.clone());
    Ok((config, certificate))
}
