//! `keygate keys new | revoke | list | hash` (CONTRACT §1, §2, §6): the real
//! binary editing real files, and a running gateway picking the edits up on
//! SIGHUP.

use crate::support::*;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A snapshot with the operator's comments and odd spacing, which every edit
/// must keep byte for byte.
const COMMENTED: &str = "\
# Production keys. Reviewed by ops every quarter.

[[workspaces]]
id = \"ws_marketing\"      # marketing team
company = \"acme\"

[[workspaces]]
id = \"ws_research\"
company = \"globex\"

[[keys]]
id = \"key_existing\"
name = \"existing\"
type = \"company\"
company = \"acme\"
scopes = [ \"read:all\" ]   # reporting only
hash = \"sha256:1111111111111111111111111111111111111111111111111111111111111111\"
created_at = \"2026-11-01T10:00:00Z\"
# expires_at = \"2027-01-01T00:00:00Z\"  (decided against)
";

fn keygate(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn keygate_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// `keygate keys new --snapshot <snapshot> <args>`.
fn keys_new(snapshot: &Path, args: &[&str]) -> Output {
    let mut all = vec!["keys", "new", "--snapshot", snapshot.to_str().unwrap()];
    all.extend_from_slice(args);
    keygate(&all)
}

/// A temp folder holding `name` with `text`.
fn folder_with(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// Runs `keygate check` on a config next to `snapshot` that points at it.
fn check_snapshot(snapshot: &Path) -> Output {
    let dir = snapshot.parent().unwrap();
    let config = standard_config("127.0.0.1:9".parse().unwrap(), "", "")
        .replace("{http}", "1")
        .replace("{admin}", "2")
        .replace(
            "snapshot = \"keys.toml\"",
            &format!(
                "snapshot = \"{}\"",
                snapshot.file_name().unwrap().to_str().unwrap()
            ),
        );
    let config_path = dir.join("keygate.toml");
    std::fs::write(&config_path, config).unwrap();
    keygate(&["check", "--config", config_path.to_str().unwrap()])
}

/// Asserts the exact stdout shape of `keys new`: the key, a newline, nothing else.
fn printed_key(o: &Output, prefix: &str) -> String {
    assert!(o.status.success(), "keys new failed: {}", stderr(o));
    let out = stdout(o);
    let key = out
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("stdout must end in one newline: {out:?}"));
    let body = key
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("key must start with {prefix}"));
    assert_eq!(body.len(), 40, "40 characters after the prefix");
    assert!(
        body.bytes().all(|b| b.is_ascii_alphanumeric()),
        "key body is [A-Za-z0-9]"
    );
    key.to_string()
}

/// The `[[keys]]` record with this id, parsed.
fn record(snapshot: &Path, id: &str) -> toml::Table {
    let doc: toml::Table = toml::from_str(&std::fs::read_to_string(snapshot).unwrap()).unwrap();
    doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_table().unwrap())
        .find(|k| k["id"].as_str() == Some(id))
        .cloned()
        .unwrap_or_else(|| panic!("no record {id}"))
}

/// Files in a folder, sorted, less the editors' lock file (which stays:
/// see `SnapshotLock`).
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !(n.starts_with('.') && n.ends_with(".lock")))
        .collect();
    names.sort();
    names
}

#[test]
fn keys_new_prints_only_the_company_key_and_keeps_comments() {
    let (_dir, snapshot) = folder_with("keys.toml", COMMENTED);
    let out = keys_new(
        &snapshot,
        &[
            "--type",
            "company",
            "--company",
            "acme",
            "--name",
            "billing backend",
            "--scope",
            "read:all",
            "--scope",
            "write:all",
            "--id",
            "key_billing",
        ],
    );
    let key = printed_key(&out, "ord_c_");
    let err = stderr(&out);
    assert!(err.contains("key_billing"), "stderr names the id: {err}");
    assert!(
        !err.contains(&key),
        "the key is printed once, on stdout only"
    );
    assert!(!err.contains(&hash(&key)), "no hash on stderr");

    let text = std::fs::read_to_string(&snapshot).unwrap();
    assert!(
        text.starts_with(COMMENTED),
        "the operator's text is kept byte for byte:\n{text}"
    );
    assert!(!text.contains(&key), "the snapshot never holds the key");
    let r = record(&snapshot, "key_billing");
    assert_eq!(r["hash"].as_str(), Some(hash(&key).as_str()));
    assert_eq!(r["type"].as_str(), Some("company"));
    assert_eq!(r["company"].as_str(), Some("acme"));
    assert_eq!(r["name"].as_str(), Some("billing backend"));
    assert!(!r.contains_key("workspace"));
    let scopes: Vec<&str> = r["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(scopes, ["read:all", "write:all"]);
    let created = r["created_at"].as_str().unwrap();
    assert!(
        created.ends_with('Z') && created.len() == 20,
        "RFC 3339 UTC: {created}"
    );

    let check = check_snapshot(&snapshot);
    assert!(
        check.status.success(),
        "keygate check passes: {}",
        stdout(&check)
    );
    assert!(stdout(&check).contains("2 keys"), "{}", stdout(&check));
}

#[test]
fn keys_new_makes_workspace_keys_with_limits_and_expiry() {
    let (_dir, snapshot) = folder_with("keys.toml", COMMENTED);
    let out = keys_new(
        &snapshot,
        &[
            "--type",
            "workspace",
            "--company",
            "acme",
            "--workspace",
            "ws_marketing",
            "--name",
            "marketing app",
            "--description",
            "posts from the CMS",
            "--scope",
            "read:all",
            "--rate-limit",
            "1000/60s:2000",
            "--expires",
            "2099-01-01T01:00:00+01:00",
        ],
    );
    let key = printed_key(&out, "ord_");
    assert!(
        !key.starts_with("ord_c_"),
        "a workspace key must not look like a company key"
    );
    // The default id: key_ + 12 lowercase letters and digits, named on stderr.
    let err = stderr(&out);
    let id = err
        .split_whitespace()
        .find(|w| w.starts_with("key_") && w.len() == 16)
        .unwrap_or_else(|| panic!("no generated id on stderr: {err}"));
    assert!(
        id[4..]
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    );
    let r = record(&snapshot, id);
    assert_eq!(r["hash"].as_str(), Some(hash(&key).as_str()));
    assert_eq!(r["workspace"].as_str(), Some("ws_marketing"));
    assert_eq!(r["description"].as_str(), Some("posts from the CMS"));
    assert_eq!(r["expires_at"].as_str(), Some("2099-01-01T00:00:00Z"));
    let rl = r["rate_limit"].as_table().unwrap();
    assert_eq!(rl["requests"].as_integer(), Some(1000));
    assert_eq!(rl["per_secs"].as_integer(), Some(60));
    assert_eq!(rl["burst"].as_integer(), Some(2000));
    assert!(check_snapshot(&snapshot).status.success());
}

#[test]
fn keys_new_honours_custom_prefixes() {
    let (_dir, snapshot) = folder_with("keys.toml", COMMENTED);
    let out = keys_new(
        &snapshot,
        &[
            "--type",
            "company",
            "--company",
            "acme",
            "--name",
            "n",
            "--scope",
            "admin",
            "--company-prefix",
            "acme_live_",
            "--workspace-prefix",
            "acme_ws_",
        ],
    );
    printed_key(&out, "acme_live_");
}

#[test]
fn keys_new_without_scope_makes_a_key_with_none_and_says_so() {
    let (_dir, snapshot) = folder_with("keys.toml", COMMENTED);
    let out = keys_new(
        &snapshot,
        &[
            "--type",
            "company",
            "--company",
            "acme",
            "--name",
            "n",
            "--id",
            "key_bare",
        ],
    );
    printed_key(&out, "ord_c_");
    assert!(stderr(&out).contains("no scope"), "{}", stderr(&out));
    let r = record(&snapshot, "key_bare");
    assert_eq!(r["scopes"].as_array().map(Vec::len), Some(0));
    assert!(check_snapshot(&snapshot).status.success());
}

#[test]
fn keys_new_writes_json_snapshots() {
    let json = serde_json::json!({
        "workspaces": [{"id": "ws_marketing", "company": "acme"}],
        "keys": [],
    });
    let (_dir, snapshot) = folder_with("keys.json", &json.to_string());
    let out = keys_new(
        &snapshot,
        &[
            "--type",
            "workspace",
            "--company",
            "acme",
            "--workspace",
            "ws_marketing",
            "--name",
            "json key",
            "--scope",
            "write:all",
            "--id",
            "key_json",
        ],
    );
    let key = printed_key(&out, "ord_");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&snapshot).unwrap()).unwrap();
    assert_eq!(doc["workspaces"], json["workspaces"]);
    let r = &doc["keys"][0];
    assert_eq!(r["id"], "key_json");
    assert_eq!(r["hash"], hash(&key).as_str());
    assert_eq!(r["workspace"], "ws_marketing");
    assert_eq!(r["scopes"], serde_json::json!(["write:all"]));
    assert!(check_snapshot(&snapshot).status.success());
}

#[test]
fn keys_new_creates_a_missing_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("keys.toml");
    let out = keys_new(
        &snapshot,
        &[
            "--type",
            "company",
            "--company",
            "acme",
            "--name",
            "first",
            "--scope",
            "admin",
            "--id",
            "key_first",
        ],
    );
    let key = printed_key(&out, "ord_c_");
    assert_eq!(
        record(&snapshot, "key_first")["hash"].as_str(),
        Some(hash(&key).as_str())
    );
    assert!(check_snapshot(&snapshot).status.success());
}

#[test]
fn keys_new_refuses_bad_requests_and_leaves_the_file_alone() {
    let (dir, snapshot) = folder_with("keys.toml", COMMENTED);
    let company = ["--type", "company", "--company", "acme", "--name", "n"];
    let workspace = ["--type", "workspace", "--company", "acme", "--name", "n"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            [&company[..], &["--scope", "admin", "--id", "key_existing"]].concat(),
            "a key with id \"key_existing\" already exists",
        ),
        (
            [
                &workspace[..],
                &["--workspace", "ws_nowhere", "--scope", "admin"],
            ]
            .concat(),
            "workspace \"ws_nowhere\" is not listed in [[workspaces]]",
        ),
        (
            [
                &workspace[..],
                &["--workspace", "ws_research", "--scope", "admin"],
            ]
            .concat(),
            "workspace \"ws_research\" belongs to company \"globex\", not \"acme\"",
        ),
        (
            [&company[..], &["--scope", "superuser"]].concat(),
            "unknown scope \"superuser\"",
        ),
        (
            [
                &company[..],
                &["--scope", "admin", "--workspace", "ws_marketing"],
            ]
            .concat(),
            "must not name one",
        ),
        (
            [&workspace[..], &["--scope", "admin"]].concat(),
            "a workspace key needs --workspace",
        ),
        (
            vec![
                "--type",
                "team",
                "--company",
                "acme",
                "--name",
                "n",
                "--scope",
                "admin",
            ],
            "--type must be \"company\" or \"workspace\"",
        ),
        (
            [&company[..], &["--scope", "admin", "--rate-limit", "lots"]].concat(),
            "--rate-limit",
        ),
        (
            [
                &company[..],
                &["--scope", "admin", "--expires", "2020-01-01T00:00:00Z"],
            ]
            .concat(),
            "not in the future",
        ),
        (
            [&company[..], &["--scope", "admin", "--id", "has space"]].concat(),
            "--id",
        ),
    ];
    for (args, reason) in cases {
        let out = keys_new(&snapshot, &args);
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(
            out.stdout.is_empty(),
            "{args:?}: no key printed on a failure"
        );
        let err = stderr(&out);
        assert!(err.contains(reason), "{args:?}: {err:?} lacks {reason:?}");
        assert!(!err.contains("sha256:"), "no hash in errors: {err}");
        assert_eq!(std::fs::read_to_string(&snapshot).unwrap(), COMMENTED);
    }
    assert_eq!(listing(dir.path()), ["keys.toml"], "no temp file left");
}

#[test]
fn keys_new_names_the_file_in_its_errors() {
    let (_dir, snapshot) = folder_with("keys.toml", COMMENTED);
    let out = keys_new(
        &snapshot,
        &[
            "--type",
            "workspace",
            "--company",
            "acme",
            "--workspace",
            "ws_nowhere",
            "--name",
            "n",
            "--scope",
            "admin",
        ],
    );
    assert!(
        stderr(&out).contains(snapshot.to_str().unwrap()),
        "{}",
        stderr(&out)
    );
}

#[test]
fn keys_new_refuses_to_edit_a_snapshot_that_does_not_load() {
    let broken = COMMENTED.replace("\"read:all\" ]", "\"read:everything\" ]");
    let (_dir, snapshot) = folder_with("keys.toml", &broken);
    let out = keys_new(
        &snapshot,
        &[
            "--type",
            "company",
            "--company",
            "acme",
            "--name",
            "n",
            "--scope",
            "admin",
        ],
    );
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    assert!(
        err.contains("does not load") && err.contains("read:everything"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&snapshot).unwrap(), broken);
}

/// A snapshot bigger than the file-size limit the tests below put on the
/// process, so that writing its replacement hits the limit half way.
fn big_snapshot() -> String {
    let mut text = COMMENTED.to_string();
    for i in 0..800 {
        text.push_str(&format!(
            "# audit note {i:04}: nothing to see here, just a long operator comment line\n"
        ));
    }
    text
}

/// `keygate keys new` under `ulimit -f` (512-byte blocks): the temp file
/// cannot grow past 8 KiB. `setup` runs in the shell first.
fn keys_new_with_file_limit(dir: &Path, setup: &str) -> Output {
    let script = format!(
        "{setup} ulimit -c 0; ulimit -f 16; exec \"$0\" keys new --snapshot \"$1\" \
         --type company --company acme --name n --scope admin --id key_new"
    );
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(BIN)
        .arg(dir.join("keys.toml"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Under `ulimit -f`, keygate itself ignores SIGXFSZ, so whether or not the
/// shell already ignored it, the write fails with EFBIG: exit 1, the old
/// bytes intact, the temp file removed, no key printed.
#[test]
fn keys_new_hitting_the_file_size_limit_leaves_the_old_snapshot_and_no_temp_file() {
    for setup in ["", "trap '' XFSZ;"] {
        let text = big_snapshot();
        let (dir, snapshot) = folder_with("keys.toml", &text);
        let out = keys_new_with_file_limit(dir.path(), setup);
        assert_eq!(
            out.status.signal(),
            None,
            "{setup:?}: not killed by a signal"
        );
        assert_eq!(out.status.code(), Some(1), "{setup:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "no key printed");
        let err = stderr(&out);
        assert!(
            err.contains("cannot write")
                && err.contains("keys.toml")
                && err.contains("left as it was"),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(&snapshot).unwrap(),
            text,
            "old bytes intact"
        );
        assert_eq!(listing(dir.path()), ["keys.toml"], "temp file removed");
        assert!(check_snapshot(&snapshot).status.success());
    }
}

/// Many `keys new` (and a `keys rotate` and a `keys revoke`) at once on one snapshot: every run
/// that reports success is in the file, and none fails for the race.
#[test]
fn concurrent_key_edits_lose_nothing() {
    for file in ["keys.toml", "keys.json"] {
        let initial = if file.ends_with(".json") {
            r#"{"workspaces":[],"keys":[{"id":"key_existing","name":"existing","type":"company","company":"acme","scopes":["read:all"],"hash":"sha256:1111111111111111111111111111111111111111111111111111111111111111","created_at":"2026-11-01T10:00:00Z"}]}"#
        } else {
            COMMENTED
        };
        let (dir, snapshot) = folder_with(file, initial);
        const ROUNDS: usize = 5;
        const PARALLEL: usize = 8;
        let mut made = Vec::new();
        for round in 0..ROUNDS {
            let children: Vec<_> = (0..PARALLEL)
                .map(|i| {
                    let id = format!("key_r{round}_{i}");
                    let child = Command::new(BIN)
                        .args(["keys", "new", "--snapshot"])
                        .arg(&snapshot)
                        .args(["--type", "company", "--company", "acme", "--name", "n"])
                        .args(["--scope", "read:all", "--id", &id])
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped())
                        .spawn()
                        .unwrap();
                    (id, child)
                })
                .collect();
            let rotate = (round == 1).then(|| {
                Command::new(BIN)
                    .args([
                        "keys",
                        "rotate",
                        "key_existing",
                        "--id",
                        "key_rotated",
                        "--grace",
                        "1h",
                        "--snapshot",
                    ])
                    .arg(&snapshot)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            });
            let revoke = (round == 2).then(|| {
                Command::new(BIN)
                    .args(["keys", "revoke", "key_existing", "--snapshot"])
                    .arg(&snapshot)
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            });
            for (id, child) in children {
                let out = child.wait_with_output().unwrap();
                assert!(out.status.success(), "{file} {id}: {}", stderr(&out));
                printed_key(&out, "ord_c_");
                made.push(id);
            }
            if let Some(r) = rotate {
                let out = r.wait_with_output().unwrap();
                assert!(out.status.success(), "{file} rotate: {}", stderr(&out));
                printed_key(&out, "ord_c_");
            }
            if let Some(r) = revoke {
                let out = r.wait_with_output().unwrap();
                assert!(out.status.success(), "{file} revoke: {}", stderr(&out));
            }
        }
        let text = std::fs::read_to_string(&snapshot).unwrap();
        for id in &made {
            assert_eq!(
                text.matches(&format!("\"{id}\"")).count(),
                1,
                "{file}: {id} is in the file once"
            );
        }
        assert_eq!(
            text.matches("\"key_r").count(),
            ROUNDS * PARALLEL + 1,
            "and key_rotated"
        );
        assert_eq!(
            text.matches("\"key_rotated\"").count(),
            1,
            "{file}: the rotation kept"
        );
        assert!(text.contains("revoked_at"), "{file}: the revocation kept");
        assert_eq!(listing(dir.path()), [file], "no temp file left");
        assert!(check_snapshot(&snapshot).status.success());
    }
}

/// With standard output closed the key could never be shown: refused before
/// anything is written.
#[test]
fn keys_new_with_stdout_closed_writes_nothing() {
    let (dir, snapshot) = folder_with("keys.toml", COMMENTED);
    let out = Command::new("sh")
        .arg("-c")
        .arg("exec \"$0\" keys new --snapshot \"$1\" --type company --company acme --name n --scope admin >&-")
        .arg(BIN)
        .arg(&snapshot)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("standard output is closed or /dev/null")
            && err.contains("nothing was written"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&snapshot).unwrap(), COMMENTED);
    assert_eq!(listing(dir.path()), ["keys.toml"]);
    // The same for a stdout sent to /dev/null: the key would be lost.
    let out = Command::new(BIN)
        .args(["keys", "new", "--snapshot"])
        .arg(&snapshot)
        .args(["--type", "company", "--company", "acme", "--name", "n"])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("standard output is closed or /dev/null"));
    assert_eq!(std::fs::read_to_string(&snapshot).unwrap(), COMMENTED);
}

/// A root edit keeps the snapshot's owner, group and mode, so a gateway
/// running as that owner can still read it; a user who cannot give the new
/// file that owner is refused before anything is written.
#[test]
fn key_edits_keep_the_snapshot_owner_and_mode() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::os::unix::process::CommandExt;
    if !running_as_root() {
        eprintln!("key_edits_keep_the_snapshot_owner_and_mode: needs root to chown; not run");
        return;
    }
    let (dir, snapshot) = folder_with("keys.toml", COMMENTED);
    std::os::unix::fs::chown(&snapshot, Some(1234), Some(1234)).unwrap();
    std::fs::set_permissions(&snapshot, std::fs::Permissions::from_mode(0o640)).unwrap();
    let owner = |p: &Path| {
        let m = std::fs::metadata(p).unwrap();
        (m.uid(), m.gid(), m.mode() & 0o7777)
    };
    printed_key(
        &keys_new(
            &snapshot,
            &[
                "--type",
                "company",
                "--company",
                "acme",
                "--name",
                "n",
                "--scope",
                "admin",
            ],
        ),
        "ord_c_",
    );
    assert_eq!(owner(&snapshot), (1234, 1234, 0o640), "after keys new");
    let out = keygate(&[
        "keys",
        "revoke",
        "key_existing",
        "--snapshot",
        snapshot.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(owner(&snapshot), (1234, 1234, 0o640), "after keys revoke");
    // Another unprivileged user with write access to the folder cannot make
    // the file 1234's: refused, nothing written.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(&snapshot, std::fs::Permissions::from_mode(0o644)).unwrap();
    let before = std::fs::read_to_string(&snapshot).unwrap();
    let out = Command::new(BIN)
        .args(["keys", "new", "--snapshot"])
        .arg(&snapshot)
        .args([
            "--type",
            "company",
            "--company",
            "acme",
            "--name",
            "n",
            "--scope",
            "admin",
        ])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "no key printed");
    let err = stderr(&out);
    assert!(
        err.contains("owner 1234:1234") && err.contains("nothing was written"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&snapshot).unwrap(), before);
    assert_eq!(listing(dir.path()), ["keys.toml"], "no temp file left");
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

#[test]
fn keys_list_shows_every_key_and_never_a_hash() {
    let mut snap = Snapshot::new().workspace("ws_a", "acme");
    snap.company_key("k_company", "acme")
        .scopes(&["admin"])
        .add();
    snap.workspace_key("k_revoked", "acme", "ws_a")
        .scopes(&["read:all", "write:all"])
        .extra("revoked_at = \"2026-01-01T00:00:00Z\"")
        .add();
    snap.workspace_key("k_expired", "acme", "ws_a")
        .scopes(&["read:all"])
        .extra("expires_at = \"2026-01-01T00:00:00Z\"")
        .add();
    let (_dir, snapshot) = folder_with("keys.toml", &snap.render());
    let out = keygate(&["keys", "list", "--snapshot", snapshot.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(!table.contains("sha256"), "{table}");
    for k in &snap.keys {
        assert!(!table.contains(&k.key));
    }
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0][..8],
        [
            "ID",
            "TYPE",
            "COMPANY",
            "WORKSPACE",
            "SCOPES",
            "STATE",
            "CREATED",
            "EXPIRES"
        ]
    );
    let row = |id: &str| rows.iter().find(|r| r[0] == id).unwrap().clone();
    assert_eq!(
        row("k_company")[1..8],
        [
            "company",
            "acme",
            "-",
            "admin",
            "active",
            "2026-11-01T10:00:00Z",
            "-"
        ]
    );
    assert_eq!(
        row("k_revoked")[1..6],
        ["workspace", "acme", "ws_a", "read:all,write:all", "revoked"]
    );
    assert_eq!(row("k_expired")[5], "expired");
    assert_eq!(row("k_expired")[7], "2026-01-01T00:00:00Z");
}

#[test]
fn keys_hash_prints_the_sha256_of_stdin() {
    let key = mint("ord_c_");
    for input in [format!("{key}\n"), key.clone(), format!("  {key}\r\n")] {
        let mut child = Command::new(BIN)
            .args(["keys", "hash"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out), format!("{}\n", hash(&key)));
    }
    let empty = keygate(&["keys", "hash"]);
    assert!(!empty.status.success());
    assert!(
        stderr(&empty).contains("stdin is empty"),
        "{}",
        stderr(&empty)
    );
}

#[test]
fn keys_revoke_and_list_refuse_unknown_ids_and_missing_files() {
    let (dir, snapshot) = folder_with("keys.toml", COMMENTED);
    let out = keygate(&[
        "keys",
        "revoke",
        "key_nope",
        "--snapshot",
        snapshot.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no key with id \"key_nope\""),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_to_string(&snapshot).unwrap(), COMMENTED);
    let missing = dir.path().join("missing.toml");
    for command in [
        &["keys", "list", "--snapshot"][..],
        &["keys", "revoke", "key_old", "--snapshot"],
        &["keys", "rotate", "key_old", "--snapshot"],
    ] {
        let mut args = command.to_vec();
        args.push(missing.to_str().unwrap());
        let out = keygate(&args);
        assert_eq!(out.status.code(), Some(1), "{command:?}");
        assert!(
            stderr(&out).contains("cannot read") && stderr(&out).contains("missing.toml"),
            "{command:?}: {}",
            stderr(&out)
        );
    }
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("missing"))
        .collect();
    assert!(
        left.is_empty(),
        "no file made for a missing snapshot: {left:?}"
    );
}

#[test]
fn keys_revoke_edits_json_snapshots() {
    let key = mint("ord_c_");
    let json = serde_json::json!({
        "workspaces": [],
        "keys": [{
            "id": "k1", "name": "n", "type": "company", "company": "acme",
            "scopes": ["admin"], "hash": hash(&key), "created_at": "2026-11-01T10:00:00Z",
        }],
    });
    let (dir, snapshot) = folder_with("keys.json", &json.to_string());
    let out = keygate_in(
        dir.path(),
        &["keys", "revoke", "k1", "--snapshot", "keys.json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&snapshot).unwrap()).unwrap();
    assert!(
        doc["keys"][0]["revoked_at"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert!(check_snapshot(&snapshot).status.success());
}

#[test]
fn revoked_key_is_403_after_keys_revoke_and_sighup() {
    let up = Upstream::start();
    let mut snap = Snapshot::new().workspace("ws_a", "acme");
    let key = snap
        .company_key("k_company", "acme")
        .scopes(&["admin"])
        .add();
    let body = format!("# ops: keep this comment\n{}", snap.render());
    let gw = Gateway::start(&standard_config(up.addr, "", ""), &body);
    assert_eq!(gw.get("/api/v1/company/x", Some(&key)).status(), 200);

    let snapshot = gw.keys_path();
    let revoke = || {
        keygate(&[
            "keys",
            "revoke",
            "k_company",
            "--snapshot",
            snapshot.to_str().unwrap(),
        ])
    };
    let out = revoke();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("k_company"));
    let text = std::fs::read_to_string(&snapshot).unwrap();
    assert!(text.starts_with("# ops: keep this comment\n"));
    assert_eq!(gw.reload_by_signal(), "success");

    let resp = gw.get("/api/v1/company/x", Some(&key));
    assert_eq!(resp.status(), 403);
    let body: serde_json::Value = resp.json().unwrap();
    assert_eq!(body["code"], "FORBIDDEN");
    let msg = body["message"].as_str().unwrap();
    let n: u64 = msg
        .strip_prefix("API key was revoked ")
        .and_then(|m| {
            m.strip_suffix(" seconds ago")
                .or_else(|| m.strip_suffix(" second ago"))
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected message {msg:?}"));
    assert!(n < 60, "revoked just now: {msg}");

    // Again: idempotent, the first revocation time is kept.
    let again = revoke();
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("already revoked"),
        "{}",
        stderr(&again)
    );
    assert_eq!(std::fs::read_to_string(&snapshot).unwrap(), text);
}

#[test]
fn key_made_by_keys_new_authenticates_after_sighup() {
    let up = Upstream::start();
    let mut snap = Snapshot::new().workspace("ws_a", "acme");
    snap.company_key("k_other", "acme").scopes(&["admin"]).add();
    let gw = Gateway::start(&standard_config(up.addr, "", ""), &snap.render());

    let out = keys_new(
        &gw.keys_path(),
        &[
            "--type",
            "workspace",
            "--company",
            "acme",
            "--workspace",
            "ws_a",
            "--name",
            "new app",
            "--scope",
            "read:all",
            "--id",
            "k_new",
        ],
    );
    let key = printed_key(&out, "ord_");
    let path = "/api/v1/workspaces/ws_a/posts/1";
    assert_eq!(
        gw.get(path, Some(&key)).status(),
        401,
        "unknown until reloaded"
    );
    assert_eq!(gw.reload_by_signal(), "success");
    let resp = gw.get(path, Some(&key));
    assert_eq!(resp.status(), 200);
    let seen = up.last();
    assert_eq!(seen.header("x-keygate-key-id"), Some("k_new"));
    assert_eq!(seen.header("x-keygate-workspace"), Some("ws_a"));
    assert!(!gw.log().contains(&key), "the key never reaches the log");
}
