//! A budget of reply bytes the agent may hold for slow clients, and the response body that gives a reply's bytes back once the client has taken them (or after a deadline).
//!
//! A gRPC reply leaves the handler long before it leaves the machine: tonic encodes it, hyper
//! hands it to HTTP/2, and HTTP/2 keeps it until the peer's flow-control window lets it out. A
//! client that does not read keeps it there, so a handler that frees its buffer has freed
//! nothing. Here the reservation travels with the bytes themselves: every piece handed to
//! HTTP/2 owns a share of it, and it returns to the budget only when the last piece is dropped
//! (written to the socket, or thrown away with a reset stream). The body gives HTTP/2 one piece
//! at a time, so a peer with a small window holds little beyond it in the connection, and a
//! reply not taken within its deadline is reset.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;

/// Bytes of replies that may be held at once.
#[derive(Debug, Clone)]
pub struct ReplyBudget {
    semaphore: Arc<Semaphore>,
    total_bytes: usize,
}

impl ReplyBudget {
    pub fn new(total_bytes: usize) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(total_bytes)),
            total_bytes,
        }
    }

    /// Reserves `bytes`, or `None` when the budget has not that much left.
    pub fn try_reserve(&self, bytes: usize) -> Option<HeldBytes> {
        let permits = u32::try_from(bytes).ok()?;
        let permit = Arc::clone(&self.semaphore)
            .try_acquire_many_owned(permits)
            .ok()?;
        Some(HeldBytes {
            permit: Some(permit),
            budget: self.clone(),
            filled: false,
        })
    }

    /// Bytes reserved now.
    pub fn held_bytes(&self) -> usize {
        self.total_bytes
            .saturating_sub(self.semaphore.available_permits())
    }

    pub fn total_bytes(&self) -> usize {
        self.total_bytes
    }
}

/// A reservation of reply bytes; returned to the budget when dropped.
#[derive(Debug)]
pub struct HeldBytes {
    permit: Option<OwnedSemaphorePermit>,
    budget: ReplyBudget,
    /// A reply was built in it (not a reservation given back unused by a refused request).
    filled: bool,
}

impl HeldBytes {
    /// Keeps only `bytes` of the reservation (a read reserves the most it may read, then what it
    /// read), and marks it as holding a reply.
    pub fn shrink_to(&mut self, bytes: usize) {
        self.filled = true;
        if let Some(permit) = &mut self.permit {
            let extra = permit.num_permits().saturating_sub(bytes);
            if extra > 0 {
                drop(permit.split(extra));
            }
        }
    }

    pub fn bytes(&self) -> usize {
        self.permit
            .as_ref()
            .map_or(0, OwnedSemaphorePermit::num_permits)
    }
}

impl Drop for HeldBytes {
    fn drop(&mut self) {
        drop(self.permit.take());
        // The last reply of a burst has left: its buffers were large allocations, which glibc
        // keeps mapped once its mmap threshold has risen past them. Hand them back, or the
        // agent stays at the burst's peak for the rest of its life.
        if self.filled && self.budget.held_bytes() == 0 {
            crate::resident::release_freed_memory();
        }
    }
}

/// The reservation a handler attaches to its response (in the response's extensions), for
/// [`HeldReplies`] to tie to the response's bytes.
#[derive(Debug, Clone)]
pub struct ReplyHold(Arc<Mutex<Option<HeldBytes>>>);

impl ReplyHold {
    pub fn new(held: HeldBytes) -> Self {
        Self(Arc::new(Mutex::new(Some(held))))
    }

    fn take(&self) -> Option<HeldBytes> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// A gRPC service whose responses that carry a [`ReplyHold`] keep it until their bytes are sent.
#[derive(Debug, Clone)]
pub struct HeldReplies<S> {
    inner: S,
    chunk_bytes: usize,
    send_deadline: Duration,
}

impl<S> HeldReplies<S> {
    pub fn new(inner: S, chunk_bytes: usize, send_deadline: Duration) -> Self {
        Self {
            inner,
            chunk_bytes: chunk_bytes.max(1),
            send_deadline,
        }
    }
}

impl<S: NamedService> NamedService for HeldReplies<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for HeldReplies<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let response = self.inner.call(request);
        let (chunk_bytes, send_deadline) = (self.chunk_bytes, self.send_deadline);
        Box::pin(async move {
            let mut response = response.await?;
            let Some(held) = response
                .extensions_mut()
                .remove::<ReplyHold>()
                .and_then(|hold| hold.take())
            else {
                return Ok(response);
            };
            Ok(response
                .map(|body| Body::new(HeldBody::new(body, held, chunk_bytes, send_deadline))))
        })
    }
}

/// What the pieces of one reply share: its reservation, and how many pieces are still alive.
struct Pieces {
    _held: HeldBytes,
    outstanding: AtomicUsize,
    all_dropped: Notify,
}

/// The owner of one encoded chunk of a reply, shared by the pieces cut from it.
struct Piece {
    bytes: Bytes,
    pieces: Arc<Pieces>,
}

impl AsRef<[u8]> for Piece {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Piece {
    fn drop(&mut self) {
        if self.pieces.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.pieces.all_dropped.notify_one();
        }
    }
}

struct HeldBody {
    inner: Body,
    pieces: Arc<Pieces>,
    /// The rest of the chunk being handed out.
    pending: Bytes,
    /// The trailers (gRPC status), given only once every piece is gone.
    last: Option<Frame<Bytes>>,
    ended: bool,
    chunk_bytes: usize,
    send_deadline: Duration,
    deadline: tokio::time::Instant,
    waiting: Option<Pin<Box<dyn Future<Output = bool> + Send>>>,
}

impl HeldBody {
    fn new(inner: Body, held: HeldBytes, chunk_bytes: usize, send_deadline: Duration) -> Self {
        Self {
            inner,
            pieces: Arc::new(Pieces {
                _held: held,
                outstanding: AtomicUsize::new(0),
                all_dropped: Notify::new(),
            }),
            pending: Bytes::new(),
            last: None,
            ended: false,
            chunk_bytes,
            send_deadline,
            deadline: tokio::time::Instant::now() + send_deadline,
            waiting: None,
        }
    }

    fn late(&self) -> tonic::Status {
        tonic::Status::deadline_exceeded(format!(
            "the client did not take the reply within {} s",
            self.send_deadline.as_secs()
        ))
    }
}

impl http_body::Body for HeldBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        loop {
            if !this.pending.is_empty() {
                if tokio::time::Instant::now() >= this.deadline {
                    return Poll::Ready(Some(Err(this.late())));
                }
                let n = this.pending.len().min(this.chunk_bytes);
                return Poll::Ready(Some(Ok(Frame::data(this.pending.split_to(n)))));
            }
            if this.ended || this.last.is_some() {
                // The status goes out only after the data has: a reset now still drops what
                // HTTP/2 holds, and gives the bytes back.
                if this.pieces.outstanding.load(Ordering::Acquire) > 0 {
                    let waiting = this.waiting.get_or_insert_with(|| {
                        let pieces = Arc::clone(&this.pieces);
                        let deadline = this.deadline;
                        Box::pin(async move {
                            tokio::time::timeout_at(deadline, async {
                                while pieces.outstanding.load(Ordering::Acquire) > 0 {
                                    pieces.all_dropped.notified().await;
                                }
                            })
                            .await
                            .is_ok()
                        })
                    });
                    match waiting.as_mut().poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(false) => return Poll::Ready(Some(Err(this.late()))),
                        Poll::Ready(true) => this.waiting = None,
                    }
                }
                return Poll::Ready(this.last.take().map(Ok));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        this.pieces.outstanding.fetch_add(1, Ordering::AcqRel);
                        this.pending = Bytes::from_owner(Piece {
                            bytes: data,
                            pieces: Arc::clone(&this.pieces),
                        });
                    }
                    Err(frame) => this.last = Some(frame),
                },
                Poll::Ready(None) => this.ended = true,
                Poll::Ready(Some(Err(status))) => return Poll::Ready(Some(Err(status))),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.last.is_none() && self.pending.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    #[test]
    fn reservations_shrink_and_return() {
        let budget = ReplyBudget::new(100);
        let mut a = budget.try_reserve(80).unwrap();
        assert!(budget.try_reserve(30).is_none());
        a.shrink_to(10);
        assert_eq!(a.bytes(), 10);
        let b = budget.try_reserve(90).unwrap();
        assert_eq!(budget.held_bytes(), 100);
        drop((a, b));
        assert_eq!(budget.held_bytes(), 0);
    }

    fn held_body(budget: &ReplyBudget, data: &'static [u8], deadline: Duration) -> HeldBody {
        let held = budget.try_reserve(data.len()).unwrap();
        let inner = Body::new(http_body_util::Full::new(Bytes::from_static(data)));
        HeldBody::new(inner, held, 4, deadline)
    }

    #[tokio::test]
    async fn bytes_return_when_the_last_piece_is_dropped() {
        let budget = ReplyBudget::new(64);
        let mut body = held_body(&budget, b"0123456789", Duration::from_secs(60));
        let mut pieces = Vec::new();
        for _ in 0..3 {
            let frame = body.frame().await.unwrap().unwrap();
            pieces.push(frame.into_data().unwrap());
            assert!(pieces.last().unwrap().len() <= 4);
        }
        assert_eq!(pieces.concat(), b"0123456789");
        // HTTP/2 still holds the pieces: the bytes are still held, and the end waits for them.
        assert_eq!(budget.held_bytes(), 10);
        pieces.pop();
        assert_eq!(budget.held_bytes(), 10);
        let end = tokio::spawn(async move { body.frame().await.is_none() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!end.is_finished());
        pieces.clear();
        assert!(end.await.unwrap());
        assert_eq!(budget.held_bytes(), 0);
    }

    #[tokio::test]
    async fn the_end_waits_for_the_pieces_and_a_late_reader_is_cut() {
        let budget = ReplyBudget::new(64);
        let mut body = held_body(&budget, b"abcdef", Duration::from_millis(200));
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
        drop(first);
        // The second piece is never "sent": the end of the body fails at the deadline.
        let end = body.frame().await.unwrap().unwrap_err();
        assert_eq!(end.code(), tonic::Code::DeadlineExceeded);
        drop((second, body));
        assert_eq!(budget.held_bytes(), 0);
    }
}
