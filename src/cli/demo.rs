//! `keygate demo`.
//!
//! The demo runs the gateway on a copy of the given config (the bundled one by
//! default) whose snapshot is swapped for freshly minted demo keys, starts a
//! built-in echo upstream on the config's first upstream server, and prints
//! ready-to-paste `curl` lines showing each kind of answer. The copy and the
//! demo snapshot live in a temp folder kept for the life of the process; the
//! operator's files are only read. Demo keys exist nowhere else and die with
//! the run.

use crate::cli::keys::{KeysError, NewRecord, append_toml, generate_key};
use crate::config::Config;
use crate::model::key::{KeyDigest, KeyType, Prefixes};
use crate::model::limit::Limit;
use crate::model::problem::Problems;
use crate::model::scope::Scope;
use crate::server::RunOptions;
use crate::snapshot::{KeyIndex, format_time};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why the demo could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The config does not load.
    #[error("{0}")]
    Config(Problems),
    /// A file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// File.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The temp folder could not be made.
    #[error("cannot create the demo's temp folder")]
    TempDir(#[source] std::io::Error),
    /// A demo file could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// File.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The config cannot be turned into the demo copy.
    #[error("{}: {what}", path.display())]
    Edit {
        /// Config.
        path: PathBuf,
        /// What is in the way.
        what: String,
    },
    /// Nothing to send curl to.
    #[error(
        "{}: the demo needs a plain HTTP listener in [server] listen for its curl lines",
        .0.display()
    )]
    NoPlainListener(PathBuf),
    /// Nowhere to put the echo upstream.
    #[error("{}: the demo needs an [[upstreams]] entry with a server for its echo upstream", .0.display())]
    NoUpstream(PathBuf),
    /// The echo upstream speaks plain HTTP only.
    #[error(
        "{}: upstream {name:?} has tls = true, but the demo's echo upstream speaks plain HTTP",
        path.display()
    )]
    TlsUpstream {
        /// Config.
        path: PathBuf,
        /// Upstream name.
        name: String,
    },
    /// The echo upstream could not listen.
    #[error(
        "cannot start the echo upstream on {addr} (the config's first upstream server): {reason}"
    )]
    Echo {
        /// Address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// Minting a key failed.
    #[error(transparent)]
    Keys(#[from] KeysError),
    /// The demo files do not load (a bug in the demo).
    #[error("the demo config or snapshot does not load:\n{0}")]
    Generated(Problems),
}

/// The demo's workspaces: the same as the bundled `config/keys.toml`.
const WORKSPACES: &[(&str, &str)] = &[
    ("ws_marketing", "acme"),
    ("ws_sales", "acme"),
    ("ws_research", "globex"),
];

/// The fresh demo keys of one run.
struct DemoKeys {
    admin: String,
    reader: String,
    marketing: String,
    limited: String,
}

/// A demo snapshot with fresh keys, and the keys.
fn demo_snapshot(prefixes: &Prefixes, now: i64) -> Result<(String, DemoKeys), DemoError> {
    let mut text = String::from(
        "# keygate demo snapshot: fresh keys for one `keygate demo` run, printed on its stdout.\n",
    );
    for (id, company) in WORKSPACES {
        let _ = write!(
            text,
            "\n[[workspaces]]\nid = {id:?}\ncompany = {company:?}\n"
        );
    }
    let mut add = |id: &str,
                   name: &str,
                   key_type: KeyType,
                   workspace: Option<&str>,
                   scopes: &[Scope],
                   rate_limit: Option<Limit>|
     -> Result<String, DemoError> {
        let key = generate_key(prefixes, key_type)?;
        let record = NewRecord {
            id: id.into(),
            name: name.into(),
            description: None,
            key_type,
            company: "acme".into(),
            workspace: workspace.map(Into::into),
            scopes: scopes.to_vec(),
            hash: KeyDigest::of(key.as_bytes()).to_text(),
            created_at: format_time(now),
            expires_at: None,
            rate_limit,
            replaces: None,
        };
        text = append_toml(&text, &record).map_err(|what| DemoError::Edit {
            path: PathBuf::from("demo keys.toml"),
            what: what.to_string(),
        })?;
        Ok(key)
    };
    let limit = Limit::from_raw(2, 60, None).map_err(|e| DemoError::Edit {
        path: PathBuf::from("demo keys.toml"),
        what: e.to_string(),
    })?;
    let keys = DemoKeys {
        admin: add(
            "key_demo_admin",
            "demo company admin",
            KeyType::Company,
            None,
            &[Scope::Admin],
            None,
        )?,
        reader: add(
            "key_demo_reader",
            "demo company read-only",
            KeyType::Company,
            None,
            &[Scope::Read],
            None,
        )?,
        marketing: add(
            "key_demo_marketing",
            "demo marketing app",
            KeyType::Workspace,
            Some("ws_marketing"),
            &[Scope::Read, Scope::Write],
            None,
        )?,
        limited: add(
            "key_demo_limited",
            "demo key limited to 2 requests a minute",
            KeyType::Workspace,
            Some("ws_marketing"),
            &[Scope::Read],
            Some(limit),
        )?,
    };
    Ok((text, keys))
}

/// An absolute form of a path from the validated config, so the copy in the
/// temp folder still finds the files next to the original.
fn absolute(path: &Path, config: &Path) -> Result<String, DemoError> {
    std::path::absolute(path)
        .map(|p| p.to_string_lossy().into_owned())
        .map_err(|e| DemoError::Edit {
            path: config.to_path_buf(),
            what: format!("cannot make {} absolute: {e}", path.display()),
        })
}

/// The config text with the demo snapshot swapped in and every other relative
/// path made absolute. Everything else (comments included) stays as written.
fn demo_config_text(
    text: &str,
    config: &Config,
    config_path: &Path,
    snapshot: &Path,
) -> Result<String, DemoError> {
    let edit_err = |what: String| DemoError::Edit {
        path: config_path.to_path_buf(),
        what,
    };
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| edit_err(e.message().trim_end().to_string()))?;
    let keys = doc
        .entry("keys")
        .or_insert_with(toml_edit::table)
        .as_table_like_mut()
        .ok_or_else(|| edit_err("[keys] is not a table".into()))?;
    keys.insert(
        "snapshot",
        toml_edit::value(absolute(snapshot, config_path)?),
    );
    if let Some(tls) = &config.server.tls
        && let Some(t) = doc
            .get_mut("server")
            .and_then(|s| s.get_mut("tls"))
            .and_then(|t| t.as_table_like_mut())
    {
        t.insert("cert", toml_edit::value(absolute(&tls.cert, config_path)?));
        t.insert("key", toml_edit::value(absolute(&tls.key, config_path)?));
    }
    if let Some(toml_edit::Item::ArrayOfTables(tables)) = doc.get_mut("upstreams") {
        for (table, up) in tables.iter_mut().zip(&config.upstreams) {
            if let Some(ca) = &up.ca_file {
                table.insert("ca_file", toml_edit::value(absolute(ca, config_path)?));
            }
        }
    }
    Ok(doc.to_string())
}

/// Answers every request with 200 and a JSON echo of its method, path and
/// headers, so the demo shows what keygate tells the upstream.
fn start_echo(addr: &str) -> Result<(), DemoError> {
    let server = tiny_http::Server::http(addr).map_err(|e| DemoError::Echo {
        addr: addr.to_string(),
        reason: e.to_string(),
    })?;
    let server = Arc::new(server);
    // A few threads so that one slow client does not stall the demo; they
    // live as long as the process, like the gateway they serve.
    for _ in 0..4 {
        let server = Arc::clone(&server);
        std::thread::spawn(move || {
            for request in server.incoming_requests() {
                let mut headers = serde_json::Map::new();
                for h in request.headers() {
                    let name = h.field.as_str().as_str().to_ascii_lowercase();
                    let value = h.value.as_str().to_string();
                    match headers.get_mut(&name) {
                        Some(serde_json::Value::String(v)) => {
                            v.push_str(", ");
                            v.push_str(&value);
                        }
                        _ => {
                            headers.insert(name, value.into());
                        }
                    }
                }
                let body = serde_json::json!({
                    "echo": "keygate demo upstream",
                    "method": request.method().as_str(),
                    "path": request.url(),
                    "headers": headers,
                });
                let text = serde_json::to_string_pretty(&body).unwrap_or_default() + "\n";
                let mut response = tiny_http::Response::from_string(text);
                if let Ok(h) = tiny_http::Header::from_bytes("Content-Type", "application/json") {
                    response.add_header(h);
                }
                let _ = request.respond(response);
            }
        });
    }
    Ok(())
}

/// The message printed once the gateway is ready.
fn ready_message(
    http: SocketAddr,
    admin: SocketAddr,
    echo: &str,
    dir: &Path,
    keys: &DemoKeys,
) -> String {
    let base = format!("http://{http}");
    let bearer = |k: &str| format!("-H 'Authorization: Bearer {k}'");
    let company = format!("{base}/api/v1/company/workspaces");
    let posts = format!("{base}/api/v1/workspaces/ws_marketing/posts");
    let mut m = String::new();
    let _ = writeln!(m);
    let _ = writeln!(m, "keygate demo is ready");
    let _ = writeln!(m, "  gateway   {base}");
    let _ = writeln!(m, "  admin     http://{admin}");
    let _ = writeln!(
        m,
        "  upstream  {echo}: a built-in echo that answers with the method, path and headers it got"
    );
    let _ = writeln!(
        m,
        "  files     {} (config copy and demo keys, made for this run only)",
        dir.display()
    );
    let _ = writeln!(m);
    let _ = writeln!(
        m,
        "# 200: a company admin key lists workspaces; the echo shows the x-keygate-* headers the upstream gets"
    );
    let _ = writeln!(m, "curl -i {} {company}", bearer(&keys.admin));
    let _ = writeln!(m);
    let _ = writeln!(m, "# 401: no key");
    let _ = writeln!(m, "curl -i {company}");
    let _ = writeln!(m);
    let _ = writeln!(m, "# 403: a workspace key on a company route");
    let _ = writeln!(m, "curl -i {} {company}", bearer(&keys.marketing));
    let _ = writeln!(m);
    let _ = writeln!(
        m,
        "# 403: a read-only company key tries to create a workspace (needs write:all)"
    );
    let _ = writeln!(m, "curl -i -X POST {} {company}", bearer(&keys.reader));
    let _ = writeln!(m);
    let _ = writeln!(
        m,
        "# 429: a key limited to 2 requests a minute, three times in a row (prints 200 200 429)"
    );
    let _ = writeln!(
        m,
        "for i in 1 2 3; do curl -s -o /dev/null -w '%{{http_code}}\\n' {} {posts}; done",
        bearer(&keys.limited)
    );
    let _ = writeln!(m);
    let _ = writeln!(m, "# metrics");
    let _ = writeln!(m, "curl -s http://{admin}/metrics | grep '^keygate_'");
    m
}

/// Sets the demo up: temp config and snapshot, echo upstream, curl lines.
/// Returns the config path the gateway must run on and the run options.
pub fn prepare(config_path: &Path) -> Result<(PathBuf, RunOptions), DemoError> {
    let config = Config::load(config_path).map_err(DemoError::Config)?;
    let text = std::fs::read_to_string(config_path).map_err(|source| DemoError::Read {
        path: config_path.to_path_buf(),
        source,
    })?;
    let http = config
        .server
        .listen
        .first()
        .copied()
        .map(crate::util::sys::reachable)
        .ok_or_else(|| DemoError::NoPlainListener(config_path.to_path_buf()))?;
    let upstream = config
        .upstreams
        .first()
        .filter(|u| !u.servers.is_empty())
        .ok_or_else(|| DemoError::NoUpstream(config_path.to_path_buf()))?;
    if upstream.tls {
        return Err(DemoError::TlsUpstream {
            path: config_path.to_path_buf(),
            name: upstream.name.clone(),
        });
    }
    let echo_addr = upstream.servers[0].clone();

    // Kept, not deleted on drop: the gateway reads these files for as long as
    // it runs (and on every reload), and it leaves by `process::exit`.
    let dir = tempfile::Builder::new()
        .prefix("keygate-demo-")
        .tempdir()
        .map_err(DemoError::TempDir)?
        .keep();
    let snapshot_path = dir.join("keys.toml");
    let demo_config_path = dir.join("keygate.toml");
    let (snapshot, keys) = demo_snapshot(&config.keys.prefixes, crate::util::clock::unix_now())?;
    KeyIndex::parse(&snapshot_path, &snapshot).map_err(DemoError::Generated)?;
    let demo_config = demo_config_text(&text, &config, config_path, &snapshot_path)?;
    for (path, body) in [
        (&snapshot_path, &snapshot),
        (&demo_config_path, &demo_config),
    ] {
        std::fs::write(path, body).map_err(|source| DemoError::Write {
            path: path.clone(),
            source,
        })?;
    }
    crate::cli::check::check(&demo_config_path).map_err(DemoError::Generated)?;
    start_echo(&echo_addr)?;
    let message = ready_message(
        http,
        crate::util::sys::reachable(config.admin.listen),
        &echo_addr,
        &dir,
        &keys,
    );
    Ok((
        demo_config_path,
        RunOptions {
            on_ready_message: Some(message),
            ..RunOptions::default()
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_snapshot_has_the_four_advertised_keys() {
        let prefixes = Prefixes::default();
        let (text, keys) = demo_snapshot(&prefixes, 1_793_527_200).unwrap();
        let index = KeyIndex::parse(Path::new("keys.toml"), &text).unwrap();
        assert_eq!(index.len(), 4);
        assert_eq!(index.workspace_count(), WORKSPACES.len());
        for (key, id, t) in [
            (&keys.admin, "key_demo_admin", KeyType::Company),
            (&keys.reader, "key_demo_reader", KeyType::Company),
            (&keys.marketing, "key_demo_marketing", KeyType::Workspace),
            (&keys.limited, "key_demo_limited", KeyType::Workspace),
        ] {
            let (_, r) = index.lookup(&KeyDigest::of(key.as_bytes())).unwrap();
            assert_eq!((r.id(), r.key_type), (id, t));
            assert_eq!(prefixes.classify(key.as_bytes()), Some(t));
            assert!(
                !text.contains(key.as_str()),
                "the snapshot holds hashes only"
            );
        }
        let (_, limited) = index.by_id("key_demo_limited").unwrap();
        assert_eq!(
            limited.rate_limit,
            Some(Limit::from_raw(2, 60, None).unwrap())
        );
    }

    #[test]
    fn demo_config_points_at_the_demo_snapshot_with_absolute_paths() {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("keygate.toml");
        let text = "# kept\n[server]\nlisten = [\"127.0.0.1:8080\"]\n\n[keys]\nsnapshot = \"keys.toml\" # comment\n\n[[upstreams]]\nname = \"api\"\nservers = [\"127.0.0.1:9000\"]\nca_file = \"ca.pem\"\n";
        std::fs::write(&config_path, text).unwrap();
        std::fs::write(dir.path().join("ca.pem"), "").unwrap();
        let config = Config::load(&config_path).unwrap();
        let out = demo_config_text(
            text,
            &config,
            &config_path,
            Path::new("/tmp/demo/keys.toml"),
        )
        .unwrap();
        assert!(out.starts_with("# kept\n"));
        assert!(out.contains("snapshot = \"/tmp/demo/keys.toml\""), "{out}");
        let ca = dir.path().join("ca.pem");
        assert!(
            out.contains(&format!("ca_file = {:?}", ca.to_string_lossy())),
            "{out}"
        );
    }
}
