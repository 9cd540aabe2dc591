//! Random tokens from the operating system's generator (ring's `SystemRandom`, already linked for
//! TLS): claim tokens, and secrets `hookfan gen-secret` prints.

use ring::rand::{SecureRandom, SystemRandom};

/// `bytes` random bytes, in lowercase hex.
pub fn hex_token(bytes: usize) -> Result<String, ring::error::Unspecified> {
    let mut buf = vec![0u8; bytes];
    SystemRandom::new().fill(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_hex_of_the_asked_length_and_differ() {
        let a = hex_token(16).unwrap();
        let b = hex_token(16).unwrap();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
