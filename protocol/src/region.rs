//! Region names (`us-east-1`, `eu-west-1`, …).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A region name: lowercase letters, digits and dashes, starting with a letter, at most 32
/// characters. It names the region's JetStream domain and appears in subjects.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Region(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid region name {0:?}: use lowercase letters, digits and dashes, like us-east-1")]
pub struct InvalidRegion(pub String);

impl Region {
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidRegion> {
        let name = name.into();
        let ok = !name.is_empty()
            && name.len() <= 32
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && !name.ends_with('-')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if ok {
            Ok(Self(name))
        } else {
            Err(InvalidRegion(name))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The region as a stream-name token: `us-east-1` → `US_EAST_1`.
    pub fn token(&self) -> String {
        self.0.replace('-', "_").to_ascii_uppercase()
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Region {
    type Err = InvalidRegion;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl<'de> Deserialize<'de> for Region {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Region::new(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_style_names_are_regions() {
        for name in ["us-east-1", "eu-west-1", "ap-southeast-2", "local"] {
            assert!(Region::new(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn names_that_would_break_subjects_are_refused() {
        for name in [
            "",
            "US-EAST-1",
            "us.east.1",
            "us east",
            "1us",
            "us-",
            "a>b",
            "x*",
        ] {
            assert!(Region::new(name).is_err(), "{name:?}");
        }
        assert!(Region::new("a".repeat(33)).is_err());
    }

    #[test]
    fn the_token_is_upper_snake_case() {
        assert_eq!(Region::new("eu-west-1").unwrap().token(), "EU_WEST_1");
    }

    #[test]
    fn deserializing_validates() {
        assert!(serde_json::from_str::<Region>("\"us-east-1\"").is_ok());
        assert!(serde_json::from_str::<Region>("\"us.east\"").is_err());
    }
}
