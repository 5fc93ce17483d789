//! Keeps a provider's credentials out of everything Baton repeats of what the provider said
//! (attempt details, logs, `/admin/providers`, message status). Its promise: a key, a password
//! or any of the encoded forms they travel in never leaves through a quoted reply, even when a
//! provider, a proxy or a relay echoes the request back.
//!
//! Forms covered: the secret itself, its base64 (standard and URL-safe) and percent-encoded
//! forms, and for logins the forms SMTP AUTH and HTTP Basic put on the wire
//! (`\0user\0password`, `user:password`, each base64).

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

/// Shorter strings are not scrubbed: they would blank out ordinary words.
const MIN_SECRET: usize = 6;
const REDACTED: &str = "[redacted]";
/// The shortest start of a secret, cut off at the end of a truncated text, that is blanked.
const MIN_CUT: usize = 4;

/// Every form of a provider's secrets, longest first (so a longer form is blanked whole).
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    forms: Vec<String>,
}

impl Secrets {
    /// The forms of these secrets (API keys, tokens, passwords).
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Secrets {
        let mut s = Secrets::default();
        for secret in secrets {
            s.add(secret);
        }
        s.finish()
    }

    /// Adds a login (`user`, `password`) with its wire forms: SMTP AUTH PLAIN and LOGIN, HTTP
    /// Basic (Mailgun's `api:<key>`).
    pub fn with_login(mut self, user: &str, password: &str) -> Secrets {
        self.add(password);
        for wire in
            [format!("\0{user}\0{password}"), format!("{user}\0{user}\0{password}"), format!("{user}:{password}")]
        {
            self.push(STANDARD.encode(&wire));
        }
        self.finish()
    }

    fn add(&mut self, secret: &str) {
        if secret.len() < MIN_SECRET {
            return;
        }
        self.push(secret.to_string());
        self.push(STANDARD.encode(secret));
        self.push(STANDARD.encode(secret).trim_end_matches('=').to_string());
        self.push(URL_SAFE_NO_PAD.encode(secret));
        self.push(percent_encode(secret));
    }

    fn push(&mut self, form: String) {
        if form.len() >= MIN_SECRET && !self.forms.contains(&form) {
            self.forms.push(form);
        }
    }

    fn finish(mut self) -> Secrets {
        self.forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
        self
    }

    /// `text` with every form of every secret replaced by `[redacted]`, including the start
    /// of one cut off by truncation at the end of the text (`…` after it or not).
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for form in &self.forms {
            if out.contains(form.as_str()) {
                out = out.replace(form.as_str(), REDACTED);
            }
        }
        let (body, ellipsis) = match out.strip_suffix('…') {
            Some(body) => (body.to_string(), "…"),
            None => (out.clone(), ""),
        };
        for form in &self.forms {
            let cut = (MIN_CUT..form.len()).rev().find(|&k| form.is_char_boundary(k) && body.ends_with(&form[..k]));
            if let Some(k) = cut {
                return format!("{}{REDACTED}{ellipsis}", &body[..body.len() - k]);
            }
        }
        out
    }
}

/// RFC 3986 percent-encoding of everything but unreserved characters (how a key looks in a
/// query string or a form body).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_a_secret_is_scrubbed() {
        let key = "key-0123456789abcdef+/=";
        let s = Secrets::new([key]).with_login("api", key);
        let echoed = [
            key.to_string(),
            STANDARD.encode(key),
            URL_SAFE_NO_PAD.encode(key),
            percent_encode(key),
            STANDARD.encode(format!("api:{key}")),
            STANDARD.encode(format!("\0api\0{key}")),
        ];
        for form in echoed {
            let text = format!("500 the server said: AUTH {form} rejected");
            let out = s.scrub(&text);
            assert!(!out.contains(&form), "{form} left in {out}");
            assert!(out.contains("[redacted]") && out.starts_with("500 the server said"), "{out}");
        }
        assert_eq!(Secrets::new(["abc"]).scrub("abc abc"), "abc abc", "too short to scrub safely");
        // Truncation cut the key in half: its start goes too.
        assert_eq!(s.scrub("535 bad key-0123…"), "535 bad [redacted]…");
        assert_eq!(s.scrub("ends with key-0123"), "ends with [redacted]");
    }
}
