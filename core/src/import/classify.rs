//! Whether a failed load is worth trying again.
//!
//! The warehouse adapters (sqlx for PostgreSQL and Redshift, SQLite for the embedded stack) turn
//! each failure into a [`WarehouseError`]; [`classify`] sorts it into [`ErrorClass::Transient`]
//! (retry with backoff: the same load may well succeed later), [`ErrorClass::Row`] (one row's
//! value was refused: load the others, keep that row in `rejected/`) or [`ErrorClass::Permanent`]
//! (the batch or the warehouse's set-up is wrong: dead-letter it now). The importer isolates
//! refused rows with [`RowIsolation`](super::RowIsolation); [`decide`](super::decide) does the
//! rest.
//!
//! The rules, first match wins:
//!
//! 1. Transport failures (connection, timeout, I/O, protocol) are transient: nothing was judged.
//!    An error naming the row it refused ([`WarehouseError::row`]) is that row's.
//! 2. Redshift reports most errors as `XX000` and says what happened only in the text, so a few
//!    messages are recognised first: a serializable isolation violation (error 1023) and S3
//!    throttling during COPY are transient; a load error pointing to `stl_load_errors` is a row's
//!    data.
//! 3. SQLite result codes: busy, locked and resource errors are transient.
//! 4. SQLSTATE, by class: 08, 40, 53, 57, 58, lock timeouts and a few more are transient; data
//!    exceptions a row causes (22 but the COPY format errors, not-null and check violations) are
//!    a row's; the rest (23, 42, 0A, XX, ...) say the statement is wrong and are permanent.
//! 5. A database error nothing above recognises is permanent (the server judged the statement);
//!    an error of unknown kind is transient, since retries are bounded anyway.

use std::fmt;

/// Where a warehouse failure happened, as far as the adapter can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WarehouseErrorKind {
    /// Could not connect, or the connection broke (refused, reset, TLS, DNS, pool closed).
    Connection,
    /// A client-side deadline passed (pool acquire, statement). The statement may still have
    /// committed; the retry finds it in the load manifest and skips.
    Timeout,
    Io,
    /// The wire protocol was not followed (a truncated or unexpected message).
    Protocol,
    /// The database answered with an error; `sqlstate` or `sqlite_code` says which.
    Database,
    Other,
}

impl WarehouseErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            WarehouseErrorKind::Connection => "connection",
            WarehouseErrorKind::Timeout => "timeout",
            WarehouseErrorKind::Io => "I/O",
            WarehouseErrorKind::Protocol => "protocol",
            WarehouseErrorKind::Database => "database",
            WarehouseErrorKind::Other => "warehouse",
        }
    }
}

/// A failed warehouse call, as the adapters report it to core.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct WarehouseError {
    pub kind: WarehouseErrorKind,
    /// The five-character SQLSTATE from PostgreSQL or Redshift, e.g. `40001`.
    pub sqlstate: Option<String>,
    /// The SQLite (extended) result code, e.g. `5` (`SQLITE_BUSY`) or `2067`
    /// (`SQLITE_CONSTRAINT_UNIQUE`).
    pub sqlite_code: Option<i32>,
    /// The server's or driver's message, as it came.
    pub message: String,
    /// The batch row (0-based) the warehouse refused, when it says which: PostgreSQL's COPY
    /// names the line, Redshift's `stl_load_errors` too. The adapter maps the line of what it
    /// sent back to the row of the batch.
    pub row: Option<u64>,
}

impl WarehouseError {
    pub fn new(kind: WarehouseErrorKind, message: impl Into<String>) -> Self {
        WarehouseError {
            kind,
            sqlstate: None,
            sqlite_code: None,
            message: message.into(),
            row: None,
        }
    }

    /// The same error, naming the batch row it was about.
    pub fn at_row(self, row: u64) -> Self {
        WarehouseError {
            row: Some(row),
            ..self
        }
    }

    /// A database error from PostgreSQL or Redshift.
    pub fn with_sqlstate(sqlstate: impl Into<String>, message: impl Into<String>) -> Self {
        WarehouseError {
            sqlstate: Some(sqlstate.into()),
            ..Self::new(WarehouseErrorKind::Database, message)
        }
    }

    /// A database error from SQLite.
    pub fn with_sqlite_code(code: i32, message: impl Into<String>) -> Self {
        WarehouseError {
            sqlite_code: Some(code),
            ..Self::new(WarehouseErrorKind::Database, message)
        }
    }
}

impl fmt::Display for WarehouseError {
    /// e.g. `database error (SQLSTATE 40001): could not serialize access due to concurrent update`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} error", self.kind.as_str())?;
        match (&self.sqlstate, self.sqlite_code) {
            (Some(state), _) => write!(f, " (SQLSTATE {state})")?,
            (None, Some(code)) => write!(f, " (SQLite code {code})")?,
            (None, None) => {}
        }
        write!(f, ": {}", self.message)
    }
}

/// The answer of [`classify`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Try the same load again later.
    Transient,
    /// A row's data was refused (a value the column cannot take): load the batch without that
    /// row, and keep the row in `rejected/` with the reason (contract 4).
    Row,
    /// The batch cannot load as it is (or the warehouse is not set up for it); dead-letter it.
    Permanent,
}

impl ErrorClass {
    /// The `class` label of `microbatch_load_failures_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Row => "row",
            ErrorClass::Permanent => "permanent",
        }
    }
}

/// Sorts a warehouse failure into transient or permanent (see the module docs for the rules).
pub fn classify(error: &WarehouseError) -> ErrorClass {
    use ErrorClass::{Permanent, Transient};
    match error.kind {
        WarehouseErrorKind::Connection
        | WarehouseErrorKind::Timeout
        | WarehouseErrorKind::Io
        | WarehouseErrorKind::Protocol => return Transient,
        WarehouseErrorKind::Database | WarehouseErrorKind::Other => {}
    }
    // The warehouse named the row it refused: the row's fault, whatever the code.
    if error.row.is_some() {
        return ErrorClass::Row;
    }
    if let Some(class) = classify_message(&error.message) {
        return class;
    }
    if let Some(code) = error.sqlite_code {
        return classify_sqlite(code);
    }
    if let Some(state) = &error.sqlstate {
        return classify_sqlstate(state);
    }
    match error.kind {
        WarehouseErrorKind::Database => Permanent,
        _ => Transient,
    }
}

/// Texts that decide the class whatever the code says (Redshift puts most errors under `XX000`;
/// SQLite drivers do not always pass the result code on).
fn classify_message(message: &str) -> Option<ErrorClass> {
    let m = message.to_ascii_lowercase();
    let has = |needle: &str| m.contains(needle);
    if has("stl_load_errors") {
        // "Load into table 'x' failed. Check 'stl_load_errors' system table for details."
        return Some(ErrorClass::Row);
    }
    let transient = has("serializable isolation violation")
        || has("deadlock detected")
        || has("lock timeout")
        // S3 throttling while COPY reads the object: `S3ServiceException:Please reduce your request
        // rate.,Status 503,Error SlowDown`.
        || has("slowdown")
        || has("please reduce your request rate")
        || has("database is locked")
        || has("database table is locked");
    transient.then_some(ErrorClass::Transient)
}

/// SQLite result codes; the primary code is the low byte of an extended one.
fn classify_sqlite(code: i32) -> ErrorClass {
    const SQLITE_CONSTRAINT_PRIMARYKEY: i32 = 1555;
    const SQLITE_CONSTRAINT_UNIQUE: i32 = 2067;
    const SQLITE_CONSTRAINT_NOTNULL: i32 = 1299;
    const SQLITE_CONSTRAINT_CHECK: i32 = 275;
    match code {
        SQLITE_CONSTRAINT_NOTNULL | SQLITE_CONSTRAINT_CHECK => ErrorClass::Row,
        // See `unique_violation` in `classify_sqlstate`.
        SQLITE_CONSTRAINT_PRIMARYKEY | SQLITE_CONSTRAINT_UNIQUE => ErrorClass::Transient,
        _ => match code & 0xff {
            // BUSY, LOCKED, NOMEM, INTERRUPT, IOERR, FULL, CANTOPEN, PROTOCOL, SCHEMA
            5 | 6 | 7 | 9 | 10 | 13 | 14 | 15 | 17 => ErrorClass::Transient,
            // ERROR (bad SQL, no such table), READONLY, CORRUPT, TOOBIG, CONSTRAINT, MISMATCH,
            // RANGE, NOTADB, and anything else.
            _ => ErrorClass::Permanent,
        },
    }
}

fn classify_sqlstate(state: &str) -> ErrorClass {
    let state = state.to_ascii_uppercase();
    if is_row_sqlstate(&state) {
        return ErrorClass::Row;
    }
    let transient = match state.as_str() {
        // A concurrent importer loaded the same batch first and its manifest row won; the retry
        // finds the batch in the manifest and skips it instead of dead-lettering a loaded batch.
        "23505" => true,
        // Read-only transaction: a failover left us connected to a standby.
        "25006" => true,
        // Object in use, lock not available (lock_timeout).
        "55006" | "55P03" => true,
        // Transaction integrity constraint violation: a deferred constraint, the data's fault.
        "40002" => false,
        // The database is gone; no retry brings it back.
        "57P04" => false,
        // Snapshot too old.
        "72000" => true,
        _ => match state.get(..2) {
            // Connection exception; transaction rollback (serialization failure, deadlock);
            // insufficient resources; operator intervention (shutdown, cannot connect now, query
            // canceled by statement_timeout); system error (I/O).
            Some("08" | "40" | "53" | "57" | "58") => true,
            // Invalid authorization: a password or IAM token rotated under us; it heals on
            // reconnect, and the batch is not at fault.
            Some("28") => true,
            _ => false,
        },
    };
    if transient {
        ErrorClass::Transient
    } else {
        ErrorClass::Permanent
    }
}

/// Data exceptions a single row causes: a value its column cannot take (class 22: a bad
/// number, date or encoding, a string too long, a NUL), a NULL in a NOT NULL column, a failed
/// CHECK. Not `22P04` (bad COPY file format: the CSV itself is broken, which no row can be
/// blamed for) and not `22P03` (bad binary format).
fn is_row_sqlstate(state: &str) -> bool {
    match state {
        "22P04" | "22P03" => false,
        "23502" | "23514" => true,
        _ => state.starts_with("22"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorClass::{Permanent, Row, Transient};
    use WarehouseErrorKind as K;

    #[test]
    fn transport_failures_are_transient() {
        for kind in [K::Connection, K::Timeout, K::Io, K::Protocol] {
            let e = WarehouseError::new(kind, "syntax error would not matter here");
            assert_eq!(classify(&e), Transient, "{kind:?}");
            // Even with a permanent-looking code: the transport failed before it mattered.
            let e = WarehouseError {
                sqlstate: Some("42601".into()),
                ..e
            };
            assert_eq!(classify(&e), Transient, "{kind:?}");
        }
    }

    #[test]
    fn sqlstates_classify_by_class() {
        let table: &[(&str, ErrorClass, &str)] = &[
            ("08000", Transient, "connection_exception"),
            ("08006", Transient, "connection_failure"),
            ("08001", Transient, "sqlclient_unable_to_establish_sqlconnection"),
            ("08P01", Transient, "protocol_violation"),
            ("40001", Transient, "serialization_failure"),
            ("40P01", Transient, "deadlock_detected"),
            ("40003", Transient, "statement_completion_unknown"),
            ("40002", Permanent, "transaction_integrity_constraint_violation"),
            ("53100", Transient, "disk_full"),
            ("53200", Transient, "out_of_memory"),
            ("53300", Transient, "too_many_connections"),
            ("57014", Transient, "query_canceled"),
            ("57P01", Transient, "admin_shutdown"),
            ("57P02", Transient, "crash_shutdown"),
            ("57P03", Transient, "cannot_connect_now"),
            ("57P04", Permanent, "database_dropped"),
            ("58000", Transient, "system_error"),
            ("58030", Transient, "io_error"),
            ("55P03", Transient, "lock_not_available"),
            ("55006", Transient, "object_in_use"),
            ("55000", Permanent, "object_not_in_prerequisite_state"),
            ("25006", Transient, "read_only_sql_transaction"),
            ("25P02", Permanent, "in_failed_sql_transaction"),
            ("28P01", Transient, "invalid_password"),
            ("72000", Transient, "snapshot_too_old"),
            ("22P02", Row, "invalid_text_representation"),
            ("22001", Row, "string_data_right_truncation"),
            ("22003", Row, "numeric_value_out_of_range"),
            ("22P05", Row, "untranslatable_character"),
            ("22021", Row, "character_not_in_repertoire"),
            ("22P04", Permanent, "bad_copy_file_format"),
            ("23502", Row, "not_null_violation"),
            ("23514", Row, "check_violation"),
            ("23503", Permanent, "foreign_key_violation"),
            ("23505", Transient, "unique_violation"),
            ("42601", Permanent, "syntax_error"),
            ("42P01", Permanent, "undefined_table"),
            ("42703", Permanent, "undefined_column"),
            ("42501", Permanent, "insufficient_privilege"),
            ("0A000", Permanent, "feature_not_supported"),
            ("0a000", Permanent, "lower-case is read the same"),
            ("54000", Permanent, "program_limit_exceeded"),
            ("XX000", Permanent, "internal_error"),
            ("XX001", Permanent, "data_corrupted"),
            ("P0001", Permanent, "raise_exception"),
            ("Z", Permanent, "not a SQLSTATE at all"),
            ("", Permanent, "empty"),
        ];
        for (state, want, name) in table {
            let e = WarehouseError::with_sqlstate(*state, "some message");
            assert_eq!(classify(&e), *want, "{state} {name}");
        }
    }

    #[test]
    fn redshift_messages_decide_before_the_code() {
        let table: &[(&str, &str, ErrorClass)] = &[
            (
                "XX000",
                "1023 DETAIL: Serializable isolation violation on table - 100080, transactions forming the cycle are: 1, 2",
                Transient,
            ),
            (
                "XX000",
                "Load into table 'orders' failed.  Check 'stl_load_errors' system table for details.",
                Row,
            ),
            // The load-error pointer wins even under a transient-looking code.
            (
                "40001",
                "Load into table 'orders' failed. Check 'STL_LOAD_ERRORS' system table for details.",
                Row,
            ),
            (
                "XX000",
                "S3ServiceException:Please reduce your request rate.,Status 503,Error SlowDown",
                Transient,
            ),
            (
                "XX000",
                "deadlock detected DETAIL: Process 26117 waits for AccessExclusiveLock",
                Transient,
            ),
            ("XX000", "canceling statement due to lock timeout", Transient),
            (
                "XX000",
                "S3ServiceException:Access Denied,Status 403,Error AccessDenied",
                Permanent,
            ),
            ("XX000", "Cannot COPY into nonexistent table orders", Permanent),
        ];
        for (state, message, want) in table {
            let e = WarehouseError::with_sqlstate(*state, *message);
            assert_eq!(classify(&e), *want, "{message}");
        }
    }

    #[test]
    fn sqlite_codes_classify() {
        let table: &[(i32, ErrorClass, &str)] = &[
            (5, Transient, "SQLITE_BUSY"),
            (517, Transient, "SQLITE_BUSY_SNAPSHOT"),
            (261, Transient, "SQLITE_BUSY_RECOVERY"),
            (6, Transient, "SQLITE_LOCKED"),
            (262, Transient, "SQLITE_LOCKED_SHAREDCACHE"),
            (10, Transient, "SQLITE_IOERR"),
            (13, Transient, "SQLITE_FULL"),
            (17, Transient, "SQLITE_SCHEMA"),
            (2067, Transient, "SQLITE_CONSTRAINT_UNIQUE"),
            (1555, Transient, "SQLITE_CONSTRAINT_PRIMARYKEY"),
            (1299, Row, "SQLITE_CONSTRAINT_NOTNULL"),
            (19, Permanent, "SQLITE_CONSTRAINT"),
            (1, Permanent, "SQLITE_ERROR"),
            (11, Permanent, "SQLITE_CORRUPT"),
            (20, Permanent, "SQLITE_MISMATCH"),
        ];
        for (code, want, name) in table {
            let e = WarehouseError::with_sqlite_code(*code, "some message");
            assert_eq!(classify(&e), *want, "{code} {name}");
        }
    }

    #[test]
    fn sqlite_lock_messages_without_a_code_are_transient() {
        for m in ["database is locked", "(code: 6) database table is locked: orders"] {
            assert_eq!(classify(&WarehouseError::new(K::Database, m)), Transient, "{m}");
        }
    }

    #[test]
    fn unrecognised_errors_default_by_kind() {
        assert_eq!(
            classify(&WarehouseError::new(K::Database, "something odd")),
            Permanent
        );
        assert_eq!(
            classify(&WarehouseError::new(K::Other, "pool exploded")),
            Transient
        );
    }

    #[test]
    fn errors_render_with_their_code() {
        let e = WarehouseError::with_sqlstate("40001", "could not serialize access");
        assert_eq!(
            e.to_string(),
            "database error (SQLSTATE 40001): could not serialize access"
        );
        let e = WarehouseError::with_sqlite_code(5, "database is locked");
        assert_eq!(
            e.to_string(),
            "database error (SQLite code 5): database is locked"
        );
        let e = WarehouseError::new(K::Connection, "connection refused");
        assert_eq!(e.to_string(), "connection error: connection refused");
        assert_eq!(
            WarehouseError::new(K::Io, "broken pipe").to_string(),
            "I/O error: broken pipe"
        );
        assert_eq!(ErrorClass::Transient.as_str(), "transient");
        assert_eq!(ErrorClass::Permanent.as_str(), "permanent");
        assert_eq!(ErrorClass::Row.as_str(), "row");
    }
}
