//! `--cluster-key-file`: members prove they know the set's key on every replication
//! and election connection. A keyed set replicates and elects; a member with another
//! key, a peer without one and a replayed handshake are refused with `unauthorized`;
//! bad key files stop the node at start.

use bytes::BytesMut;
use chorus_tests::*;
use common::protocol::auth::{self, ClusterKey};
use common::protocol::codec::FrameCodec;
use common::protocol::{ErrorCode, MasterFrame, PROTOCOL_VERSION, SecondaryFrame};
use serde_json::json;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::codec::{Decoder, Encoder};

const LONG: Duration = Duration::from_secs(60);
const KEY: &str = "a shared secret of the set, 47 bytes long......";

fn key_file(dir: &Path, name: &str, text: &str, mode: u32) -> anyhow::Result<PathBuf> {
    let p = dir.join(name);
    std::fs::write(&p, text)?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
    Ok(p)
}

/// A raw peer on the comm port, speaking frames one at a time.
struct Peer {
    s: TcpStream,
    buf: BytesMut,
}

impl Peer {
    fn connect(comm: SocketAddr) -> anyhow::Result<Peer> {
        let s = TcpStream::connect(comm)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Peer {
            s,
            buf: BytesMut::new(),
        })
    }

    fn send(&mut self, f: SecondaryFrame) -> anyhow::Result<()> {
        let mut out = BytesMut::new();
        FrameCodec::<MasterFrame, SecondaryFrame>::new().encode(f, &mut out)?;
        self.s.write_all(&out)?;
        Ok(())
    }

    /// The next frame, or None once the other side closed.
    fn recv(&mut self) -> anyhow::Result<Option<MasterFrame>> {
        let mut codec = FrameCodec::<MasterFrame, SecondaryFrame>::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(f) = codec.decode(&mut self.buf)? {
                return Ok(Some(f));
            }
            match self.s.read(&mut chunk)? {
                0 => return Ok(None),
                n => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// AuthHello with `nonce`; the challenge's (nonce, proof).
    fn hello(&mut self, nonce: &[u8]) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
        self.send(SecondaryFrame::AuthHello {
            nonce: nonce.to_vec(),
        })?;
        match self.recv()? {
            Some(MasterFrame::AuthChallenge { nonce, proof }) => Ok((nonce, proof)),
            other => anyhow::bail!("expected AuthChallenge, got {other:?}"),
        }
    }
}

fn unauthorized(f: Option<MasterFrame>) -> bool {
    matches!(f, Some(MasterFrame::Error(e)) if e.code == ErrorCode::Unauthorized)
}

#[actix_rt::test]
async fn a_keyed_set_works_and_refuses_whoever_lacks_the_key() -> anyhow::Result<()> {
    let dir = TestDir::new("cluster-key");
    let file = key_file(dir.path(), "key", KEY, 0o600)?;
    let flag = ["--cluster-key-file", file.to_str().unwrap_or_default()];
    let http = Http::new();
    let (master, nodes) = cluster(&dir, &http, &flag, &[&flag, &flag]).await?;
    let comm = master.comm.expect("comm");
    assert_eq!(http.write(&master, "m1", json!(3)).await?.0, 201);
    // Elections authenticate too: a step-down hands over to another member.
    let (st, body) = http
        .post(&master.url("/stepDown"), &json!({"seconds": 5}))
        .await?;
    assert_eq!(st, 200, "{body}");
    let new = wait_master(&http, &[&nodes[0], &nodes[1]], LONG).await?;
    let (st, body) = write_once_writable(&http, &nodes[new], "m2", json!(3), LONG).await?;
    assert_eq!(st, 201, "{body}");
    let comm = nodes[new].comm.unwrap_or(comm);

    // A member with another key never joins; the master logs the refusal and address.
    let wrong = key_file(dir.path(), "wrong", "another secret, 16+ bytes", 0o600)?;
    let intruder = Node::secondary(
        &dir,
        "s9",
        comm,
        &["--cluster-key-file", wrong.to_str().unwrap_or_default()],
    )?;
    wait_for("the refusal in the master's log", LONG, || async {
        let log = std::fs::read_to_string(nodes[new].log_path())?;
        Ok(log
            .lines()
            .any(|l| l.contains("unauthorized") && l.contains("127.0.0.1"))
            .then_some(()))
    })
    .await?;
    wait_for("the intruder to say why", LONG, || async {
        let log = std::fs::read_to_string(intruder.log_path())?;
        Ok(log
            .contains("authentication with a member failed")
            .then_some(()))
    })
    .await?;
    let st = http.get(&nodes[new].url("/status")).await?.1;
    assert!(
        !st.to_string().contains("\"s9\""),
        "s9 is not a member: {st}"
    );

    // A peer without the key: its Hello is answered `unauthorized`.
    let mut p = Peer::connect(comm)?;
    p.send(fresh_hello("s8", PROTOCOL_VERSION))?;
    assert!(unauthorized(p.recv()?), "a Hello without the key");

    // The key proves itself: a correct proof passes, the listening side's proof checks.
    let key = ClusterKey::new(KEY.as_bytes()).map_err(anyhow::Error::msg)?;
    let client = auth::nonce();
    let mut p = Peer::connect(comm)?;
    let (server, proof) = p.hello(&client)?;
    assert!(
        key.check_server(&client, &server, &proof),
        "the member proves the key"
    );
    let recorded = key.client_proof(&client, &server);
    p.send(SecondaryFrame::AuthProof {
        proof: recorded.clone(),
    })?;
    p.send(SecondaryFrame::Ready)?; // past authentication: refused as a bad first frame
    assert!(!unauthorized(p.recv()?), "a correct proof is accepted");
    // Replaying that handshake later meets a fresh nonce: refused.
    let mut p = Peer::connect(comm)?;
    let (fresh, _) = p.hello(&client)?;
    assert_ne!(fresh, server);
    p.send(SecondaryFrame::AuthProof { proof: recorded })?;
    assert!(unauthorized(p.recv()?), "a replayed proof");
    // A wrong proof.
    let mut p = Peer::connect(comm)?;
    p.hello(&auth::nonce())?;
    p.send(SecondaryFrame::AuthProof { proof: vec![0; 32] })?;
    assert!(unauthorized(p.recv()?), "a wrong proof");

    // After all that, the set still takes and replicates writes.
    let all = [&master, &nodes[0], &nodes[1]];
    assert_eq!(http.write(&nodes[new], "m3", json!(3)).await?.0, 201);
    wait_converged(&http, &nodes[new], &all, 3, LONG).await?;
    Ok(())
}

#[test]
fn bad_key_files_stop_the_node_at_start() -> anyhow::Result<()> {
    let dir = TestDir::new("cluster-key-bad");
    let open = key_file(dir.path(), "open", KEY, 0o644)?;
    let short = key_file(dir.path(), "short", "only 15 bytes..", 0o600)?;
    let missing = dir.path().join("missing");
    for file in [&open, &short, &missing] {
        let out = std::process::Command::new(bin("master-node"))
            .args(["--name", "x", "--http-port", "0", "--comm-port", "0"])
            .args([
                "--data-dir",
                dir.path().join("data").to_str().unwrap_or_default(),
            ])
            .args(["--cluster-key-file", file.to_str().unwrap_or_default()])
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {err}", file.display());
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains("cluster key"), "{err}");
    }
    Ok(())
}
