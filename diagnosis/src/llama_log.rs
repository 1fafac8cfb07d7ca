//! llama.cpp logs read into phases: prefixes stripped, each line placed in the load/serve sequence, the run's facts and errors kept, and an outcome.
//!
//! What the lines mean is `reference/llamacpp.md`: old and new function names, the fit
//! pre-pass whose mock load is not the real one, verbosity levels that hide the loading lines.
//! The parser is total: any byte sequence is a line of some kind, and it never panics.

use std::time::Duration;

pub use nodectl_model::log_wrapper::JournalYear;
use nodectl_model::{line_reader, log_wrapper};
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
/// Lines from a context checkpoint's restore to an error that still make the error its: the
/// restore's own lines and the crash's few (a backtrace is a dozen) lie in between.
pub const RESTORE_THEN_CRASH_LINES: u64 = 50;
/// Bytes of a CRI line joined from its `P` parts: the kubelet splits at 16 KiB, and a
/// llama.cpp line is far shorter; the rest of a longer one is dropped.
const MAX_JOINED_LINE_BYTES: usize = 64 * 1024;

/// Where a run got to, in order of progress. The serving phases come after `Ready` and repeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Startup,
    DeviceInit,
    /// `load_model: loading model`: the load began. At the default verbosity nothing more is
    /// printed until the model is loaded, so a run cut here is somewhere between the tensor
    /// load and the end of warmup; the node's state narrows it.
    Loading,
    /// The `-fit` pre-pass: a mock load sized with `0.00 MiB` buffers, not the real one.
    MemoryFit,
    /// The compute-graph reserve of the `-fit` pre-pass's mock load: the first GPU work of a
    /// run, before any weight is uploaded.
    FitGraphReserve,
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
            Phase::Loading => "loading",
            Phase::MemoryFit => "memory_fit",
            Phase::FitGraphReserve => "fit_graph_reserve",
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
    /// `invalid device function`, `No compatible code objects found`, `hipErrorNoBinaryForGpu`,
    /// rocBLAS's `Cannot read …TensileLibrary.dat … for GPU arch : gfx1151`: the binary, or a
    /// library it loads, was built for other gfx targets.
    InvalidDeviceFunction,
    /// A buffer could not be allocated (ROCm or Vulkan).
    AllocationFailure,
    /// The HSA runtime or the GPU reported a fault.
    HsaFault,
    /// `GGML_ABORT`/`GGML_ASSERT`, `Aborted (core dumped)`, zsh's `IOT instruction (core
    /// dumped)`, fish's `SIGABRT`, or ggml's own backtrace (`ggml_abort`, `ggml_print_backtrace`).
    GgmlAbort,
    /// The process died of SIGSEGV: the shell's `Segmentation fault`, in any language glibc
    /// translates it to, or fish's `SIGSEGV`.
    SegmentationFault,
    /// The model did not load (the reason is usually the line before).
    LoadFailed,
    /// Vulkan lost the device (`vk::Queue::submit: ErrorDeviceLost`, radv's `the context is
    /// lost`): the kernel reset a job that ran past its timeout.
    DeviceLost,
    /// ggml's HIP virtual-memory pool failed (`HipVMM Failure: invalid argument`, a
    /// `ggml_cuda_pool_vmm::alloc` frame): a build with the VMM pool on a runtime where it breaks.
    VmmFailure,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::RocmError => "rocm_error",
            ErrorKind::InvalidDeviceFunction => "invalid_device_function",
            ErrorKind::AllocationFailure => "allocation_failure",
            ErrorKind::HsaFault => "hsa_fault",
            ErrorKind::GgmlAbort => "ggml_abort",
            ErrorKind::SegmentationFault => "segmentation_fault",
            ErrorKind::LoadFailed => "load_failed",
            ErrorKind::DeviceLost => "device_lost",
            ErrorKind::VmmFailure => "vmm_failure",
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
    /// The line of the context checkpoint restored (`restored context checkpoint`) just before
    /// the log's first error, when that error came within [`RESTORE_THEN_CRASH_LINES`] lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_after_checkpoint_restore: Option<u64>,
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
    /// `docker compose logs` of several services: the service whose lines were llama.cpp's
    /// first, the one the run is read from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compose_service: Option<String>,
    /// The other services' names (up to [`MAX_OTHER_SERVICES`]) and how many lines of theirs
    /// were left out after the run's service was known.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub other_services: Vec<String>,
    #[serde(skip_serializing_if = "nodectl_model::is_zero")]
    pub other_service_lines: u64,
}

/// How many other compose services' names a log keeps: a stack has a handful.
pub const MAX_OTHER_SERVICES: usize = 16;

/// What a line of llama.cpp's changes, and no other program's line does: the phases, backend or
/// devices found. Not errors: a web UI's `Segmentation fault` before the model server's first
/// line would make the web UI the run.
#[derive(Debug, PartialEq, Eq)]
struct RunProgress {
    marks: usize,
    backend: Option<Backend>,
    devices: usize,
}

/// How a run ended, or where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    Ready,
    Serving,
    Crashed,
    Stalled,
    /// Before ready, and not (yet) quiet long enough to call it stalled, or its age is unknown.
    Incomplete,
}

impl RunOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Ready => "ready",
            RunOutcome::Serving => "serving",
            RunOutcome::Crashed => "crashed",
            RunOutcome::Stalled => "stalled",
            RunOutcome::Incomplete => "incomplete",
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
    pub fn outcome(&self, quiet_for: Option<Duration>, stall_after: Duration) -> RunOutcome {
        if self.errors_total > 0 {
            return RunOutcome::Crashed;
        }
        match self.furthest_phase() {
            Some(p) if p > Phase::Ready => RunOutcome::Serving,
            Some(Phase::Ready) => RunOutcome::Ready,
            _ => match quiet_for {
                Some(quiet) if quiet >= stall_after => RunOutcome::Stalled,
                _ => RunOutcome::Incomplete,
            },
        }
    }
}

/// Names the literals of a table: an enum of them, their texts in the same order.
macro_rules! literals {
    ($(#[$doc:meta])* $kind:ident, $texts:ident { $($(#[$item:meta])* $name:ident = $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum $kind { $($(#[$item])* $name,)* }
        impl $kind {
            const ALL: &[$kind] = &[$($kind::$name,)*];
        }
        const $texts: &[&str] = &[$($text,)*];
    };
}

literals! {
    /// A literal the line rules look for anywhere in a line. One Aho-Corasick pass per line
    /// finds which occur; a rule is then a bit test (searching the line for each of ~60
    /// literals was most of the time spent on a serving log).
    Needle, NEEDLES {
        FittingParams = "fitting params to device memory",
        SuccessfullyFitParams = "successfully fit params",
        Took = "took",
        Failed = "failed",
        SuccessfullyFit = "successfully fit",
        FailedToFit = "failed to fit",
        WarmingUp = "warming up the model",
        ComputeBufferSize = "compute buffer size",
        GraphNodes = "graph nodes",
        GraphSplits = "graph splits",
        OllamaComputeGraph = "msg=\"compute graph\"",
        KvSelfSize = "KV self size",
        ModelLoadProgress = "model load progress",
        LayersToGpu = "layers to GPU",
        OllamaModelWeights = "msg=\"model weights\"",
        ModelLoaded = "model loaded",
        ServerListening = "server is listening on",
        RunnerStarted = "llama runner started",
        AllSlotsIdle = "all slots are idle",
        StopProcessing = "stop processing",
        NDecoded = "n_decoded =",
        NGen = "n_gen =",
        PromptDone = "prompt done",
        ProcessingTask = "processing task",
        NewPrompt = "new prompt",
        PromptProcessing = "prompt processing",
        WaitingForServer = "waiting for llama-server",
        InvalidDeviceFunction = "invalid device function",
        NoCompatibleCodeObjects = "No compatible code objects found",
        RocmError = "ROCm error",
        ComputeForward = "compute_forward:",
        FailedToAllocate = "failed to allocate",
        UnableToAllocate = "unable to allocate",
        OutOfDeviceMemory = "ErrorOutOfDeviceMemory",
        DeviceMemoryAllocation = "Device memory allocation of size",
        HsaStatusError = "HSA_STATUS_ERROR",
        MemoryAccessFault = "Memory access fault by GPU",
        HwException = "HW Exception by GPU",
        MemoryCriticalError = "Memory critical error",
        GgmlAbort = "GGML_ABORT",
        GgmlAssert = "GGML_ASSERT",
        CoreDumped = "Aborted (core dumped)",
        IotInstruction = "IOT instruction",
        Sigabrt = "SIGABRT",
        GgmlAbortFrame = "ggml_abort",
        PrintBacktrace = "ggml_print_backtrace",
        /// `Segmentation fault` and `segmentation fault`.
        SegmentationFault = "egmentation fault",
        Sigsegv = "SIGSEGV",
        // strsignal(SIGSEGV) as glibc translates it (po/de, fr, es, it, pt_BR, ru, zh_CN, pl).
        SegfaultDe = "Speicherzugriffsfehler",
        SegfaultFr = "Erreur de segmentation",
        SegfaultEs = "Violación de segmento",
        SegfaultIt = "Errore di segmentazione",
        SegfaultPt = "Falha de segmentação",
        SegfaultRu = "Ошибка сегментирования",
        SegfaultZh = "段错误",
        SegfaultPl = "Naruszenie ochrony pamięci",
        NoBinaryForGpu = "hipErrorNoBinaryForGpu",
        /// ggml's HIP VMM pool: `CU_CHECK` aborts with `HipVMM Failure: …` (vendors/hip.h), and
        /// the backtrace names `ggml_cuda_pool_vmm::alloc`.
        HipVmmFailure = "HipVMM Failure",
        PoolVmm = "ggml_cuda_pool_vmm",
        TensileLibrary = "TensileLibrary",
        ForGpuArch = "for GPU arch",
        /// Frames of a backtrace that only a request being served reaches: ggml's own
        /// (`libllama.so.0(llama_decode+0xf)[…]`) and gdb's (`#7 0x… in llama_decode () from …`).
        LlamaDecodeFrame = "(llama_decode+",
        LlamaDecodeGdbFrame = " in llama_decode ",
        StateSeqGetDataFrame = "(llama_state_seq_get_data",
        StateSeqGetDataGdbFrame = " in llama_state_seq_get_data",
        /// A slot's context checkpoint put back (`restored context checkpoint (pos_min = …`).
        RestoredCheckpoint = "restored context checkpoint",
        /// `FILE.cpp:LINE: message`: what `ggml_abort` prints first (see [`abort_line`]).
        CppColon = ".cpp:",
        CColon = ".c:",
        CuColon = ".cu:",
        ErrorDeviceLost = "ErrorDeviceLost",
        DeviceLostError = "DeviceLostError",
        VulkanDeviceLost = "device lost on Vulkan",
        RadvContextLost = "because the context is lost",
        /// `  - CPU     : …`: the CPU in the device listing.
        CpuListItem = "- CPU ",
        FailedToLoadModel = "failed to load model",
        ErrorLoadingModel = "error loading model",
        RouterMode = "starting server in router mode",
        /// Builds of mid-2026 say `main: router server is listening on …` (llama.cpp#24681).
        RouterListening = "router server is listening",
        RocmDevices = "ROCm devices",
        /// `ROCm0`, `CUDA0`, `Vulkan0` are these and a digit (no needle holds a digit: see
        /// [`shape_of`]); the rule checks the digit in the line.
        Rocm = "ROCm",
        LibggmlHip = "libggml-hip",
        Vulkan = "Vulkan",
        CudaDevices = "CUDA devices",
        Cuda = "CUDA",
        CpuMappedBuffer = "CPU_Mapped model buffer size",
        FileSize = "file size   = ",
        LoadMode = "(load_mode = ",
        Mmap = "(mmap = ",
        DirectIo = "direct_io = ",
        FlashAttentionWas = "Flash Attention was ",
        Offloaded = "offloaded ",
        Verbosity = "verbosity = ",
        Build = "build: ",
        BuildInfo = "build_info: ",
        PrintInfoBuild = "print_info: build ",
        CommonParamsBuild = "common_params_print_info: build ",
        LoadingModel = "loading model '",
        FlashAttn = "flash_attn",
        NCtx = "n_ctx",
        NCtxSlot = "n_ctx_slot",
    }
}

literals! {
    /// What a body starts with: the function column of llama.cpp's lines (and the few
    /// prefixes the rules read with more than the name). Found by one anchored search, so a
    /// rule is an enum comparison instead of dozens of prefix tests.
    Function, FUNCTIONS {
        LlamaParamsFit = "llama_params_fit",
        CommonFitParams = "common_fit_params:",
        CommonParamsFitImpl = "common_params_fit_impl:",
        CommonMemoryBreakdown = "common_memory_breakdown_print:",
        LlamaModelLoader = "llama_model_loader:",
        PrintInfo = "print_info:",
        LoadTensors = "load_tensors:",
        CreateTensor = "create_tensor:",
        LlamaContext = "llama_context:",
        LlamaContextReserving = "llama_context: reserving",
        LlamaContextWorstCase = "llama_context: worst-case",
        LlamaKvCache = "llama_kv_cache",
        LlamaMemoryRecurrent = "llama_memory_recurrent",
        SchedReserve = "sched_reserve:",
        GraphReserve = "graph_reserve:",
        ResolveFusedOps = "resolve_fused_ops:",
        LlamaPrepareModelDevices = "llama_prepare_model_devices:",
        LlamaModelLoadFromFileImpl = "llama_model_load_from_file_impl:",
        LlamaLoadModelFromFile = "llama_load_model_from_file:",
        Load = "load:",
        GgmlCudaInit = "ggml_cuda_init:",
        GgmlInitCublas = "ggml_init_cublas:",
        GgmlVulkan = "ggml_vulkan:",
        Device = "Device ",
        DeviceInfo = "device_info:",
        LlamaNewContextWithModel = "llama_new_context_with_model:",
        LlamaInitFromModel = "llama_init_from_model:",
        LoadAllData = "load_all_data:",
        LlmLoadTensors = "llm_load_tensors:",
        LlmLoadPrintMeta = "llm_load_print_meta:",
        LlmLoadVocab = "llm_load_vocab:",
        LlamaServerListening = "llama_server: listening on",
        LlamaServer = "llama_server:",
        StartLoop = "start_loop:",
        BuildLine = "build:",
        BuildInfoLine = "build_info:",
        SystemInfo = "system_info:",
        SystemInfoSpaced = "system info:",
        CommonParamsPrintInfo = "common_params_print_info:",
        CommonParamPrintInfo = "common_param: common_params_print_info:",
        Main = "main:",
        LoadModel = "load_model:",
        /// `slot get_availabl: … selected slot by LRU`, `srv  get_availabl: updating prompt
        /// cache`: a request's slot chosen, before `processing task`.
        GetAvailable = "get_availabl:",
        Init = "init:",
        LogInfo = "log_info:",
        /// `- ROCm0 : …`: a device of the memory breakdown.
        ListItem = "- ",
    }
}

// A line's needles are the bits of a u128.
const _: () = assert!(NEEDLES.len() <= 128 && Needle::ALL.len() == NEEDLES.len());
// aho-corasick builds its DFA only for up to 100 patterns; past that it falls back to an NFA,
// which lines whose shape is new (a serving log's text) pay for.
const _: () = assert!(NEEDLES.len() <= 100);
const _: () = assert!(Function::ALL.len() == FUNCTIONS.len());

/// The needle automaton and, for each needle, the needles it holds (itself included): the
/// search reports the longest needle at each position, which holds the shorter ones there.
struct NeedleFinder {
    automaton: aho_corasick::AhoCorasick,
    holds: Vec<u128>,
}

static NEEDLE_FINDER: std::sync::LazyLock<Option<NeedleFinder>> = std::sync::LazyLock::new(|| {
    let automaton = aho_corasick::AhoCorasick::builder()
        .match_kind(aho_corasick::MatchKind::LeftmostLongest)
        .build(NEEDLES)
        .ok()?;
    let holds = NEEDLES
        .iter()
        .map(|outer| {
            NEEDLES
                .iter()
                .enumerate()
                .filter(|(_, inner)| outer.contains(*inner))
                .fold(0u128, |bits, (i, _)| bits | 1 << i)
        })
        .collect();
    Some(NeedleFinder { automaton, holds })
});

static FUNCTION_FINDER: std::sync::LazyLock<Option<aho_corasick::AhoCorasick>> =
    std::sync::LazyLock::new(|| {
        aho_corasick::AhoCorasick::builder()
            .match_kind(aho_corasick::MatchKind::LeftmostLongest)
            .start_kind(aho_corasick::StartKind::Anchored)
            .build(FUNCTIONS)
            .ok()
    });

/// What a body starts with, of [`FUNCTIONS`] (the longest that fits).
fn function_of(body: &str) -> Option<Function> {
    let index = match FUNCTION_FINDER.as_ref() {
        Some(finder) => finder
            .find(aho_corasick::Input::new(body).anchored(aho_corasick::Anchored::Yes))?
            .pattern()
            .as_usize(),
        // The automaton could not be built (never, for these literals): test each prefix.
        None => {
            FUNCTIONS
                .iter()
                .enumerate()
                .filter(|(_, f)| body.starts_with(**f))
                .max_by_key(|(_, f)| f.len())?
                .0
        }
    };
    // `llama_context::decode()` is a backtrace frame of a C++ scope, not the `llama_context:`
    // log function: it says nothing of the phase.
    let prefix = FUNCTIONS.get(index)?;
    if prefix.ends_with(':') && body.as_bytes().get(prefix.len()) == Some(&b':') {
        return None;
    }
    Function::ALL.get(index).copied()
}

/// Line shapes kept with their needles: a serving log is a few dozen shapes (a dozen kinds of
/// line, numbers of a few lengths) repeated millions of times, so most lines are a lookup
/// instead of a search. Bounded: a log of ever-new lines starts the table over, and a long
/// line is searched, not kept.
const MAX_LINE_SHAPES: usize = 4096;
const MAX_SHAPE_BYTES: usize = 512;

/// A line's shape: its bytes with every digit written 0xFF, a byte UTF-8 text never holds (so
/// two lines of one shape differ in their digits' values only). No needle or function holds a
/// digit, so a needle is in a line exactly when it is in its shape, and two lines of one shape
/// hold the same needles and start with the same function. Written into `buffer`, no allocation
/// and no copy per line; at most [`MAX_SHAPE_BYTES`] of it.
fn shape_of<'b>(text: &str, buffer: &'b mut ShapeBuffer) -> &'b [u8] {
    // Whole blocks of 32 bytes, without a branch (a digit OR-ed with all ones), so the loop is a
    // few vector instructions per block; the last, partial block goes through a zeroed one.
    fn shaped(byte: u8) -> u8 {
        let is_digit = byte.wrapping_sub(b'0') < 10;
        byte | u8::from(is_digit).wrapping_neg()
    }
    let bytes = text.as_bytes();
    let len = bytes.len().min(MAX_SHAPE_BYTES);
    let (blocks, tail) = bytes[..len].as_chunks::<SHAPE_BLOCK_BYTES>();
    let (out, _) = buffer.0.as_chunks_mut::<SHAPE_BLOCK_BYTES>();
    for (block, out) in blocks.iter().zip(out.iter_mut()) {
        for (byte, out) in block.iter().zip(out.iter_mut()) {
            *out = shaped(*byte);
        }
    }
    let mut last = [0u8; SHAPE_BLOCK_BYTES];
    last[..tail.len()].copy_from_slice(tail);
    if let Some(out) = out.get_mut(blocks.len()) {
        for (byte, out) in last.iter().zip(out.iter_mut()) {
            *out = shaped(*byte);
        }
    }
    &buffer.0[..len]
}

const SHAPE_BLOCK_BYTES: usize = 32;

/// Room for the shape of the longest line kept, in whole blocks.
#[derive(Debug)]
struct ShapeBuffer(Box<[u8]>);

impl Default for ShapeBuffer {
    fn default() -> Self {
        ShapeBuffer(vec![0; MAX_SHAPE_BYTES.next_multiple_of(SHAPE_BLOCK_BYTES)].into_boxed_slice())
    }
}

const fn holds_digit(texts: &[&str]) -> bool {
    let mut i = 0;
    while i < texts.len() {
        let bytes = texts[i].as_bytes();
        let mut j = 0;
        while j < bytes.len() {
            if bytes[j].is_ascii_digit() {
                return true;
            }
            j += 1;
        }
        i += 1;
    }
    false
}
const _: () = assert!(!holds_digit(NEEDLES) && !holds_digit(FUNCTIONS));

/// What was found in texts of the shapes seen so far.
#[derive(Debug)]
struct ShapeTable<V> {
    known: std::collections::HashMap<Box<[u8]>, V, foldhash::fast::RandomState>,
    shape: ShapeBuffer,
}

impl<V> Default for ShapeTable<V> {
    fn default() -> Self {
        ShapeTable {
            known: std::collections::HashMap::default(),
            shape: ShapeBuffer::default(),
        }
    }
}

impl<V: Copy> ShapeTable<V> {
    /// What a text of `text`'s shape was found to hold, when one was seen.
    fn get(&mut self, text: &str) -> Option<V> {
        if text.len() > MAX_SHAPE_BYTES {
            return None;
        }
        let shape = shape_of(text, &mut self.shape);
        self.known.get(shape).copied()
    }

    /// Keeps what `text` holds for the texts of its shape.
    fn keep(&mut self, text: &str, value: V) {
        if text.len() > MAX_SHAPE_BYTES {
            return;
        }
        if self.known.len() >= MAX_LINE_SHAPES {
            self.known.clear();
        }
        let shape = shape_of(text, &mut self.shape);
        self.known.insert(shape.into(), value);
    }
}

/// What a body holds: its needles and the function it starts with.
#[derive(Debug, Default, Clone, Copy)]
struct BodyFinds {
    hits: Hits,
    function: Option<Function>,
}

impl BodyFinds {
    fn search(body: &str) -> Self {
        BodyFinds {
            hits: Hits::scan(body),
            function: function_of(body),
        }
    }
}

/// Bodies by shape.
type ShapeCache = ShapeTable<BodyFinds>;

impl ShapeCache {
    /// The needles a body holds and what it starts with.
    fn read(&mut self, body: &str) -> BodyFinds {
        if let Some(known) = self.get(body) {
            return known;
        }
        let found = BodyFinds::search(body);
        self.keep(body, found);
        found
    }
}

/// Where a line's parts lie, as byte ranges of the line: the same for every line of its shape,
/// when its prefixes are read from its shape alone ([`prefixes_read_by_shape`]). A serving log
/// is a few dozen such shapes, so most lines are a lookup instead of the prefix parsing.
#[derive(Debug, Clone, Copy)]
struct LineLayout {
    /// llama.cpp's `M.SS.mmm.uuu` stamp.
    stamp: Option<(usize, usize)>,
    /// docker compose's service name.
    service: Option<(usize, usize)>,
    /// The body, trimmed.
    body: (usize, usize),
    level: Option<char>,
    dots: bool,
    child: bool,
    finds: BodyFinds,
}

impl LineLayout {
    /// The layout of `text`, whose parts `stripped` and `body` are.
    fn of(text: &str, stripped: &Stripped<'_>, body: &str, finds: BodyFinds) -> Option<Self> {
        let range = |part: &str| {
            let start = (part.as_ptr() as usize).checked_sub(text.as_ptr() as usize)?;
            // Only a part of `text` itself has a place in it.
            (text.get(start..start + part.len()) == Some(part))
                .then_some((start, start + part.len()))
        };
        let stamp = match stripped.stamp {
            Some(stamp) => Some(range(stamp)?),
            None => None,
        };
        let service = match stripped.service {
            Some(service) => Some(range(service)?),
            None => None,
        };
        Some(LineLayout {
            stamp,
            service,
            body: range(body)?,
            level: stripped.level,
            dots: stripped.dots,
            child: stripped.child,
            finds,
        })
    }

    /// `text`'s parts (a line of this layout's shape); its stamp read where it lies.
    fn stripped<'l>(&self, text: &'l str) -> (Stripped<'l>, &'l str) {
        let stamp = self.stamp.and_then(|(start, end)| text.get(start..end));
        let stripped = Stripped {
            body: "",
            // Read when needed (a phase entered, the last line's time): most lines' never is.
            time: LineTime::default(),
            level: self.level,
            dots: self.dots,
            owned: None,
            child: self.child,
            stamp,
            service: self.service.and_then(|(start, end)| text.get(start..end)),
        };
        (
            stripped,
            text.get(self.body.0..self.body.1).unwrap_or_default(),
        )
    }
}

/// Whether [`strip`] reads `text`'s prefixes from its shape alone: unless it may carry a wall
/// time (kubectl's or journald's stamp, lemonade's, ollama's `time=`), whose reading depends
/// on the digits' values (a month 13 is no date). Those start with a letter or `YYYY-`, after
/// docker compose's column.
fn prefixes_read_by_shape(text: &str) -> bool {
    let rest = log_wrapper::compose_service_text(text)
        .unwrap_or(text)
        .as_bytes();
    !(rest.first().is_some_and(u8::is_ascii_alphabetic) || rest.get(4) == Some(&b'-'))
}

/// The needles one line holds, as bits.
#[derive(Debug, Default, Clone, Copy)]
struct Hits {
    found: u128,
}

impl Hits {
    fn scan(body: &str) -> Hits {
        let mut found = 0u128;
        match NEEDLE_FINDER.as_ref() {
            Some(finder) => {
                // From one past each match's start, so needles overlapping it are found too.
                let mut from = 0;
                while let Some(m) = finder
                    .automaton
                    .find(aho_corasick::Input::new(body).range(from..))
                {
                    found |= finder
                        .holds
                        .get(m.pattern().as_usize())
                        .copied()
                        .unwrap_or(0);
                    from = m.start() + 1;
                }
            }
            // The automaton could not be built (never, for these literals): search each.
            None => {
                for (i, needle) in NEEDLES.iter().enumerate() {
                    if body.contains(needle) {
                        found |= 1 << i;
                    }
                }
            }
        }
        Hits { found }
    }

    fn has(self, needle: Needle) -> bool {
        self.found & (1 << needle as u32) != 0
    }

    /// Whether any of `needles` is in the line.
    fn any(self, needles: &[Needle]) -> bool {
        needles.iter().any(|&n| self.has(n))
    }

    fn text(needle: Needle) -> &'static str {
        NEEDLES.get(needle as usize).copied().unwrap_or_default()
    }

    /// [`value_after`], searched only when the key is in the line. Inlined, so a line pays a
    /// bit test, not a call, for each key it does not hold.
    #[inline]
    fn value_after(self, body: &str, key: Needle) -> Option<&str> {
        self.has(key)
            .then(|| value_after(body, Self::text(key)))
            .flatten()
    }

    #[inline]
    fn quoted_after(self, body: &str, key: Needle) -> Option<&str> {
        self.has(key)
            .then(|| quoted_after(body, Self::text(key)))
            .flatten()
    }

    #[inline]
    fn assigned(self, body: &str, key: Needle) -> Option<&str> {
        self.has(key)
            .then(|| assigned(body, Self::text(key)))
            .flatten()
    }
}

/// Reads a whole log, line by line (journald lines dated by today).
pub fn parse<'a>(lines: impl IntoIterator<Item = &'a str>) -> LlamaLog {
    parse_dated(lines, JournalYear::given_or_today(None))
}

/// Reads a whole log, line by line, its journald lines dated by `years`.
pub fn parse_dated<'a>(lines: impl IntoIterator<Item = &'a str>, years: JournalYear) -> LlamaLog {
    let mut parser = Parser::dated(years);
    for line in lines {
        parser.push(line);
    }
    parser.finish()
}

/// llama.cpp's `M.SS.mmm.uuu` stamp of a line, kept as text (its reading waits until needed).
#[derive(Debug, Default, Clone, Copy)]
struct StampText {
    bytes: [u8; MAX_STAMP_BYTES],
    len: usize,
}

/// A stamp is 11 bytes after up to 12 of minutes; [`first_word`] looks no further.
const MAX_STAMP_BYTES: usize = 24;

impl StampText {
    fn keep(&mut self, stamp: Option<&str>) {
        let stamp = stamp.map_or(&[][..], str::as_bytes);
        let len = stamp.len().min(MAX_STAMP_BYTES);
        self.bytes[..len].copy_from_slice(&stamp[..len]);
        self.len = len;
    }

    fn text(&self) -> Option<&str> {
        std::str::from_utf8(self.bytes.get(..self.len)?)
            .ok()
            .filter(|text| !text.is_empty())
    }
}

impl Stripped<'_> {
    /// The line's time, its stamp read now when it was not yet.
    fn read_time(&self) -> LineTime {
        LineTime {
            since_start_s: self
                .time
                .since_start_s
                .or_else(|| self.stamp.and_then(llama_stamp)),
            wall: self.time.wall,
        }
    }
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
    /// llama.cpp's `M.SS.mmm.uuu` stamp, when the line had one.
    stamp: Option<&'a str>,
    /// `docker compose logs`' service column, when the line had one.
    service: Option<&'a str>,
}

/// Reads a log a line at a time (for logs too large to hold): [`parse`] is `push` for every
/// line, then `finish`. Its state: the fit pre-pass, a CRI partial line waiting for its end, LM
/// Studio's timestamp line waiting for its message, router mode.
#[derive(Debug, Default)]
pub struct Parser {
    log: LlamaLog,
    /// The timeline while reading: the oldest serving mark goes when it is full, and it sits
    /// near the front (after the dozen loading marks), so a deque removes it cheaply.
    timeline: std::collections::VecDeque<PhaseMark>,
    furthest: Option<Phase>,
    in_fit: bool,
    shapes: ShapeCache,
    layouts: ShapeTable<LineLayout>,
    /// A router (`llama-server` without `-m`): the run is its child's, whose lines come back
    /// prefixed `[PORT] `; the router's own lines (its `listening on`) are not the model's.
    router: bool,
    partial: String,
    pending_wall: Option<jiff::Timestamp>,
    gpu_seen: bool,
    /// The line of the last `restored context checkpoint`.
    last_checkpoint_restore: Option<u64>,
    /// The stamp of the last line that had a time, read at the end.
    last_stamp: StampText,
    /// The year of journald lines, which print none; today's when not given.
    years: Option<JournalYear>,
    /// LM Studio's stamp lines were seen: its server's and engine's request messages count.
    lm_studio: bool,
}

impl Parser {
    /// A parser whose journald lines are dated by `years` (`--year`).
    pub fn dated(years: JournalYear) -> Self {
        Parser {
            years: Some(years),
            ..Parser::default()
        }
    }

    /// One line as bytes, without its `\n`: valid UTF-8 as it is, else with replacements.
    pub fn push_bytes(&mut self, raw: &[u8]) {
        match std::str::from_utf8(raw) {
            Ok(text) => self.push_bytes_valid(text),
            Err(_) => {
                let raw = &raw[..raw.len().min(MAX_JOINED_LINE_BYTES)];
                self.push_bytes_valid(&String::from_utf8_lossy(raw));
            }
        }
    }

    /// [`Parser::push_bytes`] of a line already known to be UTF-8.
    fn push_bytes_valid(&mut self, line: &str) {
        let mut line = line.trim_end_matches('\r');
        if line.len() > MAX_JOINED_LINE_BYTES {
            let mut cut = MAX_JOINED_LINE_BYTES;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line = &line[..cut];
        }
        self.push(line);
    }

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
            self.lm_studio = true;
            self.log.lines_recognised += 1;
            return;
        }
        if let Some(layout) = self.layouts.get(text) {
            let (stripped, body) = layout.stripped(text);
            self.take(number, stripped, body, layout.finds, wall);
            return;
        }
        let years = self
            .years
            .get_or_insert_with(|| JournalYear::given_or_today(None));
        let mut stripped = strip(text, years);
        let owned = stripped.owned.take();
        let body = owned.as_deref().unwrap_or(stripped.body).trim();
        let finds = self.shapes.read(body);
        if owned.is_none()
            && stripped.time.wall.is_none()
            && prefixes_read_by_shape(text)
            && let Some(layout) = LineLayout::of(text, &stripped, body, finds)
        {
            self.layouts.keep(text, layout);
        }
        self.take(number, stripped, body, finds, wall);
    }

    fn run_progress(&self) -> RunProgress {
        RunProgress {
            marks: self.timeline.len(),
            backend: self.log.backend,
            devices: self.log.devices.len(),
        }
    }

    /// One line's parts: `body` is its trimmed body; `wall` the time a wrapper outside it gave.
    /// In `docker compose logs` of several services, only the run's service's lines: another
    /// service's (a web UI's, a second model server's) are not the run's, and read as its would
    /// mix two runs' phases and errors.
    fn take(
        &mut self,
        number: u64,
        mut stripped: Stripped<'_>,
        trimmed: &str,
        finds: BodyFinds,
        wall: Option<jiff::Timestamp>,
    ) {
        // The service whose line this is, and where the run stood before it, while the run's
        // service is not known yet.
        let choosing = match stripped.service {
            None => None,
            Some(service) => match &self.log.compose_service {
                Some(run_service) if run_service != service => {
                    self.other_service_line(service);
                    return;
                }
                Some(_) => None,
                None => Some((service, self.run_progress())),
            },
        };
        if stripped.time.wall.is_none() {
            stripped.time.wall = wall.or_else(|| self.pending_wall.take());
        }
        if trimmed.is_empty() && !stripped.dots {
            return;
        }
        let recognised = self.classify(number, trimmed, &stripped, finds);
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
        if stripped.stamp.is_some() || stripped.time.wall.is_some() {
            self.log.last_time = stripped.time;
            self.last_stamp.keep(stripped.stamp);
        }
        if let Some((service, before)) = choosing
            && self.run_progress() != before
        {
            self.log.compose_service = Some(service.to_owned());
        }
    }

    /// A line of another compose service than the run's: counted, its service named.
    fn other_service_line(&mut self, service: &str) {
        self.log.other_service_lines += 1;
        let others = &mut self.log.other_services;
        if others.len() < MAX_OTHER_SERVICES && !others.iter().any(|s| s == service) {
            others.push(service.to_owned());
        }
    }

    /// Places one body in its phase and takes its facts; whether it was llama.cpp's.
    fn classify(
        &mut self,
        number: u64,
        body: &str,
        stripped: &Stripped<'_>,
        finds: BodyFinds,
    ) -> bool {
        let BodyFinds { hits, function } = finds;
        if self.lm_studio
            && let Some(phase) = lm_studio_request_phase(body)
        {
            self.enter(phase, number, stripped);
            return true;
        }
        if hits.found == 0 && function.is_none() && !stripped.dots {
            // No literal a rule looks for and no function it knows: nothing to learn (most of
            // a serving log's lines: timings, request lines).
            return stripped.level.is_some() || self.router && !stripped.child;
        }
        if hits.has(Needle::RouterMode) || hits.has(Needle::RouterListening) {
            self.router = true;
        }
        if self.router && !stripped.child {
            // The router's own line: its start, never the model's phases.
            return true;
        }
        let facts = self.facts(number, body, function, hits);
        let phase = self.phase_of(body, function, stripped.dots, hits);
        // Progress dots glued in front of a line are the upload that went before it, whatever
        // the line is (a request log line can land in the middle of an upload).
        if stripped.dots
            && !self.in_fit
            && phase.is_none_or(|p| p > Phase::Upload)
            && self.furthest >= Some(Phase::ModelMetadata)
        {
            self.enter(Phase::Upload, number, stripped);
        }
        if let Some(phase) = phase {
            self.enter(phase, number, stripped);
        }
        facts || phase.is_some() || stripped.level.is_some()
    }

    /// The run is in `phase` at `line`: a new mark when that moves it, with the line's time.
    fn enter(&mut self, phase: Phase, line: u64, stripped: &Stripped<'_>) {
        let current = self.timeline.back().map(|m| m.phase);
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
        let timeline = &mut self.timeline;
        if timeline.len() >= MAX_TIMELINE_MARKS {
            // The oldest serving mark goes; the loading phases before ready all stay.
            match timeline.iter().position(|m| m.phase > Phase::Ready) {
                Some(oldest) => {
                    timeline.remove(oldest);
                }
                None => return,
            }
        }
        timeline.push_back(PhaseMark {
            phase,
            line,
            time: stripped.read_time(),
        });
        self.furthest = self.furthest.max(Some(phase));
    }

    fn phase_of(
        &mut self,
        body: &str,
        function: Option<Function>,
        dots: bool,
        hits: Hits,
    ) -> Option<Phase> {
        use Function as F;
        use Needle as N;
        let has = |n: Needle| hits.has(n);
        let context_line = matches!(
            function,
            Some(F::LlamaContext | F::LlamaContextReserving | F::LlamaContextWorstCase)
        );
        // The fit pre-pass runs a whole mock load: its lines are the pre-pass, not the load.
        if has(N::FittingParams) || function == Some(F::LlamaParamsFit) {
            self.in_fit = !(has(N::SuccessfullyFitParams) || has(N::Took) || has(N::Failed));
            return Some(Phase::MemoryFit);
        }
        if matches!(
            function,
            Some(F::CommonFitParams | F::CommonParamsFitImpl | F::CommonMemoryBreakdown)
        ) {
            if has(N::SuccessfullyFit) || has(N::Took) || has(N::FailedToFit) {
                self.in_fit = false;
            }
            return Some(Phase::MemoryFit);
        }
        // A crash known from its backtrace: `llama_state_seq_get_data` runs only for a request
        // being served (a slot's state saved, a context checkpoint); `llama_decode` too, unless
        // the log shows the load under way, whose one decode is the warmup's.
        let up = self.furthest.is_some_and(Phase::is_up);
        if !up && (has(N::StateSeqGetDataFrame) || has(N::StateSeqGetDataGdbFrame)) {
            return Some(Phase::PromptProcessing);
        }
        if !up && (has(N::LlamaDecodeFrame) || has(N::LlamaDecodeGdbFrame)) {
            return Some(if self.furthest.is_none_or(|p| p < Phase::Loading) {
                Phase::PromptProcessing
            } else {
                Phase::Warmup
            });
        }
        let graph_reserve_line = matches!(
            function,
            Some(
                F::SchedReserve
                    | F::GraphReserve
                    | F::ResolveFusedOps
                    | F::LlamaContextReserving
                    | F::LlamaContextWorstCase
            )
        ) || ((context_line
            || function == Some(F::LlamaNewContextWithModel))
            && (has(N::ComputeBufferSize) || has(N::GraphNodes) || has(N::GraphSplits)))
            || has(N::OllamaComputeGraph);
        if self.in_fit && graph_reserve_line {
            return Some(Phase::FitGraphReserve);
        }
        if self.in_fit
            && (context_line
                || matches!(
                    function,
                    Some(
                        F::LlamaModelLoader
                            | F::PrintInfo
                            | F::LoadTensors
                            | F::CreateTensor
                            | F::LlamaKvCache
                            | F::LlamaPrepareModelDevices
                            | F::LlamaModelLoadFromFileImpl
                            | F::LlamaLoadModelFromFile
                            | F::Load
                    )
                ))
        {
            return Some(Phase::MemoryFit);
        }
        let phase = if matches!(
            function,
            Some(F::GgmlCudaInit | F::GgmlInitCublas | F::GgmlVulkan | F::DeviceInfo)
        ) || function == Some(F::Device) && body.contains(": ")
        {
            Phase::DeviceInit
        } else if has(N::WarmingUp) {
            Phase::Warmup
        } else if graph_reserve_line {
            Phase::GraphReserve
        } else if context_line
            || matches!(
                function,
                Some(
                    F::LlamaNewContextWithModel
                        | F::LlamaInitFromModel
                        | F::LlamaKvCache
                        | F::LlamaMemoryRecurrent
                )
            )
            || has(N::KvSelfSize)
        {
            Phase::Context
        } else if function == Some(F::LoadAllData)
            || has(N::ModelLoadProgress)
            || dots && body.is_empty()
        {
            Phase::Upload
        } else if matches!(
            function,
            Some(F::LoadTensors | F::LlmLoadTensors | F::CreateTensor)
        ) || has(N::LayersToGpu)
            || has(N::OllamaModelWeights)
        {
            Phase::TensorLoad
        } else if matches!(
            function,
            Some(
                F::LlamaModelLoader
                    | F::PrintInfo
                    | F::LlmLoadPrintMeta
                    | F::Load
                    | F::LlamaModelLoadFromFileImpl
                    | F::LlamaLoadModelFromFile
                    | F::LlamaPrepareModelDevices
                    | F::LlmLoadVocab
            )
        ) {
            Phase::ModelMetadata
        } else if has(N::ModelLoaded)
            || has(N::ServerListening)
            || function == Some(F::LlamaServerListening)
            || has(N::RunnerStarted)
        {
            Phase::Ready
        } else if has(N::AllSlotsIdle) || has(N::StopProcessing) {
            // Idle after a request; the first "all slots are idle" of a fresh server is ready.
            if self.furthest.is_some_and(|p| p > Phase::Ready) {
                Phase::Idle
            } else {
                Phase::Ready
            }
        } else if has(N::NDecoded) || has(N::NGen) || has(N::PromptDone) {
            Phase::Generation
        } else if (has(N::ProcessingTask) && function != Some(F::StartLoop))
            || function == Some(F::GetAvailable)
            || has(N::NewPrompt)
            || has(N::PromptProcessing)
        {
            Phase::PromptProcessing
        } else if function == Some(F::LoadModel) {
            Phase::Loading
        } else if matches!(
            function,
            Some(
                F::BuildLine
                    | F::BuildInfoLine
                    | F::SystemInfo
                    | F::SystemInfoSpaced
                    | F::CommonParamsPrintInfo
                    | F::CommonParamPrintInfo
                    | F::LlamaServer
                    | F::LlamaServerListening
                    | F::Main
                    | F::Init
                    | F::LogInfo
            )
        ) || has(N::WaitingForServer)
        {
            Phase::Startup
        } else {
            return None;
        };
        Some(phase)
    }

    /// Takes the facts a line states; whether it stated one.
    fn facts(&mut self, number: u64, body: &str, function: Option<Function>, hits: Hits) -> bool {
        use Needle as N;
        let log = &mut self.log;
        let mut found = false;
        if hits.has(N::RestoredCheckpoint) {
            self.last_checkpoint_restore = Some(number);
            found = true;
        }
        let kind = error_kind(hits).or_else(|| {
            (hits.any(&[N::CppColon, N::CColon, N::CuColon]) && abort_line(body))
                .then_some(ErrorKind::GgmlAbort)
        });
        if let Some(kind) = kind {
            if log.errors_total == 0
                && let Some(restored) = self.last_checkpoint_restore
                && number.saturating_sub(restored) <= RESTORE_THEN_CRASH_LINES
            {
                log.error_after_checkpoint_restore = Some(restored);
            }
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
        if hits.has(N::RocmDevices)
            || hits.has(N::Rocm) && find(body, "ROCm0").is_some()
            || hits.has(N::RocmError)
            || hits.has(N::LibggmlHip)
        {
            log.backend = Some(Backend::Rocm);
            self.gpu_seen = true;
            found = true;
        } else if function == Some(Function::GgmlVulkan)
            || hits.has(N::Vulkan) && find(body, "Vulkan0").is_some()
        {
            if log.backend != Some(Backend::Rocm) {
                log.backend = Some(Backend::Vulkan);
            }
            self.gpu_seen = true;
            found = true;
        } else if hits.has(N::CudaDevices) || hits.has(N::Cuda) && find(body, "CUDA0").is_some() {
            if log.backend.is_none_or(|b| b == Backend::Cpu) {
                log.backend = Some(Backend::Cuda);
            }
            self.gpu_seen = true;
            found = true;
        } else if !self.gpu_seen && (hits.has(N::CpuMappedBuffer) || hits.has(N::CpuListItem)) {
            // The CPU alone in the device listing (`- CPU : …`, no `- ROCm0`) is a CPU run
            // until a GPU line says otherwise.
            log.backend.get_or_insert(Backend::Cpu);
            found = true;
        }
        if let Some(device) = device_line(body)
            && log.devices.len() < MAX_DEVICES
            && !log.devices.contains(&device)
        {
            log.devices.push(device);
            found = true;
        }
        if let Some(path) = hits.quoted_after(body, N::LoadingModel) {
            log.model = Some(path.to_owned());
            found = true;
        }
        if let Some(size) = hits.value_after(body, N::FileSize) {
            log.model_size = Some(size.trim().to_owned());
        }
        if let Some(mode) = hits.value_after(body, N::LoadMode) {
            log.load_mode = Some(mode.trim_end_matches(')').trim().to_owned());
        } else if let Some(mmap) = hits.value_after(body, N::Mmap) {
            let mmap = mmap.split([',', ')']).next().unwrap_or("").trim();
            let direct_io = hits
                .value_after(body, N::DirectIo)
                .map(|d| d.trim_end_matches(')').trim())
                .is_some_and(|d| d == "true");
            log.load_mode = Some(match (mmap, direct_io) {
                (_, true) => "dio".to_owned(),
                ("true", false) => "mmap".to_owned(),
                _ => "none".to_owned(),
            });
        }
        if let Some(flash) = hits.assigned(body, N::FlashAttn) {
            log.flash_attention = flash.split_whitespace().next().map(str::to_owned);
        } else if let Some(flash) = hits.value_after(body, N::FlashAttentionWas) {
            log.flash_attention = flash.rsplit(' ').next().map(str::to_owned);
        }
        if let Some(n_ctx) = hits
            .assigned(body, N::NCtx)
            .or_else(|| hits.assigned(body, N::NCtxSlot))
            .and_then(leading_number)
        {
            log.n_ctx = Some(n_ctx);
        }
        if let Some(layers) = hits.value_after(body, N::Offloaded).and_then(|v| {
            let (done, rest) = v.split_once('/')?;
            let total = rest.split_whitespace().next()?;
            Some((done.trim().parse().ok()?, total.parse().ok()?))
        }) {
            log.layers_offloaded = Some(layers);
        }
        if let Some(verbosity) = hits
            .value_after(body, N::Verbosity)
            .and_then(leading_number)
            .and_then(|v| u8::try_from(v).ok())
        {
            log.verbosity = Some(verbosity);
        }
        if log.build.is_none()
            && let Some(build) = hits
                .value_after(body, N::Build)
                .or_else(|| hits.value_after(body, N::BuildInfo))
                .or_else(|| hits.value_after(body, N::PrintInfoBuild))
                .or_else(|| hits.value_after(body, N::CommonParamsBuild))
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
        self.log.timeline = self.timeline.into();
        if self.log.last_time.since_start_s.is_none() {
            self.log.last_time.since_start_s = self.last_stamp.text().and_then(llama_stamp);
        }
        self.log
    }
}

/// Reads a stream a line at a time: invalid UTF-8 is replaced, not refused (logs carry binary
/// noise); a line longer than [`MAX_JOINED_LINE_BYTES`] is read that far and the rest skipped;
/// nothing past `max_bytes` is read. Lines are cut out of the reader's own buffer, so a line
/// costs no copy unless it spans two reads.
pub fn parse_reader(
    reader: impl std::io::BufRead,
    max_bytes: u64,
    years: JournalYear,
) -> std::io::Result<LlamaLog> {
    let mut parser = Parser::dated(years);
    line_reader::read_lines(
        std::io::Read::take(reader, max_bytes),
        MAX_JOINED_LINE_BYTES,
        &mut parser,
    )?;
    Ok(parser.finish())
}

impl line_reader::LineSink for Parser {
    fn text_line(&mut self, line: &str) -> std::ops::ControlFlow<()> {
        self.push_bytes_valid(line);
        std::ops::ControlFlow::Continue(())
    }

    fn raw_line(&mut self, line: line_reader::RawLine<'_>) -> std::ops::ControlFlow<()> {
        // A line cut at the bound is read as far as it goes.
        self.push_bytes(line.bytes);
        std::ops::ControlFlow::Continue(())
    }
}

/// The error a line reports, if it reports one.
fn error_kind(hits: Hits) -> Option<ErrorKind> {
    use Needle as N;
    let any = |needles: &[Needle]| hits.any(needles);
    Some(
        if any(&[
            N::ErrorDeviceLost,
            N::DeviceLostError,
            N::VulkanDeviceLost,
            N::RadvContextLost,
        ]) {
            ErrorKind::DeviceLost
        } else if any(&[N::HipVmmFailure, N::PoolVmm]) {
            ErrorKind::VmmFailure
        } else if any(&[
            N::InvalidDeviceFunction,
            N::NoCompatibleCodeObjects,
            N::NoBinaryForGpu,
        ]) || hits.has(N::TensileLibrary) && hits.has(N::ForGpuArch)
        {
            ErrorKind::InvalidDeviceFunction
        } else if hits.has(N::RocmError) || hits.has(N::ComputeForward) && hits.has(N::Failed) {
            ErrorKind::RocmError
        } else if any(&[
            N::FailedToAllocate,
            N::UnableToAllocate,
            N::OutOfDeviceMemory,
        ]) || hits.has(N::DeviceMemoryAllocation) && hits.has(N::Failed)
        {
            ErrorKind::AllocationFailure
        } else if any(&[
            N::HsaStatusError,
            N::MemoryAccessFault,
            N::HwException,
            N::MemoryCriticalError,
        ]) {
            ErrorKind::HsaFault
        } else if any(&[
            N::SegmentationFault,
            N::Sigsegv,
            N::SegfaultDe,
            N::SegfaultFr,
            N::SegfaultEs,
            N::SegfaultIt,
            N::SegfaultPt,
            N::SegfaultRu,
            N::SegfaultZh,
            N::SegfaultPl,
        ]) {
            ErrorKind::SegmentationFault
        } else if any(&[
            N::GgmlAbort,
            N::GgmlAssert,
            N::CoreDumped,
            N::IotInstruction,
            N::Sigabrt,
            N::GgmlAbortFrame,
            N::PrintBacktrace,
        ]) {
            ErrorKind::GgmlAbort
        } else if any(&[N::FailedToLoadModel, N::ErrorLoadingModel]) {
            ErrorKind::LoadFailed
        } else {
            return None;
        },
    )
}

/// ggml's abort line, `FILE:LINE: message` (`ggml_abort` prints it before its backtrace, as in
/// `/src/common/common.cpp:2119: checkpoint size mismatch: expected 55920, got 0`).
fn abort_line(body: &str) -> bool {
    let Some((place, message)) = body.split_once(": ") else {
        return false;
    };
    let Some((file, line)) = place.rsplit_once(':') else {
        return false;
    };
    !message.trim().is_empty()
        && !line.is_empty()
        && line.bytes().all(|b| b.is_ascii_digit())
        && !file.contains(' ')
        && [".c", ".cpp", ".cu"].iter().any(|ext| file.ends_with(ext))
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
    while let Some(at) = find(body.get(from..)?, key) {
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
    find(body, key).map(|at| &body[at + key.len()..])
}

/// Where `key` starts in `text` (a char boundary: `key` is whole UTF-8). `memmem` sets up in a
/// few instructions where `str::find` builds a two-way searcher for every call.
fn find(text: &str, key: &str) -> Option<usize> {
    memchr::memmem::find(text.as_bytes(), key.as_bytes())
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
    // Cheap test first: this runs on every line.
    if !starts_with_date(line) {
        return None;
    }
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

/// The serving phase one of LM Studio's own request messages puts the run in: its server's
/// (`[MODEL] ` or `[LM STUDIO SERVER] ` before them) and its engine's (`BeginProcessingPrompt`
/// after the sampling block), in the words of 0.3.x builds. llama.cpp's own request lines are
/// not printed there, so without these a served request reads as nothing at all. Seen in the
/// developer logs of LM Studio 0.3.32 posted in B-AROL-O/RAMIE-RAD_AI_Messing_In_Earthworks
/// (`Software/MCP/Vibecode Chat Logs/`); `Finished streaming response` as JonCSykes/
/// lms-log-explorer's `docs/spec-log-format.md` describes a streamed request's end.
fn lm_studio_request_phase(body: &str) -> Option<Phase> {
    let message = body
        .strip_prefix('[')
        .and_then(|tagged| tagged.split_once("] "))
        .map_or(body, |(_, message)| message);
    let starts = |prefix: &str| message.starts_with(prefix);
    if let Some(progress) = message.strip_prefix("Prompt processing progress: ") {
        // The server repeats the engine's progress, and its 100 % comes after
        // `FinishedProcessingPrompt`: the prompt is done then, and tokens are being generated.
        let percent: f64 = progress.trim_end_matches('%').trim().parse().ok()?;
        return Some(if percent >= 100.0 {
            Phase::Generation
        } else {
            Phase::PromptProcessing
        });
    }
    if starts("Running chat completion on conversation") || starts("BeginProcessingPrompt") {
        Some(Phase::PromptProcessing)
    } else if starts("FinishedProcessingPrompt") {
        Some(Phase::Generation)
    } else if starts("Generated prediction:")
        || starts("Finished streaming response")
        || message.eq_ignore_ascii_case("target model llama_perf stats:")
    {
        // The engine prints its timings when a request is done.
        Some(Phase::Idle)
    } else {
        None
    }
}

/// `2026-01-21 16:56:58[.919]` read as UTC.
fn civil_utc(text: &str) -> Option<jiff::Timestamp> {
    let civil: jiff::civil::DateTime = text.trim().replace(' ', "T").parse().ok()?;
    civil
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

/// Takes off, in order: docker compose's service column, kubectl's RFC 3339 stamp, journald's `Mon DD HH:MM:SS host ident[pid]: `
/// (or its short-iso form; both keep their time),
/// lemonade's `YYYY-MM-DD HH:MM:SS.mmm [Level] (Process) `, ollama's `time=… level=… msg="…"`,
/// a router child's `[pid] `, llama.cpp's `M.SS.mmm.uuu L `, its 4-char tag and right-aligned
/// function column, and progress dots glued to the front.
fn strip<'l>(line: &'l str, years: &mut JournalYear) -> Stripped<'l> {
    let mut out = Stripped {
        body: line,
        ..Stripped::default()
    };
    let mut rest = line;
    // docker compose logs: `SERVICE   | `, outside any stamp (`-t` puts one after it)
    if let Some(compose) = log_wrapper::compose_service(rest) {
        out.service = Some(compose.service);
        rest = compose.text;
    }
    // kubectl logs --timestamps
    if let Some((wall, after)) = log_wrapper::rfc3339_head(rest) {
        out.time.wall = Some(wall);
        rest = after;
    }
    // journald short (`Dec 02 12:10:21 host ident[pid]: `) or short-iso
    let journal = if rest.as_bytes().first().is_some_and(u8::is_ascii_alphabetic) {
        log_wrapper::journal_short(rest, years)
    } else {
        log_wrapper::journal_iso(rest)
    };
    // journald's time is when it received the line: the program's own stamp inside, when
    // it has one, is finer (lemonade's milliseconds).
    let mut journal_wall = None;
    if let Some(journal) = journal {
        journal_wall = journal.wall;
        rest = journal.message;
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
        out.time.wall = out.time.wall.or(journal_wall);
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
    if rest.as_bytes().first().is_some_and(u8::is_ascii_digit)
        && let Some((stamp, after)) = first_word(rest, MAX_STAMP_BYTES)
        && let Some(seconds) = llama_stamp(stamp)
    {
        out.time.since_start_s = Some(seconds);
        out.stamp = Some(stamp);
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
    out.time.wall = out.time.wall.or(journal_wall);
    out
}

/// The text before the first space and after it, when that space is within `max_bytes`
/// (a stamp is short; the line need not be searched to its end).
fn first_word(line: &str, max_bytes: usize) -> Option<(&str, &str)> {
    let head = line.as_bytes().get(..max_bytes).unwrap_or(line.as_bytes());
    let at = memchr::memchr(b' ', head)?;
    Some((&line[..at], &line[at + 1..]))
}

/// `YYYY-`: the start of an RFC 3339 or civil date.
fn starts_with_date(line: &str) -> bool {
    line.as_bytes()
        .get(..5)
        .is_some_and(|head| head[..4].iter().all(u8::is_ascii_digit) && head[4] == b'-')
}

/// `M.SS.mmm.uuu` → seconds. It heads every line of a current build, so it is read by hand:
/// digits at fixed places from the end, no float parsing.
fn llama_stamp(stamp: &str) -> Option<f64> {
    let bytes = stamp.as_bytes();
    // `.SS.mmm.uuu` after the minutes.
    let split = bytes.len().checked_sub(11)?;
    if split == 0 || split > 12 {
        return None;
    }
    let (minutes, fraction) = bytes.split_at(split);
    if fraction[0] != b'.' || fraction[3] != b'.' || fraction[7] != b'.' {
        return None;
    }
    // By hand at fixed places: every line of a current build has a stamp.
    let digit = |byte: u8| -> Option<u64> {
        let digit = byte.wrapping_sub(b'0');
        (digit <= 9).then_some(u64::from(digit))
    };
    let mut minutes_total = 0u64;
    for &byte in minutes {
        minutes_total = minutes_total * 10 + digit(byte)?;
    }
    let seconds = digit(fraction[1])? * 10 + digit(fraction[2])?;
    let millis = (digit(fraction[4])? * 10 + digit(fraction[5])?) * 10 + digit(fraction[6])?;
    let micros = (digit(fraction[8])? * 10 + digit(fraction[9])?) * 10 + digit(fraction[10])?;
    let minutes = minutes_total;
    // Exact in f64 (12 digits at most), and the same sum as the parsed text gave.
    let seconds_total =
        minutes as f64 * 60.0 + seconds as f64 + millis as f64 / 1e3 + micros as f64 / 1e6;
    Some(seconds_total)
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
    use super::*;

    fn phases(log: &LlamaLog) -> Vec<Phase> {
        log.timeline.iter().map(|m| m.phase).collect()
    }

    #[test]
    fn a_segmentation_fault_in_any_language_glibc_prints_is_a_crash() {
        // strsignal(SIGSEGV) in glibc's translations (po/de, fr, es, it, pt_BR, ru, zh_CN, pl).
        for words in [
            "Segmentation fault (core dumped)",
            "zsh: segmentation fault  llama-server -m m.gguf",
            "Speicherzugriffsfehler (Speicherabzug geschrieben)",
            "Erreur de segmentation (core dumped)",
            "Violación de segmento (`core' generado)",
            "Errore di segmentazione (core dump creato)",
            "Falha de segmentação (imagem do núcleo gravada)",
            "Ошибка сегментирования (стек памяти сброшен на диск)",
            "段错误 (核心已转储)",
            "Naruszenie ochrony pamięci (zrzut pamięci)",
            "fish: Job 1, 'llama-server -m m.gguf' terminated by signal SIGSEGV (Address boundary error)",
        ] {
            let log = parse(["srv    load_model: loading model 'm.gguf'", words]);
            let kinds: Vec<ErrorKind> = log.errors.iter().map(|e| e.kind).collect();
            assert_eq!(kinds, [ErrorKind::SegmentationFault], "{words}");
            assert_eq!(
                log.outcome(None, Duration::from_secs(1)),
                RunOutcome::Crashed
            );
        }
    }

    #[test]
    fn aborts_as_shells_print_them_and_missing_gpu_code_are_crashes() {
        for (words, kind) in [
            (
                "zsh: IOT instruction (core dumped)  llama-cli -m m.gguf",
                ErrorKind::GgmlAbort,
            ),
            (
                "fish: Job 1, './server -m m.gguf' terminated by signal SIGABRT (Abort)",
                ErrorKind::GgmlAbort,
            ),
            (
                "libggml-base.so.0(ggml_abort+0x15b)[0x7f7a1d06482b]",
                ErrorKind::GgmlAbort,
            ),
            (
                "rocBLAS error: Cannot read /opt/rocm/lib/rocblas/library/TensileLibrary.dat: No such file or directory for GPU arch : gfx1151",
                ErrorKind::InvalidDeviceFunction,
            ),
            (
                "ggml_cuda_compute_forward: ROCm error: hipErrorNoBinaryForGpu",
                ErrorKind::InvalidDeviceFunction,
            ),
        ] {
            let log = parse([words]);
            let kinds: Vec<ErrorKind> = log.errors.iter().map(|e| e.kind).collect();
            assert_eq!(kinds, [kind], "{words}");
        }
    }

    #[test]
    fn ggml_abort_lines_are_crashes_and_other_file_lines_are_not() {
        for (line, crash) in [
            (
                "/root/bench/ROCmFPX/common/common.cpp:2119: checkpoint size mismatch: expected 55920, got 0",
                true,
            ),
            (
                "ggml-rpc.cpp:519: Remote RPC server crashed or returned malformed response",
                true,
            ),
            ("/src/ggml/src/ggml.c:1712: fatal error", true),
            ("ggml-cuda.cu:88: unspecified launch failure", true),
            (
                ":1:hip_fatbin.cpp           :687 : 114369963532 us:  Loading",
                false,
            ),
            ("see common.cpp:12 for the reason", false),
            ("main.cpp:12:", false),
        ] {
            let log = parse([line]);
            assert_eq!(log.errors_total == 1, crash, "{line}");
        }
    }

    #[test]
    fn a_backtrace_places_a_crash_in_serving_unless_the_load_was_under_way() {
        let frames = [
            "libggml-base.so.0(ggml_print_backtrace+0x21c)[0x7f7a1d06464c]",
            "libggml-base.so.0(ggml_abort+0x15b)[0x7f7a1d06482b]",
            "libllama.so.0(llama_decode+0xf)[0x7f7a1d22445f]",
        ];
        let log = parse(frames);
        assert_eq!(phases(&log), [Phase::PromptProcessing]);
        assert_eq!(
            log.outcome(None, Duration::from_secs(1)),
            RunOutcome::Crashed
        );
        // A slot's state is only saved while serving.
        let log = parse([
            "srv    load_model: loading model 'm.gguf'",
            "#6  0x00007f3a in llama_state_seq_get_data () from /app/libllama.so",
        ]);
        assert_eq!(phases(&log), [Phase::Loading, Phase::PromptProcessing]);
        // During the load, a decode is the warmup's.
        let mut lines = vec!["srv    load_model: loading model 'm.gguf'"];
        lines.extend(frames);
        let log = parse(lines);
        assert_eq!(phases(&log), [Phase::Loading, Phase::Warmup]);
        // Once serving, a backtrace does not move the phase.
        let log = parse([
            "srv  llama_server: listening on http://127.0.0.1:8080",
            "slot update_slots: id  0 | task 0 | prompt done, n_tokens = 20",
            "libllama.so.0(llama_decode+0xf)[0x7f7a1d22445f]",
        ]);
        assert_eq!(phases(&log), [Phase::Ready, Phase::Generation]);
    }

    #[test]
    fn a_crash_right_after_a_checkpoint_restore_is_noted() {
        let restore = "slot   operator(): id  0 | task 6364 | restored context checkpoint (pos_min = 23285, pos_max = 23285, n_tokens = 23286, n_past = 23286, size = 241.031 MiB)";
        let log = parse([
            restore,
            "ROCm error: an illegal memory access was encountered",
        ]);
        assert_eq!(log.error_after_checkpoint_restore, Some(1));
        // A crash long after the restore is not its.
        let mut lines = vec![restore];
        lines.extend(std::iter::repeat_n(
            "slot update_slots: id  0 | task 1 | n_tokens = 1",
            60,
        ));
        lines.push("ROCm error: an illegal memory access was encountered");
        assert_eq!(parse(lines).error_after_checkpoint_restore, None);
    }

    #[test]
    fn the_graph_reserve_of_the_fit_pre_pass_is_named_apart() {
        let lines = [
            "0.00.003.000 I srv    load_model: loading model '/models/m.gguf'",
            "0.00.004.000 I cmn  common_init_: fitting params to device memory, ...",
            "0.00.005.000 D llama_model_loader: loaded meta data with 35 key-value pairs",
            "0.00.006.000 I sched_reserve: reserving ...",
            "0.00.006.100 D graph_reserve: reserving a graph for ubatch with n_tokens =    4, n_seqs =  4, n_outputs =    4",
        ];
        let log = parse(lines);
        assert_eq!(
            phases(&log),
            [Phase::Loading, Phase::MemoryFit, Phase::FitGraphReserve]
        );
        // The real load moves past it.
        let mut more = lines.to_vec();
        more.extend([
            "0.00.007.000 I common_fit_params: successfully fit params to free device memory",
            "0.00.008.000 I llama_model_loader: loaded meta data with 35 key-value pairs",
            "0.00.009.000 I sched_reserve: reserving ...",
        ]);
        let log = parse(more);
        assert_eq!(log.last_phase(), Some(Phase::GraphReserve));
    }

    #[test]
    fn the_device_listing_alone_names_the_backend() {
        let cpu = parse([
            "0.00.004.972 I cmn  common_param: device_info:",
            "0.00.004.984 I cmn  common_param:   - CPU     : AMD RYZEN AI MAX+ 395 (128000 MiB, 120000 MiB free)",
        ]);
        assert_eq!(cpu.backend, Some(Backend::Cpu));
        let rocm = parse([
            "0.00.004.972 I cmn  common_param: device_info:",
            "0.00.004.980 I cmn  common_param:   - ROCm0   : AMD Radeon 8060S Graphics (98304 MiB, 97218 MiB free)",
            "0.00.004.984 I cmn  common_param:   - CPU     : AMD RYZEN AI MAX+ 395 (31920 MiB, 29874 MiB free)",
        ]);
        assert_eq!(rocm.backend, Some(Backend::Rocm));
        let found = parse(["ggml_cuda_init: found 1 ROCm devices:"]);
        assert_eq!(found.backend, Some(Backend::Rocm));
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
                Phase::Loading,
                Phase::MemoryFit,
                Phase::ModelMetadata,
                Phase::TensorLoad,
                Phase::Upload
            ],
            "{:#?}",
            log.timeline
        );
        // The mock load's `load_tensors` line is the fit pass, so tensor load starts at line 11.
        assert_eq!(log.timeline[4].line, 11);
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
            RunOutcome::Stalled
        );
        assert_eq!(
            log.outcome(Some(Duration::from_secs(5)), Duration::from_secs(120)),
            RunOutcome::Incomplete
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
                Phase::Loading,
                Phase::Ready,
                Phase::PromptProcessing,
                Phase::Idle
            ]
        );
        assert_eq!(log.verbosity, Some(3));
        assert_eq!(log.n_ctx, Some(256));
        assert_eq!(
            log.outcome(None, Duration::from_secs(120)),
            RunOutcome::Serving
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
                [Phase::Loading, Phase::TensorLoad, Phase::Upload],
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
        assert_eq!(
            log.outcome(None, Duration::from_secs(1)),
            RunOutcome::Crashed
        );

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
    fn lm_studio_request_messages_are_its_serving_phases() {
        // LM Studio 0.3.32 at DEBUG: the message on the line after its stamp, the sampling block
        // and `BeginProcessingPrompt` on lines of their own.
        let log = parse(
            "\
2025-11-21 18:14:41  [INFO]
 [qwen/qwen3-vl-4b] Running chat completion on conversation with 2 messages.
2025-11-21 18:14:41 [DEBUG]
 Sampling: \n\
Generate: n_ctx = 8192, n_batch = 512, n_predict = -1, n_keep = 29
BeginProcessingPrompt
2025-11-21 18:14:41  [INFO]
 [qwen/qwen3-vl-4b] Prompt processing progress: 0.0%
2025-11-21 18:14:42  [INFO]
 [qwen/qwen3-vl-4b] Prompt processing progress: 100.0%
2025-11-21 18:14:55 [DEBUG]
 Target model llama_perf stats:
"
            .lines(),
        );
        assert_eq!(
            phases(&log),
            [Phase::PromptProcessing, Phase::Generation, Phase::Idle]
        );
        assert_eq!(
            log.timeline[1].time.wall.map(|t| t.to_string()).as_deref(),
            Some("2025-11-21T18:14:42Z")
        );
        // The same words without LM Studio's stamps are somebody else's.
        let log = parse("BeginProcessingPrompt\nGenerated prediction: {\n".lines());
        assert!(log.timeline.is_empty());
        // A progress that is not a number places nothing.
        assert_eq!(
            lm_studio_request_phase("[m] Prompt processing progress: ?%"),
            None
        );
        assert_eq!(
            lm_studio_request_phase("[LM STUDIO SERVER] Finished streaming response"),
            Some(Phase::Idle)
        );
    }

    #[test]
    fn a_compose_log_of_several_services_is_read_as_the_first_llama_services_run() {
        // A web UI starts first; then the model server, a second model server for embeddings,
        // and a crash of the web UI's: neither other service's lines are the run's.
        let log = parse(
            "\
open-webui   | INFO:     Started server process [1]
llama-cpp    | 0.00.010.000 I build_info: b9100-2e95c5f96
open-webui   | INFO:     Waiting for application startup.
llama-embed  | 0.00.010.000 I build_info: b9100-2e95c5f96
llama-embed  | 0.00.020.000 I load_tensors: loading model tensors, this can take a while... (mmap = true)
llama-cpp    | 0.00.900.000 I srv  llama_server: server is listening on http://0.0.0.0:8080
open-webui   | Segmentation fault (core dumped)
llama-embed  | 0.01.000.000 I srv  llama_server: server is listening on http://0.0.0.0:8081
"
            .lines(),
        );
        assert_eq!(phases(&log), [Phase::Startup, Phase::Ready]);
        assert_eq!(log.errors_total, 0);
        assert_eq!(log.compose_service.as_deref(), Some("llama-cpp"));
        assert_eq!(log.other_services, ["open-webui", "llama-embed"]);
        assert_eq!(log.other_service_lines, 5);
        // Another service's crash before the model server's first line does not make that
        // service the run (its line is still read: nothing is known to leave out yet).
        let log = parse(
            "\
open-webui   | Segmentation fault (core dumped)
llama-cpp    | 0.00.010.000 I build_info: b9100-2e95c5f96
"
            .lines(),
        );
        assert_eq!(log.compose_service.as_deref(), Some("llama-cpp"));
        // Without a compose column nothing is left out.
        let log = parse("0.00.010.000 I build_info: b9100-2e95c5f96\n".lines());
        assert_eq!(log.compose_service, None);
        assert_eq!(log.other_service_lines, 0);
    }

    #[test]
    fn a_router_listening_is_not_its_model_ready() {
        // The router's own `listening` line, in the words of mid-2026 builds, then its child's
        // lines, forwarded with `[PORT] `.
        let log = parse(
            "\
main: router server is listening on http://0.0.0.0:8080
main: NOTE: router mode is experimental
[34255] 0.00.160.000 I load_tensors: loading model tensors, this can take a while... (mmap = true)
"
            .lines(),
        );
        assert_eq!(phases(&log), [Phase::TensorLoad]);
    }

    #[test]
    fn a_slot_chosen_after_listening_is_serving() {
        // At `-lv 3` a request's first lines are its slot being chosen and the prompt cache
        // looked up; `processing task` comes later (lemonade#2319).
        let log = parse(
            "\
0.03.651.926 I srv  llama_server: server is listening on http://127.0.0.1:8004
0.03.716.551 I slot get_availabl: id  3 | task -1 | selected slot by LRU, t_last = -1
0.03.716.553 I srv  get_availabl: updating prompt cache
"
            .lines(),
        );
        assert_eq!(phases(&log), [Phase::Ready, Phase::PromptProcessing]);
        assert_eq!(log.timeline[1].line, 2);
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

    fn needles_by_search(body: &str) -> u128 {
        NEEDLES
            .iter()
            .enumerate()
            .filter(|(_, n)| body.contains(**n))
            .fold(0, |bits, (i, _)| bits | 1 << i)
    }

    fn function_by_search(body: &str) -> Option<Function> {
        let (index, _) = FUNCTIONS
            .iter()
            .enumerate()
            .filter(|(_, f)| body.starts_with(**f))
            .max_by_key(|(_, f)| f.len())?;
        Some(Function::ALL[index])
    }

    /// Text made of pieces of the literals, so that they occur, overlap and get cut.
    fn literal_soup() -> impl proptest::strategy::Strategy<Value = String> {
        let pieces: Vec<String> = NEEDLES
            .iter()
            .chain(FUNCTIONS)
            .flat_map(|l| {
                let mut half = l.len() / 2;
                while !l.is_char_boundary(half) {
                    half -= 1;
                }
                [l.to_string(), l[..half].to_owned(), l[half..].to_owned()]
            })
            .chain([" ", "x", "é", "0", "12", "=", "#", "ROCm1", "n_ctx = 4"].map(str::to_owned))
            .collect();
        proptest::collection::vec(proptest::sample::select(pieces), 0..8).prop_map(|p| p.concat())
    }

    #[test]
    fn the_reader_reads_what_the_lines_say() {
        let mut raw = TRACE_ROCM.as_bytes().to_vec();
        raw.extend_from_slice(b"bad \xff byte\r\n\r\nlast line without end");
        // The line-at-a-time reading it stands for: invalid bytes replaced, `\r` taken off.
        let text = String::from_utf8_lossy(&raw).into_owned();
        let expected = parse(text.lines());
        assert_eq!(
            expected.last_line.as_ref().unwrap().1,
            "last line without end"
        );
        for capacity in [1, 7, 64, 1 << 16] {
            let reader = std::io::BufReader::with_capacity(capacity, raw.as_slice());
            assert_eq!(
                parse_reader(reader, u64::MAX, JournalYear::given(2026)).unwrap(),
                expected,
                "{capacity}"
            );
        }
        // Nothing past the byte limit.
        let first = TRACE_ROCM.lines().next().unwrap();
        let cut = parse_reader(
            raw.as_slice(),
            first.len() as u64 + 1,
            JournalYear::given(2026),
        )
        .unwrap();
        assert_eq!(cut.lines_read, 1);
    }

    use proptest::strategy::Strategy as _;

    proptest::proptest! {
        /// The automata find exactly what searching for each literal finds.
        #[test]
        fn the_automata_agree_with_plain_search(body in literal_soup()) {
            proptest::prop_assert_eq!(Hits::scan(&body).found, needles_by_search(&body));
            proptest::prop_assert_eq!(function_of(&body), function_by_search(&body));
        }

        /// A line looked up by its shape holds what searching it finds, whatever came before.
        #[test]
        fn line_shapes_hold_what_the_line_holds(bodies in proptest::collection::vec(literal_soup(), 1..40)) {
            let mut shapes = ShapeCache::default();
            // The same lines with other numbers: mostly the same shapes.
            let renumbered: Vec<String> = bodies
                .iter()
                .map(|b| b.chars().map(|c| if c.is_ascii_digit() { '9' } else { c }).collect())
                .collect();
            for body in bodies.iter().chain(&renumbered).chain(&bodies) {
                let BodyFinds { hits, function } = shapes.read(body);
                proptest::prop_assert_eq!(hits.found, needles_by_search(body), "{:?}", body);
                proptest::prop_assert_eq!(function, function_by_search(body), "{:?}", body);
            }
        }

        /// A line read by the layout of another line of its shape has the parts reading it
        /// afresh gives: the layout is kept only when the prefixes are read from the shape.
        #[test]
        fn a_layout_reads_every_line_of_its_shape_as_strip_does(
            compose in proptest::sample::select(vec!["", "llama-cpp       | ", "svc-1 | ", "x |"]),
            wall in proptest::sample::select(vec!["", "2026-13-45T03:04:05Z ", "2026-01-02T03:04:05Z ", "Dec 02 12:10:21 host ident[1]: ", "2026-04-27 09:37:02.919 [Info] (Process) ", "time=2026-01-02T03:04:05Z level=INFO msg=x "]),
            pid in proptest::sample::select(vec!["", "[41303] ", "[] ", "[4a] "]),
            stamp in proptest::sample::select(vec!["", "0.00.153.386 I ", "12.34.567.890 W ", "1.2.3 ", "123456789012.00.000.000 E ", "0.00.000.000 "]),
            tag in proptest::sample::select(vec!["", "srv  ", "slot ", "cmn  common_param: ", "I srv  ", "...."]),
            body in literal_soup(),
        ) {
            let line = format!("{compose}{wall}{pid}{stamp}{tag}{body}");
            let renumbered: String = line
                .chars()
                .map(|c| c.to_digit(10).map_or(c, |d| char::from(b'0' + ((d as u8 + 7) % 10))))
                .collect();
            let mut years = JournalYear::given(2026);
            let mut seen = strip(&renumbered, &mut years);
            let seen_owned = seen.owned.take();
            let seen_body = seen_owned.as_deref().unwrap_or(seen.body).trim();
            if seen_owned.is_none() && seen.time.wall.is_none() && prefixes_read_by_shape(&renumbered) {
                let layout = LineLayout::of(&renumbered, &seen, seen_body, BodyFinds::search(seen_body));
                proptest::prop_assert!(layout.is_some(), "{:?}", renumbered);
                let (laid, laid_body) = layout.unwrap().stripped(&line);
                let mut fresh = strip(&line, &mut JournalYear::given(2026));
                proptest::prop_assert!(fresh.owned.take().is_none(), "{:?}", line);
                proptest::prop_assert_eq!(laid_body, fresh.body.trim(), "{:?}", line);
                proptest::prop_assert_eq!(laid.read_time(), fresh.read_time(), "{:?}", line);
                proptest::prop_assert_eq!(
                    (laid.level, laid.dots, laid.child, laid.stamp),
                    (fresh.level, fresh.dots, fresh.child, fresh.stamp),
                    "{:?}", line
                );
            }
        }

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
