//! Integer proration, the arithmetic behind every partial amount retail-sync sends: the share of a
//! redemption each line carries, the eligible value of some units of a line, the points a partial return
//! reverses.
//!
//! Every partial figure is computed as a difference of *cumulative* targets: the share of the first `n`
//! units (or of everything returned so far) minus what was already counted. Rounding then never drifts:
//! however a whole is split, the parts add up to exactly the whole, and no part is negative.

/// `floor(total × part / whole)`, with `part` clamped to `0..=whole`; 0 when `whole` is 0. In i128, so no
/// input overflows. With `0 ≤ total`, the result lies in `0..=total` and grows with `part`.
pub fn share(total: i64, part: i64, whole: i64) -> i64 {
    if whole <= 0 || total <= 0 {
        return 0;
    }
    let part = part.clamp(0, whole);
    let v = i128::from(total) * i128::from(part) / i128::from(whole);
    // v ≤ total because part ≤ whole, so it fits; the fallback only keeps a bug from becoming a panic.
    i64::try_from(v).unwrap_or(total)
}

/// `ceil(total × part / whole)`, clamped like [`share`]: the most any `part` units of a whole split by
/// cumulative shares can carry, wherever they sit (a run of units carries its exact value rounded down
/// or up, never more). A bound that depends on `part` alone holds in whatever order the parts come. It is
/// what the last `part` units carry: the whole less the floor share of the others.
pub fn share_up(total: i64, part: i64, whole: i64) -> i64 {
    if whole <= 0 || total <= 0 {
        return 0;
    }
    total - share(total, whole - part.clamp(0, whole), whole)
}

/// Splits `value` over `weights` in proportion, exactly: the parts add up to `value` (when the weights
/// add up to more than 0) and none is negative. The cumulative form gives each part
/// `share(value, weights up to and including it) − share(value, weights before it)`.
pub fn allocate(value: i64, weights: &[i64]) -> Vec<i64> {
    // Saturating: 500 lines of at most 2^53 each stay far below i64::MAX, and a bug must not panic.
    let whole: i64 = weights
        .iter()
        .fold(0_i64, |sum, w| sum.saturating_add((*w).max(0)));
    let mut parts = Vec::with_capacity(weights.len());
    let (mut cumulative, mut before) = (0_i64, 0_i64);
    for w in weights {
        cumulative = cumulative.saturating_add((*w).max(0));
        let upto = share(value, cumulative, whole);
        parts.push(upto - before);
        before = upto;
    }
    parts
}

/// The part of a line's `value` carried by its units `from..to` (of `quantity`), as a difference of
/// cumulative shares: units `0..quantity` carry exactly `value`, however they are split.
pub fn units_value(value: i64, quantity: u32, from: u32, to: u32) -> i64 {
    let q = i64::from(quantity);
    share(value, i64::from(to), q) - share(value, i64::from(from), q)
}

/// What is due now on a cumulative basis: the target for `part_so_far` of `whole` (of `total`) minus
/// what was `already` applied, never negative. Applied after each partial event, the sum of what was
/// due never exceeds `total` and equals it once `part_so_far` reaches `whole`.
pub fn due(total: i64, part_so_far: i64, whole: i64, already: i64) -> i64 {
    (share(total, part_so_far, whole) - already).max(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn shares_round_down_and_clamp() {
        assert_eq!(share(100, 1, 3), 33);
        assert_eq!(share(100, 5, 3), 100);
        assert_eq!(share(100, -1, 3), 0);
        assert_eq!(share(100, 1, 0), 0);
        assert_eq!(share(i64::MAX, i64::MAX - 1, i64::MAX), i64::MAX - 1);
    }

    #[test]
    fn shares_up_round_up_and_bound_every_run_of_units() {
        assert_eq!(share_up(5_996, 1, 3), 1_999);
        assert_eq!(share_up(5_996, 2, 3), 3_998);
        assert_eq!(share_up(5_996, 3, 3), 5_996);
        assert_eq!(share_up(100, 5, 3), 100);
        assert_eq!(share_up(100, 0, 3), 0);
        assert_eq!(share_up(100, 1, 0), 0);
        assert_eq!(share_up(i64::MAX, i64::MAX - 1, i64::MAX), i64::MAX - 1);
        // Every run of units of 5,996 over 3, wherever it starts, carries at most its share rounded up.
        for from in 0..3 {
            for to in from..=3 {
                assert!(units_value(5_996, 3, from, to) <= share_up(5_996, i64::from(to - from), 3));
            }
        }
    }

    #[test]
    fn an_allocation_adds_up_to_the_value() {
        assert_eq!(allocate(500, &[12_900, 4_900]), vec![362, 138]);
        assert_eq!(allocate(10, &[1, 1, 1]), vec![3, 3, 4]);
        assert_eq!(allocate(10, &[0, 0]), vec![0, 0]);
    }

    #[test]
    fn two_partial_returns_of_a_whole_reverse_exactly_what_was_earned() {
        // 177 points earned on 17,800; returns of 4,900 then 12,900.
        let first = due(177, 4_900, 17_800, 0);
        let second = due(177, 17_800, 17_800, first);
        assert_eq!((first, second, first + second), (48, 129, 177));
    }

    proptest! {
        #[test]
        fn allocations_are_exact_and_non_negative(value in 0_i64..10_000_000, weights in prop::collection::vec(0_i64..1_000_000, 1..20)) {
            let parts = allocate(value, &weights);
            prop_assert!(parts.iter().all(|p| *p >= 0));
            if weights.iter().sum::<i64>() > 0 {
                prop_assert_eq!(parts.iter().sum::<i64>(), value);
            }
        }

        #[test]
        fn units_split_anyhow_carry_the_line_value(value in 0_i64..10_000_000, quantity in 1_u32..50, cuts in prop::collection::vec(0_u32..50, 0..6)) {
            let mut points: Vec<u32> = cuts.into_iter().map(|c| c % (quantity + 1)).collect();
            points.push(0);
            points.push(quantity);
            points.sort_unstable();
            let total: i64 = points.windows(2).map(|w| units_value(value, quantity, w[0], w[1])).sum();
            prop_assert_eq!(total, value);
        }

        #[test]
        fn cumulative_dues_never_exceed_the_total_and_reach_it(total in 0_i64..100_000, parts in prop::collection::vec(0_i64..10_000, 1..10)) {
            let whole: i64 = parts.iter().sum();
            let (mut so_far, mut applied) = (0_i64, 0_i64);
            for p in &parts {
                so_far += p;
                applied += due(total, so_far, whole, applied);
                prop_assert!(applied <= total);
            }
            if whole > 0 {
                prop_assert_eq!(applied, total);
            }
        }
    }
}
