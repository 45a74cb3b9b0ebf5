//! The drill's table: per event, what the clients saw.

use super::drill::{Op, Record};
use super::errors_by_status;
use std::time::Duration;

/// One event: when it began, when the fault was over (the process back,
/// the pause ended), and the end of the window watched after it.
pub struct Event {
    pub name: String,
    begun: Duration,
    ended: Duration,
    settled: Duration,
}

impl Event {
    pub fn new(name: &str, begun: Duration, ended: Duration, settled: Duration) -> Self {
        Self {
            name: name.to_string(),
            begun,
            ended,
            settled,
        }
    }

    fn window<'a>(&self, records: &'a [Record]) -> Vec<&'a Record> {
        records
            .iter()
            .filter(|r| r.at >= self.begun && r.at < self.settled)
            .collect()
    }

    /// How long after the fault ended `op` still failed: zero if it never
    /// failed, `None` if it failed to the end of the window.
    pub fn recovery(&self, records: &[Record], op: Op) -> Option<Duration> {
        let window: Vec<&Record> = self
            .window(records)
            .into_iter()
            .filter(|r| r.op == op)
            .collect();
        let Some(last_failure) = window.iter().rposition(|r| !r.ok()) else {
            return Some(Duration::ZERO);
        };
        window[last_failure + 1..]
            .iter()
            .any(|r| r.ok())
            .then(|| window[last_failure].at.saturating_sub(self.ended))
    }

    /// The longest time between two successes of `op` in the window.
    fn longest_gap(&self, records: &[Record], op: Op) -> Duration {
        let mut last = self.begun;
        let mut longest = Duration::ZERO;
        for r in self
            .window(records)
            .into_iter()
            .filter(|r| r.op == op && r.ok())
        {
            longest = longest.max(r.at.saturating_sub(last));
            last = r.at;
        }
        longest.max(self.settled.saturating_sub(last))
    }
}

const OPS: [(Op, &str); 4] = [
    (Op::Verify, "verify"),
    (Op::Login, "login"),
    (Op::Refresh, "refresh"),
    (Op::Logout, "logout"),
];

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// Prints one table per event (markdown, for docs/scaling.md).
pub fn print_table(records: &[Record], events: &[Event]) {
    println!(
        "\n{} requests in {:?}",
        records.len(),
        records.last().map(|r| r.at).unwrap_or_default()
    );
    for event in events {
        let window = event.window(records);
        let owned: Vec<Record> = window.iter().map(|r| (*r).clone()).collect();
        println!(
            "\n### {} (fault {} → {}, watched to {})\n",
            event.name,
            ms(event.begun),
            ms(event.ended),
            ms(event.settled)
        );
        println!(
            "| op | requests | errors by status | longest gap | recovered after the fault's end |"
        );
        println!("|---|---|---|---|---|");
        for (op, name) in OPS {
            let of_op: Vec<Record> = owned.iter().filter(|r| r.op == op).cloned().collect();
            let errors = errors_by_status(&of_op);
            let errors = if errors.is_empty() {
                "none".to_string()
            } else {
                errors
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let recovered = event
                .recovery(records, op)
                .map_or("not within the window".to_string(), ms);
            println!(
                "| {name} | {} | {errors} | {} | {recovered} |",
                of_op.len(),
                ms(event.longest_gap(records, op))
            );
        }
    }
}
