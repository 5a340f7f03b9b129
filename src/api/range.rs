//! The `Range` header for blobs: `bytes=N-`, `bytes=N-M` and `bytes=-S`, one or many.
//!
//! dockerd, containerd and skopeo resume with `bytes=N-`; a 200 at an offset breaks them, so a
//! satisfiable range always gets a 206. Many ranges (`bytes=0-99,1000-1999`, as podman's partial
//! pulls of zstd:chunked images send) get a `multipart/byteranges` 206 with one part per range,
//! sorted; overlapping ones are merged (as RFC 9110 §14.2 lets a server: no byte is sent twice,
//! so `bytes=0-,0-,...` cannot multiply a blob), and unsatisfiable ones dropped (none left: 416).
//! Adjacent ranges stay apart: containers/image counts the parts and gives up on a partial pull
//! when there are fewer than it asked for ("invalid number of chunks returned by the server"),
//! which podman 4.3 met here with a file's chunks back to back. More than [`MAX_RANGES`], or
//! anything malformed, is refused with 416 rather than guessed at (never a 200 with the whole
//! blob, which makes such a client download twice).

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

/// The most ranges one request may ask for: containers/storage asks for up to 1,024 chunks at once
/// (its `maxNumberMissingChunks`).
pub(super) const MAX_RANGES: usize = 1024;

/// Parses a Range header value: one range or several.
pub(super) fn parse(value: &str) -> Result<Vec<ByteRange>, RangeError> {
    let spec = value.trim().strip_prefix("bytes=").ok_or(RangeError)?;
    let ranges = spec
        .split(',')
        .map(parse_one)
        .collect::<Result<Vec<_>, _>>()?;
    if ranges.len() > MAX_RANGES {
        return Err(RangeError);
    }
    Ok(ranges)
}

/// The spans `[start, end)` to send for `ranges` in a blob of `size` bytes: the satisfiable
/// ones, sorted, overlapping ones merged (adjacent ones stay apart: one part per range asked).
/// Empty: nothing can be satisfied (416).
pub(super) fn resolve_all(ranges: &[ByteRange], size: u64) -> Vec<(u64, u64)> {
    let mut spans: Vec<(u64, u64)> = ranges.iter().filter_map(|r| r.resolve(size)).collect();
    spans.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(spans.len());
    for (s, e) in spans {
        match merged.last_mut() {
            Some(last) if s < last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    merged
}

/// One `N-M`, `N-` or `-S`.
fn parse_one(spec: &str) -> Result<ByteRange, RangeError> {
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

    /// One range, parsed alone.
    fn one(s: &str) -> Result<ByteRange, RangeError> {
        parse(s).map(|v| {
            assert_eq!(v.len(), 1);
            v[0]
        })
    }

    #[test]
    fn parses() {
        assert_eq!(
            one("bytes=10-"),
            Ok(ByteRange::From {
                start: 10,
                end: None
            })
        );
        assert_eq!(
            one("bytes=0-99"),
            Ok(ByteRange::From {
                start: 0,
                end: Some(99)
            })
        );
        assert_eq!(one("bytes=-5"), Ok(ByteRange::Suffix(5)));
        assert_eq!(parse("bytes=0-1, 3-4,-2").map(|v| v.len()), Ok(3));
        let many = format!("bytes={}", vec!["0-1"; MAX_RANGES + 1].join(","));
        assert_eq!(parse(&many), Err(RangeError));
        for bad in [
            "",
            "bytes=",
            "bytes=-",
            "bytes=5-1",
            "bytes=a-",
            "bytes=0-1,",
            "bytes=0-1,x",
            "items=0-",
            "bytes=-0",
            "bytes=99999999999999999999-",
            "bytes=+1-",
        ] {
            assert_eq!(parse(bad), Err(RangeError), "{bad}");
        }
    }

    #[test]
    fn many_ranges_are_sorted_merged_and_the_unsatisfiable_dropped() {
        let r = parse("bytes=50-59,0-9,5-14,15-19,200-,-5").unwrap();
        assert_eq!(
            resolve_all(&r, 100),
            vec![(0, 15), (15, 20), (50, 60), (95, 100)]
        );
        // A zstd:chunked file's chunks back to back: one part each, as containers/image counts.
        let r = parse("bytes=0-9,10-19,20-29").unwrap();
        assert_eq!(resolve_all(&r, 100), vec![(0, 10), (10, 20), (20, 30)]);
        let whole = format!("bytes={}", vec!["0-"; MAX_RANGES].join(","));
        assert_eq!(resolve_all(&parse(&whole).unwrap(), 100), vec![(0, 100)]);
        assert!(resolve_all(&parse("bytes=100-,200-300").unwrap(), 100).is_empty());
    }

    #[test]
    fn resolves() {
        assert_eq!(one("bytes=10-").unwrap().resolve(100), Some((10, 100)));
        assert_eq!(one("bytes=100-").unwrap().resolve(100), None);
        assert_eq!(one("bytes=0-1000").unwrap().resolve(100), Some((0, 100)));
        assert_eq!(one("bytes=-10").unwrap().resolve(100), Some((90, 100)));
        assert_eq!(one("bytes=-1000").unwrap().resolve(100), Some((0, 100)));
        assert_eq!(one("bytes=0-").unwrap().resolve(0), None);
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any header either is refused or resolves inside the blob.
            #[test]
            fn ranges_stay_inside_the_blob(s in "\\PC{0,40}", size in 0u64..u64::MAX / 2) {
                if let Ok(r) = parse(&s) {
                    let spans = resolve_all(&r, size);
                    for (a, b) in &spans {
                        prop_assert!(a < b && *b <= size);
                    }
                    // Sorted, and apart: no byte is sent twice.
                    prop_assert!(spans.windows(2).all(|w| w[0].1 <= w[1].0));
                }
            }

            #[test]
            fn numeric_ranges(a in 0u64..1_000_000, len in 0u64..1_000_000, size in 1u64..2_000_000) {
                let r = parse(&format!("bytes={a}-{}", a + len)).unwrap()[0];
                match r.resolve(size) {
                    Some((s, e)) => prop_assert!(s == a && e == (a + len + 1).min(size)),
                    None => prop_assert!(a >= size),
                }
            }
        }
    }
}
