//! Maps a key path such as `routes[1].providers` back to its line in the config file,
//! so every validation problem can name file, line and key.

use std::fmt;
use toml_edit::{ArrayOfTables, Document, Item, Table, Value};

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A path to a key in the config, displayed as `providers.primary.port` or `routes[0].providers`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    pub fn root() -> Self {
        KeyPath(Vec::new())
    }
    pub fn key(&self, k: &str) -> Self {
        let mut v = self.0.clone();
        v.push(Seg::Key(k.to_string()));
        KeyPath(v)
    }
    pub fn index(&self, i: usize) -> Self {
        let mut v = self.0.clone();
        v.push(Seg::Index(i));
        KeyPath(v)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if n == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

/// Finds lines of keys in a parsed (span-keeping) TOML document.
pub struct Locator {
    doc: Option<Document<String>>,
    line_starts: Vec<usize>,
}

enum Node<'a> {
    Table(&'a Table),
    Aot(&'a ArrayOfTables),
    Value(&'a Value),
}

impl<'a> Node<'a> {
    fn from_item(item: &'a Item) -> Option<Node<'a>> {
        match item {
            Item::Table(t) => Some(Node::Table(t)),
            Item::ArrayOfTables(a) => Some(Node::Aot(a)),
            Item::Value(v) => Some(Node::Value(v)),
            Item::None => None,
        }
    }
}

impl Locator {
    pub fn new(text: &str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Locator { doc: Document::parse(text.to_string()).ok(), line_starts }
    }

    /// 1-based line number of a byte offset.
    pub fn line_of_offset(&self, offset: usize) -> usize {
        match self.line_starts.binary_search(&offset) {
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }

    /// Line of the deepest part of `path` that exists in the file.
    pub fn line(&self, path: &KeyPath) -> Option<usize> {
        let doc = self.doc.as_ref()?;
        let mut node = Node::Table(doc.as_table());
        let mut best: Option<usize> = None;
        for seg in &path.0 {
            let (span, next) = match (&node, seg) {
                (Node::Table(t), Seg::Key(k)) => match t.get_key_value(k) {
                    Some((key, item)) => (key.span().or_else(|| item.span()), Node::from_item(item)),
                    None => break,
                },
                (Node::Aot(a), Seg::Index(i)) => match a.get(*i) {
                    Some(t) => (t.span(), Some(Node::Table(t))),
                    None => break,
                },
                (Node::Value(Value::InlineTable(t)), Seg::Key(k)) => match t.get_key_value(k) {
                    Some((key, item)) => (key.span().or_else(|| item.span()), item.as_value().map(Node::Value)),
                    None => break,
                },
                (Node::Value(Value::Array(a)), Seg::Index(i)) => match a.get(*i) {
                    Some(v) => (v.span(), Some(Node::Value(v))),
                    None => break,
                },
                _ => break,
            };
            if let Some(span) = span {
                best = Some(span.start);
            }
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        best.map(|o| self.line_of_offset(o))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_lines() {
        let text = "[server]\nhostname = \"x\"\n\n[[routes]]\nname = \"a\"\n\n[[routes]]\nname = \"b\"\nproviders = [\"p\", \"q\"]\n[providers.p]\ntype = \"file\"\n";
        let l = Locator::new(text);
        assert_eq!(l.line(&KeyPath::root().key("server").key("hostname")), Some(2));
        assert_eq!(l.line(&KeyPath::root().key("routes").index(1).key("providers")), Some(9));
        assert_eq!(l.line(&KeyPath::root().key("routes").index(1).key("providers").index(1)), Some(9));
        assert_eq!(l.line(&KeyPath::root().key("providers").key("p").key("type")), Some(11));
        assert_eq!(KeyPath::root().key("routes").index(1).key("providers").to_string(), "routes[1].providers");
    }
}
