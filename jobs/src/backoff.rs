//! Retry delays: exponential from the kind's base, capped, with full jitter on the upper half
//! so many jobs failing together do not retry together.

use std::time::Duration;

use crate::kind::Policy;

/// The delay before attempt `attempt + 1`, after `attempt` (≥ 1) attempts failed.
pub fn retry_delay(policy: &Policy, attempt: i32) -> Duration {
    let exponent = (attempt.max(1) - 1).min(30) as u32;
    let ceiling = policy.backoff_base.saturating_mul(2u32.saturating_pow(exponent)).min(policy.backoff_max);
    let half = ceiling / 2;
    half + half.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_then_cap_and_stay_within_jitter_bounds() {
        let policy = Policy {
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(20),
            ..Policy::default()
        };
        for attempt in 1..=10 {
            let ceiling = Duration::from_secs(1 << (attempt - 1)).min(Duration::from_secs(20));
            for _ in 0..50 {
                let delay = retry_delay(&policy, attempt);
                assert!(delay >= ceiling / 2 && delay <= ceiling, "attempt {attempt}: {delay:?}");
            }
        }
        let spread: std::collections::HashSet<_> = (0..20).map(|_| retry_delay(&policy, 3)).collect();
        assert!(spread.len() > 1, "jitter varies the delay");
    }
}
