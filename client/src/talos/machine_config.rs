//! The machine-config engine: multi-document configs, strategic-merge and JSON6902 patches, kernel-argument edits, diffs.
//!
//! Semantics follow Talos's `configpatcher` (see the Talos reference, section 2): documents are
//! matched by `apiVersion/kind[/name]` (the v1alpha1 document by having neither), maps merge,
//! lists append, `$patch: delete` removes a key, a list item (matched by its first other field)
//! or a whole non-v1alpha1 document; JSON6902 applies only to single-document configs. Talos's
//! per-field special mergers (network interfaces by name, VLANs by id) are not reproduced: those
//! lists append here.

use serde_json::{Map, Value};

use super::kernel_args::{self, KernelArgument};

/// Talos's own words when a JSON6902 patch meets a multi-document config.
pub const JSON6902_MULTIDOC_ERROR: &str =
    "JSON6902 patches are not supported for multi-document machine configuration";

/// Lists that Talos replaces instead of appending (`merge:"replace"` in its Go types).
const REPLACED_PATHS: &[&[&str]] = &[
    &["cluster", "network", "podSubnets"],
    &["cluster", "network", "serviceSubnets"],
    &["cluster", "apiServer", "auditPolicy"],
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EngineError {
    #[error("{source_name}: not YAML: {reason}")]
    Yaml { source_name: String, reason: String },
    #[error("{source_name}: document {index} is not a mapping")]
    NotAMapping { source_name: String, index: usize },
    #[error("{0}")]
    Json6902MultiDocument(&'static str),
    #[error("JSON6902 patch failed: {0}")]
    Json6902(String),
    #[error(
        "{source_name}: neither a strategic-merge patch (YAML mappings) nor a JSON6902 patch (a list of operations): {reason}"
    )]
    UnknownPatchFormat { source_name: String, reason: String },
    #[error("patch touches document `{0}` twice")]
    DocumentTwice(String),
    #[error("the v1alpha1 document cannot be deleted")]
    DeleteV1alpha1,
    #[error("at `{path}`: `$patch: {directive}` is not supported (only `delete`)")]
    UnknownDirective { path: String, directive: String },
    #[error("at `{path}`: `$patch: delete` on a list item needs another field to select the item")]
    DeleteWithoutSelector { path: String },
    #[error("the configuration has no v1alpha1 document")]
    NoV1alpha1,
    #[error("`{path}` is not {expected}")]
    WrongType {
        path: String,
        expected: &'static str,
    },
    #[error("cannot write YAML: {0}")]
    Serialize(String),
}

/// A multi-document machine configuration, one JSON value per YAML document, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineConfig {
    pub documents: Vec<Value>,
}

/// A parsed patch file.
#[derive(Debug, Clone, PartialEq)]
pub enum Patch {
    /// One mapping per YAML document.
    StrategicMerge(Vec<Value>),
    Json6902(json_patch::Patch),
}

/// Parses multi-document YAML into values, dropping empty documents.
pub fn parse_documents(text: &str, source_name: &str) -> Result<Vec<Value>, EngineError> {
    let documents: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|e| EngineError::Yaml {
            source_name: source_name.to_owned(),
            reason: e.to_string(),
        })?;
    Ok(documents.into_iter().filter(|d| !d.is_null()).collect())
}

/// Writes values as multi-document YAML (`---` between documents).
pub fn write_documents(documents: &[Value]) -> Result<String, EngineError> {
    let mut out = String::new();
    for (i, doc) in documents.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        let text = to_yaml_string(doc)?;
        out.push_str(&text);
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

/// One value as YAML: block style, long single-line strings (certificates, tokens) kept on one
/// line rather than folded, multi-line strings as literal blocks.
pub fn to_yaml_string(value: &Value) -> Result<String, EngineError> {
    let mut options = serde_saphyr::SerializerOptions::default();
    options.folded_wrap_chars = 1 << 20;
    serde_saphyr::to_string_with_options(value, options)
        .map_err(|e| EngineError::Serialize(e.to_string()))
}

impl MachineConfig {
    pub fn parse(text: &str, source_name: &str) -> Result<MachineConfig, EngineError> {
        let documents = parse_documents(text, source_name)?;
        for (index, doc) in documents.iter().enumerate() {
            if !doc.is_object() {
                return Err(EngineError::NotAMapping {
                    source_name: source_name.to_owned(),
                    index: index + 1,
                });
            }
        }
        Ok(MachineConfig { documents })
    }

    pub fn to_yaml(&self) -> Result<String, EngineError> {
        write_documents(&self.documents)
    }

    /// The documents, in order.
    pub fn documents(&self) -> &[Value] {
        &self.documents
    }

    pub fn v1alpha1(&self) -> Option<&Value> {
        self.documents.iter().find(|d| is_v1alpha1(d))
    }

    fn v1alpha1_mut(&mut self) -> Option<&mut Value> {
        self.documents.iter_mut().find(|d| is_v1alpha1(d))
    }

    /// `machine.install.grubUseUKICmdline` of the v1alpha1 document, when set.
    pub fn grub_use_uki_cmdline(&self) -> Option<bool> {
        self.v1alpha1()?
            .pointer("/machine/install/grubUseUKICmdline")?
            .as_bool()
    }

    /// `machine.install.extraKernelArgs` of the v1alpha1 document (empty when absent).
    pub fn extra_kernel_args(&self) -> Vec<String> {
        self.v1alpha1()
            .and_then(|d| d.pointer("/machine/install/extraKernelArgs"))
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Adds (`present`) or removes `arg` in `machine.install.extraKernelArgs`, never leaving a
    /// duplicate; an emptied list is removed. Returns whether the config changed.
    pub fn set_extra_kernel_arg(
        &mut self,
        arg: &KernelArgument,
        present: bool,
    ) -> Result<bool, EngineError> {
        let doc = self.v1alpha1_mut().ok_or(EngineError::NoV1alpha1)?;
        let install = object_at(doc, &["machine", "install"])?;
        let mut args: Vec<String> = match install.get("extraKernelArgs") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => list
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Ok(other.to_string()),
                })
                .collect::<Result<_, EngineError>>()?,
            Some(_) => {
                return Err(EngineError::WrongType {
                    path: "machine.install.extraKernelArgs".to_owned(),
                    expected: "a list",
                });
            }
        };
        let before_present = install.contains_key("extraKernelArgs");
        let changed = kernel_args::edit(&mut args, arg, present);
        if !changed {
            return Ok(false);
        }
        if args.is_empty() {
            install.remove("extraKernelArgs");
            return Ok(before_present);
        }
        install.insert(
            "extraKernelArgs".to_owned(),
            Value::Array(args.into_iter().map(Value::String).collect()),
        );
        Ok(true)
    }

    /// Applies a patch in place.
    pub fn apply(&mut self, patch: &Patch) -> Result<(), EngineError> {
        match patch {
            Patch::StrategicMerge(docs) => self.apply_strategic_merge(docs),
            Patch::Json6902(ops) => {
                if self.documents.len() != 1 {
                    return Err(EngineError::Json6902MultiDocument(JSON6902_MULTIDOC_ERROR));
                }
                let Some(doc) = self.documents.first_mut() else {
                    return Err(EngineError::NoV1alpha1);
                };
                json_patch::patch(doc, ops).map_err(|e| EngineError::Json6902(e.to_string()))
            }
        }
    }

    fn apply_strategic_merge(&mut self, patch_docs: &[Value]) -> Result<(), EngineError> {
        let mut touched: Vec<String> = Vec::new();
        for patch_doc in patch_docs {
            let key = document_key(patch_doc);
            if touched.contains(&key) {
                return Err(EngineError::DocumentTwice(key));
            }
            touched.push(key.clone());
            if is_delete_directive_doc(patch_doc) {
                if is_v1alpha1(patch_doc) {
                    return Err(EngineError::DeleteV1alpha1);
                }
                self.documents.retain(|d| document_key(d) != key);
                continue;
            }
            check_directives(patch_doc, &mut Vec::new())?;
            match self.documents.iter_mut().find(|d| document_key(d) == key) {
                Some(target) => merge(target, patch_doc, &mut Vec::new())?,
                None => self.documents.push(strip_directives(patch_doc)),
            }
        }
        Ok(())
    }
}

impl Patch {
    /// Detects the format like Talos does: YAML mappings → strategic merge; a list of
    /// operations (JSON or YAML) → JSON6902.
    pub fn parse(text: &str, source_name: &str) -> Result<Patch, EngineError> {
        let documents = parse_documents(text, source_name)?;
        if documents.is_empty() {
            return Err(EngineError::UnknownPatchFormat {
                source_name: source_name.to_owned(),
                reason: "the file is empty".to_owned(),
            });
        }
        if documents.iter().all(Value::is_object) {
            return Ok(Patch::StrategicMerge(documents));
        }
        match documents.as_slice() {
            [ops @ Value::Array(_)] => serde_json::from_value::<json_patch::Patch>(ops.clone())
                .map(Patch::Json6902)
                .map_err(|e| EngineError::UnknownPatchFormat {
                    source_name: source_name.to_owned(),
                    reason: format!("a list, but not JSON6902 operations: {e}"),
                }),
            _ => Err(EngineError::UnknownPatchFormat {
                source_name: source_name.to_owned(),
                reason: "documents must all be mappings".to_owned(),
            }),
        }
    }
}

/// The v1alpha1 document has neither `apiVersion` nor `kind`.
pub fn is_v1alpha1(doc: &Value) -> bool {
    doc.get("apiVersion").is_none() && doc.get("kind").is_none()
}

/// `v1alpha1` or `apiVersion/kind[/name]`.
pub fn document_key(doc: &Value) -> String {
    if is_v1alpha1(doc) {
        return "v1alpha1".to_owned();
    }
    let field = |k: &str| doc.get(k).and_then(Value::as_str).unwrap_or("");
    let mut key = format!("{}/{}", field("apiVersion"), field("kind"));
    if let Some(name) = doc.get("name").and_then(Value::as_str) {
        key.push('/');
        key.push_str(name);
    }
    key
}

fn directive(value: &Value) -> Option<&str> {
    value.as_object()?.get("$patch")?.as_str()
}

fn is_delete_directive_doc(doc: &Value) -> bool {
    directive(doc) == Some("delete")
}

/// `{"$patch": "delete"}` and nothing else: delete this key.
fn is_key_delete(value: &Value) -> bool {
    value
        .as_object()
        .is_some_and(|m| m.len() == 1 && directive(value) == Some("delete"))
}

fn check_directives(value: &Value, path: &mut Vec<String>) -> Result<(), EngineError> {
    match value {
        Value::Object(map) => {
            if let Some(d) = map.get("$patch")
                && d.as_str() != Some("delete")
            {
                return Err(EngineError::UnknownDirective {
                    path: path.join("."),
                    directive: d.as_str().map_or_else(|| d.to_string(), str::to_owned),
                });
            }
            for (k, v) in map {
                path.push(k.clone());
                check_directives(v, path)?;
                path.pop();
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                path.push(i.to_string());
                check_directives(v, path)?;
                path.pop();
            }
        }
        _ => {}
    }
    Ok(())
}

/// A patch value without its `$patch` directives (for parts that have nothing to merge into).
pub fn strip_directives(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, v)| *k != "$patch" && !is_key_delete(v))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .filter(|v| directive(v) != Some("delete"))
                .map(strip_directives)
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Talos skips zero scalars (they mean "unset" in Go), except `false`.
fn is_zero_scalar(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    }
}

fn merge(left: &mut Value, right: &Value, path: &mut Vec<String>) -> Result<(), EngineError> {
    match right {
        Value::Object(right_map) => {
            let Value::Object(left_map) = left else {
                *left = strip_directives(right);
                return Ok(());
            };
            for (key, right_value) in right_map {
                if key == "$patch" {
                    continue;
                }
                if is_key_delete(right_value) {
                    left_map.remove(key);
                    continue;
                }
                path.push(key.clone());
                match left_map.get_mut(key) {
                    Some(left_value) => merge(left_value, right_value, path)?,
                    None => {
                        if !is_zero_scalar(right_value) {
                            left_map.insert(key.clone(), strip_directives(right_value));
                        }
                    }
                }
                path.pop();
            }
        }
        Value::Array(right_items) => {
            let replaced = REPLACED_PATHS
                .iter()
                .any(|p| p.iter().copied().eq(path.iter().map(String::as_str)));
            let Value::Array(left_items) = left else {
                *left = strip_directives(right);
                return Ok(());
            };
            if replaced {
                *left_items = right_items.iter().map(strip_directives).collect();
                return Ok(());
            }
            for item in right_items {
                if directive(item) == Some("delete") {
                    let selector = item
                        .as_object()
                        .and_then(|m| m.iter().find(|(k, _)| *k != "$patch"))
                        .ok_or_else(|| EngineError::DeleteWithoutSelector {
                            path: path.join("."),
                        })?;
                    left_items.retain(|l| l.get(selector.0) != Some(selector.1));
                } else {
                    left_items.push(strip_directives(item));
                }
            }
        }
        scalar => {
            if !is_zero_scalar(scalar) || scalar == &Value::Bool(false) {
                *left = scalar.clone();
            }
        }
    }
    Ok(())
}

/// The map at `path` under `doc`, created (as empty maps) where missing.
fn object_at<'a>(
    doc: &'a mut Value,
    path: &[&str],
) -> Result<&'a mut Map<String, Value>, EngineError> {
    let mut current = doc;
    let mut walked: Vec<&str> = Vec::new();
    for key in path {
        walked.push(key);
        let map = current
            .as_object_mut()
            .ok_or_else(|| EngineError::WrongType {
                path: walked[..walked.len() - 1].join("."),
                expected: "a mapping",
            })?;
        let entry = map
            .entry((*key).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if entry.is_null() {
            *entry = Value::Object(Map::new());
        }
        current = entry;
    }
    current
        .as_object_mut()
        .ok_or_else(|| EngineError::WrongType {
            path: walked.join("."),
            expected: "a mapping",
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    const LEGACY: &str =
        include_str!("../../../tests/fixtures/talos-configs/legacy-grub-v1.11.yaml");
    const UKI: &str = include_str!("../../../tests/fixtures/talos-configs/uki-multidoc.yaml");

    fn config(text: &str) -> MachineConfig {
        MachineConfig::parse(text, "test").unwrap()
    }

    fn strategic(text: &str) -> Patch {
        let patch = Patch::parse(text, "patch").unwrap();
        assert!(matches!(patch, Patch::StrategicMerge(_)));
        patch
    }

    #[test]
    fn fixtures_parse_and_round_trip() {
        for text in [LEGACY, UKI] {
            let cfg = config(text);
            let again = config(&cfg.to_yaml().unwrap());
            assert_eq!(cfg, again);
        }
        assert_eq!(config(UKI).documents.len(), 2);
        assert_eq!(config(UKI).grub_use_uki_cmdline(), Some(true));
        assert_eq!(config(LEGACY).grub_use_uki_cmdline(), None);
    }

    #[test]
    fn strings_that_look_like_other_types_stay_strings() {
        let cfg = config("a: '0xa'\nb: 'true'\nc: '1.0'\nd: ''\ne: 'null'\nf: '~'\n");
        let again = config(&cfg.to_yaml().unwrap());
        assert_eq!(cfg, again);
        assert_eq!(again.documents[0]["b"], json!("true"));
    }

    #[test]
    fn long_strings_stay_on_one_line_and_multiline_ones_round_trip() {
        let long = "A".repeat(300);
        let cfg = config(&format!(
            "cluster:\n  ca:\n    crt: {long}\n  inlineManifests:\n    - name: m\n      contents: |\n        a: 1\n        b: two words long enough to be folded by a serializer that folds at eighty characters\n"
        ));
        let text = cfg.to_yaml().unwrap();
        assert!(text.contains(&format!("crt: {long}\n")), "{text}");
        assert_eq!(config(&text), cfg);
    }

    #[test]
    fn maps_merge_and_scalars_overwrite() {
        let mut cfg =
            config("machine:\n  type: worker\n  install:\n    disk: /dev/sda\n    wipe: true\n");
        cfg.apply(&strategic(
            "machine:\n  install:\n    wipe: false\n    image: x\n",
        ))
        .unwrap();
        assert_eq!(
            cfg.documents[0],
            json!({"machine": {"type": "worker", "install": {"disk": "/dev/sda", "wipe": false, "image": "x"}}})
        );
    }

    #[test]
    fn zero_scalars_do_not_overwrite() {
        let mut cfg = config("machine:\n  install:\n    disk: /dev/sda\n");
        cfg.apply(&strategic("machine:\n  install:\n    disk: ''\n"))
            .unwrap();
        assert_eq!(
            cfg.documents[0]["machine"]["install"]["disk"],
            json!("/dev/sda")
        );
    }

    #[test]
    fn lists_append_without_dedup() {
        let mut cfg = config(LEGACY);
        let patch =
            strategic("machine:\n  install:\n    extraKernelArgs:\n      - amdgpu.cwsr_enable=0\n");
        cfg.apply(&patch).unwrap();
        cfg.apply(&patch).unwrap();
        let args = cfg.extra_kernel_args();
        assert_eq!(
            args.iter().filter(|a| *a == "amdgpu.cwsr_enable=0").count(),
            2,
            "strategic merge appends, as Talos does: {args:?}"
        );
    }

    #[test]
    fn replaced_lists_replace() {
        let mut cfg = config("cluster:\n  network:\n    podSubnets: [10.244.0.0/16]\n");
        cfg.apply(&strategic(
            "cluster:\n  network:\n    podSubnets: [10.0.0.0/8]\n",
        ))
        .unwrap();
        assert_eq!(
            cfg.documents[0]["cluster"]["network"]["podSubnets"],
            json!(["10.0.0.0/8"])
        );
    }

    #[test]
    fn delete_a_key() {
        let mut cfg = config(LEGACY);
        assert!(!cfg.extra_kernel_args().is_empty());
        cfg.apply(&strategic(
            "machine:\n  install:\n    extraKernelArgs:\n      $patch: delete\n",
        ))
        .unwrap();
        assert!(cfg.extra_kernel_args().is_empty());
        assert!(
            cfg.v1alpha1()
                .unwrap()
                .pointer("/machine/install/disk")
                .is_some()
        );
    }

    #[test]
    fn delete_a_list_item_by_its_first_field() {
        let mut cfg = config(
            "machine:\n  kernel:\n    modules:\n      - name: amdgpu\n        parameters: [cwsr_enable=0]\n      - name: zfs\n",
        );
        cfg.apply(&strategic(
            "machine:\n  kernel:\n    modules:\n      - name: amdgpu\n        $patch: delete\n",
        ))
        .unwrap();
        assert_eq!(
            cfg.documents[0]["machine"]["kernel"]["modules"],
            json!([{"name": "zfs"}])
        );
    }

    #[test]
    fn delete_a_whole_document() {
        let mut cfg = config(UKI);
        cfg.apply(&strategic(
            "apiVersion: v1alpha1\nkind: HostnameConfig\n$patch: delete\n",
        ))
        .unwrap();
        assert_eq!(cfg.documents.len(), 1);
        let err = cfg
            .apply(&strategic("version: v1alpha1\n$patch: delete\n"))
            .unwrap_err();
        assert_eq!(err, EngineError::DeleteV1alpha1);
    }

    #[test]
    fn documents_match_by_kind_and_name_and_unmatched_ones_append() {
        let mut cfg = config(UKI);
        cfg.apply(&strategic(
            "apiVersion: v1alpha1\nkind: HostnameConfig\nhostname: gpu-1\n---\napiVersion: v1alpha1\nkind: KmsgLogConfig\nname: remote\nurl: tcp://10.0.0.1:5000\n",
        ))
        .unwrap();
        assert_eq!(cfg.documents.len(), 3);
        assert_eq!(cfg.documents[1]["hostname"], json!("gpu-1"));
        assert_eq!(
            document_key(&cfg.documents[2]),
            "v1alpha1/KmsgLogConfig/remote"
        );
    }

    #[test]
    fn a_patch_may_not_touch_a_document_twice() {
        let mut cfg = config(UKI);
        let err = cfg
            .apply(&strategic(
                "machine:\n  type: worker\n---\nmachine:\n  type: worker\n",
            ))
            .unwrap_err();
        assert_eq!(err, EngineError::DocumentTwice("v1alpha1".to_owned()));
    }

    #[test]
    fn unknown_directive_is_refused() {
        let mut cfg = config(LEGACY);
        let err = cfg
            .apply(&strategic("machine:\n  install:\n    $patch: replace\n"))
            .unwrap_err();
        assert!(matches!(err, EngineError::UnknownDirective { .. }));
    }

    #[test]
    fn json6902_on_single_document() {
        let mut cfg = config(LEGACY);
        let patch = Patch::parse(
            r#"[{"op": "add", "path": "/machine/install/extraKernelArgs/-", "value": "amdgpu.gpu_recovery=1"}]"#,
            "p.json",
        )
        .unwrap();
        cfg.apply(&patch).unwrap();
        assert_eq!(
            cfg.extra_kernel_args().last().unwrap(),
            "amdgpu.gpu_recovery=1"
        );
        let yaml_ops = Patch::parse(
            "- op: remove\n  path: /machine/install/extraKernelArgs\n",
            "p.yaml",
        )
        .unwrap();
        cfg.apply(&yaml_ops).unwrap();
        assert!(cfg.extra_kernel_args().is_empty());
    }

    #[test]
    fn json6902_refused_on_multi_document() {
        let mut cfg = config(UKI);
        let patch = Patch::parse(r#"[{"op": "remove", "path": "/debug"}]"#, "p").unwrap();
        let err = cfg.apply(&patch).unwrap_err();
        assert_eq!(err.to_string(), JSON6902_MULTIDOC_ERROR);
    }

    #[test]
    fn json6902_failure_is_an_error() {
        let mut cfg = config(LEGACY);
        let patch = Patch::parse(r#"[{"op": "remove", "path": "/nope/nope"}]"#, "p").unwrap();
        assert!(matches!(
            cfg.apply(&patch).unwrap_err(),
            EngineError::Json6902(_)
        ));
    }

    #[test]
    fn patch_format_errors_are_clear() {
        assert!(matches!(
            Patch::parse("", "empty.yaml").unwrap_err(),
            EngineError::UnknownPatchFormat { .. }
        ));
        assert!(matches!(
            Patch::parse("- 1\n- 2\n", "list.yaml").unwrap_err(),
            EngineError::UnknownPatchFormat { .. }
        ));
        let err = Patch::parse("a: [", "bad.yaml").unwrap_err().to_string();
        assert!(err.starts_with("bad.yaml: not YAML"), "{err}");
    }

    #[test]
    fn kernel_arg_edit_is_idempotent_in_the_config() {
        let mut cfg = config(LEGACY);
        let arg = kernel_args::cwsr_disabled();
        assert!(cfg.set_extra_kernel_arg(&arg, true).unwrap());
        let once = cfg.clone();
        assert!(!cfg.set_extra_kernel_arg(&arg, true).unwrap());
        assert_eq!(cfg, once);
        assert_eq!(
            cfg.extra_kernel_args()
                .iter()
                .filter(|a| **a == arg.render())
                .count(),
            1
        );
        assert!(cfg.set_extra_kernel_arg(&arg, false).unwrap());
        assert!(!cfg.extra_kernel_args().contains(&arg.render()));
        assert!(!cfg.set_extra_kernel_arg(&arg, false).unwrap());
    }

    #[test]
    fn kernel_arg_edit_creates_and_removes_the_list() {
        let mut cfg = config("version: v1alpha1\nmachine:\n  type: worker\n");
        let arg = kernel_args::cwsr_disabled();
        assert!(cfg.set_extra_kernel_arg(&arg, true).unwrap());
        assert_eq!(cfg.extra_kernel_args(), vec!["amdgpu.cwsr_enable=0"]);
        assert!(cfg.set_extra_kernel_arg(&arg, false).unwrap());
        assert!(
            cfg.v1alpha1()
                .unwrap()
                .pointer("/machine/install/extraKernelArgs")
                .is_none()
        );
        let mut no_v1 = config("apiVersion: v1alpha1\nkind: HostnameConfig\n");
        assert_eq!(
            no_v1.set_extra_kernel_arg(&arg, true).unwrap_err(),
            EngineError::NoV1alpha1
        );
    }

    #[test]
    fn diff_shows_the_change() {
        let mut cfg = config(LEGACY);
        let old = cfg.to_yaml().unwrap();
        cfg.set_extra_kernel_arg(&kernel_args::cwsr_disabled(), true)
            .unwrap();
        let diff = crate::render::unified_diff(&old, &cfg.to_yaml().unwrap(), "running", "patched");
        assert!(diff.starts_with("--- running\n+++ patched\n"), "{diff}");
        assert!(diff.contains("+    - amdgpu.cwsr_enable=0"), "{diff}");
        assert_eq!(crate::render::unified_diff(&old, &old, "a", "b"), "");
    }

    #[test]
    fn non_mapping_documents_are_refused() {
        assert!(matches!(
            MachineConfig::parse("- a\n", "cfg").unwrap_err(),
            EngineError::NotAMapping { .. }
        ));
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(text in "\\PC{0,200}") {
            let _ = MachineConfig::parse(&text, "x");
            let _ = Patch::parse(&text, "x");
        }

        #[test]
        fn mutated_fixtures_never_panic(cut in 0usize..2000, byte in 0u8..128) {
            let mut bytes = UKI.as_bytes().to_vec();
            let at = cut % bytes.len();
            bytes[at] = byte;
            let text = String::from_utf8_lossy(&bytes);
            if let Ok(mut cfg) = MachineConfig::parse(&text, "x") {
                let _ = cfg.set_extra_kernel_arg(&kernel_args::cwsr_disabled(), true);
                let _ = cfg.to_yaml();
            }
        }
    }
}
