//! Workload lifecycle beyond creation: pages of the list, labels, closing, and the span an
//! open workload covers so far.
//!
//! A workload created without `to` is *open*: its footprint and what-ifs cover `[from, now)`
//! until it is closed. Closing sets the end once (closing again at the same end changes
//! nothing; at another end is a 409). Labels are replaced as a whole by `PUT`. Both changes
//! need the tenant admin role.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use tracing::field::Empty;
use wattprint_core::{TenantScope, UnixMillis, WorkloadId};
use wattprint_store::{Store, Workload, WorkloadUpdate};

use crate::auth::AuthenticatedTenant;
use crate::error::ApiError;
use crate::service::{check_id, WorkloadView};
pub use wattprint_api_types::{
    CloseRequest, LabelsRequest, PageParams, StatusFilter, WorkloadList, WorkloadListParams,
};

use crate::{ApiLimits, ApiState};

/// Items per page when `limit` is not given.
pub const DEFAULT_PAGE_LIMIT: usize = 100;
/// Most items one page may hold.
pub const MAX_PAGE_LIMIT: usize = 1000;

/// The range a workload's footprint covers: `[from, to)`, or `[from, now)` while open (empty
/// when it starts in the future). An open workload older than the range limit is refused
/// with the advice to close it.
pub fn workload_span(
    w: &Workload,
    limits: &ApiLimits,
) -> Result<(UnixMillis, UnixMillis), ApiError> {
    let from = w.spec.from;
    let Some(to) = w.spec.to else {
        let to = UnixMillis::now().max(from);
        if to.since(from) > limits.max_range_ms {
            return Err(ApiError::Unprocessable(format!(
                "workload {} has been open for more than {} ms, the longest range one request \
                 may read; close it (POST /v1/workloads/{}/close) or split it",
                w.id, limits.max_range_ms, w.id
            )));
        }
        return Ok((from, to));
    };
    Ok((from, to))
}

/// One page of `items` (already in list order) whose keys are `key(item)`: the items after the
/// one whose key is `cursor`, and the cursor of the next page (`None` on the last). A cursor
/// that names no item is a 400: the list changed under it or it was not one of ours.
pub fn paginate<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> &str,
    params: &PageParams,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let limit = params.limit.unwrap_or(DEFAULT_PAGE_LIMIT);
    if !(1..=MAX_PAGE_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1 to {MAX_PAGE_LIMIT}, got {limit}"
        )));
    }
    let start = match &params.cursor {
        None => 0,
        Some(c) => {
            let at = items
                .iter()
                .position(|i| key(i) == c.as_str())
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "cursor {c:?} is not a position in this list; start again without it"
                    ))
                })?;
            at + 1
        }
    };
    let total = items.len();
    let page: Vec<T> = items.into_iter().skip(start).take(limit).collect();
    let next = (start + page.len() < total)
        .then(|| page.last().map(|i| key(i).to_owned()))
        .flatten();
    Ok((page, next))
}

/// One page of the tenant's workloads, newest first, optionally only open or closed ones.
pub async fn list_workloads(
    store: &dyn Store,
    scope: &TenantScope,
    params: &WorkloadListParams,
) -> Result<WorkloadList, ApiError> {
    let status = match params.status.as_deref() {
        None | Some("all") => StatusFilter::All,
        Some("open") => StatusFilter::Open,
        Some("closed") => StatusFilter::Closed,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "status: {other:?} is not one of open, closed, all"
            )))
        }
    };
    let all = store
        .list_workloads(scope)
        .await
        .map_err(|e| ApiError::from_store(e, || "no workloads".into()))?;
    let views: Vec<WorkloadView> = all
        .iter()
        .filter(|w| match status {
            StatusFilter::All => true,
            StatusFilter::Open => w.spec.to.is_none(),
            StatusFilter::Closed => w.spec.to.is_some(),
        })
        .map(crate::service::workload_view)
        .collect();
    let page = PageParams {
        limit: params.limit,
        cursor: params.cursor.clone(),
    };
    let (workloads, next_cursor) = paginate(views, |w| w.id.as_str(), &page)?;
    Ok(WorkloadList {
        workloads,
        next_cursor,
    })
}

async fn update(
    store: &dyn Store,
    scope: &TenantScope,
    id: &WorkloadId,
    update: WorkloadUpdate,
) -> Result<WorkloadView, ApiError> {
    let w = store
        .update_workload(scope, id, &update)
        .await
        .map_err(|e| ApiError::from_store(e, || format!("workload {id} not found")))?;
    Ok(crate::service::workload_view(&w))
}

/// Replaces a workload's labels.
pub async fn set_labels(
    store: &dyn Store,
    scope: &TenantScope,
    id: &WorkloadId,
    req: LabelsRequest,
) -> Result<WorkloadView, ApiError> {
    update(store, scope, id, WorkloadUpdate::Labels(req.labels)).await
}

/// Closes a workload at `end` (default now); the span may not exceed the range limit.
pub async fn close(
    store: &dyn Store,
    scope: &TenantScope,
    id: &WorkloadId,
    req: CloseRequest,
    limits: &ApiLimits,
) -> Result<WorkloadView, ApiError> {
    let end = match &req.end {
        Some(end) => end.parse("end").map_err(ApiError::BadRequest)?,
        None => UnixMillis::now(),
    };
    if let Some(w) = store
        .get_workload(scope, id)
        .await
        .map_err(|e| ApiError::from_store(e, || format!("workload {id} not found")))?
    {
        if end.since(w.spec.from) > limits.max_range_ms {
            return Err(ApiError::BadRequest(format!(
                "a workload may span at most {} ms; end {end} is later",
                limits.max_range_ms
            )));
        }
    }
    update(store, scope, id, WorkloadUpdate::Close(end)).await
}

/// Replace a workload's labels
///
/// Tenant admins only. The labels given replace all earlier ones.
#[utoipa::path(
    put,
    path = "/v1/workloads/{id}/labels",
    tag = "workloads",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Workload id: 1 to 256 characters, no control characters.")),
    request_body = LabelsRequest,
    responses(
        (status = 200, description = "The workload as stored.", body = WorkloadView),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
#[tracing::instrument(skip_all, fields(workload = Empty))]
pub(crate) async fn put_labels(
    State(state): State<ApiState>,
    auth: AuthenticatedTenant,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<LabelsRequest>, JsonRejection>,
) -> Result<Json<WorkloadView>, ApiError> {
    let Path(id) = path?;
    check_id("workload", &id)?;
    tracing::Span::current().record("workload", id.as_str());
    auth.require_admin()?;
    let Json(req) = body?;
    let view = set_labels(
        state.store.as_ref(),
        auth.scope(),
        &WorkloadId::from(id.as_str()),
        req,
    )
    .await?;
    tracing::info!("workload labels replaced");
    Ok(Json(view))
}

/// Close a workload
///
/// Tenant admins only. Sets the end of an open workload (default now). Closing again at the
/// same end returns it unchanged; at another end is a 409.
#[utoipa::path(
    post,
    path = "/v1/workloads/{id}/close",
    tag = "workloads",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Workload id: 1 to 256 characters, no control characters.")),
    request_body(content = CloseRequest, description = "Optional; `{}` or no body closes it now."),
    responses(
        (status = 200, description = "The closed workload.", body = WorkloadView),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
#[tracing::instrument(skip_all, fields(workload = Empty))]
pub(crate) async fn post_close(
    State(state): State<ApiState>,
    auth: AuthenticatedTenant,
    path: Result<Path<String>, PathRejection>,
    body: Result<Option<Json<CloseRequest>>, JsonRejection>,
) -> Result<Json<WorkloadView>, ApiError> {
    let Path(id) = path?;
    check_id("workload", &id)?;
    tracing::Span::current().record("workload", id.as_str());
    auth.require_admin()?;
    // A body that is not the JSON of a CloseRequest is a problem document like every refusal,
    // not axum's plain-text rejection; no body (no content type) closes it now.
    let req = body?.map(|Json(r)| r).unwrap_or_default();
    let view = close(
        state.store.as_ref(),
        auth.scope(),
        &WorkloadId::from(id.as_str()),
        req,
        &state.limits,
    )
    .await?;
    tracing::info!(to = ?view.to, "workload closed");
    Ok(Json(view))
}

/// The caller's workloads
///
/// Newest first, without footprints (`GET /v1/workloads/{id}` has one), a page at a time.
#[utoipa::path(
    get,
    path = "/v1/workloads",
    tag = "workloads",
    security(("bearer" = [])),
    params(WorkloadListParams),
    responses(
        (status = 200, description = "A page of the tenant's workloads.", body = WorkloadList),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
#[tracing::instrument(skip_all, fields(count = Empty))]
pub(crate) async fn get_list(
    State(state): State<ApiState>,
    auth: AuthenticatedTenant,
    query: Result<Query<WorkloadListParams>, QueryRejection>,
) -> Result<Json<WorkloadList>, ApiError> {
    let Query(params) = query?;
    let list = list_workloads(state.store.as_ref(), auth.scope(), &params).await?;
    tracing::Span::current().record("count", list.workloads.len());
    Ok(Json(list))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("w{i:02}")).collect()
    }

    fn page(limit: Option<usize>, cursor: Option<&str>) -> PageParams {
        PageParams {
            limit,
            cursor: cursor.map(str::to_owned),
        }
    }

    #[test]
    fn pages_walk_the_list_once_in_order() {
        for n in [0, 1, 2, 5, 6, 7] {
            for limit in 1..=7 {
                let mut seen = Vec::new();
                let mut cursor: Option<String> = None;
                loop {
                    let (items, next) = paginate(
                        ids(n),
                        |s| s.as_str(),
                        &page(Some(limit), cursor.as_deref()),
                    )
                    .unwrap();
                    assert!(items.len() <= limit);
                    seen.extend(items);
                    match next {
                        Some(c) => cursor = Some(c),
                        None => break,
                    }
                }
                assert_eq!(seen, ids(n), "n={n} limit={limit}");
            }
        }
    }

    #[test]
    fn bad_limits_and_cursors_are_400s() {
        for limit in [0, MAX_PAGE_LIMIT + 1] {
            let err = paginate(ids(3), |s| s.as_str(), &page(Some(limit), None)).unwrap_err();
            assert!(
                matches!(err, ApiError::BadRequest(ref m) if m.contains("limit")),
                "{err}"
            );
        }
        let err = paginate(ids(3), |s| s.as_str(), &page(None, Some("nope"))).unwrap_err();
        assert!(
            matches!(err, ApiError::BadRequest(ref m) if m.contains("cursor")),
            "{err}"
        );
        let (items, next) = paginate(ids(3), |s| s.as_str(), &page(None, None)).unwrap();
        assert_eq!((items.len(), next), (3, None));
    }
}
