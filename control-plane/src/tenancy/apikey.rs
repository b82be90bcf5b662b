//! API keys: `sy_<prefix>_<secret>`.
//!
//! The 10-character prefix is stored in clear and unique, so a key is found with one indexed
//! lookup; only the SHA-256 of the whole key is stored. The secret part carries 40 random
//! base62 characters (≈238 bits), so a fast hash is enough: nothing to brute-force.

use rand::Rng;
use sha2::{Digest, Sha256};

const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const PREFIX_LEN: usize = 10;
const SECRET_LEN: usize = 40;

/// A freshly generated key: show `plaintext` once, store `prefix` and `hash`.
#[derive(Debug)]
pub struct NewKey {
    pub plaintext: String,
    pub prefix: String,
    pub hash: Vec<u8>,
}

fn random_string(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

pub fn generate() -> NewKey {
    let prefix = random_string(PREFIX_LEN);
    let plaintext = format!("sy_{prefix}_{}", random_string(SECRET_LEN));
    let hash = hash(&plaintext);
    NewKey {
        plaintext,
        prefix,
        hash,
    }
}

pub fn hash(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// The lookup prefix of something that looks like an API key.
pub fn parse_prefix(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("sy_")?;
    let (prefix, secret) = rest.split_once('_')?;
    let ok = prefix.len() == PREFIX_LEN
        && secret.len() == SECRET_LEN
        && prefix
            .bytes()
            .chain(secret.bytes())
            .all(|b| b.is_ascii_alphanumeric());
    ok.then_some(prefix)
}

/// Compares a presented key with a stored hash in constant time.
pub fn verify(key: &str, stored_hash: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    hash(key).ct_eq(stored_hash).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_verify() {
        let k = generate();
        assert_eq!(parse_prefix(&k.plaintext), Some(k.prefix.as_str()));
        assert!(verify(&k.plaintext, &k.hash));
        assert_eq!(k.plaintext.len(), 3 + PREFIX_LEN + 1 + SECRET_LEN);
    }

    #[test]
    fn a_changed_key_does_not_verify() {
        let k = generate();
        let mut other = k.plaintext.clone();
        other.pop();
        other.push(if k.plaintext.ends_with('a') { 'b' } else { 'a' });
        assert!(!verify(&other, &k.hash));
    }

    #[test]
    fn keys_are_unique() {
        let a = generate();
        let b = generate();
        assert_ne!(a.plaintext, b.plaintext);
        assert_ne!(a.prefix, b.prefix);
    }

    #[test]
    fn malformed_keys_have_no_prefix() {
        for bad in [
            "",
            "sy_",
            "sy_abc_def",
            "xx_0123456789_",
            "eyJhbGciOi.x.y",
            "sy_0123456789_short",
        ] {
            assert_eq!(parse_prefix(bad), None, "{bad:?}");
        }
        let long = format!("sy_0123456789_{}", "a".repeat(41));
        assert_eq!(parse_prefix(&long), None);
        let sneaky = format!("sy_01234-6789_{}", "a".repeat(40));
        assert_eq!(parse_prefix(&sneaky), None);
    }
}
