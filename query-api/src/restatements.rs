//! A tenant's intensity restatements: 5-minute GPU-intervals whose intensity was replaced when
//! better data arrived — a forecast, a nearest actual or the fallback average by the actual
//! marginal value, or a step up in between — with the emissions each change made. The store
//! replaces the interval's intensity (so summaries and footprints already show the new value)
//! and keeps the record this module renders; REST ([`crate::routes`]) and gRPC
//! ([`crate::grpc`]) both call [`list_restatements`].
//!
//! The range selects intervals by bucket, exactly as a summary does, so the totals of
//! `GET /v1/restatements?from&to` are what `GET /v1/summary?from&to` moved by.

use std::collections::BTreeSet;

use wattprint_core::intensity::{policy_rank, JoinedIntensity};
use wattprint_core::{TenantScope, UnixMillis, BUCKET_MS};
use wattprint_store::{Restatement, Store};

pub use wattprint_api_types::{
    IntensityView, RestatementTotals, RestatementView, RestatementsView,
};

use crate::error::ApiError;
use crate::service::check_range;
use crate::time::{ceil_to, floor_to, parse_required_instant};
use crate::ApiLimits;

/// A validated restatements request: intervals whose 5-minute bucket overlaps `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestatementsRequest {
    /// Start (inclusive).
    pub from: UnixMillis,
    /// End (exclusive).
    pub to: UnixMillis,
}

impl RestatementsRequest {
    /// Parses the required `from` and `to` (RFC 3339 or Unix ms; empty counts as absent, as
    /// gRPC sends an unset string).
    pub fn parse(from: Option<&str>, to: Option<&str>) -> Result<Self, ApiError> {
        Ok(Self {
            from: parse_required_instant("from", from).map_err(ApiError::BadRequest)?,
            to: parse_required_instant("to", to).map_err(ApiError::BadRequest)?,
        })
    }

    /// Checks `from < to` and the range limit (as summaries: 31 days by default).
    pub fn validate(&self, limits: &ApiLimits) -> Result<(), ApiError> {
        check_range(self.from, self.to, limits)
    }
}

/// The API's view of a joined intensity.
pub fn intensity_view(j: &JoinedIntensity) -> IntensityView {
    IntensityView {
        value_g_per_kwh: j.value.0,
        kind: j.kind.as_str().to_owned(),
        source: j.source.clone(),
        point_at: j.point_at.to_rfc3339(),
        replayed: j.replayed,
    }
}

/// The API's view of a stored restatement.
pub fn restatement_view(r: &Restatement) -> RestatementView {
    RestatementView {
        instance: r.instance.to_string(),
        gpu: r.gpu.to_string(),
        bucket_start: r.bucket.start().to_rfc3339(),
        region: r.region.to_string(),
        energy_mj: r.energy.0,
        pue: r.pue,
        previous: r.previous.as_ref().map(intensity_view),
        current: intensity_view(&r.current),
        reason: r.reason.clone(),
        restated_at: r.restated_at.to_rfc3339(),
        it_co2e_delta_g: r.it_co2e_delta().0,
        facility_co2e_delta_g: r.facility_co2e_delta().0,
    }
}

/// Renders `records` over `[from, to)`: ordered by bucket, instance, GPU, then restatement
/// time and policy step (two restatements of one interval in the same millisecond are listed
/// in the order the policy allows: a value is only ever replaced by a better one), with totals
/// summed in that order.
pub fn restatements_view(
    from: UnixMillis,
    to: UnixMillis,
    mut records: Vec<Restatement>,
) -> RestatementsView {
    records.sort_by(|a, b| {
        (a.bucket, &a.instance, &a.gpu, a.restated_at)
            .cmp(&(b.bucket, &b.instance, &b.gpu, b.restated_at))
            .then_with(|| {
                policy_rank(Some(&a.current), a.bucket)
                    .cmp(&policy_rank(Some(&b.current), b.bucket))
            })
    });
    let mut totals = RestatementTotals::default();
    let mut intervals = BTreeSet::new();
    let restatements = records
        .iter()
        .map(|r| {
            let view = restatement_view(r);
            totals.it_co2e_delta_g += view.it_co2e_delta_g;
            totals.facility_co2e_delta_g += view.facility_co2e_delta_g;
            intervals.insert((&r.instance, &r.gpu, r.bucket));
            view
        })
        .collect();
    totals.intervals = intervals.len() as u64;
    RestatementsView {
        from: from.to_rfc3339(),
        to: to.to_rfc3339(),
        restatements,
        totals,
    }
}

/// The tenant's restatements of intervals whose bucket overlaps `[from, to)`. More records than
/// [`ApiLimits::max_restatements`]: 400 asking for a shorter range (never a truncated list).
pub async fn list_restatements(
    store: &dyn Store,
    scope: &TenantScope,
    req: RestatementsRequest,
    limits: &ApiLimits,
) -> Result<RestatementsView, ApiError> {
    req.validate(limits)?;
    let from = floor_to(req.from, BUCKET_MS);
    let to = ceil_to(req.to, BUCKET_MS);
    let records = store
        .restatements(scope, from, to)
        .await
        .map_err(|e| ApiError::from_store(e, || "no restatements".into()))?;
    if let Some(foreign) = records.iter().find(|r| &r.tenant != scope.tenant()) {
        // The store scopes every read; a record of another tenant is a bug never to show.
        return Err(ApiError::Internal(format!(
            "store returned a restatement of tenant {} for tenant {}",
            foreign.tenant,
            scope.tenant()
        )));
    }
    if records.len() > limits.max_restatements {
        return Err(ApiError::BadRequest(format!(
            "the range holds {} restatements, more than the limit of {}; ask for a shorter range",
            records.len(),
            limits.max_restatements
        )));
    }
    Ok(restatements_view(from, to, records))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wattprint_core::intensity::IntensityKind;
    use wattprint_core::{
        Bucket, GpuUuid, GramsPerKwh, InstanceId, Millijoules, RegionId, TenantId,
    };

    const KWH: u64 = 3_600_000_000;

    fn joined(v: f64, kind: IntensityKind, point_at: i64) -> JoinedIntensity {
        JoinedIntensity {
            value: GramsPerKwh(v),
            kind,
            source: "t".into(),
            point_at: UnixMillis(point_at),
            replayed: false,
        }
    }

    fn record(
        bucket_i: i64,
        gpu: &str,
        mj: u64,
        previous: Option<JoinedIntensity>,
        current: JoinedIntensity,
        at: i64,
    ) -> Restatement {
        Restatement {
            tenant: TenantId::from("acme"),
            instance: InstanceId::from("i"),
            gpu: GpuUuid::from(gpu),
            bucket: Bucket::containing(UnixMillis(bucket_i * BUCKET_MS)),
            region: RegionId::from("R"),
            energy: Millijoules(mj),
            pue: 1.5,
            previous,
            current,
            reason: "r".into(),
            restated_at: UnixMillis(at),
        }
    }

    #[test]
    fn steps_of_one_interval_are_listed_in_policy_order_and_counted_once() {
        let avg = joined(400.0, IntensityKind::FallbackAverage, 0);
        let forecast = joined(300.0, IntensityKind::Forecast, -BUCKET_MS);
        let actual = joined(100.0, IntensityKind::Actual, 0);
        // Same millisecond, listed in the wrong order, plus a GPU without previous intensity.
        let records = vec![
            record(0, "g1", KWH, Some(forecast.clone()), actual.clone(), 7),
            record(0, "g1", KWH, Some(avg), forecast, 7),
            record(0, "g0", 2 * KWH, None, actual, 7),
        ];
        let v = restatements_view(UnixMillis(0), UnixMillis(BUCKET_MS), records);
        let kinds: Vec<(&str, &str)> = v
            .restatements
            .iter()
            .map(|r| (r.gpu.as_str(), r.current.kind.as_str()))
            .collect();
        assert_eq!(
            kinds,
            vec![("g0", "actual"), ("g1", "forecast"), ("g1", "actual")]
        );
        assert_eq!(v.restatements[0].previous, None);
        assert_eq!(v.restatements[0].it_co2e_delta_g, 200.0);
        assert_eq!(v.restatements[1].it_co2e_delta_g, -100.0);
        assert_eq!(v.restatements[2].it_co2e_delta_g, -200.0);
        // The steps of g1 telescope: 1 kWh × (100 − 400).
        assert_eq!(v.totals.intervals, 2);
        assert_eq!(v.totals.it_co2e_delta_g, 200.0 - 300.0);
        assert_eq!(v.totals.facility_co2e_delta_g, (200.0 - 300.0) * 1.5);
        assert_eq!(v.restatements[1].bucket_start, "1970-01-01T00:00:00.000Z");
        assert_eq!(
            v.restatements[1].current.point_at,
            "1969-12-31T23:55:00.000Z"
        );
    }

    #[test]
    fn requests_need_both_ends_and_respect_the_range_limit() {
        let limits = ApiLimits::default();
        for (from, to, needle) in [
            (None, Some("0"), "from is required"),
            (Some("0"), Some(""), "to is required"),
            (Some("soon"), Some("0"), "from"),
        ] {
            match RestatementsRequest::parse(from, to) {
                Err(ApiError::BadRequest(m)) => assert!(m.contains(needle), "{m}"),
                other => panic!("{from:?} {to:?}: {other:?}"),
            }
        }
        let ok = RestatementsRequest::parse(Some("2026-11-23T00:00:00Z"), Some("1795392300000"))
            .unwrap();
        assert!(ok.validate(&limits).is_ok());
        let reversed = RestatementsRequest {
            from: ok.to,
            to: ok.from,
        };
        assert!(reversed.validate(&limits).is_err());
        let long = RestatementsRequest {
            from: ok.from,
            to: UnixMillis(ok.from.0 + limits.max_range_ms + 1),
        };
        assert!(long.validate(&limits).is_err());
    }
}
