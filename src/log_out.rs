//! Where `serve` writes its log lines: stderr, a batch at a time.
//!
//! A line per request written on its own cost a `write` system call per request: a fifth of a
//! warm manifest GET (measured with `scripts/bench.sh manifests`). Lines gather in one buffer and
//! go out in one `write` when a runtime worker runs out of work (the runtime's park hook calls
//! [`flush`]), when [`FULL`] bytes have gathered, and every [`LATEST`] at the latest (a thread of
//! its own calls [`flush`]). So a mirror that has nothing to do has written every line; under load
//! a line waits at most [`LATEST`]; a `kill -9` loses at most the lines of the last [`LATEST`].
//! Lines stay whole and in the order they were logged.
//!
//! Also how a value from outside (a certificate's name, an error message) is written into a
//! line so it cannot forge fields or lines: [`printable`].

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, Once, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// A batch this large goes out at once.
const FULL: usize = 16 << 10;
/// No line waits longer than this.
const LATEST: Duration = Duration::from_millis(50);

static BATCH: Mutex<Vec<u8>> = Mutex::new(Vec::new());
/// Set while the batch holds a line, so a worker's park costs one atomic load when it is empty.
static PENDING: AtomicBool = AtomicBool::new(false);
/// The thread that flushes every [`LATEST`] while lines wait.
static TICKER: OnceLock<Thread> = OnceLock::new();

/// The log writer for `serve`: stderr, batched. Starts the thread that flushes every [`LATEST`].
pub struct BatchedStderr;

impl BatchedStderr {
    pub fn start() -> Self {
        static STARTED: Once = Once::new();
        STARTED.call_once(|| {
            // It sleeps (parked) while the batch is empty, so an idle mirror has no timer.
            let spawned = std::thread::Builder::new()
                .name("log-flush".to_owned())
                .spawn(|| {
                    loop {
                        if PENDING.load(Ordering::Acquire) {
                            #[allow(
                                clippy::disallowed_methods,
                                reason = "its own thread, never a runtime worker"
                            )]
                            std::thread::sleep(LATEST);
                            flush();
                        } else {
                            std::thread::park();
                        }
                    }
                });
            match spawned {
                Ok(handle) => {
                    let _ = TICKER.set(handle.thread().clone());
                }
                // Without the thread, lines still go out when a worker parks or the batch fills.
                Err(e) => eprintln!("entrepot: log lines may wait for the next request: {e}"),
            }
        });
        BatchedStderr
    }
}

impl<'a> MakeWriter<'a> for BatchedStderr {
    type Writer = Batch;

    fn make_writer(&'a self) -> Batch {
        Batch
    }
}

/// One log line's way into the batch (the fmt layer writes each line with one `write_all`).
pub struct Batch;

impl Write for Batch {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.write_all(bytes)?;
        Ok(bytes.len())
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut batch = lock();
        batch.extend_from_slice(bytes);
        if batch.len() >= FULL {
            write_out(&mut batch);
        } else if !PENDING.swap(true, Ordering::AcqRel)
            && let Some(ticker) = TICKER.get()
        {
            ticker.unpark();
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        flush();
        Ok(())
    }
}

/// Writes what the batch holds to stderr.
pub fn flush() {
    if PENDING.load(Ordering::Acquire) {
        write_out(&mut lock());
    }
}

fn lock() -> MutexGuard<'static, Vec<u8>> {
    // A panic while the lock was held left at worst a partial batch: still worth writing.
    BATCH.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes the batch out under its lock, so batches keep their order.
fn write_out(batch: &mut Vec<u8>) {
    PENDING.store(false, Ordering::Release);
    if batch.is_empty() {
        return;
    }
    // Nowhere to report a failed log write; the batch is dropped rather than grown without end.
    let _ = io::stderr().lock().write_all(batch);
    batch.clear();
}

/// Set when lines are JSON objects (which escape every value themselves).
static JSON: AtomicBool = AtomicBool::new(false);

/// Says the log is JSON, where values need no quoting of ours.
pub fn log_json(on: bool) {
    JSON.store(on, Ordering::Relaxed);
}

/// `s` as a text log line can show it: as it is when plain (letters, digits, `.-_@:/+`), else
/// quoted with escapes, so a name from a client certificate (`ci user=root`, one with a
/// newline) or an error message cannot forge fields or lines. In JSON lines, as it is.
pub(crate) fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_@:/+".contains(c));
    if plain || JSON.load(Ordering::Relaxed) {
        s.into()
    } else {
        format!("{s:?}").into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_forge_log_fields_are_quoted() {
        assert_eq!(printable("ci"), "ci");
        assert_eq!(
            printable("svc.deploy@example.com"),
            "svc.deploy@example.com"
        );
        assert_eq!(printable("ci user=root"), "\"ci user=root\"");
        assert_eq!(printable("a\nb"), "\"a\\nb\"");
        assert_eq!(printable("\u{1b}[31m"), "\"\\u{1b}[31m\"");
    }

    #[test]
    fn a_line_waits_in_the_batch_until_flushed() {
        let before = lock().len();
        Batch.write_all(b"one line\n").unwrap();
        assert_eq!(lock().len(), before + 9);
        assert!(PENDING.load(Ordering::Acquire));
        flush();
        assert!(lock().is_empty());
        assert!(!PENDING.load(Ordering::Acquire));
    }
}
