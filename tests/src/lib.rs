//! Support for nodectl's end-to-end tests: start the real binaries, find fixtures, fake what cannot run here.

pub mod fake_kube;
pub mod fake_talos;
pub mod harness;
pub mod hung_node;
pub mod slow_reader;
pub mod stalled_file;

/// A client of nodectl.v1's kernel event stream as it was before events had sources
/// (`proto-previous/`): what an older `nodectl` speaks.
#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod previous_wire {
    tonic::include_proto!("nodectl.v1");
}

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
