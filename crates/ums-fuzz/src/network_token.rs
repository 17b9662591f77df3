//! The network token a joining component reads from its token file (`ums_tls::NetworkToken`).
//!
//! Properties: a token that parses has a CA hash of 64 lowercase hex digits and a secret of at
//! least 16 bytes in base64url; its text form is the input without surrounding whitespace (the
//! hash in lower case) and parses to the same token; its debug form never shows the secret.

use base64::Engine;
use ums_tls::NetworkToken;

pub const DICTIONARY: &[&[u8]] = &[
    b"UMS1",
    b"::",
    b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    b"ABCDEFabcdef",
    b"-_",
    b"AAAAAAAAAAAAAAAAAAAAAA",
    b" \n",
];

pub fn fuzz(data: &[u8]) {
    let text = crate::text(data);
    let Ok(token) = NetworkToken::parse(&text) else {
        return;
    };
    assert_eq!(token.ca_hash.len(), 64);
    assert!(
        token
            .ca_hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{}",
        token.ca_hash
    );
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&token.secret)
        .expect("the secret of a parsed token is base64url");
    assert!(raw.len() >= 16);

    let exposed = token.expose();
    let trimmed = text.trim();
    // `UMS1` + 64 hex digits + `::`: ASCII, so these are character boundaries.
    let want = format!(
        "UMS1{}::{}",
        trimmed[4..68].to_ascii_lowercase(),
        &trimmed[70..]
    );
    assert_eq!(exposed, want);
    assert_eq!(NetworkToken::parse(&exposed).as_ref(), Ok(&token));
    // The secret's hash is what the database keeps; it depends on the secret only.
    assert_eq!(token.secret_hash().len(), 64);

    assert_eq!(
        format!("{token:?}"),
        format!("NetworkToken(UMS1{}::…)", token.ca_hash)
    );
}
