//! `--tls-cert`, `--tls-key`, `--tls-ca`: the certificates a node proves itself with and
//! checks its peers against, turned into rustls configurations once, at start.
//!
//! - Between members (the comm port: replication and votes) TLS is mutual: both ends
//!   present a certificate signed by the CA, and only TLS 1.3 is spoken. The dialling
//!   side checks that the certificate names the host it dialled, as a browser does.
//! - The HTTP API serves HTTPS with the same certificate and asks clients for none
//!   (browsers, curl and the `chorus` CLI verify the node against the CA).
//!
//! The crypto is `ring`'s, chosen explicitly: rustls's default provider (aws-lc-rs)
//! needs a C build that costs minutes here (docs/security.md).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::sync::Arc;

/// The crypto every TLS configuration of chorus uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `--tls-cert`: this node's certificate chain (PEM, leaf first).
#[derive(Clone, Debug)]
pub struct CertChain(Arc<Vec<CertificateDer<'static>>>);

impl CertChain {
    pub fn from_file(path: &str) -> Result<Self, String> {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("cannot read the certificate file {path}: {e}"))?;
        if certs.is_empty() {
            return Err(format!("{path} holds no PEM certificate"));
        }
        Ok(Self(Arc::new(certs)))
    }
}

/// `--tls-key`: this node's private key (PEM: PKCS#8, PKCS#1 or SEC1). Its `Debug`
/// does not show it.
#[derive(Clone)]
pub struct PrivateKey(Arc<PrivateKeyDer<'static>>);

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKey(<hidden>)")
    }
}

impl PrivateKey {
    pub fn from_file(path: &str) -> Result<Self, String> {
        PrivateKeyDer::from_pem_file(path)
            .map(|k| Self(Arc::new(k)))
            .map_err(|e| format!("cannot read a private key from {path}: {e}"))
    }
}

/// `--tls-ca`: the certificate authorities a peer's certificate must chain to.
#[derive(Clone, Debug)]
pub struct CaRoots(Arc<RootCertStore>);

impl CaRoots {
    pub fn from_file(path: &str) -> Result<Self, String> {
        let certs = CertChain::from_file(path)?;
        let mut roots = RootCertStore::empty();
        for cert in certs.0.iter() {
            roots
                .add(cert.clone())
                .map_err(|e| format!("{path}: not a usable CA certificate: {e}"))?;
        }
        Ok(Self(Arc::new(roots)))
    }
}

/// What TLS a node speaks, built from its three files.
#[derive(Clone)]
pub struct Tls {
    /// The comm port's side: a client certificate is required and checked.
    pub comm_server: Arc<ServerConfig>,
    /// Dialling a member: presents this node's certificate, checks the member's.
    pub comm_client: Arc<ClientConfig>,
    /// The HTTP API: this node's certificate, no client certificate asked.
    pub http_server: ServerConfig,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

impl Tls {
    /// The configurations, or why the files do not fit together (a key that is not
    /// the certificate's, a CA that cannot verify anything).
    pub fn new(cert: &CertChain, key: &PrivateKey, ca: &CaRoots) -> Result<Self, String> {
        let provider = provider();
        let v13 = [&rustls::version::TLS13];
        let chain = cert.0.as_ref().clone();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            ca.0.clone(),
            provider.clone(),
        )
        .build()
        .map_err(|e| format!("--tls-ca: {e}"))?;
        let comm_server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&v13)
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.0.clone_key())
            .map_err(|e| format!("--tls-cert and --tls-key do not fit together: {e}"))?;
        let comm_client = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&v13)
            .map_err(|e| e.to_string())?
            .with_root_certificates(ca.0.clone())
            .with_client_auth_cert(chain.clone(), key.0.clone_key())
            .map_err(|e| format!("--tls-cert and --tls-key do not fit together: {e}"))?;
        let http_server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(chain, key.0.clone_key())
            .map_err(|e| format!("--tls-cert and --tls-key do not fit together: {e}"))?;
        Ok(Self {
            comm_server: Arc::new(comm_server),
            comm_client: Arc::new(comm_client),
            http_server,
        })
    }
}

/// The name a dialled member's certificate must carry: the host part of `host:port`
/// (an IP address, or a DNS name).
pub fn server_name(address: &str) -> Result<ServerName<'static>, String> {
    let host = address
        .rsplit_once(':')
        .map_or(address, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| format!("{host:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_come_from_the_host_part() {
        assert_eq!(
            server_name("127.0.0.1:4000").unwrap(),
            ServerName::try_from("127.0.0.1").unwrap()
        );
        assert_eq!(
            server_name("[::1]:4000").unwrap(),
            ServerName::try_from("::1").unwrap()
        );
        assert_eq!(
            server_name("node-1:4000").unwrap(),
            ServerName::try_from("node-1").unwrap()
        );
        assert!(server_name("bad host:1").is_err());
    }

    #[test]
    fn missing_and_empty_files_are_refused_with_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = CertChain::from_file(empty.to_str().unwrap()).unwrap_err();
        assert!(e.contains("no PEM certificate"), "{e}");
        let e = CertChain::from_file("/nonexistent/c.pem").unwrap_err();
        assert!(e.contains("/nonexistent/c.pem"), "{e}");
        let e = PrivateKey::from_file(empty.to_str().unwrap()).unwrap_err();
        assert!(e.contains("private key"), "{e}");
        let e = CaRoots::from_file("/nonexistent/ca.pem").unwrap_err();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }
}
