//! The key snapshot (`keys.toml` / `keys.json`): parsed into private serde types,
//! validated whole (every problem reported, each with file and line or key id),
//! and indexed by SHA-256 digest for the hot path.
//!
//! Records sit in one `Vec`; the digest map holds 4-byte slots, which keeps a
//! million keys within a few hundred bytes each. `last_used` is one atomic per
//! slot, written only when the second changes.

use crate::model::format::SnapshotFormat;
use crate::model::key::{KeyDigest, KeyType};
use crate::model::limit::Limit;
use crate::model::problem::{LineCounter, Problem, Problems};
use crate::model::scope::{Scope, Scopes};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// One key's metadata. Never holds the key or its hash.
///
/// Kept compact (a million of them must fit in a few hundred bytes each): id,
/// name and description share one allocation, companies and workspaces are
/// interned.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    /// `id`, `name`, `description` and `replaces`, back to back.
    text: Box<str>,
    name_at: u16,
    description_at: Option<u16>,
    replaces_at: Option<u16>,
    /// Company or workspace key.
    pub key_type: KeyType,
    /// Scopes held.
    pub scopes: Scopes,
    /// Owning company.
    pub company: Arc<str>,
    /// The one workspace of a workspace key.
    pub workspace: Option<Arc<str>>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; the key stops working at this instant.
    pub expires_at: Option<i64>,
    /// Unix seconds; the key is refused from this instant.
    pub revoked_at: Option<i64>,
    /// Own limit, overriding `[rate_limit]`.
    pub rate_limit: Option<Limit>,
}

/// Longest `name` accepted, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Longest `description` accepted, in bytes.
pub const MAX_DESCRIPTION_LEN: usize = 4096;

impl KeyRecord {
    /// Stable id: logs, headers, metrics and buckets use it.
    pub fn id(&self) -> &str {
        &self.text[..usize::from(self.name_at)]
    }

    /// Human name.
    pub fn name(&self) -> &str {
        let end = self
            .description_at
            .or(self.replaces_at)
            .map_or(self.text.len(), usize::from);
        &self.text[usize::from(self.name_at)..end]
    }

    /// Optional description.
    pub fn description(&self) -> Option<&str> {
        let end = self.replaces_at.map_or(self.text.len(), usize::from);
        self.description_at
            .map(|at| &self.text[usize::from(at)..end])
    }

    /// The id of the key this one replaces (a rotation), if any.
    pub fn replaces(&self) -> Option<&str> {
        self.replaces_at.map(|at| &self.text[usize::from(at)..])
    }

    /// Packs the three texts (lengths already validated against the limits).
    fn pack_text(
        id: &str,
        name: &str,
        description: Option<&str>,
        replaces: Option<&str>,
    ) -> (Box<str>, u16, Option<u16>, Option<u16>) {
        let mut text = String::with_capacity(
            id.len() + name.len() + description.map_or(0, str::len) + replaces.map_or(0, str::len),
        );
        text.push_str(id);
        text.push_str(name);
        let name_at = id.len() as u16;
        let mut push = |part: Option<&str>| {
            part.map(|p| {
                let at = text.len() as u16;
                text.push_str(p);
                at
            })
        };
        let description_at = push(description);
        let replaces_at = push(replaces);
        (text.into_boxed_str(), name_at, description_at, replaces_at)
    }
}

/// Where a key stands at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyState {
    /// Usable.
    Active,
    /// Past `revoked_at`.
    Revoked,
    /// Past `expires_at`.
    Expired,
}

impl KeyState {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Revoked => "revoked",
            KeyState::Expired => "expired",
        }
    }
}

impl KeyRecord {
    /// Whether the key is revoked at `now` (`revoked_at` is the first
    /// refused instant).
    pub fn is_revoked_at(&self, now: i64) -> bool {
        self.revoked_at.is_some_and(|t| t <= now)
    }

    /// Whether the key has expired at `now` (`expires_at` is the first
    /// refused instant).
    pub fn is_expired_at(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }

    /// The state at `now` (revocation wins over expiry for reporting).
    pub fn state(&self, now: i64) -> KeyState {
        if self.is_revoked_at(now) {
            KeyState::Revoked
        } else if self.is_expired_at(now) {
            KeyState::Expired
        } else {
            KeyState::Active
        }
    }
}

/// SHA-256 output is uniform and clients cannot choose a digest's bytes, so its
/// first eight bytes are a perfectly good hash: no SipHash on the hot path and
/// no way to aim collisions at the table.
fn digest_hash(d: &KeyDigest) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&d.0[..8]);
    u64::from_le_bytes(b)
}

/// The validated snapshot, indexed for lookups.
#[derive(Debug)]
pub struct KeyIndex {
    records: Vec<KeyRecord>,
    digests: Vec<KeyDigest>,
    /// Slots into `digests`/`records`: 4 bytes a key instead of a map that
    /// would store each 32-byte digest a second time.
    by_digest: hashbrown::HashTable<u32>,
    workspaces: HashMap<Arc<str>, Arc<str>>,
    last_used: Box<[AtomicI64]>,
    /// Rotations: slot of every key of a chain (one that replaces another,
    /// or is replaced) → its chain's root and head; every other key is its
    /// own bucket under its own limit.
    chains: hashbrown::HashMap<u32, Link>,
    /// Rotations the other way: slot of a replaced key → slot of its newest
    /// replacement.
    successors: hashbrown::HashMap<u32, u32>,
}

impl KeyIndex {
    /// Validates snapshot text as if read from `path` (`.toml` or `.json` by
    /// extension).
    pub fn parse(path: &Path, text: &str) -> Result<KeyIndex, Problems> {
        // A byte-order mark (some Windows editors write one) is not content;
        // TOML skips it, JSON would refuse the file for it.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        match SnapshotFormat::of(path) {
            Some(SnapshotFormat::Json) => parse_json(path, text),
            Some(SnapshotFormat::Toml) => parse_toml(path, text),
            None => Err(Problems(vec![Problem::at_line(
                path,
                None,
                "the key snapshot's name must end in .toml or .json",
            )])),
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there is no key.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Finds the key with this digest.
    #[inline]
    pub fn lookup(&self, digest: &KeyDigest) -> Option<(usize, &KeyRecord)> {
        let slot = *self.by_digest.find(digest_hash(digest), |&s| {
            self.digests[s as usize] == *digest
        })? as usize;
        Some((slot, &self.records[slot]))
    }

    /// The record in a slot returned by [`KeyIndex::lookup`].
    pub fn record(&self, slot: usize) -> &KeyRecord {
        &self.records[slot]
    }

    /// The rate-limit bucket of a key: its own id, or for a rotated key the
    /// id its chain started from (the root's `replaces` if that key was
    /// deleted since), so old and new keys share one limit.
    pub fn bucket_id(&self, slot: usize) -> &str {
        self.bucket(slot).0
    }

    /// The rate-limit bucket of a key ([`KeyIndex::bucket_id`]) and the
    /// record whose `rate_limit` it is counted under: a chain's keys share
    /// one bucket under one limit, its head's (the key no other replaces),
    /// so old and new keys of a rotation that changed the limit never reset
    /// each other's bucket.
    #[inline]
    pub fn bucket(&self, slot: usize) -> (&str, &KeyRecord) {
        match self.chains.get(&(slot as u32)) {
            None => {
                let key = &self.records[slot];
                (key.id(), key)
            }
            Some(link) => {
                let root = &self.records[link.root as usize];
                (
                    root.replaces().unwrap_or(root.id()),
                    &self.records[link.head as usize],
                )
            }
        }
    }

    /// The bucket ids rotation chains share (ids that may name no key here).
    pub fn chain_buckets(&self) -> impl Iterator<Item = &str> {
        self.chains.keys().map(|&s| self.bucket_id(s as usize))
    }

    /// The bucket of every key of a rotation chain, by key id.
    pub fn chain_members(&self) -> impl Iterator<Item = (&str, &str)> {
        self.chains
            .keys()
            .map(|&s| (self.records[s as usize].id(), self.bucket_id(s as usize)))
    }

    /// The key that replaces `slot`'s, if any (the last such in the file).
    pub fn replaced_by(&self, slot: usize) -> Option<&str> {
        self.successors
            .get(&(slot as u32))
            .map(|&s| self.records[s as usize].id())
    }

    /// Every record, in file order.
    pub fn records(&self) -> &[KeyRecord] {
        &self.records
    }

    /// A record by id (admin listing, reload diffs; not the hot path).
    pub fn by_id(&self, id: &str) -> Option<(usize, &KeyRecord)> {
        self.records.iter().enumerate().find(|(_, r)| r.id() == id)
    }

    /// The company owning a listed workspace.
    pub fn workspace_company(&self, workspace: &str) -> Option<&Arc<str>> {
        self.workspaces.get(workspace)
    }

    /// Whether a workspace key of `company` may name `workspace`.
    pub fn check_workspace(&self, workspace: &str, company: &str) -> Result<(), WorkspaceProblem> {
        workspace_problem(&self.workspaces, workspace, company).map_or(Ok(()), Err)
    }

    /// Listed workspaces.
    pub fn workspace_count(&self) -> usize {
        self.workspaces.len()
    }

    /// Records a use at `now` (unix seconds). Written only when the second
    /// changes, so a busy key's slot is mostly read, not bounced between cores.
    #[inline]
    pub fn touch(&self, slot: usize, now: i64) {
        let cell = &self.last_used[slot];
        if cell.load(Ordering::Relaxed) != now {
            cell.store(now, Ordering::Relaxed);
        }
    }

    /// Raises a slot's last use to `t` (the fleet's latest, CONTRACT §7).
    pub fn note_used(&self, slot: usize, t: i64) {
        if let Some(cell) = self.last_used.get(slot) {
            cell.fetch_max(t, Ordering::Relaxed);
        }
    }

    /// Last use (unix seconds) of a slot, if any since the process started.
    pub fn last_used(&self, slot: usize) -> Option<i64> {
        match self.last_used[slot].load(Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        }
    }

    /// Copies last-used times from the index this one replaces, by key id.
    pub fn carry_last_used_from(&self, old: &KeyIndex) {
        // Only keys used since start-up have anything to carry.
        let used: hashbrown::HashMap<&str, i64> = old
            .records
            .iter()
            .zip(old.last_used.iter())
            .filter_map(|(r, t)| match t.load(Ordering::Relaxed) {
                0 => None,
                t => Some((r.id(), t)),
            })
            .collect();
        if used.is_empty() {
            return;
        }
        for (slot, r) in self.records.iter().enumerate() {
            if let Some(&t) = used.get(r.id()) {
                self.last_used[slot].fetch_max(t, Ordering::Relaxed);
            }
        }
    }

    /// Whether `digest` of the record in `slot` equals `other` (reload diffs).
    pub fn digest(&self, slot: usize) -> &KeyDigest {
        &self.digests[slot]
    }
}

/// Formats unix seconds as RFC 3339 (UTC).
pub fn format_time(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}

/// Parses RFC 3339 into unix seconds.
pub fn parse_time(text: &str) -> Result<i64, TimeError> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| TimeError::NotRfc3339(text.to_string()))
}

/// Why a time in a snapshot or on the command line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// Text that is not RFC 3339.
    #[error("{0:?} is not an RFC 3339 date-time (like 2026-11-01T10:00:00Z)")]
    NotRfc3339(String),
    /// A TOML date or local time: no instant without an offset.
    #[error("{0} must be a full date-time with a UTC offset")]
    NoOffset(String),
}

mod raw {
    //! The serde mirror of the file. Never leaves this module. Strings borrow
    //! from the file text where they can (JSON without escapes): a million
    //! keys would otherwise mean eight million small allocations to parse.
    use serde::{Deserialize, Deserializer};
    use std::borrow::Cow;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct TomlSnapshot<'a> {
        #[serde(default, borrow)]
        pub workspaces: Vec<toml::Spanned<Workspace<'a>>>,
        #[serde(default, borrow)]
        pub keys: Vec<toml::Spanned<Key<'a>>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Workspace<'a> {
        #[serde(borrow)]
        pub id: Cow<'a, str>,
        #[serde(borrow)]
        pub company: Cow<'a, str>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Key<'a> {
        #[serde(borrow)]
        pub id: Cow<'a, str>,
        #[serde(borrow)]
        pub name: Cow<'a, str>,
        #[serde(borrow)]
        pub description: Option<Cow<'a, str>>,
        #[serde(rename = "type", borrow)]
        pub key_type: Cow<'a, str>,
        #[serde(borrow)]
        pub company: Cow<'a, str>,
        #[serde(borrow)]
        pub workspace: Option<Cow<'a, str>>,
        #[serde(borrow)]
        pub scopes: Vec<Cow<'a, str>>,
        #[serde(borrow)]
        pub hash: Cow<'a, str>,
        #[serde(borrow)]
        pub created_at: Time<'a>,
        #[serde(borrow)]
        pub expires_at: Option<Time<'a>>,
        #[serde(borrow)]
        pub revoked_at: Option<Time<'a>>,
        #[serde(borrow)]
        pub replaces: Option<Cow<'a, str>>,
        pub rate_limit: Option<Rate>,
    }

    /// RFC 3339 text, or a native TOML offset date-time.
    pub enum Time<'a> {
        Text(Cow<'a, str>),
        Toml(toml::value::Datetime),
    }

    /// By hand rather than `#[serde(untagged)]`, which buffers every value
    /// and was most of the parse time of a large snapshot.
    impl<'de: 'a, 'a> Deserialize<'de> for Time<'a> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visitor;
            impl<'de> serde::de::Visitor<'de> for Visitor {
                type Value = Time<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("an RFC 3339 date-time")
                }
                fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                    Ok(Time::Text(Cow::Borrowed(v)))
                }
                fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                    Ok(Time::Text(Cow::Owned(v.to_string())))
                }
                fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                    Ok(Time::Text(Cow::Owned(v)))
                }
                fn visit_map<M: serde::de::MapAccess<'de>>(
                    self,
                    map: M,
                ) -> Result<Self::Value, M::Error> {
                    toml::value::Datetime::deserialize(
                        serde::de::value::MapAccessDeserializer::new(map),
                    )
                    .map(Time::Toml)
                }
            }
            d.deserialize_any(Visitor)
        }
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Rate {
        pub requests: i64,
        pub per_secs: i64,
        pub burst: Option<i64>,
    }
}

fn parse_toml(path: &Path, text: &str) -> Result<KeyIndex, Problems> {
    match toml::from_str::<raw::TomlSnapshot>(text) {
        Ok(snap) => build_toml(path, text, snap),
        Err(first) => {
            // Every field serde refuses, then the rest checked without them.
            let parses = |t: &str| toml::from_str::<raw::TomlSnapshot>(t).map(drop);
            let reported = crate::model::unknown_fields::report(path, text, &first, parses);
            let mut problems = reported.problems;
            if let Some(rest) = &reported.rest
                && let Ok(snap) = toml::from_str::<raw::TomlSnapshot>(rest)
                && let Err(more) = build_toml(path, rest, snap)
            {
                problems.extend(more.0);
            }
            Err(Problems(problems))
        }
    }
}

fn build_toml(path: &Path, text: &str, snap: raw::TomlSnapshot<'_>) -> Result<KeyIndex, Problems> {
    let mut lines = LineCounter::new(text);
    let mut builder = Builder::new(path, snap.keys.len());
    for w in snap.workspaces {
        builder.workspace(Some(lines.line_at(w.span().start)), w.into_inner());
    }
    builder.workspaces_done();
    for k in snap.keys {
        builder.key(Some(lines.line_at(k.span().start)), k.into_inner());
    }
    builder.finish()
}

/// JSON is checked and indexed while it is parsed (see [`json`]).
fn parse_json(path: &Path, text: &str) -> Result<KeyIndex, Problems> {
    // Sizes the tables once instead of growing (and copying) them a million
    // times over; an over-count only leaves some capacity unused.
    let keys_hint = memchr::memmem::find_iter(text.as_bytes(), b"\"hash\"").count();
    let mut builder = Builder::new(path, keys_hint);
    let mut de = serde_json::Deserializer::from_str(text);
    serde::de::DeserializeSeed::deserialize(json::Snapshot(&mut builder), &mut de)
        .and_then(|()| de.end())
        .map_err(|e| Problems(json_problems(path, text, &e)))?;
    builder.finish()
}

/// Why serde refused a JSON snapshot: each workspace and key record it
/// refuses, named by its id (read again one by one, on this path only; the
/// first, where the parse stopped, with its line), or the parser's own words
/// with line and column when the text is not JSON or the fault is outside
/// the records.
fn json_problems(path: &Path, text: &str, e: &serde_json::Error) -> Vec<Problem> {
    use serde::Deserialize;
    use serde_json::Value;
    let whole = || vec![Problem::at_line(path, Some(e.line()), format!("{e}"))];
    if !e.is_data() {
        return whole();
    }
    let Ok(Value::Object(doc)) = serde_json::from_str::<Value>(text) else {
        return whole();
    };
    let mut problems = Vec::new();
    // In file order, as the parse met them.
    for (list, records) in &doc {
        let what = match list.as_str() {
            "workspaces" => "workspace",
            "keys" => "key",
            _ => continue,
        };
        let Some(records) = records.as_array() else {
            continue;
        };
        for (i, record) in records.iter().enumerate() {
            let refused = if what == "key" {
                raw::Key::deserialize(record).err()
            } else {
                raw::Workspace::deserialize(record).err()
            };
            let Some(refused) = refused else { continue };
            let message = match record.get("id").and_then(Value::as_str) {
                Some(id) => format!("{what} {id:?}: {refused}"),
                None => format!("{what} number {} (no id): {refused}", i + 1),
            };
            let line = problems.is_empty().then(|| e.line());
            problems.push(Problem::at_line(path, line, message));
        }
    }
    if problems.is_empty() {
        whole()
    } else {
        problems
    }
}

mod json {
    //! The JSON snapshot read in one pass: each workspace and key goes to the
    //! [`Builder`] as soon as it is parsed, not into a list first.
    use super::{Builder, raw};
    use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
    use std::fmt;

    /// The top-level object.
    pub struct Snapshot<'b, 'p, 'a>(pub &'b mut Builder<'p, 'a>);

    #[derive(serde::Deserialize)]
    #[serde(field_identifier, rename_all = "lowercase")]
    enum Field {
        Workspaces,
        Keys,
    }

    impl<'de> DeserializeSeed<'de> for Snapshot<'_, '_, 'de> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }

    impl<'de> Visitor<'de> for Snapshot<'_, '_, 'de> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object with \"workspaces\" and \"keys\" lists")
        }
        fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
            let (mut workspaces, mut keys) = (false, false);
            while let Some(field) = map.next_key::<Field>()? {
                match field {
                    Field::Workspaces => {
                        if std::mem::replace(&mut workspaces, true) {
                            return Err(de::Error::duplicate_field("workspaces"));
                        }
                        map.next_value_seed(List(&mut *self.0, Item::Workspace))?;
                        self.0.workspaces_done();
                    }
                    Field::Keys => {
                        if std::mem::replace(&mut keys, true) {
                            return Err(de::Error::duplicate_field("keys"));
                        }
                        map.next_value_seed(List(&mut *self.0, Item::Key))?;
                    }
                }
            }
            Ok(())
        }
    }

    #[derive(Clone, Copy)]
    enum Item {
        Workspace,
        Key,
    }

    /// One of the two lists, fed to the builder element by element.
    struct List<'b, 'p, 'a>(&'b mut Builder<'p, 'a>, Item);

    impl<'de> DeserializeSeed<'de> for List<'_, '_, 'de> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_seq(self)
        }
    }

    impl<'de> Visitor<'de> for List<'_, '_, 'de> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list")
        }
        fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<(), S::Error> {
            let List(builder, item) = self;
            match item {
                Item::Workspace => {
                    while let Some(w) = seq.next_element::<raw::Workspace<'de>>()? {
                        builder.workspace(None, w);
                    }
                }
                Item::Key => {
                    while let Some(k) = seq.next_element::<raw::Key<'de>>()? {
                        builder.key(None, k);
                    }
                }
            }
            Ok(())
        }
    }
}

/// Longest key id accepted, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// Key ids travel in headers, metrics and logs: keep them to a safe alphabet.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

fn time_of(t: raw::Time<'_>) -> Result<i64, TimeError> {
    match t {
        raw::Time::Text(s) => parse_time(&s),
        raw::Time::Toml(d) => {
            parse_time(&d.to_string()).map_err(|_| TimeError::NoOffset(d.to_string()))
        }
    }
}

struct Interner(hashbrown::HashMap<String, Arc<str>>);

impl Interner {
    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.0.get(s) {
            return Arc::clone(a);
        }
        let a: Arc<str> = s.into();
        self.0.insert(s.to_string(), Arc::clone(&a));
        a
    }
}

/// Validates and indexes records one at a time, so a large JSON snapshot is
/// never held as a second, parsed copy: each key is checked and packed as soon
/// as the parser has read it.
struct Builder<'p, 'a> {
    path: &'p Path,
    problems: Problems,
    interner: Interner,
    workspaces: HashMap<Arc<str>, Arc<str>>,
    /// Whether the workspace list has been read: keys read before it (JSON
    /// fields come in any order) have their workspace checked at the end.
    workspaces_known: bool,
    deferred: Vec<DeferredWorkspace>,
    records: Vec<KeyRecord>,
    digests: Vec<KeyDigest>,
    by_digest: hashbrown::HashTable<u32>,
    /// Hashes of refused keys, so a repeat is still reported in this pass.
    refused_digests: HashSet<KeyDigest>,
    /// foldhash (hashbrown's default) rather than SipHash: these hold operator
    /// data, not attacker input, and a million inserts add up.
    ids: hashbrown::HashSet<std::borrow::Cow<'a, str>>,
    /// Keys with `replaces`, and their lines: checked once every key is in.
    rotations: Vec<(u32, Option<usize>)>,
}

/// A workspace key read before the workspace list.
struct DeferredWorkspace {
    line: Option<usize>,
    id: String,
    workspace: Arc<str>,
    company: Arc<str>,
}

impl<'p, 'a> Builder<'p, 'a> {
    fn new(path: &'p Path, keys_hint: usize) -> Self {
        Builder {
            path,
            problems: Problems(Vec::new()),
            interner: Interner(hashbrown::HashMap::new()),
            workspaces: HashMap::new(),
            workspaces_known: false,
            deferred: Vec::new(),
            records: Vec::with_capacity(keys_hint),
            digests: Vec::with_capacity(keys_hint),
            by_digest: hashbrown::HashTable::with_capacity(keys_hint),
            refused_digests: HashSet::new(),
            ids: hashbrown::HashSet::with_capacity(keys_hint),
            rotations: Vec::new(),
        }
    }

    fn workspace(&mut self, line: Option<usize>, w: raw::Workspace<'a>) {
        let raw::Workspace { id, company } = w;
        let path = self.path;
        let problems = &mut self.problems;
        let mut err = |m: String| problems.push(Problem::at_line(path, line, m));
        if !valid_id(&id) {
            err(format!(
                "workspace {id:?}: id must be 1-128 letters, digits, '_', '-', '.' or ':'"
            ));
        }
        if company.is_empty() {
            err(format!("workspace {id:?}: company must not be empty"));
        }
        let id = self.interner.get(&id);
        let company = self.interner.get(&company);
        if self.workspaces.insert(Arc::clone(&id), company).is_some() {
            err(format!("workspace {id:?}: duplicate workspace id"));
        }
    }

    /// The workspace list has been read: check the keys that came before it.
    fn workspaces_done(&mut self) {
        self.workspaces_known = true;
        for d in std::mem::take(&mut self.deferred) {
            if let Some(m) = workspace_problem(&self.workspaces, &d.workspace, &d.company) {
                self.problems.push(Problem::at_line(
                    self.path,
                    d.line,
                    format!("key {:?}: {m}", d.id),
                ));
            }
        }
    }

    fn key(&mut self, line: Option<usize>, k: raw::Key<'a>) {
        let raw::Key {
            id,
            name,
            description,
            key_type,
            company,
            workspace,
            scopes,
            hash,
            created_at,
            expires_at,
            revoked_at,
            rate_limit,
            replaces,
        } = k;
        let path = self.path;
        let before = self.problems.0.len();
        let problems = &mut self.problems;
        let mut err =
            |m: String| problems.push(Problem::at_line(path, line, format!("key {id:?}: {m}")));
        if !valid_id(&id) {
            err("id must be 1-128 letters, digits, '_', '-', '.' or ':'".into());
        }
        if let Some(r) = &replaces
            && !valid_id(r)
        {
            err(format!("replaces {r:?} is not a key id"));
        }
        if name.is_empty() {
            err("name must not be empty".into());
        }
        if name.len() > MAX_NAME_LEN {
            err(format!("name is longer than {MAX_NAME_LEN} bytes"));
        }
        if description
            .as_ref()
            .is_some_and(|d| d.len() > MAX_DESCRIPTION_LEN)
        {
            err(format!(
                "description is longer than {MAX_DESCRIPTION_LEN} bytes"
            ));
        }
        let key_type_parsed = KeyType::parse(&key_type);
        if key_type_parsed.is_none() {
            err(format!(
                "type must be \"company\" or \"workspace\" (got {key_type:?})"
            ));
        }
        if company.is_empty() {
            err("company must not be empty".into());
        }
        let company_arc = self.interner.get(&company);
        let workspace_arc = workspace.as_deref().map(|w| self.interner.get(w));
        match (key_type_parsed, &workspace_arc) {
            (Some(KeyType::Workspace), None) => {
                err("a workspace key must name its workspace".into())
            }
            (Some(KeyType::Workspace), Some(ws)) if self.workspaces_known => {
                if let Some(m) = workspace_problem(&self.workspaces, ws, &company_arc) {
                    err(m.to_string());
                }
            }
            (Some(KeyType::Workspace), Some(ws)) => self.deferred.push(DeferredWorkspace {
                line,
                id: id.to_string(),
                workspace: Arc::clone(ws),
                company: Arc::clone(&company_arc),
            }),
            (Some(KeyType::Company), Some(ws)) => err(format!(
                "a company key must not name a workspace (got {ws:?})"
            )),
            _ => {}
        }
        let mut scope_set = Scopes::NONE;
        for s in &scopes {
            match Scope::parse(s) {
                Some(scope) => scope_set = scope_set.with(scope),
                None => err(format!(
                    "unknown scope {s:?} (expected \"read:all\", \"write:all\" or \"admin\")"
                )),
            }
        }
        let digest = match KeyDigest::parse(&hash) {
            Ok(d) => Some(d),
            Err(e) => {
                err(e.to_string());
                None
            }
        };
        let mut time = |what: &str, t: raw::Time<'_>| match time_of(t) {
            Ok(v) => Some(v),
            Err(e) => {
                err(format!("{what}: {e}"));
                None
            }
        };
        let created = time("created_at", created_at);
        let expires = expires_at.map(|t| time("expires_at", t));
        let revoked = revoked_at.map(|t| time("revoked_at", t));
        let limit = rate_limit.map(|r| {
            let raw::Rate {
                requests,
                per_secs,
                burst,
            } = r;
            Limit::from_raw(requests, per_secs, burst)
                .map_err(|e| err(format!("rate_limit: {e}")))
                .ok()
        });
        if !self.ids.insert(id.clone()) {
            self.problems.push(Problem::at_line(
                path,
                line,
                format!("key {id:?}: duplicate key id"),
            ));
        }
        let digests = &self.digests;
        if let Some(d) = digest
            && (self.refused_digests.contains(&d)
                || self
                    .by_digest
                    .find(digest_hash(&d), |&s| digests[s as usize] == d)
                    .is_some())
        {
            // Never print the hash itself: it names which key is duplicated.
            self.problems.push(Problem::at_line(
                path,
                line,
                format!("key {id:?}: the same hash appears on another key"),
            ));
        }
        if self.problems.0.len() != before {
            // The snapshot is refused anyway; keep the hash so that a later key
            // with the same one is still reported in this same pass.
            if let Some(d) = digest {
                self.refused_digests.insert(d);
            }
            return;
        }
        let (Some(key_type), Some(digest), Some(created_at)) = (key_type_parsed, digest, created)
        else {
            return;
        };
        let slot = self.records.len();
        self.digests.push(digest);
        let digests = &self.digests;
        self.by_digest
            .insert_unique(digest_hash(&digest), slot as u32, |&s| {
                digest_hash(&digests[s as usize])
            });
        let (text, name_at, description_at, replaces_at) =
            KeyRecord::pack_text(&id, &name, description.as_deref(), replaces.as_deref());
        if replaces.is_some() {
            self.rotations.push((slot as u32, line));
        }
        self.records.push(KeyRecord {
            text,
            name_at,
            description_at,
            replaces_at,
            key_type,
            company: company_arc,
            workspace: workspace_arc,
            scopes: scope_set,
            created_at,
            expires_at: expires.flatten(),
            revoked_at: revoked.flatten(),
            rate_limit: limit.flatten(),
        });
    }

    fn finish(mut self) -> Result<KeyIndex, Problems> {
        if !self.workspaces_known {
            self.workspaces_done();
        }
        if self.records.len() > u32::MAX as usize {
            self.problems
                .push(Problem::at_line(self.path, None, "too many keys"));
        }
        let Chains { chains, successors } = chain_roots(
            &self.records,
            &self.rotations,
            self.path,
            &mut self.problems,
        );
        // Everything below is kept for the life of this generation: no slack.
        let mut records = self.records;
        let mut digests = self.digests;
        records.shrink_to_fit();
        digests.shrink_to_fit();
        self.by_digest
            .shrink_to(records.len(), |&s| digest_hash(&digests[s as usize]));
        let last_used = (0..records.len()).map(|_| AtomicI64::new(0)).collect();
        self.problems.into_result(KeyIndex {
            records,
            digests,
            by_digest: self.by_digest,
            workspaces: self.workspaces,
            last_used,
            chains,
            successors,
        })
    }
}

/// Where a key of a rotation chain counts its requests.
#[derive(Debug, Clone, Copy)]
struct Link {
    /// The chain's oldest key still present: the bucket is named after it
    /// (or after the key it replaces, deleted since).
    root: u32,
    /// The chain's newest key, the one no other replaces (the last in the
    /// file if several do): its limit is the chain's.
    head: u32,
}

/// The rotation chains of a snapshot.
#[derive(Default)]
struct Chains {
    /// Slot of every key of a chain → its root and head.
    chains: hashbrown::HashMap<u32, Link>,
    /// Slot of a replaced key → slot of its newest replacement.
    successors: hashbrown::HashMap<u32, u32>,
}

/// Checks every rotation (`replaces`) and finds the root of each chain (the
/// oldest key still present) and its head (the newest). A key and every key
/// it replaces share the root's bucket, under the head's limit.
fn chain_roots(
    records: &[KeyRecord],
    rotations: &[(u32, Option<usize>)],
    path: &Path,
    problems: &mut Problems,
) -> Chains {
    let mut chains = Chains::default();
    if rotations.is_empty() {
        return chains;
    }
    let mut roots: hashbrown::HashMap<u32, u32> = hashbrown::HashMap::new();
    let successors = &mut chains.successors;
    let by_id: hashbrown::HashMap<&str, u32> = records
        .iter()
        .enumerate()
        .map(|(slot, r)| (r.id(), slot as u32))
        .collect();
    for &(slot, line) in rotations {
        let key = &records[slot as usize];
        let mut err = |m: String| {
            problems.push(Problem::at_line(
                path,
                line,
                format!("key {:?}: {m}", key.id()),
            ));
        };
        let Some(target) = key.replaces().and_then(|r| by_id.get(r)) else {
            // Replacing a key deleted since is allowed: the chain's root is
            // this key, its bucket named after the deleted one.
            roots.insert(slot, slot);
            continue;
        };
        let old = &records[*target as usize];
        if (old.key_type, &old.company, &old.workspace)
            != (key.key_type, &key.company, &key.workspace)
        {
            let whose = |r: &KeyRecord| match &r.workspace {
                Some(ws) => format!("a workspace key of {} / {ws}", r.company),
                None => format!("a company key of {}", r.company),
            };
            err(format!(
                "replaces {:?}, which is {}, but this is {}: a key can only replace one of the same type, company and workspace",
                old.id(),
                whose(old),
                whose(key)
            ));
            continue;
        }
        // Walk to the root; coming back to a key already seen is a loop.
        let mut at = slot;
        let mut chain = vec![key.id()];
        let mut seen: hashbrown::HashSet<u32> = [slot].into_iter().collect();
        let mut looped = false;
        while let Some(&next) = records[at as usize].replaces().and_then(|r| by_id.get(r)) {
            chain.push(records[next as usize].id());
            if !seen.insert(next) {
                looped = true;
                break;
            }
            at = next;
        }
        if looped {
            err(format!("replaces chain loops: {}", chain.join(" -> ")));
            continue;
        }
        roots.insert(slot, at);
        successors.insert(*target, slot);
    }
    // A chain's head: a key of it that no other replaces, the last in the
    // file when a key was replaced twice.
    let mut heads: hashbrown::HashMap<u32, u32> = hashbrown::HashMap::new();
    for (&slot, &root) in &roots {
        if !successors.contains_key(&slot) {
            let head = heads.entry(root).or_insert(slot);
            *head = (*head).max(slot);
        }
    }
    for (&slot, &root) in &roots {
        // Every chain has a head (it has no loop); a missing one is only
        // possible in a snapshot refused above.
        let head = heads.get(&root).copied().unwrap_or(slot);
        let link = Link { root, head };
        chains.chains.insert(slot, link);
        chains.chains.insert(root, link);
    }
    chains
}

/// Why a workspace key may not name a workspace: the one rule of ownership,
/// for the loader and for `keys new`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkspaceProblem {
    /// Not in `[[workspaces]]`.
    #[error("workspace {workspace:?} is not listed in [[workspaces]]")]
    Unlisted {
        /// Workspace id.
        workspace: String,
    },
    /// Listed under another company.
    #[error("workspace {workspace:?} belongs to company {owner:?}, not {company:?}")]
    Foreign {
        /// Workspace id.
        workspace: String,
        /// Its company.
        owner: String,
        /// The key's company.
        company: String,
    },
}

/// What is wrong with a workspace key's workspace, if anything.
fn workspace_problem(
    workspaces: &HashMap<Arc<str>, Arc<str>>,
    workspace: &str,
    company: &str,
) -> Option<WorkspaceProblem> {
    match workspaces.get(workspace) {
        None => Some(WorkspaceProblem::Unlisted {
            workspace: workspace.to_string(),
        }),
        Some(owner) if **owner != *company => Some(WorkspaceProblem::Foreign {
            workspace: workspace.to_string(),
            owner: owner.to_string(),
            company: company.to_string(),
        }),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests;
