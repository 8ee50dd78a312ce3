//! Whole UTC days of one instance's 5-minute intervals and hourly usage, kept in memory
//! between reads: reading a month from ClickHouse was most of a series request.
//!
//! Invariant: a day is served again only while its write count in `rollup_marks_daily` equals
//! the count read *before* its rows (every insert into `shares` adds to it in the same
//! `INSERT`, it never falls, and it is summed over tenants). Partial days at the edges are
//! always read; the ownership check runs on every read.

use super::daily::{ceil_day, floor_day};
use super::schema::DAY_MS;
use super::ClickHouseStore;
use super::SummaryPath;
use crate::{GpuHourUsage, IntervalRow, StoreError};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use wattprint_core::{InstanceId, TenantId, UnixMillis};

/// Interval rows the interval cache holds at most (~250 B each: about 64 MB).
const MAX_INTERVAL_ROWS: usize = 262_144;

/// Hour rows the hourly cache holds at most (~250 B each: about 16 MB).
const MAX_HOUR_ROWS: usize = 65_536;

/// Whole days a range must span for the cache to be consulted: at least the first, at most
/// the second (a longer range, such as "everything", is read as it is).
const WHOLE_DAYS: std::ops::RangeInclusive<i64> = 2..=400;

/// `(tenant, instance, day start)`.
type DayKey = (String, String, i64);

/// One cached day: the write count it was read at, and its rows.
struct CachedDay<T> {
    writes: u64,
    rows: Arc<[T]>,
}

/// The store's two caches: 5-minute intervals and hourly usage.
pub(crate) struct DayCaches {
    intervals: DayCache<IntervalRow>,
    hours: DayCache<GpuHourUsage>,
}

impl Default for DayCaches {
    fn default() -> Self {
        Self {
            intervals: DayCache::new(MAX_INTERVAL_ROWS),
            hours: DayCache::new(MAX_HOUR_ROWS),
        }
    }
}

/// Days of rows, least recently used first out, and how many rows they hold.
struct DayCache<T> {
    inner: Mutex<Days<T>>,
    max_rows: usize,
}

struct Days<T> {
    days: lru::LruCache<DayKey, CachedDay<T>>,
    rows: usize,
}

impl<T> DayCache<T> {
    fn new(max_rows: usize) -> Self {
        Self {
            inner: Mutex::new(Days {
                days: lru::LruCache::unbounded(),
                rows: 0,
            }),
            max_rows,
        }
    }

    /// The day's rows if they were read at `writes`.
    fn get(&self, key: &DayKey, writes: u64) -> Option<Arc<[T]>> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match inner.days.get(key) {
            Some(day) if day.writes == writes => Some(Arc::clone(&day.rows)),
            _ => None,
        }
    }

    /// Keeps `rows` of the day as read at `writes`, evicting the least recently used days
    /// beyond `max_rows` (an empty day counts as one row, so empty days are bounded too).
    fn put(&self, key: DayKey, writes: u64, rows: Arc<[T]>) {
        let cost = |rows: &[T]| rows.len().max(1);
        if cost(&rows) > self.max_rows {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.rows += cost(&rows);
        if let Some(old) = inner.days.put(key, CachedDay { writes, rows }) {
            inner.rows -= cost(&old.rows);
        }
        while inner.rows > self.max_rows {
            match inner.days.pop_lru() {
                Some((_, day)) => inner.rows -= cost(&day.rows),
                None => break,
            }
        }
    }
}

impl ClickHouseStore {
    /// The intervals of one instance of the tenant in `[from, to)`, as
    /// [`ClickHouseStore::read_intervals`] returns them, whole days from the cache while
    /// their write counts hold.
    pub(super) async fn read_instance_intervals(
        &self,
        tenant: &TenantId,
        instance: &InstanceId,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<IntervalRow>, StoreError> {
        let instances = std::slice::from_ref(instance);
        let read = |ranges: Vec<(UnixMillis, UnixMillis)>| async move {
            // One query for all ranges, which also checks ownership.
            self.read_intervals(tenant, Some(instances), &ranges).await
        };
        let start = |r: &IntervalRow| r.bucket.start().0;
        let cache = &self.day_caches.intervals;
        self.by_whole_days(cache, tenant, instance, (from, to), start, read)
            .await
    }

    /// [`crate::Store::instance_hourly_usage`] (whole hours), whole days from the cache while
    /// their write counts hold.
    pub(super) async fn read_instance_hours(
        &self,
        tenant: &TenantId,
        instance: &InstanceId,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<GpuHourUsage>, StoreError> {
        crate::check_whole_hours(from, to)?;
        let read = |ranges: Vec<(UnixMillis, UnixMillis)>| async move {
            // Each read checks ownership; with every day cached, the check runs alone.
            if ranges.is_empty() {
                let instances = std::slice::from_ref(instance);
                self.require_instances(tenant, instances, OP).await?;
                return Ok(Vec::new());
            }
            let reads = ranges.into_iter().map(|range| {
                self.instance_hourly_usage_by(tenant, instance, range, SummaryPath::Auto)
            });
            let parts = futures::future::try_join_all(reads).await?;
            Ok(parts.into_iter().flatten().collect())
        };
        let cache = &self.day_caches.hours;
        self.by_whole_days(cache, tenant, instance, (from, to), |h| h.hour.0, read)
            .await
    }

    /// The rows of `[from, to)`: whole days from `cache` where their write counts hold, the
    /// rest (edges, days not cached) by one call of `read` with those ranges (disjoint, in
    /// order), whose rows must come in time order, `start` giving a row's time, and which
    /// must check the instance is the tenant's.
    async fn by_whole_days<T, R, F>(
        &self,
        cache: &DayCache<T>,
        tenant: &TenantId,
        instance: &InstanceId,
        (from, to): (UnixMillis, UnixMillis),
        start: fn(&T) -> i64,
        read: R,
    ) -> Result<Vec<T>, StoreError>
    where
        T: Clone,
        R: FnOnce(Vec<(UnixMillis, UnixMillis)>) -> F,
        F: Future<Output = Result<Vec<T>, StoreError>>,
    {
        let (first_day, end_day) = (ceil_day(from.0), floor_day(to.0));
        if !WHOLE_DAYS.contains(&(end_day.saturating_sub(first_day) / DAY_MS)) {
            return read(vec![(from, to)]).await;
        }
        let writes = self.day_writes(instance, first_day, end_day).await?;
        let count = |day: i64| writes.get(&day).copied().unwrap_or(0);
        let key = |day: i64| (tenant.0.clone(), instance.0.clone(), day);
        let days: Vec<(i64, Option<Arc<[T]>>)> = (0..)
            .map(|k| first_day + k * DAY_MS)
            .take_while(|day| *day < end_day)
            .map(|day| (day, cache.get(&key(day), count(day))))
            .collect();
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
        let fresh = read(ranges).await?;
        let cached_rows: usize = days.iter().flat_map(|(_, c)| c).map(|c| c.len()).sum();
        tracing::debug!(
            days = days.len(),
            cached_rows,
            read_rows = fresh.len(),
            "instance rows by whole days"
        );

        let mut out = Vec::with_capacity(fresh.len() + cached_rows);
        let mut fresh = fresh.into_iter().peekable();
        let mut take_until = |end: i64, out: &mut Vec<T>| {
            let mut taken = Vec::new();
            while let Some(row) = fresh.next_if(|r| start(r) < end) {
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
                    cache.put(key(day), count(day), rows.into());
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

/// The operation named in errors.
const OP: &str = "reading an instance by whole days";

#[cfg(test)]
mod tests {
    use super::*;

    fn key(day: i64) -> DayKey {
        ("acme".into(), "i-a".into(), day)
    }

    #[test]
    fn a_day_is_served_only_at_the_count_it_was_read_at() {
        let cache = DayCache::new(10);
        cache.put(key(0), 3, Arc::from(vec![1u8, 2]));
        assert_eq!(cache.get(&key(0), 3).as_deref(), Some(&[1u8, 2][..]));
        assert!(cache.get(&key(0), 4).is_none());
        assert!(cache.get(&key(1), 3).is_none());
        let other = ("globex".to_owned(), "i-a".to_owned(), 0);
        assert!(cache.get(&other, 3).is_none());
    }

    #[test]
    fn the_least_recently_used_days_go_first_and_empty_days_count() {
        let cache = DayCache::new(4);
        cache.put(key(0), 1, Arc::from(vec![0u8, 0]));
        cache.put(key(1), 1, Arc::from(vec![1u8]));
        assert!(cache.get(&key(0), 1).is_some()); // day 1 is now the least recently used
        cache.put(key(2), 1, Arc::from(Vec::<u8>::new()));
        assert!(cache.get(&key(1), 1).is_some(), "4 rows fit");
        cache.put(key(3), 1, Arc::from(vec![3u8]));
        // 5 > 4: day 0 (used before day 1, 2 rows) goes, as the least recently used.
        assert!(cache.get(&key(0), 1).is_none());
        assert!(cache.get(&key(2), 1).is_some() && cache.get(&key(3), 1).is_some());
        // Replacing a day frees its old rows; a day larger than the whole cache is not kept.
        cache.put(key(3), 2, Arc::from(vec![3u8]));
        assert!(cache.get(&key(1), 1).is_some());
        cache.put(key(9), 1, Arc::from(vec![9u8; 5]));
        assert!(cache.get(&key(9), 1).is_none());
        assert!(cache.get(&key(3), 2).is_some());
        for day in 10..100 {
            cache.put(key(day), 1, Arc::from(Vec::<u8>::new()));
        }
        let inner = cache.inner.lock().unwrap();
        assert_eq!((inner.days.len(), inner.rows), (4, 4));
    }
}
