//! What the volunteer page says in plain words: the work a unit does, amounts of credit
//! at a precision a person can read, and the day earnings are counted under. Pure, so
//! it is tested natively.

/// What a unit of `kernel` does, as a person would say it ("rendering part of an
/// image"). Kernels the page does not know are named by their id.
pub fn work_in_words(kernel: &str) -> String {
    match kernel {
        "render" => "rendering part of an image".to_owned(),
        "matmul" => "multiplying part of two matrices".to_owned(),
        "montecarlo" => "drawing random samples for a Monte Carlo estimate".to_owned(),
        "mlp" => "running part of a batch through a neural network".to_owned(),
        id if starling_api::manifest::is_content_id(id) => {
            "running a kernel a submitter registered".to_owned()
        }
        // A kernel id is short and plain, but it comes from the relay: keep it bounded.
        other => format!(
            "computing a unit of the “{}” kernel",
            other.chars().take(40).collect::<String>()
        ),
    }
}

/// Whose work it is, as far as a volunteer may know: how long ago its job came in ("for
/// a job submitted 2 min ago"). The status line shows it, so it moves at most once a
/// minute.
pub fn job_age(seconds: u32) -> String {
    let minutes = seconds / 60;
    let when = match minutes {
        0 => "under a minute ago".to_owned(),
        1..=59 => format!("{minutes} min ago"),
        60..=119 => "an hour ago".to_owned(),
        120..=2_879 => format!("{} hours ago", minutes / 60),
        _ => format!("{} days ago", minutes / 1_440),
    };
    format!("for a job submitted {when}")
}

/// Micro-credits as credits, at a precision that tells amounts apart without a tail of
/// zeros: two decimals from 1 credit up, three significant digits below (0.000747,
/// 0.0125), and "0" for nothing.
pub fn credits(micro: u64) -> String {
    if micro == 0 {
        return "0".to_owned();
    }
    if micro >= 1_000_000 {
        // Integer arithmetic: no float rounding on money the ledger keeps exact.
        let cents = micro / 10_000 + u64::from(micro % 10_000 >= 5_000);
        return format!("{}.{:02}", cents / 100, cents % 100);
    }
    // Below 1 credit: keep three significant digits of the six decimals.
    let digits = micro.ilog10() + 1; // 1..=6
    let drop = digits.saturating_sub(3);
    let scale = 10u64.pow(drop);
    let kept = (micro + scale / 2) / scale * scale;
    if kept >= 1_000_000 {
        return "1.00".to_owned();
    }
    let text = format!("0.{kept:06}");
    text.trim_end_matches('0').to_owned()
}

/// Today's key for earnings kept in the browser: `YYYY-MM-DD` of the local calendar,
/// from the parts of a date.
pub fn day_key(year: u32, month: u32, day: u32) -> String {
    format!("{year:04}-{month:02}-{day:02}")
}

/// Reads the stored "`day` `micro`" pair: the micro-credits earned on `today`, or 0 when
/// the record is of another day or unreadable.
pub fn earned_on(stored: Option<&str>, today: &str) -> u64 {
    stored
        .and_then(|s| s.split_once(' '))
        .filter(|(day, _)| *day == today)
        .and_then(|(_, micro)| micro.parse().ok())
        .unwrap_or(0)
}

/// What [`earned_on`] reads back.
pub fn earned_record(today: &str, micro: u64) -> String {
    format!("{today} {micro}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credits_read_at_a_sane_precision() {
        assert_eq!(credits(0), "0");
        assert_eq!(credits(1), "0.000001");
        assert_eq!(credits(747), "0.000747");
        assert_eq!(credits(7_474), "0.00747");
        assert_eq!(credits(12_500), "0.0125");
        assert_eq!(credits(100_000), "0.1");
        assert_eq!(credits(999_999), "1.00");
        assert_eq!(credits(1_000_000), "1.00");
        assert_eq!(credits(12_345_678), "12.35");
        assert_eq!(credits(u64::MAX), "18446744073709.55");
        assert_eq!(credits(1_005_000), "1.01");
    }

    #[test]
    fn credits_round_to_nearest() {
        assert_eq!(credits(7_475), "0.00748");
        assert_eq!(credits(123_449), "0.123");
        assert_eq!(credits(123_500), "0.124");
    }

    #[test]
    fn earnings_of_another_day_count_as_none() {
        let today = day_key(2026, 12, 2);
        assert_eq!(today, "2026-12-02");
        let stored = earned_record(&today, 4_200);
        assert_eq!(earned_on(Some(&stored), &today), 4_200);
        assert_eq!(earned_on(Some(&stored), "2026-12-03"), 0);
        assert_eq!(earned_on(Some("garbage"), &today), 0);
        assert_eq!(earned_on(Some("2026-12-02 -5"), &today), 0);
        assert_eq!(earned_on(None, &today), 0);
    }

    #[test]
    fn job_ages_read_in_the_largest_whole_unit() {
        assert_eq!(job_age(0), "for a job submitted under a minute ago");
        assert_eq!(job_age(59), "for a job submitted under a minute ago");
        assert_eq!(job_age(125), "for a job submitted 2 min ago");
        assert_eq!(job_age(3_600), "for a job submitted an hour ago");
        assert_eq!(job_age(3 * 3_600 + 5), "for a job submitted 3 hours ago");
        assert_eq!(job_age(u32::MAX), "for a job submitted 49710 days ago");
    }

    #[test]
    fn unknown_kernels_are_named_but_bounded() {
        assert_eq!(work_in_words("render"), "rendering part of an image");
        let long = "x".repeat(10_000);
        assert!(work_in_words(&long).len() < 100);
        // A registered kernel is said to be one; the page names it beside the line.
        assert_eq!(
            work_in_words(&"ab".repeat(32)),
            "running a kernel a submitter registered"
        );
    }
}
