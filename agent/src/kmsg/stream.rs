//! Serves one StreamKernelEvents call: header, history after since_seq, then live messages, with `lagged` for a slow client.

use std::pin::Pin;

use nodectl_proto::nodectl::v1 as pb;
use pb::kernel_stream_message::Message;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::classify::Class;
use super::hub::{KernelLog, StreamFilter};

/// Messages buffered per stream between the broadcast and the client's connection.
const STREAM_BUFFER: usize = 64;

pub type KernelStream = Pin<Box<dyn Stream<Item = Result<pb::KernelStreamMessage, Status>> + Send>>;

/// Checks the request and starts the stream.
pub fn open(
    log: &KernelLog,
    request: &pb::StreamKernelEventsRequest,
) -> Result<KernelStream, Status> {
    let mut classes = Vec::with_capacity(request.classes.len());
    for name in &request.classes {
        let class = Class::parse(name).ok_or_else(|| {
            Status::invalid_argument(format!(
                "classes: unknown class `{name}`; known: hang, reset, fault, oom, firmware, info"
            ))
        })?;
        classes.push(class);
    }
    let filter = StreamFilter {
        since_seq: request.since_seq,
        follow: request.follow,
        classes,
        include_unclassified: request.include_unclassified,
    };
    let subscription = log
        .subscribe(&filter)
        .map_err(|e| Status::failed_precondition(e.to_string()))?;
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    let cancel = log.cancel_token().clone();
    tokio::spawn(async move {
        let header = pb::KernelStreamMessage {
            message: Some(Message::Header(subscription.header)),
        };
        if tx.send(Ok(header)).await.is_err() {
            return;
        }
        if subscription.missed_before_backlog > 0 {
            let lagged = pb::KernelStreamMessage {
                message: Some(Message::Lagged(pb::Lagged {
                    missed: subscription.missed_before_backlog,
                })),
            };
            if tx.send(Ok(lagged)).await.is_err() {
                return;
            }
        }
        for item in subscription.backlog {
            if tx.send(Ok(item.message.clone())).await.is_err() {
                return;
            }
        }
        let Some(mut live) = subscription.live else {
            return;
        };
        loop {
            let received = tokio::select! {
                r = live.recv() => r,
                () = tx.closed() => return,
                () = cancel.cancelled() => return,
            };
            let message = match received {
                Ok(item) => {
                    if !item.wanted(&filter) {
                        continue;
                    }
                    item.message.clone()
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => pb::KernelStreamMessage {
                    message: Some(Message::Lagged(pb::Lagged { missed })),
                },
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if tx.send(Ok(message)).await.is_err() {
                return;
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}
