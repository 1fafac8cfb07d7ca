//! TLS for the agent's ports: a rustls server configuration from PEM files (certificate chain, key, optional client CA), rebuilt when any of them changes, so a certificate cert-manager rotated is served without a restart.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

use crate::limits::{MAX_PEM_FILE_BYTES, TLS_RELOAD_INTERVAL};

/// The files TLS is served from, as given on the command line.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// `--tls-cert`: the certificate chain, leaf first.
    pub cert: PathBuf,
    /// `--tls-key`: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// `--client-ca`: when given, a client must present a certificate this CA signed.
    pub client_ca: Option<PathBuf>,
}

/// A TLS file that cannot be used, naming the flag and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{flag} {}: {reason}", path.display())]
    File {
        flag: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("--tls-cert and --tls-key do not go together, or the certificate is unusable: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("--client-ca: {0}")]
    ClientCa(String),
}

impl TlsFiles {
    /// The server configuration these files make now.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&read_pem("--tls-cert", &self.cert)?)
                .collect::<Result<_, _>>()
                .map_err(|e| file_error("--tls-cert", &self.cert, e.to_string()))?;
        if chain.is_empty() {
            return Err(file_error(
                "--tls-cert",
                &self.cert,
                "no CERTIFICATE block".to_owned(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(&read_pem("--tls-key", &self.key)?)
            .map_err(|e| file_error("--tls-key", &self.key, format!("no private key: {e}")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(&read_pem("--client-ca", path)?) {
                    let cert = cert.map_err(|e| file_error("--client-ca", path, e.to_string()))?;
                    roots
                        .add(cert)
                        .map_err(|e| file_error("--client-ca", path, e.to_string()))?;
                }
                if roots.is_empty() {
                    return Err(file_error(
                        "--client-ca",
                        path,
                        "no CERTIFICATE block".to_owned(),
                    ));
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| TlsError::ClientCa(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(chain, key)?;
        // gRPC needs h2; the metrics port answers HTTP/1.1.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }

    /// What identifies the files' contents now: device, inode, size and mtime of each, links
    /// followed (a Kubernetes secret volume swaps a `..data` link; cert-manager writes anew).
    fn fingerprint(&self) -> Vec<Option<FileStamp>> {
        use std::os::unix::fs::MetadataExt as _;
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .map(|path| {
                std::fs::metadata(path).ok().map(|m| FileStamp {
                    dev: m.dev(),
                    ino: m.ino(),
                    size_bytes: m.size(),
                    mtime_nsec: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
                })
            })
            .collect()
    }
}

/// What tells a file's contents changed without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size_bytes: u64,
    mtime_nsec: i128,
}

fn file_error(flag: &'static str, path: &Path, reason: String) -> TlsError {
    TlsError::File {
        flag,
        path: path.to_owned(),
        reason,
    }
}

/// A PEM file, read whole but at most [`MAX_PEM_FILE_BYTES`]; a FIFO or device is refused (it
/// could hold the reload forever).
fn read_pem(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let error = |reason: String| file_error(flag, path, reason);
    let file = std::fs::File::open(path).map_err(|e| error(e.to_string()))?;
    let meta = file.metadata().map_err(|e| error(e.to_string()))?;
    if !meta.is_file() {
        return Err(error("not a regular file".to_owned()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| error(e.to_string()))?;
    if bytes.len() as u64 > MAX_PEM_FILE_BYTES {
        return Err(error(format!(
            "larger than {} KiB; not a PEM certificate or key",
            MAX_PEM_FILE_BYTES / 1024
        )));
    }
    Ok(bytes)
}

/// The server configuration in use, replaced when the files change; cheap to clone.
#[derive(Debug, Clone)]
pub struct ReloadingConfig {
    current: Arc<RwLock<Arc<rustls::ServerConfig>>>,
    /// Protocols offered in ALPN instead of the files' config's (h2 and http/1.1).
    alpn: Option<Vec<Vec<u8>>>,
}

impl ReloadingConfig {
    /// Loads the files (an error here stops the agent: it must not start without the TLS it
    /// was told to serve) and watches them every [`TLS_RELOAD_INTERVAL`] until `stop`.
    pub fn watch(files: TlsFiles, stop: CancellationToken) -> Result<Self, TlsError> {
        let config = files.server_config()?;
        let reloading = ReloadingConfig {
            current: Arc::new(RwLock::new(Arc::new(config))),
            alpn: None,
        };
        let current = Arc::clone(&reloading.current);
        let mut seen = files.fingerprint();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(TLS_RELOAD_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    () = stop.cancelled() => return,
                }
                let now = files.fingerprint();
                if now == seen {
                    continue;
                }
                // Read off the runtime thread: a file on a stalled mount must not stop serving.
                let reading = files.clone();
                let built = tokio::task::spawn_blocking(move || reading.server_config()).await;
                match built {
                    Ok(Ok(config)) => {
                        *current
                            .write()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(config);
                        seen = now;
                        tracing::info!("TLS certificate files changed; serving the new ones");
                    }
                    // Half-written during a rotation, or wrong: keep serving the old ones and
                    // try again at the next tick.
                    Ok(Err(e)) => tracing::warn!("TLS files changed but cannot be used yet: {e}"),
                    Err(e) => tracing::warn!("reloading TLS files failed: {e}"),
                }
            }
        });
        Ok(reloading)
    }

    /// The same files, offering HTTP/1.1 alone: the metrics port speaks nothing else, and a
    /// scraper that was offered h2 (Prometheus, curl) would speak h2 to it.
    pub fn http1_only(&self) -> Self {
        Self {
            current: Arc::clone(&self.current),
            alpn: Some(vec![b"http/1.1".to_vec()]),
        }
    }

    /// The configuration a new connection is served with.
    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        let current = Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        match &self.alpn {
            None => current,
            Some(alpn) => {
                let mut config = (*current).clone();
                config.alpn_protocols.clone_from(alpn);
                Arc::new(config)
            }
        }
    }

    /// The TLS server handshake on an accepted connection, within [`crate::limits::TLS_HANDSHAKE_TIMEOUT`].
    pub async fn accept<IO>(&self, io: IO) -> std::io::Result<tokio_rustls::server::TlsStream<IO>>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.current());
        match tokio::time::timeout(crate::limits::TLS_HANDSHAKE_TIMEOUT, acceptor.accept(io)).await
        {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the TLS handshake did not finish in time",
            )),
        }
    }
}

/// Whether plaintext may be served on `addr` without `--insecure-listen`: only loopback, where
/// nothing crosses a network.
pub fn plaintext_allowed(addr: &std::net::SocketAddr) -> bool {
    addr.ip().is_loopback()
}
