//! Prometheus text on `--metrics-listen`: the kernel log counters and the gauges of a fresh snapshot per scrape.

use std::sync::atomic::AtomicU64;

use nodectl_model::snapshot::{self as model, ParameterValue};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::kmsg::metrics::KmsgMetrics;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FindingLabels {
    id: String,
    severity: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FirmwareLabels {
    card: String,
    firmware: String,
    version: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CardLabels {
    card: String,
    bdf: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// A memory gauge: name, help, and how to read it from a card's memory.
type MemoryGauge = (
    &'static str,
    &'static str,
    fn(&model::Memory) -> Option<u64>,
);

fn card_gauge(
    registry: &mut Registry,
    name: &str,
    help: &str,
    cards: &[model::Card],
    value: impl Fn(&model::Card) -> Option<f64>,
) {
    let family = Family::<CardLabels, FloatGauge>::default();
    let mut any = false;
    for card in cards {
        if let Some(v) = value(card) {
            family
                .get_or_create(&CardLabels {
                    card: card.name.clone(),
                    bdf: card.bdf.clone().unwrap_or_default(),
                })
                .set(v);
            any = true;
        }
    }
    if any {
        registry.register(name, help, family);
    }
}

#[allow(clippy::cast_precision_loss)]
fn f(v: u64) -> f64 {
    v as f64
}

/// Adds the gauges of a snapshot (only the values it holds).
fn register_snapshot(registry: &mut Registry, s: &model::Snapshot) {
    card_gauge(
        registry,
        "nodectl_gpu_sclk_mhz",
        "Current shader clock",
        &s.cards,
        |c| {
            c.samples
                .last()
                .and_then(|x| x.sclk_mhz)
                .map(f64::from)
                .or_else(|| c.hwmon.as_ref()?.sclk_hz.map(|hz| f(hz) / 1e6))
        },
    );
    card_gauge(
        registry,
        "nodectl_gpu_busy_percent",
        "GPU busy percentage",
        &s.cards,
        |c| c.gpu_busy_percent.map(f64::from),
    );
    card_gauge(
        registry,
        "nodectl_gpu_temperature_celsius",
        "GPU edge temperature",
        &s.cards,
        |c| {
            c.hwmon
                .as_ref()?
                .temp_edge_millicelsius
                .map(|m| f(m.unsigned_abs()) * m.signum() as f64 / 1000.0)
        },
    );
    card_gauge(
        registry,
        "nodectl_gpu_power_watts",
        "GPU package power",
        &s.cards,
        |c| c.hwmon.as_ref()?.power_microwatts.map(|w| f(w) / 1e6),
    );
    let memory: [MemoryGauge; 4] = [
        ("nodectl_gpu_vram_total_bytes", "VRAM size", |m| {
            m.vram_total_bytes
        }),
        ("nodectl_gpu_vram_used_bytes", "VRAM in use", |m| {
            m.vram_used_bytes
        }),
        ("nodectl_gpu_gtt_total_bytes", "GTT size", |m| {
            m.gtt_total_bytes
        }),
        ("nodectl_gpu_gtt_used_bytes", "GTT in use", |m| {
            m.gtt_used_bytes
        }),
    ];
    for (name, help, get) in memory {
        card_gauge(registry, name, help, &s.cards, |c| get(&c.memory).map(f));
    }

    let firmware = Family::<FirmwareLabels, Gauge>::default();
    let mut any_firmware = false;
    for card in &s.cards {
        for (name, version) in &card.firmware {
            firmware
                .get_or_create(&FirmwareLabels {
                    card: card.name.clone(),
                    firmware: name.clone(),
                    version: version.clone(),
                })
                .set(1);
            any_firmware = true;
        }
    }
    if any_firmware {
        registry.register(
            "nodectl_gpu_firmware_info",
            "Firmware versions of each card (value 1; the version is a label)",
            firmware,
        );
    }

    if let Some(value) = s
        .module_parameters
        .amdgpu
        .get("cwsr_enable")
        .and_then(|p| match p {
            ParameterValue::Integer(i) => Some(*i),
            ParameterValue::Unsigned(u) => i64::try_from(*u).ok(),
            ParameterValue::Hex(_) => p.hex_value().and_then(|u| i64::try_from(u).ok()),
            ParameterValue::Flag(b) => Some(i64::from(*b)),
            ParameterValue::Text(t) => t.trim().parse().ok(),
        })
    {
        let gauge = Gauge::<i64>::default();
        gauge.set(value);
        registry.register(
            "nodectl_amdgpu_cwsr_enable",
            "amdgpu.cwsr_enable module parameter",
            gauge,
        );
    }

    let findings = Family::<FindingLabels, Gauge>::default();
    for finding in &s.findings {
        let severity = finding.severity.as_str().to_owned();
        findings
            .get_or_create(&FindingLabels {
                id: finding.id.clone(),
                severity,
            })
            .inc();
    }
    if !s.findings.is_empty() {
        registry.register(
            "nodectl_findings",
            "Findings of the checks, by id",
            findings,
        );
    }
}

/// Reads that did not return, and reply bytes held for clients, at the moment of a scrape.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadState {
    pub host_reads_stuck: usize,
    pub pod_log_reads_stuck: usize,
    pub pod_log_reply_bytes_held: usize,
}

impl ReadState {
    /// This process's state now.
    pub fn now() -> Self {
        let pod_logs = crate::pod_log::reads::shared();
        Self {
            host_reads_stuck: *crate::collect::read_pool::shared().stuck_reads().borrow(),
            pod_log_reads_stuck: *pod_logs.stuck_reads().borrow(),
            pod_log_reply_bytes_held: pod_logs.reply_bytes_held(),
        }
    }
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: usize) {
    let gauge = Gauge::<i64>::default();
    gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
    registry.register(name, help, gauge);
}

/// Renders the Prometheus text format (0.0.4) of the counters, the reads stuck now, and a
/// snapshot's gauges.
pub fn render(
    metrics: &KmsgMetrics,
    reads: ReadState,
    snapshot: Option<&model::Snapshot>,
) -> String {
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    gauge(
        &mut registry,
        "nodectl_host_reads_stuck",
        "Host file reads that did not return within their deadline and have not returned since (a hung SMU)",
        reads.host_reads_stuck,
    );
    gauge(
        &mut registry,
        "nodectl_pod_log_reads_stuck",
        "Pod log reads that did not return within their deadline and have not returned since (a stuck file system under /var/log/pods)",
        reads.pod_log_reads_stuck,
    );
    gauge(
        &mut registry,
        "nodectl_pod_log_reply_bytes_held",
        "Bytes of pod log replies read and not yet taken by their clients",
        reads.pod_log_reply_bytes_held,
    );
    if let Some(snapshot) = snapshot {
        register_snapshot(&mut registry, snapshot);
    }
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry) {
        tracing::error!("encoding metrics failed: {e}");
    }
    with_sorted_samples(&out)
}

/// The exposition with each family's samples in label order: a family's label sets come out of
/// a hash map, and two scrapes of the same node should read (and diff) the same.
fn with_sorted_samples(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut samples: Vec<&str> = Vec::new();
    let flush = |samples: &mut Vec<&str>, out: &mut String| {
        samples.sort_unstable();
        for sample in samples.drain(..) {
            out.push_str(sample);
            out.push('\n');
        }
    };
    for line in text.lines() {
        if line.starts_with('#') {
            flush(&mut samples, &mut out);
            out.push_str(line);
            out.push('\n');
        } else {
            samples.push(line);
        }
    }
    flush(&mut samples, &mut out);
    out
}

/// Serves `GET /metrics` on `listener` until `shutdown`; each scrape takes a snapshot.
pub async fn serve(
    listener: tokio::net::TcpListener,
    snapshotter: std::sync::Arc<crate::snapshot::Snapshotter>,
    metrics: KmsgMetrics,
    shutdown: tokio_util::sync::CancellationToken,
    tls: Option<crate::tls::ReloadingConfig>,
) -> std::io::Result<()> {
    use axum::http::header::CONTENT_TYPE;
    let handler = move || {
        let snapshotter = std::sync::Arc::clone(&snapshotter);
        let metrics = metrics.clone();
        async move {
            let snapshot = snapshotter
                .snapshot(crate::snapshot::SampleOptions::default())
                .await
                // The counters are still served; the missing gauges are said in the log.
                .inspect_err(|e| tracing::warn!("metrics scrape without snapshot gauges: {e}"))
                .ok();
            (
                [(
                    CONTENT_TYPE,
                    prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                )],
                render(&metrics, ReadState::now(), snapshot.as_deref()),
            )
        }
    };
    let app = axum::Router::new().route("/metrics", axum::routing::get(handler));
    // hyper's own connection loop rather than `axum::serve`, for its header-read timeout.
    let mut listener = crate::listener::GuardedListener::new(listener, "metrics");
    let handshake_failures = crate::listener::RareWarning::default();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => return Ok(()),
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let stop = shutdown.clone();
        let tls = tls.clone();
        let handshake_failures = handshake_failures.clone();
        tokio::spawn(async move {
            let served = match tls {
                None => serve_connection(stream, service, stop).await,
                Some(tls) => match tls.accept(stream).await {
                    Ok(stream) => serve_connection(stream, service, stop).await,
                    Err(e) => {
                        handshake_failures
                            .warn("metrics", &format!("TLS handshake from {peer} failed: {e}"));
                        return;
                    }
                },
            };
            if let Err(e) = served {
                tracing::debug!("metrics connection from {peer}: {e}");
            }
        });
    }
}

/// One HTTP/1.1 connection of the metrics port, plaintext or after TLS, ended gracefully when
/// the agent stops.
async fn serve_connection<IO, S>(
    stream: IO,
    service: S,
    stop: tokio_util::sync::CancellationToken,
) -> Result<(), hyper::Error>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming> + Send,
    S::Future: Send + 'static,
    S::ResBody: Send + 'static,
    <S::ResBody as http_body::Body>::Data: Send,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(crate::limits::METRICS_HEADER_READ_TIMEOUT)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        served = connection.as_mut() => served,
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use nodectl_model::Class;

    #[test]
    fn samples_of_a_family_come_in_label_order() {
        let text = "# HELP a A.\n# TYPE a gauge\na{x=\"2\"} 1\na{x=\"1\"} 1\n# EOF\n";
        assert_eq!(
            with_sorted_samples(text),
            "# HELP a A.\n# TYPE a gauge\na{x=\"1\"} 1\na{x=\"2\"} 1\n# EOF\n"
        );
    }

    #[test]
    fn renders_counters_and_present_gauges_only() {
        let m = KmsgMetrics::default();
        m.count_event(Class::Hang, "mes_timeout");
        m.count_lost(3);
        m.count_incident("mes_hang_reset");
        let snapshot = model::Snapshot {
            cards: vec![model::Card {
                name: "card1".into(),
                bdf: Some("0000:c1:00.0".into()),
                gpu_busy_percent: Some(42),
                firmware: [("mes_fw_version".to_owned(), "0x00000080".to_owned())].into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = render(&m, ReadState::default(), Some(&snapshot));
        assert!(
            text.contains(r#"nodectl_kernel_events_total{class="hang",id="mes_timeout"} 1"#),
            "{text}"
        );
        assert!(text.contains("nodectl_kmsg_records_lost_total 3"), "{text}");
        assert!(
            text.contains(r#"nodectl_incidents_total{kind="mes_hang_reset"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"nodectl_gpu_busy_percent{card="card1",bdf="0000:c1:00.0"} 42"#),
            "{text}"
        );
        assert!(text.contains(r#"version="0x00000080""#), "{text}");
        assert!(!text.contains("nodectl_gpu_power_watts"), "{text}");
    }
}
