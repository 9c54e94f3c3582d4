use bytes::BytesMut;
use chorus_tests::*;
use common::protocol::codec::FrameCodec;
use common::protocol::{ErrorCode, MasterFrame, PROTOCOL_VERSION, SecondaryFrame};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;
use tokio_util::codec::{Decoder, Encoder};

/// Every bad request of the contract gets its status and a JSON error with a code.
#[actix_rt::test]
async fn http_errors_follow_the_contract() -> anyhow::Result<()> {
    let dir = TestDir::new("http-errors");
    let http = Http::new();
    let master = Node::master(&dir, "m", &["--max-message-bytes", "1000"])?;
    let s1 = Node::secondary(&dir, "s1", master.comm.unwrap(), &[])?;
    let url = master.url("/newMessage");

    let cases: Vec<(&str, u16, &str)> = vec![
        ("{", 400, "invalid_json"),
        ("", 400, "invalid_json"),
        ("not json at all", 400, "invalid_json"),
        ("[1,2]", 400, "invalid_request"),
        ("{}", 400, "missing_message"),
        (r#"{"writeConcern": 1}"#, 400, "missing_message"),
        (r#"{"message": 42}"#, 400, "invalid_message"),
        (
            r#"{"message": "a", "writeConcern": 0}"#,
            400,
            "invalid_write_concern",
        ),
        (
            r#"{"message": "a", "writeConcern": -1}"#,
            400,
            "invalid_write_concern",
        ),
        (
            r#"{"message": "a", "writeConcern": 1.5}"#,
            400,
            "invalid_write_concern",
        ),
        (
            r#"{"message": "a", "writeConcern": "all"}"#,
            400,
            "invalid_write_concern",
        ),
        (
            r#"{"message": "a", "timeoutMs": -5}"#,
            400,
            "invalid_timeout",
        ),
        (
            r#"{"message": "a", "requestId": 7}"#,
            400,
            "invalid_request_id",
        ),
    ];
    for (body, status, code) in cases {
        let (st, v) = http.post_raw(&url, body.to_string()).await?;
        assert_eq!(st, status, "{body} -> {v}");
        assert_eq!(v["code"], code, "{body} -> {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }
    // Too large: by message size, and by body size.
    let (st, v) = http.write(&master, &"x".repeat(1001), json!(1)).await?;
    assert_eq!(
        (st, v["code"].as_str()),
        (413, Some("message_too_large")),
        "{v}"
    );
    let (st, v) = http.post_raw(&url, "y".repeat(10_000_000)).await?;
    assert_eq!(
        (st, v["code"].as_str()),
        (413, Some("message_too_large")),
        "{v}"
    );
    // Nothing bad was stored.
    assert!(http.messages(&master).await?.is_empty());

    // Accepted: empty message, exact limit, unknown fields, "majority".
    let (st, v) = http
        .post(
            &url,
            &json!({"message": "", "writeConcern": "majority", "color": "blue"}),
        )
        .await?;
    assert_eq!(st, 201, "{v}");
    let (st, v) = http.write(&master, &"x".repeat(1000), json!(1)).await?;
    assert_eq!(st, 201, "{v}");

    // Timeout: 504 with id and acks; the message stays.
    let (st, v) = http
        .post(
            &url,
            &json!({"message": "t", "writeConcern": 5, "timeoutMs": 200}),
        )
        .await?;
    assert_eq!(st, 504, "{v}");
    assert_eq!(v["code"], "write_concern_timeout");
    assert_eq!(v["id"], 3);
    assert!(
        v["acks"].as_u64().is_some_and(|a| (1..=2).contains(&a)),
        "{v}"
    );
    assert_eq!(http.messages(&master).await?.len(), 3);

    // requestId: a retry returns the first id and appends nothing.
    let body = json!({"message": "once", "requestId": "req-1"});
    let (_, a) = http.post(&url, &body).await?;
    let (_, b) = http.post(&url, &body).await?;
    assert_eq!(a["id"], b["id"]);
    assert_eq!(http.messages(&master).await?.len(), 4);

    // Routing errors.
    let (st, v) = http.get(&master.url("/nope")).await?;
    assert_eq!((st, v["code"].as_str()), (404, Some("not_found")));
    let (st, v) = http.get(&master.url("/newMessage")).await?;
    assert_eq!((st, v["code"].as_str()), (405, Some("method_not_allowed")));
    let (st, v) = http.get(&master.url("/messages?from=x")).await?;
    assert_eq!((st, v["code"].as_str()), (400, Some("invalid_query")));
    let (st, v) = http.get(&master.url("/messages?from=2&limit=2")).await?;
    assert_eq!(st, 200);
    let ids: Vec<u64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [2, 3]);

    // A secondary takes no writes.
    let (st, v) = http.write(&s1, "no", json!(1)).await?;
    assert_eq!((st, v["code"].as_str()), (503, Some("not_writable")), "{v}");
    Ok(())
}

/// Connect to the comm port, send `bytes`, read until the master closes; return the
/// frames it sent.
fn poke(comm: SocketAddr, bytes: &[u8], half_close: bool) -> anyhow::Result<Vec<MasterFrame>> {
    let s = TcpStream::connect(comm)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    exchange(s, bytes, half_close)
}

/// Send `bytes` on `s` (then close our side if `half_close`), read until the other side
/// closes, and decode what it sent as frames of type `In`.
fn exchange<In>(mut s: TcpStream, bytes: &[u8], half_close: bool) -> anyhow::Result<Vec<In>>
where
    FrameCodec<In, ()>: Decoder<Item = In, Error = common::protocol::codec::CodecError>,
{
    s.write_all(bytes)?;
    if half_close {
        s.shutdown(Shutdown::Write)?;
    }
    let mut got = Vec::new();
    s.read_to_end(&mut got)?; // a timeout here means the other side never closed
    let mut buf = BytesMut::from(&got[..]);
    let mut codec = FrameCodec::<In, ()>::new();
    let mut frames = Vec::new();
    while let Some(f) = codec.decode(&mut buf)? {
        frames.push(f);
    }
    Ok(frames)
}

fn encode(frame: SecondaryFrame) -> Vec<u8> {
    let mut buf = BytesMut::new();
    FrameCodec::<MasterFrame, SecondaryFrame>::new()
        .encode(frame, &mut buf)
        .unwrap();
    buf.to_vec()
}

fn error_code(frames: &[MasterFrame]) -> Option<ErrorCode> {
    match frames.last() {
        Some(MasterFrame::Error(e)) => Some(e.code),
        _ => None,
    }
}

/// Garbage, truncated and oversized frames and another protocol version get an error
/// frame and a closed connection; the cluster keeps working.
#[actix_rt::test]
async fn the_comm_port_survives_bad_peers() -> anyhow::Result<()> {
    let dir = TestDir::new("comm-garbage");
    let http = Http::new();
    let master = Node::master(&dir, "m", &[])?;
    let comm = master.comm.unwrap();
    let s1 = Node::secondary(&dir, "s1", comm, &[])?;
    wait_member_live(&http, &master, "s1").await?;

    let mut garbage = vec![0, 0, 0, 16];
    garbage.extend_from_slice(b"\xc1\xff\x00garbage garbage");
    assert_eq!(
        error_code(&poke(comm, &garbage, false)?),
        Some(ErrorCode::MalformedFrame)
    );
    assert_eq!(
        error_code(&poke(comm, &[0xff, 0xff, 0xff, 0xff, 1, 2, 3], false)?),
        Some(ErrorCode::FrameTooLarge)
    );
    assert_eq!(
        error_code(&poke(comm, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", false)?),
        Some(ErrorCode::FrameTooLarge)
    );
    // A newer peer, and one of version 1 (which would not cut what a crashed master
    // lost: see docs/protocol.md).
    for version in [PROTOCOL_VERSION + 1, 1] {
        let other_version = encode(fresh_hello("other", version));
        assert_eq!(
            error_code(&poke(comm, &other_version, false)?),
            Some(ErrorCode::VersionMismatch)
        );
        // A member that is not the master says so too, rather than NotMaster.
        let s1_comm = s1.comm.expect("a secondary listens too");
        assert_eq!(
            error_code(&poke(s1_comm, &other_version, false)?),
            Some(ErrorCode::VersionMismatch)
        );
    }
    assert_eq!(
        error_code(&poke(comm, &encode(SecondaryFrame::Ready), false)?),
        Some(ErrorCode::HandshakeRequired)
    );
    // Truncated: half a frame, then the peer hangs up. The master just closes.
    let hello = encode(fresh_hello("half", PROTOCOL_VERSION));
    assert!(poke(comm, &hello[..hello.len() / 2], true)?.is_empty());

    // The master is still up and replicating.
    let (st, v) = http.write(&master, "still fine", json!(2)).await?;
    assert_eq!(st, 201, "{v}");
    assert_eq!(
        http.messages(&s1).await?,
        vec![(1, "still fine".to_string())]
    );
    let h: Value = http.health(&master).await?;
    let names: Vec<&str> = h["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["s1"], "bad peers never became members: {h}");
    Ok(())
}

/// A stand-in for a master that misbehaves: it takes one connection at a time from the
/// secondary under test.
struct FakeMaster {
    listener: std::net::TcpListener,
}

impl FakeMaster {
    fn new() -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        Ok(Self { listener })
    }

    fn addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap()
    }

    /// The secondary's next connection, once its Hello has arrived.
    fn next_hello(&self) -> anyhow::Result<TcpStream> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut s = loop {
            match self.listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    anyhow::ensure!(
                        std::time::Instant::now() < deadline,
                        "the secondary did not connect"
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(e.into()),
            }
        };
        s.set_nonblocking(false)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut codec = FrameCodec::<SecondaryFrame, MasterFrame>::new();
        let mut buf = BytesMut::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(frame) = codec.decode(&mut buf)? {
                anyhow::ensure!(
                    matches!(frame, SecondaryFrame::Hello { .. }),
                    "expected Hello, got {frame:?}"
                );
                return Ok(s);
            }
            let n = s.read(&mut chunk)?;
            anyhow::ensure!(n > 0, "closed before its Hello");
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Send `bytes` as the master, then read until the secondary closes; its frames.
fn as_master(s: TcpStream, bytes: &[u8], half_close: bool) -> anyhow::Result<Vec<SecondaryFrame>> {
    exchange(s, bytes, half_close)
}

fn refusal(frames: &[SecondaryFrame]) -> Option<ErrorCode> {
    match frames.last() {
        Some(SecondaryFrame::Error(e)) => Some(e.code),
        _ => None,
    }
}

/// A secondary whose master sends garbage, an oversized or truncated frame or another
/// protocol version answers with an error frame where it can, closes, and connects
/// again; it never crashes and keeps serving its log.
#[actix_rt::test]
async fn a_secondary_survives_a_bad_master() -> anyhow::Result<()> {
    let dir = TestDir::new("secondary-bad-master");
    let http = Http::new();
    let master = FakeMaster::new()?;
    let s1 = Node::secondary(&dir, "s1", master.addr(), &[])?;

    let mut garbage = vec![0, 0, 0, 16];
    garbage.extend_from_slice(b"\xc1\xff\x00garbage garbage");
    assert_eq!(
        refusal(&as_master(master.next_hello()?, &garbage, false)?),
        Some(ErrorCode::MalformedFrame)
    );
    assert_eq!(
        refusal(&as_master(
            master.next_hello()?,
            &[0xff, 0xff, 0xff, 0xff, 1, 2, 3],
            false
        )?),
        Some(ErrorCode::FrameTooLarge)
    );
    let mut welcome = BytesMut::new();
    FrameCodec::<SecondaryFrame, MasterFrame>::new().encode(
        MasterFrame::Welcome {
            version: PROTOCOL_VERSION + 1,
            name: "m".into(),
            log_id: 7,
            last_id: 0,
            truncate_after: None,
            http_host: None,
            http_port: 0,
            term: 1,
            history: Default::default(),
            members: Vec::new(),
            removed: Vec::new(),
            config_version: 0,
            config_term: 0,
            delay_ms: 0,
        },
        &mut welcome,
    )?;
    assert_eq!(
        refusal(&as_master(master.next_hello()?, &welcome, false)?),
        Some(ErrorCode::VersionMismatch)
    );
    // Half a frame, then the master hangs up: the secondary just connects again.
    assert!(as_master(master.next_hello()?, &welcome[..welcome.len() / 2], true)?.is_empty());
    drop(master.next_hello()?);

    let (st, h) = http.get(&s1.url("/health")).await?;
    assert_eq!(st, 200, "{h}");
    assert_eq!(http.messages(&s1).await?, vec![]);
    Ok(())
}
