//! Benchmark helper for `bench/idle.sh`: the fake Kubernetes API server (`nodectl_e2e::fake_kube`) as a process of its own, with one Node, `bench-node`.
//!
//! `fake_kube_server DIR` writes a kubeconfig for it into DIR, prints `kubeconfig PATH` and
//! serves until it is killed.

use std::io::Write as _;

use anyhow::Context as _;
use nodectl_e2e::fake_kube::{FakeKube, kubelet_node};

const NODE: &str = "bench-node";

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .context("usage: fake_kube_server DIR (where the kubeconfig is written)")?;
    let kube = FakeKube::start(vec![kubelet_node(NODE)]).await?;
    let path = kube.write_kubeconfig(std::path::Path::new(&dir))?;
    println!("kubeconfig {}", path.display());
    std::io::stdout().flush()?;
    // Served by a task of this runtime; `kube` stops it when dropped, so hold it until killed.
    std::future::pending::<()>().await;
    drop(kube);
    Ok(())
}
