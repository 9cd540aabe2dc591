//! The one outbound HTTP client every connector shares.

use std::net::IpAddr;
use std::time::Duration;

use reqwest::Url;

/// Default total time for one request; a destination may set its own `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// rustls with `ring`, no redirects: a destination that redirects is misconfigured, and following
/// it could send a body somewhere unexpected.
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    install_tls_provider();
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(DEFAULT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("hookfan/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// reqwest panics at its first client when no rustls provider is installed. Installing is
/// idempotent in effect: a second call finds one and changes nothing.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Whether a URL's host is this machine.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// Tokens and rows travel only over HTTPS; plain HTTP only to this machine (tests, a local proxy).
pub fn require_safe_url(raw: &str) -> Result<(), String> {
    let url = Url::parse(raw).map_err(|e| format!("not a valid URL: {e}"))?;
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&url) => Ok(()),
        other => Err(format!(
            "must use https (got {other}://; plain http is allowed to a loopback address only)"
        )),
    }
}

/// Reads at most `limit` bytes of an answer (whole chunks, so a little more), so a huge body
/// costs nothing.
pub async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<String, reqwest::Error> {
    let mut buf = Vec::new();
    while buf.len() < limit {
        match response.chunk().await? {
            Some(chunk) => buf.extend_from_slice(&chunk),
            None => break,
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback() {
        assert!(require_safe_url("https://sheets.googleapis.com").is_ok());
        assert!(require_safe_url("http://127.0.0.1:8080").is_ok());
        assert!(require_safe_url("http://[::1]:8080/x").is_ok());
        assert!(require_safe_url("http://localhost:1").is_ok());
        assert!(require_safe_url("http://sheets.example.com").is_err());
        assert!(require_safe_url("ftp://127.0.0.1").is_err());
        assert!(require_safe_url("not a url").is_err());
    }
}
