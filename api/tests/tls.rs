//! `referrals serve` over HTTPS, as a client sees it: TLS 1.2 and 1.3 handshakes with a
//! self-signed certificate, a TLS 1.1 ClientHello rejected, the security headers, CORS
//! open only to the configured origins, and a graceful stop on SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const ALLOWED_ORIGIN: &str = "https://app.example.com";

/// A self-signed certificate for `localhost`, written to a fresh directory.
struct Certificate {
    directory: PathBuf,
    der: CertificateDer<'static>,
}

impl Certificate {
    fn generate() -> Self {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let directory =
            std::env::temp_dir().join(format!("referrals_tls_{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&directory).unwrap();
        std::fs::write(directory.join("cert.pem"), certified.cert.pem()).unwrap();
        std::fs::write(
            directory.join("key.pem"),
            certified.signing_key.serialize_pem(),
        )
        .unwrap();
        Self {
            directory,
            der: certified.cert.der().clone(),
        }
    }
}

impl Drop for Certificate {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

/// A running `referrals serve --no-workers` and the address it announced.
struct Server {
    child: Child,
    address: String,
    log: std::io::Lines<BufReader<std::process::ChildStderr>>,
}

impl Server {
    /// Starts the server with `environment` on top of a database URL, a master key and a
    /// free port, and waits up to ten seconds for its "serving" log line.
    fn start(environment: &[(&str, String)]) -> Self {
        let database_url =
            std::env::var("DATABASE_URL").expect("DATABASE_URL must name the test server");
        let mut command = Command::new(env!("CARGO_BIN_EXE_referrals"));
        command
            .args(["serve", "--no-workers"])
            .env("DATABASE_URL", database_url)
            .env("BIND_ADDR", "127.0.0.1:0")
            .env("REFERRALS_MASTER_KEY", master_key())
            .env_remove("TLS_CERT_FILE")
            .env_remove("TLS_KEY_FILE")
            .env_remove("CORS_ALLOWED_ORIGINS")
            .env_remove("DATABASE_READ_URL")
            .stderr(Stdio::piped());
        for (name, value) in environment {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        let mut log = BufReader::new(child.stderr.take().unwrap()).lines();
        let started = Instant::now();
        let address = loop {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the server did not start"
            );
            let line = log.next().expect("the server exited").unwrap();
            let entry: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if entry["fields"]["message"] == "serving" {
                break entry["fields"]["address"].as_str().unwrap().to_owned();
            }
        };
        Self {
            child,
            address,
            log,
        }
    }

    /// Sends SIGTERM and returns whether the process exited with success and logged
    /// "stopped" within fifteen seconds.
    fn stop(mut self) -> bool {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let rest: Vec<String> = self.log.by_ref().map_while(Result::ok).collect();
        status.success() && rest.iter().any(|line| line.contains("\"stopped\""))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn master_key() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn tls_environment(certificate: &Certificate) -> Vec<(&'static str, String)> {
    let path = |name: &str| certificate.directory.join(name).display().to_string();
    vec![
        ("TLS_CERT_FILE", path("cert.pem")),
        ("TLS_KEY_FILE", path("key.pem")),
        ("CORS_ALLOWED_ORIGINS", ALLOWED_ORIGIN.to_owned()),
    ]
}

/// A response read off the wire: the status line and the lower-cased header lines.
struct Reply {
    status_line: String,
    headers: Vec<(String, String)>,
}

impl Reply {
    fn parse(bytes: &[u8]) -> Self {
        let text = String::from_utf8_lossy(bytes);
        let head = text.split("\r\n\r\n").next().unwrap_or_default();
        let mut lines = head.lines();
        let status_line = lines.next().unwrap_or_default().to_owned();
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        Self {
            status_line,
            headers,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(found, _)| found == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Sends one HTTP/1.1 request over TLS restricted to `version` and reads the reply until
/// the server closes the connection.
async fn https_request(
    address: &str,
    certificate: &Certificate,
    version: &'static SupportedProtocolVersion,
    request: &str,
) -> (Reply, rustls::ProtocolVersion) {
    let mut roots = RootCertStore::empty();
    roots.add(certificate.der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(address).await.unwrap();
    let server_name = ServerName::try_from("localhost").unwrap();
    let mut stream = connector.connect(server_name, tcp).await.unwrap();
    let negotiated = stream.get_ref().1.protocol_version().unwrap();

    stream.write_all(request.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut bytes))
        .await
        .expect("the server did not close the connection within ten seconds");
    // A peer that closes without close_notify still delivered the whole response.
    if let Err(error) = read {
        assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof, "{error}");
    }
    (Reply::parse(&bytes), negotiated)
}

async fn plain_request(address: &str, request: &str) -> Reply {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut bytes))
        .await
        .expect("the server did not close the connection within ten seconds")
        .unwrap();
    Reply::parse(&bytes)
}

const HEALTHZ: &str = "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

fn preflight(origin: &str) -> String {
    format!(
        "OPTIONS /v1/referrals HTTP/1.1\r\nHost: localhost\r\nOrigin: {origin}\r\n\
         Access-Control-Request-Method: GET\r\n\
         Access-Control-Request-Headers: authorization\r\nConnection: close\r\n\r\n"
    )
}

/// A ClientHello whose highest version is TLS 1.1, with no supported_versions extension.
/// It carries a signature_algorithms extension only so that rustls gets as far as
/// choosing the version: without one it rejects the hello earlier, with
/// handshake_failure.
fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02];
    body.extend_from_slice(&[0x5a; 32]);
    body.push(0);
    body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]);
    body.extend_from_slice(&[0x01, 0x00]);
    // Extensions: signature_algorithms (13) listing ecdsa_secp256r1_sha256 and
    // rsa_pkcs1_sha256.
    body.extend_from_slice(&[0x00, 0x0a, 0x00, 0x0d, 0x00, 0x06, 0x00, 0x04]);
    body.extend_from_slice(&[0x04, 0x03, 0x04, 0x01]);

    let mut handshake = vec![0x01, 0x00];
    handshake.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
    handshake.extend_from_slice(&body);

    let mut record = vec![0x16, 0x03, 0x02];
    record.extend_from_slice(&u16::try_from(handshake.len()).unwrap().to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test]
async fn https_serves_tls12_and_tls13() {
    let certificate = Certificate::generate();
    let server = Server::start(&tls_environment(&certificate));

    for (version, expected) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let (reply, negotiated) =
            https_request(&server.address, &certificate, version, HEALTHZ).await;
        assert_eq!(negotiated, expected);
        assert!(
            reply.status_line.starts_with("HTTP/1.1 200"),
            "{expected:?}: {}",
            reply.status_line
        );
        assert_eq!(
            reply.header("strict-transport-security"),
            Some("max-age=31536000"),
            "{expected:?}"
        );
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(reply.header("cache-control"), Some("no-store"));
    }

    assert!(server.stop(), "the HTTPS server did not stop cleanly");
}

#[tokio::test]
async fn https_rejects_tls11_handshake() {
    let certificate = Certificate::generate();
    let server = Server::start(&tls_environment(&certificate));

    let mut stream = TcpStream::connect(&server.address).await.unwrap();
    stream.write_all(&tls11_client_hello()).await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply))
        .await
        .expect("the server did not close the connection within ten seconds")
        .unwrap();
    drop(stream);

    // An alert record: type 21, then version, length, level and description, where
    // description 70 is protocol_version (RFC 5246, section 7.2).
    assert_eq!(reply.first(), Some(&0x15), "no alert record: {reply:02x?}");
    assert_eq!(
        reply.get(6),
        Some(&70),
        "not protocol_version: {reply:02x?}"
    );
    assert!(server.stop());
}

#[tokio::test]
async fn cors_allows_configured_origin_only() {
    let certificate = Certificate::generate();
    let server = Server::start(&tls_environment(&certificate));
    let version = &rustls::version::TLS13;

    let (allowed, _) = https_request(
        &server.address,
        &certificate,
        version,
        &preflight(ALLOWED_ORIGIN),
    )
    .await;
    let (other, _) = https_request(
        &server.address,
        &certificate,
        version,
        &preflight("https://elsewhere.example.com"),
    )
    .await;
    assert!(server.stop());

    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some(ALLOWED_ORIGIN)
    );
    let allowed_headers = allowed
        .header("access-control-allow-headers")
        .unwrap_or_default();
    assert!(
        allowed_headers.contains("authorization"),
        "{allowed_headers}"
    );
    assert_eq!(other.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn plain_http_has_closed_cors_and_no_hsts() {
    let server = Server::start(&[]);

    let health = plain_request(&server.address, HEALTHZ).await;
    let preflight = plain_request(&server.address, &preflight(ALLOWED_ORIGIN)).await;
    assert!(server.stop());

    assert!(
        health.status_line.starts_with("HTTP/1.1 200"),
        "{}",
        health.status_line
    );
    assert_eq!(health.header("strict-transport-security"), None);
    assert_eq!(health.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(preflight.header("access-control-allow-origin"), None);
}

#[test]
fn serve_rejects_wildcard_origin() {
    let output = Command::new(env!("CARGO_BIN_EXE_referrals"))
        .args(["serve", "--no-workers"])
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/unused")
        .env("REFERRALS_MASTER_KEY", master_key())
        .env("CORS_ALLOWED_ORIGINS", "*")
        .output()
        .unwrap();

    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("CORS_ALLOWED_ORIGINS"), "{stderr}");
}

#[test]
fn serve_rejects_unreadable_certificate() {
    let missing = std::env::temp_dir().join(format!(
        "referrals_missing_{}.pem",
        uuid::Uuid::now_v7().simple()
    ));
    let database_url =
        std::env::var("DATABASE_URL").expect("DATABASE_URL must name the test server");
    let output = Command::new(env!("CARGO_BIN_EXE_referrals"))
        .args(["serve", "--no-workers"])
        .env("DATABASE_URL", database_url)
        .env("BIND_ADDR", "127.0.0.1:0")
        .env("REFERRALS_MASTER_KEY", master_key())
        .env("TLS_CERT_FILE", &missing)
        .env("TLS_KEY_FILE", &missing)
        .output()
        .unwrap();

    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let reason = stderr
        .lines()
        .find(|line| line.starts_with("referrals:"))
        .unwrap_or_default();
    assert!(reason.contains("TLS_CERT_FILE"), "{stderr}");
    assert!(reason.contains(&missing.display().to_string()), "{stderr}");
}
