#![allow(dead_code)]
//! The providers' official SDKs as test clients. Python SDKs live in a venv under
//! `target/sdk/python`, made on first use from `tests/sdk/requirements.txt` (pinned versions,
//! from PyPI) and rebuilt when that file changes; Node SDKs live in an npm prefix under
//! `target/sdk/node`, installed by `npm ci` from `tests/sdk/package.json` and its committed
//! lock, and rebuilt when either changes. An SDK folder that cannot be made fails the test:
//! no silent skip.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

const REQUIREMENTS: &str = include_str!("../sdk/requirements.txt");
const PACKAGE_JSON: &str = include_str!("../sdk/package.json");
const PACKAGE_LOCK: &str = include_str!("../sdk/package-lock.json");

/// Test binaries run their tests in parallel: one builds the venv, the others wait.
static BUILD: Mutex<()> = Mutex::new(());
/// The same for the npm prefix.
static NODE_BUILD: Mutex<()> = Mutex::new(());

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// Runs `program` in `dir`; panics with its output when it fails, or naming what is `needed`
/// when it cannot start.
fn run(program: &Path, args: &[&str], dir: &Path, needed: &str) {
    let out =
        std::process::Command::new(program).args(args).current_dir(dir).output().unwrap_or_else(|e| {
            panic!("cannot run {}: {e} ({needed} is needed; .ci/run installs it)", program.display())
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
    let (sdk_dir, needed) = (building.parent().unwrap(), "python3 with venv and pip");
    run(Path::new("python3"), &["-m", "venv", building.to_str().unwrap()], sdk_dir, needed);
    let requirements = building.join("requirements.txt");
    std::fs::write(&requirements, REQUIREMENTS).unwrap();
    let pip_python = building.join("bin").join("python");
    run(
        &pip_python,
        &["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", requirements.to_str().unwrap()],
        sdk_dir,
        needed,
    );
    let _ = std::fs::remove_dir_all(&venv);
    if std::fs::rename(&building, &venv).is_err() {
        // Another binary won the race; its venv is the same.
        let _ = std::fs::remove_dir_all(&building);
    }
    python
}

/// The npm prefix (`package.json`, its lock and `node_modules`) with the pinned Node SDKs.
pub fn node_prefix() -> PathBuf {
    let _one = NODE_BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let prefix = target_dir().join("sdk").join("node");
    let marker = prefix.join("installed-from.txt");
    let wanted = format!("{PACKAGE_JSON}\n{PACKAGE_LOCK}");
    let installed = std::fs::read_to_string(&marker).is_ok_and(|m| m == wanted);
    if installed && prefix.join("node_modules").is_dir() {
        return prefix;
    }
    // Built beside, then renamed into place, as the venv is.
    let building = target_dir().join("sdk").join(format!("node.building.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    std::fs::create_dir_all(&building).unwrap();
    std::fs::write(building.join("package.json"), PACKAGE_JSON).unwrap();
    std::fs::write(building.join("package-lock.json"), PACKAGE_LOCK).unwrap();
    let needed = "Node.js 20+ with npm";
    run(Path::new("node"), &["--version"], &building, needed);
    // `npm ci` installs exactly the lock, or fails when it does not match package.json.
    run(
        Path::new("npm"),
        &["ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
        &building,
        needed,
    );
    // Written last: a prefix with a marker is whole.
    std::fs::write(building.join("installed-from.txt"), &wanted).unwrap();
    let _ = std::fs::remove_dir_all(&prefix);
    if std::fs::rename(&building, &prefix).is_err() {
        // Another binary won the race; its prefix is the same.
        let _ = std::fs::remove_dir_all(&building);
    }
    prefix
}

/// Runs a Python `script` with the SDKs, `env` set; returns its stdout (one JSON line per
/// result, by convention). Panics with its output when it fails or takes over a minute.
pub async fn run_python(script: &str, env: &[(&str, &str)]) -> String {
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    let mut command = tokio::process::Command::new(python);
    command.arg("-c").arg(script).envs(env.iter().copied());
    stdout_of(command).await
}

/// [`run_python`] for scripts that print one JSON value per line: the values.
pub async fn run_python_json(script: &str, env: &[(&str, &str)]) -> Vec<serde_json::Value> {
    json_lines(&run_python(script, env).await)
}

/// Runs a Node `script` (an ES module: `import`, top-level `await`) with the SDKs, `env` set;
/// returns its stdout. Panics with its output when it fails or takes over a minute.
pub async fn run_node(script: &str, env: &[(&str, &str)]) -> String {
    let prefix = tokio::task::spawn_blocking(node_prefix).await.unwrap();
    let mut command = tokio::process::Command::new("node");
    // A module given with -e resolves bare imports from the working directory: the prefix.
    command.args(["--input-type=module", "-e", script]).current_dir(prefix).envs(env.iter().copied());
    stdout_of(command).await
}

/// [`run_node`] for scripts that print one JSON value per line: the values.
pub async fn run_node_json(script: &str, env: &[(&str, &str)]) -> Vec<serde_json::Value> {
    json_lines(&run_node(script, env).await)
}

/// Runs an SDK script to its end (a minute at most) and returns its stdout; panics with its
/// output when it fails.
async fn stdout_of(mut command: tokio::process::Command) -> String {
    command.kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the SDK script finished within a minute")
        .unwrap_or_else(|e| panic!("{:?} runs: {e}", command.as_std().get_program()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "SDK script failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

fn json_lines(out: &str) -> Vec<serde_json::Value> {
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
