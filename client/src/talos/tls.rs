//! Mutual TLS to apid and to nodectl agents: rustls client configs (a talosconfig context's, or `--ca/--cert/--key`) and a tonic channel over them.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::transport::{Channel, Endpoint};

use super::talosconfig::Context;

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("talosconfig {path}: field `contexts.{context}.{field}`: {reason}")]
    Pem {
        path: String,
        context: String,
        field: &'static str,
        reason: String,
    },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The ring provider for the whole process (rustls and reqwest both pick the process default).
pub fn install_crypto_provider() {
    // An error only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// rustls client config: trust only the context's CA, present its client certificate, speak h2.
pub fn client_config(ctx: &Context) -> Result<rustls::ClientConfig, TlsSetupError> {
    let pem_error = |field: &'static str, reason: String| TlsSetupError::Pem {
        path: ctx.source.display().to_string(),
        context: ctx.name.clone(),
        field,
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    let ca_certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&ctx.ca_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error("ca", e.to_string()))?;
    if ca_certs.is_empty() {
        return Err(pem_error("ca", "no CERTIFICATE block".to_owned()));
    }
    for cert in ca_certs {
        roots
            .add(cert)
            .map_err(|e| pem_error("ca", e.to_string()))?;
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&ctx.crt_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error("crt", e.to_string()))?;
    if chain.is_empty() {
        return Err(pem_error("crt", "no CERTIFICATE block".to_owned()));
    }
    let key = PrivateKeyDer::from_pem_slice(&ctx.key_pem)
        .map_err(|e| pem_error("key", format!("not a PKCS#8 private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Who is at the other end of a TLS channel, and what the trust material is called, for
/// handshake errors that say what to fix.
#[derive(Debug, Clone, Copy)]
pub struct PeerNames {
    /// `apid`, `the agent`.
    pub peer: &'static str,
    /// The CA the peer's certificate must be signed by.
    pub ca: &'static str,
    /// The client certificate presented.
    pub client_cert: &'static str,
}

/// apid, trusted through a talosconfig context.
pub const APID: PeerNames = PeerNames {
    peer: "apid",
    ca: "the talosconfig context's `ca`",
    client_cert: "the talosconfig context's client certificate (`crt`)",
};

/// A nodectl agent, trusted through `--ca`.
pub const AGENT: PeerNames = PeerNames {
    peer: "the agent",
    ca: "--ca",
    client_cert: "the client certificate (--cert)",
};

/// rustls client config for agents: trust only `ca_pem`, present `cert_pem`/`key_pem` when
/// given, speak h2. Errors name the flag (`--ca`, `--cert`, `--key`).
pub fn agent_client_config(
    ca_pem: &[u8],
    client: Option<(&[u8], &[u8])>,
) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| format!("--ca: {e}"))?;
        roots.add(cert).map_err(|e| format!("--ca: {e}"))?;
    }
    if roots.is_empty() {
        return Err("--ca: no CERTIFICATE block".to_owned());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some((cert_pem, key_pem)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("--cert: {e}"))?;
            if chain.is_empty() {
                return Err("--cert: no CERTIFICATE block".to_owned());
            }
            let key = PrivateKeyDer::from_pem_slice(key_pem)
                .map_err(|e| format!("--key: no private key: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("--cert and --key do not go together: {e}"))?
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Dials `host:port`, runs the TLS handshake (server name = the endpoint host, which the
/// peer's certificate carries as a SAN), and hands the stream to tonic.
pub async fn connect(
    config: Arc<rustls::ClientConfig>,
    endpoint: &str,
    connect_timeout: Duration,
    names: PeerNames,
    server_name: Option<&str>,
) -> Result<Channel, ConnectError> {
    let host = server_name
        .unwrap_or_else(|| endpoint_host(endpoint))
        .to_owned();
    let server_name = ServerName::try_from(host.clone())
        .map_err(|e| ConnectError::Setup(format!("endpoint {endpoint}: bad host: {e}")))?;
    let address = endpoint.to_owned();
    // tonic wants a URI; the connector below does the dialling and TLS, so `http` is right here.
    let uri = format!("http://{endpoint}");
    let channel = Endpoint::from_shared(uri)
        .map_err(|e| ConnectError::Setup(format!("endpoint {endpoint}: {e}")))?
        .connect_timeout(connect_timeout)
        .connect_with_connector(tower::service_fn(move |_| {
            let connector = tokio_rustls::TlsConnector::from(config.clone());
            let server_name = server_name.clone();
            let address = address.clone();
            async move {
                let tcp = tokio::time::timeout(
                    connect_timeout,
                    tokio::net::TcpStream::connect(address.as_str()),
                )
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
                })??;
                let tls = connector
                    .connect(server_name, tcp)
                    .await
                    .map_err(|e| std::io::Error::other(handshake_failure(&address, &e, names)))?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
        .map_err(|e| ConnectError::Unreachable(crate::exit::error_chain(&e)))?;
    Ok(channel)
}

/// A failed TLS handshake, in words: rustls's own texts (`invalid peer certificate:
/// Other(OtherError(UnsupportedCertVersion))`) name types, not what to fix.
fn handshake_failure(address: &str, error: &std::io::Error, names: PeerNames) -> String {
    use rustls::{AlertDescription, CertificateError, Error};
    let Some(tls) = error.get_ref().and_then(|e| e.downcast_ref::<Error>()) else {
        return format!("TLS handshake with {address}: {error}");
    };
    let what = match tls {
        // Another CA of the same name (another cluster's) fails on the signature.
        Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => format!("its certificate is not signed by {}", names.ca),
        Error::InvalidCertificate(CertificateError::NotValidForName)
        | Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => {
            "its certificate does not name this endpoint".to_owned()
        }
        Error::InvalidCertificate(CertificateError::Expired)
        | Error::InvalidCertificate(CertificateError::ExpiredContext { .. }) => {
            "its certificate has expired".to_owned()
        }
        Error::InvalidCertificate(other)
            if format!("{other:?}").contains("UnsupportedCertVersion") =>
        {
            "its certificate is not X.509 v3, which Talos issues and rustls needs".to_owned()
        }
        Error::InvalidCertificate(other) => format!("its certificate is not accepted ({other:?})"),
        Error::AlertReceived(
            AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateRequired,
        ) => format!("it refused {}", names.client_cert),
        Error::AlertReceived(AlertDescription::CertificateExpired) => {
            format!("it says {} has expired", names.client_cert)
        }
        other => other.to_string(),
    };
    format!(
        "TLS handshake with {} at {address} failed: {what}",
        names.peer
    )
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Setup(String),
    #[error("{0}")]
    Unreachable(String),
}

/// `host` of `host:port` or `[v6]:port`, without brackets.
pub fn endpoint_host(endpoint: &str) -> &str {
    if let Some(rest) = endpoint.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    endpoint.rsplit_once(':').map_or(endpoint, |(h, _)| h)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_endpoints() {
        assert_eq!(endpoint_host("127.0.0.1:50000"), "127.0.0.1");
        assert_eq!(endpoint_host("[fd00::1]:50000"), "fd00::1");
        assert_eq!(endpoint_host("node.lan:1"), "node.lan");
    }

    #[test]
    fn ed25519_talos_keys_load_after_relabelling() {
        install_crypto_provider();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        let talos_key = key
            .serialize_pem()
            .replace("BEGIN PRIVATE KEY", "BEGIN ED25519 PRIVATE KEY")
            .replace("END PRIVATE KEY", "END ED25519 PRIVATE KEY");
        let ctx = Context {
            source: "tc".into(),
            name: "c".into(),
            endpoints: vec!["127.0.0.1:50000".into()],
            nodes: vec![],
            ca_pem: cert.pem().into_bytes(),
            crt_pem: cert.pem().into_bytes(),
            key_pem: super::super::talosconfig::relabel_ed25519_key(talos_key.as_bytes()),
        };
        client_config(&ctx).unwrap();
        let unrelabelled = Context {
            key_pem: talos_key.into_bytes(),
            ..ctx
        };
        let err = client_config(&unrelabelled).unwrap_err().to_string();
        assert!(err.contains("contexts.c.key"), "{err}");
    }
}
