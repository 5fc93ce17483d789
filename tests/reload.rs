//! Live config reload: every trigger, invalid configs, routing changes under load, providers
//! added and removed, key rotation, certificate rotation, and health kept across reloads.

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::baton::{DEADLINE, KEY, OTHER_KEY, config_text, message, smtp_provider};
use support::mock_smtp::{MockSmtp, Stage};
use support::process::BatonProcess;

/// A Baton started from a config *file* (so it can be reloaded), in this process.
struct Reloadable {
    running: Option<baton::app::Running>,
    path: PathBuf,
    dir: PathBuf,
    base: String,
    admin: String,
    http: reqwest::Client,
    _tmp: tempfile::TempDir,
}

fn routes(providers: &[&str]) -> String {
    let list: Vec<String> = providers.iter().map(|p| format!("\"{p}\"")).collect();
    format!("\n[retry]\nschedule = [\"200ms\"]\n\n[[routes]]\nname = \"default\"\nproviders = [{}]\n", list.join(", "))
}

impl Reloadable {
    async fn start(body: &str, watch: bool) -> Reloadable {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let path = dir.join("baton.toml");
        std::fs::write(&path, Self::text(&dir, body, watch)).unwrap();
        let loaded = baton::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let running = baton::app::start(loaded).await.unwrap();
        Reloadable {
            base: format!("http://{}", running.http_addr),
            admin: format!("http://{}", running.admin_addr),
            running: Some(running),
            path,
            dir,
            http: reqwest::Client::new(),
            _tmp: tmp,
        }
    }

    fn text(dir: &Path, body: &str, watch: bool) -> String {
        let watch = if watch { "" } else { "watch_config = false\n" };
        config_text(dir, "", body).replace("shutdown_grace = \"5s\"\n", &format!("shutdown_grace = \"5s\"\n{watch}"))
    }

    fn write(&self, body: &str, watch: bool) {
        std::fs::write(&self.path, Self::text(&self.dir, body, watch)).unwrap();
    }

    async fn reload(&self) -> (u16, Value) {
        let r = self.http.post(format!("{}/admin/reload", self.admin)).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn send_as(&self, key: &str, subject: &str, from: &str) -> Result<String, u16> {
        let body = serde_json::json!({"from": from, "to": ["alice@example.net"], "subject": subject, "text": "t"});
        let r = self.http.post(format!("{}/v1/messages", self.base)).bearer_auth(key).json(&body).send().await.unwrap();
        let code = r.status().as_u16();
        if code != 202 {
            return Err(code);
        }
        Ok(r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string())
    }

    async fn send(&self, subject: &str) -> String {
        self.send_as(KEY, subject, "app@example.com").await.expect("accepted")
    }

    async fn wait_delivered(&self, id: &str) -> Value {
        let start = Instant::now();
        loop {
            let v: Value = self
                .http
                .get(format!("{}/v1/messages/{id}", self.base))
                .bearer_auth(KEY)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if v["status"] == "delivered" {
                return v;
            }
            assert!(start.elapsed() < DEADLINE, "{id} not delivered: {v:#}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self.http.get(format!("{}/metrics", self.admin)).send().await.unwrap().text().await.unwrap();
        support::baton::Baton::metric(&text, name, labels)
    }

    async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }
}

#[tokio::test]
async fn admin_reload_swaps_route_order() {
    let a = MockSmtp::start().await;
    let b = MockSmtp::start().await;
    let providers = format!("{}{}", smtp_provider("a", &a, ""), smtp_provider("b", &b, ""));
    let baton = Reloadable::start(&format!("{providers}{}", routes(&["a", "b"])), false).await;
    let id = baton.send("before").await;
    assert_eq!(baton.wait_delivered(&id).await["recipients"][0]["provider"], "a");

    baton.write(&format!("{providers}{}", routes(&["b", "a"])), false);
    let (code, body) = baton.reload().await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["summary"]["routes"]["changed"], serde_json::json!(["default"]));
    assert_eq!(body["summary"]["providers"]["changed"], serde_json::json!([]));
    let id = baton.send("after").await;
    assert_eq!(baton.wait_delivered(&id).await["recipients"][0]["provider"], "b");
    assert_eq!(baton.metric("baton_config_reloads_total", &[("result", "success")]).await, 1.0);
    baton.stop().await;
}

#[tokio::test]
async fn invalid_configs_change_nothing_and_name_the_line() {
    let a = MockSmtp::start().await;
    let providers = smtp_provider("a", &a, "");
    let good = format!("{providers}{}", routes(&["a"]));
    let baton = Reloadable::start(&good, false).await;
    let cases: Vec<(&str, String, &str)> = vec![
        ("syntax error", good.replace("[[routes]]", "[[routes]"), "syntax"),
        ("unknown provider", format!("{providers}{}", routes(&["a", "ghost"])), "unknown provider \"ghost\""),
        (
            "missing env var",
            good.replace(
                "tls = \"none\"",
                "tls = \"none\"\nusername = \"u\"\npassword = \"${BATON_TEST_MISSING_VAR_X}\"",
            ),
            "BATON_TEST_MISSING_VAR_X is not set",
        ),
    ];
    for (n, (name, text, needle)) in cases.into_iter().enumerate() {
        baton.write(&text, false);
        let (code, body) = baton.reload().await;
        assert_eq!(code, 422, "{name}: {body}");
        assert_eq!(body["error"]["code"], "invalid_config");
        let problems = body["error"]["problems"].as_array().unwrap();
        let found = problems.iter().find(|p| p["text"].as_str().unwrap().contains(needle));
        let p = found.unwrap_or_else(|| panic!("{name}: no problem mentions {needle:?}: {body:#}"));
        assert!(p["line"].as_u64().is_some(), "{name}: a line number: {p}");
        assert!(p["file"].as_str().unwrap().ends_with("baton.toml"));
        assert_eq!(baton.metric("baton_config_reloads_total", &[("result", "failure")]).await, (n + 1) as f64);
        // The old routing still works.
        let id = baton.send(&format!("after {name}")).await;
        assert_eq!(baton.wait_delivered(&id).await["recipients"][0]["provider"], "a");
    }
    baton.stop().await;
}

/// The reload alert follows the state (issue 18): a refused reload sets
/// `baton_config_last_reload_successful` to 0; putting the running file back is noticed by the
/// file watch, reloaded, logged and counted, and ends it. A reload of an unchanged file says so,
/// and a restart-only key set back to what the process runs with needs no restart.
#[tokio::test]
async fn a_refused_reload_ends_with_the_next_success_or_the_file_put_back() {
    let a = MockSmtp::start().await;
    let good = format!("{}{}", smtp_provider("a", &a, ""), routes(&["a"]));
    let baton = Reloadable::start(&good, true).await;
    let successful = || baton.metric("baton_config_last_reload_successful", &[]);
    assert_eq!(successful().await, 1.0);

    // Same file, reloaded: a success that changed nothing.
    let (code, body) = baton.reload().await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["summary"]["restart_required"], serde_json::json!([]), "{body}");
    assert_eq!(baton.metric("baton_config_reloads_total", &[("result", "success")]).await, 1.0);

    // A broken file: refused (the watch sees it too; wait until it was tried).
    baton.write(&good.replace("[[routes]]", "[[routes]"), true);
    let start = Instant::now();
    while successful().await != 0.0 {
        assert!(start.elapsed() < DEADLINE, "the refused reload did not set the gauge to 0");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The running file put back: the watch reloads it, and the refusal is over.
    baton.write(&good, true);
    let start = Instant::now();
    while successful().await != 1.0 {
        assert!(start.elapsed() < DEADLINE, "putting the running file back did not end the refusal");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(baton.metric("baton_config_reloads_total", &[("result", "success")]).await >= 2.0);

    // http_listen changed, then back to the address this process listens on.
    let bound = baton.base.trim_start_matches("http://").to_string();
    let elsewhere = Reloadable::text(&baton.dir, &good, true)
        .replace("http_listen = \"127.0.0.1:0\"", "http_listen = \"127.0.0.1:1\"");
    std::fs::write(&baton.path, &elsewhere).unwrap();
    let (code, body) = baton.reload().await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["summary"]["restart_required"], serde_json::json!(["server.http_listen"]), "{body}");
    std::fs::write(&baton.path, Reloadable::text(&baton.dir, &good, true)).unwrap();
    let (_, body) = baton.reload().await;
    assert_eq!(body["summary"]["restart_required"], serde_json::json!([]), "back to what runs: {body} ({bound})");
    baton.stop().await;
}

#[tokio::test]
async fn provider_added_then_removed_while_messages_wait_for_it() {
    let a = MockSmtp::start().await;
    a.set_reply(Stage::Mail, Some("451 4.3.0 down for maintenance".into()));
    let b = MockSmtp::start().await;
    let baton = Reloadable::start(&format!("{}{}", smtp_provider("a", &a, ""), routes(&["a"])), false).await;
    let mut waiting = Vec::new();
    for i in 0..5 {
        waiting.push(baton.send(&format!("stuck {i}")).await);
    }
    // a fails them (its circuit opens after three): they wait in the spool.
    a.wait_for_commands("MAIL", 3, DEADLINE).await;
    // Ops add provider b and remove a: the queued messages follow the new route.
    let (code, body) = {
        baton.write(&format!("{}{}", smtp_provider("b", &b, ""), routes(&["b"])), false);
        baton.reload().await
    };
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["summary"]["providers"]["added"], serde_json::json!(["b"]));
    assert_eq!(body["summary"]["providers"]["removed"], serde_json::json!(["a"]));
    for id in &waiting {
        assert_eq!(baton.wait_delivered(id).await["recipients"][0]["provider"], "b");
    }
    assert_eq!(b.message_count(), 5);
    assert_eq!(a.message_count(), 0);
    baton.stop().await;
}

#[tokio::test]
async fn client_keys_rotate_at_once() {
    let a = MockSmtp::start().await;
    let body = |key: &str| {
        format!(
            "[[clients]]\nname = \"app\"\napi_keys = [\"{key}\"]\nallowed_senders = [\"*@example.com\"]\n{}{}",
            smtp_provider("a", &a, ""),
            routes(&["a"])
        )
    };
    let baton = Reloadable::start(&body(KEY), false).await;
    assert!(baton.send_as(KEY, "old key", "app@example.com").await.is_ok());
    baton.write(&body(OTHER_KEY), false);
    let (code, summary) = baton.reload().await;
    assert_eq!(code, 200);
    assert_eq!(summary["summary"]["clients"]["changed"], serde_json::json!(["app"]));
    assert!(!summary.to_string().contains(OTHER_KEY), "keys never appear in the summary");
    assert_eq!(baton.send_as(KEY, "old key again", "app@example.com").await, Err(401));
    assert!(baton.send_as(OTHER_KEY, "new key", "app@example.com").await.is_ok());
    baton.stop().await;
}

#[tokio::test]
async fn suspended_provider_stays_suspended_across_a_reload() {
    let a = MockSmtp::start().await;
    a.set_reply(Stage::EndOfData, Some("554 5.7.1 Your account has been suspended".into()));
    let b = MockSmtp::start().await;
    let providers = format!(
        "{}{}",
        smtp_provider("a", &a, "health = { account_cooldown = \"1h\", probe_interval = \"1h\" }"),
        smtp_provider("b", &b, "")
    );
    let baton = Reloadable::start(&format!("{providers}{}", routes(&["a", "b"])), false).await;
    let id = baton.send("suspends a").await;
    assert_eq!(baton.wait_delivered(&id).await["recipients"][0]["provider"], "b");
    let state = |v: &Value, name: &str| {
        v["providers"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap()["state"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let providers_now = || async {
        baton.http.get(format!("{}/admin/providers", baton.admin)).send().await.unwrap().json::<Value>().await.unwrap()
    };
    assert_eq!(state(&providers_now().await, "a"), "suspended");
    // An unrelated change (retry schedule): a's health is kept.
    baton.write(&format!("{providers}{}", routes(&["a", "b"]).replace("200ms", "300ms")), false);
    assert_eq!(baton.reload().await.0, 200);
    assert_eq!(state(&providers_now().await, "a"), "suspended");
    let id = baton.send("still skipped").await;
    let v = baton.wait_delivered(&id).await;
    assert_eq!(v["attempts"].as_array().unwrap().len(), 1, "a not tried: {v:#}");
    // Changing a's connection settings starts it fresh.
    let changed =
        providers.replace(&format!("port = {}", a.port()), &format!("port = {}\nmax_connections = 4", a.port()));
    baton.write(&format!("{changed}{}", routes(&["a", "b"])), false);
    let (code, body) = baton.reload().await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(state(&providers_now().await, "a"), "healthy");
    baton.stop().await;
}

#[tokio::test]
async fn route_swap_under_load_loses_and_duplicates_nothing() {
    let a = MockSmtp::start().await;
    let b = MockSmtp::start().await;
    let providers = format!("{}{}", smtp_provider("a", &a, ""), smtp_provider("b", &b, ""));
    let baton = std::sync::Arc::new(Reloadable::start(&format!("{providers}{}", routes(&["a", "b"])), false).await);
    let sender = {
        let baton = baton.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..150 {
                ids.push(baton.send(&format!("load {i}")).await);
            }
            ids
        })
    };
    for order in [["b", "a"], ["a", "b"], ["b", "a"]] {
        a.wait_for_messages(1, DEADLINE).await;
        baton.write(&format!("{providers}{}", routes(&order)), false);
        assert_eq!(baton.reload().await.0, 200);
    }
    let ids = sender.await.unwrap();
    for id in &ids {
        baton.wait_delivered(id).await;
    }
    let mut subjects: Vec<String> =
        a.messages().iter().chain(b.messages().iter()).map(|m| m.header("Subject").unwrap()).collect();
    assert_eq!(subjects.len(), 150, "no message lost or sent twice");
    subjects.sort();
    subjects.dedup();
    assert_eq!(subjects.len(), 150);
    assert!(b.message_count() > 0, "the new order was used");
}

#[tokio::test]
async fn file_watch_reloads_on_edit_replace_and_symlink_swap() {
    let a = MockSmtp::start().await;
    let b = MockSmtp::start().await;
    let providers = format!("{}{}", smtp_provider("a", &a, ""), smtp_provider("b", &b, ""));
    let baton = Reloadable::start(&format!("{providers}{}", routes(&["a"])), true).await;
    let wait_reloads = |n: f64| {
        let baton = &baton;
        async move {
            let start = Instant::now();
            while baton.metric("baton_config_reloads_total", &[("result", "success")]).await < n {
                assert!(start.elapsed() < DEADLINE, "no reload #{n} from the file watch");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    // 1. Edited in place.
    baton.write(&format!("{providers}{}", routes(&["b"])), true);
    wait_reloads(1.0).await;
    let id = baton.send("edited").await;
    assert_eq!(baton.wait_delivered(&id).await["recipients"][0]["provider"], "b");
    // 2. Replaced by rename, as editors do.
    let tmp = baton.dir.join(".baton.toml.swp");
    std::fs::write(&tmp, Reloadable::text(&baton.dir, &format!("{providers}{}", routes(&["a"])), true)).unwrap();
    std::fs::rename(&tmp, &baton.path).unwrap();
    wait_reloads(2.0).await;
    let id = baton.send("replaced").await;
    assert_eq!(baton.wait_delivered(&id).await["recipients"][0]["provider"], "a");
    baton.stop().await;

    // 3. Kubernetes ConfigMap: baton.toml -> ..data/baton.toml, ..data -> ..v1, swapped to ..v2.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let text = |order: &[&str]| Reloadable::text(d, &format!("{providers}{}", routes(order)), true);
    std::fs::create_dir(d.join("..v1")).unwrap();
    std::fs::write(d.join("..v1/baton.toml"), text(&["a"])).unwrap();
    std::os::unix::fs::symlink("..v1", d.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/baton.toml", d.join("baton.toml")).unwrap();
    let loaded = baton::config::load(&d.join("baton.toml")).unwrap();
    let running = baton::app::start(loaded).await.unwrap();
    std::fs::create_dir(d.join("..v2")).unwrap();
    std::fs::write(d.join("..v2/baton.toml"), text(&["b"])).unwrap();
    std::os::unix::fs::symlink("..v2", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    let http = reqwest::Client::new();
    let start = Instant::now();
    loop {
        let m = http.get(format!("http://{}/metrics", running.admin_addr)).send().await.unwrap().text().await.unwrap();
        if support::baton::Baton::metric(&m, "baton_config_reloads_total", &[("result", "success")]) >= 1.0 {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "symlink swap not noticed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.stop().await;
}

#[tokio::test]
async fn sighup_reloads_the_running_binary() {
    let a = MockSmtp::start().await;
    let b = MockSmtp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.toml");
    let providers = format!("{}{}", smtp_provider("a", &a, ""), smtp_provider("b", &b, ""));
    std::fs::write(&path, Reloadable::text(dir.path(), &format!("{providers}{}", routes(&["a"])), false)).unwrap();
    let baton = BatonProcess::spawn(&path);
    std::fs::write(&path, Reloadable::text(dir.path(), &format!("{providers}{}", routes(&["b"])), false)).unwrap();
    baton.signal("HUP");
    let http = reqwest::Client::new();
    let start = Instant::now();
    loop {
        let m = http.get(format!("{}/metrics", baton.admin)).send().await.unwrap().text().await.unwrap();
        if support::baton::Baton::metric(&m, "baton_config_reloads_total", &[("result", "success")]) >= 1.0 {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "SIGHUP did not reload");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = http
        .post(format!("{}/v1/messages", baton.http))
        .bearer_auth(KEY)
        .json(&message(&["x@example.net"], "after hup"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let got = b.wait_for_messages(1, DEADLINE).await;
    assert_eq!(got[0].header("Subject").as_deref(), Some("after hup"));
    // A second SIGHUP with the file unchanged: logged too. Each reload is one JSON line with
    // plain fields (names joined by commas), never Rust debug text.
    baton.signal("HUP");
    let start = Instant::now();
    let mut lines = baton.log_lines();
    let reloads = |lines: &[String]| -> Vec<Value> {
        lines
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["message"] == "config reloaded")
            .collect()
    };
    while reloads(&lines).len() < 2 {
        assert!(start.elapsed() < DEADLINE, "second SIGHUP not logged:\n{}", lines.join("\n"));
        tokio::time::sleep(Duration::from_millis(50)).await;
        lines.extend(baton.log_lines());
    }
    let r = reloads(&lines);
    assert_eq!(
        (r[0]["changed"].as_bool(), r[0]["routes_changed"].as_str()),
        (Some(true), Some("default")),
        "{:?}",
        r[0]
    );
    assert_eq!((r[1]["changed"].as_bool(), r[1]["routes_changed"].as_str()), (Some(false), Some("")), "{:?}", r[1]);
    for line in &r {
        assert!(!line.to_string().contains("Changes {"), "debug text in {line}");
    }
}

/// Opens an SMTP session, upgrades it with STARTTLS trusting only `ca_pem`, and says whether
/// the handshake succeeded.
async fn starttls_trusting(addr: std::net::SocketAddr, ca_pem: &str) -> bool {
    use rustls_pki_types::pem::PemObject;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut stream = BufReader::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    let mut line = String::new();
    let mut read_reply = async |stream: &mut BufReader<tokio::net::TcpStream>| loop {
        line.clear();
        stream.read_line(&mut line).await.unwrap();
        if line.len() < 4 || line.as_bytes()[3] == b' ' {
            return line.clone();
        }
    };
    assert!(read_reply(&mut stream).await.starts_with("220"));
    stream.get_mut().write_all(b"EHLO client.example.com\r\n").await.unwrap();
    assert!(read_reply(&mut stream).await.starts_with("250"));
    stream.get_mut().write_all(b"STARTTLS\r\n").await.unwrap();
    assert!(read_reply(&mut stream).await.starts_with("220"));
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = tokio_rustls::rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, stream.into_inner()).await.is_ok()
}

#[tokio::test]
async fn rotated_certificate_is_used_by_the_next_starttls() {
    let first = support::certs::TestCert::generate();
    let second = support::certs::TestCert::generate();
    let a = MockSmtp::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    std::fs::copy(&first.cert_path, &cert).unwrap();
    std::fs::copy(&first.key_path, &key).unwrap();
    let tls = format!(
        "smtp_listen = \"127.0.0.1:0\"\ntls = {{ cert = \"{}\", key = \"{}\" }}\n",
        cert.display(),
        key.display()
    );
    let body = format!("{}{}", smtp_provider("a", &a, ""), routes(&["a"]));
    // The harness writes [server]; add the SMTP listener and TLS to it.
    let with_tls = |dir: &Path| Reloadable::text(dir, &body, false).replace("[server]\n", &format!("[server]\n{tls}"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.toml");
    std::fs::write(&path, with_tls(dir.path())).unwrap();
    let running = baton::app::start(baton::config::load(&path).unwrap()).await.unwrap();
    let smtp = running.smtp_addr.expect("smtp listener");
    let admin = format!("http://{}/admin/reload", running.admin_addr);
    assert!(starttls_trusting(smtp, &first.ca_pem).await, "first certificate served");
    assert!(!starttls_trusting(smtp, &second.ca_pem).await);

    // Rotate the files in place and reload: new handshakes see the new certificate.
    std::fs::copy(&second.cert_path, &cert).unwrap();
    std::fs::copy(&second.key_path, &key).unwrap();
    let r = reqwest::Client::new().post(&admin).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(starttls_trusting(smtp, &second.ca_pem).await, "rotated certificate served");
    assert!(!starttls_trusting(smtp, &first.ca_pem).await);
    running.stop().await;
}

/// A minimal SMTP client over a raw socket: sends a line, returns the (last line of the) reply.
struct Smtp {
    stream: tokio::io::BufReader<tokio::net::TcpStream>,
}

impl Smtp {
    async fn connect(addr: std::net::SocketAddr) -> Smtp {
        let mut s = Smtp { stream: tokio::io::BufReader::new(tokio::net::TcpStream::connect(addr).await.unwrap()) };
        assert!(s.reply().await.starts_with("220"));
        s
    }
    async fn reply(&mut self) -> String {
        use tokio::io::AsyncBufReadExt;
        loop {
            let mut line = String::new();
            self.stream.read_line(&mut line).await.unwrap();
            if line.len() < 4 || line.as_bytes()[3] == b' ' {
                return line;
            }
        }
    }
    async fn cmd(&mut self, line: &str) -> String {
        use tokio::io::AsyncWriteExt;
        self.stream.get_mut().write_all(format!("{line}\r\n").as_bytes()).await.unwrap();
        self.reply().await
    }
    async fn login(addr: std::net::SocketAddr, user: &str, password: &str) -> Smtp {
        use base64::Engine;
        let mut s = Smtp::connect(addr).await;
        assert!(s.cmd("EHLO client.example.com").await.starts_with("250"));
        let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        let r = s.cmd(&format!("AUTH PLAIN {token}")).await;
        assert!(r.starts_with("235"), "{r}");
        s
    }
    async fn send(&mut self, subject: &str) -> String {
        let r = self.cmd("MAIL FROM:<app@example.com>").await;
        if !r.starts_with("250") {
            return r;
        }
        assert!(self.cmd("RCPT TO:<alice@example.net>").await.starts_with("250"));
        assert!(self.cmd("DATA").await.starts_with("354"));
        self.cmd(&format!("Subject: {subject}\r\n\r\nhello\r\n.")).await
    }
}

#[tokio::test]
async fn open_smtp_sessions_lose_a_removed_login_at_their_next_transaction() {
    let a = MockSmtp::start().await;
    let users = |list: &str| {
        format!(
            "[[clients]]\nname = \"app\"\napi_keys = [\"{KEY}\"]\nallowed_senders = [\"*@example.com\"]\nsmtp_users = [{list}]\n{}{}",
            smtp_provider("a", &a, ""),
            routes(&["a"])
        )
    };
    let both = users(
        "{ username = \"keep\", password = \"keep-password\" }, { username = \"drop\", password = \"drop-password\" }",
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.toml");
    let text = |body: &str| {
        Reloadable::text(dir.path(), body, false).replace("[server]\n", "[server]\nsmtp_listen = \"127.0.0.1:0\"\n")
    };
    std::fs::write(&path, text(&both)).unwrap();
    let running = baton::app::start(baton::config::load(&path).unwrap()).await.unwrap();
    let smtp = running.smtp_addr.unwrap();
    let mut keep = Smtp::login(smtp, "keep", "keep-password").await;
    let mut drop = Smtp::login(smtp, "drop", "drop-password").await;
    assert!(keep.send("keep 1").await.starts_with("250"));
    assert!(drop.send("drop 1").await.starts_with("250"));

    std::fs::write(&path, text(&users("{ username = \"keep\", password = \"keep-password\" }"))).unwrap();
    let r = reqwest::Client::new().post(format!("http://{}/admin/reload", running.admin_addr)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);

    assert!(keep.send("keep 2").await.starts_with("250"), "a login that still exists keeps working");
    let refused = drop.send("drop 2").await;
    assert!(refused.starts_with("530"), "the removed login is refused at the next MAIL: {refused}");
    a.wait_for_messages(3, DEADLINE).await;
    running.stop().await;
}
