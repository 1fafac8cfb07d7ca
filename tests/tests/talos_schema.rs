//! Talos JSON-schema validation: every machine-config patch in `talos-patches/`, every
//! configuration the engine produces from the test configurations, and every schematic fragment.
//! Each YAML document is validated on its own, against the schema version its file names.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use nodectl::talos::kernel_args;
use nodectl::talos::machine_config::{self, MachineConfig, Patch};
use nodectl_e2e::harness;
use serde_json::{Value, json};

fn schema(version: &str) -> Option<Value> {
    let path = harness::shared(&format!(
        "reference/talos/schemas/config-v{version}.schema.json"
    ))?;
    Some(serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap())
}

/// Errors of one document against a Talos config schema; for the v1alpha1 document also the
/// precise errors against `v1alpha1.Config` (the top-level `oneOf` only says "none matched").
fn document_errors(schema: &Value, doc: &Value) -> Vec<String> {
    let validator = jsonschema::draft202012::new(schema).unwrap();
    if validator.is_valid(doc) {
        return Vec::new();
    }
    let mut focused = schema.clone();
    if machine_config::is_v1alpha1(doc) {
        let object = focused.as_object_mut().unwrap();
        object.remove("oneOf");
        object.insert("$ref".to_owned(), json!("#/$defs/v1alpha1.Config"));
    }
    let focused = jsonschema::draft202012::new(&focused).unwrap();
    let mut errors: Vec<String> = focused
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    if errors.is_empty() {
        errors.push("matches no document type of the schema".to_owned());
    }
    errors
}

fn assert_valid(label: &str, version: &str, documents: &[Value]) {
    let Some(schema) = schema(version) else {
        return;
    };
    let mut failures = Vec::new();
    for (index, doc) in documents.iter().enumerate() {
        for error in document_errors(&schema, doc) {
            failures.push(format!("{label} document {}: {error}", index + 1));
        }
    }
    assert!(
        failures.is_empty(),
        "against the Talos v{version} schema:\n{}",
        failures.join("\n")
    );
}

fn patches_dir() -> PathBuf {
    harness::workspace_root().join("talos-patches")
}

fn yaml_files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    files.sort();
    files
}

/// `# Talos schema: v1.11[, v1.12]` in a patch's header comment.
fn target_versions(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# Talos schema:"))
        .flat_map(|rest| rest.split(','))
        .map(|v| v.trim().trim_start_matches('v').to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

fn config_fixture(name: &str) -> MachineConfig {
    let path = harness::fixture(&format!("talos-configs/{name}"));
    MachineConfig::parse(&std::fs::read_to_string(&path).unwrap(), name).unwrap()
}

#[test]
fn the_test_configurations_are_valid() {
    assert_valid(
        "legacy-grub-v1.11.yaml",
        "1.11",
        &config_fixture("legacy-grub-v1.11.yaml").documents,
    );
    assert_valid(
        "uki-multidoc.yaml",
        "1.13",
        &config_fixture("uki-multidoc.yaml").documents,
    );
}

#[test]
fn machine_config_patches_and_their_results_validate() {
    let files = yaml_files(&patches_dir(), ".legacy-grub.yaml");
    assert!(files.len() >= 5, "patches missing: {files:?}");
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&file).unwrap();
        let versions = target_versions(&text);
        assert!(!versions.is_empty(), "{name}: no `# Talos schema:` line");
        let patch = Patch::parse(&text, &name).unwrap();
        let Patch::StrategicMerge(documents) = &patch else {
            panic!("{name}: expected a strategic-merge patch");
        };
        // `$patch` directives are patch syntax, not configuration: validate what is left.
        let plain: Vec<Value> = documents
            .iter()
            .map(machine_config::strip_directives)
            .collect();
        let mut result = config_fixture("legacy-grub-v1.11.yaml");
        result.apply(&patch).unwrap();
        let reparsed = MachineConfig::parse(&result.to_yaml().unwrap(), &name).unwrap();
        for version in &versions {
            assert_valid(&name, version, &plain);
            assert_valid(
                &format!("legacy-grub-v1.11.yaml + {name}"),
                version,
                &reparsed.documents,
            );
        }
    }
}

#[test]
fn engine_outputs_validate() {
    let arg = kernel_args::cwsr_disabled();
    // What `nodectl cwsr disable|enable` sends on legacy GRUB.
    let mut legacy = config_fixture("legacy-grub-v1.11.yaml");
    assert!(legacy.set_extra_kernel_arg(&arg, true).unwrap());
    let disabled = MachineConfig::parse(&legacy.to_yaml().unwrap(), "disabled").unwrap();
    assert_valid("legacy + cwsr disable", "1.11", &disabled.documents);
    assert!(legacy.set_extra_kernel_arg(&arg, false).unwrap());
    let enabled = MachineConfig::parse(&legacy.to_yaml().unwrap(), "enabled").unwrap();
    assert_valid("legacy + cwsr enable", "1.11", &enabled.documents);
    let mut only_arg = config_fixture("legacy-grub-v1.11.yaml");
    only_arg
        .apply(
            &Patch::parse(
                "machine:\n  install:\n    extraKernelArgs:\n      $patch: delete\n",
                "p",
            )
            .unwrap(),
        )
        .unwrap();
    only_arg.set_extra_kernel_arg(&arg, true).unwrap();
    only_arg.set_extra_kernel_arg(&arg, false).unwrap();
    assert_valid("legacy, list emptied", "1.11", &only_arg.documents);

    // A multi-document 1.12+ configuration, re-serialised and patched.
    let mut uki = config_fixture("uki-multidoc.yaml");
    let round_trip = MachineConfig::parse(&uki.to_yaml().unwrap(), "uki").unwrap();
    assert_valid("uki round trip", "1.13", &round_trip.documents);
    uki.apply(
        &Patch::parse(
            "machine:\n  nodeLabels:\n    gpu: strix-halo\n---\napiVersion: v1alpha1\nkind: HostnameConfig\n$patch: delete\n---\napiVersion: v1alpha1\nkind: KmsgLogConfig\nname: remote\nurl: tcp://10.0.0.1:5000\n",
            "p",
        )
        .unwrap(),
    )
    .unwrap();
    let patched = MachineConfig::parse(&uki.to_yaml().unwrap(), "uki patched").unwrap();
    assert_eq!(patched.documents.len(), 2);
    assert_valid("uki patched", "1.13", &patched.documents);
}

/// The schematic fields the Image Factory accepts (it rejects unknown ones).
fn schematic_schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "overlay": {"type": "object"},
            "customization": {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "extraKernelArgs": {"type": "array", "items": {"type": "string", "minLength": 1}},
                    "meta": {"type": "array"},
                    "systemExtensions": {
                        "type": "object",
                        "additionalProperties": false,
                        "properties": {
                            "officialExtensions": {"type": "array", "items": {"type": "string"}}
                        }
                    },
                    "secureboot": {"type": "object"},
                    "bootloader": {"enum": ["auto", "dual-boot", "grub", "sd-boot"]}
                }
            }
        }
    })
}

#[test]
fn schematic_fragments_have_only_factory_fields() {
    let validator = jsonschema::draft202012::new(&schematic_schema()).unwrap();
    let files = yaml_files(&patches_dir(), ".schematic.yaml");
    assert!(files.len() >= 5, "schematic fragments missing: {files:?}");
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let documents =
            machine_config::parse_documents(&std::fs::read_to_string(&file).unwrap(), &name)
                .unwrap();
        assert_eq!(documents.len(), 1, "{name}: one schematic per file");
        let errors: Vec<String> = validator
            .iter_errors(&documents[0])
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{name}: {errors:?}");
        let extensions = documents[0]
            .pointer("/customization/systemExtensions/officialExtensions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        assert!(
            extensions.contains(&json!("siderolabs/amdgpu")),
            "{name}: a schematic for these nodes keeps the amdgpu extension"
        );
    }
}

#[test]
fn the_schema_check_catches_a_bad_document() {
    let Some(schema) = schema("1.13") else {
        return;
    };
    // extraKernelArgs is gone from the 1.13 schema; a typo'd key is never valid.
    let errors = document_errors(
        &schema,
        &json!({"machine": {"install": {"extraKernelArgs": ["a=b"]}}}),
    );
    assert!(!errors.is_empty());
    let errors = document_errors(&schema, &json!({"machine": {"instal": {}}}));
    assert!(errors.iter().any(|e| e.contains("instal")), "{errors:?}");
}
