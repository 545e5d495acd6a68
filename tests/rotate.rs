//! Key rotation with overlap (CONTRACT §9), black box: `keygate keys rotate`
//! on TOML and JSON snapshots, what it writes and prints, what it refuses,
//! and a running gateway serving old and new key on one bucket until the old
//! one's grace is over.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const COMMENTED: &str = "\
# Production keys. Reviewed by ops every quarter.

[[workspaces]]
id = \"ws_a\"      # team a
company = \"acme\"

[[keys]]
id = \"key_old\"
name = \"billing-backend\"
description = \"the billing service\"
type = \"workspace\"
company = \"acme\"
workspace = \"ws_a\"
scopes = [ \"read:all\", \"write:all\" ]   # no admin
hash = \"sha256:1111111111111111111111111111111111111111111111111111111111111111\"
created_at = \"2026-11-01T10:00:00Z\"
rate_limit = { requests = 30, per_secs = 60, burst = 40 }

[[keys]]
id = \"key_gone\"
name = \"revoked\"
type = \"company\"
company = \"acme\"
scopes = [\"admin\"]
hash = \"sha256:2222222222222222222222222222222222222222222222222222222222222222\"
created_at = \"2026-11-01T10:00:00Z\"
revoked_at = \"2026-11-02T10:00:00Z\"

[[keys]]
id = \"key_lapsed\"
name = \"expired\"
type = \"company\"
company = \"acme\"
scopes = [\"admin\"]
hash = \"sha256:3333333333333333333333333333333333333333333333333333333333333333\"
created_at = \"2026-11-01T10:00:00Z\"
expires_at = \"2026-11-02T10:00:00Z\"
";

fn rotate(snapshot: &Path, id: &str, extra: &[&str]) -> Output {
    Command::new(BIN)
        .args(["keys", "rotate", id, "--snapshot"])
        .arg(snapshot)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn folder_with(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// The key printed alone on stdout, with its prefix.
fn printed_key(o: &Output, prefix: &str) -> String {
    assert!(o.status.success(), "keys rotate failed: {}", stderr(o));
    let out = String::from_utf8(o.stdout.clone()).unwrap();
    let key = out.strip_suffix('\n').expect("one line");
    assert!(key.starts_with(prefix) && !key.contains('\n'), "{out:?}");
    key.to_string()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn seconds_of(rfc3339: &str) -> i64 {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .unwrap()
        .unix_timestamp()
}

#[test]
fn rotate_writes_the_successor_and_the_old_keys_end_in_one_edit_keeping_the_file() {
    let (_dir, snapshot) = folder_with("keys.toml", COMMENTED);
    let before = unix_now();
    let out = rotate(&snapshot, "key_old", &["--id", "key_new"]);
    let key = printed_key(&out, "ord_");
    assert!(!key.starts_with("ord_c_"), "a workspace key");
    let err = stderr(&out);
    assert!(
        err.contains("key_new") && err.contains("key_old stops working at "),
        "{err}"
    );
    assert!(
        !err.contains(&key) && !err.contains("sha256:"),
        "the key only on stdout"
    );
    let text = std::fs::read_to_string(&snapshot).unwrap();
    // The operator's comments and spacing stay.
    assert!(text.starts_with("# Production keys. Reviewed by ops every quarter.\n"));
    assert!(text.contains("id = \"ws_a\"      # team a\n"));
    assert!(text.contains("scopes = [ \"read:all\", \"write:all\" ]   # no admin\n"));
    let doc: toml::Table = toml::from_str(&text).unwrap();
    let keys = doc["keys"].as_array().unwrap();
    let find = |id: &str| {
        keys.iter()
            .map(|k| k.as_table().unwrap())
            .find(|k| k["id"].as_str() == Some(id))
            .unwrap()
            .clone()
    };
    let (old, new) = (find("key_old"), find("key_new"));
    for field in [
        "name",
        "description",
        "type",
        "company",
        "workspace",
        "scopes",
        "rate_limit",
    ] {
        assert_eq!(old[field], new[field], "{field} copied");
    }
    assert_eq!(new["replaces"].as_str(), Some("key_old"));
    assert!(new.get("expires_at").is_none(), "no expiry unless asked");
    assert_eq!(new["hash"].as_str().unwrap(), hash(&key));
    let stops = seconds_of(old["revoked_at"].as_str().unwrap());
    assert!(
        (before + 86_400..=unix_now() + 86_400).contains(&stops),
        "revoked_at = now + 24 h: {stops}"
    );
    assert!(err.contains(old["revoked_at"].as_str().unwrap()), "{err}");
    // It loads, and keys list shows both ends of the rotation.
    let list = Command::new(BIN)
        .args(["keys", "list", "--snapshot"])
        .arg(&snapshot)
        .output()
        .unwrap();
    assert!(list.status.success(), "{}", stderr(&list));
    let table = String::from_utf8(list.stdout).unwrap();
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    let (replaces, replaced_by) = (
        header.iter().position(|h| *h == "REPLACES").unwrap(),
        header.iter().position(|h| *h == "REPLACED_BY").unwrap(),
    );
    let row = |id: &str| -> Vec<String> {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{id} ")))
            .unwrap()
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    assert_eq!(row("key_new")[replaces], "key_old");
    assert_eq!(row("key_old")[replaced_by], "key_new");
    assert_eq!(row("key_old")[replaces], "-");
}

#[test]
fn rotate_edits_json_snapshots_too() {
    let json = r#"{"workspaces":[],"keys":[{"id":"key_old","name":"n","type":"company","company":"acme","scopes":["admin"],"hash":"sha256:1111111111111111111111111111111111111111111111111111111111111111","created_at":"2026-11-01T10:00:00Z"}]}"#;
    let (_dir, snapshot) = folder_with("keys.json", json);
    let out = rotate(
        &snapshot,
        "key_old",
        &["--grace", "1h", "--expires", "2099-01-01T00:00:00Z"],
    );
    let key = printed_key(&out, "ord_c_");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&snapshot).unwrap()).unwrap();
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    let new = &keys[1];
    assert_eq!(new["replaces"], "key_old");
    assert_eq!(new["hash"], hash(&key));
    assert_eq!(new["expires_at"], "2099-01-01T00:00:00Z");
    let stops = seconds_of(keys[0]["revoked_at"].as_str().unwrap());
    assert!((stops - unix_now() - 3600).abs() < 10, "now + 1 h");
}

#[test]
fn rotate_refuses_unknown_revoked_and_expired_keys_and_leaves_the_file() {
    let (dir, snapshot) = folder_with("keys.toml", COMMENTED);
    for (id, reason) in [
        ("key_nowhere", "no key with id \"key_nowhere\""),
        (
            "key_gone",
            "key \"key_gone\" is revoked, so it cannot be rotated",
        ),
        (
            "key_lapsed",
            "key \"key_lapsed\" is expired, so it cannot be rotated",
        ),
    ] {
        let out = rotate(&snapshot, id, &[]);
        assert_eq!(out.status.code(), Some(1), "{id}");
        assert!(out.stdout.is_empty(), "{id}: no key printed");
        assert!(stderr(&out).contains(reason), "{id}: {}", stderr(&out));
        assert_eq!(
            std::fs::read_to_string(&snapshot).unwrap(),
            COMMENTED,
            "{id}"
        );
    }
    let out = rotate(&snapshot, "key_old", &["--grace", "soon"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--grace \"soon\""),
        "{}",
        stderr(&out)
    );
    let out = rotate(&snapshot, "key_old", &["--id", "key_gone"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(std::fs::read_to_string(&snapshot).unwrap(), COMMENTED);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    assert_eq!(names, ["keys.toml"], "no temp file left");
}

/// Removes the `[[keys]]` record `id` from a TOML snapshot, atomically.
fn delete_record(path: &Path, id: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    let starts: Vec<usize> = text.match_indices("[[keys]]").map(|(i, _)| i).collect();
    let at = starts
        .iter()
        .position(|&s| text[s..].lines().nth(1) == Some(&format!("id = \"{id}\"")))
        .unwrap_or_else(|| panic!("no record {id} in\n{text}"));
    let end = starts.get(at + 1).copied().unwrap_or(text.len());
    write_atomic(path, &format!("{}{}", &text[..starts[at]], &text[end..]));
}

/// The limit of the rotated key: 3 per minute, burst 3.
fn limited_snapshot() -> (Snapshot, String) {
    let mut s = Snapshot::new();
    let old = s
        .company_key("key_old", "acme")
        .scopes(&["read:all"])
        .extra("rate_limit = { requests = 3, per_secs = 60 }")
        .add();
    (s, old)
}

#[test]
fn old_and_new_keys_share_one_bucket_until_the_grace_ends() {
    let up = Upstream::start();
    let (snap, old) = limited_snapshot();
    let gw = Gateway::start(&standard_config(up.addr, "", ""), &snap.render());
    let status = |key: &str| gw.get("/api/v1/company/x", Some(key)).status().as_u16();
    assert_eq!(status(&old), 200);
    let out = rotate(
        &gw.keys_path(),
        "key_old",
        &["--id", "key_new", "--grace", "3s"],
    );
    let new = printed_key(&out, "ord_c_");
    let report: serde_json::Value = gw
        .client
        .post(gw.admin_url("/reload"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        report["report"]["keys_added"],
        serde_json::json!(["key_new"])
    );
    assert_eq!(
        report["report"]["keys_rotated"],
        serde_json::json!(["key_new replaces key_old"])
    );
    // One bucket of 3 for both: 1 used by the old key before, 2 left.
    assert_eq!(status(&new), 200);
    let r = gw.get("/api/v1/company/x", Some(&old));
    assert_eq!(
        r.status().as_u16(),
        200,
        "the old key works during the grace"
    );
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0", "the same bucket");
    assert_eq!(status(&new), 429, "the limit is not doubled");
    assert_eq!(status(&old), 429);
    assert_eq!(up.last().header("x-keygate-key-id"), Some("key_old"));
    // /keys shows both ends.
    let keys: Vec<serde_json::Value> = gw
        .client
        .get(gw.admin_url("/keys"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let by_id = |id: &str| keys.iter().find(|k| k["id"] == id).unwrap().clone();
    assert_eq!(by_id("key_new")["replaces"], "key_old");
    assert_eq!(by_id("key_new")["replaced_by"], serde_json::Value::Null);
    assert_eq!(by_id("key_old")["replaced_by"], "key_new");
    // After the grace the old key is revoked; the new one still has its bucket.
    let answer = wait_for(
        "the old key's grace to end",
        Duration::from_secs(20),
        || {
            let r = gw.get("/api/v1/company/x", Some(&old));
            (r.status().as_u16() == 403).then(|| r.json::<serde_json::Value>().unwrap())
        },
    );
    assert_eq!(answer["code"], "FORBIDDEN");
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.starts_with("API key was revoked ") && message.ends_with(" ago"),
        "{message}"
    );
    assert_eq!(status(&new), 429, "the bucket is still shared, not reset");
    assert_no_secret_in(&gw.log(), "the gateway log");
}

#[test]
fn a_chain_of_three_and_a_deleted_root_keep_one_bucket_and_grace_zero_revokes_now() {
    let up = Upstream::start();
    let (snap, first) = limited_snapshot();
    let gw = Gateway::start(&standard_config(up.addr, "", ""), &snap.render());
    let status = |key: &str| gw.get("/api/v1/company/x", Some(key)).status().as_u16();
    let second = printed_key(
        &rotate(&gw.keys_path(), "key_old", &["--id", "key_2"]),
        "ord_c_",
    );
    let third = printed_key(
        &rotate(&gw.keys_path(), "key_2", &["--id", "key_3"]),
        "ord_c_",
    );
    assert_eq!(gw.reload_by_signal(), "success");
    assert_eq!(status(&first), 200);
    assert_eq!(status(&second), 200);
    assert_eq!(status(&third), 200);
    assert_eq!(status(&third), 429, "three keys, one bucket of 3");
    // Delete the root: the chain still shares its bucket (named after it).
    delete_record(&gw.keys_path(), "key_old");
    assert_eq!(gw.reload_by_signal(), "success");
    assert_eq!(status(&first), 401, "the deleted key is unknown");
    assert_eq!(
        status(&third),
        429,
        "the bucket survived the root's removal"
    );
    // Then the next one: the bucket is named after another key now, and
    // starts from where the chain's was.
    delete_record(&gw.keys_path(), "key_2");
    assert_eq!(gw.reload_by_signal(), "success");
    assert_eq!(status(&second), 401);
    assert_eq!(
        status(&third),
        429,
        "the bucket survived the removal of the root's successor too"
    );
    // A leaked key: --grace 0s stops it at once.
    let fourth = printed_key(
        &rotate(
            &gw.keys_path(),
            "key_3",
            &["--id", "key_4", "--grace", "0s"],
        ),
        "ord_c_",
    );
    assert_eq!(gw.reload_by_signal(), "success");
    let r = gw.get("/api/v1/company/x", Some(&third));
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(status(&fourth), 429, "the successor inherits the bucket");
}

#[test]
fn a_rotation_that_changes_the_limit_counts_both_keys_under_the_new_one() {
    let up = Upstream::start();
    let (snap, old) = limited_snapshot();
    let gw = Gateway::start(&standard_config(up.addr, "", ""), &snap.render());
    let new = printed_key(
        &rotate(&gw.keys_path(), "key_old", &["--id", "key_new"]),
        "ord_c_",
    );
    // The new key's record (the last) gets 5 a minute instead of 3.
    let text = std::fs::read_to_string(gw.keys_path()).unwrap();
    let last = text.rfind("[[keys]]").unwrap();
    let (head, record) = text.split_at(last);
    assert!(record.contains("requests = 3"), "{record}");
    write_atomic(
        &gw.keys_path(),
        &format!("{head}{}", record.replace("requests = 3", "requests = 5")),
    );
    assert_eq!(gw.reload_by_signal(), "success");
    // Old and new in turn: one bucket, under the newest key's limit.
    let mut admitted = 0;
    for i in 0..12 {
        let key = if i % 2 == 0 { &old } else { &new };
        let r = gw.get("/api/v1/company/x", Some(key));
        assert_eq!(r.headers()["x-ratelimit-limit"], "5", "request {i}");
        match r.status().as_u16() {
            200 => admitted += 1,
            429 => {}
            s => panic!("request {i}: {s}"),
        }
    }
    assert_eq!(admitted, 5, "one bucket of 5 for both keys");
}

#[test]
fn replaces_that_loops_or_crosses_tenants_is_refused_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let key = |id: &str, extra: &str| {
        format!(
            "[[keys]]\nid = \"{id}\"\nname = \"n\"\ntype = \"company\"\ncompany = \"acme\"\nscopes = [\"admin\"]\nhash = \"{}\"\ncreated_at = \"2026-11-01T10:00:00Z\"\n{extra}\n",
            hash(&mint("ord_c_"))
        )
    };
    let config = standard_config("127.0.0.1:9".parse().unwrap(), "", "")
        .replace("{http}", "1")
        .replace("{admin}", "2");
    std::fs::write(dir.path().join("keygate.toml"), config).unwrap();
    for (snapshot, reason) in [
        (
            key("a", "replaces = \"b\"") + &key("b", "replaces = \"a\""),
            "key \"a\": replaces chain loops: a -> b -> a",
        ),
        (
            key("a", "replaces = \"a\""),
            "key \"a\": replaces chain loops: a -> a",
        ),
        (
            key("a", "")
                + &key("b", "replaces = \"a\"")
                    .replace("company = \"acme\"", "company = \"globex\""),
            "key \"b\": replaces \"a\", which is a company key of acme, but this is a company key of globex",
        ),
    ] {
        std::fs::write(dir.path().join("keys.toml"), &snapshot).unwrap();
        let out = Command::new(BIN)
            .args(["check", "--config"])
            .arg(dir.path().join("keygate.toml"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{snapshot}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains(reason), "{reason:?} missing:\n{stdout}");
    }
    // A replaced key deleted since is fine.
    std::fs::write(
        dir.path().join("keys.toml"),
        key("b", "replaces = \"a_deleted\""),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(dir.path().join("keygate.toml"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_key_rotated_twice_has_two_successors_on_one_bucket() {
    let up = Upstream::start();
    let (snap, old) = limited_snapshot();
    let gw = Gateway::start(&standard_config(up.addr, "", ""), &snap.render());
    let first = printed_key(
        &rotate(&gw.keys_path(), "key_old", &["--id", "key_a"]),
        "ord_c_",
    );
    let out = rotate(&gw.keys_path(), "key_old", &["--id", "key_b"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("note: key key_old was already replaced by key_a, which still works"),
        "{}",
        stderr(&out)
    );
    let second = printed_key(&out, "ord_c_");
    assert_eq!(gw.reload_by_signal(), "success");
    // Three keys, one bucket of 3.
    for key in [&old, &first, &second] {
        assert_eq!(gw.get("/api/v1/company/x", Some(key)).status(), 200);
    }
    for key in [&old, &first, &second] {
        assert_eq!(gw.get("/api/v1/company/x", Some(key)).status(), 429);
    }
}
