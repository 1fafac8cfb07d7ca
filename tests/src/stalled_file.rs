//! A file whose reads never return, mounted with FUSE over a file of a tree: what an SMU-backed sysfs attribute does while the SMU hangs (or a model file whose data stops coming).
//!
//! The file opens and stats like a kernel attribute (a regular file, mode 0444, 4096 bytes), and
//! every read of it waits until the mount goes away, as a read blocked in amdgpu waits for the
//! firmware. The reads are held, never answered, so no thread of this process blocks on them.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    FileAttr, FileHandle, FileType, Filesystem, FopenFlags, INodeNo, LockOwner, MountOption,
    OpenFlags, ReplyAttr, ReplyData, ReplyOpen, Request,
};

/// A mounted stalled file; released and unmounted when dropped.
pub struct StalledFile {
    path: PathBuf,
    state: Arc<Mutex<State>>,
    session: Option<fuser::BackgroundSession>,
}

#[derive(Default)]
struct State {
    /// Reads that reached the file.
    reads: usize,
    /// Replies to reads, kept unanswered until the file is released.
    held: Vec<ReplyData>,
    /// After [`StalledFile::release`], reads answer at once with the file's old content.
    released: bool,
}

impl StalledFile {
    /// Mounts a stalled file over the existing file at `path`; its content is what the file
    /// answers once released.
    pub fn mount_over(path: &Path) -> io::Result<StalledFile> {
        Self::mount(path, 0..u64::MAX, false)
    }

    /// Mounts a copy of the file at `path` (its real size) that answers reads outside `held`
    /// and holds those starting inside it: a model file whose metadata loads and whose tensor
    /// data never arrives, as from a disk or network file system that stopped answering.
    pub fn mount_holding(path: &Path, held: std::ops::Range<u64>) -> io::Result<StalledFile> {
        Self::mount(path, held, true)
    }

    fn mount(path: &Path, held: std::ops::Range<u64>, real_size: bool) -> io::Result<StalledFile> {
        let content = std::fs::read(path)?;
        let state = Arc::new(Mutex::new(State::default()));
        let mut attr = ATTR;
        if real_size {
            attr.size = content.len() as u64;
            attr.blocks = attr.size.div_ceil(512);
        }
        let filesystem = Stalling {
            state: Arc::clone(&state),
            content,
            held,
            attr,
        };
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            MountOption::RO,
            MountOption::FSName("nodectl-stalled".to_owned()),
        ];
        let session = fuser::spawn_mount(filesystem, path, &config)?;
        Ok(StalledFile {
            path: path.to_owned(),
            state,
            session: Some(session),
        })
    }

    /// Reads waiting for an answer now.
    pub fn reads_held(&self) -> usize {
        lock(&self.state).held.len()
    }

    /// Reads that reached the file so far.
    pub fn reads_started(&self) -> usize {
        lock(&self.state).reads
    }

    /// The firmware answers again: the waiting reads fail with EIO (as a read that was stuck
    /// when the SMU came back may), and later reads get the file's content.
    pub fn release(&self) {
        let held = {
            let mut state = lock(&self.state);
            state.released = true;
            std::mem::take(&mut state.held)
        };
        for reply in held {
            reply.error(fuser::Errno::EIO);
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StalledFile {
    fn drop(&mut self) {
        // Released first: a process still inside a read (in uninterruptible sleep, like one
        // blocked in amdgpu) could otherwise never exit, nor the mount go.
        self.release();
        // Unmounted lazily (a reader may still hold the file open); not joined, since the
        // session ends only when the last such reader closes it.
        drop(self.session.take());
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Stalling {
    state: Arc<Mutex<State>>,
    content: Vec<u8>,
    /// Reads starting in this range are held.
    held: std::ops::Range<u64>,
    attr: FileAttr,
}

const ATTR: FileAttr = FileAttr {
    ino: INodeNo::ROOT,
    size: 4096,
    blocks: 1,
    atime: UNIX_EPOCH,
    mtime: UNIX_EPOCH,
    ctime: UNIX_EPOCH,
    crtime: UNIX_EPOCH,
    kind: FileType::RegularFile,
    perm: 0o444,
    nlink: 1,
    uid: 0,
    gid: 0,
    rdev: 0,
    flags: 0,
    blksize: 4096,
};

impl Filesystem for Stalling {
    fn getattr(&self, _req: &Request, _ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        reply.attr(&Duration::from_secs(3600), &self.attr);
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // Direct I/O: every read goes to this file system, none is answered from the page cache.
        reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut state = lock(&self.state);
        state.reads += 1;
        if !state.released && self.held.contains(&offset) {
            state.held.push(reply);
            return;
        }
        drop(state);
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.content.len());
        let end = start
            .saturating_add(usize::try_from(size).unwrap_or(usize::MAX))
            .min(self.content.len());
        reply.data(&self.content[start..end]);
    }
}
