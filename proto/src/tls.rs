//! Mutual TLS between Cairn's processes.
//!
//! A cluster has one certificate authority. Every process (metadata member,
//! chunk node, gateway, and the operator's `cairn admin`) holds a
//! certificate that CA signed, and presents it both as a server and as a
//! client; servers require a client certificate from the same CA, so a
//! process without one cannot join the metadata group, register as a chunk
//! node, or read or write a chunk.
//!
//! Every certificate names [`SERVER_NAME`] and clients verify that name, not
//! the address they dialled: members are reached by IP on a laptop and by
//! service name under compose, and what matters is that the peer holds a
//! certificate of this cluster's CA. Each process's TLS files are a directory
//! with `ca.pem`, `node.pem` and `node.key` (see [`ClusterTls::load`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

/// The name every cluster certificate carries and every client checks.
pub const SERVER_NAME: &str = "cairn.internal";
/// The CA certificate, in a process's TLS directory.
pub const CA_FILE: &str = "ca.pem";
/// The process's certificate.
pub const CERT_FILE: &str = "node.pem";
/// The process's private key (mode 0600).
pub const KEY_FILE: &str = "node.key";
/// How long a TLS handshake may take on a server.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[error("TLS file {path}: {reason}")]
pub struct TlsError {
    pub path: PathBuf,
    pub reason: String,
}

/// One process's TLS material: the cluster CA and its own identity (shared:
/// cheap to clone into every client that needs it).
#[derive(Clone, Debug)]
pub struct ClusterTls(Arc<Pems>);

#[derive(Debug)]
struct Pems {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl ClusterTls {
    /// Reads `ca.pem`, `node.pem` and `node.key` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, TlsError> {
        let read = |name: &str| {
            let path = dir.join(name);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| TlsError { path: path.clone(), reason: e.to_string() })?;
            if !text.contains("-----BEGIN ") {
                return Err(TlsError { path, reason: "not a PEM file".into() });
            }
            Ok(text)
        };
        Ok(ClusterTls::from_pem(read(CA_FILE)?, read(CERT_FILE)?, read(KEY_FILE)?))
    }

    /// From PEM text (tests and tools that hold it in memory).
    pub fn from_pem(ca_pem: String, cert_pem: String, key_pem: String) -> Self {
        ClusterTls(Arc::new(Pems { ca_pem, cert_pem, key_pem }))
    }

    pub fn cert_pem(&self) -> &str {
        &self.0.cert_pem
    }

    fn identity(&self) -> Identity {
        Identity::from_pem(&self.0.cert_pem, &self.0.key_pem)
    }

    /// A server that requires a client certificate signed by the CA. A
    /// handshake gets [`HANDSHAKE_TIMEOUT`]: a peer that connects and says
    /// nothing does not hold a socket and a task for ever.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity())
            .client_ca_root(Certificate::from_pem(&self.0.ca_pem))
            .timeout(HANDSHAKE_TIMEOUT)
    }

    fn rustls_parts(
        &self,
    ) -> Result<(RootCertStore, Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError>
    {
        let bad = |what: &str, e: String| TlsError { path: PathBuf::from(what), reason: e };
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(self.0.ca_pem.as_bytes()) {
            let ca = ca.map_err(|e| bad(CA_FILE, e.to_string()))?;
            roots.add(ca).map_err(|e| bad(CA_FILE, e.to_string()))?;
        }
        let certs = CertificateDer::pem_slice_iter(self.0.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(CERT_FILE, e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(self.0.key_pem.as_bytes())
            .map_err(|e| bad(KEY_FILE, e.to_string()))?;
        Ok((roots, certs, key))
    }

    /// A rustls server (for NBD, which is not gRPC) presenting this
    /// process's certificate; with `verify_clients`, requiring a client
    /// certificate the CA signed.
    pub fn rustls_server(&self, verify_clients: bool) -> Result<Arc<ServerConfig>, TlsError> {
        let (roots, certs, key) = self.rustls_parts()?;
        let provider = ring_provider();
        let fail = |e: String| TlsError { path: PathBuf::from(CERT_FILE), reason: e };
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| fail(e.to_string()))?;
        let builder = if verify_clients {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| fail(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        Ok(Arc::new(builder.with_single_cert(certs, key).map_err(|e| fail(e.to_string()))?))
    }

    /// A rustls client that trusts only the CA and presents this process's
    /// certificate (connect with [`server_name`]).
    pub fn rustls_client(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let (roots, certs, key) = self.rustls_parts()?;
        let fail = |e: String| TlsError { path: PathBuf::from(CERT_FILE), reason: e };
        let config = ClientConfig::builder_with_provider(ring_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| fail(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|e| fail(e.to_string()))?;
        Ok(Arc::new(config))
    }

    /// A client that trusts only the CA and presents this process's certificate.
    pub fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.0.ca_pem))
            .identity(self.identity())
            .domain_name(SERVER_NAME)
    }
}

/// rustls on ring: no C crypto library to build. rustls 0.23.48 marks ring's
/// provider deprecated because ring has no post-quantum key exchange; the
/// cluster's traffic uses ring's X25519/P-256 suites until ring has one.
#[allow(deprecated)]
fn ring_provider() -> Arc<tokio_rustls::rustls::crypto::CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// The name clients check in a cluster certificate, as rustls takes it.
pub fn server_name() -> ServerName<'static> {
    ServerName::try_from(SERVER_NAME).expect("a valid DNS name")
}

/// The endpoint for `addr` (`http://host:port`, as members and nodes
/// advertise themselves): with `tls`, dialled as `https` with the cluster's
/// client configuration (tonic applies TLS only to `https` URIs, so the
/// scheme is what switches it on).
pub fn endpoint(addr: &str, tls: Option<&ClusterTls>) -> Result<Endpoint, tonic::transport::Error> {
    match tls {
        None => Endpoint::from_shared(addr.to_string()),
        Some(tls) => {
            let rest = addr.strip_prefix("http://").unwrap_or(addr);
            let url = if rest.starts_with("https://") {
                rest.to_string()
            } else {
                format!("https://{rest}")
            };
            Endpoint::from_shared(url)?.tls_config(tls.client())
        }
    }
}
