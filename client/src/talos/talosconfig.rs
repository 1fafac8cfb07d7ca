//! talosconfig: where it is found, which context is used, and the endpoints, nodes and PEMs it holds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

/// apid's port when an endpoint names none.
pub const DEFAULT_APID_PORT: u16 = 50000;

/// Read by pods that mount a Talos `ServiceAccount` secret.
const IN_CLUSTER_PATH: &str = "/var/run/secrets/talos.dev/config";

#[derive(Debug, thiserror::Error)]
pub enum TalosConfigError {
    #[error(
        "no talosconfig found (looked at {looked_at}); pass --talosconfig FILE or set TALOSCONFIG"
    )]
    NotFound { looked_at: String },
    #[error("talosconfig {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("talosconfig {path}: {reason}")]
    Invalid { path: String, reason: String },
}

/// One talosconfig context, resolved: what a client needs to reach a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// The file it came from (for messages).
    pub source: PathBuf,
    pub name: String,
    /// `host:port`, the default port filled in.
    pub endpoints: Vec<String>,
    pub nodes: Vec<String>,
    pub ca_pem: Vec<u8>,
    pub crt_pem: Vec<u8>,
    /// Relabelled to `PRIVATE KEY` when the file says `ED25519 PRIVATE KEY` (the body is PKCS#8).
    pub key_pem: Vec<u8>,
}

#[derive(Debug, Deserialize)]
struct RawConfig {
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    contexts: BTreeMap<String, RawContext>,
}

#[derive(Debug, Deserialize)]
struct RawContext {
    #[serde(default)]
    endpoints: Vec<String>,
    #[serde(default)]
    nodes: Vec<String>,
    #[serde(default)]
    ca: Option<String>,
    #[serde(default)]
    crt: Option<String>,
    #[serde(default)]
    key: Option<String>,
}

/// The file to read: `--talosconfig`, `$TALOSCONFIG`, `$TALOS_HOME/config` or `~/.talos/config`,
/// then the in-cluster secret. An explicit choice is used as given, even when missing (the read
/// then says so); the defaults are used only when they exist.
pub fn locate(
    explicit: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
    exists: &dyn Fn(&Path) -> bool,
) -> Result<PathBuf, TalosConfigError> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    if let Some(path) = env("TALOSCONFIG").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let mut candidates = Vec::new();
    if let Some(home) = env("TALOS_HOME").filter(|v| !v.is_empty()) {
        candidates.push(PathBuf::from(home).join("config"));
    } else if let Some(home) = env("HOME").filter(|v| !v.is_empty()) {
        candidates.push(PathBuf::from(home).join(".talos").join("config"));
    }
    candidates.push(PathBuf::from(IN_CLUSTER_PATH));
    candidates
        .iter()
        .find(|path| exists(path))
        .cloned()
        .ok_or_else(|| TalosConfigError::NotFound {
            looked_at: candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Reads and resolves the talosconfig chosen by the flags and the environment.
pub fn load(explicit: Option<&Path>, context: Option<&str>) -> Result<Context, TalosConfigError> {
    let path = locate(explicit, &|name| std::env::var(name).ok(), &|p| p.exists())?;
    let text = std::fs::read_to_string(&path).map_err(|e| TalosConfigError::Unreadable {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    parse(&text, &path, context)
}

/// Parses a talosconfig and picks `context` (or the file's `context`).
pub fn parse(
    text: &str,
    source: &Path,
    context: Option<&str>,
) -> Result<Context, TalosConfigError> {
    let invalid = |reason: String| TalosConfigError::Invalid {
        path: source.display().to_string(),
        reason,
    };
    let raw: RawConfig =
        serde_saphyr::from_str(text).map_err(|e| invalid(format!("not a talosconfig: {e}")))?;
    let name = match context {
        Some(name) => name.to_owned(),
        None => raw
            .context
            .clone()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| invalid("field `context` is empty; pass --context NAME".to_owned()))?,
    };
    let Some(ctx) = raw.contexts.get(&name) else {
        let known: Vec<&str> = raw.contexts.keys().map(String::as_str).collect();
        return Err(invalid(format!(
            "context `{name}` is not in `contexts` (it has: {})",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )));
    };
    if ctx.endpoints.is_empty() {
        return Err(invalid(format!(
            "field `contexts.{name}.endpoints` is empty; add the node or load-balancer address"
        )));
    }
    let endpoints = ctx
        .endpoints
        .iter()
        .map(|e| normalize_endpoint(e))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|reason| invalid(format!("field `contexts.{name}.endpoints`: {reason}")))?;
    let pem = |field: &str, value: &Option<String>| -> Result<Vec<u8>, TalosConfigError> {
        let value = value
            .as_deref()
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| invalid(format!("field `contexts.{name}.{field}` is missing")))?;
        let compact: String = value.split_whitespace().collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(compact.as_bytes())
            .map_err(|e| {
                invalid(format!(
                    "field `contexts.{name}.{field}` is not base64: {e}"
                ))
            })?;
        if !bytes.starts_with(b"-----BEGIN ") {
            return Err(invalid(format!(
                "field `contexts.{name}.{field}` does not decode to a PEM block"
            )));
        }
        Ok(bytes)
    };
    let ca_pem = pem("ca", &ctx.ca)?;
    let crt_pem = pem("crt", &ctx.crt)?;
    if let Some(version) = certificate_version(&crt_pem)
        && version != 3
    {
        return Err(invalid(format!(
            "client certificate in context `{name}` is X.509 v{version}; Talos and rustls need v3 (issue a new one, e.g. with `talosctl config new`)"
        )));
    }
    Ok(Context {
        source: source.to_path_buf(),
        name: name.clone(),
        endpoints,
        nodes: ctx.nodes.clone(),
        ca_pem,
        crt_pem,
        key_pem: relabel_ed25519_key(&pem("key", &ctx.key)?),
    })
}

/// The X.509 version (1, 2 or 3) of the first certificate of a PEM text; `None` when it does not
/// parse (the TLS set-up then says what is wrong with it).
fn certificate_version(pem: &[u8]) -> Option<u32> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    let certificate = block.parse_x509().ok()?;
    Some(certificate.version().0 + 1)
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`, a bare IPv6 address, or any of them after
/// `https://` → `host:port` with IPv6 in brackets.
pub fn normalize_endpoint(endpoint: &str) -> Result<String, String> {
    let trimmed = endpoint.trim();
    let bare = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("tcp://"))
        .unwrap_or(trimmed)
        .trim_end_matches('/');
    if bare.is_empty() {
        return Err("an endpoint is empty".to_owned());
    }
    if let Some(rest) = bare.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("`{endpoint}`: `[` without `]`"))?;
        return match after {
            "" => Ok(format!("[{host}]:{DEFAULT_APID_PORT}")),
            port => {
                let port = port
                    .strip_prefix(':')
                    .and_then(|p| p.parse::<u16>().ok())
                    .ok_or_else(|| format!("`{endpoint}`: bad port"))?;
                Ok(format!("[{host}]:{port}"))
            }
        };
    }
    if bare.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok(format!("[{bare}]:{DEFAULT_APID_PORT}"));
    }
    match bare.rsplit_once(':') {
        Some((host, port)) => {
            let port = port
                .parse::<u16>()
                .map_err(|_| format!("`{endpoint}`: bad port `{port}`"))?;
            if host.is_empty() {
                return Err(format!("`{endpoint}`: no host"));
            }
            Ok(format!("{host}:{port}"))
        }
        None => Ok(format!("{bare}:{DEFAULT_APID_PORT}")),
    }
}

/// Talos writes Ed25519 keys as `ED25519 PRIVATE KEY` around a PKCS#8 body; PEM parsers want
/// `PRIVATE KEY` for PKCS#8.
pub fn relabel_ed25519_key(pem: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(pem);
    text.replace(
        "-----BEGIN ED25519 PRIVATE KEY-----",
        "-----BEGIN PRIVATE KEY-----",
    )
    .replace(
        "-----END ED25519 PRIVATE KEY-----",
        "-----END PRIVATE KEY-----",
    )
    .into_bytes()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn config(endpoints: &str) -> String {
        format!(
            "context: lab\ncontexts:\n  lab:\n    endpoints: {endpoints}\n    nodes: [10.0.0.5]\n    ca: {}\n    crt: {}\n    key: {}\n  other:\n    endpoints: [10.9.9.9:1234]\n    ca: {}\n    crt: {}\n    key: {}\n",
            b64("-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n"),
            b64("-----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n"),
            b64("-----BEGIN ED25519 PRIVATE KEY-----\nCCC\n-----END ED25519 PRIVATE KEY-----\n"),
            b64("-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n"),
            b64("-----BEGIN CERTIFICATE-----\nB\n-----END CERTIFICATE-----\n"),
            b64("-----BEGIN PRIVATE KEY-----\nC\n-----END PRIVATE KEY-----\n"),
        )
    }

    #[test]
    fn parses_the_current_context_and_fills_the_default_port() {
        let ctx = parse(
            &config("[10.0.0.2, \"127.0.0.1:4000\"]"),
            Path::new("tc"),
            None,
        )
        .unwrap();
        assert_eq!(ctx.name, "lab");
        assert_eq!(ctx.endpoints, vec!["10.0.0.2:50000", "127.0.0.1:4000"]);
        assert_eq!(ctx.nodes, vec!["10.0.0.5"]);
        let key = String::from_utf8(ctx.key_pem).unwrap();
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{key}");
        assert!(key.contains("-----END PRIVATE KEY-----"));
    }

    #[test]
    fn context_flag_picks_another_context() {
        let ctx = parse(&config("[10.0.0.2]"), Path::new("tc"), Some("other")).unwrap();
        assert_eq!(ctx.endpoints, vec!["10.9.9.9:1234"]);
        assert!(ctx.nodes.is_empty());
    }

    #[test]
    fn unknown_context_names_the_file_and_the_known_ones() {
        let err = parse(&config("[a]"), Path::new("/x/tc"), Some("nope")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/x/tc") && text.contains("nope") && text.contains("lab, other"));
    }

    /// An Ed25519 certificate made by `openssl x509 -req` without extensions: X.509 v1.
    const V1_CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----
MIHSMIGFAhQk9n4D9FWwnQ8Vk7UbAdK5V9MJRzAFBgMrZXAwDDEKMAgGA1UEAwwB
eDAeFw0yNjEyMDExMzAzMTRaFw0yNjEyMzExMzAzMTRaMAwxCjAIBgNVBAMMAXgw
KjAFBgMrZXADIQCZIsrHysg+W/Y1ffyXP+D6S+wru8H0ZqO+yiUmbB+nazAFBgMr
ZXADQQAWKChYsdyBP1xc1Q+3SppDtVuytXh7Ae8cLp/GvBuuvUBtde2f3rHP0WXG
sCK9aSDPbZGqgiule2nEjFUTMZsK
-----END CERTIFICATE-----
";

    #[test]
    fn an_x509_v1_client_certificate_is_refused_in_words() {
        let text = format!(
            "context: bar\ncontexts:\n  bar:\n    endpoints: [h]\n    ca: {}\n    crt: {}\n    key: {}\n",
            b64(V1_CERTIFICATE),
            b64(V1_CERTIFICATE),
            b64("-----BEGIN PRIVATE KEY-----\nC\n-----END PRIVATE KEY-----\n"),
        );
        let err = parse(&text, Path::new("tc"), None).unwrap_err().to_string();
        assert!(
            err.contains(
                "client certificate in context `bar` is X.509 v1; Talos and rustls need v3"
            ),
            "{err}"
        );
        assert_eq!(err.matches("X.509").count(), 1, "{err}");
    }

    #[test]
    fn bad_base64_names_the_field() {
        let text = "context: c\ncontexts:\n  c:\n    endpoints: [h]\n    ca: '!!!'\n    crt: x\n    key: y\n";
        let err = parse(text, Path::new("tc"), None).unwrap_err().to_string();
        assert!(
            err.contains("contexts.c.ca") && err.contains("base64"),
            "{err}"
        );
    }

    #[test]
    fn missing_key_names_the_field() {
        let text = format!(
            "context: c\ncontexts:\n  c:\n    endpoints: [h]\n    ca: {}\n    crt: {}\n",
            b64("-----BEGIN CERTIFICATE-----\n"),
            b64("-----BEGIN CERTIFICATE-----\n")
        );
        let err = parse(&text, Path::new("tc"), None).unwrap_err().to_string();
        assert!(
            err.contains("contexts.c.key") && err.contains("missing"),
            "{err}"
        );
    }

    #[test]
    fn not_yaml_is_an_error_not_a_panic() {
        assert!(parse(":\n  - [", Path::new("tc"), None).is_err());
        assert!(parse("", Path::new("tc"), None).is_err());
    }

    #[test]
    fn endpoints_normalise() {
        assert_eq!(normalize_endpoint("10.0.0.1").unwrap(), "10.0.0.1:50000");
        assert_eq!(normalize_endpoint("node.lan:7").unwrap(), "node.lan:7");
        assert_eq!(normalize_endpoint("https://h:9/").unwrap(), "h:9");
        assert_eq!(normalize_endpoint("fd00::1").unwrap(), "[fd00::1]:50000");
        assert_eq!(normalize_endpoint("[fd00::1]:9").unwrap(), "[fd00::1]:9");
        assert!(normalize_endpoint("h:notaport").is_err());
        assert!(normalize_endpoint("").is_err());
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(text in "\\PC{0,300}") {
            let _ = parse(&text, Path::new("tc"), None);
            let _ = normalize_endpoint(&text);
        }

        #[test]
        fn mutated_configs_never_panic(at in 0usize..4000, byte in 0u8..128) {
            let mut bytes = config("[10.0.0.2]").into_bytes();
            let i = at % bytes.len();
            bytes[i] = byte;
            let _ = parse(&String::from_utf8_lossy(&bytes), Path::new("tc"), None);
        }
    }

    #[test]
    fn lookup_order() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let all = |_: &Path| true;
        let none = |_: &Path| false;
        assert_eq!(
            locate(Some(Path::new("/f")), &env(&[("TALOSCONFIG", "/e")]), &none).unwrap(),
            PathBuf::from("/f")
        );
        assert_eq!(
            locate(None, &env(&[("TALOSCONFIG", "/e"), ("HOME", "/h")]), &all).unwrap(),
            PathBuf::from("/e")
        );
        assert_eq!(
            locate(None, &env(&[("TALOS_HOME", "/t"), ("HOME", "/h")]), &all).unwrap(),
            PathBuf::from("/t/config")
        );
        assert_eq!(
            locate(None, &env(&[("HOME", "/h")]), &all).unwrap(),
            PathBuf::from("/h/.talos/config")
        );
        assert_eq!(
            locate(None, &env(&[("HOME", "/h")]), &|p: &Path| p
                .starts_with("/var/run"))
            .unwrap(),
            PathBuf::from(IN_CLUSTER_PATH)
        );
        let err = locate(None, &env(&[("HOME", "/h")]), &none).unwrap_err();
        assert!(err.to_string().contains("--talosconfig"));
    }
}
