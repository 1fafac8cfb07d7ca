//! Serves one StreamKernelEvents call: header, history after the client's cursor per source, then live messages, with `lagged` for a slow client.

use std::pin::Pin;

use nodectl_proto::nodectl::v1 as pb;
use pb::kernel_stream_message::Message;
use tokio_stream::Stream;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use std::collections::BTreeMap;

use nodectl_model::Source;

use super::classify::Class;
use super::pipeline::{Item, KernelLog, StreamFilter};
use crate::feed::{Forward, forward};

pub type KernelStream = Pin<Box<dyn Stream<Item = Result<pb::KernelStreamMessage, Status>> + Send>>;

/// Checks the request and starts the stream; `permit` is held while the stream lives.
pub fn open(
    log: &KernelLog,
    request: &pb::StreamKernelEventsRequest,
    full_log: bool,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Result<KernelStream, Status> {
    let mut classes = Vec::with_capacity(request.classes.len());
    for name in &request.classes {
        let class = Class::parse(name).ok_or_else(|| {
            Status::invalid_argument(format!(
                "classes: unknown class `{name}`; known: {}",
                Class::known()
            ))
        })?;
        classes.push(class);
    }
    let mut sources = Vec::with_capacity(request.sources.len().max(1));
    for name in &request.sources {
        let source = Source::parse(name)
            .filter(|_| !name.is_empty())
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "sources: unknown source `{name}`; known: {}",
                    Source::known()
                ))
            })?;
        if !sources.contains(&source) {
            sources.push(source);
        }
    }
    // A client before sources names none: it knows the kernel log alone.
    if sources.is_empty() {
        sources.push(Source::Kmsg);
    }
    let mut since = BTreeMap::new();
    for (name, cursor) in &request.since_cursor {
        let source = Source::parse(name)
            .filter(|_| !name.is_empty())
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "since_cursor: unknown source `{name}`; known: {}",
                    Source::known()
                ))
            })?;
        since.insert(source, *cursor);
    }
    if request.since_seq > 0 {
        since.entry(Source::Kmsg).or_insert(request.since_seq);
    }
    let filter = StreamFilter {
        since,
        sources,
        follow: request.follow,
        classes,
        include_unclassified: request.include_unclassified,
        full_log,
    };
    let subscription = log
        .subscribe(&filter)
        .map_err(|e| Status::failed_precondition(e.to_string()))?;
    let header = pb::KernelStreamMessage {
        message: Some(Message::Header(subscription.header)),
    };
    let rx = forward(
        subscription.feed,
        Forward {
            first: vec![header],
            message: Box::new(move |item: &Item| {
                // Moved in here, so it is released when the forwarding task ends.
                let _held = &permit;
                item.wanted(&filter).then(|| item.message.clone())
            }),
            lagged: Box::new(|missed| pb::KernelStreamMessage {
                message: Some(Message::Lagged(pb::Lagged { missed })),
            }),
        },
        crate::limits::KERNEL_STREAM_BUFFER,
        log.cancel_token().clone(),
    );
    Ok(Box::pin(ReceiverStream::new(rx).map(Ok)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::io;
    use std::sync::Arc;
    use std::sync::mpsc::{Receiver, channel};
    use std::time::Duration;

    use tokio_stream::StreamExt as _;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::kmsg::Classifier;
    use crate::kmsg::metrics::KmsgMetrics;
    use crate::kmsg::pipeline::KernelLogConfig;
    use crate::kmsg::reader::RecordSource;

    /// Records fed by the test while the reader thread runs.
    struct ChannelSource {
        rx: Receiver<Vec<u8>>,
        next: Option<Vec<u8>>,
    }

    impl RecordSource for ChannelSource {
        fn read_record(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let bytes = match self.next.take() {
                Some(b) => b,
                None => self
                    .rx
                    .try_recv()
                    .map_err(|_| io::Error::from(io::ErrorKind::WouldBlock))?,
            };
            buf[..bytes.len()].copy_from_slice(&bytes);
            Ok(bytes.len())
        }

        fn wait_readable(&mut self, timeout: Duration) -> io::Result<bool> {
            if self.next.is_some() {
                return Ok(true);
            }
            Ok(match self.rx.recv_timeout(timeout) {
                Ok(b) => {
                    self.next = Some(b);
                    true
                }
                Err(_) => false,
            })
        }
    }

    async fn next(stream: &mut KernelStream, wait: Duration) -> Option<Message> {
        match tokio::time::timeout(wait, stream.next()).await {
            Ok(Some(Ok(m))) => m.message,
            _ => None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_stream_is_told_it_lagged_and_an_active_one_gets_everything() {
        let (tx, rx) = channel();
        let mut config = KernelLogConfig::new(Arc::new(Classifier::embedded().unwrap()));
        config.broadcast_capacity = 16;
        let cancel = CancellationToken::new();
        let log = KernelLog::start_with_source(
            ChannelSource { rx, next: None },
            "b".into(),
            None,
            config,
            KmsgMetrics::default(),
            cancel.clone(),
        );
        let request = pb::StreamKernelEventsRequest {
            since_seq: 0,
            follow: true,
            classes: Vec::new(),
            include_unclassified: true,
            ..Default::default()
        };
        let permits = Arc::new(tokio::sync::Semaphore::new(2));
        let mut active = open(
            &log,
            &request,
            true,
            permits.clone().try_acquire_owned().unwrap(),
        )
        .unwrap();
        let mut stalled = open(
            &log,
            &request,
            true,
            permits.clone().try_acquire_owned().unwrap(),
        )
        .unwrap();
        assert!(matches!(
            next(&mut active, Duration::from_secs(10)).await,
            Some(Message::Header(_))
        ));

        let total: u64 = 400;
        let mut seen = Vec::new();
        for seq in 1..=total {
            tx.send(format!("6,{seq},{seq},-;line {seq}\n").into_bytes())
                .unwrap();
            if seq % 8 == 0 {
                while (seen.len() as u64) < seq {
                    match next(&mut active, Duration::from_secs(10)).await {
                        Some(Message::Event(e)) => seen.push(e.seq),
                        other => panic!("active stream got {other:?}"),
                    }
                }
            }
        }
        assert_eq!(seen, (1..=total).collect::<Vec<_>>());

        let mut received = Vec::new();
        let mut missed = 0;
        assert!(matches!(
            next(&mut stalled, Duration::from_secs(10)).await,
            Some(Message::Header(_))
        ));
        while let Some(message) = next(&mut stalled, Duration::from_secs(2)).await {
            match message {
                Message::Event(e) => received.push(e.seq),
                Message::Lagged(l) => missed += l.missed,
                other => panic!("stalled stream got {other:?}"),
            }
        }
        assert!(missed > 0, "the stalled stream was never told it lagged");
        assert_eq!(received.len() as u64 + missed, total);
        assert!(received.windows(2).all(|w| w[0] < w[1]));
        cancel.cancel();
    }
}
