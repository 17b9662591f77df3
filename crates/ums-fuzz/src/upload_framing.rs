//! The framing of a file upload (`ums_server::files::UploadFraming`): what the first message
//! announces (path, size, sha256), the running size of the chunks, and the final comparison.
//!
//! Input: a path, an announced size, an announced sha256 and chunk lengths, each from the bytes;
//! the framing's answers must match a model of the rules written here independently.

use ums_server::files::{MAX_FILE, UploadFraming, validate_path};

pub const DICTIONARY: &[&[u8]] = &[
    b"firmware/12.01/a.bin",
    b"../",
    b"//",
    b"a.bin",
    b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    b"0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF",
];

/// Reads a length-prefixed field.
fn field<'a>(data: &mut &'a [u8]) -> &'a [u8] {
    let Some((&n, rest)) = data.split_first() else {
        return &[];
    };
    let n = usize::from(n).min(rest.len());
    let (f, rest) = rest.split_at(n);
    *data = rest;
    f
}

fn number(data: &mut &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    let n = data.len().min(8);
    buf[..n].copy_from_slice(&data[..n]);
    *data = &data[n..];
    u64::from_le_bytes(buf)
}

pub fn fuzz(data: &[u8]) {
    let mut data = data;
    let path = String::from_utf8_lossy(field(&mut data)).into_owned();
    let sha = String::from_utf8_lossy(field(&mut data)).into_owned();
    // Small sizes are the interesting ones; a high bit reaches the limits.
    let raw = number(&mut data);
    let size = if raw & 1 == 0 { raw >> 48 } else { raw >> 1 };
    let sha_ok = sha.is_empty() || (sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()));
    let expected_ok = validate_path(&path).is_ok() && sha_ok && size <= MAX_FILE;
    let started = UploadFraming::start(&path, size, &sha);
    assert_eq!(
        started.is_ok(),
        expected_ok,
        "start({path:?}, {size}, {sha:?}) answered {:?}",
        started.as_ref().err()
    );
    let Ok(mut framing) = started else {
        return;
    };
    let mut total: u64 = 0;
    while !data.is_empty() {
        let raw = number(&mut data);
        let len = if raw & 1 == 0 {
            (raw >> 40) as usize
        } else {
            (raw >> 1) as usize
        };
        let within = total.checked_add(len as u64).is_some_and(|t| t <= MAX_FILE);
        let answer = framing.chunk(len);
        assert_eq!(answer.is_ok(), within, "chunk of {len} after {total}");
        if within {
            total += len as u64;
        }
        assert_eq!(framing.received(), total, "the running size");
    }
    let actual = sha.to_ascii_lowercase();
    let matches_size = size == 0 || size == total;
    assert_eq!(
        framing.finish(total, &actual).is_ok(),
        matches_size,
        "finish with the announced hash"
    );
    let other = "f".repeat(64);
    assert_eq!(
        framing.finish(total, &other).is_ok(),
        matches_size && (sha.is_empty() || actual == other),
        "finish with another hash"
    );
}
