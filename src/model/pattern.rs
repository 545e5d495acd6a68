//! Path patterns and the request-path checks that guard them.
//!
//! A pattern is matched segment by segment: a literal matches itself, `*` one
//! segment, `{workspace}` one segment (bound), `**` (last only) zero or more.
//! Paths are compared percent-decoded, so `/api/%63ompany` cannot slip past a
//! route written `/api/company`; the raw path is what the upstream receives.
//! Paths that could be read differently by the upstream (dot segments, encoded
//! slashes, backslashes, NUL, broken escapes) are refused before any matching.

use std::borrow::Cow;
use std::fmt;

/// One compiled segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    Any,
    Workspace,
    Rest,
}

/// A compiled route pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: Box<str>,
    segments: Box<[Segment]>,
}

/// Why a pattern could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// Patterns are absolute.
    #[error("pattern must start with '/'")]
    NotAbsolute,
    /// `**` anywhere but the end.
    #[error("'**' may only be the last segment")]
    RestNotLast,
    /// `{name}` other than `{workspace}`.
    #[error("unknown placeholder {0:?}: only {{workspace}} is supported")]
    UnknownPlaceholder(String),
    /// Two `{workspace}` segments.
    #[error("{{workspace}} may appear only once")]
    TwoWorkspaces,
    /// `*`, `{` or `}` mixed into a literal segment.
    #[error("segment {0:?} mixes a wildcard with literal text")]
    MixedSegment(String),
    /// A literal that no allowed request path could ever contain.
    #[error("segment {0:?} can never match a request path")]
    Unmatchable(String),
}

impl Pattern {
    /// The pattern as written in the config.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern binds `{workspace}`.
    pub fn binds_workspace(&self) -> bool {
        self.segments.contains(&Segment::Workspace)
    }

    /// Whether every path `other` matches is matched by `self` too, so that
    /// `other` placed after `self` can never be reached. Literals are
    /// compared as written (a pattern is never percent-encoded).
    pub fn covers(&self, other: &Pattern) -> bool {
        fn covers(a: &[Segment], b: &[Segment]) -> bool {
            match (a.first(), b.first()) {
                (Some(Segment::Rest), _) => true,
                (None, None) => true,
                (None, Some(_)) | (Some(_), None) => false,
                (Some(_), Some(Segment::Rest)) => false,
                (Some(Segment::Any | Segment::Workspace), Some(_)) => covers(&a[1..], &b[1..]),
                (Some(Segment::Literal(x)), Some(Segment::Literal(y))) => {
                    x == y && covers(&a[1..], &b[1..])
                }
                (Some(Segment::Literal(_)), Some(_)) => false,
            }
        }
        covers(&self.segments, &other.segments)
    }

    /// Matches a path that passed [`check_path`] (query string already removed).
    /// Returns the bound `{workspace}` segment, decoded, if the pattern has one.
    pub fn matches<'p>(&self, path: &'p str) -> Option<Match<'p>> {
        self.matches_split(&SplitPath::new(path)?)
    }

    /// Like [`Pattern::matches`] on a path split once for all routes.
    pub fn matches_split<'p>(&self, path: &SplitPath<'p>) -> Option<Match<'p>> {
        let parts = path.segments();
        let has_rest = matches!(self.segments.last(), Some(Segment::Rest));
        let fixed = self.segments.len() - usize::from(has_rest);
        if parts.len() < fixed || (!has_rest && parts.len() != fixed) {
            return None;
        }
        let mut workspace = None;
        for (seg, raw) in self.segments[..fixed].iter().zip(parts) {
            match seg {
                Segment::Literal(lit) => {
                    let equal = if path.escaped {
                        decoded_eq(raw, lit)
                    } else {
                        *raw == &**lit
                    };
                    if !equal {
                        return None;
                    }
                }
                Segment::Any => {
                    if raw.is_empty() {
                        return None;
                    }
                }
                Segment::Workspace => {
                    if raw.is_empty() {
                        return None;
                    }
                    workspace = Some(decode(raw));
                }
                Segment::Rest => return None,
            }
        }
        Some(Match { workspace })
    }
}

impl Pattern {
    /// Whether `path` would match if each of its segments were read the way
    /// lenient backends read them: letters in any case (Express, ASP.NET
    /// Core), a `;parameter` tail dropped (Tomcat, Jetty, Spring), trailing
    /// dots and blanks dropped (IIS). A stricter route that a path matches
    /// only so must not be skipped for a broader one after it.
    pub fn matches_loosely(&self, path: &SplitPath<'_>) -> bool {
        let parts = path.segments();
        let has_rest = matches!(self.segments.last(), Some(Segment::Rest));
        let fixed = self.segments.len() - usize::from(has_rest);
        if parts.len() < fixed || (!has_rest && parts.len() != fixed) {
            return false;
        }
        self.segments[..fixed]
            .iter()
            .zip(parts)
            .all(|(seg, raw)| match seg {
                Segment::Literal(lit) => loose_eq(&decode(raw), lit),
                Segment::Any | Segment::Workspace => !raw.is_empty(),
                Segment::Rest => false,
            })
    }

    /// Whether a literal has an upper-case letter (then a lower-case path
    /// may match it loosely only).
    pub fn has_upper_case(&self) -> bool {
        self.segments.iter().any(|s| match s {
            Segment::Literal(l) => l.bytes().any(|b| b.is_ascii_uppercase()),
            _ => false,
        })
    }
}

/// A segment read leniently against a literal.
fn loose_eq(segment: &str, literal: &str) -> bool {
    let segment = segment.split(';').next().unwrap_or(segment);
    segment
        .trim_end_matches(['.', ' ', '\t'])
        .eq_ignore_ascii_case(literal)
}

/// Most API paths have fewer segments than this; longer ones spill to the heap.
const INLINE_SEGMENTS: usize = 16;

/// A request path split into segments once, so matching it against every
/// route does not split it again per route.
#[derive(Debug)]
pub struct SplitPath<'p> {
    inline: [&'p str; INLINE_SEGMENTS],
    len: usize,
    spilled: Vec<&'p str>,
    escaped: bool,
}

impl<'p> SplitPath<'p> {
    /// Whether a lenient reading of the path is the path itself: no escape,
    /// no upper-case letter, no `;`, no segment ending in a dot or a blank.
    /// Then, against lower-case literals, a loose match is a strict one.
    pub fn is_plain(&self) -> bool {
        !self.escaped
            && self.segments().iter().all(|s| {
                !s.bytes().any(|b| b.is_ascii_uppercase() || b == b';')
                    && !s.ends_with(['.', ' ', '\t'])
            })
    }

    /// Splits an absolute path; `None` if it does not start with `/`.
    pub fn new(path: &'p str) -> Option<Self> {
        let rest = path.strip_prefix('/')?;
        let mut out = SplitPath::empty(rest.contains('%'));
        for seg in segments(rest) {
            out.push(seg);
        }
        Some(out)
    }

    /// [`check_path`] and [`SplitPath::new`] in one pass over the path: the
    /// segments of a path the gateway may interpret, or why not.
    pub fn checked(path: &'p str) -> Result<Self, BadPath> {
        let rest = path.strip_prefix('/').ok_or(BadPath)?;
        let mut out = SplitPath::empty(false);
        let mut after_empty = false;
        for seg in segments(rest) {
            // An empty segment with more after it (`//`): a backend that
            // merges slashes serves the path without it, which may be a
            // route this one did not match. A trailing `/` is kept.
            if after_empty {
                return Err(BadPath);
            }
            after_empty = seg.is_empty();
            out.escaped |= check_segment(seg)?;
            out.push(seg);
        }
        Ok(out)
    }

    fn empty(escaped: bool) -> Self {
        SplitPath {
            inline: [""; INLINE_SEGMENTS],
            len: 0,
            spilled: Vec::new(),
            escaped,
        }
    }

    fn push(&mut self, seg: &'p str) {
        if self.len < INLINE_SEGMENTS {
            self.inline[self.len] = seg;
            self.len += 1;
        } else {
            if self.spilled.is_empty() {
                self.spilled.extend_from_slice(&self.inline);
            }
            self.spilled.push(seg);
        }
    }

    /// The segments.
    pub fn segments(&self) -> &[&'p str] {
        if self.spilled.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.spilled
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for Pattern {
    type Err = PatternError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let body = text.strip_prefix('/').ok_or(PatternError::NotAbsolute)?;
        let raw: Vec<&str> = body.split('/').collect();
        let mut segments = Vec::with_capacity(raw.len());
        let mut seen_workspace = false;
        for (i, seg) in raw.iter().enumerate() {
            let compiled = match *seg {
                "**" if i + 1 == raw.len() => Segment::Rest,
                "**" => return Err(PatternError::RestNotLast),
                "*" => Segment::Any,
                "{workspace}" => {
                    if seen_workspace {
                        return Err(PatternError::TwoWorkspaces);
                    }
                    seen_workspace = true;
                    Segment::Workspace
                }
                s if s.starts_with('{') && s.ends_with('}') => {
                    return Err(PatternError::UnknownPlaceholder(s.to_string()));
                }
                s if s.contains(['*', '{', '}']) => {
                    return Err(PatternError::MixedSegment(s.to_string()));
                }
                s if s == "."
                    || s == ".."
                    || s.contains(['\\', '?', '#', '%', '\0'])
                    || s.chars().any(char::is_whitespace) =>
                {
                    return Err(PatternError::Unmatchable(s.to_string()));
                }
                s => Segment::Literal(s.into()),
            };
            segments.push(compiled);
        }
        Ok(Pattern {
            text: text.into(),
            segments: segments.into_boxed_slice(),
        })
    }
}

/// The result of a successful match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match<'p> {
    /// The `{workspace}` segment, percent-decoded.
    pub workspace: Option<Cow<'p, str>>,
}

/// A request path the gateway refuses to interpret (contract row 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadPath;

/// Refuses paths with `.`/`..` segments (raw or %-encoded), `%2F`, `\` (raw or
/// `%5C`), NUL (raw or `%00`), an empty segment before another (`//`),
/// malformed escapes, escapes that decode to invalid UTF-8, and anything not
/// starting with `/` (asterisk- and authority-form).
pub fn check_path(path: &str) -> Result<(), BadPath> {
    SplitPath::checked(path).map(drop)
}

/// The path a request is routed and checked by, from its request-target as
/// sent and the path the HTTP parser made of it: an origin-form target
/// (`/...`) and an absolute-form `http://` or `https://` one give the parsed
/// path; any other target comes back whole (asterisk-form, a bare
/// `admin/users`, an opaque `x:/admin`), and row 1 refuses it for not
/// starting with `/`. Pingora stores such a target as the path `/` but sends
/// it upstream as it came, where a lenient backend may read it as a path the
/// routes never saw.
pub fn routed_path<'a>(target: &'a [u8], parsed: &'a str) -> &'a str {
    let scheme = |s: &[u8]| target.len() > s.len() && target[..s.len()].eq_ignore_ascii_case(s);
    if target.first() == Some(&b'/') || scheme(b"http://") || scheme(b"https://") {
        parsed
    } else {
        // Not UTF-8 (the parser refuses those before this): refused too.
        std::str::from_utf8(target).unwrap_or("")
    }
}

/// The `/`-separated segments of `rest`, found byte by byte: request paths
/// are short, and `str::split` spends a search call on each segment.
fn segments(rest: &str) -> impl Iterator<Item = &str> {
    let mut start = Some(0);
    std::iter::from_fn(move || {
        let from = start?;
        let len = rest.as_bytes()[from..]
            .iter()
            .position(|&b| b == b'/')
            .unwrap_or(rest.len() - from);
        let end = from + len;
        start = (end < rest.len()).then_some(end + 1);
        rest.get(from..end)
    })
}

/// Checks one segment; `Ok(true)` when it holds a percent-escape.
fn check_segment(seg: &str) -> Result<bool, BadPath> {
    let bytes = seg.as_bytes();
    // The usual segment: no escape, `;`, `\` or NUL, and not `.` or `..`.
    if bytes.iter().all(|&b| !matches!(b, b'%' | b';' | b'\\' | 0)) {
        return match bytes {
            b"." | b".." => Err(BadPath),
            _ => Ok(false),
        };
    }
    check_segment_fully(seg)
}

/// [`check_segment`] byte by byte, for any segment.
fn check_segment_fully(seg: &str) -> Result<bool, BadPath> {
    let bytes = seg.as_bytes();
    // Dot segments are judged on the part before the first `;` (raw or
    // `%3B`): Tomcat, Spring and Jetty drop `;params` before resolving dots,
    // so `..;x=1` is `..` to them.
    let mut decoded_len = 0usize;
    let mut all_dots = true;
    let mut in_params = false;
    let mut has_escape = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = match bytes[i] {
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|c| hex_val(*c)).ok_or(BadPath)?;
                let lo = bytes.get(i + 2).and_then(|c| hex_val(*c)).ok_or(BadPath)?;
                i += 3;
                has_escape = true;
                (hi << 4) | lo
            }
            other => {
                i += 1;
                other
            }
        };
        if b == b'/' || b == b'\\' || b == 0 {
            return Err(BadPath);
        }
        if b == b';' {
            in_params = true;
        }
        if !in_params {
            all_dots &= b == b'.';
            decoded_len += 1;
        }
    }
    if all_dots && (decoded_len == 1 || decoded_len == 2) {
        return Err(BadPath);
    }
    if has_escape && std::str::from_utf8(&decode_bytes(seg)).is_err() {
        return Err(BadPath);
    }
    Ok(has_escape)
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decoded bytes of a segment that passed [`check_segment`].
fn decoded_bytes(seg: &str) -> impl Iterator<Item = u8> + '_ {
    let bytes = seg.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        let b = *bytes.get(i)?;
        if b == b'%' {
            let hi = bytes.get(i + 1).and_then(|c| hex_val(*c));
            let lo = bytes.get(i + 2).and_then(|c| hex_val(*c));
            if let (Some(hi), Some(lo)) = (hi, lo) {
                i += 3;
                return Some((hi << 4) | lo);
            }
        }
        i += 1;
        Some(b)
    })
}

fn decode_bytes(seg: &str) -> Vec<u8> {
    decoded_bytes(seg).collect()
}

fn decoded_eq(raw: &str, literal: &str) -> bool {
    if !raw.contains('%') {
        return raw == literal;
    }
    decoded_bytes(raw).eq(literal.bytes())
}

fn decode(raw: &str) -> Cow<'_, str> {
    if !raw.contains('%') {
        return Cow::Borrowed(raw);
    }
    Cow::Owned(String::from_utf8_lossy(&decode_bytes(raw)).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        s.parse().unwrap()
    }

    #[test]
    fn loose_matching_reads_segments_as_lenient_backends_do() {
        let keys = p("/api/company/keys/**");
        let ws = p("/api/company/workspaces/{workspace}/**");
        for path in [
            "/api/company/Keys/x",
            "/api/company/keys;v=1/x",
            "/api/company/keys./x",
            "/api/company/keys%20/x",
            "/API/Company/KEYS",
        ] {
            let split = SplitPath::new(path).unwrap();
            assert!(keys.matches_loosely(&split), "{path}");
            assert!(!split.is_plain(), "{path}");
        }
        assert!(ws.matches_loosely(&SplitPath::new("/api/company/Workspaces/ws_a/x").unwrap()));
        for path in [
            "/api/company/keysmith/x",
            "/api/company/keys.json",
            "/api/company",
            "/api/company/ke/x",
        ] {
            assert!(
                !keys.matches_loosely(&SplitPath::new(path).unwrap()),
                "{path}"
            );
        }
        assert!(SplitPath::new("/api/company/things/x").unwrap().is_plain());
        assert!(!keys.has_upper_case() && p("/api/UserProfiles/**").has_upper_case());
    }

    #[test]
    fn only_origin_and_http_absolute_targets_route_by_their_parsed_path() {
        for (target, parsed, routed) in [
            ("/admin/users?x=1", "/admin/users", "/admin/users"),
            ("http://a/admin/users", "/admin/users", "/admin/users"),
            ("HTTPS://a", "/", "/"),
            ("admin/users", "/", "admin/users"),
            ("x:/admin/users", "/", "x:/admin/users"),
            ("foo:bar://host/admin", "/", "foo:bar://host/admin"),
            ("http:/admin", "/", "http:/admin"),
            ("*", "*", "*"),
            ("", "/", ""),
        ] {
            let got = routed_path(target.as_bytes(), parsed);
            assert_eq!(got, routed, "{target:?}");
            assert_eq!(
                check_path(got).is_ok(),
                routed.starts_with('/'),
                "{target:?}"
            );
        }
        assert_eq!(routed_path(b"adm\xffin", "/"), "");
    }

    #[test]
    fn literal_star_and_rest() {
        let pat = p("/api/v1/company/**");
        assert!(pat.matches("/api/v1/company").is_some());
        assert!(pat.matches("/api/v1/company/").is_some());
        assert!(pat.matches("/api/v1/company/a/b/c").is_some());
        assert!(pat.matches("/api/v1/companyx").is_none());
        assert!(pat.matches("/api/v1").is_none());
        let star = p("/a/*/c");
        assert!(star.matches("/a/b/c").is_some());
        assert!(star.matches("/a//c").is_none());
        assert!(star.matches("/a/b/c/d").is_none());
        assert!(p("/**").matches("/").is_some());
        assert!(p("/healthz").matches("/healthz").is_some());
        assert!(p("/healthz").matches("/healthz/").is_none());
    }

    #[test]
    fn long_paths_spill_and_still_match() {
        let long: String = (0..40).map(|i| format!("/s{i}")).collect();
        assert!(p("/s0/**").matches(&long).is_some());
        assert!(p("/s0/*/s2/**").matches(&long).is_some());
        assert!(p("/s0/s1").matches(&long).is_none());
        let exact: String = (0..20).map(|i| format!("/s{i}")).collect();
        let pattern: String = (0..20).map(|i| format!("/s{i}")).collect();
        assert!(p(&pattern).matches(&exact).is_some());
        assert_eq!(SplitPath::new(&long).unwrap().segments().len(), 40);
    }

    #[test]
    fn workspace_binding_is_decoded() {
        let pat = p("/api/v1/workspaces/{workspace}/posts/**");
        let m = pat.matches("/api/v1/workspaces/ws_a/posts/1").unwrap();
        assert_eq!(m.workspace.as_deref(), Some("ws_a"));
        let m = pat.matches("/api/v1/workspaces/ws%5Fa/posts").unwrap();
        assert_eq!(m.workspace.as_deref(), Some("ws_a"));
        assert!(pat.binds_workspace());
        assert!(!p("/x").binds_workspace());
    }

    #[test]
    fn literals_compare_decoded() {
        assert!(p("/api/company").matches("/api/%63ompany").is_some());
        assert!(p("/api/company").matches("/api/%43ompany").is_none());
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert_eq!("api".parse::<Pattern>(), Err(PatternError::NotAbsolute));
        assert_eq!("/**/a".parse::<Pattern>(), Err(PatternError::RestNotLast));
        assert!(matches!(
            "/{tenant}".parse::<Pattern>(),
            Err(PatternError::UnknownPlaceholder(_))
        ));
        assert_eq!(
            "/{workspace}/{workspace}".parse::<Pattern>(),
            Err(PatternError::TwoWorkspaces)
        );
        assert!(matches!(
            "/a*".parse::<Pattern>(),
            Err(PatternError::MixedSegment(_))
        ));
        assert!(matches!(
            "/../a".parse::<Pattern>(),
            Err(PatternError::Unmatchable(_))
        ));
    }

    #[test]
    fn coverage_of_one_pattern_by_another() {
        let p = |s: &str| s.parse::<Pattern>().unwrap();
        for (a, b) in [
            ("/**", "/"),
            ("/**", "/a/b/**"),
            ("/a/**", "/a"),
            ("/a/**", "/a/b/{workspace}/c"),
            ("/a/*", "/a/b"),
            ("/a/*", "/a/{workspace}"),
            ("/a/{workspace}/x", "/a/*/x"),
            ("/a/b", "/a/b"),
            ("/company/**", "/company/keys/**"),
        ] {
            assert!(p(a).covers(&p(b)), "{a} covers {b}");
        }
        for (a, b) in [
            ("/a", "/a/**"),
            ("/a/b", "/a/*"),
            ("/a/*", "/a/b/c"),
            ("/a/*/**", "/a/**"),
            ("/a/b/**", "/a/c/**"),
            ("/a/*/x", "/a/*/y"),
            ("/company/keys/**", "/company/**"),
        ] {
            assert!(!p(a).covers(&p(b)), "{a} does not cover {b}");
        }
    }

    #[test]
    fn path_checks() {
        for bad in [
            "/a/../b",
            "/a/./b",
            "/a/..",
            "/a/%2e%2E/b",
            "/a/.%2e/b",
            "/a/%2e/b",
            "/a%2Fb",
            "/a%2fb",
            "/a\\b",
            "/a%5cb",
            "/a%00b",
            "/a\0b",
            "/a%zz",
            "/a%2",
            "/a%ff",
            "/a/..;/b",
            "/a/..;x=1/b",
            "/a/%2e%2e;/b",
            "/a/.%2e;jsessionid=a/b",
            "/a/.;/b",
            "/a/..%3b/b",
            "/a/..%3B",
            "/a/%2e%2e%3bx/b",
            "*",
            "",
            "example.com:443",
            "//x",
            "//",
            "/a//b",
            "/a/b//",
            "/a///b",
        ] {
            assert_eq!(check_path(bad), Err(BadPath), "{bad:?}");
            assert!(SplitPath::checked(bad).is_err(), "{bad:?}");
        }
        for good in [
            "/",
            "/a/b",
            "/a/.../b",
            "/a/.b",
            "/a/b.",
            "/a%20b",
            "/caf%C3%A9",
            "/a/",
            "/a/b/",
            "/a/b;c",
            "/a/;/b",
            "/a/...;/b",
            "/a/.x;/b",
            "/a/x;..",
            "/a/x%3b..",
        ] {
            assert_eq!(check_path(good), Ok(()), "{good:?}");
            // One pass splits as `str::split` does and sees the escapes.
            let split = SplitPath::checked(good).unwrap();
            let expected: Vec<&str> = good[1..].split('/').collect();
            assert_eq!(split.segments(), expected, "{good:?}");
            assert_eq!(split.escaped, good.contains('%'), "{good:?}");
            assert_eq!(SplitPath::new(good).unwrap().segments(), expected);
        }
        // The quick path agrees with the full check on every segment of up
        // to four of these characters.
        let alphabet = ["a", ".", ";", "%", "2", "e", "\\", "\0", "\u{e9}"];
        let mut segs = vec![String::new()];
        for _ in 0..4 {
            let longer: Vec<String> = segs
                .iter()
                .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                .collect();
            segs.extend(longer);
        }
        segs.sort();
        segs.dedup();
        for seg in &segs {
            assert_eq!(check_segment(seg), check_segment_fully(seg), "{seg:?}");
        }
        let long = format!("/{}", ["s"; 20].join("/"));
        assert_eq!(SplitPath::checked(&long).unwrap().segments(), ["s"; 20]);
    }
}
