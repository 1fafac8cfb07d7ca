//! Fake Image Factory: content-addressed schematics over HTTP on loopback (`POST /schematics`, `GET /schematics/{id}`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;

/// An Image Factory schematic: the fields the real factory accepts, and no others.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schematic {
    #[serde(default)]
    pub overlay: Overlay,
    #[serde(default)]
    pub customization: Customization,
}

/// `overlay` (single-board computers only).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overlay {
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub options: Option<serde_json::Value>,
}

/// `customization`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Customization {
    #[serde(default)]
    pub extra_kernel_args: Vec<String>,
    #[serde(default)]
    pub meta: Vec<MetaValue>,
    #[serde(default)]
    pub system_extensions: SystemExtensions,
    #[serde(default)]
    pub secureboot: SecureBoot,
    #[serde(default)]
    pub bootloader: String,
}

/// One `customization.meta` entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaValue {
    pub key: u8,
    #[serde(default)]
    pub value: String,
}

/// `customization.systemExtensions`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SystemExtensions {
    #[serde(default)]
    pub official_extensions: Vec<String>,
}

/// `customization.secureboot`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecureBoot {
    #[serde(default)]
    pub include_well_known_certificates: bool,
}

/// Why a schematic body was refused.
#[derive(Debug, thiserror::Error)]
#[error("failed to unmarshal schematic: {0}")]
pub struct SchematicError(String);

impl Schematic {
    /// Parses a YAML or JSON body; unknown fields are an error, as on the real factory.
    pub fn parse(body: &[u8]) -> Result<Schematic, SchematicError> {
        let text = std::str::from_utf8(body).map_err(|e| SchematicError(e.to_string()))?;
        if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| SchematicError(e.to_string()))
        } else if text.trim().is_empty() {
            Ok(Schematic::default())
        } else {
            serde_saphyr::from_str(text).map_err(|e| SchematicError(e.to_string()))
        }
    }

    /// The canonical YAML (Go yaml.v3 layout: 4-space indent, empty fields left out, `customization` always).
    pub fn canonical_yaml(&self) -> String {
        let mut out = String::new();
        let o = &self.overlay;
        if !o.image.is_empty() || !o.name.is_empty() || o.options.is_some() {
            out.push_str("overlay:\n");
            if !o.image.is_empty() {
                let _ = writeln!(out, "    image: {}", scalar(&o.image));
            }
            if !o.name.is_empty() {
                let _ = writeln!(out, "    name: {}", scalar(&o.name));
            }
            if let Some(options) = &o.options {
                let _ = writeln!(out, "    options: {options}");
            }
        }
        let c = &self.customization;
        let mut body = String::new();
        if !c.extra_kernel_args.is_empty() {
            body.push_str("    extraKernelArgs:\n");
            for arg in &c.extra_kernel_args {
                let _ = writeln!(body, "        - {}", scalar(arg));
            }
        }
        if !c.meta.is_empty() {
            body.push_str("    meta:\n");
            for meta in &c.meta {
                let _ = writeln!(body, "        - key: {}", meta.key);
                let _ = writeln!(body, "          value: {}", scalar(&meta.value));
            }
        }
        if !c.system_extensions.official_extensions.is_empty() {
            body.push_str("    systemExtensions:\n        officialExtensions:\n");
            for extension in &c.system_extensions.official_extensions {
                let _ = writeln!(body, "            - {}", scalar(extension));
            }
        }
        if c.secureboot.include_well_known_certificates {
            body.push_str("    secureboot:\n        includeWellKnownCertificates: true\n");
        }
        if !c.bootloader.is_empty() {
            let _ = writeln!(body, "    bootloader: {}", scalar(&c.bootloader));
        }
        if body.is_empty() {
            out.push_str("customization: {}\n");
        } else {
            out.push_str("customization:\n");
            out.push_str(&body);
        }
        out
    }

    /// The content-addressed id: sha256 hex of the canonical YAML.
    pub fn id(&self) -> String {
        hex::encode(Sha256::digest(self.canonical_yaml().as_bytes()))
    }
}

/// A YAML scalar: plain when that reads back as the same string, else double-quoted.
fn scalar(text: &str) -> String {
    let plain = !text.is_empty()
        && text.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | '=' | ',' | '+' | ':')
        })
        && !text.starts_with(['-', ':', ','])
        && !text.contains(": ")
        && !text.ends_with(':')
        && !matches!(
            text.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "~"
        )
        && text.parse::<f64>().is_err();
    if plain {
        text.to_owned()
    } else {
        serde_json::Value::String(text.to_owned()).to_string()
    }
}

/// One HTTP request the fake factory answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactoryCall {
    pub method: String,
    pub path: String,
    pub content_type: Option<String>,
    pub status: u16,
}

/// The schematics a factory knows and the requests it answered; shared with the fake apid.
#[derive(Debug, Default)]
pub struct FactoryState {
    schematics: Mutex<BTreeMap<String, Schematic>>,
    calls: Mutex<Vec<FactoryCall>>,
}

impl FactoryState {
    /// Stores a schematic and returns its id (the same schematic always gets the same id).
    pub fn register(&self, schematic: Schematic) -> String {
        let id = schematic.id();
        self.schematics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), schematic);
        id
    }

    /// Forgets a schematic, as a factory that never saw the node's schematic would.
    pub fn forget(&self, id: &str) {
        self.schematics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    /// The schematic with this id, if it was ever posted or registered.
    pub fn schematic(&self, id: &str) -> Option<Schematic> {
        self.schematics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    /// Every request answered so far, in order.
    pub fn calls(&self) -> Vec<FactoryCall> {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn record(&self, call: FactoryCall) {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(call);
    }
}

/// A running fake Image Factory on `127.0.0.1:PORT`; stops when dropped.
pub struct FakeFactory {
    pub addr: SocketAddr,
    pub state: Arc<FactoryState>,
    stop: CancellationToken,
}

impl FakeFactory {
    /// Starts the factory on `127.0.0.1:0`.
    pub async fn start(state: Arc<FactoryState>) -> anyhow::Result<FakeFactory> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the fake factory")?;
        let addr = listener.local_addr()?;
        let router = Router::new()
            .route("/schematics", post(post_schematic))
            .route("/schematics/{id}", get(get_schematic))
            .with_state(Arc::clone(&state));
        let stop = crate::serve_until_cancelled(listener, router);
        Ok(FakeFactory { addr, state, stop })
    }

    /// `http://127.0.0.1:PORT`, what `--factory` takes.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:PORT`, the registry host of its installer images.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for FakeFactory {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn plain_text(status: StatusCode, text: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

async fn post_schematic(
    State(state): State<Arc<FactoryState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (status, response) = match Schematic::parse(&body) {
        Ok(schematic) => {
            let canonical = schematic.canonical_yaml();
            let id = state.register(schematic);
            let json = serde_json::json!({ "id": id, "schematic": canonical }).to_string();
            (
                StatusCode::CREATED,
                (
                    StatusCode::CREATED,
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    )],
                    json,
                )
                    .into_response(),
            )
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            plain_text(StatusCode::BAD_REQUEST, e.to_string()),
        ),
    };
    state.record(FactoryCall {
        method: "POST".to_owned(),
        path: "/schematics".to_owned(),
        content_type,
        status: status.as_u16(),
    });
    response
}

async fn get_schematic(State(state): State<Arc<FactoryState>>, Path(id): Path<String>) -> Response {
    let (status, response) = match state.schematic(&id) {
        Some(schematic) => (
            StatusCode::OK,
            (
                StatusCode::OK,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/yaml"),
                )],
                schematic.canonical_yaml(),
            )
                .into_response(),
        ),
        None => (
            StatusCode::NOT_FOUND,
            plain_text(
                StatusCode::NOT_FOUND,
                format!("schematic ID {id:?} not found"),
            ),
        ),
    };
    state.record(FactoryCall {
        method: "GET".to_owned(),
        path: format!("/schematics/{id}"),
        content_type: None,
        status: status.as_u16(),
    });
    response
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn vanilla_schematic_has_the_real_factory_id() {
        let vanilla = Schematic::parse(b"customization: {}\n").unwrap();
        assert_eq!(
            vanilla.id(),
            "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba"
        );
        assert_eq!(Schematic::parse(b"").unwrap().id(), vanilla.id());
    }

    #[test]
    fn yaml_and_json_of_the_same_schematic_share_an_id() {
        let yaml = Schematic::parse(
            b"customization:\n  extraKernelArgs: [amdgpu.cwsr_enable=0]\n  systemExtensions:\n    officialExtensions:\n      - siderolabs/amdgpu\n",
        )
        .unwrap();
        let json = Schematic::parse(
            br#"{"customization":{"systemExtensions":{"officialExtensions":["siderolabs/amdgpu"]},"extraKernelArgs":["amdgpu.cwsr_enable=0"]}}"#,
        )
        .unwrap();
        assert_eq!(yaml, json);
        assert_eq!(yaml.id(), json.id());
        assert_eq!(
            yaml.canonical_yaml(),
            "customization:\n    extraKernelArgs:\n        - amdgpu.cwsr_enable=0\n    systemExtensions:\n        officialExtensions:\n            - siderolabs/amdgpu\n"
        );
        // The canonical form parses back to the same schematic.
        assert_eq!(
            Schematic::parse(yaml.canonical_yaml().as_bytes()).unwrap(),
            yaml
        );
    }

    #[test]
    fn different_kernel_args_give_different_ids() {
        let a = Schematic::parse(b"customization:\n  extraKernelArgs: [a=1]\n").unwrap();
        let b = Schematic::parse(b"customization:\n  extraKernelArgs: [a=2]\n").unwrap();
        assert_ne!(a.id(), b.id());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = Schematic::parse(b"customization:\n  extraKernelArg: [x]\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("failed to unmarshal schematic: ")
        );
        assert!(Schematic::parse(b"{\"customisation\": {}}").is_err());
        assert!(Schematic::parse(b"bogus: 1\n").is_err());
    }

    fn arb_text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z][a-z0-9._=/-]{0,20}",
            any::<String>(),
            Just("true".to_owned()),
            Just("0x10".to_owned()),
            Just("-console".to_owned()),
        ]
    }

    fn arb_schematic() -> impl Strategy<Value = Schematic> {
        (
            proptest::collection::vec(arb_text(), 0..4),
            proptest::collection::vec((any::<u8>(), arb_text()), 0..3),
            proptest::collection::vec(arb_text(), 0..3),
            any::<bool>(),
            prop_oneof![Just(String::new()), arb_text()],
        )
            .prop_map(|(args, meta, extensions, secureboot, bootloader)| {
                let mut s = Schematic::default();
                s.customization.extra_kernel_args = args;
                s.customization.meta = meta
                    .into_iter()
                    .map(|(key, value)| MetaValue { key, value })
                    .collect();
                s.customization.system_extensions.official_extensions = extensions;
                s.customization.secureboot.include_well_known_certificates = secureboot;
                s.customization.bootloader = bootloader;
                s
            })
    }

    proptest! {
        #[test]
        fn parsing_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Schematic::parse(&bytes);
        }

        #[test]
        fn canonical_yaml_reads_back_as_the_same_schematic(schematic in arb_schematic()) {
            let canonical = schematic.canonical_yaml();
            let back = Schematic::parse(canonical.as_bytes()).unwrap();
            prop_assert_eq!(&back, &schematic, "canonical form:\n{}", canonical);
            prop_assert_eq!(back.id(), schematic.id());
        }
    }

    #[test]
    fn scalars_that_would_change_type_are_quoted() {
        assert_eq!(scalar("true"), "\"true\"");
        assert_eq!(scalar("10"), "\"10\"");
        assert_eq!(scalar("{}"), "\"{}\"");
        assert_eq!(scalar("-console"), "\"-console\"");
        assert_eq!(scalar("console=tty0"), "console=tty0");
    }
}
