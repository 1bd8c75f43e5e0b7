//! HTTPS for `referrals serve`: loads the PEM certificate chain and private key named by
//! `TLS_CERT_FILE` and `TLS_KEY_FILE` into a rustls configuration.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// The PEM files of the server's certificate chain and private key.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub certificate: PathBuf,
    /// The private key of the leaf certificate (PKCS#8, PKCS#1 or SEC1).
    pub private_key: PathBuf,
}

impl TlsFiles {
    /// Pairs the two paths, or returns `None` when neither is given.
    ///
    /// # Errors
    /// Returns an error when only one of the two is given, because serving plain HTTP
    /// when the operator meant HTTPS would expose tokens and personal data.
    pub fn from_options(
        certificate: Option<PathBuf>,
        private_key: Option<PathBuf>,
    ) -> anyhow::Result<Option<Self>> {
        match (certificate, private_key) {
            (None, None) => Ok(None),
            (Some(certificate), Some(private_key)) => Ok(Some(Self {
                certificate,
                private_key,
            })),
            (Some(_), None) => {
                bail!("TLS_CERT_FILE is set but TLS_KEY_FILE is missing; set both or neither")
            }
            (None, Some(_)) => {
                bail!("TLS_KEY_FILE is set but TLS_CERT_FILE is missing; set both or neither")
            }
        }
    }
}

/// Builds the server configuration: TLS 1.2 and 1.3 only, with the cipher suites of
/// rustls's ring provider, offering HTTP/2 and HTTP/1.1 through ALPN.
///
/// rustls 0.23 implements no version below 1.2, so it rejects a TLS 1.0 or 1.1
/// ClientHello with a fatal alert whatever this list contains. The list is explicit so
/// that a future rustls default cannot widen it unnoticed.
///
/// # Errors
/// Returns an error naming the file when a file cannot be read or contains no
/// certificate or key, or when the key does not match the certificate.
pub fn server_config(files: &TlsFiles) -> anyhow::Result<Arc<ServerConfig>> {
    let chain = read_certificates(&files.certificate)?;
    let key = PrivateKeyDer::from_pem_file(&files.private_key).with_context(|| {
        format!(
            "cannot read a PEM private key from TLS_KEY_FILE {}",
            files.private_key.display()
        )
    })?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("the TLS provider supports neither TLS 1.2 nor 1.3")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .with_context(|| {
            format!(
                "the key in TLS_KEY_FILE {} does not fit the certificate in TLS_CERT_FILE {}",
                files.private_key.display(),
                files.certificate.display()
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .with_context(|| {
            format!(
                "cannot read PEM certificates from TLS_CERT_FILE {}",
                path.display()
            )
        })?;
    if chain.is_empty() {
        bail!(
            "TLS_CERT_FILE {} contains no CERTIFICATE block; give the PEM certificate chain, leaf first",
            path.display()
        );
    }
    Ok(chain)
}
