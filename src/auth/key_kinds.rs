//! The three kinds of signing key (`[tokens] algorithm`): how each is
//! generated, how its public half is stored and published as a JWK, and
//! how its private half becomes a `jsonwebtoken` key. Everything that
//! differs between EdDSA, ES256 and RS256 lives here, so the key ring
//! (`keys.rs`) only ever deals in "a key of some kind" — and so does the
//! decision whether a node's configured kind calls for a rotation.
//!
//! Stored public halves: Ed25519 the 32 raw bytes, P-256 the uncompressed
//! point (`04 || x || y`), RSA the PKCS#1 `RSAPublicKey` DER. Private
//! halves are PKCS#8 v1 for all three (Ed25519 v1 because `jsonwebtoken`
//! refuses v2, DEPENDENCIES.md trap 2).

use crate::auth::error::KeyError;
use crate::store::{StoredKey, UnixTime};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    EdDsa,
    Es256,
    Rs256,
}

/// A public key as the JWKS publishes it, with its RFC 7638 thumbprint.
pub struct PublicJwk {
    pub kid: String,
    pub jwk: Value,
    pub decoding: DecodingKey,
}

impl KeyKind {
    pub const ALL: [KeyKind; 3] = [KeyKind::EdDsa, KeyKind::Es256, KeyKind::Rs256];

    /// The `[tokens] algorithm` / `signing_keys.algorithm` / JWT `alg` name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            KeyKind::EdDsa => "EdDSA",
            KeyKind::Es256 => "ES256",
            KeyKind::Rs256 => "RS256",
        }
    }

    pub fn algorithm(self) -> Algorithm {
        match self {
            KeyKind::EdDsa => Algorithm::EdDSA,
            KeyKind::Es256 => Algorithm::ES256,
            KeyKind::Rs256 => Algorithm::RS256,
        }
    }

    /// A fresh private key, PKCS#8 v1.
    pub fn generate(self) -> Result<Vec<u8>, KeyError> {
        let rng = SystemRandom::new();
        let pkcs8 = match self {
            KeyKind::EdDsa => Ed25519KeyPair::generate_pkcs8v1(&rng)
                .map_err(|_| KeyError::Generation)?
                .as_ref()
                .to_vec(),
            KeyKind::Es256 => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(|_| KeyError::Generation)?
                .as_ref()
                .to_vec(),
            KeyKind::Rs256 => aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(|_| KeyError::Generation)?
                .as_der()
                .map_err(|_| KeyError::Generation)?
                .as_ref()
                .to_vec(),
        };
        Ok(pkcs8)
    }

    /// The public half of a PKCS#8 private key, as stored.
    pub fn public_key(self, pkcs8: &[u8]) -> Result<Vec<u8>, KeyError> {
        let public = match self {
            KeyKind::EdDsa => Ed25519KeyPair::from_pkcs8(pkcs8)
                .map_err(|_| KeyError::Generation)?
                .public_key()
                .as_ref()
                .to_vec(),
            KeyKind::Es256 => EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
                .map_err(|_| KeyError::Generation)?
                .public_key()
                .as_ref()
                .to_vec(),
            KeyKind::Rs256 => aws_lc_rs::rsa::KeyPair::from_pkcs8(pkcs8)
                .map_err(|_| KeyError::Generation)?
                .public_key()
                .as_ref()
                .to_vec(),
        };
        Ok(public)
    }

    /// The signing key for a PKCS#8 private key. `jsonwebtoken` signs RSA
    /// with a PKCS#1 key: its PEM reader takes the PKCS#1 key out of the
    /// PKCS#8 wrapper, so the wrapper is handed over as PEM.
    pub fn encoding_key(self, pkcs8: &[u8]) -> Result<EncodingKey, KeyError> {
        Ok(match self {
            KeyKind::EdDsa => EncodingKey::from_ed_der(pkcs8),
            KeyKind::Es256 => EncodingKey::from_ec_der(pkcs8),
            KeyKind::Rs256 => {
                let body = STANDARD.encode(pkcs8);
                let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
                for line in body.as_bytes().chunks(64) {
                    pem.push_str(&String::from_utf8_lossy(line));
                    pem.push('\n');
                }
                pem.push_str("-----END PRIVATE KEY-----\n");
                EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|_| KeyError::Generation)?
            }
        })
    }

    /// The JWK, thumbprint and verifying key of a stored public half.
    /// `None` when the bytes are not a public key of this kind.
    pub fn public_jwk(self, public: &[u8]) -> Option<PublicJwk> {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        // RFC 7638: the required members, in lexicographic order, no spaces.
        let (canonical, jwk, decoding) = match self {
            KeyKind::EdDsa => {
                if public.len() != 32 {
                    return None;
                }
                let x = b64(public);
                let decoding = DecodingKey::from_ed_components(&x).ok()?;
                (
                    format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#),
                    json!({"kty": "OKP", "crv": "Ed25519", "x": x}),
                    decoding,
                )
            }
            KeyKind::Es256 => {
                if public.len() != 65 || public[0] != 4 {
                    return None;
                }
                let (x, y) = (b64(&public[1..33]), b64(&public[33..]));
                let decoding = DecodingKey::from_ec_components(&x, &y).ok()?;
                (
                    format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#),
                    json!({"kty": "EC", "crv": "P-256", "x": x, "y": y}),
                    decoding,
                )
            }
            KeyKind::Rs256 => {
                let key = aws_lc_rs::rsa::PublicKey::from_der(public).ok()?;
                let parts = aws_lc_rs::rsa::PublicKeyComponents::<Vec<u8>>::from(&key);
                let decoding = DecodingKey::from_rsa_raw_components(&parts.n, &parts.e);
                let (n, e) = (b64(&parts.n), b64(&parts.e));
                (
                    format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#),
                    json!({"kty": "RSA", "n": n, "e": e}),
                    decoding,
                )
            }
        };
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
        let kid = b64(digest.as_ref());
        let mut jwk = jwk;
        jwk["kid"] = json!(kid);
        jwk["alg"] = json!(self.name());
        jwk["use"] = json!("sig");
        Some(PublicJwk { kid, jwk, decoding })
    }
}

/// What a node configured for `configured` does about the keys it found.
#[derive(Debug, PartialEq, Eq)]
pub enum AlgorithmChange {
    /// The active key is of the configured kind.
    None,
    /// A new algorithm for this deployment: start one normal rotation.
    Rotate,
    /// A standby of the configured kind is already published.
    UnderWay,
    /// The configured kind is that of a key older than the active one: a
    /// node left behind in a rolling change (or rolled back) must never
    /// flip the deployment back, so it only warns.
    Older,
}

/// Decides, from every stored key, whether a node starting with
/// `configured` should rotate: only when the active key, every pending
/// standby and every older key are all of other kinds.
pub fn algorithm_change(
    stored: &[StoredKey],
    configured: KeyKind,
    now: UnixTime,
) -> AlgorithmChange {
    let configured = configured.name();
    let order = |k: &StoredKey| (k.activates_at, k.created_at);
    let Some(active) = stored
        .iter()
        .filter(|k| k.revoked_at.is_none() && k.activates_at <= now)
        .max_by_key(|k| order(k))
    else {
        return AlgorithmChange::Rotate;
    };
    if active.algorithm == configured {
        return AlgorithmChange::None;
    }
    let standby = stored
        .iter()
        .filter(|k| k.revoked_at.is_none() && k.activates_at > now);
    if standby.clone().any(|k| k.algorithm == configured) {
        return AlgorithmChange::UnderWay;
    }
    if stored
        .iter()
        .any(|k| order(k) < order(active) && k.algorithm == configured)
    {
        return AlgorithmChange::Older;
    }
    AlgorithmChange::Rotate
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::generate;
    use crate::auth::master_key::MasterKey;

    #[test]
    fn each_kind_signs_what_its_published_jwk_verifies() {
        for kind in KeyKind::ALL {
            let pkcs8 = kind.generate().expect("generate");
            let public = kind.public_key(&pkcs8).expect("public");
            let published = kind.public_jwk(&public).expect("jwk");
            let mut header = jsonwebtoken::Header::new(kind.algorithm());
            header.kid = Some(published.kid.clone());
            let claims = json!({"sub": "x", "exp": 4_000_000_000u64});
            let token = jsonwebtoken::encode(
                &header,
                &claims,
                &kind.encoding_key(&pkcs8).expect("encoding"),
            )
            .expect("sign");
            // Through the JWK as a third party would read it.
            let jwk: jsonwebtoken::jwk::Jwk =
                serde_json::from_value(published.jwk.clone()).expect("jwk parses");
            let decoding = DecodingKey::from_jwk(&jwk).expect("decoding");
            let mut validation = jsonwebtoken::Validation::new(kind.algorithm());
            validation.required_spec_claims.clear();
            jsonwebtoken::decode::<Value>(&token, &decoding, &validation).expect("verifies");
            jsonwebtoken::decode::<Value>(&token, &published.decoding, &validation)
                .expect("verifies with the ring's key");
            assert_eq!(published.jwk["alg"], kind.name());
            // Another key of the same kind does not verify it.
            let other = kind.public_jwk(&kind.public_key(&kind.generate().expect("g")).expect("p"));
            assert!(
                jsonwebtoken::decode::<Value>(&token, &other.expect("o").decoding, &validation)
                    .is_err()
            );
        }
    }

    #[test]
    fn a_public_key_of_another_kind_is_refused() {
        let ed = KeyKind::EdDsa
            .public_key(&KeyKind::EdDsa.generate().expect("g"))
            .expect("p");
        assert!(KeyKind::Es256.public_jwk(&ed).is_none());
        assert!(KeyKind::Rs256.public_jwk(&ed).is_none());
    }

    #[test]
    fn only_a_new_algorithm_starts_a_rotation_and_an_older_one_never_rotates_back() {
        let master = MasterKey::from_bytes(&[5u8; 32]).expect("master");
        let ed = generate(&master, KeyKind::EdDsa, 0, 0).expect("ed");
        let es = generate(&master, KeyKind::Es256, 1_000, 1_300).expect("es");
        let alone = [ed.clone()];
        assert_eq!(
            algorithm_change(&alone, KeyKind::EdDsa, 10),
            AlgorithmChange::None
        );
        assert_eq!(
            algorithm_change(&alone, KeyKind::Es256, 10),
            AlgorithmChange::Rotate
        );
        let both = [ed, es];
        // ES256 standby published: a second ES256 node does not rotate
        // again; an RS256 node would (new to the deployment).
        assert_eq!(
            algorithm_change(&both, KeyKind::Es256, 1_100),
            AlgorithmChange::UnderWay
        );
        assert_eq!(
            algorithm_change(&both, KeyKind::Rs256, 1_100),
            AlgorithmChange::Rotate
        );
        // ES256 signs: an EdDSA node (left behind) warns and never flips back.
        assert_eq!(
            algorithm_change(&both, KeyKind::EdDsa, 1_300),
            AlgorithmChange::Older
        );
        assert_eq!(
            algorithm_change(&both, KeyKind::Es256, 1_300),
            AlgorithmChange::None
        );
    }
}
