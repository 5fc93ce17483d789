//! Personalization a provider would render, rendered by Baton before the message is spooled,
//! so that any provider in the route can send the result (a merge tag left for Mandrill to
//! fill would reach the recipient as `*|FNAME|*` after a failover). Three languages:
//!
//! - Mandrill `mailchimp`: `*|NAME|*`, names compared without case; a name with no value
//!   becomes empty, as Mandrill does. Conditional blocks (`*|IF:…|*`) and other tags with a
//!   `:` (Mailchimp's functions) are refused by name rather than sent unrendered.
//! - Mandrill `handlebars`: `{{name}}` and the standard helpers (`if`, `unless`, `each`,
//!   `with`, `lookup`) through the `handlebars` crate; HTML-escaped in the HTML part only,
//!   `{{{name}}}` never escaped. A helper Mandrill adds (`upper`, `date`, …) is refused by name.
//! - SendGrid `substitutions`: literal keys (`-name-`, `%name%`, …) replaced by their values in
//!   one pass, so a value is never substituted again; then `sections` the same way.

use handlebars::Handlebars;
use serde_json::Value;

/// Which part of the message a template is: only HTML is HTML-escaped by handlebars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Subject,
    Text,
    Html,
}

/// Renders Mailchimp merge tags in `text` with `value(name)` (name upper-cased); an error
/// names the tag Baton cannot render.
pub fn mailchimp(text: &str, value: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("*|") {
        let Some(len) = rest[start + 2..].find("|*") else { break };
        let name = &rest[start + 2..start + 2 + len];
        out.push_str(&rest[..start]);
        if name.contains(':') {
            return Err(format!(
                "*|{name}|*: Baton renders plain merge tags (*|NAME|*); conditionals and functions are not supported"
            ));
        }
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            // Not a merge tag: keep the text as written.
            out.push_str("*|");
            rest = &rest[start + 2..];
            continue;
        }
        out.push_str(&value(&name.to_ascii_uppercase()).unwrap_or_default());
        rest = &rest[start + 2 + len + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Renders a handlebars template with `data`; an error says what failed (an unknown helper,
/// a syntax error).
pub fn handlebars(template: &str, data: &Value, part: Part) -> Result<String, String> {
    let mut engine = Handlebars::new();
    if part != Part::Html {
        engine.register_escape_fn(handlebars::no_escape);
    }
    engine.render_template(template, data).map_err(|e| format!("handlebars: {}", e.reason()))
}

/// Replaces every key of `pairs` found in `text` by its value, in one left-to-right pass
/// (the longest key wins where several match at the same place).
pub fn substitute(text: &str, pairs: &[(&str, &str)]) -> String {
    let mut keys: Vec<&(&str, &str)> = pairs.iter().filter(|(k, _)| !k.is_empty()).collect();
    keys.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    'scan: while i < text.len() {
        for (key, value) in &keys {
            if text[i..].starts_with(key) {
                out.push_str(value);
                i += key.len();
                continue 'scan;
            }
        }
        let c = text[i..].chars().next().expect("inside the text");
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// A merge value as text: strings as they are, other JSON as written (numbers, booleans).
pub fn as_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mailchimp_tags_are_filled_without_case_and_unknown_ones_are_emptied() {
        let vars = |name: &str| (name == "FNAME").then(|| "Zoë".to_string());
        assert_eq!(mailchimp("Hi *|fname|*, *|LNAME|*!", vars).unwrap(), "Hi Zoë, !");
        assert_eq!(mailchimp("a *| b |* c *|", vars).unwrap(), "a *| b |* c *|");
        let refused = mailchimp("*|IF:FNAME|*x*|END:IF|*", vars).unwrap_err();
        assert!(refused.contains("*|IF:FNAME|*"), "{refused}");
    }

    #[test]
    fn handlebars_escapes_only_html_and_refuses_unknown_helpers() {
        let data = json!({"name": "Tom & Jerry", "items": [{"sku": "a"}, {"sku": "b"}], "vip": true});
        let html = handlebars("<b>{{name}}</b>{{#each items}}[{{sku}}]{{/each}}", &data, Part::Html).unwrap();
        assert_eq!(html, "<b>Tom &amp; Jerry</b>[a][b]");
        assert_eq!(handlebars("{{#if vip}}VIP {{/if}}{{name}}", &data, Part::Text).unwrap(), "VIP Tom & Jerry");
        assert!(handlebars("{{upper name}}", &data, Part::Text).unwrap_err().contains("upper"));
    }

    #[test]
    fn substitutions_are_one_pass_and_longest_first() {
        let pairs = [("-name-", "Ann -city-"), ("-city-", "Oslo"), ("-name-x-", "X")];
        assert_eq!(substitute("Hi -name-, -name-x- from -city-", &pairs), "Hi Ann -city-, X from Oslo");
    }
}
