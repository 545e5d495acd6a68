//! Load-time problems: every reason a config or snapshot is refused, each with
//! where it is (file and line, or file and key id), reported all at once.

use std::fmt;
use std::path::Path;

/// One reason a file is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `file:line`, `file (key id)` or just `file`.
    pub location: String,
    /// What is wrong, in operator words.
    pub message: String,
}

impl Problem {
    /// A problem at a line of a file.
    pub fn at_line(file: &Path, line: Option<usize>, message: impl Into<String>) -> Self {
        let location = match line {
            Some(l) => format!("{}:{l}", file.display()),
            None => file.display().to_string(),
        };
        Problem {
            location,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// Every problem found while loading; never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl Problems {
    /// Err with the collected problems, or Ok(value) when there are none.
    pub fn into_result<T>(self, value: T) -> Result<T, Problems> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }

    /// Adds one problem.
    pub fn push(&mut self, p: Problem) {
        self.0.push(p);
    }
}

/// The 1-based line of a byte offset in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    // One-off lookups (errors); series of lookups use `LineCounter`.
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Line numbers for a series of offsets, mostly increasing (the tables of a
/// file in order): each call scans only from the previous offset, so a
/// million records cost one pass over the text, not a million.
pub struct LineCounter<'a> {
    text: &'a str,
    offset: usize,
    line: usize,
}

impl<'a> LineCounter<'a> {
    /// Starts at the top of `text`.
    pub fn new(text: &'a str) -> Self {
        LineCounter {
            text,
            offset: 0,
            line: 1,
        }
    }

    /// The 1-based line of `offset`.
    pub fn line_at(&mut self, offset: usize) -> usize {
        let offset = offset.min(self.text.len());
        if offset < self.offset {
            self.offset = 0;
            self.line = 1;
        }
        self.line += self.text.as_bytes()[self.offset..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        self.offset = offset;
        self.line
    }
}

/// A TOML parse or type error as a problem with its line.
pub fn from_toml_error(file: &Path, text: &str, err: &toml::de::Error) -> Problem {
    let line = err.span().map(|s| line_of(text, s.start));
    Problem::at_line(file, line, err.message().trim_end().to_string())
}
