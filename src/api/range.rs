//! The `Range` header for blobs: `bytes=N-`, `bytes=N-M` and `bytes=-S`.
//!
//! dockerd, containerd and skopeo resume with `bytes=N-`; a 200 at an offset breaks them, so a
//! satisfiable range always gets a 206. Multi-range requests and anything malformed are refused
//! with 416 rather than guessed at.

/// A parsed, not yet resolved, single byte range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ByteRange {
    /// `bytes=N-` or `bytes=N-M` (M inclusive).
    From { start: u64, end: Option<u64> },
    /// `bytes=-S`: the last S bytes.
    Suffix(u64),
}

/// A Range header we will not serve (malformed, multi-range, or absurd).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct RangeError;

/// Parses a Range header value.
pub(super) fn parse(value: &str) -> Result<ByteRange, RangeError> {
    let spec = value.trim().strip_prefix("bytes=").ok_or(RangeError)?;
    if spec.contains(',') {
        return Err(RangeError);
    }
    let (a, b) = spec.trim().split_once('-').ok_or(RangeError)?;
    let num = |s: &str| -> Result<u64, RangeError> {
        if s.is_empty() || s.len() > 19 || !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(RangeError);
        }
        s.parse().map_err(|_| RangeError)
    };
    let (a, b) = (a.trim(), b.trim());
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Err(RangeError),
        (true, false) => match num(b)? {
            0 => Err(RangeError),
            s => Ok(ByteRange::Suffix(s)),
        },
        (false, true) => Ok(ByteRange::From {
            start: num(a)?,
            end: None,
        }),
        (false, false) => {
            let (start, end) = (num(a)?, num(b)?);
            if end < start {
                return Err(RangeError);
            }
            Ok(ByteRange::From {
                start,
                end: Some(end),
            })
        }
    }
}

impl ByteRange {
    /// The half-open byte span `[start, end)` within a blob of `size` bytes, or `None` if the
    /// range cannot be satisfied (answer 416 with `Content-Range: bytes */size`).
    pub(super) fn resolve(self, size: u64) -> Option<(u64, u64)> {
        match self {
            ByteRange::From { start, end } => {
                if start >= size {
                    return None;
                }
                let end = end.map_or(size, |e| e.saturating_add(1).min(size));
                Some((start, end))
            }
            ByteRange::Suffix(n) => {
                if size == 0 {
                    return None;
                }
                Some((size - n.min(size), size))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(
            parse("bytes=10-"),
            Ok(ByteRange::From {
                start: 10,
                end: None
            })
        );
        assert_eq!(
            parse("bytes=0-99"),
            Ok(ByteRange::From {
                start: 0,
                end: Some(99)
            })
        );
        assert_eq!(parse("bytes=-5"), Ok(ByteRange::Suffix(5)));
        for bad in [
            "",
            "bytes=",
            "bytes=-",
            "bytes=5-1",
            "bytes=a-",
            "bytes=0-1,3-4",
            "items=0-",
            "bytes=-0",
            "bytes=99999999999999999999-",
            "bytes=+1-",
        ] {
            assert_eq!(parse(bad), Err(RangeError), "{bad}");
        }
    }

    #[test]
    fn resolves() {
        assert_eq!(parse("bytes=10-").unwrap().resolve(100), Some((10, 100)));
        assert_eq!(parse("bytes=100-").unwrap().resolve(100), None);
        assert_eq!(parse("bytes=0-1000").unwrap().resolve(100), Some((0, 100)));
        assert_eq!(parse("bytes=-10").unwrap().resolve(100), Some((90, 100)));
        assert_eq!(parse("bytes=-1000").unwrap().resolve(100), Some((0, 100)));
        assert_eq!(parse("bytes=0-").unwrap().resolve(0), None);
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any header either is refused or resolves inside the blob.
            #[test]
            fn ranges_stay_inside_the_blob(s in "\\PC{0,40}", size in 0u64..u64::MAX / 2) {
                if let Ok(r) = parse(&s)
                    && let Some((a, b)) = r.resolve(size)
                {
                    prop_assert!(a < b && b <= size);
                }
            }

            #[test]
            fn numeric_ranges(a in 0u64..1_000_000, len in 0u64..1_000_000, size in 1u64..2_000_000) {
                let r = parse(&format!("bytes={a}-{}", a + len)).unwrap();
                match r.resolve(size) {
                    Some((s, e)) => prop_assert!(s == a && e == (a + len + 1).min(size)),
                    None => prop_assert!(a >= size),
                }
            }
        }
    }
}
