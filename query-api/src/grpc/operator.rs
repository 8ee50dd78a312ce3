//! gRPC adapter for the provider operator: `wattprint.v1.OperatorQuery` over the same functions
//! as the REST `/v1/operator` routes ([`crate::operator`]), behind the same verifier, rate
//! limit and role check. Only an operator token passes; a tenant token is `PERMISSION_DENIED`.

use tonic::{Request, Response, Status};
use wattprint_proto::v1 as pb;
use wattprint_proto::v1::operator_query_server::{OperatorQuery, OperatorQueryServer};

use crate::ApiState;

/// The `OperatorQuery` implementation: a thin adapter over [`ApiState`] and [`crate::operator`].
#[derive(Debug, Clone)]
pub struct GrpcOperatorQuery {
    state: ApiState,
}

impl GrpcOperatorQuery {
    /// An adapter over `state` (the same state the REST router uses).
    pub fn new(state: ApiState) -> Self {
        Self { state }
    }
}

/// The tonic server for [`GrpcOperatorQuery`] over `state`, with the request size limit.
pub fn operator_grpc_service(state: ApiState) -> OperatorQueryServer<GrpcOperatorQuery> {
    OperatorQueryServer::new(GrpcOperatorQuery::new(state))
        .max_decoding_message_size(super::MAX_GRPC_REQUEST_BYTES)
}

#[tonic::async_trait]
impl OperatorQuery for GrpcOperatorQuery {
    #[tracing::instrument(skip_all)]
    async fn export_statements(
        &self,
        request: Request<pb::ExportStatementsRequest>,
    ) -> Result<Response<pb::StatementExport>, Status> {
        // As the REST extractor checks it: UNAUTHENTICATED for a bad token, PERMISSION_DENIED
        // for a tenant token, RESOURCE_EXHAUSTED when the operator's rate limit is spent.
        let operator = crate::auth::access::authenticate(&self.state, request.metadata().as_ref())
            .await?
            .into_operator()?;
        let req = request.into_inner();
        let export =
            crate::operator::export_statements(&self.state, &operator, &req.period, &req.format)
                .await?;
        Ok(Response::new(pb::StatementExport {
            period: export.period.to_string(),
            content_type: export.format.content_type().to_owned(),
            filename: export.filename(),
            body: export.body,
        }))
    }
}
