//! Auth fixtures: a private PKI made with the `openssl` command, and a token service that issues
//! the JWTs a real `docker-registry` (with `auth: token`) verifies against its `rootcertbundle`.
//!
//! The token service grants anonymous pull on every repository except those under `team/`,
//! which only the stored credentials (`robot` / `s3cret`, or the refresh token `refresh-s3cret`)
//! may pull. It records every request, so tests can count tokens and see where credentials went.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;

use super::{run, scratch};

pub const USER: &str = "robot";
pub const PASSWORD: &str = "s3cret";
pub const REFRESH_TOKEN: &str = "refresh-s3cret";
pub const ISSUER: &str = "test-issuer";
pub const SERVICE: &str = "test-registry";

/// Keys and certificates, made once per test binary.
pub struct Pki {
    pub dir: PathBuf,
    /// Signs tokens; its self-signed certificate is the registry's `rootcertbundle`.
    pub token_key: PathBuf,
    pub token_cert: PathBuf,
    /// A private CA, and a server certificate for 127.0.0.1 that it signed.
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    token_cert_der_b64: String,
}

/// `curl -s` to `https://127.0.0.1:PORT/PATH`, trusting only the test CA, with `args` (what to
/// print, a user, a protocol): its standard output. The one curl the TLS tests use.
pub fn curl_tls(port: u16, path: &str, args: &[&str]) -> String {
    let out = Command::new("curl")
        .arg("-s")
        .args(args)
        .arg("--cacert")
        .arg(&pki().ca_cert)
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = scratch("pki").keep();
        let p = |n: &str| dir.join(n);
        let req = |key: &Path, cert: &Path, cn: &str| {
            run(Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj",
                ])
                .arg(format!("/CN={cn}"))
                .arg("-keyout")
                .arg(key)
                .arg("-out")
                .arg(cert));
        };
        req(&p("token.key"), &p("token.crt"), "token-issuer");
        req(&p("ca.key"), &p("ca.crt"), "entrepot-test-ca");
        run(Command::new("openssl")
            .args([
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
            ])
            .arg(p("server.key"))
            .arg("-out")
            .arg(p("server.csr")));
        fs::write(p("san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "3650", "-CAcreateserial", "-in"])
            .arg(p("server.csr"))
            .arg("-CA")
            .arg(p("ca.crt"))
            .arg("-CAkey")
            .arg(p("ca.key"))
            .arg("-extfile")
            .arg(p("san.ext"))
            .arg("-out")
            .arg(p("server.crt")));
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(p("token.crt"))
            .output()
            .unwrap()
            .stdout;
        Pki {
            token_key: p("token.key"),
            token_cert: p("token.crt"),
            ca_cert: p("ca.crt"),
            server_cert: p("server.crt"),
            server_key: p("server.key"),
            token_cert_der_b64: base64::engine::general_purpose::STANDARD.encode(der),
            dir,
        }
    })
}

/// One request the token service saw.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub method: String,
    /// The Basic username presented, if any.
    pub user: Option<String>,
    pub had_authorization: bool,
    pub scopes: Vec<String>,
}

pub struct TokenService {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<TokenRequest>>>,
}

impl TokenService {
    pub fn start() -> TokenService {
        Self::start_with(false)
    }

    /// On `127.0.0.2`: a realm on another host than a registry on `127.0.0.1`.
    pub fn start_elsewhere() -> TokenService {
        Self::serve("127.0.0.2", false)
    }

    /// `post_only`: like some OAuth2 token services, refuse GET with 405 and take credentials
    /// only as a POSTed password grant.
    pub fn start_with(post_only: bool) -> TokenService {
        Self::serve("127.0.0.1", post_only)
    }

    fn serve(ip: &str, post_only: bool) -> TokenService {
        let pki = pki();
        let listener = TcpListener::bind((ip, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<TokenRequest>>> = Arc::default();
        let s2 = seen.clone();
        let (key, x5c) = (pki.token_key.clone(), pki.token_cert_der_b64.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let (seen, key, x5c) = (s2.clone(), key.clone(), x5c.clone());
                std::thread::spawn(move || {
                    let (method, target, headers, body) = read_request(&mut conn);
                    let auth = headers
                        .iter()
                        .find(|(k, _)| k == "authorization")
                        .map(|(_, v)| v.clone());
                    let basic = auth
                        .as_deref()
                        .and_then(|a| a.strip_prefix("Basic "))
                        .and_then(|b| {
                            let raw = base64::engine::general_purpose::STANDARD.decode(b).ok()?;
                            let text = String::from_utf8(raw).ok()?;
                            text.split_once(':')
                                .map(|(u, p)| (u.to_owned(), p.to_owned()))
                        });
                    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
                    let params: Vec<(String, String)> =
                        url::form_urlencoded::parse(if method == "POST" {
                            body.as_bytes()
                        } else {
                            query.as_bytes()
                        })
                        .into_owned()
                        .collect();
                    let get = |k: &str| {
                        params
                            .iter()
                            .filter(|(n, _)| n == k)
                            .map(|(_, v)| v.clone())
                            .collect::<Vec<_>>()
                    };
                    let mut scopes: Vec<String> = get("scope")
                        .into_iter()
                        .flat_map(|s| s.split(' ').map(str::to_owned).collect::<Vec<_>>())
                        .collect();
                    scopes.retain(|s| !s.is_empty());
                    seen.lock().unwrap().push(TokenRequest {
                        method: method.clone(),
                        user: basic.as_ref().map(|(u, _)| u.clone()),
                        had_authorization: auth.is_some(),
                        scopes: scopes.clone(),
                    });
                    if post_only && method == "GET" {
                        respond(&mut conn, 405, "{}");
                        return;
                    }
                    let one = |k: &str| get(k).first().cloned().unwrap_or_default();
                    let trusted = if method == "POST" {
                        match one("grant_type").as_str() {
                            "refresh_token" => one("refresh_token") == REFRESH_TOKEN,
                            "password" => one("username") == USER && one("password") == PASSWORD,
                            _ => false,
                        }
                    } else {
                        match &basic {
                            None => false,
                            Some((u, p)) if u == USER && p == PASSWORD => true,
                            Some(_) => {
                                respond(
                                    &mut conn,
                                    401,
                                    "{\"errors\":[{\"code\":\"UNAUTHORIZED\"}]}",
                                );
                                return;
                            }
                        }
                    };
                    if method == "POST" && !trusted {
                        respond(&mut conn, 401, "{\"error\":\"invalid_grant\"}");
                        return;
                    }
                    let access: Vec<serde_json::Value> = scopes
                        .iter()
                        .filter_map(|s| {
                            let mut parts = s.splitn(3, ':');
                            let (kind, name, _) = (parts.next()?, parts.next()?, parts.next()?);
                            (kind == "repository" && (trusted || !name.starts_with("team/")))
                                .then(|| serde_json::json!({"type": "repository", "name": name, "actions": ["pull"]}))
                        })
                        .collect();
                    let service = get("service").first().cloned().unwrap_or_default();
                    let jwt = sign_jwt(&key, &x5c, &service, &access);
                    let field = if method == "POST" {
                        "access_token"
                    } else {
                        "token"
                    };
                    respond(
                        &mut conn,
                        200,
                        &serde_json::json!({field: jwt, "expires_in": 300}).to_string(),
                    );
                });
            }
        });
        TokenService { port, seen }
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Registry YAML for token auth with this service as the realm, reached as `realm_host`.
    pub fn registry_yaml(&self, realm_host: &str) -> String {
        format!(
            "auth:\n  token:\n    realm: http://{realm_host}:{}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            self.port,
            pki().token_cert.display()
        )
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// An RS256 JWT with the signing certificate in `x5c`, signed by `openssl dgst`.
fn sign_jwt(key: &Path, x5c: &str, service: &str, access: &[serde_json::Value]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": "entrepot-test", "aud": service,
        "exp": now + 300, "nbf": now - 10, "iat": now,
        "jti": format!("{now}-{}", access.len()), "access": access,
    });
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-binary", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let sig = child.wait_with_output().unwrap().stdout;
    format!("{input}.{}", b64url(&sig))
}

/// Reads one HTTP request: method, target, lower-cased headers, body.
pub fn read_request(
    conn: &mut std::net::TcpStream,
) -> (String, String, Vec<(String, String)>, String) {
    let mut buf = Vec::new();
    let mut b = [0u8; 4096];
    let split = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        match conn.read(&mut b) {
            Ok(0) | Err(_) => return (String::new(), String::new(), Vec::new(), String::new()),
            Ok(n) => buf.extend_from_slice(&b[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_owned();
    let target = first.next().unwrap_or("").to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[split + 4..].to_vec();
    while body.len() < len {
        match conn.read(&mut b) {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&b[..n]),
        }
    }
    (
        method,
        target,
        headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

fn respond(conn: &mut std::net::TcpStream, status: u16, body: &str) {
    let _ = write!(
        conn,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// YAML for a registry serving HTTPS with the private CA's server certificate.
pub fn tls_yaml() -> String {
    let p = pki();
    format!(
        "  tls:\n    certificate: {}\n    key: {}\n",
        p.server_cert.display(),
        p.server_key.display()
    )
}

/// An htpasswd file (bcrypt, as distribution requires) for robot / s3cret.
pub fn htpasswd_yaml() -> String {
    let dir = scratch("htpasswd").keep();
    let file = dir.join("htpasswd");
    let out = run(Command::new("htpasswd").args(["-Bbn", USER, PASSWORD]));
    fs::write(&file, out).unwrap();
    format!(
        "auth:\n  htpasswd:\n    realm: test-basic\n    path: {}\n",
        file.display()
    )
}
