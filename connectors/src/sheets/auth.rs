//! Access tokens for a Google service account, from its key file, through yup-oauth2 (which signs
//! the JWT, posts it to the key's `token_uri`, caches the token and renews it before it expires).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use yup_oauth2::authenticator::Authenticator;
use yup_oauth2::{DefaultHyperClientBuilder, HyperClientBuilder, ServiceAccountKey};

use crate::Secret;

/// Write access to spreadsheets, nothing else.
pub const SCOPE: &str = "https://www.googleapis.com/auth/spreadsheets";
/// One token request; yup-oauth2's own client would otherwise wait forever.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(15);

/// yup-oauth2's default client: hyper-rustls on rustls' `ring` provider (the same rustls as
/// reqwest's, no second TLS stack), `https_or_http`, so a loopback fake works in tests.
type Connector = <DefaultHyperClientBuilder as HyperClientBuilder>::Connector;

/// What the relay needs from a key file. The private key stays inside yup-oauth2.
pub struct Tokens {
    authenticator: Authenticator<Connector>,
    /// The service account's e-mail: the operator shares the spreadsheet with it.
    pub email: String,
    pub token_uri: String,
    /// Set when Google would not give a token: the key may have been revoked, and a new one
    /// put at the same path, so the file is read again before the next try.
    failed: AtomicBool,
}

/// What identifies a version of the key file: a key written over the old one changes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStamp {
    modified: Option<SystemTime>,
    len: u64,
}

impl KeyStamp {
    pub fn of(path: &Path) -> Option<KeyStamp> {
        let meta = std::fs::metadata(path).ok()?;
        Some(KeyStamp {
            modified: meta.modified().ok(),
            len: meta.len(),
        })
    }
}

impl Tokens {
    /// Reads the key and builds the authenticator; makes no request.
    pub async fn load(path: &Path) -> Result<Tokens, String> {
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|e| unreadable(path, &e))?;
        let key = parse_key(&bytes, path)?;
        let email = key.client_email.clone();
        let token_uri = key.token_uri.clone();
        let authenticator = yup_oauth2::ServiceAccountAuthenticator::builder(key)
            .with_timeout(TOKEN_TIMEOUT)
            .build()
            .await
            // yup-oauth2's messages here name the problem ("Error reading key from PEM"), never
            // the key.
            .map_err(|e| {
                format!(
                    "the service-account key {} cannot be used: {e}",
                    path.display()
                )
            })?;
        Ok(Tokens {
            authenticator,
            email,
            token_uri,
            failed: AtomicBool::new(false),
        })
    }

    /// The cached token, or a new one when it is missing or about to expire.
    pub async fn token(&self) -> Result<Secret, String> {
        let token = self
            .authenticator
            .token(&[SCOPE])
            .await
            .map_err(|e| self.failed(e))?;
        Self::secret(token)
    }

    /// A new token whatever the cache holds (Google answered 401 to the cached one).
    pub async fn fresh_token(&self) -> Result<Secret, String> {
        let token = self
            .authenticator
            .force_refreshed_token(&[SCOPE])
            .await
            .map_err(|e| self.failed(e))?;
        Self::secret(token)
    }

    fn secret(token: yup_oauth2::AccessToken) -> Result<Secret, String> {
        token
            .token()
            .map(Secret::new)
            .ok_or_else(|| "the token endpoint answered without an access token".to_string())
    }

    /// Whether Google refused a token since the key was read.
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    fn failed(&self, e: yup_oauth2::Error) -> String {
        self.failed.store(true, Ordering::Relaxed);
        format!(
            "cannot get an access token for {} from {}: {e}",
            self.email, self.token_uri
        )
    }
}

/// The service account's e-mail, read without building anything (for the rate key).
pub fn read_email(path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| unreadable(path, &e))?;
    parse_key(&bytes, path).map(|k| k.client_email)
}

fn unreadable(path: &Path, e: &std::io::Error) -> String {
    format!(
        "cannot read the service-account key {}: {e}",
        path.display()
    )
}

/// Parses a key file. Errors name the file and what is wrong, never its content.
fn parse_key(bytes: &[u8], path: &Path) -> Result<ServiceAccountKey, String> {
    let key: ServiceAccountKey = serde_json::from_slice(bytes).map_err(|e| {
        // serde_json's message gives a position and, for a missing key, its name: no content.
        format!(
            "{} is not a Google service-account key (JSON with client_email, private_key, token_uri): {e}",
            path.display()
        )
    })?;
    if let Some(kind) = &key.key_type
        && kind != "service_account"
    {
        return Err(format!(
            "{} holds credentials of type {kind:?}; hookfan needs a service-account key (\"type\": \"service_account\")",
            path.display()
        ));
    }
    if let Err(e) = crate::http::require_safe_url(&key.token_uri) {
        return Err(format!("{}: token_uri {e}", path.display()));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_errors_never_show_the_key() {
        let path = Path::new("sa.json");
        let secret = "-----BEGIN PRIVATE KEY-----\\nSECRETSECRET\\n-----END PRIVATE KEY-----\\n";
        let no_email = format!(
            r#"{{"type":"service_account","private_key":"{secret}","token_uri":"https://oauth2.googleapis.com/token"}}"#
        );
        let e = parse_key(no_email.as_bytes(), path).unwrap_err();
        assert!(e.contains("client_email"), "{e}");
        assert!(!e.contains("SECRET"), "{e}");

        let plain_http = format!(
            r#"{{"type":"service_account","private_key":"{secret}","client_email":"a@b","token_uri":"http://tokens.example/token"}}"#
        );
        let e = parse_key(plain_http.as_bytes(), path).unwrap_err();
        assert!(e.contains("https"), "{e}");
        assert!(!e.contains("SECRET"), "{e}");

        let user =
            r#"{"type":"authorized_user","private_key":"","client_email":"","token_uri":""}"#;
        assert!(
            parse_key(user.as_bytes(), path)
                .unwrap_err()
                .contains("authorized_user")
        );

        let e = parse_key(b"{\"private_key\": \"SECRET", path).unwrap_err();
        assert!(!e.contains("SECRET"), "{e}");
    }

    #[test]
    fn loopback_token_uris_may_be_plain_http() {
        let ok = r#"{"type":"service_account","private_key":"k","client_email":"sa@p.iam.gserviceaccount.com","token_uri":"http://127.0.0.1:4000/token"}"#;
        let key = parse_key(ok.as_bytes(), Path::new("sa.json")).unwrap();
        assert_eq!(key.client_email, "sa@p.iam.gserviceaccount.com");
    }
}
