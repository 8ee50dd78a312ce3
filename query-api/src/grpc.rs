//! gRPC adapter: `wattprint.v1.TenantQuery` over the same [`crate::service`] functions the
//! REST handlers call, with the same bearer-token verifier and one error mapping
//! ([`ApiError`] → [`tonic::Status`]); the operator's `wattprint.v1.OperatorQuery` is in
//! [`operator`].
//!
//! The caller's [`TenantScope`](wattprint_core::TenantScope) comes from the `authorization:
//! Bearer <jwt>` metadata and from nothing else; request fields never name a tenant. The
//! service is routed by [`crate::router`] on the same listener as REST (see [`grpc_routes`]).

use axum::http::StatusCode;
use axum::Router;
use tonic::server::NamedService;
use tonic::{Code, Request, Response, Status};
use tracing::field::Empty;
use wattprint_core::{InstanceId, UnixMillis, WorkloadId};
use wattprint_proto::v1 as pb;
use wattprint_proto::v1::operator_query_server::OperatorQueryServer;
use wattprint_proto::v1::tenant_query_server::{TenantQuery, TenantQueryServer};
use wattprint_proto::v1::{
    GetWorkloadFootprintRequest, GetWorkloadWhatIfRequest, ListInstancesRequest,
    ListInstancesResponse, ListRestatementsRequest, ListRestatementsResponse, WorkloadFootprint,
    WorkloadWhatIf,
};

pub mod convert;
pub mod operator;

use convert::IntoProto;

use crate::auth::TenantAccess;
use crate::error::ApiError;
use crate::restatements::{self, RestatementsRequest};
use crate::service::{self, check_id, SeriesRequest, SummaryRequest, WorkloadRequest};
use crate::time::{parse_required_instant, InstantInput};
use crate::whatif::{self, WhatIfRequest};
use crate::workloads::{self, CloseRequest, LabelsRequest, PageParams, WorkloadListParams};
use crate::ApiState;

/// Largest request message the gRPC service decodes. Every request of `TenantQuery` is a few
/// kilobytes at most (ids are capped at [`service::MAX_ID_LEN`] characters).
pub const MAX_GRPC_REQUEST_BYTES: usize = 64 * 1024;

/// The `TenantQuery` implementation: a thin adapter over [`ApiState`] and [`crate::service`].
#[derive(Debug, Clone)]
pub struct GrpcTenantQuery {
    state: ApiState,
}

impl GrpcTenantQuery {
    /// An adapter over `state` (the same state the REST router uses).
    pub fn new(state: ApiState) -> Self {
        Self { state }
    }

    /// Authenticates the bearer token in `metadata` exactly as the REST extractor does (same
    /// verifier, roles and rate limit) and returns the tenant's access, which dereferences to
    /// its scope: `UNAUTHENTICATED` for a bad token, `PERMISSION_DENIED` for an operator token,
    /// `RESOURCE_EXHAUSTED` when the tenant's rate limit is spent. The methods that change a
    /// workload then call [`TenantAccess::require_admin`] where the REST handler does.
    async fn authenticate(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<TenantAccess, ApiError> {
        crate::auth::access::authenticate(&self.state, metadata.as_ref())
            .await?
            .into_tenant()
    }
}

/// The tonic server for [`GrpcTenantQuery`] over `state`, with the request size limit.
pub fn grpc_service(state: ApiState) -> TenantQueryServer<GrpcTenantQuery> {
    TenantQueryServer::new(GrpcTenantQuery::new(state))
        .max_decoding_message_size(MAX_GRPC_REQUEST_BYTES)
}

/// An axum router holding only the gRPC services, `TenantQuery` routed at
/// `/wattprint.v1.TenantQuery/{*rest}` and `OperatorQuery` at `/wattprint.v1.OperatorQuery/{*rest}`,
/// without a fallback, so it can be merged into the REST router (whose problem+json fallback
/// keeps answering every other path, and whose layers — body limit, timeout, IP limit, trace,
/// metrics — wrap both). Unknown methods of a service are answered by tonic itself
/// (`UNIMPLEMENTED`).
pub fn grpc_routes<S>(state: ApiState) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    fn path_of<T: NamedService>() -> String {
        format!("/{}/{{*rest}}", T::NAME)
    }
    Router::new()
        .route_service(
            &path_of::<TenantQueryServer<GrpcTenantQuery>>(),
            grpc_service(state.clone()),
        )
        .route_service(
            &path_of::<OperatorQueryServer<operator::GrpcOperatorQuery>>(),
            operator::operator_grpc_service(state),
        )
}

/// Whether a request is a gRPC call (`content-type: application/grpc[+proto|…]`).
pub fn is_grpc_request(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let ct = ct.trim().to_ascii_lowercase();
            ct == "application/grpc"
                || ct.starts_with("application/grpc+")
                || ct.starts_with("application/grpc;")
        })
}

/// The answer to a gRPC call of a service or method this server does not have: a proper gRPC
/// `UNIMPLEMENTED` (HTTP 200 with `grpc-status: 12`), which clients read as such, rather than
/// a problem+json 404 they cannot decode.
pub fn unimplemented_response(path: &str) -> axum::response::Response {
    Status::unimplemented(format!("no gRPC method {path}")).into_http::<axum::body::Body>()
}

/// The gRPC code for an HTTP status, so that every [`ApiError`] (present or future) has exactly
/// one gRPC meaning: 400/415/422 → `INVALID_ARGUMENT`, 401 → `UNAUTHENTICATED`, 403 →
/// `PERMISSION_DENIED`, 404 → `NOT_FOUND`, 405/501 → `UNIMPLEMENTED`, 409 → `ALREADY_EXISTS`,
/// 429 → `RESOURCE_EXHAUSTED`, 503 → `UNAVAILABLE`, 504 → `DEADLINE_EXCEEDED`, any other client
/// error → `FAILED_PRECONDITION`, anything else → `INTERNAL`.
pub fn grpc_code(status: StatusCode) -> Code {
    match status {
        StatusCode::BAD_REQUEST
        | StatusCode::UNSUPPORTED_MEDIA_TYPE
        | StatusCode::UNPROCESSABLE_ENTITY => Code::InvalidArgument,
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::FORBIDDEN => Code::PermissionDenied,
        StatusCode::NOT_FOUND => Code::NotFound,
        StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED => Code::Unimplemented,
        StatusCode::CONFLICT => Code::AlreadyExists,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::PAYLOAD_TOO_LARGE => Code::ResourceExhausted,
        StatusCode::REQUEST_TIMEOUT => Code::DeadlineExceeded,
        StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
        StatusCode::GATEWAY_TIMEOUT => Code::DeadlineExceeded,
        s if s.is_client_error() => Code::FailedPrecondition,
        _ => Code::Internal,
    }
}

impl From<ApiError> for Status {
    /// The code from [`grpc_code`] of the error's HTTP status, and the same message the REST
    /// problem document carries as `detail` (internal errors: a generic message; the cause is
    /// logged, never sent).
    fn from(err: ApiError) -> Self {
        if let ApiError::Internal(cause) = &err {
            tracing::error!(%cause, "grpc request failed");
        }
        let mut status = Status::new(grpc_code(err.status()), err.detail());
        if let ApiError::TooManyRequests { retry_after_s } = &err {
            // The REST answer's `Retry-After`, as metadata.
            status.metadata_mut().insert(
                "retry-after",
                tonic::metadata::MetadataValue::from(*retry_after_s),
            );
        }
        status
    }
}

/// An empty gRPC string is "not given" (proto3 cannot tell it from an unset field).
fn given(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// The REST page parameters of a gRPC `limit` and `cursor`.
fn page_params(limit: Option<u32>, cursor: String) -> PageParams {
    PageParams {
        limit: limit.map(|l| l as usize),
        cursor: (!cursor.is_empty()).then_some(cursor),
    }
}

/// The series request of a gRPC call, with REST's defaults.
fn series_request(req: &pb::GetInstanceSeriesRequest) -> Result<SeriesRequest, ApiError> {
    crate::routes::series_request(given(&req.from), given(&req.to), given(&req.step))
}

#[tonic::async_trait]
impl TenantQuery for GrpcTenantQuery {
    #[tracing::instrument(skip_all, fields(count = Empty))]
    async fn list_instances(
        &self,
        request: Request<ListInstancesRequest>,
    ) -> Result<Response<ListInstancesResponse>, Status> {
        let scope = self.authenticate(request.metadata()).await?;
        let req = request.into_inner();
        let page = page_params(req.limit, req.cursor);
        let all = service::list_instances(self.state.store.as_ref(), &scope).await?;
        let (instances, next_cursor) = workloads::paginate(all, |i| i.instance_id.as_str(), &page)?;
        tracing::Span::current().record("count", instances.len());
        Ok(Response::new(ListInstancesResponse {
            instances: instances.into_iter().map(IntoProto::into_proto).collect(),
            next_cursor,
        }))
    }

    #[tracing::instrument(skip_all, fields(workload = Empty))]
    async fn get_workload_footprint(
        &self,
        request: Request<GetWorkloadFootprintRequest>,
    ) -> Result<Response<WorkloadFootprint>, Status> {
        let scope = self.authenticate(request.metadata()).await?;
        let id = request.into_inner().workload_id;
        check_id("workload", &id)?;
        tracing::Span::current().record("workload", id.as_str());
        let detail = service::workload_detail(
            self.state.store.as_ref(),
            &scope,
            &self.state.catalog,
            &WorkloadId::new(id),
            &self.state.limits,
            self.state.intensity_join().ok().as_deref(),
        )
        .await?;
        Ok(Response::new(detail.into_proto()))
    }

    #[tracing::instrument(skip_all, fields(workload = Empty))]
    async fn get_workload_what_if(
        &self,
        request: Request<GetWorkloadWhatIfRequest>,
    ) -> Result<Response<WorkloadWhatIf>, Status> {
        let scope = self.authenticate(request.metadata()).await?;
        let req = request.into_inner();
        check_id("workload", &req.workload_id)?;
        tracing::Span::current().record("workload", req.workload_id.as_str());
        let basis = match req.basis.as_str() {
            "" => whatif::Basis::Actual,
            other => whatif::parse_basis(other)?,
        };
        let asked =
            WhatIfRequest::new(Some(req.window_hours), Some(req.factors))?.with_basis(basis);
        let join = self.state.intensity_join()?;
        let _slot = self.state.searches.enter(scope.tenant())?;
        let view = whatif::workload_whatif(
            self.state.store.as_ref(),
            &scope,
            &join,
            &WorkloadId::new(req.workload_id),
            &asked,
            &self.state.limits,
        )
        .await?;
        Ok(Response::new(view.into_proto()))
    }

    #[tracing::instrument(skip_all, fields(count = Empty))]
    async fn list_restatements(
        &self,
        request: Request<ListRestatementsRequest>,
    ) -> Result<Response<ListRestatementsResponse>, Status> {
        let scope = self.authenticate(request.metadata()).await?;
        let req = request.into_inner();
        let asked = RestatementsRequest::parse(Some(&req.from), Some(&req.to))?;
        let view = restatements::list_restatements(
            self.state.store.as_ref(),
            &scope,
            asked,
            &self.state.limits,
        )
        .await?;
        tracing::Span::current().record("count", view.restatements.len());
        Ok(Response::new(view.into_proto()))
    }

    #[tracing::instrument(skip_all, fields(instance = Empty, step = Empty, points = Empty))]
    async fn get_instance_series(
        &self,
        request: Request<pb::GetInstanceSeriesRequest>,
    ) -> Result<Response<pb::InstanceSeries>, Status> {
        let scope = self.authenticate(request.metadata()).await?;
        let req = request.into_inner();
        check_id("instance", &req.instance_id)?;
        let span = tracing::Span::current();
        span.record("instance", req.instance_id.as_str());
        let asked = series_request(&req)?;
        span.record("step", asked.step.as_str());
        let series = service::instance_series(
            self.state.store.as_ref(),
            &scope,
            &InstanceId::new(req.instance_id),
            asked,
            &self.state.limits,
            self.state.intensity_join().ok().as_deref(),
        )
        .await?;
        span.record("points", series.points.len());
        Ok(Response::new(series.into_proto()))
    }

    #[tracing::instrument(skip_all, fields(count = Empty))]
    async fn list_workloads(
        &self,
        request: Request<pb::ListWorkloadsRequest>,
    ) -> Result<Response<pb::ListWorkloadsResponse>, Status> {
        let scope = self.authenticate(request.metadata()).await?;
        let req = request.into_inner();
        let page = page_params(req.limit, req.cursor);
        let params = WorkloadListParams {
            limit: page.limit,
            cursor: page.cursor,
            status: given(&req.status).map(str::to_owned),
        };
        let list = workloads::list_workloads(self.state.store.as_ref(), &scope, &params).await?;
        tracing::Span::current().record("count", list.workloads.len());
        Ok(Response::new(pb::ListWorkloadsResponse {
            workloads: list
                .workloads
                .into_iter()
                .map(IntoProto::into_proto)
                .collect(),
            next_cursor: list.next_cursor,
        }))
    }

    #[tracing::instrument(skip_all, fields(workload = Empty, instances = Empty))]
    async fn create_workload(
        &self,
        request: Request<pb::CreateWorkloadRequest>,
    ) -> Result<Response<pb::Workload>, Status> {
        let access = self.authenticate(request.metadata()).await?;
        access.require_admin()?;
        let req = request.into_inner();
        let span = tracing::Span::current();
        span.record("instances", req.instance_ids.len());
        let body = WorkloadRequest {
            label: req.label,
            instance_ids: req.instance_ids,
            from: InstantInput::Rfc3339(req.from),
            to: req.to.map(InstantInput::Rfc3339),
            functional_unit: req.functional_unit,
            functional_units: req.functional_units,
            labels: req.labels.into_iter().collect(),
        };
        let view = service::create_workload(
            self.state.store.as_ref(),
            access.scope(),
            &body,
            &self.state.limits,
        )
        .await?;
        span.record("workload", view.id.as_str());
        tracing::info!("workload created");
        Ok(Response::new(view.into_proto()))
    }

    #[tracing::instrument(skip_all, fields(workload = Empty))]
    async fn set_workload_labels(
        &self,
        request: Request<pb::SetWorkloadLabelsRequest>,
    ) -> Result<Response<pb::Workload>, Status> {
        let access = self.authenticate(request.metadata()).await?;
        let req = request.into_inner();
        check_id("workload", &req.workload_id)?;
        tracing::Span::current().record("workload", req.workload_id.as_str());
        access.require_admin()?;
        let view = workloads::set_labels(
            self.state.store.as_ref(),
            access.scope(),
            &WorkloadId::new(req.workload_id),
            LabelsRequest {
                labels: req.labels.into_iter().collect(),
            },
        )
        .await?;
        tracing::info!("workload labels replaced");
        Ok(Response::new(view.into_proto()))
    }

    #[tracing::instrument(skip_all, fields(workload = Empty))]
    async fn close_workload(
        &self,
        request: Request<pb::CloseWorkloadRequest>,
    ) -> Result<Response<pb::Workload>, Status> {
        let access = self.authenticate(request.metadata()).await?;
        let req = request.into_inner();
        check_id("workload", &req.workload_id)?;
        tracing::Span::current().record("workload", req.workload_id.as_str());
        access.require_admin()?;
        let view = workloads::close(
            self.state.store.as_ref(),
            access.scope(),
            &WorkloadId::new(req.workload_id),
            CloseRequest {
                end: req.end.map(InstantInput::Rfc3339),
            },
            &self.state.limits,
        )
        .await?;
        tracing::info!(to = ?view.to, "workload closed");
        Ok(Response::new(view.into_proto()))
    }

    #[tracing::instrument(skip_all, fields(instances = Empty))]
    async fn get_tenant_summary(
        &self,
        request: Request<pb::GetTenantSummaryRequest>,
    ) -> Result<Response<pb::TenantSummary>, Status> {
        let scope = self.authenticate(request.metadata()).await?;
        let req = request.into_inner();
        let asked = SummaryRequest {
            from: parse_required_instant("from", Some(&req.from)).map_err(ApiError::BadRequest)?,
            to: parse_required_instant("to", Some(&req.to)).map_err(ApiError::BadRequest)?,
        };
        let view =
            service::tenant_summary(self.state.store.as_ref(), &scope, asked, &self.state.limits)
                .await?;
        tracing::Span::current().record("instances", view.instances.len());
        Ok(Response::new(view.into_proto()))
    }

    #[tracing::instrument(skip_all)]
    async fn list_statements(
        &self,
        request: Request<pb::ListStatementsRequest>,
    ) -> Result<Response<pb::ListStatementsResponse>, Status> {
        let scope = self.authenticate(request.metadata()).await?;
        let list =
            crate::statements::http::summaries(&self.state, &scope, UnixMillis::now()).await?;
        Ok(Response::new(pb::ListStatementsResponse {
            statements: list
                .statements
                .into_iter()
                .map(|s| pb::StatementSummary {
                    period: s.period,
                    status: s.status,
                    issued_at: s.issued_at.unwrap_or_default(),
                    content_sha256: s.content_sha256.unwrap_or_default(),
                })
                .collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(period = Empty))]
    async fn get_statement(
        &self,
        request: Request<pb::GetStatementRequest>,
    ) -> Result<Response<pb::StatementDocument>, Status> {
        let scope = self.authenticate(request.metadata()).await?;
        let req = request.into_inner();
        tracing::Span::current().record("period", req.period.as_str());
        let name = match req.format.as_str() {
            "" => req.period,
            format => format!("{}.{format}", req.period),
        };
        let doc = crate::statements::http::document(&self.state, &scope, &name, UnixMillis::now())
            .await?;
        Ok(Response::new(pb::StatementDocument {
            period: doc.view.period,
            status: doc.view.status,
            content_sha256: doc.view.content_sha256.unwrap_or_default(),
            content_type: doc.content_type.to_owned(),
            body: doc.body,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_workload_evidence(
        &self,
        request: Request<pb::GetWorkloadEvidenceRequest>,
    ) -> Result<Response<pb::EvidenceDocument>, Status> {
        let scope = self.authenticate(request.metadata()).await?;
        let id = request.into_inner().workload_id;
        let evidence = crate::evidence::workload_evidence(&self.state, &scope, &id).await?;
        // The bytes REST's `Json` writes: compact serde_json.
        let body = serde_json::to_vec(&evidence)
            .map_err(|e| ApiError::Internal(format!("rendering energy evidence: {e}")))?;
        Ok(Response::new(pb::EvidenceDocument {
            workload_id: evidence.workload.id,
            content_sha256: evidence.content_sha256.unwrap_or_default(),
            content_type: "application/json".to_owned(),
            body,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthError;

    #[test]
    fn every_api_error_maps_to_its_grpc_code() {
        let cases = [
            (ApiError::BadRequest("b".into()), Code::InvalidArgument),
            (ApiError::InvalidBody("i".into()), Code::InvalidArgument),
            (
                ApiError::UnsupportedMediaType("u".into()),
                Code::InvalidArgument,
            ),
            (
                ApiError::PayloadTooLarge("p".into()),
                Code::ResourceExhausted,
            ),
            (
                ApiError::Unauthorized(AuthError::MissingToken),
                Code::Unauthenticated,
            ),
            (
                ApiError::NotFound("workload w not found".into()),
                Code::NotFound,
            ),
            (ApiError::MethodNotAllowed, Code::Unimplemented),
            (ApiError::Internal("x".into()), Code::Internal),
        ];
        for (err, code) in cases {
            let detail = err.detail();
            let status = Status::from(err);
            assert_eq!(status.code(), code);
            assert_eq!(status.message(), detail);
        }
    }

    #[test]
    fn statuses_without_a_variant_yet_have_their_codes() {
        assert_eq!(grpc_code(StatusCode::FORBIDDEN), Code::PermissionDenied);
        assert_eq!(
            grpc_code(StatusCode::UNPROCESSABLE_ENTITY),
            Code::InvalidArgument
        );
        assert_eq!(
            grpc_code(StatusCode::TOO_MANY_REQUESTS),
            Code::ResourceExhausted
        );
        assert_eq!(grpc_code(StatusCode::BAD_GATEWAY), Code::Internal);
        assert_eq!(grpc_code(StatusCode::GONE), Code::FailedPrecondition);
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let status = Status::from(ApiError::Internal("secret table detail".into()));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("secret"));
    }
}
