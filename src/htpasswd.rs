//! htpasswd files with bcrypt entries (`htpasswd -B`): `name:$2y$...`, one per line.
//!
//! A leaf: the configuration checks the file at start-up and `auth/` reads it again whenever it
//! changes, both through [`load_htpasswd`].

use std::collections::HashMap;
use std::path::Path;

/// User names and their bcrypt hashes.
#[derive(Debug, Default)]
pub(crate) struct Users(HashMap<String, String>);

impl Users {
    pub(crate) fn hash(&self, user: &str) -> Option<&str> {
        self.0.get(user).map(String::as_str)
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// The highest bcrypt cost among the entries (`$2y$12$...` is 12), if there are any.
    pub(crate) fn strongest_cost(&self) -> Option<u32> {
        self.0
            .values()
            .filter_map(|h| h.get(4..6)?.parse().ok())
            .max()
    }
}

/// Reads an htpasswd file. Anything but bcrypt entries is refused, naming the line: MD5 (`$apr1$`)
/// and SHA-1 (`{SHA}`) entries are too weak to keep.
pub(crate) fn load_htpasswd(path: &Path) -> Result<Users, HtpasswdError> {
    let text = std::fs::read_to_string(path).map_err(|source| HtpasswdError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_htpasswd(path, &text)
}

/// Parses the text of the htpasswd file at `path` (which names it in errors).
pub(crate) fn parse_htpasswd(path: &Path, text: &str) -> Result<Users, HtpasswdError> {
    parse(text).map_err(|source| HtpasswdError::Line {
        path: path.display().to_string(),
        source,
    })
}

/// An htpasswd file that cannot be used: unreadable, or a line that is not a bcrypt entry.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HtpasswdError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Line {
        path: String,
        #[source]
        source: LineError,
    },
}

/// A line of an htpasswd file that is not a bcrypt entry.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LineError {
    #[error("line {0}: not name:hash")]
    NotNameHash(usize),
    #[error("line {line}: user {user:?}: only bcrypt entries are accepted (htpasswd -B)")]
    NotBcrypt { line: usize, user: String },
}

#[cfg(test)]
impl LineError {
    /// Whether the message says `text` (as the tests ask of it).
    fn contains(&self, text: &str) -> bool {
        self.to_string().contains(text)
    }
}

fn parse(text: &str) -> Result<Users, LineError> {
    let mut users = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, hash)) = line.split_once(':') else {
            return Err(LineError::NotNameHash(i + 1));
        };
        let bcrypt = ["$2a$", "$2b$", "$2x$", "$2y$"]
            .iter()
            .any(|p| hash.starts_with(p));
        if name.is_empty() || !bcrypt {
            return Err(LineError::NotBcrypt {
                line: i + 1,
                user: name.to_owned(),
            });
        }
        users.insert(name.to_owned(), hash.to_owned());
    }
    Ok(Users(users))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bcrypt_entries() {
        let u =
            parse("# comment\nci:$2y$05$abcdefghijklmnopqrstuu5sPQ7G9xkQ4cJ2hA1FzF8qO9W1eX6\n\n")
                .unwrap();
        assert_eq!(u.len(), 1);
        assert!(u.hash("ci").is_some());
        assert_eq!(u.strongest_cost(), Some(5));
        let two = parse("a:$2y$05$x\nb:$2b$12$y\n").unwrap();
        assert_eq!(two.strongest_cost(), Some(12));
        assert_eq!(Users::default().strongest_cost(), None);
        assert!(parse("old:$apr1$xyz$abc").unwrap_err().contains("line 1"));
        assert!(parse("sha:{SHA}abc=").is_err());
        assert!(parse("nocolon").is_err());
    }
}
