//! `flipslot-image keygen`: creates an ed25519 key pair as PEM files, never overwriting one.

use anyhow::Context as _;
use flipslot_format::keys;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The long help of `keygen`.
pub(super) const LONG_ABOUT: &str = "Create an ed25519 signing key pair.\n\n\
    Writes NAME.key, the secret key (PKCS#8 PEM, mode 0600), and NAME.pub, the public key \
    (SubjectPublicKeyInfo PEM, mode 0644), and prints the key id: the first 8 bytes of \
    SHA-256 over the raw public key, in hex. Existing files are never overwritten. The files \
    are the same format as `openssl genpkey -algorithm ed25519` writes, so keys made with \
    openssl work too.\n\n\
    Keep NAME.key off the devices; install NAME.pub in their keyring directory.";

/// Arguments of `keygen`.
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Directory for the key files (created if missing)
    #[arg(long, value_name = "DIR")]
    out_dir: PathBuf,
    /// Base name of the key files: NAME.key and NAME.pub
    #[arg(long, value_name = "NAME")]
    name: String,
    /// Print the key id and paths as one JSON object:
    /// {"v":1,"key_id":HEX,"secret_key":PATH,"public_key":PATH}
    #[arg(long)]
    json: bool,
}

/// Runs `keygen`.
pub fn run(args: &KeygenArgs) -> anyhow::Result<()> {
    let name = &args.name;
    if name.is_empty() || name.contains('/') || name.starts_with('.') || name.contains('\0') {
        anyhow::bail!(
            "key name {name:?} must be a plain file name (no '/', not starting with '.')"
        );
    }
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("cannot create directory {}", args.out_dir.display()))?;
    let secret_path = args.out_dir.join(format!("{name}.key"));
    let public_path = args.out_dir.join(format!("{name}.pub"));
    for p in [&secret_path, &public_path] {
        if p.symlink_metadata().is_ok() {
            anyhow::bail!("{} already exists, refusing to overwrite it", p.display());
        }
    }
    let key = keys::generate()?;
    let secret_pem = keys::secret_key_pem(&key)?;
    let public_pem = keys::public_key_pem(&key.verifying_key())?;
    write_new(&secret_path, secret_pem.as_bytes(), 0o600)?;
    if let Err(e) = write_new(&public_path, public_pem.as_bytes(), 0o644) {
        // Do not leave half a key pair behind.
        if let Err(rm) = std::fs::remove_file(&secret_path) {
            log::warn!("cannot remove {}: {rm}", secret_path.display());
        }
        return Err(e);
    }
    let id = keys::key_id(&key.verifying_key());
    if args.json {
        super::print_json(serde_json::json!({
            "key_id": id.to_string(),
            "secret_key": secret_path.display().to_string(),
            "public_key": public_path.display().to_string(),
        }));
    } else {
        println!("key id {id}");
        println!("secret key: {} (keep it secret)", secret_path.display());
        println!(
            "public key: {} (install it in the devices' keyring)",
            public_path.display()
        );
    }
    Ok(())
}

/// Creates `path` (failing if it exists) with `mode`, writes `data` and syncs it.
fn write_new(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut f: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| {
            format!(
                "cannot create {} (an existing key file is never overwritten)",
                path.display()
            )
        })?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}
