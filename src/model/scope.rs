//! Scopes as a bit set, and what a route requires of them.
//!
//! `admin` includes `read:all` and `write:all`; `write:all` does not include
//! `read:all`.

use std::fmt;

/// One scope a key may hold or a route may require.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `read:all`
    Read,
    /// `write:all`
    Write,
    /// `admin`
    Admin,
}

impl Scope {
    /// Every scope, in canonical order.
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Write, Scope::Admin];

    /// The word used in snapshots, headers and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read:all",
            Scope::Write => "write:all",
            Scope::Admin => "admin",
        }
    }

    /// Parses a scope word.
    pub fn parse(word: &str) -> Option<Self> {
        Scope::ALL.into_iter().find(|s| s.as_str() == word)
    }

    fn bit(self) -> u8 {
        match self {
            Scope::Read => 1,
            Scope::Write => 2,
            Scope::Admin => 4,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The scopes a key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Scopes(u8);

impl Scopes {
    /// No scope at all.
    pub const NONE: Scopes = Scopes(0);

    /// Adds one scope.
    pub fn with(self, scope: Scope) -> Self {
        Scopes(self.0 | scope.bit())
    }

    /// Whether the key holds `scope` itself.
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// Whether these scopes satisfy a requirement: `admin` grants everything.
    pub fn grants(self, required: Scope) -> bool {
        self.contains(Scope::Admin) || self.contains(required)
    }

    /// The held scopes in canonical order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    /// Space separated, as sent upstream in `x-keygate-scopes`. Static, so the
    /// hot path never formats it.
    pub fn header_value(self) -> &'static str {
        const TEXT: [&str; 8] = [
            "",
            "read:all",
            "write:all",
            "read:all write:all",
            "admin",
            "read:all admin",
            "write:all admin",
            "read:all write:all admin",
        ];
        TEXT[usize::from(self.0 & 7)]
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<T: IntoIterator<Item = Scope>>(iter: T) -> Self {
        iter.into_iter().fold(Scopes::NONE, Scopes::with)
    }
}

/// What a route requires (`scope = ...` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeRule {
    /// GET, HEAD and OPTIONS need `read:all`; every other method `write:all`.
    Auto,
    /// Always this scope.
    Require(Scope),
    /// No scope check.
    None,
}

impl ScopeRule {
    /// Parses the config word.
    pub fn parse(word: &str) -> Option<Self> {
        match word {
            "auto" => Some(ScopeRule::Auto),
            "none" => Some(ScopeRule::None),
            other => Scope::parse(other).map(ScopeRule::Require),
        }
    }

    /// The scope a request with `method` needs, if any.
    ///
    /// Methods are case-sensitive (RFC 9110 §9.1), so `get` is not `GET`;
    /// but backends that fold case (Flask, ASP.NET Core routing) would serve
    /// it as a read, so any case of GET, HEAD and OPTIONS needs `read:all`:
    /// a write-only key must not read by lowercasing its method.
    pub fn required(self, method: &http::Method) -> Option<Scope> {
        match self {
            ScopeRule::Auto => Some(
                if *method == http::Method::GET
                    || *method == http::Method::HEAD
                    || *method == http::Method::OPTIONS
                    || ["GET", "HEAD", "OPTIONS"]
                        .iter()
                        .any(|m| method.as_str().eq_ignore_ascii_case(m))
                {
                    Scope::Read
                } else {
                    Scope::Write
                },
            ),
            ScopeRule::Require(s) => Some(s),
            ScopeRule::None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn admin_grants_everything_write_does_not_grant_read() {
        let admin: Scopes = [Scope::Admin].into_iter().collect();
        assert!(
            admin.grants(Scope::Read) && admin.grants(Scope::Write) && admin.grants(Scope::Admin)
        );
        let write: Scopes = [Scope::Write].into_iter().collect();
        assert!(write.grants(Scope::Write));
        assert!(!write.grants(Scope::Read));
        assert!(!write.grants(Scope::Admin));
        let read: Scopes = [Scope::Read].into_iter().collect();
        assert!(read.grants(Scope::Read) && !read.grants(Scope::Write));
    }

    #[test]
    fn auto_rule_follows_method() {
        for m in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert_eq!(ScopeRule::Auto.required(&m), Some(Scope::Read));
        }
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert_eq!(ScopeRule::Auto.required(&m), Some(Scope::Write));
        }
        // Another case of a read is still a read; of a write, a write.
        for m in ["get", "Head", "options"] {
            let m = Method::from_bytes(m.as_bytes()).unwrap();
            assert_eq!(ScopeRule::Auto.required(&m), Some(Scope::Read), "{m}");
        }
        for m in ["post", "PURGE", "gets"] {
            let m = Method::from_bytes(m.as_bytes()).unwrap();
            assert_eq!(ScopeRule::Auto.required(&m), Some(Scope::Write), "{m}");
        }
        assert_eq!(ScopeRule::None.required(&Method::POST), None);
        assert_eq!(
            ScopeRule::parse("admin").unwrap().required(&Method::GET),
            Some(Scope::Admin)
        );
        assert_eq!(ScopeRule::parse("bogus"), None);
    }

    #[test]
    fn header_value_is_canonical() {
        let s: Scopes = [Scope::Admin, Scope::Read].into_iter().collect();
        assert_eq!(s.header_value(), "read:all admin");
        assert_eq!(Scopes::NONE.header_value(), "");
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            vec![Scope::Read, Scope::Admin]
        );
    }
}
