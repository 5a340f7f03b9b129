//! The htpasswd users, and checking a password against them.
//!
//! bcrypt is slow on purpose, so a verified credential is remembered for a few minutes, keyed by
//! a SHA-256 of it (never the password itself), and a pull of many layers costs one check.
//! Checks run on the blocking pool, at most [`check_slots`] at once, so clients that are not
//! signed in cannot take every core. A user name that is not in the file is checked against a
//! hash as costly as the file's strongest entry, so wrong passwords for known and unknown names
//! take the same time.
//!
//! The file is read again when its content changes (compared by SHA-256, so a rewrite that keeps
//! the mtime counts), and a file that is gone leaves nobody signed in. Each reading has a
//! generation: a check that began under an older one is redone, and its answer is never
//! remembered, so a user removed from the file is refused from the moment the reload lands.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use crate::blocking::off_the_workers;
use crate::htpasswd::{HtpasswdError, Users, parse_htpasswd};

/// How long a verified credential is remembered.
const REMEMBER_FOR: Duration = Duration::from_secs(300);
/// The dummy hash's cost when the file has no entries.
const EMPTY_FILE_COST: u32 = 10;

/// One reading of the htpasswd file.
struct Reading {
    users: Arc<Users>,
    /// What unknown user names are checked against.
    dummy: Arc<String>,
    generation: u64,
    /// SHA-256 of the file's bytes (`None`: there is no file).
    fingerprint: Option<[u8; 32]>,
}

pub(super) struct Passwords {
    path: Option<PathBuf>,
    current: RwLock<Reading>,
    verified: moka::sync::Cache<[u8; 32], String>,
    checks: tokio::sync::Semaphore,
    #[cfg(test)]
    peak: std::sync::atomic::AtomicUsize,
    #[cfg(test)]
    running: Arc<std::sync::atomic::AtomicUsize>,
}

/// How many bcrypt checks may run at once: all cores but one.
pub(super) fn check_slots() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get().saturating_sub(1))
        .max(1)
}

/// What changed when the file was looked at.
pub(super) enum Reload {
    Unchanged,
    Loaded(usize),
    Gone,
    Refused(HtpasswdError),
}

/// A bcrypt hash at `cost`: only its cost matters, as a match against it is never a sign-in.
fn dummy_hash(cost: u32) -> String {
    bcrypt::hash(Sha256::digest(b"nobody").as_slice(), cost).unwrap_or_default()
}

fn reading(users: Users, generation: u64, fingerprint: Option<[u8; 32]>) -> Reading {
    let cost = users.strongest_cost().unwrap_or(EMPTY_FILE_COST);
    Reading {
        users: Arc::new(users),
        dummy: Arc::new(dummy_hash(cost)),
        generation,
        fingerprint,
    }
}

/// The file's bytes and their SHA-256, or `None` when there is no file.
fn read(path: &Path) -> Result<Option<(String, [u8; 32])>, HtpasswdError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let sum = Sha256::digest(text.as_bytes()).into();
            Ok(Some((text, sum)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(HtpasswdError::Read {
            path: path.display().to_string(),
            source,
        }),
    }
}

impl Passwords {
    /// Reads the file at start-up: it must be there and load.
    pub(super) fn new(path: Option<PathBuf>) -> Result<Passwords, HtpasswdError> {
        let first = match &path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| HtpasswdError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                let sum = Sha256::digest(text.as_bytes()).into();
                reading(parse_htpasswd(p, &text)?, 0, Some(sum))
            }
            None => reading(Users::default(), 0, None),
        };
        Ok(Passwords {
            path,
            current: RwLock::new(first),
            verified: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(REMEMBER_FOR)
                .build(),
            checks: tokio::sync::Semaphore::new(check_slots()),
            #[cfg(test)]
            peak: Default::default(),
            #[cfg(test)]
            running: Default::default(),
        })
    }

    pub(super) fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn key(user: &str, password: &str) -> [u8; 32] {
        Sha256::digest(format!("{user}\0{password}")).into()
    }

    /// The user, if this exact credential was verified under the current reading.
    pub(super) fn remembered(&self, user: &str, password: &str) -> Option<String> {
        self.verified.get(&Self::key(user, password))
    }

    /// The user, if the password is theirs, checked with bcrypt off the workers.
    pub(super) async fn verify(&self, user: &str, password: &str) -> Option<String> {
        let key = Self::key(user, password);
        // A reload during the check makes it stale: check again against the new reading.
        for _ in 0..3 {
            let (users, dummy, generation) = {
                let r = self.current.read().unwrap_or_else(|e| e.into_inner());
                (r.users.clone(), r.dummy.clone(), r.generation)
            };
            let ok = self.check(users, dummy, user, password).await;
            let now = self.current.read().unwrap_or_else(|e| e.into_inner());
            if now.generation != generation {
                continue;
            }
            if ok {
                // Under the read lock: a reload (which takes the write lock, then forgets every
                // remembered credential) cannot come between the check and this.
                self.verified.insert(key, user.to_owned());
            }
            return ok.then(|| user.to_owned());
        }
        None
    }

    async fn check(&self, users: Arc<Users>, dummy: Arc<String>, user: &str, pw: &str) -> bool {
        let Ok(_slot) = self.checks.acquire().await else {
            return false;
        };
        #[cfg(test)]
        let running = {
            use std::sync::atomic::Ordering::SeqCst;
            let n = self.running.fetch_add(1, SeqCst) + 1;
            self.peak.fetch_max(n, SeqCst);
            self.running.clone()
        };
        let (u, p) = (user.to_owned(), pw.to_owned());
        let ok = off_the_workers(move || match users.hash(&u) {
            Some(hash) => bcrypt::verify(&p, hash).unwrap_or(false),
            None => {
                let _ = bcrypt::verify(&p, &dummy);
                false
            }
        })
        .await;
        #[cfg(test)]
        running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        ok
    }

    /// Looks at the file (blocking: call it off the workers) and takes a new reading when its
    /// content changed. A file that no longer loads keeps the previous users.
    pub(super) fn reload(&self) -> Reload {
        let Some(path) = &self.path else {
            return Reload::Unchanged;
        };
        let seen = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .fingerprint;
        let (users, fingerprint) = match read(path) {
            Ok(Some((_, sum))) if Some(sum) == seen => return Reload::Unchanged,
            Ok(None) if seen.is_none() => return Reload::Unchanged,
            Ok(Some((text, sum))) => match parse_htpasswd(path, &text) {
                Ok(users) => (users, Some(sum)),
                Err(e) => {
                    // Remembered as seen, so the warning is said once per bad content.
                    self.current
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .fingerprint = Some(sum);
                    return Reload::Refused(e);
                }
            },
            Ok(None) => (Users::default(), None),
            Err(e) => return Reload::Refused(e),
        };
        let n = users.len();
        let generation = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .generation
            + 1;
        let next = reading(users, generation, fingerprint);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = next;
        self.verified.invalidate_all();
        if fingerprint.is_none() {
            Reload::Gone
        } else {
            Reload::Loaded(n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, entries: &[(&str, &str, u32)]) -> PathBuf {
        let path = dir.join("htpasswd");
        let text: String = entries
            .iter()
            .map(|(u, p, cost)| format!("{u}:{}\n", bcrypt::hash(p, *cost).unwrap()))
            .collect();
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn unknown_names_cost_what_the_strongest_entry_costs() {
        let dir = tempfile::tempdir().unwrap();
        let p = Passwords::new(Some(file(dir.path(), &[("a", "x", 4), ("b", "y", 7)]))).unwrap();
        let dummy = p.current.read().unwrap().dummy.clone();
        assert!(dummy.starts_with("$2b$07$"), "{dummy}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn checks_are_bounded_and_a_removed_user_is_refused_even_mid_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(dir.path(), &[("ci", "pw", 11)]);
        let p = Arc::new(Passwords::new(Some(path.clone())).unwrap());
        let guesses: Vec<_> = (0..6)
            .map(|i| {
                let p = p.clone();
                tokio::spawn(async move { p.verify("ci", &format!("guess{i}")).await })
            })
            .collect();
        for g in guesses {
            assert_eq!(g.await.unwrap(), None);
        }
        let peak = p.peak.load(std::sync::atomic::Ordering::SeqCst);
        assert!(peak <= check_slots(), "{peak} checks at once");

        // The user is removed while a check of the right password runs: the answer is not
        // used, nor remembered.
        let checking = {
            let p = p.clone();
            tokio::spawn(async move { p.verify("ci", "pw").await })
        };
        while p.running.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        file(dir.path(), &[("other", "x", 4)]);
        assert!(matches!(p.reload(), Reload::Loaded(1)));
        assert_eq!(checking.await.unwrap(), None);
        assert_eq!(p.remembered("ci", "pw"), None);

        // A rewrite with the same mtime is seen (by content), and a deleted file signs all out.
        let path = file(dir.path(), &[("ci", "pw", 4)]);
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        assert!(matches!(p.reload(), Reload::Loaded(1)));
        assert_eq!(p.verify("ci", "pw").await.as_deref(), Some("ci"));
        file(dir.path(), &[("ci", "other", 4)]);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert!(matches!(p.reload(), Reload::Loaded(1)));
        assert_eq!(p.remembered("ci", "pw"), None);
        assert_eq!(p.verify("ci", "pw").await, None);
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(p.reload(), Reload::Gone));
        assert_eq!(p.verify("ci", "other").await, None);
        assert!(matches!(p.reload(), Reload::Unchanged));
    }
}
