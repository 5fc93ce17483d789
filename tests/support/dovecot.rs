#![allow(dead_code)]
//! A real IMAP server for the canary tests: Debian's Dovecot (`dovecot-imapd`), started from a
//! throwaway config on a free 127.0.0.1 port with one mailbox user, and `dovecot-lda` to
//! deliver into it (what a scripted provider does when it "delivers"). Missing Dovecot fails
//! the test with what to install: no silent skip.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const USER: &str = "canary@canary.example.com";
pub const PASSWORD: &str = "canary-imap-secret-0001";

pub struct Dovecot {
    pub port: u16,
    dir: tempfile::TempDir,
    conf: PathBuf,
    child: Option<Child>,
}

fn binary(candidates: &[&str]) -> PathBuf {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{} not found: install Debian's dovecot-imapd (.ci/run installs it)", candidates[0]))
}

fn id(flag: &str, name: Option<&str>) -> String {
    let mut c = Command::new("id");
    c.arg(flag);
    if let Some(n) = name {
        c.arg(n);
    }
    String::from_utf8(c.output().expect("id runs").stdout).unwrap().trim().to_string()
}

impl Dovecot {
    /// Starts Dovecot with the mailbox `USER` / `PASSWORD`, IMAP without TLS on 127.0.0.1.
    pub fn start() -> Dovecot {
        let dovecot = binary(&["/usr/sbin/dovecot"]);
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for sub in ["run", "state", "home"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        // Dovecot's unprivileged processes must reach the directory.
        Command::new("chmod").arg("755").arg(root).status().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        std::fs::write(root.join("users"), format!("{USER}:{{PLAIN}}{PASSWORD}\n")).unwrap();
        // As root, Dovecot runs its login and internal processes as its own users and refuses
        // uid 0 for mail: the mailbox belongs to `nobody`. Otherwise everything runs as us.
        let (login, internal, group, uid, gid) = if id("-u", None) == "0" {
            Command::new("chown").args(["-R", "65534:65534"]).arg(root.join("home")).status().unwrap();
            (
                "dovenull".to_string(),
                "dovecot".to_string(),
                "dovecot".to_string(),
                "65534".to_string(),
                "65534".to_string(),
            )
        } else {
            let user = id("-un", None);
            (user.clone(), user, id("-gn", None), id("-u", None), id("-g", None))
        };
        let conf = root.join("dovecot.conf");
        let r = root.display();
        std::fs::write(
            &conf,
            format!(
                r#"base_dir = {r}/run
state_dir = {r}/state
log_path = {r}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 0
default_login_user = {login}
default_internal_user = {internal}
default_internal_group = {group}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {r}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={r}/home/%u
}}
mail_location = maildir:~/Maildir
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
  chroot =
}}
service anvil {{
  chroot =
}}
"#
            ),
        )
        .unwrap();
        let child = Command::new(dovecot)
            .args(["-F", "-c"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dovecot starts");
        let mut d = Dovecot { port, dir, conf, child: Some(child) };
        d.wait_listening();
        d
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "dovecot did not listen on {}: {}", self.port, self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    /// Delivers `message` into the mailbox with `dovecot-lda`, as a provider would.
    pub fn deliver(conf: &Path, message: &[u8]) {
        let lda = binary(&["/usr/lib/dovecot/dovecot-lda", "/usr/libexec/dovecot/dovecot-lda"]);
        let mut child = Command::new(lda)
            .arg("-c")
            .arg(conf)
            .args(["-d", USER, "-f", "sender@example.com"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dovecot-lda runs");
        child.stdin.take().unwrap().write_all(message).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "dovecot-lda failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn conf(&self) -> PathBuf {
        self.conf.clone()
    }

    /// Messages in the mailbox (delivered and not yet deleted by an IMAP client).
    pub fn message_count(&self) -> usize {
        let maildir = self.dir.path().join("home").join(USER).join("Maildir");
        ["new", "cur"].iter().map(|d| std::fs::read_dir(maildir.join(d)).map(|r| r.count()).unwrap_or(0)).sum()
    }

    /// Stops the server (the mailbox stays on disk): SIGTERM, which Dovecot's master passes on
    /// to its processes before it exits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
    }
}
