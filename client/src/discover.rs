//! `--discover`: the agents of the nodectl DaemonSet found through the Kubernetes API (its pods by label), each reached at its pod IP and its `grpc` port and shown under its node's name.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use crate::exit::Unreachable;

/// The namespace `deploy/` installs the DaemonSet in.
pub const DEFAULT_NAMESPACE: &str = "nodectl";
/// The label `deploy/` puts on the DaemonSet's pods.
pub const DEFAULT_SELECTOR: &str = "app.kubernetes.io/name=nodectl-agent";
/// The container port the agent's gRPC listens on, by the name `deploy/` gives it.
pub const GRPC_PORT_NAME: &str = "grpc";

/// Each call to the API server: a list of a few thousand pods answers in well under a second;
/// an API server that has not answered in 10 s is down or unreachable from here.
const API_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Pods asked for per page of the list.
const PODS_PER_PAGE: u32 = 500;
/// Kubernetes supports clusters of up to 5000 nodes, one agent pod each; a selector matching
/// more than that is not a DaemonSet's.
const MAX_DISCOVERED_PODS: usize = 5000;

/// How `--discover` finds the agents.
#[derive(Debug, Clone)]
pub struct Discovery {
    /// `--kubeconfig`; else KUBECONFIG, `~/.kube/config`, then the in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    pub namespace: String,
    pub selector: String,
    /// `http` or `https`: how the agents serve (`deploy/` serves TLS).
    pub scheme: Scheme,
}

/// How discovered agents are dialled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scheme {
    Https,
    Http,
}

/// One agent pod, reachable or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredAgent {
    /// The node it runs on (else the pod's name, for a pod not scheduled yet).
    pub node: String,
    /// `https://IP:PORT`, or why the pod cannot be asked.
    pub endpoint: Result<String, String>,
}

/// Lists the agent pods, one per node, ordered by node name.
pub async fn discover(discovery: &Discovery) -> anyhow::Result<Vec<DiscoveredAgent>> {
    let client = client(discovery).await?;
    let pods = list_pods(client, discovery).await?;
    let agents = agents_of(&pods, discovery.scheme);
    if agents.is_empty() {
        return Err(Unreachable(format!(
            "--discover: no pod labelled {} in namespace {}: is the DaemonSet deployed (deploy/), or are --discover-namespace and --discover-selector right?",
            discovery.selector, discovery.namespace
        ))
        .into());
    }
    Ok(agents)
}

async fn client(discovery: &Discovery) -> anyhow::Result<kube::Client> {
    let mut config = match &discovery.kubeconfig {
        Some(path) => {
            let shown = path.display();
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("--kubeconfig {shown}: {e}"))?;
            kube::Config::from_custom_kubeconfig(file, &Default::default())
                .await
                .map_err(|e| anyhow::anyhow!("--kubeconfig {shown}: {e}"))?
        }
        None => kube::Config::infer().await.map_err(|e| {
            anyhow::anyhow!(
                "--discover needs a Kubernetes client configuration (--kubeconfig, KUBECONFIG, ~/.kube/config, or a pod's service account): {e}"
            )
        })?,
    };
    config.connect_timeout = Some(API_REQUEST_TIMEOUT);
    config.read_timeout = Some(API_REQUEST_TIMEOUT);
    config.write_timeout = Some(API_REQUEST_TIMEOUT);
    kube::Client::try_from(config).map_err(|e| anyhow::anyhow!("--discover: {e}"))
}

async fn list_pods(client: kube::Client, discovery: &Discovery) -> anyhow::Result<Vec<Pod>> {
    let api: Api<Pod> = Api::namespaced(client, &discovery.namespace);
    let mut pods = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut params = ListParams::default()
            .labels(&discovery.selector)
            .limit(PODS_PER_PAGE);
        if let Some(token) = &token {
            params = params.continue_token(token);
        }
        let page = match tokio::time::timeout(API_REQUEST_TIMEOUT, api.list(&params)).await {
            Ok(Ok(page)) => page,
            Ok(Err(e)) => return Err(list_error(discovery, e)),
            Err(_) => {
                return Err(Unreachable(format!(
                    "--discover: the API server did not answer the pod list within {}s",
                    API_REQUEST_TIMEOUT.as_secs()
                ))
                .into());
            }
        };
        pods.extend(page.items);
        if pods.len() > MAX_DISCOVERED_PODS {
            anyhow::bail!(
                "--discover: more than {MAX_DISCOVERED_PODS} pods labelled {} in namespace {}: not one DaemonSet's; narrow --discover-selector",
                discovery.selector,
                discovery.namespace
            );
        }
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok(pods);
        }
    }
}

/// An API error in words an operator acts on: a refused list names the permission it lacks, a
/// bad selector is an input error, anything else could not reach the pods (exit 3).
fn list_error(discovery: &Discovery, error: kube::Error) -> anyhow::Error {
    let what = format!(
        "--discover: listing pods labelled {} in namespace {}",
        discovery.selector, discovery.namespace
    );
    match &error {
        kube::Error::Api(status) if status.code == 400 => {
            anyhow::anyhow!(
                "{what}: the API server refused the request: {}",
                status.message
            )
        }
        kube::Error::Api(status) if status.code == 401 || status.code == 403 => {
            Unreachable(format!(
                "{what}: {} (the credentials need `list pods` in namespace {})",
                status.message, discovery.namespace
            ))
            .into()
        }
        _ => Unreachable(format!("{what}: {error}")).into(),
    }
}

/// The pods to ask, one per node: a running pod with an IP is reached at its `grpc` port; one
/// that cannot be asked (pending, failed, no such port) is kept with its reason, so the node is
/// listed as failed rather than missing. Of several pods on one node (a rollout replacing one),
/// the one not being deleted is asked.
pub fn agents_of(pods: &[Pod], scheme: Scheme) -> Vec<DiscoveredAgent> {
    let mut by_node: std::collections::BTreeMap<String, (bool, DiscoveredAgent)> =
        std::collections::BTreeMap::new();
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let node = pod
            .spec
            .as_ref()
            .and_then(|spec| spec.node_name.clone())
            .unwrap_or_else(|| format!("(unscheduled pod {name})"));
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let agent = DiscoveredAgent {
            node: node.clone(),
            endpoint: endpoint_of(pod, &name, scheme, deleting),
        };
        let better = match by_node.get(&node) {
            None => true,
            Some((was_deleting, was)) => {
                (*was_deleting && !deleting) || (was.endpoint.is_err() && agent.endpoint.is_ok())
            }
        };
        if better {
            by_node.insert(node, (deleting, agent));
        }
    }
    by_node.into_values().map(|(_, agent)| agent).collect()
}

fn endpoint_of(pod: &Pod, name: &str, scheme: Scheme, deleting: bool) -> Result<String, String> {
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Unknown");
    let waiting = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
        .next();
    if phase != "Running" {
        let why = waiting.map(|w| format!(" ({w})")).unwrap_or_default();
        return Err(format!("pod {name} is {phase}{why}"));
    }
    if deleting {
        return Err(format!("pod {name} is being deleted"));
    }
    let Some(ip) = status
        .and_then(|s| s.pod_ip.as_deref())
        .filter(|ip| !ip.is_empty())
    else {
        return Err(format!("pod {name} has no IP yet"));
    };
    let ip: std::net::IpAddr = ip
        .parse()
        .map_err(|_| format!("pod {name} has an IP that is not one: {ip:?}"))?;
    let port = pod
        .spec
        .as_ref()
        .into_iter()
        .flat_map(|spec| &spec.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(GRPC_PORT_NAME))
        .map(|p| p.container_port)
        .ok_or_else(|| format!("pod {name} has no container port named {GRPC_PORT_NAME}"))?;
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("pod {name}: port {GRPC_PORT_NAME} is {port}, not a port"))?;
    let scheme = match scheme {
        Scheme::Https => "https",
        Scheme::Http => "http",
    };
    Ok(format!(
        "{scheme}://{}",
        std::net::SocketAddr::new(ip, port)
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn pod(name: &str, node: Option<&str>, phase: &str, ip: Option<&str>) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": name },
            "spec": {
                "nodeName": node,
                "containers": [{ "name": "agent", "ports": [
                    { "name": "health", "containerPort": 50152 },
                    { "name": "grpc", "containerPort": 50151 }
                ]}]
            },
            "status": { "phase": phase, "podIP": ip }
        }))
        .unwrap()
    }

    #[test]
    fn running_pods_are_reached_at_their_grpc_port_and_the_others_say_why_not() {
        let mut crashing = pod("agent-c", Some("node-c"), "Pending", None);
        crashing.status.as_mut().unwrap().container_statuses = Some(vec![
            serde_json::from_value(serde_json::json!({
                "name": "agent", "ready": false, "restartCount": 4, "image": "x", "imageID": "",
                "state": { "waiting": { "reason": "CrashLoopBackOff" } }
            }))
            .unwrap(),
        ]);
        let pods = [
            pod("agent-b", Some("node-b"), "Running", Some("fd00::7")),
            pod("agent-a", Some("node-a"), "Running", Some("10.244.1.5")),
            crashing,
            pod("agent-x", None, "Pending", None),
        ];
        let agents = agents_of(&pods, Scheme::Https);
        let shown: Vec<(&str, Result<&str, &str>)> = agents
            .iter()
            .map(|a| {
                (
                    a.node.as_str(),
                    a.endpoint.as_deref().map_err(String::as_str),
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                ("(unscheduled pod agent-x)", Err("pod agent-x is Pending")),
                ("node-a", Ok("https://10.244.1.5:50151")),
                ("node-b", Ok("https://[fd00::7]:50151")),
                ("node-c", Err("pod agent-c is Pending (CrashLoopBackOff)")),
            ]
        );
    }

    #[test]
    fn a_rollout_asks_the_new_pod_and_a_pod_without_the_port_says_so() {
        let mut old = pod("agent-old", Some("node-a"), "Running", Some("10.0.0.1"));
        old.metadata.deletion_timestamp =
            Some(serde_json::from_value(serde_json::json!("2026-12-03T10:00:00Z")).unwrap());
        let new = pod("agent-new", Some("node-a"), "Running", Some("10.0.0.2"));
        let agents = agents_of(&[old.clone(), new.clone()], Scheme::Http);
        assert_eq!(agents.len(), 1);
        assert_eq!(agents[0].endpoint.as_deref(), Ok("http://10.0.0.2:50151"));
        let agents = agents_of(&[new, old], Scheme::Http);
        assert_eq!(agents[0].endpoint.as_deref(), Ok("http://10.0.0.2:50151"));

        let mut portless = pod("agent-p", Some("node-p"), "Running", Some("10.0.0.3"));
        portless.spec.as_mut().unwrap().containers[0].ports = None;
        assert_eq!(
            agents_of(&[portless], Scheme::Http)[0].endpoint,
            Err("pod agent-p has no container port named grpc".to_owned())
        );
    }
}
