//! Samples, their shares and intervals in ClickHouse: the exactly-once write path.
//!
//! A batch is decided against what is stored under its own keys (duplicates and conflicts)
//! and against its GPUs' stored spans (overlaps); only new samples are written, shares first
//! (see `ClickHouseStore::write_new_samples` and the module docs of `clickhouse.rs`). GPUs
//! whose samples all lie beyond their stored frontier skip those lookups: nothing stored can
//! match them (`clickhouse/frontier.rs`).

use super::rollups;
use super::rows::{
    GpuSpan, NewSample, NewSampleKey, NewShare, NewSpan, SampleKey, ShareKey, StoredSample,
    StoredShare,
};
use super::{ch_err, placeholders, ClickHouseStore, KEYS_PER_QUERY};
use crate::checks::check_enriched;
use crate::{
    in_window_order, EnrichedSample, RefusedSample, SampleRetention, SampleRow, StoreError,
    WriteOutcome,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering;
use wattprint_core::sample::{EnergySample, MAX_SAMPLE_SPAN_MS};
use wattprint_core::timeline::{GpuTimeline, Placement};
use wattprint_core::{InstanceId, TenantId, UnixMillis};

/// Windows per samples read: each is named twice in its SQL, so a workload of many
/// instances stays far below the server's `max_query_size`.
const WINDOWS_PER_QUERY: usize = 200;

/// What a batch's keys already have in the store.
#[derive(Default)]
struct Stored {
    /// Samples under the batch's `(instance, gpu, seq)` keys.
    samples: HashMap<SampleKey, Vec<EnergySample>>,
    /// `(gpu, seq)` markers of the batch's keys, under any instance.
    markers: Vec<SampleKey>,
}

/// What a write does with one sample.
enum Verdict {
    New,
    Duplicate,
    Conflict,
}

impl ClickHouseStore {
    /// Decides each checked sample of the batch (new, duplicate, conflict or refused for an
    /// overlap) in batch order, then writes the new ones (`Self::write_new_samples`).
    pub(super) async fn store_samples(
        &self,
        samples: &[EnrichedSample],
    ) -> Result<WriteOutcome, StoreError> {
        const OP: &str = "writing samples";
        let mut outcome = WriteOutcome::default();
        let mut valid: Vec<&EnrichedSample> = Vec::with_capacity(samples.len());
        for es in samples {
            match check_enriched(es) {
                Ok(()) => valid.push(es),
                Err(e) => outcome.refused.push(RefusedSample::invalid(&es.sample, e)),
            }
        }
        // GPUs with a sample not beyond what is stored of them are decided against the store;
        // the others have nothing stored to compare with (`clickhouse/frontier.rs`).
        let frontiers = self.frontiers_of(&valid, OP).await?;
        let looked_up: HashSet<&str> = valid
            .iter()
            .filter(|es| {
                !frontiers
                    .get(es.sample.gpu.as_str())
                    .copied()
                    .unwrap_or_default()
                    .is_beyond(&es.sample)
            })
            .map(|es| es.sample.gpu.as_str())
            .collect();
        let to_look_up: Vec<&EnrichedSample> = if looked_up.is_empty() {
            Vec::new()
        } else {
            valid
                .iter()
                .copied()
                .filter(|es| looked_up.contains(es.sample.gpu.as_str()))
                .collect()
        };
        let mut timelines = self.timelines_for(&to_look_up, OP).await?;
        let Stored {
            samples: known,
            markers: stored_markers,
        } = self.stored_for(&to_look_up, OP).await?;
        // Instances each `(gpu, seq)` is stored under (GPUs looked up only).
        let mut stored_under: HashMap<(&str, u64), Vec<&str>> = HashMap::new();
        for m in &stored_markers {
            stored_under
                .entry((m.gpu_uuid.as_str(), m.seq))
                .or_default()
                .push(m.instance_id.as_str());
        }
        // Samples decided new earlier in this batch, by `(gpu, seq)`.
        let mut decided: HashMap<(&str, u64), &EnergySample> = HashMap::with_capacity(valid.len());

        // Decide in batch order, as if written one by one: a key repeated within the batch is
        // compared with its first occurrence, a span with those placed before it.
        let mut new = Vec::with_capacity(valid.len());
        let mut spans = Vec::with_capacity(valid.len());
        let mut markers: Vec<NewSampleKey> = Vec::with_capacity(valid.len());
        for es in valid {
            let s = &es.sample;
            let gpu_seq = (s.gpu.as_str(), s.seq);
            let verdict = if let Some(first) = decided.get(&gpu_seq) {
                // The instance is part of the content.
                if *first == s {
                    Verdict::Duplicate
                } else {
                    Verdict::Conflict
                }
            } else if looked_up.contains(s.gpu.as_str()) {
                let under = stored_under.entry(gpu_seq).or_default();
                match known.get(&SampleKey::of(s)) {
                    Some(stored) if stored.contains(s) => {
                        // A crash between the samples and the markers insert left it unmarked.
                        if !under.contains(&s.instance.as_str()) {
                            under.push(s.instance.as_str());
                            markers.push(NewSampleKey::of(s));
                        }
                        Verdict::Duplicate
                    }
                    Some(_) => Verdict::Conflict,
                    // Stored under another instance: the instance is part of the content.
                    None if under.iter().any(|i| *i != s.instance.as_str()) => Verdict::Conflict,
                    None => Verdict::New,
                }
            } else {
                Verdict::New
            };
            match verdict {
                Verdict::Duplicate => {
                    outcome.duplicates = outcome.duplicates.saturating_add(1);
                }
                Verdict::Conflict => {
                    tracing::warn!(
                        gpu = %s.gpu,
                        seq = s.seq,
                        "sample redelivered with different content; kept the stored one"
                    );
                    outcome.conflicts.push((s.gpu.clone(), s.seq));
                }
                Verdict::New => {
                    let span = NewSpan::of(s);
                    let timeline = match timelines.get_mut(s.gpu.as_str()) {
                        Some(t) => t,
                        None => timelines.entry(s.gpu.0.clone()).or_default(),
                    };
                    match timeline.claim(&s.gpu, span.key()) {
                        Err(o) => {
                            tracing::warn!(gpu = %s.gpu, seq = s.seq, stored_seq = o.stored_seq, "sample overlaps stored energy of its GPU; refused");
                            outcome.refused.push(RefusedSample::overlap(o));
                            continue;
                        }
                        // Written by an interrupted earlier attempt: its span is there already.
                        Ok(Placement::Itself) => {}
                        Ok(_) => spans.push(span),
                    }
                    decided.insert(gpu_seq, s);
                    markers.push(NewSampleKey::of(s));
                    new.push(es);
                    outcome.inserted = outcome.inserted.saturating_add(1);
                }
            }
        }
        if !new.is_empty() || !markers.is_empty() {
            // Spans first: a crash after them leaves a span whose sample is not stored yet,
            // which its redelivery finds as itself; never a stored sample without its span.
            self.insert_values::<NewSpan>("gpu_spans", &spans, OP)
                .await?;
            let touched = self.write_new_samples(&new, &markers, &looked_up).await?;
            self.roll_up_passed_hours(&touched).await;
            self.roll_up_passed_days(&touched).await;
        }
        Ok(outcome)
    }

    /// Deletes the samples and their spans that ended before `rules.cutoff(now)`, by mutations
    /// the server runs in the background (issued only when a count finds rows due). Shares
    /// stay: they are the intervals. Spans go too: a sample that old is refused for its age
    /// before any overlap check, and `gpu_frontier` keeps each GPU's highest `seq`.
    ///
    /// A modern server also gets a TTL of the retention on both tables (set when it changes),
    /// so its merges drop aged rows even where no prune runs. The TTL counts from the server's
    /// clock: with `now` the wall clock, it removes what this delete does.
    pub(super) async fn prune_old_samples(
        &self,
        rules: &SampleRetention,
        now: UnixMillis,
    ) -> Result<u64, StoreError> {
        const OP: &str = "pruning samples";
        if self.modern && self.samples_ttl_days.load(Ordering::Relaxed) != rules.days {
            for table in ["samples", "gpu_spans"] {
                self.client
                    .query(&format!(
                        "ALTER TABLE {table} MODIFY TTL \
                         toDateTime(intDiv(end_ms, 1000)) + toIntervalDay({})",
                        rules.days
                    ))
                    .with_option("materialize_ttl_after_modify", "0")
                    .execute()
                    .await
                    .map_err(ch_err(OP))?;
            }
            self.samples_ttl_days.store(rules.days, Ordering::Relaxed);
        }
        let before = rules.cutoff(now);
        let due: u64 = self
            .client
            .query("SELECT count() FROM samples WHERE end_ms < ?")
            .bind(before.0)
            .fetch_one()
            .await
            .map_err(ch_err(OP))?;
        if due > 0 {
            for table in ["samples", "gpu_spans"] {
                self.client
                    .query(&format!("ALTER TABLE {table} DELETE WHERE end_ms < ?"))
                    .bind(before.0)
                    .execute()
                    .await
                    .map_err(ch_err(OP))?;
            }
        }
        Ok(due)
    }

    /// The samples of the tenant's instances overlapping each `(instance, from, to)` window
    /// (see [`crate::Store::windows_samples`]): by instance, then time, at most `limit`.
    ///
    /// `samples` is ordered by `(instance_id, gpu_uuid, seq)`, so its index cannot skip by
    /// time, and `FINAL` would read and merge every column of all the instances' rows. The
    /// time condition stays after `FINAL`, as in every read of the table; what narrows the read
    /// are conditions on the key alone: the keys of rows overlapping a window (the candidates),
    /// found without `FINAL` from the time columns first, and their `seq`s as the `PREWHERE`
    /// (one integer column). Every copy of a key passes or fails a key condition alike, so
    /// `FINAL` picks among the copies of the keys left exactly as it would over the table,
    /// and no key whose chosen copy overlaps is left out.
    pub(super) async fn read_window_samples(
        &self,
        tenant: &TenantId,
        windows: &[(InstanceId, UnixMillis, UnixMillis)],
        limit: u32,
    ) -> Result<Vec<SampleRow>, StoreError> {
        const OP: &str = "reading samples";
        let mut instances: Vec<InstanceId> = windows.iter().map(|w| w.0.clone()).collect();
        instances.sort_unstable();
        instances.dedup();
        self.require_instances(tenant, &instances, OP).await?;
        let mut out = Vec::new();
        for chunk in windows.chunks(WINDOWS_PER_QUERY) {
            let mut times: Vec<(UnixMillis, UnixMillis)> =
                chunk.iter().map(|&(_, from, to)| (from, to)).collect();
            times.sort_unstable();
            times.dedup();
            let overlaps =
                vec!["(instance_id = ? AND start_ms < ? AND end_ms > ?)"; chunk.len()].join(" OR ");
            // The candidates' keys: the time columns (shared by all the instances' windows)
            // read first, the instance compared only where they match.
            let candidates = format!(
                "FROM samples PREWHERE {} WHERE {overlaps}",
                vec!["(start_ms < ? AND end_ms > ?)"; times.len()].join(" OR ")
            );
            let sql = format!(
                "SELECT ?fields FROM samples FINAL \
                 PREWHERE seq IN (SELECT seq {candidates}) \
                 WHERE (instance_id, gpu_uuid, seq) IN \
                     (SELECT instance_id, gpu_uuid, seq {candidates}) \
                 AND tenant = ? AND ({overlaps}) \
                 ORDER BY instance_id, start_ms, end_ms, gpu_uuid, seq LIMIT ?"
            );
            let bind_overlaps = |mut q: ::clickhouse::query::Query| {
                for (instance, from, to) in chunk {
                    q = q.bind(instance.as_str()).bind(to.0).bind(from.0);
                }
                q
            };
            let bind_candidates = |mut q: ::clickhouse::query::Query| {
                for (from, to) in &times {
                    q = q.bind(to.0).bind(from.0);
                }
                bind_overlaps(q)
            };
            let q = bind_candidates(bind_candidates(self.client.query(&sql)));
            let q = bind_overlaps(q.bind(tenant.as_str())).bind(limit);
            for row in self.fetch::<StoredSample>(q, OP).await? {
                out.push(SampleRow {
                    sample: row.decode()?,
                });
            }
        }
        Ok(if windows.len() > WINDOWS_PER_QUERY {
            in_window_order(out, limit)
        } else {
            out
        })
    }

    /// The stored samples under the batch's own keys `(instance, gpu, seq)` (an indexed lookup;
    /// `FINAL` collapses copies, more than one per key only if racing writers enriched it
    /// differently), and the instances each batch `(gpu, seq)` is stored under.
    async fn stored_for(
        &self,
        batch: &[&EnrichedSample],
        op: &'static str,
    ) -> Result<Stored, StoreError> {
        let mut keys: Vec<SampleKey> = batch.iter().map(|es| SampleKey::of(&es.sample)).collect();
        keys.sort_unstable_by(|a, b| {
            (&a.gpu_uuid, a.seq, &a.instance_id).cmp(&(&b.gpu_uuid, b.seq, &b.instance_id))
        });
        keys.dedup();
        let mut stored = Stored::default();
        for chunk in keys.chunks(KEYS_PER_QUERY) {
            let sql = format!(
                "SELECT ?fields FROM samples FINAL WHERE (instance_id, gpu_uuid, seq) IN ({})",
                placeholders(chunk.len(), 3)
            );
            let mut q = self.client.query(&sql);
            for k in chunk {
                q = q
                    .bind(k.instance_id.as_str())
                    .bind(k.gpu_uuid.as_str())
                    .bind(k.seq);
            }
            for row in self.fetch::<StoredSample>(q, op).await? {
                let sample = row.decode()?;
                stored
                    .samples
                    .entry(SampleKey::of(&sample))
                    .or_default()
                    .push(sample);
            }
        }
        let mut gpu_seqs: Vec<(&str, u64)> =
            keys.iter().map(|k| (k.gpu_uuid.as_str(), k.seq)).collect();
        gpu_seqs.dedup();
        for chunk in gpu_seqs.chunks(KEYS_PER_QUERY) {
            let sql = format!(
                "SELECT ?fields FROM sample_keys WHERE (gpu_uuid, seq) IN ({})",
                placeholders(chunk.len(), 2)
            );
            let mut q = self.client.query(&sql);
            for (gpu, seq) in chunk {
                q = q.bind(*gpu).bind(*seq);
            }
            stored.markers.extend(self.fetch::<SampleKey>(q, op).await?);
        }
        Ok(stored)
    }

    /// The stored spans of the batch's GPUs that its samples could overlap: from
    /// [`MAX_SAMPLE_SPAN_MS`] before the earliest start to the latest end, per GPU.
    async fn timelines_for(
        &self,
        batch: &[&EnrichedSample],
        op: &'static str,
    ) -> Result<HashMap<String, GpuTimeline>, StoreError> {
        let mut ranges: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
        for es in batch {
            let s = &es.sample;
            let r = ranges.entry(s.gpu.as_str()).or_insert((s.start.0, s.end.0));
            r.0 = r.0.min(s.start.0);
            r.1 = r.1.max(s.end.0);
        }
        let mut out: HashMap<String, GpuTimeline> = HashMap::new();
        let ranges: Vec<_> = ranges.into_iter().collect();
        for chunk in ranges.chunks(KEYS_PER_QUERY) {
            let sql = format!(
                "SELECT ?fields FROM gpu_spans WHERE {}",
                vec!["(gpu_uuid = ? AND start_ms > ? AND start_ms < ?)"; chunk.len()].join(" OR ")
            );
            let mut q = self.client.query(&sql);
            for (gpu, (from, to)) in chunk {
                q = q
                    .bind(*gpu)
                    .bind(from.saturating_sub(MAX_SAMPLE_SPAN_MS + 1))
                    .bind(*to);
            }
            for span in self.fetch::<GpuSpan>(q, op).await? {
                let key = span.key();
                out.entry(span.gpu_uuid).or_default().insert(key);
            }
        }
        Ok(out)
    }

    /// The stored shares under the given keys.
    async fn stored_shares(
        &self,
        keys: &[ShareKey],
        op: &'static str,
    ) -> Result<HashMap<ShareKey, StoredShare>, StoreError> {
        let mut out = HashMap::new();
        for chunk in keys.chunks(KEYS_PER_QUERY) {
            let sql = format!(
                "SELECT ?fields FROM shares FINAL \
                 WHERE (instance_id, bucket_ms, gpu_uuid, seq) IN ({})",
                placeholders(chunk.len(), 4)
            );
            let mut q = self.client.query(&sql);
            for (instance, bucket, gpu, seq) in chunk {
                q = q
                    .bind(instance.as_str())
                    .bind(*bucket)
                    .bind(gpu.as_str())
                    .bind(*seq);
            }
            for row in self.fetch::<StoredShare>(q, op).await? {
                out.insert(row.key(), row);
            }
        }
        Ok(out)
    }

    /// Writes samples known to be new with their shares, then the samples and, in the same
    /// step, the `(gpu, seq)` markers of these and of any stored sample that lacks one.
    ///
    /// Order matters, because the `INSERT`s are not one transaction: **shares first, then
    /// samples (with their markers).** A sample row is what makes a later delivery a duplicate that
    /// writes nothing. If the process dies after the shares and before the samples, no sample
    /// row exists, so the redelivery (the bus redelivers whatever was not acknowledged) writes
    /// the sample again: its shares go under the same deterministic keys, where the stored ones
    /// are kept (looked up here and not re-sent; identical rows would collapse under `FINAL`
    /// anyway), and then the sample row is written. The other order would lose energy: a crash
    /// after the samples insert would leave a sample without shares, and every redelivery,
    /// finding the sample, would skip it forever. A single insert spanning several month
    /// partitions can also be cut between partitions; that is the same case (some shares
    /// stored, no sample) and heals the same way. A crash before the markers leaves stored
    /// samples without one; the redelivery finds them as duplicates and writes the markers.
    ///
    /// The shares insert marks its hours and days itself, in the same query (the
    /// `shares_rollup_marks` views, schema versions 9 and 11; see `clickhouse/rollups.rs`), so
    /// no separate marks insert can be lost or reordered. Returns the `(tenant, instance,
    /// hour)`s the new samples touched.
    async fn write_new_samples(
        &self,
        new: &[&EnrichedSample],
        markers: &[NewSampleKey<'_>],
        looked_up: &HashSet<&str>,
    ) -> Result<BTreeSet<(String, String, i64)>, StoreError> {
        const OP: &str = "writing samples";
        let mut shares: Vec<NewShare> = new
            .iter()
            .flat_map(|es| es.shares.iter().map(|sh| NewShare::of(es, sh)))
            .collect();
        // Only GPUs not beyond their frontier can have shares of an interrupted write stored.
        let keys: Vec<ShareKey> = new
            .iter()
            .filter(|es| looked_up.contains(es.sample.gpu.as_str()))
            .flat_map(|es| es.shares.iter().map(|sh| NewShare::of(es, sh).key()))
            .collect();
        let stored = self.stored_shares(&keys, OP).await?;
        if !stored.is_empty() {
            shares.retain(|share| match stored.get(&share.key()) {
                None => true,
                Some(kept) if share.is_stored_as(kept) => false,
                Some(kept) => {
                    tracing::info!(
                        gpu = %kept.gpu_uuid,
                        seq = kept.seq,
                        bucket = kept.bucket_ms,
                        "share of an interrupted earlier write differs (enriched again); \
                         kept the stored one"
                    );
                    false
                }
            });
        }
        self.insert_values::<NewShare>("shares", &shares, OP)
            .await?;
        let touched: HashSet<(&str, &str, i64)> = new
            .iter()
            .flat_map(|es| {
                es.shares.iter().map(|sh| {
                    (
                        es.tenant.as_str(),
                        es.sample.instance.as_str(),
                        rollups::floor_hour(sh.bucket.start().0),
                    )
                })
            })
            .collect();
        let touched: BTreeSet<(String, String, i64)> = touched
            .into_iter()
            .map(|(t, i, h)| (t.to_owned(), i.to_owned(), h))
            .collect();
        let samples: Vec<NewSample> = new
            .iter()
            .map(|es| NewSample::of(es.tenant.as_str(), &es.sample))
            .collect();
        // Together: a marker without its sample (the other crash) claims a `(GPU, seq)` whose
        // span is already stored, and its redelivery under the same instance writes the sample.
        tokio::try_join!(
            self.insert_values::<NewSample>("samples", &samples, OP),
            self.insert_values::<NewSampleKey>("sample_keys", markers, OP)
        )?;
        Ok(touched)
    }
}
