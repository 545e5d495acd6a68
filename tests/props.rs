//! Property tests through the library's public API: the parsers never panic on
//! any input, and the pieces of the hot path agree with each other (a minted
//! key is found again through bearer parsing, prefix classification and the
//! digest index; a path built from a pattern is matched and binds what was put
//! in; a dot segment is refused however it is spelled).

use keygate::config::Config;
use keygate::model::key::{BearerError, KeyDigest, KeyType, Prefixes, bearer_token};
use keygate::model::pattern::{Pattern, SplitPath, check_path};
use keygate::snapshot::KeyIndex;
use proptest::prelude::*;
use std::fmt::Write as _;
use std::path::Path;

const TOML_PATH: &str = "/srv/keygate/keys.toml";
const JSON_PATH: &str = "/srv/keygate/keys.json";
const CONFIG_PATH: &str = "/srv/keygate/keygate.toml";

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig::with_cases(n)
}

// ------------------------------------------------------------ generators --

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A key body: 32..64 characters of `[A-Za-z0-9]`.
fn key_body() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(ALNUM), 32..=64)
        .prop_map(|b| String::from_utf8(b).expect("ASCII"))
}

/// One key to mint: its type and body.
#[derive(Debug, Clone)]
struct Minted {
    key_type: KeyType,
    key: String,
}

fn minted() -> impl Strategy<Value = Minted> {
    (any::<bool>(), key_body()).prop_map(|(company, body)| {
        let key_type = if company {
            KeyType::Company
        } else {
            KeyType::Workspace
        };
        let prefix = Prefixes::default().prefix(key_type).to_string();
        Minted {
            key_type,
            key: format!("{prefix}{body}"),
        }
    })
}

/// 1..6 keys with distinct texts (a repeated hash would refuse the snapshot).
fn minted_set() -> impl Strategy<Value = Vec<Minted>> {
    prop::collection::vec(minted(), 1..6).prop_filter("distinct keys", |ks| {
        let mut texts: Vec<&str> = ks.iter().map(|k| k.key.as_str()).collect();
        texts.sort_unstable();
        texts.windows(2).all(|w| w[0] != w[1])
    })
}

/// The TOML snapshot holding these keys (ids `k0`, `k1`, ...).
fn snapshot_toml(keys: &[Minted]) -> String {
    let mut t = String::from("[[workspaces]]\nid = \"ws_a\"\ncompany = \"acme\"\n\n");
    for (i, k) in keys.iter().enumerate() {
        writeln!(t, "[[keys]]").unwrap();
        writeln!(t, "id = \"k{i}\"").unwrap();
        writeln!(t, "name = \"key {i}\"").unwrap();
        writeln!(t, "type = \"{}\"", k.key_type).unwrap();
        writeln!(t, "company = \"acme\"").unwrap();
        if k.key_type == KeyType::Workspace {
            writeln!(t, "workspace = \"ws_a\"").unwrap();
        }
        writeln!(t, "scopes = [\"read:all\"]").unwrap();
        writeln!(
            t,
            "hash = \"{}\"",
            KeyDigest::of(k.key.as_bytes()).to_text()
        )
        .unwrap();
        writeln!(t, "created_at = \"2026-11-01T10:00:00Z\"\n").unwrap();
    }
    t
}

/// The same snapshot as JSON.
fn snapshot_json(keys: &[Minted]) -> String {
    let keys: Vec<serde_json::Value> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let mut v = serde_json::json!({
                "id": format!("k{i}"),
                "name": format!("key {i}"),
                "type": k.key_type.as_str(),
                "company": "acme",
                "scopes": ["read:all"],
                "hash": KeyDigest::of(k.key.as_bytes()).to_text(),
                "created_at": "2026-11-01T10:00:00Z",
            });
            if k.key_type == KeyType::Workspace {
                v["workspace"] = "ws_a".into();
            }
            v
        })
        .collect();
    serde_json::json!({
        "workspaces": [{"id": "ws_a", "company": "acme"}],
        "keys": keys,
    })
    .to_string()
}

/// A snapshot that exercises every field, for mutation.
fn rich_snapshot_toml() -> String {
    let c = KeyDigest::of(b"ord_c_AcmeAdmin0000000000000000000000000").to_text();
    let w = KeyDigest::of(b"ord_MarketingApp000000000000000000000000").to_text();
    format!(
        r#"[[workspaces]]
id = "ws_marketing"
company = "acme"

[[keys]]
id = "key_acme_ops"
name = "production-backend"
description = "Acme's backend"
type = "company"
company = "acme"
scopes = ["admin", "read:all"]
hash = "{c}"
created_at = "2026-11-01T10:00:00Z"
rate_limit = {{ requests = 1000, per_secs = 60, burst = 2000 }}

[[keys]]
id = "key_marketing_app"
name = "marketing-app"
type = "workspace"
company = "acme"
workspace = "ws_marketing"
scopes = ["read:all", "write:all"]
hash = "{w}"
created_at = 2026-11-01T10:00:00Z
expires_at = "2027-01-01T00:00:00Z"
revoked_at = "2026-12-01T00:00:00+01:00"
"#
    )
}

fn rich_snapshot_json() -> String {
    let c = KeyDigest::of(b"ord_c_AcmeAdmin0000000000000000000000000").to_text();
    serde_json::json!({
        "workspaces": [{"id": "ws_marketing", "company": "acme"}],
        "keys": [{
            "id": "key_acme_ops",
            "name": "production-backend",
            "type": "company",
            "company": "acme",
            "scopes": ["admin"],
            "hash": c,
            "created_at": "2026-11-01T10:00:00Z",
            "expires_at": "2027-01-01T00:00:00Z",
            "rate_limit": {"requests": 10, "per_secs": 1, "burst": 20}
        }]
    })
    .to_string()
}

/// A config that exercises most sections, for mutation.
const RICH_CONFIG: &str = r#"[server]
listen = ["127.0.0.1:8080"]
threads = 2
grace_period_secs = 10

[admin]
listen = "127.0.0.1:9091"
token_hash = "sha256:0000000000000000000000000000000000000000000000000000000000000000"

[keys]
snapshot = "keys.toml"
company_prefix = "ord_c_"
workspace_prefix = "ord_"
watch_secs = 5

[rate_limit]
requests = 100
per_secs = 60
burst = 200

[upstream_headers]
forward_authorization = false

[[upstreams]]
name = "api"
servers = ["127.0.0.1:9000", "localhost:9001"]
connect_timeout_ms = 2000
read_timeout_ms = 30000
health_check = { path = "/healthz", interval_secs = 5 }

[[routes]]
name = "company"
path = "/api/v1/company/workspaces/{workspace}/**"
upstream = "api"
auth = "company"
scope = "auto"
methods = ["GET", "post"]

[[routes]]
name = "health"
path = "/healthz"
upstream = "api"
auth = "none"
scope = "none"
"#;

/// An edit of a text at a character position.
#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, char),
    Delete(usize),
    Replace(usize, char),
}

/// Characters that matter to TOML and JSON syntax, plus anything at all.
fn edit_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => prop::sample::select(vec![
            '"', '\'', '[', ']', '{', '}', '=', ',', ':', '\n', '#', '\\', '.', '-', '0', '9', 'z',
            ' ', 'T', 'Z', '+',
        ]),
        1 => any::<char>(),
    ]
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec(
        prop_oneof![
            (any::<usize>(), edit_char()).prop_map(|(i, c)| Edit::Insert(i, c)),
            any::<usize>().prop_map(Edit::Delete),
            (any::<usize>(), edit_char()).prop_map(|(i, c)| Edit::Replace(i, c)),
        ],
        1..8,
    )
}

/// Applies edits at character positions (modulo the length), keeping UTF-8.
fn mutate(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        match *e {
            Edit::Insert(i, c) => {
                let at = i % (chars.len() + 1);
                chars.insert(at, c);
            }
            Edit::Delete(i) if !chars.is_empty() => {
                let at = i % chars.len();
                chars.remove(at);
            }
            Edit::Replace(i, c) if !chars.is_empty() => {
                let at = i % chars.len();
                chars[at] = c;
            }
            _ => {}
        }
    }
    chars.into_iter().collect()
}

/// A path segment the path checks accept and that no pattern syntax claims:
/// a literal for a pattern.
fn literal_segment() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_~-][A-Za-z0-9._~-]{0,11}"
        .prop_filter("not a dot segment", |s| s != "." && s != "..")
}

/// Any non-empty text that is not a dot segment and holds no `/`, `\` or NUL:
/// what a `{workspace}`, `*` or `**` segment may decode to. A dot segment is
/// judged on the part before its first `;` (`.;x` is one), as the gateway does.
fn segment_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[A-Za-z0-9_.~-]{1,24}",
        1 => "\\PC{1,12}",
    ]
    .prop_filter("valid segment text", |s| {
        let head = s.split(';').next().unwrap_or_default();
        !s.is_empty() && head != "." && head != ".." && !s.contains(['/', '\\', '\0'])
    })
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Percent-encodes `text`: every byte that is not unreserved, and each
/// unreserved byte whose flag says so; hex digits in the case `upper` picks.
fn encode(text: &str, flags: &[bool], upper: &[bool]) -> String {
    let mut out = String::new();
    for (i, b) in text.bytes().enumerate() {
        let forced = !is_unreserved(b);
        if forced || flags.get(i % flags.len().max(1)).copied().unwrap_or(false) {
            if upper.get(i % upper.len().max(1)).copied().unwrap_or(true) {
                write!(out, "%{b:02X}").unwrap();
            } else {
                write!(out, "%{b:02x}").unwrap();
            }
        } else {
            out.push(b as char);
        }
    }
    out
}

/// One segment of a generated pattern.
#[derive(Debug, Clone)]
enum PatSeg {
    Literal(String),
    Any,
    Workspace,
}

/// A pattern with exactly one `{workspace}`, literals and `*`, maybe `**` last.
fn pattern_parts() -> impl Strategy<Value = (Vec<PatSeg>, bool)> {
    (
        prop::collection::vec(
            prop_oneof![
                3 => literal_segment().prop_map(PatSeg::Literal),
                1 => Just(PatSeg::Any),
            ],
            0..6,
        ),
        any::<usize>(),
        any::<bool>(),
    )
        .prop_map(|(mut segs, at, rest)| {
            let at = at % (segs.len() + 1);
            segs.insert(at, PatSeg::Workspace);
            (segs, rest)
        })
}

fn pattern_text(segs: &[PatSeg], rest: bool) -> String {
    let mut t = String::new();
    for s in segs {
        t.push('/');
        match s {
            PatSeg::Literal(l) => t.push_str(l),
            PatSeg::Any => t.push('*'),
            PatSeg::Workspace => t.push_str("{workspace}"),
        }
    }
    if rest {
        t.push_str("/**");
    }
    t
}

/// How a dot segment is spelled: each dot raw, `%2e` or `%2E`.
fn dot_segment() -> impl Strategy<Value = String> {
    (1usize..=2, prop::collection::vec(0u8..3, 2)).prop_map(|(n, spell)| {
        spell[..n]
            .iter()
            .map(|s| match s {
                0 => ".",
                1 => "%2e",
                _ => "%2E",
            })
            .collect()
    })
}

// ------------------------------------------------------------- no panic --

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn bearer_token_never_panics_and_returns_a_clean_token(
        values in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 0..3),
    ) {
        match bearer_token(values.iter().map(|v| v.as_slice())) {
            Ok(token) => {
                prop_assert_eq!(values.len(), 1);
                prop_assert!(!token.is_empty());
                prop_assert!(!token.contains(&b' ') && !token.contains(&b'\t'));
            }
            Err(BearerError::Ambiguous) => prop_assert!(values.len() > 1),
            Err(BearerError::Missing) => prop_assert!(values.len() <= 1),
        }
    }

    #[test]
    fn bearer_scheme_with_random_text_after_it_never_panics(
        scheme in "[bB][eE][aA][rR][eE][rR]",
        gap in "[ \t]{0,4}",
        rest in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut v = format!("{scheme}{gap}").into_bytes();
        v.extend_from_slice(&rest);
        let _ = bearer_token(std::iter::once(v.as_slice()));
    }

    #[test]
    fn classify_never_panics_and_only_claims_a_configured_prefix(
        token in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let p = Prefixes::default();
        match p.classify(&token) {
            Some(t) => {
                let prefix = p.prefix(t).as_bytes();
                prop_assert!(token.starts_with(prefix) && token.len() > prefix.len());
                if t == KeyType::Workspace {
                    // The longer company prefix would have won.
                    prop_assert!(!token.starts_with(b"ord_c_") || token.len() == 6);
                }
            }
            None => prop_assert!(
                !token.starts_with(b"ord_")
                    || token.len() <= 4
                    || token.len() > keygate::model::key::MAX_TOKEN_LEN
            ),
        }
    }

    #[test]
    fn classify_on_prefixed_bytes_never_panics(
        prefix in prop::sample::select(vec!["ord_", "ord_c_", "ord_c", "ord", ""]),
        rest in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut t = prefix.as_bytes().to_vec();
        t.extend_from_slice(&rest);
        let _ = Prefixes::default().classify(&t);
    }

    #[test]
    fn path_checks_and_matching_never_panic(path in "\\PC{0,64}", pattern in "/\\PC{0,32}") {
        let _ = check_path(&path);
        if let Ok(p) = pattern.parse::<Pattern>() {
            let whole = p.matches(&path);
            let split = SplitPath::new(&path).and_then(|s| p.matches_split(&s));
            prop_assert_eq!(whole, split);
        }
    }

    #[test]
    fn path_checks_and_matching_never_panic_on_path_alphabet(
        path in "/[a-z%2eE5cCfF0./\\\\{}*]{0,40}",
    ) {
        let _ = check_path(&path);
        for pattern in ["/**", "/*/**", "/a/{workspace}/**", "/{workspace}", "/a/*/c"] {
            let p: Pattern = pattern.parse().expect("a valid pattern");
            let _ = p.matches(&path);
        }
    }

    #[test]
    fn pattern_parsing_never_panics(text in "\\PC{0,48}") {
        if let Ok(p) = text.parse::<Pattern>() {
            prop_assert_eq!(p.as_str(), text.as_str());
            let _ = p.matches(&text);
        }
    }

    #[test]
    fn pattern_parsing_never_panics_on_pattern_alphabet(text in "[/a{}*.%workspace]{0,40}") {
        if let Ok(p) = text.parse::<Pattern>() {
            let _ = p.binds_workspace();
            let _ = p.matches(&text.replace("{workspace}", "ws").replace('*', "x"));
        }
    }

    #[test]
    fn digest_parse_never_panics(text in "(sha256:)?\\PC{0,70}") {
        if let Ok(d) = KeyDigest::parse(&text) {
            prop_assert_eq!(d.to_text(), text);
        }
    }
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn snapshot_parse_never_panics_on_any_text(text in "\\PC{0,400}") {
        let _ = KeyIndex::parse(Path::new(TOML_PATH), &text);
        let _ = KeyIndex::parse(Path::new(JSON_PATH), &text);
    }

    #[test]
    fn snapshot_parse_never_panics_on_a_mutated_toml_snapshot(e in edits()) {
        let base = rich_snapshot_toml();
        prop_assert!(KeyIndex::parse(Path::new(TOML_PATH), &base).is_ok());
        let text = mutate(&base, &e);
        if let Err(p) = KeyIndex::parse(Path::new(TOML_PATH), &text) {
            prop_assert!(!p.0.is_empty());
            prop_assert!(p.0.iter().all(|x| x.location.starts_with(TOML_PATH)), "{}", p);
        }
    }

    #[test]
    fn snapshot_parse_never_panics_on_a_mutated_json_snapshot(e in edits()) {
        let base = rich_snapshot_json();
        prop_assert!(KeyIndex::parse(Path::new(JSON_PATH), &base).is_ok());
        let text = mutate(&base, &e);
        if let Err(p) = KeyIndex::parse(Path::new(JSON_PATH), &text) {
            prop_assert!(!p.0.is_empty());
            prop_assert!(p.0.iter().all(|x| x.location.starts_with(JSON_PATH)), "{}", p);
        }
    }

    #[test]
    fn config_parse_never_panics_on_any_text(text in "\\PC{0,400}") {
        let _ = Config::parse(Path::new(CONFIG_PATH), &text);
    }

    #[test]
    fn config_parse_never_panics_on_a_mutated_config(e in edits()) {
        prop_assert!(Config::parse(Path::new(CONFIG_PATH), RICH_CONFIG).is_ok());
        let text = mutate(RICH_CONFIG, &e);
        if let Err(p) = Config::parse(Path::new(CONFIG_PATH), &text) {
            prop_assert!(!p.0.is_empty());
            prop_assert!(p.0.iter().all(|x| x.location.starts_with(CONFIG_PATH)), "{}", p);
        }
    }
}

// ----------------------------------------------------------- round trips --

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn a_minted_key_is_found_through_bearer_prefix_and_digest(
        keys in minted_set(),
        pick in any::<prop::sample::Index>(),
        scheme_upper in prop::collection::vec(any::<bool>(), 6),
        gap in "[ \t]{1,4}",
        lead in "[ \t]{0,2}",
        tail in prop_oneof![Just(String::new()), "[ \t][ -~]{0,10}"],
        json in any::<bool>(),
    ) {
        let (path, text) = if json {
            (JSON_PATH, snapshot_json(&keys))
        } else {
            (TOML_PATH, snapshot_toml(&keys))
        };
        let index = match KeyIndex::parse(Path::new(path), &text) {
            Ok(i) => i,
            Err(p) => return Err(TestCaseError::fail(format!("snapshot refused: {p}"))),
        };
        prop_assert_eq!(index.len(), keys.len());

        let i = pick.index(keys.len());
        let chosen = &keys[i];
        let scheme: String = "bearer"
            .chars()
            .zip(&scheme_upper)
            .map(|(c, up)| if *up { c.to_ascii_uppercase() } else { c })
            .collect();
        let header = format!("{lead}{scheme}{gap}{}{tail}", chosen.key);
        let token = bearer_token(std::iter::once(header.as_bytes()));
        prop_assert_eq!(token, Ok(chosen.key.as_bytes()));
        let token = token.expect("checked above");

        prop_assert_eq!(Prefixes::default().classify(token), Some(chosen.key_type));
        let (_, record) = index
            .lookup(&KeyDigest::of(token))
            .ok_or_else(|| TestCaseError::fail("minted key not found"))?;
        let expected_id = format!("k{i}");
        prop_assert_eq!(record.id(), expected_id.as_str());
        prop_assert_eq!(record.key_type, chosen.key_type);
    }

    #[test]
    fn only_snapshot_keys_are_found(
        keys in minted_set(),
        other in minted(),
    ) {
        let index = KeyIndex::parse(Path::new(TOML_PATH), &snapshot_toml(&keys))
            .map_err(|p| TestCaseError::fail(format!("snapshot refused: {p}")))?;
        let held = keys.iter().position(|k| k.key == other.key);
        let found = index.lookup(&KeyDigest::of(other.key.as_bytes()));
        match held {
            Some(i) => {
                let expected = format!("k{i}");
                prop_assert_eq!(found.map(|(_, r)| r.id()), Some(expected.as_str()));
            }
            None => prop_assert!(found.is_none()),
        }
    }

    #[test]
    fn digest_text_round_trips(key in prop::collection::vec(any::<u8>(), 0..128)) {
        let d = KeyDigest::of(&key);
        let text = d.to_text();
        prop_assert!(text.starts_with("sha256:") && text.len() == 71);
        prop_assert_eq!(KeyDigest::parse(&text), Ok(d));
        prop_assert!(KeyDigest::parse(&text.to_uppercase()).is_err());
    }
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn a_path_built_from_a_pattern_matches_and_binds_its_workspace(
        (segs, rest) in pattern_parts(),
        workspace in segment_text(),
        fillers in prop::collection::vec(segment_text(), 8),
        rest_count in 0usize..4,
        encode_ws in any::<bool>(),
        flags in prop::collection::vec(any::<bool>(), 1..8),
        upper in prop::collection::vec(any::<bool>(), 1..8),
    ) {
        let pattern_src = pattern_text(&segs, rest);
        let pattern: Pattern = pattern_src
            .parse()
            .map_err(|e| TestCaseError::fail(format!("{pattern_src}: {e}")))?;
        prop_assert!(pattern.binds_workspace());

        let ws_raw = if encode_ws {
            encode(&workspace, &flags, &upper)
        } else {
            // Raw, only the bytes that must be escaped are.
            encode(&workspace, &[false], &upper)
        };
        let mut fill = fillers.iter().cycle().map(|f| encode(f, &[false], &upper));
        let mut path = String::new();
        for s in &segs {
            path.push('/');
            match s {
                PatSeg::Literal(l) => path.push_str(l),
                PatSeg::Any => path.push_str(&fill.next().expect("cycle")),
                PatSeg::Workspace => path.push_str(&ws_raw),
            }
        }
        if rest {
            for _ in 0..rest_count {
                path.push('/');
                path.push_str(&fill.next().expect("cycle"));
            }
        }
        if path.is_empty() {
            path.push('/');
        }

        prop_assert_eq!(check_path(&path), Ok(()), "{}", path);
        let m = pattern
            .matches(&path)
            .ok_or_else(|| TestCaseError::fail(format!("{pattern_src} does not match {path}")))?;
        prop_assert_eq!(m.workspace.as_deref(), Some(workspace.as_str()), "{}", path);
    }

    #[test]
    fn a_literal_written_percent_encoded_still_matches(
        lits in prop::collection::vec(literal_segment(), 1..5),
        flags in prop::collection::vec(any::<bool>(), 1..8),
        upper in prop::collection::vec(any::<bool>(), 1..8),
    ) {
        let pattern_src: String = lits.iter().map(|l| format!("/{l}")).collect();
        let pattern: Pattern = pattern_src.parse().expect("literal pattern");
        let path: String = lits.iter().map(|l| format!("/{}", encode(l, &flags, &upper))).collect();
        prop_assert_eq!(check_path(&path), Ok(()), "{}", path);
        prop_assert!(pattern.matches(&path).is_some(), "{} vs {}", pattern_src, path);
    }

    #[test]
    fn a_dot_segment_is_always_refused(
        before in prop::collection::vec(segment_text(), 0..4),
        after in prop::collection::vec(segment_text(), 0..4),
        dots in dot_segment(),
        upper in prop::collection::vec(any::<bool>(), 1..4),
        trailing_slash in any::<bool>(),
    ) {
        let mut path = String::new();
        for s in &before {
            path.push('/');
            path.push_str(&encode(s, &[false], &upper));
        }
        path.push('/');
        path.push_str(&dots);
        for s in &after {
            path.push('/');
            path.push_str(&encode(s, &[false], &upper));
        }
        if trailing_slash {
            path.push('/');
        }
        prop_assert!(check_path(&path).is_err(), "{} was accepted", path);
    }
}
