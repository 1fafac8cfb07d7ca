//! The Talos part of a bundle: version, boot path, schematic id, extensions and the machine configuration with its secrets replaced, when a talosconfig reaches the node.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::SectionOutcome;
use crate::context::Context;
use crate::embedded::{BundleRedactor, secret_name};
use crate::talos::machine_config;
use crate::talos::plan::NodeFacts;
use crate::talos::talosconfig::TalosConfigError;

/// How long the Talos node may take to answer all of it.
const TALOS_DEADLINE: Duration = Duration::from_secs(30);

/// What a secret in a machine configuration becomes, as `talosctl` writes it.
const MACHINE_CONFIG_PLACEHOLDER: &str = "<REDACTED>";

/// The section and its files (`talos/facts.json`, `talos/machine-config.yaml`).
pub async fn section(
    ctx: &Context,
    redactor: &mut BundleRedactor,
) -> (SectionOutcome, Vec<(String, Vec<u8>)>) {
    let started = Instant::now();
    let read = tokio::time::timeout(TALOS_DEADLINE, async {
        let client = ctx.talos().await?;
        NodeFacts::read(&client, None).await
    })
    .await;
    let facts = match read {
        Err(_) => {
            return (
                SectionOutcome::new(
                    "talos",
                    "timed_out",
                    Some(format!("no answer within {} s", TALOS_DEADLINE.as_secs())),
                    started,
                    Vec::new(),
                ),
                Vec::new(),
            );
        }
        Ok(Err(e))
            if e.chain()
                .any(|c| matches!(c.downcast_ref(), Some(TalosConfigError::NotFound { .. }))) =>
        {
            return (
                SectionOutcome::new(
                    "talos",
                    "skipped",
                    Some("no talosconfig (pass --talosconfig FILE or set TALOSCONFIG)".to_owned()),
                    started,
                    Vec::new(),
                ),
                Vec::new(),
            );
        }
        Ok(Err(e)) => {
            return (
                SectionOutcome::new(
                    "talos",
                    "error",
                    Some(format!("{e:#}")),
                    started,
                    Vec::new(),
                ),
                Vec::new(),
            );
        }
        Ok(Ok(facts)) => facts,
    };
    let mut files = Vec::new();
    let mut summary = serde_json::json!({
        "node": facts.node,
        "talos_version": facts.talos_version,
        "boot_path": facts.boot_path(),
        "secure_boot": facts.secure_boot,
        "schematic_id": facts.schematic_id,
        "extensions": facts.extensions.iter().map(|e| format!("{} {}", e.name, e.version)).collect::<Vec<_>>(),
        "cmdline": facts.cmdline,
    });
    redactor.json(&mut summary);
    files.push(("talos/facts.json".to_owned(), pretty(&summary)));
    let mut documents: Vec<Value> = facts.config.documents().to_vec();
    for document in &mut documents {
        let replaced = redact_machine_config(document);
        redactor.count_replaced("machine-config-secret", replaced);
        redactor.json(document);
    }
    let mut reason = None;
    match machine_config::write_documents(&documents) {
        Ok(yaml) => files.push(("talos/machine-config.yaml".to_owned(), yaml.into_bytes())),
        Err(e) => {
            reason = Some(format!(
                "the machine configuration could not be written: {e}"
            ))
        }
    }
    let names = files.iter().map(|(name, _)| name.clone()).collect();
    (
        SectionOutcome::new(
            "talos",
            if reason.is_some() { "error" } else { "ok" },
            reason,
            started,
            names,
        ),
        files,
    )
}

/// Every value under a key that names a secret (`token`, `key`, `secret`, a password, an
/// `…EncryptionSecret`) replaced; certificates stay (they are public), keys of them do not.
/// Returns how many values were replaced (an empty one is no secret and stays).
pub fn redact_machine_config(value: &mut Value) -> u64 {
    match value {
        Value::Object(map) => {
            let mut replaced = 0;
            for (key, value) in map.iter_mut() {
                let scalar = !matches!(value, Value::Object(_) | Value::Array(_) | Value::Null);
                let empty = value.as_str().is_some_and(str::is_empty);
                if secret_name(key).is_some() && scalar && !empty {
                    *value = Value::String(MACHINE_CONFIG_PLACEHOLDER.to_owned());
                    replaced += 1;
                } else {
                    replaced += redact_machine_config(value);
                }
            }
            replaced
        }
        Value::Array(items) => items.iter_mut().map(redact_machine_config).sum(),
        _ => 0,
    }
}

fn pretty(value: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(value).unwrap_or_default();
    out.push(b'\n');
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn machine_config_secrets_are_replaced_and_the_rest_kept() {
        let mut doc = serde_json::json!({
            "machine": {
                "token": "abc.def",
                "ca": {"crt": "LS0tCRT", "key": "LS0tKEY"},
                "install": {"extraKernelArgs": ["amdgpu.cwsr_enable=0"]},
            },
            "cluster": {
                "secret": "s3cret",
                "aescbcEncryptionSecret": "aes",
                "token": "t.t",
                "serviceAccount": {"key": "sa"},
            }
        });
        assert_eq!(redact_machine_config(&mut doc), 6);
        let text = doc.to_string();
        for secret in ["abc.def", "LS0tKEY", "s3cret", "\"aes\"", "t.t", "\"sa\""] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(
            text.contains("LS0tCRT") && text.contains("amdgpu.cwsr_enable=0"),
            "{text}"
        );
    }
}
