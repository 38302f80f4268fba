//! TLS for every connection the worker opens, with libpq's `sslmode` and `sslrootcert`.
//!
//! tokio-postgres parses `sslmode` only up to `require` and knows no `sslrootcert`, so the
//! connection string is read here first (see [`DbConfig::parse`]): the two options are taken
//! out, the rest goes to tokio-postgres, and a rustls connector does what libpq documents
//! (PostgreSQL manual, "libpq - SSL Support", table "SSL Mode Descriptions"):
//!
//! - `disable`: plain connections only.
//! - `prefer` (libpq's default): TLS when the server offers it, plain otherwise; the
//!   certificate is not checked, so it protects against eavesdropping, not impersonation.
//! - `require`: TLS or no connection, certificate not checked, except that libpq checks the
//!   chain (as `verify-ca`) when a root certificate is given; so do we.
//! - `verify-ca`: TLS, and the server's chain must lead to a root in `sslrootcert` (required,
//!   as in libpq: against public roots a chain check alone proves nothing).
//! - `verify-full`: as `verify-ca`, and the certificate must name the host connected to.
//!
//! The trusted roots are the PEM certificates in `sslrootcert=<file>`; without one (or with
//! `sslrootcert=system`, which libpq allows only with `verify-full`, as a public CA will sign
//! any host its owner controls) the Mozilla root bundle built into the worker, the same roots
//! its Stripe client trusts, so a container image without a CA store still works. libpq itself
//! would look for `~/.postgresql/root.crt`; a daemon should not depend on its home directory.
//! `allow` (plain first, TLS only when the server insists) is refused: tokio-postgres cannot
//! do it, and `prefer` is never weaker.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

/// libpq's `sslmode` values that the worker speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(value: &str) -> Result<SslMode, String> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => return Err(
                "sslmode=allow is not supported (use prefer, which tries TLS first, or require)"
                    .into(),
            ),
            _ => {
                return Err(
                    "sslmode must be one of disable, prefer, require, verify-ca, verify-full"
                        .into(),
                )
            }
        })
    }
}

/// A connection string as the worker uses it: tokio-postgres's settings plus the TLS
/// connector that `sslmode` and `sslrootcert` call for. `Debug` shows no password.
#[derive(Clone, Debug)]
pub struct DbConfig {
    pub pg: tokio_postgres::Config,
    pub tls: Tls,
}

impl std::ops::Deref for DbConfig {
    type Target = tokio_postgres::Config;
    fn deref(&self) -> &tokio_postgres::Config {
        &self.pg
    }
}

impl std::ops::DerefMut for DbConfig {
    fn deref_mut(&mut self) -> &mut tokio_postgres::Config {
        &mut self.pg
    }
}

/// A tokio-postgres configuration built in code (tests): its own `sslmode`, no certificate
/// check.
impl From<tokio_postgres::Config> for DbConfig {
    fn from(pg: tokio_postgres::Config) -> DbConfig {
        let mode = match pg.get_ssl_mode() {
            tokio_postgres::config::SslMode::Disable => SslMode::Disable,
            tokio_postgres::config::SslMode::Require => SslMode::Require,
            _ => SslMode::Prefer,
        };
        let tls = Tls::new(mode, Roots::Builtin, Check::Nothing);
        DbConfig { pg, tls }
    }
}

impl DbConfig {
    /// Parses a URL (`postgres://…?sslmode=verify-full&sslrootcert=/path`) or key=value
    /// string. Errors never echo the input: it may hold a password.
    pub fn parse(text: &str) -> Result<DbConfig, String> {
        let (rest, options) = super::dsn::take_tls_options(text.trim())?;
        let mut pg = tokio_postgres::Config::from_str(&rest).map_err(|e| e.to_string())?;
        let root = options.root.as_deref();
        let system = root == Some("system");
        let mode = match options.mode.as_deref() {
            None if system => SslMode::VerifyFull,
            None => SslMode::Prefer,
            Some(m) => SslMode::parse(m)?,
        };
        if system && mode != SslMode::VerifyFull {
            return Err(format!(
                "sslrootcert=system needs sslmode=verify-full (got {}): any host's owner can get a certificate from a public CA",
                mode.as_str()
            ));
        }
        // libpq refuses verify-ca without a root file too; against the public roots a chain
        // check alone proves nothing.
        if mode == SslMode::VerifyCa && root.is_none() {
            return Err("sslmode=verify-ca needs sslrootcert=FILE, the CA that signed the server's certificate (or use verify-full)".into());
        }
        let roots = match root {
            Some(path) if !system && mode != SslMode::Disable => {
                Roots::File(load_roots(path)?, path.to_string())
            }
            _ => Roots::Builtin,
        };
        // libpq's require checks the chain once a root certificate is given. Its prefer does
        // too, but falls back to plain text when the check fails, which tokio-postgres cannot
        // do; so prefer checks nothing here rather than fail where libpq would connect.
        let check = match mode {
            SslMode::VerifyFull => Check::ChainAndName,
            SslMode::VerifyCa => Check::Chain,
            SslMode::Require if matches!(roots, Roots::File(..)) => Check::Chain,
            _ => Check::Nothing,
        };
        pg.ssl_mode(match mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        Ok(DbConfig {
            pg,
            tls: Tls::new(mode, roots, check),
        })
    }

    /// Opens one connection with this configuration's TLS.
    pub async fn connect(
        &self,
    ) -> Result<
        (
            tokio_postgres::Client,
            tokio_postgres::Connection<tokio_postgres::Socket, TlsStreamOf>,
        ),
        tokio_postgres::Error,
    > {
        self.pg.connect(self.tls.clone()).await
    }
}

/// The stream type of a connection the worker opened.
pub type TlsStreamOf = RustlsStream<tokio_postgres::Socket>;

fn load_roots(path: &str) -> Result<Arc<RootCertStore>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read sslrootcert {path}: {e}"))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("sslrootcert {path} is not PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("sslrootcert {path} holds an unusable certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("sslrootcert {path} holds no certificate"));
    }
    Ok(Arc::new(roots))
}

#[derive(Clone, Debug)]
enum Roots {
    Builtin,
    /// The certificates and the file they came from.
    File(Arc<RootCertStore>, String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    Nothing,
    Chain,
    ChainAndName,
}

/// The connector: a rustls client configuration for the mode.
#[derive(Clone, Debug)]
pub struct Tls {
    mode: SslMode,
    config: Arc<ClientConfig>,
    /// Where the trusted roots come from, for error messages.
    roots: String,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Tls {
    fn new(mode: SslMode, roots: Roots, check: Check) -> Tls {
        let (roots, source) = match roots {
            Roots::File(store, path) => (store, format!("sslrootcert {path}")),
            Roots::Builtin => (
                Arc::new(RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                }),
                "the built-in roots (no sslrootcert given)".to_string(),
            ),
        };
        let provider = provider();
        let verifier: Arc<dyn ServerCertVerifier> = match check {
            Check::ChainAndName => {
                WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .expect("a root store with at least one certificate")
            }
            Check::Chain => Arc::new(ChainOnly {
                roots,
                provider: provider.clone(),
            }),
            Check::Nothing => Arc::new(Unchecked {
                provider: provider.clone(),
            }),
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Tls {
            mode,
            config: Arc::new(config),
            roots: source,
        }
    }

    pub fn mode(&self) -> SslMode {
        self.mode
    }
}

impl<S> MakeTlsConnect<S> for Tls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = Handshake;
    type Error = TlsError;

    /// Called for every host, Unix sockets included (with an empty name), before tokio-postgres
    /// knows whether TLS will be used; so the name is checked only in the handshake.
    fn make_tls_connect(&mut self, host: &str) -> Result<Handshake, TlsError> {
        Ok(Handshake {
            tls: self.clone(),
            host: host.to_string(),
        })
    }
}

/// One handshake to `host`.
pub struct Handshake {
    tls: Tls,
    host: String,
}

impl<S> TlsConnect<S> for Handshake
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = TlsError;
    type Future = Pin<Box<dyn Future<Output = Result<RustlsStream<S>, TlsError>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let Handshake { tls, host } = self;
            let refused = |reason: String, hint: Option<String>| TlsError {
                mode: tls.mode,
                host: host.clone(),
                reason,
                hint,
            };
            let name = match ServerName::try_from(host.clone()) {
                Ok(name) => name,
                // Nothing to compare with: the name only goes out as SNI, which servers ignore.
                Err(_) if tls.mode != SslMode::VerifyFull => ServerName::try_from("localhost")
                    .expect("a valid name")
                    .to_owned(),
                Err(_) => {
                    return Err(refused(
                        "verify-full needs a host name (or IP address) to check the certificate against".into(),
                        Some("give host=NAME".into()),
                    ))
                }
            };
            tokio_rustls::TlsConnector::from(tls.config.clone())
                .connect(name, stream)
                .await
                .map(RustlsStream)
                .map_err(|e| {
                    let hint = match e
                        .get_ref()
                        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                    {
                        Some(rustls::Error::InvalidCertificate(why)) => Some(hint(why, &tls)),
                        _ => None,
                    };
                    refused(e.to_string(), hint)
                })
        })
    }
}

/// What to change when the server's certificate was refused.
fn hint(why: &rustls::CertificateError, tls: &Tls) -> String {
    use rustls::CertificateError as E;
    match why {
        E::NotValidForName | E::NotValidForNameContext { .. } => {
            "connect by a host name the certificate lists, or use sslmode=verify-ca".into()
        }
        E::UnknownIssuer | E::BadSignature => format!(
            "the server's certificate is not signed by a CA in {}",
            tls.roots
        ),
        _ => format!(
            "the server's certificate is refused (trusted roots: {})",
            tls.roots
        ),
    }
}

/// A failed handshake, with what to look at; never the password.
#[derive(Debug)]
pub struct TlsError {
    mode: SslMode,
    host: String,
    reason: String,
    /// Set when the server's certificate was refused, which no retry changes: what to do.
    hint: Option<String>,
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TLS handshake with {:?} failed (sslmode={}): {}",
            self.host,
            self.mode.as_str(),
            self.reason
        )?;
        if let Some(hint) = &self.hint {
            write!(f, ": {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for TlsError {}

/// Whether connecting failed for a reason no retry changes: the server's certificate was
/// refused, or TLS was required and the server does not offer it.
pub fn is_refusal(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(tls) = c.downcast_ref::<TlsError>() {
            return tls.hint.is_some();
        }
        // tokio-postgres's own error for a server that answered "no" to the TLS request; it
        // has no type of its own to look for.
        if c.source().is_none() && c.to_string() == "server does not support TLS" {
            return true;
        }
        cause = c.source();
    }
    false
}

/// `require` and `prefer` without a root certificate: encrypt, but take any certificate
/// (libpq's behaviour). The handshake's signatures are still checked, so the session is
/// bound to whichever key the server showed.
#[derive(Debug)]
struct Unchecked {
    provider: Arc<CryptoProvider>,
}

/// `verify-ca`: the chain must lead to a trusted root; the name is not compared.
#[derive(Debug)]
struct ChainOnly {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
}

macro_rules! signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    signatures!();
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }
    signatures!();
}

/// A TLS connection as tokio-postgres wants it.
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    /// No SCRAM channel binding: tokio-postgres then authenticates with plain SCRAM-SHA-256,
    /// which servers accept unless `channel_binding=require` is set.
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
