//! The app's tags and metadata on the way out: what every adapter that carries them shares.
//! Each provider has its own rules (how many, how long, which characters); a label that breaks
//! them is left out for that provider and the message is sent anyway — a label is never a
//! reason to fail a send or to fail over. Where each provider puts them:
//!
//! | provider | tags | metadata |
//! |---|---|---|
//! | mandrill | `X-MC-Tags` header (send-raw honours Mandrill's SMTP headers) | `X-MC-Metadata` header (JSON) |
//! | sendgrid | `categories` (≤ 10) | `custom_args` |
//! | postmark | `Tag` (the first tag; Postmark takes one) | `Metadata` (≤ 10 fields) |
//! | mailgun | `o:tag` (≤ 3) | `v:<key>` |
//! | resend, ses | name/value tags: `tag`, `tag_2`, … | name/value tags: key → value |
//! | smtp, file | — (the message bytes are sent as spooled) | — |

use super::Outbound;
use std::borrow::Cow;

/// Resend's and SES's rule for a tag name or value: 1 to 256 ASCII letters, digits, `_` or `-`.
pub fn name_value_safe(s: &str) -> bool {
    (1..=256).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The message's labels as name/value pairs for providers that take only those: metadata as
/// it is, then each tag under the name `tag`, `tag_2`, `tag_3`, … (a metadata key already
/// using such a name wins). Pairs for which `fits(name, value)` is false are left out; at most
/// `max` pairs.
pub fn name_value_pairs<'a>(
    msg: &Outbound<'a>,
    fits: impl Fn(&str, &str) -> bool,
    max: usize,
) -> Vec<(Cow<'a, str>, &'a str)> {
    let metadata = msg.metadata.iter().map(|(k, v)| (Cow::Borrowed(k.as_str()), v.as_str()));
    let tags = msg.tags.iter().enumerate().map(|(i, t)| {
        let name = if i == 0 { Cow::Borrowed("tag") } else { Cow::Owned(format!("tag_{}", i + 1)) };
        (name, t.as_str())
    });
    metadata
        .chain(tags.filter(|(name, _)| !msg.metadata.contains_key(name.as_ref())))
        .filter(|(name, value)| fits(name, value))
        .take(max)
        .collect()
}

/// Tags that satisfy `fits`, at most `max`, in the order given.
pub fn tags<'a>(msg: &Outbound<'a>, fits: impl Fn(&str) -> bool, max: usize) -> Vec<&'a str> {
    msg.tags.iter().map(String::as_str).filter(|t| fits(t)).take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn metadata_then_numbered_tags_within_the_rules() {
        let metadata = BTreeMap::from([("user".to_string(), "7".to_string()), ("bad key".into(), "x".into())]);
        let tags = ["reset".to_string(), "ünïcode".into(), "welcome".into()];
        let msg = Outbound { tags: &tags, metadata: &metadata, ..Outbound::new("m", "a@example.com", &[], b"") };
        let pairs = name_value_pairs(&msg, |n, v| name_value_safe(n) && name_value_safe(v), 50);
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(n, v)| (n.as_ref(), *v)).collect();
        assert_eq!(pairs, [("user", "7"), ("tag", "reset"), ("tag_3", "welcome")]);
        assert_eq!(name_value_pairs(&msg, |_, _| true, 2).len(), 2);
        assert_eq!(tags_fit(&msg), ["reset", "welcome"]);
    }

    fn tags_fit<'a>(msg: &Outbound<'a>) -> Vec<&'a str> {
        tags(msg, |t| t.is_ascii(), 10)
    }

    #[test]
    fn a_metadata_key_named_tag_wins_over_the_first_tag() {
        let metadata = BTreeMap::from([("tag".to_string(), "mine".to_string())]);
        let tags = ["reset".to_string()];
        let msg = Outbound { tags: &tags, metadata: &metadata, ..Outbound::new("m", "a@example.com", &[], b"") };
        let pairs = name_value_pairs(&msg, |_, _| true, 50);
        assert_eq!(pairs.len(), 1);
        assert_eq!(pairs[0].1, "mine");
    }
}
