#!/usr/bin/env python3
"""Compares the energy Wattprint stored for the GPU with the independent counter log over the
same window: [first sample start, last sample end]."""
import bisect, csv, sqlite3, sys

db, log = sys.argv[1], sys.argv[2]
rows = sqlite3.connect(db).execute(
    "select min(start_ms), max(end_ms), sum(energy_mj), count(*), sum(chain_start) from samples"
).fetchone()
start, end, stored, n, chains = rows
ts, cs = [], []
for r in csv.DictReader(open(log)):
    ts.append(int(r["unix_ms"]))
    cs.append(int(r["counter_mj"]))

def counter_at(t):
    """The counter as the independent reader saw it at t (last reading at or before t)."""
    i = bisect.bisect_right(ts, t) - 1
    assert i >= 0, "log starts after the window"
    return cs[i]

independent = counter_at(end) - counter_at(start)
secs = (end - start) / 1000
print(f"window_s={secs:.1f} samples={n} chains={chains}")
print(f"stored_mj={stored} independent_mj={independent} diff_mj={stored - independent}")
print(f"relative_error={(stored - independent) / independent * 100:.4f}% mean_power_w={stored / (end - start):.1f}")
