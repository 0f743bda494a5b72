//! Import decisions: what the importer does with each queue message and each object it names.
//!
//! The importer's loop, with the piece of this module each step asks:
//!
//! 1. A queue message arrives. [`parse_message`] turns its body (an S3 event notification, bare or
//!    wrapped by SNS) into the [`ObjectRef`]s to load and the records it ignores, each with why.
//! 2. For each object the driver reads its [`BatchMetadata`](crate::batch::BatchMetadata), looks the
//!    table up in the catalog and the `(key, sha256)` up in the load manifest, and asks [`decide`]:
//!    [`Decision::Load`], [`Decision::Skip`], [`Decision::RetryAt`] or [`Decision::DeadLetter`].
//! 3. Before the COPY it streams the object's (uncompressed) bytes through a [`ContentCheck`] (or
//!    calls [`verify`]), which catches a checksum, row-count or CSV-shape mismatch as poison.
//! 4. If the load fails, the adapter turns the failure into a [`WarehouseError`] and [`classify`]
//!    sorts it. A row's error starts a [`RowIsolation`], which finds the refused rows so the
//!    others load; any other is handed to [`decide`] again, which answers with a retry time from
//!    [`Backoff`](crate::backoff::Backoff) or a dead-letter reason.
//!
//! Everything here is pure: time comes in as `now`, randomness as a `draw` in `[0, 1)`.

mod classify;
mod content;
mod decision;
mod isolation;
mod notification;
mod refused;

pub use classify::{ErrorClass, WarehouseError, WarehouseErrorKind, classify};
pub use content::{
    ContentCheck, ContentError, CsvError, CsvRecordCounter, record_spans, verify, without_rows,
};
pub use decision::{DeadLetterReason, Decision, ImportInput, SchemaMismatch, SkipReason, decide};
pub use isolation::{Outcome as IsolationOutcome, RowIsolation, Step as IsolationStep};
pub use notification::{
    IgnoreReason, Notification, NotificationError, ObjectRef, Sequencer, object_created_message,
    parse_message,
};
pub use refused::{RefusedRow, RefusedRows};

/// Longest piece of foreign text (a warehouse message, a key) kept in a reason: dead-letter reasons
/// travel as SQS message attributes, which count against the message's size limit.
const MAX_FOREIGN_CHARS: usize = 512;

/// `text` on one line (every run of whitespace, newlines included, becomes one space) and at most
/// [`MAX_FOREIGN_CHARS`] characters, so a multi-line PostgreSQL `DETAIL:`/`HINT:` cannot break the
/// one-line form of a reason.
fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_FOREIGN_CHARS + 3));
    let mut chars = 0;
    for word in text.split_whitespace() {
        if chars > 0 {
            out.push(' ');
            chars += 1;
        }
        for c in word.chars() {
            if chars >= MAX_FOREIGN_CHARS {
                out.push('…');
                return out;
            }
            // Control characters other than whitespace would still confuse a log line or a console.
            out.push(if c.is_control() { '\u{FFFD}' } else { c });
            chars += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_collapses_whitespace_and_truncates() {
        assert_eq!(one_line("  ERROR: x\n  DETAIL:\ty\r\n"), "ERROR: x DETAIL: y");
        assert_eq!(one_line("a\u{7}b"), "a\u{FFFD}b");
        let long = "é".repeat(MAX_FOREIGN_CHARS + 10);
        let short = one_line(&long);
        assert_eq!(short.chars().count(), MAX_FOREIGN_CHARS + 1);
        assert!(short.ends_with('…'));
        assert_eq!(one_line(""), "");
    }
}
