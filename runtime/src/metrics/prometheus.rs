//! Prometheus text (0.0.4) encoding of collected OpenTelemetry metrics.
//!
//! Names: dots become underscores, the UCUM unit adds its base-unit suffix (`s` → `_seconds`,
//! `By` → `_bytes`, `J` → `_joules`, `g` → `_grams`, `W` → `_watts`, `1` → `_ratio`) and a
//! monotonic sum adds `_total`. Non-monotonic sums and gauges are gauges.

use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::metrics::data::{
    AggregatedMetrics, Gauge, Histogram, Metric, MetricData, ResourceMetrics, Sum,
};
use std::fmt::Write as _;

pub(super) fn encode(rm: &ResourceMetrics) -> String {
    let mut out = String::new();
    for scope in rm.scope_metrics() {
        for metric in scope.metrics() {
            match metric.data() {
                AggregatedMetrics::F64(data) => write_data(&mut out, metric, data),
                AggregatedMetrics::U64(data) => write_data(&mut out, metric, data),
                AggregatedMetrics::I64(data) => write_data(&mut out, metric, data),
            }
        }
    }
    out
}

/// A number Prometheus can print.
trait Num: Copy {
    fn text(self) -> String;
}
macro_rules! num {
    ($($t:ty),*) => {$(impl Num for $t { fn text(self) -> String { self.to_string() } })*};
}
num!(u64, i64);
impl Num for f64 {
    fn text(self) -> String {
        if self.is_nan() {
            "NaN".into()
        } else if self.is_infinite() {
            if self > 0.0 { "+Inf" } else { "-Inf" }.into()
        } else {
            self.to_string()
        }
    }
}

fn write_data<T: Num>(out: &mut String, metric: &Metric, data: &MetricData<T>) {
    let base = base_name(metric.name(), metric.unit());
    match data {
        MetricData::Gauge(g) => write_gauge(out, metric, &base, g),
        MetricData::Sum(s) => write_sum(out, metric, &base, s),
        MetricData::Histogram(h) => write_histogram(out, metric, &base, h),
        MetricData::ExponentialHistogram(_) => {}
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn write_gauge<T: Num>(out: &mut String, metric: &Metric, name: &str, g: &Gauge<T>) {
    header(out, name, metric.description(), "gauge");
    for p in g.data_points() {
        sample(out, name, p.attributes(), None, p.value().text());
    }
}

fn write_sum<T: Num>(out: &mut String, metric: &Metric, base: &str, s: &Sum<T>) {
    let (name, kind) = if s.is_monotonic() {
        (format!("{base}_total"), "counter")
    } else {
        (base.to_owned(), "gauge")
    };
    header(out, &name, metric.description(), kind);
    for p in s.data_points() {
        sample(out, &name, p.attributes(), None, p.value().text());
    }
}

fn write_histogram<T: Num>(out: &mut String, metric: &Metric, name: &str, h: &Histogram<T>) {
    header(out, name, metric.description(), "histogram");
    for p in h.data_points() {
        let attrs: Vec<&KeyValue> = p.attributes().collect();
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0u64;
        for (bound, count) in p.bounds().zip(p.bucket_counts()) {
            cumulative += count;
            let le = ("le", bound.text());
            sample(
                out,
                &bucket,
                attrs.iter().copied(),
                Some(le),
                cumulative.to_string(),
            );
        }
        let inf = ("le", "+Inf".to_owned());
        sample(
            out,
            &bucket,
            attrs.iter().copied(),
            Some(inf),
            p.count().to_string(),
        );
        let sum = format!("{name}_sum");
        sample(out, &sum, attrs.iter().copied(), None, p.sum().text());
        let count = format!("{name}_count");
        sample(
            out,
            &count,
            attrs.iter().copied(),
            None,
            p.count().to_string(),
        );
    }
}

fn sample<'a>(
    out: &mut String,
    name: &str,
    attrs: impl Iterator<Item = &'a KeyValue>,
    extra: Option<(&str, String)>,
    value: String,
) {
    let mut labels: Vec<(String, String)> = attrs
        .map(|kv| (sanitize(kv.key.as_str()), value_text(&kv.value)))
        .collect();
    labels.sort();
    if let Some((k, v)) = extra {
        labels.push((k.to_owned(), v));
    }
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let _ = write!(out, "{k}=\"{v}\"");
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.as_str().to_owned(),
        other => other.to_string(),
    }
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The Prometheus name of an instrument: sanitized, with its unit's suffix.
pub(super) fn base_name(name: &str, unit: &str) -> String {
    let suffix = match unit {
        "s" => "_seconds",
        "By" => "_bytes",
        "J" => "_joules",
        "g" => "_grams",
        "W" => "_watts",
        "1" => "_ratio",
        _ => "",
    };
    let mut base = sanitize(name);
    if !base.ends_with(suffix) {
        base.push_str(suffix);
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_get_unit_suffixes() {
        assert_eq!(
            base_name("wattprint.gateway.batch_duration", "s"),
            "wattprint_gateway_batch_duration_seconds"
        );
        assert_eq!(base_name("hw.energy", "J"), "hw_energy_joules");
        assert_eq!(
            base_name("wattprint.gateway.streams", ""),
            "wattprint_gateway_streams"
        );
        assert_eq!(
            base_name("wattprint.intensity.coverage", "1"),
            "wattprint_intensity_coverage_ratio"
        );
    }
}
