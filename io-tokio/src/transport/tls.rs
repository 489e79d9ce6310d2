//! Mutually authenticated TLS 1.3 for every link, and who a peer is.
//!
//! Every site and the arbiter has a key and a certificate signed by the deployment's CA. The
//! certificate's DNS name is the party's *deployment name*: a site's name from `engine.sites`, or
//! the arbiter's name (`[tls] arbiter`, default `arbiter`). A peer's identity comes from the
//! certificate it proved it holds the key of, never from what its `Hello` says: the listener
//! refuses a `Hello` that claims another identity, and the dialer a `Welcome` that does.
//!
//! Host names play no part: the dialer accepts a certificate valid for *any* deployment name and
//! then attributes every message of the link to the name it is valid for, so a peer that answers
//! at an unexpected address can still only speak as itself.

use lifeboat_core::Peer;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The name the arbiter's certificate carries unless `[tls] arbiter` says otherwise.
pub const DEFAULT_ARBITER_NAME: &str = "arbiter";

/// A connection's byte stream: plain TCP (only with `insecure = true`) or TLS over TCP.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}
pub(crate) type Stream = Box<dyn Io>;
pub(crate) type ReadHalf = tokio::io::ReadHalf<Stream>;
pub(crate) type WriteHalf = tokio::io::WriteHalf<Stream>;

/// Where a party's CA certificate, certificate and key are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The deployment's names: the sites by id, and the arbiter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    pub sites: Vec<String>,
    pub arbiter: String,
}

impl Names {
    fn all(&self) -> impl Iterator<Item = (Peer, &str)> {
        let sites = self.sites.iter().enumerate().map(|(i, n)| {
            (
                Peer::Site(lifeboat_core::SiteId(u16::try_from(i).unwrap_or(u16::MAX))),
                n.as_str(),
            )
        });
        sites.chain(std::iter::once((Peer::Arbiter, self.arbiter.as_str())))
    }

    /// The deployment name of `peer`.
    pub fn name_of(&self, peer: Peer) -> Option<&str> {
        self.all().find(|(p, _)| *p == peer).map(|(_, n)| n)
    }

    fn listed(&self) -> String {
        let sites: Vec<&str> = self.sites.iter().map(String::as_str).collect();
        format!("sites {sites:?}, arbiter {:?}", self.arbiter)
    }
}

/// Why TLS could not be set up, naming the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} {}: {why}", path.display())]
    File {
        what: &'static str,
        path: PathBuf,
        why: String,
    },
    #[error("{0}")]
    Setup(String),
}

/// A party's TLS set-up: its acceptor and connector, both requiring the deployment's CA on the
/// other side, and the names that tell who a verified peer is. The keys can be replaced while
/// the process runs ([`Tls::reload`], on `SIGHUP`): new connections use the new ones, links
/// already up keep the session they made.
pub struct Tls {
    keys: std::sync::RwLock<Arc<Keys>>,
    /// How many times the keys were replaced: a client built from older ones rebuilds.
    generation: std::sync::atomic::AtomicU64,
    files: TlsFiles,
    names: Names,
    me: Peer,
}

/// What one set of files makes.
struct Keys {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
    /// The operator API's server side: a client certificate is optional (reads are open), and
    /// one that is presented must be this CA's.
    http_acceptor: TlsAcceptor,
    client: Arc<ClientConfig>,
    roots: Arc<RootCertStore>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("names", &self.names).finish()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        what,
        path: path.to_path_buf(),
        why: format!("{e}; create the files with `lifeboat certs init`"),
    })
}

/// The certificates in a PEM file (at least one).
pub fn certs_from_pem(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
    match certs {
        Ok(c) if !c.is_empty() => Ok(c),
        Ok(_) => Err(TlsError::File {
            what,
            path: path.to_path_buf(),
            why: "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        }),
        Err(e) => Err(TlsError::File {
            what,
            path: path.to_path_buf(),
            why: format!("is not a PEM certificate file: {e}"),
        }),
    }
}

fn key_from_pem(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::File {
        what: "key",
        path: path.to_path_buf(),
        why: format!("holds no PEM private key: {e}"),
    })
}

/// The deployment names a certificate is valid for (by its DNS names).
pub fn names_in(cert: &CertificateDer<'_>, names: &Names) -> Vec<Peer> {
    let Ok(ee) = webpki::EndEntityCert::try_from(cert) else {
        return Vec::new();
    };
    names
        .all()
        .filter(|(_, name)| {
            ServerName::try_from(*name)
                .is_ok_and(|sn| ee.verify_is_valid_for_subject_name(&sn).is_ok())
        })
        .map(|(p, _)| p)
        .collect()
}

/// Who a verified certificate chain belongs to: the one deployment name it is valid for.
pub fn identity(chain: Option<&[CertificateDer<'_>]>, names: &Names) -> Result<Peer, String> {
    let Some(cert) = chain.and_then(|c| c.first()) else {
        return Err("the peer presented no certificate".into());
    };
    match names_in(cert, names)[..] {
        [peer] => Ok(peer),
        [] => Err(format!(
            "the peer's certificate names none of this deployment's parties ({})",
            names.listed()
        )),
        _ => Err(format!(
            "the peer's certificate names several of this deployment's parties ({}); \
             each party needs a certificate of its own",
            names.listed()
        )),
    }
}

/// What is wrong with a certificate chain checked against the CA, in words a person can act on.
pub fn explain(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(C::Expired) => {
            "it has expired; issue a new one (`lifeboat certs init`, or your CA)".into()
        }
        rustls::Error::InvalidCertificate(C::NotValidYet) => {
            "it is not valid yet (check the clocks, or the certificate's start date)".into()
        }
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
            "it is not signed by this deployment's CA (wrong CA file, or a certificate of another deployment)".into()
        }
        rustls::Error::InvalidCertificate(C::BadSignature) => {
            "its signature does not verify (corrupted, or not from this CA)".into()
        }
        other => other.to_string(),
    }
}

/// Accepts a server certificate from the deployment's CA that is valid for any deployment name;
/// the link is then attributed to that name.
#[derive(Debug)]
struct DeploymentServer {
    inner: Arc<WebPkiServerVerifier>,
    names: Vec<ServerName<'static>>,
}

impl ServerCertVerifier for DeploymentServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut last = rustls::Error::General("this deployment has no names".into());
        for name in &self.names {
            match self
                .inner
                .verify_server_cert(end_entity, intermediates, name, ocsp_response, now)
            {
                Ok(v) => return Ok(v),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

impl Tls {
    /// Load a party's files and check its own certificate: signed by the CA, valid now, and
    /// for `me`'s deployment name.
    pub fn load(files: &TlsFiles, names: Names, me: Peer) -> Result<Tls, TlsError> {
        let ca = read_file("CA certificate", &files.ca)?;
        let cert = read_file("certificate", &files.cert)?;
        let key = read_file("key", &files.key)?;
        Tls::from_pem(files, &ca, &cert, &key, names, me)
    }

    /// As [`Tls::load`], from PEM bytes; `files` names them in errors (and a reload reads them).
    pub fn from_pem(
        files: &TlsFiles,
        ca: &[u8],
        cert: &[u8],
        key: &[u8],
        names: Names,
        me: Peer,
    ) -> Result<Tls, TlsError> {
        let keys = Keys::from_pem(files, ca, cert, key, &names, me)?;
        Ok(Tls {
            keys: std::sync::RwLock::new(Arc::new(keys)),
            generation: std::sync::atomic::AtomicU64::new(0),
            files: files.clone(),
            names,
            me,
        })
    }

    /// Read the files again (rotated certificates or CA) and use them for every new
    /// connection. Files that do not load, or a certificate that is not this party's, change
    /// nothing: the error says which file and why, and the old keys stay in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let ca = read_file("CA certificate", &self.files.ca)?;
        let cert = read_file("certificate", &self.files.cert)?;
        let key = read_file("key", &self.files.key)?;
        let keys = Keys::from_pem(&self.files, &ca, &cert, &key, &self.names, self.me)?;
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Changes each time the keys are replaced.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reload the files on every `SIGHUP` for as long as the process runs; each reload is
    /// logged (and a failed one names the file and keeps the keys in use).
    pub fn reload_on_hangup(self: &Arc<Tls>, party: String) {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot watch SIGHUP; certificates are read again only on a restart");
            return;
        };
        let tls = Arc::downgrade(self);
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                let Some(tls) = tls.upgrade() else { return };
                match tls.reload() {
                    Ok(()) => tracing::info!(
                        party = %party,
                        cert = %tls.files.cert.display(),
                        "SIGHUP: certificates loaded again; new connections use them"
                    ),
                    Err(e) => tracing::warn!(
                        party = %party,
                        "SIGHUP: the certificates were not replaced: {e}; the old ones stay in use"
                    ),
                }
            }
        });
    }

    /// The files this party's keys come from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    fn keys(&self) -> Arc<Keys> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Keys {
    fn from_pem(
        files: &TlsFiles,
        ca: &[u8],
        cert: &[u8],
        key: &[u8],
        names: &Names,
        me: Peer,
    ) -> Result<Keys, TlsError> {
        let provider = provider();
        let mut roots = RootCertStore::empty();
        for c in certs_from_pem("CA certificate", &files.ca, ca)? {
            roots.add(c).map_err(|e| TlsError::File {
                what: "CA certificate",
                path: files.ca.clone(),
                why: format!("is not a usable CA certificate: {e}"),
            })?;
        }
        let roots = Arc::new(roots);
        let chain = certs_from_pem("certificate", &files.cert, cert)?;
        let key = key_from_pem(&files.key, key)?;
        let setup = |what: &str, e: rustls::Error| {
            TlsError::Setup(format!(
                "{what} with {} and {}: {e}",
                files.cert.display(),
                files.key.display()
            ))
        };
        let clients = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| TlsError::Setup(format!("client verifier: {e}")))?;
        // Our own certificate must be one the other parties accept as `me`.
        check_chain(&*clients, &chain).map_err(|why| TlsError::File {
            what: "certificate",
            path: files.cert.clone(),
            why: format!("{why} (CA {})", files.ca.display()),
        })?;
        let mine = names_in(&chain[0], names);
        if mine != [me] {
            let want = names.name_of(me).unwrap_or("?");
            return Err(TlsError::File {
                what: "certificate",
                path: files.cert.clone(),
                why: format!(
                    "is not for {want:?}, this party's deployment name (it is valid for {:?}); \
                     each party uses the certificate issued for its own name",
                    mine.iter()
                        .filter_map(|p| names.name_of(*p))
                        .collect::<Vec<_>>()
                ),
            });
        }
        let tls13 = [&rustls::version::TLS13];
        let optional = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Setup(format!("client verifier: {e}")))?;
        let mut http_server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&tls13)
            .map_err(|e| setup("http server", e))?
            .with_client_cert_verifier(optional)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| setup("http server certificate", e))?;
        http_server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&tls13)
            .map_err(|e| setup("server", e))?
            .with_client_cert_verifier(clients)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| setup("server certificate", e))?;
        let servers = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| TlsError::Setup(format!("server verifier: {e}")))?;
        let verifier = DeploymentServer {
            inner: servers,
            names: names
                .all()
                .filter_map(|(_, n)| ServerName::try_from(n.to_string()).ok())
                .collect(),
        };
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&tls13)
            .map_err(|e| setup("client", e))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(chain, key)
            .map_err(|e| setup("client certificate", e))?;
        client.enable_sni = false;
        let client = Arc::new(client);
        Ok(Keys {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(client.clone()),
            http_acceptor: TlsAcceptor::from(Arc::new(http_server)),
            client,
            roots,
        })
    }
}

impl Tls {
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// The CA roots, for the operator API's client-certificate check.
    pub fn roots(&self) -> Arc<RootCertStore> {
        self.keys().roots.clone()
    }

    /// This party's client side (the deployment's CA, its own certificate), for HTTPS to the
    /// agents.
    pub fn client_config(&self) -> ClientConfig {
        (*self.keys().client).clone()
    }

    /// The operator API's TLS server side: the stream, and who the client is when it presented
    /// a certificate of this CA (its deployment name, or `a certificate of this CA`).
    pub(crate) async fn accept_http(
        &self,
        tcp: TcpStream,
    ) -> Result<(Stream, Option<String>), String> {
        let s = self
            .keys()
            .http_acceptor
            .accept(tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        let who = s
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| {
                names_in(c, &self.names)
                    .first()
                    .and_then(|p| self.names.name_of(*p))
                    .map_or_else(|| "a certificate of this CA".to_string(), str::to_string)
            });
        Ok((Box::new(s), who))
    }

    /// The TLS server side of an accepted connection; the peer's identity from its certificate.
    pub(crate) async fn accept(&self, tcp: TcpStream) -> Result<(Stream, Peer), String> {
        let s = self
            .keys()
            .acceptor
            .accept(read_ahead(tcp))
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        let peer = identity(s.get_ref().1.peer_certificates(), &self.names)?;
        Ok((Box::new(s), peer))
    }

    /// The TLS client side of a dialed connection; the peer's identity from its certificate.
    pub(crate) async fn connect(&self, tcp: TcpStream) -> Result<(Stream, Peer), String> {
        // Not used for verification (see `DeploymentServer`); SNI is off.
        let name = ServerName::try_from("lifeboat").expect("a valid DNS name");
        let s = self
            .keys()
            .connector
            .connect(name, read_ahead(tcp))
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        let peer = identity(s.get_ref().1.peer_certificates(), &self.names)?;
        Ok((Box::new(s), peer))
    }
}

/// Bytes read from the socket at once beneath TLS. rustls asks for 4 KiB at a time; one
/// `recv` per 4 KiB was a third of a receive's CPU time, and copying the bytes once more out
/// of this buffer costs a small part of that. Untouched pages cost no memory, so an idle or
/// slow link holds only what arrived.
const TLS_READ_AHEAD: usize = 256 * 1024;

fn read_ahead(tcp: TcpStream) -> tokio::io::BufReader<TcpStream> {
    tokio::io::BufReader::with_capacity(TLS_READ_AHEAD, tcp)
}

/// Verify a certificate chain against the CA as a client certificate, now.
pub fn check_chain(
    verifier: &dyn ClientCertVerifier,
    chain: &[CertificateDer<'static>],
) -> Result<(), String> {
    let Some((ee, rest)) = chain.split_first() else {
        return Err("holds no certificate".into());
    };
    verifier
        .verify_client_cert(ee, rest, UnixTime::now())
        .map(|_| ())
        .map_err(|e| explain(&e))
}

/// A verifier of client certificates against a CA file's roots (for `certs check`).
pub fn client_verifier(roots: Arc<RootCertStore>) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| TlsError::Setup(format!("client verifier: {e}")))
}
