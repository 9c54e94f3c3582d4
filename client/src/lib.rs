//! # chorus client
//!
//! A client of a chorus replica set that finds the master from a seed list and follows
//! it across elections, as MongoDB's drivers do:
//!
//! - [`topology`]: what the client knows of the set (MongoDB's Server Discovery And
//!   Monitoring, the part a chorus client needs), a state machine without I/O;
//! - [`Client`]: one monitor per server calling `GET /hello`, server selection with a
//!   timeout, retryable writes (one retry, same `requestId`), reads with a read
//!   preference, and change streams that resume elsewhere without gap or repeat;
//! - [`sse`]: an incremental Server-Sent Events reader.
//!
//! The `chorus` command-line tool (`src/main.rs`) is built on it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), chorus_client::Error> {
//! use chorus_client::{Client, Options, Write};
//! let client = Client::new(&["127.0.0.1:8080", "127.0.0.1:8081"], Options::default());
//! let w = client
//!     .write(&Write {
//!         message: "hello".into(),
//!         write_concern: Some("majority".into()),
//!         ..Write::default()
//!     })
//!     .await?;
//! println!("stored as {} on {}", w.id, w.server);
//! # Ok(()) }
//! ```

mod client;
pub mod sse;
pub mod topology;

pub use client::{
    Client, Error, Message, Options, Read, Write, Written, tls_config, tls_config_from,
};
pub use topology::ReadPreference;
