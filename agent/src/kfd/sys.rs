//! Where the KFD event channel touches what Rust cannot check: the two ioctls it needs (`AMDKFD_IOC_GET_VERSION`, `AMDKFD_IOC_SMI_EVENTS`) and handing an event fd to the runtime's reactor; the agent's only `unsafe` KFD code.
//!
//! The numbers and argument structs are those of `include/uapi/linux/kfd_ioctl.h`, the same in
//! upstream and ROCm's DKMS header: `'K'` 0x01 (read, two `u32`) and `'K'` 0x1F (read-write,
//! two `u32`). This path runs only on a node with an AMD GPU; the tests exercise what follows it
//! (the anon fd's records) over a pipe.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;

#[repr(C)]
#[derive(Debug, Default)]
pub struct GetVersionArgs {
    pub major: u32,
    pub minor: u32,
}

#[repr(C)]
#[derive(Debug, Default)]
pub struct SmiEventsArgs {
    /// To KFD: the GPU's `gpu_id` from KFD topology.
    pub gpuid: u32,
    /// From KFD: the event fd.
    pub anon_fd: u32,
}

nix::ioctl_read!(kfd_get_version, b'K', 0x01, GetVersionArgs);
nix::ioctl_readwrite!(kfd_smi_events, b'K', 0x1F, SmiEventsArgs);

/// KFD's ioctl version, and a new event fd for `gpu_id` (owned: closed when dropped).
pub fn version_and_event_fd(
    kfd: BorrowedFd<'_>,
    gpu_id: u32,
) -> nix::Result<((u32, u32), OwnedFd)> {
    let mut version = GetVersionArgs::default();
    let mut args = SmiEventsArgs {
        gpuid: gpu_id,
        anon_fd: 0,
    };
    // SAFETY: `kfd` is an open fd for the duration of the calls; each ioctl gets a pointer to a
    // live, correctly sized `#[repr(C)]` struct of the layout its number encodes, which the
    // kernel fills and does not keep. On success KFD returns in `anon_fd` a new descriptor that
    // nothing else owns, so taking ownership of it here is sound; a value that is no valid fd
    // (negative as i32) is refused before that.
    let event_fd = unsafe {
        kfd_get_version(kfd.as_raw_fd(), &mut version)?;
        kfd_smi_events(kfd.as_raw_fd(), &mut args)?;
        let raw = i32::try_from(args.anon_fd).map_err(|_| nix::errno::Errno::EBADF)?;
        if raw < 0 {
            return Err(nix::errno::Errno::EBADF);
        }
        OwnedFd::from_raw_fd(raw)
    };
    Ok(((version.major, version.minor), event_fd))
}

/// Registers `fd` with the tokio reactor for readiness (read and write). Must run inside the
/// runtime.
pub fn register(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an `OwnedFd` is an open descriptor that only it closes, and its `as_raw_fd` always
    // returns that same descriptor; the `AsyncFd` takes ownership of it, so it stays open and
    // unchanged for the registration's whole life and is closed only after deregistering.
    unsafe { AsyncFd::register(fd) }.map_err(std::io::Error::from)
}
