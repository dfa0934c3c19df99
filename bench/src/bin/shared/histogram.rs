//! Latencies in µs for the load generators: a histogram many tasks record into at once, exact
//! below 1 ms and in 1 % steps above (enough for percentiles).

use std::sync::atomic::{AtomicU64, Ordering};

pub struct Histogram {
    buckets: Vec<AtomicU64>,
}

impl Histogram {
    const LINEAR: u64 = 1000;

    pub fn new() -> Histogram {
        Histogram { buckets: (0..Self::LINEAR + 1200).map(|_| AtomicU64::new(0)).collect() }
    }

    fn bucket(us: u64) -> usize {
        if us < Self::LINEAR {
            us as usize
        } else {
            // 1 % steps above 1 ms: log base 1.01
            (Self::LINEAR as f64 + ((us as f64 / Self::LINEAR as f64).ln() / 1.01f64.ln())).min((Self::LINEAR + 1199) as f64) as usize
        }
    }

    fn value(b: usize) -> u64 {
        if (b as u64) < Self::LINEAR { b as u64 } else { (Self::LINEAR as f64 * 1.01f64.powf((b as u64 - Self::LINEAR) as f64)) as u64 }
    }

    pub fn record(&self, us: u64) {
        self.buckets[Self::bucket(us)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    pub fn percentile(&self, p: f64) -> u64 {
        let total = self.count();
        let want = ((total as f64) * p / 100.0).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= want {
                return Self::value(i);
            }
        }
        0
    }
}

