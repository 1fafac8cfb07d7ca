//! Every bound the agent puts on a request, a host file or a peer, with its value and its reason, in one place.
//!
//! The agent runs privileged on nodes that serve expensive inference and is needed most when
//! the GPU misbehaves, so nothing a client sends or a host file holds may make it grow, spin or
//! stall without limit. `SECURITY.md` lists these numbers for operators.

use std::time::Duration;

/// Clock/busy readings one `GetSnapshot` may ask for: two minutes of readings 200 ms apart is
/// more than any trend check needs, and each reading reads a few files per card.
pub const MAX_SAMPLE_COUNT: u32 = 600;

/// Snapshots with several readings running at once. Each holds a thread for its window, sleeping
/// between readings; single-reading snapshots asked for at the same time share one reading and
/// need no bound of their own.
pub const MAX_SAMPLING_SNAPSHOTS: usize = 8;

/// Longest sampling window a request may ask for; a client cannot pin an agent thread longer.
pub const MAX_SAMPLE_WINDOW: Duration = Duration::from_secs(60);

/// Bytes read of one host file by the collectors. sysfs attributes are at most one page (4 KiB),
/// the procfs files read are a few KiB, debugfs `amdgpu_firmware_info` and `gpu_metrics` well
/// under 16 KiB; a file longer than this is not one of them (a link to `/dev/zero`, a huge file
/// in a tree) and becomes a problem entry instead of memory.
pub const MAX_HOST_FILE_BYTES: usize = 64 * 1024;

/// How long a collector waits for one host file read. A sysfs attribute answers in
/// microseconds, an SMU-backed one in a few milliseconds; one that takes seconds is blocked in the
/// kernel on a hung SMU, and is left to finish on its own while the snapshot goes on without it.
pub const HOST_READ_DEADLINE: Duration = Duration::from_secs(2);

/// Threads that run host file reads. A read blocked on a hung SMU holds its thread until the
/// firmware answers, so this also bounds the threads a hung GPU can take; a snapshot reads its
/// files one after another, so a few threads serve many concurrent snapshots.
pub const MAX_HOST_READ_THREADS: usize = 8;

/// Bytes a bug-report recording keeps of what the host root read (the files, the kernel log,
/// pod-log tails). The agent builds a bundle within its 64 MiB memory limit: this, the bundle
/// being compressed ([`MAX_REPORT_BYTES`]) and the agent's own few MiB. What does not fit is
/// logged as read but not kept.
pub const MAX_RECORDED_BYTES: usize = 20 * 1024 * 1024;

/// Reads a recording logs one by one (a snapshot asks about 300, a process listing a few per
/// process); beyond this they are counted.
pub const MAX_RECORDED_READS: usize = 20_000;

/// Bytes of one compressed bundle the agent sends; past it the bundle stops with its sections
/// so far and says so. Compressed sysfs text and logs are a fifth of their size or less.
pub const MAX_REPORT_BYTES: usize = 16 * 1024 * 1024;

/// How long a report waits for each step (a snapshot, the kernel log's first pass, the process
/// listing, one pod log) before recording the step as timed out and going on.
pub const REPORT_STEP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

/// Bytes read of the small files the kernel log pipeline reads beside the log (`boot_id`,
/// `/proc/stat` for the boot time: a few KiB per CPU).
pub const MAX_SMALL_FILE_BYTES: u64 = 256 * 1024;

/// Bytes kept of one line of a saved log (`nodectl events --file`): a kernel record is at most
/// 1 KiB of text (a few KiB with its dictionary), a journal line of a program rarely more than a
/// few KiB; a longer "line" is a binary or a log without newlines, and is cut with a marker.
pub const MAX_SAVED_LINE_BYTES: usize = 64 * 1024;

/// How long start-up (and the in-process agent) waits for the kernel log's first pass before
/// serving: the ring holds at most a few MiB, read in well under a second.
pub const KERNEL_LOG_FIRST_PASS: Duration = Duration::from_secs(10);

/// How long shutdown waits for work still running on blocking threads (a host read stalled by a
/// hung SMU never returns) before the process exits anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The largest jump between two sequence numbers of one boot that still counts as lost records:
/// 2^32 records is days of a kernel logging ten thousand lines a second. A larger jump (a saved
/// log of several boots, a corrupt record) is a restart of the numbering, not a loss.
pub const MAX_PLAUSIBLE_GAP: u64 = 1 << 32;

/// Kernel event streams open at once over all connections. Each holds a copy of the history it
/// asked for and a buffer; an operator follows one or two, a fleet dashboard a few dozen.
pub const MAX_KERNEL_STREAMS: usize = 64;

/// Concurrent HTTP/2 streams (requests) per connection: one client opening thousands of streams
/// that never read used to grow the agent past a gigabyte.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 16;

/// HTTP/2 pings on an otherwise silent connection, and how long the answer may take: a peer that
/// went away is noticed and its connection closed.
pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Kernel log messages kept for late subscribers, per history (all records / classified only):
/// the recent past of a busy boot; older ones are reported to a resuming client as missed.
pub const KERNEL_LOG_HISTORY: usize = 4096;

/// Messages a live subscriber may fall behind before it is told it lagged (the others lose
/// nothing).
pub const KERNEL_LOG_BROADCAST: usize = 1024;

/// Messages buffered per stream between the broadcast and the client's connection.
pub const KERNEL_STREAM_BUFFER: usize = 64;

/// Size of the saved event position (`--state-dir`): a boot id, a cursor per source, the next
/// incident id and the open incidents (at most [`MAX_OPEN_INCIDENTS_SAVED`], each a few hundred
/// bytes and at worst ~8 KiB: a count for every rule id and a process name) fit, so a larger
/// file is not one and is replaced.
pub const MAX_STATE_BYTES: u64 = 1 << 20;

/// A process name kept in an incident: the kernel's task names are 16 bytes, and a longer
/// one (a line of an odd kernel) is cut here so the saved incidents stay within
/// [`MAX_STATE_BYTES`].
pub const MAX_INCIDENT_PROCESS_BYTES: usize = 256;

/// Open incidents saved to be taken up after a restart: a node has a GPU or two, each with an
/// incident or two open; more is a storm, whose surplus is closed uncounted rather than
/// making the state file one that is refused.
pub const MAX_OPEN_INCIDENTS_SAVED: usize = 64;

/// TCP connections open at once per port: well below the default limit of 1024 file
/// descriptors, which also has to cover host files and the kernel log. Past it, new
/// connections are closed at once (and logged), instead of the accept loop spinning on EMFILE.
pub const MAX_CONNECTIONS: usize = 256;

/// How long a new connection may stay silent before it is closed: a client sends its HTTP/2
/// preface or HTTP request at once.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a TLS handshake may take: a round trip or two on a cluster network; a peer that
/// holds it open longer holds a connection slot for nothing.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the TLS files are checked for a change. cert-manager renews well before expiry
/// and the kubelet updates a secret volume within about a minute; a few seconds more is
/// nothing, and a stat of three files is nothing either.
pub const TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// Largest PEM file read for TLS: a certificate chain is a few KiB, a CA bundle a few hundred.
pub const MAX_PEM_FILE_BYTES: u64 = 1024 * 1024;

/// How long a metrics client may take to send a request's headers, from the connection's start
/// or the end of its previous request: a scraper sends them at once, while a peer trickling a
/// header byte by byte would otherwise hold its connection (and its place under the cap) forever.
/// Also closes keep-alive connections idle that long; scrapers reconnect.
pub const METRICS_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The pause after a failed accept (out of file descriptors), so the loop never spins.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// At most one log line per this interval about refused connections or failed accepts.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Largest reply the agent encodes: a snapshot of a host with 5001 cards is 8.9 MB; a reply
/// past this fails with RESOURCE_EXHAUSTED instead of growing the agent.
pub const MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;

/// Inference processes listed per answer: a node runs a handful of llama.cpp servers; a host
/// with more (a fork bomb of `llama-cli`) gets the first ones and a count of the rest.
pub const MAX_INFERENCE_PROCESSES: usize = 64;

/// Threads listed per inference process: llama-server runs one per core plus its HTTP threads
/// (about 40 on a 16-core Strix Halo); more is a runaway, counted but not listed.
pub const MAX_THREADS_LISTED: usize = 256;

/// Open files of one process looked at for `/dev/kfd` and `/dev/dri` handles: a server holds a
/// few dozen; the GPU handles are opened early, so they are among the first.
pub const MAX_FDS_SCANNED: usize = 4096;

/// `/proc` entries looked at for inference processes: a node has a few thousand processes.
pub const MAX_PROCESSES_SCANNED: usize = 65_536;

/// Longest window GetInferenceProcesses watches CPU time and GPU memory over: a second tells a
/// spinning thread from a sleeping one and a load from a stall; a client cannot pin a thread longer.
pub const MAX_PROCESS_SAMPLE: Duration = Duration::from_secs(5);

/// Bytes of a pod log TailPodLog sends: a llama.cpp start at `-lv 4` is a few hundred lines
/// (under 100 KiB) and a stall is at the end; 4 MiB is hours of request lines, and fits a reply.
pub const MAX_POD_LOG_TAIL_BYTES: u64 = 4 * 1024 * 1024;

/// How long reading a pod log may take: a few MiB from local disk is milliseconds; a stuck
/// filesystem must not hold the request.
pub const POD_LOG_DEADLINE: Duration = Duration::from_secs(5);

/// Entries looked at in one directory under `/var/log/pods`: a node runs at most a few hundred
/// pods (the kubelet's default is 110), each with a few containers and restarts; a directory
/// with more is not the kubelet's, and the rest of it is not listed.
pub const MAX_POD_LOG_DIR_ENTRIES: usize = 65_536;

/// Threads that read pod logs: their own, apart from the host-read pool, so a stuck file
/// system (or anything else under `/var/log/pods` that does not answer) can never take the
/// threads snapshots read sysfs with. Two serve an operator and a fleet dashboard at once.
pub const POD_LOG_READ_THREADS: usize = 2;

/// Pod-log reads queued or running at once; past it `TailPodLog` answers RESOURCE_EXHAUSTED at
/// once instead of queueing a waiter per request (600 requests at a stuck log used to take
/// every blocking thread the agent had).
pub const MAX_POD_LOG_READS_IN_FLIGHT: usize = 4;

/// Bytes of pod-log replies the agent holds at once, from the read until the client has taken
/// them off the connection: a slow or stalled reader keeps its reply in the agent's memory, and
/// 150 of them once held 700 MB. Four whole tails fit, and many short ones; past it
/// `TailPodLog` answers RESOURCE_EXHAUSTED.
pub const MAX_POD_LOG_REPLY_BYTES_HELD: usize = 4 * MAX_POD_LOG_TAIL_BYTES as usize;

/// How long a client may take to receive a pod-log reply: 4 MiB over a slow tunnel to a
/// cluster takes seconds. Past it the reply's stream is reset, so a reader that stopped reading
/// gives its bytes back to [`MAX_POD_LOG_REPLY_BYTES_HELD`].
pub const POD_LOG_SEND_DEADLINE: Duration = Duration::from_secs(60);

/// Size of the pieces a pod-log reply is handed to HTTP/2 in: the connection asks for more
/// only as its flow-control window opens, so a reader that does not read holds little beyond
/// its window in the connection's buffers.
pub const POD_LOG_REPLY_CHUNK_BYTES: usize = 64 * 1024;

/// Incidents open at once. A node has a GPU or two, each with an incident or two open; lines
/// without a time never let an incident close by the gap, so a log naming thousands of devices
/// would otherwise keep thousands open. Past it, the incident that has waited longest for an
/// event is closed to make room.
pub const MAX_OPEN_INCIDENTS: usize = 64;

/// Closed incidents of a saved log held back until every incident that began before them has
/// closed, so they come in the order they began. Past this many, the earliest goes out anyway:
/// an incident that never closes (a device logging all through the file) must not make the
/// rest pile up.
pub const MAX_HELD_INCIDENTS: usize = 1024;

/// One Kubernetes API call (connect, send, answer): an API server that does not answer must
/// not hold the node-condition task, whose next try waits for it.
pub const KUBE_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The first wait after a failed Kubernetes API call; doubled after each further failure up to
/// [`KUBE_RETRY_MAX`], so an API server that answers 500 is not hammered by every node.
pub const KUBE_RETRY_FIRST: Duration = Duration::from_secs(1);

/// The longest wait between tries: a condition is at most this late once the server is back.
pub const KUBE_RETRY_MAX: Duration = Duration::from_secs(60);

/// The condition is written again this often even when nothing changed (its
/// `lastHeartbeatTime`), as node-problem-detector does, so a stale one shows its age.
pub const NODE_CONDITION_HEARTBEAT: Duration = Duration::from_secs(300);

/// How often the node's checks run for the node condition: a snapshot reads sysfs and /proc
/// (milliseconds), and what it finds (firmware, parameters) changes with a reboot, not faster.
pub const NODE_HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// The longest the agent waits for the node-condition task's first pass (a snapshot, one API
/// call of at most [`KUBE_REQUEST_TIMEOUT`]) before it gives back what start-up used
/// (`resident::release_start_up_pages`): an API server that does not answer only delays that.
pub const START_UP_FIRST_PASS: Duration = Duration::from_secs(30);

/// Events waiting for an API server that does not answer. One per incident; past this many
/// the newest are not recorded (the node condition and the agent's own stream still say them).
pub const MAX_PENDING_KUBE_EVENTS: usize = 64;
