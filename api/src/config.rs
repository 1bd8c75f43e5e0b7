//! Configuration from environment variables.

use std::path::{Path, PathBuf};

use referrals_store::crypto::MasterKey;

/// Where `demo` keeps what it generates (the master key, later the outbox files).
pub const DATA_DIR: &str = ".data";

/// Errors of reading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Neither `REFERRALS_MASTER_KEY` nor `REFERRALS_MASTER_KEY_FILE` is set.
    #[error(
        "no master key configured: set REFERRALS_MASTER_KEY to 32 random bytes in base64 \
         (`openssl rand -base64 32`) or REFERRALS_MASTER_KEY_FILE to a file that holds them"
    )]
    MissingMasterKey,
    /// The key file cannot be read or written.
    #[error("master key file {path}: {source}")]
    KeyFile {
        /// The file's path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The key is not 32 bytes of base64.
    #[error("{origin}: {source}")]
    InvalidMasterKey {
        /// Where the key came from.
        origin: String,
        /// What is wrong with it.
        source: referrals_store::crypto::CryptoError,
    },
}

/// Reads the master key from `REFERRALS_MASTER_KEY` or the file named by
/// `REFERRALS_MASTER_KEY_FILE`.
///
/// # Errors
/// Returns an error when neither is set, the file cannot be read, or the key is invalid.
pub fn master_key_from_env() -> Result<MasterKey, ConfigError> {
    if let Ok(text) = std::env::var("REFERRALS_MASTER_KEY") {
        return MasterKey::from_base64(&text).map_err(|source| ConfigError::InvalidMasterKey {
            origin: "REFERRALS_MASTER_KEY".to_owned(),
            source,
        });
    }
    if let Ok(path) = std::env::var("REFERRALS_MASTER_KEY_FILE") {
        return read_key_file(Path::new(&path));
    }
    Err(ConfigError::MissingMasterKey)
}

/// Reads the master key from the environment, or from `.data/master.key`, generating that
/// file (readable by its owner only) the first time. Used by `demo` alone: a production
/// deployment must configure its key explicitly.
///
/// # Errors
/// Returns an error when the configured key is invalid or the file cannot be written.
pub fn master_key_for_demo() -> Result<MasterKey, ConfigError> {
    match master_key_from_env() {
        Err(ConfigError::MissingMasterKey) => {}
        other => return other,
    }
    let path = Path::new(DATA_DIR).join("master.key");
    if path.exists() {
        return read_key_file(&path);
    }
    let (key, text) = MasterKey::generate();
    write_private_file(&path, &text).map_err(|source| ConfigError::KeyFile {
        path: path.clone(),
        source,
    })?;
    Ok(key)
}

/// Reads a master key from a file that contains its base64 text.
///
/// # Errors
/// Returns an error when the file cannot be read or the key is invalid.
pub fn read_key_file(path: &Path) -> Result<MasterKey, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::KeyFile {
        path: path.to_owned(),
        source,
    })?;
    MasterKey::from_base64(&text).map_err(|source| ConfigError::InvalidMasterKey {
        origin: format!("master key file {}", path.display()),
        source,
    })
}

fn write_private_file(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")
}
