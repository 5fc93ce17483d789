//! Standard Webhooks signatures (the scheme Svix and Resend use): HMAC-SHA256 over
//! `{id}.{timestamp}.{body}`. Used to verify Resend's webhooks and to sign Baton's own events.
