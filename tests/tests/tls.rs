//! The agent's TLS: mutual TLS with a client CA, refusals of a client signed by another CA (readable on both sides), plaintext only on loopback unless asked, a rotated certificate served without a restart, and the metrics port behind the same TLS.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nodectl_e2e::fake_talos::pki::{CertifiedKey, Pki, Role};
use nodectl_e2e::harness::{Agent, binary, node_fixture, nodectl, nodectl_with};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> anyhow::Result<Self> {
        Ok(Files {
            dir: tempfile::tempdir()?,
        })
    }

    fn write(&self, name: &str, text: &str) -> anyhow::Result<String> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text)?;
        Ok(path.to_str().context("path")?.to_owned())
    }

    fn key_pair(&self, name: &str, key: &CertifiedKey) -> anyhow::Result<(String, String)> {
        Ok((
            self.write(&format!("{name}.crt"), &key.cert_pem)?,
            self.write(&format!("{name}.key"), &key.key_pem)?,
        ))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The certificate the server at `addr` presents, trusting `ca_pem`, with `client` if given.
/// A client trusting `ca_pem`, presenting `client` when given, offering `alpn`.
fn client_config(
    ca_pem: &str,
    client: Option<&CertifiedKey>,
    alpn: &[&[u8]],
) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match client {
        Some(key) => builder.with_client_auth_cert(
            CertificateDer::pem_slice_iter(key.cert_pem.as_bytes()).collect::<Result<_, _>>()?,
            PrivateKeyDer::from_pem_slice(key.key_pem.as_bytes())?,
        )?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

async fn served_certificate(
    addr: &str,
    ca_pem: &str,
    client: Option<&CertifiedKey>,
) -> anyhow::Result<Vec<u8>> {
    let config = client_config(ca_pem, client, &[b"h2"])?;
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1")?, tcp)
        .await?;
    let (_, session) = tls.get_ref();
    Ok(session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .context("no certificate presented")?
        .to_vec())
}

/// Scrapes `/metrics` over TLS offering h2 and http/1.1 in ALPN, as Prometheus and curl do;
/// returns the protocol the agent chose and the response.
async fn scrape_over_tls(
    addr: &str,
    ca_pem: &str,
    client: Option<&CertifiedKey>,
) -> anyhow::Result<(Option<Vec<u8>>, String)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let config = client_config(ca_pem, client, &[b"h2", b"http/1.1"])?;
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1")?, tcp)
        .await?;
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    tls.write_all(b"GET /metrics HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    // A server that ends without close_notify still gave its whole response here.
    let _ = tls.read_to_end(&mut response).await;
    Ok((alpn, String::from_utf8_lossy(&response).into_owned()))
}

fn grpc_addr(agent: &Agent) -> anyhow::Result<String> {
    Ok(agent.listener("grpc").context("grpc")?.to_owned())
}

#[test]
fn mutual_tls_accepts_its_clients_and_refuses_others_readably_on_both_sides() -> anyhow::Result<()>
{
    let files = Files::new()?;
    let pki = Pki::generate()?;
    let other = Pki::generate()?;
    let (cert, key) = files.key_pair("server", &pki.server)?;
    let ca = files.write("ca.pem", &pki.ca_pem)?;
    let other_ca = files.write("other-ca.pem", &other.ca_pem)?;
    let (client_cert, client_key) = files.key_pair("client", &pki.client(Role::Admin)?)?;
    let (stranger_cert, stranger_key) = files.key_pair("stranger", &other.client(Role::Admin)?)?;
    let log = files.path("agent.log");
    let agent = Agent::start_logging_to(
        &node_fixture("strix-halo-mes83"),
        &["--tls-cert", &cert, "--tls-key", &key, "--client-ca", &ca],
        &log,
    )?;
    assert!(agent.endpoint.starts_with("https://"));

    // The right client certificate: the node's critical finding comes through.
    let run = nodectl(&[
        "--endpoint",
        &agent.endpoint,
        "--ca",
        &ca,
        "--cert",
        &client_cert,
        "--key",
        &client_key,
        "node",
        "check",
    ])?;
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("mes_firmware_known_bad"),
        "{}",
        run.stdout
    );

    // The same from the environment.
    let run = nodectl_with(
        &["--endpoint", &agent.endpoint, "node", "show"],
        &[
            ("NODECTL_CA", ca.as_str()),
            ("NODECTL_CERT", client_cert.as_str()),
            ("NODECTL_KEY", client_key.as_str()),
        ],
        None,
    )?;
    assert_eq!(run.code, 0, "{}", run.stderr);

    // And from the config file.
    let config = files.write(
        "config.toml",
        "[tls]\nca = \"ca.pem\"\ncert = \"client.crt\"\nkey = \"client.key\"\n",
    )?;
    let run = nodectl_with(
        &["--endpoint", &agent.endpoint, "node", "show"],
        &[("NODECTL_CONFIG", config.as_str())],
        None,
    )?;
    assert_eq!(run.code, 0, "{}", run.stderr);

    // A client certificate signed by another CA is refused, and nodectl says so in words.
    let run = nodectl(&[
        "--endpoint",
        &agent.endpoint,
        "--ca",
        &ca,
        "--cert",
        &stranger_cert,
        "--key",
        &stranger_key,
        "node",
        "show",
    ])?;
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("could not be reached") && run.stderr.contains("TLS"),
        "{}",
        run.stderr
    );
    // No client certificate at all: refused too.
    let run = nodectl(&["--endpoint", &agent.endpoint, "--ca", &ca, "node", "show"])?;
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);

    // The agent's certificate checked against the wrong CA: the client names the flag.
    let run = nodectl(&[
        "--endpoint",
        &agent.endpoint,
        "--ca",
        &other_ca,
        "--cert",
        &client_cert,
        "--key",
        &client_key,
        "node",
        "show",
    ])?;
    assert_eq!(run.code, 3);
    assert!(run.stderr.contains("not signed by --ca"), "{}", run.stderr);

    // The name checked is --tls-server-name's when given (one certificate for a DaemonSet).
    let run = nodectl(&[
        "--endpoint",
        &agent.endpoint,
        "--ca",
        &ca,
        "--cert",
        &client_cert,
        "--key",
        &client_key,
        "--tls-server-name",
        "nodectl-agent.nodectl.svc",
        "node",
        "show",
    ])?;
    assert_eq!(run.code, 3);
    assert!(
        run.stderr.contains("does not name this endpoint"),
        "{}",
        run.stderr
    );

    // https without --ca: an input error that says what to give.
    let run = nodectl_with(
        &["--endpoint", &agent.endpoint, "node", "show"],
        &[("NODECTL_CONFIG", "/nonexistent/config.toml")],
        None,
    )?;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("needs --ca"), "{}", run.stderr);

    // Plaintext gRPC to a TLS port gets nothing.
    let plain = agent.endpoint.replacen("https://", "http://", 1);
    let run = nodectl(&["--endpoint", &plain, "--node-timeout", "3s", "node", "show"])?;
    assert_ne!(run.code, 0);

    // The agent's side: each refused handshake is in its log with the peer and the reason.
    let deadline = Instant::now() + Duration::from_secs(5);
    let logged = loop {
        let text = std::fs::read_to_string(&log)?;
        if text.contains("TLS handshake from 127.0.0.1") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        logged.contains("grpc port: TLS handshake from 127.0.0.1")
            && logged.to_lowercase().contains("certificate"),
        "{logged}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_served_without_a_restart() -> anyhow::Result<()> {
    let files = Files::new()?;
    let first = Pki::generate()?;
    let second = Pki::generate()?;
    let (cert, key) = files.key_pair("server", &first.server)?;
    let ca_first = files.write("ca1.pem", &first.ca_pem)?;
    let ca_second = files.write("ca2.pem", &second.ca_pem)?;
    let agent = Agent::start(
        &node_fixture("strix-halo-healthy"),
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--metrics-listen",
            "127.0.0.1:0",
            "--health-listen",
            "127.0.0.1:0",
        ],
    )?;
    // The kubelet's probes speak plaintext gRPC to the health port, and learn only readiness.
    let health = format!("http://{}", agent.listener("health").context("health")?);
    assert_eq!(
        nodectl_e2e::harness::health(&health, "nodectl.v1.NodeDiagnostics").await?,
        tonic_health::ServingStatus::Serving as i32
    );
    assert_eq!(
        nodectl_e2e::harness::health(&health, "").await?,
        tonic_health::ServingStatus::Serving as i32
    );
    let addr = grpc_addr(&agent)?;
    let before = served_certificate(&addr, &first.ca_pem, None).await?;

    // As cert-manager does through a secret volume: the new pair replaces the old in one step.
    let staged = files.dir.path().join("staged");
    std::fs::create_dir(&staged)?;
    std::fs::write(staged.join("server.crt"), &second.server.cert_pem)?;
    std::fs::write(staged.join("server.key"), &second.server.key_pem)?;
    std::fs::rename(staged.join("server.key"), files.path("server.key"))?;
    std::fs::rename(staged.join("server.crt"), files.path("server.crt"))?;

    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        if let Ok(now) = served_certificate(&addr, &second.ca_pem, None).await {
            break now;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the rotated certificate was not served within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_ne!(before, after);
    // The same agent process: nodectl trusting the new CA reads it; the old CA no longer works.
    let endpoint = agent.endpoint.clone();
    let run = tokio::task::spawn_blocking(move || {
        nodectl(&["--endpoint", &endpoint, "--ca", &ca_second, "node", "show"])
    })
    .await??;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let endpoint = agent.endpoint.clone();
    let run = tokio::task::spawn_blocking(move || {
        nodectl(&["--endpoint", &endpoint, "--ca", &ca_first, "node", "show"])
    })
    .await??;
    assert_eq!(run.code, 3, "{}", run.stderr);

    // The metrics port is behind the same TLS: a plaintext scrape gets no metrics.
    let metrics = agent.listener("metrics").context("metrics")?.to_owned();
    // Served with the rotated certificate (the second CA verifies it), and HTTP/1.1 alone in
    // ALPN: a scraper offered h2 would speak it, and the metrics port speaks HTTP/1.1 only.
    let (alpn, response) = scrape_over_tls(&metrics, &second.ca_pem, None).await?;
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert!(
        response.starts_with("HTTP/1.1 200") && response.contains("nodectl_"),
        "{response}"
    );
    let plain = nodectl_e2e::harness::http_get(&metrics, "/metrics");
    assert!(
        plain
            .as_ref()
            .map_or(true, |body| !body.contains("nodectl_")),
        "{plain:?}"
    );
    Ok(())
}

fn agent_refuses(args: &[&str]) -> anyhow::Result<String> {
    let output = std::process::Command::new(binary("nodectl-agent")?)
        .args(["--host-root"])
        .arg(node_fixture("strix-halo-healthy"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()?;
    anyhow::ensure!(
        output.status.code() == Some(2),
        "exit {:?}: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn plaintext_off_loopback_needs_insecure_listen_and_bad_tls_files_are_named() -> anyhow::Result<()>
{
    let stderr = agent_refuses(&["--listen", "0.0.0.0:0"])?;
    assert!(
        stderr.contains("--listen 0.0.0.0:0") && stderr.contains("--insecure-listen"),
        "{stderr}"
    );
    let stderr = agent_refuses(&["--listen", "127.0.0.1:0", "--metrics-listen", "0.0.0.0:0"])?;
    assert!(stderr.contains("--metrics-listen 0.0.0.0:0"), "{stderr}");
    // Asked for: it serves.
    let mut child = std::process::Command::new(binary("nodectl-agent")?)
        .arg("--host-root")
        .arg(node_fixture("strix-halo-healthy"))
        .args(["--listen", "0.0.0.0:0", "--insecure-listen"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let ready = std::io::BufRead::lines(std::io::BufReader::new(stdout))
        .map_while(Result::ok)
        .any(|line| line == "ready");
    child.kill()?;
    child.wait()?;
    assert!(ready, "the agent did not serve with --insecure-listen");

    let files = Files::new()?;
    let pki = Pki::generate()?;
    let (cert, _) = files.key_pair("server", &pki.server)?;
    let other = Pki::generate()?;
    let (_, other_key) = files.key_pair("other", &other.server)?;
    let stderr = agent_refuses(&[
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &other_key,
    ])?;
    assert!(stderr.contains("do not go together"), "{stderr}");
    let stderr = agent_refuses(&[
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        "/nonexistent.key",
    ])?;
    assert!(stderr.contains("--tls-key /nonexistent.key"), "{stderr}");
    let garbage = files.write("garbage.pem", "not a certificate\n")?;
    let stderr = agent_refuses(&[
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        &garbage,
        "--tls-key",
        &other_key,
    ])?;
    assert!(
        stderr.contains(&format!("--tls-cert {garbage}")),
        "{stderr}"
    );
    Ok(())
}
