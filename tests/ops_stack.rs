//! The ops stack outside Docker: a real Prometheus on the host example config
//! (grafana/prometheus/host.yml) scrapes a real Baton and loads the alert rules; the dashboard
//! loader (grafana/load-dashboard.py) sends what Grafana's HTTP API expects; the provisioning
//! snippets point at files that exist.

mod support;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::baton::{Baton, DEADLINE, message};
use support::mock_http::{MockHttp, Reply};
use support::prometheus::Prometheus;

const HOST_CONFIG: &str = "grafana/prometheus/host.yml";
const RULES: &str = "grafana/alerts/baton-rules.yml";
const DASHBOARD: &str = "grafana/dashboards/baton.json";
const LOADER: &str = "grafana/load-dashboard.py";
const HOST_DASHBOARDS: &str = "grafana/provisioning/host/baton-dashboards.yaml";
const HOST_DATASOURCE: &str = "grafana/provisioning/host/baton-prometheus.yaml";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The value of the first `key:` line of a YAML file, unquoted.
fn yaml_value(text: &str, key: &str) -> String {
    text.lines()
        .map(|l| l.trim_start().trim_start_matches("- "))
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().trim_matches(['"', '\'']).to_string())
        .unwrap_or_else(|| panic!("no {key}: in\n{text}"))
}

/// host.yml as a test runs it: the target is this Baton's admin listener, the rule file is
/// found from the temp dir Prometheus runs in, and scrapes and evaluations come every second
/// instead of every 15 (so the test waits seconds, not a minute). Nothing else is changed.
fn host_config_for(admin: &str) -> String {
    let text = read(HOST_CONFIG);
    let rule_file = "../alerts/baton-rules.yml";
    assert!(text.contains(r#"targets: ["127.0.0.1:9090"]"#), "{HOST_CONFIG} scrapes Baton's default admin_listen");
    assert!(text.contains(&format!("  - {rule_file}\n")), "{HOST_CONFIG} loads the rules relative to itself");
    let rules = repo(HOST_CONFIG).parent().unwrap().join(rule_file);
    assert!(rules.exists(), "{HOST_CONFIG}: {} exists", rules.display());
    assert_eq!(text.matches("15s").count(), 2, "scrape and evaluation intervals");
    text.replace("127.0.0.1:9090", admin).replace(rule_file, &repo(RULES).display().to_string()).replace("15s", "1s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_prometheus_scrapes_baton_and_loads_the_alert_rules() {
    let dir = tempfile::tempdir().unwrap();
    let baton = Baton::start(&format!(
        "[providers.outbox]\ntype = \"file\"\ndir = \"{}\"\n\n[[routes]]\nname = \"default\"\nproviders = [\"outbox\"]\n",
        dir.path().display()
    ))
    .await;
    let id = baton.send(message(&["alice@example.net"], "scraped")).await;
    baton.wait_final(&id).await;
    let admin = baton.admin.trim_start_matches("http://").to_string();
    let prometheus = Prometheus::start(&host_config_for(&admin)).await;

    let target = prometheus
        .wait("the Baton target up", DEADLINE, || async {
            let targets = prometheus.api("targets").await;
            let baton = targets["activeTargets"].as_array()?.iter().find(|t| t["labels"]["job"] == "baton")?.clone();
            (baton["health"] == "up").then_some(baton)
        })
        .await;
    assert_eq!(target["scrapeUrl"], format!("http://{admin}/metrics"), "{target:#}");

    let query = "baton_messages_completed_total";
    let series = prometheus
        .wait("a baton_* series queryable", DEADLINE, || async {
            let data = prometheus.api(&format!("query?query={query}")).await;
            let series = data["result"].as_array()?.clone();
            series.iter().any(|s| s["value"][1].as_str().is_some_and(|v| v != "0")).then_some(series)
        })
        .await;
    assert!(series.iter().all(|s| s["metric"]["instance"] == admin.as_str()), "{series:#?}");

    let alerts = read(RULES).lines().filter(|l| l.trim_start().starts_with("- alert:")).count();
    assert!(alerts > 5, "alerts in {RULES}: {alerts}");
    let rules = prometheus
        .wait("every alert rule loaded and evaluated", DEADLINE, || async {
            let data = prometheus.api("rules").await;
            let group = data["groups"].as_array()?.iter().find(|g| g["name"] == "baton")?.clone();
            let rules = group["rules"].as_array()?.clone();
            (rules.len() == alerts && rules.iter().all(|r| r["health"] == "ok")).then_some(rules)
        })
        .await;
    assert!(rules.iter().all(|r| r["type"] == "alerting"), "{rules:#?}");
    assert!(rules.iter().any(|r| r["name"] == "BatonProviderSuspended"), "{rules:#?}");
}

/// Runs the loader against `grafana` (a mock) with `env`; returns (success, stdout, stderr).
async fn run_loader(grafana: &str, env: &[(&str, &str)], args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new("python3")
        .arg(repo(LOADER))
        .args(args)
        .env_remove("GRAFANA_TOKEN")
        .env_remove("GRAFANA_USER")
        .env_remove("GRAFANA_PASSWORD")
        .env("GRAFANA_URL", grafana)
        .envs(env.iter().copied())
        .output();
    let output = tokio::time::timeout(DEADLINE, output).await.expect("loader finishes").expect("python3 runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (output.status.success(), text(&output.stdout), text(&output.stderr))
}

#[tokio::test]
async fn the_loader_posts_the_dashboard_as_grafana_expects() {
    let grafana = MockHttp::start().await;
    let answer = json!({"id": 7, "uid": "baton", "url": "/d/baton/baton", "status": "success", "version": 3});
    grafana.reply("/api/dashboards/db", Reply::json(200, answer));
    let env = [("GRAFANA_TOKEN", "glsa_test_token")];
    let args = ["--datasource", "Baton Prometheus", "--folder-uid", "ops"];
    let (ok, out, err) = run_loader(&grafana.url(), &env, &args).await;
    assert!(ok, "loader failed: {out}{err}");
    assert_eq!(out.trim(), format!("dashboard loaded: {}/d/baton/baton (version 3)", grafana.url()));

    let sent = grafana.wait_for_requests("/api/dashboards/db", 1, Duration::from_secs(5)).await;
    let request = &sent[0];
    assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/api/dashboards/db"));
    assert_eq!(request.header("authorization"), Some("Bearer glsa_test_token"));
    assert_eq!(request.header("content-type"), Some("application/json"));
    let body = request.json();
    assert_eq!(body["overwrite"], true);
    assert_eq!(body["folderUid"], "ops");
    // The dashboard as it is in the repository, with no numeric id (the uid decides what is
    // replaced) and the chosen data source as the variable's current value.
    let mut expected: Value = serde_json::from_str(&read(DASHBOARD)).unwrap();
    expected["id"] = Value::Null;
    let variable =
        expected["templating"]["list"].as_array_mut().unwrap().iter_mut().find(|v| v["type"] == "datasource");
    variable.expect("a data source variable")["current"] =
        json!({"selected": true, "text": "Baton Prometheus", "value": "Baton Prometheus"});
    assert_eq!(body["dashboard"], expected);
}

#[tokio::test]
async fn the_loader_reports_a_refusal_and_takes_a_user_and_password() {
    let grafana = MockHttp::start().await;
    grafana.reply("/api/dashboards/db", Reply::json(401, json!({"message": "invalid username or password"})));
    let env = [("GRAFANA_USER", "admin"), ("GRAFANA_PASSWORD", "s3cret")];
    let (ok, out, err) = run_loader(&grafana.url(), &env, &[]).await;
    assert!(!ok, "a refusal is a failure: {out}");
    assert!(err.contains("HTTP 401") && err.contains("invalid username or password"), "{err}");
    let request = &grafana.requests_to("/api/dashboards/db")[0];
    // base64("admin:s3cret")
    assert_eq!(request.header("authorization"), Some("Basic YWRtaW46czNjcmV0"));
    let body = request.json();
    assert_eq!(body["dashboard"]["uid"], "baton");
    assert!(body.get("folderUid").is_none(), "{body}");

    let (ok, _, err) = run_loader(&grafana.url(), &[], &[]).await;
    assert!(!ok && err.contains("GRAFANA_TOKEN"), "no credentials: says what to set: {err}");
    assert_eq!(grafana.requests_to("/api/dashboards/db").len(), 1, "nothing sent without credentials");
}

/// `install -D -m 0644 SRC DEST` lines in a snippet's comments, as (SRC, DEST).
fn installs(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.trim_start_matches(['#', ' ']).strip_prefix("sudo install -D -m 0644 "))
        .map(|rest| {
            let (src, dest) = rest.split_once(' ').expect("SRC DEST");
            (src.to_string(), dest.trim().to_string())
        })
        .collect()
}

#[test]
fn the_host_provisioning_snippets_point_at_real_files() {
    let text = read(HOST_DASHBOARDS);
    let path = yaml_value(&text, "path");
    let copies = installs(&text);
    for (src, _) in &copies {
        assert!(repo(src).is_file(), "{HOST_DASHBOARDS} installs {src}, which exists");
    }
    let dest = |src: &str| copies.iter().find(|(s, _)| s == src).map(|(_, d)| d.clone());
    assert_eq!(dest(DASHBOARD), Some(format!("{path}/baton.json")), "the dashboard goes where the provider reads");
    let dashboards = dest(HOST_DASHBOARDS).expect("installs itself");
    assert!(dashboards.starts_with("/etc/grafana/provisioning/dashboards/"), "{dashboards}");
    let datasources = dest(HOST_DATASOURCE).expect("installs the data source");
    assert!(datasources.starts_with("/etc/grafana/provisioning/datasources/"), "{datasources}");

    // The data source is the Prometheus host.yml says to start.
    let url = yaml_value(&read(HOST_DATASOURCE), "url");
    let listen = url.trim_start_matches("http://");
    assert!(read(HOST_CONFIG).contains(&format!("--web.listen-address={listen}")), "{url}");
}

#[test]
fn the_compose_provisioning_points_at_real_files() {
    let compose = read("grafana/compose.yaml");
    // Every file or directory mounted into the containers exists.
    let mounts: Vec<(String, String)> = compose
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- ./"))
        .map(|m| {
            let mut parts = m.split(':');
            (format!("grafana/{}", parts.next().unwrap()), parts.next().unwrap().to_string())
        })
        .collect();
    assert!(mounts.len() >= 4, "{mounts:?}");
    for (src, _) in &mounts {
        assert!(repo(src).exists(), "compose.yaml mounts {src}, which exists");
    }
    let host_path = |container: &str| {
        mounts
            .iter()
            .find_map(|(src, dst)| container.strip_prefix(dst.as_str()).map(|rest| format!("{src}{rest}")))
            .unwrap_or_else(|| panic!("{container} is not mounted"))
    };
    let dashboards = yaml_value(&read("grafana/provisioning/dashboards/baton.yaml"), "path");
    assert!(repo(&host_path(&dashboards)).join("baton.json").is_file(), "{dashboards}");
    let home = yaml_value(&compose, "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH");
    assert!(repo(&host_path(&home)).is_file(), "{home}");
    let prometheus = read("grafana/prometheus/prometheus.yml");
    let rules: Vec<&str> =
        prometheus.lines().filter_map(|l| l.trim().strip_prefix("- /etc/prometheus/rules/")).collect();
    assert_eq!(rules, ["baton-rules.yml"]);
    assert_eq!(host_path("/etc/prometheus/rules/baton-rules.yml"), RULES);
}
