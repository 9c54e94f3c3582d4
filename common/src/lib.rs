//! # chorus common
//!
//! Everything the master and the secondaries share.
//!
//! # Layout
//! - [`protocol`]: the frames of the replication protocol and their length-prefixed
//!   MessagePack codec.
//! - [`storage`]: the [`storage::LogStore`] interface every node keeps its log behind,
//!   with an in-memory implementation and a conformance suite.
//! - [`replication`]: the sans-IO state machines of the master and the secondary. No
//!   sockets, no tasks, no clock: time is an argument.
//! - [`api`]: the HTTP API's request validation and response bodies, free of any web
//!   framework.
//! - [`config`]: parsing of command-line values shared by both binaries.
//! - [`metrics`]: the Prometheus recorder and the shared metric names.
//! - [`shutdown`]: the signals that stop a node.
//! - [`telemetry`]: logging set-up.
//! - [`tls`]: `--tls-cert/--tls-key/--tls-ca` turned into rustls configurations.
//! - [`web`]: actix-web glue shared by both nodes (errors, 404/405, reading the log).

pub mod api;
pub mod config;
pub mod metrics;
pub mod protocol;
pub mod replication;
pub mod shutdown;
pub mod storage;
pub mod stream;
pub mod telemetry;
pub mod tls;
pub mod web;

#[cfg(test)]
mod fuzz;
