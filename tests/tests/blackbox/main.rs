//! Black-box tests: the real binaries on loopback ports they pick at run time, driven
//! through HTTP and raw TCP only, as a user (or a misbehaving peer) would.

mod admin;
mod bad_input;
mod chat;
mod checksum;
mod client;
mod cluster_key;
mod durability;
mod failover;
mod faults;
mod health;
mod hostile;
mod membership;
mod metrics;
mod openapi;
mod replication;
mod status;
mod stream;
mod tls;
