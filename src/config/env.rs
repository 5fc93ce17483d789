//! `${NAME}` / `${NAME:-default}` substitution in config string values.
//!
//! Substitution happens on the TOML document (string values only, never comments), and the
//! document is re-serialised with its layout intact, so line numbers in later errors still
//! match the file the operator edited.

use super::locate::KeyPath;
use toml_edit::{DocumentMut, Item, Value};

/// A `${NAME}` whose variable is not set.
pub struct MissingVar {
    pub path: KeyPath,
    pub name: String,
}

/// Replaces `${NAME}` in every string value of `doc`; returns the variables that were missing.
pub fn substitute(doc: &mut DocumentMut, env: &dyn Fn(&str) -> Option<String>) -> Vec<MissingVar> {
    let mut missing = Vec::new();
    for (k, item) in doc.as_table_mut().iter_mut() {
        walk_item(item, &KeyPath::root().key(&k), env, &mut missing);
    }
    missing
}

fn walk_item(item: &mut Item, path: &KeyPath, env: &dyn Fn(&str) -> Option<String>, out: &mut Vec<MissingVar>) {
    match item {
        Item::Value(v) => walk_value(v, path, env, out),
        Item::Table(t) => {
            for (k, child) in t.iter_mut() {
                walk_item(child, &path.key(&k), env, out);
            }
        }
        Item::ArrayOfTables(a) => {
            for (i, t) in a.iter_mut().enumerate() {
                for (k, child) in t.iter_mut() {
                    walk_item(child, &path.index(i).key(&k), env, out);
                }
            }
        }
        Item::None => {}
    }
}

fn walk_value(v: &mut Value, path: &KeyPath, env: &dyn Fn(&str) -> Option<String>, out: &mut Vec<MissingVar>) {
    match v {
        Value::String(s) if s.value().contains("${") => {
            let (replaced, missing) = expand(s.value(), env);
            for name in missing {
                out.push(MissingVar { path: path.clone(), name });
            }
            let decor = s.decor().clone();
            let mut new = toml_edit::Formatted::new(replaced);
            *new.decor_mut() = decor;
            *s = new;
        }
        Value::Array(a) => {
            for (i, child) in a.iter_mut().enumerate() {
                walk_value(child, &path.index(i), env, out);
            }
        }
        Value::InlineTable(t) => {
            for (k, child) in t.iter_mut() {
                walk_value(child, &path.key(&k), env, out);
            }
        }
        _ => {}
    }
}

/// Expands `${NAME}` and `${NAME:-default}` in one string. `$${` stays a literal `${`.
pub fn expand(input: &str, env: &dyn Fn(&str) -> Option<String>) -> (String, Vec<String>) {
    let mut out = String::with_capacity(input.len());
    let mut missing = Vec::new();
    let mut rest = input;
    while let Some(pos) = rest.find("${") {
        if rest[..pos].ends_with('$') {
            out.push_str(&rest[..pos - 1]);
            out.push_str("${");
            rest = &rest[pos + 2..];
            continue;
        }
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[pos..]);
            rest = "";
            break;
        };
        let spec = &after[..end];
        let (name, default) = match spec.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (spec, None),
        };
        match (env(name).filter(|v| !v.is_empty() || default.is_none()), default) {
            (Some(value), _) => out.push_str(&value),
            (None, Some(d)) => out.push_str(d),
            (None, None) => missing.push(name.to_string()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    (out, missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("alpha".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands() {
        assert_eq!(expand("x${A}y", &env), ("xalphay".into(), vec![]));
        assert_eq!(expand("${B}", &env), ("".into(), vec!["B".to_string()]));
        assert_eq!(expand("${B:-dflt}", &env), ("dflt".into(), vec![]));
        assert_eq!(expand("${EMPTY:-d}", &env), ("d".into(), vec![]));
        assert_eq!(expand("${EMPTY}", &env), ("".into(), vec![]));
        assert_eq!(expand("$${A}", &env), ("${A}".into(), vec![]));
        assert_eq!(expand("no vars", &env), ("no vars".into(), vec![]));
    }

    #[test]
    fn substitutes_in_document_keeping_lines() {
        let text = "# ${NOT_IN_COMMENTS}\n[a]\nk = \"${A}\" # c\nl = [\"${B}\"]\n";
        let mut doc: DocumentMut = text.parse().unwrap();
        let missing = substitute(&mut doc, &env);
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].name, "B");
        assert_eq!(missing[0].path.to_string(), "a.l[0]");
        let out = doc.to_string();
        assert_eq!(out.lines().count(), text.lines().count());
        assert!(out.contains("k = \"alpha\" # c"));
        assert!(out.contains("${NOT_IN_COMMENTS}"));
    }
}
