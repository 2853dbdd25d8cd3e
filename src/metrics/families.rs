//! Collects samples into metric families and writes them in Prometheus' text format
//! (version 0.0.4, what Litestream's Go client serves) with the `prometheus` crate's
//! encoder, which does the escaping and number formatting.

use prometheus::proto::{Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, TextEncoder};

/// The content type of [`Families::encode`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Families in the order their first sample was added; samples of one family together.
#[derive(Default)]
pub struct Families {
    families: Vec<MetricFamily>,
}

/// A histogram's state: cumulative bucket counts by upper bound, total count and sum.
pub struct HistogramValue<'a> {
    pub bounds: &'a [f64],
    pub cumulative: &'a [u64],
    pub count: u64,
    pub sum: f64,
}

impl Families {
    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        let mut gauge = Gauge::default();
        gauge.set_value(value);
        let mut metric = metric(labels);
        metric.set_gauge(gauge);
        self.push(name, help, MetricType::GAUGE, metric);
    }

    pub fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        let mut counter = Counter::default();
        counter.set_value(value);
        let mut metric = metric(labels);
        metric.set_counter(counter);
        self.push(name, help, MetricType::COUNTER, metric);
    }

    pub fn histogram(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: HistogramValue<'_>) {
        let buckets = value
            .bounds
            .iter()
            .zip(value.cumulative)
            .map(|(le, n)| {
                let mut b = Bucket::default();
                b.set_upper_bound(*le);
                b.set_cumulative_count(*n);
                b
            })
            .collect();
        let mut histogram = Histogram::default();
        histogram.set_bucket(buckets);
        histogram.set_sample_count(value.count);
        histogram.set_sample_sum(value.sum);
        let mut metric = metric(labels);
        metric.set_histogram(histogram);
        self.push(name, help, MetricType::HISTOGRAM, metric);
    }

    fn push(&mut self, name: &str, help: &str, kind: MetricType, metric: Metric) {
        let family = match self.families.iter().position(|f| f.name() == name) {
            Some(i) => &mut self.families[i],
            None => {
                let mut family = MetricFamily::default();
                family.set_name(name.to_string());
                family.set_help(help.to_string());
                family.set_field_type(kind);
                self.families.push(family);
                self.families.last_mut().expect("just pushed")
            }
        };
        debug_assert_eq!(family.get_field_type(), kind, "{name} is one type");
        family.mut_metric().push(metric);
    }

    /// The text exposition of every family.
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        // Writing into memory fails only on a malformed family (no name, no sample),
        // which `push` cannot build.
        if let Err(e) = TextEncoder::new().encode(&self.families, &mut out) {
            tracing::error!("encoding metrics: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

fn metric(labels: &[(&str, &str)]) -> Metric {
    let pairs = labels
        .iter()
        .map(|(name, value)| {
            let mut pair = LabelPair::default();
            pair.set_name(name.to_string());
            pair.set_value(value.to_string());
            pair
        })
        .collect();
    Metric::from_label(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_of_one_family_are_written_together_with_escaped_labels() {
        let mut f = Families::default();
        f.gauge("a_size", "Size.", &[("db", "/x/one.db")], 1.0);
        f.counter("b_count", "Count.", &[("db", "/x/one.db")], 2.0);
        f.gauge("a_size", "Size.", &[("db", "/x/\"two\"\\.db")], 3.5);
        let bounds = [0.1, 1.0];
        f.histogram(
            "c_seconds",
            "Time.",
            &[("op", "GET")],
            HistogramValue {
                bounds: &bounds,
                cumulative: &[1, 3],
                count: 4,
                sum: 7.25,
            },
        );
        assert_eq!(
            f.encode(),
            "# HELP a_size Size.\n# TYPE a_size gauge\na_size{db=\"/x/one.db\"} 1\n\
             a_size{db=\"/x/\\\"two\\\"\\\\.db\"} 3.5\n\
             # HELP b_count Count.\n# TYPE b_count counter\nb_count{db=\"/x/one.db\"} 2\n\
             # HELP c_seconds Time.\n# TYPE c_seconds histogram\n\
             c_seconds_bucket{op=\"GET\",le=\"0.1\"} 1\nc_seconds_bucket{op=\"GET\",le=\"1\"} 3\n\
             c_seconds_bucket{op=\"GET\",le=\"+Inf\"} 4\nc_seconds_sum{op=\"GET\"} 7.25\n\
             c_seconds_count{op=\"GET\"} 4\n"
        );
    }
}
