//! Signed bundles: an ed25519 signature that lets a board serve only the bundles its owner signed.
//!
//! Binding ([`crate::bundle`]) catches edits, corruption and mix-ups of bundle files, but whoever
//! can rewrite every file can also re-bind them. A signature closes that: `model.sig` beside the
//! card holds an ed25519 signature, made with a key the clinic or device maker keeps off the board,
//! of the [`bundle digest`](ModelCard::bundle_digest) (the SHA-256 of the canonical form of the
//! whole card, `files` included: every field, every file's hash, and through the graphs' stamps the
//! graphs). A board given trusted public keys refuses an unsigned bundle, one signed by a key it
//! does not trust, and one changed after it was signed.
//!
//! Keys are PEM files: PKCS#8 for the private key and SubjectPublicKeyInfo for the public one, as
//! `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout` write them (or `cdnet keygen`).

use crate::bundle::{BundleError, ModelCard, hex, sha256_hex, write_atomically};
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, spki::der::pem};
use ed25519_dalek::{Signature, Signer};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::string::{String, ToString};
use std::vec::Vec;

/// Signature file inside a bundle folder (not listed in the card's `files`: it signs them).
pub const SIGNATURE_FILE: &str = "model.sig";
/// The one algorithm this format knows.
pub const ALGORITHM: &str = "ed25519";
/// Prefix of the signed message, so a signature over a bundle cannot be replayed as anything else.
const CONTEXT: &[u8] = b"cdnet bundle signature v1\n";

/// `model.sig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleSignature {
    /// Always [`ALGORITHM`].
    pub algorithm: String,
    /// [`key_id`] of the signing key, so a board with several trusted keys knows which one to use.
    pub key_id: String,
    /// The [`bundle digest`](ModelCard::bundle_digest) that was signed.
    pub bundle_sha256: String,
    /// The 64-byte signature, lower-case hex.
    pub signature: String,
}

/// Short name of a public key: the first 16 hex digits of the SHA-256 of its 32 bytes.
pub fn key_id(key: &VerifyingKey) -> String {
    sha256_hex(key.as_bytes())[..16].to_string()
}

fn message(bundle_sha256: &str) -> Vec<u8> {
    [CONTEXT, bundle_sha256.as_bytes()].concat()
}

fn bad_key(path: &Path, reason: impl ToString) -> BundleError {
    BundleError::BadKey { path: path.to_path_buf(), reason: reason.to_string() }
}

/// Reads a PKCS#8 PEM ed25519 private key.
pub fn read_signing_key(path: &Path) -> Result<SigningKey, BundleError> {
    let text = std::fs::read_to_string(path).map_err(|source| BundleError::Io { path: path.to_path_buf(), source })?;
    SigningKey::from_pkcs8_pem(&text)
        .map_err(|e| bad_key(path, std::format!("not a PKCS#8 PEM ed25519 private key ({e})")))
}

/// The key pair as PEM text: (private PKCS#8, public SubjectPublicKeyInfo).
pub fn key_pair_pem(key: &SigningKey) -> Result<(String, String), String> {
    let private = key.to_pkcs8_pem(pem::LineEnding::LF).map_err(|e| e.to_string())?;
    let public = key.verifying_key().to_public_key_pem(pem::LineEnding::LF).map_err(|e| e.to_string())?;
    Ok((private.to_string(), public))
}

/// Public keys a board trusts.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<(VerifyingKey, PathBuf)>,
}

impl TrustedKeys {
    /// Reads one SubjectPublicKeyInfo PEM ed25519 public key per file.
    pub fn read(paths: &[PathBuf]) -> Result<TrustedKeys, BundleError> {
        let mut keys = Vec::new();
        for path in paths {
            let text =
                std::fs::read_to_string(path).map_err(|source| BundleError::Io { path: path.clone(), source })?;
            let key = VerifyingKey::from_public_key_pem(&text).map_err(|e| {
                bad_key(path, std::format!("not a PEM ed25519 public key ({e}); give the .pub.pem of the pair"))
            })?;
            keys.push((key, path.clone()));
        }
        Ok(TrustedKeys { keys })
    }

    /// The trusted keys' [`key_id`]s.
    pub fn ids(&self) -> Vec<String> {
        self.keys.iter().map(|(key, _)| key_id(key)).collect()
    }

    /// No key: every bundle is served (binding still applies).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The bundle in `dir`, whose verified card is `card`, carries a valid signature by one of these
    /// keys over exactly this card; returns the signing key's id.
    pub fn verify(&self, dir: &Path, card: &ModelCard) -> Result<String, BundleError> {
        let path = dir.join(SIGNATURE_FILE);
        let trusted = self.ids().join(", ");
        if !path.is_file() {
            return Err(BundleError::Unsigned { dir: dir.to_path_buf(), trusted });
        }
        let bad = |what: String| BundleError::BadSignature { path: path.clone(), what };
        let text = std::fs::read(&path).map_err(|source| BundleError::Io { path: path.clone(), source })?;
        let signature: BundleSignature =
            serde_json::from_slice(&text).map_err(|e| bad(std::format!("it does not parse ({e})")))?;
        if signature.algorithm != ALGORITHM {
            return Err(bad(std::format!("algorithm {:?}; only {ALGORITHM} is known", signature.algorithm)));
        }
        let digest = card.bundle_digest().map_err(&bad)?;
        if signature.bundle_sha256 != digest {
            return Err(bad(std::format!(
                "it signs bundle {}, this bundle is {digest}: the card or a file changed after signing; \
                 review the change and sign again (cdnet sign)",
                signature.bundle_sha256
            )));
        }
        let Some((key, _)) = self.keys.iter().find(|(key, _)| key_id(key) == signature.key_id) else {
            return Err(bad(std::format!(
                "signed by key {}, which this device does not trust (trusted: {trusted})",
                signature.key_id
            )));
        };
        let bytes = hex_bytes::<64>(&signature.signature).ok_or_else(|| bad("signature: not 128 hex digits".into()))?;
        key.verify_strict(&message(&digest), &Signature::from_bytes(&bytes))
            .map_err(|_| bad(std::format!("the signature is not valid for key {}", signature.key_id)))?;
        Ok(signature.key_id)
    }
}

/// Signs the bundle in `dir` (verified first, by [`crate::bundle::Bundle::open`]) with `key` and
/// writes `model.sig`; returns what it wrote.
pub fn sign(dir: &Path, key: &SigningKey) -> Result<BundleSignature, BundleError> {
    let bundle = crate::bundle::Bundle::open(dir)?;
    let path = dir.join(SIGNATURE_FILE);
    let digest = bundle.card.bundle_digest().map_err(|what| BundleError::BadSignature { path: path.clone(), what })?;
    let signature = BundleSignature {
        algorithm: ALGORITHM.into(),
        key_id: key_id(&key.verifying_key()),
        signature: hex(&key.sign(&message(&digest)).to_bytes()),
        bundle_sha256: digest,
    };
    let mut text = serde_json::to_vec_pretty(&signature)
        .map_err(|e| BundleError::BadSignature { path: path.clone(), what: e.to_string() })?;
    text.push(b'\n');
    write_atomically(&path, &text)?;
    Ok(signature)
}

fn hex_bytes<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}
