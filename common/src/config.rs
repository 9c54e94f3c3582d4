//! Command-line values shared by both binaries.

use clap::Parser;
use std::{fmt, str::FromStr, time::Duration};

/// `--delay-ms MIN[-MAX]`: every replication frame is held back by a uniformly random
/// time in `[min, max]` milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DelaySpec {
    pub min_ms: u64,
    pub max_ms: u64,
}

impl DelaySpec {
    pub fn is_zero(&self) -> bool {
        self.max_ms == 0
    }

    /// A delay drawn from the range.
    pub fn sample(&self, rng: &mut impl rand::Rng) -> Duration {
        use rand::RngExt;
        Duration::from_millis(if self.min_ms == self.max_ms {
            self.min_ms
        } else {
            rng.random_range(self.min_ms..=self.max_ms)
        })
    }
}

impl FromStr for DelaySpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let num = |v: &str| {
            v.trim().parse::<u64>().map_err(|_| {
                format!("{s:?} is not a delay: use milliseconds like 500 or a range like 1000-2000")
            })
        };
        let (min_ms, max_ms) = match s.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => {
                let v = num(s)?;
                (v, v)
            }
        };
        if min_ms > max_ms {
            return Err(format!(
                "delay range {s:?} has its minimum above its maximum"
            ));
        }
        if max_ms > 3_600_000 {
            return Err(format!("delay {s:?} is over an hour"));
        }
        Ok(Self { min_ms, max_ms })
    }
}

impl fmt::Display for DelaySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min_ms == self.max_ms {
            write!(f, "{}", self.min_ms)
        } else {
            write!(f, "{}-{}", self.min_ms, self.max_ms)
        }
    }
}

/// `--durability` and `--sync-interval-ms`, shared by both nodes.
#[derive(clap::Args, Clone, Debug)]
pub struct DurabilityArgs {
    /// When a write counts as stored on this node: `fsync` acknowledges only what is
    /// fdatasync'd (survives a power loss); `relaxed` acknowledges what is written to the
    /// operating system and fdatasyncs every --sync-interval-ms (a power loss or kernel
    /// crash can lose that much; see docs/storage.md).
    #[arg(long, value_name = "MODE", default_value = "fsync",
          value_parser = ["fsync", "relaxed"])]
    pub durability: String,
    /// In relaxed mode, how often the log is fdatasync'd.
    #[arg(long, value_name = "MS", default_value = "100", value_parser = parse_positive_ms)]
    pub sync_interval_ms: u64,
}

impl DurabilityArgs {
    pub fn durability(&self) -> crate::storage::Durability {
        match self.durability.as_str() {
            "relaxed" => {
                crate::storage::Durability::Interval(Duration::from_millis(self.sync_interval_ms))
            }
            _ => crate::storage::Durability::Fsync,
        }
    }
}

/// How a node takes part in elections, and how others reach it: both binaries.
#[derive(clap::Args, Clone, Debug)]
pub struct MemberArgs {
    /// The host other members and clients reach this node by (default: --host, or this
    /// machine's name when --host is a wildcard such as 0.0.0.0).
    #[arg(long, value_name = "HOST")]
    pub advertise_host: Option<String>,
    /// 0: this node never becomes master; otherwise a caught-up member of higher
    /// priority takes over from one of lower priority.
    #[arg(long, value_name = "P", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub priority: u32,
    /// Silence from the master, in milliseconds, before this node stands for election
    /// (randomised up to twice this).
    #[arg(long, value_name = "E", default_value = "1000", value_parser = parse_positive_ms)]
    pub election_timeout_ms: u64,
}

/// Who may do what: both binaries.
#[derive(clap::Args, Clone, Debug)]
pub struct SecurityArgs {
    /// File holding the admin token: `DELETE /members/*`, `POST /members`,
    /// `POST /stepDown` and `/admin/*` then need `Authorization: Bearer <token>`.
    /// Without it they are served to loopback clients only.
    #[arg(long, value_name = "F", value_parser = AdminToken::from_file)]
    pub admin_token_file: Option<AdminToken>,
    /// File holding the set's shared key (at least 16 bytes, readable by its owner
    /// only): every replication and election connection then proves on both ends that
    /// it knows the key before anything else is sent. Every member needs the same file.
    #[arg(long, value_name = "F", value_parser = crate::protocol::auth::ClusterKey::from_file)]
    pub cluster_key_file: Option<crate::protocol::auth::ClusterKey>,
    /// This node's certificate (PEM, leaf first), signed by the --tls-ca authority:
    /// replication and election connections then use mutual TLS (both ends verified
    /// against the CA), and the HTTP API serves HTTPS with this certificate. Needs
    /// --tls-key and --tls-ca, on every member.
    #[arg(long, value_name = "F", requires_all = ["tls_key", "tls_ca"],
          value_parser = crate::tls::CertChain::from_file)]
    pub tls_cert: Option<crate::tls::CertChain>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "F", requires_all = ["tls_cert", "tls_ca"],
          value_parser = crate::tls::PrivateKey::from_file)]
    pub tls_key: Option<crate::tls::PrivateKey>,
    /// The certificate authority (PEM) members' certificates must be signed by.
    #[arg(long, value_name = "F", requires_all = ["tls_cert", "tls_key"],
          value_parser = crate::tls::CaRoots::from_file)]
    pub tls_ca: Option<crate::tls::CaRoots>,
}

impl SecurityArgs {
    /// The TLS configurations, if the three files were given; a usage error (exit 2)
    /// if they do not fit together.
    pub fn tls(&self) -> Option<crate::tls::Tls> {
        let (Some(cert), Some(key), Some(ca)) = (&self.tls_cert, &self.tls_key, &self.tls_ca)
        else {
            return None;
        };
        match crate::tls::Tls::new(cert, key, ca) {
            Ok(tls) => Some(tls),
            Err(e) => usage_error(&e),
        }
    }
}

/// Refuse the command line: one line on stderr, exit code 2 (as for a bad flag).
pub fn usage_error(msg: &str) -> ! {
    eprintln!("error: {msg} (see --help)");
    std::process::exit(2)
}

/// The admin token, read from `--admin-token-file`. Its `Debug` does not show it.
#[derive(Clone)]
pub struct AdminToken(std::sync::Arc<str>);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<hidden>)")
    }
}

impl AdminToken {
    /// Read the token file: its first line, without surrounding white space, of 1 to
    /// 4096 visible ASCII characters (it travels in an HTTP header).
    pub fn from_file(path: &str) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the admin token file {path}: {e}"))?;
        Self::new(text.lines().next().unwrap_or_default().trim())
            .map_err(|e| format!("admin token file {path}: {e}"))
    }

    pub fn new(token: &str) -> Result<Self, String> {
        if token.is_empty() || token.len() > 4096 {
            return Err("the token must be 1 to 4096 characters".into());
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the token must be visible ASCII characters, without spaces".into());
        }
        Ok(Self(token.into()))
    }

    /// Whether `given` is the token, in time that does not depend on where they
    /// differ (both are hashed first, so not on their lengths either).
    pub fn matches(&self, given: &[u8]) -> bool {
        use sha2::{Digest, Sha256};
        use subtle::ConstantTimeEq;
        let a = Sha256::digest(self.0.as_bytes());
        let b = Sha256::digest(given);
        a.ct_eq(&b).into()
    }
}

/// How a node runs when it is the master: both binaries (any member may be elected).
#[derive(clap::Args, Clone, Debug)]
pub struct MasterArgs {
    /// Resend a message a secondary has not acknowledged within this many milliseconds;
    /// later resends back off exponentially (with jitter) up to 8 times this.
    #[arg(long, value_name = "T", default_value = "1000", value_parser = parse_positive_ms)]
    pub ack_timeout_ms: u64,
    /// Interval of the master's heartbeats on each replication connection; keep it well
    /// below --election-timeout-ms.
    #[arg(long, value_name = "H", default_value = "250", value_parser = parse_positive_ms)]
    pub heartbeat_ms: u64,
    /// Heartbeat intervals of silence after which a secondary is Suspected.
    #[arg(long, value_name = "N", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub suspect_after_heartbeats: u32,
    /// Heartbeat intervals of silence after which a secondary is Unhealthy: it no longer
    /// counts toward the quorum, and resends to it wait until it is heard from again.
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub unhealthy_after_heartbeats: u32,
    /// While at most a few writes wait for secondaries' acknowledgements, poll for them
    /// for up to this many microseconds instead of sleeping: a little CPU for the
    /// latency of writes that come one at a time. Rests by itself when
    /// acknowledgements are slower than that; 0 never polls.
    #[arg(long, value_name = "US", default_value_t = crate::replication::SPIN_BUDGET.as_micros() as u64,
          value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub spin_us: u64,
    /// Largest message accepted, in bytes (larger ones get 413). At most 32 MiB.
    #[arg(long, value_name = "BYTES", default_value_t = crate::api::DEFAULT_MAX_MESSAGE_BYTES,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=32 * 1024 * 1024))]
    pub max_message_bytes: usize,
}

/// `--data-dir`, or the contract's default `./data/NAME`.
pub fn data_dir(given: Option<std::path::PathBuf>, name: &str) -> std::path::PathBuf {
    given.unwrap_or_else(|| std::path::Path::new("data").join(name))
}

/// Run a node's `run` future on an actix system; log a failure and turn it into the exit
/// code (0 on a clean stop, 1 on failure).
pub fn run_node(
    binary: &str,
    run: impl std::future::Future<Output = Result<(), Box<dyn std::error::Error>>>,
) -> std::process::ExitCode {
    disable_transparent_huge_pages();
    match actix_web::rt::System::new().block_on(run) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("{binary}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Turn transparent huge pages off for this process, as Redis does at start: the
/// allocator asks for them on its arenas, and then every 4 KiB a connection touches
/// makes a 2 MiB page resident. An idle HTTP connection cost a node 20 KiB with them,
/// 12 KiB without (docs/benchmarks.md, "Change streams"). Best effort: where the call
/// is not supported, nothing changes.
pub fn disable_transparent_huge_pages() {
    // SAFETY: prctl(PR_SET_THP_DISABLE) takes plain integers and touches no memory of ours.
    let r = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if r != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cannot turn transparent huge pages off");
    }
}

/// `--drop-rate R`, a probability in 0.0..=1.0.
pub fn parse_probability(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("{s:?} is not a probability between 0.0 and 1.0")),
    }
}

/// A strictly positive number of milliseconds.
pub fn parse_positive_ms(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(v) if v > 0 && v <= 86_400_000 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a number of milliseconds between 1 and 86400000"
        )),
    }
}

/// Parse the command line. `--help` and `--version` print and exit 0; any other problem
/// prints one line to stderr and exits with code 2.
pub fn parse_cli<T: Parser>() -> T {
    match T::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                e.exit();
            }
            // The first paragraph, on one line ("... not provided: --tls-key <F>").
            let rendered = e.render().to_string();
            let line = rendered
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ");
            let line = if line.is_empty() {
                "invalid arguments".into()
            } else {
                line
            };
            eprintln!("{line} (see --help)");
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_specs() {
        assert_eq!("0".parse::<DelaySpec>().unwrap(), DelaySpec::default());
        assert_eq!(
            "1000-2000".parse::<DelaySpec>().unwrap(),
            DelaySpec {
                min_ms: 1000,
                max_ms: 2000
            }
        );
        assert_eq!(
            "500".parse::<DelaySpec>().unwrap(),
            DelaySpec {
                min_ms: 500,
                max_ms: 500
            }
        );
        for bad in [
            "",
            "-",
            "a",
            "2000-1000",
            "-5",
            "1-2-3",
            "1.5",
            "99999999999",
        ] {
            assert!(bad.parse::<DelaySpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn probabilities_and_timeouts() {
        assert_eq!(parse_probability("0.5"), Ok(0.5));
        assert_eq!(parse_probability("1"), Ok(1.0));
        for bad in ["-0.1", "1.01", "x", "NaN", ""] {
            assert!(parse_probability(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_positive_ms("1500"), Ok(1500));
        assert!(parse_positive_ms("0").is_err());
        assert!(parse_positive_ms("-3").is_err());
    }

    #[test]
    fn samples_stay_in_range() {
        let d: DelaySpec = "10-20".parse().unwrap();
        let mut rng = rand::rng();
        for _ in 0..100 {
            let v = d.sample(&mut rng).as_millis();
            assert!((10..=20).contains(&v));
        }
    }
}
