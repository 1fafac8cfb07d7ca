//! Image Factory: fetch and post schematics, edit a schematic's kernel arguments keeping everything else, name installer images.

use std::time::Duration;

use anyhow::anyhow;
use serde_json::{Map, Value};

use super::kernel_args::{self, KernelArgument};
use crate::exit::Unreachable;

/// The public Image Factory.
pub const DEFAULT_FACTORY_URL: &str = "https://factory.talos.dev";

/// A client for one Image Factory (`https://factory.talos.dev`, or `http://127.0.0.1:PORT`).
#[derive(Debug, Clone)]
pub struct Factory {
    base_url: String,
    http: reqwest::Client,
}

impl Factory {
    pub fn new(url: &str) -> anyhow::Result<Factory> {
        super::tls::install_crypto_provider();
        let base_url = url.trim_end_matches('/').to_owned();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            anyhow::bail!("--factory {url}: expected http://HOST[:PORT] or https://HOST[:PORT]");
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| anyhow!("cannot set up the HTTP client: {e}"))?;
        Ok(Factory { base_url, http })
    }

    pub fn url(&self) -> &str {
        &self.base_url
    }

    /// `host[:port]` of the factory, as installer image references use it.
    pub fn registry_host(&self) -> &str {
        let without_scheme = self
            .base_url
            .split_once("://")
            .map_or(self.base_url.as_str(), |(_, rest)| rest);
        without_scheme.split('/').next().unwrap_or(without_scheme)
    }

    /// `<host[:port]>/metal-installer[-secureboot]/<schematic id>:<talos version>`.
    pub fn installer_image(
        &self,
        schematic_id: &str,
        talos_version: &str,
        secure_boot: bool,
    ) -> String {
        installer_image(
            self.registry_host(),
            schematic_id,
            talos_version,
            secure_boot,
        )
    }

    /// `GET /schematics/<id>`: the schematic as YAML and parsed.
    pub async fn get_schematic(&self, id: &str) -> anyhow::Result<Value> {
        let url = format!("{}/schematics/{id}", self.base_url);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let body = response.text().await.map_err(|e| self.unreachable(&e))?;
        if !status.is_success() {
            return Err(anyhow!(
                "Image Factory GET {url}: {status}: {}{}",
                body.trim(),
                if status.as_u16() == 404 {
                    " (this factory does not know the node's schematic; pass --factory with the factory that built it)"
                } else {
                    ""
                }
            ));
        }
        let schematic: Value = serde_saphyr::from_str(&body)
            .map_err(|e| anyhow!("Image Factory GET {url}: the schematic is not YAML: {e}"))?;
        if !(schematic.is_object() || schematic.is_null()) {
            anyhow::bail!("Image Factory GET {url}: the schematic is not a mapping");
        }
        Ok(if schematic.is_null() {
            Value::Object(Map::new())
        } else {
            schematic
        })
    }

    /// `POST /schematics` (YAML body); returns the new schematic id.
    pub async fn post_schematic(&self, schematic: &Value) -> anyhow::Result<String> {
        let url = format!("{}/schematics", self.base_url);
        let body = super::machine_config::to_yaml_string(schematic)
            .map_err(|e| anyhow!("cannot write the schematic as YAML: {e}"))?;
        let response = self
            .http
            .post(&url)
            .header("Content-Type", "application/yaml")
            .body(body)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| self.unreachable(&e))?;
        if !status.is_success() {
            return Err(anyhow!(
                "Image Factory POST {url} refused the schematic: {status}: {}",
                text.trim()
            ));
        }
        parse_schematic_id(&text).map_err(|e| anyhow!("Image Factory POST {url}: {e}"))
    }

    fn unreachable(&self, error: &reqwest::Error) -> anyhow::Error {
        Unreachable(format!(
            "Image Factory at {} unreachable: {}; check --factory",
            self.base_url,
            crate::exit::error_chain(error)
        ))
        .into()
    }
}

/// `<registry host>/metal-installer/<schematic id>:<talos version>`; a node booted with secure
/// boot needs the signed `metal-installer-secureboot` image instead.
pub fn installer_image(
    registry_host: &str,
    schematic_id: &str,
    talos_version: &str,
    secure_boot: bool,
) -> String {
    let installer = if secure_boot {
        "metal-installer-secureboot"
    } else {
        "metal-installer"
    };
    format!("{registry_host}/{installer}/{schematic_id}:{talos_version}")
}

/// The `id` of a POST reply (`{"id": …}`, other keys ignored).
pub fn parse_schematic_id(body: &str) -> Result<String, String> {
    let reply: Value =
        serde_json::from_str(body).map_err(|e| format!("reply is not JSON ({e}): {body}"))?;
    reply
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| format!("reply has no `id`: {body}"))
}

/// `customization.extraKernelArgs` of a schematic.
pub fn schematic_kernel_args(schematic: &Value) -> Vec<String> {
    schematic
        .pointer("/customization/extraKernelArgs")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Adds or removes `arg` in `customization.extraKernelArgs`, keeping every extension and other
/// field; an emptied list is removed. Returns whether the schematic changed.
pub fn set_schematic_kernel_arg(
    schematic: &mut Value,
    arg: &KernelArgument,
    present: bool,
) -> anyhow::Result<bool> {
    if schematic.is_null() {
        *schematic = Value::Object(Map::new());
    }
    let root = schematic
        .as_object_mut()
        .ok_or_else(|| anyhow!("the schematic is not a mapping"))?;
    let customization = root
        .entry("customization")
        .or_insert_with(|| Value::Object(Map::new()));
    if customization.is_null() {
        *customization = Value::Object(Map::new());
    }
    let customization = customization
        .as_object_mut()
        .ok_or_else(|| anyhow!("schematic `customization` is not a mapping"))?;
    let mut args: Vec<String> = match customization.get("extraKernelArgs") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .collect(),
        Some(_) => anyhow::bail!("schematic `customization.extraKernelArgs` is not a list"),
    };
    let had_key = customization.contains_key("extraKernelArgs");
    if !kernel_args::edit(&mut args, arg, present) {
        return Ok(false);
    }
    if args.is_empty() {
        customization.remove("extraKernelArgs");
        return Ok(had_key);
    }
    customization.insert(
        "extraKernelArgs".to_owned(),
        Value::Array(args.into_iter().map(Value::String).collect()),
    );
    Ok(true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    const SCHEMATIC: &str = "customization:\n  extraKernelArgs:\n    - amd_iommu=off\n  systemExtensions:\n    officialExtensions:\n      - siderolabs/amdgpu\n      - siderolabs/amd-ucode\n";

    #[test]
    fn adding_keeps_extensions_and_is_idempotent() {
        let mut schematic: Value = serde_saphyr::from_str(SCHEMATIC).unwrap();
        let arg = kernel_args::cwsr_disabled();
        assert!(set_schematic_kernel_arg(&mut schematic, &arg, true).unwrap());
        assert!(!set_schematic_kernel_arg(&mut schematic, &arg, true).unwrap());
        assert_eq!(
            schematic,
            json!({"customization": {
                "extraKernelArgs": ["amd_iommu=off", "amdgpu.cwsr_enable=0"],
                "systemExtensions": {"officialExtensions": ["siderolabs/amdgpu", "siderolabs/amd-ucode"]}
            }})
        );
        assert!(set_schematic_kernel_arg(&mut schematic, &arg, false).unwrap());
        assert_eq!(schematic_kernel_args(&schematic), vec!["amd_iommu=off"]);
        assert_eq!(
            schematic["customization"]["systemExtensions"]["officialExtensions"],
            json!(["siderolabs/amdgpu", "siderolabs/amd-ucode"])
        );
    }

    #[test]
    fn an_empty_schematic_gets_a_customization() {
        let mut schematic = Value::Null;
        assert!(
            set_schematic_kernel_arg(&mut schematic, &kernel_args::cwsr_disabled(), true).unwrap()
        );
        assert_eq!(
            schematic,
            json!({"customization": {"extraKernelArgs": ["amdgpu.cwsr_enable=0"]}})
        );
        assert!(
            set_schematic_kernel_arg(&mut schematic, &kernel_args::cwsr_disabled(), false).unwrap()
        );
        assert_eq!(schematic, json!({"customization": {}}));
    }

    #[test]
    fn bad_shapes_are_errors() {
        let mut s = json!({"customization": {"extraKernelArgs": "x"}});
        assert!(set_schematic_kernel_arg(&mut s, &kernel_args::cwsr_disabled(), true).is_err());
        let mut s = json!([1]);
        assert!(set_schematic_kernel_arg(&mut s, &kernel_args::cwsr_disabled(), true).is_err());
    }

    #[test]
    fn post_replies_parse() {
        assert_eq!(parse_schematic_id(r#"{"id":"abc"}"#).unwrap(), "abc");
        assert_eq!(
            parse_schematic_id(r#"{"id":"abc","schematic":"customization: {}\n"}"#).unwrap(),
            "abc"
        );
        assert!(parse_schematic_id("{}").is_err());
        assert!(parse_schematic_id("Bad Request").is_err());
    }

    proptest::proptest! {
        #[test]
        fn replies_and_schematics_never_panic(text in "\\PC{0,300}") {
            let _ = parse_schematic_id(&text);
            if let Ok(mut value) = serde_saphyr::from_str::<Value>(&text) {
                let _ = set_schematic_kernel_arg(&mut value, &kernel_args::cwsr_disabled(), true);
            }
        }
    }

    #[test]
    fn installer_images() {
        let f = Factory::new("http://127.0.0.1:8080/").unwrap();
        assert_eq!(f.registry_host(), "127.0.0.1:8080");
        assert_eq!(
            f.installer_image("abc", "v1.12.1", false),
            "127.0.0.1:8080/metal-installer/abc:v1.12.1"
        );
        let f = Factory::new(DEFAULT_FACTORY_URL).unwrap();
        assert_eq!(
            f.installer_image("i", "v1", false),
            "factory.talos.dev/metal-installer/i:v1"
        );
        assert_eq!(
            f.installer_image("i", "v1", true),
            "factory.talos.dev/metal-installer-secureboot/i:v1"
        );
        assert!(Factory::new("factory.talos.dev").is_err());
    }
}
