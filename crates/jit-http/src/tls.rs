//! TLS for both listeners (rustls), with the certificate and key reloaded when their files
//! change, so a renewed certificate (certbot, cert-manager, an internal CA's agent) takes effect
//! without a restart.
//!
//! The files are read again at most once per `recheck` (2 s in production), on the first TLS
//! handshake after it has passed; nothing polls while nobody connects. A pair that fails to
//! load (half-written, a key that does not match the certificate) is refused, the last good
//! pair keeps serving, and the failure is logged once per change of the files. The start-up
//! load is strict: a listener never starts without a valid pair.

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `[tls]` table of both configuration files. With both files set the listener speaks
/// HTTPS only.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1). Keep it 0600, owned by the service user.
    pub key_file: Option<PathBuf>,
}

impl TlsConfig {
    /// The two paths when TLS is on; an error when only one is set.
    pub fn paths(&self) -> Result<Option<(&Path, &Path)>, String> {
        match (&self.cert_file, &self.key_file) {
            (Some(c), Some(k)) => Ok(Some((c, k))),
            (None, None) => Ok(None),
            (Some(_), None) => Err("tls.cert_file is set but tls.key_file is not".into()),
            (None, Some(_)) => Err("tls.key_file is set but tls.cert_file is not".into()),
        }
    }
}

/// Why a certificate and key pair did not load. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{0}: no PEM certificate in the file")]
    NoCertificate(PathBuf),
    /// The key file holds no usable PEM private key.
    #[error("{0}: no PEM private key (PKCS#8, PKCS#1 or SEC1) in the file")]
    NoKey(PathBuf),
    /// rustls refused the pair (unsupported key type, key not matching the certificate).
    #[error("{cert} with {key}: {message}")]
    Refused {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' reason.
        message: String,
    },
}

/// The bytes last read from the two files, and the pair built from them.
#[derive(Debug)]
struct Loaded {
    checked: Instant,
    cert_pem: Vec<u8>,
    key_pem: zeroize::Zeroizing<Vec<u8>>,
    current: Arc<CertifiedKey>,
    /// The bytes of the last pair that failed, so its failure is logged once.
    failed: Option<(Vec<u8>, zeroize::Zeroizing<Vec<u8>>)>,
}

/// A certificate resolver that follows its files. Build it with [`ReloadingCert::load`] and
/// hand it to [`acceptor`].
#[derive(Debug)]
pub struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    recheck: Duration,
    provider: Arc<CryptoProvider>,
    state: Mutex<Loaded>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.into(),
        source,
    })
}

impl ReloadingCert {
    /// Loads the pair now (an error refuses start) and re-reads the files at most once per
    /// `recheck` afterwards.
    pub fn load(cert_file: &Path, key_file: &Path, recheck: Duration) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let cert_pem = read(cert_file)?;
        let key_pem = zeroize::Zeroizing::new(read(key_file)?);
        let current = build(&provider, cert_file, key_file, &cert_pem, &key_pem)?;
        Ok(Self {
            cert_file: cert_file.into(),
            key_file: key_file.into(),
            recheck,
            provider,
            state: Mutex::new(Loaded {
                checked: Instant::now(),
                cert_pem,
                key_pem,
                current: Arc::new(current),
                failed: None,
            }),
        })
    }

    /// The pair to serve: the files are read again when `recheck` has passed since the last
    /// look, and a changed pair that loads replaces the current one.
    fn current(&self) -> Option<Arc<CertifiedKey>> {
        let mut s = self.state.lock().ok()?;
        if s.checked.elapsed() >= self.recheck {
            s.checked = Instant::now();
            self.refresh(&mut s);
        }
        Some(s.current.clone())
    }

    fn refresh(&self, s: &mut Loaded) {
        let (Ok(cert_pem), Ok(key_pem)) = (read(&self.cert_file), read(&self.key_file)) else {
            // A file being replaced may be missing for a moment; the next look sees it.
            return;
        };
        let key_pem = zeroize::Zeroizing::new(key_pem);
        if cert_pem == s.cert_pem && *key_pem == *s.key_pem {
            return;
        }
        if s.failed
            .as_ref()
            .is_some_and(|(c, k)| *c == cert_pem && **k == *key_pem)
        {
            return;
        }
        match build(
            &self.provider,
            &self.cert_file,
            &self.key_file,
            &cert_pem,
            &key_pem,
        ) {
            Ok(pair) => {
                tracing::info!(cert = %self.cert_file.display(), "TLS certificate reloaded");
                s.current = Arc::new(pair);
                s.cert_pem = cert_pem;
                s.key_pem = key_pem;
                s.failed = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "TLS certificate or key changed but does not load; still serving the previous pair");
                s.failed = Some((cert_pem, key_pem));
            }
        }
    }
}

fn build(
    provider: &CryptoProvider,
    cert_file: &Path,
    key_file: &Path,
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert_file.into()));
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| TlsError::NoKey(key_file.into()))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| TlsError::Refused {
        cert: cert_file.into(),
        key: key_file.into(),
        message: e.to_string(),
    })
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

/// A TLS acceptor (TLS 1.2 and 1.3, HTTP/1.1 by ALPN) serving `cert`'s current pair.
pub fn acceptor(cert: Arc<ReloadingCert>) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(cert.provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Refused {
            cert: cert.cert_file.clone(),
            key: cert.key_file.clone(),
            message: e.to_string(),
        })?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Builds the acceptor for a `[tls]` table, or `None` when TLS is off.
pub fn from_config(
    tls: &TlsConfig,
    recheck: Duration,
) -> Result<Option<tokio_rustls::TlsAcceptor>, String> {
    let Some((cert, key)) = tls.paths()? else {
        return Ok(None);
    };
    let reloading = ReloadingCert::load(cert, key, recheck).map_err(|e| e.to_string())?;
    acceptor(Arc::new(reloading))
        .map(Some)
        .map_err(|e| e.to_string())
}
