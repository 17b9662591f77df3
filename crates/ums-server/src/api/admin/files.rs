//! Replicated files as administrators manage them: upload (hashed while written, checked
//! against what the uploader announced, recorded only once complete), the list with each
//! server's copy, and deletion.

use futures_util::StreamExt;
use ums_proto::admin::v1 as pb;

use super::{AdminApi, Caller};
use crate::error::ApiError;
use crate::files::UploadFraming;

pub async fn upload(
    api: &AdminApi,
    _: Caller,
    mut stream: tonic::Streaming<pb::UploadFileChunk>,
) -> Result<pb::FileInfo, ApiError> {
    let first = stream
        .message()
        .await
        .map_err(|s| ApiError::relayed(&s))?
        .ok_or_else(|| {
            ApiError::Invalid("empty upload: the first message names the file".into())
        })?;
    let framing = UploadFraming::start(&first.path, first.size, &first.sha256)?;
    let rest = stream.map(|c| c.map(|c| c.data).map_err(|s| ApiError::relayed(&s)));
    let state = &api.state;
    let (sha, size) = state.files.receive(framing, first.data, rest).await?;
    let me = &state.network.process_id;
    let row = state
        .db
        .insert_file(&first.path, &sha, size as i64, me)
        .await?;
    tracing::info!(path = %row.path, sha256 = %sha, size, "file uploaded");
    state.network.files_changed(&state.db).await;
    Ok(pb::FileInfo {
        id: row.id,
        path: row.path,
        size,
        sha256: sha,
        created_at_ms: row.created_at,
        replicas: vec![pb::FileReplica {
            server_id: me.clone(),
            status: "present".into(),
            error: String::new(),
            updated_at_ms: row.created_at,
        }],
    })
}

pub async fn list(
    api: &AdminApi,
    _: Caller,
    _: pb::ListFilesRequest,
) -> Result<pb::ListFilesResponse, ApiError> {
    let db = &api.state.db;
    let files = db.list_files(false).await?;
    let replicas = db.file_replicas().await?;
    let (_, revision) = db.change_counters().await?;
    Ok(pb::ListFilesResponse {
        files: files
            .into_iter()
            .map(|f| pb::FileInfo {
                replicas: replicas
                    .iter()
                    .filter(|r| r.file_id == f.id)
                    .map(|r| pb::FileReplica {
                        server_id: r.server_id.clone(),
                        status: r.status.clone(),
                        error: r.error.clone(),
                        updated_at_ms: r.updated_at,
                    })
                    .collect(),
                id: f.id,
                path: f.path,
                size: f.size as u64,
                sha256: f.sha256,
                created_at_ms: f.created_at,
            })
            .collect(),
        revision,
    })
}

pub async fn delete(api: &AdminApi, _: Caller, r: pb::FileRequest) -> Result<pb::Empty, ApiError> {
    api.state.db.delete_file(r.id).await?;
    api.state.network.files_changed(&api.state.db).await;
    Ok(pb::Empty {})
}
