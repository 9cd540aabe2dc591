//! Key paths into the config file (`destinations.crm.fields."address.city"`, `retry.schedule[1]`),
//! in parts rather than a dotted string, so a key holding a dot still points at the right line.

use std::fmt;

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    Key(String),
    Index(usize),
}

/// A path of keys, from the file's root or from a destination's table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<KeyPart>);

impl KeyPath {
    pub fn root() -> Self {
        KeyPath(Vec::new())
    }

    pub fn key(&self, key: impl Into<String>) -> Self {
        let mut next = self.clone();
        next.0.push(KeyPart::Key(key.into()));
        next
    }

    pub fn index(&self, i: usize) -> Self {
        let mut next = self.clone();
        next.0.push(KeyPart::Index(i));
        next
    }

    /// `self` followed by `rest` (a destination's path, then a key inside it).
    pub fn join(&self, rest: &KeyPath) -> Self {
        let mut next = self.clone();
        next.0.extend(rest.0.iter().cloned());
        next
    }

    pub fn parts(&self) -> &[KeyPart] {
        &self.0
    }
}

/// Prints like a TOML key: bare where TOML allows it, quoted otherwise.
impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for part in &self.0 {
            match part {
                KeyPart::Key(k) => {
                    if !first {
                        f.write_str(".")?;
                    }
                    let bare = !k.is_empty()
                        && k.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    if bare {
                        f.write_str(k)?;
                    } else {
                        write!(f, "{k:?}")?;
                    }
                }
                KeyPart::Index(i) => write!(f, "[{i}]")?,
            }
            first = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_print_like_toml_keys() {
        let p = KeyPath::root()
            .key("destinations")
            .key("crm")
            .key("fields")
            .key("address.city");
        assert_eq!(p.to_string(), "destinations.crm.fields.\"address.city\"");
        assert_eq!(
            KeyPath::root()
                .key("retry")
                .key("schedule")
                .index(1)
                .to_string(),
            "retry.schedule[1]"
        );
        let joined = KeyPath::root()
            .key("a")
            .join(&KeyPath::root().key("b").index(0));
        assert_eq!(joined.to_string(), "a.b[0]");
    }
}
