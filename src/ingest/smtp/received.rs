//! The `Received:` trace header Baton puts on top of every message taken over SMTP
//! (RFC 5321 §4.4), with the protocol keyword of RFC 3848 / RFC 6531 (ESMTPSA and friends).

use std::net::IpAddr;

pub struct Trace<'a> {
    /// The client's EHLO/HELO name (already sanitised).
    pub helo: &'a str,
    pub peer: IpAddr,
    /// `server.hostname`.
    pub by: &'a str,
    pub protocol: &'static str,
    pub id: &'a str,
    /// e.g. `TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384`.
    pub tls: Option<&'a str>,
    /// Named only when the message has exactly one recipient, so a message to many does not
    /// tell each of them who else got it.
    pub single_recipient: Option<&'a str>,
}

/// The protocol keyword: `SMTP` for HELO, `ESMTP` for EHLO, `UTF8SMTP` when SMTPUTF8 was used;
/// `S` when under TLS, `A` when the client authenticated.
pub fn protocol(extended: bool, smtputf8: bool, tls: bool, authenticated: bool) -> &'static str {
    match (extended, smtputf8, tls, authenticated) {
        (false, _, _, _) => "SMTP",
        (true, true, false, false) => "UTF8SMTP",
        (true, true, false, true) => "UTF8SMTPA",
        (true, true, true, false) => "UTF8SMTPS",
        (true, true, true, true) => "UTF8SMTPSA",
        (true, false, false, false) => "ESMTP",
        (true, false, false, true) => "ESMTPA",
        (true, false, true, false) => "ESMTPS",
        (true, false, true, true) => "ESMTPSA",
    }
}

/// An address literal as RFC 5321 §4.1.3 writes it: `[192.0.2.1]` or `[IPv6:2001:db8::1]`.
fn address_literal(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("[{v4}]"),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("[{v4}]"),
            None => format!("[IPv6:{v6}]"),
        },
    }
}

/// Keeps a client-supplied EHLO name from breaking the header's structure: only characters that
/// can appear in a domain or address literal survive, the rest become `_`.
pub fn sanitize_helo(name: &str) -> String {
    name.chars().take(255).map(|c| if c.is_ascii_alphanumeric() || "-._:[]".contains(c) { c } else { '_' }).collect()
}

impl Trace<'_> {
    /// The header, folded, ending with CRLF.
    pub fn header(&self) -> String {
        let date = mail_builder::headers::date::Date::now().to_rfc822();
        let mut h =
            format!("Received: from {} ({})\r\n\tby {} (Baton)", self.helo, address_literal(self.peer), self.by);
        if let Some(tls) = self.tls {
            h.push_str(&format!(" (using {tls})"));
        }
        h.push_str(&format!(" with {} id {}", self.protocol, self.id));
        if let Some(rcpt) = self.single_recipient {
            h.push_str(&format!("\r\n\tfor <{rcpt}>"));
        }
        h.push_str(&format!(";\r\n\t{date}\r\n"));
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_shape() {
        let t = Trace {
            helo: "client.example",
            peer: "::1".parse().unwrap(),
            by: "baton.test",
            protocol: protocol(true, false, true, true),
            id: "01ABC",
            tls: Some("TLSv1.3 with cipher X"),
            single_recipient: Some("a@example.net"),
        };
        let h = t.header();
        assert!(h.starts_with("Received: from client.example ([IPv6:::1])\r\n\tby baton.test (Baton) (using TLSv1.3 with cipher X) with ESMTPSA id 01ABC\r\n\tfor <a@example.net>;\r\n\t"), "{h}");
        assert!(h.ends_with(" +0000\r\n"), "{h}");
        assert_eq!(sanitize_helo("a b(c);\r\n"), "a_b_c____");
    }
}
