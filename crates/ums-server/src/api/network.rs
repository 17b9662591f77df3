//! `ums.network.v1.NetworkService`: identity and health of this server on the admin and internal
//! ports; heartbeats of other components, the watch of running servers and file copies for other
//! servers on the internal port only (mutual TLS: the caller is known from its certificate).

use std::pin::Pin;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use ums_proto::network::v1 as pb;
use ums_proto::network::v1::network_service_server::NetworkService;
use ums_service::Peer;
use ums_tls::ComponentKind;

use crate::error::ApiError;
use crate::state::AppState;

pub struct NetworkApi {
    pub state: Arc<AppState>,
}

/// The component calling over the internal port, or a refusal.
fn peer<T>(req: &Request<T>) -> Result<Peer, ApiError> {
    req.extensions().get::<Peer>().cloned().ok_or_else(|| {
        ApiError::Unauthenticated(
            "this call is served on the internal port only, to components with a node certificate of the network".into(),
        )
    })
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl NetworkService for NetworkApi {
    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        // Answers even without the database: that is when the answer matters most.
        let mut available = self.state.network.available();
        let schema = if available {
            match tokio::time::timeout(
                std::time::Duration::from_secs(2),
                self.state.db.schema_version(),
            )
            .await
            {
                Ok(Ok(v)) => v,
                _ => {
                    available = false;
                    None
                }
            }
        } else {
            None
        };
        let info = &self.state.info;
        let (_, _, internal_port) = self.state.network.ports();
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
            internal_port: u32::from(internal_port),
            available,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let peer = peer(&request)?;
        if peer.kind == ComponentKind::Server {
            return Err(ApiError::Denied("servers write their own heartbeats".into()).into());
        }
        let now = self
            .state
            .network
            .record_heartbeat(&self.state.db, &peer, request.into_inner())
            .await?;
        Ok(Response::new(pb::HeartbeatResponse {
            server_clock_ms: now,
        }))
    }

    type WatchServersStream = BoxStream<pb::ServerList>;

    async fn watch_servers(
        &self,
        request: Request<pb::WatchServersRequest>,
    ) -> Result<Response<Self::WatchServersStream>, Status> {
        peer(&request)?;
        let rx = self.state.network.watch_servers();
        let stream = tokio_stream::wrappers::WatchStream::new(rx)
            .map(|servers| Ok(pb::ServerList { servers }));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn probe(
        &self,
        request: Request<pb::ProbeRequest>,
    ) -> Result<Response<pb::ProbeResponse>, Status> {
        let peer = peer(&request)?;
        if peer.kind != ComponentKind::Server {
            return Err(ApiError::Denied("only servers run the network check".into()).into());
        }
        let file = request.into_inner().file;
        Ok(Response::new(
            crate::api::admin::check::local_probe(&self.state, file.as_ref()).await?,
        ))
    }

    async fn event_seen(
        &self,
        request: Request<pb::EventSeenRequest>,
    ) -> Result<Response<pb::EventSeenResponse>, Status> {
        peer(&request)?;
        let id = &request.get_ref().probe_id;
        Ok(Response::new(pb::EventSeenResponse {
            seen: self.state.network.probe_seen(id),
        }))
    }

    type ReadFileStream = BoxStream<pb::FileChunk>;

    async fn read_file(
        &self,
        request: Request<pb::ReadFileRequest>,
    ) -> Result<Response<Self::ReadFileStream>, Status> {
        let peer = peer(&request)?;
        if peer.kind != ComponentKind::Server {
            return Err(ApiError::Denied("only servers copy files".into()).into());
        }
        let req = request.into_inner();
        if req.sha256.len() != 64 || !req.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::Invalid("sha256 must be 64 hex digits".into()).into());
        }
        let path = self.state.files.path_of(&req.sha256.to_ascii_lowercase());
        let stream = crate::files::read_chunks(path, req.offset).map(|r| {
            r.map(|(_, data)| pb::FileChunk { data })
                .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
