//! Host file reads on a small pool of threads, each with a deadline; a read that does not return is remembered, not waited on again.
//!
//! amdgpu's SMU-backed sysfs files (`pp_dpm_sclk`, `gpu_metrics`, `gpu_busy_percent`, …) block
//! in the kernel while the SMU hangs, and nothing can interrupt such a read: the thread stays in
//! it until the firmware answers, possibly forever. So the caller never reads itself. It hands
//! the read to a pool thread and waits at most [`HOST_READ_DEADLINE`]; past that the read is
//! left to finish on its own, its file is marked stuck, and later reads of that file fail at
//! once instead of tying up one more thread each. When the read finally returns, the mark goes.
//! The pool has at most [`MAX_HOST_READ_THREADS`] threads, so a hung SMU costs a bounded number
//! of threads however many snapshots are asked for; and they are plain threads, not the async
//! runtime's, so shutdown never waits on them.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::limits::{HOST_READ_DEADLINE, MAX_HOST_READ_THREADS};

/// The pool every collector of this process reads through.
pub fn shared() -> &'static ReadPool {
    static POOL: LazyLock<ReadPool> =
        LazyLock::new(|| ReadPool::new(MAX_HOST_READ_THREADS, HOST_READ_DEADLINE, Waits::SYSFS));
    &POOL
}

/// What a pool's reads wait on, in the words its errors use.
#[derive(Debug, Clone, Copy)]
pub struct Waits {
    /// The name of the pool's threads and of the reads in errors (`host-read`).
    pub name: &'static str,
    /// The likely reason a read does not return, as the operator should read it.
    pub suspect: &'static str,
}

impl Waits {
    /// sysfs, procfs and debugfs files of the host: a hung SMU is what blocks them.
    pub const SYSFS: Waits = Waits {
        name: "host-read",
        suspect: "the SMU may be hung",
    };
}

type Work<T> = Box<dyn FnOnce() -> io::Result<T> + Send>;

/// Runs reads on at most `max_threads` threads, waiting `deadline` for each. A read gives a
/// `T`: the bytes of a file for the collectors, a whole answer for other users.
#[derive(Debug)]
pub struct ReadPool<T = Vec<u8>> {
    max_threads: usize,
    deadline: Duration,
    waits: Waits,
    state: Arc<Shared<T>>,
}

#[derive(Debug)]
struct Shared<T> {
    state: Mutex<PoolState<T>>,
    work_queued: Condvar,
    /// The number of stuck reads, for health and metrics.
    stuck_count: tokio::sync::watch::Sender<usize>,
    waits: Waits,
}

struct PoolState<T> {
    threads: usize,
    idle_threads: usize,
    queue: VecDeque<Job<T>>,
    /// Files whose read outlived its deadline: since when, and how many threads are in it.
    stuck: HashMap<PathBuf, Stuck>,
}

impl<T> Default for PoolState<T> {
    fn default() -> Self {
        Self {
            threads: 0,
            idle_threads: 0,
            queue: VecDeque::new(),
            stuck: HashMap::new(),
        }
    }
}

impl<T> std::fmt::Debug for PoolState<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolState")
            .field("threads", &self.threads)
            .field("idle_threads", &self.idle_threads)
            .field("queued", &self.queue.len())
            .field("stuck", &self.stuck.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Debug, Clone, Copy)]
struct Stuck {
    since: Instant,
    threads: usize,
}

struct Job<T> {
    path: PathBuf,
    work: Work<T>,
    ticket: Arc<Ticket<T>>,
}

/// Where a caller and the thread running its read meet.
#[derive(Debug)]
struct Ticket<T> {
    phase: Mutex<Phase<T>>,
    changed: Condvar,
}

impl<T> Default for Ticket<T> {
    fn default() -> Self {
        Self {
            phase: Mutex::new(Phase::Queued),
            changed: Condvar::new(),
        }
    }
}

#[derive(Debug)]
enum Phase<T> {
    Queued,
    Running,
    Done(io::Result<T>),
    /// The caller stopped waiting; the result, when it comes, is dropped.
    Abandoned,
}

impl<T: Send + 'static> ReadPool<T> {
    pub fn new(max_threads: usize, deadline: Duration, waits: Waits) -> Self {
        Self {
            max_threads: max_threads.max(1),
            deadline,
            waits,
            state: Arc::new(Shared {
                state: Mutex::default(),
                work_queued: Condvar::new(),
                stuck_count: tokio::sync::watch::Sender::default(),
                waits,
            }),
        }
    }

    /// Runs `work` (the read of `path`) on a pool thread and returns its result, or an error of
    /// kind `TimedOut` saying why it was not waited for.
    pub fn read(
        &self,
        path: &Path,
        work: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let ticket = Arc::new(Ticket::default());
        {
            let mut state = self.state.lock();
            if let Some(stuck) = state.stuck.get(path) {
                return Err(timed_out(format!(
                    "an earlier read has not returned for {} s: {}; not read again until it returns",
                    stuck.since.elapsed().as_secs(),
                    self.waits.suspect
                )));
            }
            let stuck_threads: usize = state.stuck.values().map(|s| s.threads).sum();
            if stuck_threads >= self.max_threads {
                return Err(timed_out(format!(
                    "all {} {} threads wait on reads that did not return ({}); not read",
                    self.max_threads, self.waits.name, self.waits.suspect
                )));
            }
            state.queue.push_back(Job {
                path: path.to_owned(),
                work: Box::new(work),
                ticket: Arc::clone(&ticket),
            });
            if state.idle_threads == 0 && state.threads < self.max_threads {
                self.spawn_thread(&mut state);
            }
        }
        self.state.work_queued.notify_one();
        self.wait(path, &ticket)
    }

    /// How many reads are stuck now, and every change of it.
    pub fn stuck_reads(&self) -> tokio::sync::watch::Receiver<usize> {
        self.state.stuck_count.subscribe()
    }

    fn wait(&self, path: &Path, ticket: &Ticket<T>) -> io::Result<T> {
        let phase = lock(&ticket.phase);
        let (mut phase, _) = ticket
            .changed
            .wait_timeout_while(phase, self.deadline, |phase| {
                matches!(phase, Phase::Queued | Phase::Running)
            })
            .unwrap_or_else(PoisonError::into_inner);
        match std::mem::replace(&mut *phase, Phase::Abandoned) {
            Phase::Done(result) => result,
            Phase::Queued => Err(timed_out(format!(
                "no {} thread came free within {} s (other reads are stuck: {}); not read",
                self.waits.name,
                self.deadline.as_secs_f64(),
                self.waits.suspect
            ))),
            Phase::Running => {
                // Marked under the ticket's lock: the thread finishing this read takes it too
                // before it unmarks, so the mark cannot outlive the read.
                let mut state = self.state.lock();
                let stuck = state.stuck.entry(path.to_owned()).or_insert(Stuck {
                    since: Instant::now(),
                    threads: 0,
                });
                stuck.threads += 1;
                self.state.publish_stuck(&state);
                tracing::warn!(path = %path.display(), pool = self.waits.name, "a read did not return within its deadline");
                Err(timed_out(format!(
                    "read did not return within {} s: {}; not read again until it returns",
                    self.deadline.as_secs_f64(),
                    self.waits.suspect
                )))
            }
            Phase::Abandoned => Err(timed_out("abandoned".to_owned())),
        }
    }

    fn spawn_thread(&self, state: &mut PoolState<T>) {
        let shared = Arc::clone(&self.state);
        let spawned = std::thread::Builder::new()
            .name(self.waits.name.to_owned())
            .spawn(move || shared.run());
        // Without a new thread the queued read waits for a busy one, or times out as queued.
        if spawned.is_ok() {
            state.threads += 1;
            state.idle_threads += 1;
        }
    }
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, PoolState<T>> {
        lock(&self.state)
    }

    /// One pool thread: takes queued reads one after another, forever.
    fn run(&self) {
        loop {
            let job = {
                let mut state = self.lock();
                loop {
                    if let Some(job) = state.queue.pop_front() {
                        state.idle_threads -= 1;
                        break job;
                    }
                    state = self
                        .work_queued
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            };
            self.run_job(job);
            self.lock().idle_threads += 1;
        }
    }

    fn run_job(&self, job: Job<T>) {
        {
            let mut phase = lock(&job.ticket.phase);
            if matches!(*phase, Phase::Abandoned) {
                return;
            }
            *phase = Phase::Running;
        }
        let result = (job.work)();
        let mut phase = lock(&job.ticket.phase);
        if matches!(*phase, Phase::Abandoned) {
            let mut state = self.lock();
            if let Some(stuck) = state.stuck.get_mut(&job.path) {
                stuck.threads -= 1;
                if stuck.threads == 0 {
                    state.stuck.remove(&job.path);
                    tracing::info!(path = %job.path.display(), pool = self.waits.name, "a stuck read returned");
                }
            }
            self.publish_stuck(&state);
        } else {
            *phase = Phase::Done(result);
            job.ticket.changed.notify_one();
        }
    }

    fn publish_stuck(&self, state: &PoolState<T>) {
        let stuck: usize = state.stuck.values().map(|s| s.threads).sum();
        self.stuck_count.send_if_modified(|count| {
            let changed = *count != stuck;
            *count = stuck;
            changed
        });
    }
}

fn timed_out(reason: String) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, reason)
}

/// The pool's state stays consistent across a panic in a read (which runs outside any lock).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A read that blocks until its sender is dropped or sends, as an SMU-backed attribute does
    /// until the firmware answers.
    fn blocked_read() -> (
        mpsc::Sender<()>,
        impl FnOnce() -> io::Result<Vec<u8>> + Send,
    ) {
        let (release, released) = mpsc::channel::<()>();
        (release, move || {
            let _ = released.recv();
            Ok(b"late".to_vec())
        })
    }

    #[test]
    fn reads_return_their_result() {
        let pool = ReadPool::new(2, Duration::from_secs(5), Waits::SYSFS);
        let bytes = pool.read(Path::new("/a"), || Ok(b"1\n".to_vec())).unwrap();
        assert_eq!(bytes, b"1\n");
        let e = pool
            .read(Path::new("/b"), || Err(io::Error::other("EIO")))
            .unwrap_err();
        assert_eq!(e.to_string(), "EIO");
    }

    #[test]
    fn a_read_past_its_deadline_marks_its_file_until_it_returns() {
        let pool = ReadPool::new(2, Duration::from_millis(100), Waits::SYSFS);
        let mut stuck = pool.stuck_reads();
        let (release, read) = blocked_read();
        let e = pool.read(Path::new("/sclk"), read).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("SMU may be hung"), "{e}");
        assert_eq!(*stuck.borrow_and_update(), 1);

        // Refused at once, without a thread.
        let e = pool
            .read(Path::new("/sclk"), || panic!("must not run"))
            .unwrap_err();
        assert!(e.to_string().contains("an earlier read"), "{e}");
        // Other files still read.
        assert_eq!(pool.read(Path::new("/other"), || Ok(vec![1])).unwrap(), [1]);

        release.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while *stuck.borrow_and_update() != 0 {
            assert!(Instant::now() < deadline, "the mark stayed");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(pool.read(Path::new("/sclk"), || Ok(vec![2])).unwrap(), [2]);
    }

    #[test]
    fn stuck_reads_never_take_more_than_the_pool() {
        let pool = ReadPool::new(2, Duration::from_millis(50), Waits::SYSFS);
        let mut releases = Vec::new();
        for name in ["/a", "/b"] {
            let (release, read) = blocked_read();
            releases.push(release);
            assert!(pool.read(Path::new(name), read).is_err());
        }
        let e = pool
            .read(Path::new("/c"), || panic!("must not run"))
            .unwrap_err();
        assert!(e.to_string().contains("all 2 host-read threads"), "{e}");
        assert_eq!(pool.state.lock().threads, 2);
        drop(releases);
    }
}
