//! Wording shared by the message texts, the acknowledgement pages and the
//! plan, in Danish and English: `{name}` templates, local times and
//! durations in words.
//!
//! Pure, like the engine that uses it: the time and the zone are passed in.

use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::config::Language;

/// One piece of a template: text as written, or a placeholder's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a, V> {
    Text(&'a str),
    Value(&'a V),
}

/// Walks a template with `{name}` placeholders in one pass and hands each
/// piece to `put`, in order. A value that looks like a placeholder is never
/// filled in again; an unknown `{…}` stays as written.
pub fn fill_with<'a, V>(
    template: &'a str,
    values: &'a [(&str, V)],
    mut put: impl FnMut(Piece<'a, V>),
) {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        put(Piece::Text(&rest[..open]));
        let after = &rest[open + 1..];
        let found = after.find('}').and_then(|close| {
            let name = &after[..close];
            values
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (v, close))
        });
        match found {
            Some((v, close)) => {
                put(Piece::Value(v));
                rest = &after[close + 1..];
            }
            None => {
                put(Piece::Text("{"));
                rest = after;
            }
        }
    }
    put(Piece::Text(rest));
}

/// A text with its `{name}` placeholders filled in (see [`fill_with`]).
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    fill_with(template, values, |piece| match piece {
        Piece::Text(s) => out.push_str(s),
        Piece::Value(v) => out.push_str(v),
    });
    out
}

/// Whether a time on another day shows its year.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Year {
    /// Never: a message is about the hours and days around it, and an SMS
    /// has no room to spare.
    Never,
    /// When it is not the reader's year: a page may show an old link.
    WhenNotThisYear,
}

/// A time in the site's zone as read at `now`: the clock today (`kl. 15:30`,
/// `at 15:30`), with the date on other days (`2/3 kl. 15:30`, `2 Mar at
/// 15:30`), and the year as `year` says.
pub fn local_time(
    lang: Language,
    tz: &TimeZone,
    t: Timestamp,
    now: Timestamp,
    year: Year,
) -> String {
    let z = t.to_zoned(tz.clone());
    let now = now.to_zoned(tz.clone());
    let at = match lang {
        Language::Da => "kl.",
        Language::En => "at",
    };
    let clock = z.strftime("%H:%M");
    if z.date() == now.date() {
        return format!("{at} {clock}");
    }
    let with_year = year == Year::WhenNotThisYear && z.year() != now.year();
    let date = match (lang, with_year) {
        (Language::Da, false) => z.strftime("%-d/%-m"),
        (Language::Da, true) => z.strftime("%-d/%-m %Y"),
        (Language::En, false) => z.strftime("%-d %b"),
        (Language::En, true) => z.strftime("%-d %b %Y"),
    };
    format!("{date} {at} {clock}")
}

/// A month's name as written inside a date: Danish "november" (lower
/// case), English "November"; `month` is 1 to 12 (clamped).
pub fn month_name(lang: Language, month: i8) -> &'static str {
    const DA: [&str; 12] = [
        "januar",
        "februar",
        "marts",
        "april",
        "maj",
        "juni",
        "juli",
        "august",
        "september",
        "oktober",
        "november",
        "december",
    ];
    const EN: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let i = usize::try_from(month.clamp(1, 12) - 1).unwrap_or(0);
    match lang {
        Language::Da => DA[i],
        Language::En => EN[i],
    }
}

/// Singular and plural of week, day, hour, minute, second.
fn units(lang: Language) -> [(&'static str, &'static str); 5] {
    match lang {
        Language::Da => [
            ("uge", "uger"),
            ("døgn", "døgn"),
            ("time", "timer"),
            ("minut", "minutter"),
            ("sekund", "sekunder"),
        ],
        Language::En => [
            ("week", "weeks"),
            ("day", "days"),
            ("hour", "hours"),
            ("minute", "minutes"),
            ("second", "seconds"),
        ],
    }
}

/// A duration in words, for the plan: `1h 30m` → "1 hour 30 minutes" /
/// "1 time 30 minutter". Sub-second parts are dropped unless nothing else
/// is left.
pub fn duration_words(lang: Language, d: Duration) -> String {
    const SIZES: [u64; 5] = [7 * 86_400, 86_400, 3_600, 60, 1];
    let units = units(lang);
    let mut left = d.as_secs();
    if left == 0 {
        let ms = d.subsec_millis();
        return if ms > 0 {
            format!("{ms} ms")
        } else {
            format!("0 {}", units[4].1)
        };
    }
    let mut parts = Vec::new();
    for (size, (one, many)) in SIZES.iter().zip(units) {
        let n = left / size;
        left %= size;
        if n > 0 {
            parts.push(format!("{n} {}", if n == 1 { one } else { many }));
        }
    }
    parts.join(" ")
}

/// A duration, short, for messages: `2 t 5 min` / `2h 5m`; whole minutes.
pub fn duration_short(lang: Language, secs: i64) -> String {
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    let (dw, hw, mw) = match lang {
        Language::Da => (" d", " t", " min"),
        Language::En => ("d", "h", "m"),
    };
    let mut parts = Vec::new();
    if d > 0 {
        parts.push(format!("{d}{dw}"));
    }
    if h > 0 {
        parts.push(format!("{h}{hw}"));
    }
    if m > 0 || parts.is_empty() {
        parts.push(format!("{m}{mw}"));
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn texts_fill_their_placeholders_once() {
        assert_eq!(
            fill(
                "#{id} by {who} {when}.",
                &[("id", "7"), ("who", "{when}"), ("when", "at 10:00")]
            ),
            "#7 by {when} at 10:00."
        );
        assert_eq!(fill("{unknown} {id", &[("id", "7")]), "{unknown} {id");
    }

    #[test]
    fn times_read_local_with_the_date_on_other_days() {
        let tz = TimeZone::get("Europe/Copenhagen").unwrap();
        let ts = |s: &str| s.parse::<Timestamp>().unwrap();
        let now = ts("2026-03-02T08:00:00Z");
        let same_day = ts("2026-03-02T14:30:00Z");
        let next_year = ts("2027-03-03T14:30:00Z");
        for year in [Year::Never, Year::WhenNotThisYear] {
            assert_eq!(
                local_time(Language::Da, &tz, same_day, now, year),
                "kl. 15:30"
            );
            assert_eq!(
                local_time(Language::En, &tz, same_day, now, year),
                "at 15:30"
            );
        }
        let time = |lang, year| local_time(lang, &tz, next_year, now, year);
        assert_eq!(time(Language::Da, Year::Never), "3/3 kl. 15:30");
        assert_eq!(time(Language::En, Year::Never), "3 Mar at 15:30");
        assert_eq!(
            time(Language::Da, Year::WhenNotThisYear),
            "3/3 2027 kl. 15:30"
        );
        assert_eq!(
            time(Language::En, Year::WhenNotThisYear),
            "3 Mar 2027 at 15:30"
        );
    }

    #[test]
    fn durations_read_as_words_in_english() {
        assert_eq!(duration_words(Language::En, secs(30 * 60)), "30 minutes");
        assert_eq!(duration_words(Language::En, secs(60)), "1 minute");
        assert_eq!(
            duration_words(Language::En, secs(5400)),
            "1 hour 30 minutes"
        );
        assert_eq!(duration_words(Language::En, secs(7 * 86_400)), "1 week");
        assert_eq!(duration_words(Language::En, secs(86_400)), "1 day");
        assert_eq!(
            duration_words(Language::En, secs(2 * 86_400 + 1)),
            "2 days 1 second"
        );
        assert_eq!(duration_words(Language::En, secs(10)), "10 seconds");
        assert_eq!(duration_words(Language::En, Duration::ZERO), "0 seconds");
        assert_eq!(
            duration_words(Language::En, Duration::from_millis(500)),
            "500 ms"
        );
    }

    #[test]
    fn durations_read_as_words_in_danish() {
        assert_eq!(duration_words(Language::Da, secs(30 * 60)), "30 minutter");
        assert_eq!(duration_words(Language::Da, secs(7 * 86_400)), "1 uge");
        assert_eq!(duration_words(Language::Da, secs(14 * 86_400)), "2 uger");
        assert_eq!(
            duration_words(Language::Da, secs(5400)),
            "1 time 30 minutter"
        );
        assert_eq!(duration_words(Language::Da, secs(2 * 3600)), "2 timer");
        assert_eq!(duration_words(Language::Da, secs(86_400)), "1 døgn");
        assert_eq!(duration_words(Language::Da, secs(1)), "1 sekund");
    }

    #[test]
    fn humantime_strings_and_words_agree() {
        let parse = |s| humantime::parse_duration(s).unwrap();
        assert_eq!(
            duration_words(Language::En, parse("1h 30m")),
            "1 hour 30 minutes"
        );
        assert_eq!(duration_words(Language::Da, parse("1w")), "1 uge");
    }

    #[test]
    fn durations_read_short() {
        assert_eq!(duration_short(Language::Da, 7500), "2 t 5 min");
        assert_eq!(duration_short(Language::En, 90_000), "1d 1h");
        assert_eq!(duration_short(Language::En, 20), "0m");
    }
}
