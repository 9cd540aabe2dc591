//! Every secret the config holds, to be cut out of anything stored or logged: a destination
//! may echo our request in its error answer (some CRMs echo the headers), and that answer is
//! kept in the delivery log.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::config::Config;

/// Values shorter than this are not treated as secrets: replacing them would garble text
/// without protecting anything a config would hold.
const MIN_SECRET_LEN: usize = 6;

/// The configured secrets, and the forms they travel in (a Basic header's base64, a bearer
/// value without its scheme).
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret that contains another is replaced whole.
    secrets: Vec<String>,
}

impl Redactor {
    pub fn new(config: &Config) -> Redactor {
        let mut found: Vec<String> = Vec::new();
        for source in &config.sources {
            if let Some((user, pass)) = &source.auth.basic {
                found.push(pass.expose().to_string());
                found.push(STANDARD.encode(format!("{user}:{}", pass.expose())));
            }
            if let Some(token) = &source.auth.token {
                found.push(token.expose().to_string());
            }
            if let Some((_, value)) = &source.auth.header {
                found.extend(with_parts(value.expose()));
            }
            found.extend(
                source
                    .auth
                    .hmac_secrets
                    .iter()
                    .map(|s| s.expose().to_string()),
            );
        }
        if let Some(token) = config.admin.as_ref().and_then(|a| a.token.as_ref()) {
            found.push(token.expose().to_string());
        }
        if let Some(password) = storage_password(&config.storage.url) {
            found.push(password);
        }
        for d in &config.destinations {
            for secret in d.kind.secrets() {
                found.extend(with_parts(&secret));
            }
        }
        Redactor::from_secrets(found)
    }

    pub fn from_secrets(secrets: impl IntoIterator<Item = String>) -> Redactor {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .filter(|s| s.len() >= MIN_SECRET_LEN)
            .flat_map(|s| encoded(&s).into_iter().chain([s]))
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Redactor { secrets }
    }

    /// `text` with every secret replaced by `***`, and a secret's beginning at its very end
    /// too: an answer is kept only up to a length, which may fall inside an echoed secret.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "***");
            }
        }
        for secret in &self.secrets {
            let cut = (MIN_CUT..secret.len())
                .rev()
                .filter(|&n| secret.is_char_boundary(n))
                .find(|&n| out.ends_with(&secret[..n]));
            if let Some(n) = cut {
                out.truncate(out.len() - n);
                out.push_str("***");
            }
        }
        out
    }

    pub fn redact_opt(&self, text: Option<String>) -> Option<String> {
        text.map(|t| self.redact(&t))
    }
}

/// The shortest beginning of a secret taken out at the end of a text: shorter ones end
/// ordinary text too often.
const MIN_CUT: usize = 4;

/// How a secret looks when an answer quotes it inside JSON (PHP escapes `/`) or a URL.
fn encoded(secret: &str) -> Vec<String> {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let quoted = serde_json::to_string(secret).unwrap_or_default();
    let json = quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or(secret);
    let forms = [
        json.to_string(),
        json.replace('/', "\\/"),
        utf8_percent_encode(secret, COMPONENT).to_string(),
        utf8_percent_encode(secret, NON_ALPHANUMERIC).to_string(),
    ];
    forms.into_iter().filter(|f| f != secret).collect()
}

/// A header value, and its credential without a scheme (`Bearer abc` → also `abc`).
fn with_parts(value: &str) -> Vec<String> {
    let mut out = vec![value.to_string()];
    if let Some((_, credential)) = value.split_once(' ') {
        out.push(credential.trim().to_string());
    }
    out
}

/// The password of a `postgres://user:password@host/db` URL.
fn storage_password(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    parsed.password().map(|p| {
        percent_encoding::percent_decode_str(p)
            .decode_utf8_lossy()
            .into_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_their_forms_are_cut_out() {
        let r = Redactor::from_secrets(
            [
                "Bearer crm-token-123",
                "crm-token-123",
                "ab",
                "crm-token-1234567",
            ]
            .map(String::from),
        );
        assert_eq!(
            r.redact("auth: Bearer crm-token-123, long crm-token-1234567, short ab"),
            "auth: ***, long ***, short ab"
        );
        assert_eq!(with_parts("Basic dXM6cHc="), ["Basic dXM6cHc=", "dXM6cHc="]);
        // Quoted by a PHP answer, in a URL, or cut short at the end of a kept answer.
        let r = Redactor::from_secrets(["k3y/with+sl\"ash".to_string()]);
        assert_eq!(
            r.redact(r#"{"echo":"k3y\/with+sl\"ash"} and ?k=k3y%2Fwith%2Bsl%22ash and k3y/wi"#),
            r#"{"echo":"***"} and ?k=*** and ***"#
        );
        assert_eq!(
            r.redact("the key k3"),
            "the key k3",
            "too short to be taken for it"
        );
        assert_eq!(
            storage_password("postgres://u:p%40ss@h/db").as_deref(),
            Some("p@ss")
        );
    }
}
