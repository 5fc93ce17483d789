//! Every reply the SMTP listener sends, in one place, each with its RFC 3463 enhanced status
//! code. Replies that close the connection (421) name the host, as RFC 5321 §4.2 asks.

pub const OK: &str = "250 2.0.0 Ok";
pub const SENDER_OK: &str = "250 2.1.0 Sender ok";
pub const RECIPIENT_OK: &str = "250 2.1.5 Recipient ok";
pub const RESET_OK: &str = "250 2.0.0 Reset";
pub const BYE: &str = "221 2.0.0 Bye";
pub const VRFY: &str = "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery";
pub const START_DATA: &str = "354 End data with <CR><LF>.<CR><LF>";
pub const READY_TLS: &str = "220 2.0.0 Ready to start TLS";
pub const AUTH_OK: &str = "235 2.7.0 Authentication successful";
/// `334` with an empty challenge (AUTH PLAIN without an initial response).
pub const AUTH_CONTINUE: &str = "334 ";
/// `334 Username:` / `334 Password:`, base64-encoded (AUTH LOGIN).
pub const AUTH_USERNAME: &str = "334 VXNlcm5hbWU6";
pub const AUTH_PASSWORD: &str = "334 UGFzc3dvcmQ6";

// Refusals of the message or the client.
pub const AUTH_REQUIRED: &str = "530 5.7.0 Authentication required";
/// RFC 3207 §4: this connection must be encrypted before the client can authenticate.
pub const STARTTLS_FIRST: &str = "530 5.7.0 Must issue a STARTTLS command first";
pub const ENCRYPTION_REQUIRED: &str = "538 5.7.11 Encryption required for requested authentication mechanism";
pub const BAD_CREDENTIALS: &str = "535 5.7.8 Authentication credentials invalid";
/// RFC 4954 §6: the address or username is blocked for now after too many failures; the
/// credentials were not checked.
pub const AUTH_BLOCKED: &str = "454 4.7.0 Temporary authentication failure";
pub const AUTH_CANCELLED: &str = "501 5.7.0 Authentication cancelled";
pub const AUTH_BAD_BASE64: &str = "501 5.5.2 Cannot decode the authentication response";
pub const AUTH_UNSUPPORTED: &str = "504 5.5.4 Unrecognized authentication type (PLAIN and LOGIN are supported)";
pub const AUTH_ALREADY: &str = "503 5.5.1 Already authenticated";
pub const AUTH_IN_TRANSACTION: &str = "503 5.5.1 AUTH is not permitted during a mail transaction";
pub const SENDER_NOT_ALLOWED: &str = "550 5.7.1 Sender address not allowed for this client";
pub const HEADER_SENDER_NOT_ALLOWED: &str = "550 5.7.1 From: or Sender: header address not allowed for this client";
pub const NULL_SENDER: &str = "550 5.7.1 Null sender not accepted: bounces are not submissions";
pub const TOO_MANY_RECIPIENTS: &str = "452 4.5.3 Too many recipients";
pub const TOO_BIG: &str = "552 5.3.4 Message size exceeds fixed maximum message size";
pub const SPOOL_FULL: &str = "452 4.3.1 Insufficient system storage, try again later";
pub const INTERNAL: &str = "451 4.3.0 Internal error: message not accepted, try again later";
pub const NEEDS_SMTPUTF8: &str = "553 5.6.7 Non-ASCII address requires SMTPUTF8";
pub const BAD_SENDER: &str = "501 5.1.7 Bad sender address syntax";
pub const BAD_RECIPIENT: &str = "501 5.1.3 Bad recipient address syntax";
pub const BINARY_UNSUPPORTED: &str = "555 5.5.4 BODY=BINARYMIME is not supported";
pub const REQUIRETLS_UNSUPPORTED: &str = "555 5.5.4 REQUIRETLS is not supported";

// Syntax and sequence errors.
pub const LINE_TOO_LONG: &str = "500 5.5.2 Line too long";
pub const UNKNOWN_COMMAND: &str = "500 5.5.2 Command not recognized";
pub const NOT_IMPLEMENTED: &str = "502 5.5.1 Command not implemented";
pub const STARTTLS_UNAVAILABLE: &str = "502 5.5.1 STARTTLS not available";
pub const TLS_ALREADY: &str = "503 5.5.1 TLS already active";
pub const SEND_HELO_FIRST: &str = "503 5.5.1 Send EHLO/HELO first";
pub const NESTED_MAIL: &str = "503 5.5.1 Nested MAIL command";
pub const NEED_MAIL: &str = "503 5.5.1 Need MAIL command";
pub const NO_VALID_RECIPIENTS: &str = "554 5.5.1 No valid recipients";
pub const BDAT_AFTER_DATA_MIX: &str = "503 5.5.1 DATA cannot be used after BDAT in one transaction";
pub const NOT_IN_TRANSACTION: &str = "503 5.5.1 Command not permitted during a mail transaction";
pub const UNSUPPORTED_PARAMETER: &str = "555 5.5.4 Unsupported parameter";

/// A message with NUL or a bare CR (RFC 5321 §2.3.8: CR only as part of CRLF); `why` says
/// which, e.g. "contains a NUL character".
pub fn unsafe_content(why: &str) -> String {
    format!("554 5.6.0 Message {why}")
}

/// `501 5.5.4 Syntax: <what is expected>`.
pub fn syntax(expected: &str) -> String {
    format!("501 5.5.4 Syntax: {expected}")
}

pub fn greeting(host: &str) -> String {
    format!("220 {host} ESMTP Baton")
}

pub fn queued(id: &str) -> String {
    format!("250 2.0.0 Ok: queued as {id}")
}

/// Replies that end the session.
pub fn shutting_down(host: &str) -> String {
    format!("421 4.3.2 {host} Service shutting down, try again later")
}

pub fn idle_timeout(host: &str) -> String {
    format!("421 4.4.2 {host} Idle timeout, closing connection")
}

/// A command line took longer than `smtp.command_timeout` (RFC 5321 §4.5.3.2.7).
pub fn command_timeout(host: &str) -> String {
    format!("421 4.4.2 {host} Command not received in time, closing connection")
}

/// Message content took longer than `smtp.data_timeout`.
pub fn data_timeout(host: &str) -> String {
    format!("421 4.4.2 {host} Message content not received in time, closing connection")
}

pub fn too_many_errors(host: &str) -> String {
    format!("421 4.7.0 {host} Too many errors, closing connection")
}

pub fn too_many_auth_failures(host: &str) -> String {
    format!("421 4.7.0 {host} Too many failed authentication attempts, closing connection")
}

pub fn too_many_connections(host: &str) -> String {
    format!("421 4.7.0 {host} Too many connections, try again later")
}

pub fn too_many_connections_from_ip(host: &str) -> String {
    format!("421 4.7.0 {host} Too many connections from your address, try again later")
}
