//! `keys.toml` text: workspaces and keys minted like production ones.

use super::{hash, mint};
use std::fmt::Write as _;

/// A key to put in a snapshot, with its secret.
#[derive(Debug, Clone)]
pub struct TestKey {
    pub id: String,
    pub key: String,
    pub toml: String,
}

/// Builds `keys.toml` text.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub workspaces: Vec<(String, String)>,
    pub keys: Vec<TestKey>,
}

impl Snapshot {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn workspace(mut self, id: &str, company: &str) -> Self {
        self.workspaces.push((id.into(), company.into()));
        self
    }

    /// A company key of `company`, to finish with [`KeyBuilder::add`].
    pub fn company_key(&mut self, id: &str, company: &str) -> KeyBuilder<'_> {
        self.typed_key("company", id, company, None)
    }

    /// A workspace key of `company` / `workspace`.
    pub fn workspace_key(&mut self, id: &str, company: &str, workspace: &str) -> KeyBuilder<'_> {
        self.typed_key("workspace", id, company, Some(workspace))
    }

    /// A key whose `type` field is `key_type` as written (also a type the
    /// prefix disagrees with, for the tests of that refusal).
    pub fn typed_key(
        &mut self,
        key_type: &str,
        id: &str,
        company: &str,
        workspace: Option<&str>,
    ) -> KeyBuilder<'_> {
        KeyBuilder {
            snapshot: self,
            id: id.into(),
            key_type: key_type.into(),
            company: company.into(),
            workspace: workspace.map(Into::into),
            scopes: Vec::new(),
            extra: String::new(),
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for (id, c) in &self.workspaces {
            writeln!(out, "[[workspaces]]\nid = {id:?}\ncompany = {c:?}\n").unwrap();
        }
        for k in &self.keys {
            writeln!(out, "{}", k.toml).unwrap();
        }
        out
    }
}

/// One key on its way into a [`Snapshot`]: no scope and nothing else unless
/// said; [`KeyBuilder::add`] mints it and returns the key.
#[must_use = "a key is only added by add()"]
pub struct KeyBuilder<'s> {
    snapshot: &'s mut Snapshot,
    id: String,
    key_type: String,
    company: String,
    workspace: Option<String>,
    scopes: Vec<String>,
    extra: String,
}

impl KeyBuilder<'_> {
    /// The scopes it holds.
    pub fn scopes(mut self, scopes: &[&str]) -> Self {
        self.scopes = scopes.iter().map(|s| s.to_string()).collect();
        self
    }

    /// More TOML lines of the record (`expires_at = ...`, `rate_limit = ...`).
    pub fn extra(mut self, lines: &str) -> Self {
        self.extra = lines.into();
        self
    }

    /// Mints the key, adds its record, and returns the key.
    pub fn add(self) -> String {
        let KeyBuilder {
            snapshot,
            id,
            key_type,
            company,
            workspace,
            scopes,
            extra,
        } = self;
        let prefix = if key_type == "company" {
            "ord_c_"
        } else {
            "ord_"
        };
        let key = mint(prefix);
        let mut t = String::new();
        writeln!(t, "[[keys]]").unwrap();
        writeln!(t, "id = {id:?}").unwrap();
        writeln!(t, "name = \"{id} name\"").unwrap();
        writeln!(t, "type = {key_type:?}").unwrap();
        writeln!(t, "company = {company:?}").unwrap();
        if let Some(w) = &workspace {
            writeln!(t, "workspace = {w:?}").unwrap();
        }
        writeln!(t, "scopes = {scopes:?}").unwrap();
        writeln!(t, "hash = {:?}", hash(&key)).unwrap();
        writeln!(t, "created_at = \"2026-11-01T10:00:00Z\"").unwrap();
        if !extra.is_empty() {
            writeln!(t, "{extra}").unwrap();
        }
        snapshot.keys.push(TestKey {
            id,
            key: key.clone(),
            toml: t,
        });
        key
    }
}
