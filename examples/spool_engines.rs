//! What one group commit costs in redb (Baton's spool) against an append-only log, the shape of
//! Postfix's queue files and KumoMTA's spool (docs/benchmarks.md, "Pipeline"; issue 15 asks
//! for this measurement before any decision to leave redb).
//!
//!   cargo run --release --example spool_engines -- [DIR] [COMMITS] [BATCH]
//!
//! Both engines get the same work per commit, the mix of the pipeline benchmark: BATCH new
//! messages (a 300-byte record and a 1,300-byte body each) and BATCH finished ones (the record
//! rewritten, the body dropped), then one fsync'd commit. redb: the `meta` and `body` tables as
//! the spool keeps them, default durability (one fsync per commit). Log: every record appended
//! to one file with a length prefix (a finished message is a small state record; dropping a
//! body costs nothing until the segment is recycled, which is not measured), one
//! `write` and one `fdatasync` per commit. Reported per commit: wall time and the CPU time of
//! the committing thread (from /proc/thread-self/schedstat), i.e. what the spool writer thread
//! spends. DIR must be on the disk under test (default target/bench-tmp); 127.0.0.1 is not
//! involved.

use redb::{Database, TableDefinition};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const BODY: TableDefinition<&str, &[u8]> = TableDefinition::new("body");

fn thread_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").expect("Linux /proc");
    let ns: u64 = text.split_whitespace().next().and_then(|v| v.parse().ok()).expect("schedstat");
    Duration::from_nanos(ns)
}

fn key(n: u64) -> String {
    // Time-ordered like the ULIDs Baton uses: new keys land at the right edge of the tree.
    format!("01J{n:023}")
}

fn report(engine: &str, commits: u64, batch: u64, wall: Duration, cpu: Duration) {
    let per = |d: Duration| d.as_secs_f64() * 1e6 / commits as f64;
    println!(
        "{engine:<5} {commits} commits of {batch} new + {batch} finished: {:>7.0} µs wall, {:>6.0} µs CPU per commit \
         ({:>5.1} µs CPU per message); {:>6.0} messages/s in and out",
        per(wall),
        per(cpu),
        per(cpu) / batch as f64,
        (commits * batch) as f64 / wall.as_secs_f64()
    );
}

fn run_redb(dir: &Path, commits: u64, batch: u64) {
    let path = dir.join("engines.redb");
    let _ = std::fs::remove_file(&path);
    let db = Database::create(&path).expect("create redb");
    let meta = vec![b'm'; 300];
    let body = vec![b'b'; 1300];
    let finished = vec![b'f'; 420];
    let (wall0, cpu0) = (Instant::now(), thread_cpu());
    for c in 0..commits {
        let txn = db.begin_write().expect("begin");
        {
            let mut m = txn.open_table(META).expect("meta");
            let mut b = txn.open_table(BODY).expect("body");
            for i in 0..batch {
                let id = key(c * batch + i);
                m.insert(id.as_str(), meta.as_slice()).expect("insert meta");
                b.insert(id.as_str(), body.as_slice()).expect("insert body");
            }
            // The messages of some commits ago are delivered now.
            if c >= 4 {
                for i in 0..batch {
                    let id = key((c - 4) * batch + i);
                    m.insert(id.as_str(), finished.as_slice()).expect("update meta");
                    b.remove(id.as_str()).expect("remove body");
                }
            }
        }
        txn.commit().expect("commit");
    }
    report("redb", commits, batch, wall0.elapsed(), thread_cpu() - cpu0);
    drop(db);
    let _ = std::fs::remove_file(&path);
}

fn run_log(dir: &Path, commits: u64, batch: u64) {
    let path = dir.join("engines.log");
    let mut file = std::fs::OpenOptions::new().create(true).truncate(true).write(true).open(&path).expect("log");
    let meta = vec![b'm'; 300];
    let body = vec![b'b'; 1300];
    let state = vec![b's'; 64];
    let mut buf = Vec::with_capacity(64 * 1024);
    let put = |buf: &mut Vec<u8>, id: &str, parts: &[&[u8]]| {
        let len: usize = id.len() + parts.iter().map(|p| p.len()).sum::<usize>();
        buf.extend_from_slice(&(len as u32).to_le_bytes());
        buf.extend_from_slice(id.as_bytes());
        for p in parts {
            buf.extend_from_slice(p);
        }
    };
    let (wall0, cpu0) = (Instant::now(), thread_cpu());
    for c in 0..commits {
        buf.clear();
        for i in 0..batch {
            put(&mut buf, &key(c * batch + i), &[&meta, &body]);
        }
        if c >= 4 {
            for i in 0..batch {
                put(&mut buf, &key((c - 4) * batch + i), &[&state]);
            }
        }
        file.write_all(&buf).expect("append");
        file.sync_data().expect("fdatasync");
    }
    report("log", commits, batch, wall0.elapsed(), thread_cpu() - cpu0);
    drop(file);
    let _ = std::fs::remove_file(&path);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| "target/bench-tmp".into()));
    let commits: u64 = args.next().map_or(5000, |v| v.parse().expect("COMMITS"));
    let batch: u64 = args.next().map_or(8, |v| v.parse().expect("BATCH"));
    std::fs::create_dir_all(&dir).expect("DIR");
    // Twice each, interleaved, so that disk noise lands on both.
    for _ in 0..2 {
        run_redb(&dir, commits, batch);
        run_log(&dir, commits, batch);
    }
}
