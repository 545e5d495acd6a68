//! `keygate keys new | revoke | list | hash`: snapshot editing for operators.
//!
//! Keys come from the OS CSPRNG and are printed once, alone, on stdout; the
//! record id goes to stderr. TOML edits go through `toml_edit`, so the
//! operator's comments, formatting and order survive; in JSON snapshots every
//! record and top-level field but the one edited is copied as written (the
//! lists are laid out one element per line), so a million-key file is edited
//! in seconds and about 1 GB, not a `serde_json::Value` per field.
//!
//! Every edit is checked before it touches the disk: the existing file must
//! load (so an edit never launders a broken snapshot), and the whole edited
//! text must load again through [`KeyIndex::parse`], the same validator the
//! gateway uses. The write is atomic: a temp file in the same folder, fsync,
//! rename over the snapshot, fsync of the folder. A crash at any point leaves
//! either the old file or the new one, never a mix.
//!
//! `revoke` is idempotent: revoking a key that is already revoked keeps the
//! earlier `revoked_at`, says so on stderr and exits 0, so a re-run script does
//! not fail and the first revocation time (what the gateway reports as "revoked
//! N days ago") is not rewritten. A revocation scheduled in the future is
//! brought forward to now.
//!
//! Neither a key nor a hash ever appears in an error message.

use crate::model::format::SnapshotFormat as Format;
use crate::model::key::{KeyDigest, KeyType, MAX_TOKEN_LEN, PrefixError, Prefixes};
use crate::model::limit::Limit;
use crate::model::problem::Problems;
use crate::model::scope::Scope;
use crate::snapshot::WorkspaceProblem;
use crate::snapshot::{KeyIndex, format_time, parse_time, valid_id};
use rand::TryRng;
use rand::rngs::{SysError, SysRng};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// `keygate keys new`
#[derive(Debug, Clone, clap::Args)]
pub struct NewArgs {
    /// Snapshot file to add the key to (.toml or .json); created if missing.
    #[arg(long)]
    pub snapshot: PathBuf,
    /// company | workspace
    #[arg(long = "type", value_name = "TYPE")]
    pub key_type: String,
    /// Owning company.
    #[arg(long)]
    pub company: String,
    /// Workspace (workspace keys only); must be listed under the company in [[workspaces]].
    #[arg(long)]
    pub workspace: Option<String>,
    /// Human name.
    #[arg(long)]
    pub name: String,
    /// Optional description.
    #[arg(long)]
    pub description: Option<String>,
    /// Scope (repeatable): read:all, write:all, admin. None: the key passes
    /// only routes with scope = "none".
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<String>,
    /// Own rate limit, e.g. 1000/60s (optionally :BURST).
    #[arg(long)]
    pub rate_limit: Option<String>,
    /// Expiry, RFC 3339 (e.g. 2027-01-01T00:00:00Z); must be in the future.
    #[arg(long)]
    pub expires: Option<String>,
    /// Record id (default: key_ + 12 random letters and digits).
    #[arg(long)]
    pub id: Option<String>,
    /// Key prefix for company keys.
    #[arg(long, default_value = crate::model::key::DEFAULT_COMPANY_PREFIX)]
    pub company_prefix: String,
    /// Key prefix for workspace keys.
    #[arg(long, default_value = crate::model::key::DEFAULT_WORKSPACE_PREFIX)]
    pub workspace_prefix: String,
}

/// `keygate keys revoke`
#[derive(Debug, Clone, clap::Args)]
pub struct RevokeArgs {
    /// Record id.
    pub id: String,
    /// Snapshot file.
    #[arg(long)]
    pub snapshot: PathBuf,
}

/// `keygate keys rotate`
#[derive(Debug, Clone, clap::Args)]
pub struct RotateArgs {
    /// Id of the key to replace.
    pub id: String,
    /// Snapshot file.
    #[arg(long)]
    pub snapshot: PathBuf,
    /// How long the old key keeps working (e.g. 24h, 30m, 0s to stop it now).
    #[arg(long, default_value = "24h")]
    pub grace: String,
    /// Id of the new record (default: key_ + 12 random letters and digits).
    #[arg(long = "id")]
    pub new_id: Option<String>,
    /// Expiry of the new key, RFC 3339 (default: none).
    #[arg(long)]
    pub expires: Option<String>,
    /// Key prefix for company keys.
    #[arg(long, default_value = crate::model::key::DEFAULT_COMPANY_PREFIX)]
    pub company_prefix: String,
    /// Key prefix for workspace keys.
    #[arg(long, default_value = crate::model::key::DEFAULT_WORKSPACE_PREFIX)]
    pub workspace_prefix: String,
}

/// `keygate keys list`
#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    /// Snapshot file.
    #[arg(long)]
    pub snapshot: PathBuf,
}

/// Why a `keygate keys` command did nothing. Messages name the file and the key
/// id, never a key or a hash.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The snapshot's extension says neither TOML nor JSON.
    #[error("{}: the key snapshot's name must end in .toml or .json", .0.display())]
    Extension(PathBuf),
    /// `--type` is not a key type.
    #[error("--type must be \"company\" or \"workspace\" (got {0:?})")]
    BadType(String),
    /// A workspace key without `--workspace`.
    #[error("a workspace key needs --workspace")]
    WorkspaceMissing,
    /// A company key with `--workspace`.
    #[error(
        "a company key reaches every workspace of its company and must not name one (got --workspace {0:?})"
    )]
    WorkspaceOnCompanyKey(String),
    /// The workspace is unlisted, or listed under another company.
    #[error("{}: {problem}{}", path.display(), match problem {
        WorkspaceProblem::Unlisted { .. } => "; add it there first",
        WorkspaceProblem::Foreign { .. } => "",
    })]
    Workspace {
        /// Snapshot.
        path: PathBuf,
        /// What is wrong.
        problem: WorkspaceProblem,
    },
    /// `--company` is empty.
    #[error("--company must not be empty")]
    EmptyCompany,
    /// `--name` is empty.
    #[error("--name must not be empty")]
    EmptyName,
    /// A `--scope` that does not exist.
    #[error("unknown scope {0:?} (expected read:all, write:all or admin)")]
    UnknownScope(String),
    /// `--id` outside the id alphabet.
    #[error("--id {0:?} must be 1-128 letters, digits, '_', '-', '.' or ':'")]
    BadId(String),
    /// `--id` already taken.
    #[error("{}: a key with id {id:?} already exists", path.display())]
    DuplicateId {
        /// Snapshot.
        path: PathBuf,
        /// The id.
        id: String,
    },
    /// `--rate-limit` does not parse.
    #[error("--rate-limit: {0}")]
    BadRateLimit(crate::model::limit::LimitError),
    /// `--expires` does not parse.
    #[error("--expires: {0}")]
    BadExpiry(crate::snapshot::TimeError),
    /// `--expires` is not in the future.
    #[error("--expires {0} is not in the future")]
    ExpiryInPast(String),
    /// The prefixes cannot tell key types apart.
    #[error("key prefixes: {0}")]
    Prefix(#[from] PrefixError),
    /// The prefixes make it impossible to mint a key of the wanted type.
    #[error(
        "a {0} key made with these prefixes would be read as another type; choose prefixes where neither is the other followed by letters or digits"
    )]
    AmbiguousPrefix(KeyType),
    /// The file cannot be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// Snapshot.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The existing file does not load.
    #[error(
        "{} does not load, and nothing was changed; fix it first (`keygate check` reports the same):\n{problems}",
        path.display()
    )]
    Invalid {
        /// Snapshot.
        path: PathBuf,
        /// What is wrong.
        problems: Problems,
    },
    /// The file's layout is not one this command can edit.
    #[error("{}: {what}; nothing was written", path.display())]
    Layout {
        /// Snapshot.
        path: PathBuf,
        /// What is in the way.
        what: LayoutError,
    },
    /// The edited text would not load (a bug, or a race with another editor).
    #[error(
        "{}: the edited snapshot would not load, so nothing was written:\n{problems}",
        path.display()
    )]
    WouldNotLoad {
        /// Snapshot.
        path: PathBuf,
        /// What is wrong.
        problems: Problems,
    },
    /// The file changed between our read and our rename.
    #[error(
        "{} changed while this command was editing it; nothing was written, run the command again",
        path.display()
    )]
    Conflict {
        /// Snapshot.
        path: PathBuf,
    },
    /// Writing the temp file, fsync or rename failed.
    #[error("cannot write {} ({step}); the snapshot was left as it was", path.display())]
    Write {
        /// Snapshot.
        path: PathBuf,
        /// Which step failed.
        step: &'static str,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The id is not in the snapshot.
    #[error("{}: no key with id {id:?}", path.display())]
    UnknownId {
        /// Snapshot.
        path: PathBuf,
        /// The id.
        id: String,
    },
    /// The OS random number generator failed.
    #[error("the OS random number generator failed")]
    Random(#[source] SysError),
    /// Reading stdin failed.
    #[error("cannot read the key from stdin")]
    Stdin(#[source] std::io::Error),
    /// Nothing on stdin.
    #[error("stdin is empty: pipe the key in, e.g. printf %s \"$KEY\" | keygate keys hash")]
    EmptyInput,
    /// Whitespace inside the input.
    #[error("stdin holds more than one word; a key contains no whitespace")]
    SeveralWords,
    /// The input is too long to ever be accepted.
    #[error(
        "the input is longer than {MAX_TOKEN_LEN} bytes; the gateway refuses such tokens without a lookup"
    )]
    TooLong,
    /// The input is not UTF-8.
    #[error("stdin is not UTF-8 text")]
    NotText,
    /// The record is on disk but the key could not be shown.
    #[error(
        "key {id} was written to {}, but the key could not be printed; revoke it with `keygate keys revoke {id} --snapshot {}`",
        path.display(), path.display()
    )]
    PrintKey {
        /// Snapshot.
        path: PathBuf,
        /// Record id.
        id: String,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// Writing to stdout failed.
    #[error("cannot write to stdout")]
    Stdout(#[source] std::io::Error),
    /// `--grace` does not parse.
    #[error("--grace {0:?} must be a duration such as 24h, 30m or 0s")]
    BadGrace(String),
    /// `--grace` ends after the last instant RFC 3339 can write.
    #[error("--grace {0:?} is too long: the old key would stop working after the year 9999")]
    GraceTooLong(String),
    /// The key to rotate is no longer usable.
    #[error(
        "{}: key {id:?} is {state}, so it cannot be rotated; make a new key with `keygate keys new`",
        path.display()
    )]
    NotRotatable {
        /// Snapshot.
        path: PathBuf,
        /// The id.
        id: String,
        /// `revoked` or `expired`.
        state: &'static str,
    },
    /// Standard output is closed or `/dev/null`: a new key could never be shown.
    #[error(
        "standard output is closed or /dev/null, so the new key could not be shown; nothing was written (run it with stdout open, e.g. redirected to a file)"
    )]
    StdoutClosed,
    /// The lock beside the snapshot could not be taken.
    #[error("cannot lock {} against other editors (via {}); nothing was written", path.display(), lock.display())]
    Lock {
        /// Snapshot.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The replacement file could not be given the snapshot's owner.
    #[error(
        "cannot give the new {} the owner {uid}:{gid} of the old one, so a gateway running as that user might not read it; nothing was written (run as that user or as root)",
        path.display()
    )]
    Owner {
        /// Snapshot.
        path: PathBuf,
        /// The snapshot's owner.
        uid: u32,
        /// The snapshot's group.
        gid: u32,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The file the snapshot resolves to: a symlink's target, so that the link
/// is kept and the lock and temp file sit beside what is really replaced.
fn resolve_target(path: &Path) -> Result<PathBuf, std::io::Error> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(path),
        _ => Ok(path.to_path_buf()),
    }
}

/// The folder and file name of `target`.
fn split_target(target: &Path) -> (PathBuf, String) {
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    (dir, name)
}

/// An exclusive advisory lock on `.NAME.lock` beside the snapshot, held from
/// the read to the rename, so that two `keys` commands editing one snapshot
/// run one after the other instead of one silently undoing the other. The
/// lock file stays (removing it would race with a waiter holding its inode).
pub struct SnapshotLock {
    _file: std::fs::File,
}

impl SnapshotLock {
    /// Waits for and takes the lock of the snapshot at `path`.
    pub fn acquire(path: &Path) -> Result<SnapshotLock, KeysError> {
        use std::os::unix::fs::OpenOptionsExt;
        let lock_path = |target: &Path| {
            let (dir, name) = split_target(target);
            dir.join(format!(".{name}.lock"))
        };
        let err = |lock: PathBuf| {
            let path = path.to_path_buf();
            move |source| KeysError::Lock { path, lock, source }
        };
        let target = resolve_target(path).map_err(err(lock_path(path)))?;
        let lock = lock_path(&target);
        // flock needs only a read handle, so an editor that may not write
        // the lock file still waits its turn (and is refused later, by name,
        // if it may not replace the snapshot either).
        let file = match std::fs::File::open(&lock) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .open(&lock),
            opened => opened,
        }
        .map_err(err(lock.clone()))?;
        file.lock().map_err(err(lock))?;
        Ok(SnapshotLock { _file: file })
    }
}

/// The snapshot's format, or the error that names its extension.
fn format_of(path: &Path) -> Result<Format, KeysError> {
    Format::of(path).ok_or_else(|| KeysError::Extension(path.to_path_buf()))
}

/// Letters and digits: the key body alphabet of contract §1.
const KEY_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// Lowercase letters and digits, for generated record ids.
const ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// Random characters after the prefix: 40 × log2(62) ≈ 238 bits.
pub const KEY_BODY_LEN: usize = 40;

/// `len` characters drawn uniformly from `alphabet` with the OS CSPRNG.
///
/// Rejection sampling keeps every character equally likely: a byte at or above
/// the largest multiple of the alphabet size is thrown away instead of being
/// folded onto the first characters.
fn random_text(alphabet: &[u8], len: usize) -> Result<String, KeysError> {
    let n = alphabet.len();
    let limit = 256 - 256 % n;
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        SysRng.try_fill_bytes(&mut buf).map_err(KeysError::Random)?;
        for &b in buf.iter().filter(|&&b| usize::from(b) < limit) {
            if out.len() == len {
                break;
            }
            out.push(char::from(alphabet[usize::from(b) % n]));
        }
    }
    Ok(out)
}

/// A fresh key of `key_type`: its prefix plus 40 random letters and digits.
///
/// With unusual prefix pairs (`ord` and `ordc`) a random body could make a
/// workspace key look like a company key; such draws are discarded, so the key
/// always classifies as the type it is recorded as.
pub fn generate_key(prefixes: &Prefixes, key_type: KeyType) -> Result<String, KeysError> {
    for _ in 0..64 {
        let key = format!(
            "{}{}",
            prefixes.prefix(key_type),
            random_text(KEY_ALPHABET, KEY_BODY_LEN)?
        );
        if prefixes.classify(key.as_bytes()) == Some(key_type) {
            return Ok(key);
        }
    }
    Err(KeysError::AmbiguousPrefix(key_type))
}

/// A record about to be added, every field already validated and formatted
/// the way it is written.
#[derive(Debug, Clone)]
pub struct NewRecord {
    /// Record id.
    pub id: String,
    /// Human name.
    pub name: String,
    /// Optional description.
    pub description: Option<String>,
    /// Key type.
    pub key_type: KeyType,
    /// Owning company.
    pub company: String,
    /// Workspace (workspace keys).
    pub workspace: Option<String>,
    /// Scopes, canonical order.
    pub scopes: Vec<Scope>,
    /// `sha256:<hex>` of the key.
    pub hash: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub expires_at: Option<String>,
    /// Own limit.
    pub rate_limit: Option<Limit>,
    /// The id of the key it replaces (`keys rotate`).
    pub replaces: Option<String>,
}

impl NewRecord {
    /// The record as a TOML inline table; fields in the snapshot's documented order.
    fn to_inline_table(&self) -> toml_edit::InlineTable {
        let mut t = toml_edit::InlineTable::new();
        t.insert("id", self.id.as_str().into());
        t.insert("name", self.name.as_str().into());
        if let Some(d) = &self.description {
            t.insert("description", d.as_str().into());
        }
        t.insert("type", self.key_type.as_str().into());
        t.insert("company", self.company.as_str().into());
        if let Some(w) = &self.workspace {
            t.insert("workspace", w.as_str().into());
        }
        let scopes: toml_edit::Array = self.scopes.iter().map(|s| s.as_str()).collect();
        t.insert("scopes", scopes.into());
        t.insert("hash", self.hash.as_str().into());
        t.insert("created_at", self.created_at.as_str().into());
        if let Some(e) = &self.expires_at {
            t.insert("expires_at", e.as_str().into());
        }
        if let Some(l) = self.rate_limit {
            let mut r = toml_edit::InlineTable::new();
            r.insert("requests", i64::from(l.requests.get()).into());
            r.insert("per_secs", i64::from(l.per_secs.get()).into());
            if l.burst != l.requests {
                r.insert("burst", i64::from(l.burst.get()).into());
            }
            t.insert("rate_limit", r.into());
        }
        if let Some(old) = &self.replaces {
            t.insert("replaces", old.as_str().into());
        }
        t.fmt();
        t
    }

    /// The record as JSON, fields in the same order as the TOML form.
    fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("id".into(), self.id.as_str().into());
        m.insert("name".into(), self.name.as_str().into());
        if let Some(d) = &self.description {
            m.insert("description".into(), d.as_str().into());
        }
        m.insert("type".into(), self.key_type.as_str().into());
        m.insert("company".into(), self.company.as_str().into());
        if let Some(w) = &self.workspace {
            m.insert("workspace".into(), w.as_str().into());
        }
        m.insert(
            "scopes".into(),
            self.scopes.iter().map(|s| s.as_str()).collect(),
        );
        m.insert("hash".into(), self.hash.as_str().into());
        m.insert("created_at".into(), self.created_at.as_str().into());
        if let Some(e) = &self.expires_at {
            m.insert("expires_at".into(), e.as_str().into());
        }
        if let Some(l) = self.rate_limit {
            let mut r = serde_json::Map::new();
            r.insert("requests".into(), l.requests.get().into());
            r.insert("per_secs".into(), l.per_secs.get().into());
            if l.burst != l.requests {
                r.insert("burst".into(), l.burst.get().into());
            }
            m.insert("rate_limit".into(), r.into());
        }
        if let Some(old) = &self.replaces {
            m.insert("replaces".into(), old.as_str().into());
        }
        m.into()
    }
}

/// Why a snapshot's text could not be edited in place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// The TOML does not parse (the message never quotes the source, which
    /// could be a hash line).
    #[error("not valid TOML: {0}")]
    Toml(String),
    /// The JSON does not parse.
    #[error("not JSON: line {0}")]
    Json(usize),
    /// The JSON top level is not an object.
    #[error("the top level is not a JSON object")]
    JsonTop,
    /// `keys` is not a JSON array.
    #[error("`keys` is not a JSON array")]
    JsonKeys,
    /// `keys` in TOML is neither tables nor an array.
    #[error("`keys` is neither [[keys]] tables nor an array")]
    TomlKeys,
    /// The record to edit is not there.
    #[error("no {what} with id {id:?} to edit")]
    NoRecord {
        /// `[[keys]] table` or `key object`.
        what: &'static str,
        /// The id.
        id: String,
    },
    /// serde_json could not lay the record out.
    #[error("could not lay out the record: {0}")]
    Record(String),
}

/// The text a missing TOML snapshot starts from.
const NEW_TOML_HEADER: &str = "\
# keygate key snapshot: hashes only, never keys. Edit with `keygate keys new|revoke`,
# then reload the gateway (SIGHUP or POST /reload).
";

/// Appends a `[[keys]]` table (or an inline table, if the file keeps its keys
/// in `keys = [...]`) to TOML snapshot text, leaving everything else as it was.
pub fn append_toml(text: &str, record: &NewRecord) -> Result<String, LayoutError> {
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(toml_message)?;
    let inline = record.to_inline_table();
    // Comments after the last table are the document's trailing text. Left
    // there, they would end up below the new table; they usually belong to the
    // key above (commented-out fields), so they stay above, then a blank line.
    let trailing = doc
        .trailing()
        .as_str()
        .unwrap_or_default()
        .trim_end()
        .to_string();
    let prefix = if trailing.is_empty() {
        "\n".to_string()
    } else {
        format!("{trailing}\n\n")
    };
    let no_item_yet = doc.is_empty();
    let last_position = last_table_position(doc.as_table());
    match doc.get_mut("keys") {
        None => {
            let mut table = inline.into_table();
            table
                .decor_mut()
                .set_prefix(if no_item_yet && trailing.is_empty() {
                    String::new()
                } else {
                    prefix
                });
            table.set_position(Some(last_position.saturating_add(1)));
            let mut tables = toml_edit::ArrayOfTables::new();
            tables.push(table);
            doc.insert("keys", toml_edit::Item::ArrayOfTables(tables));
        }
        Some(toml_edit::Item::ArrayOfTables(tables)) => {
            let mut table = inline.into_table();
            table.decor_mut().set_prefix(prefix);
            // Without a position the new table would be drawn right after the
            // last [[keys]] table, above whatever follows it (and below the
            // comments that belong to it): placed last, the original text stays
            // byte for byte in front of it.
            table.set_position(Some(last_position.saturating_add(1)));
            tables.push(table);
        }
        Some(toml_edit::Item::Value(toml_edit::Value::Array(array))) => {
            // Inline form: the trailing text is outside the array and stays put.
            array.push(inline);
            return Ok(doc.to_string());
        }
        Some(_) => return Err(LayoutError::TomlKeys),
    }
    doc.set_trailing("");
    Ok(doc.to_string())
}

/// The highest document position of any table header in `table`.
fn last_table_position(table: &toml_edit::Table) -> isize {
    let mut last = table.position().unwrap_or(0);
    for (_, item) in table.iter() {
        match item {
            toml_edit::Item::Table(t) => last = last.max(last_table_position(t)),
            toml_edit::Item::ArrayOfTables(a) => {
                for t in a.iter() {
                    last = last.max(last_table_position(t));
                }
            }
            _ => {}
        }
    }
    last
}

/// Appends a record to JSON snapshot text. Everything else is copied as
/// written (see [`RawJson`]).
pub fn append_json(text: &str, record: &NewRecord) -> Result<String, LayoutError> {
    let empty = r#"{"workspaces": [], "keys": []}"#;
    let text = if text.trim().is_empty() { empty } else { text };
    let mut doc = RawJson::parse(text)?;
    doc.keys_mut().push(RawJson::record(&record.to_json())?);
    doc.to_pretty()
}

/// A JSON snapshot held as the raw text of each top-level field and of each
/// key record, borrowed from the file. Appending or editing one record leaves
/// every other byte of them as written, and a million keys cost a slice each
/// instead of a `serde_json::Value` per field (gigabytes, and seconds).
struct RawJson<'a> {
    /// Top-level fields in file order; `None` marks where `keys` goes.
    fields: Vec<(String, Option<&'a RawValue>)>,
    keys: Vec<Cow<'a, RawValue>>,
}

impl<'a> RawJson<'a> {
    fn parse(text: &'a str) -> Result<RawJson<'a>, LayoutError> {
        use serde::de::{Deserializer, MapAccess, Visitor};
        use std::cell::Cell;
        /// Whether the value being read is `keys`: a type error there is
        /// about the list, anywhere else about the top level.
        struct Top<'c>(&'c Cell<bool>);
        impl<'de> Visitor<'de> for Top<'_> {
            type Value = RawJson<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut doc = RawJson {
                    fields: Vec::new(),
                    keys: Vec::new(),
                };
                while let Some(name) = map.next_key::<String>()? {
                    if name == "keys" {
                        self.0.set(true);
                        let keys: Vec<&'de RawValue> = map.next_value()?;
                        self.0.set(false);
                        doc.keys = keys.into_iter().map(Cow::Borrowed).collect();
                        doc.fields.push((name, None));
                    } else {
                        doc.fields.push((name, Some(map.next_value()?)));
                    }
                }
                Ok(doc)
            }
        }
        let in_keys = Cell::new(false);
        let mut de = serde_json::Deserializer::from_str(text);
        de.deserialize_map(Top(&in_keys))
            .and_then(|doc| de.end().map(|()| doc))
            .map_err(|e| match (e.is_data(), in_keys.get()) {
                (true, true) => LayoutError::JsonKeys,
                (true, false) => LayoutError::JsonTop,
                _ => LayoutError::Json(e.line()),
            })
    }

    /// The key records; a file without a `keys` field gets one, last.
    fn keys_mut(&mut self) -> &mut Vec<Cow<'a, RawValue>> {
        if !self.fields.iter().any(|(_, raw)| raw.is_none()) {
            self.fields.push(("keys".into(), None));
        }
        &mut self.keys
    }

    /// A record's raw text, indented as a pretty-printed element of `keys`.
    fn record(value: &serde_json::Value) -> Result<Cow<'static, RawValue>, LayoutError> {
        let wrapped = serde_json::to_string_pretty(&serde_json::json!({ "keys": [value] }))
            .map_err(|e| LayoutError::Record(e.to_string()))?;
        match RawJson::parse(&wrapped)?.keys.as_slice() {
            [one] => Ok(Cow::Owned(one.clone().into_owned())),
            _ => Err(LayoutError::Record("not one element".into())),
        }
    }

    fn to_pretty(&self) -> Result<String, LayoutError> {
        let mut out =
            serde_json::to_string_pretty(self).map_err(|e| LayoutError::Record(e.to_string()))?;
        out.push('\n');
        Ok(out)
    }
}

/// Written back in file order, each raw piece verbatim.
impl serde::Serialize for RawJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        struct Keys<'b, 'a>(&'b [Cow<'a, RawValue>]);
        impl serde::Serialize for Keys<'_, '_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter().map(|k| &**k))
            }
        }
        let mut map = s.serialize_map(Some(self.fields.len()))?;
        for (name, raw) in &self.fields {
            match raw {
                Some(raw) => map.serialize_entry(name, raw)?,
                None => map.serialize_entry(name, &Keys(&self.keys))?,
            }
        }
        map.end()
    }
}

/// The message of a TOML parse error without the source excerpt it would
/// otherwise quote (which could be a hash line).
fn toml_message(e: toml_edit::TomlError) -> LayoutError {
    LayoutError::Toml(e.message().trim_end().to_string())
}

/// Sets `revoked_at` on the record `id` in TOML snapshot text, keeping the
/// decoration (comments) of an existing `revoked_at` value.
pub fn set_revoked_toml(text: &str, id: &str, when: &str) -> Result<String, LayoutError> {
    fn set(t: &mut dyn toml_edit::TableLike, when: &str) {
        match t.get_mut("revoked_at").and_then(|i| i.as_value_mut()) {
            Some(v) => {
                let decor = v.decor().clone();
                *v = when.into();
                *v.decor_mut() = decor;
            }
            None => {
                t.insert("revoked_at", toml_edit::value(when));
            }
        }
    }
    let is_it = |t: &dyn toml_edit::TableLike| t.get("id").and_then(|v| v.as_str()) == Some(id);
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(toml_message)?;
    let mut found = false;
    match doc.get_mut("keys") {
        Some(toml_edit::Item::ArrayOfTables(tables)) => {
            if let Some(t) = tables.iter_mut().find(|t| is_it(&**t)) {
                set(t, when);
                found = true;
            }
        }
        Some(toml_edit::Item::Value(toml_edit::Value::Array(array))) => {
            let tables = array.iter_mut().filter_map(|v| v.as_inline_table_mut());
            if let Some(t) = tables.into_iter().find(|t| is_it(&**t)) {
                set(t, when);
                found = true;
            }
        }
        _ => {}
    }
    if found {
        Ok(doc.to_string())
    } else {
        Err(LayoutError::NoRecord {
            what: "[[keys]] table",
            id: id.to_string(),
        })
    }
}

/// Sets `revoked_at` on the record `id` in JSON snapshot text; only that
/// record is laid out again.
pub fn set_revoked_json(text: &str, id: &str, when: &str) -> Result<String, LayoutError> {
    #[derive(serde::Deserialize)]
    struct Id<'a> {
        #[serde(borrow)]
        id: Option<Cow<'a, str>>,
    }
    let mut doc = RawJson::parse(text)?;
    let keys = doc.keys_mut();
    let at = keys
        .iter()
        .position(|k| {
            serde_json::from_str::<Id>(k.get()).is_ok_and(|k| k.id.as_deref() == Some(id))
        })
        .ok_or_else(|| no_object(id))?;
    let mut record: serde_json::Value =
        serde_json::from_str(keys[at].get()).map_err(|e| LayoutError::Record(e.to_string()))?;
    record
        .as_object_mut()
        .ok_or_else(|| no_object(id))?
        .insert("revoked_at".into(), when.into());
    keys[at] = RawJson::record(&record)?;
    doc.to_pretty()
}

fn no_object(id: &str) -> LayoutError {
    LayoutError::NoRecord {
        what: "key object",
        id: id.to_string(),
    }
}

/// The snapshot as read: its text (`None` when the file does not exist yet)
/// and the validated index.
struct Current {
    text: Option<String>,
    index: KeyIndex,
}

/// A snapshot that must be there (to revoke or rotate in it): checked
/// before its lock file is made beside it.
fn must_exist(path: &Path) -> Result<(), KeysError> {
    std::fs::metadata(path)
        .map(drop)
        .map_err(|source| KeysError::Read {
            path: path.to_path_buf(),
            source,
        })
}

fn read_current(path: &Path, missing_ok: bool) -> Result<Current, KeysError> {
    let format = format_of(path)?;
    let text = match std::fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) if missing_ok && e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(KeysError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let empty = match format {
        Format::Toml => "",
        Format::Json => "{}",
    };
    let index = KeyIndex::parse(path, text.as_deref().unwrap_or(empty)).map_err(|problems| {
        KeysError::Invalid {
            path: path.to_path_buf(),
            problems,
        }
    })?;
    Ok(Current { text, index })
}

/// Removes the temp file unless the rename consumed it.
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Replaces `path` with `text` atomically.
///
/// The temp file sits in the same folder (a rename is only atomic within one
/// file system) and keeps the old file's permissions. Just before the rename
/// the file is read again: if it is no longer what this command started from,
/// another editor got there first and nothing is written, instead of silently
/// dropping that editor's change. When `path` is a symlink, its target is
/// replaced and the link kept.
pub fn write_atomic(path: &Path, text: &str, expected: Option<&str>) -> Result<(), KeysError> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let werr = |step: &'static str| {
        let path = path.to_path_buf();
        move |source| KeysError::Write { path, step, source }
    };
    let target = resolve_target(path).map_err(werr("resolving the symlink"))?;
    let (dir, name) = split_target(&target);
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        random_text(ID_ALPHABET, 8)?
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true).mode(0o644);
    let mut file = options
        .open(&tmp)
        .map_err(werr("creating a temp file in its folder"))?;
    let mut guard = TempGuard(Some(tmp.clone()));
    if let Ok(meta) = std::fs::metadata(&target) {
        // Owner and group first: a chown may clear set-id bits of the mode.
        if (meta.uid(), meta.gid())
            != file
                .metadata()
                .map(|m| (m.uid(), m.gid()))
                .unwrap_or_default()
        {
            std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid())).map_err(
                |source| KeysError::Owner {
                    path: path.to_path_buf(),
                    uid: meta.uid(),
                    gid: meta.gid(),
                    source,
                },
            )?;
        }
        file.set_permissions(meta.permissions())
            .map_err(werr("copying permissions"))?;
    }
    file.write_all(text.as_bytes())
        .map_err(werr("writing the temp file"))?;
    file.sync_all().map_err(werr("syncing the temp file"))?;
    drop(file);
    if !holds(&target, expected).map_err(werr("re-reading before the rename"))? {
        return Err(KeysError::Conflict {
            path: path.to_path_buf(),
        });
    }
    std::fs::rename(&tmp, &target).map_err(werr("renaming the temp file over it"))?;
    guard.0 = None;
    // The rename is durable only once the folder entry is on disk.
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(werr("syncing its folder"))?;
    Ok(())
}

/// Whether the file at `path` holds exactly `expected` (`None`: no file),
/// compared a slice at a time rather than read whole a second time.
fn holds(path: &Path, expected: Option<&str>) -> std::io::Result<bool> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(expected.is_none()),
        Err(e) => return Err(e),
    };
    let Some(expected) = expected else {
        return Ok(false);
    };
    let mut left = expected.as_bytes();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match file.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(left.is_empty());
        }
        if n > left.len() || buf[..n] != left[..n] {
            return Ok(false);
        }
        left = &left[n..];
    }
}

/// Validates `new` as the snapshot at `path` would be, then writes it.
fn validate_and_write(path: &Path, new: &str, old: Option<&str>) -> Result<(), KeysError> {
    KeyIndex::parse(path, new).map_err(|problems| KeysError::WouldNotLoad {
        path: path.to_path_buf(),
        problems,
    })?;
    write_atomic(path, new, old)
}

/// Checks the arguments and builds the record, without touching any file.
fn plan_new(args: &NewArgs, index: &KeyIndex, now: i64) -> Result<(NewRecord, String), KeysError> {
    let path = &args.snapshot;
    let key_type =
        KeyType::parse(&args.key_type).ok_or_else(|| KeysError::BadType(args.key_type.clone()))?;
    let prefixes = Prefixes::new(&args.company_prefix, &args.workspace_prefix)?;
    if args.company.is_empty() {
        return Err(KeysError::EmptyCompany);
    }
    if args.name.trim().is_empty() {
        return Err(KeysError::EmptyName);
    }
    match (key_type, &args.workspace) {
        (KeyType::Workspace, None) => return Err(KeysError::WorkspaceMissing),
        (KeyType::Company, Some(ws)) => return Err(KeysError::WorkspaceOnCompanyKey(ws.clone())),
        (KeyType::Workspace, Some(ws)) => {
            index
                .check_workspace(ws, &args.company)
                .map_err(|problem| KeysError::Workspace {
                    path: path.clone(),
                    problem,
                })?;
        }
        (KeyType::Company, None) => {}
    }
    let mut held = crate::model::scope::Scopes::NONE;
    for s in &args.scopes {
        held = held.with(Scope::parse(s).ok_or_else(|| KeysError::UnknownScope(s.clone()))?);
    }
    let rate_limit = args
        .rate_limit
        .as_deref()
        .map(Limit::parse_cli)
        .transpose()
        .map_err(KeysError::BadRateLimit)?;
    let expires_at = future_time(args.expires.as_deref(), now)?;
    let id = fresh_id(args.id.as_deref(), index, path)?;
    let key = generate_key(&prefixes, key_type)?;
    let record = NewRecord {
        id,
        name: args.name.clone(),
        description: args.description.clone(),
        key_type,
        company: args.company.clone(),
        workspace: args.workspace.clone(),
        scopes: held.iter().collect(),
        hash: KeyDigest::of(key.as_bytes()).to_text(),
        created_at: format_time(now),
        expires_at,
        rate_limit,
        replaces: None,
    };
    Ok((record, key))
}

/// An optional `--expires` that must lie after `now`.
fn future_time(text: Option<&str>, now: i64) -> Result<Option<String>, KeysError> {
    let Some(text) = text else {
        return Ok(None);
    };
    let t = parse_time(text).map_err(KeysError::BadExpiry)?;
    if t <= now {
        return Err(KeysError::ExpiryInPast(text.to_string()));
    }
    Ok(Some(format_time(t)))
}

/// The id of a new record: the one asked for (valid and unused), or a fresh
/// random one.
fn fresh_id(asked: Option<&str>, index: &KeyIndex, path: &Path) -> Result<String, KeysError> {
    match asked {
        Some(id) if !valid_id(id) => Err(KeysError::BadId(id.to_string())),
        Some(id) if index.by_id(id).is_some() => Err(KeysError::DuplicateId {
            path: path.to_path_buf(),
            id: id.to_string(),
        }),
        Some(id) => Ok(id.to_string()),
        None => loop {
            // 36^12 ids: a clash is practically impossible, but cheap to rule out.
            let id = format!("key_{}", random_text(ID_ALPHABET, 12)?);
            if index.by_id(&id).is_none() {
                break Ok(id);
            }
        },
    }
}

/// Prints a new key, alone, on stdout, after its record is on disk: a key
/// that is printed but not on disk would be worse than a record whose key
/// nobody saw (it can be revoked).
fn print_key(path: &Path, id: &str, key: &str) -> Result<(), KeysError> {
    let mut out = std::io::stdout().lock();
    out.write_all(format!("{key}\n").as_bytes())
        .and_then(|()| out.flush())
        .map_err(|source| KeysError::PrintKey {
            path: path.to_path_buf(),
            id: id.to_string(),
            source,
        })
}

/// `keygate keys new`: validates, appends the record, writes atomically, then
/// prints the key (stdout) and the id (stderr).
pub fn new_key(args: &NewArgs) -> Result<(), KeysError> {
    let path = &args.snapshot;
    let format = format_of(path)?;
    if !crate::util::sys::stdout_is_open() {
        return Err(KeysError::StdoutClosed);
    }
    let _lock = SnapshotLock::acquire(path)?;
    let Current { text, index } = read_current(path, true)?;
    let now = crate::util::clock::unix_now();
    let (record, key) = plan_new(args, &index, now)?;
    // The new text is validated whole before it is written: at a million keys
    // two indexes at once would be ~400 MB.
    drop(index);
    let old = text.as_deref();
    let base = old.unwrap_or(match format {
        Format::Toml => NEW_TOML_HEADER,
        Format::Json => "",
    });
    let new = match format {
        Format::Toml => append_toml(base, &record),
        Format::Json => append_json(base, &record),
    }
    .map_err(|what| KeysError::Layout {
        path: path.clone(),
        what,
    })?;
    validate_and_write(path, &new, old)?;

    print_key(path, &record.id, &key)?;
    if record.scopes.is_empty() {
        // Allowed (the contract makes --scope optional, and no scope is the
        // least privilege), but rarely what was meant.
        eprintln!(
            "note: key {} has no scope, so it passes only routes with scope = \"none\"",
            record.id
        );
    }
    let whom = match &record.workspace {
        Some(ws) => format!("workspace key of {} / {ws}", record.company),
        None => format!("company key of {}", record.company),
    };
    eprintln!(
        "created key {} ({whom}) in {}\nthe key above is shown only this once; reload the gateway to use it (SIGHUP or POST /reload)",
        record.id,
        path.display()
    );
    Ok(())
}

/// `keygate keys revoke`: sets `revoked_at` to now (idempotent, see the module doc).
pub fn revoke(args: &RevokeArgs) -> Result<(), KeysError> {
    let path = &args.snapshot;
    let format = format_of(path)?;
    must_exist(path)?;
    let _lock = SnapshotLock::acquire(path)?;
    let Current { text, index } = read_current(path, false)?;
    let now = crate::util::clock::unix_now();
    let Some((_, record)) = index.by_id(&args.id) else {
        return Err(KeysError::UnknownId {
            path: path.clone(),
            id: args.id.clone(),
        });
    };
    if let Some(at) = record.revoked_at.filter(|_| record.is_revoked_at(now)) {
        eprintln!(
            "key {} in {} was already revoked at {}; left unchanged",
            args.id,
            path.display(),
            format_time(at)
        );
        return Ok(());
    }
    drop(index);
    let old = text.as_deref().unwrap_or_default();
    let when = format_time(now);
    let new = match format {
        Format::Toml => set_revoked_toml(old, &args.id, &when),
        Format::Json => set_revoked_json(old, &args.id, &when),
    }
    .map_err(|what| KeysError::Layout {
        path: path.clone(),
        what,
    })?;
    validate_and_write(path, &new, Some(old))?;
    eprintln!(
        "revoked key {} in {} at {when}; reload the gateway to apply it (SIGHUP or POST /reload)",
        args.id,
        path.display()
    );
    Ok(())
}

/// `keygate keys rotate`: a new key for the same client (same name,
/// description, type, company, workspace, scopes and limit, `replaces` the
/// old one), and the old key's `revoked_at` set to now + grace, in one
/// atomic write; prints the new key (stdout), and the new id and the instant
/// the old key stops (stderr).
pub fn rotate(args: &RotateArgs) -> Result<(), KeysError> {
    let path = &args.snapshot;
    let format = format_of(path)?;
    if !crate::util::sys::stdout_is_open() {
        return Err(KeysError::StdoutClosed);
    }
    let grace = humantime::parse_duration(&args.grace)
        .map_err(|_| KeysError::BadGrace(args.grace.clone()))?;
    let prefixes = Prefixes::new(&args.company_prefix, &args.workspace_prefix)?;
    must_exist(path)?;
    let _lock = SnapshotLock::acquire(path)?;
    let Current { text, index } = read_current(path, false)?;
    let now = crate::util::clock::unix_now();
    let Some((slot, old)) = index.by_id(&args.id) else {
        return Err(KeysError::UnknownId {
            path: path.clone(),
            id: args.id.clone(),
        });
    };
    let not_rotatable = |state| KeysError::NotRotatable {
        path: path.clone(),
        id: args.id.clone(),
        state,
    };
    if old.is_revoked_at(now) {
        return Err(not_rotatable("revoked"));
    }
    if old.is_expired_at(now) {
        return Err(not_rotatable("expired"));
    }
    // Rotated before (its successor may have been lost): allowed, and said,
    // since both successors now replace it and share its bucket.
    let replaced_by = index.replaced_by(slot).map(|by| {
        let usable = index
            .by_id(by)
            .is_some_and(|(_, k)| !k.is_revoked_at(now) && !k.is_expired_at(now));
        (by.to_string(), usable)
    });
    let expires_at = future_time(args.expires.as_deref(), now)?;
    let id = fresh_id(args.new_id.as_deref(), &index, path)?;
    let key = generate_key(&prefixes, old.key_type)?;
    let record = NewRecord {
        id,
        name: old.name().to_string(),
        description: old.description().map(str::to_string),
        key_type: old.key_type,
        company: old.company.to_string(),
        workspace: old.workspace.as_deref().map(str::to_string),
        scopes: old.scopes.iter().collect(),
        hash: KeyDigest::of(key.as_bytes()).to_text(),
        created_at: format_time(now),
        expires_at,
        rate_limit: old.rate_limit,
        replaces: Some(old.id().to_string()),
    };
    // An earlier revocation already planned stays: rotation never extends it.
    let planned = now.saturating_add(i64::try_from(grace.as_secs()).unwrap_or(i64::MAX));
    // 9999-12-31T23:59:59Z, the last instant RFC 3339 writes.
    if planned > 253_402_300_799 {
        return Err(KeysError::GraceTooLong(args.grace.clone()));
    }
    let stops = old.revoked_at.map_or(planned, |t| t.min(planned));
    drop(index);
    let old_text = text.as_deref().unwrap_or_default();
    let when = format_time(stops);
    let layout = |what| KeysError::Layout {
        path: path.clone(),
        what,
    };
    let new = match format {
        Format::Toml => {
            set_revoked_toml(old_text, &args.id, &when).and_then(|t| append_toml(&t, &record))
        }
        Format::Json => {
            set_revoked_json(old_text, &args.id, &when).and_then(|t| append_json(&t, &record))
        }
    }
    .map_err(layout)?;
    validate_and_write(path, &new, Some(old_text))?;
    print_key(path, &record.id, &key)?;
    let left = humantime::format_duration(std::time::Duration::from_secs(
        stops.saturating_sub(now).max(0) as u64,
    ));
    eprintln!(
        "rotated key {old} in {}: new key {new_id} replaces it\n{old} stops working at {when} (in {left}); the new key above is shown only this once; reload the gateway to use it (SIGHUP or POST /reload)",
        path.display(),
        old = args.id,
        new_id = record.id,
    );
    match replaced_by {
        Some((earlier, true)) => eprintln!(
            "note: key {} was already replaced by {earlier}, which still works; both replace it and share its rate-limit bucket (revoke {earlier} if it is no longer wanted)",
            args.id
        ),
        Some((earlier, false)) => eprintln!(
            "note: key {} was already replaced by {earlier}, which no longer works; the new key replaces it too",
            args.id
        ),
        None => {}
    }
    Ok(())
}

/// The `keys list` table: one line per key, never a hash.
pub fn render_list(index: &KeyIndex, now: i64) -> String {
    const HEAD: [&str; 11] = [
        "ID",
        "TYPE",
        "COMPANY",
        "WORKSPACE",
        "SCOPES",
        "STATE",
        "CREATED",
        "EXPIRES",
        "REPLACES",
        "REPLACED_BY",
        "NAME",
    ];
    // Cells are made twice (widths, then lines) rather than kept: a million
    // keys would otherwise hold nine million strings at once.
    fn cells<'i>(index: &'i KeyIndex, slot: usize, now: i64) -> [Cow<'i, str>; 11] {
        let r = index.record(slot);
        [
            Cow::Borrowed(r.id()),
            Cow::Borrowed(r.key_type.as_str()),
            Cow::Borrowed(&*r.company),
            Cow::Borrowed(r.workspace.as_deref().unwrap_or("-")),
            Cow::Owned(
                r.scopes
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            Cow::Borrowed(r.state(now).as_str()),
            Cow::Owned(format_time(r.created_at)),
            r.expires_at
                .map_or(Cow::Borrowed("-"), |t| Cow::Owned(format_time(t))),
            Cow::Borrowed(r.replaces().unwrap_or("-")),
            Cow::Borrowed(index.replaced_by(slot).unwrap_or("-")),
            Cow::Borrowed(r.name()),
        ]
    }
    let mut widths = HEAD.map(str::len);
    for slot in 0..index.len() {
        for (w, cell) in widths.iter_mut().zip(cells(index, slot, now)) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let start = out.len();
        let last = cells.len() - 1;
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<w$}  ");
            }
        }
        let kept = out[start..].trim_end().len();
        out.truncate(start + kept);
        out.push('\n');
    };
    line(&HEAD);
    for slot in 0..index.len() {
        let row = cells(index, slot, now);
        line(&row.each_ref().map(|c| &**c));
    }
    out
}

/// `keygate keys list`
pub fn list(args: &ListArgs) -> Result<(), KeysError> {
    let Current { text, index } = read_current(&args.snapshot, false)?;
    drop(text);
    let table = render_list(&index, crate::util::clock::unix_now());
    let mut out = std::io::stdout().lock();
    match out.write_all(table.as_bytes()).and_then(|()| out.flush()) {
        // `keygate keys list | head` closing the pipe early is not a failure.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(KeysError::Stdout(e)),
        _ => Ok(()),
    }
}

/// The `sha256:<hex>` of a key read as text (surrounding whitespace and the
/// trailing newline of `echo` dropped).
pub fn hash_input(input: &[u8]) -> Result<String, KeysError> {
    let text = std::str::from_utf8(input).map_err(|_| KeysError::NotText)?;
    let key = text.trim();
    if key.is_empty() {
        return Err(KeysError::EmptyInput);
    }
    if key.contains(char::is_whitespace) {
        return Err(KeysError::SeveralWords);
    }
    if key.len() > MAX_TOKEN_LEN {
        return Err(KeysError::TooLong);
    }
    Ok(KeyDigest::of(key.as_bytes()).to_text())
}

/// `keygate keys hash`
pub fn hash_stdin() -> Result<(), KeysError> {
    let mut input = Vec::new();
    // A little more than the longest acceptable token plus whitespace: enough
    // to tell "too long" apart without reading an endless pipe.
    std::io::stdin()
        .lock()
        .take((MAX_TOKEN_LEN * 4) as u64)
        .read_to_end(&mut input)
        .map_err(KeysError::Stdin)?;
    let hash = hash_input(&input)?;
    let mut out = std::io::stdout().lock();
    out.write_all(format!("{hash}\n").as_bytes())
        .and_then(|()| out.flush())
        .map_err(KeysError::Stdout)
}

#[cfg(test)]
mod tests;
