//! The `file` provider: writes each message as `<dir>/<id>.eml`. Used by the default config so
//! Baton works out of the box, and as a last-resort sink.

use super::{Outbound, Provider};
use crate::config::FileProviderConfig;
use crate::health::ProbeReport;
use crate::outcome::{OutcomeClass, SendReport};
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct FileProvider {
    name: String,
    dir: PathBuf,
}

impl FileProvider {
    pub fn new(name: &str, config: &FileProviderConfig) -> Self {
        FileProvider { name: name.to_string(), dir: config.dir.clone() }
    }
}

/// Writes to a temporary file, fsyncs, renames into place and fsyncs the directory, so a reader
/// never sees a half-written `.eml` and a crash never leaves one.
fn write_atomically(dir: &Path, file_name: &str, parts: &[&[u8]]) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let target = dir.join(file_name);
    let tmp = dir.join(format!(".{file_name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        for part in parts {
            f.write_all(part)?;
        }
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &target)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(target)
}

#[async_trait::async_trait]
impl Provider for FileProvider {
    fn name(&self) -> &str {
        &self.name
    }

    /// The directory exists (or can be made) and takes a file.
    async fn probe(&self) -> ProbeReport {
        let dir = self.dir.clone();
        let result = tokio::task::spawn_blocking(move || {
            let path = write_atomically(&dir, ".baton-probe", &[b"probe"])?;
            std::fs::remove_file(path)
        })
        .await;
        match result {
            Ok(Ok(())) => ProbeReport::usable("directory writable"),
            Ok(Err(e)) => {
                ProbeReport::failed(OutcomeClass::Transient, format!("cannot write to {}: {e}", self.dir.display()))
            }
            Err(e) => ProbeReport::failed(OutcomeClass::Transient, format!("probe task failed: {e}")),
        }
    }

    async fn send_batch(&self, msg: &Outbound<'_>) -> SendReport {
        // Envelope first, as Postfix's local delivery does with Return-Path / Delivered-To.
        let mut envelope = format!("Return-Path: <{}>\r\n", msg.mail_from);
        for rcpt in msg.recipients {
            envelope.push_str(&format!("X-Baton-Envelope-To: <{rcpt}>\r\n"));
        }
        let dir = self.dir.clone();
        let file_name = format!("{}.eml", msg.id);
        let body = msg.body.to_vec();
        let n = msg.recipients.len();
        let written =
            tokio::task::spawn_blocking(move || write_atomically(&dir, &file_name, &[envelope.as_bytes(), &body]))
                .await;
        // API clients see the file name, never the server's directory (it is in the log).
        match written {
            Ok(Ok(path)) => {
                let name = path.file_name().map(|f| f.to_string_lossy().into_owned());
                SendReport::delivered(n, name, "written")
            }
            Ok(Err(e)) => {
                tracing::error!(provider = %self.name, dir = %self.dir.display(), error = %e, "cannot write the message file");
                SendReport::failed(OutcomeClass::Transient, n, format!("cannot write the message file: {}", e.kind()))
            }
            Err(e) => SendReport::failed(OutcomeClass::Transient, n, format!("writer task failed: {e}")),
        }
    }
}
