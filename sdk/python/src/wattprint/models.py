"""Response and request bodies of the query API as frozen dataclasses.

Field names are the server's JSON names (``from`` is ``from_``, a Python keyword). Times are
the RFC 3339 strings the server sends; energy is exact in ``*_mj`` (integer millijoules) and
converted in ``*_kwh``. Fields only newer servers send have defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True)
class Health:
    """Body of ``GET /healthz``."""

    status: str


# --- Inventory ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Gpu:
    """A GPU of an instance."""

    uuid: str
    model: str
    power_limit_w: float


@dataclass(frozen=True, kw_only=True)
class Instance:
    """One of the tenant's instances."""

    instance_id: str
    region: str
    zip_code: str | None
    gpus: list[Gpu]


@dataclass(frozen=True, kw_only=True)
class InstanceList:
    """One page of ``GET /v1/instances``; ``next_cursor`` is None on the last page."""

    instances: list[Instance]
    next_cursor: str | None = None


# --- Series ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class IntensityKinds:
    """Counts of GPU-intervals by intensity provenance."""

    actual: int
    forecast: int
    fallback_average: int
    missing: int
    replayed: int


@dataclass(frozen=True, kw_only=True)
class AggregatePoint:
    """One step of an aggregated series (``5m``, ``1h``, ``1d``), all GPUs summed."""

    start: str
    end: str
    energy_mj: int
    energy_kwh: float
    estimated_energy_mj: int
    power_mean_w: float | None
    power_max_w: float | None
    coverage: float
    intensity_g_per_kwh: float | None
    intensity_kinds: IntensityKinds
    co2e_g: float
    facility_co2e_g: float
    co2e_missing_energy_mj: int
    #: Energy-weighted mean of the region's average (location-based) intensity, g/kWh.
    average_intensity_g_per_kwh: float | None = None
    #: IT emissions on average intensity.
    average_co2e_g: float | None = None
    #: Facility emissions on average intensity.
    average_facility_co2e_g: float | None = None


@dataclass(frozen=True, kw_only=True)
class RawPoint:
    """One stored sample of one GPU (``step=raw``)."""

    start: str
    end: str
    gpu_uuid: str
    energy_mj: int
    power_w: float
    power_max_w: float
    util_gpu_pct: int
    temp_c: int
    chain_start: bool
    energy_source: str
    attribution: str


@dataclass(frozen=True, kw_only=True)
class Series:
    """Body of ``GET /v1/instances/{id}/series``: raw points for ``step == "raw"``, aggregated
    ones otherwise."""

    instance_id: str
    step: str
    from_: str
    to: str
    points: list[RawPoint] | list[AggregatePoint]

    @property
    def energy_mj(self) -> int:
        """Σ energy of the points, exact."""
        return sum(p.energy_mj for p in self.points)


# --- Summary --------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Provenance:
    """Where a footprint's or usage's numbers came from."""

    energy_measured_share: float
    intervals_actual: int
    intervals_forecast: int
    intervals_fallback: int
    intervals_missing_intensity: int
    energy_without_intensity_mj: int
    intervals_replayed_intensity: int


@dataclass(frozen=True, kw_only=True)
class Usage:
    """Energy, emissions and provenance of a set of GPU-intervals."""

    it_energy_mj: int
    it_energy_kwh: float
    estimated_energy_mj: int
    facility_energy_kwh: float
    operational_it_co2e_g: float
    operational_co2e_g: float
    gpu_intervals: int
    covered_gpu_ms: int
    power_max_w: float | None
    provenance: Provenance


@dataclass(frozen=True, kw_only=True)
class InstanceUsage(Usage):
    """One instance of a tenant summary: its usage plus the instance id and GPU count."""

    instance_id: str
    gpus: int


@dataclass(frozen=True, kw_only=True)
class TenantSummary:
    """Body of ``GET /v1/summary``."""

    from_: str
    to: str
    totals: Usage
    instances: list[InstanceUsage]


# --- Workloads ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Workload:
    """A workload: a labelled time range over instances with a functional unit R."""

    id: str
    label: str
    instance_ids: list[str]
    from_: str
    to: str | None
    functional_unit: str
    functional_units: float
    created_at: str
    labels: dict[str, str] = field(default_factory=dict)
    status: str | None = None


@dataclass(frozen=True, kw_only=True)
class WorkloadList:
    """One page of ``GET /v1/workloads``, newest first."""

    workloads: list[Workload]
    next_cursor: str | None = None


@dataclass(frozen=True, kw_only=True)
class Coverage:
    """GPU-time a footprint expected and found."""

    expected_gpu_ms: int
    covered_gpu_ms: int


@dataclass(frozen=True, kw_only=True)
class Embodied:
    """Embodied emissions inputs."""

    gpus: int
    unknown_models: list[str]


@dataclass(frozen=True, kw_only=True)
class AverageEmissions:
    """A workload's emissions on the grid's average (location-based) intensity: the region's
    published average covering each 5-minute interval, else its static annual rate."""

    operational_it_co2e_g: float
    operational_co2e_g: float
    total_co2e_g: float
    sci_g_per_unit: float
    intensity_g_per_kwh: float | None
    energy_without_intensity_mj: int
    intensity_sources: list[str]


@dataclass(frozen=True, kw_only=True)
class Footprint:
    """A workload's energy, emissions and SCI = (E·I + M) / R."""

    it_energy_mj: int
    it_energy_kwh: float
    facility_energy_kwh: float
    operational_it_co2e_g: float
    operational_co2e_g: float
    embodied_co2e_g: float
    total_co2e_g: float
    functional_units: float
    sci_g_per_unit: float
    provenance: Provenance
    functional_unit: str
    coverage: Coverage
    embodied: Embodied
    missing_instances: list[str]
    #: The same footprint on the grid's average intensity; None when the server has no
    #: intensity sources.
    average: AverageEmissions | None = None


@dataclass(frozen=True, kw_only=True)
class WorkloadDetail(Workload):
    """Body of ``GET /v1/workloads/{id}``: the workload with its footprint."""

    footprint: Footprint


# --- What-ifs -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class FlexibleStart:
    """One Flexible Start result: the run started later within ``window_hours``."""

    window_hours: float
    actual_co2e_g: float
    best_start: str
    best_delay_minutes: int
    best_co2e_g: float
    worst_start: str
    worst_co2e_g: float
    saving_co2e_g: float
    saving_pct: float
    #: Basis ``forecast``: the best start's emissions on the actual intensity (None for basis
    #: ``actual`` or where actuals do not cover it).
    realized_co2e_g: float | None = None
    #: Basis ``forecast``: as run minus ``realized_co2e_g``, both on actuals (may be negative).
    realized_saving_co2e_g: float | None = None


@dataclass(frozen=True, kw_only=True)
class ScheduleRun:
    """A stretch in which a paused-and-resumed run works."""

    from_: str
    to: str


@dataclass(frozen=True, kw_only=True)
class PauseResume:
    """One Pause and Resume result: the run ending within ``factor ×`` its duration."""

    factor: float
    deadline: str
    actual_co2e_g: float
    co2e_g: float
    saving_co2e_g: float
    saving_pct: float
    paused_minutes: int
    schedule: list[ScheduleRun]
    #: Basis ``forecast``: this schedule's emissions on the actual intensity.
    realized_co2e_g: float | None = None
    #: Basis ``forecast``: as run minus ``realized_co2e_g``, both on actuals.
    realized_saving_co2e_g: float | None = None


@dataclass(frozen=True, kw_only=True)
class WhatIf:
    """Body of ``GET /v1/workloads/{id}/whatif``."""

    workload_id: str
    region: str
    #: What intensity the results rest on, in words.
    basis: str
    #: The basis asked for: ``actual`` or ``forecast``.
    basis_kind: str
    intensity_source: str
    intensity_replayed: bool
    first_slot: str
    profile_slots: int
    energy_kwh: float
    intensity_known_until: str
    flexible_start: list[FlexibleStart]
    pause_resume: list[PauseResume]
    unavailable: list[str]


# --- Operator -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class OperatorTenant:
    """A tenant as an operator sees it."""

    tenant: str
    instances: int
    gpus: int


@dataclass(frozen=True, kw_only=True)
class OperatorTenantList:
    """Body of ``GET /v1/operator/tenants``: every tenant of the inventory, by id."""

    tenants: list[OperatorTenant]


# --- Restatements ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class IntensityValue:
    """An intensity value an interval was joined with, and where it came from."""

    value_g_per_kwh: float
    kind: str
    source: str
    point_at: str
    replayed: bool


@dataclass(frozen=True, kw_only=True)
class Restatement:
    """One restatement of one GPU-interval."""

    instance: str
    gpu: str
    bucket_start: str
    region: str
    energy_mj: int
    pue: float
    previous: IntensityValue | None
    current: IntensityValue
    reason: str
    restated_at: str
    it_co2e_delta_g: float
    facility_co2e_delta_g: float


@dataclass(frozen=True, kw_only=True)
class RestatementTotals:
    """Sums over the restatements listed."""

    intervals: int
    it_co2e_delta_g: float
    facility_co2e_delta_g: float


@dataclass(frozen=True, kw_only=True)
class Restatements:
    """Body of ``GET /v1/restatements``."""

    from_: str
    to: str
    restatements: list[Restatement]
    totals: RestatementTotals


# --- Statements -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class StatementAmounts:
    """Energy and emissions of one line of a monthly statement."""

    it_energy_mj: int
    it_energy_kwh: float
    estimated_energy_mj: int
    facility_energy_kwh: float
    marginal_it_co2e_g: float
    marginal_co2e_g: float
    location_co2e_g: float | None
    location_missing_energy_mj: int
    embodied_co2e_g: float
    gpu_intervals: int
    covered_gpu_ms: int
    provenance: Provenance


@dataclass(frozen=True, kw_only=True)
class StatementInstance(StatementAmounts):
    """One instance with usage in the month."""

    instance_id: str
    gpus: int


@dataclass(frozen=True, kw_only=True)
class StatementWorkload(StatementAmounts):
    """One workload overlapping the month, over its part inside it."""

    workload_id: str
    label: str
    functional_unit: str
    functional_units: float
    from_: str
    to: str
    sci_g_per_unit: float


@dataclass(frozen=True, kw_only=True)
class StatementDay:
    """One UTC day of the month."""

    day: str
    it_energy_mj: int
    marginal_co2e_g: float


@dataclass(frozen=True, kw_only=True)
class StatementAdjustment:
    """A correction to an earlier issued month."""

    period: str
    dated: str
    reason: str
    it_energy_mj: int
    marginal_co2e_g: float
    location_co2e_g: float


@dataclass(frozen=True, kw_only=True)
class MarketRegion:
    """One region's market-based emissions: hourly instruments matched pro rata."""

    region: str
    status: str
    facility_energy_kwh: float
    matched_kwh: float | None
    instrument_co2e_g: float | None
    residual_co2e_g: float | None
    unmatched_without_factor_kwh: float | None
    co2e_g: float | None
    residual: str | None
    instruments_sha256: str | None


@dataclass(frozen=True, kw_only=True)
class MarketBased:
    """Market-based emissions: a number only where contractual instruments are configured."""

    status: str
    co2e_g: float | None
    regions: list[MarketRegion] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class CarbonAwareWorkload:
    """What shifting one workload in time would have saved (its what-ifs)."""

    workload_id: str
    actual_co2e_g: float | None
    flexible_start_best_start: str | None
    flexible_start_saving_co2e_g: float | None
    pause_resume_saving_co2e_g: float | None
    unavailable: list[str]


@dataclass(frozen=True, kw_only=True)
class CarbonAwarePotential:
    """The month's carbon-aware potential, with its assumptions."""

    basis: str
    window_hours: float
    deadline_factor: float
    workloads: list[CarbonAwareWorkload]
    flexible_start_saving_co2e_g: float
    pause_resume_saving_co2e_g: float


@dataclass(frozen=True, kw_only=True)
class Statement:
    """Body of ``GET /v1/statements/{YYYY-MM}``: preliminary, or issued and never changed."""

    statement_id: str
    tenant: str
    period: str
    from_: str
    to: str
    status: str
    issued_at: str | None
    computed_at: str
    content_sha256: str | None
    model_version: str
    totals: StatementAmounts
    instances: list[StatementInstance]
    workloads: list[StatementWorkload]
    adjustments: list[StatementAdjustment]
    daily: list[StatementDay]
    market_based: MarketBased
    location_sources: list[str]
    carbon_aware: CarbonAwarePotential | None = None


@dataclass(frozen=True, kw_only=True)
class StatementSummary:
    """One month in ``GET /v1/statements``."""

    period: str
    status: str
    issued_at: str | None
    content_sha256: str | None


@dataclass(frozen=True, kw_only=True)
class StatementList:
    """Body of ``GET /v1/statements``."""

    statements: list[StatementSummary]


# --- Energy evidence --------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class EvidenceInstance:
    """One instance a workload ran on."""

    instance_id: str
    region: str
    gpu_models: list[str]


@dataclass(frozen=True, kw_only=True)
class EvidenceEnergy:
    """A workload's energy: measured vs estimated (exact mJ), facility energy and PUE."""

    it_energy_mj: int
    it_energy_kwh: float
    measured_energy_mj: int
    estimated_energy_mj: int
    facility_energy_kwh: float
    mean_pue: float | None
    coverage: Coverage


@dataclass(frozen=True, kw_only=True)
class EvidenceEmissions:
    """A workload's marginal, location-based and embodied emissions and SCI."""

    marginal_co2e_g: float
    marginal_it_co2e_g: float
    location_co2e_g: float | None
    location_missing_energy_mj: int
    embodied_co2e_g: float
    functional_unit: str
    functional_units: float
    sci_g_per_unit: float


@dataclass(frozen=True, kw_only=True)
class EvidenceSources:
    """Intensity sources, provider model versions and provenance."""

    marginal_sources: list[str]
    location_sources: list[str]
    model_versions: list[str]
    provenance: Provenance


@dataclass(frozen=True, kw_only=True)
class WorkloadEvidence:
    """Body of ``GET /v1/workloads/{id}/evidence``: energy evidence for model documentation."""

    evidence_version: str
    generated_at: str
    tenant: str
    workload: Workload
    counted_to: str
    gpus: int
    instances: list[EvidenceInstance]
    missing_instances: list[str]
    energy: EvidenceEnergy
    emissions: EvidenceEmissions
    sources: EvidenceSources
    method: list[str]
    content_sha256: str | None
