//! `${VAR}` and `${VAR:-default}` in string values, from the environment. `$${` writes a literal `${`.

use hookfan_connectors::KeyPath;

/// A variable that is not set and has no default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub path: KeyPath,
    pub message: String,
}

/// Replaces variables in every string of `value`, in place; returns every problem found.
pub fn substitute(
    value: &mut toml::Value,
    path: &KeyPath,
    lookup: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Missing>,
) {
    match value {
        toml::Value::String(s) if s.contains('$') => match expand(s, lookup) {
            Ok(expanded) => *s = expanded,
            Err(message) => problems.push(Missing {
                path: path.clone(),
                message,
            }),
        },
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute(item, &path.index(i), lookup, problems);
            }
        }
        toml::Value::Table(table) => {
            for (k, v) in table.iter_mut() {
                substitute(v, &path.key(k.clone()), lookup, problems);
            }
        }
        _ => {}
    }
}

/// Expands one string.
pub fn expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix("${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let end = tail.find('}').ok_or_else(|| {
                "unclosed \"${\": write \"${NAME}\", or \"$${\" for a literal \"${\"".to_string()
            })?;
            let inner = &tail[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(format!(
                    "\"${{{inner}}}\" is not a valid variable reference"
                ));
            }
            match (lookup(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable {name} is not set (write ${{{name}:-default}} to give a default)"
                    ));
                }
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cret".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_variables_and_defaults() {
        assert_eq!(expand("Bearer ${TOKEN}", &env), Ok("Bearer s3cret".into()));
        assert_eq!(expand("${NOPE:-fallback}", &env), Ok("fallback".into()));
        assert_eq!(expand("${EMPTY:-x}", &env), Ok("".into()));
        assert_eq!(
            expand("cost: $5, $${HOME}", &env),
            Ok("cost: $5, ${HOME}".into())
        );
        assert!(
            expand("${NOPE}", &env)
                .unwrap_err()
                .contains("NOPE is not set")
        );
        assert!(expand("${TOKEN", &env).is_err());
        assert!(expand("${1X}", &env).is_err());
    }

    #[test]
    fn reports_the_key_of_a_missing_variable() {
        let mut v: toml::Value =
            toml::from_str("[sources.q]\ntoken = \"${NOPE}\"\nlist = [\"${TOKEN}\"]\n").unwrap();
        let mut problems = Vec::new();
        substitute(&mut v, &KeyPath::root(), &env, &mut problems);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path.to_string(), "sources.q.token");
        assert_eq!(v["sources"]["q"]["list"][0].as_str(), Some("s3cret"));
    }
}
