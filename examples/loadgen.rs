//! A lean HTTP load generator for Baton's ingest API (`POST /v1/messages`).
//!
//! ```text
//! cargo run --release --example loadgen -- --url http://127.0.0.1:8080 --key KEY --concurrency 64 --duration 10s
//! cargo run --release --example loadgen -- --url http://127.0.0.1:8080 --key KEY --rate 5000 --duration 10s
//! cargo run --release --example loadgen -- --url http://127.0.0.1:8080 --key KEY --count 100000
//! ```
//!
//! Modes:
//! - closed loop (default): `--concurrency` keep-alive connections, each sending its next request
//!   as soon as the previous answer arrives, for `--duration` or until `--count` requests are sent.
//!   Measures maximum throughput.
//! - open loop (`--rate R`): request *i* is scheduled at `start + i/R` whatever happened before;
//!   a free connection sends it at (or as soon as possible after) that time. Latency is measured
//!   from the *scheduled* time, so a slow server is charged for the requests that queued up behind
//!   a slow one (no coordinated omission). Sends exactly `--count`, or `R × --duration`, requests.
//!   Give it enough connections: when all are busy, requests wait for one, which shows up as latency.
//!
//! To stay out of Baton's way on a small machine it speaks HTTP/1.1 over raw tokio TCP on one
//! thread (`--threads` to change), sends a request built once up front and parses only the status
//! line and `Content-Length` of each answer. Any answer other than 202 counts as an error (and is
//! reported by status code); latency percentiles are over the 202 answers only. It only talks to
//! loopback addresses.
//!
//! `--warmup D` first runs the same load on the same connections for D and leaves it out of the
//! numbers (not with a closed-loop `--count`). Open-loop sends are paced by tokio's 1 ms timer, so a
//! request may leave up to ~1 ms after its scheduled time; that lag is counted in its latency.
//!
//! `--json` prints the summary as one JSON object (for bench scripts) instead of text;
//! `--timeline` prints per-second 202 count / p50 / p99 / max on stderr.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Args {
    addr: SocketAddr,
    host: String,
    path: String,
    key: String,
    concurrency: usize,
    duration: Option<Duration>,
    warmup: Duration,
    rate: Option<f64>,
    count: Option<u64>,
    size: usize,
    threads: usize,
    timeout: Duration,
    json: bool,
    timeline: bool,
    /// A fresh `Idempotency-Key` on every request (what cluster mode claims in Redis).
    idempotency_keys: bool,
}

const USAGE: &str = "usage: loadgen --url http://127.0.0.1:PORT[/v1/messages] --key API_KEY
    [--concurrency N (64)] [--duration 10s] [--rate PER_SEC] [--count N] [--warmup 0s]
    [--size BODY_TEXT_BYTES (1024)] [--threads N (1)] [--timeout 30s] [--json]
    [--timeline (per-second count / p99 / max on stderr)] [--idempotency-keys (a new key per request)]";

fn fail(msg: &str) -> ! {
    eprintln!("loadgen: {msg}\n{USAGE}");
    std::process::exit(2);
}

fn parse_duration(s: &str) -> Duration {
    let (num, unit) = s.find(|c: char| c.is_ascii_alphabetic()).map(|i| s.split_at(i)).unwrap_or((s, "s"));
    let n: f64 = num.parse().unwrap_or_else(|_| fail(&format!("bad duration {s:?}")));
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => fail(&format!("bad duration unit in {s:?} (use ms, s or m)")),
    };
    Duration::from_secs_f64(secs)
}

fn parse_args() -> Args {
    let mut url = None;
    let mut key = None;
    let mut concurrency = 64;
    let mut duration = None;
    let mut warmup = Duration::ZERO;
    let mut rate = None;
    let mut count = None;
    let mut size = 1024;
    let mut threads = 1;
    let mut timeout = Duration::from_secs(30);
    let mut json = false;
    let mut timeline = false;
    let mut idempotency_keys = false;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--idempotency-keys" {
            idempotency_keys = true;
            continue;
        }
        if flag == "--json" {
            json = true;
            continue;
        }
        if flag == "--timeline" {
            timeline = true;
            continue;
        }
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = it.next().unwrap_or_else(|| fail(&format!("{flag} needs a value")));
        let num = |v: &str| -> u64 {
            v.replace('_', "").parse().unwrap_or_else(|_| fail(&format!("{flag}: bad number {v:?}")))
        };
        match flag.as_str() {
            "--url" => url = Some(value),
            "--key" => key = Some(value),
            "--concurrency" | "-c" => concurrency = num(&value) as usize,
            "--duration" | "-d" => duration = Some(parse_duration(&value)),
            "--warmup" => warmup = parse_duration(&value),
            "--rate" | "-r" => rate = Some(num(&value) as f64),
            "--count" | "-n" => count = Some(num(&value)),
            "--size" => size = num(&value) as usize,
            "--threads" => threads = num(&value) as usize,
            "--timeout" => timeout = parse_duration(&value),
            _ => fail(&format!("unknown flag {flag}")),
        }
    }
    let url = url.unwrap_or_else(|| fail("--url is required"));
    let key = key.unwrap_or_else(|| fail("--key is required"));
    let rest = url.strip_prefix("http://").unwrap_or_else(|| fail("only http:// URLs are supported"));
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/v1/messages"),
    };
    let path = if path == "/" { "/v1/messages" } else { path };
    let addr: SocketAddr = hostport
        .parse()
        .unwrap_or_else(|_| fail(&format!("{hostport:?}: give a literal IP:PORT, e.g. 127.0.0.1:8080")));
    if !addr.ip().is_loopback() {
        fail("only loopback addresses (127.0.0.1, ::1) may be targeted");
    }
    if concurrency == 0 || threads == 0 {
        fail("--concurrency and --threads must be at least 1");
    }
    if rate.is_some_and(|r| r <= 0.0) {
        fail("--rate must be positive");
    }
    if duration.is_none() && count.is_none() {
        duration = Some(Duration::from_secs(10));
    }
    Args {
        addr,
        host: hostport.to_string(),
        path: path.to_string(),
        key,
        concurrency,
        duration,
        warmup,
        rate,
        count,
        size,
        threads,
        timeout,
        json,
        timeline,
        idempotency_keys,
    }
}

/// Digits of the per-request number in an `Idempotency-Key` (written in place before each send).
const KEY_DIGITS: usize = 20;

/// The request, built once: a `size`-byte plain-text body in a JSON send request.
fn build_request(args: &Args) -> Vec<u8> {
    let line = "The quick brown fox jumps over the lazy dog. 0123456789 ";
    let mut text = String::with_capacity(args.size);
    while text.len() < args.size {
        text.push_str(line);
    }
    text.truncate(args.size);
    let body = format!(
        r#"{{"from":"loadgen@example.com","to":["rcpt@example.net"],"subject":"loadgen message","text":"{text}"}}"#
    );
    // A run's keys start with its own prefix, so runs against one spool never collide.
    let idempotency = match args.idempotency_keys {
        true => {
            let run =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_micros();
            format!("Idempotency-Key: lg-{run}-{}\r\n", "0".repeat(KEY_DIGITS))
        }
        false => String::new(),
    };
    let mut req = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n{idempotency}Content-Length: {}\r\n\r\n",
        args.path,
        args.host,
        args.key,
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body.as_bytes());
    req
}

/// What one worker saw.
#[derive(Default)]
struct Tally {
    /// Latencies (µs) of 202 answers.
    latencies: Vec<u32>,
    /// Open loop: how late (µs) each request actually went out after its scheduled time.
    send_lag: Vec<u32>,
    /// Open loop: latencies (µs) from the actual send (service time), 202 answers only.
    service: Vec<u32>,
    sent: u64,
    accepted: u64,
    /// (status code, count) for non-202 answers.
    by_status: Vec<(u16, u64)>,
    io_errors: u64,
    first_error: Option<String>,
    /// With --timeline: (second after start the answer came, latency µs) of 202 answers.
    timeline: Vec<(u32, u32)>,
}

impl Tally {
    fn status(&mut self, code: u16) {
        self.add_status(code, 1);
    }
    fn add_status(&mut self, code: u16, count: u64) {
        match self.by_status.iter_mut().find(|(c, _)| *c == code) {
            Some((_, n)) => *n += count,
            None => self.by_status.push((code, count)),
        }
    }
    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.send_lag.extend(other.send_lag);
        self.service.extend(other.service);
        self.sent += other.sent;
        self.accepted += other.accepted;
        for (code, n) in other.by_status {
            self.add_status(code, n);
        }
        self.io_errors += other.io_errors;
        self.timeline.extend(other.timeline);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

fn find_header_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

fn header_value<'a>(head: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    head.split(|&b| b == b'\n').find_map(|line| {
        let colon = line.iter().position(|&b| b == b':')?;
        if line[..colon].eq_ignore_ascii_case(name) { Some(line[colon + 1..].trim_ascii()) } else { None }
    })
}

impl Conn {
    async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(s)
    }

    /// Sends the request and returns the answer's status code.
    async fn round_trip(&mut self, req: &[u8]) -> std::io::Result<u16> {
        if self.stream.is_none() {
            self.stream = Some(Self::connect(self.addr).await?);
            self.buf.clear();
        }
        let result = self.exchange(req).await;
        if !matches!(result, Ok((_, true))) {
            self.stream = None;
        }
        result.map(|(code, _)| code)
    }

    /// (status, connection may be reused)
    async fn exchange(&mut self, req: &[u8]) -> std::io::Result<(u16, bool)> {
        let stream = self.stream.as_mut().expect("connected");
        stream.write_all(req).await?;
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = find_header_end(&self.buf) {
                let head = &self.buf[..end];
                let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed HTTP response");
                let code = head
                    .get(9..12)
                    .and_then(|c| std::str::from_utf8(c).ok())
                    .and_then(|c| c.parse::<u16>().ok())
                    .filter(|_| head.starts_with(b"HTTP/1."))
                    .ok_or_else(bad)?;
                let len: usize = match header_value(head, b"content-length") {
                    Some(v) => std::str::from_utf8(v).ok().and_then(|v| v.parse().ok()).ok_or_else(bad)?,
                    None => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "response without Content-Length",
                        ));
                    }
                };
                let keep = !header_value(head, b"connection").is_some_and(|v| v.eq_ignore_ascii_case(b"close"));
                while self.buf.len() < end + len {
                    let n = stream.read(&mut chunk).await?;
                    if n == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                self.buf.drain(..end + len);
                return Ok((code, keep));
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Where the per-request number of the `Idempotency-Key` header sits in `req`.
fn key_digits_at(req: &[u8]) -> Option<usize> {
    let name = b"Idempotency-Key: ";
    let at = req.windows(name.len()).position(|w| w == name)?;
    let end = at + req[at..].windows(2).position(|w| w == b"\r\n")?;
    Some(end - KEY_DIGITS)
}

/// Shared plan for the workers.
struct Plan {
    req: Vec<u8>,
    /// With --idempotency-keys: where each request's number goes, and the next number.
    key_at: Option<usize>,
    keys: AtomicU64,
    start: Instant,
    /// Requests scheduled (open loop) or started (closed loop) before this are warm-up: sent, not counted.
    measure_from: Instant,
    /// Closed loop: stop sending after this.
    deadline: Option<Instant>,
    /// Requests to send in all (closed loop with --count, and open loop).
    total: Option<u64>,
    /// Open loop: time between scheduled sends.
    interval: Option<Duration>,
    timeout: Duration,
    timeline: bool,
    next: AtomicU64,
    /// When the last counted answer arrived (ns after `measure_from`).
    last_done_ns: AtomicU64,
}

async fn worker(plan: Arc<Plan>, mut conn: Conn) -> Tally {
    let mut t = Tally::default();
    let mut req = plan.req.clone();
    loop {
        let scheduled = match (plan.interval, plan.total) {
            (Some(interval), Some(total)) => {
                let i = plan.next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let at = plan.start + interval.mul_f64(i as f64);
                tokio::time::sleep_until(at.into()).await;
                at
            }
            _ => {
                if let Some(total) = plan.total
                    && plan.next.fetch_add(1, Ordering::Relaxed) >= total
                {
                    break;
                }
                let now = Instant::now();
                if plan.deadline.is_some_and(|d| now >= d) {
                    break;
                }
                now
            }
        };
        if let Some(at) = plan.key_at {
            let n = plan.keys.fetch_add(1, Ordering::Relaxed);
            req[at..at + KEY_DIGITS].copy_from_slice(format!("{n:020}").as_bytes());
        }
        let sent_at = Instant::now();
        let result = tokio::time::timeout(plan.timeout, conn.round_trip(&req)).await;
        let done = Instant::now();
        if result.is_err() {
            conn.stream = None;
        }
        if scheduled < plan.measure_from {
            continue; // warm-up
        }
        t.sent += 1;
        plan.last_done_ns.fetch_max((done - plan.measure_from).as_nanos() as u64, Ordering::Relaxed);
        match result {
            Ok(Ok(202)) => {
                t.accepted += 1;
                let latency = (done - scheduled).as_micros().min(u32::MAX as u128) as u32;
                t.latencies.push(latency);
                if plan.timeline {
                    t.timeline.push(((done - plan.measure_from).as_secs() as u32, latency));
                }
                if plan.interval.is_some() {
                    t.send_lag.push((sent_at - scheduled).as_micros().min(u32::MAX as u128) as u32);
                    t.service.push((done - sent_at).as_micros().min(u32::MAX as u128) as u32);
                }
            }
            Ok(Ok(code)) => t.status(code),
            Ok(Err(e)) => {
                t.io_errors += 1;
                t.first_error.get_or_insert_with(|| e.to_string());
            }
            Err(_) => {
                t.io_errors += 1;
                t.first_error.get_or_insert_with(|| format!("no answer within {:?}", plan.timeout));
            }
        }
    }
    t
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[idx.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

/// CPU seconds (user + system) this process has used, from /proc/self/stat.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime) are at 11 and 12 after the command name.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

fn main() {
    let args = parse_args();
    let rt = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads).enable_all().build()
    }
    .expect("tokio runtime");
    let cpu_before = cpu_seconds();
    rt.block_on(run(args, cpu_before));
}

async fn run(args: Args, cpu_before: Option<f64>) {
    let req = build_request(&args);
    // Open every connection before the clock starts.
    let mut conns = Vec::with_capacity(args.concurrency);
    for _ in 0..args.concurrency {
        match Conn::connect(args.addr).await {
            Ok(s) => conns.push(Conn { addr: args.addr, stream: Some(s), buf: Vec::with_capacity(4096) }),
            Err(e) => fail(&format!("cannot connect to {}: {e}", args.addr)),
        }
    }
    // A closed-loop --count run has no warm-up; otherwise the warm-up comes on top of the run.
    let warmup = if args.rate.is_none() && args.count.is_some() { Duration::ZERO } else { args.warmup };
    let (interval, total) = match args.rate {
        Some(rate) => {
            let measured =
                args.count.unwrap_or_else(|| (rate * args.duration.expect("set").as_secs_f64()).round() as u64);
            (Some(Duration::from_secs_f64(1.0 / rate)), Some(measured + (rate * warmup.as_secs_f64()).round() as u64))
        }
        None => (None, args.count),
    };
    let start = Instant::now();
    let measure_from = start + warmup;
    let deadline =
        if args.rate.is_none() && args.count.is_none() { args.duration.map(|d| measure_from + d) } else { None };
    let plan = Arc::new(Plan {
        key_at: key_digits_at(&req),
        keys: AtomicU64::new(0),
        req: req.clone(),
        start,
        measure_from,
        deadline,
        total,
        interval,
        timeout: args.timeout,
        timeline: args.timeline,
        next: AtomicU64::new(0),
        last_done_ns: AtomicU64::new(0),
    });
    let mut tasks = Vec::with_capacity(conns.len());
    for conn in conns {
        tasks.push(tokio::spawn(worker(plan.clone(), conn)));
    }
    let cpu_before = if warmup.is_zero() {
        cpu_before
    } else {
        tokio::time::sleep_until(measure_from.into()).await;
        cpu_seconds()
    };
    let mut tally = Tally::default();
    for task in tasks {
        tally.merge(task.await.expect("worker panicked"));
    }
    let elapsed = Duration::from_nanos(plan.last_done_ns.load(Ordering::Relaxed)).max(Duration::from_millis(1));
    let cpu = match (cpu_before, cpu_seconds()) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    report(&args, &req, &mut tally, elapsed, cpu);
}

fn report(args: &Args, req: &[u8], t: &mut Tally, elapsed: Duration, cpu: Option<f64>) {
    if args.timeline {
        t.timeline.sort_unstable();
        eprintln!("second    202s   p50 ms   p99 ms   max ms");
        for chunk in t.timeline.chunk_by(|a, b| a.0 == b.0) {
            let mut l: Vec<u32> = chunk.iter().map(|&(_, v)| v).collect();
            l.sort_unstable();
            eprintln!(
                "{:>6} {:>7} {:>8.2} {:>8.2} {:>8.2}",
                chunk[0].0,
                l.len(),
                pct(&l, 50.0),
                pct(&l, 99.0),
                pct(&l, 100.0)
            );
        }
    }
    t.latencies.sort_unstable();
    t.send_lag.sort_unstable();
    t.service.sort_unstable();
    t.by_status.sort_unstable();
    let secs = elapsed.as_secs_f64();
    let errors = t.sent - t.accepted;
    let throughput = t.accepted as f64 / secs;
    let mode = if args.rate.is_some() { "open" } else { "closed" };
    let l = &t.latencies;
    let mean = if l.is_empty() { f64::NAN } else { l.iter().map(|&v| v as f64).sum::<f64>() / l.len() as f64 / 1000.0 };
    let (p50, p90, p99, p999, max) = (pct(l, 50.0), pct(l, 90.0), pct(l, 99.0), pct(l, 99.9), pct(l, 100.0));
    let mut error_parts: Vec<String> = t.by_status.iter().map(|(c, n)| format!("{c}={n}")).collect();
    if t.io_errors > 0 {
        error_parts.push(format!("io={}", t.io_errors));
    }
    if args.json {
        let num = |v: f64| {
            if v.is_finite() { format!("{v:.3}") } else { "null".into() }
        };
        let statuses: Vec<String> = t.by_status.iter().map(|(c, n)| format!("\"{c}\":{n}")).collect();
        let mut s = format!(
            "{{\"mode\":\"{mode}\",\"concurrency\":{},\"rate\":{},\"body_text_bytes\":{},\"request_bytes\":{},\"elapsed_s\":{},\"sent\":{},\"accepted\":{},\"errors\":{},\"errors_by_status\":{{{}}},\"io_errors\":{},\"throughput\":{},\"latency_ms\":{{\"mean\":{},\"p50\":{},\"p90\":{},\"p99\":{},\"p999\":{},\"max\":{}}}",
            args.concurrency,
            args.rate.map(num).unwrap_or("null".into()),
            args.size,
            req.len(),
            num(secs),
            t.sent,
            t.accepted,
            errors,
            statuses.join(","),
            t.io_errors,
            num(throughput),
            num(mean),
            num(p50),
            num(p90),
            num(p99),
            num(p999),
            num(max)
        );
        if args.rate.is_some() {
            s.push_str(&format!(
                ",\"service_ms\":{{\"p50\":{},\"p99\":{},\"max\":{}}},\"send_lag_ms\":{{\"p50\":{},\"p99\":{},\"max\":{}}}",
                num(pct(&t.service, 50.0)),
                num(pct(&t.service, 99.0)),
                num(pct(&t.service, 100.0)),
                num(pct(&t.send_lag, 50.0)),
                num(pct(&t.send_lag, 99.0)),
                num(pct(&t.send_lag, 100.0))
            ));
        }
        s.push_str(&format!(",\"loadgen_cpu_s\":{}}}", cpu.map(num).unwrap_or("null".into())));
        println!("{s}");
        return;
    }
    let target = match args.rate {
        Some(r) => format!("open loop at {r}/s over {} connections", args.concurrency),
        None => format!("closed loop, {} connections", args.concurrency),
    };
    println!(
        "loadgen: POST http://{}{} ({target}; {} B body text, {} B request)",
        args.host,
        args.path,
        args.size,
        req.len()
    );
    println!("  elapsed     {secs:.2} s");
    println!("  sent        {}", t.sent);
    println!("  202         {}", t.accepted);
    if errors == 0 {
        println!("  errors      0 (any answer other than 202 counts as an error)");
    } else {
        println!("  errors      {errors} (any answer other than 202 counts as an error): {}", error_parts.join(" "));
        if let Some(e) = &t.first_error {
            println!("  first error {e}");
        }
    }
    println!("  throughput  {throughput:.0} accepted/s");
    let origin = if args.rate.is_some() { "from scheduled send time" } else { "per request" };
    println!(
        "  latency     mean {mean:.2}  p50 {p50:.2}  p90 {p90:.2}  p99 {p99:.2}  p99.9 {p999:.2}  max {max:.2} ms ({origin}, 202s only)"
    );
    if args.rate.is_some() {
        println!(
            "  service     p50 {:.2}  p99 {:.2}  max {:.2} ms (from actual send); send lag p99 {:.2}  max {:.2} ms",
            pct(&t.service, 50.0),
            pct(&t.service, 99.0),
            pct(&t.service, 100.0),
            pct(&t.send_lag, 99.0),
            pct(&t.send_lag, 100.0)
        );
    }
    if let Some(cpu) = cpu {
        println!("  loadgen cpu {cpu:.2} s ({:.0}% of one core)", cpu / secs * 100.0);
    }
}
