//! Where a command's output goes: this process's stdout and stderr, or, for a command a running
//! `serve` carries out for another process, back over the admin socket to it.

use std::io::{IsTerminal as _, Write};

pub(crate) struct Console<'a> {
    out: &'a mut dyn Write,
    err: &'a mut dyn Write,
    /// Whether progress bars may be drawn (stderr is this process's terminal).
    terminal: bool,
}

impl<'a> Console<'a> {
    pub(crate) fn new(out: &'a mut dyn Write, err: &'a mut dyn Write, terminal: bool) -> Self {
        Console { out, err, terminal }
    }

    /// Text for stdout (a table). A reader that has gone away loses it; the work goes on.
    pub(crate) fn print(&mut self, text: &str) {
        let _ = self.out.write_all(text.as_bytes());
        let _ = self.out.flush();
    }

    /// A line for stderr: what was done, or left out.
    pub(crate) fn line(&mut self, text: impl AsRef<str>) {
        let _ = writeln!(self.err, "{}", text.as_ref());
        let _ = self.err.flush();
    }

    pub(crate) fn terminal(&self) -> bool {
        self.terminal
    }
}

/// Runs `f` with this process's stdout and stderr as its console.
pub(crate) fn stdio<T>(f: impl FnOnce(&mut Console<'_>) -> T) -> T {
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    let terminal = err.is_terminal();
    f(&mut Console::new(&mut out, &mut err, terminal))
}
