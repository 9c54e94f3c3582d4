//! Members prove they belong: `--cluster-key-file`, a mutual challenge-response on
//! every replication and election connection before anything else is sent (MongoDB's
//! keyFile authentication, in chorus's frames). The key never crosses the wire.
//!
//! ```text
//! connecting side                          listening side
//!   AuthHello { nonce: c }         --->
//!                                  <---    AuthChallenge { nonce: s, proof: P("server", c, s) }
//!   checks the proof
//!   AuthProof { proof: P("client", c, s) } --->
//!                                          checks the proof; then Hello or RequestVote
//! ```
//!
//! `P(role, c, s)` is HMAC-SHA256 under the key over a fixed label (the protocol's name
//! and version, so a proof means nothing elsewhere), the role, and both 32-byte nonces.
//! Each side picks its nonce at random for every connection, so a recorded handshake
//! replayed later meets a fresh nonce and its proof fails; the roles differ, so a
//! side's own proof reflected back does not pass either. A failed proof is answered
//! with an `unauthorized` error frame and the connection is closed.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::sync::Arc;

/// Bytes of each side's nonce.
pub const NONCE_LEN: usize = 32;
/// The shortest key accepted.
pub const MIN_KEY_LEN: usize = 16;
/// The largest key file read.
const MAX_KEY_LEN: usize = 1024;
const LABEL: &[u8] = b"chorus cluster auth v1";

/// The shared key, from `--cluster-key-file`. Its `Debug` does not show it.
#[derive(Clone)]
pub struct ClusterKey(Arc<[u8]>);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(<hidden>)")
    }
}

impl ClusterKey {
    /// Read a key file: refused if group or others may read or write it, or if what
    /// it holds (surrounding white space removed) is shorter than [`MIN_KEY_LEN`]
    /// bytes. As MongoDB's keyFile, any bytes will do; the same file goes to every
    /// member.
    pub fn from_file(path: &str) -> Result<Self, String> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path)
            .map_err(|e| format!("cannot read the cluster key file {path}: {e}"))?;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "cluster key file {path} is open to group or others (mode {:o}); chmod 600 it",
                mode & 0o777
            ));
        }
        if meta.len() > MAX_KEY_LEN as u64 {
            return Err(format!(
                "cluster key file {path} is larger than {MAX_KEY_LEN} bytes"
            ));
        }
        let bytes = std::fs::read(path)
            .map_err(|e| format!("cannot read the cluster key file {path}: {e}"))?;
        Self::new(bytes.trim_ascii()).map_err(|e| format!("cluster key file {path}: {e}"))
    }

    pub fn new(key: &[u8]) -> Result<Self, String> {
        if key.len() < MIN_KEY_LEN {
            return Err(format!(
                "the key is {} bytes; at least {MIN_KEY_LEN} are needed",
                key.len()
            ));
        }
        Ok(Self(key.into()))
    }

    fn mac(&self, role: &[u8], client: &[u8], server: &[u8]) -> Hmac<Sha256> {
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .expect("HMAC takes keys of any length");
        m.update(LABEL);
        m.update(role);
        m.update(client);
        m.update(server);
        m
    }

    /// The listening side's proof for the nonces `client` and `server`.
    pub fn server_proof(&self, client: &[u8], server: &[u8]) -> Vec<u8> {
        self.mac(b"server", client, server)
            .finalize()
            .into_bytes()
            .to_vec()
    }

    /// The connecting side's proof.
    pub fn client_proof(&self, client: &[u8], server: &[u8]) -> Vec<u8> {
        self.mac(b"client", client, server)
            .finalize()
            .into_bytes()
            .to_vec()
    }

    /// Check the listening side's proof (in constant time).
    pub fn check_server(&self, client: &[u8], server: &[u8], proof: &[u8]) -> bool {
        nonces_ok(client, server)
            && self
                .mac(b"server", client, server)
                .verify_slice(proof)
                .is_ok()
    }

    /// Check the connecting side's proof (in constant time).
    pub fn check_client(&self, client: &[u8], server: &[u8], proof: &[u8]) -> bool {
        nonces_ok(client, server)
            && self
                .mac(b"client", client, server)
                .verify_slice(proof)
                .is_ok()
    }
}

/// The connecting side's step after its `AuthHello { nonce: client }`: given the
/// listening side's answer, the `AuthProof` to send, or why the connection fails.
pub fn answer(
    key: &ClusterKey,
    client: &[u8],
    answer: super::MasterFrame,
) -> Result<super::SecondaryFrame, String> {
    match answer {
        super::MasterFrame::AuthChallenge { nonce, proof }
            if key.check_server(client, &nonce, &proof) =>
        {
            Ok(super::SecondaryFrame::AuthProof {
                proof: key.client_proof(client, &nonce),
            })
        }
        super::MasterFrame::AuthChallenge { .. } => {
            Err("the member does not know the cluster key (its proof does not match)".into())
        }
        super::MasterFrame::Error(e) => Err(format!("refused: {e}")),
        other => Err(format!("expected AuthChallenge, got {}", other.name())),
    }
}

fn nonces_ok(client: &[u8], server: &[u8]) -> bool {
    client.len() == NONCE_LEN && server.len() == NONCE_LEN && client != server
}

/// A fresh random nonce.
pub fn nonce() -> Vec<u8> {
    let mut n = vec![0u8; NONCE_LEN];
    rand::fill(&mut n[..]);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> ClusterKey {
        ClusterKey::new(k.as_bytes()).unwrap()
    }

    #[test]
    fn both_sides_prove_the_key_and_nothing_else_passes() {
        let k = key("correct horse battery staple");
        let (c, s) = (nonce(), nonce());
        assert!(k.check_server(&c, &s, &k.server_proof(&c, &s)));
        assert!(k.check_client(&c, &s, &k.client_proof(&c, &s)));
        // Another key, a reflected proof, a truncated one, a swapped nonce: refused.
        let other = key("correct horse battery stapler");
        assert!(!k.check_client(&c, &s, &other.client_proof(&c, &s)));
        assert!(!k.check_client(&c, &s, &k.server_proof(&c, &s)));
        assert!(!k.check_server(&c, &s, &k.client_proof(&c, &s)));
        assert!(!k.check_client(&c, &s, &k.client_proof(&c, &s)[..31]));
        assert!(!k.check_client(&s, &c, &k.client_proof(&c, &s)));
        // Nonces of the wrong length or equal ones (a reflection) are refused.
        assert!(!k.check_client(&c[..16], &s, &k.client_proof(&c[..16], &s)));
        assert!(!k.check_client(&c, &c, &k.client_proof(&c, &c)));
    }

    #[test]
    fn a_recorded_handshake_replayed_meets_a_fresh_nonce_and_fails() {
        let k = key("0123456789abcdef");
        let c = nonce();
        let recorded = k.client_proof(&c, &nonce());
        // The attacker replays the same client nonce and proof; the server's nonce is
        // new this time.
        assert!(!k.check_client(&c, &nonce(), &recorded));
    }

    #[test]
    fn key_files_must_be_private_and_long_enough() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str, mode: u32| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p.to_str().unwrap().to_string()
        };
        let good = write("good", "  0123456789abcdef\n", 0o600);
        assert!(ClusterKey::from_file(&good).is_ok());
        assert!(ClusterKey::from_file(&write("ro", "0123456789abcdef", 0o400)).is_ok());
        let open = ClusterKey::from_file(&write("open", "0123456789abcdef", 0o644)).unwrap_err();
        assert!(open.contains("group or others"), "{open}");
        let short = ClusterKey::from_file(&write("short", "0123456789abcde\n", 0o600)).unwrap_err();
        assert!(short.contains("at least 16"), "{short}");
        assert!(ClusterKey::from_file("/nonexistent/key").is_err());
        assert_eq!(
            format!("{:?}", key("0123456789abcdef")),
            "ClusterKey(<hidden>)"
        );
    }
}
