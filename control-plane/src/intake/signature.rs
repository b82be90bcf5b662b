//! `X-Hub-Signature-256` verification: HMAC-SHA256 of the raw body, compared in constant
//! time, with any of the configured secrets (two live while a secret is rotated).

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing X-Hub-Signature-256 header")]
    Missing,
    #[error("malformed X-Hub-Signature-256 header")]
    Malformed,
    #[error("signature does not match")]
    Mismatch,
}

/// Verifies `header` (`sha256=<64 hex digits>`) over `body` against every secret.
pub fn verify(
    secrets: &[SecretString],
    header: Option<&[u8]>,
    body: &[u8],
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let hex_sig = header
        .strip_prefix(b"sha256=")
        .ok_or(SignatureError::Malformed)?;
    if hex_sig.len() != 64 {
        return Err(SignatureError::Malformed);
    }
    let mut expected = [0u8; 32];
    hex::decode_to_slice(hex_sig, &mut expected).map_err(|_| SignatureError::Malformed)?;
    // Check every secret (no early exit), so timing does not tell which one matched.
    let mut ok = false;
    for secret in secrets {
        let mut mac = HmacSha256::new_from_slice(secret.expose_secret().as_bytes())
            .expect("HMAC accepts keys of any length");
        mac.update(body);
        ok |= mac.verify_slice(&expected).is_ok();
    }
    if ok {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The header value GitHub would send for `body` signed with `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac =
        HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(s: &[&str]) -> Vec<SecretString> {
        s.iter()
            .map(|s| SecretString::from(s.to_string()))
            .collect()
    }

    #[test]
    fn githubs_documented_example_verifies() {
        // From GitHub's "Validating webhook deliveries" documentation.
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let s = secrets(&["It's a Secret to Everybody"]);
        assert_eq!(verify(&s, Some(sig.as_bytes()), b"Hello, World!"), Ok(()));
        assert_eq!(sign("It's a Secret to Everybody", b"Hello, World!"), sig);
    }

    #[test]
    fn any_of_two_rotating_secrets_verifies() {
        let s = secrets(&["old-secret-0123456", "new-secret-0123456"]);
        for secret in ["old-secret-0123456", "new-secret-0123456"] {
            let sig = sign(secret, b"{}");
            assert_eq!(verify(&s, Some(sig.as_bytes()), b"{}"), Ok(()));
        }
        let other = sign("third-secret-01234", b"{}");
        assert_eq!(
            verify(&s, Some(other.as_bytes()), b"{}"),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_changed_body_does_not_verify() {
        let s = secrets(&["secret-secret-1234"]);
        let sig = sign("secret-secret-1234", br#"{"a":1}"#);
        assert_eq!(
            verify(&s, Some(sig.as_bytes()), br#"{"a":2}"#),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&s, Some(sig.as_bytes()), br#"{"a":1} "#),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn malformed_and_missing_headers_are_told_apart() {
        let s = secrets(&["secret-secret-1234"]);
        assert_eq!(verify(&s, None, b"x"), Err(SignatureError::Missing));
        for bad in [
            "",
            "sha1=abc",
            "sha256=",
            "sha256=zz",
            &format!("sha256={}", "g".repeat(64)),
            &format!("sha256={}", "a".repeat(63)),
            &format!("sha256={}", "a".repeat(66)),
        ] {
            assert_eq!(
                verify(&s, Some(bad.as_bytes()), b"x"),
                Err(SignatureError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn uppercase_hex_is_accepted() {
        let s = secrets(&["secret-secret-1234"]);
        let sig = sign("secret-secret-1234", b"x")
            .to_uppercase()
            .replace("SHA256=", "sha256=");
        assert_eq!(verify(&s, Some(sig.as_bytes()), b"x"), Ok(()));
    }

    #[test]
    fn no_secrets_means_nothing_verifies() {
        let sig = sign("secret-secret-1234", b"x");
        assert_eq!(
            verify(&[], Some(sig.as_bytes()), b"x"),
            Err(SignatureError::Mismatch)
        );
    }
}
