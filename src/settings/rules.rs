//! [`ConfigError`] and the small rules every section checks its values with. Each error names
//! the key in both its `section.key` and its environment form.

use std::net::SocketAddr;

use super::loader::env_name;
use crate::bounds;

/// Why start-up refused the configuration: printed as one line (whatever the source said), exit
/// code 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration error: {}: {}", .key, .rule.replace(['\n', '\r'], " "))]
pub struct ConfigError {
    /// `section.key`, or the offending variable or file.
    pub key: String,
    pub rule: String,
}

impl ConfigError {
    pub(crate) fn new(key: impl Into<String>, rule: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            rule: rule.into(),
        }
    }

    /// An error about `key` (`section.key`), named in both forms.
    pub(crate) fn at(key: &str, rule: impl Into<String>) -> Self {
        Self::new(format!("{key} ({})", env_name(key)), rule)
    }
}

pub(crate) fn check(ok: bool, key: &str, rule: impl FnOnce() -> String) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::at(key, rule()))
    }
}

pub(crate) fn in_range(key: &str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    check((min..=max).contains(&value), key, || {
        format!("must be between {min} and {max}, got {value}")
    })
}

/// A probability: a finite number in [0, 1].
pub(crate) fn probability(key: &str, value: f64) -> Result<f64, ConfigError> {
    check(bounds::is_probability(value), key, || {
        format!("must be a number between 0 and 1, got {value}")
    })?;
    Ok(value)
}

/// A share that must not be zero: a finite number in (0, 1].
pub(crate) fn positive_share(key: &str, value: f64) -> Result<f64, ConfigError> {
    check(bounds::is_probability(value) && value > 0.0, key, || {
        format!("must be a number above 0 and at most 1, got {value}")
    })?;
    Ok(value)
}

/// One of a few words, turned into the enum it names.
pub(crate) fn one_of<T: Copy>(
    key: &str,
    value: &str,
    allowed: &[(&str, T)],
) -> Result<T, ConfigError> {
    allowed
        .iter()
        .find(|(name, _)| *name == value)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = allowed.iter().map(|(name, _)| *name).collect();
            ConfigError::at(
                key,
                format!("must be {}, got {value:?}", names.join(" or ")),
            )
        })
}

pub(crate) fn listen_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        ConfigError::at(
            key,
            format!("must be an address like 0.0.0.0:8080, got {value:?}"),
        )
    })
}

/// Whole numbers from configuration, as the `usize` they count (exact on every platform this
/// builds for; the range rules cap them far below).
pub(crate) fn count(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}
