//! Source authentication: every configured kind must pass. Comparisons run in constant time.

use actix_web::HttpRequest;
use actix_web::http::header;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::Auth;

/// The header Qualifio signs with: `sha256=<hex or base64 HMAC-SHA256 of the raw body>`.
pub const SIGNATURE_HEADER: &str = "x-qualifio-signature";

fn same(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Which check failed: logged, never told to the client.
pub type Failed = &'static str;

/// The checks that need no body: Basic, token (Bearer, `?token=`, or path segment), header.
/// `path_token` is the extra path segment, if the request had one.
pub fn check_credentials(
    auth: &Auth,
    req: &HttpRequest,
    path_token: Option<&str>,
) -> Result<(), Failed> {
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if let Some((user, pass)) = &auth.basic {
        let Some(given) = credentials(authorization, "basic").and_then(|b| STANDARD.decode(b).ok())
        else {
            return Err("basic");
        };
        let expected = format!("{user}:{}", pass.expose());
        if !same(&given, expected.as_bytes()) {
            return Err("basic");
        }
    }
    if let Some(token) = &auth.token {
        let t = token.expose().as_bytes();
        let bearer = credentials(authorization, "bearer");
        let query = query_token(req.query_string());
        let ok = [bearer, query.as_deref(), path_token]
            .into_iter()
            .flatten()
            .any(|given| same(given.as_bytes(), t));
        if !ok {
            return Err("token");
        }
    } else if path_token.is_some() {
        // A path segment only means something when a token is configured.
        return Err("token");
    }
    if let Some((name, value)) = &auth.header {
        let given = req
            .headers()
            .get(name.as_str())
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !same(given, value.expose().as_bytes()) {
            return Err("header");
        }
    }
    Ok(())
}

/// The credentials of an `Authorization` value in `scheme`, compared case-insensitively as
/// RFC 9110 §11.1 says (`bearer x`, `BASIC …`), after one or more spaces.
fn credentials<'a>(authorization: &'a str, scheme: &str) -> Option<&'a str> {
    let (given, rest) = authorization.split_once(' ')?;
    given
        .eq_ignore_ascii_case(scheme)
        .then(|| rest.trim())
        .filter(|c| !c.is_empty())
}

fn query_token(query: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

/// The signature check: any configured secret may match (rotation). No secrets: passes.
pub fn check_signature(auth: &Auth, req: &HttpRequest, body: &[u8]) -> bool {
    if auth.hmac_secrets.is_empty() {
        return true;
    }
    let Some(given) = req
        .headers()
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let digest = given.trim();
    let digest = digest.strip_prefix("sha256=").unwrap_or(digest);
    let Some(digest) = decode_digest(digest) else {
        return false;
    };
    auth.hmac_secrets.iter().any(|secret| {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) else {
            return false;
        };
        mac.update(body);
        mac.verify_slice(&digest).is_ok()
    })
}

/// A 32-byte digest written in hex or base64 (Qualifio does not say which).
fn decode_digest(text: &str) -> Option<Vec<u8>> {
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return (0..64)
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
            .collect();
    }
    let bytes = STANDARD
        .decode(text)
        .or_else(|_| STANDARD_NO_PAD.decode(text))
        .ok()?;
    (bytes.len() == 32).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_are_case_insensitive() {
        assert_eq!(credentials("Bearer abc", "bearer"), Some("abc"));
        assert_eq!(credentials("bearer abc", "bearer"), Some("abc"));
        assert_eq!(credentials("BEARER   abc ", "bearer"), Some("abc"));
        assert_eq!(credentials("basic dXM6cHc=", "basic"), Some("dXM6cHc="));
        assert_eq!(credentials("Bearerabc", "bearer"), None);
        assert_eq!(credentials("Basic abc", "bearer"), None);
        assert_eq!(credentials("Bearer ", "bearer"), None);
    }

    #[test]
    fn digests_in_hex_and_base64() {
        let bytes: Vec<u8> = (0u8..32).collect();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(decode_digest(&hex), Some(bytes.clone()));
        assert_eq!(decode_digest(&hex.to_uppercase()), Some(bytes.clone()));
        assert_eq!(decode_digest(&STANDARD.encode(&bytes)), Some(bytes.clone()));
        assert_eq!(decode_digest(&STANDARD_NO_PAD.encode(&bytes)), Some(bytes));
        assert_eq!(decode_digest("abc"), None);
    }
}
