//! Pod-log reads within bounds: their own few threads with a deadline each, a cap on reads in flight, and a budget of reply bytes held for clients.
//!
//! A pod log is a file anyone with write access to `/var/log/pods` may shape, on a file system
//! that may stop answering. Its reads therefore never share the host-read pool (a stuck pod log
//! must not cost snapshots a thread), never queue without bound (a request past the cap is
//! refused at once rather than parked on a thread), and never hold more reply bytes than the
//! budget: a read first reserves the most it may read, keeps what it read, and the reservation
//! travels with the reply until the client has taken it ([`crate::held_replies`]).

use std::path::PathBuf;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use nodectl_model::inference::PodLog;
use tokio::sync::Semaphore;

use super::{PodLogError, PodLogQuery};
use crate::HostRoot;
use crate::collect::read_pool::{ReadPool, Waits};
use crate::held_replies::{HeldBytes, ReplyBudget};
use crate::limits::{
    MAX_POD_LOG_READS_IN_FLIGHT, MAX_POD_LOG_REPLY_BYTES_HELD, MAX_POD_LOG_TAIL_BYTES,
    POD_LOG_DEADLINE, POD_LOG_READ_THREADS,
};

/// The pod-log reads of this process (the agent's service, or `nodectl`'s in-process one).
pub fn shared() -> &'static PodLogReads {
    static READS: LazyLock<PodLogReads> = LazyLock::new(|| {
        PodLogReads::new(
            POD_LOG_READ_THREADS,
            POD_LOG_DEADLINE,
            MAX_POD_LOG_READS_IN_FLIGHT,
            MAX_POD_LOG_REPLY_BYTES_HELD,
        )
    });
    &READS
}

/// What blocks a pod-log read that does not return.
const POD_LOG_WAITS: Waits = Waits {
    name: "pod-log-read",
    suspect: "the file system under /var/log/pods may be stuck",
};

type ReadResult = Result<PodLog, PodLogError>;

#[derive(Debug)]
pub struct PodLogReads {
    pool: Arc<ReadPool<ReadResult>>,
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    budget: ReplyBudget,
    max_read_bytes: usize,
}

/// Why a pod log was not read.
#[derive(Debug, thiserror::Error)]
pub enum PodLogReadError {
    /// Too much is already in flight or held; the client may retry later.
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    TimedOut(String),
    #[error(transparent)]
    Log(#[from] PodLogError),
    #[error("pod log task: {0}")]
    Task(String),
}

impl PodLogReads {
    pub fn new(
        threads: usize,
        deadline: Duration,
        max_in_flight: usize,
        budget_bytes: usize,
    ) -> Self {
        Self {
            pool: Arc::new(ReadPool::new(threads, deadline, POD_LOG_WAITS)),
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            budget: ReplyBudget::new(budget_bytes),
            max_read_bytes: usize::try_from(MAX_POD_LOG_TAIL_BYTES)
                .unwrap_or(usize::MAX)
                .min(budget_bytes),
        }
    }

    /// Reads the tail of a pod's log; the reservation of its bytes comes with it, to be held
    /// until the reply has been sent.
    pub async fn tail(
        &self,
        root: HostRoot,
        query: PodLogQuery,
    ) -> Result<(PodLog, HeldBytes), PodLogReadError> {
        let mut held = self.budget.try_reserve(self.max_read_bytes).ok_or_else(|| {
            PodLogReadError::Busy(format!(
                "pod-log replies already hold {} of {} MiB for clients still receiving them; try again later",
                mib(self.budget.held_bytes()),
                mib(self.budget.total_bytes())
            ))
        })?;
        let slot = Arc::clone(&self.in_flight)
            .try_acquire_owned()
            .map_err(|_| {
                PodLogReadError::Busy(format!(
                    "{} pod-log reads are already in flight; try again later",
                    self.max_in_flight
                ))
            })?;
        // Reads of the same pod share a stuck mark: a second request for a log whose read hangs
        // is refused at once instead of taking another thread.
        let key = PathBuf::from(format!(
            "{}/{}/{}/{}",
            query.namespace, query.pod, query.pod_uid, query.container
        ));
        let pool = Arc::clone(&self.pool);
        // The wait is bounded by the pool's deadline, and these waits by the in-flight cap.
        let read = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            pool.read(&key, move || Ok(super::tail(&root, &query)))
        });
        let log = match read.await {
            Err(e) => return Err(PodLogReadError::Task(e.to_string())),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                return Err(PodLogReadError::TimedOut(format!(
                    "reading the pod log: {e}"
                )));
            }
            Ok(Err(e)) => return Err(PodLogReadError::Task(e.to_string())),
            Ok(Ok(log)) => log?,
        };
        held.shrink_to(log.tail.len());
        Ok((log, held))
    }

    /// How many pod-log reads are stuck now, and every change of it.
    pub fn stuck_reads(&self) -> tokio::sync::watch::Receiver<usize> {
        self.pool.stuck_reads()
    }

    /// Bytes of pod-log replies held now, read but not yet taken by their clients.
    pub fn reply_bytes_held(&self) -> usize {
        self.budget.held_bytes()
    }
}

fn mib(bytes: usize) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn tree(log_bytes: usize) -> (tempfile::TempDir, HostRoot) {
        let dir = tempfile::tempdir().unwrap();
        let c = dir
            .path()
            .join("var/log/pods/llm_llama-0_0d3c5e1e-5d3f-4a8e-9c39-1c1b6b0a7e11/server");
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(c.join("0.log"), "x\n".repeat(log_bytes / 2)).unwrap();
        let root = HostRoot::new(dir.path());
        (dir, root)
    }

    fn query() -> PodLogQuery {
        PodLogQuery {
            namespace: "llm".into(),
            pod: "llama-0".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn replies_past_the_budget_are_refused_until_earlier_ones_are_sent() {
        let (_dir, root) = tree(1000);
        // Room for two reads of at most 4 MiB: the budget, not the log, decides.
        let reads = PodLogReads::new(2, Duration::from_secs(5), 4, 2 * 4 * 1024 * 1024);
        let (a, held_a) = reads.tail(root.clone(), query()).await.unwrap();
        assert_eq!(a.tail.len(), 1000);
        assert_eq!(held_a.bytes(), 1000);
        assert_eq!(reads.reply_bytes_held(), 1000);
        // A reservation of a whole tail no longer fits beside it and another whole one.
        let whole = reads.budget.try_reserve(4 * 1024 * 1024).unwrap();
        let e = reads.tail(root.clone(), query()).await.unwrap_err();
        assert!(matches!(e, PodLogReadError::Busy(_)), "{e}");
        assert!(e.to_string().contains("already hold"), "{e}");
        drop(whole);
        let (_b, held_b) = reads.tail(root, query()).await.unwrap();
        drop((held_a, held_b));
        assert_eq!(reads.reply_bytes_held(), 0);
    }
}
