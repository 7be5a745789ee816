//! Model bundles: the exported inference path and its model card, as the host writes them and the
//! edge reads them.
//!
//! ```text
//! models/NAME/model.json     the card: labels, preprocessing, zoom, files + sha256, metrics, provenance
//! models/NAME/backbone.onnx  image [1,3,N,N] → feature [1,D], attention [1,1,h,w]
//! models/NAME/head.onnx      features [1,2D] (or [1,D]) → probabilities [1,K]
//! models/NAME/backbone.nnef.tar, head.nnef.tar   the same graphs in NNEF: what the edge runs
//! ```
//!
//! [`Bundle::open`] refuses a bundle whose files are missing, changed (sha256 or size) or whose card
//! is inconsistent or out of range, with a message that names the problem.
//!
//! **Binding.** The card's hashes protect the graphs, but the card itself decides the answer (labels
//! and their order, preprocessing, zoom, thresholds). So every graph carries, in its ONNX
//! `metadata_props` under [`CARD_DIGEST_KEY`], the SHA-256 of the card's canonical form
//! ([`ModelCard::digest`]: every field except `files`, keys sorted, no whitespace). The graphs'
//! hashes in `files` then cover that stamp: an edited card no longer matches its graphs, an edited
//! graph no longer matches the card, and either is refused before a frame is served. This catches
//! any edit, corruption or mix-up of bundle files. The NNEF archives carry no stamp of their own:
//! their hashes are card fields ([`NnefGraphs`]) that the digest covers, so the ONNX graphs' stamps
//! bind them too (the edge reads the ONNX files' metadata, never their graphs). This is not a
//! signature against someone who rewrites all of them on purpose — that is [`crate::signature`],
//! checked by [`Bundle::open_trusted`] when the device is given trusted keys.

mod card;

use crate::gate::FrameGate;
pub use card::{FileCard, ModelCard, NnefGraph, NnefGraphs, Precision};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::string::{String, ToString};
use std::vec::Vec;

/// Card file name inside a bundle folder.
pub const CARD_FILE: &str = "model.json";
/// Card format version this code writes (2: graphs stamped with the card digest; 3: a calibrated
/// frame gate; 4: NNEF graphs beside the ONNX, which the edge runs). Format 3 is still read: the
/// host runs its ONNX graphs and `cdnet nnef` upgrades it.
pub const CARD_FORMAT: u32 = 4;
/// The last format without NNEF graphs.
pub const CARD_FORMAT_ONNX_ONLY: u32 = 3;
/// The ONNX `metadata_props` key under which each graph carries [`ModelCard::digest`].
pub const CARD_DIGEST_KEY: &str = "cdnet.card_sha256";
/// Input of the backbone graph.
pub const BACKBONE_INPUT: &str = "image";
/// Feature output of the backbone graph.
pub const BACKBONE_FEATURE: &str = "feature";
/// Heatmap output of the backbone graph (stride 16; named "attention" and AttS in older bundles).
pub const BACKBONE_HEATMAP: &str = "heatmap";
/// Input of the head graph.
pub const HEAD_INPUT: &str = "features";
/// Output of the head graph.
pub const HEAD_OUTPUT: &str = "probabilities";

/// Why a bundle was refused.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// No card.
    #[error("{0} is not a model bundle: it has no {CARD_FILE}")]
    NoCard(PathBuf),
    /// The card does not parse or is inconsistent.
    #[error("model card {path} is invalid: {reason}")]
    BadCard {
        /// The card.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A listed file is missing.
    #[error("bundle file {0} is missing; copy the whole bundle folder again")]
    MissingFile(PathBuf),
    /// The card and a graph were not exported together (one was edited, or files were mixed).
    #[error(
        "model card {card} does not match its graph {graph}: {what}. The card was edited or the files \
         come from different exports; copy the bundle again or re-export it (cdnet export)"
    )]
    Unbound {
        /// The card.
        card: PathBuf,
        /// The graph.
        graph: PathBuf,
        /// Which digest differs.
        what: String,
    },
    /// A file changed since export.
    #[error("bundle file {path} was modified or damaged ({what}); re-export or copy the bundle again")]
    Tampered {
        /// The file.
        path: PathBuf,
        /// Size or hash difference.
        what: String,
    },
    /// The device trusts signed bundles only and this one has no `model.sig`.
    #[error(
        "bundle {dir} is not signed, and this device serves only bundles signed by a trusted key ({trusted}); \
         sign it on the laptop with `cdnet sign --bundle DIR --key KEY.pem`"
    )]
    Unsigned {
        /// The bundle folder.
        dir: PathBuf,
        /// The trusted keys' ids.
        trusted: String,
    },
    /// `model.sig` is malformed, stale, by an untrusted key, or not valid.
    #[error("bundle signature {path} is refused: {what}")]
    BadSignature {
        /// The signature file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A key file is not a PEM ed25519 key of the expected kind.
    #[error("key {path}: {reason}")]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// I/O failure.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// `bytes` as lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| std::format!("{b:02x}")).collect()
}

/// A verified bundle: its folder and card.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The folder.
    pub dir: PathBuf,
    /// The card.
    pub card: ModelCard,
}

impl Bundle {
    /// Reads and verifies the bundle in `dir`: card, file sizes and hashes.
    pub fn open(dir: &Path) -> Result<Bundle, BundleError> {
        let (card_path, card) = read_card(dir)?;
        card.check().map_err(|reason| BundleError::BadCard { path: card_path.clone(), reason })?;
        let want = card.digest().map_err(|reason| BundleError::BadCard { path: card_path.clone(), reason })?;
        // Each graph's stamp is read from the bytes just hashed: one read per file.
        verify_files(dir, &card, &card_path, |path, name, bytes| {
            if *name == card.backbone || *name == card.head {
                check_stamp(&card_path, path, bytes, &want)?;
            }
            Ok(())
        })?;
        Ok(Bundle { dir: dir.to_path_buf(), card })
    }

    /// [`open`](Self::open), then, when `trusted` holds keys, the bundle's signature: it must be by
    /// one of them, over exactly this card (see [`crate::signature`]). Returns the bundle and the
    /// signing key's id (`None` when no key is trusted).
    pub fn open_trusted(
        dir: &Path,
        trusted: &crate::signature::TrustedKeys,
    ) -> Result<(Bundle, Option<String>), BundleError> {
        let bundle = Bundle::open(dir)?;
        if trusted.is_empty() {
            return Ok((bundle, None));
        }
        let signer = trusted.verify(dir, &bundle.card)?;
        Ok((bundle, Some(signer)))
    }

    /// Binds a bundle whose graphs are intact to the card it has now: the upgrade of a format-1
    /// bundle (exported before binding), or the deliberate, reviewed edit of a card field. The
    /// listed files must still match the card's hashes, every field must be in range; then the
    /// graphs are stamped, the card rewritten as the current format, and the bundle reopened.
    pub fn bind(dir: &Path) -> Result<Bundle, BundleError> {
        let (card_path, mut card) = read_card(dir)?;
        verify_files(dir, &card, &card_path, |_, _, _| Ok(()))?;
        card.format = card.current_format();
        card.check().map_err(|reason| BundleError::BadCard { path: card_path.clone(), reason })?;
        let files: Vec<String> = card.files.keys().cloned().collect();
        let names: Vec<&str> = files.iter().map(String::as_str).collect();
        Bundle::write_card(dir, &mut card, &names)?;
        Bundle::open(dir)
    }

    /// Gives the bundle in `dir` a calibrated frame gate (the upgrade of a format-2 bundle, or a
    /// recalibration): the listed files must still match the card's hashes; then the card is
    /// rewritten as the current format with `gate`, the graphs restamped, and the bundle reopened.
    pub fn set_gate(dir: &Path, gate: FrameGate) -> Result<Bundle, BundleError> {
        let (card_path, mut card) = read_card(dir)?;
        verify_files(dir, &card, &card_path, |_, _, _| Ok(()))?;
        card.format = card.current_format();
        card.gate = Some(gate);
        card.check().map_err(|reason| BundleError::BadCard { path: card_path.clone(), reason })?;
        let files: Vec<String> = card.files.keys().cloned().collect();
        let names: Vec<&str> = files.iter().map(String::as_str).collect();
        Bundle::write_card(dir, &mut card, &names)?;
        Bundle::open(dir)
    }

    /// Path of a bundle file.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes `card` into `dir`: stamps both graphs with the card's digest (replacing an earlier
    /// stamp), then fills in the hashes of the listed files and writes the card. Call it again after
    /// any change to the card. A signature of the old card no longer applies and is removed (sign
    /// again after reviewing the change).
    pub fn write_card(dir: &Path, card: &mut ModelCard, files: &[&str]) -> Result<(), BundleError> {
        let path = dir.join(CARD_FILE);
        let bad = |reason: String| BundleError::BadCard { path: path.clone(), reason };
        card.format = card.current_format();
        card.check_values().map_err(bad)?;
        let digest = card.written_digest().map_err(bad)?;
        for graph in [&card.backbone, &card.head] {
            let graph = dir.join(graph);
            let bytes = std::fs::read(&graph).map_err(|source| BundleError::Io { path: graph.clone(), source })?;
            let stamped = crate::onnx_metadata::set(&bytes, CARD_DIGEST_KEY, &digest)
                .map_err(|e| BundleError::Tampered { path: graph.clone(), what: e.to_string() })?;
            write_atomically(&graph, &stamped)?;
        }
        card.files.clear();
        for name in files {
            let path = dir.join(name);
            let bytes = std::fs::read(&path).map_err(|source| BundleError::Io { path: path.clone(), source })?;
            card.files.insert(name.to_string(), FileCard { sha256: sha256_hex(&bytes), bytes: bytes.len() as u64 });
        }
        let mut text: Vec<u8> = serde_json::to_vec_pretty(card)
            .map_err(|e| BundleError::BadCard { path: path.clone(), reason: e.to_string() })?;
        text.push(b'\n');
        write_atomically(&path, &text)?;
        let signature = dir.join(crate::signature::SIGNATURE_FILE);
        match std::fs::remove_file(&signature) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                Err(BundleError::Io { path: signature, source: error })
            }
            _ => Ok(()),
        }
    }
}

/// The card of the bundle in `dir` and its path, parsed but not checked (for tools that upgrade or
/// recalibrate a card that [`Bundle::open`] would refuse).
pub fn read_card(dir: &Path) -> Result<(PathBuf, ModelCard), BundleError> {
    let card_path = dir.join(CARD_FILE);
    if !card_path.is_file() {
        return Err(BundleError::NoCard(dir.to_path_buf()));
    }
    let text = std::fs::read(&card_path).map_err(|source| BundleError::Io { path: card_path.clone(), source })?;
    let card: ModelCard = serde_json::from_slice(&text)
        .map_err(|e| BundleError::BadCard { path: card_path.clone(), reason: e.to_string() })?;
    Ok((card_path, card))
}

/// The graph at `graph` (its `bytes`) carries the card digest `want`.
fn check_stamp(card_path: &Path, graph: &Path, bytes: &[u8], want: &str) -> Result<(), BundleError> {
    let unbound =
        |what: String| BundleError::Unbound { card: card_path.to_path_buf(), graph: graph.to_path_buf(), what };
    match crate::onnx_metadata::get(bytes, CARD_DIGEST_KEY).map_err(|e| unbound(e.to_string()))? {
        Some(got) if got == want => Ok(()),
        Some(got) => Err(unbound(std::format!("the graph was exported with card {got}, this card is {want}"))),
        None => Err(unbound(std::format!("the graph carries no single {CARD_DIGEST_KEY} entry"))),
    }
}

/// Every listed file is a plain name in `dir` with the size and sha256 the card records; `each`
/// then sees the verified bytes.
fn verify_files(
    dir: &Path,
    card: &ModelCard,
    card_path: &Path,
    mut each: impl FnMut(&Path, &String, &[u8]) -> Result<(), BundleError>,
) -> Result<(), BundleError> {
    for (name, expected) in &card.files {
        if name.is_empty() || name.contains('/') || name.contains('\\') || name == ".." || name == "." {
            return Err(BundleError::BadCard {
                path: card_path.to_path_buf(),
                reason: std::format!("files: {name:?} must be a plain file name inside the bundle"),
            });
        }
        let path = dir.join(name);
        if !path.is_file() {
            return Err(BundleError::MissingFile(path));
        }
        let bytes = std::fs::read(&path).map_err(|source| BundleError::Io { path: path.clone(), source })?;
        if bytes.len() as u64 != expected.bytes {
            let what = std::format!("{} bytes, the card says {}", bytes.len(), expected.bytes);
            return Err(BundleError::Tampered { path, what });
        }
        let actual = sha256_hex(&bytes);
        if actual != expected.sha256 {
            let what = std::format!("sha256 {actual}, the card says {}", expected.sha256);
            return Err(BundleError::Tampered { path, what });
        }
        each(&path, name, &bytes)?;
    }
    Ok(())
}

/// Writes through a temporary file and a rename, so a reader never sees half a file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), BundleError> {
    let io = |source| BundleError::Io { path: path.to_path_buf(), source };
    let mut temporary = std::ffi::OsString::from(path.as_os_str());
    temporary.push(".partial");
    let temporary = PathBuf::from(temporary);
    std::fs::write(&temporary, bytes).map_err(io)?;
    std::fs::rename(&temporary, path).map_err(io)
}
