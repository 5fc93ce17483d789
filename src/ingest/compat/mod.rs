//! Provider-compatible APIs: an app keeps its provider's SDK and points it at Baton. Each
//! module is "parse the provider's request into Baton's [`SendRequest`]" plus "answer in the
//! provider's shape", around the one shared path into the spool (`ingest::submit`); nothing
//! downstream knows which API a message came in through.
//!
//! [`SendRequest`]: super::compose::SendRequest

pub mod resend;

/// The APIs Baton can serve (`server.compatible_apis`; all by default).
pub const APIS: [&str; 4] = ["mandrill", "sendgrid", "postmark", "resend"];
