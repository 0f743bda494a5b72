//! Step 3 of the importer: is this object's content the batch its metadata describes?
//!
//! Before the COPY the driver feeds the object's uncompressed bytes through a [`ContentCheck`]
//! (in chunks, as it decompresses them, so a large object is never held in memory whole) or
//! calls [`verify`] on bytes it already has. A mismatch is poison: the object was damaged or
//! written by a buggy flush, and loading it would put wrong rows in the warehouse.
//!
//! The CSV is the one the consumer writes and Redshift's `FORMAT CSV` reads: no header row (the
//! COPY names the columns from the metadata), records end with `\n` or `\r\n`, a field wrapped in
//! `"` may hold commas, quotes (doubled, `""`) and line breaks. Every line break outside quotes
//! ends a record, so a blank line is a record of one empty field; the last record's line break
//! is optional.

use sha2::{Digest, Sha256};

use crate::batch::BatchMetadata;

/// Content that is not well-formed CSV of the batch's shape.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CsvError {
    #[error("quoted field opened at byte {offset} is never closed")]
    UnterminatedQuote { offset: u64 },
    #[error("unexpected byte {byte:?} after a closing quote at byte {offset} (record {record})")]
    TextAfterQuote { record: u64, offset: u64, byte: char },
    #[error("record {record} has {found} fields, expected {expected}")]
    FieldCount { record: u64, expected: u64, found: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At the start of a field (after a separator, a line break, or at the very beginning).
    FieldStart,
    Unquoted,
    Quoted,
    /// Just read a `"` inside a quoted field: either the closing quote or the first of `""`.
    QuoteInQuoted,
}

/// Counts CSV records (and checks each has the expected number of fields), fed in chunks of any
/// size; quote-aware, so a line break inside a quoted field does not end a record.
#[derive(Clone, Debug)]
pub struct CsvRecordCounter {
    expected_fields: Option<u64>,
    state: State,
    records: u64,
    fields: u64,
    /// Whether anything has been read since the last record ended.
    open_record: bool,
    offset: u64,
    quote_opened_at: u64,
    error: Option<CsvError>,
    /// Where each record ended (the offset after its line break), when asked to keep them.
    ends: Option<Vec<u64>>,
}

impl CsvRecordCounter {
    /// `expected_fields`: the column count every record must have, or `None` not to check.
    pub fn new(expected_fields: Option<u64>) -> Self {
        CsvRecordCounter {
            expected_fields,
            state: State::FieldStart,
            records: 0,
            fields: 0,
            open_record: false,
            offset: 0,
            quote_opened_at: 0,
            error: None,
            ends: None,
        }
    }

    pub fn update(&mut self, chunk: &[u8]) {
        // Only ASCII bytes steer the state machine, and UTF-8 never uses them inside a multi-byte
        // character, so bytes can be read one by one whatever the encoding of the text.
        for &b in chunk {
            if self.error.is_some() {
                return;
            }
            self.step(b);
            self.offset += 1;
        }
    }

    fn step(&mut self, b: u8) {
        self.open_record = true;
        match (self.state, b) {
            (State::FieldStart, b'"') => {
                self.state = State::Quoted;
                self.quote_opened_at = self.offset;
            }
            (State::FieldStart | State::Unquoted | State::QuoteInQuoted, b',') => {
                self.fields += 1;
                self.state = State::FieldStart;
            }
            (State::FieldStart | State::Unquoted | State::QuoteInQuoted, b'\n') => self.end_record(),
            (State::FieldStart | State::Unquoted, _) => self.state = State::Unquoted,
            (State::Quoted, b'"') => self.state = State::QuoteInQuoted,
            (State::Quoted, _) => {}
            (State::QuoteInQuoted, b'"') => self.state = State::Quoted,
            // The `\r` of a `\r\n` after a closing quote.
            (State::QuoteInQuoted, b'\r') => {}
            (State::QuoteInQuoted, other) => {
                self.error = Some(CsvError::TextAfterQuote {
                    record: self.records + 1,
                    offset: self.offset,
                    byte: char::from(other),
                });
            }
        }
    }

    fn end_record(&mut self) {
        let found = self.fields + 1;
        self.records += 1;
        if let Some(ends) = self.ends.as_mut() {
            ends.push(self.offset + 1);
        }
        if let Some(expected) = self.expected_fields
            && found != expected
        {
            self.error = Some(CsvError::FieldCount {
                record: self.records,
                expected,
                found,
            });
        }
        self.fields = 0;
        self.state = State::FieldStart;
        self.open_record = false;
    }

    /// The number of records, or the first way the content was not well-formed.
    pub fn finish(mut self) -> Result<u64, CsvError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        match self.state {
            State::Quoted => Err(CsvError::UnterminatedQuote {
                offset: self.quote_opened_at,
            }),
            _ if self.open_record => {
                self.end_record();
                self.error.map_or(Ok(self.records), Err)
            }
            _ => Ok(self.records),
        }
    }
}

/// The byte range of each record of `body`, its line break included, read as
/// [`CsvRecordCounter`] reads them (a line break inside quotes does not end a record).
pub fn record_spans(body: &[u8]) -> Result<Vec<std::ops::Range<usize>>, CsvError> {
    let mut counter = CsvRecordCounter::new(None);
    counter.ends = Some(Vec::new());
    counter.update(body);
    let open = counter.open_record;
    let mut ends = counter.ends.take().unwrap_or_default();
    counter.finish()?;
    if open {
        ends.push(body.len() as u64);
    }
    let mut start = 0;
    Ok(ends
        .into_iter()
        .map(|end| {
            let span = start..end as usize;
            start = end as usize;
            span
        })
        .collect())
}

/// `body` without the records whose 0-based indexes are in `skip` (any order): what a
/// warehouse loads once it refused those rows. A last record without its line break gets one,
/// so the records left still end where they did.
pub fn without_rows(body: &[u8], skip: &[u64]) -> Result<Vec<u8>, CsvError> {
    let spans = record_spans(body)?;
    let skip: std::collections::BTreeSet<u64> = skip.iter().copied().collect();
    let mut out = Vec::with_capacity(body.len());
    for (i, span) in spans.into_iter().enumerate() {
        if skip.contains(&(i as u64)) {
            continue;
        }
        out.extend_from_slice(&body[span]);
        if out.last() != Some(&b'\n') {
            out.push(b'\n');
        }
    }
    Ok(out)
}

/// Content that is not the batch its metadata describes: poison.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    #[error(
        "checksum mismatch: metadata says sha256 {}, content is {actual}",
        super::one_line(expected)
    )]
    ChecksumMismatch { expected: String, actual: String },
    #[error("row count mismatch: metadata says {expected} rows, content has {actual}")]
    RowCountMismatch { expected: u64, actual: u64 },
    #[error("malformed CSV: {0}")]
    MalformedCsv(CsvError),
}

impl ContentError {
    /// A stable label (the dead-letter reason code).
    pub fn code(&self) -> &'static str {
        match self {
            ContentError::ChecksumMismatch { .. } => "checksum_mismatch",
            ContentError::RowCountMismatch { .. } => "row_count_mismatch",
            ContentError::MalformedCsv(_) => "malformed_csv",
        }
    }
}

/// Streams an object's uncompressed bytes against its metadata: SHA-256, record count and the
/// field count of every record.
#[derive(Clone, Debug)]
pub struct ContentCheck {
    expected_sha256: String,
    expected_rows: u64,
    hasher: Sha256,
    counter: CsvRecordCounter,
}

impl ContentCheck {
    pub fn new(meta: &BatchMetadata) -> Self {
        ContentCheck {
            expected_sha256: meta.sha256.to_ascii_lowercase(),
            expected_rows: meta.row_count,
            hasher: Sha256::new(),
            counter: CsvRecordCounter::new(Some(u64::from(meta.column_count))),
        }
    }

    pub fn update(&mut self, chunk: &[u8]) {
        self.hasher.update(chunk);
        self.counter.update(chunk);
    }

    /// `Ok` if the content is the batch the metadata describes, else why it is poison. The
    /// checksum is judged first: if the bytes are not the ones written, their shape says nothing.
    pub fn finish(self) -> Result<(), ContentError> {
        let actual = hex::encode(self.hasher.finalize());
        if actual != self.expected_sha256 {
            return Err(ContentError::ChecksumMismatch {
                expected: self.expected_sha256,
                actual,
            });
        }
        let rows = self.counter.finish().map_err(ContentError::MalformedCsv)?;
        if rows != self.expected_rows {
            return Err(ContentError::RowCountMismatch {
                expected: self.expected_rows,
                actual: rows,
            });
        }
        Ok(())
    }
}

/// [`ContentCheck`] over bytes already in memory.
pub fn verify(meta: &BatchMetadata, bytes: &[u8]) -> Result<(), ContentError> {
    let mut check = ContentCheck::new(meta);
    check.update(bytes);
    check.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Compression;
    use crate::position::{Position, SequenceNumber, ShardId};
    use crate::time::Timestamp;
    use proptest::prelude::*;

    fn count(text: &str) -> Result<u64, CsvError> {
        let mut c = CsvRecordCounter::new(None);
        c.update(text.as_bytes());
        c.finish()
    }

    fn count_fields(text: &str, fields: u64) -> Result<u64, CsvError> {
        let mut c = CsvRecordCounter::new(Some(fields));
        c.update(text.as_bytes());
        c.finish()
    }

    fn meta_for(bytes: &[u8], rows: u64, columns: &[&str]) -> BatchMetadata {
        BatchMetadata {
            table: "orders".into(),
            columns_sha256: crate::batch::columns_digest(columns),
            column_count: columns.len() as u32,
            row_count: rows,
            shard: ShardId::new("shardId-000000000001"),
            first: Position::new(SequenceNumber::from_u128(1), 0),
            last: Position::new(SequenceNumber::from_u128(2), 0),
            catalog_version: "v1".into(),
            sha256: hex::encode(Sha256::digest(bytes)),
            csv_bytes: bytes.len() as u64,
            min_received_at: Timestamp::from_millis(1),
            max_received_at: Timestamp::from_millis(2),
            compression: Compression::None,
            csv: crate::csv::CsvEncoding::CURRENT,
        }
    }

    #[test]
    fn counts_records() {
        let cases: &[(&str, u64)] = &[
            ("", 0),
            ("a,b\n", 1),
            ("a,b", 1),
            ("a,b\nc,d\n", 2),
            ("a,b\r\nc,d\r\n", 2),
            ("a,b\r\nc,d", 2),
            ("\"x\ny\",b\nc,d\n", 2),
            ("\"x\r\ny\",b\r\n", 1),
            ("\"he said \"\"hi\"\"\",b\n", 1),
            ("\"\"\"\n\"\"\",b\n", 1),
            ("\"\",\"\"\n", 1),
            ("a\n\nb\n", 3),
            ("\n", 1),
            ("é,\"ü\nß\"\n", 1),
            ("a\"b,c\n", 1),
        ];
        for (text, want) in cases {
            assert_eq!(count(text), Ok(*want), "{text:?}");
        }
    }

    #[test]
    fn records_are_spanned_and_left_out_quote_aware() {
        let body = b"a,\"x\ny\"\nb,c\r\nd,e";
        let spans = record_spans(body).unwrap();
        assert_eq!(spans, vec![0..8, 8..13, 13..16]);
        assert_eq!(without_rows(body, &[1]).unwrap(), b"a,\"x\ny\"\nd,e\n");
        assert_eq!(without_rows(body, &[0, 2]).unwrap(), b"b,c\r\n");
        assert_eq!(without_rows(body, &[]).unwrap(), b"a,\"x\ny\"\nb,c\r\nd,e\n");
        assert!(record_spans(b"\"open").is_err());
        assert!(record_spans(b"").unwrap().is_empty());
    }

    #[test]
    fn checks_the_field_count_of_each_record() {
        assert_eq!(count_fields("a,b\n\"x,y\",\"z\n\"\n", 2), Ok(2));
        assert_eq!(
            count_fields("a,b\nc\n", 2),
            Err(CsvError::FieldCount {
                record: 2,
                expected: 2,
                found: 1
            })
        );
        assert_eq!(
            count_fields("a,b\nc,d,e", 2),
            Err(CsvError::FieldCount {
                record: 2,
                expected: 2,
                found: 3
            })
        );
        assert_eq!(count_fields("a,\n", 2), Ok(1));
        assert_eq!(count_fields("\n", 1), Ok(1));
        assert_eq!(
            CsvError::FieldCount {
                record: 2,
                expected: 2,
                found: 1
            }
            .to_string(),
            "record 2 has 1 fields, expected 2"
        );
    }

    #[test]
    fn rejects_malformed_quoting() {
        assert_eq!(
            count("a,\"b\nc\n"),
            Err(CsvError::UnterminatedQuote { offset: 2 })
        );
        assert_eq!(
            CsvError::UnterminatedQuote { offset: 2 }.to_string(),
            "quoted field opened at byte 2 is never closed"
        );
        let err = count("x\n\"a\"b,c\n").unwrap_err();
        assert_eq!(
            err,
            CsvError::TextAfterQuote {
                record: 2,
                offset: 5,
                byte: 'b'
            }
        );
        assert_eq!(
            err.to_string(),
            "unexpected byte 'b' after a closing quote at byte 5 (record 2)"
        );
    }

    #[test]
    fn verify_accepts_the_batch_its_metadata_describes() {
        let csv = b"e1,0,\"12,5\"\ne2,0,\"multi\nline\"\n";
        assert_eq!(
            verify(&meta_for(csv, 2, &["event_id", "row_index", "total"]), csv),
            Ok(())
        );
        // Upper-case hex in the metadata is the same checksum.
        let mut meta = meta_for(csv, 2, &["event_id", "row_index", "total"]);
        meta.sha256 = meta.sha256.to_ascii_uppercase();
        assert_eq!(verify(&meta, csv), Ok(()));
    }

    #[test]
    fn verify_reports_a_checksum_mismatch_first() {
        let csv = b"a,b\n";
        let meta = meta_for(b"something else", 7, &["x", "y"]);
        let err = verify(&meta, csv).unwrap_err();
        let actual = hex::encode(Sha256::digest(csv));
        assert_eq!(
            err,
            ContentError::ChecksumMismatch {
                expected: meta.sha256.clone(),
                actual: actual.clone()
            }
        );
        assert_eq!(
            err.to_string(),
            format!(
                "checksum mismatch: metadata says sha256 {}, content is {actual}",
                meta.sha256
            )
        );
    }

    #[test]
    fn verify_reports_a_row_count_mismatch() {
        let csv = b"a,b\nc,d\n";
        let err = verify(&meta_for(csv, 3, &["x", "y"]), csv).unwrap_err();
        assert_eq!(
            err,
            ContentError::RowCountMismatch {
                expected: 3,
                actual: 2
            }
        );
        assert_eq!(
            err.to_string(),
            "row count mismatch: metadata says 3 rows, content has 2"
        );
    }

    #[test]
    fn verify_reports_malformed_csv() {
        let csv = b"a,b\nc\n";
        let err = verify(&meta_for(csv, 2, &["x", "y"]), csv).unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed CSV: record 2 has 1 fields, expected 2"
        );
        let csv = b"a,\"b\n";
        let err = verify(&meta_for(csv, 1, &["x", "y"]), csv).unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed CSV: quoted field opened at byte 2 is never closed"
        );
    }

    /// RFC 4180 encoding, quoting when needed (and sometimes when not, as some writers do).
    fn encode(rows: &[Vec<String>], crlf: bool, trailing: bool, quote_all: bool) -> String {
        let eol = if crlf { "\r\n" } else { "\n" };
        let mut out = String::new();
        for (i, row) in rows.iter().enumerate() {
            for (j, field) in row.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                let needs = field.contains([',', '"', '\n', '\r'])
                    // A lone empty field would otherwise be a blank line; quote it like the csv
                    // crate does, so it cannot be mistaken for "no record".
                    || (row.len() == 1 && field.is_empty());
                if needs || quote_all {
                    out.push('"');
                    out.push_str(&field.replace('"', "\"\""));
                    out.push('"');
                } else {
                    out.push_str(field);
                }
            }
            if trailing || i + 1 < rows.len() {
                out.push_str(eol);
            }
        }
        out
    }

    fn table() -> impl Strategy<Value = (usize, Vec<Vec<String>>)> {
        (1usize..5).prop_flat_map(|cols| {
            let field = "[a-c,\"\n\r é✓]{0,6}";
            (
                Just(cols),
                prop::collection::vec(prop::collection::vec(field, cols), 0..20),
            )
        })
    }

    proptest! {
        #[test]
        fn counts_generated_csv(
            (cols, rows) in table(),
            crlf in any::<bool>(),
            trailing in any::<bool>(),
            quote_all in any::<bool>(),
            splits in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        ) {
            let text = encode(&rows, crlf, trailing, quote_all);
            let bytes = text.as_bytes();
            let mut cuts: Vec<usize> = splits.iter().map(|i| i.index(bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut counter = CsvRecordCounter::new(Some(cols as u64));
            let mut from = 0;
            for cut in cuts {
                counter.update(&bytes[from..cut]);
                from = cut;
            }
            counter.update(&bytes[from..]);
            prop_assert_eq!(counter.finish(), Ok(rows.len() as u64), "{:?}", text);

            let meta = meta_for(bytes, rows.len() as u64, &vec!["c"; cols]);
            prop_assert_eq!(verify(&meta, bytes), Ok(()));
        }
    }
}
