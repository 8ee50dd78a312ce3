//! Unit newtypes. Energy is integer millijoules until the last conversion; intensity and
//! emissions are `f64` because their sources are fractional.

use serde::{Deserialize, Serialize};
use std::ops::{Add, AddAssign};

/// Millijoules per kilowatt-hour (3.6 MJ).
pub const MJ_PER_KWH: u64 = 3_600_000_000;

/// Energy in integer millijoules: the unit of NVML's energy counter.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Millijoules(pub u64);

impl Millijoules {
    /// Converts to kilowatt-hours (the only lossy step, done at the edge).
    pub fn to_kwh(self) -> KilowattHours {
        KilowattHours(self.0 as f64 / MJ_PER_KWH as f64)
    }

    /// Converts to joules as a float, for display.
    pub fn to_joules(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// Adds, failing instead of wrapping.
    pub fn checked_add(self, other: Millijoules) -> Option<Millijoules> {
        self.0.checked_add(other.0).map(Millijoules)
    }
}

impl Add for Millijoules {
    type Output = Millijoules;
    fn add(self, rhs: Millijoules) -> Millijoules {
        Millijoules(self.0 + rhs.0)
    }
}

impl AddAssign for Millijoules {
    fn add_assign(&mut self, rhs: Millijoules) {
        self.0 += rhs.0;
    }
}

impl std::iter::Sum for Millijoules {
    fn sum<I: Iterator<Item = Millijoules>>(iter: I) -> Millijoules {
        Millijoules(iter.map(|e| e.0).sum())
    }
}

/// Power in integer milliwatts: the unit of `nvmlDeviceGetPowerUsage`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Milliwatts(pub u32);

impl Milliwatts {
    /// Converts to watts for display.
    pub fn to_watts(self) -> f64 {
        f64::from(self.0) / 1000.0
    }
}

/// Energy in kilowatt-hours.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
pub struct KilowattHours(pub f64);

/// Carbon intensity in grams of CO2-equivalent per kilowatt-hour.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
pub struct GramsPerKwh(pub f64);

impl GramsPerKwh {
    /// Grams per kWh in one pound per MWh (exact: 453.59237 g / 1000 kWh).
    pub const PER_LB_PER_MWH: f64 = 0.453_592_37;

    /// Converts pounds per megawatt-hour (eGRID, WattTime API) to g/kWh.
    pub fn from_lb_per_mwh(v: f64) -> GramsPerKwh {
        GramsPerKwh(v * Self::PER_LB_PER_MWH)
    }

    /// Converts kilograms per kilowatt-hour (SGIP) to g/kWh.
    pub fn from_kg_per_kwh(v: f64) -> GramsPerKwh {
        GramsPerKwh(v * 1000.0)
    }

    /// Emissions of `energy` at this intensity.
    pub fn emissions(self, energy: Millijoules) -> GramsCo2e {
        GramsCo2e(energy.0 as f64 * self.0 / MJ_PER_KWH as f64)
    }
}

/// Mass of CO2-equivalent in grams.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
pub struct GramsCo2e(pub f64);

impl Add for GramsCo2e {
    type Output = GramsCo2e;
    fn add(self, rhs: GramsCo2e) -> GramsCo2e {
        GramsCo2e(self.0 + rhs.0)
    }
}

impl AddAssign for GramsCo2e {
    fn add_assign(&mut self, rhs: GramsCo2e) {
        self.0 += rhs.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kwh_conversion_is_exact_for_whole_kwh() {
        assert_eq!(Millijoules(3_600_000_000).to_kwh(), KilowattHours(1.0));
        assert_eq!(Millijoules(0).to_kwh(), KilowattHours(0.0));
    }

    #[test]
    fn emissions_of_one_kwh_equal_the_intensity() {
        let e = GramsPerKwh(412.5).emissions(Millijoules(MJ_PER_KWH));
        assert_eq!(e, GramsCo2e(412.5));
    }

    #[test]
    fn pound_conversion_uses_the_exact_factor() {
        assert_eq!(GramsPerKwh::from_lb_per_mwh(1000.0).0, 453.59237);
        assert_eq!(GramsPerKwh::from_kg_per_kwh(0.664).0, 664.0);
    }
}
