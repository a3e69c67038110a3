//! Retry delays: exponential backoff with full jitter, and a server's `Retry-After`
//! honoured up to the same cap. Pure: the random draw is passed in.

use std::time::Duration;

/// The delay before retry number `attempt` (1 for the first retry): a uniform draw from
/// `[0, min(cap, base * 2^(attempt-1))]`, where `unit` in `[0, 1)` is the draw. A server's
/// `Retry-After` replaces the draw (it is a minimum the server asked for), capped at `cap`.
pub fn delay(
    base: Duration,
    cap: Duration,
    attempt: u32,
    unit: f64,
    retry_after: Option<Duration>,
) -> Duration {
    if let Some(ra) = retry_after {
        return ra.min(cap);
    }
    let shift = attempt.saturating_sub(1).min(30);
    let ceiling = base.saturating_mul(1u32 << shift).min(cap);
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

/// A small random source for jitter (xorshift64*, seeded from the OS); not for secrets.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    /// Seeded from the OS random source, or from the clock if that fails.
    pub fn new() -> Jitter {
        let mut seed = [0u8; 8];
        if getrandom::getrandom(&mut seed).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x9E37_79B9_7F4A_7C15);
            seed = nanos.to_le_bytes();
        }
        Jitter(u64::from_le_bytes(seed) | 1)
    }

    /// A uniform draw in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Default for Jitter {
    fn default() -> Self {
        Jitter::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_millis(500);
    const CAP: Duration = Duration::from_secs(30);

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let full = |n| delay(BASE, CAP, n, 1.0, None);
        assert_eq!(full(1), Duration::from_millis(500));
        assert_eq!(full(2), Duration::from_secs(1));
        assert_eq!(full(4), Duration::from_secs(4));
        assert_eq!(full(7), CAP);
        assert_eq!(full(u32::MAX), CAP);
        assert_eq!(delay(BASE, CAP, 0, 1.0, None), BASE);
    }

    #[test]
    fn jitter_scales_the_ceiling() {
        assert_eq!(delay(BASE, CAP, 3, 0.0, None), Duration::ZERO);
        assert_eq!(delay(BASE, CAP, 3, 0.5, None), Duration::from_secs(1));
    }

    #[test]
    fn retry_after_wins_but_is_capped() {
        let ra = Some(Duration::from_secs(1));
        assert_eq!(delay(BASE, CAP, 5, 0.0, ra), Duration::from_secs(1));
        let long = Some(Duration::from_secs(3600));
        assert_eq!(delay(BASE, CAP, 1, 0.3, long), CAP);
    }

    #[test]
    fn draws_are_in_range_and_vary() {
        let mut j = Jitter(42);
        let draws: Vec<f64> = (0..1000).map(|_| j.unit()).collect();
        assert!(draws.iter().all(|&u| (0.0..1.0).contains(&u)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((0.4..0.6).contains(&mean), "{mean}");
    }
}
