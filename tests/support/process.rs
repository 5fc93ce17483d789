#![allow(dead_code)]
//! Runs the real `baton` binary as a child process (for crash, signal and CLI tests).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub struct BatonProcess {
    pub child: Child,
    pub http: String,
    pub admin: String,
    /// `host:port` of `server.smtp_listen`, when configured.
    pub smtp: Option<String>,
    lines: mpsc::Receiver<String>,
}

impl BatonProcess {
    /// Starts `baton serve --config PATH --log-format json` and waits for its listening line.
    pub fn spawn(config: &Path) -> BatonProcess {
        BatonProcess::spawn_with_prefix(config, &[])
    }

    /// Like [`BatonProcess::spawn`], run through a wrapper command (e.g. `prlimit --nofile=…`).
    pub fn spawn_with_prefix(config: &Path, prefix: &[&str]) -> BatonProcess {
        match BatonProcess::launch(config, prefix, Duration::from_secs(30)) {
            Ok(baton) => baton,
            Err(exited) => panic!("baton did not start ({}); log:\n{}", exited.status, exited.log.join("\n")),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the process to exit; panics after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "baton did not exit within {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Log lines printed so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }
}

impl Drop for BatonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Baton that exited instead of starting: its exit status and everything it logged.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    pub log: Vec<String>,
}

impl BatonProcess {
    /// Starts Baton like [`BatonProcess::spawn`], but a Baton that refuses to start is an
    /// answer, not a failure: `Err` with its exit status and log. Panics if it neither starts
    /// nor exits within `within` (a hang).
    pub fn start_or_exit(config: &Path, within: Duration) -> Result<BatonProcess, Exited> {
        BatonProcess::launch(config, &[], within)
    }

    /// Starts `baton serve` (through `prefix`, when given) and waits for its listening line
    /// or its exit.
    fn launch(config: &Path, prefix: &[&str], within: Duration) -> Result<BatonProcess, Exited> {
        let binary = env!("CARGO_BIN_EXE_baton");
        let mut command = match prefix.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        let mut child = command
            .args(["serve", "--log-format", "json", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("baton binary starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + within;
        let mut log = Vec::new();
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    let v = serde_json::from_str::<serde_json::Value>(&line).unwrap_or_default();
                    if v["message"] == "baton listening" {
                        let http = format!("http://{}", v["http"].as_str().expect("http address"));
                        let admin = format!("http://{}", v["admin"].as_str().expect("admin address"));
                        let smtp = v["smtp"].as_str().map(str::to_string);
                        return Ok(BatonProcess { child, http, admin, smtp, lines: replay(log, rx) });
                    }
                    log.push(line);
                }
                // stderr closed: the process is exiting.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().expect("wait");
                    return Err(Exited { status, log });
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("baton neither started nor exited within {within:?}; log:\n{}", log.join("\n"));
                }
            }
        }
    }
}

/// A receiver that yields `first`, then whatever `rest` yields (so [`BatonProcess::log_lines`]
/// includes what was logged while starting).
fn replay(first: Vec<String>, rest: mpsc::Receiver<String>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    for line in first {
        let _ = tx.send(line);
    }
    std::thread::spawn(move || {
        for line in rest {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}
