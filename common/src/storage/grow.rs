//! Growing the log file ahead of its writer, with zeros that are already on the disk.
//!
//! An `fdatasync` after an append has to write more than the record when the append
//! changed how the file's blocks are mapped: a new size, or blocks that `fallocate`
//! reserved but marked unwritten (their first write converts them, a journal commit).
//! Blocks that hold zeros written and synced earlier need neither: the sync writes the
//! record and flushes. On this project's machine that is 0.12 instead of 0.19 ms a
//! sync, and 9,300 instead of 6,500 syncs/s for three writers on one disk
//! (docs/benchmarks.md).
//!
//! So a [`Grower`] thread keeps zero-filled space ahead of the writer: the writer asks
//! for room before it needs it ([`Grower::ask`]), waits only if it outruns the thread
//! ([`Grower::wait`]), and whatever changes the file's length otherwise (a truncation,
//! giving the tail back at close) runs while the thread is held idle
//! ([`Grower::pause`]). The thread writes only at or past `ready`; the writer only below
//! it: they never touch the same bytes.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// The smallest step (a new log's first) and the margin the writer asks for ahead.
pub const STEP_MIN: u64 = 1 << 20;
/// The largest step; steps double from [`STEP_MIN`] up to it as the file grows.
pub const STEP_MAX: u64 = 16 << 20;

/// Zeros are written this much at a time. The page cache sizes its folios after the
/// writes that create them (ext4 has large folios since Linux 6.16), and every later
/// append into a folio walks all of its blocks: a 126-byte `pwrite` into a 1 MiB folio
/// took 2.7 µs here, into a 64 KiB one 1.2 µs (docs/benchmarks.md).
const ZERO_PIECE: usize = 64 << 10;
static ZEROS: [u8; ZERO_PIECE] = [0; ZERO_PIECE];

#[derive(Debug)]
struct State {
    /// The file holds synced zeros (or records) up to here.
    ready: u64,
    /// Asked for: `ready` at least this.
    wanted: u64,
    /// The thread is writing zeros past `ready`.
    busy: bool,
    stop: bool,
    /// The last step's failure, for the next writer that waits.
    failed: Option<String>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, g: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed.wait(g).unwrap_or_else(|e| e.into_inner())
    }
}

/// The thread that zero-fills a log file ahead of its writer; stopped when dropped.
#[derive(Debug)]
pub struct Grower {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Grower {
    /// Start growing `file`, now `len` bytes long, and ask for a first step at once.
    pub fn start(file: &File, len: u64) -> std::io::Result<Self> {
        let file = file.try_clone()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                ready: len,
                wanted: len + STEP_MIN,
                busy: false,
                stop: false,
                failed: None,
            }),
            changed: Condvar::new(),
        });
        let thread = std::thread::Builder::new()
            .name("chorus-log-grow".into())
            .spawn({
                let shared = shared.clone();
                move || run(&file, &shared)
            })?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Ask for the file to be ready up to `want` without waiting; returns how far it
    /// is ready now.
    pub fn ask(&self, want: u64) -> u64 {
        let mut st = self.shared.lock();
        if want > st.wanted {
            st.wanted = want;
            self.shared.changed.notify_all();
        }
        st.ready
    }

    /// Wait until the file is ready up to `want`; returns how far it is ready, or why
    /// growing it failed (the next call tries again).
    pub fn wait(&self, want: u64) -> Result<u64, String> {
        let mut st = self.shared.lock();
        loop {
            if st.ready >= want {
                return Ok(st.ready);
            }
            if let Some(e) = st.failed.take() {
                return Err(e);
            }
            if st.stop {
                return Err("the log is closing".into());
            }
            if want > st.wanted {
                st.wanted = want;
                self.shared.changed.notify_all();
            }
            st = self.shared.wait(st);
        }
    }

    /// Run `f` while the thread is idle and takes no new step, then count the file as
    /// ready up to the length `f` returns (with its result). For anything else that
    /// changes the file's length.
    pub fn pause<R>(&self, f: impl FnOnce() -> (R, u64)) -> R {
        let mut st = self.shared.lock();
        while st.busy {
            st = self.shared.wait(st);
        }
        let (result, len) = f();
        st.ready = len;
        st.wanted = len;
        result
    }
}

impl Drop for Grower {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.changed.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(file: &File, shared: &Shared) {
    let mut st = shared.lock();
    loop {
        while !st.stop && st.wanted <= st.ready {
            st = shared.wait(st);
        }
        if st.stop {
            return;
        }
        let from = st.ready;
        let step = from.clamp(STEP_MIN, STEP_MAX);
        let to = st.wanted.max(from + step).div_ceil(STEP_MIN) * STEP_MIN;
        st.busy = true;
        drop(st);
        let result = zero_fill(file, from, to);
        st = shared.lock();
        st.busy = false;
        match result {
            Ok(()) => st.ready = to,
            Err(e) => {
                tracing::warn!(error = %e, from, to, "growing the log failed");
                st.failed = Some(format!("grow log: {e}"));
                st.wanted = st.ready;
            }
        }
        shared.changed.notify_all();
    }
}

/// Write zeros over `from..to` and put them on the disk, size and block map included.
/// Each megabyte is written back before the next is written, so that a concurrent
/// `fdatasync` of the writer's finds little of it still dirty.
fn zero_fill(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut at = from;
    while at < to {
        let n = (to - at).min(STEP_MIN);
        let mut piece = at;
        while piece < at + n {
            let len = (at + n - piece).min(ZERO_PIECE as u64);
            file.write_all_at(&ZEROS[..len as usize], piece)?;
            piece += len;
        }
        // SAFETY: a range of a file descriptor this thread holds; no memory is passed.
        let rc = unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                at as i64,
                n as i64,
                libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | libc::SYNC_FILE_RANGE_WRITE
                    | libc::SYNC_FILE_RANGE_WAIT_AFTER,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        at += n;
    }
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len(f: &File) -> u64 {
        f.metadata().unwrap().len()
    }

    #[test]
    fn it_grows_ahead_in_doubling_steps_and_stops_when_asked() {
        let d = tempfile::tempdir().unwrap();
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(d.path().join("f"))
            .unwrap();
        f.write_all_at(b"head", 0).unwrap();
        let g = Grower::start(&f, 4).unwrap();
        assert_eq!(g.wait(1).unwrap(), 4, "already there");
        let ready = g.wait(5).unwrap();
        assert_eq!(
            ready,
            2 * STEP_MIN,
            "the first step: a megabyte past the end"
        );
        assert_eq!(len(&f), ready);
        let ready = g.wait(ready + 1).unwrap();
        assert_eq!(ready, 4 * STEP_MIN, "doubled");
        let mut buf = vec![1u8; 100];
        f.read_exact_at(&mut buf, ready - 100).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
        assert_eq!(
            &{
                let mut h = [0u8; 4];
                f.read_exact_at(&mut h, 0).unwrap();
                h
            },
            b"head"
        );
        // Asking returns at once; a pause waits for the step under way and takes over.
        g.ask(ready + 3 * STEP_MIN);
        let cut = g.pause(|| {
            f.set_len(10).unwrap();
            (len(&f), 10)
        });
        assert_eq!(cut, 10, "nothing grew the file while paused");
        assert_eq!(g.wait(11).unwrap(), 2 * STEP_MIN);
        drop(g);
        assert_eq!(len(&f), 2 * STEP_MIN, "no step after the thread stopped");
    }

    #[test]
    fn a_failure_reaches_the_writer_and_the_next_wait_tries_again() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("f");
        File::create(&path).unwrap();
        // Read-only: every write of zeros fails.
        let ro = File::open(&path).unwrap();
        let g = Grower::start(&ro, 0).unwrap();
        let e = g.wait(1).unwrap_err();
        assert!(e.starts_with("grow log:"), "{e}");
        assert!(g.wait(1).is_err(), "tried again, failed again");
    }
}
