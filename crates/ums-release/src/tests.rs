use std::os::unix::fs::PermissionsExt as _;

use proptest::prelude::*;

use super::*;

const NOW: i64 = 1_800_000_000_000;
const DAY: i64 = 86_400_000;

fn entry(name: &str, roles: &[&str], byte: u8) -> FileEntry {
    FileEntry {
        name: name.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        size: 1000 + byte as u64,
        sha256: hex::encode([byte; 32]),
        mode: 0o755,
    }
}

fn manifest(revision: u64) -> Manifest {
    Manifest {
        format: FORMAT,
        version: "0.4.0".into(),
        revision,
        created_at_ms: NOW - DAY,
        expires_at_ms: NOW + 30 * DAY,
        files: vec![
            entry("bin/ums-broker", &["broker"], 1),
            entry("bin/ums-server", &["server"], 2),
            entry("bin/ums-watchdog", &["watchdog"], 3),
            entry("share/motd.txt", &["broker", "server"], 4),
        ],
    }
}

#[test]
fn a_signed_manifest_verifies_against_its_pinned_key() {
    let key = SigningKey::generate().expect("ok");
    let signed = sign(manifest(3), &key).expect("ok");
    let json = signed.to_json();
    let back = SignedManifest::from_json(json.as_bytes()).expect("ok");
    let m = back.verify(&[key.public_key()], NOW).expect("ok");
    assert_eq!(m, &manifest(3));
    assert_eq!(m.digest(), manifest(3).digest());
}

#[test]
fn refusals_name_their_reason() {
    let key = SigningKey::generate().expect("ok");
    let other = SigningKey::generate().expect("ok");
    let pinned = [key.public_key()];

    let mut unsigned = sign(manifest(3), &key).expect("ok");
    unsigned.signatures.clear();
    assert_eq!(unsigned.verify(&pinned, NOW), Err(ReleaseError::Unsigned));

    let by_other = sign(manifest(3), &other).expect("ok");
    let err = by_other.verify(&pinned, NOW).expect_err("refused");
    assert!(matches!(err, ReleaseError::UnknownKey { .. }), "{err}");
    assert!(err.to_string().contains(&other.public_key().key_id()));

    // A signature that claims the pinned key's id but was made with another key.
    let mut forged = sign(manifest(3), &other).expect("ok");
    forged.signatures[0].key_id = key.public_key().key_id();
    assert_eq!(
        forged.verify(&pinned, NOW),
        Err(ReleaseError::BadSignature(key.public_key().key_id()))
    );

    let signed = sign(manifest(3), &key).expect("ok");
    assert_eq!(
        signed.verify(&pinned, NOW + 31 * DAY),
        Err(ReleaseError::Expired {
            expires_at_ms: NOW + 30 * DAY
        })
    );
    assert_eq!(
        signed.verify_not_older(&pinned, NOW, 4),
        Err(ReleaseError::Rollback {
            revision: 3,
            current: 4
        })
    );
    assert!(signed.verify_not_older(&pinned, NOW, 3).is_ok());
    assert_eq!(signed.verify(&[], NOW), Err(ReleaseError::NoPinnedKey));
}

#[test]
fn a_second_pinned_key_lets_keys_rotate() {
    let old = SigningKey::generate().expect("ok");
    let new = SigningKey::generate().expect("ok");
    let signed = sign(manifest(9), &new).expect("ok");
    assert!(
        signed
            .verify(&[old.public_key(), new.public_key()], NOW)
            .is_ok()
    );
}

#[test]
fn unknown_fields_and_oversized_manifests_are_refused() {
    let key = SigningKey::generate().expect("ok");
    let json = sign(manifest(3), &key).expect("ok").to_json();
    let extra = json.replacen("\"format\"", "\"run\": \"rm -rf /\", \"format\"", 1);
    let err = SignedManifest::from_json(extra.as_bytes()).expect_err("refused");
    assert!(err.to_string().contains("unknown field"), "{err}");
    let big = vec![b' '; MAX_MANIFEST + 1];
    assert!(matches!(
        SignedManifest::from_json(&big),
        Err(ReleaseError::Malformed(_))
    ));
}

#[test]
fn sign_refuses_a_malformed_manifest() {
    let key = SigningKey::generate().expect("ok");
    type Change = Box<dyn Fn(&mut Manifest)>;
    let cases: Vec<(Change, &str)> = vec![
        (Box::new(|m| m.revision = 0), "revision"),
        (Box::new(|m| m.files.reverse()), "sorted"),
        (
            Box::new(|m| m.files[0].name = "../../etc/passwd".into()),
            "file name",
        ),
        (
            Box::new(|m| m.files[0].name = "/bin/sh".into()),
            "file name",
        ),
        (Box::new(|m| m.files[0].roles.clear()), "no role"),
        (
            Box::new(|m| m.files[0].roles = vec!["Server".into()]),
            "role",
        ),
        (
            Box::new(|m| m.files[0].sha256 = "AB".repeat(32)),
            "lower-case hex",
        ),
        (Box::new(|m| m.files[0].mode = 0o4755), "mode"),
        (
            Box::new(|m| m.expires_at_ms = m.created_at_ms),
            "expires before",
        ),
        (Box::new(|m| m.version = "1.0 beta".into()), "version"),
        (Box::new(|m| m.files.clear()), "no file"),
    ];
    for (change, expect) in cases {
        let mut m = manifest(3);
        change(&mut m);
        let err = sign(m, &key).expect_err("refused");
        assert!(err.to_string().contains(expect), "{err} lacks {expect}");
    }
}

#[test]
fn keys_round_trip_through_files_of_mode_0600() {
    let dir = tempfile::tempdir().expect("ok");
    let path = dir.path().join("release.key");
    let key = SigningKey::generate().expect("ok");
    key.write_new(&path).expect("ok");
    let mode = std::fs::metadata(&path).expect("ok").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let back = SigningKey::load(&path).expect("ok");
    assert_eq!(back.public_key(), key.public_key());
    // Never overwritten.
    assert!(
        SigningKey::generate()
            .expect("ok")
            .write_new(&path)
            .is_err()
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("ok");
    let err = SigningKey::load(&path).expect_err("refused");
    assert!(err.to_string().contains("chmod 600"), "{err}");

    let text = key.public_key().to_string();
    assert!(text.starts_with("ed25519:"));
    assert_eq!(text.parse::<PublicKey>().expect("ok"), key.public_key());
    assert!("ed25519:AAAA".parse::<PublicKey>().is_err());
    assert!("ssh-ed25519 AAAA".parse::<PublicKey>().is_err());
}

#[test]
fn pack_reads_role_directories() {
    let dir = tempfile::tempdir().expect("ok");
    let d = dir.path();
    let write = |p: &str, content: &[u8], mode: u32| {
        let path = d.join(p);
        std::fs::create_dir_all(path.parent().expect("ok")).expect("ok");
        std::fs::write(&path, content).expect("ok");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("ok");
    };
    write("server/bin/ums-server", b"server v2", 0o755);
    write("broker/bin/ums-broker", b"broker v2", 0o755);
    write("server/share/motd.txt", b"hello", 0o644);
    write("broker/share/motd.txt", b"hello", 0o644);
    let m = pack(d, "0.5.0", 5, NOW, NOW + DAY).expect("ok");
    let names: Vec<_> = m.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        ["bin/ums-broker", "bin/ums-server", "share/motd.txt"]
    );
    assert_eq!(m.files[2].roles, ["broker", "server"]);
    assert_eq!(m.files[2].mode, 0o644);
    assert_eq!(m.files[1].mode, 0o755);
    assert_eq!(m.files[1].size, 9);
    assert_eq!(
        m.files[1].sha256,
        hex::encode(sha2::Sha256::digest(b"server v2"))
    );
    m.validate().expect("ok");
    assert_eq!(bundle_path(d, &m.files[2]), d.join("broker/share/motd.txt"));

    write("broker/share/motd.txt", b"other", 0o644);
    let err = pack(d, "0.5.0", 5, NOW, NOW + DAY).expect_err("refused");
    assert!(err.to_string().contains("differs between"), "{err}");
    write("loose.bin", b"x", 0o644);
    let err = pack(d, "0.5.0", 5, NOW, NOW + DAY).expect_err("refused");
    assert!(err.to_string().contains("role directory"), "{err}");
}

/// Any change of the signed content breaks the signature.
fn tamper(m: &mut Manifest, which: usize, value: u64) {
    let i = (value as usize) % m.files.len();
    match which % 6 {
        0 => m.revision = m.revision.wrapping_add(1 + value % 1000),
        1 => m.files[i].size ^= 1 + value,
        2 => {
            let mut sha = hex::decode(&m.files[i].sha256).expect("ok");
            sha[(value % 32) as usize] ^= 1 + (value % 255) as u8;
            m.files[i].sha256 = hex::encode(sha);
        }
        3 => m.expires_at_ms += 1 + (value % DAY as u64) as i64,
        4 => m.files[i].roles = vec!["umsctl".into()],
        _ => {
            m.files[i].mode = if m.files[i].mode == 0o755 {
                0o644
            } else {
                0o755
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_tampering_is_refused(which in 0usize..6, value in any::<u64>(), revision in 1u64..1_000_000) {
        let key = SigningKey::generate().expect("ok");
        let mut signed = sign(manifest(revision), &key).expect("ok");
        tamper(&mut signed.signed, which, value);
        prop_assume!(signed.signed != manifest(revision));
        let err = signed.verify(&[key.public_key()], NOW).expect_err("refused");
        prop_assert_eq!(err, ReleaseError::BadSignature(key.public_key().key_id()));
    }

    #[test]
    fn a_flipped_signature_byte_is_refused(byte in 0usize..64, bit in 0u8..8) {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let key = SigningKey::generate().expect("ok");
        let mut signed = sign(manifest(1), &key).expect("ok");
        let mut sig = b64.decode(&signed.signatures[0].sig).expect("ok");
        sig[byte] ^= 1 << bit;
        signed.signatures[0].sig = b64.encode(sig);
        prop_assert!(signed.verify(&[key.public_key()], NOW).is_err());
    }

    #[test]
    fn parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = SignedManifest::from_json(&bytes);
        let _ = std::str::from_utf8(&bytes).map(|s| s.parse::<PublicKey>());
    }
}
