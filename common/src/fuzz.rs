//! Property-based fuzzing of everything a peer can send: the frame decoder, the
//! cluster-key handshake and the state machines' input handling. A coverage-guided
//! fuzzer (cargo-fuzz) needs a nightly toolchain, which this project does not use;
//! instead proptest generates frames of every kind with values around the edges that
//! matter (ids and terms near the log's, names of members and strangers, lengths over
//! the limits), and raw or mutated bytes for the decoder.
//!
//! `cargo test` runs each property `PROPTEST_CASES` times (proptest's default, 256);
//! any number on demand: `PROPTEST_CASES=100000 cargo test -p common --release fuzz`.
//! A failure prints the smallest input proptest found; it becomes a test of its own.
//!
//! The properties: decoding never panics and either yields frames, waits for more
//! bytes, or gives a clear error; every frame decodes back to itself; a handshake
//! proof for other nonces, another key, or a replayed exchange is refused; the master,
//! secondary and election cores take any sequence of frames without panicking, and
//! keep their own invariants (ids acknowledged never past the log, the commit id
//! never past what is durable).

use crate::protocol::auth::{ClusterKey, nonce};
use crate::protocol::codec::FrameCodec;
use crate::protocol::{
    Checked, Entry, ErrorCode, ErrorFrame, MasterFrame, MemberInfo, PROTOCOL_VERSION,
    SecondaryFrame,
};
use crate::replication::SecondaryCore;
use crate::replication::election::{
    ElectionConfig, ElectionCore, History, LogPosition, TermStart, VoteRequest, VoteResponse,
};
use crate::replication::{MasterConfig, MasterCore};
use crate::storage::{ConfigStamp, LogStore, MemStore};
use bytes::BytesMut;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::codec::{Decoder, Encoder};

const LOG_ID: u64 = 7;

fn id() -> impl Strategy<Value = u64> {
    prop_oneof![8 => 0..12u64, 1 => Just(u64::MAX), 1 => any::<u64>()]
}

fn term() -> impl Strategy<Value = u64> {
    prop_oneof![8 => 0..6u64, 1 => Just(u64::MAX), 1 => any::<u64>()]
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("m".to_string()),
        Just("s1".to_string()),
        Just("s2".to_string()),
        Just(String::new()),
        "[a-z0-9]{1,6}",
        ".{0,300}",
    ]
}

fn addr() -> impl Strategy<Value = String> {
    prop_oneof![Just("127.0.0.1:4001".to_string()), ".{0,40}"]
}

fn history() -> impl Strategy<Value = History> {
    vec((term(), id()), 0..4).prop_map(|v| {
        History(
            v.into_iter()
                .map(|(term, after)| TermStart { term, after })
                .collect(),
        )
    })
}

fn entry() -> impl Strategy<Value = Entry> {
    (term(), id(), ".{0,12}", option::of("[a-z]{0,4}")).prop_map(
        |(term, id, message, request_id)| Entry {
            term,
            id,
            message,
            request_id,
        },
    )
}

fn entries() -> impl Strategy<Value = Vec<Entry>> {
    prop_oneof![
        vec(entry(), 0..6),
        // Runs of consecutive ids, as a master sends them.
        (1..10u64, 0..6usize, 0..4u64).prop_map(|(from, n, term)| {
            (from..from + n as u64)
                .map(|id| Entry {
                    term,
                    id,
                    message: format!("e{id}"),
                    request_id: None,
                })
                .collect()
        }),
    ]
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..max)
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![
        Just(ErrorCode::VersionMismatch),
        Just(ErrorCode::MalformedFrame),
        Just(ErrorCode::FrameTooLarge),
        Just(ErrorCode::HandshakeRequired),
        Just(ErrorCode::UnexpectedFrame),
        Just(ErrorCode::NameConflict),
        Just(ErrorCode::LogMismatch),
        Just(ErrorCode::Replaced),
        Just(ErrorCode::Removed),
        Just(ErrorCode::NotMaster),
        Just(ErrorCode::StaleTerm),
        Just(ErrorCode::Unauthorized),
        Just(ErrorCode::Other),
    ]
}

fn error_frame() -> impl Strategy<Value = ErrorFrame> {
    (error_code(), ".{0,20}", option::of(addr()), term()).prop_map(
        |(code, message, master, term)| ErrorFrame {
            code,
            message,
            master,
            term,
        },
    )
}

fn stamp() -> impl Strategy<Value = ConfigStamp> {
    (term(), 0..6u64).prop_map(|(term, version)| ConfigStamp { term, version })
}

fn vote_request() -> impl Strategy<Value = VoteRequest> {
    (
        term(),
        name(),
        (term(), id()),
        any::<bool>(),
        any::<bool>(),
        addr(),
        stamp(),
    )
        .prop_map(
            |(term, candidate, (last_term, last_id), pre_vote, transfer, comm, config)| {
                VoteRequest {
                    term,
                    candidate,
                    log: LogPosition { last_term, last_id },
                    pre_vote,
                    transfer,
                    comm,
                    config,
                }
            },
        )
}

fn members() -> impl Strategy<Value = Vec<MemberInfo>> {
    vec(
        (name(), addr(), addr(), 0..3u32).prop_map(|(name, comm, http, priority)| MemberInfo {
            name,
            comm,
            http,
            priority,
        }),
        0..4,
    )
}

fn secondary_frame() -> BoxedStrategy<SecondaryFrame> {
    prop_oneof![
        (
            prop_oneof![4 => Just(PROTOCOL_VERSION), 1 => any::<u32>()],
            name(),
            id(),
            prop_oneof![Just(0), Just(LOG_ID), any::<u64>()],
            term(),
            term(),
            history(),
            option::of(addr()),
            option::of(addr()),
            0..3u32,
            prop_oneof![Just(0u64), any::<u64>()],
        )
            .prop_map(
                |(
                    version,
                    name,
                    next_expected,
                    log_id,
                    last_term,
                    term,
                    history,
                    comm,
                    http,
                    priority,
                    delay_ms,
                )| SecondaryFrame::Hello {
                    version,
                    name,
                    next_expected,
                    log_id,
                    last_term,
                    term,
                    history,
                    comm,
                    http,
                    priority,
                    delay_ms,
                }
            ),
        vote_request().prop_map(SecondaryFrame::RequestVote),
        bytes(40).prop_map(|nonce| SecondaryFrame::AuthHello { nonce }),
        bytes(40).prop_map(|proof| SecondaryFrame::AuthProof { proof }),
        id().prop_map(|start_id| SecondaryFrame::GetMessages { start_id }),
        Just(SecondaryFrame::Ready),
        (id(), vec(id(), 0..4)).prop_map(|(upto, buffered)| SecondaryFrame::Ack { upto, buffered }),
        (id(), stamp()).prop_map(|(upto, s)| SecondaryFrame::Heartbeat {
            upto,
            config_version: s.version,
            config_term: s.term,
        }),
        error_frame().prop_map(SecondaryFrame::Error),
    ]
    .boxed()
}

fn master_frame() -> BoxedStrategy<MasterFrame> {
    prop_oneof![
        (
            (
                prop_oneof![4 => Just(PROTOCOL_VERSION), 1 => any::<u32>()],
                name(),
                prop_oneof![Just(LOG_ID), any::<u64>()],
                id(),
                option::of(id()),
                option::of(addr()),
                any::<u16>(),
            ),
            (
                term(),
                history(),
                members(),
                vec(name(), 0..2),
                stamp(),
                0..100u64
            ),
        )
            .prop_map(
                |(
                    (version, name, log_id, last_id, truncate_after, http_host, http_port),
                    (term, history, members, removed, stamp, delay_ms),
                )| MasterFrame::Welcome {
                    version,
                    name,
                    log_id,
                    last_id,
                    truncate_after,
                    http_host,
                    http_port,
                    term,
                    history,
                    members,
                    removed,
                    config_version: stamp.version,
                    config_term: stamp.term,
                    delay_ms,
                }
            ),
        (entries(), any::<bool>(), term()).prop_map(|(entries, last, term)| {
            MasterFrame::Messages {
                entries,
                last,
                term,
            }
        }),
        (entries(), id(), any::<bool>(), term()).prop_map(|(entries, commit_id, urgent, term)| {
            MasterFrame::AddMessages {
                entries,
                commit_id,
                urgent,
                term,
            }
        }),
        Just(MasterFrame::ReadyAck),
        (id(), id(), term()).prop_map(|(last_id, commit_id, term)| MasterFrame::Heartbeat {
            last_id,
            commit_id,
            term,
        }),
        (stamp(), members(), vec(name(), 0..2)).prop_map(|(s, members, removed)| {
            MasterFrame::Members {
                config_version: s.version,
                members,
                removed,
                config_term: s.term,
            }
        }),
        term().prop_map(|term| MasterFrame::TimeoutNow { term }),
        (term(), any::<bool>(), any::<bool>(), ".{0,10}").prop_map(
            |(term, granted, pre_vote, reason)| MasterFrame::Vote(VoteResponse {
                term,
                granted,
                pre_vote,
                reason,
            })
        ),
        (bytes(40), bytes(40))
            .prop_map(|(nonce, proof)| MasterFrame::AuthChallenge { nonce, proof }),
        error_frame().prop_map(MasterFrame::Error),
    ]
    .boxed()
}

/// Mutations of an encoded stream: flip, drop or insert bytes, cut it short, or
/// change its length prefix.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Remove(usize),
    Insert(usize, u8),
    Truncate(usize),
    Length(u32),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        any::<usize>().prop_map(Mutation::Remove),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        any::<u32>().prop_map(Mutation::Length),
    ]
}

fn mutate(buf: &mut Vec<u8>, m: &Mutation) {
    if buf.is_empty() {
        return;
    }
    let at = |i: usize| i % buf.len();
    match *m {
        Mutation::Flip(i, b) => {
            let i = at(i);
            buf[i] ^= b;
        }
        Mutation::Remove(i) => {
            let i = at(i);
            buf.remove(i);
        }
        Mutation::Insert(i, b) => {
            let i = at(i);
            buf.insert(i, b);
        }
        Mutation::Truncate(i) => {
            let i = at(i);
            buf.truncate(i);
        }
        Mutation::Length(n) => {
            if buf.len() >= 4 {
                buf[..4].copy_from_slice(&n.to_be_bytes());
            }
        }
    }
}

/// Decode everything in `bytes` with a decoder of `In`, as a connection would: stop at
/// the first error (the connection is closed) or when more bytes are needed. Small
/// limits make the length checks reachable.
fn drain<In: serde::de::DeserializeOwned + Checked, Out: serde::Serialize>(
    bytes: &[u8],
    max_len: usize,
) {
    let mut codec = FrameCodec::<In, Out>::with_max_len(max_len);
    let mut buf = BytesMut::from(bytes);
    for _ in 0..bytes.len() + 1 {
        match codec.decode(&mut buf) {
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return,
        }
    }
}

fn encode<F: serde::Serialize + Clone, In>(frames: &[F]) -> Vec<u8> {
    let mut codec = FrameCodec::<In, F>::new();
    let mut buf = BytesMut::new();
    for f in frames {
        codec.encode(f.clone(), &mut buf).expect("frames encode");
    }
    buf.to_vec()
}

fn master(now: Instant) -> MasterCore<Arc<MemStore>> {
    let mut cfg = MasterConfig::new("m", Duration::from_millis(100));
    cfg.seed = 1;
    cfg.quorum_timeout = Some(Duration::from_millis(500));
    let store = Arc::new(MemStore::new());
    store.set_log_id(LOG_ID).expect("memory store");
    let mut core = MasterCore::new(cfg, store).expect("memory store");
    // A few entries, durable, so that ids and terms in frames meet a real log.
    for i in 0..5 {
        let _ = core.submit(
            now,
            crate::replication::WriteRequest {
                message: format!("w{i}"),
                write_concern: crate::replication::WriteConcern::Count(1),
                timeout: None,
                request_id: None,
            },
            i,
        );
    }
    let last = core.last_id();
    core.flushed(now, last);
    core.persisted(now, last);
    core.take_outputs();
    core
}

/// One step of a peer's traffic as the cores see it.
#[derive(Debug, Clone)]
enum Step<F> {
    Frame(u64, F),
    Open(u64),
    Close(u64),
    /// Time passes (ms) and timers fire.
    Tick(u64),
}

fn steps<F: std::fmt::Debug + Clone + 'static>(
    frame: BoxedStrategy<F>,
) -> impl Strategy<Value = Vec<Step<F>>> {
    vec(
        prop_oneof![
            6 => (1..4u64, frame).prop_map(|(c, f)| Step::Frame(c, f)),
            1 => (1..4u64).prop_map(Step::Open),
            1 => (1..4u64).prop_map(Step::Close),
            1 => (0..2000u64).prop_map(Step::Tick),
        ],
        1..40,
    )
}

proptest! {
    #[test]
    fn the_decoder_takes_any_bytes(bytes in bytes(300), max_len in prop_oneof![Just(64usize), Just(1 << 20)]) {
        drain::<SecondaryFrame, MasterFrame>(&bytes, max_len);
        drain::<MasterFrame, SecondaryFrame>(&bytes, max_len);
    }

    #[test]
    fn the_decoder_takes_any_length_prefix(len in any::<u32>(), body in bytes(64)) {
        let mut buf = len.to_be_bytes().to_vec();
        buf.extend(body);
        drain::<SecondaryFrame, MasterFrame>(&buf, 1 << 20);
        drain::<MasterFrame, SecondaryFrame>(&buf, 1 << 20);
    }

    #[test]
    fn frames_decode_to_themselves(up in vec(secondary_frame(), 1..4), down in vec(master_frame(), 1..4)) {
        // Each frame decodes to itself, or, with a term out of range, is refused as
        // malformed (and the next one still decodes).
        let mut dec = FrameCodec::<SecondaryFrame, MasterFrame>::new();
        let mut buf = BytesMut::from(&encode::<_, MasterFrame>(&up)[..]);
        for f in &up {
            match dec.decode(&mut buf) {
                Ok(got) => prop_assert_eq!(got, Some(f.clone())),
                Err(e) => prop_assert!(f.check().is_err(), "{f:?}: {e}"),
            }
        }
        let mut dec = FrameCodec::<MasterFrame, SecondaryFrame>::new();
        let mut buf = BytesMut::from(&encode::<_, SecondaryFrame>(&down)[..]);
        for f in &down {
            match dec.decode(&mut buf) {
                Ok(got) => prop_assert_eq!(got, Some(f.clone())),
                Err(e) => prop_assert!(f.check().is_err(), "{f:?}: {e}"),
            }
        }
    }

    #[test]
    fn the_decoder_takes_mutated_frames(
        up in vec(secondary_frame(), 1..3),
        down in vec(master_frame(), 1..3),
        ms in vec(mutation(), 1..4),
    ) {
        let mut a = encode::<_, MasterFrame>(&up);
        let mut b = encode::<_, SecondaryFrame>(&down);
        for m in &ms {
            mutate(&mut a, m);
            mutate(&mut b, m);
        }
        drain::<SecondaryFrame, MasterFrame>(&a, 1 << 20);
        drain::<MasterFrame, SecondaryFrame>(&b, 1 << 20);
    }

    #[test]
    fn the_handshake_refuses_every_proof_but_the_right_one(
        proof in bytes(40),
        other_key in "[a-z]{16,24}",
        server_nonce in bytes(40),
    ) {
        let key = ClusterKey::new(b"0123456789abcdef-the-set").expect("long enough");
        let other = ClusterKey::new(other_key.as_bytes()).expect("long enough");
        let (client, server) = (nonce(), nonce());
        // Arbitrary bytes as a proof, and another key's proof, are refused.
        let right = key.client_proof(&client, &server);
        prop_assert_eq!(key.check_client(&client, &server, &proof), proof == right);
        if other_key.as_bytes() != b"0123456789abcdef-the-set" {
            prop_assert!(!key.check_client(&client, &server, &other.client_proof(&client, &server)));
        }
        // A recorded exchange replayed against a fresh nonce is refused.
        let fresh = nonce();
        prop_assert!(!key.check_client(&client, &fresh, &right));
        // The connecting side refuses a challenge it cannot check.
        let challenge = MasterFrame::AuthChallenge { nonce: server_nonce.clone(), proof: proof.clone() };
        let answered = crate::protocol::auth::answer(&key, &client, challenge).is_ok();
        prop_assert_eq!(answered, key.check_server(&client, &server_nonce, &proof));
    }

    #[test]
    fn the_master_core_takes_any_traffic(steps in steps(secondary_frame())) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut core = master(now);
        let mut open = std::collections::BTreeSet::new();
        for step in steps {
            match step {
                Step::Open(c) => {
                    if open.insert(c) {
                        core.connection_opened(c);
                    }
                }
                Step::Close(c) => {
                    if open.remove(&c) {
                        core.connection_closed(c);
                    }
                }
                // The decoder closes the connection of a frame out of range.
                Step::Frame(_, f) if f.check().is_err() => {}
                Step::Frame(c, f) => {
                    if open.insert(c) {
                        core.connection_opened(c);
                    }
                    core.handle_frame(now, c, f);
                }
                Step::Tick(ms) => {
                    now += Duration::from_millis(ms);
                    core.handle_timeout(now);
                    core.tick_heartbeat(now);
                }
            }
            for out in core.take_outputs() {
                if let crate::replication::MasterOutput::Close { conn } = out
                    && open.remove(&conn)
                {
                    core.connection_closed(conn);
                }
            }
            let st = core.status(now);
            prop_assert!(st.commit_id <= st.last_id, "commit {} past durable {}", st.commit_id, st.last_id);
            for m in &st.members {
                prop_assert!(m.last_acked_id <= st.written_id, "{} acked {} past {}", m.name, m.last_acked_id, st.written_id);
            }
        }
    }

    #[test]
    fn the_secondary_core_takes_any_traffic(steps in steps(master_frame())) {
        let t0 = Instant::now();
        let mut now = t0;
        let store = Arc::new(MemStore::new());
        let mut core = SecondaryCore::new("s1".to_string(), store.clone());
        let mut connected = false;
        for step in steps {
            match step {
                Step::Open(_) if !connected => {
                    core.connected(now, 0);
                    connected = true;
                }
                Step::Close(_) if connected => {
                    core.disconnected();
                    connected = false;
                }
                Step::Frame(_, f) if f.check().is_err() => {}
                Step::Frame(_, f) => {
                    if !connected {
                        core.connected(now, 0);
                        connected = true;
                    }
                    core.handle_frame(now, f);
                }
                Step::Tick(ms) => now += Duration::from_millis(ms),
                _ => {}
            }
            for out in core.take_outputs() {
                if matches!(out, crate::replication::SecondaryOutput::Close) {
                    core.disconnected();
                    connected = false;
                }
            }
            // What it stores is a gap-free log.
            let last = store.last_id();
            let log = store.read(1, usize::MAX).expect("memory store");
            prop_assert_eq!(log.len() as u64, last);
            for (i, e) in log.iter().enumerate() {
                prop_assert_eq!(e.id, i as u64 + 1);
            }
        }
    }

    #[test]
    fn the_election_core_takes_any_vote_traffic(
        requests in vec(vote_request(), 1..20),
        answers in vec((name(), term(), any::<bool>(), any::<bool>()), 0..20),
        own in (term(), id()),
    ) {
        let t0 = Instant::now();
        let mut e = ElectionCore::new(
            ElectionConfig { name: "s1".into(), priority: 1, election_timeout: Duration::from_millis(100), seed: 3 },
            t0,
            1,
            None,
        );
        e.set_voters(vec!["m".into(), "s1".into(), "s2".into()]);
        let log = LogPosition { last_term: own.0, last_id: own.1 };
        let mut now = t0;
        // What the decoder lets through.
        let requests = requests
            .into_iter()
            .filter(|r| SecondaryFrame::RequestVote(r.clone()).check().is_ok());
        for (i, r) in requests.enumerate() {
            let before = e.term();
            let answer = e.handle_vote_request(now, &r, log);
            // A vote is only ever granted to a log at least as up to date.
            if answer.granted {
                prop_assert!(r.log >= log);
            }
            prop_assert!(e.term() >= before, "terms never go back");
            now += Duration::from_millis(150);
            e.handle_timeout(now, log);
            if let Some((who, term, granted, pre)) = answers.get(i).filter(|a| a.1 < crate::protocol::MAX_TERM) {
                e.handle_vote_response(now, who, &VoteResponse { term: *term, granted: *granted, pre_vote: *pre, reason: String::new() }, log);
            }
            e.take_outputs();
        }
    }
}
