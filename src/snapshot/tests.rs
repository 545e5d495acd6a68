use super::*;

const TOML_PATH: &str = "/srv/keygate/keys.toml";
const JSON_PATH: &str = "/srv/keygate/keys.json";

/// 2026-11-01T10:00:00Z
const CREATED: i64 = 1_793_527_200;

const COMPANY_KEY: &str = "ord_c_AcmeAdmin0000000000000000000000000";
const WORKSPACE_KEY: &str = "ord_MarketingApp000000000000000000000000";

fn hash(key: &str) -> String {
    KeyDigest::of(key.as_bytes()).to_text()
}

const WORKSPACES: &str = r#"[[workspaces]]
id = "ws_marketing"
company = "acme"

[[workspaces]]
id = "ws_sales"
company = "acme"

[[workspaces]]
id = "ws_research"
company = "globex"
"#;

fn company_key_toml() -> String {
    format!(
        r#"
[[keys]]
id = "key_acme_ops"
name = "production-backend"
description = "Acme's backend"
type = "company"
company = "acme"
scopes = ["admin"]
hash = "{}"
created_at = "2026-11-01T10:00:00Z"
rate_limit = {{ requests = 1000, per_secs = 60, burst = 2000 }}
"#,
        hash(COMPANY_KEY)
    )
}

fn workspace_key_toml() -> String {
    format!(
        r#"
[[keys]]
id = "key_marketing_app"
name = "marketing-app"
type = "workspace"
company = "acme"
workspace = "ws_marketing"
scopes = ["read:all", "write:all"]
hash = "{}"
created_at = "2026-11-01T10:00:00Z"
expires_at = "2027-01-01T00:00:00Z"
revoked_at = "2026-12-01T00:00:00+01:00"
"#,
        hash(WORKSPACE_KEY)
    )
}

/// Three workspaces of two companies and two good keys; tests append keys.
fn base_toml() -> String {
    format!("{WORKSPACES}{}{}", company_key_toml(), workspace_key_toml())
}

/// A workspace key of ws_sales with `extra` lines and `hash` of `key`.
fn key_toml(id: &str, key: &str, extra: &str) -> String {
    format!(
        "\n[[keys]]\nid = \"{id}\"\nname = \"n\"\ntype = \"workspace\"\ncompany = \"acme\"\n\
         workspace = \"ws_sales\"\nscopes = [\"read:all\"]\nhash = \"{}\"\n\
         created_at = \"2026-11-01T10:00:00Z\"\n{extra}",
        hash(key)
    )
}

fn parse_toml_text(text: &str) -> Result<KeyIndex, Problems> {
    KeyIndex::parse(Path::new(TOML_PATH), text)
}

fn ok_toml(text: &str) -> KeyIndex {
    match parse_toml_text(text) {
        Ok(i) => i,
        Err(p) => panic!("snapshot refused:\n{p}"),
    }
}

fn refused(path: &str, text: &str) -> Problems {
    match KeyIndex::parse(Path::new(path), text) {
        Ok(_) => panic!("snapshot accepted:\n{text}"),
        Err(p) => {
            assert!(!p.0.is_empty());
            p
        }
    }
}

/// The 1-based line of the `n`th (0-based) line equal to `line`.
fn nth_line(text: &str, line: &str, n: usize) -> usize {
    text.lines()
        .enumerate()
        .filter(|(_, l)| *l == line)
        .nth(n)
        .unwrap_or_else(|| panic!("no {n}th {line:?}"))
        .0
        + 1
}

/// Base snapshot plus one key that is wrong in one way: exactly one problem,
/// at that key's `[[keys]]` line, with exactly `message`.
fn assert_key_refused(extra_key: &str, message: &str) {
    let text = format!("{}{extra_key}", base_toml());
    let problems = refused(TOML_PATH, &text);
    let line = nth_line(&text, "[[keys]]", 2);
    assert_eq!(
        problems.0,
        vec![Problem {
            location: format!("{TOML_PATH}:{line}"),
            message: message.into(),
        }],
        "{problems}"
    );
    assert!(
        problems
            .to_string()
            .starts_with(&format!("{TOML_PATH}:{line}: "))
    );
}

fn json_snapshot(keys: &str) -> String {
    format!(
        r#"{{
  "workspaces": [
    {{"id": "ws_marketing", "company": "acme"}},
    {{"id": "ws_research", "company": "globex"}}
  ],
  "keys": [{keys}]
}}"#
    )
}

fn json_key(id: &str, key: &str, extra: &str) -> String {
    format!(
        r#"{{"id": "{id}", "name": "n", "type": "workspace", "company": "acme",
  "workspace": "ws_marketing", "scopes": ["read:all"], "hash": "{}",
  "created_at": "2026-11-01T10:00:00Z"{extra}}}"#,
        hash(key)
    )
}

// ---- accepted snapshots ----

#[test]
fn toml_snapshot_is_indexed_with_every_field() {
    let index = ok_toml(&base_toml());
    assert_eq!(index.len(), 2);
    assert!(!index.is_empty());
    assert_eq!(index.workspace_count(), 3);
    assert_eq!(
        index.workspace_company("ws_research").map(|c| &**c),
        Some("globex")
    );
    assert_eq!(index.workspace_company("ws_nope"), None);

    let (slot, company) = index
        .lookup(&KeyDigest::of(COMPANY_KEY.as_bytes()))
        .unwrap();
    assert_eq!(company.id(), "key_acme_ops");
    assert_eq!(company.name(), "production-backend");
    assert_eq!(company.description(), Some("Acme's backend"));
    assert_eq!(
        *company,
        KeyRecord {
            text: "key_acme_opsproduction-backendAcme's backend".into(),
            name_at: 12,
            description_at: Some(30),
            replaces_at: None,
            key_type: KeyType::Company,
            company: "acme".into(),
            workspace: None,
            scopes: Scopes::NONE.with(Scope::Admin),
            created_at: CREATED,
            expires_at: None,
            revoked_at: None,
            rate_limit: Some(Limit::from_raw(1000, 60, Some(2000)).unwrap()),
        }
    );
    assert_eq!(index.record(slot).id(), "key_acme_ops");
    assert_eq!(*index.digest(slot), KeyDigest::of(COMPANY_KEY.as_bytes()));

    let (_, ws) = index
        .lookup(&KeyDigest::of(WORKSPACE_KEY.as_bytes()))
        .unwrap();
    assert_eq!(ws.id(), "key_marketing_app");
    assert_eq!(ws.key_type, KeyType::Workspace);
    assert_eq!(ws.workspace.as_deref(), Some("ws_marketing"));
    assert_eq!(ws.scopes, Scopes::NONE.with(Scope::Read).with(Scope::Write));
    assert_eq!(ws.description(), None);
    assert_eq!(ws.rate_limit, None);
    // 2027-01-01T00:00:00Z and 2026-12-01T00:00:00+01:00 (= 2026-11-30T23:00:00Z).
    assert_eq!(ws.expires_at, Some(1_798_761_600));
    assert_eq!(ws.revoked_at, Some(1_796_079_600));

    let ids: Vec<&str> = index.records().iter().map(|r| r.id()).collect();
    assert_eq!(ids, ["key_acme_ops", "key_marketing_app"], "file order");
}

#[test]
fn lookup_by_digest_misses_unknown_keys() {
    let index = ok_toml(&base_toml());
    assert_eq!(index.lookup(&KeyDigest::of(b"ord_c_unknown")), None);
    // The digest is of the whole key text, prefix included.
    assert_eq!(
        index.lookup(&KeyDigest::of(&COMPANY_KEY.as_bytes()[6..])),
        None
    );
}

#[test]
fn by_id_finds_the_record_and_its_slot() {
    let index = ok_toml(&base_toml());
    let (slot, r) = index.by_id("key_marketing_app").unwrap();
    assert_eq!(r.name(), "marketing-app");
    assert_eq!(index.record(slot), r);
    assert!(index.by_id("key_nope").is_none());
}

#[test]
fn rate_limit_burst_defaults_to_requests() {
    let text = format!(
        "{}{}",
        base_toml(),
        key_toml(
            "k_rl",
            "ord_RateLimited0000000000000000000000000",
            "rate_limit = { requests = 5, per_secs = 1 }\n"
        )
    );
    let index = ok_toml(&text);
    let (_, r) = index.by_id("k_rl").unwrap();
    assert_eq!(r.rate_limit, Some(Limit::from_raw(5, 1, Some(5)).unwrap()));
}

#[test]
fn native_toml_datetimes_are_accepted() {
    let text = format!(
        "{}{}",
        base_toml(),
        key_toml(
            "k_native",
            "ord_NativeDates000000000000000000000000",
            "expires_at = 2027-01-01T00:00:00Z\nrevoked_at = 2026-12-01T01:00:00+01:00\n"
        )
    )
    .replace(
        "created_at = \"2026-11-01T10:00:00Z\"\nexpires_at = 2027",
        "created_at = 2026-11-01T10:00:00Z\nexpires_at = 2027",
    );
    assert!(text.contains("created_at = 2026-11-01T10:00:00Z\n"));
    let index = ok_toml(&text);
    let (_, r) = index.by_id("k_native").unwrap();
    assert_eq!(r.created_at, CREATED);
    assert_eq!(r.expires_at, Some(1_798_761_600));
    assert_eq!(r.revoked_at, Some(1_796_083_200));
}

#[test]
fn empty_snapshot_is_accepted() {
    let index = ok_toml("");
    assert!(index.is_empty());
    assert_eq!(index.workspace_count(), 0);
}

#[test]
fn json_snapshot_is_accepted() {
    let text = json_snapshot(&format!(
        "{},\n{}",
        json_key(
            "k_json",
            WORKSPACE_KEY,
            r#", "expires_at": "2027-01-01T00:00:00Z""#
        ),
        r#"{"id": "k_json_co", "name": "co", "type": "company", "company": "globex",
  "scopes": ["admin", "read:all"], "hash": "HASH", "created_at": "2026-11-01T10:00:00Z",
  "rate_limit": {"requests": 10, "per_secs": 2, "burst": 3}}"#
            .replace("HASH", &hash(COMPANY_KEY))
    ));
    let index = match KeyIndex::parse(Path::new(JSON_PATH), &text) {
        Ok(i) => i,
        Err(p) => panic!("{p}"),
    };
    assert_eq!(index.len(), 2);
    assert_eq!(index.workspace_count(), 2);
    let (_, ws) = index
        .lookup(&KeyDigest::of(WORKSPACE_KEY.as_bytes()))
        .unwrap();
    assert_eq!(ws.id(), "k_json");
    assert_eq!(ws.workspace.as_deref(), Some("ws_marketing"));
    assert_eq!(ws.created_at, CREATED);
    assert_eq!(ws.expires_at, Some(1_798_761_600));
    let (_, co) = index
        .lookup(&KeyDigest::of(COMPANY_KEY.as_bytes()))
        .unwrap();
    assert_eq!(co.key_type, KeyType::Company);
    assert_eq!(&*co.company, "globex");
    assert_eq!(co.scopes, Scopes::NONE.with(Scope::Read).with(Scope::Admin));
    assert_eq!(
        co.rate_limit,
        Some(Limit::from_raw(10, 2, Some(3)).unwrap())
    );
}

#[test]
fn snapshot_with_another_extension_is_refused() {
    let problems = refused("/srv/keygate/keys.yaml", "");
    assert_eq!(
        problems.to_string(),
        "/srv/keygate/keys.yaml: the key snapshot's name must end in .toml or .json"
    );
}

// ---- refusals (TOML): file and line ----

#[test]
fn unknown_field_is_refused_with_line() {
    let extra = key_toml(
        "k_x",
        "ord_Extra00000000000000000000000000000",
        "colour = \"red\"\n",
    );
    let text = format!("{}{extra}", base_toml());
    let problems = refused(TOML_PATH, &text);
    assert_eq!(problems.0.len(), 1, "{problems}");
    assert_eq!(
        problems.0[0].location,
        format!("{TOML_PATH}:{}", text.lines().count())
    );
    assert!(
        problems.0[0].message.contains("unknown field `colour`"),
        "{problems}"
    );
}

#[test]
fn every_unknown_field_is_reported_and_the_rest_checked() {
    let text = format!(
        "{}{}{}",
        base_toml(),
        key_toml(
            "k_x",
            "ord_Extra00000000000000000000000000000",
            "colour = \"red\"\n"
        ),
        key_toml(
            "k_y",
            "ord_Extra00000000000000000000000000001",
            "size = 3\n"
        )
        .replace("[\"read:all\"]", "[\"root\"]"),
    );
    let problems = refused(TOML_PATH, &text);
    let got: Vec<String> = problems.0.iter().map(|p| p.to_string()).collect();
    assert_eq!(got.len(), 3, "{problems}");
    let line = |needle: &str| text.lines().position(|l| l.starts_with(needle)).unwrap() + 1;
    assert!(
        got[0].starts_with(&format!(
            "{TOML_PATH}:{}: unknown field `colour`",
            line("colour")
        )),
        "{problems}"
    );
    assert!(
        got[1].starts_with(&format!(
            "{TOML_PATH}:{}: unknown field `size`",
            line("size")
        )),
        "{problems}"
    );
    assert!(
        got[2].contains("k_y") && got[2].contains("root"),
        "{problems}"
    );
}

#[test]
fn a_json_record_serde_refuses_is_named_by_its_id() {
    let text = json_snapshot(&format!(
        "{},\n{}",
        json_key(
            "k_a",
            "ord_Json0000000000000000000000000000000",
            r#", "colour": 1"#
        ),
        json_key(
            "k_b",
            "ord_Json0000000000000000000000000000001",
            r#", "scopes": "admin""#
        )
        .replace(r#""scopes": ["read:all"], "#, ""),
    ));
    let problems = refused(JSON_PATH, &text);
    let got: Vec<String> = problems.0.iter().map(|p| p.to_string()).collect();
    assert_eq!(got.len(), 2, "{problems}");
    let line = text.lines().position(|l| l.contains("\"colour\"")).unwrap() + 1;
    assert!(
        got[0].starts_with(&format!(
            "{JSON_PATH}:{line}: key \"k_a\": unknown field `colour`"
        )),
        "{problems}"
    );
    assert!(
        got[1].starts_with(&format!("{JSON_PATH}: key \"k_b\": invalid type: string")),
        "{problems}"
    );
    // Not JSON at all: the parser's line and column.
    let problems = refused(JSON_PATH, "{\"keys\": [\n{]}");
    assert!(
        problems.0[0]
            .location
            .starts_with(&format!("{JSON_PATH}:2")),
        "{problems}"
    );
}

#[test]
fn unknown_top_level_and_workspace_fields_are_refused_with_line() {
    let problems = refused(TOML_PATH, "[[teams]]\nid = \"t\"\n");
    assert_eq!(problems.0[0].location, format!("{TOML_PATH}:1"));
    assert!(problems.0[0].message.contains("unknown field `teams`"));
    let problems = refused(
        TOML_PATH,
        "[[workspaces]]\nid = \"w\"\ncompany = \"c\"\nowner = \"x\"\n",
    );
    assert_eq!(problems.0[0].location, format!("{TOML_PATH}:4"));
    assert!(problems.0[0].message.contains("unknown field `owner`"));
}

#[test]
fn wrong_type_is_refused_with_line() {
    let extra = key_toml("k_x", "ord_WrongType000000000000000000000000", "")
        .replace("scopes = [\"read:all\"]", "scopes = \"read:all\"");
    let text = format!("{}{extra}", base_toml());
    let problems = refused(TOML_PATH, &text);
    assert_eq!(problems.0.len(), 1, "{problems}");
    let line = text
        .lines()
        .position(|l| l == "scopes = \"read:all\"")
        .unwrap()
        + 1;
    assert_eq!(problems.0[0].location, format!("{TOML_PATH}:{line}"));
    assert!(
        problems.0[0].message.contains("invalid type: string"),
        "{problems}"
    );
}

#[test]
fn missing_required_field_is_refused() {
    let extra = key_toml("k_x", "ord_NoHash0000000000000000000000000000", "")
        .lines()
        .filter(|l| !l.starts_with("hash"))
        .collect::<Vec<_>>()
        .join("\n");
    let text = format!("{}{extra}\n", base_toml());
    let problems = refused(TOML_PATH, &text);
    assert!(
        problems.0[0].message.contains("missing field `hash`"),
        "{problems}"
    );
    assert!(problems.0[0].location.starts_with(&format!("{TOML_PATH}:")));
}

#[test]
fn duplicate_key_id_is_refused_at_the_second_key() {
    assert_key_refused(
        &key_toml("key_acme_ops", "ord_Different000000000000000000000000", ""),
        "key \"key_acme_ops\": duplicate key id",
    );
}

#[test]
fn duplicate_hash_is_refused_without_printing_the_hash() {
    let extra = key_toml("k_copy", WORKSPACE_KEY, "");
    assert_key_refused(
        &extra,
        "key \"k_copy\": the same hash appears on another key",
    );
    let text = format!("{}{extra}", base_toml());
    let rendered = refused(TOML_PATH, &text).to_string();
    let hex = hash(WORKSPACE_KEY)
        .trim_start_matches("sha256:")
        .to_string();
    assert!(!rendered.contains(&hex), "{rendered}");
    assert!(!rendered.contains(&hex[..16]), "{rendered}");
}

#[test]
fn bad_hash_formats_are_refused() {
    let good = hash("ord_Whatever000000000000000000000000000");
    let hex = good.trim_start_matches("sha256:");
    for bad in [
        good.to_uppercase(),
        format!("sha256:{}", hex.to_uppercase()),
        format!("SHA256:{hex}"),
        format!("sha1:{hex}"),
        hex.to_string(),
        format!("sha256:{}", &hex[..63]),
        format!("sha256:{hex}0"),
        format!("sha256:{}g", &hex[..63]),
        format!("sha256: {hex}"),
        String::new(),
    ] {
        let extra = key_toml("k_bad", "ord_x", "").replace(&hash("ord_x"), &bad);
        assert_key_refused(
            &extra,
            "key \"k_bad\": hash must be \"sha256:\" followed by 64 lowercase hex digits",
        );
    }
}

#[test]
fn unknown_scope_is_refused() {
    for scope in ["read", "write", "Admin", "read:*", ""] {
        let extra = key_toml("k_s", "ord_Scope0000000000000000000000000000", "").replace(
            "scopes = [\"read:all\"]",
            &format!("scopes = [\"read:all\", {scope:?}]"),
        );
        assert_key_refused(
            &extra,
            &format!(
                "key \"k_s\": unknown scope {scope:?} (expected \"read:all\", \"write:all\" or \"admin\")"
            ),
        );
    }
}

#[test]
fn unknown_key_type_is_refused() {
    let extra = key_toml("k_t", "ord_Type00000000000000000000000000000", "")
        .replace("type = \"workspace\"", "type = \"team\"");
    assert_key_refused(
        &extra,
        "key \"k_t\": type must be \"company\" or \"workspace\" (got \"team\")",
    );
}

#[test]
fn workspace_key_without_workspace_is_refused() {
    let extra = key_toml("k_w", "ord_NoWorkspace0000000000000000000000", "")
        .replace("workspace = \"ws_sales\"\n", "");
    assert_key_refused(
        &extra,
        "key \"k_w\": a workspace key must name its workspace",
    );
}

#[test]
fn workspace_key_with_unlisted_workspace_is_refused() {
    let extra = key_toml("k_w", "ord_Unlisted000000000000000000000000", "")
        .replace("\"ws_sales\"", "\"ws_nowhere\"");
    assert_key_refused(
        &extra,
        "key \"k_w\": workspace \"ws_nowhere\" is not listed in [[workspaces]]",
    );
}

#[test]
fn workspace_key_with_workspace_of_another_company_is_refused() {
    let extra = key_toml("k_w", "ord_OtherCompany00000000000000000000", "")
        .replace("\"ws_sales\"", "\"ws_research\"");
    assert_key_refused(
        &extra,
        "key \"k_w\": workspace \"ws_research\" belongs to company \"globex\", not \"acme\"",
    );
}

#[test]
fn company_key_naming_a_workspace_is_refused() {
    let extra = key_toml("k_c", "ord_c_CompanyWithWs000000000000000000", "")
        .replace("type = \"workspace\"", "type = \"company\"");
    assert_key_refused(
        &extra,
        "key \"k_c\": a company key must not name a workspace (got \"ws_sales\")",
    );
}

#[test]
fn zero_or_negative_rate_limit_numbers_are_refused() {
    for (rate, message) in [
        (
            "{ requests = 0, per_secs = 60 }",
            "requests must be a whole number from 1 to 4294967295 (got 0)",
        ),
        (
            "{ requests = -1, per_secs = 60 }",
            "requests must be a whole number from 1 to 4294967295 (got -1)",
        ),
        (
            "{ requests = 10, per_secs = 0 }",
            "per_secs must be a whole number from 1 to 4294967295 (got 0)",
        ),
        (
            "{ requests = 10, per_secs = -60 }",
            "per_secs must be a whole number from 1 to 4294967295 (got -60)",
        ),
        (
            "{ requests = 10, per_secs = 60, burst = 0 }",
            "burst must be a whole number from 1 to 4294967295 (got 0)",
        ),
        (
            "{ requests = 10, per_secs = 60, burst = -2 }",
            "burst must be a whole number from 1 to 4294967295 (got -2)",
        ),
    ] {
        let extra = key_toml(
            "k_rl",
            "ord_Rate000000000000000000000000000000",
            &format!("rate_limit = {rate}\n"),
        );
        assert_key_refused(&extra, &format!("key \"k_rl\": rate_limit: {message}"));
    }
}

#[test]
fn bad_dates_are_refused() {
    for (field, value, message) in [
        (
            "expires_at",
            "\"2027-01-01\"",
            "expires_at: \"2027-01-01\" is not an RFC 3339 date-time (like 2026-11-01T10:00:00Z)",
        ),
        (
            "expires_at",
            "\"2027-01-01 00:00:00\"",
            "expires_at: \"2027-01-01 00:00:00\" is not an RFC 3339 date-time (like 2026-11-01T10:00:00Z)",
        ),
        (
            "revoked_at",
            "\"yesterday\"",
            "revoked_at: \"yesterday\" is not an RFC 3339 date-time (like 2026-11-01T10:00:00Z)",
        ),
        (
            "revoked_at",
            "\"2026-13-01T00:00:00Z\"",
            "revoked_at: \"2026-13-01T00:00:00Z\" is not an RFC 3339 date-time (like 2026-11-01T10:00:00Z)",
        ),
        (
            "expires_at",
            "\"2026-11-01T10:00:00\"",
            "expires_at: \"2026-11-01T10:00:00\" is not an RFC 3339 date-time (like 2026-11-01T10:00:00Z)",
        ),
        // Native TOML values without an offset cannot name an instant.
        (
            "expires_at",
            "2027-01-01T00:00:00",
            "expires_at: 2027-01-01T00:00:00 must be a full date-time with a UTC offset",
        ),
        (
            "revoked_at",
            "2027-01-01",
            "revoked_at: 2027-01-01 must be a full date-time with a UTC offset",
        ),
        (
            "revoked_at",
            "10:00:00",
            "revoked_at: 10:00:00 must be a full date-time with a UTC offset",
        ),
    ] {
        let extra = key_toml(
            "k_d",
            "ord_Dates00000000000000000000000000000",
            &format!("{field} = {value}\n"),
        );
        assert_key_refused(&extra, &format!("key \"k_d\": {message}"));
    }
    let extra = key_toml("k_d", "ord_Dates00000000000000000000000000000", "")
        .replace("\"2026-11-01T10:00:00Z\"", "\"1 Nov 2026\"");
    assert_key_refused(
        &extra,
        "key \"k_d\": created_at: \"1 Nov 2026\" is not an RFC 3339 date-time (like 2026-11-01T10:00:00Z)",
    );
}

#[test]
fn bad_ids_and_empty_names_are_refused() {
    assert_key_refused(
        &key_toml("key one", "ord_Id0000000000000000000000000000000", ""),
        "key \"key one\": id must be 1-128 letters, digits, '_', '-', '.' or ':'",
    );
    assert_key_refused(
        &key_toml("k_n", "ord_Name000000000000000000000000000000", "")
            .replace("name = \"n\"", "name = \"\""),
        "key \"k_n\": name must not be empty",
    );
    assert_key_refused(
        &key_toml("k_co", "ord_c_Company00000000000000000000000000", "")
            .replace("type = \"workspace\"", "type = \"company\"")
            .replace("company = \"acme\"", "company = \"\"")
            .replace("workspace = \"ws_sales\"\n", ""),
        "key \"k_co\": company must not be empty",
    );
}

#[test]
fn bad_or_duplicate_workspaces_are_refused_with_line() {
    let text = "[[workspaces]]\nid = \"ws_a\"\ncompany = \"acme\"\n\n\
                [[workspaces]]\nid = \"ws_a\"\ncompany = \"acme\"\n\n\
                [[workspaces]]\nid = \"ws b\"\ncompany = \"\"\n";
    let problems = refused(TOML_PATH, text);
    let got: Vec<(&str, &str)> = problems
        .0
        .iter()
        .map(|p| (p.location.as_str(), p.message.as_str()))
        .collect();
    let at5 = format!("{TOML_PATH}:5");
    let at9 = format!("{TOML_PATH}:9");
    assert_eq!(
        got,
        vec![
            (at5.as_str(), "workspace \"ws_a\": duplicate workspace id"),
            (
                at9.as_str(),
                "workspace \"ws b\": id must be 1-128 letters, digits, '_', '-', '.' or ':'"
            ),
            (
                at9.as_str(),
                "workspace \"ws b\": company must not be empty"
            ),
        ]
    );
}

#[test]
fn every_problem_is_reported_at_once_each_at_its_key() {
    let bad1 = key_toml("k_one", "ord_One000000000000000000000000000000", "")
        .replace("scopes = [\"read:all\"]", "scopes = [\"root\"]");
    let bad2 = key_toml("k_two", "ord_Two000000000000000000000000000000", "")
        .replace("workspace = \"ws_sales\"\n", "");
    let good = key_toml("k_good", "ord_Good00000000000000000000000000000", "");
    let bad3 = key_toml(
        "k_three",
        "ord_Three0000000000000000000000000000",
        "rate_limit = { requests = 0, per_secs = 60 }\nexpires_at = \"soon\"\n",
    );
    let text = format!("{}{bad1}{bad2}{good}{bad3}", base_toml());
    let problems = refused(TOML_PATH, &text);
    let at = |n: usize| format!("{TOML_PATH}:{}", nth_line(&text, "[[keys]]", n));
    let got: Vec<(String, &str)> = problems
        .0
        .iter()
        .map(|p| (p.location.clone(), p.message.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                at(2),
                "key \"k_one\": unknown scope \"root\" (expected \"read:all\", \"write:all\" or \"admin\")"
            ),
            (
                at(3),
                "key \"k_two\": a workspace key must name its workspace"
            ),
            (
                at(5),
                "key \"k_three\": expires_at: \"soon\" is not an RFC 3339 date-time (like 2026-11-01T10:00:00Z)"
            ),
            (
                at(5),
                "key \"k_three\": rate_limit: requests must be a whole number from 1 to 4294967295 (got 0)"
            ),
        ],
        "{problems}"
    );
}

#[test]
fn duplicate_hash_is_reported_even_when_the_first_key_has_another_problem() {
    // Loading reports every problem at once: the duplicate must not wait for
    // the first key to be fixed.
    let first = key_toml("k_first", "ord_Shared0000000000000000000000000000", "")
        .replace("scopes = [\"read:all\"]", "scopes = [\"root\"]");
    let second = key_toml("k_second", "ord_Shared0000000000000000000000000000", "");
    let text = format!("{}{first}{second}", base_toml());
    let problems = refused(TOML_PATH, &text);
    let messages: Vec<&str> = problems.0.iter().map(|p| p.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "key \"k_first\": unknown scope \"root\" (expected \"read:all\", \"write:all\" or \"admin\")",
            "key \"k_second\": the same hash appears on another key",
        ],
        "{problems}"
    );
}

// ---- refusals (JSON): file and key id ----

fn assert_json_refused(keys: &str, message: &str) {
    let problems = refused(JSON_PATH, &json_snapshot(keys));
    assert_eq!(
        problems.0,
        vec![Problem {
            location: JSON_PATH.into(),
            message: message.into(),
        }],
        "{problems}"
    );
    assert_eq!(problems.to_string(), format!("{JSON_PATH}: {message}"));
}

#[test]
fn json_problems_name_the_key_id() {
    let k = "ord_JsonKey000000000000000000000000000";
    assert_json_refused(
        &json_key("k_j", k, "").replace("[\"read:all\"]", "[\"superuser\"]"),
        "key \"k_j\": unknown scope \"superuser\" (expected \"read:all\", \"write:all\" or \"admin\")",
    );
    assert_json_refused(
        &json_key("k_j", k, "").replace("\"ws_marketing\"", "\"ws_research\""),
        "key \"k_j\": workspace \"ws_research\" belongs to company \"globex\", not \"acme\"",
    );
    assert_json_refused(
        &json_key(
            "k_j",
            k,
            r#", "rate_limit": {"requests": 1, "per_secs": 0}"#,
        ),
        "key \"k_j\": rate_limit: per_secs must be a whole number from 1 to 4294967295 (got 0)",
    );
    assert_json_refused(
        &json_key("k_j", k, r#", "revoked_at": "2026-11-01""#),
        "key \"k_j\": revoked_at: \"2026-11-01\" is not an RFC 3339 date-time (like 2026-11-01T10:00:00Z)",
    );
    assert_json_refused(
        &json_key("k_j", k, "").replace(&hash(k), &hash(k).to_uppercase()),
        "key \"k_j\": hash must be \"sha256:\" followed by 64 lowercase hex digits",
    );
}

#[test]
fn json_duplicates_are_refused_by_key_id() {
    let k = "ord_JsonDup0000000000000000000000000000";
    let other = "ord_JsonOther00000000000000000000000000";
    assert_json_refused(
        &format!("{},{}", json_key("k_a", k, ""), json_key("k_a", other, "")),
        "key \"k_a\": duplicate key id",
    );
    let keys = format!("{},{}", json_key("k_a", k, ""), json_key("k_b", k, ""));
    assert_json_refused(&keys, "key \"k_b\": the same hash appears on another key");
    let rendered = refused(JSON_PATH, &json_snapshot(&keys)).to_string();
    assert!(!rendered.contains(hash(k).trim_start_matches("sha256:")));
}

#[test]
fn json_unknown_field_and_wrong_type_are_refused_with_line() {
    let text = json_snapshot(&json_key(
        "k_j",
        "ord_JsonField0000000000000000000000000",
        r#", "owner": "me""#,
    ));
    let problems = refused(JSON_PATH, &text);
    assert_eq!(problems.0.len(), 1);
    let line = text.lines().position(|l| l.contains("\"owner\"")).unwrap() + 1;
    assert_eq!(problems.0[0].location, format!("{JSON_PATH}:{line}"));
    assert!(
        problems.0[0].message.contains("unknown field `owner`"),
        "{problems}"
    );

    let text = json_snapshot(
        &json_key("k_j", "ord_JsonType00000000000000000000000000", "")
            .replace("[\"read:all\"]", "\"read:all\""),
    );
    let problems = refused(JSON_PATH, &text);
    assert!(problems.0[0].location.starts_with(&format!("{JSON_PATH}:")));
    assert!(
        problems.0[0].message.contains("invalid type: string"),
        "{problems}"
    );
}

#[test]
fn json_reports_every_key_problem_at_once() {
    let keys = format!(
        "{},{}",
        json_key("k_a", "ord_A00000000000000000000000000000000", "")
            .replace("\"workspace\": \"ws_marketing\", ", ""),
        json_key("k_b", "ord_B00000000000000000000000000000000", "")
            .replace("\"type\": \"workspace\"", "\"type\": \"company\"")
    );
    let problems = refused(JSON_PATH, &json_snapshot(&keys));
    let messages: Vec<&str> = problems.0.iter().map(|p| p.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "key \"k_a\": a workspace key must name its workspace",
            "key \"k_b\": a company key must not name a workspace (got \"ws_marketing\")",
        ]
    );
}

#[test]
fn json_keys_may_come_before_the_workspaces() {
    let good = json_key("k_a", "ord_A00000000000000000000000000000000", "");
    let foreign = json_key("k_b", "ord_B00000000000000000000000000000000", "")
        .replace("\"ws_marketing\"", "\"ws_research\"");
    let unlisted = json_key("k_c", "ord_C00000000000000000000000000000000", "")
        .replace("\"ws_marketing\"", "\"ws_nowhere\"");
    let workspaces = r#"[{"id": "ws_marketing", "company": "acme"},
        {"id": "ws_research", "company": "globex"}]"#;
    let text = format!(r#"{{"keys": [{good}], "workspaces": {workspaces}}}"#);
    let index = KeyIndex::parse(Path::new(JSON_PATH), &text).expect("accepted");
    assert_eq!(
        index.records()[0].workspace.as_deref(),
        Some("ws_marketing")
    );
    // Checked once the workspaces are read, and reported like any key problem.
    let text =
        format!(r#"{{"keys": [{good}, {foreign}, {unlisted}], "workspaces": {workspaces}}}"#);
    let messages: Vec<String> = refused(JSON_PATH, &text)
        .0
        .into_iter()
        .map(|p| p.message)
        .collect();
    assert_eq!(
        messages,
        [
            "key \"k_b\": workspace \"ws_research\" belongs to company \"globex\", not \"acme\"",
            "key \"k_c\": workspace \"ws_nowhere\" is not listed in [[workspaces]]",
        ]
    );
    // No workspace list at all.
    let text = format!(r#"{{"keys": [{good}]}}"#);
    assert_eq!(
        refused(JSON_PATH, &text).0[0].message,
        "key \"k_a\": workspace \"ws_marketing\" is not listed in [[workspaces]]"
    );
}

#[test]
fn json_top_level_shape_is_checked() {
    let key = json_key("k_a", "ord_A00000000000000000000000000000000", "");
    for (text, expected) in [
        (
            format!(r#"{{"keys": [{key}], "keys": []}}"#),
            "duplicate field `keys`",
        ),
        (
            r#"{"workspaces": [], "workspaces": []}"#.to_string(),
            "duplicate field `workspaces`",
        ),
        (
            r#"{"key": []}"#.to_string(),
            "unknown field `key`, expected `workspaces` or `keys`",
        ),
        ("[]".to_string(), "invalid type: sequence"),
        (
            r#"{"keys": {}}"#.to_string(),
            "invalid type: map, expected a list",
        ),
        (
            r#"{"keys": [], "workspaces": null}"#.to_string(),
            "invalid type: null",
        ),
        (r#"{"keys": []} []"#.to_string(), "trailing characters"),
        (format!(r#"{{"keys": [{key}"#), "EOF while parsing"),
    ] {
        let problems = refused(JSON_PATH, &text);
        assert_eq!(problems.0.len(), 1, "{text}: {problems}");
        assert!(
            problems.0[0].message.contains(expected),
            "{text}: {problems}"
        );
        assert!(
            problems.0[0].location.starts_with(&format!("{JSON_PATH}:")),
            "{problems}"
        );
    }
    // An empty object is an empty snapshot.
    assert!(
        KeyIndex::parse(Path::new(JSON_PATH), "{}")
            .unwrap()
            .is_empty()
    );
}

// ---- state and last use ----

#[test]
fn state_follows_revocation_and_expiry_instants() {
    let text = format!(
        "{}{}",
        base_toml(),
        key_toml(
            "k_both",
            "ord_Both00000000000000000000000000000",
            "expires_at = \"2026-11-01T11:00:00Z\"\nrevoked_at = \"2026-11-01T12:00:00Z\"\n"
        )
    );
    let index = ok_toml(&text);
    let (_, co) = index.by_id("key_acme_ops").unwrap();
    assert_eq!(co.state(i64::MAX), KeyState::Active, "no end date");

    let (_, ws) = index.by_id("key_marketing_app").unwrap();
    let revoked = ws.revoked_at.unwrap();
    let expires = ws.expires_at.unwrap();
    assert_eq!(ws.state(revoked - 1), KeyState::Active);
    assert_eq!(
        ws.state(revoked),
        KeyState::Revoked,
        "revoked at the instant"
    );
    assert_eq!(ws.state(expires + 1), KeyState::Revoked, "revocation wins");

    let (_, both) = index.by_id("k_both").unwrap();
    let expires = both.expires_at.unwrap();
    assert_eq!(expires, CREATED + 3600);
    assert_eq!(both.state(expires - 1), KeyState::Active);
    assert_eq!(
        both.state(expires),
        KeyState::Expired,
        "expired at the instant"
    );
    assert_eq!(both.state(CREATED + 7200), KeyState::Revoked);
    assert_eq!(KeyState::Active.as_str(), "active");
    assert_eq!(KeyState::Revoked.as_str(), "revoked");
    assert_eq!(KeyState::Expired.as_str(), "expired");
}

#[test]
fn touch_records_last_use_per_slot() {
    let index = ok_toml(&base_toml());
    let (a, _) = index.by_id("key_acme_ops").unwrap();
    let (b, _) = index.by_id("key_marketing_app").unwrap();
    assert_eq!(index.last_used(a), None);
    index.touch(a, 1_800_000_000);
    assert_eq!(index.last_used(a), Some(1_800_000_000));
    assert_eq!(index.last_used(b), None, "other slots untouched");
    index.touch(a, 1_800_000_005);
    assert_eq!(index.last_used(a), Some(1_800_000_005));
}

#[test]
fn last_used_is_carried_over_by_key_id() {
    let old = ok_toml(&base_toml());
    let (old_co, _) = old.by_id("key_acme_ops").unwrap();
    let (old_ws, _) = old.by_id("key_marketing_app").unwrap();
    old.touch(old_co, 1_000);
    old.touch(old_ws, 2_000);

    // The new snapshot lists the keys in another order and adds one.
    let new_text = format!(
        "{WORKSPACES}{}{}{}",
        key_toml("k_new", "ord_New000000000000000000000000000000", ""),
        workspace_key_toml(),
        company_key_toml()
    );
    let new = ok_toml(&new_text);
    let (new_co, _) = new.by_id("key_acme_ops").unwrap();
    let (new_ws, _) = new.by_id("key_marketing_app").unwrap();
    let (fresh, _) = new.by_id("k_new").unwrap();
    assert_ne!(new_co, old_co, "slots moved: carry-over must go by id");
    // A use recorded on the new index before the carry-over is newer: kept.
    new.touch(new_ws, 3_000);
    new.carry_last_used_from(&old);
    assert_eq!(new.last_used(new_co), Some(1_000));
    assert_eq!(new.last_used(new_ws), Some(3_000));
    assert_eq!(new.last_used(fresh), None);
}

#[test]
fn times_round_trip_through_rfc3339() {
    assert_eq!(parse_time("2026-11-01T10:00:00Z"), Ok(CREATED));
    assert_eq!(parse_time("2026-11-01T11:30:00+01:30"), Ok(CREATED));
    assert_eq!(format_time(CREATED), "2026-11-01T10:00:00Z");
    assert_eq!(parse_time(&format_time(CREATED + 59)), Ok(CREATED + 59));
    assert!(parse_time("2026-11-01").is_err());
}

#[test]
fn valid_ids_are_a_safe_alphabet() {
    for id in ["key_1", "a.b-c:d", "K"] {
        assert!(valid_id(id), "{id}");
    }
    let long = "a".repeat(129);
    for id in ["", "a b", "a/b", "ä", "a\"b", long.as_str()] {
        assert!(!valid_id(id), "{id:?}");
    }
    assert!(valid_id(&"a".repeat(128)));
}

// ---- rotations: `replaces` ----

/// A company key of acme with id `id` and these extra lines.
fn rotated(id: &str, extra: &str) -> String {
    format!(
        "\n[[keys]]\nid = \"{id}\"\nname = \"n\"\ntype = \"company\"\ncompany = \"acme\"\nscopes = [\"admin\"]\nhash = \"{}\"\ncreated_at = \"2026-11-01T10:00:00Z\"\n{extra}\n",
        hash(&format!("ord_c_{id}{}", "0".repeat(40)))
    )
}

#[test]
fn a_chain_shares_its_roots_bucket_and_names_its_successors() {
    let text = [
        rotated("a", ""),
        rotated("b", "replaces = \"a\""),
        rotated("c", "replaces = \"b\""),
        rotated("solo", ""),
    ]
    .concat();
    let index = ok_toml(&text);
    let slot = |id: &str| index.by_id(id).unwrap().0;
    for id in ["a", "b", "c"] {
        assert_eq!(index.bucket_id(slot(id)), "a", "{id}");
    }
    assert_eq!(index.bucket_id(slot("solo")), "solo");
    assert_eq!(index.record(slot("c")).replaces(), Some("b"));
    assert_eq!(index.record(slot("a")).replaces(), None);
    assert_eq!(index.replaced_by(slot("a")), Some("b"));
    assert_eq!(index.replaced_by(slot("b")), Some("c"));
    assert_eq!(index.replaced_by(slot("c")), None);
    assert_eq!(
        index.record(slot("b")).name(),
        "n",
        "name and replaces packed apart"
    );
    let mut buckets: Vec<&str> = index.chain_buckets().collect();
    buckets.sort_unstable();
    buckets.dedup();
    assert_eq!(buckets, ["a"]);
    // The root deleted: the rest keep the bucket named after it.
    let index = ok_toml(
        &[
            rotated("b", "replaces = \"a\""),
            rotated("c", "replaces = \"b\""),
        ]
        .concat(),
    );
    assert_eq!(index.bucket_id(index.by_id("c").unwrap().0), "a");
    assert_eq!(index.bucket_id(index.by_id("b").unwrap().0), "a");
}

#[test]
fn a_chain_counts_under_its_newest_keys_limit() {
    let limit = |n: u32| format!("rate_limit = {{ requests = {n}, per_secs = 60 }}");
    let text = [
        rotated("a", &limit(6)),
        rotated("b", &format!("replaces = \"a\"\n{}", limit(10))),
        rotated("c", "replaces = \"b\""),
        rotated("solo", &limit(3)),
    ]
    .concat();
    let index = ok_toml(&text);
    let slot = |id: &str| index.by_id(id).unwrap().0;
    // c, the head, has no limit of its own: the whole chain takes the
    // default, and each key keeps its own record.
    for id in ["a", "b", "c"] {
        let (bucket, limited_as) = index.bucket(slot(id));
        assert_eq!((bucket, limited_as.id()), ("a", "c"), "{id}");
    }
    assert_eq!(
        index.record(slot("b")).rate_limit.unwrap().requests.get(),
        10
    );
    let (bucket, limited_as) = index.bucket(slot("solo"));
    assert_eq!((bucket, limited_as.id()), ("solo", "solo"));
    // A key replaced twice (two rotations of one key): one bucket, under
    // the later replacement's limit.
    let text = [
        rotated("a", ""),
        rotated("x", &format!("replaces = \"a\"\n{}", limit(7))),
        rotated("y", &format!("replaces = \"a\"\n{}", limit(9))),
    ]
    .concat();
    let index = ok_toml(&text);
    for id in ["a", "x", "y"] {
        let (bucket, limited_as) = index.bucket(index.by_id(id).unwrap().0);
        assert_eq!((bucket, limited_as.id()), ("a", "y"), "{id}");
    }
    // The root deleted: its successor replaces a missing key and heads.
    let index = ok_toml(&rotated("b", &format!("replaces = \"a\"\n{}", limit(4))));
    let (bucket, limited_as) = index.bucket(0);
    assert_eq!((bucket, limited_as.id()), ("a", "b"));
}

#[test]
fn replaces_must_stay_within_type_company_and_workspace_and_never_loop() {
    let text = [
        rotated("a", "replaces = \"b\""),
        rotated("b", "replaces = \"a\""),
    ]
    .concat();
    let p = refused(TOML_PATH, &text).to_string();
    assert!(
        p.contains("key \"a\": replaces chain loops: a -> b -> a"),
        "{p}"
    );
    let p = refused(TOML_PATH, &rotated("a", "replaces = \"a\"")).to_string();
    assert!(p.contains("key \"a\": replaces chain loops: a -> a"), "{p}");
    let text = [
        rotated("a", ""),
        rotated("b", "replaces = \"a\"").replace("company = \"acme\"", "company = \"globex\""),
    ]
    .concat();
    let p = refused(TOML_PATH, &text).to_string();
    assert!(
        p.contains("key \"b\": replaces \"a\", which is a company key of acme, but this is a company key of globex"),
        "{p}"
    );
    let p = refused(TOML_PATH, &rotated("a", "replaces = \"not an id\"")).to_string();
    assert!(p.contains("replaces \"not an id\" is not a key id"), "{p}");
    // A workspace key replacing a company key of the same company.
    let text = format!(
        "{WORKSPACES}{}{}",
        rotated("a", ""),
        rotated("w", "replaces = \"a\"").replace(
            "type = \"company\"",
            "type = \"workspace\"\nworkspace = \"ws_marketing\""
        )
    );
    let p = refused(TOML_PATH, &text).to_string();
    assert!(
        p.contains(
            "which is a company key of acme, but this is a workspace key of acme / ws_marketing"
        ),
        "{p}"
    );
}

#[test]
fn replaces_reads_from_json_too() {
    let key = |id: &str, replaces: &str| {
        format!(
            r#"{{"id":"{id}","name":"n","type":"company","company":"acme","scopes":["admin"],"hash":"{}","created_at":"2026-11-01T10:00:00Z"{replaces}}}"#,
            hash(&format!("ord_c_{id}{}", "0".repeat(40)))
        )
    };
    let text = format!(
        r#"{{"workspaces":[],"keys":[{},{}]}}"#,
        key("a", ""),
        key("b", r#","replaces":"a""#)
    );
    let index = KeyIndex::parse(Path::new(JSON_PATH), &text).expect("accepted");
    assert_eq!(index.bucket_id(index.by_id("b").unwrap().0), "a");
    // With a byte-order mark in front, as some editors save it.
    let index = KeyIndex::parse(Path::new(JSON_PATH), &format!("\u{feff}{text}"))
        .expect("accepted with a BOM");
    assert_eq!(index.len(), 2);
}
