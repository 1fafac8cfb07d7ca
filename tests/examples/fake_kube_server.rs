//! Benchmark helper for `bench/idle.sh`: the fake Kubernetes API server (`nodectl_e2e::fake_kube`) as a process of its own, with one Node, `bench-node`.
//!
//! `fake_kube_server DIR` writes a kubeconfig for it into DIR, prints `kubeconfig PATH` and
//! serves until it is killed.

use std::io::Write as _;

use anyhow::Context as _;
use nodectl_e2e::fake_kube::FakeKube;
use serde_json::json;

const NODE: &str = "bench-node";

fn node() -> serde_json::Value {
    json!({
        "metadata": { "name": NODE, "labels": { "kubernetes.io/hostname": NODE } },
        "spec": {},
        "status": {
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "kubelet is posting ready status",
                "lastHeartbeatTime": "2026-12-03T10:00:00Z",
                "lastTransitionTime": "2026-12-01T08:00:00Z"
            }],
            "addresses": [{ "type": "InternalIP", "address": "127.0.0.1" }]
        }
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .context("usage: fake_kube_server DIR (where the kubeconfig is written)")?;
    let kube = FakeKube::start(vec![node()]).await?;
    let path = kube.write_kubeconfig(std::path::Path::new(&dir))?;
    println!("kubeconfig {}", path.display());
    std::io::stdout().flush()?;
    // Served by a task of this runtime; `kube` stops it when dropped, so hold it until killed.
    std::future::pending::<()>().await;
    drop(kube);
    Ok(())
}
