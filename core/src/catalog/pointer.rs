//! JSON Pointers (RFC 6901) from the catalog, parsed once at load so mapping an event walks
//! pre-split tokens instead of re-parsing the pointer text per row.

use std::fmt;

use serde_json::Value;

/// A parsed JSON Pointer such as `/customer/address/0/city`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pointer {
    text: String,
    tokens: Vec<String>,
}

/// Why a text is not a JSON Pointer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PointerError {
    #[error("JSON pointer {0:?} must be empty or start with '/'")]
    NoLeadingSlash(String),
    #[error("JSON pointer {0:?} has '~' not followed by '0' or '1'")]
    BadEscape(String),
}

impl Pointer {
    pub fn parse(text: &str) -> Result<Self, PointerError> {
        if text.is_empty() {
            return Ok(Pointer {
                text: String::new(),
                tokens: Vec::new(),
            });
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(PointerError::NoLeadingSlash(text.to_owned()));
        };
        let tokens = rest
            .split('/')
            .map(|raw| unescape(raw).ok_or_else(|| PointerError::BadEscape(text.to_owned())))
            .collect::<Result<_, _>>()?;
        Ok(Pointer {
            text: text.to_owned(),
            tokens,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value at this pointer, if there is one. Array indices follow RFC 6901: decimal with
    /// no leading zeros.
    pub fn resolve<'v>(&self, mut value: &'v Value) -> Option<&'v Value> {
        for token in &self.tokens {
            value = match value {
                Value::Object(map) => map.get(token)?,
                Value::Array(items) => {
                    if token.len() > 1 && token.starts_with('0') {
                        return None;
                    }
                    items.get(token.parse::<usize>().ok()?)?
                }
                _ => return None,
            };
        }
        Some(value)
    }
}

fn unescape(raw: &str) -> Option<String> {
    if !raw.contains('~') {
        return Some(raw.to_owned());
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

impl fmt::Display for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resolves_like_rfc6901() {
        let doc = json!({"a": {"b/c": [10, {"d~e": true}]}, "": 1});
        let at = |p: &str| Pointer::parse(p).unwrap().resolve(&doc).cloned();
        assert_eq!(at("/a/b~1c/0"), Some(json!(10)));
        assert_eq!(at("/a/b~1c/1/d~0e"), Some(json!(true)));
        assert_eq!(at("/"), Some(json!(1)));
        assert_eq!(at(""), Some(doc.clone()));
        assert_eq!(at("/a/b~1c/01"), None);
        assert_eq!(at("/a/missing"), None);
        assert_eq!(at("/a/b~1c/0/deeper"), None);
    }

    #[test]
    fn rejects_malformed_pointers() {
        assert_eq!(
            Pointer::parse("a/b").unwrap_err().to_string(),
            "JSON pointer \"a/b\" must be empty or start with '/'"
        );
        assert_eq!(
            Pointer::parse("/a~2").unwrap_err().to_string(),
            "JSON pointer \"/a~2\" has '~' not followed by '0' or '1'"
        );
    }
}
