//! Token checks for private deployments. Tokens are configured as sha256 hashes
//! (`crate-mirror token` makes one), so the mirror's configuration never holds a
//! usable secret; a presented token is hashed and compared in constant time
//! against every configured hash.
//!
//! [`AccessPolicy`] decides, for the kind of route a request matched, whether
//! its credentials open it. The HTTP layer attaches the kind to each scope and
//! resource, so the decision always follows the router, never a parse of its own.

use sha2::{Digest, Sha256};

/// A sha256 digest of a token.
pub type TokenHash = [u8; 32];

/// What a request's credentials amount to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthCheck {
    Granted,
    /// No credentials were sent.
    Missing,
    /// Credentials were sent and are wrong.
    Denied,
}

/// What a route holds, and so which tokens open it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protected {
    /// Index files and downloads: client tokens.
    Registry,
    /// The git index: client tokens, sent by git as Basic credentials.
    Git,
    /// `/metrics`: metrics tokens when set, else client tokens when private.
    Metrics,
    /// `/api/stats` (top crate names): a metrics token or, when private, a client token.
    Stats,
}

/// The answer for one request on a protected route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Granted,
    /// No usable credentials: 401 with a challenge, so the client can supply some.
    Challenge,
    /// A valid token without the right to this route: 403.
    Forbidden,
}

/// Client and metrics tokens, and what each opens.
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    pub clients: TokenSet,
    pub metrics: TokenSet,
}

impl AccessPolicy {
    /// Whether the mirror is private (any client token configured).
    pub fn is_private(&self) -> bool {
        !self.clients.is_empty()
    }

    /// Decides on a request to `route` carrying `authorization`. A wrong token
    /// is a challenge like a missing one: cargo shows its login hint only on 401.
    pub fn decide(&self, route: Protected, authorization: Option<&[u8]>) -> Decision {
        let granted = |set: &TokenSet| set.check(authorization) == AuthCheck::Granted;
        let challenge_unless = |open: bool| {
            if open {
                Decision::Granted
            } else {
                Decision::Challenge
            }
        };
        match route {
            Protected::Registry | Protected::Git => {
                challenge_unless(self.clients.is_empty() || granted(&self.clients))
            }
            Protected::Metrics if !self.metrics.is_empty() => {
                if granted(&self.metrics) {
                    Decision::Granted
                } else if self.is_private() && granted(&self.clients) {
                    Decision::Forbidden
                } else {
                    Decision::Challenge
                }
            }
            Protected::Metrics => {
                challenge_unless(self.clients.is_empty() || granted(&self.clients))
            }
            Protected::Stats => challenge_unless(
                (self.clients.is_empty() && self.metrics.is_empty())
                    || granted(&self.metrics)
                    || granted(&self.clients),
            ),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct TokenSet {
    hashes: Vec<TokenHash>,
}

impl TokenSet {
    pub fn new(hashes: Vec<TokenHash>) -> Self {
        Self { hashes }
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Checks the value of an `Authorization` header: the raw token (as cargo
    /// sends it), `Bearer TOKEN`, or `Basic base64(user:TOKEN)` (as git sends it).
    pub fn check(&self, authorization: Option<&[u8]>) -> AuthCheck {
        let Some(value) = authorization else {
            return AuthCheck::Missing;
        };
        let Some(token) = token_of(value) else {
            return AuthCheck::Denied;
        };
        let presented: TokenHash = Sha256::digest(&token).into();
        // Every hash is compared, and each comparison is constant-time.
        let mut granted = false;
        for hash in &self.hashes {
            granted |= constant_time_eq(&presented, hash);
        }
        if granted {
            AuthCheck::Granted
        } else {
            AuthCheck::Denied
        }
    }
}

fn token_of(value: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(value).ok()?.trim();
    if text.is_empty() {
        return None;
    }
    if let Some(encoded) = strip_scheme(text, "Basic") {
        let decoded = base64_decode(encoded)?;
        let colon = decoded.iter().position(|b| *b == b':')?;
        return Some(decoded[colon + 1..].to_vec());
    }
    let token = strip_scheme(text, "Bearer").unwrap_or(text);
    Some(token.as_bytes().to_vec())
}

fn strip_scheme<'a>(text: &'a str, scheme: &str) -> Option<&'a str> {
    let (head, rest) = text.split_once(' ')?;
    head.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

fn constant_time_eq(a: &TokenHash, b: &TokenHash) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    diff == 0
}

/// Standard base64 (with or without padding); `None` on anything else.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes: Vec<u8> = text.bytes().filter(|b| *b != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        if chunk.len() == 1 {
            return None;
        }
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= value(*c)? << (18 - 6 * i);
        }
        let produced = chunk.len() - 1;
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + produced]);
    }
    Some(out)
}

/// Parses a configured hash: 64 hex digits, optionally prefixed `sha256:`.
pub fn parse_token_hash(text: &str) -> Result<TokenHash, String> {
    let hex_digits = text.trim().strip_prefix("sha256:").unwrap_or(text.trim());
    let bytes = hex::decode(hex_digits).map_err(|_| "expected 64 hex digits".to_string())?;
    bytes
        .try_into()
        .map_err(|_| "expected 64 hex digits (a sha256)".to_string())
}

/// A new random token and its hash (`sha256:HEX`), for `crate-mirror token`.
pub fn new_token() -> std::io::Result<(String, String)> {
    use std::io::Read;
    let mut random = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut random)?;
    let token = format!("cmt_{}", hex::encode(random));
    let hash = format!("sha256:{}", hex::encode(Sha256::digest(token.as_bytes())));
    Ok((token, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_for(token: &str) -> TokenSet {
        TokenSet::new(vec![Sha256::digest(token.as_bytes()).into()])
    }

    #[test]
    fn raw_bearer_and_basic_tokens_are_accepted() {
        let set = set_for("s3cret");
        assert_eq!(set.check(Some(b"s3cret")), AuthCheck::Granted);
        assert_eq!(set.check(Some(b"Bearer s3cret")), AuthCheck::Granted);
        // base64("git:s3cret")
        assert_eq!(
            set.check(Some(b"Basic Z2l0OnMzY3JldA==")),
            AuthCheck::Granted
        );
        assert_eq!(set.check(Some(b"wrong")), AuthCheck::Denied);
        assert_eq!(set.check(Some(b"Basic !!!")), AuthCheck::Denied);
        assert_eq!(set.check(Some(b"")), AuthCheck::Denied);
        assert_eq!(set.check(Some(b"\xff\xfe")), AuthCheck::Denied);
        assert_eq!(set.check(None), AuthCheck::Missing);
    }

    #[test]
    fn each_route_kind_opens_to_its_tokens() {
        use Decision::*;
        use Protected::*;
        let private = AccessPolicy {
            clients: set_for("client"),
            metrics: set_for("metrics"),
        };
        let client = Some(&b"client"[..]);
        let metrics = Some(&b"Bearer metrics"[..]);
        let wrong = Some(&b"wrong"[..]);
        for route in [Registry, Git] {
            assert_eq!(private.decide(route, client), Granted);
            assert_eq!(private.decide(route, None), Challenge);
            assert_eq!(private.decide(route, wrong), Challenge);
            assert_eq!(private.decide(route, metrics), Challenge);
        }
        assert_eq!(private.decide(Metrics, metrics), Granted);
        assert_eq!(private.decide(Metrics, client), Forbidden);
        assert_eq!(private.decide(Metrics, wrong), Challenge);
        assert_eq!(private.decide(Metrics, None), Challenge);
        assert_eq!(private.decide(Stats, metrics), Granted);
        assert_eq!(private.decide(Stats, client), Granted);
        assert_eq!(private.decide(Stats, None), Challenge);

        // Private without metrics tokens: client tokens open metrics and stats.
        let clients_only = AccessPolicy {
            clients: set_for("client"),
            metrics: TokenSet::default(),
        };
        assert_eq!(clients_only.decide(Metrics, client), Granted);
        assert_eq!(clients_only.decide(Metrics, None), Challenge);
        assert_eq!(clients_only.decide(Stats, None), Challenge);

        // Public with a metrics token: registry open, metrics and stats closed.
        let public = AccessPolicy {
            clients: TokenSet::default(),
            metrics: set_for("metrics"),
        };
        assert_eq!(public.decide(Registry, None), Granted);
        assert_eq!(public.decide(Metrics, None), Challenge);
        assert_eq!(public.decide(Stats, wrong), Challenge);
        assert_eq!(public.decide(Stats, metrics), Granted);
        let open = AccessPolicy::default();
        for route in [Registry, Git, Metrics, Stats] {
            assert_eq!(open.decide(route, None), Granted);
        }
    }

    #[test]
    fn generated_tokens_match_their_hash() {
        let (token, hash) = new_token().unwrap();
        let set = TokenSet::new(vec![parse_token_hash(&hash).unwrap()]);
        assert_eq!(set.check(Some(token.as_bytes())), AuthCheck::Granted);
        assert!(parse_token_hash("sha256:abc").is_err());
        assert!(parse_token_hash(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn base64_round_trips_known_values() {
        assert_eq!(base64_decode("Zm9vYmFy").unwrap(), b"foobar");
        assert_eq!(base64_decode("Zm9vYg==").unwrap(), b"foob");
        assert_eq!(base64_decode("Zm9vYg").unwrap(), b"foob");
        assert!(base64_decode("Z").is_none());
    }
}
