//! What the offline commands show while they work: indicatif bars (per image and overall, with
//! bytes and rate) on a terminal, plain lines otherwise, and a table at the end.

use std::io::IsTerminal as _;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub(super) struct Progress {
    multi: MultiProgress,
    terminal: bool,
    overall: ProgressBar,
}

impl Progress {
    /// Progress over `total` units of work: `bytes`, or items of another kind.
    pub(super) fn new(total: u64, unit: &str) -> Progress {
        Progress::drawn(total, unit, std::io::stderr().is_terminal())
    }

    /// As [`Progress::new`], with bars drawn only if `terminal` (a command run for another
    /// process draws none: its stderr is not that process's terminal).
    pub(super) fn drawn(total: u64, unit: &str, terminal: bool) -> Progress {
        let target = if terminal {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let multi = MultiProgress::with_draw_target(target);
        let overall = multi.add(ProgressBar::new(total));
        let template = if unit == "bytes" {
            "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}"
        } else {
            "{prefix:>8} [{bar:30}] {pos}/{len} {msg}"
        };
        overall.set_style(style(template));
        overall.set_prefix("total");
        Progress {
            multi,
            terminal,
            overall,
        }
    }

    /// A bar for one image's bytes.
    pub(super) fn item(&self, name: &str) -> ProgressBar {
        let bar = self.multi.insert_before(&self.overall, ProgressBar::new(0));
        bar.set_style(style(
            "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        ));
        bar.set_prefix("image");
        bar.set_message(name.to_owned());
        bar
    }

    pub(super) fn overall(&self) -> &ProgressBar {
        &self.overall
    }

    /// A line of its own: above the bars on a terminal, on stderr otherwise.
    pub(super) fn line(&self, text: impl AsRef<str>) {
        if self.terminal {
            let _ = self.multi.println(text.as_ref());
        } else {
            eprintln!("{}", text.as_ref());
        }
    }

    pub(super) fn finish(&self) {
        self.overall.finish_and_clear();
        let _ = self.multi.clear();
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// A table with a header row, columns padded to their widest cell.
pub(super) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let widths = widths(header, rows);
    let mut out = line(&widths, header.iter().copied());
    for r in rows {
        out.push_str(&line(&widths, r.iter().map(String::as_str)));
    }
    out
}

/// The widest cell of each column.
fn widths(header: &[&str], rows: &[Vec<String>]) -> Vec<usize> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    widths
}

/// One row, its cells padded to `widths` (a wider cell pushes the rest of its row right).
fn line<'a>(widths: &[usize], cells: impl Iterator<Item = &'a str>) -> String {
    let padded: Vec<String> = cells.zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
    padded.join("  ").trim_end().to_owned() + "\n"
}

/// A [`table`] printed as its rows come, for a listing of a million rows: the columns are as
/// wide as the widest cell of the first [`StreamedTable::SETS_WIDTHS`] rows, and from there on
/// rows go out in batches. A table of fewer rows is exactly what [`table`] gives.
pub(super) struct StreamedTable<'h> {
    header: &'h [&'h str],
    /// The rows not yet printed.
    rows: Vec<Vec<String>>,
    /// Set once the header is printed.
    widths: Option<Vec<usize>>,
    count: usize,
}

impl<'h> StreamedTable<'h> {
    /// Rows read before the widths are chosen and the header printed.
    const SETS_WIDTHS: usize = 200;
    /// Rows per write once printing has begun.
    const BATCH: usize = 64;

    pub(super) fn new(header: &'h [&'h str]) -> Self {
        StreamedTable {
            header,
            rows: Vec::new(),
            widths: None,
            count: 0,
        }
    }

    /// Adds a row; prints what is due.
    pub(super) fn push(&mut self, row: Vec<String>, out: &mut impl FnMut(&str)) {
        self.rows.push(row);
        self.count += 1;
        let due = match self.widths {
            None => Self::SETS_WIDTHS,
            Some(_) => Self::BATCH,
        };
        if self.rows.len() >= due {
            self.flush(out);
        }
    }

    /// Prints every row held (and the header, if not yet printed).
    pub(super) fn flush(&mut self, out: &mut impl FnMut(&str)) {
        let mut text = String::new();
        let widths = match &self.widths {
            Some(w) => w,
            None => {
                let w = widths(self.header, &self.rows);
                text.push_str(&line(&w, self.header.iter().copied()));
                self.widths.insert(w)
            }
        };
        for r in self.rows.drain(..) {
            text.push_str(&line(widths, r.iter().map(String::as_str)));
        }
        if !text.is_empty() {
            out(&text);
        }
    }

    /// Rows pushed so far.
    pub(super) fn len(&self) -> usize {
        self.count
    }
}

/// Bytes for people: `1.5 MiB`.
pub(super) fn size(bytes: u64) -> String {
    indicatif::BinaryBytes(bytes).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn tables_line_up() {
        let t = super::table(
            &["IMAGE", "SIZE"],
            &[
                vec!["a".into(), "1 B".into()],
                vec!["long/name".into(), "2 B".into()],
            ],
        );
        assert_eq!(t, "IMAGE      SIZE\na          1 B\nlong/name  2 B\n");
    }

    #[test]
    fn a_streamed_table_is_the_table_until_its_widths_are_set_then_prints_as_it_goes() {
        let header = ["IMAGE", "SIZE"];
        let rows: Vec<Vec<String>> = vec![
            vec!["a".into(), "1 B".into()],
            vec!["long/name".into(), "2 B".into()],
        ];
        let mut printed = String::new();
        let mut t = super::StreamedTable::new(&header);
        for r in &rows {
            t.push(r.clone(), &mut |s| printed.push_str(s));
        }
        assert!(printed.is_empty(), "two rows are held until the end");
        t.flush(&mut |s| printed.push_str(s));
        assert_eq!(printed, super::table(&header, &rows));
        assert_eq!(t.len(), 2);

        // Past the first rows, the header and those rows are out before the end; a later,
        // wider cell pushes its row right and changes no width.
        let mut printed = String::new();
        let mut t = super::StreamedTable::new(&header);
        let first = super::StreamedTable::SETS_WIDTHS;
        for i in 0..first {
            t.push(vec![format!("r{i}"), "1 B".into()], &mut |s| {
                printed.push_str(s)
            });
        }
        assert!(
            printed.starts_with("IMAGE  SIZE\nr0     1 B\n"),
            "{printed}"
        );
        assert_eq!(printed.lines().count(), first + 1);
        t.push(vec!["a/much/longer/name".into(), "2 B".into()], &mut |s| {
            printed.push_str(s)
        });
        t.flush(&mut |s| printed.push_str(s));
        assert_eq!(printed.lines().last(), Some("a/much/longer/name  2 B"));
    }
}
