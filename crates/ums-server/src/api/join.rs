//! `ums.network.v1.JoinService` on the admin port: how a component with the network token gets
//! its node certificate. The CA is public; the certificate is signed only for a valid token
//! secret, and the component's private key never travels.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use ums_network::TOKEN_MISMATCH;
use ums_proto::network::v1 as pb;
use ums_proto::network::v1::join_service_server::JoinService;
use ums_tls::{ComponentKind, NetworkToken};

use crate::error::ApiError;
use crate::state::AppState;

pub struct JoinApi {
    pub state: Arc<AppState>,
}

fn peer_addr<T>(req: &Request<T>) -> String {
    req.extensions()
        .get::<ums_service::ClientAddr>()
        .map(|a| a.0)
        .or_else(|| req.remote_addr())
        .map(|a| a.to_string())
        .unwrap_or_else(|| "an unknown address".into())
}

impl JoinApi {
    /// Refuses a token for another network's CA, logging it on this side too.
    fn check_ca(&self, ca_hash: &str, kind: &str, from: &str) -> Result<(), ApiError> {
        let ours = &self.state.network.ca_sha256;
        if ca_hash.len() != 64 || !ca_hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::Invalid(
                "ca_hash must be the 64 hex digits from the network token".into(),
            ));
        }
        if !ca_hash.eq_ignore_ascii_case(ours) {
            // Counted, so the network check names it, not only logged.
            let kind_label = ComponentKind::parse(kind).map_or("unknown", |k| k.as_str());
            self.state.network.count_token_mismatch(kind_label, from);
            self.state.metrics.token_mismatches.inc(&[kind_label]);
            tracing::warn!(
                component = %kind, from = %from, token_ca = %ca_hash, network_ca = %ours,
                "{TOKEN_MISMATCH}: a component presented the token of another network"
            );
            return Err(ApiError::FailedPrecondition(format!(
                "{TOKEN_MISMATCH}: the token is for the CA with sha256 {ca_hash}, this network's CA has sha256 {ours}"
            )));
        }
        Ok(())
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':'))
}

impl JoinApi {
    fn get_ca(&self, req: pb::GetCaRequest, from: &str) -> Result<pb::GetCaResponse, ApiError> {
        self.check_ca(&req.ca_hash, &req.kind, from)?;
        Ok(pb::GetCaResponse {
            ca_pem: self.state.network.ca.cert_pem.clone(),
        })
    }

    async fn join(&self, req: pb::JoinRequest, from: &str) -> Result<pb::JoinResponse, ApiError> {
        self.check_ca(&req.ca_hash, &req.kind, from)?;
        let kind = ComponentKind::parse(&req.kind).ok_or_else(|| {
            ApiError::Invalid(format!(
                "unknown component kind {:?}: server, broker, watchdog or swp-auth",
                req.kind
            ))
        })?;
        if !valid_id(&req.id) {
            return Err(ApiError::Invalid(
                "a component id is 1 to 64 letters, digits, - _ and .".into(),
            ));
        }
        if req.names.len() > 16 || !req.names.iter().all(|n| valid_name(n)) {
            return Err(ApiError::Invalid(
                "at most 16 names, each a DNS name or an IP address".into(),
            ));
        }
        let presented = NetworkToken {
            ca_hash: req.ca_hash.to_ascii_lowercase(),
            secret: req.secret,
        }
        .secret_hash();
        let tokens = self.state.db.valid_tokens().await?;
        // Compare with every valid token in constant time.
        let matched = tokens.iter().fold(false, |acc, t| {
            let eq: bool =
                subtle::ConstantTimeEq::ct_eq(t.secret_sha256.as_bytes(), presented.as_bytes())
                    .into();
            acc | eq
        });
        if !matched {
            self.state.network.count_token_mismatch(kind.as_str(), from);
            self.state.metrics.token_mismatches.inc(&[kind.as_str()]);
            tracing::warn!(
                component = %kind, id = %req.id, from = %from,
                "{TOKEN_MISMATCH}: a component presented a wrong or expired token secret"
            );
            return Err(ApiError::Denied(format!(
                "{TOKEN_MISMATCH}: the token's secret is not (or no longer) valid for this network"
            )));
        }
        let cert_pem = self
            .state
            .network
            .ca
            .sign_node_public_key(kind, &req.id, &req.names, &req.public_key_pem)
            .map_err(|e| ApiError::Invalid(format!("cannot sign the public key: {e}")))?;
        tracing::info!(component = %kind, id = %req.id, from = %from, "a component joined the network");
        Ok(pb::JoinResponse {
            cert_pem,
            ca_pem: self.state.network.ca.cert_pem.clone(),
        })
    }
}

#[tonic::async_trait]
impl JoinService for JoinApi {
    async fn get_ca(
        &self,
        request: Request<pb::GetCaRequest>,
    ) -> Result<Response<pb::GetCaResponse>, Status> {
        let from = peer_addr(&request);
        Ok(Response::new(JoinApi::get_ca(
            self,
            request.into_inner(),
            &from,
        )?))
    }

    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let from = peer_addr(&request);
        Ok(Response::new(
            JoinApi::join(self, request.into_inner(), &from).await?,
        ))
    }
}
