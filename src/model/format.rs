//! The two key snapshot formats, told apart by the file's extension.

use std::path::Path;

/// `.toml` or `.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotFormat {
    /// `keys.toml`.
    Toml,
    /// `keys.json`: the faster to load at scale.
    Json,
}

impl SnapshotFormat {
    /// The format of the snapshot at `path`; `None` for any other extension.
    pub fn of(path: &Path) -> Option<SnapshotFormat> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => Some(SnapshotFormat::Toml),
            Some("json") => Some(SnapshotFormat::Json),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_extension_tells() {
        assert_eq!(
            SnapshotFormat::of(Path::new("a/keys.toml")),
            Some(SnapshotFormat::Toml)
        );
        assert_eq!(
            SnapshotFormat::of(Path::new("keys.json")),
            Some(SnapshotFormat::Json)
        );
        assert_eq!(SnapshotFormat::of(Path::new("keys.yaml")), None);
        assert_eq!(SnapshotFormat::of(Path::new("keys")), None);
    }
}
