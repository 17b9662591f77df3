//! Creating or joining the network's identity: the first server of a database creates the
//! network CA and the network token; a later server recovers the CA from the database with the
//! token. The CA's key is kept in the database only sealed with the token's secret, and the
//! secret only sealed with the CA key, so the database alone gives neither.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ums_db::Db;
use ums_db::network::{NetworkCa, NewToken};
use ums_tls::{CertAuthority, ComponentKind, NetworkToken, NodeIdentity};

use super::{SEAL_CA_KEY, SEAL_TOKEN};

/// What [`bootstrap`] found or created.
pub struct Bootstrap {
    pub ca: CertAuthority,
    pub ca_sha256: String,
    /// Whether this start created the network.
    pub created: bool,
    pub token_file: PathBuf,
}

/// Seals a token for the database.
fn seal_token(ca: &CertAuthority, token: &NetworkToken) -> NewToken {
    NewToken {
        secret_sha256: token.secret_hash(),
        ca_key_sealed: ums_tls::seal(
            token.secret.as_bytes(),
            SEAL_CA_KEY,
            ca.key_pem().as_bytes(),
        ),
        secret_sealed: ums_tls::seal(&ca.key_material(), SEAL_TOKEN, token.secret.as_bytes()),
    }
}

/// The network CA of the database's network, creating the network when this is its first server,
/// and making sure the token file exists.
pub async fn bootstrap(db: &Db, tls_dir: &Path, token_file: &Path) -> anyhow::Result<Bootstrap> {
    for _ in 0..3 {
        if let Some(cluster) = db.network_ca().await? {
            let ca = recover_ca(db, &cluster, tls_dir, token_file).await?;
            ensure_token_file(db, &ca, &cluster.ca_sha256, token_file).await?;
            return Ok(Bootstrap {
                ca,
                ca_sha256: cluster.ca_sha256,
                created: false,
                token_file: token_file.to_owned(),
            });
        }
        // The first server: an existing single server's CA is kept, so its devices keep
        // trusting it.
        let (ca, created_ca) = CertAuthority::load_or_create(tls_dir, crate::CA_NAME)?;
        let ca_sha256 = ums_tls::ca_fingerprint(&ca.cert_pem)?;
        let token = NetworkToken::generate(&ca_sha256);
        let record = NetworkCa {
            ca_cert_pem: ca.cert_pem.clone(),
            ca_sha256: ca_sha256.clone(),
        };
        if db.create_network(&record, &seal_token(&ca, &token)).await? {
            ums_tls::write_secret(token_file, format!("{}\n", token.expose()).as_bytes())?;
            tracing::info!(token_file = %token_file.display(), "created the network: its token is in the token file");
            return Ok(Bootstrap {
                ca,
                ca_sha256,
                created: true,
                token_file: token_file.to_owned(),
            });
        }
        // Another server created the network at the same moment: join it instead.
        if created_ca {
            let _ = std::fs::remove_file(tls_dir.join("ca.pem"));
            let _ = std::fs::remove_file(tls_dir.join("ca-key.pem"));
        }
    }
    bail!("could not create or join the network: the network's CA record keeps changing")
}

async fn recover_ca(
    db: &Db,
    cluster: &NetworkCa,
    tls_dir: &Path,
    token_file: &Path,
) -> anyhow::Result<CertAuthority> {
    if tls_dir.join("ca.pem").exists() {
        let (ca, _) = CertAuthority::load_or_create(tls_dir, crate::CA_NAME)?;
        let local = ums_tls::ca_fingerprint(&ca.cert_pem)?;
        if local != cluster.ca_sha256 {
            bail!(
                "{}: this data directory's CA (sha256 {local}) is not the CA of the network in the database (sha256 {}); the data directory belongs to another network",
                ums_network::TOKEN_MISMATCH,
                cluster.ca_sha256
            );
        }
        return Ok(ca);
    }
    if !token_file.exists() {
        bail!(
            "this database belongs to an HA network: to join it, put the network token in {} (mode 0600); `umsctl token export` on a running server prints it",
            token_file.display()
        );
    }
    let token = NetworkToken::read(token_file)?;
    if token.ca_hash != cluster.ca_sha256 {
        tracing::error!(
            token_ca = %token.ca_hash, network_ca = %cluster.ca_sha256,
            "{}", ums_network::TOKEN_MISMATCH
        );
        bail!(
            "{}: the token in {} is for the CA with sha256 {}, this network's CA has sha256 {}",
            ums_network::TOKEN_MISMATCH,
            token_file.display(),
            token.ca_hash,
            cluster.ca_sha256
        );
    }
    let hash = token.secret_hash();
    let row = db
        .valid_tokens()
        .await?
        .into_iter()
        .find(|t| t.secret_sha256 == hash)
        .with_context(|| {
            format!(
                "{}: the token in {} is not (or no longer) valid for this network",
                ums_network::TOKEN_MISMATCH,
                token_file.display()
            )
        })?;
    let key_pem = ums_tls::open(token.secret.as_bytes(), SEAL_CA_KEY, &row.ca_key_sealed)
        .context("the sealed CA key in the database does not open with this token")?;
    let key_pem = String::from_utf8(key_pem).context("the sealed CA key is not PEM")?;
    let ca = CertAuthority::from_pem(crate::CA_NAME, &cluster.ca_cert_pem, &key_pem)?;
    ums_tls::create_private_dir(tls_dir)?;
    ums_tls::write_secret(&tls_dir.join("ca-key.pem"), key_pem.as_bytes())?;
    ums_tls::write_public(&tls_dir.join("ca.pem"), cluster.ca_cert_pem.as_bytes())?;
    tracing::info!("joined the network: recovered the network CA with the network token");
    Ok(ca)
}

/// The current token, opened with the CA key.
pub async fn current_token(
    db: &Db,
    ca: &CertAuthority,
    ca_sha256: &str,
) -> anyhow::Result<NetworkToken> {
    let row = db
        .valid_tokens()
        .await?
        .into_iter()
        .find(|t| t.expires_at.is_none())
        .context("the network has no current token")?;
    let secret = ums_tls::open(&ca.key_material(), SEAL_TOKEN, &row.secret_sealed)
        .context("the current token does not open with this server's CA key")?;
    Ok(NetworkToken {
        ca_hash: ca_sha256.to_owned(),
        secret: String::from_utf8(secret).context("the sealed token is not text")?,
    })
}

async fn ensure_token_file(
    db: &Db,
    ca: &CertAuthority,
    ca_sha256: &str,
    token_file: &Path,
) -> anyhow::Result<()> {
    if token_file.exists() {
        return Ok(());
    }
    let token = current_token(db, ca, ca_sha256).await?;
    ums_tls::write_secret(token_file, format!("{}\n", token.expose()).as_bytes())?;
    tracing::info!(token_file = %token_file.display(), "wrote the network token file");
    Ok(())
}

/// Issues a new token; the previous one stays valid for `grace_ms`. Writes it to the token file.
pub async fn rotate_token(
    db: &Db,
    ca: &CertAuthority,
    ca_sha256: &str,
    token_file: &Path,
    grace_ms: i64,
) -> anyhow::Result<(NetworkToken, i64)> {
    let token = NetworkToken::generate(ca_sha256);
    let until = db.rotate_token(&seal_token(ca, &token), grace_ms).await?;
    ums_tls::write_secret(token_file, format!("{}\n", token.expose()).as_bytes())?;
    Ok((token, until))
}

/// This server's id: kept in the data directory so a restart updates its registry entry.
pub fn process_id(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("server-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_owned());
        }
    }
    let id = format!(
        "server-{}",
        crate::secrets::random_token(10).to_ascii_lowercase()
    );
    ums_tls::write_public(&path, id.as_bytes())?;
    Ok(id)
}

/// This server's node identity for internal connections, issued by the CA it holds; reissued
/// when missing, for another CA, or for other names.
pub fn server_identity(
    ca: &CertAuthority,
    dir: &Path,
    id: &str,
    names: &[String],
) -> anyhow::Result<NodeIdentity> {
    let names_file = dir.join("node.names");
    let wanted = names.join("\n");
    if NodeIdentity::exists(dir)
        && std::fs::read_to_string(&names_file).ok().as_deref() == Some(&wanted)
    {
        let identity = NodeIdentity::load(dir)?;
        if identity.id == id
            && identity.ca_pem == ca.cert_pem
            && ums_tls::verify_node_cert(&ca.cert_pem, &identity.cert_pem).is_ok()
        {
            return Ok(identity);
        }
    }
    let identity = ca.issue_node(ComponentKind::Server, id, names)?;
    identity.save(dir)?;
    ums_tls::write_public(&names_file, wanted.as_bytes())?;
    Ok(identity)
}
