//! Repository patterns for an upstream's allow-list: `library/*` (one component), `myorg/**`
//! (any depth), `a/b` (exactly that).

/// A repository allow-list entry, checked at start-up to hold only name characters, `*` and `**`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RepoPattern(String);

impl RepoPattern {
    pub(crate) fn parse(s: &str) -> Option<RepoPattern> {
        let ok = !s.is_empty()
            && s.split('/').all(|seg| {
                !seg.is_empty()
                    && seg.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-*".contains(&b)
                    })
                    && (seg == "**" || !seg.contains("**"))
            });
        ok.then(|| RepoPattern(s.to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn matches(&self, repo: &str) -> bool {
        let pat: Vec<&str> = self.0.split('/').collect();
        let name: Vec<&str> = repo.split('/').collect();
        match_segments(&pat, &name)
    }
}

fn match_segments(pat: &[&str], name: &[&str]) -> bool {
    match (pat.first(), name.first()) {
        (None, None) => true,
        (Some(&"**"), _) => (0..=name.len()).any(|k| match_segments(&pat[1..], &name[k..])),
        (Some(p), Some(n)) => {
            glob(p.as_bytes(), n.as_bytes()) && match_segments(&pat[1..], &name[1..])
        }
        _ => false,
    }
}

/// `*` matches any run of characters within one path component.
fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') => (0..=s.len()).any(|k| glob(&p[1..], &s[k..])),
        Some(c) => s.first() == Some(c) && glob(&p[1..], &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_patterns() {
        let p = |s: &str| RepoPattern::parse(s).unwrap();
        assert!(p("library/*").matches("library/busybox"));
        assert!(!p("library/*").matches("library/a/b"));
        assert!(p("myorg/**").matches("myorg/a/b/c"));
        assert!(p("myorg/**").matches("myorg/a"));
        assert!(!p("myorg/**").matches("other/a"));
        assert!(p("team/app-*").matches("team/app-web"));
        assert!(RepoPattern::parse("a//b").is_none());
        assert!(RepoPattern::parse("A/b").is_none());
    }
}
