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
    lines: mpsc::Receiver<String>,
}

impl BatonProcess {
    /// Starts `baton serve --config PATH --log-format json` and waits for its listening line.
    pub fn spawn(config: &Path) -> BatonProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
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
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                let _ = child.wait();
                panic!("baton did not start; log:\n{}", seen.join("\n"));
            };
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && v["message"] == "baton listening"
            {
                let http = format!("http://{}", v["http"].as_str().expect("http address"));
                let admin = format!("http://{}", v["admin"].as_str().expect("admin address"));
                return BatonProcess { child, http, admin, lines: rx };
            }
            seen.push(line);
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
