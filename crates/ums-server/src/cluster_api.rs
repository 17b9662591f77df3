//! `ums.cluster.v1.ClusterService`: identity and health of this server.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use ums_proto::cluster::v1 as pb;
use ums_proto::cluster::v1::cluster_service_server::ClusterService;

use crate::state::AppState;

pub struct ClusterApi {
    pub state: Arc<AppState>,
}

#[tonic::async_trait]
impl ClusterService for ClusterApi {
    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let schema = self
            .state
            .db
            .schema_version()
            .await
            .map_err(|e| Status::unavailable(format!("database unavailable: {e}")))?;
        let info = &self.state.info;
        Ok(Response::new(pb::StatusResponse {
            process_id: info.process_id.clone(),
            process_type: "server".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            schema_version: schema.map(|v| v.to_string()).unwrap_or_default(),
            database: self.state.backend().as_str().into(),
            started_at_ms: info.started_at_ms,
            clock_ms: ums_db::now_ms(),
            device_port: u32::from(info.device_port),
            admin_port: u32::from(info.admin_port),
            internal_port: 0,
            available: true,
        }))
    }
    type WatchServersStream = futures_util::stream::Empty<Result<pb::ServerList, Status>>;
    type ReadFileStream = futures_util::stream::Empty<Result<pb::FileChunk, Status>>;
    async fn heartbeat(
        &self,
        _r: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        Err(Status::unimplemented("network: in progress"))
    }
    async fn watch_servers(
        &self,
        _r: Request<pb::WatchServersRequest>,
    ) -> Result<Response<Self::WatchServersStream>, Status> {
        Err(Status::unimplemented("network: in progress"))
    }
    async fn read_file(
        &self,
        _r: Request<pb::ReadFileRequest>,
    ) -> Result<Response<Self::ReadFileStream>, Status> {
        Err(Status::unimplemented("files: in progress"))
    }
}
