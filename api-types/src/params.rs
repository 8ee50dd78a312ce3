//! Query parameters of the REST routes, as the server reads them (strings it parses itself,
//! so that a bad value is its own 400 naming the parameter).

use serde::Deserialize;

use crate::{Basis, StatusFilter, Step};

/// A page of an ordered list: the items after `cursor` (exclusive), at most `limit`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page (opaque: only a cursor the server gave is valid);
    /// absent for the first page.
    pub cursor: Option<String>,
}

/// Query of `GET /v1/workloads`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WorkloadListParams {
    /// Items per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page (opaque: only a cursor the server gave is valid);
    /// absent for the first page.
    pub cursor: Option<String>,
    /// `open`, `closed` or `all` (default).
    #[param(value_type = Option<StatusFilter>)]
    pub status: Option<String>,
}

/// Query of `GET /v1/instances/{id}/series`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SeriesParams {
    /// Start: RFC 3339 (years 0000 to 9999) or Unix ms (default: `to` − 1 h).
    #[param(example = "2026-11-23T00:00:00Z", value_type = Option<String>, format = DateTime)]
    pub from: Option<String>,
    /// End, exclusive: RFC 3339 (years 0000 to 9999) or Unix ms (default: now); after `from`,
    /// and at most the server's range limit after it (31 days by default).
    #[param(example = "2026-11-23T01:00:00Z", value_type = Option<String>, format = DateTime)]
    pub to: Option<String>,
    /// `raw`, `5m` (default), `1h` or `1d`.
    #[param(value_type = Option<Step>)]
    pub step: Option<String>,
}

/// Query of `GET /v1/workloads/{id}/whatif`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WhatIfParams {
    /// Flexible Start windows, hours, comma-separated (default 6,12,18,24): 1 to 8, each more
    /// than 0 and at most 720, in whole 5-minute steps (multiples of 1/12 h).
    #[param(value_type = Option<Vec<f64>>, style = Form, explode = false, min_items = 1, max_items = 8)]
    pub window_hours: Option<String>,
    /// Pause and Resume factors, comma-separated (default 1.25,1.5,1.75,2): 1 to 8, each
    /// from 1 to 4.
    #[param(value_type = Option<Vec<f64>>, style = Form, explode = false, min_items = 1, max_items = 8)]
    pub factor: Option<String>,
    /// `actual` (default: hindsight) or `forecast` (planned on the forecasts known at the
    /// workload's start, and judged on actuals).
    #[param(value_type = Option<Basis>)]
    pub basis: Option<String>,
}

/// Query of `GET /v1/summary`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SummaryParams {
    /// Start: RFC 3339 (years 0000 to 9999) or Unix ms (required).
    #[param(required = true, value_type = String, format = DateTime, example = "2026-11-01T00:00:00Z")]
    pub from: Option<String>,
    /// End, exclusive: RFC 3339 (years 0000 to 9999) or Unix ms (required); after `from`, and
    /// at most the server's range limit after it (31 days by default).
    #[param(required = true, value_type = String, format = DateTime, example = "2026-12-01T00:00:00Z")]
    pub to: Option<String>,
}

/// Query of `GET /v1/restatements`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RestatementsParams {
    /// Start: RFC 3339 (years 0000 to 9999) or Unix ms (required).
    #[param(required = true, value_type = String, format = DateTime, example = "2026-11-01T00:00:00Z")]
    pub from: Option<String>,
    /// End, exclusive: RFC 3339 (years 0000 to 9999) or Unix ms (required); after `from`, and
    /// at most the server's range limit after it (31 days by default).
    #[param(required = true, value_type = String, format = DateTime, example = "2026-12-01T00:00:00Z")]
    pub to: Option<String>,
}
