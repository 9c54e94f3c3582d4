//! The durable log: one append-only file of checksummed records, and a small metadata
//! file.
//!
//! ```text
//! <data-dir>/log        "CHRSLOG2" then records:
//!                       [len: u32 LE][crc32: u32 LE]
//!                       [id: u64 LE][term: u64 LE][key length: u16 LE][request id][message]
//!                       len counts everything after the CRC; the CRC covers those bytes.
//! <data-dir>/meta.json  {"logId", "members", "removed", "hosts", "configVersion",
//!                        "term", "votedFor", "history"}, replaced atomically and fsync'd
//!                        (the vote before it is answered: docs/failover.md).
//! <data-dir>/rollback/rollback-<ms>-from-<id>.jsonl
//!                       entries cut by a rollback, one {"id","term","message","requestId"}
//!                       a line, synced before the log is truncated.
//! ```
//!
//! Appends are written behind: encoded into memory, and written with one `pwrite` when
//! the next sync (or 1 MiB of them) comes, so a group commit costs one write call.
//!
//! The file grows ahead of the records, in zero-filled steps of up to 16 MiB written and
//! synced by a thread of the store's ([`super::grow`]), so that an `fdatasync` after an
//! append writes the record and not also the file's new size or block map: 0.12 instead
//! of 0.19 ms a sync on this project's machine (docs/benchmarks.md). The space past the
//! last record reads as zeros; opening the store recognises such a tail as preallocated,
//! not torn, and a clean close gives it back.
//!
//! In memory there is only the byte offset of each record (8 bytes a message). Opening
//! the store scans the file once, checking every record's length, checksum and id; the
//! first record that fails (a torn write at a crash, or corruption) and everything after
//! it is cut off and never served. With [`Durability::Fsync`] (the default) `sync` is
//! `fdatasync`, and the entries it covers are the only ones [`LogStore::read`] returns;
//! with [`Durability::Interval`] `sync` only marks what was written (to the page cache)
//! and [`super::spawn_flusher`] runs `fdatasync` on a timer.

use super::checksum::{PrefixHash, Sum};
use super::grow::{Grower, STEP_MIN};
use super::{Durability, LogStore, Membership, StorageError};
use crate::protocol::Entry;
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, ErrorKind, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

const MAGIC: &[u8; 8] = b"CHRSLOG2";
const HEADER: usize = 8; // len + crc
const FIXED: usize = 18; // id + term + key length
/// The largest record accepted when reading back (a message of up to 64 MiB).
const MAX_RECORD: usize = 64 * 1024 * 1024 + FIXED;
fn io(context: &str, e: std::io::Error) -> StorageError {
    StorageError::Io(format!("{context}: {e}"))
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    log_id: u64,
    /// `members` and `removed`, at the top level of the file.
    #[serde(flatten)]
    membership: Membership,
    /// The newest term this member knows (absent in logs written before terms counted).
    #[serde(default)]
    term: u64,
    /// Whom it voted for in `term`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    voted_for: Option<String>,
    /// The log's term starts (absent in logs written before elections: then derived
    /// from the entries' terms when the store opens).
    #[serde(default)]
    history: crate::replication::election::History,
}

#[derive(Debug)]
struct Index {
    /// Byte offset of the record with id `i + 1`.
    offsets: Vec<u64>,
    /// Where the next record goes.
    end: u64,
    /// The highest id written to the file (handed to the operating system): what reads
    /// return. At least `durable_id`.
    written_id: u64,
    durable_id: u64,
    /// The highest id known to be on the disk (fdatasync'd); at most `durable_id`.
    disk_id: u64,
    /// Prefix checksums of every record, written or not (`GET /checksum`).
    hash: PrefixHash,
    /// Counts truncations, so a checksum computed outside the lock knows the entries
    /// it read are still the log's.
    cuts: u64,
}

/// What opening a store found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub entries: u64,
    /// Bytes cut from the end because they did not form valid records.
    pub cut_bytes: u64,
    /// Why the cut was made, if one was.
    pub cut_reason: Option<String>,
}

/// The log file's writing end: records appended but not yet written, and how far the
/// file is ready for them.
#[derive(Debug)]
struct Writer {
    /// Encoded records waiting for the next [`FileStore::write_out`].
    pending: Vec<u8>,
    /// File offset of `pending[0]`.
    pending_at: u64,
    /// The file holds synced zeros up to here (as far as the writer last heard).
    ready: u64,
}

/// Pending bytes that make an append write them out at once (bounds the memory).
const WRITE_BEHIND: usize = 1 << 20;

/// A durable [`LogStore`] in a directory. One process at a time: the log file is locked.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    log: File,
    index: RwLock<Index>,
    /// Serialises appends and writes to the file. Lock order: writer, then index.
    writer: Mutex<Writer>,
    meta: Mutex<Meta>,
    recovery: Recovery,
    durability: Durability,
    /// Zero-fills the file ahead of `writer`. Lock order: writer, then the grower's.
    grower: Grower,
}

impl FileStore {
    /// Open (or create) the store in `dir`, recovering the log, with
    /// [`Durability::Fsync`].
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StorageError> {
        Self::open_with(dir, Durability::Fsync)
    }

    /// Open (or create) the store in `dir` with the given durability. With
    /// [`Durability::Interval`] nothing flushes the log by itself: see [`spawn_flusher`].
    pub fn open_with(dir: impl AsRef<Path>, durability: Durability) -> Result<Self, StorageError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| io(&format!("create {}", dir.display()), e))?;
        let path = dir.join("log");
        let log = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io(&format!("open {}", path.display()), e))?;
        match log.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(StorageError::Io(format!(
                    "{} is in use by another process",
                    dir.display()
                )));
            }
            Err(fs::TryLockError::Error(e)) => return Err(io("lock the log", e)),
        }
        let (index, recovery) = recover(&log, &path)?;
        let mut meta = read_meta(&dir)?;
        if meta.history.0.is_empty() && !index.offsets.is_empty() {
            meta.history = derive_history(&log, &index)?;
        }
        let len = log.metadata().map_err(|e| io("stat log", e))?.len();
        let grower = Grower::start(&log, len).map_err(|e| io("start growing the log", e))?;
        Ok(Self {
            dir,
            log,
            index: RwLock::new(index),
            writer: Mutex::new(Writer {
                pending: Vec::new(),
                pending_at: 0,
                ready: len,
            }),
            meta: Mutex::new(meta),
            recovery,
            durability,
            grower,
        })
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// fdatasync the log whatever the durability mode, and count everything appended
    /// before the call as durable; returns the highest durable id. The interval flusher
    /// and a node's final stop use it.
    pub fn sync_to_disk(&self) -> Result<u64, StorageError> {
        let target = self.write_out()?;
        if self.index.read().unwrap_or_else(|e| e.into_inner()).disk_id < target {
            self.log.sync_data().map_err(|e| io("sync log", e))?;
        }
        let mut idx = self.index.write().unwrap_or_else(|e| e.into_inner());
        idx.disk_id = idx.disk_id.max(target);
        idx.durable_id = idx.durable_id.max(target);
        Ok(idx.durable_id)
    }

    /// A node's last act before it exits: sync everything (as [`Self::sync_to_disk`])
    /// and give back the preallocated space after the last record. Other handles on
    /// the store may still be alive at that point, so this cannot wait for `Drop`;
    /// should anything be appended afterwards, the file just grows again.
    pub fn close(&self) -> Result<u64, StorageError> {
        let durable = self.sync_to_disk()?;
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if self.give_back_tail(&mut w)? {
            self.log.sync_all().map_err(|e| io("sync log", e))?;
        }
        Ok(durable)
    }

    /// Cut the zero-filled space after the last record once nothing is pending; true if
    /// there was some.
    fn give_back_tail(&self, w: &mut Writer) -> Result<bool, StorageError> {
        if !w.pending.is_empty() {
            return Ok(false);
        }
        let end = self.index.read().unwrap_or_else(|e| e.into_inner()).end;
        let cut = self.grower.pause(|| {
            let cut = match self.log.metadata() {
                Ok(m) if m.len() > end => self.log.set_len(end).map(|()| true),
                Ok(m) => return (Ok(false), m.len()),
                Err(e) => Err(e),
            };
            // On failure the file may be longer than `end`, never shorter.
            (cut, end)
        });
        w.ready = end;
        cut.map_err(|e| io("trim log", e))
    }

    /// Write the pending records to the file (one `pwrite`); returns the last id written.
    /// On failure they stay pending and the next call tries again at the same offset.
    fn write_out(&self) -> Result<u64, StorageError> {
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        self.write_pending(&mut w)?;
        Ok(self.last_id())
    }

    /// Called with the writer locked, so every appended record is either pending or
    /// already written: afterwards all of them are written.
    fn write_pending(&self, w: &mut Writer) -> Result<(), StorageError> {
        if !w.pending.is_empty() {
            let end = w.pending_at + w.pending.len() as u64;
            if end > w.ready {
                w.ready = self.grower.wait(end).map_err(StorageError::Io)?;
            }
            if w.ready < end + STEP_MIN {
                w.ready = self.grower.ask(end + STEP_MIN);
            }
            self.log
                .write_all_at(&w.pending, w.pending_at)
                .map_err(|e| io("write log", e))?;
            w.pending_at = end;
            w.pending.clear();
            if w.pending.capacity() > 4 * WRITE_BEHIND {
                w.pending = Vec::new();
            }
        }
        let mut idx = self.index.write().unwrap_or_else(|e| e.into_inner());
        idx.written_id = idx.offsets.len() as u64;
        Ok(())
    }

    /// The `count` records in the file's bytes `start..stop`, checked and decoded.
    fn read_records(
        &self,
        start: u64,
        stop: u64,
        count: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        let mut buf = vec![0u8; (stop - start) as usize];
        self.log
            .read_exact_at(&mut buf, start)
            .map_err(|e| io("read log", e))?;
        let mut out = Vec::with_capacity(count);
        let mut p = 0;
        while p < buf.len() {
            let len = u32::from_le_bytes(buf[p..p + 4].try_into().expect("4 bytes")) as usize;
            let crc = u32::from_le_bytes(buf[p + 4..p + 8].try_into().expect("4 bytes"));
            let body = buf.get(p + HEADER..p + HEADER + len).ok_or_else(|| {
                StorageError::Io(format!("record at byte {} is cut short", start + p as u64))
            })?;
            if crc32fast::hash(body) != crc {
                return Err(StorageError::Io(format!(
                    "checksum mismatch at byte {} (the log file changed under us)",
                    start + p as u64
                )));
            }
            out.push(decode_body(body).map_err(|e| {
                StorageError::Io(format!("record at byte {}: {e}", start + p as u64))
            })?);
            p += HEADER + len;
        }
        Ok(out)
    }

    /// Entries appended but not yet fdatasync'd.
    pub fn unsynced(&self) -> u64 {
        let idx = self.index.read().unwrap_or_else(|e| e.into_inner());
        idx.offsets.len() as u64 - idx.disk_id
    }

    /// What opening found (entries recovered, bytes cut).
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Log what opening found, for the node's operator.
    pub fn log_recovery(&self) {
        let r = &self.recovery;
        tracing::info!(dir = %self.dir.display(), entries = r.entries, "log recovered");
        if let Some(reason) = &r.cut_reason {
            tracing::warn!(cut_bytes = r.cut_bytes, %reason, "an invalid tail was cut from the log");
        }
    }

    /// Set one field of meta.json and save it durably; if saving fails, the field keeps
    /// its old value.
    fn replace_meta<T>(
        &self,
        field: impl Fn(&mut Meta) -> &mut T,
        value: T,
    ) -> Result<(), StorageError> {
        let mut meta = self.meta.lock().unwrap_or_else(|e| e.into_inner());
        let old = std::mem::replace(field(&mut meta), value);
        self.write_meta(&meta)
            .inspect_err(|_| *field(&mut meta) = old)
    }

    fn write_meta(&self, meta: &Meta) -> Result<(), StorageError> {
        let tmp = self.dir.join("meta.json.tmp");
        let body = serde_json::to_vec_pretty(meta).expect("meta serialises");
        let mut f = File::create(&tmp).map_err(|e| io("create meta", e))?;
        f.write_all(&body).map_err(|e| io("write meta", e))?;
        f.sync_all().map_err(|e| io("sync meta", e))?;
        fs::rename(&tmp, self.dir.join("meta.json")).map_err(|e| io("rename meta", e))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("sync data dir", e))
    }
}

/// The term starts of a log written before they were recorded: each term starts
/// before its first entry. Reads every record's term once.
fn derive_history(
    log: &File,
    index: &Index,
) -> Result<crate::replication::election::History, StorageError> {
    use std::os::unix::fs::FileExt;
    let mut terms = Vec::new();
    let mut fixed = [0u8; HEADER + 16];
    for (i, &offset) in index.offsets.iter().enumerate() {
        log.read_exact_at(&mut fixed, offset)
            .map_err(|e| io("read the log for its terms", e))?;
        let term = u64::from_le_bytes(fixed[HEADER + 8..HEADER + 16].try_into().expect("8 bytes"));
        if terms.last().is_none_or(|&(_, t)| t < term) {
            terms.push((i as u64 + 1, term));
        }
    }
    Ok(crate::replication::election::History::from_entry_terms(
        terms,
    ))
}

fn read_meta(dir: &Path) -> Result<Meta, StorageError> {
    match fs::read(dir.join("meta.json")) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            StorageError::Io(format!("{}/meta.json is not valid: {e}", dir.display()))
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Meta::default()),
        Err(e) => Err(io("read meta", e)),
    }
}

/// Scan the log, keep the longest valid prefix, cut the rest.
fn recover(log: &File, path: &Path) -> Result<(Index, Recovery), StorageError> {
    let len = log.metadata().map_err(|e| io("stat log", e))?.len();
    if len < MAGIC.len() as u64 {
        // New (or torn while being created): start afresh.
        log.set_len(0).map_err(|e| io("reset log", e))?;
        log.write_all_at(MAGIC, 0)
            .map_err(|e| io("write log header", e))?;
        log.sync_all().map_err(|e| io("sync log", e))?;
        let index = Index {
            offsets: Vec::new(),
            end: MAGIC.len() as u64,
            written_id: 0,
            durable_id: 0,
            disk_id: 0,
            hash: PrefixHash::default(),
            cuts: 0,
        };
        let recovery = Recovery {
            entries: 0,
            cut_bytes: 0,
            cut_reason: None,
        };
        return Ok((index, recovery));
    }
    let mut reader = BufReader::with_capacity(1 << 20, log);
    let mut magic = [0u8; 8];
    reader
        .read_exact(&mut magic)
        .map_err(|e| io("read log header", e))?;
    if &magic != MAGIC {
        return Err(StorageError::Io(format!(
            "{} is not a chorus log (bad header)",
            path.display()
        )));
    }
    let mut offsets = Vec::new();
    let mut hash = PrefixHash::default();
    let mut pos = MAGIC.len() as u64;
    let mut body = Vec::new();
    let cut_reason = loop {
        let mut header = [0u8; HEADER];
        match read_full(&mut reader, &mut header) {
            Ok(0) => break None,
            Ok(n) if n < HEADER => break Some(format!("torn record header at byte {pos}")),
            Ok(_) => {}
            Err(e) => return Err(io("read log", e)),
        }
        let rec_len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        if !(FIXED..=MAX_RECORD).contains(&rec_len) {
            break Some(format!("impossible record length {rec_len} at byte {pos}"));
        }
        body.resize(rec_len, 0);
        match read_full(&mut reader, &mut body) {
            Ok(n) if n < rec_len => break Some(format!("torn record at byte {pos}")),
            Ok(_) => {}
            Err(e) => return Err(io("read log", e)),
        }
        if crc32fast::hash(&body) != crc {
            break Some(format!("checksum mismatch at byte {pos}"));
        }
        let id = u64::from_le_bytes(body[0..8].try_into().expect("8 bytes"));
        let expected = offsets.len() as u64 + 1;
        if id != expected {
            break Some(format!(
                "record at byte {pos} has id {id}, expected {expected}"
            ));
        }
        match decode_body(&body) {
            Ok(e) => hash.push(e.id, e.term, e.message.as_bytes()),
            Err(e) => break Some(format!("record {id}: {e}")),
        }
        offsets.push(pos);
        pos += (HEADER + rec_len) as u64;
    };
    // Zeros from here on are the preallocated tail, not damage.
    let cut_bytes = if zeros_from(log, pos, len)? {
        0
    } else {
        len - pos
    };
    if cut_bytes > 0 {
        tracing::warn!(
            path = %path.display(),
            kept = offsets.len(),
            cut_bytes,
            reason = cut_reason.as_deref().unwrap_or("trailing bytes"),
            "log has an invalid tail; cutting it off"
        );
        log.set_len(pos).map_err(|e| io("cut log tail", e))?;
        log.sync_all().map_err(|e| io("sync log", e))?;
    }
    let entries = offsets.len() as u64;
    Ok((
        Index {
            offsets,
            end: pos,
            written_id: entries,
            durable_id: entries,
            disk_id: entries,
            hash,
            cuts: 0,
        },
        Recovery {
            entries,
            cut_bytes,
            cut_reason: cut_reason.filter(|_| cut_bytes > 0),
        },
    ))
}

/// Whether every byte of `log` in `from..to` is zero.
fn zeros_from(log: &File, from: u64, to: u64) -> Result<bool, StorageError> {
    let mut buf = vec![0u8; 1 << 20];
    let mut at = from;
    while at < to {
        let n = ((to - at) as usize).min(buf.len());
        log.read_exact_at(&mut buf[..n], at)
            .map_err(|e| io("read log tail", e))?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

/// Read until `buf` is full or EOF; returns how many bytes were read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn key(e: &Entry) -> &[u8] {
    e.request_id.as_deref().map_or(&[][..], str::as_bytes)
}

fn record_len(e: &Entry) -> usize {
    HEADER + FIXED + key(e).len() + e.message.len()
}

/// A record's body (after length and CRC) back into an entry.
fn decode_body(body: &[u8]) -> Result<Entry, String> {
    let id = u64::from_le_bytes(body[0..8].try_into().expect("8 bytes"));
    let term = u64::from_le_bytes(body[8..16].try_into().expect("8 bytes"));
    let key_len = u16::from_le_bytes(body[16..18].try_into().expect("2 bytes")) as usize;
    let key = body
        .get(FIXED..FIXED + key_len)
        .ok_or_else(|| format!("request id length {key_len} runs past the record"))?;
    let request_id = match key_len {
        0 => None,
        _ => Some(String::from_utf8(key.to_vec()).map_err(|_| "request id is not UTF-8")?),
    };
    let message = String::from_utf8(body[FIXED + key_len..].to_vec())
        .map_err(|_| "message is not UTF-8".to_string())?;
    Ok(Entry {
        term,
        id,
        message,
        request_id,
    })
}

fn encode(entries: &[Entry], out: &mut Vec<u8>) {
    for e in entries {
        let len = record_len(e) - HEADER;
        let start = out.len();
        out.extend_from_slice(&(len as u32).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&e.id.to_le_bytes());
        out.extend_from_slice(&e.term.to_le_bytes());
        out.extend_from_slice(&(key(e).len() as u16).to_le_bytes());
        out.extend_from_slice(key(e));
        out.extend_from_slice(e.message.as_bytes());
        let crc = crc32fast::hash(&out[start + HEADER..]);
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }
}

impl Drop for FileStore {
    /// A clean close writes what is pending and gives the zero-filled tail back (the
    /// grower thread stops when its field is dropped, after this).
    fn drop(&mut self) {
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if self.write_pending(&mut w).is_ok() {
            let _ = self.give_back_tail(&mut w);
        }
    }
}

impl LogStore for FileStore {
    fn append(&self, entries: &[Entry]) -> Result<(), StorageError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let (first, end, tip) = {
            let idx = self.index.read().unwrap_or_else(|e| e.into_inner());
            (idx.offsets.len() as u64 + 1, idx.end, idx.hash.tip())
        };
        for (expected, e) in (first..).zip(entries) {
            if e.id != expected {
                return Err(StorageError::NotContiguous {
                    expected,
                    got: e.id,
                });
            }
            if e.message.len() > MAX_RECORD - FIXED {
                return Err(StorageError::Io(format!("message {} is too large", e.id)));
            }
        }
        // Write-behind: the records wait in memory for the next sync (or until enough
        // are pending), so a group commit costs one pwrite, not one per append.
        if w.pending.is_empty() {
            w.pending_at = end;
        }
        encode(entries, &mut w.pending);
        // Hashed outside the index's lock (readers go on meanwhile); only appends and
        // truncations, serialised by the writer's lock, change it.
        let hashed = PrefixHash::extend(tip, entries);
        let mut idx = self.index.write().unwrap_or_else(|e| e.into_inner());
        idx.hash.apply(hashed);
        let mut pos = end;
        for e in entries {
            idx.offsets.push(pos);
            pos += record_len(e) as u64;
        }
        idx.end = pos;
        drop(idx);
        if w.pending.len() >= WRITE_BEHIND {
            // A failure here is not this append's: the records stay pending and the
            // next sync reports it.
            let _ = self.write_pending(&mut w);
        }
        Ok(())
    }

    fn sync(&self) -> Result<u64, StorageError> {
        match self.durability {
            Durability::Fsync => self.sync_to_disk(),
            Durability::Interval(_) => {
                // Written to the page cache: safe from a crash of this process; the
                // flusher puts it on the disk.
                let target = self.write_out()?;
                let mut idx = self.index.write().unwrap_or_else(|e| e.into_inner());
                idx.durable_id = idx.durable_id.max(target);
                Ok(idx.durable_id)
            }
        }
    }

    fn sync_blocks(&self) -> bool {
        self.durability == Durability::Fsync
    }

    fn flush(&self) -> Result<u64, StorageError> {
        self.write_out()
    }

    fn written_id(&self) -> u64 {
        self.index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .written_id
    }

    fn power_loss(&self) -> ! {
        // Held until the end: no append can write after the cut.
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let idx = self.index.read().unwrap_or_else(|e| e.into_inner());
        let keep = idx.disk_id;
        let cut = idx.offsets.get(keep as usize).copied().unwrap_or(idx.end);
        tracing::warn!(
            kept = keep,
            lost = idx.offsets.len() as u64 - keep,
            "power loss: the log keeps only what is on the disk, and the process ends"
        );
        let cut_done = self.grower.pause(|| {
            let r = self.log.set_len(cut).and_then(|()| self.log.sync_all());
            (r, cut)
        });
        if let Err(e) = cut_done {
            tracing::error!(error = %e, "power loss: could not cut the log");
        }
        std::process::abort()
    }

    fn truncate(&self, after: u64) -> Result<(), StorageError> {
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if after >= self.last_id() {
            return Ok(());
        }
        // Every record in the file, so the checksums can be refolded from it below.
        self.write_pending(&mut w)?;
        let mut idx = self.index.write().unwrap_or_else(|e| e.into_inner());
        let cut = idx.offsets[after as usize];
        // The checksums up to the cut: from the block before it, refolded from the
        // records that stay (read before anything is cut).
        let mut hash = idx.hash.clone();
        if let Some((from, _)) = hash.cut(after)
            && from < after
        {
            let start = idx.offsets[from as usize];
            hash.refold(&self.read_records(start, cut, (after - from) as usize)?);
        }
        if cut >= w.pending_at {
            let keep = (cut - w.pending_at) as usize;
            w.pending.truncate(keep);
        } else {
            w.pending.clear();
        }
        // Shrinking the file drops everything after the cut (the grower fills it with
        // zeros again ahead of the next writes); synced before anything is appended
        // after it. While the grower is held idle: it must not extend the file past a
        // cut it did not see.
        let known = w.ready;
        self.grower.pause(|| match self.log.set_len(cut) {
            Ok(()) => (self.log.sync_all().map_err(|e| io("sync log", e)), cut),
            // Not cut: nothing past what the writer knows is ready holds records.
            Err(e) => (Err(io("truncate log", e)), known),
        })?;
        w.ready = cut;
        if w.pending.is_empty() {
            w.pending_at = cut;
        }
        idx.offsets.truncate(after as usize);
        idx.hash = hash;
        idx.cuts += 1;
        idx.end = cut;
        idx.written_id = idx.written_id.min(after);
        idx.durable_id = idx.durable_id.min(after);
        idx.disk_id = idx.disk_id.min(after);
        tracing::warn!(dir = %self.dir.display(), kept = after, "log truncated");
        Ok(())
    }

    fn last_id(&self) -> u64 {
        self.index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .offsets
            .len() as u64
    }

    fn durable_id(&self) -> u64 {
        self.index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .durable_id
    }

    fn read(&self, from: u64, limit: usize) -> Result<Vec<Entry>, StorageError> {
        let from = from.max(1);
        let (start, stop, count) = {
            let idx = self.index.read().unwrap_or_else(|e| e.into_inner());
            if from > idx.written_id || limit == 0 {
                return Ok(Vec::new());
            }
            let last = idx.written_id.min(from.saturating_add(limit as u64 - 1));
            let stop = if (last as usize) < idx.offsets.len() {
                idx.offsets[last as usize]
            } else {
                idx.end
            };
            (
                idx.offsets[from as usize - 1],
                stop,
                (last - from + 1) as usize,
            )
        };
        self.read_records(start, stop, count)
    }

    fn checksum(&self, up_to: u64) -> Result<Option<Sum>, StorageError> {
        loop {
            let (from, start, cuts) = {
                let idx = self.index.read().unwrap_or_else(|e| e.into_inner());
                if up_to > idx.written_id {
                    return Ok(None);
                }
                let Some((from, start)) = idx.hash.start_for(up_to) else {
                    return Ok(None);
                };
                (from, start, idx.cuts)
            };
            // At most a block's worth, read without holding the index.
            let entries = match up_to - from {
                0 => Vec::new(),
                n => self.read(from + 1, n as usize)?,
            };
            let unchanged = self.index.read().unwrap_or_else(|e| e.into_inner()).cuts == cuts;
            if unchanged && entries.len() as u64 == up_to - from {
                return Ok(Some(super::checksum::fold_entries(start, &entries)));
            }
            // A truncation came in between: look again.
        }
    }

    fn log_id(&self) -> u64 {
        self.meta.lock().unwrap_or_else(|e| e.into_inner()).log_id
    }

    fn set_log_id(&self, id: u64) -> Result<(), StorageError> {
        self.replace_meta(|m| &mut m.log_id, id)
    }

    fn membership(&self) -> Membership {
        self.meta
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .membership
            .clone()
    }

    fn set_membership(&self, membership: &Membership) -> Result<(), StorageError> {
        self.replace_meta(|m| &mut m.membership, membership.clone())
    }

    fn term(&self) -> u64 {
        self.meta.lock().unwrap_or_else(|e| e.into_inner()).term
    }

    fn voted_for(&self) -> Option<String> {
        self.meta
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .voted_for
            .clone()
    }

    fn set_vote(&self, term: u64, voted_for: Option<String>) -> Result<(), StorageError> {
        let mut meta = self.meta.lock().unwrap_or_else(|e| e.into_inner());
        let old = (meta.term, meta.voted_for.clone());
        meta.term = term;
        meta.voted_for = voted_for;
        self.write_meta(&meta).inspect_err(|_| {
            (meta.term, meta.voted_for) = old;
        })
    }

    fn history(&self) -> crate::replication::election::History {
        self.meta
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .history
            .clone()
    }

    fn set_history(
        &self,
        history: &crate::replication::election::History,
    ) -> Result<(), StorageError> {
        self.replace_meta(|m| &mut m.history, history.clone())
    }

    fn rollback(&self, after: u64) -> Result<Option<super::RolledBack>, StorageError> {
        self.flush()?;
        let last = self.last_id();
        if last <= after {
            return Ok(None);
        }
        // Kept first, durably, then cut: a crash in between leaves both.
        let dir = self.dir.join("rollback");
        fs::create_dir_all(&dir).map_err(|e| io("create rollback dir", e))?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let file = dir.join(format!("rollback-{stamp}-from-{}.jsonl", after + 1));
        let mut out = Vec::new();
        let mut next = after + 1;
        while next <= last {
            let batch = self.read(next, 1000)?;
            if batch.is_empty() {
                break;
            }
            for e in &batch {
                let line = serde_json::json!({
                    "id": e.id,
                    "term": e.term,
                    "message": e.message,
                    "requestId": e.request_id,
                });
                out.extend_from_slice(line.to_string().as_bytes());
                out.push(b'\n');
            }
            next = batch.last().map_or(last, |e| e.id) + 1;
        }
        let mut f = File::create(&file).map_err(|e| io("create rollback file", e))?;
        f.write_all(&out)
            .map_err(|e| io("write rollback file", e))?;
        f.sync_all().map_err(|e| io("sync rollback file", e))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("sync rollback dir", e))?;
        self.truncate(after)?;
        tracing::warn!(file = %file.display(), count = last - after, from = after + 1, "rolled back entries the new master does not hold");
        Ok(Some(super::RolledBack {
            count: last - after,
            file: Some(file),
            from_id: after + 1,
        }))
    }

    fn set_term(&self, term: u64) -> Result<(), StorageError> {
        self.replace_meta(|m| &mut m.term, term)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom};

    fn entry(id: u64) -> Entry {
        Entry {
            term: 1,
            id,
            message: format!("message number {id} ✓"),
            request_id: None,
        }
    }

    fn filled(dir: &Path, n: u64) -> FileStore {
        let s = FileStore::open(dir).unwrap();
        s.append(&(1..=n).map(entry).collect::<Vec<_>>()).unwrap();
        s.sync().unwrap();
        s
    }

    #[test]
    fn conformance() {
        let dirs = std::cell::RefCell::new(Vec::new());
        super::super::conformance::run_all(|| {
            let d = tempfile::tempdir().unwrap();
            let s = FileStore::open(d.path()).unwrap();
            dirs.borrow_mut().push(d);
            s
        });
    }

    #[test]
    fn reopen_conformance() {
        let d = tempfile::tempdir().unwrap();
        super::super::conformance::run_reopen(d.path(), |p| FileStore::open(p).unwrap());
    }

    fn log_len(dir: &Path) -> u64 {
        fs::metadata(dir.join("log")).unwrap().len()
    }

    #[test]
    fn a_torn_tail_is_cut_at_every_byte() {
        let d = tempfile::tempdir().unwrap();
        drop(filled(d.path(), 3));
        let full = fs::read(d.path().join("log")).unwrap();
        let good_two = {
            let s = FileStore::open(d.path()).unwrap();
            s.index.read().unwrap().offsets[2]
        };
        // Every cut inside the third record leaves exactly two records.
        for cut in good_two + 1..full.len() as u64 {
            fs::write(d.path().join("log"), &full[..cut as usize]).unwrap();
            let s = FileStore::open(d.path()).unwrap();
            assert_eq!(s.last_id(), 2, "cut at {cut}");
            assert_eq!(s.recovery().cut_bytes, cut - good_two);
            assert_eq!(s.read(1, 10).unwrap(), vec![entry(1), entry(2)]);
            drop(s);
            assert_eq!(
                log_len(d.path()),
                good_two,
                "the torn bytes are gone from disk"
            );
        }
    }

    #[test]
    fn the_log_grows_ahead_in_zero_filled_steps_and_a_clean_close_gives_them_back() {
        let d = tempfile::tempdir().unwrap();
        let s = filled(d.path(), 3);
        let end = s.index.read().unwrap().end;
        let ready = s.writer.lock().unwrap().ready;
        assert!(ready >= end + STEP_MIN, "a step ahead: {ready} for {end}");
        assert_eq!(log_len(d.path()), ready);
        let mut tail = vec![1u8; (ready - end) as usize];
        s.log.read_exact_at(&mut tail, end).unwrap();
        assert!(tail.iter().all(|&b| b == 0));
        // A write larger than the room ahead waits for the grower.
        let big = Entry {
            message: "x".repeat(3 * STEP_MIN as usize),
            ..entry(4)
        };
        s.append(std::slice::from_ref(&big)).unwrap();
        assert_eq!(s.sync().unwrap(), 4);
        let end = s.index.read().unwrap().end;
        assert!(log_len(d.path()) >= end + STEP_MIN);
        drop(s);
        assert_eq!(log_len(d.path()), end);
        let s = FileStore::open(d.path()).unwrap();
        assert_eq!(s.read(4, 1).unwrap(), vec![big]);
    }

    #[test]
    fn appends_are_written_behind_at_the_next_sync_or_when_a_lot_is_pending() {
        let d = tempfile::tempdir().unwrap();
        let s = FileStore::open(d.path()).unwrap();
        s.append(&[entry(1), entry(2)]).unwrap();
        s.append(&[entry(3)]).unwrap();
        let first = MAGIC.len() as u64;
        let mut head = [0u8; 4];
        let _ = s.log.read_at(&mut head, first).unwrap(); // short if not grown yet
        assert_eq!(
            head, [0; 4],
            "nothing written yet (zeros, or nothing at all)"
        );
        assert_eq!(s.sync().unwrap(), 3);
        assert_eq!(
            s.read(1, 10).unwrap(),
            (1..=3).map(entry).collect::<Vec<_>>()
        );
        let end = s.index.read().unwrap().end;
        let big = Entry {
            message: "x".repeat(WRITE_BEHIND),
            ..entry(4)
        };
        s.append(std::slice::from_ref(&big)).unwrap();
        let mut head = [0u8; 4];
        s.log.read_exact_at(&mut head, end).unwrap();
        assert_eq!(
            u32::from_le_bytes(head) as usize,
            record_len(&big) - HEADER,
            "written at once"
        );
        s.append(&[entry(5)]).unwrap();
        drop(s);
        let s = FileStore::open(d.path()).unwrap();
        assert_eq!(s.last_id(), 5, "a clean close writes what is pending");
        assert_eq!(s.read(4, 1).unwrap(), vec![big]);
    }

    #[test]
    fn close_gives_the_preallocated_space_back_while_the_store_is_shared() {
        let d = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(filled(d.path(), 3));
        let other = s.clone(); // e.g. a server's state, still alive at exit
        assert!(log_len(d.path()) >= STEP_MIN);
        s.append(&[entry(4)]).unwrap();
        assert_eq!(s.close().unwrap(), 4);
        let len = log_len(d.path());
        assert!(len < 1024, "{len} bytes after close");
        // Still usable: the file grows again.
        other.append(&[entry(5)]).unwrap();
        other.sync().unwrap();
        assert_eq!(other.read(4, 5).unwrap(), vec![entry(4), entry(5)]);
    }

    #[test]
    fn a_zero_tail_is_preallocated_space_not_damage() {
        let d = tempfile::tempdir().unwrap();
        drop(filled(d.path(), 3));
        let mut full = fs::read(d.path().join("log")).unwrap();
        let end = full.len();
        // A crash leaves the preallocated zeros behind the last record.
        full.resize(end + 100_000, 0);
        fs::write(d.path().join("log"), &full).unwrap();
        let s = FileStore::open(d.path()).unwrap();
        assert_eq!(s.last_id(), 3);
        assert_eq!(s.recovery().cut_bytes, 0);
        assert_eq!(s.recovery().cut_reason, None);
        s.append(&[entry(4)]).unwrap();
        s.sync().unwrap();
        drop(s);
        let s = FileStore::open(d.path()).unwrap();
        assert_eq!(
            s.read(1, 10).unwrap(),
            (1..=4).map(entry).collect::<Vec<_>>()
        );
        drop(s);
        // A torn record in the preallocated space is damage: cut, with a reason.
        let mut torn = fs::read(d.path().join("log")).unwrap();
        let good = torn.len();
        torn.extend_from_slice(&[60, 0, 0, 0, 1, 2]);
        torn.resize(good + 4096, 0);
        fs::write(d.path().join("log"), &torn).unwrap();
        let s = FileStore::open(d.path()).unwrap();
        assert_eq!(s.last_id(), 4);
        assert_eq!(s.recovery().cut_bytes, 4096);
        assert!(s.recovery().cut_reason.is_some());
    }

    #[test]
    fn a_flipped_bit_cuts_from_that_record_on() {
        let d = tempfile::tempdir().unwrap();
        drop(filled(d.path(), 5));
        let offsets = FileStore::open(d.path())
            .unwrap()
            .index
            .read()
            .unwrap()
            .offsets
            .clone();
        // Corrupt the message bytes of record 4.
        let mut f = OpenOptions::new()
            .write(true)
            .open(d.path().join("log"))
            .unwrap();
        f.seek(SeekFrom::Start(offsets[3] + 30)).unwrap();
        f.write_all(b"X").unwrap();
        drop(f);
        let s = FileStore::open(d.path()).unwrap();
        assert_eq!(s.last_id(), 3);
        assert!(
            s.recovery()
                .cut_reason
                .as_deref()
                .unwrap()
                .contains("checksum")
        );
        // The log continues cleanly after the cut.
        s.append(&[entry(4)]).unwrap();
        s.sync().unwrap();
        drop(s);
        assert_eq!(
            FileStore::open(d.path()).unwrap().read(1, 10).unwrap(),
            (1..=4).map(entry).collect::<Vec<_>>()
        );
    }

    #[test]
    fn garbage_lengths_and_foreign_files() {
        let d = tempfile::tempdir().unwrap();
        drop(filled(d.path(), 1));
        let mut f = OpenOptions::new()
            .append(true)
            .open(d.path().join("log"))
            .unwrap();
        f.write_all(&[0xff, 0xff, 0xff, 0x7f, 1, 2, 3, 4, 5])
            .unwrap();
        drop(f);
        let s = FileStore::open(d.path()).unwrap();
        assert_eq!(s.last_id(), 1);
        assert!(
            s.recovery()
                .cut_reason
                .as_deref()
                .unwrap()
                .contains("length")
        );
        drop(s);
        fs::write(d.path().join("log"), b"hello, this is not a log").unwrap();
        let err = FileStore::open(d.path()).unwrap_err();
        assert!(err.to_string().contains("not a chorus log"), "{err}");
    }

    #[test]
    fn appended_entries_are_read_once_written_and_durable_once_synced() {
        let d = tempfile::tempdir().unwrap();
        let s = filled(d.path(), 2);
        s.append(&[entry(3)]).unwrap();
        assert_eq!(s.last_id(), 3);
        assert_eq!(s.durable_id(), 2);
        assert_eq!(s.read(1, 10).unwrap().len(), 2, "still in memory");
        assert_eq!(s.flush().unwrap(), 3);
        assert_eq!(s.read(3, 10).unwrap(), vec![entry(3)]);
        assert_eq!((s.written_id(), s.durable_id()), (3, 2));
        assert_eq!(s.unsynced(), 1);
        assert_eq!(s.sync().unwrap(), 3);
        assert_eq!(s.unsynced(), 0);
    }

    /// The store's files as a crash would leave them: copied while it is open, without
    /// the clean close.
    fn crash_copy(from: &Path) -> tempfile::TempDir {
        let to = tempfile::tempdir().unwrap();
        for f in ["log", "meta.json"] {
            if from.join(f).exists() {
                fs::copy(from.join(f), to.path().join(f)).unwrap();
            }
        }
        to
    }

    #[test]
    fn a_truncation_survives_a_crash_and_the_log_grows_again() {
        let d = tempfile::tempdir().unwrap();
        let s = filled(d.path(), 10);
        s.append(&[entry(11)]).unwrap();
        s.truncate(4).unwrap();
        let crashed = crash_copy(d.path());
        drop(s);
        let s = FileStore::open(crashed.path()).unwrap();
        assert_eq!(s.recovery().cut_bytes, 0, "nothing torn to cut");
        assert_eq!(s.last_id(), 4);
        s.append(&(5..=3000).map(entry).collect::<Vec<_>>())
            .unwrap();
        s.sync().unwrap();
        let again = crash_copy(crashed.path());
        drop(s);
        let s = FileStore::open(again.path()).unwrap();
        assert_eq!(s.last_id(), 3000);
        assert_eq!(s.read(2999, 5).unwrap(), vec![entry(2999), entry(3000)]);
    }

    #[test]
    fn interval_mode_passes_conformance() {
        let relaxed = Durability::Interval(std::time::Duration::from_secs(3600));
        let dirs = std::cell::RefCell::new(Vec::new());
        super::super::conformance::run_all(|| {
            let d = tempfile::tempdir().unwrap();
            let s = FileStore::open_with(d.path(), relaxed).unwrap();
            dirs.borrow_mut().push(d);
            s
        });
        let d = tempfile::tempdir().unwrap();
        super::super::conformance::run_reopen(d.path(), |p| {
            FileStore::open_with(p, relaxed).unwrap()
        });
    }

    #[test]
    fn interval_mode_acknowledges_written_entries_and_flushes_later() {
        let d = tempfile::tempdir().unwrap();
        let every = std::time::Duration::from_millis(20);
        let s = std::sync::Arc::new(
            FileStore::open_with(d.path(), Durability::Interval(every)).unwrap(),
        );
        assert!(!s.sync_blocks());
        s.append(&[entry(1), entry(2)]).unwrap();
        assert_eq!(
            s.read(1, 10).unwrap().len(),
            0,
            "not acknowledged before sync"
        );
        assert_eq!(s.sync().unwrap(), 2);
        assert_eq!(s.read(1, 10).unwrap().len(), 2);
        assert_eq!(s.unsynced(), 2, "sync in interval mode does not fdatasync");
        let flusher = super::super::spawn_flusher(&s).expect("a flusher in interval mode");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while s.unsynced() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the flusher never ran"
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        // The thread ends once the store is gone.
        drop(s);
        flusher.join().unwrap();
        // What was written survives the process (here: the handle) going away.
        let s = FileStore::open(d.path()).unwrap();
        assert_eq!(s.read(1, 10).unwrap(), vec![entry(1), entry(2)]);
        assert!(super::super::spawn_flusher(&std::sync::Arc::new(s)).is_none());
    }

    /// What prefix checksums cost on a long log (docs/api.md, "Checksums"):
    /// `cargo test -p common --release --lib checksums_of_a_million -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement: 1M entries"]
    fn checksums_of_a_million_entries() {
        use std::time::Instant;
        let dir = tempfile::tempdir().unwrap();
        let n = 1_000_000u64;
        let s = FileStore::open(dir.path()).unwrap();
        let entries: Vec<Entry> = (1..=n)
            .map(|id| Entry {
                message: format!("message number {id} of a long log, about 64 bytes."),
                ..entry(id)
            })
            .collect();
        let t = Instant::now();
        for chunk in entries.chunks(64) {
            s.append(chunk).unwrap();
        }
        s.sync().unwrap();
        let append = t.elapsed();
        drop(s);
        let t = Instant::now();
        let s = FileStore::open(dir.path()).unwrap();
        let open = t.elapsed();
        let mut worst = std::time::Duration::ZERO;
        let t = Instant::now();
        let asks = 1000u64;
        for i in 0..asks {
            let up_to = n - (i * 7919) % n; // spread over the log, mostly mid-block
            let one = Instant::now();
            assert!(s.checksum(up_to).unwrap().is_some());
            worst = worst.max(one.elapsed());
        }
        let each = t.elapsed() / asks as u32;
        let direct = Instant::now();
        let whole = super::super::checksum::fold_entries(super::super::checksum::EMPTY, &entries);
        let fold = direct.elapsed();
        assert_eq!(s.checksum(n).unwrap(), Some(whole));
        println!(
            "1M entries: append in 64s {append:?} (with checksums), reopen {open:?}, \
             checksum of any prefix {each:?} on average, {worst:?} at worst; \
             folding all 1M from the start {fold:?}"
        );
    }

    #[test]
    fn sync_to_disk_works_in_both_modes() {
        for mode in [
            Durability::Fsync,
            Durability::Interval(std::time::Duration::from_secs(1)),
        ] {
            let d = tempfile::tempdir().unwrap();
            let s = FileStore::open_with(d.path(), mode).unwrap();
            s.append(&[entry(1)]).unwrap();
            assert_eq!(s.unsynced(), 1);
            assert_eq!(s.sync_to_disk().unwrap(), 1);
            assert_eq!(s.unsynced(), 0);
            assert_eq!(s.durable_id(), 1);
            assert_eq!(s.sync_blocks(), mode == Durability::Fsync);
        }
    }

    #[test]
    fn one_process_per_directory() {
        let d = tempfile::tempdir().unwrap();
        let _s = FileStore::open(d.path()).unwrap();
        let err = FileStore::open(d.path()).unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
    }
}
