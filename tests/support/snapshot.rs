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

    /// Adds a key; `extra` is more TOML lines (`expires_at = ...`).
    pub fn key(
        &mut self,
        id: &str,
        key_type: &str,
        company: &str,
        workspace: Option<&str>,
        scopes: &[&str],
        extra: &str,
    ) -> String {
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
        if let Some(w) = workspace {
            writeln!(t, "workspace = {w:?}").unwrap();
        }
        writeln!(t, "scopes = {scopes:?}").unwrap();
        writeln!(t, "hash = {:?}", hash(&key)).unwrap();
        writeln!(t, "created_at = \"2026-11-01T10:00:00Z\"").unwrap();
        if !extra.is_empty() {
            writeln!(t, "{extra}").unwrap();
        }
        self.keys.push(TestKey {
            id: id.into(),
            key: key.clone(),
            toml: t,
        });
        key
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
