//! htpasswd files with bcrypt entries (`htpasswd -B`): `name:$2y$...`, one per line.

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
}

/// Reads an htpasswd file. Anything but bcrypt entries is refused, naming the line: MD5 (`$apr1$`)
/// and SHA-1 (`{SHA}`) entries are too weak to keep.
pub(crate) fn load_htpasswd(path: &Path) -> Result<Users, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn parse(text: &str) -> Result<Users, String> {
    let mut users = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, hash)) = line.split_once(':') else {
            return Err(format!("line {}: not name:hash", i + 1));
        };
        let bcrypt = ["$2a$", "$2b$", "$2x$", "$2y$"]
            .iter()
            .any(|p| hash.starts_with(p));
        if name.is_empty() || !bcrypt {
            return Err(format!(
                "line {}: user {name:?}: only bcrypt entries are accepted (htpasswd -B)",
                i + 1
            ));
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
        assert!(parse("old:$apr1$xyz$abc").unwrap_err().contains("line 1"));
        assert!(parse("sha:{SHA}abc=").is_err());
        assert!(parse("nocolon").is_err());
    }
}
