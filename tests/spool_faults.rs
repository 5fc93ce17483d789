//! Storage faults (issue 11). A full disk answers "spool full" (HTTP 503 `spool_full`, SMTP 452
//! 4.3.1) and makes Baton not ready; delivery is held while its outcome cannot be recorded; when
//! space returns Baton writes again without a restart and every accepted message is delivered
//! exactly once. A damaged, empty or foreign spool file is refused at start with a clear error
//! and a non-zero exit (never a panic); unreadable records are moved to quarantine and reported.
//!
//! The disk-full tests mount a real 16 MiB ext4 filesystem through a loop device and fill it
//! (root only: without root or loop devices they say so and skip).

mod support;

use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::baton::{Baton, DEADLINE, KEY, config_text, message, smtp_provider};
use support::mock_http::{MockHttp, Recorded, Reply};
use support::mock_smtp::{MockSmtp, Stage};
use support::process::{BatonProcess, Exited};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

// ---- a small disk ------------------------------------------------------------------------------

/// A 16 MiB ext4 filesystem on a loop device, unmounted on drop.
struct SmallDisk {
    mount: PathBuf,
    filler: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` (after saying why) where the test cannot mount filesystems.
    fn mount() -> Option<SmallDisk> {
        let uid =
            Command::new("id").arg("-u").output().ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        if uid.as_deref() != Some("0") {
            eprintln!("SKIPPED: mounting a small filesystem needs root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let (image, mount) = (dir.path().join("disk.img"), dir.path().join("mnt"));
        std::fs::File::create(&image).unwrap().set_len(16 * 1024 * 1024).unwrap();
        std::fs::create_dir(&mount).unwrap();
        // -m 0: no blocks reserved for root (the test runs as root and must see ENOSPC).
        let made = run("mkfs.ext4", &["-q", "-F", "-m", "0", image.to_str().unwrap()]);
        if !made || !run("mount", &["-o", "loop", image.to_str().unwrap(), mount.to_str().unwrap()]) {
            eprintln!("SKIPPED: cannot mount a loop filesystem here");
            return None;
        }
        Some(SmallDisk { filler: mount.join("filler"), mount, _dir: dir })
    }

    /// Fills every free byte with a filler file.
    fn fill(&self) {
        let mut f = std::fs::File::create(&self.filler).unwrap();
        for chunk in [1024 * 1024, 4096, 512] {
            let block = vec![0x42u8; chunk];
            while f.write_all(&block).is_ok() {}
        }
        let _ = f.sync_all();
    }

    fn free(&self) {
        std::fs::remove_file(&self.filler).unwrap();
        run("sync", &[]);
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let mount = self.mount.to_str().unwrap();
        // Lazy if busy: an in-process Baton may still hold the spool file open.
        if !run("umount", &[mount]) {
            run("umount", &["-l", mount]);
        }
    }
}

fn run(program: &str, args: &[&str]) -> bool {
    Command::new(program).args(args).status().map(|s| s.success()).unwrap_or(false)
}

// ---- a Postmark-like provider --------------------------------------------------------------------

const SMTP_LISTEN: &str = "smtp_listen = \"127.0.0.1:0\"";

/// "app" may also submit over SMTP from loopback without AUTH.
const CLIENTS: &str = r#"
[[clients]]
name = "app"
api_keys = ["test-api-key-0123456789"]
allowed_senders = ["*@example.com"]
allowed_networks = ["127.0.0.0/8"]
"#;

fn postmark_config(api: &MockHttp) -> String {
    format!(
        "{CLIENTS}\n[providers.postmark]\ntype = \"postmark\"\nserver_token = \"pm-token\"\nbase_url = \"{}\"\ntimeout = \"10s\"\n\n\
         [retry]\nschedule = [\"3s\"]\n\n[health]\nprobe_interval = \"1h\"\n\n[[routes]]\nname = \"default\"\nproviders = [\"postmark\"]\n",
        api.url()
    )
}

fn subject_of(r: &Recorded) -> String {
    r.json()["Subject"].as_str().unwrap_or_default().to_string()
}

fn accepted() -> Reply {
    Reply::json(200, json!({"To": "alice@example.net", "MessageID": "pm-1", "ErrorCode": 0, "Message": "OK"}))
}

/// Sends per subject, as the provider saw them.
fn sends(api: &MockHttp) -> HashMap<String, usize> {
    let mut count = HashMap::new();
    for r in api.requests_to("/email") {
        *count.entry(subject_of(&r)).or_insert(0) += 1;
    }
    count
}

async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The last line of one SMTP reply.
async fn smtp_reply(conn: &mut BufReader<tokio::net::TcpStream>) -> String {
    loop {
        let mut line = String::new();
        tokio::time::timeout(DEADLINE, conn.read_line(&mut line)).await.expect("SMTP reply in time").unwrap();
        if line.as_bytes().get(3) != Some(&b'-') {
            return line.trim_end().to_string();
        }
    }
}

/// One SMTP submission from loopback; returns the reply to the message (or the first refusal).
async fn smtp_submit(addr: std::net::SocketAddr, subject: &str) -> String {
    let mut conn = BufReader::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    smtp_reply(&mut conn).await;
    let data = format!("From: app@example.com\r\nTo: alice@example.net\r\nSubject: {subject}\r\n\r\nhello\r\n.\r\n");
    let commands =
        ["EHLO test.example\r\n", "MAIL FROM:<app@example.com>\r\n", "RCPT TO:<alice@example.net>\r\n", "DATA\r\n"];
    for line in commands.into_iter().chain([data.as_str()]) {
        conn.get_mut().write_all(line.as_bytes()).await.unwrap();
        let r = smtp_reply(&mut conn).await;
        if !(r.starts_with('2') || r.starts_with('3')) || line == data {
            return r;
        }
    }
    unreachable!("the message's reply is returned in the loop")
}

// ---- disk full --------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_answers_spool_full_holds_delivery_and_recovers_without_a_restart() {
    let Some(disk) = SmallDisk::mount() else { return };
    let api = MockHttp::start().await;
    api.reply("/server", Reply::json(200, json!({"ID": 1, "Name": "Transactional"})));
    // "held" sends take 2 s to answer: the disk fills while they are under way, so their
    // outcome cannot be recorded. "later" fails once, so its next pass falls in the outage.
    let failed_once = Arc::new(AtomicBool::new(false));
    let flag = failed_once.clone();
    api.reply(
        "/email",
        Reply::dynamic(move |r| {
            let subject = subject_of(r);
            if subject == "later" && !flag.swap(true, Ordering::SeqCst) {
                Reply::json(503, json!({"ErrorCode": 100, "Message": "Maintenance"}))
            } else if subject.starts_with("held") {
                Reply::Delayed(Duration::from_secs(2), Box::new(accepted()))
            } else {
                accepted()
            }
        }),
    );
    let mut baton = Baton::start_in_with_server(&disk.mount, SMTP_LISTEN, "", &postmark_config(&api)).await;
    let mut ids = Vec::new();
    for subject in ["held 1", "held 2", "held 3", "later"] {
        ids.push((subject.to_string(), baton.send(message(&["alice@example.net"], subject)).await));
    }
    api.wait_for_requests("/email", 4, DEADLINE).await;

    // Fill the disk; the next message that needs room finds none.
    disk.fill();
    let big = "x".repeat(512 * 1024);
    let mut refused = None;
    for i in 0..20 {
        let subject = format!("big {i}");
        let msg = json!({"from": "app@example.com", "to": ["alice@example.net"], "subject": subject, "text": big});
        let (code, body) = baton.post(Some(KEY), None, msg.to_string()).await;
        match code {
            202 => ids.push((subject, body["id"].as_str().unwrap().to_string())),
            _ => {
                refused = Some((code, body));
                break;
            }
        }
    }
    let (code, body) = refused.expect("a full disk refuses messages");
    assert_eq!((code, body["error"]["code"].as_str()), (503, Some("spool_full")), "{body}");

    // While the spool cannot write: every ingress says "full", and Baton is not ready.
    let (code, body) = baton.post(Some(KEY), None, message(&["alice@example.net"], "small").to_string()).await;
    assert_eq!((code, body["error"]["code"].as_str()), (503, Some("spool_full")), "{body}");
    let smtp = smtp_submit(baton.smtp_addr(), "over smtp").await;
    assert!(smtp.starts_with("452 4.3.1"), "{smtp}");
    let (code, text) = baton.readyz().await;
    assert_eq!(code, 503, "{text}");
    assert!(text.contains("full"), "{text}");
    let queue = baton.admin_queue().await;
    assert_eq!(queue["spool_writable"], false, "{queue}");
    let m = baton.metrics().await;
    assert_eq!(Baton::metric(&m, "baton_spool_writable", &[]), 0.0);
    assert!(Baton::metric(&m, "baton_spool_write_failures_total", &[("reason", "full")]) >= 1.0, "{m}");

    // The held sends are answered meanwhile, and "later" is due: nothing is sent (again).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let during = sends(&api);
    assert!(during.values().all(|&n| n == 1), "nothing sent twice while the spool cannot write: {during:?}");
    assert_eq!(during.get("later"), Some(&1), "no new send while the spool cannot write: {during:?}");
    assert_eq!(baton.readyz().await.0, 503, "still full");

    // Space returns: no restart, Baton is ready again and delivers everything, once.
    disk.free();
    eventually("ready again", || async { baton.readyz().await.0 == 200 }).await;
    for (_, id) in &ids {
        let status = baton.wait_final(id).await;
        assert_eq!(status["status"], "delivered", "{status}");
    }
    let after = baton.send(message(&["alice@example.net"], "after")).await;
    assert_eq!(baton.wait_final(&after).await["status"], "delivered");
    assert!(smtp_submit(baton.smtp_addr(), "smtp after").await.starts_with("250"));
    eventually("the SMTP message sent", || async { sends(&api).contains_key("smtp after") }).await;
    let total = sends(&api);
    for (subject, _) in &ids {
        let want = if subject == "later" { 2 } else { 1 };
        assert_eq!(total.get(subject), Some(&want), "{subject}: {total:?}");
    }
    assert!(!total.contains_key("small") && !total.contains_key("over smtp"), "refused messages never sent: {total:?}");
    assert_eq!(Baton::metric(&baton.metrics().await, "baton_spool_writable", &[]), 1.0);
    baton.stop().await;
}

// ---- damaged, empty and foreign spool files -------------------------------------------------------

/// Retries every 300 ms, and the relay's refusals never take it out of rotation: a spool built
/// while it refuses is delivered at once by the next start.
fn write_config(dir: &Path, relay: &MockSmtp) -> PathBuf {
    let body = format!(
        "{}\n[retry]\nschedule = [\"300ms\"]\n\n[health]\nprobe_interval = \"1h\"\nfailure_threshold = 1000000\n\
         min_requests = 1000000\n\n[[routes]]\nname = \"default\"\nproviders = [\"relay\"]\n",
        smtp_provider("relay", relay, "")
    );
    let path = dir.join("baton.toml");
    std::fs::write(&path, config_text(dir, "", &body)).unwrap();
    path
}

fn spool_file(dir: &Path) -> PathBuf {
    dir.join("spool").join("spool.redb")
}

/// Asserts Baton refused to start as it should: exit status 1 (not a panic's 101, not a
/// signal) and an error line naming the spool file and saying one of `says`.
fn assert_refused(exited: &Exited, says: &[&str]) -> String {
    assert_eq!(exited.status.code(), Some(1), "exit status {:?}; log:\n{}", exited.status, exited.log.join("\n"));
    let error = exited
        .log
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "cannot start");
    let error = error.unwrap_or_else(|| panic!("no 'cannot start' line:\n{}", exited.log.join("\n")));
    let text = error["error"].as_str().unwrap_or_default();
    assert!(text.contains("spool.redb") && says.iter().any(|s| text.contains(s)), "{text}");
    text.to_string()
}

fn start(config: &Path) -> Result<BatonProcess, Exited> {
    BatonProcess::start_or_exit(config, DEADLINE)
}

#[tokio::test]
async fn an_empty_or_foreign_spool_file_is_refused_and_left_alone() {
    let relay = MockSmtp::start().await;
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("empty", Vec::new(), "empty"),
        ("text", b"# notes\nthis is not a spool\n".to_vec(), "not a redb database"),
        ("random", (0..65536u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect(), "not a redb database"),
        ("short", b"redb".to_vec(), "too short"),
    ];
    for (name, contents, says) in cases {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), &relay);
        std::fs::create_dir_all(dir.path().join("spool")).unwrap();
        std::fs::write(spool_file(dir.path()), &contents).unwrap();
        let exited = start(&config).err().unwrap_or_else(|| panic!("{name}: started on a file that is no spool"));
        assert_refused(&exited, &[says]);
        assert_eq!(std::fs::read(spool_file(dir.path())).unwrap(), contents, "{name}: file untouched");
    }
    // Absent is the one case that starts: a new spool.
    let dir = tempfile::tempdir().unwrap();
    let _baton = start(&write_config(dir.path(), &relay)).expect("a new spool");
    assert!(spool_file(dir.path()).metadata().unwrap().len() > 0);
}

#[tokio::test]
async fn another_programs_redb_file_is_refused() {
    let relay = MockSmtp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &relay);
    std::fs::create_dir_all(dir.path().join("spool")).unwrap();
    {
        let db = redb::Database::create(spool_file(dir.path())).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(redb::TableDefinition::<&str, &str>::new("sessions")).unwrap().insert("a", "b").unwrap();
        txn.commit().unwrap();
    }
    assert_refused(&start(&config).err().expect("refused"), &["without Baton's tables"]);
}

/// A spool holding `n` undelivered messages (the relay refused them), cleanly stopped.
/// Returns the config and the message ids by subject.
async fn spool_with_pending(dir: &Path, relay: &MockSmtp, n: usize) -> (PathBuf, Vec<(String, String)>) {
    relay.set_reply(Stage::Mail, Some("451 4.3.0 try later".into()));
    let config = write_config(dir, relay);
    let mut baton = start(&config).expect("starts");
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..n {
        let subject = format!("pending {i}");
        let resp = http
            .post(format!("{}/v1/messages", baton.http))
            .bearer_auth(KEY)
            .body(message(&["alice@example.net"], &subject).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202);
        let v: Value = resp.json().await.unwrap();
        ids.push((subject, v["id"].as_str().unwrap().to_string()));
    }
    relay.wait_for_commands("MAIL", n, DEADLINE).await;
    // Clean stop: the file is as redb leaves it (the damage tests add their own).
    baton.signal("TERM");
    assert!(baton.wait_exit(DEADLINE).success());
    relay.reset();
    (config, ids)
}

/// What a started Baton made of the spool: ids delivered, ids quarantined.
async fn outcome(baton: &BatonProcess, ids: &[(String, String)]) -> (Vec<String>, Vec<String>) {
    let http = reqwest::Client::new();
    let queue: Value = http.get(format!("{}/admin/queue", baton.admin)).send().await.unwrap().json().await.unwrap();
    let ids_listed = queue["quarantined"]["ids"].as_array().cloned().unwrap_or_default();
    let quarantined: Vec<String> = ids_listed.iter().map(|v| v.as_str().unwrap().to_string()).collect();
    assert_eq!(queue["quarantined"]["count"].as_u64().unwrap_or(0), quarantined.len() as u64, "{queue}");
    let mut delivered = Vec::new();
    for (_, id) in ids.iter().filter(|(_, id)| !quarantined.contains(id)) {
        let start = Instant::now();
        loop {
            let resp = http.get(format!("{}/v1/messages/{id}", baton.http)).bearer_auth(KEY).send().await.unwrap();
            let v: Value = resp.json().await.unwrap_or_default();
            if v["status"] == "delivered" {
                delivered.push(id.clone());
                break;
            }
            assert!(start.elapsed() < DEADLINE, "{id} neither delivered nor quarantined: {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    (delivered, quarantined)
}

#[tokio::test]
async fn unreadable_records_are_quarantined_and_reported_never_dropped_silently() {
    let relay = MockSmtp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (config, ids) = spool_with_pending(dir.path(), &relay, 3).await;
    let broken = ids[1].1.clone();
    {
        let db = redb::Database::open(spool_file(dir.path())).unwrap();
        let txn = db.begin_write().unwrap();
        let mut meta = txn.open_table(redb::TableDefinition::<&str, &[u8]>::new("meta")).unwrap();
        meta.insert(broken.as_str(), b"{\"id\": \"not json any more".as_slice()).unwrap();
        drop(meta);
        txn.commit().unwrap();
    }
    let mut baton = start(&config).expect("starts: the other records are fine");
    let (delivered, quarantined) = outcome(&baton, &ids).await;
    assert_eq!(quarantined, std::slice::from_ref(&broken));
    assert_eq!(delivered.len(), 2);
    relay.wait_for_messages(2, DEADLINE).await;
    let http = reqwest::Client::new();
    let m = http.get(format!("{}/metrics", baton.admin)).send().await.unwrap().text().await.unwrap();
    assert_eq!(Baton::metric(&m, "baton_spool_quarantined_records", &[]), 1.0, "{m}");
    let logged =
        baton.log_lines().iter().filter_map(|l| serde_json::from_str::<Value>(l).ok()).any(|v| {
            v["message_id"] == broken.as_str() && v["message"].as_str().is_some_and(|m| m.contains("quarantine"))
        });
    assert!(logged, "a log line names the quarantined record");
    baton.signal("TERM");
    baton.wait_exit(DEADLINE);
    // Kept (raw bytes and body) for salvage, and still reported after a restart.
    let db = redb::Database::open(spool_file(dir.path())).unwrap();
    let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
    let raw = txn.open_table(redb::TableDefinition::<&str, &[u8]>::new("quarantine")).unwrap();
    assert_eq!(raw.get(broken.as_str()).unwrap().unwrap().value(), b"{\"id\": \"not json any more");
    drop((raw, txn, db));
    let baton = start(&config).expect("starts again");
    assert_eq!(outcome(&baton, &[]).await.1, [broken]);
}

/// xorshift64*: a seeded, dependency-free source of flip positions.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % below as u64) as usize
    }
}

#[tokio::test]
async fn a_damaged_spool_starts_with_every_message_accounted_for_or_exits_with_a_clear_error() {
    let relay = MockSmtp::start().await;
    let source = tempfile::tempdir().unwrap();
    let (_, ids) = spool_with_pending(source.path(), &relay, 12).await;
    let pristine = std::fs::read(spool_file(source.path())).unwrap();
    // Where the records are: flips there hit data that matters, not free pages.
    let hot: Vec<usize> = ids
        .iter()
        .flat_map(|(_, id)| pristine.windows(id.len()).enumerate().filter(|(_, w)| *w == id.as_bytes()).map(|(i, _)| i))
        .collect();
    assert!(!hot.is_empty());
    let mut outcomes = Vec::new();
    // More seeds when hunting: BATON_FLIP_SEEDS=500 cargo test --test spool_faults damaged
    let seeds: u64 = std::env::var("BATON_FLIP_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(12);
    for seed in 1..=seeds {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut damaged = pristine.clone();
        for _ in 0..1 + rng.next(3) {
            let at = match seed % 3 {
                0 => rng.next(damaged.len()),
                1 => (hot[rng.next(hot.len())] + rng.next(256)).min(damaged.len() - 1),
                _ => rng.next(4096.min(damaged.len())),
            };
            damaged[at] ^= 1 << rng.next(8);
        }
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), &relay);
        std::fs::create_dir_all(dir.path().join("spool")).unwrap();
        std::fs::write(spool_file(dir.path()), &damaged).unwrap();
        match start(&config) {
            Err(exited) => {
                let why = assert_refused(&exited, &["is damaged", "is not a Baton spool"]);
                outcomes.push(format!("seed {seed}: refused: {}", why.chars().take(160).collect::<String>()));
            }
            Ok(baton) => {
                let (delivered, quarantined) = outcome(&baton, &ids).await;
                assert_eq!(delivered.len() + quarantined.len(), ids.len(), "seed {seed}");
                let ready = reqwest::get(format!("{}/readyz", baton.admin)).await.unwrap().status().as_u16();
                assert_eq!(ready, 200, "seed {seed}: started means ready");
                outcomes.push(format!("seed {seed}: started, {} quarantined", quarantined.len()));
            }
        }
    }
    eprintln!("{}", outcomes.join("\n"));
}
