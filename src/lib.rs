//! Baton: a multi-provider email failover relay.
//!
//! A message flows ingest → spool → delivery (router + providers) → outcome; see
//! `docs/architecture.md` for the map of which module owns what.

pub mod admin;
pub mod app;
pub mod cluster;
pub mod config;
pub mod delivery;
pub mod demo;
pub mod event;
pub mod health;
pub mod http_listener;
pub mod ingest;
pub mod metrics;
pub mod outbox;
pub mod outcome;
pub mod provider;
pub mod reload;
pub mod runtime;
pub mod shared;
pub mod spool;
pub mod suppression;
pub mod tls;
