//! The summary printed for each row: median, p90 and min of the samples.

#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub p90: f64,
    pub min: f64,
}

/// `None` for no samples. p90 is the nearest-rank percentile (an observed value, never an
/// interpolation), which for 20 samples is the 18th smallest.
pub fn summarize(samples: &[f64]) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 };
    let rank = (0.9 * n as f64).ceil() as usize;
    Some(Summary { n, median, p90: s[rank.max(1) - 1], min: s[0] })
}

/// A small deterministic generator (xorshift64*) for the polled anchor's random delays: no
/// dependency, and a seed printed with the results makes a run reproducible.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}
