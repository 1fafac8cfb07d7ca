//! Benchmark driver: agent GetSnapshot latency over gRPC vs. a Prometheus scrape, interleaved, plus both RSS.
//!
//! Usage: snapshot_latency --grpc URL --http URL --agent-pid PID --exporter-pid PID [--iterations N]
//! Prints a Markdown table. Run through `bench/snapshot.sh`, which starts both servers.
//!
//! The scrape is timed to the last byte of its body, unparsed; the snapshot is timed the same way
//! (reply bytes, like for like) and, as a client program sees it, decoded into a `Snapshot`.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::{Buf as _, Bytes};
use nodectl_e2e::harness::rss_kib;
use nodectl_proto::nodectl::v1 as pb;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

struct Options {
    grpc: String,
    http: String,
    agent_pid: u32,
    exporter_pid: u32,
    iterations: usize,
}

fn parse_options() -> anyhow::Result<Options> {
    let mut args = std::env::args().skip(1);
    let (mut grpc, mut http, mut agent_pid, mut exporter_pid, mut iterations) =
        (None, None, None, None, 500);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--grpc" => grpc = Some(value),
            "--http" => http = Some(value),
            "--agent-pid" => agent_pid = Some(value.parse()?),
            "--exporter-pid" => exporter_pid = Some(value.parse()?),
            "--iterations" => iterations = value.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(Options {
        grpc: grpc.context("--grpc")?,
        http: http.context("--http")?,
        agent_pid: agent_pid.context("--agent-pid")?,
        exporter_pid: exporter_pid.context("--exporter-pid")?,
        iterations,
    })
}

/// A GetSnapshotRequest out, the reply's message bytes back undecoded.
#[derive(Debug, Clone, Copy, Default)]
struct RawReplyCodec;

impl Codec for RawReplyCodec {
    type Encode = pb::GetSnapshotRequest;
    type Decode = Bytes;
    type Encoder = RawReplyCodec;
    type Decoder = RawReplyCodec;

    fn encoder(&mut self) -> Self::Encoder {
        *self
    }

    fn decoder(&mut self) -> Self::Decoder {
        *self
    }
}

impl Encoder for RawReplyCodec {
    type Item = pb::GetSnapshotRequest;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        prost::Message::encode(&item, dst).map_err(|e| Status::internal(e.to_string()))
    }
}

impl Decoder for RawReplyCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let options = parse_options()?;
    let channel = tonic::transport::Endpoint::from_shared(options.grpc.clone())?
        .connect()
        .await
        .context("connecting to the agent")?;
    let mut typed = pb::node_diagnostics_client::NodeDiagnosticsClient::new(channel.clone());
    let mut raw = tonic::client::Grpc::new(channel);
    let get_snapshot = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/nodectl.v1.NodeDiagnostics/GetSnapshot",
    );
    // reqwest is built without a bundled TLS provider; plain http needs none, but the builder asks.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();

    let warmup = options.iterations / 10 + 1;
    let mut raw_times = Vec::with_capacity(options.iterations);
    let mut decoded_times = Vec::with_capacity(options.iterations);
    let mut scrape_times = Vec::with_capacity(options.iterations);
    let mut snapshot_bytes = 0usize;
    let mut scrape_bytes = 0usize;
    for i in 0..warmup + options.iterations {
        // Interleaved so that all three see the same machine load.
        let start = Instant::now();
        raw.ready().await?;
        let reply = raw
            .unary(
                tonic::Request::new(pb::GetSnapshotRequest::default()),
                get_snapshot.clone(),
                RawReplyCodec,
            )
            .await?
            .into_inner();
        let raw_time = start.elapsed();
        let start = Instant::now();
        let snapshot = typed
            .get_snapshot(pb::GetSnapshotRequest::default())
            .await?
            .into_inner();
        let decoded_time = start.elapsed();
        let start = Instant::now();
        let body = http
            .get(&options.http)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        let scrape_time = start.elapsed();
        if i >= warmup {
            raw_times.push(raw_time);
            decoded_times.push(decoded_time);
            scrape_times.push(scrape_time);
        }
        // Two replies taken at different instants; the typed one must decode.
        if snapshot.host.is_none() {
            bail!("the decoded snapshot has no host");
        }
        snapshot_bytes = reply.len();
        scrape_bytes = body.len();
    }
    raw_times.sort();
    decoded_times.sort();
    scrape_times.sort();
    let (agent_rss, agent_hwm) = rss_kib(options.agent_pid)?;
    let (exporter_rss, exporter_hwm) = rss_kib(options.exporter_pid)?;
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    let median_ratio = ratio(percentile(&raw_times, 0.5), percentile(&scrape_times, 0.5));
    let rss_ratio = agent_rss as f64 / exporter_rss as f64;

    println!(
        "| measure | GetSnapshot, reply bytes | GetSnapshot, decoded | node_exporter drm scrape, body bytes | ratio bytes/scrape | ratio decoded/scrape |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, p) in [("median ms", 0.5), ("p90 ms", 0.9), ("p99 ms", 0.99)] {
        let (a, d, b) = (
            percentile(&raw_times, p),
            percentile(&decoded_times, p),
            percentile(&scrape_times, p),
        );
        println!(
            "| {name} | {} | {} | {} | {:.2} | {:.2} |",
            ms(a),
            ms(d),
            ms(b),
            ratio(a, b),
            ratio(d, b)
        );
    }
    println!("| RSS after run (KiB) | {agent_rss} | | {exporter_rss} | {rss_ratio:.2} | |");
    println!(
        "| peak RSS (KiB) | {agent_hwm} | | {exporter_hwm} | {:.2} | |",
        agent_hwm as f64 / exporter_hwm as f64
    );
    println!("| response bytes | {snapshot_bytes} | | {scrape_bytes} | | |");
    println!();
    println!(
        "iterations: {} each (after {warmup} warm-up), interleaved; median latency ratio {median_ratio:.2} (reply bytes vs body bytes; target ≤ 0.5), RSS ratio {rss_ratio:.2} (target ≤ 0.4)",
        options.iterations
    );
    Ok(())
}
