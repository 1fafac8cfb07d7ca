//! Benchmark helper for `bench/kmsg.sh`: write-to-receipt latency, a kernel log storm, and a stalled subscriber.
//!
//! `kmsg_bench latency ENDPOINT COUNT` prints p50/p99 of /dev/kmsg write → gRPC receipt;
//! `kmsg_bench storm COUNT` writes COUNT records to /dev/kmsg as fast as it can;
//! `kmsg_bench stall ENDPOINT` opens a follow stream and never reads it.

use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nodectl_proto::nodectl::v1 as pb;
use pb::kernel_stream_message::Message;
use pb::node_diagnostics_client::NodeDiagnosticsClient;

fn follow_request() -> pb::StreamKernelEventsRequest {
    pb::StreamKernelEventsRequest {
        since_seq: u64::MAX - 1,
        follow: true,
        classes: Vec::new(),
        include_unclassified: true,
        ..Default::default()
    }
}

async fn latency(endpoint: String, count: usize) -> anyhow::Result<()> {
    let mut client = NodeDiagnosticsClient::connect(endpoint).await?;
    let mut stream = client
        .stream_kernel_events(follow_request())
        .await?
        .into_inner();
    // The header says the stream is open.
    stream.message().await?.context("no header")?;
    let mut kmsg = std::fs::OpenOptions::new().write(true).open("/dev/kmsg")?;
    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        let tag = format!("nodectl-bench-latency-{}-{i}", std::process::id());
        let start = Instant::now();
        kmsg.write_all(format!("<12>{tag}\n").as_bytes())?;
        loop {
            let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .context("no record within 10 s")??
                .context("stream ended")?;
            if let Some(Message::Event(e)) = message.message
                && e.message == tag
            {
                break;
            }
        }
        samples.push(start.elapsed());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    samples.sort();
    let pick = |q: f64| {
        let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[index.min(samples.len() - 1)]
    };
    println!(
        "latency records={} p50_us={} p99_us={} max_us={}",
        samples.len(),
        pick(0.50).as_micros(),
        pick(0.99).as_micros(),
        pick(1.0).as_micros()
    );
    Ok(())
}

fn storm(count: usize) -> anyhow::Result<()> {
    let mut kmsg = std::fs::OpenOptions::new().write(true).open("/dev/kmsg")?;
    let start = Instant::now();
    for i in 0..count {
        let line = if i % 10 == 0 {
            format!(
                "<12>nodectl-bench-storm {i}: amdgpu 0000:c1:00.0: amdgpu: MES ring buffer is full.\n"
            )
        } else {
            format!("<14>nodectl-bench-storm {i}: usb 1-1: reset high-speed USB device number 2\n")
        };
        kmsg.write_all(line.as_bytes())?;
    }
    println!(
        "storm records={count} seconds={:.2}",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn stall(endpoint: String) -> anyhow::Result<()> {
    let mut client = NodeDiagnosticsClient::connect(endpoint).await?;
    let stream = client
        .stream_kernel_events(follow_request())
        .await?
        .into_inner();
    println!("stalled");
    std::io::stdout().flush()?;
    // Hold the stream without reading it until killed.
    tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
    drop(stream);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["latency", endpoint, count] => latency(endpoint.to_owned(), count.parse()?).await,
        ["storm", count] => storm(count.parse()?),
        ["stall", endpoint] => stall(endpoint.to_owned()).await,
        _ => {
            anyhow::bail!("usage: kmsg_bench latency ENDPOINT COUNT | storm COUNT | stall ENDPOINT")
        }
    }
}
