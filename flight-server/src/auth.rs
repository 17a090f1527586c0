//! Authentication and authorization, as the Zerobus SDKs expect them: an
//! OAuth2 client-credentials token endpoint, and `authorization: Bearer`
//! tokens on every gRPC call.
//!
//! - **Clients** are configured in `[[auth.clients]]`: an id, the SHA-256 of
//!   its secret (never the secret), the tables it may write and read, and
//!   whether it may run DDL.
//! - **The token endpoint** (`POST /oidc/v1/token`, HTTP/1.1 on a port of
//!   its own; see [`crate::token_endpoint`]) takes HTTP Basic client
//!   credentials and a `grant_type=client_credentials` form. The token it
//!   mints is scoped to the tables named in `authorization_details` (all
//!   the client's tables when it names none), as far as the client may use
//!   them.
//! - **Tokens** are `weir1.<claims>.<signature>`: base64url JSON claims
//!   (client, tables it may write and read, DDL, expiry), signed with
//!   HMAC-SHA256. So they survive restarts and any node holding the same
//!   key can check them. The key is `auth.signing_key_file`, by default a
//!   random key made on first start in `<data_dir>/token-signing-key`.
//! - **Checks.** A call without a valid token is UNAUTHENTICATED; a table
//!   outside the token's scope is PERMISSION_DENIED; nothing is written
//!   either way.
//! - **No clients configured**: weir runs open, which it allows only on a
//!   loopback address unless `auth.allow_unauthenticated` is set.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::{digest, hmac, rand::SecureRandom};
use serde::{Deserialize, Serialize};
use tonic::metadata::MetadataMap;

use crate::ingest::table_name;
use crate::{Error, Result};

/// `[auth]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// Where the token endpoint listens. Default: the gRPC address with
    /// the next port.
    pub token_listen: Option<std::net::SocketAddr>,
    /// A file holding the token signing key (at least 32 bytes). Default:
    /// `<data_dir>/token-signing-key`, made on first start.
    pub signing_key_file: Option<PathBuf>,
    /// How long a token is valid.
    pub token_ttl_secs: u64,
    /// Serve without authentication on an address other than loopback.
    pub allow_unauthenticated: bool,
    /// The clients that may get tokens.
    pub clients: Vec<ClientSection>,
}

impl Default for AuthSection {
    fn default() -> Self {
        Self {
            token_listen: None,
            signing_key_file: None,
            token_ttl_secs: 3600,
            allow_unauthenticated: false,
            clients: Vec::new(),
        }
    }
}

/// `[[auth.clients]]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSection {
    /// The OAuth client id.
    pub id: String,
    /// Lower-case hex SHA-256 of the client secret (`weir hash-secret`).
    pub secret_sha256: String,
    /// Tables the client may write: names (`sensors`, or
    /// `catalog.schema.sensors`, mapped as on every path) or `*`.
    #[serde(default)]
    pub write: Vec<String>,
    /// Tables the client may query.
    #[serde(default)]
    pub read: Vec<String>,
    /// Whether the client may run DDL (`CREATE TABLE`, `DROP TABLE`).
    #[serde(default)]
    pub ddl: bool,
}

/// Lower-case hex SHA-256 of `secret`, as `secret_sha256` holds it.
pub fn hash_secret(secret: &str) -> String {
    hex(digest::digest(&digest::SHA256, secret.as_bytes()).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Who a call is from, and what it may do.
#[derive(Debug, Clone)]
pub enum Principal {
    /// Authentication is off: anything goes.
    Anyone,
    /// A checked token's claims.
    Client(Claims),
}

/// What a token grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The client id.
    pub sub: String,
    /// Tables it may write (weir names, or `*`).
    pub write: Vec<String>,
    /// Tables it may query.
    pub read: Vec<String>,
    pub ddl: bool,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

fn covers(grants: &[String], table: &str) -> bool {
    grants.iter().any(|g| g == "*" || g == table)
}

impl Principal {
    /// Fails with PERMISSION_DENIED unless it may write `table` (a weir
    /// table name).
    pub fn check_write(&self, table: &str) -> Result<()> {
        match self {
            Principal::Anyone => Ok(()),
            Principal::Client(c) if covers(&c.write, table) => Ok(()),
            Principal::Client(c) => Err(Error::PermissionDenied(format!(
                "client {:?} may not write table {table:?}",
                c.sub
            ))),
        }
    }

    /// Fails with PERMISSION_DENIED unless it may query `table`.
    pub fn check_read(&self, table: &str) -> Result<()> {
        match self {
            Principal::Anyone => Ok(()),
            Principal::Client(c) if covers(&c.read, table) => Ok(()),
            Principal::Client(c) => Err(Error::PermissionDenied(format!(
                "client {:?} may not read table {table:?}",
                c.sub
            ))),
        }
    }

    /// Fails with PERMISSION_DENIED unless it may run DDL.
    pub fn check_ddl(&self) -> Result<()> {
        match self {
            Principal::Anyone => Ok(()),
            Principal::Client(c) if c.ddl => Ok(()),
            Principal::Client(c) => Err(Error::PermissionDenied(format!(
                "client {:?} may not run DDL",
                c.sub
            ))),
        }
    }
}

/// The configured clients and the signing key; `None` clients: open.
#[derive(Debug)]
pub struct Auth {
    clients: HashMap<String, ClientSection>,
    key: hmac::Key,
    ttl: Duration,
}

const TOKEN_PREFIX: &str = "weir1.";

impl Auth {
    /// Authentication as `section` configures it; `None` when no clients
    /// are configured (weir runs open).
    pub fn new(section: &AuthSection, data_dir: &Path) -> Result<Option<Self>> {
        if section.clients.is_empty() {
            return Ok(None);
        }
        if !(1..=MAX_TOKEN_TTL_SECS).contains(&section.token_ttl_secs) {
            return Err(Error::Config(format!(
                "auth.token_ttl_secs must be between 1 and {MAX_TOKEN_TTL_SECS} (a week)"
            )));
        }
        let mut clients = HashMap::new();
        for client in &section.clients {
            let hash = &client.secret_sha256;
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::Config(format!(
                    "auth client {:?}: secret_sha256 must be 64 hex digits (weir hash-secret \
                     prints it)",
                    client.id
                )));
            }
            let mut client = client.clone();
            client.secret_sha256 = client.secret_sha256.to_ascii_lowercase();
            let grants = |grants: &[String]| -> Result<Vec<String>> {
                grants.iter().map(|g| grant(&client.id, g)).collect()
            };
            client.write = grants(&client.write)?;
            client.read = grants(&client.read)?;
            if clients.insert(client.id.clone(), client).is_some() {
                return Err(Error::Config(format!(
                    "auth client {:?} is configured twice",
                    section
                        .clients
                        .iter()
                        .find(|c| clients.contains_key(&c.id))
                        .map(|c| &c.id)
                )));
            }
        }
        let key_file = section
            .signing_key_file
            .clone()
            .unwrap_or_else(|| data_dir.join("token-signing-key"));
        let key = signing_key(&key_file)?;
        Ok(Some(Self {
            clients,
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            ttl: Duration::from_secs(section.token_ttl_secs),
        }))
    }

    /// Checks a client's credentials and mints a token for the tables it
    /// asks for (all of its own when `tables` is empty), as far as it may
    /// use them. Returns the token and its lifetime.
    pub fn mint(&self, id: &str, secret: &str, tables: &[String]) -> Result<(String, Duration)> {
        // The hash is computed for unknown ids too, so that the time taken
        // does not tell which ids exist; compared in constant time.
        let given = hash_secret(secret);
        let client = self
            .clients
            .get(id)
            .filter(|c| {
                let (a, b) = (given.as_bytes(), c.secret_sha256.as_bytes());
                a.len() == b.len() && a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
            })
            .ok_or_else(|| Error::Unauthenticated("unknown client or wrong secret".into()))?;
        let granted = |grants: &[String]| -> Vec<String> {
            if tables.is_empty() {
                return grants.to_vec();
            }
            tables
                .iter()
                .filter(|t| covers(grants, t))
                .cloned()
                .collect()
        };
        let claims = Claims {
            sub: client.id.clone(),
            write: granted(&client.write),
            read: granted(&client.read),
            ddl: client.ddl,
            exp: now_secs().saturating_add(self.ttl.as_secs()),
        };
        let body = URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&claims).map_err(|e| Error::Internal(e.to_string()))?);
        let signed = format!("{TOKEN_PREFIX}{body}");
        let signature = URL_SAFE_NO_PAD.encode(hmac::sign(&self.key, signed.as_bytes()).as_ref());
        Ok((format!("{signed}.{signature}"), self.ttl))
    }

    /// The claims of a token this node (or one with the same key) minted,
    /// if it is valid and not expired.
    pub fn check(&self, token: &str) -> Result<Claims> {
        let bad = |why: &str| Error::Unauthenticated(format!("invalid token: {why}"));
        let (signed, signature) = token.rsplit_once('.').ok_or_else(|| bad("malformed"))?;
        let body = signed
            .strip_prefix(TOKEN_PREFIX)
            .ok_or_else(|| bad("not a weir token"))?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| bad("malformed"))?;
        hmac::verify(&self.key, signed.as_bytes(), &signature).map_err(|_| bad("bad signature"))?;
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(body)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or_else(|| bad("malformed claims"))?;
        if claims.exp <= now_secs() {
            return Err(Error::Unauthenticated(
                "the token expired; get a new one from the token endpoint".into(),
            ));
        }
        // A token grants no more than its client may do now: a client
        // removed from the config, or given less, loses it at once.
        let client = self
            .clients
            .get(&claims.sub)
            .ok_or_else(|| bad("its client is no longer configured"))?;
        let still = |granted: Vec<String>, allowed: &[String]| -> Vec<String> {
            if allowed.iter().any(|a| a == "*") {
                return granted;
            }
            granted
                .into_iter()
                .filter(|t| t != "*" && covers(allowed, t))
                .collect()
        };
        Ok(Claims {
            write: still(claims.write, &client.write),
            read: still(claims.read, &client.read),
            ddl: claims.ddl && client.ddl,
            ..claims
        })
    }

    /// The principal of a call's `authorization: Bearer` header.
    pub fn principal(&self, metadata: &MetadataMap) -> Result<Principal> {
        let header = metadata
            .get("authorization")
            .ok_or_else(|| Error::Unauthenticated("no authorization header; send \"authorization: Bearer <token>\" with a token from the token endpoint".into()))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .ok_or_else(|| {
                Error::Unauthenticated("the authorization header must be \"Bearer <token>\"".into())
            })?;
        self.check(token.trim()).map(Principal::Client)
    }
}

/// Who a call is from: anyone when `auth` is off.
pub fn principal(auth: Option<&Auth>, metadata: &MetadataMap) -> Result<Principal> {
    match auth {
        None => Ok(Principal::Anyone),
        Some(auth) => auth.principal(metadata),
    }
}

/// The longest a token may live.
const MAX_TOKEN_TTL_SECS: u64 = 7 * 24 * 3600;

/// A grant as configured: `*` (every table) or a table name, mapped as on
/// every path (`catalog.schema.table` is `table`).
fn grant(client: &str, grant: &str) -> Result<String> {
    if grant == "*" {
        return Ok(grant.to_string());
    }
    let bad = |why: String| {
        Error::Config(format!(
            "auth client {client:?}: grant {grant:?} {why}; use a table name or \"*\""
        ))
    };
    let table = table_name(grant).map_err(|e| bad(e.to_string()))?;
    weir_provider::validate_name(&table).map_err(|e| bad(e.to_string()))?;
    Ok(table)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The signing key in `path`, made (32 random bytes, readable by the
/// owner only) if the file does not exist.
fn signing_key(path: &Path) -> Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(key) if key.len() >= 32 => return Ok(key),
        Ok(key) => {
            return Err(Error::Config(format!(
                "{}: a token signing key needs at least 32 bytes, it has {}",
                path.display(),
                key.len()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(path, e)),
    }
    let mut key = vec![0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| Error::Internal("no system randomness for a signing key".into()))?;
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    file.write_all(&key)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(path, e))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(dir: &Path) -> Auth {
        let section = AuthSection {
            clients: vec![ClientSection {
                id: "producer".into(),
                secret_sha256: hash_secret("s3cret"),
                write: vec!["main.telemetry.sensors".into()],
                read: vec!["*".into()],
                ddl: false,
            }],
            ..AuthSection::default()
        };
        Auth::new(&section, dir).unwrap().unwrap()
    }

    #[test]
    fn tokens_carry_the_scope_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let auth = auth(dir.path());
        assert!(auth.mint("producer", "wrong", &[]).is_err());
        assert!(auth.mint("nobody", "s3cret", &[]).is_err());

        let (token, ttl) = auth.mint("producer", "s3cret", &[]).unwrap();
        assert_eq!(ttl, Duration::from_secs(3600));
        let claims = auth.check(&token).unwrap();
        let who = Principal::Client(claims);
        who.check_write("sensors").unwrap();
        assert!(who.check_write("other").is_err());
        who.check_read("other").unwrap();
        assert!(who.check_ddl().is_err());

        // Scoped to what it asked for, as far as it may.
        let asked = ["other".to_string(), "sensors".to_string()];
        let (token, _) = auth.mint("producer", "s3cret", &asked).unwrap();
        let claims = auth.check(&token).unwrap();
        assert_eq!(claims.write, vec!["sensors"]);
        assert_eq!(claims.read, vec!["other", "sensors"]);

        // A changed claim or another key's token does not pass.
        let (signed, signature) = token.rsplit_once('.').unwrap();
        let forged = format!("{signed}x.{signature}");
        assert!(auth.check(&forged).is_err());
        let other = tempfile::tempdir().unwrap();
        assert!(self::auth(other.path()).check(&token).is_err());
        // The key is kept: a restarted node checks its old tokens.
        assert!(self::auth(dir.path()).check(&token).is_ok());
    }

    #[test]
    fn grants_are_checked_at_start_and_narrowed_at_use() {
        let dir = tempfile::tempdir().unwrap();
        let section = |write: &str| AuthSection {
            clients: vec![ClientSection {
                id: "p".into(),
                secret_sha256: hash_secret("s"),
                write: vec![write.into()],
                read: vec![],
                ddl: false,
            }],
            ..AuthSection::default()
        };
        // A dotted wildcard is not a schema grant: refused, not widened.
        let err = Auth::new(&section("main.telemetry.*"), dir.path()).unwrap_err();
        assert!(err.to_string().contains("main.telemetry.*"), "{err}");
        let ttl = AuthSection {
            token_ttl_secs: 0,
            ..section("sensors")
        };
        assert!(Auth::new(&ttl, dir.path()).is_err());

        // A token minted under wider grants is narrowed to today's.
        let wide = Auth::new(&section("*"), dir.path()).unwrap().unwrap();
        let (token, _) = wide
            .mint("p", "s", &["other".into(), "sensors".into()])
            .unwrap();
        let narrow = Auth::new(&section("sensors"), dir.path()).unwrap().unwrap();
        assert_eq!(narrow.check(&token).unwrap().write, vec!["sensors"]);
        let gone = AuthSection {
            clients: vec![],
            ..section("sensors")
        };
        assert!(Auth::new(&gone, dir.path()).unwrap().is_none());
    }
}
