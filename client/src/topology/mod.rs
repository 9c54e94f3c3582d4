//! What a client knows of the set: the part of MongoDB's Server Discovery And
//! Monitoring (SDAM) specification a chorus client needs, as a state machine that does
//! no I/O. Monitors feed it `/hello` answers and failures ([`Topology::on_hello`],
//! [`Topology::on_error`]); operations ask it for a server ([`Topology::select`]).
//!
//! The rules, in chorus's terms (MongoDB's in brackets):
//! - Servers start from the seed list as `Unknown`. A member that answers is a
//!   `Primary` (`isWritablePrimary`), a `Secondary`, or `Other` (a member that is
//!   neither, e.g. a master without a quorum) [RSPrimary, RSSecondary, RSOther].
//! - Of two masters, the one with the newer `(term, configVersion)` wins [electionId,
//!   setVersion]: a master that reports an older pair than the newest seen is stale and
//!   becomes `Unknown`; a newer one demotes any other `Primary` to `Unknown`.
//! - A master's `hosts` is the member list: servers it does not list are removed, those
//!   it lists are added. While no master is known, every member's `hosts` (and its
//!   `primary` hint) only add servers [updateRSWithoutPrimary].
//! - A member of another set (`setName`) is removed.
//! - A failure (network error, timeout, or "not primary" from an operation) makes the
//!   server `Unknown` [markServerUnknown].
//! - The topology is `ReplicaSetWithPrimary` while a `Primary` is known,
//!   `ReplicaSetNoPrimary` otherwise.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// A member's `GET /hello` answer, the fields the client uses.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Hello {
    #[serde(default)]
    pub set_name: Option<String>,
    #[serde(default)]
    pub name: String,
    /// This member's HTTP address.
    #[serde(default)]
    pub me: String,
    #[serde(default)]
    pub is_writable_primary: bool,
    #[serde(default)]
    pub secondary: bool,
    /// The master's HTTP address, as this member knows it.
    #[serde(default)]
    pub primary: Option<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub term: u64,
    #[serde(default)]
    pub config_version: u64,
    #[serde(default)]
    pub last_write: LastWrite,
    #[serde(default)]
    pub commit_id: u64,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub struct LastWrite {
    #[serde(default)]
    pub id: u64,
    #[serde(default)]
    pub term: u64,
}

/// What the client believes a server is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerType {
    Unknown,
    Primary,
    Secondary,
    /// Answers, but neither takes writes nor follows a master.
    Other,
}

/// One server as last heard.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    /// Its HTTP address, `host:port`.
    pub addr: String,
    pub kind: ServerType,
    /// Its member name, once it answered.
    pub name: Option<String>,
    /// Round-trip time of `/hello`, averaged (MongoDB's weighted average, alpha 0.2).
    pub rtt: Option<Duration>,
    pub hello: Option<Hello>,
    /// Why it is `Unknown`, if it failed.
    pub error: Option<String>,
    /// Counts the errors reported for it: a check begun before the latest error is
    /// stale (MongoDB SDAM: a `hello` from before a network error must not bring back
    /// the primary that error took away).
    pub generation: u64,
}

impl Server {
    fn unknown(addr: &str) -> Self {
        Self {
            addr: addr.to_string(),
            kind: ServerType::Unknown,
            name: None,
            rtt: None,
            hello: None,
            error: None,
            generation: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopologyType {
    ReplicaSetNoPrimary,
    ReplicaSetWithPrimary,
}

/// Which servers a read may go to (MongoDB's read preference modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadPreference {
    #[default]
    Primary,
    Secondary,
    /// The lowest round-trip time, master or not.
    Nearest,
}

impl std::str::FromStr for ReadPreference {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "primary" => Ok(Self::Primary),
            "secondary" => Ok(Self::Secondary),
            "nearest" => Ok(Self::Nearest),
            _ => Err(format!(
                "read preference must be primary, secondary or nearest, got {s:?}"
            )),
        }
    }
}

/// Servers within this much of the fastest one are all candidates for a read
/// (MongoDB's localThresholdMS).
pub const LOCAL_THRESHOLD: Duration = Duration::from_millis(15);

/// The client's view of the set.
#[derive(Debug, Clone)]
pub struct Topology {
    servers: BTreeMap<String, Server>,
    set_name: Option<String>,
    /// The newest `(term, configVersion)` a master reported.
    newest: Option<(u64, u64)>,
}

impl Topology {
    /// Start from a seed list of HTTP addresses (any members of the set).
    pub fn new<S: AsRef<str>>(seeds: &[S]) -> Self {
        Self {
            servers: seeds
                .iter()
                .map(|s| (s.as_ref().to_string(), Server::unknown(s.as_ref())))
                .collect(),
            set_name: None,
            newest: None,
        }
    }

    pub fn kind(&self) -> TopologyType {
        if self.primary().is_some() {
            TopologyType::ReplicaSetWithPrimary
        } else {
            TopologyType::ReplicaSetNoPrimary
        }
    }

    pub fn servers(&self) -> impl Iterator<Item = &Server> {
        self.servers.values()
    }

    pub fn server(&self, addr: &str) -> Option<&Server> {
        self.servers.get(addr)
    }

    pub fn set_name(&self) -> Option<&str> {
        self.set_name.as_deref()
    }

    /// The newest `(term, configVersion)` a master reported.
    pub fn newest(&self) -> Option<(u64, u64)> {
        self.newest
    }

    pub fn primary(&self) -> Option<&Server> {
        self.servers
            .values()
            .find(|s| s.kind == ServerType::Primary)
    }

    /// A failed `/hello`, or an operation that failed on the network or was told "not
    /// primary": the server is `Unknown` until it answers again.
    pub fn on_error(&mut self, addr: &str, error: impl Into<String>) {
        if let Some(s) = self.servers.get_mut(addr) {
            s.generation += 1;
            s.kind = ServerType::Unknown;
            s.rtt = None;
            s.hello = None;
            s.error = Some(error.into());
        }
    }

    /// The error count of `addr` (see [`Server::generation`]); read it when a check
    /// begins and give it to [`Self::on_check`].
    pub fn generation(&self, addr: &str) -> Option<u64> {
        self.servers.get(addr).map(|s| s.generation)
    }

    /// A check of `addr` that began at `generation` ended: its `/hello`, or why it
    /// failed. Ignored if an error was reported for `addr` since it began.
    pub fn on_check(
        &mut self,
        addr: &str,
        generation: Option<u64>,
        answer: Result<Hello, String>,
        rtt: Duration,
    ) {
        if self.generation(addr) != generation {
            return;
        }
        match answer {
            Ok(hello) => self.on_hello(addr, hello, rtt),
            Err(e) => self.on_error(addr, e),
        }
    }

    /// A `/hello` answer from `addr`, which took `rtt`.
    pub fn on_hello(&mut self, addr: &str, hello: Hello, rtt: Duration) {
        if !self.servers.contains_key(addr) {
            return; // removed while the check was under way
        }
        if let Some(theirs) = &hello.set_name {
            match &self.set_name {
                None => self.set_name = Some(theirs.clone()),
                Some(ours) if ours != theirs => {
                    self.servers.remove(addr);
                    return;
                }
                Some(_) => {}
            }
        }
        let pair = (hello.term, hello.config_version);
        let kind = if hello.is_writable_primary {
            if self.newest.is_some_and(|newest| pair < newest) {
                let (t, v) = self.newest.unwrap_or_default();
                self.on_error(
                    addr,
                    format!(
                        "stale primary: term {} configVersion {} is older than term {t} configVersion {v}",
                        pair.0, pair.1
                    ),
                );
                return;
            }
            ServerType::Primary
        } else if hello.secondary {
            ServerType::Secondary
        } else {
            ServerType::Other
        };
        let s = self.servers.get_mut(addr).expect("checked above");
        s.rtt = Some(match s.rtt {
            Some(old) => old.mul_f64(0.8) + rtt.mul_f64(0.2),
            None => rtt,
        });
        s.kind = kind;
        s.name = Some(hello.name.clone());
        s.error = None;
        s.hello = Some(hello.clone());
        if kind == ServerType::Primary {
            self.newest = Some(self.newest.map_or(pair, |n| n.max(pair)));
            for other in self.servers.values_mut() {
                if other.addr != addr && other.kind == ServerType::Primary {
                    other.kind = ServerType::Unknown;
                    other.hello = None;
                    other.rtt = None;
                    other.error = Some(format!("superseded by the primary at {addr}"));
                }
            }
            if !hello.hosts.is_empty() {
                self.servers
                    .retain(|a, _| a == addr || hello.hosts.iter().any(|h| h == a));
                self.add(&hello.hosts);
            }
        } else if self.primary().is_none() {
            self.add(&hello.hosts);
            if let Some(p) = &hello.primary {
                self.add(std::slice::from_ref(p));
            }
        }
    }

    fn add(&mut self, hosts: &[String]) {
        for h in hosts {
            if !h.is_empty() {
                self.servers
                    .entry(h.clone())
                    .or_insert_with(|| Server::unknown(h));
            }
        }
    }

    /// The server a write goes to: the master, if one is known.
    pub fn select_write(&self) -> Option<&Server> {
        self.primary()
    }

    /// A server for a read with this preference: among the eligible ones, the fastest,
    /// or one chosen by `pick` (an index below the count) among those within
    /// [`LOCAL_THRESHOLD`] of it.
    pub fn select(
        &self,
        pref: ReadPreference,
        pick: impl FnOnce(usize) -> usize,
    ) -> Option<&Server> {
        let eligible: Vec<&Server> = self
            .servers
            .values()
            .filter(|s| match pref {
                ReadPreference::Primary => s.kind == ServerType::Primary,
                ReadPreference::Secondary => s.kind == ServerType::Secondary,
                ReadPreference::Nearest => {
                    matches!(s.kind, ServerType::Primary | ServerType::Secondary)
                }
            })
            .collect();
        let fastest = eligible.iter().filter_map(|s| s.rtt).min()?;
        let near: Vec<&Server> = eligible
            .into_iter()
            .filter(|s| s.rtt.is_some_and(|r| r <= fastest + LOCAL_THRESHOLD))
            .collect();
        let i = pick(near.len()).min(near.len() - 1);
        Some(near[i])
    }

    /// A line for a person: the topology type and every server's state.
    pub fn describe(&self) -> String {
        let servers: Vec<String> = self
            .servers
            .values()
            .map(|s| match (&s.kind, &s.error) {
                (ServerType::Unknown, Some(e)) => format!("{} (Unknown: {e})", s.addr),
                (k, _) => format!("{} ({k:?})", s.addr),
            })
            .collect();
        format!("{:?}, servers: {}", self.kind(), servers.join(", "))
    }
}

#[cfg(test)]
mod tests;
