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
        // Watchdogs download the files of software releases.
        if !matches!(peer.kind, ComponentKind::Server | ComponentKind::Watchdog) {
            return Err(ApiError::Denied("only servers and watchdogs copy files".into()).into());
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

    async fn get_release(
        &self,
        request: Request<pb::GetReleaseRequest>,
    ) -> Result<Response<pb::GetReleaseResponse>, Status> {
        let peer = watchdog(&request)?;
        let mut req = request.into_inner();
        // The node downloads from this server: no slot before every file of the release is
        // here (replication may still be copying it).
        let missing = if req.want_slot {
            self.missing_release_file().await?
        } else {
            None
        };
        req.want_slot &= missing.is_none();
        let mut answer = self
            .state
            .network
            .release_offer(&self.state.db, &peer.id, &req)
            .await?;
        if let Some(name) = missing
            && answer.revision != req.installed_revision
        {
            answer.waiting_for = format!("this server has no copy of {name} yet");
        }
        Ok(Response::new(answer))
    }

    async fn report_release(
        &self,
        request: Request<pb::ReportReleaseRequest>,
    ) -> Result<Response<pb::ReportReleaseResponse>, Status> {
        let peer = watchdog(&request)?;
        self.state
            .network
            .release_report(&self.state.db, &peer.id, request.into_inner())
            .await?;
        Ok(Response::new(pb::ReportReleaseResponse {}))
    }
}

impl NetworkApi {
    /// The first file of the release the network wants this server has no copy of.
    async fn missing_release_file(&self) -> Result<Option<String>, ApiError> {
        let Some((latest, _)) = self.state.db.wanted_release().await? else {
            return Ok(None);
        };
        let Ok(signed) = ums_release::SignedManifest::from_json(latest.manifest.as_bytes()) else {
            return Ok(None);
        };
        for f in &signed.signed.files {
            if !self.state.files.has(&f.sha256, f.size).await {
                return Ok(Some(f.name.clone()));
            }
        }
        Ok(None)
    }
}

/// The calling watchdog, or a refusal: releases are a node's business, told by its certificate.
fn watchdog<T>(req: &Request<T>) -> Result<Peer, ApiError> {
    let peer = peer(req)?;
    if peer.kind != ComponentKind::Watchdog {
        return Err(ApiError::Denied(
            "only watchdogs install software releases".into(),
        ));
    }
    Ok(peer)
}
