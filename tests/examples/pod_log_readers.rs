//! Benchmark driver: the agent's resident memory while many clients ask for a large pod log and never read the reply, and after they leave.
//!
//! Usage: pod_log_readers --grpc 127.0.0.1:PORT --agent-pid PID --pod NS/POD [--readers N]
//! Prints a Markdown table. Run through `bench/pod-log-readers.sh`, which starts the agent.

use std::time::Duration;

use anyhow::{Context as _, bail};
use nodectl_e2e::harness::rss_kib;
use nodectl_e2e::slow_reader::SlowReader;
use nodectl_proto::nodectl::v1 as pb;

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut grpc, mut pid, mut pod, mut readers) = (None, None, None, 150usize);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--grpc" => grpc = Some(value),
            "--agent-pid" => pid = Some(value.parse::<u32>()?),
            "--pod" => pod = Some(value),
            "--readers" => readers = value.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    let (grpc, pid, pod) = (
        grpc.context("--grpc")?,
        pid.context("--agent-pid")?,
        pod.context("--pod")?,
    );
    let (namespace, name) = pod.split_once('/').context("--pod NS/POD")?;
    let request = pb::TailPodLogRequest {
        namespace: namespace.to_owned(),
        pod: name.to_owned(),
        ..Default::default()
    };
    let (idle, _) = rss_kib(pid)?;
    let mut open = Vec::new();
    for _ in 0..readers {
        open.push(SlowReader::start(&grpc, &request).await?);
    }
    let refused = open.iter().filter(|r| r.refused).count();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (during, peak) = rss_kib(pid)?;
    drop(open);
    // The agent notices the closed connections and gives the replies back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (after, _) = rss_kib(pid)?;
    println!(
        "| readers | answered | refused (RESOURCE_EXHAUSTED) | RSS idle MiB | RSS with readers MiB | peak (VmHWM) MiB | RSS 2 s after they left MiB |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {readers} | {} | {refused} | {} | {} | {} | {} |",
        readers - refused,
        mib(idle),
        mib(during),
        mib(peak),
        mib(after)
    );
    Ok(())
}
