//! Support for nodectl's end-to-end tests: start the real binaries, find fixtures, fake what cannot run here.

pub mod fake_kube;
pub mod fake_talos;
pub mod harness;
pub mod hung_node;
pub mod slow_reader;
pub mod stalled_file;
