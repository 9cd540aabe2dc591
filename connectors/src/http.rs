//! The one outbound HTTP client every connector shares.

use std::time::Duration;

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
