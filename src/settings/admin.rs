//! `[admin]`: the operator's listener (`listen`; `""` = off) and the bearer token it asks for
//! (`token`; required for an address other than loopback): [`AdminSettings`], handed whole to the
//! admin listener (`crate::admin`).

use std::net::SocketAddr;

use serde::Deserialize;

use super::rules::{check, listen_addr, ConfigError};

/// The built-in `admin.listen`. When it is taken (a second process on the same host), the process
/// starts without its admin listener and says so; any other address must bind.
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:9901";

/// Shortest `admin.token` accepted: a guessable token is no protection.
const MIN_TOKEN: usize = 16;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    listen: String,
    token: String,
}

/// `[admin]`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct AdminSettings {
    /// Where the admin listener binds; `None`: no admin listener.
    pub listen: Option<SocketAddr>,
    /// Whether `listen` is the built-in default (a taken default is not fatal).
    pub default_listen: bool,
    /// The bearer token every admin request must carry; `None`: none asked (loopback only).
    pub token: Option<String>,
}

/// Never prints the token.
impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSettings")
            .field("listen", &self.listen)
            .field("default_listen", &self.default_listen)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl TryFrom<RawAdmin> for AdminSettings {
    type Error = ConfigError;

    fn try_from(raw: RawAdmin) -> Result<Self, ConfigError> {
        let token = (!raw.token.is_empty()).then_some(raw.token);
        if let Some(token) = &token {
            check(
                token.len() >= MIN_TOKEN
                    && token.len() <= 256
                    && token.bytes().all(|b| b.is_ascii_graphic()),
                "admin.token",
                || {
                    format!(
                        "must be {MIN_TOKEN} to 256 visible ASCII characters (no spaces), got {} characters",
                        token.len()
                    )
                },
            )?;
        }
        let listen = if raw.listen.is_empty() {
            None
        } else {
            Some(listen_addr("admin.listen", &raw.listen)?)
        };
        if let Some(addr) = listen {
            check(
                addr.ip().is_loopback() || token.is_some(),
                "admin.listen",
                || {
                    format!(
                        "{addr} is reachable from other hosts: set admin.token (LOAD_SHED__ADMIN__TOKEN) too, or listen on loopback"
                    )
                },
            )?;
        }
        Ok(Self {
            listen,
            default_listen: raw.listen == DEFAULT_LISTEN,
            token,
        })
    }
}
