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
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
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
}
