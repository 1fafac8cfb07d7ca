//! The few Kubernetes API calls the agent makes about its own Node (kube-rs): read it, set its condition, add or remove its taint, record an Event; each bounded in time.

use std::path::Path;

use k8s_openapi::api::core::v1::{Event, Node, Taint};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use super::verdict::{CONDITION_TYPE, Verdict};
use crate::limits::KUBE_REQUEST_TIMEOUT;

/// The taint `--taint-on-critical` puts on the node: new pods without a toleration for it
/// stay off while a critical incident is open or a critical finding holds.
pub const TAINT_KEY: &str = "nodectl/amdgpu-unhealthy";

/// Node Events live in `default`, as the kubelet's do, where `kubectl describe node` finds them.
const EVENT_NAMESPACE: &str = "default";

/// Who the agent says it is in Events.
const COMPONENT: &str = "nodectl-agent";

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("Kubernetes client configuration: {0}")]
    Config(String),
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{what}: no answer within {}s", KUBE_REQUEST_TIMEOUT.as_secs())]
    Timeout { what: String },
}

impl KubeError {
    /// The object exists already (an Event recorded before a restart).
    fn already_exists(&self) -> bool {
        matches!(self, KubeError::Api { source: kube::Error::Api(status), .. } if status.code == 409)
    }
}

/// The agent's own Node through the API server.
#[derive(Clone)]
pub struct NodeApi {
    nodes: Api<Node>,
    events: Api<Event>,
    node_name: String,
}

impl std::fmt::Debug for NodeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeApi")
            .field("node_name", &self.node_name)
            .finish_non_exhaustive()
    }
}

/// What the agent needs of its Node: its condition as it stands and its taints.
#[derive(Debug, Clone, Default)]
pub struct NodeState {
    /// Status and last transition time of our condition, when it is set.
    pub condition: Option<(String, serde_json::Value)>,
    pub taints: Vec<Taint>,
    pub resource_version: Option<String>,
}

impl NodeApi {
    /// A client from `kubeconfig`, or the in-cluster one (the pod's service account).
    pub async fn connect(kubeconfig: Option<&Path>, node_name: String) -> Result<Self, KubeError> {
        let mut config = match kubeconfig {
            Some(path) => {
                let file = kube::config::Kubeconfig::read_from(path)
                    .map_err(|e| KubeError::Config(format!("{}: {e}", path.display())))?;
                kube::Config::from_custom_kubeconfig(file, &Default::default())
                    .await
                    .map_err(|e| KubeError::Config(format!("{}: {e}", path.display())))?
            }
            None => kube::Config::incluster().map_err(|e| {
                KubeError::Config(format!(
                    "in-cluster configuration (service account token and KUBERNETES_SERVICE_HOST): {e}"
                ))
            })?,
        };
        config.connect_timeout = Some(KUBE_REQUEST_TIMEOUT);
        config.read_timeout = Some(KUBE_REQUEST_TIMEOUT);
        config.write_timeout = Some(KUBE_REQUEST_TIMEOUT);
        let client =
            kube::Client::try_from(config).map_err(|e| KubeError::Config(e.to_string()))?;
        Ok(Self {
            nodes: Api::all(client.clone()),
            events: Api::namespaced(client, EVENT_NAMESPACE),
            node_name,
        })
    }

    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    pub async fn read(&self) -> Result<NodeState, KubeError> {
        let what = format!("reading node {}", self.node_name);
        let node = bounded(&what, self.nodes.get(&self.node_name)).await?;
        let condition = node
            .status
            .and_then(|s| s.conditions)
            .and_then(|c| c.into_iter().find(|c| c.type_ == CONDITION_TYPE))
            .map(|c| {
                let since = serde_json::to_value(&c.last_transition_time)
                    .unwrap_or(serde_json::Value::Null);
                (c.status, since)
            });
        Ok(NodeState {
            condition,
            taints: node.spec.and_then(|s| s.taints).unwrap_or_default(),
            resource_version: node.metadata.resource_version,
        })
    }

    /// Sets the condition with a strategic merge patch of `nodes/status`: conditions merge by
    /// `type`, so the kubelet's and other agents' conditions stay as they are.
    pub async fn set_condition(
        &self,
        verdict: &Verdict,
        current: &NodeState,
        now: jiff::Timestamp,
    ) -> Result<(), KubeError> {
        let now_text = now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        let transition = match &current.condition {
            Some((status, since)) if status == verdict.status.as_str() && !since.is_null() => {
                since.clone()
            }
            _ => json!(now_text),
        };
        let patch = json!({
            "status": {
                "conditions": [{
                    "type": CONDITION_TYPE,
                    "status": verdict.status.as_str(),
                    "reason": verdict.reason,
                    "message": verdict.message,
                    "lastHeartbeatTime": now_text,
                    "lastTransitionTime": transition,
                }]
            }
        });
        let what = format!("setting {CONDITION_TYPE} on node {}", self.node_name);
        bounded(
            &what,
            self.nodes.patch_status(
                &self.node_name,
                &PatchParams::default(),
                &Patch::Strategic(patch),
            ),
        )
        .await
        .map(drop)
    }

    /// Adds (`want`) or removes our taint, leaving every other taint as it is. The taint list
    /// has no merge key, so the whole list is written, guarded by the resourceVersion it was
    /// read at (a concurrent change gives 409 and a retry).
    pub async fn set_taint(
        &self,
        want: Option<&Verdict>,
        current: &NodeState,
    ) -> Result<bool, KubeError> {
        let ours = current.taints.iter().find(|t| t.key == TAINT_KEY);
        let wanted = want.map(|verdict| Taint {
            key: TAINT_KEY.to_owned(),
            value: Some(verdict.reason.chars().take(63).collect()),
            effect: "NoSchedule".to_owned(),
            time_added: None,
        });
        let unchanged = match (ours, &wanted) {
            (None, None) => true,
            (Some(ours), Some(wanted)) => {
                ours.value == wanted.value && ours.effect == wanted.effect
            }
            _ => false,
        };
        if unchanged {
            return Ok(false);
        }
        let taints: Vec<Taint> = current
            .taints
            .iter()
            .filter(|t| t.key != TAINT_KEY)
            .cloned()
            .chain(wanted)
            .collect();
        let patch = json!({
            "metadata": { "resourceVersion": current.resource_version },
            "spec": { "taints": taints },
        });
        let what = format!("setting the taint {TAINT_KEY} on node {}", self.node_name);
        bounded(
            &what,
            self.nodes.patch(
                &self.node_name,
                &PatchParams::default(),
                &Patch::Merge(patch),
            ),
        )
        .await
        .map(|_| true)
    }

    /// Records one Warning Event about the node, under a name made of `key`: recording it again
    /// (after a restart) finds it there and is done.
    pub async fn record_event(
        &self,
        key: &str,
        reason: &str,
        message: &str,
        at: jiff::Timestamp,
    ) -> Result<(), KubeError> {
        let at_text = at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        let name = event_name(&self.node_name, key);
        let event: Event = serde_json::from_value(json!({
            "metadata": { "name": name, "namespace": EVENT_NAMESPACE },
            // kubectl describe node finds a node's Events by kind, name and a uid equal to the
            // node's name, as the kubelet records them.
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Node",
                "name": self.node_name,
                "uid": self.node_name,
            },
            "reason": reason,
            "message": message,
            "type": "Warning",
            "count": 1,
            "firstTimestamp": at_text,
            "lastTimestamp": at_text,
            "source": { "component": COMPONENT, "host": self.node_name },
            "reportingComponent": COMPONENT,
            "reportingInstance": self.node_name,
        }))
        .map_err(|e| KubeError::Config(format!("building the Event: {e}")))?;
        let what = format!("recording Event {name}");
        match bounded(&what, self.events.create(&PostParams::default(), &event)).await {
            Err(e) if e.already_exists() => Ok(()),
            other => other.map(drop),
        }
    }
}

/// `NODE.nodectl-KEY`, lower case, only the characters an object name may hold, at most 253.
fn event_name(node: &str, key: &str) -> String {
    let raw = format!("{node}.nodectl-{key}").to_ascii_lowercase();
    let name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(253)
        .collect();
    name.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

async fn bounded<T>(
    what: &str,
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, KubeError> {
    match tokio::time::timeout(KUBE_REQUEST_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(KubeError::Api {
            what: what.to_owned(),
            source,
        }),
        Err(_) => Err(KubeError::Timeout {
            what: what.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_are_valid_object_names() {
        assert_eq!(
            event_name("GPU_Node-1", "incident-0f3a-12"),
            "gpu-node-1.nodectl-incident-0f3a-12"
        );
        assert!(event_name(&"n".repeat(300), "k").len() <= 253);
    }
}
