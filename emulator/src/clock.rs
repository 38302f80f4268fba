//! Time: the emulator's event clock (monotonic, movable forward like a test clock) and
//! calendar arithmetic for billing periods.

use std::time::{SystemTime, UNIX_EPOCH};

/// Event times follow a clock that never goes backwards and can be moved forward (a renewal
/// happens at the period end, like Stripe's test clocks), so `created` stays consistent
/// with the periods in the objects.
#[derive(Debug, Default, Clone)]
pub struct Clock {
    offset: i64,
    last: i64,
}

pub fn real_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Clock {
    pub fn now(&mut self) -> i64 {
        self.last = self.last.max(real_now() + self.offset);
        self.last
    }
    pub fn advance_to(&mut self, t: i64) {
        if t > self.now() {
            self.offset = t - real_now();
            self.last = t;
        }
    }
}

const SECONDS_PER_DAY: i64 = 86_400;

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    // Proleptic Gregorian calendar, counted in 400-year eras (146097 days each).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    days_from_civil(ny, nm, 1) - days_from_civil(y, m, 1)
}

/// `anchor` plus `months` calendar months (UTC), clamped to the month's last day the way
/// Stripe bills a subscription anchored on the 31st.
pub fn add_months(anchor: i64, months: i64) -> i64 {
    let days = anchor.div_euclid(SECONDS_PER_DAY);
    let secs = anchor.rem_euclid(SECONDS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let total = y * 12 + (m - 1) + months;
    let (ny, nm) = (total.div_euclid(12), total.rem_euclid(12) + 1);
    let nd = d.min(days_in_month(ny, nm));
    days_from_civil(ny, nm, nd) * SECONDS_PER_DAY + secs
}

/// `12 Feb 2026`, as in Stripe's proration line descriptions.
pub fn format_date(ts: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, m, d) = civil_from_days(ts.div_euclid(SECONDS_PER_DAY));
    format!("{d} {} {y}", MONTHS[(m - 1) as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_calendar_months() {
        // 2024-01-31T12:00:00Z
        let jan31 = 1_706_702_400;
        assert_eq!(add_months(jan31, 1), 1_709_208_000); // 2024-02-29T12:00:00Z
        assert_eq!(add_months(jan31, 2), 1_711_886_400); // 2024-03-31T12:00:00Z
        assert_eq!(add_months(jan31, 12), 1_738_324_800); // 2025-01-31T12:00:00Z
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(format_date(jan31), "31 Jan 2024");
    }

    #[test]
    fn clock_is_monotonic_and_advances() {
        let mut c = Clock::default();
        let a = c.now();
        c.advance_to(a + 1000);
        assert!(c.now() >= a + 1000);
        c.advance_to(a); // never backwards
        assert!(c.now() >= a + 1000);
    }
}
