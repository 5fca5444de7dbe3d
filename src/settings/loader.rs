//! The layered loader: embedded defaults < `config/default.toml` < the file named by
//! `LOAD_SHED_CONFIG` < `LOAD_SHED__SECTION__KEY` environment variables. An environment variable
//! that names no key of the defaults is an error, so a typo is never silently ignored.

use std::collections::BTreeSet;
use std::path::Path;

use config::{Config, Environment, File, FileFormat, Map, Value, ValueKind};

use super::rules::ConfigError;
use super::{RawSettings, Settings};

/// The defaults, compiled in: the very file users read, so the two cannot disagree.
pub(super) const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Prefix of every configuration variable, e.g. `LOAD_SHED__API__LISTEN` for `api.listen`.
pub(super) const ENV_PREFIX: &str = "LOAD_SHED__";

/// Names an extra configuration file, layered over `config/default.toml`.
pub(super) const CONFIG_FILE_VAR: &str = "LOAD_SHED_CONFIG";

impl Settings {
    /// Loads from `./config/default.toml`, `$LOAD_SHED_CONFIG` and the process environment.
    pub fn load() -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        let file = env
            .iter()
            .find(|(k, _)| k == CONFIG_FILE_VAR)
            .map(|(_, v)| v.clone());
        Self::from_sources(Path::new("config/default.toml"), file.as_deref(), &env)
    }

    /// The embedded defaults with environment-style overrides only: what tests start from.
    pub fn from_env_pairs(env: &[(&str, &str)]) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::from_sources(Path::new("/nonexistent/load-shed-api.toml"), None, &env)
    }

    /// Layers the sources in order. `env` is every variable of the environment; only those
    /// starting with [`ENV_PREFIX`] are read, and an unknown one is an error.
    pub(super) fn from_sources(
        default_file: &Path,
        extra_file: Option<&str>,
        env: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        let known = known_keys()?;
        let mut overrides = Map::new();
        for (name, value) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let key = rest.to_ascii_lowercase().replace("__", ".");
            if !known.contains(&key) {
                return Err(ConfigError::new(
                    name.as_str(),
                    format!(
                        "unknown configuration variable (known: {})",
                        known
                            .iter()
                            .map(|k| env_name(k))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            overrides.insert(rest.to_string(), value.clone());
        }

        let mut builder = Config::builder()
            .add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml))
            .add_source(File::from(default_file).required(false));
        if let Some(path) = extra_file.filter(|p| !p.is_empty()) {
            if !Path::new(path).is_file() {
                return Err(ConfigError::new(
                    CONFIG_FILE_VAR,
                    format!("{path} is not a readable file"),
                ));
            }
            builder = builder.add_source(File::new(path, FileFormat::Toml));
        }
        builder = builder.add_source(
            Environment::default()
                .separator("__")
                .source(Some(overrides)),
        );
        let raw: RawSettings = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(from_config_error)?;
        Settings::try_from(raw)
    }
}

/// `section.key` → `LOAD_SHED__SECTION__KEY`.
pub(super) fn env_name(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        key.to_ascii_uppercase().replace('.', "__")
    )
}

/// Every `section.key` the embedded defaults define: the set of valid keys.
fn known_keys() -> Result<BTreeSet<String>, ConfigError> {
    let defaults = Config::builder()
        .add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize::<Map<String, Value>>())
        .map_err(from_config_error)?;
    let mut keys = BTreeSet::new();
    collect_keys("", &defaults, &mut keys);
    Ok(keys)
}

fn collect_keys(prefix: &str, map: &Map<String, Value>, out: &mut BTreeSet<String>) {
    for (name, value) in map {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match &value.kind {
            ValueKind::Table(inner) => collect_keys(&key, inner, out),
            _ => {
                out.insert(key);
            }
        }
    }
}

fn from_config_error(err: config::ConfigError) -> ConfigError {
    let text = err.to_string();
    // The config crate names the key as "for key `a.b`" where it knows it.
    let key = text
        .split("for key `")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .map(str::to_string);
    match key {
        Some(key) => ConfigError::at(&key, text),
        None => ConfigError::new("configuration", text),
    }
}
