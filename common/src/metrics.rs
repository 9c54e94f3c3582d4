//! Prometheus metrics: the recorder every node installs, and the names of the metrics
//! recorded in more than one place. `GET /metrics` renders them (see `docs/api.md`).

pub use metrics_exporter_prometheus::PrometheusHandle;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// Replication frames, by `direction` (`in`, `out`).
pub const FRAMES: &str = "chorus_frames_total";
/// Bytes of replication frames (length prefix included), by `direction`.
pub const FRAME_BYTES: &str = "chorus_frame_bytes_total";
/// Syncs (fsyncs) of the log.
pub const SYNCS: &str = "chorus_syncs_total";
/// Client writes on the master, by `outcome`.
pub const WRITES: &str = "chorus_writes_total";
/// Time from a write's arrival to its answer, by `write_concern`.
pub const WRITE_SECONDS: &str = "chorus_write_duration_seconds";

/// Install the process-wide recorder and return the handle that renders it. Call once,
/// at start.
pub fn install() -> Result<PrometheusHandle, String> {
    // Once per process: nodes running in one process (tests) share the recorder.
    static HANDLE: std::sync::OnceLock<Result<PrometheusHandle, String>> =
        std::sync::OnceLock::new();
    HANDLE.get_or_init(build).clone()
}

fn build() -> Result<PrometheusHandle, String> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(WRITE_SECONDS.into()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ],
        )
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())
}

/// The outcome counters and latency histograms of client writes, looked up once (per
/// outcome, per write concern) instead of by name and label on every write.
pub struct WriteMetrics {
    outcomes: Vec<(&'static str, metrics::Counter)>,
    latency: std::sync::Mutex<
        std::collections::HashMap<crate::replication::WriteConcern, metrics::Histogram>,
    >,
}

impl WriteMetrics {
    /// Every outcome a write can have.
    pub const OUTCOMES: [&'static str; 5] =
        ["committed", "timeout", "not_writable", "invalid", "error"];

    pub fn new() -> Self {
        Self {
            outcomes: Self::OUTCOMES
                .iter()
                .map(|&o| (o, metrics::counter!(WRITES, "outcome" => o)))
                .collect(),
            latency: Default::default(),
        }
    }

    /// Count a write with `outcome` (one of [`Self::OUTCOMES`]) and, when it asked for a
    /// write concern, how long it took.
    pub fn record(
        &self,
        outcome: &'static str,
        write_concern: Option<crate::replication::WriteConcern>,
        seconds: f64,
    ) {
        if let Some((_, c)) = self.outcomes.iter().find(|(o, _)| *o == outcome) {
            c.increment(1);
        }
        if let Some(wc) = write_concern {
            self.latency
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(wc)
                .or_insert_with(
                    || metrics::histogram!(WRITE_SECONDS, "write_concern" => wc.to_string()),
                )
                .record(seconds);
        }
    }
}

impl Default for WriteMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The counters of replication frames going one `direction` (`in` or `out`), looked up
/// once per connection: a lookup by name and label on every frame cost 4 % of the
/// master's replication thread (docs/benchmarks.md).
#[derive(Clone)]
pub struct FrameCounters {
    frames: metrics::Counter,
    bytes: metrics::Counter,
}

impl FrameCounters {
    pub fn new(direction: &'static str) -> Self {
        Self {
            frames: metrics::counter!(FRAMES, "direction" => direction),
            bytes: metrics::counter!(FRAME_BYTES, "direction" => direction),
        }
    }

    /// Count one frame of `bytes` bytes.
    pub fn count(&self, bytes: usize) {
        self.frames.increment(1);
        self.bytes.increment(bytes as u64);
    }
}

impl std::fmt::Debug for FrameCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FrameCounters")
    }
}
