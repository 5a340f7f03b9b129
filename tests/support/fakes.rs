//! Stand-ins for the misbehaviour no real registry can be made to show on cue: a slow or
//! cutting TCP proxy, and a scripted HTTP upstream. Each says what real behaviour it imitates.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// A TCP proxy in front of an upstream that passes its answers back slowly, or cuts every
/// connection after some bytes: a slow registry, or one whose connection dies mid-body.
pub struct Proxy {
    pub port: u16,
    /// Bytes per second back to the client (0: unlimited); may be changed while it runs.
    pub rate: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Proxy {
    /// Cuts every connection after `limit` bytes have gone back to the client.
    pub fn cutting(upstream_port: u16, limit: u64) -> Proxy {
        Self::start(upstream_port, limit, 0)
    }

    /// Passes answers back at `bytes_per_sec`.
    pub fn slow(upstream_port: u16, bytes_per_sec: u64) -> Proxy {
        Self::start(upstream_port, u64::MAX, bytes_per_sec)
    }

    fn start(upstream_port: u16, limit: u64, bytes_per_sec: u64) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let rate = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(bytes_per_sec));
        let r = rate.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { return };
                let rate = r.clone();
                std::thread::spawn(move || {
                    let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
                        return;
                    };
                    let (mut c2, mut u2) = (client.try_clone().unwrap(), up.try_clone().unwrap());
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut c2, &mut u2);
                    });
                    let mut sent = 0u64;
                    let mut buf = vec![0u8; 16 * 1024];
                    while sent < limit {
                        let n = match up.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n.min((limit - sent).min(usize::MAX as u64) as usize),
                        };
                        if client.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        sent += n as u64;
                        let bps = rate.load(Ordering::Relaxed);
                        if bps > 0 {
                            std::thread::sleep(Duration::from_secs_f64(n as f64 / bps as f64));
                        }
                    }
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    let _ = up.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Proxy { port, rate }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// One request as a [`FakeUpstream`] saw it.
#[derive(Clone, Debug)]
pub struct FakeRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

/// One scripted answer.
pub struct FakeAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Declared `Content-Length`, when it should lie about the body.
    pub declared_len: Option<usize>,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Send a chunked body that never ends (until the reader hangs up), instead of `body`.
    pub endless: bool,
}

impl FakeAnswer {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> FakeAnswer {
        FakeAnswer {
            status,
            headers: Vec::new(),
            body: body.into(),
            declared_len: None,
            delay: Duration::ZERO,
            endless: false,
        }
    }

    pub fn header(mut self, k: &str, v: &str) -> FakeAnswer {
        self.headers.push((k.to_owned(), v.to_owned()));
        self
    }
}

/// A scripted HTTP upstream, for the misbehaviour no real registry can be made to show (HTML
/// pages, lying lengths, redirect loops, 5xx bursts, 429s). Each connection serves one request.
pub struct FakeUpstream {
    pub port: u16,
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<FakeRequest>>>,
    pub max_in_flight: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl FakeUpstream {
    pub fn start<F>(handler: F) -> FakeUpstream
    where
        F: Fn(&FakeRequest) -> FakeAnswer + Send + Sync + 'static,
    {
        Self::start_on("127.0.0.1", handler)
    }

    /// On another loopback address (`127.0.0.2`: another host, with no name to resolve).
    pub fn start_on<F>(ip: &str, handler: F) -> FakeUpstream
    where
        F: Fn(&FakeRequest) -> FakeAnswer + Send + Sync + 'static,
    {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = TcpListener::bind((ip, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests: Arc<Mutex<Vec<FakeRequest>>> = Arc::default();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let max_in_flight = Arc::new(AtomicUsize::new(0));
        let handler = Arc::new(handler);
        let (reqs, maxf) = (requests.clone(), max_in_flight.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let (handler, reqs, in_flight, maxf) = (
                    handler.clone(),
                    reqs.clone(),
                    in_flight.clone(),
                    maxf.clone(),
                );
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut b = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut b) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&b[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let mut lines = text.split("\r\n");
                    let mut first = lines.next().unwrap_or("").split(' ');
                    let req = FakeRequest {
                        method: first.next().unwrap_or("").to_owned(),
                        path: first.next().unwrap_or("").to_owned(),
                        headers: lines
                            .filter_map(|l| l.split_once(':'))
                            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                            .collect(),
                    };
                    reqs.lock().unwrap().push(req.clone());
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    maxf.fetch_max(now, Ordering::SeqCst);
                    let a = handler(&req);
                    std::thread::sleep(a.delay);
                    // No longer counted once it answers: a client that has the whole answer
                    // may send its next request before this thread runs again, and counting
                    // until the last byte was written took those two for concurrent ones.
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    let mut head = if a.endless {
                        format!(
                            "HTTP/1.1 {} X\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n",
                            a.status
                        )
                    } else {
                        format!(
                            "HTTP/1.1 {} X\r\nConnection: close\r\nContent-Length: {}\r\n",
                            a.status,
                            a.declared_len.unwrap_or(a.body.len())
                        )
                    };
                    for (k, v) in &a.headers {
                        head.push_str(&format!("{k}: {v}\r\n"));
                    }
                    head.push_str("\r\n");
                    let _ = conn.write_all(head.as_bytes());
                    if req.method != "HEAD" && a.endless {
                        let chunk = vec![b'x'; 64 << 10];
                        let framed =
                            [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
                        while conn.write_all(&framed).is_ok() {}
                    } else if req.method != "HEAD" {
                        let _ = conn.write_all(&a.body);
                    }
                    let _ = conn.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        FakeUpstream {
            port,
            requests,
            max_in_flight,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Requests whose path contains `needle`, with their method.
    pub fn seen(&self, method: &str, needle: &str) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == method && r.path.contains(needle))
            .count()
    }
}
