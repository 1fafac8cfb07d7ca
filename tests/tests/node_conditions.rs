//! `--kube-node-conditions` against a fake API server: a MES-timeout chain in the node's kernel log sets `AMDGPUHealthy=False` (and the taint when asked) and one Event; its end clears both; an API server that answers 500 or not at all leaves the agent serving and is retried with growing waits.

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nodectl_e2e::fake_kube::{FakeKube, Mode, kubelet_node};
use nodectl_e2e::harness::{Agent, node_fixture_copy, nodectl};
use serde_json::{Value, json};

const NODE: &str = "gpu-node-1";
const TAINT_KEY: &str = "nodectl/amdgpu-unhealthy";

/// A node as the kubelet leaves it, with someone else's taint.
fn node() -> Value {
    let mut node = kubelet_node(NODE);
    node["spec"]["taints"] =
        json!([{ "key": "dedicated", "value": "llm", "effect": "NoSchedule" }]);
    node
}

fn append_records(tree: &Path, records: &[String]) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(tree.join("dev/kmsg"))?;
    for record in records {
        writeln!(file, "{record}")?;
    }
    Ok(())
}

/// A MES timeout, the reset it causes, and the reset's success, at `usec` on the device.
fn mes_chain(first_seq: u64, usec: u64) -> Vec<String> {
    let device = "amdgpu 0000:c1:00.0: amdgpu:";
    [
        (
            3,
            format!("{device} MES failed to respond to msg=REMOVE_QUEUE"),
        ),
        (
            3,
            format!("{device} failed to remove hardware queue from MES, doorbell=0x1002"),
        ),
        (4, format!("{device} GPU reset begin!")),
        (6, format!("{device} GPU reset(2) succeeded!")),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (priority, text))| {
        format!(
            "{priority},{},{},-;{text}",
            first_seq + i as u64,
            usec + i as u64 * 100_000
        )
    })
    .collect()
}

/// Polls `probe` until it gives `Some`, or fails after `limit` with what `state` shows.
async fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> Option<T>,
    state: impl Fn() -> String,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe() {
            return Ok(value);
        }
        if Instant::now() > deadline {
            anyhow::bail!("{what}: not within {limit:?}; {}", state());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    tree: std::path::PathBuf,
    kube: FakeKube,
    agent: Agent,
}

async fn start(extra: &[&str]) -> anyhow::Result<Setup> {
    let dir = node_fixture_copy("strix-halo-healthy")?;
    let tree = dir.path().join("root");
    std::fs::create_dir_all(tree.join("dev"))?;
    // The log holds this boot's start, as /dev/kmsg would.
    append_records(
        &tree,
        &["6,1,1000000,-;Linux version 6.18.4-talos (root@buildkitsandbox)".to_owned()],
    )?;
    let kube = FakeKube::start(vec![node()]).await?;
    let kubeconfig = kube.write_kubeconfig(dir.path())?;
    let kubeconfig = kubeconfig.to_str().context("path")?.to_owned();
    let tree_arg = tree.clone();
    let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
    let agent = tokio::task::spawn_blocking(move || {
        let mut args = vec![
            "--kube-node-conditions",
            "--node-name",
            NODE,
            "--kubeconfig",
            kubeconfig.as_str(),
        ];
        args.extend(extra.iter().map(String::as_str));
        Agent::start(&tree_arg, &args)
    })
    .await??;
    Ok(Setup {
        _dir: dir,
        tree,
        kube,
        agent,
    })
}

fn describe(kube: &FakeKube) -> String {
    format!(
        "condition {:?}, taints {:?}, {} events, calls {:?}",
        kube.condition(NODE, "AMDGPUHealthy"),
        kube.taints(NODE),
        kube.events().len(),
        kube.calls()
            .iter()
            .map(|c| format!("{} {} -> {:?}", c.method, c.path, c.status))
            .collect::<Vec<_>>()
    )
}

fn condition_is(kube: &FakeKube, status: &str) -> Option<Value> {
    kube.condition(NODE, "AMDGPUHealthy")
        .filter(|c| c["status"] == status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mes_hang_sets_the_condition_the_taint_and_one_event_and_its_end_clears_them()
-> anyhow::Result<()> {
    let setup = start(&["--taint-on-critical"]).await?;
    let kube = &setup.kube;
    let healthy = wait_for(
        "AMDGPUHealthy=True on a healthy node",
        Duration::from_secs(20),
        || condition_is(kube, "True"),
        || describe(kube),
    )
    .await?;
    assert_eq!(healthy["reason"], "AMDGPUHealthy");
    assert!(kube.taints(NODE).iter().all(|t| t["key"] != TAINT_KEY));
    // A strategic merge: the kubelet's condition and addresses are still there.
    assert!(
        kube.condition(NODE, "Ready").is_some(),
        "{}",
        describe(kube)
    );
    let status_patches: Vec<_> = kube
        .calls()
        .into_iter()
        .filter(|c| c.path.ends_with("/status") && c.method == "PATCH")
        .collect();
    assert!(
        status_patches
            .iter()
            .all(|c| c.content_type.as_deref() == Some("application/strategic-merge-patch+json")),
        "{status_patches:?}"
    );

    // A tree's kernel log is a saved stream: its clock stops at its end, so the incident
    // closes as soon as the chain is read (on a node, 10 s after its last line). What the
    // agent wrote, in order, shows it set and cleared.
    append_records(&setup.tree, &mes_chain(2, 50_000_000))?;
    let conditions = wait_for(
        "AMDGPUHealthy False for the MES hang, then True again",
        Duration::from_secs(20),
        || {
            let history = kube.condition_history(NODE, "AMDGPUHealthy");
            (history.last().is_some_and(|c| c["status"] == "True") && history.len() >= 3)
                .then_some(history)
        },
        || describe(kube),
    )
    .await?;
    let reasons: Vec<String> = conditions
        .iter()
        .map(|c| {
            format!(
                "{}:{}",
                c["status"].as_str().unwrap_or("?"),
                c["reason"].as_str().unwrap_or("?")
            )
        })
        .collect();
    assert_eq!(
        reasons.first().map(String::as_str),
        Some("True:AMDGPUHealthy"),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r == "False:MesHangReset"),
        "the incident named once the reset joined it: {reasons:?}"
    );
    assert_eq!(
        reasons.last().map(String::as_str),
        Some("True:AMDGPUHealthy"),
        "{reasons:?}"
    );
    let taints = wait_for(
        "the taint put on and taken off",
        Duration::from_secs(10),
        || {
            let history = kube.taint_history(NODE, TAINT_KEY);
            (history.last() == Some(&false) && history.contains(&true)).then_some(history)
        },
        || describe(kube),
    )
    .await?;
    assert_eq!(taints.first(), Some(&false), "{taints:?}");
    let events = kube.events();
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(event["involvedObject"]["kind"], "Node");
    assert_eq!(event["involvedObject"]["name"], NODE);
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["metadata"]["namespace"], "default");
    let message = event["message"].as_str().unwrap_or_default();
    assert!(message.contains("0000:c1:00.0"), "{message}");
    assert!(kube.taints(NODE).iter().any(|t| t["key"] == "dedicated"));
    assert_eq!(
        kube.events().len(),
        1,
        "still one Event: {}",
        describe(kube)
    );
    setup.agent.terminate()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_that_fails_or_hangs_leaves_the_agent_serving_and_is_retried_with_backoff()
-> anyhow::Result<()> {
    let setup = start(&[]).await?;
    let kube = &setup.kube;
    wait_for(
        "AMDGPUHealthy=True",
        Duration::from_secs(20),
        || condition_is(kube, "True"),
        || describe(kube),
    )
    .await?;

    kube.set_mode(Mode::Fail500);
    let failing_since = Instant::now();
    append_records(&setup.tree, &mes_chain(2, 50_000_000))?;
    // Tries after 1, 2 and 4 s: four failed reads of the node within about 8 s.
    let failed = wait_for(
        "four failed tries",
        Duration::from_secs(20),
        || {
            let failed: Vec<Instant> = kube
                .calls()
                .into_iter()
                .filter(|c| c.status == Some(500) && c.at >= failing_since)
                .map(|c| c.at)
                .collect();
            (failed.len() >= 4).then_some(failed)
        },
        || describe(kube),
    )
    .await?;
    let gaps: Vec<Duration> = failed.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.windows(2).all(|g| g[1] > g[0]),
        "the waits between tries grow: {gaps:?}"
    );
    assert!(gaps[0] >= Duration::from_millis(900), "{gaps:?}");

    // The agent still answers while the API server fails.
    let endpoint = setup.agent.endpoint.clone();
    let run = nodectl(&["--endpoint", &endpoint, "node", "show"])?;
    assert_eq!(run.code, 0, "{}", run.stderr);

    // Now it does not answer at all; the agent still serves, then recovers when it does.
    kube.set_mode(Mode::Hang);
    wait_for(
        "a request that hangs",
        Duration::from_secs(40),
        || {
            kube.calls()
                .iter()
                .any(|c| c.status.is_none())
                .then_some(())
        },
        || describe(kube),
    )
    .await?;
    let run = nodectl(&["--endpoint", &endpoint, "node", "show"])?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    kube.set_mode(Mode::Normal);
    // The incident ended while the API server was away (a saved stream's clock stops at its
    // end): the condition is current again, and the incident's Event is recorded after all.
    wait_for(
        "the incident's Event recorded once the API server answers",
        Duration::from_secs(90),
        || Some(kube.events()).filter(|e| e.len() == 1),
        || describe(kube),
    )
    .await?;
    let condition = condition_is(kube, "True").context("AMDGPUHealthy=True")?;
    assert_eq!(condition["reason"], "AMDGPUHealthy");
    setup.agent.terminate()?;
    Ok(())
}
