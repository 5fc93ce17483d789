pub mod baton;
pub mod certs;
pub mod dovecot;
pub mod mock_http;
pub mod mock_smtp;
pub mod process;
pub mod sdk;
pub mod smtp_reply;
