//! Storage benchmark: appends per second with every append durable (fsync), at
//! concurrency 1 and 64, for chorus's FileStore and for redb doing the same job; and the
//! time to reopen (recover) a log of 1M messages.
//!
//! ```sh
//! cargo run --release -p common --features bench --example storage_bench -- [DIR] [SECONDS]
//! cargo run --release -p common --features bench --example storage_bench -- fill DIR N
//! cargo run --release -p common --features bench --example storage_bench -- fsync DIR N
//! ```
//!
//! `fsync DIR N` measures this disk's floor for a durable write: N times, append 100
//! bytes to a file in DIR and fdatasync it; prints one JSON line with the latencies.
//!
//! Concurrency 64 is real group commit: 64 writer threads each append a 100-byte message
//! and wait until it is durable; one syncer thread makes everything appended durable,
//! one sync at a time, and wakes the writers it covered.

use common::protocol::Entry;
use common::storage::{FileStore, LogStore};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const MESSAGE: &str = "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789";

/// What both stores must do: append one entry durably, as part of a group commit.
trait Durable: Send + Sync + 'static {
    /// Append, returning the id (ids are assigned in order).
    fn append(&self, message: &str) -> u64;
    /// Make everything appended durable; returns the highest durable id.
    fn sync(&self) -> u64;
    fn name(&self) -> &'static str;
}

struct File {
    store: FileStore,
    next: Mutex<u64>,
}

impl Durable for File {
    fn append(&self, message: &str) -> u64 {
        let mut next = self.next.lock().unwrap();
        let id = *next;
        self.store
            .append(&[Entry {
                term: 1,
                id,
                message: message.into(),
                request_id: None,
            }])
            .unwrap();
        *next += 1;
        id
    }
    fn sync(&self) -> u64 {
        self.store.sync().unwrap()
    }
    fn name(&self) -> &'static str {
        "FileStore (segment file + fdatasync)"
    }
}

/// redb: appends are queued; a sync writes the queue in one transaction and commits it
/// with `Durability::Immediate` (redb's fsync'd commit).
struct Redb {
    db: Database,
    queue: Mutex<(u64, Vec<(u64, String)>)>,
    durable: Mutex<u64>,
}

impl Durable for Redb {
    fn append(&self, message: &str) -> u64 {
        let mut q = self.queue.lock().unwrap();
        q.0 += 1;
        let id = q.0;
        q.1.push((id, message.to_string()));
        id
    }
    fn sync(&self) -> u64 {
        let batch = std::mem::take(&mut self.queue.lock().unwrap().1);
        let Some(last) = batch.last().map(|b| b.0) else {
            return *self.durable.lock().unwrap();
        };
        let mut tx = self.db.begin_write().unwrap();
        tx.set_durability(Durability::Immediate).unwrap();
        {
            let mut t = tx.open_table(LOG).unwrap();
            for (id, m) in &batch {
                t.insert(id, m.as_bytes()).unwrap();
            }
        }
        tx.commit().unwrap();
        let mut d = self.durable.lock().unwrap();
        *d = last;
        last
    }
    fn name(&self) -> &'static str {
        "redb 4 (one write transaction per sync)"
    }
}

/// Run `writers` threads for `secs`; return durable appends per second.
fn run(store: Arc<dyn Durable>, writers: usize, secs: f64) -> (f64, u64) {
    let durable = Arc::new((Mutex::new(0u64), Condvar::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let syncs = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let syncer = {
        let (store, durable, stop, syncs) =
            (store.clone(), durable.clone(), stop.clone(), syncs.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let upto = store.sync();
                let (lock, cv) = &*durable;
                let mut d = lock.lock().unwrap();
                if upto > *d {
                    *d = upto;
                    syncs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    cv.notify_all();
                } else {
                    // Nothing new: wait for a writer (bounded, so `stop` is seen).
                    let _ = cv.wait_timeout(d, Duration::from_micros(200)).unwrap();
                }
            }
        })
    };
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let handles: Vec<_> = (0..writers)
        .map(|_| {
            let (store, durable) = (store.clone(), durable.clone());
            std::thread::spawn(move || {
                let mut done = 0u64;
                while Instant::now() < deadline {
                    let id = store.append(MESSAGE);
                    let (lock, cv) = &*durable;
                    cv.notify_all();
                    let mut d = lock.lock().unwrap();
                    while *d < id {
                        d = cv.wait(d).unwrap();
                    }
                    done += 1;
                }
                done
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    durable.1.notify_all();
    syncer.join().unwrap();
    (
        total as f64 / elapsed,
        syncs.load(std::sync::atomic::Ordering::Relaxed),
    )
}

fn fresh(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn open_file(dir: &Path) -> Arc<dyn Durable> {
    let store = FileStore::open(dir).unwrap();
    let next = store.last_id() + 1;
    Arc::new(File {
        store,
        next: Mutex::new(next),
    })
}

fn open_redb(dir: &Path) -> Arc<dyn Durable> {
    let db = Database::create(dir.join("log.redb")).unwrap();
    Arc::new(Redb {
        db,
        queue: Mutex::new((0, Vec::new())),
        durable: Mutex::new(0),
    })
}

/// Write `n` messages of 100 bytes into a FileStore at `dir`, in batches, one sync.
fn fill(dir: &Path, n: u64) {
    let store = FileStore::open(dir).unwrap();
    let mut id = store.last_id() + 1;
    let end = id + n;
    while id < end {
        let batch: Vec<Entry> = (id..(id + 10_000).min(end))
            .map(|i| Entry {
                term: 1,
                id: i,
                message: MESSAGE.into(),
                request_id: None,
            })
            .collect();
        id += batch.len() as u64;
        store.append(&batch).unwrap();
    }
    store.sync().unwrap();
}

/// N sequential 100-byte appends, each followed by fdatasync; the latencies as JSON.
fn fsync_probe(dir: &Path, n: usize) {
    use std::io::Write;
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path).unwrap();
    let mut took: Vec<f64> = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        f.write_all(MESSAGE.as_bytes()).unwrap();
        f.sync_data().unwrap();
        took.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let total = start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&path).unwrap();
    took.sort_by(f64::total_cmp);
    let q = |p: f64| took[((took.len() as f64 * p) as usize).min(took.len() - 1)];
    println!(
        "{{\"fsyncs\": {n}, \"perSecond\": {:.1}, \"p50Ms\": {:.3}, \"p99Ms\": {:.3}, \"maxMs\": {:.3}}}",
        n as f64 / total,
        q(0.5),
        q(0.99),
        took[took.len() - 1]
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("fsync") {
        let n: usize = args
            .get(2)
            .and_then(|s| s.parse().ok())
            .unwrap_or(1000)
            .max(1);
        fsync_probe(Path::new(&args[1]), n);
        return;
    }
    if args.first().map(String::as_str) == Some("fill") {
        let dir = PathBuf::from(&args[1]);
        let n: u64 = args[2].parse().unwrap();
        let t = Instant::now();
        fill(&dir, n);
        println!(
            "filled {} with {n} messages in {:.2?}",
            dir.display(),
            t.elapsed()
        );
        return;
    }
    let base = args
        .first()
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("chorus-storage-bench"));
    let secs: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5.0);
    std::fs::create_dir_all(&base).unwrap();
    println!(
        "storage benchmark in {} ({secs} s per run, 100-byte messages)\n",
        base.display()
    );
    println!("| store | writers | durable appends/s | syncs/s | appends per sync |");
    println!("| --- | --- | --- | --- | --- |");
    for writers in [1usize, 64] {
        for kind in ["file", "redb"] {
            let dir = fresh(&base, kind);
            let store = if kind == "file" {
                open_file(&dir)
            } else {
                open_redb(&dir)
            };
            let name = store.name();
            let (rate, syncs) = run(store, writers, secs);
            let sps = syncs as f64 / secs;
            println!(
                "| {name} | {writers} | {rate:.0} | {sps:.0} | {:.1} |",
                rate / sps.max(1e-9)
            );
        }
    }

    println!("\n| store | 1M messages: write (batched) | reopen / recover | size on disk |");
    println!("| --- | --- | --- | --- |");
    let dir = fresh(&base, "file-1m");
    let t = Instant::now();
    fill(&dir, 1_000_000);
    let write = t.elapsed();
    let t = Instant::now();
    let store = FileStore::open(&dir).unwrap();
    let reopen = t.elapsed();
    assert_eq!(store.last_id(), 1_000_000);
    let size = std::fs::metadata(dir.join("log")).unwrap().len();
    println!(
        "| FileStore | {write:.2?} | {reopen:.2?} (scan and check 1M records) | {} MB |",
        size / 1_000_000
    );
    drop(store);

    let dir = fresh(&base, "redb-1m");
    let t = Instant::now();
    {
        let db = Database::create(dir.join("log.redb")).unwrap();
        for chunk in 0..100u64 {
            let mut tx = db.begin_write().unwrap();
            tx.set_durability(Durability::Immediate).unwrap();
            {
                let mut table = tx.open_table(LOG).unwrap();
                for i in 0..10_000u64 {
                    table
                        .insert(chunk * 10_000 + i + 1, MESSAGE.as_bytes())
                        .unwrap();
                }
            }
            tx.commit().unwrap();
        }
    }
    let write = t.elapsed();
    let t = Instant::now();
    let db = Database::create(dir.join("log.redb")).unwrap();
    let last = db
        .begin_read()
        .unwrap()
        .open_table(LOG)
        .unwrap()
        .last()
        .unwrap()
        .map(|(k, _)| k.value());
    let reopen = t.elapsed();
    assert_eq!(last, Some(1_000_000));
    let size = std::fs::metadata(dir.join("log.redb")).unwrap().len();
    println!(
        "| redb | {write:.2?} | {reopen:.2?} (open, read last key) | {} MB |",
        size / 1_000_000
    );
    let _ = std::fs::remove_dir_all(&base);
}
