//! `baton check-config`: valid configs pass; every invalid one names file, line and key.

use std::path::Path;
use std::process::Command;

const VALID: &str = r#"[server]
hostname = "baton.example.com"
http_listen = "127.0.0.1:8080"
admin_listen = "127.0.0.1:9090"

[[clients]]
name = "billing"
api_keys = ["${BILLING_API_KEY}"]
allowed_senders = ["*@example.com"]

[providers.primary]
type = "smtp"
host = "smtp.example.com"
port = 587
tls = "starttls"
username = "user"
password = "${PRIMARY_PASSWORD}"

[providers.outbox]
type = "file"
dir = "data/outbox"

[[routes]]
name = "default"
providers = ["primary", "outbox"]
"#;

fn check(dir: &Path, text: &str, env: &[(&str, &str)]) -> (bool, String) {
    let path = dir.join("baton.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["check-config", "--config"])
        .arg(&path)
        .env_remove("BATON_CONFIG")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout))
}

const ENV: [(&str, &str); 2] = [("BILLING_API_KEY", "billing-key-0123456789"), ("PRIMARY_PASSWORD", "hunter2-secret")];

#[test]
fn the_shipped_configs_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .current_dir(root)
        .arg("check-config")
        .env_remove("BATON_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "config/baton.toml: {}", String::from_utf8_lossy(&out.stderr));
    let example_env = [
        ("BATON_ADMIN_TOKEN", "admin-token-0123456789"),
        ("BILLING_API_KEY", "billing-key-0123456789"),
        ("MARKETING_API_KEY", "marketing-key-0123456789"),
        ("PRIMARY_USER", "u"),
        ("PRIMARY_PASSWORD", "p"),
        ("BACKUP_USER", "u"),
        ("BACKUP_PASSWORD", "p"),
    ];
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .current_dir(root)
        .args(["check-config", "--config", "config/example.toml"])
        .envs(example_env)
        .output()
        .unwrap();
    assert!(out.status.success(), "config/example.toml: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_valid_config_passes() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = check(dir.path(), VALID, &ENV);
    assert!(ok, "{out}");
    assert!(out.contains("OK"), "{out}");
    // BATON_CONFIG sets the path too.
    let path = dir.path().join("baton.toml");
    let status = Command::new(env!("CARGO_BIN_EXE_baton"))
        .arg("check-config")
        .env("BATON_CONFIG", &path)
        .envs(ENV)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Each case: an edit of the valid config, and what the report must say (line, key, words).
#[test]
fn invalid_configs_are_reported_with_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, String, &[&str])> = vec![
        (
            "unknown provider in route",
            VALID.replace("providers = [\"primary\", \"outbox\"]", "providers = [\"primery\", \"outbox\"]"),
            &[":25:", "routes[0].providers[0]", "unknown provider \"primery\""],
        ),
        (
            "typo in key",
            VALID.replace("port = 587", "prot = 587"),
            &[":14:", "providers.primary.prot", "unknown field"],
        ),
        ("unknown provider type", VALID.replace("type = \"file\"", "type = \"mandril\""), &[":20:", "mandril"]),
        (
            "bad listen address",
            VALID.replace("127.0.0.1:9090", "localhost"),
            &[":4:", "server.admin_listen", "not a listen address"],
        ),
        (
            "admin reachable from other machines without a token",
            VALID.replace("127.0.0.1:9090", "0.0.0.0:9090"),
            &[":4:", "server.admin_listen", "no admin_token is set"],
        ),
        (
            "empty admin token",
            VALID.replace(
                "admin_listen = \"127.0.0.1:9090\"",
                "admin_listen = \"127.0.0.1:9090\"\nadmin_token = \"${BATON_ADMIN_TOKEN:-}\"",
            ),
            &[":5:", "server.admin_token", "empty"],
        ),
        (
            "zero trial timeout",
            format!("{VALID}\n[health]\ntrial_timeout = \"0s\"\n"),
            &["health.trial_timeout", "greater than 0"],
        ),
        (
            "bounce rate warn level as a percentage",
            format!("{VALID}\n[providers.outbox.health]\nbounce_rate_warn = 4.0\n"),
            &[":28:", "providers.outbox.health.bounce_rate_warn", "at most 1", "0.04"],
        ),
        (
            "zero rate window",
            format!("{VALID}\n[health]\nrate_window = \"0s\"\ncomplaint_rate_warn = 0.0\n"),
            &["health.rate_window", "greater than 0", "health.complaint_rate_warn", "above 0"],
        ),
        (
            "same listen address",
            VALID.replace("127.0.0.1:9090", "127.0.0.1:8080"),
            &[":4:", "server.admin_listen", "same address"],
        ),
        (
            "client names unknown route",
            VALID.replace(
                "allowed_senders = [\"*@example.com\"]",
                "allowed_senders = [\"*@example.com\"]\nroute = \"nope\"",
            ),
            &[":10:", "clients[0].route", "unknown route"],
        ),
        (
            "duplicate client",
            format!(
                "{VALID}\n[[clients]]\nname = \"billing\"\napi_keys = [\"another-key-0123456789\"]\nallowed_senders = [\"*@example.com\"]\n"
            ),
            &[":28:", "clients[1].name", "duplicate client name"],
        ),
        (
            "duplicate route",
            format!("{VALID}\n[[routes]]\nname = \"default\"\nproviders = [\"outbox\"]\n"),
            &[":28:", "routes[1].name", "duplicate route"],
        ),
        (
            "no catch-all route",
            VALID.replace(
                "providers = [\"primary\", \"outbox\"]",
                "providers = [\"primary\", \"outbox\"]\nmatch = { streams = [\"x\"] }",
            ),
            &["routes", "no route matches every message"],
        ),
        (
            "starttls on 465",
            VALID.replace("port = 587", "port = 465"),
            &[":15:", "providers.primary.tls", "implicit TLS"],
        ),
        (
            "password in clear text",
            VALID.replace("tls = \"starttls\"", "tls = \"none\""),
            &[":15:", "providers.primary.tls", "clear text"],
        ),
        (
            "bad duration",
            VALID.replace("tls = \"starttls\"", "tls = \"starttls\"\ntimeout = \"soon\""),
            &[":16", "invalid duration"],
        ),
        ("syntax error", VALID.replace("[[routes]]", "[[routes]"), &[":23:", "syntax"]),
        (
            "app webhook with a bad secret, an unknown event and client",
            format!(
                "{VALID}\n[[webhooks]]\nurl = \"ftp://app.example.com/x\"\nsecret = \"not base64!\"\nevents = [\"deliverd\"]\nclients = [\"nobody\"]\n"
            ),
            &[
                ":29:",
                "webhooks[0].url",
                "http:// or https://",
                "webhooks[0].secret",
                "whsec_",
                "webhooks[0].events[0]",
                "unknown event type \"deliverd\"",
                "webhooks[0].clients[0]",
                "no client named \"nobody\"",
            ],
        ),
        (
            "half-configured provider webhooks",
            format!(
                "{VALID}\n[providers.md]\ntype = \"mandrill\"\napi_key = \"k\"\nwebhook_key = \"wk\"\n\n[providers.sg]\ntype = \"sendgrid\"\napi_key = \"k\"\nwebhook_public_key = \"not a key\"\n\n[providers.ses]\ntype = \"ses\"\nregion = \"us-east-1\"\nsns_topic_arns = [\"my-topic\"]\n"
            ),
            &[
                "providers.md.webhook_key",
                "webhook_url is not",
                "providers.sg.webhook_public_key",
                "verification key",
                "providers.ses.sns_topic_arns[0]",
                "SNS topic ARN",
            ],
        ),
        (
            "no providers in route",
            VALID.replace("providers = [\"primary\", \"outbox\"]", "providers = []"),
            &[":25:", "routes[0].providers", "at least one provider"],
        ),
    ];
    for (name, text, needles) in cases {
        let (ok, out) = check(dir.path(), &text, &ENV);
        assert!(!ok, "{name}: should fail\n{out}");
        for needle in needles {
            assert!(out.contains(needle), "{name}: report should contain {needle:?}:\n{out}");
        }
        assert!(out.contains("baton.toml"), "{name}: report names the file:\n{out}");
        assert!(
            !out.contains("hunter2-secret") && !out.contains("billing-key-0123456789"),
            "{name}: secrets leaked:\n{out}"
        );
    }
}

/// Four structural mistakes of different kinds and a semantic one: one run names them all.
const FIVE_MISTAKES: &str = r#"[server]
hostname = "baton.example.com"
http_listen = "127.0.0.1:8080"
admin_listen = "127.0.0.1:9090"
max_mesage_size = "10MiB"

[[clients]]
name = "billing"
api_keys = ["${BILLING_API_KEY}"]
allowed_senders = "*@example.com"

[providers.primary]
type = "smtp"
host = "smtp.example.com"
prot = 587
timeout = "soon"
username = "user"
password = "${PRIMARY_PASSWORD}"

[providers.outbox]
type = "file"
dir = "data/outbox"

[[routes]]
name = "default"
providers = ["primery", "outbox"]
"#;

#[test]
fn every_problem_is_reported_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = check(dir.path(), FIVE_MISTAKES, &ENV);
    assert!(!ok, "should fail:\n{out}");
    let expect = [
        ("baton.toml:5: server.max_mesage_size:", "unknown field"),
        ("baton.toml:10: clients[0].allowed_senders:", "invalid type"),
        ("baton.toml:15: providers.primary.prot:", "unknown field"),
        ("baton.toml:16: providers.primary.timeout:", "invalid duration \"soon\""),
        ("baton.toml:26: routes[0].providers[0]:", "unknown provider \"primery\""),
    ];
    for (at, says) in expect {
        assert!(out.lines().any(|l| l.contains(at) && l.contains(says)), "{at} {says}:\n{out}");
    }
    assert_eq!(out.matches("error:").count(), expect.len(), "each once, no follow-on noise:\n{out}");
    let at: Vec<usize> = expect.iter().map(|(at, _)| out.find(at).unwrap()).collect();
    assert!(at.is_sorted(), "in file order:\n{out}");
    // Fixed, the same file passes.
    let fixed = FIVE_MISTAKES
        .replace("max_mesage_size", "max_message_size")
        .replace("= \"*@example.com\"", "= [\"*@example.com\"]")
        .replace("prot", "port")
        .replace("\"soon\"", "\"30s\"")
        .replace("primery", "primary");
    let (ok, out) = check(dir.path(), &fixed, &ENV);
    assert!(ok, "{out}");
}

#[test]
fn missing_env_vars_are_named_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = check(dir.path(), VALID, &[("BILLING_API_KEY", "billing-key-0123456789")]);
    assert!(!ok);
    assert!(out.contains(":17: providers.primary.password: environment variable PRIMARY_PASSWORD is not set"), "{out}");
    assert_eq!(out.matches("error:").count(), 1, "one problem, no follow-on noise:\n{out}");
}

#[test]
fn serve_refuses_an_invalid_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, VALID.replace("[[routes]]", "[[routes]")).unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_baton")).args(["serve", "--config"]).arg(&path).envs(ENV).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.toml:23:"));
}
