//! The replication protocol spoken between the master and its secondaries.
//!
//! Every frame on the wire is a `u32` big-endian length followed by that many bytes of
//! MessagePack (rmp-serde, maps with field names so that fields can be added later).
//! The secondary opens with [`SecondaryFrame::Hello`]; the master answers with
//! [`MasterFrame::Welcome`] or an [`ErrorFrame`] and closes. `docs/protocol.md` walks
//! through a whole session.

pub mod auth;
pub mod codec;

use crate::replication::election::{History, VoteRequest, VoteResponse};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The protocol version this build speaks. A peer with another version is refused with
/// [`ErrorCode::VersionMismatch`]. Version 2: the master sends messages before its own
/// sync, so the handshake compares terms and may cut a secondary's tail
/// (`last_term`, `truncate_after`); a version 1 secondary would not cut it. Version 3:
/// elections. Every node listens; frames carry the master's term; the handshake
/// compares term histories; votes, member lists and hand-overs have frames of their own.
pub const PROTOCOL_VERSION: u32 = 3;

/// The largest frame body either side accepts or sends. Checked before anything is
/// allocated for a frame.
pub const MAX_FRAME_LEN: usize = 64 * 1024 * 1024;

/// The term of a log's first master run; each start of the master takes the next one.
pub const INITIAL_TERM: u64 = 1;

/// Terms at or above this are refused as malformed (the frame's connection is closed):
/// no set holds 4.6e18 elections, and a peer must not push a member's term to where
/// taking the next one overflows (found by the property tests in `fuzz.rs`: a vote
/// request of term `u64::MAX`, then an election timeout).
pub const MAX_TERM: u64 = 1 << 62;

/// What the decoder checks in a frame beyond its shape.
pub trait Checked {
    /// `Err` says what is out of range.
    fn check(&self) -> Result<(), String>;
}

fn check_terms(what: &str, terms: impl IntoIterator<Item = u64>) -> Result<(), String> {
    match terms.into_iter().find(|t| *t >= MAX_TERM) {
        Some(t) => Err(format!(
            "{what}: term {t} is out of range (at most {})",
            MAX_TERM - 1
        )),
        None => Ok(()),
    }
}

impl Checked for SecondaryFrame {
    fn check(&self) -> Result<(), String> {
        match self {
            SecondaryFrame::Hello {
                last_term,
                term,
                history,
                ..
            } => check_terms(
                "Hello",
                [*last_term, *term]
                    .into_iter()
                    .chain(history.0.iter().map(|m| m.term)),
            ),
            SecondaryFrame::RequestVote(r) => {
                check_terms("RequestVote", [r.term, r.log.last_term, r.config.term])
            }
            SecondaryFrame::Heartbeat { config_term, .. } => {
                check_terms("Heartbeat", [*config_term])
            }
            SecondaryFrame::Error(e) => check_terms("Error", [e.term]),
            SecondaryFrame::AuthHello { .. }
            | SecondaryFrame::AuthProof { .. }
            | SecondaryFrame::GetMessages { .. }
            | SecondaryFrame::Ready
            | SecondaryFrame::Ack { .. } => Ok(()),
        }
    }
}

impl Checked for MasterFrame {
    fn check(&self) -> Result<(), String> {
        match self {
            MasterFrame::Welcome {
                term,
                history,
                config_term,
                ..
            } => check_terms(
                "Welcome",
                [*term, *config_term]
                    .into_iter()
                    .chain(history.0.iter().map(|m| m.term)),
            ),
            MasterFrame::Messages { entries, term, .. }
            | MasterFrame::AddMessages { entries, term, .. } => check_terms(
                self.name(),
                std::iter::once(*term).chain(entries.iter().map(|e| e.term)),
            ),
            MasterFrame::Heartbeat { term, .. } | MasterFrame::TimeoutNow { term } => {
                check_terms(self.name(), [*term])
            }
            MasterFrame::Members { config_term, .. } => check_terms("Members", [*config_term]),
            MasterFrame::Vote(v) => check_terms("Vote", [v.term]),
            MasterFrame::Error(e) => check_terms("Error", [e.term]),
            MasterFrame::AuthChallenge { .. } | MasterFrame::ReadyAck => Ok(()),
        }
    }
}

/// One message in the replicated log.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The term of the master run that accepted it: a master takes a new term each time
    /// it starts, so `(term, id)` names one entry for good.
    pub term: u64,
    /// Position in the log: 1, 2, 3, ... without gaps.
    pub id: u64,
    /// The payload, as the client sent it.
    pub message: String,
    /// The client's idempotency key, if it gave one: kept with the message so that a
    /// retry after a restart still finds the first attempt's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Frames a secondary sends to the master.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum SecondaryFrame {
    /// First frame of every connection.
    Hello {
        /// [`PROTOCOL_VERSION`] of the sender.
        version: u32,
        /// The secondary's name (`--name`); its identity as a member.
        name: String,
        /// The first id the secondary does not hold yet (its last id + 1).
        next_expected: u64,
        /// Identity of the log the secondary holds (0: none yet).
        log_id: u64,
        /// The term of the secondary's last entry (0: it holds none).
        #[serde(default)]
        last_term: u64,
        /// The newest term the secondary knows: a master of an older term steps down.
        #[serde(default)]
        term: u64,
        /// The term starts of the secondary's log: the master finds the last entry the
        /// two logs share from them.
        #[serde(default)]
        history: History,
        /// Where the other members reach this one (comm `host:port`, HTTP `host:port`)
        /// and its priority: the master shares them with the set.
        #[serde(default)]
        comm: Option<String>,
        #[serde(default)]
        http: Option<String>,
        #[serde(default = "one")]
        priority: u32,
        /// The longest the secondary holds back a frame (`--delay-ms`): the master
        /// allows for it before it calls the secondary silent.
        #[serde(default)]
        delay_ms: u64,
    },
    /// The first frame of an election connection: a candidate asks for a vote.
    RequestVote(VoteRequest),
    /// With `--cluster-key-file`, the first frame of every connection: the connecting
    /// side's random nonce ([`auth`]).
    AuthHello { nonce: Vec<u8> },
    /// The connecting side's proof that it knows the key, for both nonces.
    AuthProof { proof: Vec<u8> },
    /// Ask for every message from `start_id` on (`getMessages(startMsgId)`).
    GetMessages { start_id: u64 },
    /// The secondary has caught up and registers for live traffic.
    Ready,
    /// Acknowledgement: the secondary holds every id up to `upto`, and also the ids in
    /// `buffered`, which it keeps back until the gap before them is filled.
    Ack { upto: u64, buffered: Vec<u64> },
    /// Liveness signal with the same `upto` as an ack, and the version of the member
    /// list the secondary holds (the master changes the voting members one at a time,
    /// each once a majority holds the last change).
    Heartbeat {
        upto: u64,
        #[serde(default)]
        config_version: u64,
        /// With `config_version`, the list's stamp (see [`crate::storage::ConfigStamp`]).
        #[serde(default)]
        config_term: u64,
    },
    /// Something went wrong; the sender closes the connection after it.
    Error(ErrorFrame),
}

/// Frames the master sends to a secondary.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum MasterFrame {
    /// Answer to a valid [`SecondaryFrame::Hello`].
    Welcome {
        version: u32,
        /// The master's name.
        name: String,
        /// Identity of the master's log.
        log_id: u64,
        /// The master's last id at the time of the handshake.
        last_id: u64,
        /// The secondary holds entries after this id that the master's log does not
        /// have (the master lost them in a crash before they were durable on it): the
        /// secondary removes them before asking for messages.
        #[serde(default)]
        truncate_after: Option<u64>,
        /// The host of the master's HTTP API, when it listens on one address (`None`
        /// when it listens on all of them: the secondary then uses the host it dialled).
        #[serde(default)]
        http_host: Option<String>,
        /// The port of the master's HTTP API (0 from a master that predates it).
        #[serde(default)]
        http_port: u16,
        /// The master's term: every frame on this connection is of it.
        #[serde(default)]
        term: u64,
        /// The master's term starts, which the secondary adopts.
        #[serde(default)]
        history: History,
        /// The set's members as the master knows them.
        #[serde(default)]
        members: Vec<MemberInfo>,
        /// Names removed from the set (refused until re-admitted).
        #[serde(default)]
        removed: Vec<String>,
        #[serde(default)]
        config_version: u64,
        /// The term of the master that made the list: lists are ordered by
        /// `(config_term, config_version)`.
        #[serde(default)]
        config_term: u64,
        /// The longest the master holds back a frame (`--delay-ms`): the secondary
        /// allows for it before it calls the master silent and stands for election.
        #[serde(default)]
        delay_ms: u64,
    },
    /// The member list changed (a member joined, moved or was removed).
    Members {
        config_version: u64,
        members: Vec<MemberInfo>,
        #[serde(default)]
        removed: Vec<String>,
        #[serde(default)]
        config_term: u64,
    },
    /// The master hands over: the secondary should stand for election at once
    /// (`stepDown`, or a caught-up member of higher priority).
    TimeoutNow { term: u64 },
    /// The answer to a [`SecondaryFrame::RequestVote`].
    Vote(VoteResponse),
    /// The answer to [`SecondaryFrame::AuthHello`]: the listening side's nonce and its
    /// proof that it knows the key.
    AuthChallenge { nonce: Vec<u8>, proof: Vec<u8> },
    /// A batch of the answer to [`SecondaryFrame::GetMessages`]. `last` marks the batch
    /// that reaches the master's last id at the time it was sent: after it, the
    /// secondary sends [`SecondaryFrame::Ready`] once it holds everything up to it.
    Messages {
        entries: Vec<Entry>,
        last: bool,
        #[serde(default)]
        term: u64,
    },
    /// Live replication (`addMessage`): one or more new messages, and the
    /// master's commit id (the highest id a majority holds) when it sent them.
    AddMessages {
        entries: Vec<Entry>,
        #[serde(default)]
        commit_id: u64,
        /// A write waits for secondaries to hold these entries: make them durable and
        /// acknowledge at once. When false, no write waits for a secondary's
        /// acknowledgement of them (write concern 1), and the secondary may gather
        /// several such frames into one sync, within [`crate::replication::SYNC_DEFER`].
        /// Absent (from a master that predates it): true.
        #[serde(default = "yes")]
        urgent: bool,
        #[serde(default)]
        term: u64,
    },
    /// The master took the secondary's [`SecondaryFrame::Ready`].
    ReadyAck,
    /// Liveness signal, with the master's last id and commit id.
    Heartbeat {
        last_id: u64,
        #[serde(default)]
        commit_id: u64,
        #[serde(default)]
        term: u64,
    },
    /// Something went wrong; the master closes the connection after it.
    Error(ErrorFrame),
}

/// An error reported to the peer before the connection is closed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ErrorFrame {
    pub code: ErrorCode,
    /// For a person reading the peer's log.
    pub message: String,
    /// With [`ErrorCode::NotMaster`]: the comm address of the master, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    /// The sender's term, when it matters ([`ErrorCode::StaleTerm`], `NotMaster`).
    #[serde(default)]
    pub term: u64,
}

impl ErrorFrame {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            master: None,
            term: 0,
        }
    }
}

/// A member of the set, as the master shares it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    pub name: String,
    /// Its comm address, `host:port` (empty until it told).
    pub comm: String,
    /// Its HTTP address, `host:port` (empty until it told).
    pub http: String,
    /// 0: never master.
    pub priority: u32,
}

impl fmt::Display for ErrorFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

/// Why a connection is being closed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// The peer speaks another [`PROTOCOL_VERSION`].
    VersionMismatch,
    /// A frame could not be decoded.
    MalformedFrame,
    /// A frame's length is over [`MAX_FRAME_LEN`].
    FrameTooLarge,
    /// The first frame was not a `Hello`.
    HandshakeRequired,
    /// A frame that makes no sense in the connection's current state.
    UnexpectedFrame,
    /// The secondary's name is already taken by the master.
    NameConflict,
    /// The two logs do not share a history (another log identity, or the secondary is
    /// ahead of the master).
    LogMismatch,
    /// Another connection with the same name replaced this one.
    Replaced,
    /// The name was removed from the set (`DELETE /members/{name}`) and stays out until
    /// the master re-admits it (`POST /members`).
    Removed,
    /// This node is not the master; `master` in the frame says where it is, if known.
    NotMaster,
    /// The peer's term is older than this node's.
    StaleTerm,
    /// The peer did not prove it knows the cluster key (`--cluster-key-file`).
    Unauthorized,
    /// Anything else (for forward compatibility, an unknown code decodes as this).
    #[serde(other)]
    Other,
}

impl SecondaryFrame {
    /// The frame's kind, for error messages and logs.
    pub fn name(&self) -> &'static str {
        match self {
            SecondaryFrame::Hello { .. } => "Hello",
            SecondaryFrame::RequestVote(_) => "RequestVote",
            SecondaryFrame::AuthHello { .. } => "AuthHello",
            SecondaryFrame::AuthProof { .. } => "AuthProof",
            SecondaryFrame::GetMessages { .. } => "GetMessages",
            SecondaryFrame::Ready => "Ready",
            SecondaryFrame::Ack { .. } => "Ack",
            SecondaryFrame::Heartbeat { .. } => "Heartbeat",
            SecondaryFrame::Error(_) => "Error",
        }
    }
}

impl MasterFrame {
    /// The frame's kind, for error messages and logs.
    pub fn name(&self) -> &'static str {
        match self {
            MasterFrame::Welcome { .. } => "Welcome",
            MasterFrame::Messages { .. } => "Messages",
            MasterFrame::AddMessages { .. } => "AddMessages",
            MasterFrame::ReadyAck => "ReadyAck",
            MasterFrame::Heartbeat { .. } => "Heartbeat",
            MasterFrame::Error(_) => "Error",
            MasterFrame::Members { .. } => "Members",
            MasterFrame::TimeoutNow { .. } => "TimeoutNow",
            MasterFrame::Vote(_) => "Vote",
            MasterFrame::AuthChallenge { .. } => "AuthChallenge",
        }
    }
}

/// Encode a frame body (without the length prefix).
pub fn encode_body<T: Serialize>(frame: &T) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    rmp_serde::to_vec_named(frame)
}

/// The default of a flag that older peers do not send.
fn yes() -> bool {
    true
}

/// The default priority.
fn one() -> u32 {
    1
}
