//! When a recurring run fires: KFP's triggers (a cron schedule or a period,
//! each with an optional start and end time) and its controller's rules for
//! the first slot, the next one, and catching up after a pause. Pure: the
//! scheduler gives it times and stores what it answers.

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

/// The longest interval between two slots (100 years): beyond it time
/// arithmetic would overflow, and no schedule means it.
pub const MAX_INTERVAL: i64 = 100 * 365 * 24 * 3600;

/// A parsed trigger.
#[derive(Debug, Clone)]
pub struct Trigger {
    pub kind: Kind,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub enum Kind {
    /// KFP's cron (robfig/cron): seconds first, day of week optional, UTC.
    Cron {
        text: String,
        cron: Box<croner::Cron>,
    },
    /// `interval_second`, or a cron `@every <duration>` (last slot + delay).
    Every {
        seconds: i64,
        cron_text: Option<String>,
    },
    /// No trigger: KFP runs the pipeline once, when the recurring run is created.
    Once,
}

/// Errors in KFP's words where it has them.
pub fn parse(trigger: Option<&Value>) -> Result<Trigger, String> {
    let Some(t) = trigger.filter(|t| !t.is_null()) else {
        return Ok(Trigger {
            kind: Kind::Once,
            start: None,
            end: None,
        });
    };
    let obj = t
        .as_object()
        .ok_or("trigger must be an object with cron_schedule or periodic_schedule")?;
    for key in obj.keys() {
        if key != "cron_schedule" && key != "periodic_schedule" {
            return Err(format!(
                "trigger: unknown field '{key}' (use cron_schedule or periodic_schedule)"
            ));
        }
    }
    let (cron, periodic) = (obj.get("cron_schedule"), obj.get("periodic_schedule"));
    let (schedule, kind) = match (cron, periodic) {
        (Some(_), Some(_)) => {
            return Err("trigger: give either cron_schedule or periodic_schedule, not both".into())
        }
        (Some(c), None) => {
            let text = c
                .get("cron")
                .and_then(Value::as_str)
                .ok_or("trigger.cron_schedule.cron is required")?;
            (c, parse_cron(text)?)
        }
        (None, Some(p)) => {
            let seconds = int(p.get("interval_second")).ok_or(
                "trigger.periodic_schedule.interval_second must be a whole number of seconds",
            )?;
            if seconds < 1 {
                return Err(format!(
                    "Found invalid period schedule interval {seconds}. Set at interval to least 1 second"
                ));
            }
            if seconds > MAX_INTERVAL {
                return Err(format!(
                    "periodic schedule interval {seconds} s is over {MAX_INTERVAL} s (100 years)"
                ));
            }
            (
                p,
                Kind::Every {
                    seconds,
                    cron_text: None,
                },
            )
        }
        (None, None) => {
            return Ok(Trigger {
                kind: Kind::Once,
                start: None,
                end: None,
            })
        }
    };
    Ok(Trigger {
        kind,
        start: time(schedule, "start_time")?,
        end: time(schedule, "end_time")?,
    })
}

/// An int64 as KFP's JSON carries it: a number or a decimal string.
pub fn int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn time(schedule: &Value, key: &str) -> Result<Option<DateTime<Utc>>, String> {
    match schedule.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map(|t| Some(whole_seconds(t.with_timezone(&Utc))))
            .map_err(|e| format!("trigger {key} '{s}': {e} (use RFC 3339 with a zone, e.g. 2026-01-02T03:04:05Z)")),
        Some(other) => Err(format!("trigger {key} must be an RFC 3339 string, not {other}")),
    }
}

/// Parses a cron as KFP's robfig/cron does: 6 fields (second minute hour
/// day-of-month month day-of-week) or 5 (no day of week), `?` as `*`, and the
/// descriptors `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`,
/// `@midnight`, `@hourly`, `@every <duration>`.
pub fn parse_cron(text: &str) -> Result<Kind, String> {
    let bad = |why: String| {
        format!("Schedule cron is not a supported format(https://godoc.org/github.com/robfig/cron). Error: {why}")
    };
    let t = text.trim();
    if let Some(d) = t.strip_prefix("@every") {
        let seconds = go_duration_seconds(d.trim()).map_err(bad)?;
        return Ok(Kind::Every {
            seconds,
            cron_text: Some(text.to_string()),
        });
    }
    let spelled = match t {
        "@yearly" | "@annually" => "0 0 0 1 1 *".to_string(),
        "@monthly" => "0 0 0 1 * *".to_string(),
        "@weekly" => "0 0 0 * * 0".to_string(),
        "@daily" | "@midnight" => "0 0 0 * * *".to_string(),
        "@hourly" => "0 0 * * * *".to_string(),
        other if other.starts_with('@') => {
            return Err(bad(format!("Unrecognized descriptor: {other}")))
        }
        other => {
            let fields: Vec<&str> = other.split_whitespace().collect();
            match fields.len() {
                6 => fields.join(" "),
                5 => format!("{} *", fields.join(" ")),
                n => return Err(bad(format!("Expected 5 to 6 fields, found {n}: {other}"))),
            }
        }
    };
    let cron = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .build()
        .parse(&spelled)
        .map_err(|e| bad(e.to_string()))?;
    Ok(Kind::Cron {
        text: text.to_string(),
        cron: Box::new(cron),
    })
}

/// A Go duration (`1h30m`, `90s`, `1.5h`, `500ms`) in whole seconds, at least
/// one (robfig/cron rounds `@every` to seconds).
fn go_duration_seconds(s: &str) -> Result<i64, String> {
    if s.is_empty() {
        return Err("@every needs a duration, e.g. @every 1h30m".into());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit in duration {s}"))?;
        let n: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("invalid duration {s}"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            u => return Err(format!("unknown unit {u} in duration {s}")),
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    // robfig/cron truncates @every to whole seconds (at least one).
    if !total.is_finite() || total > MAX_INTERVAL as f64 {
        return Err(format!("@every {s}: over {MAX_INTERVAL} s (100 years)"));
    }
    Ok((total.trunc() as i64).max(1))
}

fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

impl Trigger {
    /// The first slot of a schedule created (or first enabled) at `created`.
    pub fn first(&self, created: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.kind {
            Kind::Once => Some(whole_seconds(created)),
            _ => self.after(self.start.unwrap_or(whole_seconds(created))),
        }
    }

    /// The slot after `last` (the last fired, or the base time), or `None`
    /// once past the end time. Cron: the next match strictly after
    /// max(last, start); a period: last + interval, or the start time while
    /// that is later.
    pub fn after(&self, last: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let next = match &self.kind {
            Kind::Once => return None,
            Kind::Cron { cron, .. } => {
                let base = self.start.map_or(last, |s| s.max(last));
                cron.find_next_occurrence(&base, false).ok()?
            }
            Kind::Every { seconds, .. } => match self.start {
                Some(s) if last < s => s,
                _ => last.checked_add_signed(Duration::try_seconds(*seconds)?)?,
            },
        };
        self.before_end(next)
    }

    fn before_end(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self.end {
            Some(end) if t > end => None,
            _ => Some(t),
        }
    }

    /// What to fire now when `due` (≤ `now`) is the oldest slot not fired:
    /// with catch-up, `due` itself; without, the latest slot up to now (cron,
    /// staying on its grid), or `now` when a whole period was missed (a
    /// period restarts from then). Returns the slot and the one after it.
    pub fn fire(
        &self,
        due: DateTime<Utc>,
        now: DateTime<Utc>,
        no_catchup: bool,
    ) -> (DateTime<Utc>, Option<DateTime<Utc>>) {
        let slot = if !no_catchup {
            due
        } else {
            let now = whole_seconds(now);
            let cap = self.end.map_or(now, |e| e.min(now));
            match &self.kind {
                Kind::Once => due,
                Kind::Cron { cron, .. } => cron
                    .find_previous_occurrence(&cap, true)
                    .ok()
                    .filter(|t| *t >= due)
                    .unwrap_or(due),
                // The latest slot of the grid up to now. KFP restarts the grid
                // from now instead; staying on it keeps a slot's identity (and
                // so its run id) the same for every server and every retry.
                Kind::Every { seconds, .. } if cap > due => {
                    let missed = (cap - due).num_seconds() / seconds.max(&1);
                    due.checked_add_signed(
                        Duration::try_seconds(missed * seconds).unwrap_or_default(),
                    )
                    .unwrap_or(due)
                }
                Kind::Every { .. } => due,
            }
        };
        (slot, self.after(slot))
    }

    /// The trigger as KFP's API renders it (int64 as strings, whole-second
    /// RFC 3339 times; absent times left out).
    pub fn render(&self) -> Value {
        let mut schedule = serde_json::Map::new();
        let fmt = |t: &DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        if let Some(s) = &self.start {
            schedule.insert("start_time".into(), json!(fmt(s)));
        }
        if let Some(e) = &self.end {
            schedule.insert("end_time".into(), json!(fmt(e)));
        }
        match &self.kind {
            Kind::Once => json!({}),
            Kind::Cron { text, .. }
            | Kind::Every {
                cron_text: Some(text),
                ..
            } => {
                schedule.insert("cron".into(), json!(text));
                json!({ "cron_schedule": schedule })
            }
            Kind::Every { seconds, .. } => {
                schedule.insert("interval_second".into(), json!(seconds.to_string()));
                json!({ "periodic_schedule": schedule })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn cron(text: &str) -> Trigger {
        parse(Some(&json!({"cron_schedule": {"cron": text}}))).unwrap()
    }

    #[test]
    fn cron_is_seconds_first_with_the_day_of_week_optional() {
        let every_2s = cron("*/2 * * * * *");
        assert_eq!(
            every_2s.after(t("2026-01-01T00:00:00Z")),
            Some(t("2026-01-01T00:00:02Z"))
        );
        // Five fields are second..month (robfig), not unix minute..weekday.
        let five = cron("0 30 * * *");
        assert_eq!(
            five.after(t("2026-01-01T00:00:00Z")),
            Some(t("2026-01-01T00:30:00Z"))
        );
        // Day of week only: Mondays (2026-01-05 is one), not every day.
        let mondays = cron("0 0 0 * * 1");
        assert_eq!(
            mondays.after(t("2026-01-01T00:00:00Z")),
            Some(t("2026-01-05T00:00:00Z"))
        );
        assert_eq!(
            cron("@daily").after(t("2026-01-01T10:00:00Z")),
            Some(t("2026-01-02T00:00:00Z"))
        );
        assert_eq!(
            cron("0 0 12 ? * *").after(t("2026-01-01T10:00:00Z")),
            Some(t("2026-01-01T12:00:00Z"))
        );
        let every = cron("@every 1h30m");
        assert_eq!(
            every.after(t("2026-01-01T10:00:07Z")),
            Some(t("2026-01-01T11:30:07Z"))
        );
        for bad in ["* * * *", "61 * * * * *", "@sometimes", "@every 5 parsecs"] {
            let err = parse(Some(&json!({"cron_schedule": {"cron": bad}}))).unwrap_err();
            assert!(
                err.contains("Schedule cron is not a supported format"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn first_slots_follow_the_start_time() {
        let created = t("2026-01-01T00:00:00.400Z");
        let p = parse(Some(
            &json!({"periodic_schedule": {"interval_second": "10"}}),
        ))
        .unwrap();
        assert_eq!(p.first(created), Some(t("2026-01-01T00:00:10Z")));
        let later = parse(Some(&json!({"periodic_schedule": {"interval_second": 10,
            "start_time": "2026-01-01T05:00:00Z", "end_time": "2026-01-01T05:00:25Z"}})))
        .unwrap();
        assert_eq!(later.first(created), Some(t("2026-01-01T05:00:10Z")));
        assert_eq!(
            later.after(t("2026-01-01T04:00:00Z")),
            Some(t("2026-01-01T05:00:00Z"))
        );
        assert_eq!(
            later.after(t("2026-01-01T05:00:10Z")),
            Some(t("2026-01-01T05:00:20Z"))
        );
        assert_eq!(later.after(t("2026-01-01T05:00:20Z")), None, "past the end");
        // A cron slot exactly at the start time is not fired (strictly after).
        let c = parse(Some(&json!({"cron_schedule": {"cron": "0 * * * * *",
            "start_time": "2026-01-01T05:00:00Z"}})))
        .unwrap();
        assert_eq!(c.first(created), Some(t("2026-01-01T05:01:00Z")));
        let once = parse(None).unwrap();
        assert_eq!(once.first(created), Some(t("2026-01-01T00:00:00Z")));
        assert_eq!(once.after(t("2026-01-01T00:00:00Z")), None);
    }

    #[test]
    fn catching_up_fires_each_missed_slot_or_only_the_latest() {
        let now = t("2026-01-01T00:00:10.500Z");
        let c = cron("*/2 * * * * *");
        let due = t("2026-01-01T00:00:02Z");
        assert_eq!(
            c.fire(due, now, false),
            (due, Some(t("2026-01-01T00:00:04Z")))
        );
        assert_eq!(
            c.fire(due, now, true),
            (t("2026-01-01T00:00:10Z"), Some(t("2026-01-01T00:00:12Z")))
        );
        let p = parse(Some(&json!({"periodic_schedule": {"interval_second": 3}}))).unwrap();
        assert_eq!(
            p.fire(due, now, true),
            (t("2026-01-01T00:00:08Z"), Some(t("2026-01-01T00:00:11Z"))),
            "the latest slot of the grid up to now, whoever computes it"
        );
        assert_eq!(
            p.fire(due, t("2026-01-01T00:00:10.900Z"), true),
            p.fire(due, now, true)
        );
        let recent = t("2026-01-01T00:00:09Z");
        assert_eq!(p.fire(recent, now, true).0, recent);
    }

    #[test]
    fn bad_triggers_say_what_to_fix() {
        for huge in [
            json!({"periodic_schedule": {"interval_second": "9223372036854775807"}}),
            json!({"cron_schedule": {"cron": "@every 99999999999999999999h"}}),
        ] {
            assert!(
                parse(Some(&huge)).unwrap_err().contains("100 years"),
                "{huge}"
            );
        }
        assert_eq!(
            cron("@every 1.9s").after(t("2026-01-01T00:00:00Z")),
            Some(t("2026-01-01T00:00:01Z")),
            "truncated to whole seconds, as robfig/cron does"
        );
        let err = parse(Some(&json!({"periodic_schedule": {"interval_second": 0}}))).unwrap_err();
        assert!(
            err.contains("at least 1 second") || err.contains("least 1 second"),
            "{err}"
        );
        let both = json!({"cron_schedule": {"cron": "@daily"}, "periodic_schedule": {"interval_second": 5}});
        assert!(parse(Some(&both)).unwrap_err().contains("not both"));
        let err = parse(Some(
            &json!({"cron_schedule": {"cron": "@daily", "start_time": "2026-01-01 00:00"}}),
        ))
        .unwrap_err();
        assert!(err.contains("RFC 3339"), "{err}");
        assert_eq!(
            cron("*/5 * * * * *").render(),
            json!({"cron_schedule": {"cron": "*/5 * * * * *"}})
        );
        assert_eq!(
            parse(Some(&json!({"periodic_schedule": {"interval_second": 7}})))
                .unwrap()
                .render(),
            json!({"periodic_schedule": {"interval_second": "7"}})
        );
    }
}
