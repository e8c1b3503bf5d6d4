//! Progress on stderr for `warm`, `export` and `import`: a bar redrawn in
//! place at a terminal; elsewhere (a CI log, a file) a line at every tenth,
//! so a log gets ten lines, not a carriage return per file.

use std::io::{IsTerminal, Write};

use crate::bundle::human_bytes;

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Items,
    Bytes,
}

pub struct Progress {
    label: &'static str,
    done: u64,
    pub total: u64,
    unit: Unit,
    terminal: bool,
    last_tenth: u64,
}

impl Progress {
    pub fn new(label: &'static str, total: u64, unit: Unit) -> Self {
        Self {
            label,
            done: 0,
            total,
            unit,
            terminal: std::io::stderr().is_terminal(),
            last_tenth: 0,
        }
    }

    fn show(&self, n: u64) -> String {
        match self.unit {
            Unit::Items => n.to_string(),
            Unit::Bytes => human_bytes(n),
        }
    }

    /// `n` more done.
    pub fn step(&mut self, n: u64) {
        self.set(self.done + n);
    }

    /// `done` done in all.
    pub fn set(&mut self, done: u64) {
        self.done = done;
        let total = self.total.max(1);
        let mut stderr = std::io::stderr();
        let (done, all) = (self.show(self.done), self.show(self.total));
        if self.terminal {
            const WIDTH: u64 = 30;
            let filled = (WIDTH * self.done / total).min(WIDTH) as usize;
            let _ = write!(
                stderr,
                "\r{} [{}{}] {done}/{all}",
                self.label,
                "#".repeat(filled),
                " ".repeat(WIDTH as usize - filled),
            );
            let _ = stderr.flush();
        } else {
            let tenth = (10 * self.done / total).min(10);
            if tenth > self.last_tenth {
                self.last_tenth = tenth;
                let percent = (100 * self.done / total).min(100);
                let _ = writeln!(stderr, "{}: {done}/{all} ({percent}%)", self.label);
            }
        }
    }

    pub fn finish(&self) {
        if self.terminal && self.done > 0 {
            eprintln!();
        }
    }
}
