//! Every unknown field and wrong value of a TOML file, not just the first:
//! serde stops at the first field it does not take (and not even the first
//! in the file), so an operator fixing typos would meet them one
//! `keygate check` at a time.
//!
//! On the failure path only: each field the parse refuses is blanked
//! out of a copy of the text (its bytes turned to spaces, line breaks kept,
//! so every later line number still points into the file as written), and
//! the copy is parsed again, until it parses or fails for another reason.
//! The copy then lets the caller check the rest of the file as well.

use crate::model::problem::{Problem, from_toml_error};
use std::ops::Range;
use std::path::Path;
use toml_edit::{Item, Table, TableLike, Value};

/// The most unknown fields reported from one file.
const MAX: usize = 20;

/// What is known once the first parse of a file failed.
pub struct Reported {
    /// Each unknown field or wrong value, in file order, then the error
    /// that ended the search, if the file made it.
    pub problems: Vec<Problem>,
    /// The text without the entries reported, when that parses (`parses`
    /// said so): its other problems can be looked for too.
    pub rest: Option<String>,
}

/// The problems of `text` (read from `path`) after its parse failed with
/// `first`; `parses` is that parse, run again on the text each reported
/// entry is blanked out of.
pub fn report(
    path: &Path,
    text: &str,
    first: &toml::de::Error,
    parses: impl Fn(&str) -> Result<(), toml::de::Error>,
) -> Reported {
    let mut found = Vec::new();
    let mut current = text.to_string();
    let mut err = first.clone();
    let mut blanked_value = false;
    let (last, rest) = loop {
        let problem = from_toml_error(path, &current, &err);
        let Some(span) = err.span().filter(|_| found.len() < MAX) else {
            break (Some(problem), None);
        };
        let unknown = err.message().starts_with("unknown field");
        if !unknown && err.message().starts_with("missing field") {
            // After a wrong value was blanked, a missing field may be that
            // value: the file has been reported for it already.
            break ((!blanked_value).then_some(problem), None);
        }
        blanked_value |= !unknown;
        found.push((span.start, problem));
        if !blank_entry(&mut current, &span) {
            break (None, None);
        }
        match parses(&current) {
            Ok(()) => break (None, Some(current)),
            Err(e) => err = e,
        }
    };
    found.sort_by_key(|(at, _)| *at);
    let mut problems: Vec<Problem> = found.into_iter().map(|(_, p)| p).collect();
    problems.extend(last);
    Reported { problems, rest }
}

/// Blanks the entry whose key or value holds `at` (a key-value pair, or a
/// table with everything in it); `false` when there is none, or when
/// blanking it would leave text that is not TOML, so that no problem of the
/// search's own making is ever reported.
fn blank_entry(text: &mut String, at: &Range<usize>) -> bool {
    let Ok(doc) = toml_edit::Document::parse(text.as_str()) else {
        return false;
    };
    let mut ranges = Vec::new();
    if !find(doc.as_table(), text, at, &mut ranges) {
        return false;
    }
    drop(doc);
    let mut bytes = std::mem::take(text).into_bytes();
    for r in ranges {
        for b in bytes.get_mut(r).unwrap_or_default() {
            if *b != b'\n' && *b != b'\r' {
                *b = b' ';
            }
        }
    }
    // Only ASCII bytes were written, over whole characters.
    *text = String::from_utf8(bytes).unwrap_or_default();
    toml_edit::Document::parse(text.as_str()).is_ok()
}

/// Looks in `table` for the entry whose key holds `at.start`, or whose
/// value does, and puts the ranges that make it up in `out`.
fn find(table: &dyn TableLike, text: &str, at: &Range<usize>, out: &mut Vec<Range<usize>>) -> bool {
    for (name, item) in table.iter() {
        let Some(k) = table.key(name) else { continue };
        let holds = |s: Option<Range<usize>>| s.is_some_and(|s| s.contains(&at.start));
        let value_holds = matches!(item, Item::Value(v) if !v.is_inline_table() && holds(v.span()));
        if holds(k.span()) || value_holds {
            whole(table, name, item, text, out);
            return true;
        }
        let found = match item {
            Item::Table(t) => find(t, text, at, out),
            Item::ArrayOfTables(a) => a.iter().any(|t| find(t, text, at, out)),
            Item::Value(Value::InlineTable(t)) => find_inline(t, text, at, out),
            _ => false,
        };
        if found {
            return true;
        }
    }
    false
}

/// [`find`] inside an inline table, whose entries are separated by commas.
fn find_inline(
    table: &toml_edit::InlineTable,
    text: &str,
    at: &Range<usize>,
    out: &mut Vec<Range<usize>>,
) -> bool {
    for (name, value) in table.iter() {
        let Some(k) = table.key(name) else { continue };
        let holds = |s: Option<Range<usize>>| s.is_some_and(|s| s.contains(&at.start));
        if holds(k.span()) || (!value.is_inline_table() && holds(value.span())) {
            let (Some(ks), Some(vs)) = (k.span(), value.span()) else {
                return false;
            };
            out.push(with_comma(text, ks.start..vs.end));
            return true;
        }
        if let Value::InlineTable(t) = value
            && find_inline(t, text, at, out)
        {
            return true;
        }
    }
    false
}

/// The ranges of the entry `name` of `parent`: a key-value pair from the
/// start of its line (a dotted key starts there) to the end of its value; a
/// table's header and all it holds.
fn whole(parent: &dyn TableLike, name: &str, item: &Item, text: &str, out: &mut Vec<Range<usize>>) {
    match item {
        Item::Value(v) => {
            if let (Some(k), Some(vs)) = (parent.key(name).and_then(|k| k.span()), v.span()) {
                out.push(line_start(text, k.start)..vs.end);
            }
        }
        Item::Table(t) => table_whole(t, text, out),
        Item::ArrayOfTables(a) => a.iter().for_each(|t| table_whole(t, text, out)),
        Item::None => {}
    }
}

fn table_whole(t: &Table, text: &str, out: &mut Vec<Range<usize>>) {
    if let Some(header) = t.span() {
        // A dotted table's span is its key, which its entries cover.
        if !t.is_dotted() {
            out.push(header);
        }
    }
    for (name, item) in t.iter() {
        whole(t, name, item, text, out);
    }
}

/// The offset where the line holding `at` starts its text.
fn line_start(text: &str, at: usize) -> usize {
    let begin = text[..at].rfind('\n').map_or(0, |i| i + 1);
    begin + text[begin..at].len() - text[begin..at].trim_start().len()
}

/// `r` and the comma that separates it from the next entry (or, for the
/// last, from the one before) in an inline table.
fn with_comma(text: &str, r: Range<usize>) -> Range<usize> {
    let after = &text[r.end..];
    let gap = after.len() - after.trim_start().len();
    if after[gap..].starts_with(',') {
        return r.start..r.end + gap + 1;
    }
    let before = &text[..r.start];
    let trimmed = before.trim_end();
    if trimmed.ends_with(',') {
        return trimmed.len() - 1..r.end;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        server: Server,
        #[serde(default)]
        routes: Vec<Route>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Server {
        listen: Vec<String>,
        threads: Option<i64>,
        tls: Option<Tls>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Tls {
        cert: String,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Route {
        name: String,
        limit: Option<Limit>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Limit {
        requests: i64,
    }

    fn run(text: &str) -> (Vec<String>, Option<String>) {
        let parses = |t: &str| toml::from_str::<Doc>(t).map(drop);
        let first = toml::from_str::<Doc>(text).err().expect("a refused text");
        let r = report(Path::new("f.toml"), text, &first, parses);
        (r.problems.iter().map(|p| p.to_string()).collect(), r.rest)
    }

    #[test]
    fn every_unknown_field_is_reported_in_file_order_with_its_line() {
        let text = "[server]\nlisten = []\ncolour = [\n  1,\n  2]\ntls.cret = \"x\"\n\n\
                    [[routes]]\nname = \"a\"\nlimit = { requests = 1, per = 2 }\n\n\
                    [[routes]]\nname = \"b\"\nsope = 3\n\n\
                    [srever]\nx = 1\n[srever.sub]\ny = 2\n";
        let (problems, rest) = run(text);
        let lines: Vec<&str> = problems
            .iter()
            .map(|p| p.split(": ").next().unwrap())
            .collect();
        assert_eq!(
            lines,
            [
                "f.toml:3",
                "f.toml:6",
                "f.toml:10",
                "f.toml:14",
                "f.toml:16"
            ],
            "{problems:#?}"
        );
        for (p, field) in problems
            .iter()
            .zip(["colour", "cret", "per", "sope", "srever"])
        {
            assert!(p.contains(&format!("unknown field `{field}`")), "{p}");
        }
        // What is left parses, line for line where it was.
        let rest = rest.expect("the rest parses");
        assert_eq!(rest.lines().count(), text.lines().count());
        let doc: Doc = toml::from_str(&rest).unwrap();
        assert_eq!(doc.routes.len(), 2);
        assert_eq!(doc.routes[0].limit.as_ref().unwrap().requests, 1);
    }

    #[test]
    fn wrong_values_are_reported_and_the_search_goes_on() {
        let text = "[server]\nlisten = []\nthreads = \"two\"\ncolour = 1\n";
        let (problems, rest) = run(text);
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(
            problems[0].starts_with("f.toml:3: invalid type"),
            "{problems:#?}"
        );
        assert!(
            problems[1].starts_with("f.toml:4: unknown field `colour`"),
            "{problems:#?}"
        );
        assert!(rest.is_some());
        // A required field blanked for its wrong value is not reported
        // again as missing.
        let (problems, rest) = run("[server]\nlisten = 3\ncolour = 1\n");
        assert!(rest.is_none());
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(
            !problems.iter().any(|p| p.contains("missing")),
            "{problems:#?}"
        );
        // A missing field is the file's own: reported, after the unknown one.
        let (problems, rest) = run("[server]\ncolour = 1\n");
        assert!(rest.is_none());
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(
            problems[1].contains("missing field `listen`"),
            "{problems:#?}"
        );
        // The first field of an inline table, its comma blanked with it.
        let (problems, rest) = run("server = { colour = 1, listen = [] }\n");
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(rest.is_some());
        // Not TOML at all: the syntax error alone.
        let (problems, rest) = run("[server\nlisten = []\n");
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(rest.is_none());
    }
}
