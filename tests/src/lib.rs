//! Support for nodectl's end-to-end tests: start the real binaries, find fixtures, fake what cannot run here.

pub mod fake_kube;
pub mod fake_talos;
pub mod harness;
pub mod hung_node;
pub mod slow_reader;
pub mod stalled_file;

/// Serves `router` on `listener` in a task until the returned token is cancelled (the fakes
/// cancel it when dropped).
pub fn serve_until_cancelled(
    listener: tokio::net::TcpListener,
    router: axum::Router,
) -> tokio_util::sync::CancellationToken {
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move { stopped.cancelled().await })
            .await;
    });
    stop
}
