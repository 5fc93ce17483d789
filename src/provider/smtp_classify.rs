//! Classification of SMTP replies into outcome classes, following the "Generic SMTP relays"
//! table of `shared/providers.md`. Text wins over codes: providers put account problems
//! behind 4xx codes ("451 Authentication failed: Maximum credits exceeded"), and a sender
//! identity the relay does not know ("554 Message rejected: Email address is not verified.",
//! SES's SMTP interface) is `sender_unverified` at any code and stage.

use crate::outcome::{OutcomeClass, RejectReason};

/// Where in the SMTP dialogue a reply came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Connect,
    Tls,
    Auth,
    Mail,
    Rcpt,
    Data,
    /// After the message body was sent, waiting for the final reply.
    Body,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Tls => "starttls",
            Stage::Auth => "auth",
            Stage::Mail => "MAIL FROM",
            Stage::Rcpt => "RCPT TO",
            Stage::Data => "DATA",
            Stage::Body => "end of data",
        }
    }
}

/// Texts that say the envelope sender is not a verified identity at this relay.
const SENDER_TEXTS: [&str; 3] =
    ["address is not verified", "not a verified sender", "did not have authority to send from"];
const ACCOUNT_TEXTS: [&str; 6] =
    ["suspended", "not allowed to send", "credits exceeded", "quota exceeded", "account disabled", "sending paused"];
const RATE_TEXTS: [&str; 4] = ["rate exceeded", "throttl", "rate limit", "too many messages"];

/// The enhanced status code (`5.1.1`) at the start of a reply text, if any.
pub fn enhanced_code(text: &str) -> Option<(u8, u16, u16)> {
    let word = text.split_whitespace().next()?;
    let mut parts = word.split('.');
    let class = parts.next()?.parse().ok()?;
    let subject = parts.next()?.parse().ok()?;
    let detail = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !matches!(class, 2 | 4 | 5) {
        return None;
    }
    Some((class, subject, detail))
}

/// Texts of a refused RCPT that say the mailbox does not exist (for relays without enhanced
/// status codes).
const NO_MAILBOX_TEXTS: [&str; 6] =
    ["user unknown", "no such user", "unknown user", "does not exist", "mailbox unavailable", "invalid recipient"];

/// Why a recipient was refused for good, from its `5xx` reply: `5.1.x` (bad mailbox, bad
/// domain, bad syntax) and mailbox-disabled `5.2.1` say the address is invalid; `5.7.x` is a
/// policy block (content, reputation), which says nothing about the address.
pub fn reject_reason(code: u16, text: &str) -> RejectReason {
    match enhanced_code(text) {
        Some((5, 1, _)) | Some((5, 2, 1)) => RejectReason::Invalid,
        Some((5, 7, _)) => RejectReason::Blocked,
        Some(_) => RejectReason::Other,
        None if code == 550 || code == 553 => {
            let lower = text.to_ascii_lowercase();
            match NO_MAILBOX_TEXTS.iter().any(|t| lower.contains(t)) {
                true => RejectReason::Invalid,
                false => RejectReason::Other,
            }
        }
        None => RejectReason::Other,
    }
}

/// "452 4.5.3 Too many recipients": the rest go in another transaction.
pub fn is_too_many_recipients(code: u16, text: &str) -> bool {
    code == 452 && (enhanced_code(text) == Some((4, 5, 3)) || text.to_ascii_lowercase().contains("too many recipients"))
}

/// Classifies a negative SMTP reply `code text` received at `stage`.
pub fn classify(stage: Stage, code: u16, text: &str) -> OutcomeClass {
    let lower = text.to_ascii_lowercase();
    if SENDER_TEXTS.iter().any(|t| lower.contains(t)) {
        return OutcomeClass::SenderUnverified;
    }
    if ACCOUNT_TEXTS.iter().any(|t| lower.contains(t)) {
        return OutcomeClass::Account;
    }
    if (400..500).contains(&code) && RATE_TEXTS.iter().any(|t| lower.contains(t)) {
        return OutcomeClass::RateLimited;
    }
    let enhanced = enhanced_code(text);
    match code {
        530 | 534 | 535 | 538 => return OutcomeClass::Account,
        554 if enhanced == Some((5, 7, 1)) && (stage != Stage::Rcpt || lower.contains("relay")) => {
            return OutcomeClass::Account;
        }
        552 if enhanced == Some((5, 3, 4)) || matches!(stage, Stage::Data | Stage::Body | Stage::Mail) => {
            return OutcomeClass::BadRequest;
        }
        _ => {}
    }
    if (400..500).contains(&code) {
        return OutcomeClass::Transient;
    }
    if !(500..600).contains(&code) {
        // Not a negative reply at all (or garbage): treat as a temporary provider problem.
        return OutcomeClass::Transient;
    }
    match stage {
        Stage::Rcpt => {
            let policy = matches!(enhanced, Some((5, 7, _)));
            if policy && ["relay", "authentication", "unauthenticated", "sender"].iter().any(|t| lower.contains(t)) {
                OutcomeClass::Account
            } else {
                OutcomeClass::RecipientRejected
            }
        }
        Stage::Mail if code == 501 || code == 555 => OutcomeClass::BadRequest,
        // The provider refuses our sender, our login, our TLS or our connection: account/config.
        Stage::Connect | Stage::Tls | Stage::Auth | Stage::Mail => OutcomeClass::Account,
        Stage::Data | Stage::Body => OutcomeClass::BadRequest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use OutcomeClass::*;

    #[test]
    fn providers_md_table() {
        // Recipients.
        assert_eq!(classify(Stage::Rcpt, 550, "5.1.1 <bob@example.net>: User unknown"), RecipientRejected);
        assert_eq!(classify(Stage::Rcpt, 551, "5.1.6 User has moved"), RecipientRejected);
        assert_eq!(classify(Stage::Rcpt, 553, "5.1.3 Bad recipient address syntax"), RecipientRejected);
        // Account.
        assert_eq!(classify(Stage::Auth, 535, "5.7.8 Authentication credentials invalid"), Account);
        assert_eq!(classify(Stage::Mail, 530, "5.7.0 Authentication required"), Account);
        assert_eq!(classify(Stage::Auth, 534, "5.7.9 Authentication mechanism is too weak"), Account);
        assert_eq!(classify(Stage::Auth, 538, "5.7.11 Encryption required"), Account);
        assert_eq!(classify(Stage::Rcpt, 554, "5.7.1 Relay access denied"), Account);
        assert_eq!(classify(Stage::Body, 554, "5.7.1 Your account has been suspended"), Account);
        assert_eq!(classify(Stage::Mail, 451, "Authentication failed: Maximum credits exceeded"), Account);
        assert_eq!(classify(Stage::Mail, 421, "Domain mg.example.com is not allowed to send: suspended"), Account);
        assert_eq!(classify(Stage::Body, 554, "Message rejected: Sending suspended for this account."), Account);
        assert_eq!(classify(Stage::Body, 454, "Throttling failure: Daily message quota exceeded."), Account);
        assert_eq!(classify(Stage::Mail, 550, "Unauthenticated senders not allowed"), Account);
        // Sender identity.
        assert_eq!(
            classify(
                Stage::Body,
                554,
                "Message rejected: Email address is not verified. The following identities failed the check in region US-EAST-1: app@example.com"
            ),
            SenderUnverified
        );
        assert_eq!(classify(Stage::Mail, 553, "5.7.1 <app@example.com>: not a verified sender"), SenderUnverified);
        assert_eq!(
            classify(Stage::Rcpt, 550, "5.7.1 Did not have authority to send from email app@example.com"),
            SenderUnverified
        );
        // Rate limits.
        assert_eq!(classify(Stage::Body, 454, "Throttling failure: Maximum sending rate exceeded."), RateLimited);
        assert_eq!(classify(Stage::Mail, 450, "4.7.0 rate limit reached, slow down"), RateLimited);
        // Transient.
        assert_eq!(classify(Stage::Auth, 454, "4.7.0 Temporary authentication failure"), Transient);
        assert_eq!(classify(Stage::Connect, 421, "4.3.2 Service not available"), Transient);
        assert_eq!(classify(Stage::Body, 451, "4.3.0 Temporary local problem"), Transient);
        assert_eq!(classify(Stage::Rcpt, 450, "4.2.0 Mailbox busy"), Transient);
        // Bad request.
        assert_eq!(classify(Stage::Body, 552, "5.3.4 Message size exceeds fixed limit"), BadRequest);
        assert_eq!(classify(Stage::Mail, 552, "5.3.4 Message size exceeds fixed limit"), BadRequest);
        assert_eq!(classify(Stage::Body, 554, "5.6.0 Malformed message"), BadRequest);
    }

    #[test]
    fn too_many_recipients() {
        assert!(is_too_many_recipients(452, "4.5.3 Too many recipients"));
        assert!(is_too_many_recipients(452, "Too many recipients received this hour"));
        assert!(!is_too_many_recipients(452, "4.3.1 Insufficient system storage"));
    }

    #[test]
    fn enhanced_codes() {
        assert_eq!(enhanced_code("5.1.1 no"), Some((5, 1, 1)));
        assert_eq!(enhanced_code("hello"), None);
        assert_eq!(enhanced_code("1.2.3 x"), None);
    }
}
