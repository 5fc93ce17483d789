//! SMTP AUTH (RFC 4954) with the PLAIN (RFC 4616) and LOGIN mechanisms, both with or without an
//! initial response.
//!
//! Rules: AUTH needs EHLO first, is refused inside a mail transaction, and in plain text only
//! works when Baton has no certificate and the client is on this machine (otherwise
//! `538 5.7.11`). Each failure is answered after `smtp.auth_failure_delay`; after
//! `smtp.max_auth_failures` the connection is closed. Across connections, `guard.rs` counts
//! failures per address and per username and blocks both for a while (`454 4.7.0`, the
//! password unchecked, the delay kept). Passwords never reach a log line; usernames only when
//! they are configured ones (anything else is client-chosen text).

use super::guard::{Limits, Scope};
use super::io::{Deadline, Line, Phase, ReadError};
use super::reply;
use super::session::{Flow, Session};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN};
use tokio::time::Instant;

/// Why an exchange produced no credentials.
enum Exchange {
    Cancelled,
    BadEncoding,
    LineTooLong,
    Read(ReadError),
}

pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl Credentials {
    /// What a malformed PLAIN message logs in as: no user, so it counts against the address only.
    fn nobody() -> Credentials {
        Credentials { username: String::new(), password: String::new() }
    }
}

/// Decodes one base64 response into text; `=` is the empty response.
fn decode(response: &[u8]) -> Result<String, Exchange> {
    let text = std::str::from_utf8(response).map_err(|_| Exchange::BadEncoding)?.trim();
    if text == "*" {
        return Err(Exchange::Cancelled);
    }
    if text == "=" {
        return Ok(String::new());
    }
    let bytes = BASE64.decode(text).map_err(|_| Exchange::BadEncoding)?;
    String::from_utf8(bytes).map_err(|_| Exchange::BadEncoding)
}

/// PLAIN: `authzid NUL authcid NUL password`. Acting for another identity (an authzid other
/// than the login) is not supported, so it makes the credentials invalid.
fn parse_plain(message: &str) -> Option<Credentials> {
    let mut parts = message.splitn(3, '\0');
    let authzid = parts.next()?;
    let username = parts.next()?;
    let password = parts.next()?;
    if !authzid.is_empty() && authzid != username {
        return None;
    }
    Some(Credentials { username: username.to_string(), password: password.to_string() })
}

impl Session {
    pub async fn auth(&mut self, mechanism: u64, initial_response: String) -> Flow {
        if !self.helo.as_ref().is_some_and(|h| h.extended) {
            return self.error(reply::SEND_HELO_FIRST);
        }
        if self.authenticated.is_some() {
            return self.error(reply::AUTH_ALREADY);
        }
        if self.tx.is_some() {
            return self.error(reply::AUTH_IN_TRANSACTION);
        }
        if !self.auth_permitted() {
            self.count_rejection("auth");
            return self.error(reply::ENCRYPTION_REQUIRED);
        }
        let initial = (!initial_response.is_empty()).then_some(initial_response);
        let exchanged = match mechanism {
            AUTH_PLAIN => self.plain(initial).await,
            AUTH_LOGIN => self.login(initial).await,
            _ => return self.error(reply::AUTH_UNSUPPORTED),
        };
        let credentials = match exchanged {
            Ok(Some(c)) => c,
            Ok(None) => Credentials::nobody(),
            Err(Exchange::Cancelled) => return self.error(reply::AUTH_CANCELLED),
            Err(Exchange::BadEncoding) => return self.error(reply::AUTH_BAD_BASE64),
            Err(Exchange::LineTooLong) => return self.error(reply::LINE_TOO_LONG),
            Err(Exchange::Read(e)) => {
                self.read_failed(e);
                return Flow::Close;
            }
        };
        self.log_in(credentials).await
    }

    /// Decides a login: refused unchecked while its address or username is blocked, else
    /// checked against the live config.
    async fn log_in(&mut self, credentials: Credentials) -> Flow {
        let now = Instant::now();
        let ip = self.peer.ip();
        if let Some(scope) = self.guard.blocked(ip, &credentials.username, now) {
            self.shared.metrics.smtp_auth_failures.with_label_values(&[scope.refusal_reason()]).inc();
            tracing::info!(peer = %ip, scope = scope.as_str(), "SMTP AUTH refused unchecked: blocked");
            return self.auth_failed(reply::AUTH_BLOCKED).await;
        }
        let limits = Limits::from_config(&self.rt.config.smtp);
        let Some(client) = self.rt.client_by_smtp_login(&credentials.username, &credentials.password).cloned() else {
            self.shared.metrics.smtp_auth_failures.with_label_values(&["invalid_credentials"]).inc();
            let configured = self.is_smtp_user(&credentials.username);
            for scope in self.guard.failed(ip, &credentials.username, configured, &limits, now) {
                self.blocked_now(scope, &credentials.username);
            }
            return self.auth_failed(reply::BAD_CREDENTIALS).await;
        };
        self.guard.succeeded(ip, &credentials.username, &limits, now);
        tracing::debug!(peer = %self.peer, client = %client.name, "SMTP client authenticated");
        // The login, not the client: it is checked against the live config again at every
        // transaction, so a reload that removes the user or changes the password takes effect
        // on open sessions too.
        self.authenticated = Some(credentials);
        self.io.reply(reply::AUTH_OK);
        Flow::Continue
    }

    fn is_smtp_user(&self, username: &str) -> bool {
        self.rt.config.clients.iter().flat_map(|c| &c.smtp_users).any(|u| u.username == username)
    }

    /// Reports a block this session's failure started.
    fn blocked_now(&self, scope: Scope, username: &str) {
        self.shared.metrics.smtp_auth_blocks.with_label_values(&[scope.as_str()]).inc();
        let smtp = &self.rt.config.smtp;
        let (peer, block_for) = (self.peer.ip(), smtp.auth_block_for);
        match scope {
            Scope::Ip => {
                let failures = smtp.auth_failures_per_ip;
                tracing::warn!(%peer, failures, %block_for, "SMTP AUTH blocked for this address");
            }
            // A configured username (only those are counted), so safe to log.
            Scope::User => {
                let failures = smtp.auth_failures_per_user;
                tracing::warn!(%peer, username, failures, %block_for, "SMTP AUTH blocked for this username");
            }
        }
    }

    async fn plain(&mut self, initial: Option<String>) -> Result<Option<Credentials>, Exchange> {
        let response = match initial {
            Some(r) => r.into_bytes(),
            None => self.challenge(reply::AUTH_CONTINUE).await?,
        };
        Ok(parse_plain(&decode(&response)?))
    }

    async fn login(&mut self, initial: Option<String>) -> Result<Option<Credentials>, Exchange> {
        let username = match initial {
            Some(r) => decode(r.as_bytes())?,
            None => decode(&self.challenge(reply::AUTH_USERNAME).await?)?,
        };
        let password = decode(&self.challenge(reply::AUTH_PASSWORD).await?)?;
        Ok(Some(Credentials { username, password }))
    }

    /// Sends a `334` challenge and reads the client's response line.
    async fn challenge(&mut self, prompt: &str) -> Result<Vec<u8>, Exchange> {
        self.io.reply(prompt);
        let deadline = Deadline::after(self.rt.config.smtp.command_timeout.0, Phase::Command);
        match self.io.line(self.rt.config.smtp.max_line_length, Some(&self.stop), deadline).await {
            Ok(Line::Complete(line)) => Ok(line),
            Ok(Line::TooLong) => Err(Exchange::LineTooLong),
            Err(e) => Err(Exchange::Read(e)),
        }
    }

    /// Answers a refused login with `line` after the delay; closes the connection after
    /// `smtp.max_auth_failures` of them.
    async fn auth_failed(&mut self, line: &'static str) -> Flow {
        self.count_rejection("auth");
        self.auth_failures += 1;
        tracing::info!(peer = %self.peer.ip(), failures = self.auth_failures, "SMTP authentication failed");
        // Slows down guessing; other sessions are not affected.
        tokio::select! {
            _ = tokio::time::sleep(self.rt.config.smtp.auth_failure_delay.0) => {}
            _ = self.stop.cancelled() => {}
        }
        self.io.reply(line);
        if self.auth_failures >= self.rt.config.smtp.max_auth_failures {
            tracing::warn!(peer = %self.peer.ip(), failures = self.auth_failures, "SMTP connection closed after repeated authentication failures");
            let bye = reply::too_many_auth_failures(self.hostname());
            self.io.reply(&bye);
            return Flow::Close;
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_message_forms() {
        let c = parse_plain("\0user\0pa ss").unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("user", "pa ss"));
        assert!(parse_plain("user\0user\0pw").is_some(), "authzid equal to the login is fine");
        assert!(parse_plain("admin\0user\0pw").is_none(), "acting for someone else is refused");
        assert!(parse_plain("user\0pw").is_none());
    }

    #[test]
    fn decoding() {
        assert!(matches!(decode(b"*"), Err(Exchange::Cancelled)));
        assert!(matches!(decode(b"=").as_deref(), Ok("")));
        assert!(matches!(decode(b"dXNlcg==").as_deref(), Ok("user")));
        assert!(matches!(decode(b"not base64!"), Err(Exchange::BadEncoding)));
    }
}
