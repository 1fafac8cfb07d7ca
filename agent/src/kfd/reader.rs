//! Reads one GPU's KFD SMI event fd without blocking: whole records as they come (a record cut by a read is completed by the next), until the fd closes or fails.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use tokio::io::unix::AsyncFd;

use nodectl_model::kfd_smi::{RecordSplitter, SmiRecord};

/// One read's buffer: the kernel's fifo per client is 8 KiB (`KFD_MAX_KFIFO_SIZE`), and a read
/// returns at most that, so one read drains it.
pub const READ_BUFFER_BYTES: usize = 8192;

/// What a wake-up of the reader gave.
#[derive(Debug)]
pub enum Read {
    /// Whole records, in the order the kernel wrote them.
    Records(Vec<SmiRecord>),
    /// The fd reached its end (a pipe standing in for it was closed): the records read before,
    /// and a last one without its newline if there was one. The caller opens the channel again.
    Closed(Vec<SmiRecord>),
}

/// Reads an event fd registered with the runtime; the fd is closed when this is dropped.
#[derive(Debug)]
pub struct EventFdReader {
    fd: AsyncFd<OwnedFd>,
    splitter: RecordSplitter,
    buffer: Box<[u8]>,
}

impl EventFdReader {
    /// Takes the fd: non-blocking (the kernel's read never blocks anyway; a pipe would), and
    /// closed on exec (KFD does not set it).
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        let flags = OFlag::from_bits_retain(fcntl(&fd, FcntlArg::F_GETFL)?);
        fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        Ok(Self {
            fd: super::sys::register(fd)?,
            splitter: RecordSplitter::default(),
            buffer: vec![0; READ_BUFFER_BYTES].into_boxed_slice(),
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.get_ref().as_fd()
    }

    /// Bytes dropped because a line ran past any record's size.
    pub fn overlong_bytes(&self) -> u64 {
        self.splitter.overlong_bytes
    }

    /// Waits until the fd has records and reads until it has none (`EAGAIN`): one wake-up
    /// drains a burst. An error (`EBADF`, `ENODEV` after a GPU went away) is the caller's to
    /// reopen on.
    pub async fn next(&mut self) -> io::Result<Read> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut records = Vec::new();
            loop {
                match nix::unistd::read(guard.get_inner(), &mut self.buffer) {
                    Ok(0) => {
                        records.extend(self.splitter.finish());
                        return Ok(Read::Closed(records));
                    }
                    Ok(n) => records.extend(self.splitter.push(&self.buffer[..n])),
                    Err(Errno::EAGAIN) => {
                        guard.clear_ready();
                        break;
                    }
                    Err(Errno::EINTR) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if !records.is_empty() {
                return Ok(Read::Records(records));
            }
        }
    }
}

/// Writes the event mask (one native-endian `u64`; each write replaces the last).
pub fn write_mask(fd: BorrowedFd<'_>, mask: u64) -> io::Result<()> {
    let bytes = mask.to_ne_bytes();
    let written = nix::unistd::write(fd, &bytes)?;
    if written == bytes.len() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "the event mask was written in part ({written} of 8 bytes)"
        )))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use nodectl_model::kfd_smi::SmiEventKind;
    use std::time::Duration;

    fn pipe() -> (EventFdReader, OwnedFd) {
        let (read, write) = nix::unistd::pipe().unwrap();
        (EventFdReader::new(read).unwrap(), write)
    }

    fn kinds(records: &[SmiRecord]) -> Vec<SmiEventKind> {
        records.iter().map(|r| r.kind).collect()
    }

    async fn records(reader: &mut EventFdReader) -> Vec<SmiRecord> {
        match tokio::time::timeout(Duration::from_secs(5), reader.next())
            .await
            .unwrap()
            .unwrap()
        {
            Read::Records(r) => r,
            Read::Closed(r) => panic!("closed early: {r:?}"),
        }
    }

    #[tokio::test]
    async fn a_record_cut_across_reads_is_completed() {
        let (mut reader, write) = pipe();
        nix::unistd::write(&write, b"3 1 MES h").unwrap();
        // Nothing whole yet: the reader waits (EAGAIN), it does not return empty.
        assert!(
            tokio::time::timeout(Duration::from_millis(200), reader.next())
                .await
                .is_err()
        );
        nix::unistd::write(&write, b"ang\n4 1 \n").unwrap();
        let got = records(&mut reader).await;
        assert_eq!(
            kinds(&got),
            [SmiEventKind::GpuPreReset, SmiEventKind::GpuPostReset]
        );
        assert_eq!(got[0].reset_cause.as_deref(), Some("MES hang"));
    }

    #[tokio::test]
    async fn a_burst_is_drained_in_order() {
        let (mut reader, write) = pipe();
        let mut burst = Vec::new();
        for i in 0..400u32 {
            burst.extend_from_slice(format!("9 {} -42 d2bb 2\n", 1_000 + i).as_bytes());
        }
        nix::unistd::write(&write, &burst).unwrap();
        let mut got = Vec::new();
        while got.len() < 400 {
            got.extend(records(&mut reader).await);
        }
        assert_eq!(got.len(), 400);
        assert!(
            got.iter()
                .enumerate()
                .all(|(i, r)| r.boottime_ns == Some(1_000 + i as u64)
                    && r.kind == SmiEventKind::QueueEviction)
        );
    }

    #[tokio::test]
    async fn a_closed_fd_ends_the_reader_with_its_last_record() {
        let (mut reader, write) = pipe();
        nix::unistd::write(&write, b"1 3039:python3\nc 10e1 llama-ser").unwrap();
        drop(write);
        let mut all = Vec::new();
        loop {
            match reader.next().await.unwrap() {
                Read::Records(r) => all.extend(r),
                Read::Closed(r) => {
                    all.extend(r);
                    break;
                }
            }
        }
        assert_eq!(
            kinds(&all),
            [SmiEventKind::VmFault, SmiEventKind::ProcessStart]
        );
        assert_eq!(all[1].comm.as_deref(), Some("llama-ser"));
    }

    #[test]
    fn the_mask_is_one_native_endian_u64() {
        let (read, write) = nix::unistd::pipe().unwrap();
        write_mask(write.as_fd(), 0x8000_0000_0000_1b0d).unwrap();
        let mut bytes = [0u8; 16];
        let n = nix::unistd::read(&read, &mut bytes).unwrap();
        assert_eq!(n, 8);
        assert_eq!(
            u64::from_ne_bytes(bytes[..8].try_into().unwrap()),
            0x8000_0000_0000_1b0d
        );
    }
}
