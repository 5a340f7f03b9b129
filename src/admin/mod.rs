//! The admin socket: `ls`, `rm`, `gc` and `export` beside a running `serve`.
//!
//! Only one process may open a cache's index (redb's lock), so a command run while `serve`
//! holds it asks that `serve` to do the work instead: `serve` listens on `admin.sock` in the
//! cache directory (mode 0600, and only its own user or root is answered), and a command that
//! finds the socket answering sends its request there. The socket is a file, not a port: nothing
//! on the network can reach it, and Kubernetes reaches it with `kubectl exec`.
//!
//! The exchange is JSON lines: one [`Request`], then [`Frame`]s of output as the work goes
//! (a table row is on the terminal at once) and a last frame saying done or why not. The
//! command runs on `serve`'s blocking pool, on the same cache the requests are served from.
//!
//! This module is the socket and its protocol only: what a request does is the [`Handler`]
//! `serve` gives it (`run.rs`, calling the commands in `airgap`), so neither depends on the
//! other's side.

use std::io::{BufRead as _, BufReader, Read as _, Write};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod console;

pub(crate) use console::{Console, stdio};

use crate::config::Config;
use crate::shutdown::Shutdown;

/// The socket's name in the cache directory.
const SOCKET: &str = "admin.sock";

/// Largest request read.
const MAX_REQUEST: u64 = 1 << 20;

/// A command for the running `serve`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase")]
pub(crate) enum Request {
    Ls,
    Rm {
        images: Vec<String>,
    },
    Gc {
        grace: Duration,
    },
    /// Paths absolute: they are opened by the `serve` process.
    Export {
        output: PathBuf,
        images: Vec<String>,
        all: bool,
        strict: bool,
        exclude_from: Option<PathBuf>,
    },
}

/// What `serve` does with a request: its output on the console, or why it failed.
pub(crate) type Handler =
    Arc<dyn Fn(Request, &mut Console<'_>) -> Result<(), String> + Send + Sync>;

/// Why a command sent to a running `serve` did not succeed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RemoteError {
    /// The command failed there: what `serve` said.
    #[error("{0}")]
    Failed(String),
    #[error("{path} (the admin socket of the `serve` running on this cache): {source}")]
    Socket {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl Request {
    fn name(&self) -> &'static str {
        match self {
            Request::Ls => "ls",
            Request::Rm { .. } => "rm",
            Request::Gc { .. } => "gc",
            Request::Export { .. } => "export",
        }
    }
}

/// One line of the answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Frame {
    /// Text for the command's stdout.
    Out(String),
    /// Text for its stderr.
    Err(String),
    Done,
    /// The command failed: why.
    Failed(String),
}

/// Where the admin socket of a cache is.
pub(crate) fn socket_path(cache_dir: &Path) -> PathBuf {
    cache_dir.join(SOCKET)
}

/// Has the `serve` running on this cache carry out `request`, printing its output here. None
/// if no `serve` answers on the socket (the command then opens the cache itself).
pub(crate) fn remote(config: &Config, request: &Request) -> Option<Result<(), RemoteError>> {
    let path = socket_path(&config.cache.dir);
    let fail = |source| RemoteError::Socket {
        path: path.display().to_string(),
        source,
    };
    let stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return None;
        }
        Err(e) => return Some(Err(fail(e))),
    };
    Some(talk(&stream, request).unwrap_or_else(|e| Err(fail(e))))
}

/// Sends the request and prints the answer. The outer error is the socket's; the inner one is
/// the command's, as `serve` said it.
fn talk(stream: &UnixStream, request: &Request) -> std::io::Result<Result<(), RemoteError>> {
    let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut writer = stream;
    writer.write_all(&line)?;
    for frame in BufReader::new(stream).lines() {
        match serde_json::from_str::<Frame>(&frame?).map_err(std::io::Error::other)? {
            Frame::Out(text) => {
                let mut out = std::io::stdout().lock();
                match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                    // The reader has what it wanted (`entrepot ls | head`): stop quietly.
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(Ok(())),
                    written => written?,
                }
            }
            Frame::Err(text) => eprint!("{text}"),
            Frame::Done => return Ok(Ok(())),
            Frame::Failed(why) => return Ok(Err(RemoteError::Failed(why))),
        }
    }
    Err(std::io::Error::other(
        "serve closed the connection before the command finished",
    ))
}

/// Listens on the cache's admin socket until shutdown. A socket left by an earlier `serve` is
/// replaced (the index's lock says no other `serve` runs on this cache). A socket that cannot
/// be made is a warning: serving goes on without it.
pub(crate) async fn serve(handler: Handler, cache_dir: PathBuf, mut shutdown: Shutdown) {
    let path = socket_path(&cache_dir);
    let _ = std::fs::remove_file(&path);
    let listener = match tokio::net::UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "no admin socket: `ls`, `rm`, `gc` and `export` need serve stopped");
            return;
        }
    };
    let owner = match std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::metadata(&path))
    {
        Ok(m) => m.uid(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "no admin socket: its permissions cannot be set");
            let _ = std::fs::remove_file(&path);
            return;
        }
    };
    tracing::info!(path = %path.display(), "admin socket listening (ls, rm, gc, export)");
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.recv() => break,
        };
        let uid = stream.peer_cred().map(|c| c.uid()).ok();
        if !uid.is_some_and(|u| u == owner || u == 0) {
            tracing::warn!(?uid, "admin socket: refused a process of another user");
            continue;
        }
        let Ok(stream) = stream.into_std().and_then(|s| {
            s.set_nonblocking(false)?;
            Ok(s)
        }) else {
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(crate::blocking::off_the_workers(move || {
            answer(&*handler, &stream)
        }));
    }
    let _ = std::fs::remove_file(&path);
}

/// Reads one request, carries it out with its output framed onto the socket, and says how it
/// ended.
fn answer(
    handler: &(dyn Fn(Request, &mut Console<'_>) -> Result<(), String> + Send + Sync),
    stream: &UnixStream,
) {
    let mut line = String::new();
    if BufReader::new(stream.take(MAX_REQUEST))
        .read_line(&mut line)
        .is_err()
    {
        return;
    }
    let request: Request = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => {
            send(stream, &Frame::Failed(format!("not an admin request: {e}")));
            return;
        }
    };
    let command = request.name();
    tracing::info!(command, "admin command");
    let mut out = Framed {
        stream,
        frame: Frame::Out,
    };
    let mut err = Framed {
        stream,
        frame: Frame::Err,
    };
    let result = {
        let mut console = Console::new(&mut out, &mut err, false);
        handler(request, &mut console)
    };
    match result {
        Ok(()) => send(stream, &Frame::Done),
        Err(e) => {
            tracing::warn!(command, error = %e, "admin command failed");
            send(stream, &Frame::Failed(e));
        }
    }
}

fn send(mut stream: &UnixStream, frame: &Frame) {
    let mut line = serde_json::to_vec(frame).expect("frames serialize");
    line.push(b'\n');
    let _ = stream.write_all(&line);
}

/// A writer that sends what it is given as frames of one kind.
struct Framed<'a> {
    stream: &'a UnixStream,
    frame: fn(String) -> Frame,
}

impl Write for Framed<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let frame = (self.frame)(String::from_utf8_lossy(buf).into_owned());
        let mut line = serde_json::to_vec(&frame).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut s = self.stream;
        s.write_all(&line)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
