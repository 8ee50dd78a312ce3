//! Shared by all providers: collecting points (validated, refused with reasons, duplicates
//! checked), the gaps left in a range, and reading numbers from provider JSON.

use crate::Fetched;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use wattprint_core::intensity::{IntensityPoint, PointKind};
use wattprint_core::UnixMillis;

/// Collects the points of one fetch.
#[derive(Debug, Default)]
pub(crate) struct Collector {
    points: Vec<IntensityPoint>,
    rejected: Vec<String>,
    /// (provider, model version, period start, issue time) → value, to catch repeats.
    seen: HashMap<(String, Option<String>, i64, Option<i64>), f64>,
}

impl Collector {
    /// Keeps `p` if it is valid and new; a refused point goes to `rejected` with the reason.
    /// An exact repeat (same provider, model, period, issue time and value, e.g. at the shared
    /// edge of two requests) is kept once; a repeat with another value is refused. Points of
    /// another model version (a restatement) are distinct points.
    pub(crate) fn accept(&mut self, p: IntensityPoint) {
        if let Err(e) = p.validate() {
            self.rejected.push(e.to_string());
            return;
        }
        let key = (
            p.provider.clone(),
            p.model_version.clone(),
            p.at.0,
            p.issued_at.map(|t| t.0),
        );
        match self.seen.get(&key) {
            Some(v) if v.to_bits() == p.value.0.to_bits() => {}
            Some(v) => self.rejected.push(format!(
                "{} {} at {}: conflicting repeat ({} g/kWh after {v} g/kWh); the first is kept",
                p.provider, p.region, p.at, p.value.0
            )),
            None => {
                self.seen.insert(key, p.value.0);
                self.points.push(p);
            }
        }
    }

    /// Records a point that could not even be built (missing time or value).
    pub(crate) fn reject(&mut self, reason: String) {
        self.rejected.push(reason);
    }

    /// Issue times of the forecast runs collected so far.
    pub(crate) fn has_run(&self, issued_at: UnixMillis) -> bool {
        self.points.iter().any(|p| p.issued_at == Some(issued_at))
    }

    /// Sorts the points and computes the gaps: for actuals over `[from, to)`, for forecasts
    /// within each run.
    pub(crate) fn finish(mut self, kind: PointKind, from: UnixMillis, to: UnixMillis) -> Fetched {
        self.points.sort_by_key(|p| (p.issued_at, p.at));
        let gaps = match kind {
            PointKind::Actual => uncovered(from, to, &self.points),
            PointKind::Forecast => {
                let mut runs: BTreeMap<Option<UnixMillis>, Vec<IntensityPoint>> = BTreeMap::new();
                for p in &self.points {
                    runs.entry(p.issued_at).or_default().push(p.clone());
                }
                runs.values()
                    .flat_map(|run| {
                        let start = run.iter().map(|p| p.at).min().unwrap_or(from);
                        let end = run.iter().map(|p| p.end()).max().unwrap_or(from);
                        uncovered(start, end, run)
                    })
                    .collect()
            }
        };
        Fetched {
            points: self.points,
            rejected: self.rejected,
            gaps,
        }
    }
}

/// The parts of `[from, to)` that no point covers.
pub(crate) fn uncovered(
    from: UnixMillis,
    to: UnixMillis,
    points: &[IntensityPoint],
) -> Vec<(UnixMillis, UnixMillis)> {
    let mut spans: Vec<(i64, i64)> = points.iter().map(|p| (p.at.0, p.end().0)).collect();
    spans.sort_unstable();
    let mut gaps = Vec::new();
    let mut covered_to = from.0;
    for (start, end) in spans {
        if covered_to >= to.0 {
            break;
        }
        if start > covered_to {
            gaps.push((UnixMillis(covered_to), UnixMillis(start.min(to.0))));
        }
        covered_to = covered_to.max(end);
    }
    if covered_to < to.0 {
        gaps.push((UnixMillis(covered_to), to));
    }
    gaps
}

/// Splits `[from, to)` into consecutive pieces of at most `span_ms`.
pub(crate) fn chunks(
    from: UnixMillis,
    to: UnixMillis,
    span_ms: i64,
) -> Vec<(UnixMillis, UnixMillis)> {
    let span = span_ms.max(1);
    let mut out = Vec::new();
    let mut start = from.0;
    while start < to.0 {
        let end = start.saturating_add(span).min(to.0);
        out.push((UnixMillis(start), UnixMillis(end)));
        start = end;
    }
    out
}

/// Parses a provider's JSON body. Bare `NaN`/`Infinity` (which some JSON writers emit) are read
/// as the strings `"NaN"`/`"Infinity"`, so the point carrying one is refused on its own instead
/// of the whole body. The error is the strict parser's.
pub(crate) fn parse_json(body: &str) -> Result<Value, serde_json::Error> {
    match serde_json::from_str(body) {
        Ok(v) => Ok(v),
        Err(strict) => {
            let quoted = quote_non_finite(body);
            if quoted == body {
                return Err(strict);
            }
            serde_json::from_str(&quoted).map_err(|_| strict)
        }
    }
}

fn quote_non_finite(body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = body;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if c == '"' {
            in_string = true;
        }
        let word = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|w| rest.starts_with(w));
        match word {
            Some(w) => {
                out.push('"');
                out.push_str(w);
                out.push('"');
                rest = &rest[w.len()..];
            }
            None => {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    out
}

/// A number field of a JSON point: `Ok(None)` when absent or null, `Err` when not a number.
/// The strings `NaN`, `Infinity` and `-Infinity` (see [`parse_json`]) are read as such, so that
/// validation refuses them with the value in the message.
pub(crate) fn number(v: &Value, field: &str) -> Result<Option<f64>, String> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .map(Some)
            .ok_or_else(|| format!("{field} {n} is not a number")),
        Some(Value::String(s)) if s == "NaN" => Ok(Some(f64::NAN)),
        Some(Value::String(s)) if s == "Infinity" => Ok(Some(f64::INFINITY)),
        Some(Value::String(s)) if s == "-Infinity" => Ok(Some(f64::NEG_INFINITY)),
        Some(other) => Err(format!("{field} {other} is not a number")),
    }
}

/// The time (`fields.0`, RFC 3339) and value (`fields.1`) of item `index` of a provider's
/// list, or `None`: the item is refused with the reason, or `keep` does not want its time.
pub(crate) fn time_and_value(
    c: &mut Collector,
    provider: &str,
    what: &str,
    index: &str,
    item: &Value,
    fields: (&str, &str),
    keep: &impl Fn(UnixMillis) -> bool,
) -> Option<(UnixMillis, f64)> {
    let (time_field, value_field) = fields;
    let at = match string(item, time_field)
        .ok_or_else(|| format!("{time_field} missing"))
        .and_then(crate::timefmt::parse_instant)
    {
        Ok(at) => at,
        Err(e) => {
            c.reject(format!("{provider} {what} {index}: {e}"));
            return None;
        }
    };
    if !keep(at) {
        return None;
    }
    match number(item, value_field) {
        Ok(Some(v)) => Some((at, v)),
        Ok(None) => {
            c.reject(format!("{provider} {what} at {at}: {value_field} missing"));
            None
        }
        Err(e) => {
            c.reject(format!("{provider} {what} at {at}: {e}"));
            None
        }
    }
}

/// A string field, `None` when absent, null or not a string.
pub(crate) fn string<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
    v.get(field).and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wattprint_core::intensity::Signal;
    use wattprint_core::{GramsPerKwh, RegionId};

    fn point(at_min: i64, value: f64) -> IntensityPoint {
        IntensityPoint {
            region: RegionId::from("R"),
            at: UnixMillis(at_min * 60_000),
            duration_ms: 300_000,
            value: GramsPerKwh(value),
            signal: Signal::Marginal,
            kind: PointKind::Actual,
            issued_at: None,
            provider: "p:R".to_owned(),
            model_version: None,
            fetched_at: UnixMillis(0),
        }
    }

    fn min(m: i64) -> UnixMillis {
        UnixMillis(m * 60_000)
    }

    #[test]
    fn gaps_are_exactly_the_uncovered_periods() {
        let pts = [point(5, 1.0), point(10, 1.0), point(25, 1.0)];
        assert_eq!(
            uncovered(min(0), min(35), &pts),
            vec![(min(0), min(5)), (min(15), min(25)), (min(30), min(35))]
        );
        assert_eq!(uncovered(min(5), min(15), &pts), vec![]);
        assert_eq!(uncovered(min(0), min(3), &pts), vec![(min(0), min(3))]);
        assert_eq!(uncovered(min(0), min(10), &[]), vec![(min(0), min(10))]);
    }

    #[test]
    fn collector_refuses_bad_points_and_conflicting_repeats() {
        let mut c = Collector::default();
        c.accept(point(0, 100.0));
        c.accept(point(0, 100.0));
        c.accept(point(0, 101.0));
        c.accept(point(5, -1.0));
        c.accept(point(10, f64::NAN));
        let f = c.finish(PointKind::Actual, min(0), min(15));
        assert_eq!(f.points.len(), 1);
        assert_eq!(f.rejected.len(), 3, "{:?}", f.rejected);
        assert!(f.rejected[0].contains("conflicting repeat"));
        assert!(f.rejected[1].contains("-1"));
        assert!(f.rejected[2].contains("NaN"));
        assert_eq!(f.gaps, vec![(min(5), min(15))]);
    }

    #[test]
    fn chunks_cover_the_range_without_overlap() {
        assert_eq!(
            chunks(min(0), min(25), 10 * 60_000),
            vec![(min(0), min(10)), (min(10), min(20)), (min(20), min(25))]
        );
        assert!(chunks(min(5), min(5), 60_000).is_empty());
    }

    #[test]
    fn non_finite_numbers_are_read_per_point() {
        let v =
            parse_json(r#"{"a":[{"value":NaN},{"value":-Infinity},{"value":"NaN x"}]}"#).unwrap();
        let a = v["a"].as_array().unwrap();
        assert!(number(&a[0], "value").unwrap().unwrap().is_nan());
        assert_eq!(number(&a[1], "value").unwrap(), Some(f64::NEG_INFINITY));
        assert!(number(&a[2], "value").is_err());
        assert_eq!(number(&a[2], "other").unwrap(), None);
        assert!(parse_json("{not json").is_err());
        assert!(parse_json(r#"{"s":"NaN"}"#).is_ok());
    }
}
