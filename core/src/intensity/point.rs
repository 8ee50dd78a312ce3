//! One data point of the intensity ledger, as a provider published it: what it measures
//! (marginal or average), whether it is an actual or a forecast, and where it came from.

use crate::ids::RegionId;
use crate::time::{UnixMillis, BUCKET_MS};
use crate::units::GramsPerKwh;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Highest intensity accepted, g/kWh. The dirtiest plants (lignite) emit about 1,200 g/kWh;
/// WattTime's MOER tops out near 1,900 lb/MWh ≈ 860 g/kWh. Anything above this is a unit error.
pub const MAX_PLAUSIBLE_G_PER_KWH: f64 = 3_000.0;

/// What an intensity value measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Marginal operating emissions rate (WattTime `co2_moer`, SGIP MOER): what extra load burns.
    Marginal,
    /// Average (location-based) rate (WattTime `co2_aoer`, Electricity Maps, eGRID).
    Average,
}

/// Whether a point was observed or predicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PointKind {
    /// Published for a period that has happened.
    Actual,
    /// Predicted, at `issued_at`, for a period that had not happened yet.
    Forecast,
}

macro_rules! str_enum {
    ($t:ty { $($v:ident => $s:literal),* $(,)? }) => {
        impl $t {
            /// Stable name used in storage, files and APIs.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => $s),* }
            }
            /// Parses [`Self::as_str`] output.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some(Self::$v),)* _ => None }
            }
        }
    };
}
str_enum!(Signal { Marginal => "marginal", Average => "average" });
str_enum!(PointKind { Actual => "actual", Forecast => "forecast" });

/// One intensity value for one region and period, with its provenance. The ledger keeps every
/// point; the join picks among them (see [`super::IntensityJoin`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntensityPoint {
    /// Wattprint region the value applies to.
    pub region: RegionId,
    /// Start of the period the value covers (UTC).
    pub at: UnixMillis,
    /// Length of the period, ms (300,000 for 5-minute data, 3,600,000 for hourly).
    pub duration_ms: i64,
    /// The value, g/kWh (converted exactly from the provider's unit).
    pub value: GramsPerKwh,
    /// Marginal or average.
    pub signal: Signal,
    /// Actual or forecast.
    pub kind: PointKind,
    /// When a forecast was made (`None` for actuals).
    pub issued_at: Option<UnixMillis>,
    /// Provider and its region name, e.g. `watttime:CAISO_NORTH`, `electricitymaps:US-CAL-CISO`.
    pub provider: String,
    /// The provider's model version (WattTime's `model.date`), when it gives one.
    pub model_version: Option<String>,
    /// When Wattprint fetched it.
    pub fetched_at: UnixMillis,
}

/// Why a point is refused.
#[derive(Debug, Error, PartialEq)]
pub enum PointError {
    /// Value not finite, negative or implausibly large.
    #[error("{provider} {region} at {at}: intensity {value} g/kWh is not within 0..={MAX_PLAUSIBLE_G_PER_KWH}")]
    BadValue {
        /// Provider.
        provider: String,
        /// Region.
        region: RegionId,
        /// Period start.
        at: UnixMillis,
        /// Offending value.
        value: f64,
    },
    /// Period not on 5-minute boundaries, or not positive.
    #[error("{provider} {region}: period [{at}, +{duration_ms} ms) is not a whole number of 5-minute buckets")]
    BadPeriod {
        /// Provider.
        provider: String,
        /// Region.
        region: RegionId,
        /// Period start.
        at: UnixMillis,
        /// Period length.
        duration_ms: i64,
    },
    /// A forecast without its issue time, an actual with one, or a forecast issued after the
    /// period it predicts ended.
    #[error("{provider} {region} at {at}: {detail}")]
    BadIssueTime {
        /// Provider.
        provider: String,
        /// Region.
        region: RegionId,
        /// Period start.
        at: UnixMillis,
        /// What is wrong.
        detail: &'static str,
    },
    /// The region is not configured.
    #[error("{provider}: region {region} is not configured")]
    UnknownRegion {
        /// Provider.
        provider: String,
        /// Region.
        region: RegionId,
    },
}

impl IntensityPoint {
    /// Checks the point on its own: plausible value, whole 5-minute period, issue time present
    /// exactly for forecasts and not after the period.
    pub fn validate(&self) -> Result<(), PointError> {
        let v = self.value.0;
        if !v.is_finite() || !(0.0..=MAX_PLAUSIBLE_G_PER_KWH).contains(&v) {
            return Err(PointError::BadValue {
                provider: self.provider.clone(),
                region: self.region.clone(),
                at: self.at,
                value: v,
            });
        }
        if self.duration_ms <= 0
            || self.at.0.rem_euclid(BUCKET_MS) != 0
            || self.duration_ms % BUCKET_MS != 0
        {
            return Err(PointError::BadPeriod {
                provider: self.provider.clone(),
                region: self.region.clone(),
                at: self.at,
                duration_ms: self.duration_ms,
            });
        }
        let issue_problem = match (self.kind, self.issued_at) {
            (PointKind::Actual, Some(_)) => Some("an actual carries no issue time"),
            (PointKind::Forecast, None) => Some("a forecast needs its issue time"),
            (PointKind::Forecast, Some(issued)) if issued.0 >= self.end().0 => {
                Some("forecast issued after the period it predicts")
            }
            _ => None,
        };
        match issue_problem {
            Some(detail) => Err(PointError::BadIssueTime {
                provider: self.provider.clone(),
                region: self.region.clone(),
                at: self.at,
                detail,
            }),
            None => Ok(()),
        }
    }

    /// End of the period (exclusive).
    pub fn end(&self) -> UnixMillis {
        UnixMillis(self.at.0.saturating_add(self.duration_ms))
    }

    /// The provenance label intervals carry: provider, and `@model` when versioned.
    pub fn source(&self) -> String {
        match &self.model_version {
            Some(m) => format!("{}@{m}", self.provider),
            None => self.provider.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn point(
        at: i64,
        value: f64,
        kind: PointKind,
        issued: Option<i64>,
    ) -> IntensityPoint {
        IntensityPoint {
            region: RegionId::from("R"),
            at: UnixMillis(at),
            duration_ms: BUCKET_MS,
            value: GramsPerKwh(value),
            signal: Signal::Marginal,
            kind,
            issued_at: issued.map(UnixMillis),
            provider: "watttime:R".to_owned(),
            model_version: Some("2023-03-01".to_owned()),
            fetched_at: UnixMillis(0),
        }
    }

    #[test]
    fn points_are_checked_on_their_own() {
        assert!(point(0, 100.0, PointKind::Actual, None).validate().is_ok());
        assert!(point(BUCKET_MS, 0.0, PointKind::Forecast, Some(0))
            .validate()
            .is_ok());
        for bad in [f64::NAN, -1.0, 3_000.1, f64::INFINITY] {
            assert!(matches!(
                point(0, bad, PointKind::Actual, None).validate(),
                Err(PointError::BadValue { .. })
            ));
        }
        assert!(matches!(
            point(1, 1.0, PointKind::Actual, None).validate(),
            Err(PointError::BadPeriod { .. })
        ));
        let mut hourly = point(0, 1.0, PointKind::Actual, None);
        hourly.duration_ms = 3_600_000;
        assert!(hourly.validate().is_ok());
        hourly.duration_ms = 0;
        assert!(matches!(
            hourly.validate(),
            Err(PointError::BadPeriod { .. })
        ));
        for (kind, issued) in [
            (PointKind::Actual, Some(0)),
            (PointKind::Forecast, None),
            (PointKind::Forecast, Some(BUCKET_MS)),
        ] {
            assert!(matches!(
                point(0, 1.0, kind, issued).validate(),
                Err(PointError::BadIssueTime { .. })
            ));
        }
    }

    #[test]
    fn names_round_trip_and_source_names_the_model() {
        for s in [Signal::Marginal, Signal::Average] {
            assert_eq!(Signal::parse(s.as_str()), Some(s));
        }
        for k in [PointKind::Actual, PointKind::Forecast] {
            assert_eq!(PointKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(
            point(0, 1.0, PointKind::Actual, None).source(),
            "watttime:R@2023-03-01"
        );
    }
}
