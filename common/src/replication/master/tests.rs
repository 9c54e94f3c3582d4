//! Exact-output tests of the master core: one input, then the precise decisions.

use super::*;
use crate::replication::Health;
use crate::replication::election::TermStart;
use crate::storage::MemStore;
use std::sync::Arc;

const MS: Duration = Duration::from_millis(1);

fn core() -> (MasterCore<Arc<MemStore>>, Instant) {
    let mut cfg = MasterConfig::new("m", Duration::from_millis(100));
    cfg.seed = 1;
    (
        MasterCore::new(cfg, Arc::new(MemStore::new())).unwrap(),
        Instant::now(),
    )
}

fn hello(name: &str, next_expected: u64, log_id: u64) -> SecondaryFrame {
    SecondaryFrame::Hello {
        version: PROTOCOL_VERSION,
        name: name.into(),
        next_expected,
        log_id,
        // Every entry in these tests is from the master's first run.
        last_term: u64::from(next_expected > 1),
        term: 0,
        history: if next_expected > 1 {
            History(vec![TermStart { term: 1, after: 0 }])
        } else {
            History::default()
        },
        comm: None,
        http: None,
        priority: 1,
        delay_ms: 0,
    }
}

fn write(msg: &str, w: u32) -> WriteRequest {
    WriteRequest {
        message: msg.into(),
        write_concern: WriteConcern::Count(w),
        timeout: None,
        request_id: None,
    }
}

/// A cumulative acknowledgement with nothing held back.
fn ack(upto: u64) -> SecondaryFrame {
    SecondaryFrame::Ack {
        upto,
        buffered: vec![],
    }
}

/// The store made everything appended durable.
fn durable(c: &mut MasterCore<Arc<MemStore>>, now: Instant) {
    let id = c.last_id();
    c.persisted(now, id);
}

fn entry(id: u64, msg: &str) -> Entry {
    Entry {
        term: 1,
        id,
        message: msg.into(),
        request_id: None,
    }
}

/// Bring a fresh secondary on `conn` to the live phase; returns nothing, checks outputs.
fn join(c: &mut MasterCore<Arc<MemStore>>, now: Instant, conn: ConnId, name: &str) {
    c.connection_opened(conn);
    c.handle_frame(now, conn, hello(name, 1, 0));
    c.handle_frame(now, conn, SecondaryFrame::GetMessages { start_id: 1 });
    c.handle_frame(now, conn, SecondaryFrame::Ready);
    c.take_outputs();
}

fn committed(token: Token, id: u64, acked_by: &[&str]) -> MasterOutput {
    MasterOutput::Reply {
        token,
        outcome: WriteOutcome::Committed(Receipt {
            id,
            acks: acked_by.len(),
            acked_by: acked_by.iter().map(|s| s.to_string()).collect(),
            term: 1,
        }),
    }
}

#[test]
fn handshake_catch_up_ready_then_live_write() {
    let (mut c, now) = core();
    c.connection_opened(1);
    c.handle_frame(now, 1, hello("s1", 1, 0));
    assert_eq!(
        c.take_outputs(),
        vec![MasterOutput::Send {
            conn: 1,
            frame: MasterFrame::Welcome {
                version: PROTOCOL_VERSION,
                name: "m".into(),
                log_id: c.log_id(),
                last_id: 0,
                truncate_after: None,
                http_host: None,
                http_port: 0,
                term: 1,
                history: History(vec![TermStart { term: 1, after: 0 }]),
                members: c.status(now).hosts,
                removed: Vec::new(),
                config_version: 2,
                config_term: 1,
                delay_ms: 0,
            }
        }]
    );
    c.handle_frame(now, 1, SecondaryFrame::GetMessages { start_id: 1 });
    assert_eq!(
        c.take_outputs(),
        vec![MasterOutput::Send {
            conn: 1,
            frame: MasterFrame::Messages {
                entries: vec![],
                last: true,
                term: 1,
            }
        }]
    );
    c.handle_frame(now, 1, SecondaryFrame::Ready);
    assert_eq!(
        c.take_outputs(),
        vec![MasterOutput::Send {
            conn: 1,
            frame: MasterFrame::ReadyAck
        }]
    );
    assert_eq!(c.submit(now, write("a", 2), 10).unwrap(), 1);
    assert_eq!(
        c.take_outputs(),
        vec![],
        "nothing is sent before the store wrote it"
    );
    assert!(c.needs_sync());
    c.flushed(now, 1);
    assert_eq!(
        c.take_outputs(),
        vec![MasterOutput::Send {
            conn: 1,
            frame: MasterFrame::AddMessages {
                entries: vec![entry(1, "a")],
                commit_id: 0,
                urgent: true,
                term: 1,
            }
        }],
        "sent while the master's own sync runs"
    );
    assert!(c.needs_sync(), "written is not durable");
    c.handle_frame(now, 1, ack(1));
    assert_eq!(
        c.take_outputs(),
        vec![],
        "w=2 is not met by a secondary alone: the master counts once durable"
    );
    assert_eq!(
        c.commit_id(),
        0,
        "nothing is committed past the master's sync"
    );
    durable(&mut c, now);
    assert!(!c.needs_sync());
    assert_eq!(c.take_outputs(), vec![committed(10, 1, &["m", "s1"])]);
    assert_eq!(c.commit_id(), 1);
    assert_eq!(c.poll_timeout(), None, "nothing left to resend");
}

/// A store holding `n` entries of term 1, as a crashed first run left it.
fn store_of_a_first_run(n: u64) -> Arc<MemStore> {
    let store = Arc::new(MemStore::new());
    store.set_log_id(7).unwrap();
    store.set_term(1).unwrap();
    store
        .append(&(1..=n).map(|i| entry(i, "old")).collect::<Vec<_>>())
        .unwrap();
    store
}

#[test]
fn each_run_takes_a_new_saved_term() {
    let store = store_of_a_first_run(3);
    let cfg = MasterConfig::new("m", Duration::from_millis(100));
    let c = MasterCore::new(cfg.clone(), store.clone()).unwrap();
    assert_eq!((c.term(), store.term()), (2, 2));
    drop(c);
    let mut c = MasterCore::new(cfg, store.clone()).unwrap();
    assert_eq!(
        c.term(),
        3,
        "even a run that appended nothing used its term"
    );
    c.submit(Instant::now(), write("new", 1), 1).unwrap();
    c.flushed(Instant::now(), 4);
    assert_eq!(store.read(4, 1).unwrap()[0].term, 3);
}

#[test]
fn a_secondary_holding_entries_the_master_lost_is_told_where_to_cut() {
    // Run 1 wrote 1..=5 and sent them; its machine crashed with 1..=3 durable. Run 2
    // wrote 4 and 5 anew (term 2).
    let store = store_of_a_first_run(3);
    let mut cfg = MasterConfig::new("m", Duration::from_millis(100));
    cfg.seed = 1;
    let mut c = MasterCore::new(cfg, store).unwrap();
    let now = Instant::now();
    for i in 0..2 {
        c.submit(now, write("new", 1), i).unwrap();
    }
    durable(&mut c, now);
    c.take_outputs();
    let hello_term = |name: &str, holds: u64, last_term: u64| SecondaryFrame::Hello {
        version: PROTOCOL_VERSION,
        name: name.into(),
        next_expected: holds + 1,
        log_id: 7,
        last_term,
        term: 0,
        // Ids 1..=3 are run 1's, the rest of the term the secondary says.
        history: History::from_entry_terms(
            (1..=holds).map(|id| (id, if id <= 3 { 1 } else { last_term })),
        ),
        comm: None,
        http: None,
        priority: 1,
        delay_ms: 0,
    };
    let welcome_cut = |c: &mut MasterCore<Arc<MemStore>>| match &c.take_outputs()[..] {
        [
            MasterOutput::Send {
                frame: MasterFrame::Welcome { truncate_after, .. },
                ..
            },
        ] => *truncate_after,
        other => panic!("{other:?}"),
    };
    let cases = [
        // (holds, term of its last entry) -> where it must cut
        (5, 1, Some(3)), // 4 and 5 of run 1 are not the master's 4 and 5
        (4, 1, Some(3)),
        (3, 1, None), // all of it is the master's
        (2, 1, None),
        (5, 2, None), // from this run: the same entries
        (0, 0, None),
    ];
    for (i, (holds, term, cut)) in cases.into_iter().enumerate() {
        let conn = i as ConnId + 1;
        c.connection_opened(conn);
        c.handle_frame(now, conn, hello_term("s", holds, term));
        assert_eq!(welcome_cut(&mut c), cut, "holds {holds} of term {term}");
        // And it is sent what follows the cut.
        c.handle_frame(
            now,
            conn,
            SecondaryFrame::GetMessages {
                start_id: cut.unwrap_or(holds) + 1,
            },
        );
        let out = c.take_outputs();
        assert!(
            !refused(&out, conn, ErrorCode::LogMismatch),
            "case {i}: {out:?}"
        );
        c.connection_closed(conn);
    }
    // A term from the future, or from this run but longer than the log, is not ours.
    for (conn, holds, term) in [(20, 1, 3), (21, 6, 2)] {
        c.connection_opened(conn);
        c.handle_frame(now, conn, hello_term("s", holds, term));
        assert!(refused(&c.take_outputs(), conn, ErrorCode::LogMismatch));
    }
}

#[test]
fn w1_is_answered_at_once_and_counts_only_the_master() {
    let (mut c, now) = core();
    join(&mut c, now, 1, "s1");
    c.submit(now, write("a", 1), 7).unwrap();
    assert_eq!(
        c.take_outputs(),
        vec![],
        "not even w=1 before it is durable"
    );
    durable(&mut c, now);
    let out = c.take_outputs();
    assert_eq!(out[0], committed(7, 1, &["m"]));
    assert!(matches!(out[1], MasterOutput::Send { conn: 1, .. }));
}

#[test]
fn catch_up_streams_in_batches_and_holds_new_writes_until_ready() {
    let (mut c, now) = core();
    for i in 0..1200 {
        c.submit(now, write(&format!("m{i}"), 1), i).unwrap();
    }
    durable(&mut c, now);
    c.take_outputs();
    c.connection_opened(1);
    c.handle_frame(now, 1, hello("s1", 1, 0));
    c.handle_frame(now, 1, SecondaryFrame::GetMessages { start_id: 1 });
    let batches: Vec<(usize, u64, bool)> = c
        .take_outputs()
        .into_iter()
        .filter_map(|o| match o {
            MasterOutput::Send {
                frame: MasterFrame::Messages { entries, last, .. },
                ..
            } => Some((entries.len(), entries[0].id, last)),
            _ => None,
        })
        .collect();
    assert_eq!(
        batches,
        vec![(512, 1, false), (512, 513, false), (176, 1025, true)]
    );
    // A write during catch-up is not sent until the secondary is ready...
    c.submit(now, write("late", 1), 5000).unwrap();
    durable(&mut c, now);
    assert_eq!(c.take_outputs(), vec![committed(5000, 1201, &["m"])]);
    // ...and then it goes out live, without a gap.
    c.handle_frame(now, 1, SecondaryFrame::Ready);
    assert_eq!(
        c.take_outputs(),
        vec![
            MasterOutput::Send {
                conn: 1,
                frame: MasterFrame::ReadyAck
            },
            MasterOutput::Send {
                conn: 1,
                frame: MasterFrame::AddMessages {
                    entries: vec![entry(1201, "late")],
                    commit_id: 0,
                    urgent: false,
                    term: 1,
                }
            }
        ]
    );
}

#[test]
fn window_limits_what_is_in_flight() {
    let mut cfg = MasterConfig::new("m", Duration::from_millis(100));
    cfg.window = 3;
    let mut c = MasterCore::new(cfg, Arc::new(MemStore::new())).unwrap();
    let now = Instant::now();
    join(&mut c, now, 1, "s1");
    for i in 0..5 {
        c.submit(now, write("x", 1), i).unwrap();
    }
    durable(&mut c, now);
    let sent: Vec<u64> = sent_ids(c.take_outputs());
    assert_eq!(sent, vec![1, 2, 3]);
    c.handle_frame(now, 1, ack(2));
    assert_eq!(sent_ids(c.take_outputs()), vec![4, 5]);
}

fn sent_ids(out: Vec<MasterOutput>) -> Vec<u64> {
    out.into_iter()
        .flat_map(|o| match o {
            MasterOutput::Send {
                frame: MasterFrame::AddMessages { entries, .. } | MasterFrame::Messages { entries, .. },
                ..
            } => entries.into_iter().map(|e| e.id).collect(),
            _ => vec![],
        })
        .collect()
}

/// The `urgent` flag of every live batch in `out`, with its first id.
fn urgency(out: &[MasterOutput]) -> Vec<(u64, bool)> {
    out.iter()
        .filter_map(|o| match o {
            MasterOutput::Send {
                frame:
                    MasterFrame::AddMessages {
                        entries, urgent, ..
                    },
                ..
            } => Some((entries[0].id, *urgent)),
            _ => None,
        })
        .collect()
}

#[test]
fn batches_are_urgent_only_while_a_write_waits_for_a_secondary() {
    let (mut c, now) = core();
    join(&mut c, now, 1, "s1");
    c.submit(now, write("a", 1), 1).unwrap();
    durable(&mut c, now);
    assert_eq!(
        urgency(&c.take_outputs()),
        vec![(1, false)],
        "w=1: no hurry"
    );

    // A w=2 write in the batch: urgent, whatever else the batch holds.
    c.submit(now, write("b", 1), 2).unwrap();
    c.submit(now, write("c", 2), 3).unwrap();
    c.flushed(now, 3);
    assert_eq!(urgency(&c.take_outputs()), vec![(2, true)]);
    // A w=1 write sent while the w=2 write still waits: its batch is urgent too (the
    // secondary syncs in order, so an earlier ack cannot come sooner than a later one).
    c.submit(now, write("d", 1), 4).unwrap();
    c.flushed(now, 4);
    assert_eq!(urgency(&c.take_outputs()), vec![(4, true)]);
    durable(&mut c, now);
    c.handle_frame(now, 1, ack(4));
    c.take_outputs();
    c.submit(now, write("e", 1), 5).unwrap();
    durable(&mut c, now);
    assert_eq!(
        urgency(&c.take_outputs()),
        vec![(5, false)],
        "nothing waits now"
    );

    // A resend is urgent: its ack is overdue.
    let at = c.poll_timeout().expect("a resend is scheduled");
    c.handle_frame(
        at,
        1,
        SecondaryFrame::Heartbeat {
            upto: 4,
            config_version: 0,
            config_term: 0,
        },
    );
    c.handle_timeout(at);
    assert_eq!(urgency(&c.take_outputs()), vec![(5, true)]);
}

#[test]
fn resends_back_off_exponentially_and_never_give_up() {
    let (mut c, t0) = core();
    join(&mut c, t0, 1, "s1");
    c.submit(t0, write("a", 2), 1).unwrap();
    durable(&mut c, t0);
    c.take_outputs();
    let mut now = t0;
    let mut gaps = Vec::new();
    for _ in 0..12 {
        let next = c.poll_timeout().expect("a resend is always scheduled");
        gaps.push((next - now).as_millis());
        now = next;
        // The member is alive (heartbeats) but its acks are lost.
        c.handle_frame(
            now,
            1,
            SecondaryFrame::Heartbeat {
                upto: 0,
                config_version: 0,
                config_term: 0,
            },
        );
        c.handle_timeout(now);
        assert_eq!(sent_ids(c.take_outputs()), vec![1]);
    }
    // base 100 ms doubling to the cap of 800 ms, each with up to 25% jitter.
    let plain = [100, 200, 400, 800, 800, 800, 800, 800, 800, 800, 800, 800];
    for (g, p) in gaps.iter().zip(plain) {
        assert!(*g >= p && *g <= p + p / 4, "gaps {gaps:?}");
    }
    // Acknowledging stops the resends and answers the write.
    c.handle_frame(now, 1, ack(1));
    assert_eq!(c.take_outputs(), vec![committed(1, 1, &["m", "s1"])]);
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn out_of_order_and_duplicate_acks_never_move_backwards() {
    let (mut c, now) = core();
    join(&mut c, now, 1, "s1");
    for i in 0..3 {
        c.submit(now, write("x", 1), i).unwrap();
    }
    durable(&mut c, now);
    c.handle_frame(now, 1, ack(3));
    c.handle_frame(now, 1, ack(1));
    c.handle_frame(now, 1, ack(3));
    assert_eq!(c.status(now).members[0].last_acked_id, 3);
}

#[test]
fn selective_acks_stop_resends_but_do_not_count() {
    let (mut c, now) = core();
    join(&mut c, now, 1, "s1");
    c.submit(now, write("a", 1), 1).unwrap();
    c.submit(now, write("b", 2), 2).unwrap();
    durable(&mut c, now);
    c.take_outputs();
    c.handle_frame(
        now,
        1,
        SecondaryFrame::Ack {
            upto: 0,
            buffered: vec![2],
        },
    );
    assert!(c.take_outputs().is_empty(), "2 is not held in order yet");
    let t = c.poll_timeout().unwrap();
    c.handle_timeout(t);
    assert_eq!(sent_ids(c.take_outputs()), vec![1], "only 1 is resent");
}

#[test]
fn timeout_answers_with_the_acks_so_far_and_replication_goes_on() {
    let (mut c, now) = core();
    join(&mut c, now, 1, "s1");
    let mut req = write("a", 3);
    req.timeout = Some(50 * MS);
    c.submit(now, req, 9).unwrap();
    durable(&mut c, now);
    c.take_outputs();
    assert_eq!(c.poll_timeout(), Some(now + 50 * MS));
    c.handle_timeout(now + 50 * MS);
    assert_eq!(
        c.take_outputs(),
        vec![MasterOutput::Reply {
            token: 9,
            outcome: WriteOutcome::TimedOut(Receipt {
                id: 1,
                acks: 1,
                acked_by: vec!["m".into()],
                term: 1,
            })
        }]
    );
    // Still in flight to s1.
    assert!(c.poll_timeout().is_some());
    assert_eq!(c.status(now).members[0].in_flight, 1);
}

#[test]
fn write_concern_above_membership_waits_for_members_to_join() {
    let (mut c, now) = core();
    join(&mut c, now, 1, "s1");
    c.submit(now, write("m1", 3), 1).unwrap();
    durable(&mut c, now);
    c.handle_frame(now, 1, ack(1));
    assert!(
        !c.take_outputs()
            .iter()
            .any(|o| matches!(o, MasterOutput::Reply { .. }))
    );
    c.connection_opened(2);
    c.handle_frame(now, 2, hello("s2", 1, 0));
    c.handle_frame(now, 2, SecondaryFrame::GetMessages { start_id: 1 });
    c.take_outputs();
    c.handle_frame(now, 2, ack(1));
    assert_eq!(c.take_outputs(), vec![committed(1, 1, &["m", "s1", "s2"])]);
}

#[test]
fn majority_counts_every_known_member_even_disconnected() {
    let (mut c, now) = core();
    join(&mut c, now, 1, "s1");
    join(&mut c, now, 2, "s2");
    c.connection_closed(2);
    let req = WriteRequest {
        write_concern: WriteConcern::Majority,
        ..write("a", 1)
    };
    c.submit(now, req, 1).unwrap();
    durable(&mut c, now);
    assert!(
        !c.take_outputs()
            .iter()
            .any(|o| matches!(o, MasterOutput::Reply { .. })),
        "majority of 3 is 2"
    );
    c.handle_frame(now, 1, ack(1));
    assert_eq!(c.take_outputs(), vec![committed(1, 1, &["m", "s1"])]);
    let st = c.status(now);
    assert_eq!((st.reachable, st.member_count, st.has_quorum), (2, 3, true));
}

#[test]
fn request_ids_never_append_twice() {
    let (mut c, now) = core();
    let mut req = write("a", 1);
    req.request_id = Some("k".into());
    assert_eq!(c.submit(now, req.clone(), 1).unwrap(), 1);
    durable(&mut c, now);
    assert_eq!(c.submit(now, req, 2).unwrap(), 1);
    assert_eq!(c.last_id(), 1);
    assert_eq!(
        c.take_outputs(),
        vec![committed(1, 1, &["m"]), committed(2, 1, &["m"])]
    );
}

fn refused(out: &[MasterOutput], conn: ConnId, code: ErrorCode) -> bool {
    matches!(out, [MasterOutput::Send { conn: c1, frame: MasterFrame::Error(e) }, MasterOutput::Close { conn: c2 }]
        if *c1 == conn && *c2 == conn && e.code == code)
}

#[test]
fn bad_handshakes_are_refused_with_an_error_frame() {
    let (mut c, now) = core();
    let cases: Vec<(SecondaryFrame, ErrorCode)> = vec![
        (
            SecondaryFrame::GetMessages { start_id: 1 },
            ErrorCode::HandshakeRequired,
        ),
        (
            SecondaryFrame::Hello {
                version: 99,
                name: "s".into(),
                next_expected: 1,
                log_id: 0,
                last_term: 0,
                term: 0,
                history: History::default(),
                comm: None,
                http: None,
                priority: 1,
                delay_ms: 0,
            },
            ErrorCode::VersionMismatch,
        ),
        (hello("m", 1, 0), ErrorCode::NameConflict),
        (hello("", 1, 0), ErrorCode::MalformedFrame),
        (hello("s", 1, 12345), ErrorCode::LogMismatch),
        (hello("s", 5, c.log_id()), ErrorCode::LogMismatch),
        (hello("s", 0, 0), ErrorCode::LogMismatch),
    ];
    for (i, (frame, code)) in cases.into_iter().enumerate() {
        let conn = i as ConnId + 100;
        c.connection_opened(conn);
        c.handle_frame(now, conn, frame);
        let out = c.take_outputs();
        assert!(refused(&out, conn, code), "case {i}: {out:?}");
        c.connection_closed(conn);
    }
    assert_eq!(c.status(now).members.len(), 0, "no member was added");
}

#[test]
fn protocol_violations_after_handshake_close_the_connection() {
    let (mut c, now) = core();
    join(&mut c, now, 1, "s1");
    c.handle_frame(
        now,
        1,
        SecondaryFrame::Heartbeat {
            upto: 99,
            config_version: 0,
            config_term: 0,
        },
    );
    assert!(refused(&c.take_outputs(), 1, ErrorCode::LogMismatch));
    c.connection_opened(2);
    c.handle_frame(now, 2, hello("s2", 1, 0));
    c.take_outputs();
    c.handle_frame(now, 2, SecondaryFrame::Ready);
    assert!(refused(&c.take_outputs(), 2, ErrorCode::UnexpectedFrame));
}

#[test]
fn a_second_connection_with_the_same_name_replaces_the_first() {
    let (mut c, now) = core();
    join(&mut c, now, 1, "s1");
    c.connection_opened(2);
    c.handle_frame(now, 2, hello("s1", 1, 0));
    let out = c.take_outputs();
    assert!(refused(&out[..2], 1, ErrorCode::Replaced), "{out:?}");
    // The old connection closing later does not disturb the new one.
    c.connection_closed(1);
    let st = c.status(now);
    assert_eq!(st.members.len(), 1);
    assert!(st.members[0].connected);
}

#[test]
fn membership_is_saved_and_restored() {
    let store = Arc::new(MemStore::new());
    let cfg = MasterConfig::new("m", Duration::from_millis(100));
    let mut c = MasterCore::new(cfg.clone(), store.clone()).unwrap();
    let now = Instant::now();
    join(&mut c, now, 1, "s1");
    join(&mut c, now, 2, "s2");
    assert_eq!(
        store.membership().members,
        vec!["m".to_string(), "s1".to_string(), "s2".to_string()],
        "the saved list names every member, the master too"
    );
    // A restarted master knows both members before they reconnect: w=majority needs 2.
    let mut c = MasterCore::new(cfg, store).unwrap();
    let st = c.status(now);
    assert_eq!((st.member_count, st.reachable), (3, 1));
    assert_eq!(
        c.submit(now, write("a", 1), 1),
        Err(Rejected::NoQuorum {
            reachable: 1,
            members: 3,
            needed: 2
        }),
        "alone, a restarted master takes no writes until a secondary is back"
    );
    assert_eq!(c.last_id(), 0, "nothing was appended");
}

#[test]
fn persisted_never_moves_backwards_or_past_the_log() {
    let (mut c, now) = core();
    c.submit(now, write("a", 1), 1).unwrap();
    c.persisted(now, 99);
    assert_eq!(c.durable_id(), 1);
    c.persisted(now, 0);
    assert_eq!(c.durable_id(), 1);
}

#[test]
fn quorum_follows_member_health() {
    let (mut c, t0) = core(); // heartbeat 1 s: Suspected after 2 s, Unhealthy after 5 s
    join(&mut c, t0, 1, "s1");
    join(&mut c, t0, 2, "s2");
    let at = |s: u64| t0 + Duration::from_secs(s);
    assert_eq!(c.status(at(1)).members[0].health, Health::Healthy);
    assert_eq!(c.status(at(3)).members[0].health, Health::Suspected);
    assert_eq!(c.status(at(5)).members[0].health, Health::Unhealthy);
    // Suspected members still count.
    assert!(c.submit(at(3), write("a", 1), 1).is_ok());
    // Both silent for 5 intervals: no majority of 3.
    let err = c.submit(at(6), write("b", 1), 2).unwrap_err();
    assert!(
        err.to_string().contains("reaches 1 of its 3 members"),
        "{err}"
    );
    assert!(!c.status(at(6)).has_quorum);
    // One of them speaks: writes resume by themselves.
    c.handle_frame(
        at(7),
        1,
        SecondaryFrame::Heartbeat {
            upto: 0,
            config_version: 0,
            config_term: 0,
        },
    );
    assert!(c.submit(at(7), write("c", 1), 3).is_ok());
}

#[test]
fn resends_to_an_unhealthy_member_wait_then_resume_at_once() {
    let (mut c, t0) = core();
    join(&mut c, t0, 1, "s1");
    c.submit(t0, write("a", 2), 1).unwrap();
    durable(&mut c, t0);
    c.take_outputs();
    // Healthy: resent after the ack timeout.
    let t = c.poll_timeout().unwrap();
    c.handle_timeout(t);
    assert_eq!(sent_ids(c.take_outputs()), vec![1]);
    // Silent past Unhealthy: nothing is resent, the next try is pushed to the cap.
    let late = t0 + Duration::from_secs(6);
    c.handle_timeout(late);
    assert_eq!(sent_ids(c.take_outputs()), Vec::<u64>::new());
    assert!(c.poll_timeout().unwrap() >= late + Duration::from_millis(800));
    // Heard from again: everything in flight goes out at once.
    c.handle_frame(
        late,
        1,
        SecondaryFrame::Heartbeat {
            upto: 0,
            config_version: 0,
            config_term: 0,
        },
    );
    assert_eq!(c.poll_timeout(), Some(late));
    c.handle_timeout(late);
    assert_eq!(sent_ids(c.take_outputs()), vec![1]);
}

#[test]
fn commit_id_holders_and_member_removal() {
    let (mut c, now) = core();
    join(&mut c, now, 1, "s1");
    join(&mut c, now, 2, "s2");
    for i in 0..3 {
        c.submit(now, write("x", 1), i).unwrap();
    }
    durable(&mut c, now);
    c.handle_frame(now, 1, ack(2));
    c.handle_frame(now, 2, ack(1));
    // master holds 3, s1 2, s2 1: a majority (2 of 3) holds up to 2.
    assert_eq!(c.commit_id(), 2);
    assert_eq!(c.status(now).commit_id, 2);
    assert_eq!(c.holders(2).unwrap().acked_by, vec!["m", "s1"]);
    assert_eq!(c.holders(4), None);
    assert_eq!(c.holders(0), None);
    // Removing s2 for good: forgotten, its connection closed, majority of 2 now.
    assert!(c.remove_member("s2").unwrap());
    assert!(!c.remove_member("s2").unwrap());
    let out = c.take_outputs();
    // s2 is refused, then the new member list (with s2 removed) goes to those left.
    assert!(
        refused(&out[out.len() - 3..out.len() - 1], 2, ErrorCode::Removed),
        "{out:?}"
    );
    assert!(
        matches!(out.last(), Some(MasterOutput::Send { conn: 1, frame: MasterFrame::Members { members, removed, .. } })
            if members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>() == ["m", "s1"] && removed == &["s2".to_string()]),
        "{out:?}"
    );
    assert_eq!(c.status(now).member_count, 2);
    assert_eq!(c.commit_id(), 2);
    // s1 still works through its connection after the index shift.
    c.handle_frame(now, 1, ack(3));
    assert_eq!(c.commit_id(), 3);
}

#[test]
fn a_removed_member_stays_out_until_readmitted_even_after_a_restart() {
    let store = Arc::new(MemStore::new());
    let cfg = MasterConfig::new("m", Duration::from_millis(100));
    let mut c = MasterCore::new(cfg.clone(), store.clone()).unwrap();
    let now = Instant::now();
    join(&mut c, now, 1, "s1");
    join(&mut c, now, 2, "s2");
    assert!(c.remove_member("s2").unwrap());
    c.take_outputs();
    // It comes back on a new connection: refused with Removed, and not a member.
    c.connection_opened(3);
    c.handle_frame(now, 3, hello("s2", 1, c.log_id()));
    assert!(refused(&c.take_outputs(), 3, ErrorCode::Removed));
    let st = c.status(now);
    assert_eq!(st.member_count, 2);
    assert_eq!(st.removed, vec!["s2".to_string()]);
    assert_eq!(st.refused.len(), 1);
    assert_eq!(
        (st.refused[0].name.as_str(), st.refused[0].code),
        ("s2", ErrorCode::Removed)
    );
    assert!(
        st.refused[0].reason.contains("POST /members"),
        "{}",
        st.refused[0].reason
    );
    // Saved with the membership: a restarted master still refuses it.
    assert_eq!(store.membership().removed, vec!["s2".to_string()]);
    let mut c = MasterCore::new(cfg, store.clone()).unwrap();
    c.connection_opened(4);
    c.handle_frame(now, 4, hello("s2", 1, c.log_id()));
    assert!(refused(&c.take_outputs(), 4, ErrorCode::Removed));
    // Re-admitted: it joins on its next connection and counts again.
    assert!(c.readmit("s2").unwrap());
    assert!(
        !c.readmit("s2").unwrap(),
        "only a removed name is re-admitted"
    );
    assert!(store.membership().removed.is_empty());
    assert!(c.status(now).refused.is_empty());
    // A new member joins only once a majority holds the last change of the members:
    // after this restart, s1 must be back first.
    c.connection_opened(5);
    c.handle_frame(now, 5, hello("s2", 1, c.log_id()));
    assert!(refused(&c.take_outputs(), 5, ErrorCode::Other));
    c.connection_opened(6);
    c.handle_frame(now, 6, hello("s1", 1, c.log_id()));
    c.handle_frame(now, 6, SecondaryFrame::GetMessages { start_id: 1 });
    join(&mut c, now, 7, "s2");
    let st = c.status(now);
    assert_eq!(st.member_count, 3);
    assert!(st.members.iter().any(|m| m.name == "s2" && m.connected));
}

#[test]
fn secondaries_of_another_log_are_reported_until_one_gets_in() {
    let (mut c, now) = core();
    for (conn, at) in [(1, now), (2, now + MS)] {
        c.connection_opened(conn);
        c.handle_frame(at, conn, hello("s1", 6, 0xbad));
        assert!(refused(&c.take_outputs(), conn, ErrorCode::LogMismatch));
    }
    let st = c.status(now + 3 * MS);
    assert_eq!(st.member_count, 1, "a refused peer is no member");
    assert_eq!(st.refused.len(), 1, "one entry per name");
    let r = &st.refused[0];
    assert_eq!(
        (r.name.as_str(), r.code, r.times, r.last_refused_ms_ago),
        ("s1", ErrorCode::LogMismatch, 2, 2)
    );
    assert!(
        r.reason.contains("0xbad") && r.reason.contains("another data directory"),
        "{}",
        r.reason
    );
    // The list is bounded: the oldest names go first.
    for i in 0..REFUSED_MAX as u64 {
        c.connection_opened(10 + i);
        c.handle_frame(now, 10 + i, hello(&format!("x{i}"), 6, 0xbad));
    }
    let st = c.status(now);
    assert_eq!(st.refused.len(), REFUSED_MAX);
    assert!(st.refused.iter().all(|r| r.name != "s1"));
    // One that gets in (with an empty log) leaves the list.
    join(&mut c, now, 99, "x3");
    assert!(c.status(now).refused.iter().all(|r| r.name != "x3"));
}

#[test]
fn the_welcome_names_the_masters_http_address() {
    let mut cfg = MasterConfig::new("m", Duration::from_millis(100));
    cfg.http = HttpAddress::new("127.0.0.2", 8080);
    let mut c = MasterCore::new(cfg, Arc::new(MemStore::new())).unwrap();
    c.connection_opened(1);
    c.handle_frame(Instant::now(), 1, hello("s1", 1, 0));
    let out = c.take_outputs();
    assert!(
        matches!(&out[..], [MasterOutput::Send { frame: MasterFrame::Welcome { http_host: Some(h), http_port: 8080, .. }, .. }] if h == "127.0.0.2"),
        "{out:?}"
    );
    // Listening on every address, it leaves the host to the secondary.
    let any = HttpAddress::new("0.0.0.0", 8080);
    assert_eq!(any.host, None);
    assert_eq!(any.with_fallback("master").as_deref(), Some("master:8080"));
    assert_eq!(
        HttpAddress::new("::1", 80).with_fallback("x").as_deref(),
        Some("[::1]:80")
    );
    assert_eq!(
        HttpAddress::default().with_fallback("x"),
        None,
        "a master that did not say"
    );
}

#[test]
fn heartbeats_and_live_frames_carry_the_commit_id() {
    let (mut c, now) = core();
    join(&mut c, now, 1, "s1");
    c.submit(now, write("a", 1), 1).unwrap();
    durable(&mut c, now);
    c.take_outputs();
    c.handle_frame(now, 1, ack(1));
    c.tick_heartbeat(now);
    assert_eq!(
        c.take_outputs(),
        vec![MasterOutput::Send {
            conn: 1,
            frame: MasterFrame::Heartbeat {
                last_id: 1,
                commit_id: 1,
                term: 1,
            }
        }]
    );
    c.submit(now, write("b", 1), 2).unwrap();
    durable(&mut c, now);
    let sent: Vec<u64> = c
        .take_outputs()
        .into_iter()
        .filter_map(|o| match o {
            MasterOutput::Send {
                frame: MasterFrame::AddMessages { commit_id, .. },
                ..
            } => Some(commit_id),
            _ => None,
        })
        .collect();
    assert_eq!(sent, vec![1], "b goes out with the commit id so far");
}

#[test]
fn request_ids_survive_a_restart() {
    let store = Arc::new(MemStore::new());
    let cfg = MasterConfig::new("m", Duration::from_millis(100));
    let now = Instant::now();
    let mut c = MasterCore::new(cfg.clone(), store.clone()).unwrap();
    let mut req = write("pay 10", 1);
    req.request_id = Some("order-17".into());
    assert_eq!(c.submit(now, req.clone(), 1).unwrap(), 1);
    c.submit(now, write("other", 1), 2).unwrap();
    // A new core over the same store: the key is found in the log.
    let mut c = MasterCore::new(cfg, store).unwrap();
    assert_eq!(c.submit(now, req, 3).unwrap(), 1);
    assert_eq!(c.last_id(), 2, "the retry appended nothing");
    assert_eq!(c.take_outputs(), vec![committed(3, 1, &["m"])]);
}

#[test]
fn writes_waiting_only_for_secondaries_are_counted_for_spinning() {
    let (mut c, now) = core();
    join(&mut c, now, 1, "s1");
    join(&mut c, now, 2, "s2");
    c.submit(now, write("one", 1), 1).unwrap();
    c.submit(now, write("two", 3), 2).unwrap();
    c.submit(now, write("three", 2), 3).unwrap();
    assert_eq!(
        c.waiting_for_secondaries(10),
        0,
        "the master's own sync is outstanding: that is no wait for secondaries"
    );
    let id = c.last_id();
    c.flushed(now, id);
    assert_eq!(c.waiting_for_secondaries(10), 0, "written is not durable");
    durable(&mut c, now);
    c.take_outputs();
    // "one" is answered by the master alone; "two" and "three" wait for secondaries.
    assert_eq!(c.waiting_for_secondaries(10), 2);
    assert_eq!(c.waiting_for_secondaries(1), 1, "counted up to the limit");
    c.handle_frame(now, 1, ack(3));
    assert_eq!(c.waiting_for_secondaries(10), 1, "w=2 met by s1");
    c.handle_frame(now, 2, ack(3));
    assert_eq!(c.waiting_for_secondaries(10), 0);
}

/// A Hello from a member of `name` holding `holds` entries of term 1 (of the log of
/// `store_of_a_first_run`; none: a new member), knowing `term`.
fn hello_at(name: &str, holds: u64, term: u64, priority: u32) -> SecondaryFrame {
    let SecondaryFrame::Hello {
        version,
        next_expected,
        log_id,
        last_term,
        history,
        ..
    } = hello(name, holds + 1, if holds == 0 { 0 } else { 7 })
    else {
        unreachable!()
    };
    SecondaryFrame::Hello {
        version,
        name: name.into(),
        next_expected,
        log_id,
        last_term,
        term,
        history,
        comm: None,
        http: None,
        priority,
        delay_ms: 0,
    }
}

/// Raft's "Figure 8" without a no-op: entries of an older term held by a majority
/// count as committed only once that majority also holds this term's start, that is,
/// once each member took this master's history on a connection of this term (its
/// `GetMessages`, sent after the `Welcome`, or any acknowledgement says so).
#[test]
fn older_entries_commit_only_with_this_terms_start_on_a_majority() {
    let store = store_of_a_first_run(2);
    let mut cfg = MasterConfig::new("m", Duration::from_millis(100));
    cfg.term = 3;
    let mut c = MasterCore::new(cfg, store).unwrap();
    let now = Instant::now();
    assert_eq!(
        c.term_start(),
        2,
        "term 3 starts after the two entries of term 1"
    );
    for (conn, name) in [(1, "s1"), (2, "s2")] {
        c.connection_opened(conn);
        c.handle_frame(now, conn, hello_at(name, 2, 1, 1));
    }
    c.take_outputs();
    // All three hold ids 1 and 2, but no secondary took this term's history yet.
    assert_eq!(c.commit_id(), 0);
    let w = c.submit(now, write("new", 2), 9).unwrap();
    assert_eq!(w, 3);
    durable(&mut c, now);
    c.take_outputs();
    // s1 took the Welcome (its GetMessages says so): it holds the term start, and so
    // 1 and 2 are committed with it; 3 follows once s1 holds it.
    c.handle_frame(now, 1, SecondaryFrame::GetMessages { start_id: 3 });
    assert_eq!(c.commit_id(), 2);
    c.handle_frame(now, 1, ack(3));
    assert_eq!(c.commit_id(), 3);
    assert!(
        c.take_outputs()
            .iter()
            .any(|o| matches!(o, MasterOutput::Reply { token: 9, outcome: WriteOutcome::Committed(r) } if r.acks == 2 && r.term == 3)),
        "the w=2 write is answered, with its term"
    );
}

#[test]
fn a_member_of_a_newer_term_makes_the_master_step_down() {
    let (mut c, now) = core();
    c.connection_opened(1);
    c.handle_frame(now, 1, hello_at("s1", 0, 5, 1));
    match &c.take_outputs()[..] {
        [
            MasterOutput::Send {
                conn: 1,
                frame: MasterFrame::Error(e),
            },
            MasterOutput::Close { conn: 1 },
            MasterOutput::NewerTerm(5),
        ] => assert_eq!((e.code, e.term), (ErrorCode::StaleTerm, 1)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_master_that_hears_no_majority_for_the_quorum_timeout_reports_it_once() {
    let mut cfg = MasterConfig::new("m", Duration::from_millis(100));
    cfg.quorum_timeout = Some(Duration::from_secs(1));
    let mut c = MasterCore::new(cfg, Arc::new(MemStore::new())).unwrap();
    let t0 = Instant::now();
    join(&mut c, t0, 1, "s1");
    join(&mut c, t0, 2, "s2");
    let lost = |out: Vec<MasterOutput>| {
        out.iter()
            .filter(|o| matches!(o, MasterOutput::LostQuorum))
            .count()
    };
    // s1 keeps answering: a majority (m, s1) is heard from.
    for ms in (0..=3000).step_by(250) {
        let t = t0 + Duration::from_millis(ms);
        c.handle_frame(
            t,
            1,
            SecondaryFrame::Heartbeat {
                upto: 0,
                config_version: 0,
                config_term: 0,
            },
        );
        c.tick_heartbeat(t);
        assert_eq!(lost(c.take_outputs()), 0, "at {ms} ms");
    }
    // Then both fall silent: reported once, a timeout after the majority was last heard.
    let silent = t0 + Duration::from_millis(3000);
    let mut reports = Vec::new();
    for ms in (250..=3000).step_by(250) {
        let t = silent + Duration::from_millis(ms);
        c.tick_heartbeat(t);
        if lost(c.take_outputs()) > 0 {
            reports.push(ms);
        }
    }
    assert_eq!(reports, vec![1000]);
}

#[test]
fn handing_over_picks_the_most_caught_up_member_that_may_stand() {
    let (mut c, now) = core();
    for (conn, name, priority) in [(1, "s1", 1), (2, "s2", 0), (3, "s3", 1)] {
        c.connection_opened(conn);
        c.handle_frame(now, conn, hello_at(name, 0, 0, priority));
        c.handle_frame(now, conn, SecondaryFrame::GetMessages { start_id: 1 });
        c.handle_frame(now, conn, SecondaryFrame::Ready);
    }
    for i in 0..3 {
        c.submit(now, write("x", 1), i).unwrap();
    }
    durable(&mut c, now);
    c.handle_frame(now, 1, ack(1));
    c.handle_frame(now, 2, ack(3)); // the most caught up, but priority 0
    c.handle_frame(now, 3, ack(2));
    c.take_outputs();
    assert_eq!(c.hand_over(None), Some("s3".to_string()));
    assert_eq!(
        c.take_outputs(),
        vec![
            MasterOutput::Send {
                conn: 3,
                frame: MasterFrame::TimeoutNow { term: 1 }
            },
            MasterOutput::HandedOver { to: "s3".into() }
        ]
    );
    // From now on it takes no new writes; a retry of a known requestId still answers.
    assert!(matches!(
        c.submit(now, write("late", 1), 9),
        Err(Rejected::SteppingDown)
    ));
}

#[test]
fn a_caught_up_member_of_higher_priority_is_handed_over_to() {
    let (mut c, now) = core();
    c.connection_opened(1);
    c.handle_frame(now, 1, hello_at("s1", 0, 0, 5));
    c.handle_frame(now, 1, SecondaryFrame::GetMessages { start_id: 1 });
    c.handle_frame(now, 1, SecondaryFrame::Ready);
    c.submit(now, write("x", 1), 1).unwrap();
    durable(&mut c, now);
    c.take_outputs();
    // Behind: no takeover yet.
    c.handle_frame(
        now,
        1,
        SecondaryFrame::Heartbeat {
            upto: 0,
            config_version: 0,
            config_term: 0,
        },
    );
    c.tick_heartbeat(now);
    assert!(
        !c.take_outputs()
            .iter()
            .any(|o| matches!(o, MasterOutput::HandedOver { .. }))
    );
    c.handle_frame(now, 1, ack(1));
    c.tick_heartbeat(now);
    assert!(
        c.take_outputs()
            .iter()
            .any(|o| matches!(o, MasterOutput::HandedOver { to } if to == "s1")),
    );
}

/// A write over `max_pending_writes` is refused before it is stored, and the limit
/// frees up as waiting writes are answered.
#[test]
fn writes_over_the_pending_limit_are_refused_unstored() {
    let mut cfg = MasterConfig::new("m", Duration::from_millis(100));
    cfg.max_pending_writes = 2;
    let mut c = MasterCore::new(cfg, Arc::new(MemStore::new())).unwrap();
    let now = Instant::now();
    assert_eq!(c.submit(now, write("a", 1), 1), Ok(1));
    assert_eq!(c.submit(now, write("b", 1), 2), Ok(2));
    assert_eq!(
        c.submit(now, write("c", 1), 3),
        Err(Rejected::Overloaded { pending: 2 })
    );
    assert_eq!(c.last_id(), 2, "the refused write was not stored");
    durable(&mut c, now);
    assert_eq!(c.submit(now, write("c", 1), 3), Ok(3));
}
