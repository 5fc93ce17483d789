//! The config reference, `docs/configuration.md`, names every key the code has.
//!
//! The keys come from the code, not from a list kept by hand: the page's "A file with every
//! key" example is deserialised into a [`Config`] (so it cannot name a key the code lacks) and
//! serialised back, where every field of every struct appears, set or not. Each key is then
//! looked up in the page's tables, under the heading of its table. The example must set every
//! key (a list holds an element, an option a value): a table that is unset would serialise as
//! `null` and hide its keys, and the test says which one to add.

use super::{Config, ProviderConfig};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

const PAGE: &str = include_str!("../../docs/configuration.md");

/// A key as the page documents it: its table as the heading names it (without brackets; a
/// provider type's own table is `providers.NAME type=smtp`), and the key.
type Key = (String, String);

fn every_key_example() -> &'static str {
    let after = PAGE.split_once("## A file with every key").expect("the page has a file with every key").1;
    let block = after.split_once("```toml\n").expect("a toml block follows").1;
    block.split_once("```").expect("the block ends").0
}

/// Every key in a serialised config, and whether the example sets it. A key that is a table
/// somewhere (`match` of one route) is that table, even where it is unset (another route).
fn keys_of(config: &Config) -> BTreeMap<Key, bool> {
    let mut keys = BTreeMap::new();
    code_keys(&serde_json::to_value(config).expect("a config serialises"), "", &mut keys);
    let tables: BTreeSet<String> = keys.keys().map(|(table, _)| table.clone()).collect();
    keys.retain(|(table, key), _| !tables.contains(&path(table, key)));
    keys
}

fn path(table: &str, key: &str) -> String {
    if table.is_empty() { key.to_string() } else { format!("{table}.{key}") }
}

fn code_keys(value: &Value, table: &str, out: &mut BTreeMap<Key, bool>) {
    let Value::Object(map) = value else { return };
    let join = |k: &str| path(table, k);
    for (k, v) in map {
        match v {
            Value::Object(_) if table == "providers" => {
                let kind = v.get("type").and_then(Value::as_str).unwrap_or_default();
                code_keys(v, &format!("providers.NAME type={kind}"), out);
            }
            // `[providers.NAME.health]` takes the keys of `[health]`.
            Value::Object(_) if k == "health" && table.starts_with("providers.NAME") => code_keys(v, "health", out),
            Value::Object(_) => code_keys(v, &join(k), out),
            Value::Array(items) if items.iter().any(Value::is_object) => {
                for item in items {
                    code_keys(item, &join(k), out);
                }
            }
            _ => {
                let set = !(v.is_null() || v.as_array().is_some_and(Vec::is_empty));
                *out.entry((table.to_string(), k.clone())).or_default() |= set;
            }
        }
    }
}

fn code_spans(line: &str) -> Vec<&str> {
    line.split('`').skip(1).step_by(2).collect()
}

/// The keys the page documents: a table row starting with a key in backticks, under a heading
/// naming its table (`## \`[server.tls]\``, `### SMTP: \`[providers.NAME]\` with \`type = "smtp"\``).
fn documented() -> BTreeSet<Key> {
    let mut table = String::new();
    let mut out = BTreeSet::new();
    for line in PAGE.lines() {
        if line.starts_with('#') {
            let spans = code_spans(line);
            let name = spans.iter().find(|s| s.starts_with('[')).map(|s| s.trim_matches(['[', ']']));
            table = name.unwrap_or_default().to_string();
            if let Some(kind) = spans.iter().find_map(|s| s.strip_prefix("type = \"")) {
                table = format!("{table} type={}", kind.trim_end_matches('"'));
            }
        } else if line.starts_with("| `")
            && let Some(key) = code_spans(line).first()
        {
            out.insert((table.clone(), key.to_string()));
        }
    }
    out
}

/// Documented under its own table, or (a provider type's key) among the keys every type has.
fn is_documented(documented: &BTreeSet<Key>, (table, key): &Key) -> bool {
    let common = table.split_once(" type=").map(|(t, _)| t.to_string());
    documented.contains(&(table.clone(), key.clone())) || common.is_some_and(|t| documented.contains(&(t, key.clone())))
}

/// The provider types, from serde's own list (the answer to an unknown one).
fn provider_types() -> BTreeSet<String> {
    let error = toml::from_str::<ProviderConfig>("type = \"?\"").expect_err("no such type");
    let message = error.message().to_string();
    let expected = message.split_once("expected").expect("serde lists the variants").1;
    code_spans(expected).into_iter().map(str::to_string).collect()
}

#[test]
fn every_key_in_the_code_is_in_the_configuration_reference() {
    let config: Config = toml::from_str(every_key_example())
        .unwrap_or_else(|e| panic!("docs/configuration.md, the file with every key: {e}"));
    let keys = keys_of(&config);
    let documented = documented();
    let show = |(table, key): &Key| format!("{table}: {key}");
    let missing: Vec<String> = keys.keys().filter(|k| !is_documented(&documented, k)).map(show).collect();
    assert!(missing.is_empty(), "keys in the code but not in docs/configuration.md: {missing:#?}");
    let unset: Vec<String> = keys.iter().filter(|(_, set)| !**set).map(|(k, _)| show(k)).collect();
    assert!(
        unset.is_empty(),
        "set these in docs/configuration.md's file with every key, so that they are checked: {unset:#?}"
    );
    let types: BTreeSet<String> = config.providers.values().map(|p| p.type_name().to_string()).collect();
    assert_eq!(types, provider_types(), "the file with every key has a provider of every type");
}

#[test]
fn the_reference_test_sees_a_key_the_page_lacks() {
    let config: Config = toml::from_str(every_key_example()).unwrap();
    let keys = keys_of(&config);
    let documented = documented();
    let sample = [
        ("server.tls", "cert"),
        ("providers.NAME type=smtp", "host"),
        ("providers.NAME type=file", "canary"),
        ("health", "window"),
        ("routes.match", "senders"),
    ];
    for key in sample {
        let key = (key.0.to_string(), key.1.to_string());
        assert!(keys.contains_key(&key), "{key:?} comes from the code");
        assert!(is_documented(&documented, &key), "{key:?} is read from the page");
    }
    assert!(!is_documented(&documented, &("server".to_string(), "no_such_key".to_string())));
}
