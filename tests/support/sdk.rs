#![allow(dead_code)]
//! The providers' official SDKs as test clients. Python SDKs live in a venv under
//! `target/sdk/python`, made on first use from `tests/sdk/requirements.txt` (pinned versions,
//! from PyPI) and rebuilt when that file changes. A venv that cannot be made fails the test:
//! no silent skip.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

const REQUIREMENTS: &str = include_str!("../sdk/requirements.txt");

/// Test binaries run their tests in parallel: one builds the venv, the others wait.
static BUILD: Mutex<()> = Mutex::new(());

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn run(program: &Path, args: &[&str]) {
    let out = std::process::Command::new(program).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run {}: {e} (python3 with venv and pip is needed; .ci/run installs it)", program.display())
    });
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{}\n{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The venv's python, with the pinned SDKs installed.
pub fn python() -> PathBuf {
    let _one = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let venv = target_dir().join("sdk").join("python");
    let python = venv.join("bin").join("python");
    let marker = venv.join("requirements.txt");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(REQUIREMENTS) && python.exists() {
        return python;
    }
    // Built beside, then renamed into place: another test binary never sees half a venv.
    let building = target_dir().join("sdk").join(format!("python.building.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    std::fs::create_dir_all(building.parent().unwrap()).unwrap();
    run(Path::new("python3"), &["-m", "venv", building.to_str().unwrap()]);
    let requirements = building.join("requirements.txt");
    std::fs::write(&requirements, REQUIREMENTS).unwrap();
    let pip_python = building.join("bin").join("python");
    run(
        &pip_python,
        &["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", requirements.to_str().unwrap()],
    );
    let _ = std::fs::remove_dir_all(&venv);
    if std::fs::rename(&building, &venv).is_err() {
        // Another binary won the race; its venv is the same.
        let _ = std::fs::remove_dir_all(&building);
    }
    python
}

/// Runs a Python `script` with the SDKs, `env` set; returns its stdout (one JSON line per
/// result, by convention). Panics with its output when it fails or takes over a minute.
pub async fn run_python(script: &str, env: &[(&str, &str)]) -> String {
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    let mut command = tokio::process::Command::new(python);
    command.arg("-c").arg(script).envs(env.iter().copied()).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the SDK script finished within a minute")
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "SDK script failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// [`run_python`] for scripts that print one JSON value per line: the values.
pub async fn run_python_json(script: &str, env: &[(&str, &str)]) -> Vec<serde_json::Value> {
    let out = run_python(script, env).await;
    out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// The config body the compatible-API tests use: SMTP mocks `primary` then `backup` on the
/// default route, one retry slot an hour (so a failover is visible as such).
pub fn two_provider_route(primary: &super::mock_smtp::MockSmtp, backup: &super::mock_smtp::MockSmtp) -> String {
    format!(
        "{}{}\n[retry]\nschedule = [\"1h\"]\n\n[[routes]]\nname = \"default\"\nproviders = [\"primary\", \"backup\"]\n",
        super::baton::smtp_provider("primary", primary, ""),
        super::baton::smtp_provider("backup", backup, "")
    )
}
