//! Observability: the Grafana dashboard and the alert rules only use metrics Baton exports; the
//! metric values after scripted scenarios (a failover increments exactly the right series);
//! and the JSON log lines of a failover, without secrets or message content.

mod support;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};
use support::baton::{Baton, DEADLINE, KEY, message, smtp_provider};
use support::mock_smtp::{MockSmtp, Stage};
use support::process::BatonProcess;

const DASHBOARD: &str = "grafana/dashboards/baton.json";
const RULES: &str = "grafana/alerts/baton-rules.yml";
const RULE_TESTS: &str = "grafana/alerts/baton-rules.test.yml";

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

// ---- PromQL in the dashboard and the rule file -------------------------------------------------

/// Every PromQL expression of the dashboard: panel targets (also inside collapsed rows),
/// annotation queries and template variable queries.
fn dashboard_exprs(dashboard: &Value) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("expr" | "definition" | "query", Value::String(s)) => out.push(s.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(list) => list.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, &mut out);
    // The datasource variable's query is a plugin type, not PromQL.
    out.retain(|e| e != "prometheus");
    out
}

/// The value of every `key:` in a YAML file: plain or quoted on the same line, or a `|` / `>`
/// block scalar on the following, more indented lines.
fn yaml_values(text: &str, key: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let prefix = format!("{key}:");
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start().trim_start_matches("- ");
        let Some(rest) = trimmed.strip_prefix(&prefix) else { continue };
        let rest = rest.trim();
        if rest.starts_with('|') || rest.starts_with('>') {
            let indent = line.len() - line.trim_start().len();
            let block: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
                .map(|l| l.trim())
                .collect();
            out.push(block.join("\n"));
        } else {
            out.push(rest.trim_matches(|c| c == '\'' || c == '"').to_string());
        }
    }
    out
}

/// Metric names (`baton_*`, `process_*`) in a PromQL expression. String literals (label values,
/// regexes) are skipped; a name is an identifier not preceded by an identifier character.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if ident(c) && !c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            // `$__rate_interval` and other Grafana variables are not metrics.
            let variable = start > 0 && chars[start - 1] == '$';
            if !variable && (word.starts_with("baton_") || word.starts_with("process_")) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

struct Used {
    dashboard: BTreeSet<String>,
    rules: BTreeSet<String>,
    rule_tests: BTreeSet<String>,
}

fn used_metrics() -> Used {
    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).expect("dashboard is valid JSON");
    let exprs = dashboard_exprs(&dashboard);
    assert!(exprs.len() > 30, "expressions found in the dashboard: {exprs:#?}");
    let mut dash = BTreeSet::new();
    for e in &exprs {
        let names = metric_names(e);
        assert!(!names.is_empty() || e.contains("ALERTS"), "no Baton metric in dashboard expression {e:?}");
        dash.extend(names);
    }
    let rules_text = read(RULES);
    let rule_exprs = yaml_values(&rules_text, "expr");
    assert_eq!(rule_exprs.len(), yaml_values(&rules_text, "alert").len(), "one expr per alert");
    let mut rules = BTreeSet::new();
    for e in &rule_exprs {
        let names = metric_names(e);
        assert!(!names.is_empty() || e.starts_with("up{"), "no Baton metric in rule expression {e:?}");
        rules.extend(names);
    }
    // The promtool unit tests feed series by name: they must be real names too.
    let mut rule_tests = BTreeSet::new();
    for series in yaml_values(&read(RULE_TESTS), "series") {
        rule_tests.extend(metric_names(series.split('{').next().unwrap_or_default()));
    }
    Used { dashboard: dash, rules, rule_tests }
}

#[test]
fn metric_name_extraction() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le) (rate(baton_spool_commit_duration_seconds_bucket{instance=~"$instance", x="baton_not_a_metric"}[$__rate_interval]))) / process_open_fds"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["baton_spool_commit_duration_seconds_bucket", "process_open_fds"]
    );
    let yaml = "  - alert: A\n    expr: baton_a == 1\n  - alert: B\n    expr: |\n      sum(baton_b)\n        > 2\n    for: 1m\n";
    assert_eq!(yaml_values(yaml, "expr"), ["baton_a == 1", "sum(baton_b)\n> 2"]);
}

#[test]
fn dashboard_is_well_formed() {
    let d: Value = serde_json::from_str(&read(DASHBOARD)).expect("valid JSON");
    assert_eq!(d["uid"], "baton");
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36, "schemaVersion");
    let vars = d["templating"]["list"].as_array().unwrap();
    let ds = vars.iter().find(|v| v["name"] == "datasource").expect("datasource variable");
    assert_eq!((ds["type"].as_str(), ds["query"].as_str()), (Some("datasource"), Some("prometheus")));
    let panels = d["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    let mut types = BTreeSet::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate panel id: {p}");
        types.insert(p["type"].as_str().unwrap().to_string());
        let g = &p["gridPos"];
        assert!(g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24, "panel wider than the grid: {}", p["title"]);
        if p["type"] == "row" {
            continue;
        }
        assert!(p["title"].as_str().is_some_and(|t| !t.is_empty()));
        assert_eq!(p["datasource"]["uid"], "${datasource}", "panel {} uses the datasource variable", p["title"]);
        for t in p["targets"].as_array().unwrap() {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "target of {}", p["title"]);
            assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()), "target of {} has an expr", p["title"]);
        }
    }
    for want in ["row", "timeseries", "stat", "state-timeline", "table"] {
        assert!(types.contains(want), "a {want} panel");
    }
    let annotations = d["annotations"]["list"].as_array().unwrap();
    assert!(
        annotations
            .iter()
            .any(|a| a["expr"].as_str().is_some_and(|e| e.contains("baton_provider_state_changes_total"))),
        "annotations for provider state changes"
    );
    // The issue's panel list, by the metric each one needs.
    let used = used_metrics().dashboard;
    for name in [
        "baton_messages_received_total",
        "baton_recipients_total",
        "baton_delivery_attempts_total",
        "baton_failovers_total",
        "baton_provider_state",
        "baton_provider_request_duration_seconds_bucket",
        "baton_queue_messages",
        "baton_queue_oldest_message_age_seconds",
        "baton_ingest_rejections_total",
        "baton_spool_commit_duration_seconds_bucket",
        "baton_spool_commit_batch_size_bucket",
        "baton_config_reloads_total",
        "baton_provider_bounce_rate",
        "baton_provider_bounce_rate_warn",
        "baton_provider_complaint_rate",
        "baton_provider_complaint_rate_warn",
    ] {
        assert!(used.contains(name), "the dashboard shows {name}");
    }
}

#[test]
fn every_alert_has_a_summary_and_a_description() {
    let text = read(RULES);
    let alerts = yaml_values(&text, "alert");
    for want in [
        "BatonProviderSuspended",
        "BatonProviderCircuitOpen",
        "BatonRouteUnavailable",
        "BatonFailoverRateHigh",
        "BatonQueueStuck",
        "BatonSpoolNearlyFull",
        "BatonConfigReloadFailed",
        "BatonDeliveryFailures",
        "BatonProviderBounceRateHigh",
        "BatonProviderComplaintRateHigh",
    ] {
        assert!(alerts.iter().any(|a| a == want), "alert {want} in {RULES}");
    }
    let blocks: Vec<&str> = text.split("- alert:").skip(1).collect();
    assert_eq!(blocks.len(), alerts.len());
    for (name, block) in alerts.iter().zip(blocks) {
        for key in ["expr:", "severity:", "summary:", "description:"] {
            assert!(block.contains(key), "alert {name} has {key}");
        }
        let description = yaml_values(block, "description").join(" ");
        assert!(description.len() > 150, "alert {name}: the description tells the operator what to do");
    }
    let tested = yaml_values(&read(RULE_TESTS), "alertname");
    for a in &alerts {
        assert!(tested.contains(a), "alert {a} has a promtool unit test in {RULE_TESTS}");
    }
}

// ---- metrics on a running Baton ---------------------------------------------------------------

/// Canonical series key: `name{a="1",b="2"}` with labels sorted by name.
fn key(name: &str, labels: &[(&str, &str)]) -> String {
    let mut l: Vec<_> = labels.to_vec();
    l.sort();
    let inner: Vec<String> = l.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    if inner.is_empty() { name.to_string() } else { format!("{name}{{{}}}", inner.join(",")) }
}

/// Every sample of the exposition: series key → (name, labels, value).
fn parse(text: &str) -> BTreeMap<String, (String, BTreeMap<String, String>, f64)> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let mut labels = BTreeMap::new();
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").expect("label pair");
                    labels.insert(k.to_string(), v.trim_end_matches('"').to_string());
                }
                (n.to_string(), labels)
            }
            None => (series.to_string(), BTreeMap::new()),
        };
        let pairs: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        out.insert(key(&name, &pairs), (name.clone(), labels.clone(), value));
    }
    out
}

/// Exact value of one series (all its labels given); `None` if it is not exported.
fn get(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    parse(text).get(&key(name, labels)).map(|(_, _, v)| *v)
}

/// Counter series (and histogram counts) whose value changed between two scrapes, with the
/// increase. Health probes run on their own clock and are left out.
fn increases(before: &str, after: &str) -> BTreeMap<String, f64> {
    let before = parse(before);
    parse(after)
        .into_iter()
        .filter(|(_, (name, _, _))| {
            name.starts_with("baton_") && (name.ends_with("_total") || name.ends_with("_count"))
        })
        .filter(|(_, (name, _, _))| name != "baton_health_probes_total" && !name.starts_with("baton_spool_commit"))
        .filter_map(|(k, (_, _, v))| {
            let old = before.get(&k).map_or(0.0, |(_, _, v)| *v);
            (v != old).then_some((k, v - old))
        })
        .collect()
}

fn two_providers(primary: &MockSmtp, primary_extra: &str, backup: &MockSmtp, health: &str) -> String {
    format!(
        "{}{}\n[retry]\nschedule = [\"1h\"]\n\n[health]\nprobe_interval = \"1h\"\n{health}\n\n[[routes]]\nname = \"default\"\nproviders = [\"primary\", \"backup\"]\n",
        smtp_provider("primary", primary, primary_extra),
        smtp_provider("backup", backup, ""),
    )
}

/// Waits until `check` holds for a scrape; returns that scrape.
async fn wait_metrics(baton: &Baton, what: &str, check: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let m = baton.metrics().await;
        if check(&m) {
            return m;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}:\n{m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn every_metric_of_the_dashboard_and_the_alerts_is_exported() {
    let used = used_metrics();
    let primary = MockSmtp::start().await;
    primary.set_reply(Stage::Mail, Some("451 4.3.0 Temporary local problem".into()));
    let backup = MockSmtp::start().await;
    // With [canary] set, the canary series exist from the start (nothing is sent within the hour;
    // the mailbox is a closed port).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let canary = format!(
        "\n[canary]\ninterval = \"1h\"\nfrom = \"canary@example.com\"\nto = \"canary@example.net\"\n\n[canary.imap]\nhost = \"127.0.0.1\"\nport = {closed}\ntls = \"none\"\nusername = \"canary\"\npassword = \"canary-password\"\n"
    );
    // With [[webhooks]], the app-webhook series exist from the start.
    let webhooks = "\n[[webhooks]]\nurl = \"http://127.0.0.1:9/events\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw0Q5Rm9zJ9Zc=\"\nevents = [\"bounced\"]\n";
    // With [cluster] (a Redis that is not there) and a max_rate, their series exist too.
    let cluster = format!("\n[cluster]\nredis_url = \"redis://127.0.0.1:{closed}/0\"\nnode_id = \"obs\"\n");
    let primary_extra = "max_rate = \"1000/s\"\n";
    let baton =
        Baton::start(&(two_providers(&primary, primary_extra, &backup, "") + &canary + webhooks + &cluster)).await;
    // Traffic: a failover, a delivery, an ingest rejection.
    let id = baton.send(message(&["alice@example.net"], "observability")).await;
    assert_eq!(baton.wait_final(&id).await["status"], "delivered");
    let (code, _) = baton.post(Some("wrong-key-0123456789"), None, message(&["a@example.net"], "x").to_string()).await;
    assert_eq!(code, 401);
    let m = baton.metrics().await;
    let exported: BTreeSet<String> = parse(&m).into_values().map(|(name, _, _)| name).collect();
    for (source, names) in [(DASHBOARD, &used.dashboard), (RULES, &used.rules), (RULE_TESTS, &used.rule_tests)] {
        assert!(names.len() >= 5, "{source} uses {names:?}");
        let missing: Vec<&String> = names.iter().filter(|n| !exported.contains(*n)).collect();
        assert!(missing.is_empty(), "{source} uses metrics Baton does not export: {missing:?}\n/metrics:\n{m}");
    }

    // Label values are bounded: no address, message id or free text.
    for (series, (_, labels, _)) in parse(&m) {
        for v in labels.values() {
            assert!(!v.contains('@') && !v.contains(' ') && !v.contains(&id), "unbounded label value in {series}");
        }
    }
}

#[tokio::test]
async fn series_exist_at_zero_from_the_start() {
    let primary = MockSmtp::start().await;
    let backup = MockSmtp::start().await;
    let baton = Baton::start_with(&two_providers(&primary, "", &backup, ""), "max_bytes = \"64MiB\"").await;
    let m = baton.metrics().await;
    let zero = [
        key("baton_messages_received_total", &[("ingress", "http"), ("client", "app")]),
        key("baton_messages_received_total", &[("ingress", "smtp"), ("client", "other")]),
        key("baton_ingest_rejections_total", &[("ingress", "http"), ("reason", "auth")]),
        key("baton_ingest_rejections_total", &[("ingress", "smtp"), ("reason", "spool_full")]),
        key("baton_delivery_attempts_total", &[("provider", "backup"), ("outcome", "account")]),
        key("baton_recipients_total", &[("provider", "primary"), ("status", "rejected")]),
        key(
            "baton_failovers_total",
            &[("route", "default"), ("from", "primary"), ("to", "backup"), ("reason", "account")],
        ),
        key(
            "baton_failovers_total",
            &[("route", "default"), ("from", "primary"), ("to", "backup"), ("reason", "suspended")],
        ),
        key("baton_messages_completed_total", &[("route", "default"), ("status", "failed")]),
        key("baton_provider_state_changes_total", &[("provider", "primary"), ("from", "healthy"), ("to", "suspended")]),
        key("baton_provider_state", &[("provider", "primary"), ("state", "suspended")]),
        key("baton_health_probes_total", &[("provider", "backup"), ("result", "failed")]),
        key("baton_provider_request_duration_seconds_count", &[("provider", "primary"), ("outcome", "transient")]),
        key("baton_delivery_latency_seconds_count", &[("route", "default"), ("provider", "backup")]),
        key("baton_queue_messages", &[("state", "ready")]),
        key("baton_queue_messages", &[("state", "scheduled")]),
        key("baton_queue_messages", &[("state", "in_flight")]),
        key("baton_queue_oldest_message_age_seconds", &[]),
        key("baton_spool_bytes", &[]),
        key("baton_queue_kept_bytes", &[]),
        key("baton_config_reloads_total", &[("result", "success")]),
        key("baton_config_reloads_total", &[("result", "failure")]),
        key("baton_provider_bounce_rate", &[("provider", "primary")]),
        key("baton_provider_complaint_rate", &[("provider", "backup")]),
        key("baton_provider_rate_sample", &[("provider", "primary")]),
        key(
            "baton_failovers_total",
            &[("route", "default"), ("from", "primary"), ("to", "backup"), ("reason", "rate_warning")],
        ),
    ];
    let all = parse(&m);
    for k in &zero {
        assert_eq!(all.get(k).map(|(_, _, v)| *v), Some(0.0), "{k} exported at 0:\n{m}");
    }
    let one = |name: &str, labels: &[(&str, &str)]| get(&m, name, labels);
    assert_eq!(one("baton_provider_state", &[("provider", "backup"), ("state", "healthy")]), Some(1.0));
    assert_eq!(one("baton_route_available_providers", &[("route", "default")]), Some(2.0));
    // SMTP relays: the common review levels, so the rate alerts compare from the start.
    assert_eq!(one("baton_provider_bounce_rate_warn", &[("provider", "primary")]), Some(0.05));
    assert_eq!(one("baton_provider_complaint_rate_warn", &[("provider", "backup")]), Some(0.001));
    assert_eq!(one("baton_spool_max_bytes", &[]), Some(64.0 * 1024.0 * 1024.0));
    assert_eq!(one("baton_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), Some(1.0));
    let info: Vec<_> = all.values().filter(|(n, _, _)| n == "baton_config_info").collect();
    assert_eq!(info.len(), 1, "one config hash");
    let hash = &info[0].1["hash"];
    assert!(hash.len() >= 8 && hash.chars().all(|c| c.is_ascii_hexdigit()), "hash {hash:?}");
    let loaded = one("baton_config_last_reload_success_timestamp_seconds", &[]).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((now - loaded).abs() < 120.0, "start time: {loaded} vs {now}");
}

#[tokio::test]
async fn a_failover_increments_exactly_the_right_series() {
    let primary = MockSmtp::start().await;
    primary.set_reply(Stage::Mail, Some("451 4.3.0 Temporary local problem".into()));
    let backup = MockSmtp::start().await;
    // A high threshold: the primary becomes degraded, never open.
    let baton = Baton::start(&two_providers(&primary, "", &backup, "failure_threshold = 100")).await;
    let before = baton.metrics().await;
    let id = baton.send(message(&["alice@example.net", "bob@example.net"], "fail over once")).await;
    assert_eq!(baton.wait_final(&id).await["status"], "delivered");
    let after = wait_metrics(&baton, "the message to be counted as finished", |m| {
        Baton::metric(m, "baton_messages_completed_total", &[]) == 1.0
    })
    .await;
    let want: BTreeMap<String, f64> = [
        (key("baton_messages_received_total", &[("ingress", "http"), ("client", "app")]), 1.0),
        (key("baton_delivery_attempts_total", &[("provider", "primary"), ("outcome", "transient")]), 1.0),
        (key("baton_delivery_attempts_total", &[("provider", "backup"), ("outcome", "accepted")]), 1.0),
        (
            key(
                "baton_failovers_total",
                &[("route", "default"), ("from", "primary"), ("to", "backup"), ("reason", "transient")],
            ),
            1.0,
        ),
        (key("baton_recipients_total", &[("provider", "backup"), ("status", "delivered")]), 2.0),
        (key("baton_messages_completed_total", &[("route", "default"), ("status", "delivered")]), 1.0),
        (
            key(
                "baton_provider_state_changes_total",
                &[("provider", "primary"), ("from", "healthy"), ("to", "degraded")],
            ),
            1.0,
        ),
        (
            key("baton_provider_request_duration_seconds_count", &[("provider", "primary"), ("outcome", "transient")]),
            1.0,
        ),
        (key("baton_provider_request_duration_seconds_count", &[("provider", "backup"), ("outcome", "accepted")]), 1.0),
        (key("baton_delivery_latency_seconds_count", &[("route", "default"), ("provider", "backup")]), 2.0),
    ]
    .into_iter()
    .collect();
    assert_eq!(increases(&before, &after), want);
    assert_eq!(get(&after, "baton_provider_state", &[("provider", "primary"), ("state", "degraded")]), Some(1.0));
    assert_eq!(
        get(&after, "baton_route_available_providers", &[("route", "default")]),
        Some(2.0),
        "degraded is in rotation"
    );
}

#[tokio::test]
async fn provider_state_changes_flip_the_gauge_and_count_the_transition() {
    let primary = MockSmtp::start().await;
    primary.set_credentials(Some(("baton", "secret-password")));
    primary.set_reply(Stage::EndOfData, Some("554 5.7.1 Your account has been suspended".into()));
    let backup = MockSmtp::start().await;
    let body = two_providers(
        &primary,
        "username = \"baton\"\npassword = \"secret-password\"",
        &backup,
        "account_cooldown = \"1h\"",
    );
    let baton = Baton::start(&body).await;
    let states = |m: &str, provider: &str| -> Vec<(String, f64)> {
        ["healthy", "degraded", "open", "suspended", "rate_limited", "drained"]
            .iter()
            .map(|s| (s.to_string(), get(m, "baton_provider_state", &[("provider", provider), ("state", s)]).unwrap()))
            .filter(|(_, v)| *v != 0.0)
            .collect()
    };

    // The account is suspended: the first message fails over with reason "account".
    let id = baton.send(message(&["alice@example.net"], "suspended")).await;
    assert_eq!(baton.wait_final(&id).await["recipients"][0]["provider"], "backup");
    let m = baton.metrics().await;
    assert_eq!(states(&m, "primary"), [("suspended".to_string(), 1.0)], "only the current state is 1");
    assert_eq!(
        get(
            &m,
            "baton_provider_state_changes_total",
            &[("provider", "primary"), ("from", "healthy"), ("to", "suspended")]
        ),
        Some(1.0)
    );
    assert_eq!(Baton::metric(&m, "baton_provider_state_changes_total", &[]), 1.0, "no other transition");
    let failover = |reason| [("route", "default"), ("from", "primary"), ("to", "backup"), ("reason", reason)];
    assert_eq!(get(&m, "baton_failovers_total", &failover("account")), Some(1.0));
    assert_eq!(get(&m, "baton_route_available_providers", &[("route", "default")]), Some(1.0));

    // While suspended the primary is skipped: a failover with the provider's state as reason.
    let id = baton.send(message(&["alice@example.net"], "while suspended")).await;
    assert_eq!(baton.wait_final(&id).await["attempts"].as_array().unwrap().len(), 1);
    let m = baton.metrics().await;
    assert_eq!(get(&m, "baton_failovers_total", &failover("suspended")), Some(1.0));
    assert_eq!(get(&m, "baton_failovers_total", &failover("account")), Some(1.0));
    assert_eq!(
        get(&m, "baton_delivery_attempts_total", &[("provider", "primary"), ("outcome", "account")]),
        Some(1.0),
        "the skipped provider was not attempted"
    );

    // The operator drains the backup: the route has no provider left.
    let resp = baton.http.post(format!("{}/admin/providers/backup/drain", baton.admin)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let m = baton.metrics().await;
    assert_eq!(states(&m, "backup"), [("drained".to_string(), 1.0)]);
    assert_eq!(
        get(
            &m,
            "baton_provider_state_changes_total",
            &[("provider", "backup"), ("from", "healthy"), ("to", "drained")]
        ),
        Some(1.0)
    );
    assert_eq!(get(&m, "baton_route_available_providers", &[("route", "default")]), Some(0.0));
}

#[tokio::test]
async fn ingest_rejections_are_counted_by_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let body = format!(
        "[providers.outbox]\ntype = \"file\"\ndir = \"{}\"\n\n[[routes]]\nname = \"default\"\nproviders = [\"outbox\"]\n",
        tmp.path().join("outbox").display()
    );
    // Tiny limits: a 2 KiB message is too large; the spool holds no more than 600 bytes.
    let baton = Baton::start_with_server("max_message_size = \"2KiB\"", "max_bytes = 600", &body).await;
    let post = |key: Option<&'static str>, body: String| {
        let baton = &baton;
        async move { baton.post(key, None, body).await.0 }
    };
    assert_eq!(post(None, message(&["a@example.net"], "no key").to_string()).await, 401);
    assert_eq!(post(Some("wrong-key-0123456789"), message(&["a@example.net"], "bad key").to_string()).await, 401);
    let foreign = serde_json::json!({"from": "x@example.org", "to": ["a@example.net"], "subject": "s", "text": "t"});
    assert_eq!(post(Some(KEY), foreign.to_string()).await, 403);
    assert_eq!(post(Some(KEY), "{not json".to_string()).await, 400);
    let injection = serde_json::json!({"from": "app@example.com", "to": ["a@example.net"], "subject": "a\r\nBcc: x@example.net", "text": "t"});
    assert_eq!(post(Some(KEY), injection.to_string()).await, 422);
    let big = serde_json::json!({"from": "app@example.com", "to": ["a@example.net"], "subject": "big", "text": "x".repeat(4096)});
    assert_eq!(post(Some(KEY), big.to_string()).await, 413);
    let full = serde_json::json!({"from": "app@example.com", "to": ["a@example.net"], "subject": "full", "text": "y".repeat(1000)});
    assert_eq!(post(Some(KEY), full.to_string()).await, 503);

    let m = baton.metrics().await;
    let count = |reason| get(&m, "baton_ingest_rejections_total", &[("ingress", "http"), ("reason", reason)]);
    for (reason, n) in [
        ("auth", 2.0),
        ("sender_not_allowed", 1.0),
        ("invalid", 1.0),
        ("header_injection", 1.0),
        ("too_large", 1.0),
        ("spool_full", 1.0),
        ("shutting_down", 0.0),
        ("internal", 0.0),
    ] {
        assert_eq!(count(reason), Some(n), "reason {reason}:\n{m}");
    }
    assert_eq!(Baton::metric(&m, "baton_ingest_rejections_total", &[("ingress", "smtp")]), 0.0);
    assert_eq!(Baton::metric(&m, "baton_messages_received_total", &[]), 0.0);
}

#[tokio::test]
async fn queue_and_spool_metrics_follow_a_stuck_message() {
    let primary = MockSmtp::start().await;
    let backup = MockSmtp::start().await;
    for mock in [&primary, &backup] {
        mock.set_reply(Stage::Mail, Some("451 4.3.0 Temporary local problem".into()));
    }
    let body = two_providers(&primary, "", &backup, "failure_threshold = 100");
    let baton = Baton::start_with(&body, "max_bytes = \"1MiB\"").await;
    let before = baton.metrics().await;
    assert_eq!(get(&before, "baton_spool_max_bytes", &[]), Some(1024.0 * 1024.0));
    let id = baton.send(message(&["alice@example.net"], "stuck")).await;
    // Both providers fail: after the pass the message waits for the next retry slot (1h).
    baton.wait_status(&id, "both providers tried", |s| s["attempts"].as_array().is_some_and(|a| a.len() == 2)).await;
    let m = wait_metrics(&baton, "the message to be scheduled and at least a second old", |m| {
        get(m, "baton_queue_messages", &[("state", "scheduled")]) == Some(1.0)
            && Baton::metric(m, "baton_queue_oldest_message_age_seconds", &[]) >= 1.0
    })
    .await;
    assert_eq!(get(&m, "baton_queue_messages", &[("state", "ready")]), Some(0.0));
    assert_eq!(get(&m, "baton_queue_messages", &[("state", "in_flight")]), Some(0.0));
    let size = baton.shared().spool.bytes() as f64;
    assert!(size > 100.0);
    assert_eq!(get(&m, "baton_spool_bytes", &[]), Some(size));
    assert_eq!(
        get(
            &m,
            "baton_failovers_total",
            &[("route", "default"), ("from", "primary"), ("to", "backup"), ("reason", "transient")]
        ),
        Some(1.0)
    );
    assert_eq!(Baton::metric(&m, "baton_messages_completed_total", &[]), 0.0, "not finished");

    // The spool committed the insert and the state after the pass: histograms are not empty.
    let commits = get(&m, "baton_spool_commit_duration_seconds_count", &[]).unwrap();
    assert!(commits >= 2.0, "{commits} commits");
    assert!(get(&m, "baton_spool_commit_duration_seconds_sum", &[]).unwrap() > 0.0);
    assert_eq!(get(&m, "baton_spool_commit_batch_size_count", &[]), Some(commits));
    assert!(get(&m, "baton_spool_commit_batch_size_sum", &[]).unwrap() >= commits);
    assert_eq!(get(&m, "baton_spool_commit_duration_seconds_bucket", &[("le", "+Inf")]), Some(commits));

    // The message is delivered once a provider works: the queue empties.
    primary.reset();
    let created = baton.shared().spool.get(&id).unwrap().expect("spooled").created_ms;
    baton.shared().queue.schedule(&id, 0, created); // due now instead of in an hour
    assert_eq!(baton.wait_final(&id).await["status"], "delivered");
    let m = wait_metrics(&baton, "an empty queue", |m| Baton::metric(m, "baton_queue_messages", &[]) == 0.0).await;
    assert_eq!(get(&m, "baton_queue_oldest_message_age_seconds", &[]), Some(0.0));
    assert_eq!(get(&m, "baton_spool_bytes", &[]), Some(0.0));
}

// ---- logs of the real binary ------------------------------------------------------------------

const LOG_API_KEY: &str = "log-test-api-key-5b1f0c9e7d";
const LOG_SMTP_PASSWORD: &str = "log-test-smtp-password-8e2a";
const LOG_BODY: &str = "Body canary 3c9d1f: do not log me";
const WRONG_KEY: &str = "wrong-key-not-a-client-7d41";

fn events(lines: &[String]) -> Vec<Value> {
    lines.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"))).collect()
}

fn find<'a>(events: &'a [Value], message: &str, fields: &[(&str, &str)]) -> Vec<&'a Value> {
    events.iter().filter(|e| e["message"] == message && fields.iter().all(|(k, v)| e[*k] == *v)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_of_a_failover_have_the_fields_and_no_secrets() {
    let primary = MockSmtp::start().await;
    primary.set_credentials(Some(("baton", LOG_SMTP_PASSWORD)));
    primary.set_reply(Stage::EndOfData, Some("554 5.7.1 Your account has been suspended".into()));
    let backup = MockSmtp::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let clients =
        format!("[[clients]]\nname = \"app\"\napi_keys = [\"{LOG_API_KEY}\"]\nallowed_senders = [\"*@example.com\"]\n");
    let body = format!(
        "{clients}{}",
        two_providers(
            &primary,
            &format!("username = \"baton\"\npassword = \"{LOG_SMTP_PASSWORD}\""),
            &backup,
            "account_cooldown = \"1h\""
        )
    );
    let config = tmp.path().join("baton.toml");
    std::fs::write(&config, support::baton::config_text(tmp.path(), "", &body)).unwrap();
    let process = tokio::task::spawn_blocking(move || BatonProcess::spawn(&config)).await.unwrap();
    let http = reqwest::Client::new();
    let send = |subject: &'static str| {
        let http = http.clone();
        let url = format!("{}/v1/messages", process.http);
        async move {
            let msg = serde_json::json!({"from": "App <app@example.com>", "to": ["alice@example.net"], "subject": subject, "text": LOG_BODY});
            let resp = http.post(url).bearer_auth(LOG_API_KEY).json(&msg).send().await.unwrap();
            assert_eq!(resp.status(), 202);
            resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
        }
    };
    let first = send("first").await;
    let second_sent_after = {
        // Wait for the first message to finish before sending the second (skip-failover).
        let mut lines = Vec::new();
        let start = Instant::now();
        loop {
            lines.extend(process.log_lines());
            if lines.iter().any(|l| l.contains("message finished") && l.contains(&first)) {
                break lines;
            }
            assert!(start.elapsed() < DEADLINE, "first message never finished:\n{}", lines.join("\n"));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    // Refused requests are logged too (without the key): a wrong key, a sender not allowed.
    let url = format!("{}/v1/messages", process.http);
    let msg = serde_json::json!({"from": "app@example.com", "to": ["alice@example.net"], "text": "x"});
    let resp = http.post(&url).bearer_auth(WRONG_KEY).json(&msg).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let msg = serde_json::json!({"from": "ceo@example.org", "to": ["alice@example.net"], "text": "x"});
    let resp = http.post(&url).bearer_auth(LOG_API_KEY).json(&msg).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    let second = send("second").await;
    let mut lines = second_sent_after;
    let start = Instant::now();
    loop {
        lines.extend(process.log_lines());
        if lines.iter().any(|l| l.contains("message finished") && l.contains(&second)) {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "second message never finished:\n{}", lines.join("\n"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all = events(&lines);
    let dump = lines.join("\n");

    // One line per accepted message.
    for id in [&first, &second] {
        let accepted = find(&all, "message accepted", &[("message_id", id), ("client", "app"), ("ingress", "http")]);
        assert_eq!(accepted.len(), 1, "accepted line for {id}:\n{dump}");
        assert_eq!(accepted[0]["level"], "INFO");
    }
    // One line per attempt: provider, outcome, duration, message id.
    let attempts = find(&all, "delivery attempt", &[("message_id", &first)]);
    assert_eq!(attempts.len(), 2, "{dump}");
    assert_eq!((attempts[0]["provider"].as_str(), attempts[0]["outcome"].as_str()), (Some("primary"), Some("account")));
    assert_eq!((attempts[1]["provider"].as_str(), attempts[1]["outcome"].as_str()), (Some("backup"), Some("accepted")));
    for a in &attempts {
        assert!(a["duration_ms"].is_u64(), "duration in {a}");
    }
    assert_eq!(find(&all, "delivery attempt", &[("message_id", &second), ("provider", "backup")]).len(), 1);
    assert!(find(&all, "delivery attempt", &[("message_id", &second), ("provider", "primary")]).is_empty());
    // One line per failover: after a failed attempt, and when a provider out of rotation is skipped.
    let failover = [("route", "default"), ("from", "primary"), ("to", "backup")];
    let f1 = find(&all, "failover", &failover);
    let reasons: Vec<(&str, &str)> =
        f1.iter().map(|e| (e["message_id"].as_str().unwrap(), e["reason"].as_str().unwrap())).collect();
    assert_eq!(reasons, [(first.as_str(), "account"), (second.as_str(), "suspended")], "{dump}");
    // One line per provider state change.
    let changes =
        find(&all, "provider state changed", &[("provider", "primary"), ("from", "healthy"), ("to", "suspended")]);
    assert_eq!(changes.len(), 1, "{dump}");
    assert_eq!(changes[0]["level"], "WARN");
    assert!(changes[0]["reason"].as_str().is_some_and(|r| r.contains("suspended")));
    for id in [&first, &second] {
        assert_eq!(find(&all, "message finished", &[("message_id", id), ("status", "delivered")]).len(), 1);
    }

    let refused = find(&all, "HTTP request refused", &[("reason", "auth"), ("why", "invalid API key")]);
    assert_eq!(refused.len(), 1, "{dump}");
    assert_eq!((refused[0]["status"].as_u64(), refused[0]["level"].as_str()), (Some(401), Some("WARN")));
    assert_eq!(find(&all, "HTTP request refused", &[("reason", "sender_not_allowed")]).len(), 1, "{dump}");
    assert!(!dump.contains("ceo@example.org"), "a refused sender's address appears in the log:\n{dump}");

    // Never secrets or message content.
    for (what, secret) in [
        ("API key", LOG_API_KEY),
        ("refused key", WRONG_KEY),
        ("SMTP password", LOG_SMTP_PASSWORD),
        ("body", LOG_BODY),
        ("body", "canary 3c9d1f"),
    ] {
        assert!(!dump.contains(secret), "the {what} appears in the log:\n{dump}");
    }
}
