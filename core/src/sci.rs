//! Software Carbon Intensity, SCI = (E·I + M) / R (ISO/IEC 21031:2024), with facility overhead
//! (PUE) and embodied carbon amortised over the hardware's life, and the provenance of every
//! number that went in.

use crate::intensity::IntensityKind;
use crate::time::Bucket;
use crate::units::{GramsCo2e, GramsPerKwh, Millijoules};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use thiserror::Error;

/// Milliseconds in a (Julian) year, the unit of hardware service life.
pub const MS_PER_YEAR: f64 = 365.25 * 24.0 * 3600.0 * 1000.0;

/// Embodied carbon of one hardware model and how long it is expected to serve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbodiedSpec {
    /// Total embodied emissions of one unit (manufacture, transport, end of life), kgCO2e.
    pub embodied_kgco2e: f64,
    /// Expected service life, years.
    pub lifetime_years: f64,
    /// Where the figure comes from (shown in reports).
    pub source: String,
}

/// Errors in the hardware catalog.
#[derive(Debug, Error, PartialEq)]
pub enum CatalogError {
    /// A figure is not a positive finite number.
    #[error("hardware model {model:?}: {field} must be a positive finite number, got {value}")]
    BadFigure {
        /// Model name.
        model: String,
        /// Field name.
        field: &'static str,
        /// Offending value.
        value: f64,
    },
}

/// Embodied carbon per GPU model name (as NVML reports it, e.g. `NVIDIA H100 80GB HBM3`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HardwareCatalog {
    /// Model name → spec.
    pub models: BTreeMap<String, EmbodiedSpec>,
}

impl HardwareCatalog {
    /// Checks every figure is positive and finite.
    pub fn validate(&self) -> Result<(), CatalogError> {
        for (model, spec) in &self.models {
            for (field, value) in [
                ("embodied_kgco2e", spec.embodied_kgco2e),
                ("lifetime_years", spec.lifetime_years),
            ] {
                if !value.is_finite() || value <= 0.0 {
                    return Err(CatalogError::BadFigure {
                        model: model.clone(),
                        field,
                        value,
                    });
                }
            }
        }
        Ok(())
    }

    /// Embodied emissions of one GPU of `model` reserved for `reserved_ms` (GSF SCI:
    /// M = TE × TiR / EL, with the whole GPU as the resource share). `None` for unknown models.
    pub fn embodied_share(&self, model: &str, reserved_ms: i64) -> Option<GramsCo2e> {
        let spec = self.models.get(model)?;
        let share = reserved_ms.max(0) as f64 / (spec.lifetime_years * MS_PER_YEAR);
        Some(GramsCo2e(spec.embodied_kgco2e * 1000.0 * share))
    }
}

/// One GPU's energy in one bucket, clipped to a workload's range, with its join result.
#[derive(Debug, Clone, PartialEq)]
pub struct FootprintSlice {
    /// The bucket.
    pub bucket: Bucket,
    /// IT (GPU) energy in the bucket.
    pub energy: Millijoules,
    /// Part of `energy` that was estimated rather than read from the counter.
    pub estimated: Millijoules,
    /// Intensity joined to the bucket, if any.
    pub intensity: Option<(GramsPerKwh, IntensityKind)>,
    /// The intensity is a historical series replayed on a shifted clock (demo, tests).
    pub intensity_replayed: bool,
    /// Facility overhead of the region (1.0 when not configured).
    pub pue: f64,
}

/// Provenance of a footprint: how much was measured, and which intensity kinds were used.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FootprintProvenance {
    /// Share of energy read from the counter (1.0 = all measured).
    pub energy_measured_share: f64,
    /// Slices joined with an actual marginal value.
    pub intervals_actual: u64,
    /// Slices joined with a forecast.
    pub intervals_forecast: u64,
    /// Slices joined with the region's average (flagged fallback).
    pub intervals_fallback: u64,
    /// Slices with no intensity at all: their energy has no emissions counted.
    pub intervals_missing_intensity: u64,
    /// Energy in those slices.
    pub energy_without_intensity_mj: u64,
    /// Slices whose intensity was a historical series replayed on a shifted clock: real data,
    /// but not the grid's at the time the energy was used.
    pub intervals_replayed_intensity: u64,
}

/// Energy, emissions and SCI of a set of slices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Footprint {
    /// IT energy, exact.
    pub it_energy_mj: u64,
    /// IT energy.
    pub it_energy_kwh: f64,
    /// Facility energy: Σ IT energy × PUE.
    pub facility_energy_kwh: f64,
    /// Σ E_i × I_i on IT energy.
    pub operational_it_co2e_g: f64,
    /// Σ E_i × PUE_i × I_i: the operational emissions SCI uses.
    pub operational_co2e_g: f64,
    /// Embodied share M.
    pub embodied_co2e_g: f64,
    /// Operational + embodied.
    pub total_co2e_g: f64,
    /// Number of functional units R.
    pub functional_units: f64,
    /// (E·I + M) / R, in gCO2e per functional unit.
    pub sci_g_per_unit: f64,
    /// Where the numbers came from.
    pub provenance: FootprintProvenance,
}

/// Errors computing a footprint.
#[derive(Debug, Error, PartialEq)]
pub enum FootprintError {
    /// R must be a positive finite number.
    #[error("functional unit count must be positive and finite, got {0}")]
    BadFunctionalUnits(f64),
}

/// Computes energy, emissions (Σ per 5-minute slice, never E_total × mean I) and SCI.
pub fn footprint(
    slices: &[FootprintSlice],
    embodied: GramsCo2e,
    functional_units: f64,
) -> Result<Footprint, FootprintError> {
    if !functional_units.is_finite() || functional_units <= 0.0 {
        return Err(FootprintError::BadFunctionalUnits(functional_units));
    }
    let mut it_energy = Millijoules(0);
    let mut estimated = Millijoules(0);
    let mut facility_kwh = 0.0;
    let mut it_co2e = GramsCo2e(0.0);
    let mut co2e = GramsCo2e(0.0);
    let mut prov = FootprintProvenance::default();
    for s in slices {
        it_energy += s.energy;
        estimated += s.estimated;
        facility_kwh += s.energy.to_kwh().0 * s.pue;
        if s.intensity.is_some() && s.intensity_replayed {
            prov.intervals_replayed_intensity += 1;
        }
        match s.intensity {
            Some((i, kind)) => {
                let e = i.emissions(s.energy);
                it_co2e += e;
                co2e += GramsCo2e(e.0 * s.pue);
                match kind {
                    IntensityKind::Actual => prov.intervals_actual += 1,
                    IntensityKind::Forecast => prov.intervals_forecast += 1,
                    IntensityKind::FallbackAverage => prov.intervals_fallback += 1,
                }
            }
            None => {
                prov.intervals_missing_intensity += 1;
                prov.energy_without_intensity_mj += s.energy.0;
            }
        }
    }
    prov.energy_measured_share = if it_energy.0 == 0 {
        1.0
    } else {
        1.0 - estimated.0 as f64 / it_energy.0 as f64
    };
    let total = co2e.0 + embodied.0;
    Ok(Footprint {
        it_energy_mj: it_energy.0,
        it_energy_kwh: it_energy.to_kwh().0,
        facility_energy_kwh: facility_kwh,
        operational_it_co2e_g: it_co2e.0,
        operational_co2e_g: co2e.0,
        embodied_co2e_g: embodied.0,
        total_co2e_g: total,
        functional_units,
        sci_g_per_unit: total / functional_units,
        provenance: prov,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{UnixMillis, BUCKET_MS};

    fn slice(i: i64, mj: u64, intensity: Option<(f64, IntensityKind)>, pue: f64) -> FootprintSlice {
        FootprintSlice {
            bucket: Bucket::containing(UnixMillis(i * BUCKET_MS)),
            energy: Millijoules(mj),
            estimated: Millijoules(0),
            intensity: intensity.map(|(v, k)| (GramsPerKwh(v), k)),
            intensity_replayed: false,
            pue,
        }
    }

    #[test]
    fn sci_matches_a_hand_computation() {
        // 0.5 kWh at 400 g/kWh and 0.25 kWh at 100 g/kWh, PUE 1.2; M = 30 g; R = 10.
        // E·I (IT) = 200 + 25 = 225 g; facility ×1.2 = 270 g; SCI = (270 + 30) / 10 = 30 g.
        let slices = [
            slice(0, 1_800_000_000, Some((400.0, IntensityKind::Actual)), 1.2),
            slice(
                1,
                900_000_000,
                Some((100.0, IntensityKind::FallbackAverage)),
                1.2,
            ),
        ];
        let f = footprint(&slices, GramsCo2e(30.0), 10.0).unwrap();
        assert_eq!(f.it_energy_mj, 2_700_000_000);
        assert!((f.it_energy_kwh - 0.75).abs() < 1e-12);
        assert!((f.facility_energy_kwh - 0.9).abs() < 1e-12);
        assert!((f.operational_it_co2e_g - 225.0).abs() < 1e-9);
        assert!((f.operational_co2e_g - 270.0).abs() < 1e-9);
        assert!((f.sci_g_per_unit - 30.0).abs() < 1e-9);
        assert_eq!(
            (
                f.provenance.intervals_actual,
                f.provenance.intervals_fallback
            ),
            (1, 1)
        );
    }

    #[test]
    fn emissions_are_summed_per_interval_not_total_times_mean() {
        // Mean-based: (1+3 kWh) × mean(100, 500) = 1200 g. Per interval: 100 + 1500 = 1600 g.
        let kwh = 3_600_000_000;
        let slices = [
            slice(0, kwh, Some((100.0, IntensityKind::Actual)), 1.0),
            slice(1, 3 * kwh, Some((500.0, IntensityKind::Actual)), 1.0),
        ];
        let f = footprint(&slices, GramsCo2e(0.0), 1.0).unwrap();
        assert!((f.operational_co2e_g - 1600.0).abs() < 1e-9);
    }

    #[test]
    fn missing_intensity_is_reported_not_invented() {
        let slices = [
            slice(0, 1000, None, 1.0),
            slice(1, 500, Some((10.0, IntensityKind::Actual)), 1.0),
        ];
        let f = footprint(&slices, GramsCo2e(0.0), 1.0).unwrap();
        assert_eq!(f.provenance.intervals_missing_intensity, 1);
        assert_eq!(f.provenance.energy_without_intensity_mj, 1000);
        assert_eq!(f.it_energy_mj, 1500);
    }

    #[test]
    fn embodied_share_amortises_over_service_life() {
        let mut c = HardwareCatalog::default();
        c.models.insert(
            "gpu".into(),
            EmbodiedSpec {
                embodied_kgco2e: 1000.0,
                lifetime_years: 4.0,
                source: "test".into(),
            },
        );
        // One year of a 4-year life of a 1 t device: 250 kg.
        let m = c.embodied_share("gpu", MS_PER_YEAR as i64).unwrap();
        assert!((m.0 - 250_000.0).abs() < 1e-6);
        assert!(c.embodied_share("other", 1).is_none());
        c.models.get_mut("gpu").unwrap().lifetime_years = 0.0;
        assert!(matches!(
            c.validate(),
            Err(CatalogError::BadFigure {
                field: "lifetime_years",
                ..
            })
        ));
    }

    #[test]
    fn functional_units_must_be_positive() {
        assert_eq!(
            footprint(&[], GramsCo2e(0.0), 0.0),
            Err(FootprintError::BadFunctionalUnits(0.0))
        );
    }
}
