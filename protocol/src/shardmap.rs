//! The org-range shard map: half-open ranges `[start, end)` of org ids, each owned by one
//! shard, each shard in one region.
//!
//! Built once from the catalog, validated (no empty or overlapping range, every range's shard
//! known), then only read: [`ShardMap::locate`] is a binary search, no I/O. A change builds a
//! new map that replaces the old one atomically (see `service::db`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::OrgId;
use crate::region::Region;

/// A shard's registry entry.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub name: String,
    pub region: Region,
    /// Connection string of the shard's database. Never logged.
    #[serde(skip_serializing)]
    pub dsn: String,
}

impl fmt::Debug for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shard")
            .field("name", &self.name)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// An id range `[start, end)` owned by a shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    pub start: i64,
    pub end: i64,
    pub shard: String,
}

impl Range {
    pub fn contains(&self, id: i64) -> bool {
        self.start <= id && id < self.end
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShardMapError {
    #[error("range [{start}, {end}) is empty or reversed")]
    EmptyRange { start: i64, end: i64 },
    #[error("ranges [{a_start}, {a_end}) and [{b_start}, {b_end}) overlap")]
    Overlap {
        a_start: i64,
        a_end: i64,
        b_start: i64,
        b_end: i64,
    },
    #[error("range [{start}, {end}) names unknown shard {shard:?}")]
    UnknownShard { start: i64, end: i64, shard: String },
    #[error("shard {0:?} is registered twice")]
    DuplicateShard(String),
}

/// The validated map.
#[derive(Clone, Debug, Default)]
pub struct ShardMap {
    /// Sorted by `start`, pairwise disjoint.
    ranges: Vec<Range>,
    shards: BTreeMap<String, Shard>,
}

impl ShardMap {
    pub fn new(shards: Vec<Shard>, mut ranges: Vec<Range>) -> Result<Self, ShardMapError> {
        let mut by_name = BTreeMap::new();
        for s in shards {
            if by_name.contains_key(&s.name) {
                return Err(ShardMapError::DuplicateShard(s.name));
            }
            by_name.insert(s.name.clone(), s);
        }
        for r in &ranges {
            if r.start >= r.end {
                return Err(ShardMapError::EmptyRange {
                    start: r.start,
                    end: r.end,
                });
            }
            if !by_name.contains_key(&r.shard) {
                return Err(ShardMapError::UnknownShard {
                    start: r.start,
                    end: r.end,
                    shard: r.shard.clone(),
                });
            }
        }
        ranges.sort_by_key(|r| r.start);
        for w in ranges.windows(2) {
            if w[1].start < w[0].end {
                return Err(ShardMapError::Overlap {
                    a_start: w[0].start,
                    a_end: w[0].end,
                    b_start: w[1].start,
                    b_end: w[1].end,
                });
            }
        }
        Ok(Self {
            ranges,
            shards: by_name,
        })
    }

    /// The shard that owns `org`, if any range holds it.
    pub fn locate(&self, org: OrgId) -> Option<&Shard> {
        let id = org.0;
        // Index of the first range starting after `id`; the candidate is the one before it.
        let idx = self.ranges.partition_point(|r| r.start <= id);
        let range = self.ranges.get(idx.checked_sub(1)?)?;
        if range.contains(id) {
            self.shards.get(&range.shard)
        } else {
            None
        }
    }

    pub fn shard(&self, name: &str) -> Option<&Shard> {
        self.shards.get(name)
    }

    pub fn shards(&self) -> impl Iterator<Item = &Shard> {
        self.shards.values()
    }

    pub fn ranges(&self) -> &[Range] {
        &self.ranges
    }

    /// Shards of one region.
    pub fn shards_in<'a>(&'a self, region: &'a Region) -> impl Iterator<Item = &'a Shard> + 'a {
        self.shards.values().filter(move |s| &s.region == region)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(name: &str, region: &str) -> Shard {
        Shard {
            name: name.into(),
            region: Region::new(region).unwrap(),
            dsn: "postgres://x".into(),
        }
    }

    fn range(start: i64, end: i64, shard: &str) -> Range {
        Range {
            start,
            end,
            shard: shard.into(),
        }
    }

    fn two_shards() -> ShardMap {
        ShardMap::new(
            vec![shard("a", "us-east-1"), shard("b", "eu-west-1")],
            vec![
                range(2000, 3000, "b"),
                range(1000, 2000, "a"),
                range(5000, 6000, "a"),
            ],
        )
        .unwrap()
    }

    #[test]
    fn an_id_maps_to_the_shard_of_the_range_that_holds_it() {
        let m = two_shards();
        assert_eq!(m.locate(OrgId(1000)).unwrap().name, "a");
        assert_eq!(m.locate(OrgId(1999)).unwrap().name, "a");
        assert_eq!(m.locate(OrgId(2000)).unwrap().name, "b");
        assert_eq!(m.locate(OrgId(2999)).unwrap().name, "b");
        assert_eq!(m.locate(OrgId(5500)).unwrap().name, "a");
    }

    #[test]
    fn ends_are_exclusive_and_gaps_belong_to_no_shard() {
        let m = two_shards();
        for id in [i64::MIN, -1, 0, 999, 3000, 4999, 6000, i64::MAX] {
            assert!(m.locate(OrgId(id)).is_none(), "{id}");
        }
    }

    #[test]
    fn an_empty_map_locates_nothing() {
        assert!(ShardMap::default().locate(OrgId(1)).is_none());
    }

    #[test]
    fn overlapping_ranges_are_refused() {
        let err = ShardMap::new(
            vec![shard("a", "us-east-1")],
            vec![range(0, 10, "a"), range(9, 20, "a")],
        )
        .unwrap_err();
        assert!(matches!(err, ShardMapError::Overlap { .. }));
        // Adjacent is fine: [0,10) and [10,20) share no id.
        assert!(
            ShardMap::new(
                vec![shard("a", "us-east-1")],
                vec![range(0, 10, "a"), range(10, 20, "a")]
            )
            .is_ok()
        );
        // One range inside another.
        assert!(
            ShardMap::new(
                vec![shard("a", "us-east-1")],
                vec![range(0, 100, "a"), range(10, 20, "a")]
            )
            .is_err()
        );
    }

    #[test]
    fn empty_reversed_and_orphan_ranges_are_refused() {
        let s = || vec![shard("a", "us-east-1")];
        assert!(matches!(
            ShardMap::new(s(), vec![range(5, 5, "a")]),
            Err(ShardMapError::EmptyRange { .. })
        ));
        assert!(matches!(
            ShardMap::new(s(), vec![range(6, 5, "a")]),
            Err(ShardMapError::EmptyRange { .. })
        ));
        assert!(matches!(
            ShardMap::new(s(), vec![range(0, 5, "zz")]),
            Err(ShardMapError::UnknownShard { .. })
        ));
        assert!(matches!(
            ShardMap::new(
                vec![shard("a", "us-east-1"), shard("a", "eu-west-1")],
                vec![]
            ),
            Err(ShardMapError::DuplicateShard(_))
        ));
    }

    #[test]
    fn every_id_of_many_ranges_is_found_in_exactly_its_range() {
        let shards = vec![shard("a", "us-east-1"), shard("b", "us-east-1")];
        let ranges: Vec<_> = (0..50)
            .map(|i| range(i * 100, i * 100 + 50, if i % 2 == 0 { "a" } else { "b" }))
            .collect();
        let m = ShardMap::new(shards, ranges.clone()).unwrap();
        for id in -10..5100 {
            let expected = ranges
                .iter()
                .find(|r| r.contains(id))
                .map(|r| r.shard.as_str());
            assert_eq!(
                m.locate(OrgId(id)).map(|s| s.name.as_str()),
                expected,
                "{id}"
            );
        }
    }

    #[test]
    fn the_dsn_never_appears_in_debug_output() {
        let s = Shard {
            name: "a".into(),
            region: Region::new("us-east-1").unwrap(),
            dsn: "postgres://u:hunter2@h/db".into(),
        };
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!serde_json::to_string(&s).unwrap().contains("hunter2"));
    }
}
