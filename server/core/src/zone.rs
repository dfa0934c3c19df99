//! Time zones: every person reads times in one IANA zone (their choice in Settings; otherwise
//! Asia/Shanghai in Chinese and the browser's zone in English). Calendar days — the usage log's
//! date filter, daily chart buckets — are that zone's days, so what a page shows, what its filter
//! selects and what its charts sum always agree.

use chrono::{DateTime, LocalResult, NaiveDate, NaiveTime, TimeZone, Utc};
pub use chrono_tz::Tz;

/// China Standard Time (UTC+8, no daylight saving): billing's own days and the default for
/// Chinese.
pub const SHANGHAI: Tz = chrono_tz::Asia::Shanghai;
pub const UTC: Tz = chrono_tz::UTC;

/// A zone by its IANA name ("Asia/Shanghai", "Europe/Berlin", "UTC"), exactly as spelled.
pub fn parse(name: &str) -> Option<Tz> {
    let name = name.trim();
    if name.is_empty() || name.len() > 64 {
        return None;
    }
    name.parse::<Tz>().ok()
}

/// The zones offered in Settings: the canonical "Area/City" names plus UTC, sorted.
pub fn choices() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = chrono_tz::TZ_VARIANTS
        .iter()
        .map(|z| z.name())
        .filter(|n| {
            const AREAS: [&str; 10] = ["Africa/", "America/", "Antarctica/", "Arctic/", "Asia/", "Atlantic/", "Australia/", "Europe/", "Indian/", "Pacific/"];
            *n == "UTC" || AREAS.iter().any(|a| n.starts_with(a))
        })
        .collect();
    v.sort_unstable();
    v
}

/// The instant `date` starts in `tz` (the first instant of that day where midnight falls in a
/// daylight-saving gap).
pub fn day_start(date: NaiveDate, tz: Tz) -> DateTime<Utc> {
    let mut t = date.and_time(NaiveTime::MIN);
    // A gap is at most a few hours; step forward until a local time exists.
    for _ in 0..48 {
        match tz.from_local_datetime(&t) {
            LocalResult::Single(x) => return x.with_timezone(&Utc),
            LocalResult::Ambiguous(a, _) => return a.with_timezone(&Utc),
            LocalResult::None => t += chrono::Duration::minutes(30),
        }
    }
    date.and_time(NaiveTime::MIN).and_utc()
}

/// The calendar date `t` falls on in `tz`.
pub fn date_of(t: DateTime<Utc>, tz: Tz) -> NaiveDate {
    t.with_timezone(&tz).date_naive()
}

/// The instant the day containing `t` starts in `tz`.
pub fn day_start_of(t: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
    day_start(date_of(t, tz), tz)
}

/// "UTC+08:00", "UTC−05:00", "UTC" — the zone's offset at `t`, for a label.
pub fn offset_label(t: DateTime<Utc>, tz: Tz) -> String {
    use chrono::Offset;
    let secs = t.with_timezone(&tz).offset().fix().local_minus_utc();
    if secs == 0 {
        return "UTC".into();
    }
    let sign = if secs < 0 { '−' } else { '+' };
    let a = secs.abs();
    format!("UTC{sign}{:02}:{:02}", a / 3600, (a % 3600) / 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_start_at_local_midnight() {
        let d = NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
        assert_eq!(day_start(d, SHANGHAI).to_rfc3339(), "2026-11-29T16:00:00+00:00");
        let ny = parse("America/New_York").unwrap();
        assert_eq!(day_start(d, ny).to_rfc3339(), "2026-11-30T05:00:00+00:00");
        // São Paulo once sprang forward at midnight: the day starts at 01:00 local
        let sp = parse("America/Sao_Paulo").unwrap();
        let gap = NaiveDate::from_ymd_opt(2018, 11, 4).unwrap();
        assert_eq!(day_start(gap, sp).to_rfc3339(), "2018-11-04T03:00:00+00:00");
        assert_eq!(date_of(day_start(d, ny), ny), d);
    }

    #[test]
    fn names_parse_exactly() {
        assert_eq!(parse("Asia/Shanghai"), Some(SHANGHAI));
        assert!(parse("").is_none());
        assert!(parse("Mars/Olympus").is_none());
        assert!(choices().contains(&"Europe/Berlin") && choices().contains(&"UTC"));
        assert!(!choices().iter().any(|z| z.starts_with("US/") || z.starts_with("Etc/")));
        assert_eq!(offset_label(Utc::now(), SHANGHAI), "UTC+08:00");
    }
}
