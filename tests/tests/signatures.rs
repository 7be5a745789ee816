//! Signed bundles: `cdnet keygen` and `cdnet sign` on the laptop; a device that trusts a key serves
//! only bundles that key signed, over exactly the card they have now. (`cdnet export --sign` and an
//! edge run that trusts the key: `tests/chain.rs`.)

use cdnet_integration::{cdnet, copy_bundle, shipped_bundle};
use cdnet_shared::bundle::{Bundle, BundleError};
use cdnet_shared::signature::{SIGNATURE_FILE, TrustedKeys, key_id, read_signing_key};
use std::path::{Path, PathBuf};

/// `cdnet keygen --out DIR/NAME`; returns (private, public) paths.
fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let prefix = dir.join(name);
    cdnet(&["keygen", "--out", prefix.to_str().unwrap()]).unwrap();
    (dir.join(format!("{name}.key.pem")), dir.join(format!("{name}.pub.pem")))
}

fn trusting(keys: &[&Path]) -> TrustedKeys {
    TrustedKeys::read(&keys.iter().map(|k| k.to_path_buf()).collect::<Vec<_>>()).unwrap()
}

fn refusal(bundle: &Path, trusted: &TrustedKeys) -> String {
    match Bundle::open_trusted(bundle, trusted) {
        Ok(_) => panic!("{} was served", bundle.display()),
        Err(error) => error.to_string(),
    }
}

#[test]
fn keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites_one() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = keygen(dir.path(), "clinic");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&private).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the private key is readable by others: {mode:o}");
    }
    let key = read_signing_key(&private).unwrap();
    assert_eq!(trusting(&[&public]).ids(), vec![key_id(&key.verifying_key())]);
    let before = std::fs::read(&private).unwrap();
    let error = cdnet(&["keygen", "--out", dir.path().join("clinic").to_str().unwrap()]).unwrap_err();
    assert!(format!("{error:#}").contains("--force"), "{error:#}");
    assert_eq!(std::fs::read(&private).unwrap(), before, "keygen replaced a private key");
    // The halves of a pair cannot be mixed up.
    let error = TrustedKeys::read(std::slice::from_ref(&private)).unwrap_err().to_string();
    assert!(error.contains("clinic.key.pem") && error.contains("public key"), "{error}");
    let error = read_signing_key(&public).unwrap_err().to_string();
    assert!(error.contains("clinic.pub.pem") && error.contains("PKCS#8"), "{error}");
    let two = keygen(dir.path(), "other");
    assert_ne!(trusting(&[&two.1]).ids(), trusting(&[&public]).ids(), "two keygens gave the same key");
}

#[test]
fn a_device_that_trusts_a_key_serves_only_what_that_key_signed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (clinic_private, clinic) = keygen(d, "clinic");
    let (other_private, other) = keygen(d, "other");
    let bundle = d.join("bundle");
    copy_bundle(&shipped_bundle("demo-phantom"), &bundle);
    let bundle_arg = bundle.to_str().unwrap();

    // Without trusted keys, binding alone decides (unsigned bundles are served).
    let (_, signer) = Bundle::open_trusted(&bundle, &TrustedKeys::default()).unwrap();
    assert_eq!(signer, None);
    let error = refusal(&bundle, &trusting(&[&clinic]));
    assert!(error.contains("not signed") && error.contains("cdnet sign"), "{error}");

    cdnet(&["sign", "--bundle", bundle_arg, "--key", clinic_private.to_str().unwrap()]).unwrap();
    let clinic_id = trusting(&[&clinic]).ids().remove(0);
    let (_, signer) = Bundle::open_trusted(&bundle, &trusting(&[&clinic])).unwrap();
    assert_eq!(signer.as_deref(), Some(clinic_id.as_str()));
    let (_, signer) = Bundle::open_trusted(&bundle, &trusting(&[&other, &clinic])).unwrap();
    assert_eq!(signer.as_deref(), Some(clinic_id.as_str()), "a second trusted key hid the signer");
    let error = refusal(&bundle, &trusting(&[&other]));
    assert!(error.contains(&clinic_id) && error.contains("does not trust"), "{error}");

    // A forged signature: one hex digit changed.
    let signed = std::fs::read_to_string(bundle.join(SIGNATURE_FILE)).unwrap();
    let value: serde_json::Value = serde_json::from_str(&signed).unwrap();
    let good = value["signature"].as_str().unwrap().to_string();
    let flipped = format!("{}{}", if good.starts_with('0') { "1" } else { "0" }, &good[1..]);
    std::fs::write(bundle.join(SIGNATURE_FILE), signed.replace(&good, &flipped)).unwrap();
    let error = refusal(&bundle, &trusting(&[&clinic]));
    assert!(error.contains("model.sig") && error.contains("not valid"), "{error}");
    std::fs::write(bundle.join(SIGNATURE_FILE), "{not json").unwrap();
    let error = refusal(&bundle, &trusting(&[&clinic]));
    assert!(error.contains("does not parse"), "{error}");

    // A reviewed card edit, bound again: the old signature is removed, and one put back is stale.
    edit_card(&bundle, |card| card["refer_threshold"] = 0.7.into());
    cdnet(&["bind", "--bundle", bundle_arg]).unwrap();
    assert!(!bundle.join(SIGNATURE_FILE).exists(), "bind kept the signature of the old card");
    let error = refusal(&bundle, &trusting(&[&clinic]));
    assert!(error.contains("not signed"), "{error}");
    std::fs::write(bundle.join(SIGNATURE_FILE), &signed).unwrap();
    let error = refusal(&bundle, &trusting(&[&clinic]));
    assert!(error.contains("changed after signing"), "{error}");

    // Signed by the other key: served by a device that trusts it, refused by one that does not.
    cdnet(&["sign", "--bundle", bundle_arg, "--key", other_private.to_str().unwrap()]).unwrap();
    assert!(Bundle::open_trusted(&bundle, &trusting(&[&other])).is_ok());
    assert!(refusal(&bundle, &trusting(&[&clinic])).contains("does not trust"));

    // Binding is checked before the signature: an edited card is refused for what it is.
    edit_card(&bundle, |card| card["labels"].as_array_mut().unwrap().swap(0, 4));
    let error = Bundle::open_trusted(&bundle, &trusting(&[&other])).unwrap_err();
    assert!(matches!(error, BundleError::Unbound { .. }), "{error}");
    // And a bundle that does not verify cannot be signed.
    let error = cdnet(&["sign", "--bundle", bundle_arg, "--key", other_private.to_str().unwrap()]).unwrap_err();
    assert!(format!("{error:#}").contains("does not match its graph"), "{error:#}");
}

fn edit_card(bundle: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = bundle.join("model.json");
    let mut card: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut card);
    std::fs::write(&path, serde_json::to_vec_pretty(&card).unwrap()).unwrap();
}
