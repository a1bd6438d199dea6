//! Subscriber tokens: which mailboxes a browser may read.
//!
//! Apps mint a JWT (HS256 with a shared secret, or RS256/ES256 with a key
//! pair) whose `mailboxes` claim lists the names it grants; a trailing `*`
//! grants a prefix. The gateway only verifies: signature and time checks are
//! jsonwebtoken's (RustCrypto; HMAC comparison in constant time), the grant
//! check is [`grants`]. Reasons given to clients say what was wrong, never
//! which key or which byte.

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;

use std::path::PathBuf;
use std::time::Duration;

/// Tokens longer than this are refused before any parsing: real ones are a
/// few hundred bytes, and a header line is capped anyway.
pub const MAX_TOKEN_LEN: usize = 8192;

#[derive(Debug, Deserialize)]
struct Claims {
    exp: u64,
    #[serde(default)]
    mailboxes: Vec<String>,
    /// Mailboxes the bearer may publish to: WebSocket text frames and POST
    /// bodies for backends (`mailbox.upstream`), Bayeux client publishes
    /// (`bayeux.client-publish`). Names or prefixes, as `mailboxes`.
    #[serde(default)]
    publish: Vec<String>,
    /// Who the bearer is: the subject of presence and upstream events.
    #[serde(default)]
    sub: Option<String>,
}

/// Why a request was refused. Each maps to a status and a short reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    Missing,
    Malformed,
    BadSignature,
    Expired,
    NotYetValid,
    WrongAudience,
    NotGranted,
}

impl Denied {
    /// 403 when a valid token does not grant this mailbox, 401 otherwise.
    pub fn is_forbidden(self) -> bool {
        self == Denied::NotGranted
    }

    pub fn reason(self) -> &'static str {
        match self {
            Denied::Missing => "token required",
            Denied::Malformed => "malformed token",
            Denied::BadSignature => "bad signature",
            Denied::Expired => "token expired",
            Denied::NotYetValid => "token not yet valid",
            Denied::WrongAudience => "token not meant for this gateway",
            Denied::NotGranted => "mailbox not granted",
        }
    }
}

/// What a valid token allows for one request.
/// The `auth.*` settings (docs/configuration.md); tokens: docs/security.md.
#[derive(Clone, Debug, PartialEq)]
pub struct AuthConfig {
    /// `auth.required`; needs one of the two key files.
    pub required: bool,
    /// `auth.jwt-secret-file`.
    pub jwt_secret_file: Option<PathBuf>,
    /// `auth.jwt-public-key-file`.
    pub jwt_public_key_file: Option<PathBuf>,
    /// `auth.public-prefixes`: paths readable without a token.
    pub public_prefixes: Vec<String>,
    /// `auth.cookie`: name of the cookie carrying the token.
    pub cookie: Option<String>,
    /// `auth.audience`: required `aud` claim.
    pub audience: Option<String>,
    /// `auth.clock-leeway`: clock drift allowed on `exp` and `nbf`.
    pub clock_leeway: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            required: false,
            jwt_secret_file: None,
            jwt_public_key_file: None,
            public_prefixes: Vec::new(),
            cookie: None,
            audience: None,
            clock_leeway: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// `exp`, in seconds since the Unix epoch; streams end then.
    pub expires_at: u64,
    /// The `sub` claim.
    pub subject: Option<String>,
    /// The `publish` claim.
    pub publish: Vec<String>,
}

impl From<Claims> for Grant {
    fn from(claims: Claims) -> Grant {
        Grant {
            expires_at: claims.exp,
            subject: claims.sub,
            publish: claims.publish,
        }
    }
}

/// Token checks, present only when `auth.required` is on.
pub struct Auth {
    public_prefixes: Vec<String>,
    pub cookie: Option<String>,
    key: DecodingKey,
    validation: Validation,
}

impl Auth {
    /// Loads the key named in the config. `Ok(None)` when tokens are off.
    pub fn from_config(config: &AuthConfig) -> Result<Option<Auth>, String> {
        if !config.required {
            return Ok(None);
        }
        let (key, algorithms) = match (&config.jwt_secret_file, &config.jwt_public_key_file) {
            (Some(path), _) => {
                let secret = read_key_file(path)?;
                let secret = secret.trim_ascii_end();
                if secret.len() < 32 {
                    // RFC 7518 3.2: an HS256 key must be at least 256 bits.
                    return Err(format!(
                        "auth.jwt-secret-file {}: the secret must be at least 32 bytes",
                        path.display()
                    ));
                }
                (DecodingKey::from_secret(secret), vec![Algorithm::HS256])
            }
            (None, Some(path)) => {
                let pem = read_key_file(path)?;
                if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
                    (key, vec![Algorithm::RS256])
                } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
                    (key, vec![Algorithm::ES256])
                } else {
                    return Err(format!(
                        "auth.jwt-public-key-file {}: not an RSA or EC public key in PEM",
                        path.display()
                    ));
                }
            }
            (None, None) => return Err("auth.required needs a key file".into()),
        };
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // Clocks of app servers and the gateway drift a little
        // (`auth.clock-leeway`).
        validation.leeway = config.clock_leeway.as_secs();
        match &config.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Ok(Some(Auth {
            public_prefixes: config.public_prefixes.clone(),
            cookie: config.cookie.clone(),
            key,
            validation,
        }))
    }

    pub fn needs_token(&self, mailbox: &str) -> bool {
        !self
            .public_prefixes
            .iter()
            .any(|p| mailbox.starts_with(p.as_str()))
    }

    /// Verifies `token` for reading `mailbox` (its `mailboxes` claim).
    pub fn check(&self, token: Option<&[u8]>, mailbox: &str) -> Result<Grant, Denied> {
        let claims = self.verify(token)?;
        if !grants(&claims.mailboxes, mailbox) {
            return Err(Denied::NotGranted);
        }
        Ok(Grant::from(claims))
    }

    /// Verifies `token` for publishing to `mailbox` (its `publish` claim).
    pub fn check_publish(&self, token: Option<&[u8]>, mailbox: &str) -> Result<Grant, Denied> {
        let claims = self.verify(token)?;
        if !grants(&claims.publish, mailbox) {
            return Err(Denied::NotGranted);
        }
        Ok(Grant::from(claims))
    }

    fn verify(&self, token: Option<&[u8]>) -> Result<Claims, Denied> {
        let token = token.filter(|t| !t.is_empty()).ok_or(Denied::Missing)?;
        if token.len() > MAX_TOKEN_LEN {
            return Err(Denied::Malformed);
        }
        let token = std::str::from_utf8(token).map_err(|_| Denied::Malformed)?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => Denied::Expired,
                ErrorKind::ImmatureSignature => Denied::NotYetValid,
                ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => Denied::BadSignature,
                ErrorKind::InvalidAudience => Denied::WrongAudience,
                _ => Denied::Malformed,
            },
        )?;
        Ok(data.claims)
    }
}

/// Never prints the key.
impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("public_prefixes", &self.public_prefixes)
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

fn read_key_file(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read key file {}: {e}", path.display()))
}

/// Whether a `mailboxes` claim grants `mailbox`: an entry is a name, or a
/// prefix ending in `*` (`"public:*"`). A lone `*` grants everything.
pub fn grants(claim: &[String], mailbox: &str) -> bool {
    claim.iter().any(|entry| match entry.strip_suffix('*') {
        Some(prefix) => mailbox.starts_with(prefix),
        None => entry == mailbox,
    })
}

/// Where a request's token came from. A cookie rides along on requests
/// that other sites' pages make (a `<script>` tag, a WebSocket), so a
/// cookie-authenticated request needs an Origin check the others do not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenSource {
    Header,
    Query,
    Cookie,
}

/// The token of a request: `Authorization: Bearer`, then `?token=`, then
/// the configured cookie.
pub fn token_from<'a>(
    authorization: Option<&'a [u8]>,
    query_token: Option<&'a [u8]>,
    cookies: Option<&'a [u8]>,
    cookie_name: Option<&str>,
) -> Option<&'a [u8]> {
    find_token(authorization, query_token, cookies, cookie_name).map(|(token, _)| token)
}

/// [`token_from`], saying where the token was found.
pub fn find_token<'a>(
    authorization: Option<&'a [u8]>,
    query_token: Option<&'a [u8]>,
    cookies: Option<&'a [u8]>,
    cookie_name: Option<&str>,
) -> Option<(&'a [u8], TokenSource)> {
    if let Some(value) = authorization
        && value.len() > 7
        && value[..7].eq_ignore_ascii_case(b"bearer ")
    {
        return Some((value[7..].trim_ascii(), TokenSource::Header));
    }
    if let Some(token) = query_token {
        return Some((token, TokenSource::Query));
    }
    let name = cookie_name?.as_bytes();
    cookies?.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let (k, v) = pair.split_at(pair.iter().position(|&b| b == b'=')?);
        (k == name).then_some((&v[1..], TokenSource::Cookie))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use std::time::{SystemTime, UNIX_EPOCH};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test";

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn auth(audience: Option<&str>) -> Auth {
        // The key is read at construction; the directory can go after.
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, [SECRET, b"\n"].concat()).unwrap();
        let config = AuthConfig {
            required: true,
            jwt_secret_file: Some(secret),
            public_prefixes: vec!["public:".into()],
            audience: audience.map(String::from),
            ..AuthConfig::default()
        };
        Auth::from_config(&config).unwrap().unwrap()
    }

    fn token(claims: serde_json::Value, secret: &[u8]) -> Vec<u8> {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
        .into_bytes()
    }

    #[test]
    fn grants_names_and_prefixes() {
        let claim = vec![
            "room:42".to_string(),
            "user:alice".into(),
            "public:*".into(),
        ];
        assert!(grants(&claim, "room:42"));
        assert!(!grants(&claim, "room:420"));
        assert!(grants(&claim, "public:news"));
        assert!(grants(&claim, "public:"));
        assert!(!grants(&claim, "user:bob"));
        assert!(grants(&["*".to_string()], "anything"));
        assert!(!grants(&[], "anything"));
    }

    #[test]
    fn every_reason() {
        let a = auth(None);
        let t = |claims| token(claims, SECRET);
        let exp = now() + 60;
        let ok = t(serde_json::json!({"exp": exp, "mailboxes": ["user:alice"]}));
        assert_eq!(
            a.check(Some(&ok), "user:alice"),
            Ok(Grant {
                expires_at: exp,
                subject: None,
                publish: Vec::new()
            })
        );
        let full = t(serde_json::json!({
            "exp": exp, "mailboxes": ["room:*"], "publish": ["room:1"], "sub": "alice"
        }));
        let grant = a.check(Some(&full), "room:7").unwrap();
        assert_eq!(
            grant.subject.as_deref(),
            Some("alice"),
            "sub is the subject"
        );
        assert_eq!(grant.publish, ["room:1"]);
        assert_eq!(a.check(Some(&ok), "user:bob"), Err(Denied::NotGranted));
        assert_eq!(a.check(None, "user:alice"), Err(Denied::Missing));
        assert_eq!(
            a.check(Some(b"garbage"), "user:alice"),
            Err(Denied::Malformed)
        );
        let expired = t(serde_json::json!({"exp": now() - 60, "mailboxes": ["user:alice"]}));
        assert_eq!(a.check(Some(&expired), "user:alice"), Err(Denied::Expired));
        let early =
            t(serde_json::json!({"exp": exp, "nbf": now() + 60, "mailboxes": ["user:alice"]}));
        assert_eq!(
            a.check(Some(&early), "user:alice"),
            Err(Denied::NotYetValid)
        );
        let no_exp = t(serde_json::json!({"mailboxes": ["user:alice"]}));
        assert_eq!(a.check(Some(&no_exp), "user:alice"), Err(Denied::Malformed));
        let forged = token(
            serde_json::json!({"exp": exp, "mailboxes": ["user:alice"]}),
            b"another-secret-another-secret-xx",
        );
        assert_eq!(
            a.check(Some(&forged), "user:alice"),
            Err(Denied::BadSignature)
        );
        // alg=none is never accepted.
        let none = format!(
            "{}.{}.",
            base64_url(br#"{"alg":"none","typ":"JWT"}"#),
            base64_url(format!(r#"{{"exp":{exp},"mailboxes":["*"]}}"#).as_bytes())
        );
        assert!(a.check(Some(none.as_bytes()), "user:alice").is_err());
        assert!(!a.needs_token("public:news"));
        assert!(a.needs_token("user:alice"));
    }

    #[test]
    fn audience_is_checked_when_configured() {
        let a = auth(Some("cometbox"));
        let exp = now() + 60;
        let right = token(
            serde_json::json!({"exp": exp, "aud": "cometbox", "mailboxes": ["x"]}),
            SECRET,
        );
        let wrong = token(
            serde_json::json!({"exp": exp, "aud": "other", "mailboxes": ["x"]}),
            SECRET,
        );
        assert!(a.check(Some(&right), "x").is_ok());
        assert_eq!(a.check(Some(&wrong), "x"), Err(Denied::WrongAudience));
    }

    #[test]
    fn short_secrets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short");
        std::fs::write(&path, b"short").unwrap();
        let config = AuthConfig {
            required: true,
            jwt_secret_file: Some(path),
            ..AuthConfig::default()
        };
        assert!(Auth::from_config(&config).unwrap_err().contains("32 bytes"));
    }

    #[test]
    fn token_sources_in_order() {
        assert_eq!(
            token_from(Some(b"Bearer abc"), Some(b"q"), None, None),
            Some(&b"abc"[..])
        );
        assert_eq!(
            token_from(Some(b"Basic xyz"), Some(b"q"), None, None),
            Some(&b"q"[..])
        );
        assert_eq!(
            token_from(None, None, Some(b"a=1; tok=zzz; b=2"), Some("tok")),
            Some(&b"zzz"[..])
        );
        assert_eq!(token_from(None, None, Some(b"a=1"), Some("tok")), None);
        assert_eq!(token_from(None, None, Some(b"tok=zzz"), None), None);
    }

    fn base64_url(data: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
    }
}
