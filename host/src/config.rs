//! `yolo-edge.toml`: the price sheet (and, as they come, other operator settings).
//!
//! Looked up at `--config PATH`, else `$YOLO_EDGE_CONFIG`, else `./yolo-edge.toml` when it
//! exists; without a file the defaults below apply (they are the repository's
//! `yolo-edge.toml`).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;

use crate::pricing::{PriceSheet, TokenValue};

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// What one token is worth, for reports.
    #[serde(default)]
    pub tokens: TokenValue,
    /// Prices, in tokens.
    #[serde(default)]
    pub pricing: PriceSheet,
}

/// The environment variable naming the config file.
pub const CONFIG_ENV: &str = "YOLO_EDGE_CONFIG";
/// The file looked for in the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "yolo-edge.toml";

impl Config {
    /// Parse TOML text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let config: Self = toml::from_str(text)?;
        config.tokens.validate()?;
        Ok(config)
    }

    /// Load the configuration: `explicit`, else `$YOLO_EDGE_CONFIG`, else `./yolo-edge.toml`
    /// if present, else the defaults. Returns the file used, if any.
    pub fn load(explicit: Option<&Path>) -> anyhow::Result<(Self, Option<PathBuf>)> {
        let path = explicit
            .map(Path::to_owned)
            .or_else(|| std::env::var_os(CONFIG_ENV).map(PathBuf::from))
            .or_else(|| Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.is_file()));
        let Some(path) = path else {
            return Ok((Self::default(), None));
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        let config = Self::parse(&text)
            .with_context(|| format!("{} is not a valid config file", path.display()))?;
        Ok((config, Some(path)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_config_is_the_default() {
        let text = include_str!("../../yolo-edge.toml");
        assert_eq!(Config::parse(text).unwrap(), Config::default());
    }

    #[test]
    fn partial_files_fill_in_defaults_and_typos_are_refused() {
        let c = Config::parse("[pricing]\nper_call = 7\n").unwrap();
        assert_eq!(c.pricing.per_call, 7);
        assert_eq!(c.pricing.per_gb_second, PriceSheet::default().per_gb_second);
        assert!(Config::parse("[pricing]\nper_cal = 7\n").is_err());
        assert!(Config::parse("[pricing]\nper_call = -1\n").is_err());
        assert!(
            Config::parse("[pricing]\nper_call = 0.5\n").is_err(),
            "tokens are integers"
        );
        assert!(Config::parse("[tokens]\nvalue = \"abc\"\n").is_err());
    }
}
