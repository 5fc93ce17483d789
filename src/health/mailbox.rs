//! The canary mailbox, read over IMAP (`[canary.imap]`, with the kept `async-imap` crate): finds
//! the canaries that arrived, by their `X-Baton-Canary` header, and deletes them with any canary
//! older than a day. One [`Mailbox`] keeps its session open between reads and opens a new one
//! after any error. Its promise: a read either returns every canary token in the mailbox, or an
//! error — never a partial answer that would make an arrived canary look lost.

use crate::config::{ImapConfig, TlsMode};
use async_imap::{Client, Session};
use futures::TryStreamExt;
use std::fmt::Debug;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// The header a canary carries its token in.
pub const HEADER: &str = "X-Baton-Canary";

/// Longest a connect, login or read may take.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Canaries older than this are deleted whoever sent them (another Baton, an earlier run).
const STALE_DAYS: u64 = 1;

/// An open session over plain TCP or TLS.
enum Open {
    Plain(Session<TcpStream>),
    Tls(Box<Session<TlsStream<TcpStream>>>),
}

pub struct Mailbox {
    config: ImapConfig,
    session: Option<Open>,
}

impl Mailbox {
    pub fn new(config: ImapConfig) -> Mailbox {
        Mailbox { config, session: None }
    }

    /// The settings this mailbox reads with (a reload with other settings makes a new one).
    pub fn config(&self) -> &ImapConfig {
        &self.config
    }

    /// Tokens of the canaries in the mailbox; the ones in `ours` (those this Baton is waiting
    /// for) and every canary older than a day are deleted. An error drops the session.
    pub async fn read(&mut self, ours: &(dyn Fn(&str) -> bool + Sync)) -> Result<Vec<String>, String> {
        let result = tokio::time::timeout(IO_TIMEOUT * 2, self.read_once(ours))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {:?}", IO_TIMEOUT * 2)));
        if result.is_err() {
            self.session = None;
        }
        result
    }

    async fn read_once(&mut self, ours: &(dyn Fn(&str) -> bool + Sync)) -> Result<Vec<String>, String> {
        if self.session.is_none() {
            self.session = Some(connect(&self.config).await?);
        }
        let mailbox = self.config.mailbox.clone();
        match self.session.as_mut().expect("just opened") {
            Open::Plain(s) => collect(s, &mailbox, ours).await,
            Open::Tls(s) => collect(s, &mailbox, ours).await,
        }
    }
}

async fn timed<T, E: std::fmt::Display>(what: &str, f: impl Future<Output = Result<T, E>>) -> Result<T, String> {
    match tokio::time::timeout(IO_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {IO_TIMEOUT:?}")),
    }
}

/// Connects, reads the greeting, upgrades to TLS as configured, and logs in.
async fn connect(c: &ImapConfig) -> Result<Open, String> {
    let tcp = timed("connect", TcpStream::connect((c.host.as_str(), c.port))).await?;
    match c.tls {
        TlsMode::None => {
            let mut client = Client::new(tcp);
            greeting(&mut client).await?;
            Ok(Open::Plain(login(client, c).await?))
        }
        TlsMode::Tls => {
            let tls = tls(c, tcp).await?;
            let mut client = Client::new(tls);
            greeting(&mut client).await?;
            Ok(Open::Tls(Box::new(login(client, c).await?)))
        }
        TlsMode::Starttls => {
            let mut client = Client::new(tcp);
            greeting(&mut client).await?;
            timed("STARTTLS", client.run_command_and_check_ok("STARTTLS", None)).await?;
            // After STARTTLS the server sends no second greeting.
            let client = Client::new(tls(c, client.into_inner()).await?);
            Ok(Open::Tls(Box::new(login(client, c).await?)))
        }
    }
}

async fn tls(c: &ImapConfig, tcp: TcpStream) -> Result<TlsStream<TcpStream>, String> {
    let connector = crate::tls::client_connector(c.ca_file.as_deref())?;
    let name = rustls_pki_types::ServerName::try_from(c.host.clone()).map_err(|e| format!("host: {e}"))?;
    timed("TLS handshake", connector.connect(name, tcp)).await
}

async fn greeting<T: AsyncRead + AsyncWrite + Unpin + Debug + Send>(client: &mut Client<T>) -> Result<(), String> {
    match tokio::time::timeout(IO_TIMEOUT, client.read_response()).await {
        Ok(Some(Ok(_))) => Ok(()),
        Ok(Some(Err(e))) => Err(format!("greeting: {e}")),
        Ok(None) => Err("greeting: the server closed the connection".into()),
        Err(_) => Err(format!("greeting: none within {IO_TIMEOUT:?}")),
    }
}

/// Logs in; the error never contains the password.
async fn login<T: AsyncRead + AsyncWrite + Unpin + Debug + Send>(
    client: Client<T>,
    c: &ImapConfig,
) -> Result<Session<T>, String> {
    match tokio::time::timeout(IO_TIMEOUT, client.login(&c.username, &c.password)).await {
        Ok(Ok(session)) => Ok(session),
        Ok(Err((e, _))) => Err(format!("login as {:?} refused: {e}", c.username)),
        Err(_) => Err(format!("login: no answer within {IO_TIMEOUT:?}")),
    }
}

/// One read: the tokens of all canaries, and deletion of ours and of stale ones.
async fn collect<T: AsyncRead + AsyncWrite + Unpin + Debug + Send>(
    s: &mut Session<T>,
    mailbox: &str,
    ours: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Vec<String>, String> {
    // SELECT again each time: it refreshes the mailbox view, so new messages are seen.
    timed("SELECT", s.select(mailbox)).await?;
    let found = timed("SEARCH", s.uid_search(format!("HEADER {HEADER} \"\""))).await?;
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let set = uid_set(found.into_iter());
    let query = format!("(UID BODY.PEEK[HEADER.FIELDS ({HEADER})])");
    let fetched: Vec<(u32, String)> = timed("FETCH", async {
        let stream = s.uid_fetch(&set, &query).await?;
        let all: Vec<_> = stream.try_collect().await?;
        Ok::<_, async_imap::error::Error>(
            all.iter().filter_map(|f| Some((f.uid?, token(f.header().or_else(|| f.body())?)?))).collect(),
        )
    })
    .await?;
    let before = imap_date(std::time::SystemTime::now() - Duration::from_secs(STALE_DAYS * 86_400));
    let stale = timed("SEARCH", s.uid_search(format!("HEADER {HEADER} \"\" BEFORE {before}"))).await?;
    let delete: Vec<u32> = fetched.iter().filter(|(_, t)| ours(t)).map(|(uid, _)| *uid).chain(stale).collect();
    if !delete.is_empty() {
        let set = uid_set(delete.into_iter());
        let deleted = timed("STORE", async {
            let stream = s.uid_store(&set, "+FLAGS.SILENT (\\Deleted)").await?;
            let _: Vec<_> = stream.try_collect().await?;
            let expunged = s.expunge().await?;
            let _: Vec<_> = expunged.try_collect().await?;
            Ok::<_, async_imap::error::Error>(())
        })
        .await;
        // The tokens were read: they count even if deleting failed (the next read deletes them).
        if let Err(e) = deleted {
            tracing::warn!(error = %e, "cannot delete canaries from the canary mailbox");
        }
    }
    Ok(fetched.into_iter().map(|(_, t)| t).collect())
}

/// An IMAP SEARCH date (`2-Dec-2026`), UTC.
fn imap_date(at: std::time::SystemTime) -> String {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let text = humantime::format_rfc3339_seconds(at).to_string(); // 2026-12-02T10:00:00Z
    let month: usize = text[5..7].parse().unwrap_or(1);
    let day: u32 = text[8..10].parse().unwrap_or(1);
    format!("{day}-{}-{}", MONTHS[month.clamp(1, 12) - 1], &text[0..4])
}

/// `1,5,7` for UIDs.
fn uid_set(uids: impl Iterator<Item = u32>) -> String {
    uids.map(|u| u.to_string()).collect::<Vec<_>>().join(",")
}

/// The token in an `X-Baton-Canary:` header block.
fn token(header: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(header);
    let line = text.lines().find(|l| l.len() > HEADER.len() && l[..HEADER.len()].eq_ignore_ascii_case(HEADER))?;
    let value = line[HEADER.len()..].strip_prefix(':')?.trim();
    (!value.is_empty()).then(|| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_read_from_the_header_block() {
        assert_eq!(token(b"X-Baton-Canary: 01JABC\r\n\r\n").as_deref(), Some("01JABC"));
        assert_eq!(token(b"x-baton-canary:tok\r\n").as_deref(), Some("tok"));
        assert_eq!(token(b"Subject: x\r\n\r\n"), None);
        assert_eq!(uid_set([3, 9].into_iter()), "3,9");
        let at = humantime::parse_rfc3339("2026-12-02T23:59:59Z").unwrap();
        assert_eq!(imap_date(at), "2-Dec-2026");
    }
}
