//! `[api]`: the api's listener, its dependency's URL, the body cap and its worker count.

use std::net::SocketAddr;

use serde::Deserialize;

use super::rules::{count, in_range, listen_addr, ConfigError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    listen: String,
    upstream_url: String,
    max_upstream_body_bytes: u64,
    workers: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct ApiSettings {
    pub listen: SocketAddr,
    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:8081`.
    pub upstream_url: String,
    pub max_upstream_body_bytes: usize,
    /// 0 = one worker per core.
    pub workers: usize,
}

impl TryFrom<RawApi> for ApiSettings {
    type Error = ConfigError;

    fn try_from(raw: RawApi) -> Result<Self, ConfigError> {
        in_range(
            "api.max_upstream_body_bytes",
            raw.max_upstream_body_bytes,
            1,
            1 << 30,
        )?;
        in_range("api.workers", raw.workers, 0, 256)?;
        Ok(Self {
            listen: listen_addr("api.listen", &raw.listen)?,
            upstream_url: upstream_url(&raw.upstream_url)?,
            max_upstream_body_bytes: count(raw.max_upstream_body_bytes),
            workers: count(raw.workers),
        })
    }
}

/// An `http://` URL with a host and no query, without its trailing slash.
fn upstream_url(value: &str) -> Result<String, ConfigError> {
    let bad = |why: &str| {
        ConfigError::at(
            "api.upstream_url",
            format!("must be an http:// URL with a host, like http://127.0.0.1:8081 ({why}), got {value:?}"),
        )
    };
    let uri: awc::http::Uri = value.parse().map_err(|_| bad("unparsable"))?;
    if uri.scheme_str() != Some("http") {
        return Err(bad("scheme must be http"));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if uri.query().is_some() {
        return Err(bad("no query string allowed"));
    }
    Ok(value.trim_end_matches('/').to_string())
}
