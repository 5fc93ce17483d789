//! Deserialising the config document into a [`Config`] while collecting every structural
//! problem — unknown keys, wrongly typed values, bad durations or sizes, missing keys — in one
//! run, not only the first one serde stops at.
//!
//! How: serde's derives stay the one schema (walking the document against a hand-written
//! schema would be a second copy of every struct, bound to drift). Each round deserialises
//! the document; the error is mapped from its span to the key it is about, recorded, and
//! neutralised in the document, and the next round finds the next one, for at most
//! [`MAX_ROUNDS`] rounds. Neutralising is one of:
//! - **remove** a key that is unknown or has a bad value, so its default takes over. Array
//!   elements are never removed (that would renumber `routes[2]` for every later message):
//!   a bad element takes its whole list with it;
//! - **stand in** for a missing required key with an empty string, list or table (whichever
//!   its type takes), so the rest of its table still gets checked;
//! - **stand in for a provider** whose `type` is missing or unknown with an empty file
//!   provider, so routes naming it do not report it as unknown.
//!
//! An error at or under a key already neutralised is a consequence, not news: it is fixed but
//! not reported again. Lines are found later from the key path in the original text, so the
//! edits made here never shift them. The semantic checks then run on what parsed; their
//! problems at or under a neutralised key are dropped by the caller (they would be about
//! stand-ins and defaults, not about what the operator wrote).

use super::locate::{KeyPath, Seg};
use super::{Config, FileProviderConfig, MailgunConfig, MandrillConfig, PostmarkConfig, ResendConfig};
use super::{SendgridConfig, SesConfig, SmtpProviderConfig};
use serde::de::DeserializeOwned;
use std::ops::Range;
use toml_edit::{Array, Document, DocumentMut, InlineTable, Item, TableLike, Value};

/// More rounds than this and the file is mostly wrong: what was found is enough to start.
const MAX_ROUNDS: usize = 100;

/// What deserialising found.
#[derive(Default)]
pub(super) struct Parsed {
    /// `None` when the document could not be made to deserialise.
    pub config: Option<Config>,
    /// Structural problems, in the order found (about document order).
    pub problems: Vec<(KeyPath, String)>,
    /// Keys removed or stood in for: problems at or under them are consequences.
    pub neutralised: Vec<KeyPath>,
}

/// One serde error, placed: the key it is about, and the field if it says one is missing.
struct Found {
    path: KeyPath,
    missing: Option<String>,
    message: String,
}

impl Found {
    /// The key the error concerns: the missing field itself, or where the error points.
    fn target(&self) -> KeyPath {
        match &self.missing {
            Some(field) => self.path.key(field),
            None => self.path.clone(),
        }
    }
}

/// A value put in for a missing key; the next candidate is tried when its type is wrong too.
struct StandIn {
    path: KeyPath,
    tried: usize,
}

fn stand_in_candidate(n: usize) -> Option<Value> {
    match n {
        0 => Some(Value::from("")),
        1 => Some(Value::Array(Array::new())),
        2 => Some(Value::InlineTable(InlineTable::new())),
        3 => Some(Value::from(0i64)),
        4 => Some(Value::from(false)),
        _ => None,
    }
}

/// Deserialises `doc` (already `${ENV}`-substituted), collecting every structural problem.
pub(super) fn deserialize(mut doc: DocumentMut) -> Parsed {
    let mut out = Parsed::default();
    let mut stand_ins: Vec<StandIn> = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let text = doc.to_string();
        let error = match toml::from_str::<Config>(&text) {
            Ok(config) => {
                out.config = Some(config);
                return out;
            }
            Err(e) => e,
        };
        let found = place(&doc, &text, &error);
        let target = found.target();
        if !out.neutralised.iter().any(|n| target.0.starts_with(&n.0)) {
            out.problems.push((target.clone(), found.message.clone()));
        }
        if !neutralise(&mut doc, &found, &mut stand_ins, &mut out.neutralised) {
            // No way to go on from here: what was found so far is the report.
            return out;
        }
    }
    out.problems.push((KeyPath::root(), format!("more than {MAX_ROUNDS} problems; fix these first")));
    out
}

/// Changes the document so the next round gets past `found`; false when it cannot.
fn neutralise(doc: &mut DocumentMut, found: &Found, stand_ins: &mut Vec<StandIn>, done: &mut Vec<KeyPath>) -> bool {
    let target = found.target();
    if let Some(s) = stand_ins.iter_mut().find(|s| s.path == target) {
        // The stand-in's type was wrong as well: the next one.
        s.tried += 1;
        return stand_in_candidate(s.tried).is_some_and(|v| set(doc, &target, Item::Value(v)));
    }
    if let Some(name) = provider_without_type(found) {
        let mut table = InlineTable::new();
        table.insert("type", Value::from("file"));
        table.insert("dir", Value::from(""));
        let path = KeyPath::root().key("providers").key(&name);
        done.push(path.clone());
        return set(doc, &path, Item::Value(Value::InlineTable(table)));
    }
    if found.missing.is_some() {
        done.push(target.clone());
        stand_ins.push(StandIn { path: target.clone(), tried: 0 });
        return stand_in_candidate(0).is_some_and(|v| set(doc, &target, Item::Value(v)));
    }
    // A bad value or an unknown key: remove the key (a list element takes its whole list).
    let mut key = target;
    while matches!(key.0.last(), Some(Seg::Index(_))) {
        key.0.pop();
    }
    let Some(Seg::Key(last)) = key.0.last().cloned() else { return false };
    done.push(key.clone());
    let parent = KeyPath(key.0[..key.0.len() - 1].to_vec());
    table_mut(doc, &parent).is_some_and(|t| t.remove(&last).is_some())
}

/// `providers.NAME` when the error is about its `type` (missing or not a provider type).
fn provider_without_type(found: &Found) -> Option<String> {
    let target = found.target();
    match target.0.as_slice() {
        [Seg::Key(p), Seg::Key(name), Seg::Key(t)] if p == "providers" && t == "type" => Some(name.clone()),
        _ => None,
    }
}

/// Puts `item` at `path` (replacing what is there).
fn set(doc: &mut DocumentMut, path: &KeyPath, item: Item) -> bool {
    let Some((Seg::Key(last), parent)) = path.0.split_last() else { return false };
    let parent = KeyPath(parent.to_vec());
    table_mut(doc, &parent).is_some_and(|t| {
        t.insert(last, item);
        true
    })
}

/// The table (header, inline or array element) at `path`.
fn table_mut<'a>(doc: &'a mut DocumentMut, path: &KeyPath) -> Option<&'a mut dyn TableLike> {
    let mut table: &mut dyn TableLike = doc.as_table_mut();
    let mut segs = path.0.iter().peekable();
    while let Some(seg) = segs.next() {
        let Seg::Key(k) = seg else { return None };
        let index = match segs.peek() {
            Some(Seg::Index(i)) => Some(*i),
            _ => None,
        };
        let item = table.get_mut(k)?;
        table = match (item, index) {
            (Item::ArrayOfTables(a), Some(i)) => {
                segs.next();
                a.get_mut(i)?
            }
            (Item::Value(Value::Array(a)), Some(i)) => {
                segs.next();
                a.get_mut(i)?.as_inline_table_mut()?
            }
            (item, _) => item.as_table_like_mut()?,
        };
    }
    Some(table)
}

/// The key an error is about. serde reports errors inside internally tagged tables (a
/// `[providers.NAME]`, whose `type` picks the struct) at the table itself: it buffers the
/// table and loses positions. Such a table is deserialised alone as its concrete type to
/// find the key.
fn place(doc: &DocumentMut, text: &str, error: &toml::de::Error) -> Found {
    let found = Found {
        path: error.span().map(|s| path_at(text, s)).unwrap_or_default(),
        missing: missing_field(error.message()),
        message: error.message().trim().to_string(),
    };
    match found.path.0.as_slice() {
        [Seg::Key(p), Seg::Key(name)] if p == "providers" && found.missing.as_deref() != Some("type") => {
            inside_provider(doc, name).unwrap_or(found)
        }
        _ => found,
    }
}

/// The first problem of `providers.NAME`, found by deserialising it alone as its type.
fn inside_provider(doc: &DocumentMut, name: &str) -> Option<Found> {
    let table = doc.get("providers")?.get(name)?;
    let kind = table.get("type")?.as_str()?.to_string();
    let mut alone = match table {
        Item::Table(t) => t.clone(),
        Item::Value(Value::InlineTable(t)) => t.clone().into_table(),
        _ => return None,
    };
    alone.remove("type");
    let text = DocumentMut::from(alone).to_string();
    let error = provider_error(&kind, &text)?;
    let within = error.span().map(|s| path_at(&text, s)).unwrap_or_default();
    let mut path = KeyPath::root().key("providers").key(name);
    path.0.extend(within.0);
    Some(Found { path, missing: missing_field(error.message()), message: error.message().trim().to_string() })
}

fn provider_error(kind: &str, text: &str) -> Option<toml::de::Error> {
    fn first<T: DeserializeOwned>(text: &str) -> Option<toml::de::Error> {
        toml::from_str::<T>(text).err()
    }
    match kind {
        "smtp" => first::<SmtpProviderConfig>(text),
        "file" => first::<FileProviderConfig>(text),
        "mandrill" => first::<MandrillConfig>(text),
        "ses" => first::<SesConfig>(text),
        "sendgrid" => first::<SendgridConfig>(text),
        "mailgun" => first::<MailgunConfig>(text),
        "postmark" => first::<PostmarkConfig>(text),
        "resend" => first::<ResendConfig>(text),
        _ => None,
    }
}

/// "missing field `name`" → `name`.
fn missing_field(message: &str) -> Option<String> {
    let rest = message.trim().strip_prefix("missing field `")?;
    rest.split_once('`').map(|(field, _)| field.to_string())
}

/// The deepest key whose key, value or table header covers the error's span. An empty span
/// is the document itself (serde's "missing field" at the top level).
fn path_at(text: &str, span: Range<usize>) -> KeyPath {
    let mut best = KeyPath::root();
    if span.is_empty() {
        return best;
    }
    if let Ok(doc) = Document::parse(text.to_string()) {
        walk_table(doc.as_table(), &KeyPath::root(), span.start, &mut best);
    }
    best
}

fn consider(span: Option<Range<usize>>, offset: usize, path: &KeyPath, best: &mut KeyPath) {
    if span.is_some_and(|s| s.contains(&offset)) && path.0.len() > best.0.len() {
        *best = path.clone();
    }
}

fn walk_table(table: &dyn TableLike, path: &KeyPath, offset: usize, best: &mut KeyPath) {
    for (name, _) in table.iter() {
        let Some((key, item)) = table.get_key_value(name) else { continue };
        let here = path.key(name);
        consider(key.span(), offset, &here, best);
        match item {
            Item::Table(t) => {
                consider(t.span(), offset, &here, best);
                walk_table(t, &here, offset, best);
            }
            Item::ArrayOfTables(a) => {
                for (i, t) in a.iter().enumerate() {
                    consider(t.span(), offset, &here.index(i), best);
                    walk_table(t, &here.index(i), offset, best);
                }
            }
            Item::Value(v) => walk_value(v, &here, offset, best),
            Item::None => {}
        }
    }
}

fn walk_value(value: &Value, path: &KeyPath, offset: usize, best: &mut KeyPath) {
    consider(value.span(), offset, path, best);
    match value {
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                walk_value(v, &path.index(i), offset, best);
            }
        }
        Value::InlineTable(t) => walk_table(t, path, offset, best),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "[server]\nhostname = \"t\"\nhttp_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n\
        [providers.a]\ntype = \"file\"\ndir = \"/tmp/a\"\n\n[[routes]]\nname = \"r\"\nproviders = [\"a\"]\n";

    fn found(text: &str) -> (Vec<String>, bool) {
        let parsed = deserialize(text.parse().unwrap());
        let problems = parsed.problems.iter().map(|(path, message)| format!("{path}: {message}")).collect();
        (problems, parsed.config.is_some())
    }

    #[test]
    fn every_unknown_key_and_bad_value_is_found_in_one_run() {
        let text = BASE
            .replace("hostname = \"t\"", "hostname = \"t\"\nmax_recipients = \"many\"\nhostnme = \"x\"")
            .replace("dir = \"/tmp/a\"", "dir = \"/tmp/a\"\nprobe = \"yes\"\ncanary_x = 1")
            + "\n[spool]\nmax_age = \"forever\"\n\n[[clients]]\nname = \"c\"\nallowed_senders = [\"*@x\", 5]\n";
        let (problems, parsed) = found(&text);
        assert!(parsed, "what is left deserialises");
        let expect = [
            "server.max_recipients: invalid type",
            "server.hostnme: unknown field",
            "providers.a.probe: invalid type",
            "providers.a.canary_x: unknown field",
            "spool.max_age: invalid duration",
            "clients[0].allowed_senders[1]: invalid type",
        ];
        for e in expect {
            assert!(problems.iter().any(|p| p.starts_with(e)), "{e} in {problems:#?}");
        }
        assert_eq!(problems.len(), expect.len(), "{problems:#?}");
    }

    #[test]
    fn a_missing_key_is_reported_once_and_the_rest_of_its_table_is_still_checked() {
        let text = BASE.replace("hostname = \"t\"\n", "").replace("name = \"r\"\n", "name = \"r\"\nwarm = 1\n")
            + "\n[[clients]]\nname = \"c\"\n\n[canary]\nfrom = \"a@b.c\"\nto = \"a@b.c\"\n";
        let (problems, parsed) = found(&text);
        assert!(parsed);
        let expect = [
            "server.hostname: missing field `hostname`",
            "routes[0].warm: unknown field",
            "clients[0].allowed_senders: missing field",
            "canary.imap: missing field",
        ];
        for e in expect {
            assert!(problems.iter().any(|p| p.starts_with(e)), "{e} in {problems:#?}");
        }
        assert_eq!(problems.len(), expect.len(), "no follow-on problems inside the stand-in table: {problems:#?}");
    }

    #[test]
    fn a_provider_without_a_known_type_is_reported_and_stood_in_for() {
        let text = BASE.replace("type = \"file\"", "type = \"mandril\"")
            + "\n[providers.b]\nhost = \"x\"\n\n[providers.c]\ntype = \"smtp\"\nport = 25\n";
        let parsed = deserialize(text.parse().unwrap());
        let problems: Vec<String> = parsed.problems.iter().map(|(p, m)| format!("{p}: {m}")).collect();
        assert!(problems[0].starts_with("providers.a.type: unknown variant `mandril`"), "{problems:#?}");
        assert!(problems[1].starts_with("providers.b.type: missing field"), "{problems:#?}");
        assert!(problems[2].starts_with("providers.c.host: missing field"), "{problems:#?}");
        assert_eq!(problems.len(), 3, "{problems:#?}");
        let config = parsed.config.expect("stand-ins deserialise");
        assert!(config.providers.contains_key("a"), "routes naming it still resolve");
    }

    #[test]
    fn a_whole_section_of_the_wrong_type_goes_and_its_absence_is_no_second_problem() {
        let (problems, parsed) = found(&format!("server = 5\n{}", BASE.replace("[server]", "[serverx]")));
        assert!(parsed, "{problems:#?}");
        assert!(problems.iter().any(|p| p.starts_with("serverx: unknown field")), "{problems:#?}");
        assert!(problems.iter().any(|p| p.starts_with("server: invalid type")), "{problems:#?}");
        assert_eq!(problems.len(), 2, "{problems:#?}");
    }
}
