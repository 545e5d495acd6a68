//! Server certificates for the TLS listeners, re-read on every reload: the
//! listeners resolve the certificate through a [`CertStore`] whose key pair is
//! swapped atomically, so a renewed certificate takes effect without a restart
//! and a broken one is refused like any other bad config.

use arc_swap::ArcSwap;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, CryptoProvider, ResolvesServerCert};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a certificate and key pair cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file could not be read.
    #[error("cannot read {} / {}: {reason}", cert.display(), key.display())]
    Read {
        /// Certificate chain file.
        cert: PathBuf,
        /// Private key file.
        key: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The files hold no PEM certificate or key.
    #[error("{} must hold a PEM certificate and {} a PEM private key", cert.display(), key.display())]
    NotPem {
        /// Certificate chain file.
        cert: PathBuf,
        /// Private key file.
        key: PathBuf,
    },
    /// No crypto provider (a build problem, not a file one).
    #[error("no TLS crypto provider is installed")]
    NoProvider,
    /// The key is not one rustls can sign with.
    #[error("unusable private key {}: {reason}", key.display())]
    BadKey {
        /// Private key file.
        key: PathBuf,
        /// rustls's reason.
        reason: String,
    },
    /// The key is not the certificate's.
    #[error("{} does not match {}: {reason}", key.display(), cert.display())]
    Mismatch {
        /// Certificate chain file.
        cert: PathBuf,
        /// Private key file.
        key: PathBuf,
        /// rustls's reason.
        reason: String,
    },
    /// The TLS listener could not be set up.
    #[error("TLS listener: {0}")]
    Listener(String),
}

/// Loads and checks a PEM certificate chain and its private key.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, CertError> {
    pingora::tls::install_default_crypto_provider();
    let files = || (cert.to_path_buf(), key.to_path_buf());
    let (certs, private_key) =
        pingora::tls::load_certs_and_key_files(&cert.to_string_lossy(), &key.to_string_lossy())
            .map_err(|e| {
                let (cert, key) = files();
                CertError::Read {
                    cert,
                    key,
                    reason: e.to_string(),
                }
            })?
            .ok_or_else(|| {
                let (cert, key) = files();
                CertError::NotPem { cert, key }
            })?;
    let provider = CryptoProvider::get_default().ok_or(CertError::NoProvider)?;
    let signing = provider
        .key_provider
        .load_private_key(private_key)
        .map_err(|e| CertError::BadKey {
            key: key.to_path_buf(),
            reason: e.to_string(),
        })?;
    let certified = CertifiedKey::new(certs, signing);
    certified.keys_match().map_err(|e| {
        let (cert, key) = files();
        CertError::Mismatch {
            cert,
            key,
            reason: e.to_string(),
        }
    })?;
    Ok(certified)
}

/// The live server certificate, swappable on reload.
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
    files: ArcSwap<(PathBuf, PathBuf)>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let files = self.files.load();
        f.debug_struct("CertStore")
            .field("cert", &files.0)
            .field("key", &files.1)
            .finish()
    }
}

impl CertStore {
    /// Loads the initial certificate.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, CertError> {
        let ck = load_certified_key(cert, key)?;
        Ok(Arc::new(CertStore {
            current: ArcSwap::from_pointee(ck),
            files: ArcSwap::from_pointee((cert.to_path_buf(), key.to_path_buf())),
        }))
    }

    /// Installs an already-checked certificate (part of a reload's swap).
    pub fn install(&self, cert: &Path, key: &Path, ck: CertifiedKey) {
        self.current.store(Arc::new(ck));
        self.files
            .store(Arc::new((cert.to_path_buf(), key.to_path_buf())));
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}
