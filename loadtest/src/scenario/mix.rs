//! A weighted mix of scenarios: each request is drawn from one of them, in proportion to its
//! weight, by a hash of its sequence number (the same run draws the same mix).

use std::sync::Arc;

use crate::engine::{Prepared, Scenario};

/// SplitMix64's finalizer: spreads sequence numbers over all 64 bits.
pub fn spread(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Parses `name=weight,name=weight`.
pub fn parse_weights(spec: &str) -> Result<Vec<(String, u64)>, String> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, weight) = part
            .split_once('=')
            .ok_or_else(|| format!("expected name=weight, got {part:?}"))?;
        let weight: u64 = weight
            .trim()
            .parse()
            .map_err(|_| format!("{weight:?} is not a whole-number weight"))?;
        if weight > 0 {
            out.push((name.trim().to_owned(), weight));
        }
    }
    if out.is_empty() {
        return Err("the mix has no part with a positive weight".into());
    }
    Ok(out)
}

/// The mix scenario.
pub struct Mix {
    /// Each part with the running total of weights up to and including it.
    parts: Vec<(u64, Arc<dyn Scenario>)>,
    total: u64,
    description: String,
}

impl std::fmt::Debug for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

impl Mix {
    pub fn new(parts: Vec<(u64, Arc<dyn Scenario>)>) -> Self {
        let total: u64 = parts.iter().map(|(w, _)| w).sum();
        let description = format!(
            "mix of {}",
            parts
                .iter()
                .map(|(w, s)| format!("{w}/{total} {}", s.name()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut running = 0;
        let parts = parts
            .into_iter()
            .map(|(w, s)| {
                running += w;
                (running, s)
            })
            .collect();
        Self {
            parts,
            total,
            description,
        }
    }
}

impl Scenario for Mix {
    fn name(&self) -> String {
        self.description.clone()
    }

    fn request(&self, seq: u64) -> Prepared {
        let draw = spread(seq) % self.total.max(1);
        let (_, part) = self
            .parts
            .iter()
            .find(|(upto, _)| draw < *upto)
            .unwrap_or_else(|| self.parts.last().expect("a mix has at least one part"));
        part.request(seq)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::Request;
    use http_body_util::Full;

    use super::*;

    struct Named(&'static str);

    impl Scenario for Named {
        fn name(&self) -> String {
            self.0.into()
        }
        fn request(&self, _: u64) -> Prepared {
            Prepared {
                kind: self.0,
                request: Request::get("/").body(Full::new(Bytes::new())).unwrap(),
                counts_jobs: false,
            }
        }
    }

    #[test]
    fn weights_parse_and_zero_weights_drop_out() {
        assert_eq!(
            parse_weights("webhooks=90, api-reads=10,onboarding=0").unwrap(),
            vec![("webhooks".into(), 90), ("api-reads".into(), 10)]
        );
        assert!(parse_weights("webhooks").is_err());
        assert!(parse_weights("webhooks=x").is_err());
        assert!(parse_weights("webhooks=0").is_err());
    }

    #[test]
    fn parts_are_drawn_in_proportion_to_their_weights() {
        let mix = Mix::new(vec![(90, Arc::new(Named("a"))), (10, Arc::new(Named("b")))]);
        let b = (0..100_000).filter(|i| mix.request(*i).kind == "b").count();
        assert!((9_000..11_000).contains(&b), "{b}");
        assert!(mix.name().contains("90/100 a"));
    }

    #[test]
    fn spread_scatters_neighbours() {
        assert_ne!(spread(1) % 100, spread(2) % 100);
    }
}
