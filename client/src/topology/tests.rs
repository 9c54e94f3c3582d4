//! The scenarios of MongoDB's SDAM specification tests for replica sets
//! (`source/server-discovery-and-monitoring/tests/rs/*.yml`) that apply to chorus,
//! ported to its terms: `electionId` is the term, `setVersion` the configVersion,
//! addresses are HTTP addresses. Each is a table: seeds, then phases of answers, each
//! followed by what the topology must be.

use super::*;
use ServerType::*;
use TopologyType::*;

/// One answer a monitor got.
enum Reply {
    /// `/hello` of a master: (term, configVersion, hosts).
    Primary(u64, u64, &'static [&'static str]),
    /// `/hello` of a secondary: (hosts, the master it names).
    Secondary(&'static [&'static str], Option<&'static str>),
    /// A member that is neither (a master without quorum).
    Other(&'static [&'static str]),
    /// Of another set.
    ForeignSet,
    /// A network error or timeout.
    Fails,
}

struct Phase {
    replies: &'static [(&'static str, Reply)],
    kind: TopologyType,
    servers: &'static [(&'static str, ServerType)],
}

struct Scenario {
    name: &'static str,
    seeds: &'static [&'static str],
    phases: &'static [Phase],
}

fn hello(addr: &str, r: &Reply) -> Option<Hello> {
    let base = Hello {
        set_name: Some("rs".into()),
        name: addr.split(':').next().unwrap_or(addr).to_string(),
        me: addr.to_string(),
        ..Hello::default()
    };
    let hosts = |h: &[&str]| h.iter().map(|s| s.to_string()).collect();
    Some(match r {
        Reply::Primary(term, version, h) => Hello {
            is_writable_primary: true,
            primary: Some(addr.to_string()),
            hosts: hosts(h),
            term: *term,
            config_version: *version,
            ..base
        },
        Reply::Secondary(h, primary) => Hello {
            secondary: true,
            hosts: hosts(h),
            primary: primary.map(str::to_string),
            ..base
        },
        Reply::Other(h) => Hello {
            hosts: hosts(h),
            ..base
        },
        Reply::ForeignSet => Hello {
            set_name: Some("another".into()),
            secondary: true,
            ..base
        },
        Reply::Fails => return None,
    })
}

fn run(s: &Scenario) {
    let mut t = Topology::new(s.seeds);
    for (i, phase) in s.phases.iter().enumerate() {
        for (addr, reply) in phase.replies {
            match hello(addr, reply) {
                Some(h) => t.on_hello(addr, h, Duration::from_millis(1)),
                None => t.on_error(addr, "connection refused"),
            }
        }
        let got: Vec<(&str, ServerType)> = t.servers().map(|s| (&*s.addr, s.kind)).collect();
        assert_eq!(
            (t.kind(), got.as_slice()),
            (phase.kind, phase.servers),
            "{}, phase {i}",
            s.name
        );
    }
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "discover_primary: a seed that is the master brings in its members",
        seeds: &["a:1"],
        phases: &[Phase {
            replies: &[("a:1", Reply::Primary(1, 1, &["a:1", "b:1"]))],
            kind: ReplicaSetWithPrimary,
            servers: &[("a:1", Primary), ("b:1", Unknown)],
        }],
    },
    Scenario {
        name: "discover_secondary: a secondary seed adds its hosts and the master it names",
        seeds: &["b:1"],
        phases: &[Phase {
            replies: &[("b:1", Reply::Secondary(&["b:1", "c:1"], Some("a:1")))],
            kind: ReplicaSetNoPrimary,
            servers: &[("a:1", Unknown), ("b:1", Secondary), ("c:1", Unknown)],
        }],
    },
    Scenario {
        name: "new_primary_new_electionid: a master of a newer term replaces the old one",
        seeds: &["a:1", "b:1"],
        phases: &[
            Phase {
                replies: &[
                    ("a:1", Reply::Primary(1, 1, &["a:1", "b:1"])),
                    ("b:1", Reply::Secondary(&["a:1", "b:1"], Some("a:1"))),
                ],
                kind: ReplicaSetWithPrimary,
                servers: &[("a:1", Primary), ("b:1", Secondary)],
            },
            Phase {
                replies: &[("b:1", Reply::Primary(2, 1, &["a:1", "b:1"]))],
                kind: ReplicaSetWithPrimary,
                servers: &[("a:1", Unknown), ("b:1", Primary)],
            },
            // The old master, still believing it is one, is stale: not selected.
            Phase {
                replies: &[("a:1", Reply::Primary(1, 1, &["a:1", "b:1"]))],
                kind: ReplicaSetWithPrimary,
                servers: &[("a:1", Unknown), ("b:1", Primary)],
            },
            // Once it has stepped down it is a secondary like any other.
            Phase {
                replies: &[("a:1", Reply::Secondary(&["a:1", "b:1"], Some("b:1")))],
                kind: ReplicaSetWithPrimary,
                servers: &[("a:1", Secondary), ("b:1", Primary)],
            },
        ],
    },
    Scenario {
        name: "primary_disconnect_electionid: a stale master heard first never wins back",
        seeds: &["a:1", "b:1"],
        phases: &[
            Phase {
                replies: &[("b:1", Reply::Primary(5, 2, &["a:1", "b:1"]))],
                kind: ReplicaSetWithPrimary,
                servers: &[("a:1", Unknown), ("b:1", Primary)],
            },
            Phase {
                replies: &[("a:1", Reply::Primary(4, 2, &["a:1", "b:1"]))],
                kind: ReplicaSetWithPrimary,
                servers: &[("a:1", Unknown), ("b:1", Primary)],
            },
            // The master goes away: no master, and the stale one is still not taken.
            Phase {
                replies: &[
                    ("b:1", Reply::Fails),
                    ("a:1", Reply::Primary(4, 2, &["a:1", "b:1"])),
                ],
                kind: ReplicaSetNoPrimary,
                servers: &[("a:1", Unknown), ("b:1", Unknown)],
            },
            // a wins an election of a newer term.
            Phase {
                replies: &[("a:1", Reply::Primary(6, 2, &["a:1", "b:1"]))],
                kind: ReplicaSetWithPrimary,
                servers: &[("a:1", Primary), ("b:1", Unknown)],
            },
        ],
    },
    Scenario {
        name: "setversion_greaterthan_max: same term, newer member list wins",
        seeds: &["a:1", "b:1"],
        phases: &[
            Phase {
                replies: &[("a:1", Reply::Primary(3, 4, &["a:1", "b:1"]))],
                kind: ReplicaSetWithPrimary,
                servers: &[("a:1", Primary), ("b:1", Unknown)],
            },
            Phase {
                replies: &[("b:1", Reply::Primary(3, 3, &["a:1", "b:1"]))],
                kind: ReplicaSetWithPrimary,
                servers: &[("a:1", Primary), ("b:1", Unknown)],
            },
            Phase {
                replies: &[("b:1", Reply::Primary(3, 5, &["a:1", "b:1"]))],
                kind: ReplicaSetWithPrimary,
                servers: &[("a:1", Unknown), ("b:1", Primary)],
            },
        ],
    },
    Scenario {
        name: "member_reconfig: a member the master no longer lists is removed",
        seeds: &["a:1"],
        phases: &[
            Phase {
                replies: &[("a:1", Reply::Primary(1, 1, &["a:1", "b:1", "c:1"]))],
                kind: ReplicaSetWithPrimary,
                servers: &[("a:1", Primary), ("b:1", Unknown), ("c:1", Unknown)],
            },
            Phase {
                replies: &[
                    ("c:1", Reply::Secondary(&["a:1", "b:1", "c:1"], Some("a:1"))),
                    ("a:1", Reply::Primary(1, 2, &["a:1", "b:1"])),
                ],
                kind: ReplicaSetWithPrimary,
                servers: &[("a:1", Primary), ("b:1", Unknown)],
            },
            // A late answer from the removed member changes nothing.
            Phase {
                replies: &[("c:1", Reply::Secondary(&["a:1", "b:1", "c:1"], Some("a:1")))],
                kind: ReplicaSetWithPrimary,
                servers: &[("a:1", Primary), ("b:1", Unknown)],
            },
        ],
    },
    Scenario {
        name: "primary_reports_new_member: a member the master adds is monitored",
        seeds: &["a:1", "b:1"],
        phases: &[
            Phase {
                replies: &[
                    ("a:1", Reply::Primary(1, 1, &["a:1", "b:1"])),
                    ("b:1", Reply::Secondary(&["a:1", "b:1", "c:1"], Some("a:1"))),
                ],
                kind: ReplicaSetWithPrimary,
                // With a master known, a secondary's list adds nothing.
                servers: &[("a:1", Primary), ("b:1", Secondary)],
            },
            Phase {
                replies: &[("a:1", Reply::Primary(1, 2, &["a:1", "b:1", "c:1"]))],
                kind: ReplicaSetWithPrimary,
                servers: &[("a:1", Primary), ("b:1", Secondary), ("c:1", Unknown)],
            },
        ],
    },
    Scenario {
        name: "seed_is_not_a_member: the master's list drops a seed it does not name",
        seeds: &["a:1", "localhost:1"],
        phases: &[Phase {
            replies: &[("a:1", Reply::Primary(1, 1, &["a:1", "b:1"]))],
            kind: ReplicaSetWithPrimary,
            servers: &[("a:1", Primary), ("b:1", Unknown)],
        }],
    },
    Scenario {
        name: "wrong_set_name: a member of another set is removed",
        seeds: &["a:1", "b:1"],
        phases: &[Phase {
            replies: &[
                ("a:1", Reply::Secondary(&["a:1"], None)),
                ("b:1", Reply::ForeignSet),
            ],
            kind: ReplicaSetNoPrimary,
            servers: &[("a:1", Secondary)],
        }],
    },
    Scenario {
        name: "rsother: a master without a quorum is neither primary nor secondary",
        seeds: &["a:1"],
        phases: &[
            Phase {
                replies: &[("a:1", Reply::Other(&["a:1", "b:1"]))],
                kind: ReplicaSetNoPrimary,
                servers: &[("a:1", Other), ("b:1", Unknown)],
            },
            Phase {
                replies: &[("a:1", Reply::Fails)],
                kind: ReplicaSetNoPrimary,
                servers: &[("a:1", Unknown), ("b:1", Unknown)],
            },
        ],
    },
];

#[test]
fn sdam_scenarios() {
    for s in SCENARIOS {
        run(s);
    }
}

#[test]
fn reads_go_where_the_preference_says_and_to_the_fastest() {
    let mut t = Topology::new(&["a:1"]);
    t.on_hello(
        "a:1",
        hello("a:1", &Reply::Primary(1, 1, &["a:1", "b:1", "c:1"])).unwrap(),
        Duration::from_millis(40),
    );
    assert_eq!(
        t.select(ReadPreference::Secondary, |_| 0),
        None,
        "none known yet"
    );
    let sec = |t: &mut Topology, addr: &str, ms| {
        let h = hello(addr, &Reply::Secondary(&["a:1", "b:1", "c:1"], Some("a:1"))).unwrap();
        t.on_hello(addr, h, Duration::from_millis(ms));
    };
    sec(&mut t, "b:1", 5);
    sec(&mut t, "c:1", 30);
    let pick = |t: &Topology, p| t.select(p, |_| 0).map(|s| s.addr.clone());
    assert_eq!(pick(&t, ReadPreference::Primary).as_deref(), Some("a:1"));
    assert_eq!(pick(&t, ReadPreference::Secondary).as_deref(), Some("b:1"));
    assert_eq!(pick(&t, ReadPreference::Nearest).as_deref(), Some("b:1"));
    assert_eq!(t.select_write().map(|s| &*s.addr), Some("a:1"));
    // Within the local threshold of the fastest, the pick decides.
    sec(&mut t, "c:1", 10); // averaged: 30 * 0.8 + 10 * 0.2 = 26 ms, still out
    let mut n = 0;
    t.select(ReadPreference::Secondary, |len| {
        n = len;
        0
    });
    assert_eq!(n, 1);
    for _ in 0..10 {
        sec(&mut t, "c:1", 10);
    }
    t.select(ReadPreference::Secondary, |len| {
        n = len;
        0
    });
    assert_eq!(n, 2, "c:1 now within 15 ms of b:1");
    // The master fails: writes have nowhere to go, reads from secondaries still do.
    t.on_error("a:1", "connection refused");
    assert_eq!(t.kind(), ReplicaSetNoPrimary);
    assert_eq!(t.select_write(), None);
    assert!(t.select(ReadPreference::Secondary, |_| 0).is_some());
    assert!(
        t.describe().contains("a:1 (Unknown: connection refused)"),
        "{}",
        t.describe()
    );
}

/// MongoDB SDAM: a check that began before an error was reported for the server is
/// stale. Found by the client's failover test: the retry of a write that failed on a
/// killed master went to it again, because a /hello it had answered just before the
/// kill arrived after the write's error and marked it primary again.
#[test]
fn a_check_begun_before_an_error_does_not_bring_the_primary_back() {
    let mut t = Topology::new(&["a:1", "b:1"]);
    t.on_hello(
        "a:1",
        hello("a:1", &Reply::Primary(1, 1, &["a:1", "b:1"])).unwrap(),
        Duration::from_millis(1),
    );
    assert_eq!(t.primary().map(|s| s.addr.as_str()), Some("a:1"));
    let began = t.generation("a:1");
    t.on_error("a:1", "connection refused");
    t.on_check(
        "a:1",
        began,
        Ok(hello("a:1", &Reply::Primary(1, 1, &["a:1", "b:1"])).unwrap()),
        Duration::from_millis(1),
    );
    assert!(t.primary().is_none(), "the stale answer is ignored");
    // A check begun after the error counts.
    let now = t.generation("a:1");
    t.on_check(
        "a:1",
        now,
        Ok(hello("a:1", &Reply::Primary(1, 1, &["a:1", "b:1"])).unwrap()),
        Duration::from_millis(1),
    );
    assert_eq!(t.primary().map(|s| s.addr.as_str()), Some("a:1"));
}
