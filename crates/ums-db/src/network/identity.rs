//! The network's identity as the database keeps it: the network CA (certificate and hash) and the
//! network tokens, hashed and sealed, never in clear.

use sea_orm::{ConnectionTrait, QueryResult};

use crate::{Db, DbError, Result};

/// The network CA as recorded in the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkCa {
    pub ca_cert_pem: String,
    pub ca_sha256: String,
}

/// A network token as the database keeps it: hashed and sealed, never in clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub id: i64,
    pub secret_sha256: String,
    pub ca_key_sealed: Vec<u8>,
    pub secret_sealed: Vec<u8>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

/// A token to record.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub secret_sha256: String,
    pub ca_key_sealed: Vec<u8>,
    pub secret_sealed: Vec<u8>,
}

impl Db {
    /// The network CA, once the first server created it.
    pub async fn network_ca(&self) -> Result<Option<NetworkCa>> {
        let row = self
            .conn()
            .query_one_raw(self.stmt(
                "SELECT ca_cert_pem, ca_sha256 FROM cluster WHERE id = 1",
                vec![],
            ))
            .await?;
        row.map(|r| {
            Ok(NetworkCa {
                ca_cert_pem: r.try_get("", "ca_cert_pem")?,
                ca_sha256: r.try_get("", "ca_sha256")?,
            })
        })
        .transpose()
    }

    /// Records the network CA and its first token in one transaction. Returns `false`, changing
    /// nothing, when another server created the network first.
    pub async fn create_network(&self, ca: &NetworkCa, token: &NewToken) -> Result<bool> {
        let tx = self.write_tx().await?;
        let now = crate::now_ms();
        let inserted = tx
            .execute_raw(self.stmt(
                "INSERT INTO cluster (id, ca_cert_pem, ca_sha256, created_at) VALUES (1, $1, $2, $3) \
                 ON CONFLICT (id) DO NOTHING",
                vec![
                    ca.ca_cert_pem.clone().into(),
                    ca.ca_sha256.clone().into(),
                    now.into(),
                ],
            ))
            .await?
            .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        self.insert_token(&tx, token, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn insert_token(
        &self,
        tx: &impl ConnectionTrait,
        token: &NewToken,
        now: i64,
    ) -> Result<()> {
        tx.execute_raw(self.stmt(
            "INSERT INTO network_tokens (secret_sha256, ca_key_sealed, secret_sealed, created_at) \
             VALUES ($1, $2, $3, $4)",
            vec![
                token.secret_sha256.clone().into(),
                hex::encode(&token.ca_key_sealed).into(),
                hex::encode(&token.secret_sealed).into(),
                now.into(),
            ],
        ))
        .await?;
        Ok(())
    }

    /// Tokens still accepted: the current one and rotated ones within their grace period,
    /// newest first.
    pub async fn valid_tokens(&self) -> Result<Vec<TokenRow>> {
        let sql = format!(
            "SELECT id, secret_sha256, ca_key_sealed, secret_sealed, created_at, expires_at \
             FROM network_tokens WHERE expires_at IS NULL OR expires_at > {} ORDER BY id DESC",
            self.now_sql()
        );
        let rows = self.conn().query_all_raw(self.stmt(&sql, vec![])).await?;
        rows.iter().map(token_row).collect()
    }

    /// Makes `token` the current token; the previous ones stay valid until `grace_until`
    /// (database clock, ms) unless they expire sooner.
    pub async fn rotate_token(&self, token: &NewToken, grace_ms: i64) -> Result<i64> {
        let tx = self.write_tx().await?;
        let sql = format!(
            "UPDATE network_tokens SET expires_at = {} + $1 WHERE expires_at IS NULL",
            self.now_sql()
        );
        tx.execute_raw(self.stmt(&sql, vec![grace_ms.into()]))
            .await?;
        self.insert_token(&tx, token, crate::now_ms()).await?;
        let until = tx
            .query_one_raw(self.stmt(
                "SELECT MAX(expires_at) AS until FROM network_tokens",
                vec![],
            ))
            .await?
            .and_then(|r| r.try_get::<Option<i64>>("", "until").ok().flatten())
            .unwrap_or(0);
        tx.commit().await?;
        Ok(until)
    }
}

fn unhex(s: &str) -> Result<Vec<u8>> {
    hex::decode(s).map_err(|e| DbError::Invalid(format!("sealed value is not hex: {e}")))
}

fn token_row(r: &QueryResult) -> Result<TokenRow> {
    Ok(TokenRow {
        id: r.try_get("", "id")?,
        secret_sha256: r.try_get("", "secret_sha256")?,
        ca_key_sealed: unhex(&r.try_get::<String>("", "ca_key_sealed")?)?,
        secret_sealed: unhex(&r.try_get::<String>("", "secret_sealed")?)?,
        created_at: r.try_get("", "created_at")?,
        expires_at: r.try_get("", "expires_at")?,
    })
}
