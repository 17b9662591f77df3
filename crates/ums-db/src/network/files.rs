//! Replicated files: the records of files stored under their sha256 (with the files revision
//! every change bumps), and the replica records of which server holds which file.

use sea_orm::{ConnectionTrait, QueryResult};

use crate::{Db, DbError, Result};

/// A replicated file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRow {
    pub id: i64,
    pub path: String,
    pub sha256: String,
    pub size: i64,
    pub created_at: i64,
    pub origin_server: String,
    pub deleted: bool,
}

/// Where a file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRow {
    pub file_id: i64,
    pub server_id: String,
    pub status: String,
    pub error: String,
    pub updated_at: i64,
}

impl Db {
    /// Records a file stored on `origin` (present there) and bumps the files revision, in one
    /// transaction. A live file with the same path is replaced (marked deleted).
    pub async fn insert_file(
        &self,
        path: &str,
        sha256: &str,
        size: i64,
        origin: &str,
    ) -> Result<FileRow> {
        let tx = self.write_tx().await?;
        let now = crate::now_ms();
        tx.execute_raw(self.stmt(
            "UPDATE files SET deleted = $1 WHERE path = $2 AND deleted = $3",
            vec![true.into(), path.into(), false.into()],
        ))
        .await?;
        let row = tx
            .query_one_raw(self.stmt(
                "INSERT INTO files (path, sha256, size, created_at, origin_server, deleted) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                vec![
                    path.into(),
                    sha256.into(),
                    size.into(),
                    now.into(),
                    origin.into(),
                    false.into(),
                ],
            ))
            .await?
            .ok_or_else(|| DbError::NotFound("inserted file".into()))?;
        let id: i64 = row.try_get("", "id")?;
        upsert_replica(self, &tx, id, origin, "present", "", now).await?;
        bump_files_revision(self, &tx).await?;
        tx.commit().await?;
        Ok(FileRow {
            id,
            path: path.to_owned(),
            sha256: sha256.to_owned(),
            size,
            created_at: now,
            origin_server: origin.to_owned(),
            deleted: false,
        })
    }

    /// Files, oldest first; deleted ones only when asked.
    pub async fn list_files(&self, include_deleted: bool) -> Result<Vec<FileRow>> {
        let filter = if include_deleted {
            ""
        } else {
            " WHERE deleted = $1"
        };
        let values = if include_deleted {
            vec![]
        } else {
            vec![false.into()]
        };
        let rows = self
            .conn()
            .query_all_raw(self.stmt(
                &format!(
                    "SELECT id, path, sha256, size, created_at, origin_server, deleted FROM files{filter} ORDER BY id"
                ),
                values,
            ))
            .await?;
        rows.iter().map(file_row).collect()
    }

    /// One live file.
    pub async fn file(&self, id: i64) -> Result<FileRow> {
        let row = self
            .conn()
            .query_one_raw(self.stmt(
                "SELECT id, path, sha256, size, created_at, origin_server, deleted FROM files \
                 WHERE id = $1 AND deleted = $2",
                vec![id.into(), false.into()],
            ))
            .await?
            .ok_or_else(|| DbError::NotFound(format!("file {id}")))?;
        file_row(&row)
    }

    /// Marks a file deleted and bumps the files revision; every server then removes its copy.
    pub async fn delete_file(&self, id: i64) -> Result<()> {
        let tx = self.write_tx().await?;
        let n = tx
            .execute_raw(self.stmt(
                "UPDATE files SET deleted = $1 WHERE id = $2 AND deleted = $3",
                vec![true.into(), id.into(), false.into()],
            ))
            .await?
            .rows_affected();
        if n == 0 {
            tx.rollback().await?;
            return Err(DbError::NotFound(format!("file {id}")));
        }
        bump_files_revision(self, &tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every replica record.
    pub async fn file_replicas(&self) -> Result<Vec<ReplicaRow>> {
        let rows = self
            .conn()
            .query_all_raw(self.stmt(
                "SELECT file_id, server_id, status, error, updated_at FROM file_replicas ORDER BY file_id, server_id",
                vec![],
            ))
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ReplicaRow {
                    file_id: r.try_get("", "file_id")?,
                    server_id: r.try_get("", "server_id")?,
                    status: r.try_get("", "status")?,
                    error: r.try_get("", "error")?,
                    updated_at: r.try_get("", "updated_at")?,
                })
            })
            .collect()
    }

    /// Records whether `server` holds `file_id` ("present", "pending", "failed").
    pub async fn set_replica(
        &self,
        file_id: i64,
        server: &str,
        status: &str,
        error: &str,
    ) -> Result<()> {
        upsert_replica(
            self,
            self.conn(),
            file_id,
            server,
            status,
            error,
            crate::now_ms(),
        )
        .await
    }

    /// Forgets the replica records of a server (its copies were removed).
    pub async fn remove_replica(&self, file_id: i64, server: &str) -> Result<()> {
        self.conn()
            .execute_raw(self.stmt(
                "DELETE FROM file_replicas WHERE file_id = $1 AND server_id = $2",
                vec![file_id.into(), server.into()],
            ))
            .await?;
        Ok(())
    }
}

async fn upsert_replica(
    db: &Db,
    conn: &impl ConnectionTrait,
    file_id: i64,
    server: &str,
    status: &str,
    error: &str,
    now: i64,
) -> Result<()> {
    conn.execute_raw(db.stmt(
        "INSERT INTO file_replicas (file_id, server_id, status, error, updated_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (file_id, server_id) DO UPDATE SET status = excluded.status, error = excluded.error, \
         updated_at = excluded.updated_at",
        vec![
            file_id.into(),
            server.into(),
            status.into(),
            error.into(),
            now.into(),
        ],
    ))
    .await?;
    Ok(())
}

async fn bump_files_revision(db: &Db, conn: &impl ConnectionTrait) -> Result<()> {
    conn.execute_raw(db.stmt(
        "UPDATE counters SET value = value + 1 WHERE name = 'files_revision'",
        vec![],
    ))
    .await?;
    Ok(())
}

fn file_row(r: &QueryResult) -> Result<FileRow> {
    Ok(FileRow {
        id: r.try_get("", "id")?,
        path: r.try_get("", "path")?,
        sha256: r.try_get("", "sha256")?,
        size: r.try_get("", "size")?,
        created_at: r.try_get("", "created_at")?,
        origin_server: r.try_get("", "origin_server")?,
        deleted: r.try_get("", "deleted")?,
    })
}
