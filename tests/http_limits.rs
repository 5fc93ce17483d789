//! The HTTP listeners under hostile clients: idle, slow-header and slow-body connections are
//! closed, connection caps hold (in all and per address), and a flood on the ingest port
//! leaves the admin port, SMTP and the providers' sockets working, even in a process with
//! few file descriptors.

mod support;

use std::time::{Duration, Instant};
use support::baton::{Baton, DEADLINE, KEY, config_text, message};
use support::process::BatonProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn outbox(dir: &std::path::Path) -> String {
    format!(
        "[providers.outbox]\ntype = \"file\"\ndir = \"{}\"\n\n[[routes]]\nname = \"default\"\nproviders = [\"outbox\"]\n",
        dir.join("outbox").display()
    )
}

async fn connect(base: &str) -> TcpStream {
    TcpStream::connect(base.trim_start_matches("http://")).await.expect("connect")
}

/// Reads until the server closes the connection (or the deadline passes); returns what came.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    loop {
        let left = DEADLINE.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return String::from_utf8_lossy(&got).into_owned(),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the server kept the connection open: {}", String::from_utf8_lossy(&got)),
        }
    }
}

#[tokio::test]
async fn idle_slow_header_and_slow_body_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let server = "http_header_timeout = \"500ms\"\nhttp_request_timeout = \"1s\"";
    let baton = Baton::start_with_server(server, "", &outbox(dir.path())).await;
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(connect(&baton.base).await);
    }
    let mut slow_header = connect(&baton.base).await;
    slow_header.write_all(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut slow_body = connect(&baton.base).await;
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
    );
    slow_body.write_all(head.as_bytes()).await.unwrap();

    for s in idle.iter_mut().chain([&mut slow_header]) {
        let got = read_until_closed(s).await;
        assert!(!got.contains("202"), "{got}");
    }
    let got = read_until_closed(&mut slow_body).await;
    assert!(got.starts_with("HTTP/1.1 408"), "a body that never completes ends in 408: {got}");
    let m = baton.metrics().await;
    assert_eq!(Baton::metric(&m, "baton_http_request_timeouts_total", &[("listener", "http")]), 1.0, "{m}");
    // Keep-alive: a connection that made one request is closed once idle too.
    let mut kept = connect(&baton.base).await;
    kept.write_all(b"GET /v1/messages/x HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let got = read_until_closed(&mut kept).await;
    assert!(got.starts_with("HTTP/1.1 401"), "{got}");
}

#[tokio::test]
async fn connection_caps_hold_in_all_and_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let server = "http_max_connections = 8\nhttp_max_connections_per_ip = 5\nhttp_header_timeout = \"30s\"";
    let baton = Baton::start_with_server(server, "", &outbox(dir.path())).await;
    // Five from 127.0.0.1: the sixth is refused per address.
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(connect(&baton.base).await);
    }
    let mut sixth = connect(&baton.base).await;
    let got = read_until_closed(&mut sixth).await;
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    assert!(got.contains("too_many_connections") && got.contains("Retry-After: 1"), "{got}");
    // From other loopback addresses up to the total of 8.
    for i in 2..5 {
        let local = format!("127.0.0.{i}:0").parse::<std::net::SocketAddr>().unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(local).unwrap();
        held.push(socket.connect(baton.base.trim_start_matches("http://").parse().unwrap()).await.unwrap());
    }
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.9:0".parse().unwrap()).unwrap();
    let mut ninth = socket.connect(baton.base.trim_start_matches("http://").parse().unwrap()).await.unwrap();
    let got = read_until_closed(&mut ninth).await;
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    // Admin has its own caps: still answering. Ingest works again once places are free.
    let r = baton.http.get(format!("{}/healthz", baton.admin)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let m = baton.metrics().await;
    let refused =
        |reason| Baton::metric(&m, "baton_http_connections_refused_total", &[("listener", "http"), ("reason", reason)]);
    assert_eq!((refused("per_ip"), refused("total")), (1.0, 1.0), "{m}");
    held.clear();
    let start = Instant::now();
    loop {
        let (code, _) = baton.post(Some(KEY), None, message(&["a@example.net"], "after").to_string()).await;
        if code == 202 {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "ingest never came back: {code}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A real process limited to 256 open files: 400 idle connections on the ingest port do not
/// stop the admin port, SMTP submission or delivery to the provider.
#[tokio::test]
async fn a_connection_flood_does_not_starve_admin_smtp_or_providers() {
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "[[clients]]\nname = \"app\"\napi_keys = [\"{KEY}\"]\nallowed_senders = [\"*@example.com\"]\n\
         smtp_users = [{{ username = \"app\", password = \"app-password\" }}]\n\n{}",
        outbox(dir.path())
    );
    let text = config_text(dir.path(), "", &body).replacen(
        "[server]\n",
        "[server]\nsmtp_listen = \"127.0.0.1:0\"\nhttp_max_connections = 150\nhttp_max_connections_per_ip = 150\nhttp_header_timeout = \"60s\"\n",
        1,
    );
    let config = dir.path().join("baton.toml");
    std::fs::write(&config, text).unwrap();
    let baton = BatonProcess::spawn_with_prefix(&config, &["prlimit", "--nofile=256:256", "--"]);
    let mut flood = Vec::new();
    for _ in 0..400 {
        match TcpStream::connect(baton.http.trim_start_matches("http://")).await {
            Ok(s) => flood.push(s),
            Err(_) => break,
        }
    }
    let http = reqwest::Client::new();
    let health = http.get(format!("{}/healthz", baton.admin)).send().await.expect("admin answers");
    assert_eq!(health.status().as_u16(), 200);

    // SMTP submission, then delivery through the provider, while the flood holds.
    let smtp = baton.smtp.clone().expect("smtp listening");
    let mut s = tokio::io::BufReader::new(TcpStream::connect(&smtp).await.unwrap());
    let mut transcript = reply(&mut s).await;
    for line in [
        "EHLO client.example".to_string(),
        format!("AUTH PLAIN {}", base64_plain("app", "app-password")),
        "MAIL FROM:<app@example.com>".into(),
        "RCPT TO:<alice@example.net>".into(),
        "DATA".into(),
        "Subject: during a flood\r\n\r\nhello\r\n.".into(),
    ] {
        s.get_mut().write_all(format!("{line}\r\n").as_bytes()).await.unwrap();
        transcript.push_str(&reply(&mut s).await);
    }
    let id = transcript
        .lines()
        .find_map(|l| l.split("queued as ").nth(1))
        .unwrap_or_else(|| panic!("not queued: {transcript}"))
        .trim()
        .to_string();
    let eml = dir.path().join("outbox").join(format!("{id}.eml"));
    let start = Instant::now();
    while !eml.exists() {
        assert!(start.elapsed() < DEADLINE, "not delivered during the flood: {transcript}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let m = http.get(format!("{}/metrics", baton.admin)).send().await.unwrap().text().await.unwrap();
    assert!(Baton::metric(&m, "baton_http_connections_refused_total", &[("listener", "http")]) > 0.0, "{m}");
    drop(flood);
}

/// One SMTP reply (all its lines), with a deadline.
async fn reply(s: &mut tokio::io::BufReader<TcpStream>) -> String {
    use tokio::io::AsyncBufReadExt;
    let mut all = String::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(DEADLINE, s.read_line(&mut line)).await.expect("SMTP reply in time").unwrap();
        assert!(n > 0, "connection closed after: {all}");
        all.push_str(&line);
        if line.as_bytes().get(3) == Some(&b' ') {
            return all;
        }
    }
}

fn base64_plain(user: &str, password: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"))
}

/// Large sends at once wait for room instead of all being read into memory together; every
/// one of them is still accepted.
#[tokio::test]
async fn large_bodies_in_flight_share_a_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    let server = "http_max_inflight_bytes = \"1MB\"\nmax_message_size = \"1MB\"";
    let baton = Baton::start_with_server(server, "", &outbox(dir.path())).await;
    let text = "x".repeat(600 * 1024);
    let sends = (0..6).map(|i| {
        let body = serde_json::json!({"from": "app@example.com", "to": ["a@example.net"], "subject": format!("big {i}"), "text": text});
        let b = &baton;
        async move { b.post(Some(KEY), None, body.to_string()).await }
    });
    for (code, body) in futures::future::join_all(sends).await {
        assert_eq!(code, 202, "{body}");
    }
}
