//! A Prometheus text page read back: what the loadtest and the integration tests do with a
//! service's `GET /metrics` (the AWS calls it made, the records it put). Sample lines only,
//! `name{label="value",…} number`; comments and malformed lines are skipped, since a reader
//! only ever sums what it names.

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    pub name: &'a str,
    pub labels: Vec<(&'a str, String)>,
    pub value: f64,
}

impl Sample<'_> {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Every sample of the page, in order.
pub fn samples(page: &str) -> impl Iterator<Item = Sample<'_>> {
    page.lines().filter_map(sample)
}

/// The sum of `name`'s samples whose labels include every one of `labels`.
pub fn sum(page: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(page)
        .filter(|s| s.name == name)
        .filter(|s| labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
        .map(|s| s.value)
        .sum()
}

fn sample(line: &str) -> Option<Sample<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(body) = rest.strip_prefix('{') {
        let (parsed, after) = label_set(body)?;
        labels = parsed;
        rest = after;
    }
    // A timestamp may follow the value.
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample { name, labels, value })
}

/// `k="v",k2="v2"}` → the pairs and what follows the `}`. Values unescape `\\`, `\"`, `\n`.
fn label_set(mut s: &str) -> Option<(Vec<(&str, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches(',');
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, after) = s.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        };
        labels.push((key.trim(), value));
        s = &after[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"# TYPE microbatch_aws_requests_total counter
microbatch_aws_requests_total{service="kinesis",operation="PutRecords",outcome="ok"} 60
microbatch_aws_requests_total{service="kinesis",operation="PutRecords",outcome="throttled"} 2
microbatch_aws_requests_total{service="kinesis",operation="GetRecords",outcome="ok"} 7
microbatch_kinesis_put_payload_units_total 121
odd{path="a\"b\\c,d}"} 1.5 1700000000000
not a sample
"#;

    #[test]
    fn sums_the_samples_matching_every_label() {
        let put = [("service", "kinesis"), ("operation", "PutRecords")];
        assert_eq!(sum(PAGE, "microbatch_aws_requests_total", &put), 62.0);
        let ok = [("operation", "PutRecords"), ("outcome", "ok")];
        assert_eq!(sum(PAGE, "microbatch_aws_requests_total", &ok), 60.0);
        assert_eq!(sum(PAGE, "microbatch_aws_requests_total", &[]), 69.0);
        assert_eq!(
            sum(PAGE, "microbatch_kinesis_put_payload_units_total", &[]),
            121.0
        );
        assert_eq!(sum(PAGE, "absent", &[]), 0.0);
    }

    #[test]
    fn label_values_are_unescaped_and_may_hold_separators() {
        let odd: Vec<_> = samples(PAGE).filter(|s| s.name == "odd").collect();
        assert_eq!(odd.len(), 1);
        assert_eq!(odd[0].label("path"), Some("a\"b\\c,d}"));
        assert_eq!(odd[0].value, 1.5);
        assert_eq!(
            samples(PAGE).count(),
            5,
            "comments and the malformed line skipped"
        );
    }
}
