//! Whole UTC days of one instance's 5-minute intervals, kept in memory between reads.
//!
//! A month's series of one instance is ~35,000 interval rows; reading them from ClickHouse
//! costs most of the request, although past days rarely change. Every insert into `shares`
//! adds its row count to `rollup_marks_daily` (a view, in the same `INSERT`), and that count
//! never falls. So a day read after its count was `n` is served again, unchanged, while its
//! count (over every tenant's marks: a copy written under another tenant can replace one of
//! this tenant's) is still `n`. Invariant: a cached day's count was read *before* its rows,
//! so a write racing the read leaves a count that differs next time, and the day is read again.
//! Partial days at the range's edges are always read. The ownership check runs on every read.

use super::daily::{ceil_day, floor_day};
use super::schema::DAY_MS;
use super::ClickHouseStore;
use crate::{IntervalRow, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use wattprint_core::{InstanceId, TenantId, UnixMillis};

/// Interval rows the cache holds at most (~250 B each: about 64 MB), over all its days.
const MAX_ROWS: usize = 262_144;

/// Whole days a range must span for the cache to be consulted: at least the first, at most
/// the second (a longer range, such as "everything", is read as it is).
const WHOLE_DAYS: std::ops::RangeInclusive<i64> = 2..=400;

/// `(tenant, instance, day start)`.
type DayKey = (String, String, i64);

/// One cached day: the write count it was read at, and its rows.
struct CachedDay {
    writes: u64,
    rows: Arc<[IntervalRow]>,
}

/// The days, least recently used first out, and the rows they hold.
pub(crate) struct DayCache {
    inner: Mutex<Days>,
}

struct Days {
    days: lru::LruCache<DayKey, CachedDay>,
    rows: usize,
}

impl Default for DayCache {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Days {
                days: lru::LruCache::unbounded(),
                rows: 0,
            }),
        }
    }
}

impl DayCache {
    /// The day's rows if they were read at `writes`.
    fn get(&self, key: &DayKey, writes: u64) -> Option<Arc<[IntervalRow]>> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match inner.days.get(key) {
            Some(day) if day.writes == writes => Some(Arc::clone(&day.rows)),
            _ => None,
        }
    }

    /// Keeps `rows` of the day as read at `writes`, evicting the least recently used days
    /// beyond [`MAX_ROWS`].
    fn put(&self, key: DayKey, writes: u64, rows: Arc<[IntervalRow]>) {
        if rows.len() > MAX_ROWS {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.rows += rows.len();
        if let Some(old) = inner.days.put(key, CachedDay { writes, rows }) {
            inner.rows -= old.rows.len();
        }
        while inner.rows > MAX_ROWS {
            match inner.days.pop_lru() {
                Some((_, day)) => inner.rows -= day.rows.len(),
                None => break,
            }
        }
    }
}

impl ClickHouseStore {
    /// The intervals of one instance of the tenant in `[from, to)`, as
    /// [`ClickHouseStore::read_intervals`] returns them, with whole days served from the
    /// [`DayCache`] while their write counts hold.
    pub(super) async fn read_instance_intervals(
        &self,
        tenant: &TenantId,
        instance: &InstanceId,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<IntervalRow>, StoreError> {
        let (first_day, end_day) = (ceil_day(from.0), floor_day(to.0));
        if !WHOLE_DAYS.contains(&(end_day.saturating_sub(first_day) / DAY_MS)) {
            let instances = std::slice::from_ref(instance);
            return self
                .read_intervals(tenant, Some(instances), &[(from, to)])
                .await;
        }
        let writes = self.day_writes(instance, first_day, end_day).await?;
        let key = |day: i64| (tenant.0.clone(), instance.0.clone(), day);
        let days: Vec<(i64, Option<Arc<[IntervalRow]>>)> = (0..)
            .map(|k| first_day + k * DAY_MS)
            .take_while(|day| *day < end_day)
            .map(|day| {
                let count = writes.get(&day).copied().unwrap_or(0);
                (day, self.day_cache.get(&key(day), count))
            })
            .collect();
        // The edges and every day not cached, in one read (which checks ownership).
        let mut ranges = vec![(from, UnixMillis(first_day))];
        for (day, _) in days.iter().filter(|(_, cached)| cached.is_none()) {
            match ranges.last_mut() {
                Some(last) if last.1 .0 == *day => last.1 = UnixMillis(day + DAY_MS),
                _ => ranges.push((UnixMillis(*day), UnixMillis(day + DAY_MS))),
            }
        }
        match ranges.last_mut() {
            Some(last) if last.1 .0 == end_day => last.1 = to,
            _ => ranges.push((UnixMillis(end_day), to)),
        }
        ranges.retain(|(a, b)| a < b);
        let read = self
            .read_intervals(tenant, Some(std::slice::from_ref(instance)), &ranges)
            .await?;
        let hits = days.iter().filter(|(_, cached)| cached.is_some()).count();
        tracing::debug!(
            days = days.len(),
            hits,
            "instance intervals from the day cache"
        );

        let cached_rows: usize = days.iter().flat_map(|(_, c)| c).map(|c| c.len()).sum();
        let mut out = Vec::with_capacity(read.len() + cached_rows);
        let mut read = read.into_iter().peekable();
        let mut take_until = |end: i64, out: &mut Vec<IntervalRow>| {
            let mut taken = Vec::new();
            while let Some(row) = read.next_if(|r| r.bucket.start().0 < end) {
                taken.push(row);
            }
            out.extend(taken.iter().cloned());
            taken
        };
        take_until(first_day, &mut out);
        for (day, cached) in days {
            match cached {
                Some(rows) => out.extend(rows.iter().cloned()),
                None => {
                    let rows = take_until(day + DAY_MS, &mut out);
                    let count = writes.get(&day).copied().unwrap_or(0);
                    self.day_cache.put(key(day), count, rows.into());
                }
            }
        }
        take_until(i64::MAX, &mut out);
        Ok(out)
    }

    /// Rows written into `shares` per UTC day of `instance` in `[first_day, end_day)`, over
    /// every tenant (days without a write are absent).
    async fn day_writes(
        &self,
        instance: &InstanceId,
        first_day: i64,
        end_day: i64,
    ) -> Result<HashMap<i64, u64>, StoreError> {
        const OP: &str = "reading day write counts";
        let counts: Vec<(i64, u64)> = self
            .fetch(
                self.client
                    .query(
                        "SELECT day_ms, toUInt64(sum(writes)) FROM rollup_marks_daily \
                         WHERE day_ms >= ? AND day_ms < ? AND instance_id = ? GROUP BY day_ms",
                    )
                    .bind(first_day)
                    .bind(end_day)
                    .bind(instance.as_str()),
                OP,
            )
            .await?;
        Ok(counts.into_iter().collect())
    }
}
