//! A kernel-log storm through the agent's pipeline and gRPC stream: 100 000 records a second from a record source that overruns like the kernel's ring, three subscribers (one stalled), memory bounded and flat, every record delivered or reported lost or lagged, none twice.
//!
//! CI runs it for `NODECTL_STORM_SECONDS` (default 5); `BENCHMARKS.md` has the 60 s run.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nodectl_agent::kmsg::pipeline::{KernelLog, KernelLogConfig};
use nodectl_agent::kmsg::reader::RecordSource;
use nodectl_agent::{HostRoot, kmsg, server, snapshot};
use nodectl_proto::nodectl::v1 as pb;
use pb::kernel_stream_message::Message;
use pb::node_diagnostics_client::NodeDiagnosticsClient;

const RATE_PER_SECOND: u64 = 100_000;
/// The kernel's ring holds this many records of this size: a reader further behind loses the
/// oldest (EPIPE), as with the real device.
const RING_RECORDS: u64 = 16_384;

/// Records at a fixed rate from its start, one in a hundred a classified MES timeout, the rest
/// amdgpu lines no rule knows; overruns when its reader falls a ring behind.
struct StormSource {
    started: Instant,
    seconds: u64,
    next_seq: u64,
    /// The last seq written, shared with the test (the total once the storm ends).
    written: Arc<AtomicU64>,
}

impl StormSource {
    fn due(&self) -> u64 {
        let elapsed = self
            .started
            .elapsed()
            .min(Duration::from_secs(self.seconds));
        (elapsed.as_micros() as u64).saturating_mul(RATE_PER_SECOND) / 1_000_000
    }
}

impl RecordSource for StormSource {
    fn read_record(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let due = self.due();
        self.written.store(due, Ordering::SeqCst);
        if self.next_seq > due {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        if due - self.next_seq >= RING_RECORDS {
            // Overwritten: the next read starts at the oldest record still in the ring.
            self.next_seq = due - RING_RECORDS + 1;
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let usec = seq * 10;
        let text = if seq.is_multiple_of(100) {
            format!(
                "3,{seq},{usec},-;amdgpu 0000:c1:00.0: amdgpu: MES failed to respond to msg=REMOVE_QUEUE\n SUBSYSTEM=pci\n DEVICE=+pci:0000:c1:00.0\n"
            )
        } else {
            format!("6,{seq},{usec},-;amdgpu 0000:c1:00.0: amdgpu: storm line {seq}\n")
        };
        let bytes = text.as_bytes();
        let n = bytes.len().min(buf.len());
        buf[..n].copy_from_slice(&bytes[..n]);
        Ok(n)
    }

    fn wait_readable(&mut self, timeout: Duration) -> io::Result<bool> {
        if self.next_seq <= self.due() {
            return Ok(true);
        }
        std::thread::sleep(timeout.min(Duration::from_millis(1)));
        Ok(self.next_seq <= self.due())
    }

    fn now_usec(&self) -> Option<u64> {
        Some(self.next_seq * 10)
    }
}

/// The request of every subscriber here: the whole log from its start, then live.
fn everything_followed() -> pb::StreamKernelEventsRequest {
    pb::StreamKernelEventsRequest {
        since_seq: 0,
        follow: true,
        classes: Vec::new(),
        include_unclassified: true,
        ..Default::default()
    }
}

/// What a reading subscriber saw, checked as it came.
#[derive(Debug, Default)]
struct Accounting {
    delivered: u64,
    reported_lost: u64,
    /// Records skipped over where the stream said it lagged.
    skipped_after_lag: u64,
    /// Records older than the history the agent held when the subscriber came, as the stream
    /// header's `first_seq` says (a subscriber that connects late in a storm).
    before_history: u64,
    last_seq: u64,
}

/// Reads a follow stream to `until` (the storm's last seq), checking that seqs only grow and
/// that each gap is explained by the lost ranges or a lag notice before it.
async fn read_all(
    endpoint: String,
    joins_after: Duration,
    written: Arc<AtomicU64>,
    storm_over: Arc<tokio::sync::Notify>,
) -> anyhow::Result<Accounting> {
    tokio::time::sleep(joins_after).await;
    let mut client = NodeDiagnosticsClient::connect(endpoint).await?;
    let mut stream = client
        .stream_kernel_events(everything_followed())
        .await?
        .into_inner();
    let mut account = Accounting::default();
    let mut lost_since_event = 0u64;
    let mut lagged_since_event = false;
    let over = storm_over.notified();
    tokio::pin!(over);
    let mut total: Option<u64> = None;
    loop {
        if let Some(total) = total
            && account.last_seq >= total
        {
            return Ok(account);
        }
        let message = tokio::select! {
            message = stream.message() => message?,
            () = &mut over, if total.is_none() => {
                total = Some(written.load(Ordering::SeqCst));
                continue;
            }
        };
        let Some(message) = message.and_then(|m| m.message) else {
            anyhow::bail!("the stream ended at seq {}", account.last_seq);
        };
        match message {
            Message::Event(event) => {
                anyhow::ensure!(
                    event.seq > account.last_seq,
                    "seq {} after {}: a record twice or out of order",
                    event.seq,
                    account.last_seq
                );
                let gap = event.seq - account.last_seq - 1;
                if lagged_since_event {
                    account.skipped_after_lag += gap.saturating_sub(lost_since_event);
                } else {
                    anyhow::ensure!(
                        gap == lost_since_event,
                        "records {}..{} vanished: {lost_since_event} reported lost, no lag",
                        account.last_seq + 1,
                        event.seq
                    );
                }
                account.reported_lost += lost_since_event.min(gap);
                account.delivered += 1;
                account.last_seq = event.seq;
                lost_since_event = 0;
                lagged_since_event = false;
            }
            // Only the part after what is already accounted for (a notice at the start of the
            // history may cover records the header put before it).
            Message::RecordsLost(lost) => {
                let from = lost.first_lost_seq.max(account.last_seq + 1);
                lost_since_event += (lost.last_lost_seq + 1).saturating_sub(from);
            }
            Message::Lagged(_) => lagged_since_event = true,
            Message::Header(header) => {
                anyhow::ensure!(account.last_seq == 0, "a second header");
                account.before_history = header.first_seq.saturating_sub(1);
                account.last_seq = account.before_history;
            }
            Message::Incident(_) => {}
        }
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_with_a_stalled_subscriber_stays_bounded_and_accounts_for_every_record()
-> anyhow::Result<()> {
    let seconds: u64 = std::env::var("NODECTL_STORM_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let written = Arc::new(AtomicU64::new(0));
    let source = StormSource {
        started: Instant::now(),
        seconds,
        next_seq: 1,
        written: Arc::clone(&written),
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let classifier = Arc::new(kmsg::Classifier::embedded()?);
    let log = KernelLog::start_with_source(
        source,
        "storm-boot".to_owned(),
        None,
        KernelLogConfig::new(Arc::clone(&classifier)),
        kmsg::metrics::KmsgMetrics::default(),
        cancel.clone(),
    );
    let root = HostRoot::checked(nodectl_e2e::harness::node_fixture("strix-halo-healthy"))?;
    let service = server::DiagnosticsService::new(Arc::new(snapshot::Snapshotter::new(root)))
        .with_kernel_log(Some(log.clone()))
        .with_full_kernel_log(true)
        .with_shutdown(cancel.clone());
    let router = server::router(service).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    let serving = tokio::spawn(router.serve_with_incoming_shutdown(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        cancel.clone().cancelled_owned(),
    ));

    // The stalled subscriber: asks for everything, then reads nothing more.
    let mut stalled_client = NodeDiagnosticsClient::connect(endpoint.clone()).await?;
    let mut stalled = stalled_client
        .stream_kernel_events(everything_followed())
        .await?
        .into_inner();
    let _header = stalled.message().await?;

    let storm_over = Arc::new(tokio::sync::Notify::new());
    // One reads from the start, one joins a second into the storm.
    let readers: Vec<_> = (0..2)
        .map(|i| {
            tokio::spawn(read_all(
                endpoint.clone(),
                Duration::from_secs(i),
                Arc::clone(&written),
                Arc::clone(&storm_over),
            ))
        })
        .collect();

    let start_kib = rss_kib();
    let mut samples = Vec::new();
    let storm_end = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < storm_end {
        tokio::time::sleep(Duration::from_millis(250)).await;
        samples.push(rss_kib());
    }
    // Let the reader drain what the ring still holds, then tell the subscribers the total.
    tokio::time::sleep(Duration::from_millis(500)).await;
    storm_over.notify_waiters();
    let total = written.load(Ordering::SeqCst);
    assert!(
        total >= RATE_PER_SECOND * seconds * 9 / 10,
        "{total} records written"
    );

    for reader in readers {
        let account = tokio::time::timeout(Duration::from_secs(60), reader).await???;
        eprintln!("storm of {total} records over {seconds} s: {account:?}");
        assert_eq!(account.last_seq, total, "{account:?}");
        assert_eq!(
            account.delivered
                + account.reported_lost
                + account.skipped_after_lag
                + account.before_history,
            total,
            "every record delivered, reported lost, skipped after a lag notice, or older than the history the header announced: {account:?}"
        );
        assert!(account.delivered > 0, "{account:?}");
    }

    // Memory: bounded through the storm, and flat in its second half (a stalled subscriber
    // must not make the agent hold what it did not read).
    let peak_kib = samples.iter().copied().max().unwrap_or(0);
    eprintln!("RSS {start_kib} KiB at the start, {peak_kib} KiB at the peak: {samples:?}");
    assert!(
        peak_kib.saturating_sub(start_kib) < 96 * 1024,
        "RSS grew from {start_kib} KiB to {peak_kib} KiB: {samples:?}"
    );
    let half = samples.len() / 2;
    let (first, second) = samples.split_at(half);
    let first_peak = first.iter().copied().max().unwrap_or(0);
    let second_peak = second.iter().copied().max().unwrap_or(0);
    assert!(
        second_peak <= first_peak + 16 * 1024,
        "RSS kept growing: {first_peak} KiB in the first half, {second_peak} KiB in the second: {samples:?}"
    );

    drop(stalled);
    cancel.cancel();
    let _ = serving.await;
    tokio::task::spawn_blocking(move || log.join()).await?;
    Ok(())
}
