//! nodectl-model: the data agent and client both speak (node snapshot, inference processes, kernel events and incidents, kernel arguments, clocks) and its nodectl.v1 wire form.
//!
//! Everyone reads these types; the generated prost types of `nodectl-proto` appear only at the
//! gRPC edge, through the conversions in [`wire`].

pub mod clock;
pub mod diagnosis;
pub mod inference;
pub mod kernel_args;
pub mod kernel_log;
pub mod kfd_smi;
pub mod knowledge;
pub mod line_reader;
pub mod log_wrapper;
pub mod snapshot;
pub mod text;
pub mod wire;

/// A count of zero, left out of JSON (serde's `skip_serializing_if`): the field appears only when
/// something was skipped, cut or left out.
pub fn is_zero<T: Default + PartialEq>(n: &T) -> bool {
    *n == T::default()
}

pub use kernel_args::KernelArgument;
pub use kernel_log::{
    Class, Incident, KernelEvent, Source, SourceStatus, StreamHeader, StreamMessage,
};
pub use snapshot::Snapshot;
