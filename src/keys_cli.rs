//! `keygate keys new | revoke | list | hash`: snapshot editing for operators.
//!
//! Keys come from the OS CSPRNG and are printed once, alone, on stdout; the
//! record id goes to stderr. TOML edits keep the operator's comments and order;
//! every write is atomic (temp file, fsync, rename).

use std::path::PathBuf;

/// `keygate keys new`
#[derive(Debug, Clone, clap::Args)]
pub struct NewArgs {
    /// Snapshot file to add the key to (.toml or .json).
    #[arg(long)]
    pub snapshot: PathBuf,
    /// company | workspace
    #[arg(long = "type", value_name = "TYPE")]
    pub key_type: String,
    /// Owning company.
    #[arg(long)]
    pub company: String,
    /// Workspace (workspace keys only).
    #[arg(long)]
    pub workspace: Option<String>,
    /// Human name.
    #[arg(long)]
    pub name: String,
    /// Optional description.
    #[arg(long)]
    pub description: Option<String>,
    /// Scope (repeatable): read:all, write:all, admin.
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<String>,
    /// Own rate limit, e.g. 1000/60s (optionally :BURST).
    #[arg(long)]
    pub rate_limit: Option<String>,
    /// Expiry, RFC 3339.
    #[arg(long)]
    pub expires: Option<String>,
    /// Record id (default: generated).
    #[arg(long)]
    pub id: Option<String>,
    /// Key prefix for company keys.
    #[arg(long, default_value = "ord_c_")]
    pub company_prefix: String,
    /// Key prefix for workspace keys.
    #[arg(long, default_value = "ord_")]
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

/// `keygate keys list`
#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    /// Snapshot file.
    #[arg(long)]
    pub snapshot: PathBuf,
}

/// `keygate keys new`
pub fn new_key(_args: &NewArgs) -> anyhow::Result<()> {
    anyhow::bail!("in progress")
}

/// `keygate keys revoke`
pub fn revoke(_args: &RevokeArgs) -> anyhow::Result<()> {
    anyhow::bail!("in progress")
}

/// `keygate keys list`
pub fn list(_args: &ListArgs) -> anyhow::Result<()> {
    anyhow::bail!("in progress")
}

/// `keygate keys hash`
pub fn hash_stdin() -> anyhow::Result<()> {
    anyhow::bail!("in progress")
}
