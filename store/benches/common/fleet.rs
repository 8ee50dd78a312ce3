//! The synthetic fleet the latency benches load: one tenant's GPUs (4 per instance, H100s in
//! CAISO_NORTH) × 5-minute intervals from [`START`], each interval one 300 s sample with one
//! share, as the enricher would store it.
//!
//! Each GPU-hour runs one phase of the real H100 trace (idle, training, paused, GEMM burn,
//! data-loader bound, inference bursts, idle after), drawn by a hash with the mix of
//! [`PHASE_MIX`]; an interval's energy is that phase's mean power × 300 s × a 0.95–1.05 jitter,
//! its intensity the real WattTime CAISO_NORTH marginal value of that 5 minutes. The hash
//! ([`mix`]) and the energy are integer arithmetic that Rust and ClickHouse SQL compute alike,
//! so the ClickHouse generator (server-side `INSERT … SELECT FROM numbers(…)`), the SQLite
//! loader (through `Store::write_samples`) and [`Fleet::expected`] hold the same energies to
//! the millijoule.

use super::{caiso_north, h100_phases, raw_client};
use std::ops::Range;
use wattprint_core::accounting::split_into_buckets;
use wattprint_core::intensity::{IntensityKind, JoinedIntensity};
use wattprint_core::sample::{Attribution, EnergySample, EnergySource};
use wattprint_core::{
    GpuUuid, GramsPerKwh, HostId, InstanceId, Millijoules, Milliwatts, RegionId, TenantId,
    UnixMillis,
};
use wattprint_store::{EnrichedSample, EnrichedShare, GpuRecord, InstanceRecord, Store};

/// 2023-06-08T00:00:00Z, the first point of the marginal series.
pub const START: i64 = 1_686_182_400_000;
/// One hour, ms.
pub const HOUR: i64 = 3_600_000;
/// One day, ms.
pub const DAY: i64 = 24 * HOUR;
/// One 5-minute interval, ms.
pub const BUCKET: i64 = 300_000;
/// Share of GPU-hours spent in each phase (out of 20), in [`h100_phases`] order: idle,
/// training, paused, GEMM burn, data-loader bound, inference bursts, idle after.
pub const PHASE_MIX: [usize; 7] = [3, 7, 1, 3, 3, 2, 1];
/// Region and zip code of every instance.
pub const REGION: &str = "CAISO_NORTH";
const ZIP: &str = "95814";
/// Provenance of the joined intensity.
pub const SOURCE: &str = "watttime:CAISO_NORTH";
/// PUE of the region.
pub const PUE: f64 = 1.2;
/// GPU model (a key of `data/hardware-catalog.toml`).
pub const MODEL: &str = "NVIDIA H100 80GB HBM3";
/// Version of what this module generates: part of cached databases' names, so a change
/// here rebuilds them.
pub const GENERATOR_VERSION: u32 = 1;

const K1: u64 = 0x9E37_79B9_7F4A_7C15;
const K2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const K3: u64 = 0xBF58_476D_1CE4_E5B9;
/// Separates the jitter's hash stream from the phase's.
const JITTER_STREAM: u64 = 1 << 40;

/// A 64-bit mix of two integers (splitmix-like, wrapping); [`mix_sql`] computes the same.
pub fn mix(a: u64, b: u64) -> u64 {
    let x = a.wrapping_mul(K1).wrapping_add(b.wrapping_mul(K2));
    let x = (x ^ (x >> 31)).wrapping_mul(K3);
    x ^ (x >> 29)
}

/// ClickHouse select-list items computing `mix(a, b) AS name` (with helper aliases).
fn mix_sql(a: &str, b: &str, name: &str) -> String {
    format!(
        "toUInt64({a}) * {K1} + toUInt64({b}) * {K2} AS {name}_1, \
         bitXor({name}_1, bitShiftRight({name}_1, 31)) * {K3} AS {name}_2, \
         bitXor({name}_2, bitShiftRight({name}_2, 29)) AS {name}"
    )
}

/// The real data the fleet is made of: per-phase means of the H100 trace (integers, as
/// stored), the phase of each of the 20 hash slots, and the CAISO_NORTH series.
#[derive(Debug, Clone)]
pub struct FleetModel {
    phase_mw: Vec<u64>,
    util_pct: Vec<u32>,
    temp_c: Vec<u32>,
    sm_clock_mhz: Vec<u32>,
    mem_used_bytes: Vec<u64>,
    slots: Vec<usize>,
    moer: Vec<f64>,
}

impl FleetModel {
    /// Reads the H100 trace and the CAISO_NORTH series from `data/`.
    pub fn real() -> Self {
        let phases = h100_phases();
        assert_eq!(phases.len(), PHASE_MIX.len(), "trace phases: {phases:?}");
        let slots = PHASE_MIX
            .iter()
            .enumerate()
            .flat_map(|(p, n)| std::iter::repeat_n(p, *n))
            .collect();
        // Rounded to 4 decimals: ClickHouse parses the SQL literal to the same double.
        let moer = caiso_north()
            .iter()
            .map(|v| format!("{v:.4}").parse().unwrap_or(0.0))
            .collect();
        Self {
            phase_mw: phases.iter().map(|p| p.power_mw.round() as u64).collect(),
            util_pct: phases.iter().map(|p| p.util_pct.round() as u32).collect(),
            temp_c: phases.iter().map(|p| p.temp_c.round() as u32).collect(),
            sm_clock_mhz: phases
                .iter()
                .map(|p| p.sm_clock_mhz.round() as u32)
                .collect(),
            mem_used_bytes: phases
                .iter()
                .map(|p| p.mem_used_bytes.round() as u64)
                .collect(),
            slots,
            moer,
        }
    }

    /// Phase (index into the trace's phases) of GPU `gpu` in interval `b`: one per GPU-hour.
    pub fn phase(&self, gpu: u64, b: u64) -> usize {
        self.slots[(mix(gpu, b / 12) % self.slots.len() as u64) as usize]
    }

    /// Energy of GPU `gpu` in interval `b`, mJ.
    pub fn energy_mj(&self, gpu: u64, b: u64) -> u64 {
        let jitter = mix(gpu, b ^ JITTER_STREAM) % 1000;
        self.phase_mw[self.phase(gpu, b)] * (9500 + jitter) * 3 / 100
    }

    /// Highest power of an interval holding `energy_mj`: its mean × 1.1.
    pub fn power_max_mw(energy_mj: u64) -> u32 {
        (energy_mj as f64 / 300.0 * 1.1) as u32
    }

    /// Marginal intensity of interval `b`, g/kWh.
    pub fn intensity(&self, b: u64) -> f64 {
        self.moer[(b % self.moer.len() as u64) as usize]
    }

    fn list<T: ToString>(v: &[T]) -> String {
        let items: Vec<String> = v.iter().map(T::to_string).collect();
        format!("[{}]", items.join(","))
    }

    /// SQL generating `(gpu, b, instance, gpu_uuid, bucket_ms, phase, energy, power_max,
    /// intensity)` for `gpus × buckets` intervals of a fleet named by `prefix`.
    fn source_sql(&self, prefix: &str, gpus: u64, buckets: u64) -> String {
        let slots: Vec<usize> = self.slots.iter().map(|p| p + 1).collect();
        let moer: Vec<String> = self.moer.iter().map(|v| format!("{v:.4}")).collect();
        format!(
            "SELECT gpu, b, \
                 concat('{prefix}-', substring(toString(10000 + intDiv(gpu, 4)), 2)) AS instance, \
                 concat('GPU-{prefix}-', substring(toString(1000000 + gpu), 2)) AS gpu_uuid, \
                 {START} + b * {BUCKET} AS bucket_ms, \
                 {phase_hash}, {jitter_hash}, \
                 arrayElement({slots}, (hp % {n_slots}) + 1) AS phase, \
                 intDiv(arrayElement({mw}, phase) * (9500 + hj % 1000) * 3, 100) AS energy, \
                 toUInt32(energy / 300 * 1.1) AS power_max, \
                 arrayElement([{moer}], (b % {n_moer}) + 1) AS intensity \
             FROM (SELECT toUInt64(number % {gpus}) AS gpu, toUInt64(intDiv(number, {gpus})) AS b \
                   FROM numbers({rows}))",
            phase_hash = mix_sql("gpu", "intDiv(b, 12)", "hp"),
            jitter_hash = mix_sql("gpu", &format!("bitXor(b, {JITTER_STREAM})"), "hj"),
            slots = Self::list(&slots),
            n_slots = slots.len(),
            mw = Self::list(&self.phase_mw),
            moer = moer.join(","),
            n_moer = moer.len(),
            rows = gpus * buckets,
        )
    }
}

/// Expected totals of a set of GPU-intervals, from the generator itself.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Expected {
    /// GPU-intervals.
    pub intervals: u64,
    /// Σ energy, mJ.
    pub energy_mj: u64,
    /// Σ E_i × I_i, g.
    pub it_co2e_g: f64,
}

/// One tenant's fleet: `gpus` GPUs (instances `prefix-NNNN`, GPUs `GPU-prefix-NNNNNN`, 4 per
/// instance) × `buckets` intervals from [`START`].
#[derive(Debug, Clone)]
pub struct Fleet {
    /// Owner.
    pub tenant: String,
    /// Instance and GPU name prefix.
    pub prefix: String,
    /// GPUs.
    pub gpus: u64,
    /// 5-minute intervals per GPU.
    pub buckets: u64,
}

impl Fleet {
    /// A fleet of `gpus` GPUs over `days` days.
    pub fn new(tenant: &str, prefix: &str, gpus: u64, days: u64) -> Self {
        Self {
            tenant: tenant.into(),
            prefix: prefix.into(),
            gpus,
            buckets: days * 288,
        }
    }

    /// Instances (the last one may hold GPUs past `gpus`: it has no data for them).
    pub fn instances(&self) -> u64 {
        self.gpus.div_ceil(4)
    }

    /// Id of instance `i`.
    pub fn instance(&self, i: u64) -> InstanceId {
        InstanceId::new(format!("{}-{i:04}", self.prefix))
    }

    /// Uuid of GPU `g` (of instance `g / 4`).
    pub fn gpu(&self, g: u64) -> GpuUuid {
        GpuUuid::new(format!("GPU-{}-{g:06}", self.prefix))
    }

    /// The inventory: every instance with its 4 GPUs.
    pub fn inventory(&self) -> Vec<InstanceRecord> {
        (0..self.instances())
            .map(|i| InstanceRecord {
                tenant: TenantId::new(self.tenant.clone()),
                instance: self.instance(i),
                region: RegionId::from(REGION),
                zip_code: Some(ZIP.into()),
                gpus: (0..4)
                    .map(|g| GpuRecord {
                        uuid: self.gpu(i * 4 + g),
                        model: MODEL.into(),
                        power_limit: Milliwatts(700_000),
                        host: HostId::new(format!("host-{i}")),
                    })
                    .collect(),
            })
            .collect()
    }

    /// Totals of the GPUs of `instances` over intervals `buckets`.
    pub fn expected(&self, m: &FleetModel, instances: &[u64], buckets: Range<u64>) -> Expected {
        let mut out = Expected::default();
        for &i in instances {
            for gpu in (i * 4..i * 4 + 4).filter(|g| *g < self.gpus) {
                for b in buckets.start..buckets.end.min(self.buckets) {
                    let e = m.energy_mj(gpu, b);
                    out.intervals += 1;
                    out.energy_mj += e;
                    out.it_co2e_g += GramsPerKwh(m.intensity(b)).emissions(Millijoules(e)).0;
                }
            }
        }
        out
    }

    /// The sample GPU `gpu` sent for interval `b`, enriched as the enricher would.
    pub fn sample(&self, m: &FleetModel, gpu: u64, b: u64) -> EnrichedSample {
        let start = UnixMillis(START + b as i64 * BUCKET);
        let energy = m.energy_mj(gpu, b);
        let phase = m.phase(gpu, b);
        let instance = self.instance(gpu / 4);
        let sample = EnergySample {
            host: HostId::new(format!("host-{instance}")),
            gpu: self.gpu(gpu),
            instance,
            seq: b,
            start,
            end: UnixMillis(start.0 + BUCKET),
            energy: Millijoules(energy),
            power: Milliwatts((energy / 300) as u32),
            power_max: Milliwatts(FleetModel::power_max_mw(energy)),
            util_gpu_pct: m.util_pct[phase],
            mem_used_bytes: m.mem_used_bytes[phase],
            temp_c: m.temp_c[phase],
            sm_clock_mhz: m.sm_clock_mhz[phase],
            chain_start: b == 0,
            energy_source: EnergySource::Counter,
            attribution: Attribution::Exclusive,
        };
        let shares = split_into_buckets(sample.start, sample.end, sample.energy)
            .into_iter()
            .map(|s| EnrichedShare {
                bucket: s.bucket,
                energy: s.energy,
                covered_ms: s.covered_ms,
                intensity: Some(JoinedIntensity {
                    value: GramsPerKwh(m.intensity(((s.bucket.start().0 - START) / BUCKET) as u64)),
                    kind: IntensityKind::Actual,
                    source: SOURCE.into(),
                    point_at: s.bucket.start(),
                    replayed: false,
                }),
            })
            .collect();
        EnrichedSample {
            sample,
            tenant: TenantId::new(self.tenant.clone()),
            region: RegionId::from(REGION),
            pue: PUE,
            shares,
        }
    }

    /// Writes every sample through `store.write_samples`, an hour of the whole fleet per
    /// call (time order, as the enricher receives them); `progress(buckets done)` after each.
    pub async fn load_through_store(
        &self,
        m: &FleetModel,
        store: &dyn Store,
        mut progress: impl FnMut(u64),
    ) {
        let mut b0 = 0;
        while b0 < self.buckets {
            let b1 = (b0 + 12).min(self.buckets);
            let batch: Vec<EnrichedSample> = (b0..b1)
                .flat_map(|b| (0..self.gpus).map(move |g| (g, b)))
                .map(|(g, b)| self.sample(m, g, b))
                .collect();
            let outcome = store.write_samples(&batch).await.unwrap();
            assert_eq!(outcome.inserted as usize, batch.len(), "{outcome:?}");
            b0 = b1;
            progress(b0);
        }
    }

    /// Loads the fleet's shares (and with `samples`, its raw samples and `(gpu, seq)` keys)
    /// into ClickHouse database `db` with server-side inserts, plus the rollup marks the
    /// write path would have left: what `write_samples` would store, without its lookups.
    pub async fn load_clickhouse(&self, m: &FleetModel, url: &str, db: &str, samples: bool) {
        let source = m.source_sql(&self.prefix, self.gpus, self.buckets);
        let tenant = &self.tenant;
        let client = raw_client(url).with_database(db);
        let run = |sql: String| {
            let client = client.clone();
            async move {
                client
                    .query(&sql)
                    .with_option("max_query_size", "16777216")
                    .execute()
                    .await
                    .unwrap_or_else(|e| panic!("{e}: {}", &sql[..sql.len().min(300)]));
            }
        };
        run(format!(
            "INSERT INTO shares SELECT '{tenant}', instance, bucket_ms, gpu_uuid, b, energy, 0, \
             {BUCKET}, power_max, '{REGION}', 1, intensity, 'actual', '{SOURCE}', bucket_ms, 0, \
             {PUE} FROM ({source})"
        ))
        .await;
        if samples {
            run(format!(
                "INSERT INTO samples SELECT '{tenant}', instance, gpu_uuid, b, \
                 concat('host-', instance), bucket_ms, bucket_ms + {BUCKET}, energy, \
                 intDiv(energy, 300), power_max, arrayElement({util}, phase), \
                 arrayElement({mem}, phase), arrayElement({temp}, phase), \
                 arrayElement({clock}, phase), b = 0, 'counter', 'exclusive' FROM ({source})",
                util = FleetModel::list(&m.util_pct),
                mem = FleetModel::list(&m.mem_used_bytes),
                temp = FleetModel::list(&m.temp_c),
                clock = FleetModel::list(&m.sm_clock_mhz),
            ))
            .await;
            run(format!(
                "INSERT INTO sample_keys SELECT gpu_uuid, seq, instance_id FROM samples \
                 WHERE tenant = '{tenant}'"
            ))
            .await;
        }
        // The marks the write path would have left: one per (tenant, instance, hour) written.
        run(format!(
            "INSERT INTO rollup_marks SELECT tenant, instance_id, \
             bucket_ms - bucket_ms % {HOUR}, toUInt64(1) FROM shares WHERE tenant = '{tenant}' \
             GROUP BY tenant, instance_id, bucket_ms - bucket_ms % {HOUR}"
        ))
        .await;
    }
}
