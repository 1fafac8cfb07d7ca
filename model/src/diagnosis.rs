//! What identifies a diagnosed run and when it was diagnosed: the part of a diagnosis that a bundle, the experiment log and later tools key on, in a form that reads back.

use serde::{Deserialize, Serialize};

/// The run a diagnosis is of: its pod, its process, its model and llama.cpp build, as far as
/// the inputs said (all absent for a log read on its own without a build line).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunKey {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// `NAMESPACE/POD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The model file (`-m`), from the log or the process's arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// llama.cpp's `build: N (commit)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
}

/// When and on which node a run was diagnosed, and which run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiagnosisStamp {
    /// RFC 3339 UTC, on the node's clock (a bundle's: the moment it was taken).
    pub made_at: String,
    pub node: String,
    pub run: RunKey,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_reads_back_as_written() {
        let stamp = DiagnosisStamp {
            made_at: "2026-12-03T10:00:00Z".to_owned(),
            node: "gpu-node-3".to_owned(),
            run: RunKey {
                pod_uid: Some("0d3c5e1e-5d3f-4a8e-9c39-1c1b6b0a7e11".to_owned()),
                pod: Some("llm/llama-0".to_owned()),
                pid: Some(4242),
                model: Some("/models/q.gguf".to_owned()),
                build: None,
            },
        };
        let json = serde_json::to_string(&stamp).unwrap();
        assert_eq!(
            serde_json::from_str::<DiagnosisStamp>(&json).unwrap(),
            stamp
        );
        // A diagnosis document carries more: the stamp is read out of it.
        let document = format!(r#"{{"verdict":"x","phase":"upload",{}"#, &json[1..]);
        assert_eq!(
            serde_json::from_str::<DiagnosisStamp>(&document).unwrap(),
            stamp
        );
    }
}
