//! Access tokens: short-lived JWTs signed with Ed25519 (`alg: EdDSA`), naming the API key
//! they were exchanged for.
//!
//! The algorithm is pinned: a token whose header says anything but `EdDSA` (`none`, `HS256`,
//! `RS256`, …) is refused before its signature is looked at, so no key can be confused for
//! another kind. The header's `kid` picks the verifying key; the signing key and any number
//! of earlier public keys are accepted (rotation) and published as a JWKS. `iss`, `aud`,
//! `exp` and `nbf` are checked.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use protocol::OrgId;
use rand::RngCore;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::config::JwtConfig;

/// The claims of an access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// `key:<api key id>`.
    pub sub: String,
    /// The org the key belongs to.
    pub org: i64,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub jti: String,
}

impl Claims {
    /// The API key id named by `sub`.
    pub fn key_id(&self) -> Option<&str> {
        self.sub.strip_prefix("key:")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("no signing key is configured")]
    NoSigningKey,
    #[error("invalid key {kid}: {reason}")]
    Key { kid: String, reason: String },
    #[error("token signed with an unknown key")]
    UnknownKey,
    #[error("invalid token: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
}

/// The configured keys, ready to sign and verify.
pub struct JwtKeys {
    issuer: String,
    audience: String,
    ttl_secs: u64,
    kid: String,
    signing: EncodingKey,
    verifying: HashMap<String, DecodingKey>,
    jwks: serde_json::Value,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn jwk(kid: &str, public: &VerifyingKey) -> serde_json::Value {
    serde_json::json!({
        "kty": "OKP",
        "crv": "Ed25519",
        "x": URL_SAFE_NO_PAD.encode(public.as_bytes()),
        "kid": kid,
        "use": "sig",
        "alg": "EdDSA",
    })
}

impl JwtKeys {
    pub fn from_config(cfg: &JwtConfig) -> Result<Self, JwtError> {
        let pem = cfg.signing_key.as_ref().ok_or(JwtError::NoSigningKey)?;
        let bad = |kid: &str, reason: String| JwtError::Key {
            kid: kid.to_owned(),
            reason,
        };
        let private = SigningKey::from_pkcs8_pem(pem.expose_secret()).map_err(|e| {
            bad(
                &cfg.signing_kid,
                format!("not an Ed25519 PKCS#8 PEM private key: {e}"),
            )
        })?;
        let signing = EncodingKey::from_ed_pem(pem.expose_secret().as_bytes())
            .map_err(|e| bad(&cfg.signing_kid, e.to_string()))?;
        let mut publics = vec![(cfg.signing_kid.clone(), private.verifying_key())];
        for k in &cfg.verify_keys {
            let public = VerifyingKey::from_public_key_pem(&k.public_key)
                .map_err(|e| bad(&k.kid, format!("not an Ed25519 public key PEM: {e}")))?;
            if publics.iter().any(|(kid, _)| kid == &k.kid) {
                return Err(bad(&k.kid, "kid used twice".into()));
            }
            publics.push((k.kid.clone(), public));
        }
        let mut verifying = HashMap::new();
        for (kid, public) in &publics {
            let key = DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(public.as_bytes()))
                .map_err(|e| bad(kid, e.to_string()))?;
            verifying.insert(kid.clone(), key);
        }
        let jwks = serde_json::json!({ "keys": publics.iter().map(|(kid, p)| jwk(kid, p)).collect::<Vec<_>>() });
        Ok(Self {
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            ttl_secs: cfg.ttl.as_secs(),
            kid: cfg.signing_kid.clone(),
            signing,
            verifying,
            jwks,
        })
    }

    /// The public keys, as a JSON Web Key Set.
    pub fn jwks(&self) -> &serde_json::Value {
        &self.jwks
    }

    pub fn ttl_secs(&self) -> u64 {
        self.ttl_secs
    }

    /// Issues a token for API key `key_id` of `org`.
    pub fn issue(&self, key_id: &str, org: OrgId) -> Result<String, JwtError> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: format!("key:{key_id}"),
            org: org.0,
            iat: now,
            nbf: now,
            exp: now + self.ttl_secs,
            jti: uuid::Uuid::new_v4().simple().to_string(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, &claims, &self.signing)?)
    }

    /// Verifies a token and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        let header = jsonwebtoken::decode_header(token)?;
        if header.alg != Algorithm::EdDSA {
            return Err(JwtError::Invalid(
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm.into(),
            ));
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|k| self.verifying.get(k))
            .ok_or(JwtError::UnknownKey)?;
        let mut v = Validation::new(Algorithm::EdDSA);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.audience]);
        v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        v.validate_nbf = true;
        v.leeway = 5;
        Ok(jsonwebtoken::decode::<Claims>(token, key, &v)?.claims)
    }
}

/// The claims of an install link's `state`: which org asked, until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct InstallState {
    iss: String,
    aud: String,
    org: i64,
    iat: u64,
    exp: u64,
    nonce: String,
}

const INSTALL_AUDIENCE: &str = "switchyard-github-install";

impl JwtKeys {
    /// A signed, expiring `state` for an install link of `org`.
    pub fn issue_install_state(&self, org: OrgId, ttl_secs: u64) -> Result<String, JwtError> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = InstallState {
            iss: self.issuer.clone(),
            aud: INSTALL_AUDIENCE.into(),
            org: org.0,
            iat: now,
            exp: now + ttl_secs,
            nonce: uuid::Uuid::new_v4().simple().to_string(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, &claims, &self.signing)?)
    }

    /// The org an install link's `state` was issued for, if it is genuine and unexpired.
    pub fn verify_install_state(&self, state: &str) -> Result<OrgId, JwtError> {
        let header = jsonwebtoken::decode_header(state)?;
        if header.alg != Algorithm::EdDSA {
            return Err(JwtError::Invalid(
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm.into(),
            ));
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|k| self.verifying.get(k))
            .ok_or(JwtError::UnknownKey)?;
        let mut v = Validation::new(Algorithm::EdDSA);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[INSTALL_AUDIENCE]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v.leeway = 5;
        Ok(OrgId(
            jsonwebtoken::decode::<InstallState>(state, key, &v)?
                .claims
                .org,
        ))
    }
}

/// A new Ed25519 key pair as PEM.
#[derive(Debug)]
pub struct KeyPair {
    pub private_pem: String,
    pub public_pem: String,
}

pub fn generate_pem() -> KeyPair {
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let key = SigningKey::from_bytes(&seed);
    let private_pem = key
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .expect("an Ed25519 key always encodes")
        .to_string();
    let public_pem = key
        .verifying_key()
        .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .expect("an Ed25519 key always encodes");
    KeyPair {
        private_pem,
        public_pem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::VerifyKey;
    use secrecy::SecretString;
    use std::time::Duration;

    fn cfg(private: &str, kid: &str, verify: Vec<VerifyKey>) -> JwtConfig {
        JwtConfig {
            issuer: "switchyard".into(),
            audience: "switchyard-api".into(),
            ttl: Duration::from_secs(900),
            signing_key: Some(SecretString::from(private.to_owned())),
            signing_kid: kid.into(),
            verify_keys: verify,
        }
    }

    fn keys() -> JwtKeys {
        JwtKeys::from_config(&cfg(&generate_pem().private_pem, "k1", vec![])).unwrap()
    }

    fn b64(v: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    #[test]
    fn an_issued_token_verifies_and_names_its_key_and_org() {
        let k = keys();
        let t = k.issue("key_abc", OrgId(7)).unwrap();
        let c = k.verify(&t).unwrap();
        assert_eq!(c.key_id(), Some("key_abc"));
        assert_eq!(c.org, 7);
        assert!(c.exp - c.iat <= 900);
        let header = jsonwebtoken::decode_header(&t).unwrap();
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(header.kid.as_deref(), Some("k1"));
    }

    #[test]
    fn a_token_of_another_key_pair_is_refused() {
        let a = keys();
        let b = keys();
        let t = b.issue("key_abc", OrgId(7)).unwrap();
        assert!(a.verify(&t).is_err(), "same kid, other key: bad signature");
    }

    #[test]
    fn an_unknown_kid_is_refused() {
        let a = keys();
        let other = JwtKeys::from_config(&cfg(&generate_pem().private_pem, "k9", vec![])).unwrap();
        let t = other.issue("key_abc", OrgId(7)).unwrap();
        assert!(matches!(a.verify(&t), Err(JwtError::UnknownKey)));
    }

    #[test]
    fn alg_none_and_hmac_tokens_are_refused() {
        let k = keys();
        let claims = serde_json::json!({"iss": "switchyard", "aud": "switchyard-api", "sub": "key:x", "org": 7,
            "iat": 0, "nbf": 0, "exp": 9_999_999_999u64, "jti": "j"});
        let none = format!(
            "{}.{}.",
            b64(&serde_json::json!({"alg": "none", "kid": "k1"})),
            b64(&claims)
        );
        assert!(k.verify(&none).is_err());
        // HS256 signed with the public key's bytes: the classic confusion attack.
        let jwks = k.jwks()["keys"][0]["x"].as_str().unwrap().to_owned();
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("k1".into());
        let hs =
            jsonwebtoken::encode(&h, &claims, &EncodingKey::from_secret(jwks.as_bytes())).unwrap();
        assert!(k.verify(&hs).is_err());
    }

    #[test]
    fn a_tampered_payload_is_refused() {
        let k = keys();
        let t = k.issue("key_abc", OrgId(7)).unwrap();
        let parts: Vec<&str> = t.split('.').collect();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        claims["org"] = serde_json::json!(8);
        let forged = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
        assert!(k.verify(&forged).is_err());
    }

    #[test]
    fn expired_and_foreign_audience_tokens_are_refused() {
        let pem = generate_pem().private_pem;
        let k = JwtKeys::from_config(&cfg(&pem, "k1", vec![])).unwrap();
        let enc = EncodingKey::from_ed_pem(pem.as_bytes()).unwrap();
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some("k1".into());
        let now = jsonwebtoken::get_current_timestamp();
        let base = Claims {
            iss: "switchyard".into(),
            aud: "switchyard-api".into(),
            sub: "key:x".into(),
            org: 1,
            iat: now - 3600,
            nbf: now - 3600,
            exp: now - 1800,
            jti: "j".into(),
        };
        assert!(
            k.verify(&jsonwebtoken::encode(&h, &base, &enc).unwrap())
                .is_err(),
            "expired"
        );
        let other_aud = Claims {
            aud: "elsewhere".into(),
            exp: now + 600,
            ..base.clone()
        };
        assert!(
            k.verify(&jsonwebtoken::encode(&h, &other_aud, &enc).unwrap())
                .is_err(),
            "audience"
        );
        let other_iss = Claims {
            iss: "evil".into(),
            exp: now + 600,
            ..base
        };
        assert!(
            k.verify(&jsonwebtoken::encode(&h, &other_iss, &enc).unwrap())
                .is_err(),
            "issuer"
        );
    }

    #[test]
    fn a_rotated_out_signing_key_still_verifies_while_listed() {
        let old = generate_pem();
        let old_keys = JwtKeys::from_config(&cfg(&old.private_pem, "old", vec![])).unwrap();
        let t = old_keys.issue("key_abc", OrgId(7)).unwrap();
        let new = JwtKeys::from_config(&cfg(
            &generate_pem().private_pem,
            "new",
            vec![VerifyKey {
                kid: "old".into(),
                public_key: old.public_pem,
            }],
        ))
        .unwrap();
        assert!(new.verify(&t).is_ok());
        assert_eq!(new.jwks()["keys"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn install_states_name_their_org_and_are_not_access_tokens() {
        let k = keys();
        let s = k.issue_install_state(OrgId(42), 600).unwrap();
        assert_eq!(k.verify_install_state(&s).unwrap(), OrgId(42));
        assert!(k.verify(&s).is_err(), "a state is not an access token");
        let t = k.issue("key_abc", OrgId(42)).unwrap();
        assert!(
            k.verify_install_state(&t).is_err(),
            "an access token is not a state"
        );
        let mut tampered = k.issue_install_state(OrgId(42), 0).unwrap();
        tampered.push('x');
        assert!(k.verify_install_state(&tampered).is_err());
    }

    #[test]
    fn bad_key_material_is_a_config_error() {
        assert!(JwtKeys::from_config(&cfg("not a key", "k1", vec![])).is_err());
        let p = generate_pem();
        let dup = vec![VerifyKey {
            kid: "k1".into(),
            public_key: p.public_pem,
        }];
        assert!(JwtKeys::from_config(&cfg(&p.private_pem, "k1", dup)).is_err());
    }
}
