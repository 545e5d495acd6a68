//! Unit tests for key minting, snapshot edits and argument checks; the CLI as
//! a whole (files on disk, stdout/stderr, a running gateway) is tested in
//! `tests/keys_cli.rs`.

use super::*;
use std::collections::HashSet;

const SAMPLE: &str = "\
# operator header
[[workspaces]]
id = \"ws_a\"   # the A team
company = \"acme\"

[[keys]]
id = \"k1\"
name = \"one\"
type = \"company\"
company = \"acme\"
scopes = [\"admin\"]  # full access
hash = \"sha256:0000000000000000000000000000000000000000000000000000000000000001\"
created_at = \"2026-11-01T10:00:00Z\"
# expires_at = \"2027-01-01T00:00:00Z\"
";

fn record(id: &str) -> NewRecord {
    NewRecord {
        id: id.into(),
        name: "new key".into(),
        description: Some("with \"quotes\"".into()),
        key_type: KeyType::Workspace,
        company: "acme".into(),
        workspace: Some("ws_a".into()),
        scopes: vec![Scope::Read, Scope::Write],
        hash: "sha256:0000000000000000000000000000000000000000000000000000000000000002".into(),
        created_at: "2026-11-02T10:00:00Z".into(),
        expires_at: Some("2027-11-02T10:00:00Z".into()),
        rate_limit: Some(Limit::from_raw(10, 60, Some(20)).unwrap()),
        replaces: None,
    }
}

fn index(text: &str, name: &str) -> KeyIndex {
    KeyIndex::parse(Path::new(name), text).unwrap()
}

fn args(snapshot: &str) -> NewArgs {
    NewArgs {
        snapshot: snapshot.into(),
        key_type: "workspace".into(),
        company: "acme".into(),
        workspace: Some("ws_a".into()),
        name: "n".into(),
        description: None,
        scopes: vec!["read:all".into()],
        rate_limit: None,
        expires: None,
        id: None,
        company_prefix: "ord_c_".into(),
        workspace_prefix: "ord_".into(),
    }
}

#[test]
fn keys_are_prefix_and_forty_alphanumerics() {
    let prefixes = Prefixes::default();
    let mut seen = HashSet::new();
    for (t, prefix) in [(KeyType::Company, "ord_c_"), (KeyType::Workspace, "ord_")] {
        for _ in 0..50 {
            let key = generate_key(&prefixes, t).unwrap();
            let body = key.strip_prefix(prefix).unwrap();
            assert_eq!(body.len(), KEY_BODY_LEN);
            assert!(body.bytes().all(|b| b.is_ascii_alphanumeric()));
            assert_eq!(prefixes.classify(key.as_bytes()), Some(t));
            assert!(seen.insert(key));
        }
    }
}

#[test]
fn random_text_uses_the_whole_alphabet() {
    let text = random_text(KEY_ALPHABET, 20_000).unwrap();
    let used: HashSet<u8> = text.bytes().collect();
    assert_eq!(used.len(), KEY_ALPHABET.len());
}

#[test]
fn keys_classify_as_their_type_even_with_overlapping_prefixes() {
    // "ordc" + body would read as a company key if a workspace body began with 'c'.
    let prefixes = Prefixes::new("ordc", "ord").unwrap();
    for _ in 0..200 {
        let key = generate_key(&prefixes, KeyType::Workspace).unwrap();
        assert_eq!(prefixes.classify(key.as_bytes()), Some(KeyType::Workspace));
    }
}

#[test]
fn appending_to_toml_keeps_comments_and_validates() {
    let out = append_toml(SAMPLE, &record("k2")).unwrap();
    assert!(
        out.starts_with(SAMPLE),
        "the original text is kept verbatim:\n{out}"
    );
    let added = &out[SAMPLE.len()..];
    assert_eq!(
        added,
        "\n[[keys]]\nid = \"k2\"\nname = \"new key\"\ndescription = 'with \"quotes\"'\n\
         type = \"workspace\"\ncompany = \"acme\"\nworkspace = \"ws_a\"\n\
         scopes = [\"read:all\", \"write:all\"]\n\
         hash = \"sha256:0000000000000000000000000000000000000000000000000000000000000002\"\n\
         created_at = \"2026-11-02T10:00:00Z\"\nexpires_at = \"2027-11-02T10:00:00Z\"\n\
         rate_limit = { requests = 10, per_secs = 60, burst = 20 }\n"
    );
    let idx = index(&out, "keys.toml");
    assert_eq!(idx.len(), 2);
    let (_, r) = idx.by_id("k2").unwrap();
    assert_eq!(r.description(), Some("with \"quotes\""));
}

#[test]
fn appending_to_an_empty_or_comment_only_toml_file() {
    let out = append_toml("", &record("k2")).unwrap();
    assert!(out.starts_with("[[keys]]\nid = \"k2\""), "{out}");
    let out = append_toml(NEW_TOML_HEADER, &record("k2")).unwrap();
    assert!(out.starts_with(NEW_TOML_HEADER), "{out}");
    assert!(
        out[NEW_TOML_HEADER.len()..].starts_with("\n[[keys]]\n"),
        "{out}"
    );
}

#[test]
fn appending_after_tables_of_another_kind_keeps_the_file_loadable() {
    let text = format!("{SAMPLE}\n[[workspaces]]\nid = \"ws_b\"\ncompany = \"acme\"\n");
    let out = append_toml(&text, &record("k2")).unwrap();
    assert!(out.starts_with(&text), "{out}");
    assert_eq!(index(&out, "keys.toml").len(), 2);
}

#[test]
fn appending_to_an_inline_keys_array() {
    let text = "workspaces = [{ id = \"ws_a\", company = \"acme\" }]\nkeys = []\n";
    let out = append_toml(text, &record("k2")).unwrap();
    assert_eq!(index(&out, "keys.toml").len(), 1);
}

#[test]
fn appending_to_json_keeps_field_order() {
    let text = r#"{"keys": [], "workspaces": [{"company": "acme", "id": "ws_a"}]}"#;
    let out = append_json(text, &record("k2")).unwrap();
    assert!(out.ends_with("}\n"));
    let keys_at = out.find("\"keys\"").unwrap();
    assert!(keys_at < out.find("\"workspaces\"").unwrap(), "{out}");
    assert!(out.find("\"company\": \"acme\"").unwrap() < out.find("\"id\": \"ws_a\"").unwrap());
    assert_eq!(index(&out, "keys.json").len(), 1);
}

#[test]
fn revoking_in_toml_adds_revoked_at_and_keeps_the_rest() {
    let out = set_revoked_toml(SAMPLE, "k1", "2026-11-05T00:00:00Z").unwrap();
    assert!(out.contains("scopes = [\"admin\"]  # full access\n"));
    assert!(out.contains("# expires_at = \"2027-01-01T00:00:00Z\"\n"));
    assert!(out.contains("revoked_at = \"2026-11-05T00:00:00Z\"\n"));
    assert_eq!(
        out.replace("revoked_at = \"2026-11-05T00:00:00Z\"\n", ""),
        SAMPLE
    );
    let (_, r) = index(&out, "keys.toml")
        .by_id("k1")
        .map(|(s, r)| (s, r.clone()))
        .unwrap();
    assert_eq!(
        r.revoked_at,
        Some(parse_time("2026-11-05T00:00:00Z").unwrap())
    );
}

#[test]
fn revoking_replaces_a_scheduled_revocation_keeping_its_comment() {
    let text = SAMPLE.replace(
        "# expires_at",
        "revoked_at = \"2099-01-01T00:00:00Z\" # planned\n# expires_at",
    );
    let out = set_revoked_toml(&text, "k1", "2026-11-05T00:00:00Z").unwrap();
    assert!(
        out.contains("revoked_at = \"2026-11-05T00:00:00Z\" # planned\n"),
        "{out}"
    );
    assert!(set_revoked_toml(&text, "nope", "2026-11-05T00:00:00Z").is_err());
}

#[test]
fn revoking_in_json() {
    let text = r#"{"workspaces": [], "keys": [{"id": "k1", "name": "x"}]}"#;
    let out = set_revoked_json(text, "k1", "2026-11-05T00:00:00Z").unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["keys"][0]["revoked_at"], "2026-11-05T00:00:00Z");
    assert!(set_revoked_json(text, "k2", "x").is_err());
}

/// A compact one-line JSON snapshot with two keys.
const COMPACT_JSON: &str = concat!(
    r#"{"workspaces":[{"id":"ws_a","company":"acme"}],"keys":["#,
    r#"{"id":"k1","name":"one","type":"company","company":"acme","scopes":["admin"],"#,
    r#""hash":"sha256:0000000000000000000000000000000000000000000000000000000000000001","#,
    r#""created_at":"2026-11-01T10:00:00Z","description":"caf\u00e9 \"k3\""},"#,
    r#"{"id":"k3","name":"three","type":"company","company":"acme","scopes":[],"#,
    r#""hash":"sha256:0000000000000000000000000000000000000000000000000000000000000003","#,
    r#""created_at":"2026-11-01T10:00:00Z"}]}"#
);

#[test]
fn json_edits_keep_every_other_record_as_written() {
    let k1 = &COMPACT_JSON
        [COMPACT_JSON.find(r#"{"id":"k1""#).unwrap()..COMPACT_JSON.find(r#",{"id":"k3""#).unwrap()];
    let k3 = &COMPACT_JSON[COMPACT_JSON.find(r#"{"id":"k3""#).unwrap()..COMPACT_JSON.len() - 2];
    let ws = r#"[{"id":"ws_a","company":"acme"}]"#;
    let added = append_json(COMPACT_JSON, &record("k2")).unwrap();
    for raw in [k1, k3, ws] {
        assert!(added.contains(raw), "{raw} not kept in\n{added}");
    }
    let loaded = index(&added, "keys.json");
    assert_eq!(
        loaded.records().iter().map(|r| r.id()).collect::<Vec<_>>(),
        ["k1", "k3", "k2"]
    );
    assert_eq!(loaded.records()[0].description(), Some("café \"k3\""));

    // Revoking k3 lays out k3 alone; k1 and the new k2 stay byte for byte.
    let k2 = {
        let at = added.find("    {\n      \"id\": \"k2\"").unwrap();
        &added[at..added.len() - "\n  ]\n}\n".len()]
    };
    let revoked = set_revoked_json(&added, "k3", "2026-11-05T00:00:00Z").unwrap();
    assert!(
        revoked.contains(k1) && revoked.contains(k2) && revoked.contains(ws),
        "{revoked}"
    );
    assert!(!revoked.contains(k3));
    let index = index(&revoked, "keys.json");
    let (_, r) = index.by_id("k3").unwrap();
    assert_eq!(
        r.revoked_at,
        Some(parse_time("2026-11-05T00:00:00Z").unwrap())
    );
    assert!(index.by_id("k1").unwrap().1.revoked_at.is_none());
    // An id that only appears inside another record's text is not a record.
    assert!(set_revoked_json(COMPACT_JSON, "caf", "2026-11-05T00:00:00Z").is_err());
}

#[test]
fn json_written_by_the_cli_grows_without_rewriting_what_was_there() {
    let start = r#"{"workspaces": [{"id": "ws_a", "company": "acme"}], "keys": []}"#;
    let first = append_json(start, &record("k1")).unwrap();
    let mut k2 = record("k2");
    k2.hash = "sha256:0000000000000000000000000000000000000000000000000000000000000004".into();
    let second = append_json(&first, &k2).unwrap();
    // All of the first file but its closing lines is the start of the second.
    let kept = &first[..first.len() - "\n  ]\n}\n".len()];
    assert!(second.starts_with(kept), "{first}\n---\n{second}");
    assert_eq!(
        second.matches("\n    {\n      \"id\"").count(),
        2,
        "{second}"
    );
    let third = set_revoked_json(&second, "k1", "2026-11-05T00:00:00Z").unwrap();
    assert_eq!(third.lines().count(), second.lines().count() + 1);
    assert_eq!(index(&third, "keys.json").len(), 2);
}

#[test]
fn json_layout_problems_are_named() {
    let r = record("k2");
    for (text, problem) in [
        ("[]", "the top level is not a JSON object"),
        (r#"{"keys": {}}"#, "`keys` is not a JSON array"),
        ("{\n\"keys\": [", "not JSON: line 2"),
        (r#"{"keys": []} x"#, "not JSON: line 1"),
    ] {
        assert_eq!(
            append_json(text, &r).unwrap_err().to_string(),
            problem,
            "{text}"
        );
        assert_eq!(
            set_revoked_json(text, "k1", "2026-11-05T00:00:00Z")
                .unwrap_err()
                .to_string(),
            problem,
            "{text}"
        );
    }
    // No keys list yet: one is added after the other fields.
    let out = append_json(r#"{"workspaces": [{"id": "ws_a", "company": "acme"}]}"#, &r).unwrap();
    assert!(out.find("\"workspaces\"").unwrap() < out.find("\"keys\"").unwrap());
    assert_eq!(index(&out, "keys.json").len(), 1);
}

#[test]
fn hashing_trims_whitespace_and_refuses_non_keys() {
    let abc = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    assert_eq!(hash_input(b"abc").unwrap(), abc);
    assert_eq!(hash_input(b"abc\n").unwrap(), abc);
    assert_eq!(hash_input(b"  abc \r\n").unwrap(), abc);
    assert!(matches!(hash_input(b""), Err(KeysError::EmptyInput)));
    assert!(matches!(hash_input(b" \n"), Err(KeysError::EmptyInput)));
    assert!(matches!(hash_input(b"a b"), Err(KeysError::SeveralWords)));
    assert!(matches!(hash_input(&[0xff, 0xfe]), Err(KeysError::NotText)));
    assert!(matches!(
        hash_input("k".repeat(MAX_TOKEN_LEN + 1).as_bytes()),
        Err(KeysError::TooLong)
    ));
}

#[test]
fn list_shows_metadata_and_never_a_hash() {
    let text = append_toml(SAMPLE, &record("k2")).unwrap();
    let text = set_revoked_toml(&text, "k1", "2026-11-05T00:00:00Z").unwrap();
    let idx = index(&text, "keys.toml");
    let now = parse_time("2026-12-01T00:00:00Z").unwrap();
    let out = render_list(&idx, now);
    assert!(!out.contains("sha256"), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3);
    let cells: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        &cells[..8],
        [
            "k2",
            "workspace",
            "acme",
            "ws_a",
            "read:all,write:all",
            "active",
            "2026-11-02T10:00:00Z",
            "2027-11-02T10:00:00Z"
        ]
    );
    assert!(lines[1].starts_with("k1 ") && lines[1].contains(" revoked "));
    // Expired once past expires_at.
    let later = parse_time("2028-01-01T00:00:00Z").unwrap();
    assert!(
        render_list(&idx, later)
            .lines()
            .nth(2)
            .unwrap()
            .contains(" expired ")
    );
}

#[test]
fn new_key_arguments_are_checked_against_the_snapshot() {
    let idx = index(SAMPLE, "keys.toml");
    let now = parse_time("2026-11-10T00:00:00Z").unwrap();
    let plan = |f: &dyn Fn(&mut NewArgs)| {
        let mut a = args("keys.toml");
        f(&mut a);
        plan_new(&a, &idx, now)
    };
    let (rec, key) = plan(&|_| {}).unwrap();
    assert!(rec.id.starts_with("key_") && rec.id.len() == 16 && valid_id(&rec.id));
    assert_eq!(rec.hash, KeyDigest::of(key.as_bytes()).to_text());
    assert_eq!(rec.created_at, "2026-11-10T00:00:00Z");
    assert!(key.starts_with("ord_") && !key.starts_with("ord_c_"));

    let err = |f: &dyn Fn(&mut NewArgs)| plan(f).unwrap_err().to_string();
    assert!(err(&|a| a.key_type = "team".into()).contains("--type"));
    assert!(err(&|a| a.workspace = None).contains("needs --workspace"));
    assert!(
        err(&|a| {
            a.key_type = "company".into();
        })
        .contains("must not name one")
    );
    assert!(err(&|a| a.workspace = Some("ws_z".into())).contains("not listed"));
    assert!(err(&|a| a.company = "globex".into()).contains("belongs to company \"acme\""));
    assert!(err(&|a| a.scopes = vec!["root".into()]).contains("unknown scope \"root\""));
    assert!(err(&|a| a.id = Some("k1".into())).contains("already exists"));
    assert!(err(&|a| a.id = Some("bad id".into())).contains("--id"));
    assert!(err(&|a| a.rate_limit = Some("fast".into())).contains("--rate-limit"));
    assert!(err(&|a| a.rate_limit = Some("0/60s".into())).contains("--rate-limit"));
    assert!(err(&|a| a.expires = Some("tomorrow".into())).contains("--expires"));
    assert!(
        err(&|a| a.expires = Some("2026-01-01T00:00:00Z".into())).contains("not in the future")
    );
    assert!(err(&|a| a.workspace_prefix = "ord_c_".into()).contains("must differ"));

    let (rec, _) = plan(&|a| a.scopes.clear()).unwrap();
    assert!(rec.scopes.is_empty(), "no --scope: a key with no scope");

    let (rec, _) = plan(&|a| {
        a.id = Some("my.key".into());
        a.scopes = vec!["admin".into(), "read:all".into(), "admin".into()];
        a.rate_limit = Some("1000/1m".into());
        a.expires = Some("2027-01-01T02:00:00+02:00".into());
    })
    .unwrap();
    assert_eq!(rec.id, "my.key");
    assert_eq!(rec.scopes, vec![Scope::Read, Scope::Admin]);
    assert_eq!(
        rec.rate_limit,
        Some(Limit::from_raw(1000, 60, None).unwrap())
    );
    assert_eq!(rec.expires_at.as_deref(), Some("2027-01-01T00:00:00Z"));
}

#[test]
fn errors_never_show_the_key_or_its_hash() {
    let idx = index(SAMPLE, "keys.toml");
    let now = parse_time("2026-11-10T00:00:00Z").unwrap();
    let (rec, key) = plan_new(&args("keys.toml"), &idx, now).unwrap();
    let e = KeysError::PrintKey {
        path: "keys.toml".into(),
        id: rec.id.clone(),
        source: std::io::Error::other("closed"),
    };
    let text = e.to_string();
    assert!(text.contains(&rec.id));
    assert!(!text.contains(&key) && !text.contains(&rec.hash));
}

#[test]
fn atomic_write_replaces_the_file_and_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.toml");
    write_atomic(&path, "a = 1\n", None).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "a = 1\n");
    write_atomic(&path, "a = 2\n", Some("a = 1\n")).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "a = 2\n");
    // Someone else changed it meanwhile: refused, untouched, no temp left.
    let e = write_atomic(&path, "a = 3\n", Some("a = 1\n")).unwrap_err();
    assert!(matches!(e, KeysError::Conflict { .. }), "{e}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "a = 2\n");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("keys.toml")]);
}

#[test]
fn atomic_write_keeps_permissions_and_symlinks() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.toml");
    std::fs::write(&real, "a = 1\n").unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();
    let link = dir.path().join("keys.toml");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    write_atomic(&link, "a = 2\n", Some("a = 1\n")).unwrap();
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read_to_string(&real).unwrap(), "a = 2\n");
    let mode = std::fs::metadata(&real).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
}
