//! SQL identifiers: the only names that ever reach SQL text or an object key (contract 6).
//!
//! Every table and column name comes from the catalog and passes [`validate`] at load time, so
//! nothing an event carries can name a table, a column or a key prefix.

use std::fmt;

/// Why a name cannot be an identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentError {
    #[error("{0:?} is not a valid identifier: it must match ^[a-z_][a-z0-9_]{{0,126}}$")]
    Pattern(String),
    #[error("{0:?} is a reserved word in PostgreSQL or Redshift")]
    Reserved(String),
}

/// Checks `^[a-z_][a-z0-9_]{0,126}$` and the reserved words of both warehouses.
pub fn validate(name: &str) -> Result<(), IdentError> {
    let bytes = name.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 127
        && (bytes[0].is_ascii_lowercase() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_');
    if !ok {
        return Err(IdentError::Pattern(name.to_owned()));
    }
    if RESERVED.binary_search(&name).is_ok() {
        return Err(IdentError::Reserved(name.to_owned()));
    }
    Ok(())
}

/// A validated name, written double-quoted so that SQL never reinterprets it.
#[derive(Debug, Clone, Copy)]
pub struct Quoted<'a>(pub &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Validated names hold no quote; doubling keeps this safe even if one slipped through.
        write!(f, "\"{}\"", self.0.replace('"', "\"\""))
    }
}

/// Reserved words of PostgreSQL (SQL key words marked "reserved") and Redshift's reserved
/// words, lowercase and sorted for binary search.
const RESERVED: &[&str] = &[
    "aes128",
    "aes256",
    "all",
    "allowoverwrite",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "authorization",
    "az64",
    "backup",
    "between",
    "binary",
    "blanksasnull",
    "both",
    "bytedict",
    "bzip2",
    "case",
    "cast",
    "check",
    "collate",
    "column",
    "concurrently",
    "constraint",
    "create",
    "credentials",
    "cross",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "current_user_id",
    "default",
    "deferrable",
    "deflate",
    "defrag",
    "delta",
    "delta32k",
    "desc",
    "disable",
    "distinct",
    "do",
    "else",
    "emptyasnull",
    "enable",
    "encode",
    "encrypt",
    "encryption",
    "end",
    "except",
    "explicit",
    "false",
    "fetch",
    "for",
    "foreign",
    "freeze",
    "from",
    "full",
    "globaldict256",
    "globaldict64k",
    "grant",
    "group",
    "gzip",
    "having",
    "identity",
    "ignore",
    "ilike",
    "in",
    "initially",
    "inner",
    "intersect",
    "interval",
    "into",
    "is",
    "isnull",
    "join",
    "lateral",
    "leading",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "lun",
    "luns",
    "lzo",
    "lzop",
    "minus",
    "mostly16",
    "mostly32",
    "mostly8",
    "natural",
    "new",
    "not",
    "notnull",
    "null",
    "nulls",
    "off",
    "offline",
    "offset",
    "oid",
    "old",
    "on",
    "only",
    "open",
    "or",
    "order",
    "outer",
    "overlaps",
    "parallel",
    "partition",
    "percent",
    "permissions",
    "pivot",
    "placing",
    "primary",
    "raw",
    "readratio",
    "recover",
    "references",
    "rejectlog",
    "resort",
    "respect",
    "restore",
    "returning",
    "right",
    "select",
    "session_user",
    "similar",
    "snapshot",
    "some",
    "symmetric",
    "sysdate",
    "system",
    "table",
    "tablesample",
    "tag",
    "tdes",
    "text255",
    "text32k",
    "then",
    "timestamp",
    "to",
    "top",
    "trailing",
    "true",
    "truncatecolumns",
    "union",
    "unique",
    "unnest",
    "unpivot",
    "user",
    "using",
    "variadic",
    "verbose",
    "wallet",
    "when",
    "where",
    "window",
    "with",
    "without",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_list_is_sorted_for_binary_search() {
        assert!(
            RESERVED.windows(2).all(|w| w[0] < w[1]),
            "RESERVED must stay sorted and unique"
        );
    }

    #[test]
    fn accepts_plain_names() {
        for ok in ["orders", "_private", "a1_b2", &"a".repeat(127)] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_with_a_message_naming_the_rule() {
        let cases = [
            (
                "Orders",
                "\"Orders\" is not a valid identifier: it must match ^[a-z_][a-z0-9_]{0,126}$",
            ),
            (
                "1st",
                "\"1st\" is not a valid identifier: it must match ^[a-z_][a-z0-9_]{0,126}$",
            ),
            (
                "a-b",
                "\"a-b\" is not a valid identifier: it must match ^[a-z_][a-z0-9_]{0,126}$",
            ),
            (
                "",
                "\"\" is not a valid identifier: it must match ^[a-z_][a-z0-9_]{0,126}$",
            ),
            (
                "select",
                "\"select\" is a reserved word in PostgreSQL or Redshift",
            ),
            (
                "timestamp",
                "\"timestamp\" is a reserved word in PostgreSQL or Redshift",
            ),
        ];
        for (name, message) in cases {
            assert_eq!(validate(name).unwrap_err().to_string(), message);
        }
        assert!(validate(&"a".repeat(128)).is_err());
    }

    #[test]
    fn quoting_doubles_quotes() {
        assert_eq!(Quoted("orders").to_string(), "\"orders\"");
        assert_eq!(Quoted("a\"b").to_string(), "\"a\"\"b\"");
    }
}
