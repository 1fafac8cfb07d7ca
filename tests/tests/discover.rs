//! `--discover` against a fake API server: the DaemonSet's pods by label become the fleet, each shown under its node's name; a pod that cannot be asked is a failed node with its reason; other pods are left out; an API server that fails is a clear error (exit 3).

use anyhow::Context as _;
use nodectl_e2e::fake_kube::{FakeKube, Mode};
use nodectl_e2e::harness::{Agent, node_fixture, nodectl};
use serde_json::{Value, json};

const NAMESPACE: &str = "nodectl";
const AGENT_LABELS: &str = r#"{ "app.kubernetes.io/name": "nodectl-agent" }"#;

/// A DaemonSet pod as the kubelet reports it: `grpc` is the agent's port.
fn agent_pod(name: &str, node: &str, phase: &str, ip: Option<&str>, grpc_port: u16) -> Value {
    let labels: Value = serde_json::from_str(AGENT_LABELS).unwrap_or_default();
    json!({
        "metadata": { "name": name, "labels": labels },
        "spec": {
            "nodeName": node,
            "containers": [{ "name": "agent", "ports": [
                { "name": "grpc", "containerPort": grpc_port },
                { "name": "health", "containerPort": 50152 }
            ]}]
        },
        "status": { "phase": phase, "podIP": ip }
    })
}

fn port_of(endpoint: &str) -> anyhow::Result<u16> {
    endpoint
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("no port in {endpoint}"))
}

fn run(args: Vec<String>) -> impl FnOnce() -> anyhow::Result<nodectl_e2e::harness::Run> {
    move || nodectl(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovered_pods_are_the_fleet_under_their_node_names() -> anyhow::Result<()> {
    let (healthy, mes83) = tokio::task::spawn_blocking(|| -> anyhow::Result<(Agent, Agent)> {
        Ok((
            Agent::start(&node_fixture("strix-halo-healthy"), &[])?,
            Agent::start(&node_fixture("strix-halo-mes83"), &[])?,
        ))
    })
    .await??;
    let kube = FakeKube::start(Vec::new()).await?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = kube.write_kubeconfig(dir.path())?;

    let healthy_port = port_of(&healthy.endpoint)?;
    kube.add_pod(
        NAMESPACE,
        agent_pod(
            "nodectl-agent-a1",
            "gpu-a",
            "Running",
            Some("127.0.0.1"),
            healthy_port,
        ),
    )?;
    // A rollout: the old pod of gpu-a is being deleted and no longer listens.
    let mut old = agent_pod("nodectl-agent-a0", "gpu-a", "Running", Some("127.0.0.1"), 1);
    old["metadata"]["deletionTimestamp"] = json!("2026-12-03T10:00:00Z");
    kube.add_pod(NAMESPACE, old)?;
    kube.add_pod(
        NAMESPACE,
        agent_pod(
            "nodectl-agent-b",
            "gpu-b",
            "Running",
            Some("127.0.0.1"),
            port_of(&mes83.endpoint)?,
        ),
    )?;
    let mut crashing = agent_pod("nodectl-agent-c", "gpu-c", "Pending", None, 50151);
    crashing["status"]["containerStatuses"] = json!([{
        "name": "agent", "ready": false, "restartCount": 5, "image": "nodectl-agent", "imageID": "",
        "state": { "waiting": { "reason": "CrashLoopBackOff" } }
    }]);
    kube.add_pod(NAMESPACE, crashing)?;
    // Neither another app's pod in the namespace nor an agent-labelled pod elsewhere is asked.
    let mut other = agent_pod("metrics-x", "gpu-x", "Running", Some("127.0.0.1"), 1);
    other["metadata"]["labels"] = json!({ "app.kubernetes.io/name": "something-else" });
    kube.add_pod(NAMESPACE, other)?;
    kube.add_pod(
        "default",
        agent_pod("nodectl-agent-y", "gpu-y", "Running", Some("127.0.0.1"), 1),
    )?;

    let kubeconfig = kubeconfig.to_str().context("path")?.to_owned();
    let args = |rest: &[&str]| -> Vec<String> {
        [
            "--discover",
            "--kubeconfig",
            &kubeconfig,
            "--discover-scheme",
            "http",
        ]
        .iter()
        .chain(rest)
        .map(|s| (*s).to_owned())
        .collect()
    };

    let check = tokio::task::spawn_blocking(run(args(&["node", "check", "-o", "json"]))).await??;
    let json: Value = serde_json::from_str(&check.stdout)
        .with_context(|| format!("not JSON: {}\n{}", check.stdout, check.stderr))?;
    assert_eq!(check.code, 1, "a critical finding on gpu-b: {json:#}");
    let by_node = |status: &str| -> Vec<String> {
        json["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["status"] == status)
            .map(|n| n["source"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(by_node("ok"), ["gpu-a", "gpu-b"], "{json:#}");
    assert_eq!(by_node("failed"), ["gpu-c"], "{json:#}");
    let failed = json["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["source"] == "gpu-c"))
        .context("gpu-c")?;
    assert_eq!(
        failed["error"], "pod nodectl-agent-c is Pending (CrashLoopBackOff)",
        "{failed:#}"
    );
    let fleet: Vec<&str> = json["fleet"]
        .as_array()
        .context("fleet")?
        .iter()
        .filter_map(|row| row["source"].as_str())
        .collect();
    assert_eq!(fleet, ["gpu-a", "gpu-b", "gpu-c"], "{json:#}");

    // The list asked for the DaemonSet's label in its namespace, and nothing else.
    let calls: Vec<String> = kube.calls().into_iter().map(|c| c.path).collect();
    assert_eq!(
        calls,
        ["/api/v1/namespaces/nodectl/pods?labelSelector=app.kubernetes.io/name=nodectl-agent"]
    );

    // The table names the nodes too.
    let table = tokio::task::spawn_blocking(run(args(&["node", "check"]))).await??;
    assert!(table.stdout.contains("gpu-b"), "{}", table.stdout);
    assert!(
        table
            .stdout
            .contains("FAILED gpu-c: pod nodectl-agent-c is Pending (CrashLoopBackOff)"),
        "{}",
        table.stdout
    );

    // An API server that fails: the command says so and that no node was asked (exit 3).
    kube.set_mode(Mode::Fail500);
    let failing = tokio::task::spawn_blocking(run(args(&["node", "check"]))).await??;
    assert_eq!(failing.code, 3, "{}\n{}", failing.stdout, failing.stderr);
    assert!(
        failing.stderr.contains("--discover: listing pods labelled app.kubernetes.io/name=nodectl-agent in namespace nodectl"),
        "{}",
        failing.stderr
    );
    kube.set_mode(Mode::Normal);

    // A namespace without the DaemonSet is named as such.
    let mut elsewhere = args(&["node", "check"]);
    elsewhere.extend(["--discover-namespace".to_owned(), "kube-system".to_owned()]);
    let empty = tokio::task::spawn_blocking(run(elsewhere)).await??;
    assert_eq!(empty.code, 3, "{}", empty.stderr);
    assert!(
        empty.stderr.contains(
            "no pod labelled app.kubernetes.io/name=nodectl-agent in namespace kube-system"
        ),
        "{}",
        empty.stderr
    );

    // A discovery setting without --discover is a usage error.
    let stray = tokio::task::spawn_blocking(run(vec![
        "node".to_owned(),
        "check".to_owned(),
        "--discover-namespace".to_owned(),
        "x".to_owned(),
    ]))
    .await??;
    assert_eq!(stray.code, 2, "{}", stray.stderr);
    assert!(
        stray
            .stderr
            .contains("--discover-namespace applies with --discover")
    );

    healthy.terminate()?;
    mes83.terminate()?;
    Ok(())
}
