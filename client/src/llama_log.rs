//! llama.cpp logs read into phases: prefixes stripped, each line placed in the load/serve sequence, the run's facts and errors kept, and an outcome.
//!
//! What the lines mean is `reference/llamacpp.md`: old and new function names, the fit
//! pre-pass whose mock load is not the real one, verbosity levels that hide the loading lines.
//! The parser is total: any byte sequence is a line of some kind, and it never panics.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Bounds on what one log can make the parser keep: a log is outside data, and a serving
/// run of weeks, a crash loop or a hostile file must not grow memory with its length.
/// Phase marks kept: every loading phase (a dozen), and the latest serving ones (each request
/// passes through three).
const MAX_TIMELINE_MARKS: usize = 256;
/// Errors kept with their text (the first ones: a crash's cause comes before its echoes);
/// `errors_total` counts them all.
const MAX_ERRORS_KEPT: usize = 64;
/// Devices kept (a node has a handful).
const MAX_DEVICES: usize = 64;
/// Bytes of a CRI line joined from its `P` parts: the kubelet splits at 16 KiB, and a
/// llama.cpp line is far shorter; the rest of a longer one is dropped.
const MAX_JOINED_LINE_BYTES: usize = 64 * 1024;

/// Where a run got to, in order of progress. The serving phases come after `Ready` and repeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Startup,
    DeviceInit,
    /// The `-fit` pre-pass: a mock load sized with `0.00 MiB` buffers, not the real one.
    MemoryFit,
    ModelMetadata,
    TensorLoad,
    /// Tensors copied to the device (the progress dots, or `load_all_data:`).
    Upload,
    /// Context and KV cache.
    Context,
    GraphReserve,
    Warmup,
    Ready,
    PromptProcessing,
    Generation,
    Idle,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Startup => "startup",
            Phase::DeviceInit => "device_init",
            Phase::MemoryFit => "memory_fit",
            Phase::ModelMetadata => "model_metadata",
            Phase::TensorLoad => "tensor_load",
            Phase::Upload => "upload",
            Phase::Context => "context",
            Phase::GraphReserve => "graph_reserve",
            Phase::Warmup => "warmup",
            Phase::Ready => "ready",
            Phase::PromptProcessing => "prompt_processing",
            Phase::Generation => "generation",
            Phase::Idle => "idle",
        }
    }

    /// Ready or one of the serving phases.
    pub fn is_up(self) -> bool {
        self >= Phase::Ready
    }
}

/// The compute backend the run used, from its device and buffer lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Rocm,
    Vulkan,
    Cuda,
    Cpu,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Rocm => "rocm",
            Backend::Vulkan => "vulkan",
            Backend::Cuda => "cuda",
            Backend::Cpu => "cpu",
        }
    }
}

/// What went wrong, by the words the runtime used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// `ROCm error: …`, `ggml_cuda_compute_forward: … failed`.
    RocmError,
    /// `invalid device function`, `No compatible code objects found`: a build for another gfx.
    InvalidDeviceFunction,
    /// A buffer could not be allocated (ROCm or Vulkan).
    AllocationFailure,
    /// The HSA runtime or the GPU reported a fault.
    HsaFault,
    /// `GGML_ABORT`/`GGML_ASSERT`, `Aborted (core dumped)`.
    GgmlAbort,
    /// The model did not load (the reason is usually the line before).
    LoadFailed,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::RocmError => "rocm_error",
            ErrorKind::InvalidDeviceFunction => "invalid_device_function",
            ErrorKind::AllocationFailure => "allocation_failure",
            ErrorKind::HsaFault => "hsa_fault",
            ErrorKind::GgmlAbort => "ggml_abort",
            ErrorKind::LoadFailed => "load_failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogError {
    pub kind: ErrorKind,
    pub line: u64,
    pub text: String,
}

/// One GPU the run enumerated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Device {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gfx_target: Option<String>,
}

/// When a line was written, as far as its prefixes say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LineTime {
    /// llama.cpp's own `M.SS.mmm.uuu` stamp: seconds since the process started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since_start_s: Option<f64>,
    /// A wall clock from a wrapper (journald, kubectl, CRI, ollama).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "nodectl_model::kernel_log::time_text"
    )]
    pub wall: Option<jiff::Timestamp>,
}

/// The run entered `phase` at `line`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseMark {
    pub phase: Phase,
    pub line: u64,
    #[serde(flatten)]
    pub time: LineTime,
}

/// The facts of one run and how far it got.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LlamaLog {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<Backend>,
    pub devices: Vec<Device>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_size: Option<String>,
    /// `load_mode = mmap|none|dio|…` of current builds, or `mmap = true|false` of older ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flash_attention: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_ctx: Option<u64>,
    /// Layers offloaded to the GPU, of all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers_offloaded: Option<(u32, u32)>,
    /// The log's verbosity when it says so (`verbosity = 4`): 3 is the default, at which the
    /// loading phases do not show.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verbosity: Option<u8>,
    pub timeline: Vec<PhaseMark>,
    pub errors: Vec<LogError>,
    /// Errors seen, kept or not.
    pub errors_total: u64,
    /// The last line with text, and its number and time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_line: Option<(u64, String)>,
    pub last_time: LineTime,
    pub lines_read: u64,
    /// Lines that were llama.cpp's (or its wrappers'): anything placed in a phase or a fact.
    pub lines_recognised: u64,
}

/// How a run ended, or where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ready,
    Serving,
    Crashed,
    Stalled,
    /// Before ready, and not (yet) quiet long enough to call it stalled, or its age is unknown.
    Incomplete,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ready => "ready",
            Outcome::Serving => "serving",
            Outcome::Crashed => "crashed",
            Outcome::Stalled => "stalled",
            Outcome::Incomplete => "incomplete",
        }
    }
}

impl LlamaLog {
    /// The phase reached last (the serving phases included).
    pub fn last_phase(&self) -> Option<Phase> {
        self.timeline.last().map(|m| m.phase)
    }

    /// The furthest loading phase reached.
    pub fn furthest_phase(&self) -> Option<Phase> {
        self.timeline.iter().map(|m| m.phase).max()
    }

    /// How long the log has been quiet at `now`: since its last line's wall clock, else since
    /// the file was last written (`mtime`); `None` when neither is known (standard input of a
    /// log without wall times).
    pub fn quiet_for(
        &self,
        now: jiff::Timestamp,
        mtime: Option<jiff::Timestamp>,
    ) -> Option<Duration> {
        let last = self.last_time.wall.or(mtime)?;
        let quiet = now.duration_since(last);
        Duration::try_from(quiet).ok()
    }

    /// The outcome, given how long the log has been quiet (`None`: unknown).
    pub fn outcome(&self, quiet_for: Option<Duration>, stall_after: Duration) -> Outcome {
        if self.errors_total > 0 {
            return Outcome::Crashed;
        }
        match self.furthest_phase() {
            Some(p) if p > Phase::Ready => Outcome::Serving,
            Some(Phase::Ready) => Outcome::Ready,
            _ => match quiet_for {
                Some(quiet) if quiet >= stall_after => Outcome::Stalled,
                _ => Outcome::Incomplete,
            },
        }
    }
}

/// Every literal the line rules look for anywhere in a line. One Aho-Corasick pass per line
/// finds which occur, so each rule is a lookup among the few found instead of a search of the
/// line (the searches were most of the time spent on a serving log).
const NEEDLES: &[&str] = &[
    "fitting params to device memory",
    "successfully fit params",
    "took",
    "failed",
    "successfully fit",
    "failed to fit",
    ": ",
    "warming up the model",
    "compute buffer size",
    "graph nodes",
    "graph splits",
    "msg=\"compute graph\"",
    "KV self size",
    "model load progress",
    "layers to GPU",
    "msg=\"model weights\"",
    "model loaded",
    "server is listening on",
    "llama runner started",
    "all slots are idle",
    "stop processing",
    "n_decoded =",
    "n_gen =",
    "prompt done",
    "processing task",
    "new prompt",
    "prompt processing",
    "waiting for llama-server",
    "invalid device function",
    "No compatible code objects found",
    "ROCm error",
    "compute_forward:",
    "failed to allocate",
    "unable to allocate",
    "ErrorOutOfDeviceMemory",
    "Device memory allocation of size",
    "HSA_STATUS_ERROR",
    "Memory access fault by GPU",
    "HW Exception by GPU",
    "Memory critical error",
    "GGML_ABORT",
    "GGML_ASSERT",
    "Aborted (core dumped)",
    "failed to load model",
    "error loading model",
    "starting server in router mode",
    "ROCm devices",
    "ROCm0",
    "libggml-hip",
    "Vulkan0",
    "CUDA devices",
    "CUDA0",
    "CPU_Mapped model buffer size",
    "file size   = ",
    "(load_mode = ",
    "(mmap = ",
    "direct_io = ",
    "Flash Attention was ",
    "offloaded ",
    "verbosity = ",
    "build: ",
    "build_info: ",
    "print_info: build ",
    "common_params_print_info: build ",
    "loading model '",
    "flash_attn",
    "n_ctx",
    "n_ctx_slot",
];

static FINDER: std::sync::LazyLock<Option<aho_corasick::AhoCorasick>> =
    std::sync::LazyLock::new(|| aho_corasick::AhoCorasick::new(NEEDLES).ok());

/// The needles one line holds.
#[derive(Debug, Default)]
struct Hits {
    found: Vec<usize>,
    /// The automaton could not be built (never, for these literals): search each needle.
    line: Option<String>,
}

impl Hits {
    fn scan(&mut self, body: &str) {
        self.found.clear();
        self.line = None;
        match FINDER.as_ref() {
            Some(finder) => {
                for m in finder.find_overlapping_iter(body) {
                    let index = m.pattern().as_usize();
                    if !self.found.contains(&index) {
                        self.found.push(index);
                    }
                }
            }
            None => self.line = Some(body.to_owned()),
        }
    }

    /// [`value_after`], searched only when the key is in the line.
    fn value_after<'a>(&self, body: &'a str, key: &str) -> Option<&'a str> {
        self.has(key).then(|| value_after(body, key)).flatten()
    }

    fn quoted_after<'a>(&self, body: &'a str, key: &str) -> Option<&'a str> {
        self.has(key).then(|| quoted_after(body, key)).flatten()
    }

    fn assigned<'a>(&self, body: &'a str, key: &str) -> Option<&'a str> {
        self.has(key).then(|| assigned(body, key)).flatten()
    }

    fn has(&self, needle: &str) -> bool {
        debug_assert!(
            NEEDLES.contains(&needle),
            "{needle:?} is missing from NEEDLES"
        );
        match &self.line {
            Some(line) => line.contains(needle),
            // Most lines hold no needle at all, or one or two.
            None => {
                !self.found.is_empty()
                    && self
                        .found
                        .iter()
                        .any(|&i| NEEDLES[i].len() == needle.len() && NEEDLES[i] == needle)
            }
        }
    }
}

/// Reads a whole log, line by line.
pub fn parse<'a>(lines: impl IntoIterator<Item = &'a str>) -> LlamaLog {
    let mut parser = Parser::default();
    for line in lines {
        parser.push(line);
    }
    parser.finish()
}

/// A line with its prefixes taken off.
#[derive(Debug, Default, PartialEq)]
struct Stripped<'a> {
    body: &'a str,
    time: LineTime,
    /// llama.cpp's level letter, when the prefix carried one.
    level: Option<char>,
    /// Progress dots were glued in front of the body.
    dots: bool,
    /// ollama's `msg="…"`, unescaped.
    owned: Option<String>,
    /// Forwarded by a router from its child (`[PORT] `).
    child: bool,
}

/// Reads a log a line at a time (for logs too large to hold): [`parse`] is `push` for every
/// line, then `finish`. Its state: the fit pre-pass, a CRI partial line waiting for its end, LM
/// Studio's timestamp line waiting for its message, router mode.
#[derive(Debug, Default)]
pub struct Parser {
    log: LlamaLog,
    in_fit: bool,
    /// The needles of the line being read (kept to reuse its buffer).
    hits: Hits,
    /// A router (`llama-server` without `-m`): the run is its child's, whose lines come back
    /// prefixed `[PORT] `; the router's own lines (its `listening on`) are not the model's.
    router: bool,
    partial: String,
    pending_wall: Option<jiff::Timestamp>,
    gpu_seen: bool,
}

impl Parser {
    pub fn push(&mut self, raw: &str) {
        self.log.lines_read += 1;
        let number = self.log.lines_read;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        // CRI pod-log lines: `TIME STREAM P|F text`; `P` parts are joined up to the `F`.
        let (cri_wall, raw) = match cri_line(raw) {
            Some((wall, true, text)) => {
                let room = MAX_JOINED_LINE_BYTES.saturating_sub(self.partial.len());
                let mut cut = text.len().min(room);
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                self.partial.push_str(&text[..cut]);
                self.pending_wall = self.pending_wall.or(Some(wall));
                return;
            }
            Some((wall, false, text)) if !self.partial.is_empty() => {
                let mut joined = std::mem::take(&mut self.partial);
                joined.push_str(text);
                let wall = self.pending_wall.take().unwrap_or(wall);
                self.line(number, &joined, Some(wall));
                return;
            }
            Some((wall, false, text)) => (Some(wall), text),
            None => (None, raw),
        };
        self.line(number, raw, cri_wall);
    }

    fn line(&mut self, number: u64, text: &str, wall: Option<jiff::Timestamp>) {
        // LM Studio: a timestamp and level alone on a line, the message on the next.
        if let Some(stamp) = lm_studio_stamp(text) {
            self.pending_wall = Some(stamp);
            self.log.lines_recognised += 1;
            return;
        }
        let mut stripped = strip(text);
        if stripped.time.wall.is_none() {
            stripped.time.wall = wall.or_else(|| self.pending_wall.take());
        }
        let owned = stripped.owned.take();
        let body = owned.as_deref().unwrap_or(stripped.body);
        let trimmed = body.trim();
        if trimmed.is_empty() && !stripped.dots {
            return;
        }
        let recognised = self.classify(number, trimmed, &stripped);
        if recognised {
            self.log.lines_recognised += 1;
        }
        if !trimmed.is_empty() {
            // The buffer is reused: one allocation per log, not per line.
            match &mut self.log.last_line {
                Some((last, text)) => {
                    *last = number;
                    text.clear();
                    text.push_str(trimmed);
                }
                None => self.log.last_line = Some((number, trimmed.to_owned())),
            }
        }
        if stripped.time.since_start_s.is_some() || stripped.time.wall.is_some() {
            self.log.last_time = stripped.time;
        }
    }

    /// Places one body in its phase and takes its facts; whether it was llama.cpp's.
    fn classify(&mut self, number: u64, body: &str, stripped: &Stripped<'_>) -> bool {
        let mut hits = std::mem::take(&mut self.hits);
        hits.scan(body);
        let recognised = self.classify_with(number, body, stripped, &hits);
        self.hits = hits;
        recognised
    }

    fn classify_with(
        &mut self,
        number: u64,
        body: &str,
        stripped: &Stripped<'_>,
        hits: &Hits,
    ) -> bool {
        if hits.has("starting server in router mode") {
            self.router = true;
        }
        if self.router && !stripped.child {
            // The router's own line: its start, never the model's phases.
            return true;
        }
        let facts = self.facts(number, body, hits);
        let phase = self.phase_of(body, stripped.dots, hits);
        // Progress dots glued in front of a line are the upload that went before it, whatever
        // the line is (a request log line can land in the middle of an upload).
        if stripped.dots
            && !self.in_fit
            && phase.is_none_or(|p| p > Phase::Upload)
            && self.log.furthest_phase() >= Some(Phase::ModelMetadata)
        {
            self.enter(Phase::Upload, number, stripped.time);
        }
        if let Some(phase) = phase {
            self.enter(phase, number, stripped.time);
        }
        facts || phase.is_some() || stripped.level.is_some()
    }

    fn enter(&mut self, phase: Phase, line: u64, time: LineTime) {
        let current = self.log.timeline.last().map(|m| m.phase);
        let moves = match current {
            None => true,
            Some(now) if now == phase => false,
            // Loading only moves forward (a later line of an earlier step is a detail of it);
            // once up, the serving phases follow each other freely.
            Some(now) if now.is_up() => phase.is_up(),
            Some(now) => phase > now,
        };
        if !moves {
            return;
        }
        let timeline = &mut self.log.timeline;
        if timeline.len() >= MAX_TIMELINE_MARKS {
            // The oldest serving mark goes; the loading phases before ready all stay.
            match timeline.iter().position(|m| m.phase > Phase::Ready) {
                Some(oldest) => {
                    timeline.remove(oldest);
                }
                None => return,
            }
        }
        timeline.push(PhaseMark { phase, line, time });
    }

    fn phase_of(&mut self, body: &str, dots: bool, hits: &Hits) -> Option<Phase> {
        let has = |s: &str| hits.has(s);
        let starts = |s: &str| body.starts_with(s);
        // The fit pre-pass runs a whole mock load: its lines are the pre-pass, not the load.
        if has("fitting params to device memory") || starts("llama_params_fit") {
            self.in_fit = !(has("successfully fit params") || has("took") || has("failed"));
            return Some(Phase::MemoryFit);
        }
        if starts("common_fit_params:")
            || starts("common_params_fit_impl:")
            || starts("common_memory_breakdown_print:")
        {
            if has("successfully fit") || has("took") || has("failed to fit") {
                self.in_fit = false;
            }
            return Some(Phase::MemoryFit);
        }
        if self.in_fit
            && (starts("llama_model_loader:")
                || starts("print_info:")
                || starts("load_tensors:")
                || starts("create_tensor:")
                || starts("llama_context:")
                || starts("llama_kv_cache")
                || starts("sched_reserve:")
                || starts("graph_reserve:")
                || starts("resolve_fused_ops:")
                || starts("llama_prepare_model_devices:")
                || starts("llama_model_load_from_file_impl:")
                || starts("llama_load_model_from_file:")
                || starts("load:"))
        {
            return Some(Phase::MemoryFit);
        }
        let phase = if starts("ggml_cuda_init:")
            || starts("ggml_init_cublas:")
            || starts("ggml_vulkan:")
            || starts("Device ") && has(": ")
            || starts("device_info:")
        {
            Phase::DeviceInit
        } else if has("warming up the model") {
            Phase::Warmup
        } else if starts("sched_reserve:")
            || starts("graph_reserve:")
            || starts("resolve_fused_ops:")
            || starts("llama_context: reserving")
            || starts("llama_context: worst-case")
            || ((starts("llama_context:") || starts("llama_new_context_with_model:"))
                && (has("compute buffer size") || has("graph nodes") || has("graph splits")))
            || has("msg=\"compute graph\"")
        {
            Phase::GraphReserve
        } else if starts("llama_context:")
            || starts("llama_new_context_with_model:")
            || starts("llama_init_from_model:")
            || starts("llama_kv_cache")
            || starts("llama_memory_recurrent")
            || has("KV self size")
        {
            Phase::Context
        } else if starts("load_all_data:") || has("model load progress") || dots && body.is_empty()
        {
            Phase::Upload
        } else if starts("load_tensors:")
            || starts("llm_load_tensors:")
            || starts("create_tensor:")
            || has("layers to GPU")
            || has("msg=\"model weights\"")
        {
            Phase::TensorLoad
        } else if starts("llama_model_loader:")
            || starts("print_info:")
            || starts("llm_load_print_meta:")
            || starts("load:")
            || starts("llama_model_load_from_file_impl:")
            || starts("llama_load_model_from_file:")
            || starts("llama_prepare_model_devices:")
            || starts("llm_load_vocab:")
        {
            Phase::ModelMetadata
        } else if has("model loaded")
            || has("server is listening on")
            || starts("llama_server: listening on")
            || has("llama runner started")
        {
            Phase::Ready
        } else if has("all slots are idle") || has("stop processing") {
            // Idle after a request; the first "all slots are idle" of a fresh server is ready.
            if self.log.furthest_phase().is_some_and(|p| p > Phase::Ready) {
                Phase::Idle
            } else {
                Phase::Ready
            }
        } else if has("n_decoded =") || has("n_gen =") || has("prompt done") {
            Phase::Generation
        } else if (has("processing task") && !starts("start_loop:"))
            || has("new prompt")
            || has("prompt processing")
        {
            Phase::PromptProcessing
        } else if starts("build:")
            || starts("build_info:")
            || starts("system_info:")
            || starts("system info:")
            || starts("common_params_print_info:")
            || starts("common_param: common_params_print_info:")
            || starts("llama_server:")
            || starts("main:")
            || starts("load_model:")
            || starts("init:")
            || starts("log_info:")
            || has("waiting for llama-server")
        {
            Phase::Startup
        } else {
            return None;
        };
        Some(phase)
    }

    /// Takes the facts a line states; whether it stated one.
    fn facts(&mut self, number: u64, body: &str, hits: &Hits) -> bool {
        let log = &mut self.log;
        let mut found = false;
        if let Some(kind) = error_kind(hits) {
            log.errors_total += 1;
            if log.errors.len() < MAX_ERRORS_KEPT {
                log.errors.push(LogError {
                    kind,
                    line: number,
                    text: body.chars().take(400).collect(),
                });
            }
            found = true;
        }
        if hits.has("ROCm devices")
            || hits.has("ROCm0")
            || hits.has("ROCm error")
            || hits.has("libggml-hip")
        {
            log.backend = Some(Backend::Rocm);
            self.gpu_seen = true;
            found = true;
        } else if body.starts_with("ggml_vulkan:") || hits.has("Vulkan0") {
            if log.backend != Some(Backend::Rocm) {
                log.backend = Some(Backend::Vulkan);
            }
            self.gpu_seen = true;
            found = true;
        } else if hits.has("CUDA devices") || hits.has("CUDA0") {
            log.backend.get_or_insert(Backend::Cuda);
            self.gpu_seen = true;
            found = true;
        } else if !self.gpu_seen && hits.has("CPU_Mapped model buffer size") {
            log.backend.get_or_insert(Backend::Cpu);
        }
        if let Some(device) = device_line(body)
            && log.devices.len() < MAX_DEVICES
            && !log.devices.contains(&device)
        {
            log.devices.push(device);
            found = true;
        }
        if let Some(path) = hits.quoted_after(body, "loading model '") {
            log.model = Some(path.to_owned());
            found = true;
        }
        if let Some(size) = hits.value_after(body, "file size   = ") {
            log.model_size = Some(size.trim().to_owned());
        }
        if let Some(mode) = hits.value_after(body, "(load_mode = ") {
            log.load_mode = Some(mode.trim_end_matches(')').trim().to_owned());
        } else if let Some(mmap) = hits.value_after(body, "(mmap = ") {
            let mmap = mmap.split([',', ')']).next().unwrap_or("").trim();
            let direct_io = hits
                .value_after(body, "direct_io = ")
                .map(|d| d.trim_end_matches(')').trim())
                .is_some_and(|d| d == "true");
            log.load_mode = Some(match (mmap, direct_io) {
                (_, true) => "dio".to_owned(),
                ("true", false) => "mmap".to_owned(),
                _ => "none".to_owned(),
            });
        }
        if let Some(flash) = hits.assigned(body, "flash_attn") {
            log.flash_attention = flash.split_whitespace().next().map(str::to_owned);
        } else if let Some(flash) = hits.value_after(body, "Flash Attention was ") {
            log.flash_attention = flash.rsplit(' ').next().map(str::to_owned);
        }
        if let Some(n_ctx) = hits
            .assigned(body, "n_ctx")
            .or_else(|| hits.assigned(body, "n_ctx_slot"))
            .and_then(leading_number)
        {
            log.n_ctx = Some(n_ctx);
        }
        if let Some(layers) = hits.value_after(body, "offloaded ").and_then(|v| {
            let (done, rest) = v.split_once('/')?;
            let total = rest.split_whitespace().next()?;
            Some((done.trim().parse().ok()?, total.parse().ok()?))
        }) {
            log.layers_offloaded = Some(layers);
        }
        if let Some(verbosity) = hits
            .value_after(body, "verbosity = ")
            .and_then(leading_number)
            .and_then(|v| u8::try_from(v).ok())
        {
            log.verbosity = Some(verbosity);
        }
        if log.build.is_none()
            && let Some(build) = hits
                .value_after(body, "build: ")
                .or_else(|| hits.value_after(body, "build_info: "))
                .or_else(|| hits.value_after(body, "print_info: build "))
                .or_else(|| hits.value_after(body, "common_params_print_info: build "))
        {
            log.build = Some(build.trim().chars().take(80).collect());
        }
        found
    }

    pub fn finish(mut self) -> LlamaLog {
        if !self.partial.is_empty() {
            let joined = std::mem::take(&mut self.partial);
            let wall = self.pending_wall.take();
            let number = self.log.lines_read;
            self.line(number, &joined, wall);
        }
        self.log
    }
}

/// The error a line reports, if it reports one.
fn error_kind(hits: &Hits) -> Option<ErrorKind> {
    let has = |s: &str| hits.has(s);
    Some(
        if has("invalid device function") || has("No compatible code objects found") {
            ErrorKind::InvalidDeviceFunction
        } else if has("ROCm error") || (has("compute_forward:") && has("failed")) {
            ErrorKind::RocmError
        } else if has("failed to allocate")
            || has("unable to allocate")
            || has("ErrorOutOfDeviceMemory")
            || (has("Device memory allocation of size") && has("failed"))
        {
            ErrorKind::AllocationFailure
        } else if has("HSA_STATUS_ERROR")
            || has("Memory access fault by GPU")
            || has("HW Exception by GPU")
            || has("Memory critical error")
        {
            ErrorKind::HsaFault
        } else if has("GGML_ABORT") || has("GGML_ASSERT") || has("Aborted (core dumped)") {
            ErrorKind::GgmlAbort
        } else if has("failed to load model") || has("error loading model") {
            ErrorKind::LoadFailed
        } else {
            return None;
        },
    )
}

/// `  Device 0: Radeon 8060S Graphics, gfx1151 (0x1151), …`,
/// `ggml_vulkan: 0 = Radeon 8060S Graphics (RADV GFX1151) (radv) | …`,
/// `  - ROCm0   : AMD Radeon 8060S Graphics (122880 MiB, 125693 MiB free)`.
fn device_line(body: &str) -> Option<Device> {
    if let Some(rest) = body.strip_prefix("Device ") {
        let (_, rest) = rest.split_once(": ")?;
        let mut parts = rest.split(", ");
        let name = parts.next()?.trim().to_owned();
        let gfx_target = parts
            .next()
            .and_then(|p| p.split_whitespace().next())
            .filter(|p| p.starts_with("gfx"))
            .map(str::to_owned);
        return Some(Device { name, gfx_target });
    }
    if let Some(rest) = body.strip_prefix("ggml_vulkan: ") {
        let (index, rest) = rest.split_once(" = ")?;
        index.trim().parse::<u32>().ok()?;
        let described = rest.split(" | ").next()?.trim();
        let (name, detail) = described.split_once(" (").unwrap_or((described, ""));
        let gfx_target = detail
            .split(|c: char| !c.is_ascii_alphanumeric())
            .find(|w| w.to_ascii_lowercase().starts_with("gfx"))
            .map(str::to_ascii_lowercase);
        return Some(Device {
            name: name.to_owned(),
            gfx_target,
        });
    }
    if let Some(rest) = body.strip_prefix("- ") {
        let (backend, rest) = rest.split_once(':')?;
        let backend = backend.trim();
        if backend.starts_with("CPU") || !backend.chars().any(|c| c.is_ascii_digit()) {
            return None;
        }
        let name = rest.split(" (").next()?.trim().to_owned();
        return Some(Device {
            name,
            gfx_target: None,
        });
    }
    None
}

/// The value of `key = value` in a line of aligned parameters (`n_ctx         = 4096`): `key`
/// as a whole word, then spaces, then `=`.
fn assigned<'a>(body: &'a str, key: &str) -> Option<&'a str> {
    let mut from = 0;
    while let Some(at) = body.get(from..)?.find(key) {
        let start = from + at;
        let end = start + key.len();
        let word_start = body[..start]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_ascii_alphanumeric() && c != '_');
        if word_start && let Some(value) = body[end..].trim_start_matches(' ').strip_prefix('=') {
            return Some(value.trim_start());
        }
        from = end;
    }
    None
}

fn value_after<'a>(body: &'a str, key: &str) -> Option<&'a str> {
    body.find(key).map(|at| &body[at + key.len()..])
}

fn quoted_after<'a>(body: &'a str, key: &str) -> Option<&'a str> {
    value_after(body, key).and_then(|rest| rest.split('\'').next())
}

fn leading_number(text: &str) -> Option<u64> {
    let digits: &str = text
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()?;
    digits.parse().ok()
}

/// `2026-01-02T03:04:05.123456789Z stdout|stderr P|F text` → (time, partial, text).
fn cri_line(line: &str) -> Option<(jiff::Timestamp, bool, &str)> {
    let (stamp, rest) = line.split_once(' ')?;
    let (stream, rest) = rest.split_once(' ')?;
    if stream != "stdout" && stream != "stderr" {
        return None;
    }
    let (tag, text) = rest.split_once(' ').unwrap_or((rest, ""));
    let partial = match tag {
        "P" => true,
        "F" => false,
        _ => return None,
    };
    Some((stamp.parse().ok()?, partial, text))
}

/// LM Studio's `2026-01-21 16:56:58 [DEBUG]` line, alone.
fn lm_studio_stamp(line: &str) -> Option<jiff::Timestamp> {
    let line = line.trim_end();
    // Cheap tests first: this runs on every line.
    if !line.ends_with(']') || !line.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let (stamp, level) = line.rsplit_once(" [")?;
    if !level.ends_with(']')
        || !level[..level.len() - 1]
            .chars()
            .all(|c| c.is_ascii_uppercase())
    {
        return None;
    }
    civil_utc(stamp)
}

/// `2026-01-21 16:56:58[.919]` read as UTC.
fn civil_utc(text: &str) -> Option<jiff::Timestamp> {
    let civil: jiff::civil::DateTime = text.trim().replace(' ', "T").parse().ok()?;
    civil
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

/// Takes off, in order: kubectl's RFC 3339 stamp, journald's `Mon DD HH:MM:SS host ident[pid]: `,
/// lemonade's `YYYY-MM-DD HH:MM:SS.mmm [Level] (Process) `, ollama's `time=… level=… msg="…"`,
/// a router child's `[pid] `, llama.cpp's `M.SS.mmm.uuu L `, its 4-char tag and right-aligned
/// function column, and progress dots glued to the front.
fn strip(line: &str) -> Stripped<'_> {
    let mut out = Stripped {
        body: line,
        ..Stripped::default()
    };
    let mut rest = line;
    // kubectl logs --timestamps
    if let Some((stamp, after)) = rest.split_once(' ')
        && stamp.len() >= 20
        && stamp.as_bytes().get(4) == Some(&b'-')
        && let Ok(wall) = stamp.parse::<jiff::Timestamp>()
    {
        out.time.wall = Some(wall);
        rest = after;
    }
    // journald short: `Dec 02 12:10:21 host ident[pid]: `
    if let Some(after) = journald_prefix(rest) {
        rest = after;
    }
    // lemonade: `2026-04-27 09:37:02.919 [Info] (Process) `
    if rest.len() > 24
        && rest.as_bytes().get(4) == Some(&b'-')
        && let Some((stamp, after)) = rest.split_once(" [")
        && let Some(wall) = civil_utc(stamp)
        && let Some((_, after)) = after.split_once("] ")
    {
        out.time.wall.get_or_insert(wall);
        rest = after.strip_prefix("(Process) ").unwrap_or(after);
    }
    // ollama
    if rest.starts_with("time=")
        && let Some(msg) = ollama_msg(rest)
    {
        if let Some(wall) = rest
            .strip_prefix("time=")
            .and_then(|r| r.split(' ').next())
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        {
            out.time.wall.get_or_insert(wall);
        }
        out.owned = Some(msg);
        out.body = "";
        return out;
    }
    // `[41303] `
    if let Some(after) = rest.strip_prefix('[')
        && let Some((pid, after)) = after.split_once("] ")
        && !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
    {
        rest = after;
        out.child = true;
    }
    // `0.00.153.386 I `
    if let Some((stamp, after)) = rest.split_once(' ')
        && let Some(seconds) = llama_stamp(stamp)
    {
        out.time.since_start_s = Some(seconds);
        rest = after;
        let mut chars = rest.chars();
        if let (Some(level @ ('I' | 'W' | 'E' | 'D')), Some(' ')) = (chars.next(), chars.next()) {
            out.level = Some(level);
            rest = &rest[2..];
        }
    }
    const TAGS: [&str; 6] = ["srv  ", "cmn  ", "slot ", "spec ", "que  ", "res  "];
    // `--no-log-timestamps` keeps the level letter: `I srv  …`.
    if out.level.is_none() {
        let mut chars = rest.chars();
        if let (Some(level @ ('I' | 'W' | 'E' | 'D')), Some(' ')) = (chars.next(), chars.next())
            && TAGS.iter().any(|tag| rest[2..].starts_with(tag))
        {
            out.level = Some(level);
            rest = &rest[2..];
        }
    }
    // `srv  `, `cmn  `, `slot `, `spec `, `que  `, `res  ` and the right-aligned function name.
    for tag in TAGS {
        if let Some(after) = rest.strip_prefix(tag) {
            rest = after.trim_start();
            // common's own lines print `common_param:` (a function name cut to 12) before
            // the library's function.
            if let Some(after) = rest.strip_prefix("common_param: ") {
                rest = after;
            }
            break;
        }
    }
    let undotted = rest.trim_start_matches('.');
    if undotted.len() != rest.len() {
        out.dots = true;
        rest = undotted;
    }
    out.body = rest;
    out
}

/// `M.SS.mmm.uuu` → seconds.
fn llama_stamp(stamp: &str) -> Option<f64> {
    let mut parts = stamp.split('.');
    let (minutes, seconds, millis, micros) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || seconds.len() != 2
        || millis.len() != 3
        || micros.len() != 3
        || ![minutes, seconds, millis, micros]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let number = |p: &str| p.parse::<f64>().ok();
    Some(number(minutes)? * 60.0 + number(seconds)? + number(millis)? / 1e3 + number(micros)? / 1e6)
}

/// The rest after `Mon DD HH:MM:SS host ident[pid]: `.
fn journald_prefix(line: &str) -> Option<&str> {
    let month = line.get(..3)?;
    if !month.chars().all(|c| c.is_ascii_alphabetic()) || line.as_bytes().get(3) != Some(&b' ') {
        return None;
    }
    // Day may be space-padded (`Dec  2`), which splitn leaves as an empty field.
    let after_month = line[3..].trim_start();
    let (day, after_day) = after_month.split_once(' ')?;
    if day.is_empty() || day.len() > 2 || !day.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (time, after_time) = after_day.split_once(' ')?;
    if time.len() < 8 || time.as_bytes().get(2) != Some(&b':') {
        return None;
    }
    let (_host, after_host) = after_time.split_once(' ')?;
    let (ident, message) = after_host.split_once(": ")?;
    (!ident.contains(' ')).then_some(message)
}

/// ollama's `msg="…"` (or unquoted `msg=word`), unescaped.
fn ollama_msg(line: &str) -> Option<String> {
    let at = line.find(" msg=")? + 5;
    let rest = &line[at..];
    let Some(quoted) = rest.strip_prefix('"') else {
        return Some(rest.split(' ').next().unwrap_or("").to_owned());
    };
    let mut out = String::new();
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            }
            '"' => break,
            c => out.push(c),
        }
    }
    // The attributes after the message say what it is about (`buffer=ROCm0`).
    let after: String = chars.collect();
    if !after.trim().is_empty() {
        out.push_str(" msg=\"");
        out.push_str(after.trim());
        out.push('"');
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    /// Every literal a rule looks up is in NEEDLES (a missing one would never be found).
    #[test]
    fn every_looked_up_literal_is_a_needle() {
        let source = include_str!("llama_log.rs");
        let mut checked = 0;
        for call in [
            "has(\"",
            "value_after(body, \"",
            "quoted_after(body, \"",
            "assigned(body, \"",
        ] {
            for (at, _) in source.match_indices(call) {
                let rest = &source[at + call.len()..];
                // Up to the first quote that is not escaped; `\"` stands for `"`.
                let bytes = rest.as_bytes();
                let Some(end) = (0..bytes.len())
                    .find(|&k| bytes[k] == b'"' && (k == 0 || bytes[k - 1] != b'\\'))
                else {
                    continue;
                };
                let literal = rest[..end].replace("\\\"", "\"");
                if source[..at].ends_with("hits.") || call == "has(\"" {
                    assert!(
                        NEEDLES.contains(&literal.as_str()),
                        "{literal:?} is not in NEEDLES"
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 60, "{checked}");
    }

    use super::*;

    fn phases(log: &LlamaLog) -> Vec<Phase> {
        log.timeline.iter().map(|m| m.phase).collect()
    }

    /// A current build at `-lv 4` on ROCm, cut inside the upload.
    const TRACE_ROCM: &str = "\
0.00.001.000 I ggml_cuda_init: found 1 ROCm devices (Total VRAM: 98304 MiB):
0.00.001.100 I   Device 0: Radeon 8060S Graphics, gfx1151 (0x1151), VMM: no, Wave Size: 32
0.00.002.000 I cmn  common_param: common_params_print_info: verbosity = 4 (adjust with the `-lv N` CLI arg)
0.00.002.100 I common_params_print_info: build 9389 (fae3a28)
0.00.003.000 I srv    load_model: loading model '/models/gpt-oss-120b.gguf'
0.00.004.000 I cmn  common_init_: fitting params to device memory, ...
0.00.005.000 I load_tensors:        ROCm0 model buffer size =     0.00 MiB
0.00.006.000 I common_fit_params: successfully fit params to free device memory
0.00.007.000 I llama_model_loader: loaded meta data with 35 key-value pairs and 459 tensors
0.00.007.100 I print_info: file size   = 59.02 GiB (4.34 BPW)
0.00.008.000 I load_tensors: loading model tensors, this can take a while... (load_mode = mmap)
0.00.008.100 I load_tensors: offloaded 37/37 layers to GPU
0.00.008.200 I load_tensors:        ROCm0 model buffer size = 59000.00 MiB
....................
";

    #[test]
    fn a_trace_log_reaches_upload_and_the_fit_pass_is_not_the_load() {
        let log = parse(TRACE_ROCM.lines());
        assert_eq!(
            phases(&log),
            [
                Phase::DeviceInit,
                Phase::MemoryFit,
                Phase::ModelMetadata,
                Phase::TensorLoad,
                Phase::Upload
            ],
            "{:#?}",
            log.timeline
        );
        // The mock load's `load_tensors` line is the fit pass, so tensor load starts at line 11.
        assert_eq!(log.timeline[3].line, 11);
        assert_eq!(log.backend, Some(Backend::Rocm));
        assert_eq!(log.devices[0].gfx_target.as_deref(), Some("gfx1151"));
        assert_eq!(log.model.as_deref(), Some("/models/gpt-oss-120b.gguf"));
        assert_eq!(log.model_size.as_deref(), Some("59.02 GiB (4.34 BPW)"));
        assert_eq!(log.load_mode.as_deref(), Some("mmap"));
        assert_eq!(log.layers_offloaded, Some((37, 37)));
        assert_eq!(log.verbosity, Some(4));
        assert_eq!(log.build.as_deref(), Some("9389 (fae3a28)"));
        // `0.00.008.200`: 0 min, 0 s, 8 ms, 200 µs.
        let since_start = log.last_time.since_start_s.unwrap();
        assert!((since_start - 0.0082).abs() < 1e-9, "{since_start}");
        assert_eq!(
            log.outcome(Some(Duration::from_secs(600)), Duration::from_secs(120)),
            Outcome::Stalled
        );
        assert_eq!(
            log.outcome(Some(Duration::from_secs(5)), Duration::from_secs(120)),
            Outcome::Incomplete
        );
        // Without wall times in the log, the file's mtime is when it last moved.
        let now: jiff::Timestamp = "2026-01-02T03:10:00Z".parse().unwrap();
        let mtime: jiff::Timestamp = "2026-01-02T03:00:00Z".parse().unwrap();
        assert_eq!(
            log.quiet_for(now, Some(mtime)),
            Some(Duration::from_secs(600))
        );
        assert_eq!(log.quiet_for(now, None), None);
    }

    #[test]
    fn a_default_log_that_served_one_request() {
        let log = "\
0.00.000.500 I srv  llama_server: initializing ...
0.00.000.600 I cmn  common_param: common_params_print_info: verbosity = 3 (adjust with the `-lv N` CLI arg)
0.00.012.687 I srv    load_model: loading model 'x.gguf'
0.00.127.627 I cmn          init: llama threadpool init, n_threads = 2
0.00.200.000 I srv    load_model: initializing, n_slots = 4, n_ctx_slot = 256, kv_unified = 'true'
0.00.300.000 I srv  llama_server: model loaded
0.00.300.100 I srv  llama_server: listening on http://127.0.0.1:8080
0.01.000.000 I slot launch_slot_: id  0 | task 0 | processing task, is_child = 0
0.01.100.000 I slot print_timing: id  0 | task 0 | prompt eval time =  10.00 ms /  4 tokens
0.01.200.000 I slot      release: id  0 | task 0 | stop processing: n_past = 20, truncated = 0
";
        let log = parse(log.lines());
        assert_eq!(
            phases(&log),
            [
                Phase::Startup,
                Phase::Ready,
                Phase::PromptProcessing,
                Phase::Idle
            ]
        );
        assert_eq!(log.verbosity, Some(3));
        assert_eq!(log.n_ctx, Some(256));
        assert_eq!(
            log.outcome(None, Duration::from_secs(120)),
            Outcome::Serving
        );
        assert_eq!(log.lines_recognised, log.lines_read);
    }

    #[test]
    fn every_prefix_style_gives_the_same_phases() {
        let bodies = [
            "srv    load_model: loading model 'm.gguf'",
            "load_tensors: loading model tensors, this can take a while... (mmap = true)",
            "..........load_all_data: using async uploads for device ROCm0, buffer type ROCm0, backend ROCm0",
        ];
        let styles: [fn(&str) -> String; 6] = [
            |b| b.to_owned(),
            |b| format!("0.00.153.386 I {b}"),
            |b| format!("[41303] 0.00.153.386 I {b}"),
            |b| format!("Dec 02 12:10:21 host llama-server[24689]: {b}"),
            |b| format!("2026-01-02T03:04:05.123456789Z {b}"),
            |b| format!("2026-01-02T03:04:05.123456789Z stderr F {b}"),
        ];
        for style in styles {
            let lines: Vec<String> = bodies.iter().map(|b| style(b)).collect();
            let log = parse(lines.iter().map(String::as_str));
            assert_eq!(
                phases(&log),
                [Phase::Startup, Phase::TensorLoad, Phase::Upload],
                "{lines:?}"
            );
            assert_eq!(log.load_mode.as_deref(), Some("mmap"), "{lines:?}");
            assert_eq!(log.backend, Some(Backend::Rocm), "{lines:?}");
        }
    }

    #[test]
    fn cri_partial_lines_are_joined_and_old_names_are_known() {
        let log = "\
2026-01-02T03:04:05Z stderr P llm_load_tensors: offloaded 
2026-01-02T03:04:05Z stderr F 41/41 layers to GPU
2026-01-02T03:04:06Z stderr F llama_new_context_with_model: n_ctx      = 8192
2026-01-02T03:04:07Z stderr F llama_init_from_gpt_params: warming up the model with an empty run
";
        let log = parse(log.lines());
        assert_eq!(
            phases(&log),
            [Phase::TensorLoad, Phase::Context, Phase::Warmup]
        );
        assert_eq!(log.layers_offloaded, Some((41, 41)));
        assert_eq!(log.n_ctx, Some(8192));
        assert_eq!(
            log.last_time.wall.map(|t| t.to_string()).as_deref(),
            Some("2026-01-02T03:04:07Z")
        );
    }

    #[test]
    fn errors_crash_the_run_and_vulkan_and_ollama_are_read() {
        let log = parse(
            "\
ggml_vulkan: Found 1 Vulkan devices:
ggml_vulkan: 0 = Radeon 8060S Graphics (RADV GFX1151) (radv) | uma: 1 | fp16: 1
common_init_from_params: warming up the model with an empty run - please wait ... (--no-warmup to disable)
ggml_vulkan: Device memory allocation of size 123 failed.
"
            .lines(),
        );
        assert_eq!(log.backend, Some(Backend::Vulkan));
        assert_eq!(log.devices[0].gfx_target.as_deref(), Some("gfx1151"));
        assert_eq!(log.errors[0].kind, ErrorKind::AllocationFailure);
        assert_eq!(log.last_phase(), Some(Phase::Warmup));
        assert_eq!(log.outcome(None, Duration::from_secs(1)), Outcome::Crashed);

        let ollama = parse(
            "\
time=2026-01-02T03:04:05.000Z level=INFO source=server.go:1 msg=\"offloaded 25/25 layers to GPU\"
time=2026-01-02T03:04:06.000Z level=INFO source=server.go:2 msg=\"model load progress 0.68\"
"
            .lines(),
        );
        assert_eq!(phases(&ollama), [Phase::TensorLoad, Phase::Upload]);
        assert_eq!(ollama.layers_offloaded, Some((25, 25)));
        assert!(ollama.last_time.wall.is_some());
    }

    #[test]
    fn lm_studio_and_lemonade_wrappers() {
        let log = parse(
            "\
2026-01-21 16:56:58 [DEBUG]
 load_tensors: loading model tensors, this can take a while... (mmap = false)
Apr 27 09:37:02  lemond[19598]: 2026-04-27 09:37:02.919 [Info] (Process) sched_reserve: reserving ...
"
            .lines(),
        );
        assert_eq!(phases(&log), [Phase::TensorLoad, Phase::GraphReserve]);
        assert_eq!(log.load_mode.as_deref(), Some("none"));
        assert_eq!(
            log.timeline[0].time.wall.map(|t| t.to_string()).as_deref(),
            Some("2026-01-21T16:56:58Z")
        );
    }

    #[test]
    fn glued_dots_are_the_upload_and_long_logs_stay_bounded() {
        let log = parse(
            "load_tensors: loading model tensors, this can take a while... (load_mode = mmap)\n\
             ..........llama_context: constructing llama_context\n"
                .lines(),
        );
        assert_eq!(
            phases(&log),
            [Phase::TensorLoad, Phase::Upload, Phase::Context]
        );

        // Weeks of serving and a crash loop keep a bounded record, the loading phases whole.
        let mut lines = vec![
            "load_tensors: loading model tensors, this can take a while... (mmap = true)"
                .to_owned(),
            "srv  llama_server: model loaded".to_owned(),
        ];
        for _ in 0..10_000 {
            lines.push("slot launch_slot_: id  0 | task 1 | processing task".to_owned());
            lines.push(
                "slot print_timing: id  0 | task 1 | n_decoded =    100, tg =  35.41 t/s"
                    .to_owned(),
            );
            lines.push("srv  update_slots: all slots are idle".to_owned());
            lines.push("ROCm error: unspecified launch failure".to_owned());
        }
        let big = "x".repeat(100_000);
        lines.push(format!("2026-01-02T03:04:05Z stderr P {big}"));
        lines.push(format!("2026-01-02T03:04:05Z stderr P {big}"));
        lines.push("2026-01-02T03:04:05Z stderr F end".to_owned());
        let log = parse(lines.iter().map(String::as_str));
        assert_eq!(log.timeline.len(), MAX_TIMELINE_MARKS);
        assert_eq!(log.timeline[0].phase, Phase::TensorLoad);
        assert_eq!(log.timeline[1].phase, Phase::Ready);
        assert_eq!(log.last_phase(), Some(Phase::Idle));
        assert_eq!(log.errors.len(), MAX_ERRORS_KEPT);
        assert_eq!(log.errors_total, 10_000);
        let (_, last) = log.last_line.unwrap();
        assert!(last.len() <= MAX_JOINED_LINE_BYTES + 3, "{}", last.len());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(lines in proptest::collection::vec("\\PC{0,120}", 0..20)) {
            let _ = parse(lines.iter().map(String::as_str));
        }

        #[test]
        fn never_panics_on_mutated_lines(cut in 0usize..120, line in 0usize..14) {
            let lines: Vec<&str> = TRACE_ROCM.lines().collect();
            let chosen = lines[line % lines.len()];
            let cut_at = (0..=cut.min(chosen.len())).rev().find(|&i| chosen.is_char_boundary(i)).unwrap_or(0);
            let _ = parse([&chosen[..cut_at], &chosen[cut_at..]]);
        }
    }
}
