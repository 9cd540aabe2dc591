//! Where in the file a key path is: every config error names the file, line, column and key.

use std::fmt;
use std::path::{Path, PathBuf};

use hookfan_connectors::{KeyPart, KeyPath};
use toml::de::{DeTable, DeValue};

/// Turns serde_path_to_error's path into ours, under `base`.
pub fn from_serde(base: &KeyPath, path: &serde_path_to_error::Path) -> KeyPath {
    use serde_path_to_error::Segment;
    let mut out = base.clone();
    for seg in path.iter() {
        match seg {
            Segment::Map { key } => out.0.push(KeyPart::Key(key.clone())),
            Segment::Seq { index } => out.0.push(KeyPart::Index(*index)),
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    out
}

/// One problem in a config file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// The key path, e.g. `destinations.crm.fields.email`; empty for a syntax error.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Turns key paths and byte offsets into [`Problem`]s for one file.
pub struct Locator<'a> {
    file: &'a Path,
    text: &'a str,
    doc: Option<DeTable<'a>>,
}

impl<'a> Locator<'a> {
    pub fn new(file: &'a Path, text: &'a str, doc: Option<DeTable<'a>>) -> Self {
        Locator { file, text, doc }
    }

    /// A problem at a byte offset (syntax errors).
    pub fn at_offset(&self, offset: usize, key: &str, message: impl Into<String>) -> Problem {
        let (line, column) = line_col(self.text, offset);
        Problem {
            file: self.file.to_path_buf(),
            line,
            column,
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// A problem at a key: the key's own position, or its nearest existing parent's.
    pub fn at(&self, path: &KeyPath, message: impl Into<String>) -> Problem {
        let offset = self.doc.as_ref().map(|d| span_of(d, &path.0)).unwrap_or(0);
        self.at_offset(offset, &path.to_string(), message)
    }
}

/// The byte offset of the deepest part of `path` that the document has.
fn span_of(doc: &DeTable<'_>, path: &[KeyPart]) -> usize {
    let mut offset = 0;
    let mut table = Some(doc);
    let mut array: Option<&toml::de::DeArray<'_>> = None;
    for seg in path {
        let value: &toml::Spanned<DeValue<'_>> = match (seg, table, array) {
            (KeyPart::Key(k), Some(t), _) => match t.iter().find(|(key, _)| key.get_ref() == k) {
                Some((key, value)) => {
                    offset = key.span().start;
                    value
                }
                None => return offset,
            },
            (KeyPart::Index(i), _, Some(a)) => match a.get(*i) {
                Some(value) => {
                    offset = value.span().start;
                    value
                }
                None => return offset,
            },
            _ => return offset,
        };
        table = value.get_ref().as_table();
        array = value.get_ref().as_array();
    }
    offset
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_in_headers_and_inline_tables() {
        let text = "[server]\nlisten = \"x\"\n\n[destinations.crm]\ntype = \"webhook\"\nfields = { email = \"{{ a }}\" }\nlist = [1, 2]\n";
        let doc = DeTable::parse(text).unwrap().into_inner();
        let loc = Locator::new(Path::new("c.toml"), text, Some(doc));
        let p = loc.at(&KeyPath::root().key("server").key("listen"), "m");
        assert_eq!((p.line, p.column), (2, 1));
        let p = loc.at(
            &KeyPath::root()
                .key("destinations")
                .key("crm")
                .key("fields")
                .key("email"),
            "m",
        );
        assert_eq!((p.line, p.column), (6, 12));
        let p = loc.at(
            &KeyPath::root()
                .key("destinations")
                .key("crm")
                .key("list")
                .index(1),
            "m",
        );
        assert_eq!((p.line, p.column), (7, 12));
        // A missing key points at its parent.
        let p = loc.at(
            &KeyPath::root().key("destinations").key("crm").key("url"),
            "m",
        );
        assert_eq!(p.line, 4);
        assert_eq!(p.to_string(), "c.toml:4:15: destinations.crm.url: m");
    }

    #[test]
    fn columns_count_characters() {
        // "é" is two bytes but one column.
        assert_eq!(line_col("aé = 1", 3), (1, 3));
        assert_eq!(line_col("é = 1\nab", 7), (2, 1));
        assert_eq!(line_col("é = 1\nab", 8), (2, 2));
    }
}
