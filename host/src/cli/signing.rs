//! `cdnet keygen` and `cdnet sign`: the laptop's side of signed bundles (`cdnet_shared::signature`).

use super::KeygenArgs;
use anyhow::{Context, Result, bail};
use cdnet_shared::signature::{SigningKey, key_id, key_pair_pem, read_signing_key, sign};
use std::io::Write;
use std::path::{Path, PathBuf};

/// `PREFIX` + `suffix`, so `clinic` gives `clinic.key.pem`.
fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// Creates `path` with `text`, readable by its owner only when `private`; refuses to replace a file
/// unless `force`.
fn write_new(path: &Path, text: &str, private: bool, force: bool) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).with_context(|| {
        if path.exists() {
            format!("{} exists; pass --force to replace it (bundles signed with it stop verifying)", path.display())
        } else {
            format!("cannot create {}", path.display())
        }
    })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// `cdnet keygen`: a fresh key pair from the operating system's random source.
pub fn run_keygen(args: KeygenArgs) -> Result<()> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("the operating system gave no random bytes: {e}"))?;
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    let (private, public) = key_pair_pem(&key).map_err(anyhow::Error::msg)?;
    let (private_path, public_path) = (with_suffix(&args.out, ".key.pem"), with_suffix(&args.out, ".pub.pem"));
    if !args.force && public_path.exists() {
        bail!("{} exists; pass --force to replace the pair", public_path.display());
    }
    write_new(&private_path, &private, true, args.force)?;
    write_new(&public_path, &public, false, args.force)?;
    println!(
        "key {}: private {} (keep it off the boards), public {} (cdnet-edge --trust)",
        key_id(&key.verifying_key()),
        private_path.display(),
        public_path.display()
    );
    Ok(())
}

/// `cdnet sign`.
pub fn run_sign(bundle: &Path, key_path: &Path) -> Result<()> {
    sign_with(bundle, &read_signing_key(key_path)?, key_path)
}

/// Signs `bundle` with `key` (read from `key_path`) and says so.
pub fn sign_with(bundle: &Path, key: &SigningKey, key_path: &Path) -> Result<()> {
    let signature = sign(bundle, key)?;
    println!(
        "signed {} with key {} ({}): bundle sha256 {}",
        bundle.display(),
        signature.key_id,
        key_path.display(),
        signature.bundle_sha256
    );
    Ok(())
}
