//! From the `Authorization` header to a key digest: bearer parsing, key prefixes,
//! and the SHA-256 digest the snapshot is keyed by.
//!
//! Nothing here allocates: the token is borrowed from the header and the digest
//! lives on the stack. `KeyDigest`'s `Debug` is redacted so a digest can never
//! reach a log line by accident.

use sha2::{Digest, Sha256};
use std::fmt;

/// Longest token we are willing to hash. Real keys are ~40 bytes; anything far
/// longer is garbage or an attack and is refused without a lookup.
pub const MAX_TOKEN_LEN: usize = 512;

/// The SHA-256 digest of a whole key text (prefix included).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyDigest(pub [u8; 32]);

impl KeyDigest {
    /// Digest of a presented key.
    pub fn of(key: &[u8]) -> Self {
        KeyDigest(Sha256::digest(key).into())
    }

    /// Parses the snapshot form `sha256:<64 lowercase hex>`.
    pub fn parse(text: &str) -> Result<Self, DigestError> {
        // Lowercase only, checked and decoded in one pass: a snapshot of a
        // million keys decodes a million of these on every reload.
        fn nibble(b: u8) -> Option<u8> {
            match b {
                b'0'..=b'9' => Some(b - b'0'),
                b'a'..=b'f' => Some(b - b'a' + 10),
                _ => None,
            }
        }
        let hex_part = text.strip_prefix("sha256:").ok_or(DigestError)?;
        if hex_part.len() != 64 {
            return Err(DigestError);
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(hex_part.as_bytes().chunks_exact(2)) {
            *byte =
                (nibble(pair[0]).ok_or(DigestError)? << 4) | nibble(pair[1]).ok_or(DigestError)?;
        }
        Ok(KeyDigest(out))
    }

    /// The snapshot form `sha256:<64 lowercase hex>`.
    pub fn to_text(&self) -> String {
        format!("sha256:{}", hex::encode(self.0))
    }

    /// Compares in constant time, for secrets compared outside the hash map
    /// (the admin token).
    pub fn ct_eq(&self, other: &KeyDigest) -> bool {
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyDigest(<redacted>)")
    }
}

/// A hash that is not `sha256:` followed by 64 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("hash must be \"sha256:\" followed by 64 lowercase hex digits")]
pub struct DigestError;

/// The two kinds of key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// Reaches every workspace of its company.
    Company,
    /// Reaches its one workspace.
    Workspace,
}

impl KeyType {
    /// The word used in snapshots, headers, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Company => "company",
            KeyType::Workspace => "workspace",
        }
    }

    /// Parses the snapshot / CLI word.
    pub fn parse(word: &str) -> Option<Self> {
        match word {
            "company" => Some(KeyType::Company),
            "workspace" => Some(KeyType::Workspace),
            _ => None,
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The fewest letters and digits a key has after its prefix (CONTRACT §1).
pub const MIN_KEY_BODY: usize = 32;

/// The configured key prefixes; the longest one a token starts with decides its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefixes {
    company: Box<str>,
    workspace: Box<str>,
}

/// Prefixes that cannot tell keys apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// An empty prefix would match every token.
    #[error("{0} must not be empty")]
    Empty(&'static str),
    /// Only characters that can appear in a header token are allowed.
    #[error("{0} may only contain letters, digits, '_' and '-'")]
    BadChars(&'static str),
    /// Identical prefixes make the key type ambiguous.
    #[error("company_prefix and workspace_prefix must differ")]
    Same,
}

impl Prefixes {
    /// Validates a pair of prefixes.
    pub fn new(company: &str, workspace: &str) -> Result<Self, PrefixError> {
        for (name, p) in [("company_prefix", company), ("workspace_prefix", workspace)] {
            if p.is_empty() {
                return Err(PrefixError::Empty(name));
            }
            if !p
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(PrefixError::BadChars(name));
            }
        }
        if company == workspace {
            return Err(PrefixError::Same);
        }
        Ok(Prefixes {
            company: company.into(),
            workspace: workspace.into(),
        })
    }

    /// The prefix of one key type.
    pub fn prefix(&self, key_type: KeyType) -> &str {
        match key_type {
            KeyType::Company => &self.company,
            KeyType::Workspace => &self.workspace,
        }
    }

    /// `text` with every secret it may quote blanked out: the value of an
    /// `Authorization` field, and anything shaped like a key (a prefix and
    /// 8 or more letters and digits). For text keygate does not write itself
    /// (a peer's bytes quoted in an error) before it reaches a log line.
    pub fn redact(&self, text: &str) -> String {
        const BLANK: &[u8] = b"[redacted]";
        let b = text.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            const FIELD: &[u8] = b"authorization";
            if b[i..].len() >= FIELD.len() && b[i..i + FIELD.len()].eq_ignore_ascii_case(FIELD) {
                let mut j = i + FIELD.len();
                while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
                    j += 1;
                }
                if j < b.len() && (b[j] == b':' || b[j] == b'=') {
                    // The value runs to the end of its line, raw or escaped.
                    let mut end = j + 1;
                    while end < b.len() && !matches!(b[end], b'\r' | b'\n' | b'\\' | b'"' | b',') {
                        end += 1;
                    }
                    out.extend_from_slice(&b[i..=j]);
                    out.push(b' ');
                    out.extend_from_slice(BLANK);
                    i = end;
                    continue;
                }
            }
            if let Some((len, run)) = self.key_shaped_at(b, i, 8) {
                out.extend_from_slice(&b[i..i + len]);
                out.extend_from_slice(BLANK);
                i += len + run;
                continue;
            }
            out.push(b[i]);
            i += 1;
        }
        // Only ASCII was cut or added, so this is still UTF-8.
        String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    /// Whether `b` holds a key's shape anywhere: a prefix, then at least the
    /// 32 letters and digits a key has after it (glued to a word or not: a
    /// client that writes `1` before its key still has its key there).
    pub fn holds_key_shape(&self, b: &[u8]) -> bool {
        // Only where a prefix's first byte is can a key start: found with
        // memchr, as this runs on every logged path.
        // Never empty (`new` refuses it).
        let first = |p: &str| p.as_bytes().first().copied().unwrap_or_default();
        let (c, w) = (first(&self.company), first(&self.workspace));
        memchr::memchr2_iter(c, w, b).any(|i| self.key_shaped_at(b, i, MIN_KEY_BODY).is_some())
    }

    /// A prefix at `i` followed by `min_run` or more letters and digits: the
    /// prefix's length and the run's. A prefix inside a word (`record_…`
    /// holds `ord_`) counts only before a whole key's 32 or more.
    fn key_shaped_at(&self, b: &[u8], i: usize, min_run: usize) -> Option<(usize, usize)> {
        let min_run = if i > 0 && b[i - 1].is_ascii_alphanumeric() {
            min_run.max(MIN_KEY_BODY)
        } else {
            min_run
        };
        let len = [&*self.company, &*self.workspace]
            .into_iter()
            .filter(|p| b[i..].starts_with(p.as_bytes()))
            .map(str::len)
            .max()?;
        let run = b[i + len..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric())
            .count();
        (run >= min_run).then_some((len, run))
    }

    /// The key type a token claims by its prefix, or `None` when it starts with no
    /// configured prefix, has nothing after it, or is too long to be a key.
    pub fn classify(&self, token: &[u8]) -> Option<KeyType> {
        if token.len() > MAX_TOKEN_LEN {
            return None;
        }
        let c = token.starts_with(self.company.as_bytes()) && token.len() > self.company.len();
        let w = token.starts_with(self.workspace.as_bytes()) && token.len() > self.workspace.len();
        match (c, w) {
            (true, true) if self.company.len() >= self.workspace.len() => Some(KeyType::Company),
            (true, true) => Some(KeyType::Workspace),
            (true, false) => Some(KeyType::Company),
            (false, true) => Some(KeyType::Workspace),
            (false, false) => None,
        }
    }
}

/// The default company key prefix.
pub const DEFAULT_COMPANY_PREFIX: &str = "ord_c_";
/// The default workspace key prefix.
pub const DEFAULT_WORKSPACE_PREFIX: &str = "ord_";

impl Default for Prefixes {
    fn default() -> Self {
        Prefixes {
            company: DEFAULT_COMPANY_PREFIX.into(),
            workspace: DEFAULT_WORKSPACE_PREFIX.into(),
        }
    }
}

/// Why no usable bearer token was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerError {
    /// No header, another scheme, or an empty token (contract row 5).
    Missing,
    /// Two `Authorization` headers: ambiguous, so refused as invalid (row 6).
    Ambiguous,
}

/// Extracts the bearer token from every `Authorization` header value of a request.
///
/// `Bearer` is matched case-insensitively, one or more spaces or tabs may follow
/// it, and the token ends at the first whitespace.
pub fn bearer_token<'a, I>(mut values: I) -> Result<&'a [u8], BearerError>
where
    I: Iterator<Item = &'a [u8]>,
{
    let value = values.next().ok_or(BearerError::Missing)?;
    if values.next().is_some() {
        return Err(BearerError::Ambiguous);
    }
    let value = trim_start(value);
    const SCHEME: &[u8] = b"bearer";
    if value.len() <= SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return Err(BearerError::Missing);
    }
    let rest = &value[SCHEME.len()..];
    if !is_space(rest[0]) {
        // "Bearerxyz" is another scheme, not a bearer token.
        return Err(BearerError::Missing);
    }
    let rest = trim_start(rest);
    let end = rest.iter().position(|&b| is_space(b)).unwrap_or(rest.len());
    if end == 0 {
        return Err(BearerError::Missing);
    }
    Ok(&rest[..end])
}

fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_start(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if is_space(*first) {
            s = rest;
        } else {
            break;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(v: &str) -> Result<&[u8], BearerError> {
        bearer_token(std::iter::once(v.as_bytes()))
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_allows_several_spaces() {
        assert_eq!(one("Bearer abc").unwrap(), b"abc");
        assert_eq!(one("bearer abc").unwrap(), b"abc");
        assert_eq!(one("BEARER    abc").unwrap(), b"abc");
        assert_eq!(one("Bearer \tabc").unwrap(), b"abc");
    }

    #[test]
    fn token_ends_at_first_whitespace() {
        assert_eq!(one("Bearer abc def").unwrap(), b"abc");
        assert_eq!(one("Bearer abc\tdef").unwrap(), b"abc");
    }

    #[test]
    fn missing_token_cases() {
        assert_eq!(
            bearer_token(std::iter::empty()).unwrap_err(),
            BearerError::Missing
        );
        for v in [
            "",
            "Bearer",
            "Bearer ",
            "Bearer    ",
            "Basic abc",
            "Bearerabc",
            "Token abc",
        ] {
            assert_eq!(one(v).unwrap_err(), BearerError::Missing, "{v:?}");
        }
    }

    #[test]
    fn two_headers_are_ambiguous() {
        let values = [b"Bearer a".as_slice(), b"Bearer b".as_slice()];
        assert_eq!(
            bearer_token(values.iter().copied()).unwrap_err(),
            BearerError::Ambiguous
        );
    }

    #[test]
    fn longest_prefix_decides() {
        let p = Prefixes::default();
        assert_eq!(p.classify(b"ord_c_abc"), Some(KeyType::Company));
        assert_eq!(p.classify(b"ord_abc"), Some(KeyType::Workspace));
        assert_eq!(p.classify(b"ord_"), None);
        assert_eq!(p.classify(b"ord_c_"), Some(KeyType::Workspace));
        assert_eq!(p.classify(b"sk_abc"), None);
        let long = vec![b'a'; MAX_TOKEN_LEN + 1];
        let mut t = b"ord_".to_vec();
        t.extend_from_slice(&long);
        assert_eq!(p.classify(&t), None);
        // The longer prefix wins whichever of the two it is.
        let q = Prefixes::new("k_", "k_ws_").unwrap();
        assert_eq!(q.classify(b"k_ws_abc"), Some(KeyType::Workspace));
        assert_eq!(q.classify(b"k_abc"), Some(KeyType::Company));
    }

    #[test]
    fn redact_blanks_authorization_values_and_key_shaped_text() {
        let p = Prefixes::new("ord_c_", "ord_").unwrap();
        let key = format!("ord_c_{}", "a1B2".repeat(10));
        let ws = format!("ord_{}", "Z9".repeat(20));
        let text = format!(
            "buf: GET /x HTTP/1.1\\r\\nAuthorization: Bearer {key}\\r\\nx-id: {ws}\\r\\nHost: h"
        );
        let r = p.redact(&text);
        assert!(!r.contains(&key) && !r.contains(&ws), "{r}");
        assert!(!r.contains("Bearer"), "{r}");
        assert!(r.contains("Authorization: [redacted]\\r\\n"), "{r}");
        assert!(r.contains("x-id: ord_[redacted]\\r\\nHost: h"), "{r}");
        // Raw line ends, `authorization=`, other case.
        let r = p.redact(&format!("a\r\nAUTHORIZATION :{key}\r\nb"));
        assert_eq!(r, "a\r\nAUTHORIZATION : [redacted]\r\nb");
        let r = p.redact(&format!("authorization={key}, next"));
        assert_eq!(r, "authorization= [redacted], next");
        // Short or embedded lookalikes, and plain text, are left alone.
        for kept in [
            "wordord_c_abcdefghij",
            "ord_c_abc",
            "ordinary text é ünï",
            "no authorization here",
        ] {
            assert_eq!(p.redact(kept), kept);
        }
        assert_eq!(p.redact(&format!("é{key}")), "éord_c_[redacted]");
        // A whole key glued to a word is still a key.
        assert_eq!(p.redact(&format!("x=1{key}")), "x=1ord_c_[redacted]");
        assert!(p.holds_key_shape(format!("1{key}").as_bytes()));
        assert!(p.holds_key_shape(format!("/pub/x{ws}").as_bytes()));
        assert!(!p.holds_key_shape(b"/records/record_abcdefghij"));
    }

    #[test]
    fn prefixes_are_validated() {
        assert_eq!(
            Prefixes::new("", "a"),
            Err(PrefixError::Empty("company_prefix"))
        );
        assert_eq!(Prefixes::new("a", "a"), Err(PrefixError::Same));
        assert_eq!(
            Prefixes::new("a b", "c"),
            Err(PrefixError::BadChars("company_prefix"))
        );
    }

    #[test]
    fn digest_round_trip_and_validation() {
        let d = KeyDigest::of(b"ord_c_test");
        let text = d.to_text();
        assert_eq!(KeyDigest::parse(&text).unwrap(), d);
        assert!(KeyDigest::parse(&text.to_uppercase()).is_err());
        assert!(KeyDigest::parse("sha256:abc").is_err());
        assert!(KeyDigest::parse(&text.replace("sha256:", "sha1:")).is_err());
        // Every byte position is checked: a non-hex letter, a sign, a space
        // and a two-byte character (64 bytes, 63 characters) are refused.
        let hex = &text["sha256:".len()..];
        for bad in ["g", "-", " ", "é"] {
            for at in [0, 31, 62] {
                let mut changed = hex.to_string();
                changed.replace_range(at..at + bad.len(), bad);
                assert_eq!(changed.len(), 64);
                let candidate = format!("sha256:{changed}");
                assert!(KeyDigest::parse(&candidate).is_err(), "{candidate}");
            }
        }
        let all = "sha256:00112233445566778899aabbccddeeff0123456789abcdef0f1e2d3c4b5a6978";
        assert_eq!(
            KeyDigest::parse(all).unwrap().0[..9],
            [0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]
        );
        assert_eq!(KeyDigest::parse(all).unwrap().0[31], 0x78);
        assert_eq!(format!("{d:?}"), "KeyDigest(<redacted>)");
        assert!(d.ct_eq(&d));
        assert!(!d.ct_eq(&KeyDigest::of(b"other")));
    }
}
