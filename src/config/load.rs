//! Reading the file: TOML with positions, `${VAR}` substitution, raw structs, then `validate`.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::locate::Locator;
use super::raw::RawConfig;
use super::validate::Validator;
use super::{Config, ConfigError, KeyPart, KeyPath, Problem, env};

impl Config {
    /// Reads, substitutes `${VAR}` from the process environment, and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config = Config::parse(&text, path, &|name| std::env::var(name).ok())?;
        config.check_files()?;
        Ok(config)
    }

    /// Validates a config's text without touching the file system. `file` names it in errors and
    /// anchors relative paths.
    pub fn parse(
        text: &str,
        file: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let doc = match toml::de::DeTable::parse(text) {
            Ok(doc) => doc.into_inner(),
            Err(e) => {
                let loc = Locator::new(file, text, None);
                let offset = e.span().map(|s| s.start).unwrap_or(0);
                return Err(ConfigError::Invalid(vec![loc.at_offset(
                    offset,
                    "",
                    format!("TOML syntax error: {}", e.message().trim()),
                )]));
            }
        };
        let loc = Locator::new(file, text, Some(doc));
        let mut tree: toml::Value = match toml::from_str::<toml::Table>(text) {
            Ok(t) => toml::Value::Table(t),
            Err(e) => {
                let offset = e.span().map(|s| s.start).unwrap_or(0);
                return Err(ConfigError::Invalid(vec![loc.at_offset(
                    offset,
                    "",
                    e.message().trim(),
                )]));
            }
        };
        let mut missing = Vec::new();
        env::substitute(&mut tree, &KeyPath::root(), env, &mut missing);
        if !missing.is_empty() {
            return Err(ConfigError::Invalid(
                missing
                    .into_iter()
                    .map(|m| loc.at(&m.path, m.message))
                    .collect(),
            ));
        }
        let raw: RawConfig = from_value(tree, &KeyPath::root())
            .map_err(|p| ConfigError::Invalid(vec![p.locate(&loc)]))?;
        let dir = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        Validator::new(&loc, dir).config(raw, file)
    }

    /// The checks that need the file system: TLS files exist.
    fn check_files(&self) -> Result<(), ConfigError> {
        let Some(tls) = &self.server.tls else {
            return Ok(());
        };
        let text = std::fs::read_to_string(&self.file).unwrap_or_default();
        let doc = toml::de::DeTable::parse(&text).ok().map(|d| d.into_inner());
        let loc = Locator::new(&self.file, &text, doc);
        let mut problems = Vec::new();
        for (key, path) in [("cert", &tls.cert), ("key", &tls.key)] {
            if let Err(e) = std::fs::File::open(path) {
                problems.push(loc.at(
                    &KeyPath::root().key("server").key("tls").key(key),
                    format!("cannot read {}: {e}", path.display()),
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

/// A problem known by key path only, located later.
pub(super) struct Unlocated {
    pub path: KeyPath,
    pub message: String,
}

impl Unlocated {
    pub fn locate(self, loc: &Locator<'_>) -> Problem {
        loc.at(&self.path, self.message)
    }
}

/// Deserializes with the key path of any error, including the key an "unknown field" names.
pub(super) fn from_value<T: DeserializeOwned>(
    value: toml::Value,
    base: &KeyPath,
) -> Result<T, Unlocated> {
    serde_path_to_error::deserialize(value).map_err(|e| unlocated(base, &e))
}

/// serde's error at its key path, with the key an "unknown field" names, and no quoted value.
pub(super) fn unlocated(
    base: &KeyPath,
    e: &serde_path_to_error::Error<toml::de::Error>,
) -> Unlocated {
    let mut path = super::locate::from_serde(base, e.path());
    let message = hide_strings(e.inner().message().trim());
    if let Some(field) = unknown_field(&message)
        && path.parts().last() != Some(&KeyPart::Key(field.clone()))
    {
        path = path.key(field);
    }
    Unlocated { path, message }
}

/// serde quotes the value it refused (`invalid type: string "s3cret", expected a sequence`): a
/// secret written in the wrong shape must not be printed, so quoted strings are hidden.
fn hide_strings(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find("string \"") {
        out.push_str(&rest[..i]);
        out.push_str("string (value hidden)");
        let quoted = &rest[i + "string \"".len()..];
        let mut escaped = false;
        let end = quoted.char_indices().find_map(|(j, c)| {
            let close = c == '"' && !escaped;
            escaped = c == '\\' && !escaped;
            close.then_some(j + 1)
        });
        rest = end.map_or("", |j| &quoted[j..]);
    }
    out.push_str(rest);
    out
}

/// The key in serde's "unknown field `x`, expected …".
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest[..rest.find('`')?].to_string())
}
