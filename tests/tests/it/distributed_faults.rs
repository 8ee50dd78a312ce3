//! Faults on the distributed path, each checked by totals: the energy stored per instance must
//! equal exactly what the replayed trace's counter says was consumed — nothing lost, nothing
//! counted twice — after kill -9 of the enricher mid-batch, kill -9 of the gateway while agents
//! stream, a broker restart (sqlite storage), and ClickHouse down for 30 s while data flows.
//! The broker and ClickHouse faults run on servers private to their test.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::{Duration, Instant};
use wattprint_bus::kafka::KafkaBusConfig;
use wattprint_tests::api::ApiClient;
use wattprint_tests::cluster::{agent_summary, Cluster, TestInstance};
use wattprint_tests::process::Node;
use wattprint_tests::servers::{PrivateClickHouse, PrivateTansu};
use wattprint_tests::{now_ms, read_trace, test_servers, BUCKET_MS};

/// Trace passes per GPU: 3 × 190 s of the H100 trace.
const LOOPS: u32 = 3;
/// For faults upstream of the bus (gateway, broker), which must land while the agents still
/// stream: the replay runs 20× real time, so the three passes take ~28 s of wall clock.
const PACED: Option<u32> = Some(20);

const INSTANCES: [TestInstance; 2] = [
    TestInstance {
        tenant: "acme",
        id: "acme-a",
        zip: "95112",
        seed: 11,
        gpus: 4,
    },
    TestInstance {
        tenant: "globex",
        id: "globex-a",
        zip: "92618",
        seed: 12,
        gpus: 4,
    },
];

/// A running load: two agents replaying 4 GPUs each, `LOOPS` times, from `start`.
struct Load {
    agents: Vec<Node>,
    window: (i64, i64),
    /// Energy each instance must end with, mJ.
    expected: u64,
}

fn start_load(cluster: &Cluster, speed: Option<u32>) -> Load {
    let rows = read_trace();
    assert!(
        rows.windows(2).all(|w| w[1].counter_mj >= w[0].counter_mj),
        "the trace's counter never goes backwards, so every loop adds last − first"
    );
    let per_loop = rows.last().unwrap().counter_mj - rows[0].counter_mj;
    let period = rows.last().unwrap().t_ms - rows[0].t_ms;
    let start = (now_ms() - 6 * 3_600_000).div_euclid(BUCKET_MS) * BUCKET_MS;
    let agents = INSTANCES
        .iter()
        .map(|i| cluster.agent(i.id, LOOPS, start, speed))
        .collect();
    Load {
        agents,
        window: (start, start + i64::from(LOOPS) * period + BUCKET_MS),
        expected: u64::from(INSTANCES[0].gpus) * u64::from(LOOPS) * per_loop,
    }
}

async fn stored(api: &ApiClient, load: &Load) -> Vec<u64> {
    let mut v = Vec::new();
    for i in &INSTANCES {
        v.push(
            api.series_energy(i.tenant, i.id, load.window.0, load.window.1)
                .await,
        );
    }
    v
}

/// Waits until some energy is stored: data flows end to end.
async fn await_flow(api: &ApiClient, load: &Load) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = stored(api, load).await;
        if now.iter().any(|e| *e > 0) {
            return now;
        }
        assert!(Instant::now() < deadline, "no data arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for the agents to have everything acked, then for the stored totals to be exact.
async fn finish(api: &ApiClient, mut load: Load) -> u64 {
    let mut resent = 0;
    for agent in &mut load.agents {
        let s = agent_summary(agent, Duration::from_secs(240));
        assert_eq!(s.acked, s.sent, "{s:?}");
        assert_eq!(s.rejected, 0, "{s:?}");
        resent += s.resent;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = stored(api, &load).await;
        for e in &now {
            assert!(
                *e <= load.expected,
                "double counted: {now:?} mJ stored, {} mJ per instance sent",
                load.expected
            );
        }
        if now.iter().all(|e| *e == load.expected) {
            return resent;
        }
        assert!(
            Instant::now() < deadline,
            "lost: {now:?} mJ stored, {} mJ per instance sent",
            load.expected
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_enricher_mid_batch_loses_and_doubles_nothing() {
    let Some((clickhouse, kafka)) = test_servers() else {
        return;
    };
    let mut cluster = Cluster::new("enricherkill", &clickhouse, &kafka, &INSTANCES);
    cluster.start_all();
    let api = cluster.api_client();
    let load = start_load(&cluster, None);
    let at_kill = await_flow(&api, &load).await;
    cluster.enricher.as_mut().unwrap().kill9();
    assert!(
        at_kill.iter().any(|e| *e < load.expected),
        "the kill came after everything was stored: {at_kill:?}"
    );
    // Rows written but not committed are consumed again from Kafka by the new member. The
    // supervisor's restart back-off outlasts the dead member's session: tansu 0.6 never hands
    // partitions to a member that joins while a dead leader is still in the group (its
    // follower SyncGroup forms the group with no assignments once the leader expires), where
    // Kafka would make the newcomer leader.
    let session = KafkaBusConfig::new(kafka.as_str()).session_timeout;
    tokio::time::sleep(session + Duration::from_secs(2)).await;
    cluster.enricher = Some(cluster.start("enricher"));
    finish(&api, load).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_gateway_while_agents_stream_loses_and_doubles_nothing() {
    let Some((clickhouse, kafka)) = test_servers() else {
        return;
    };
    let mut cluster = Cluster::new("gatewaykill", &clickhouse, &kafka, &INSTANCES);
    cluster.start_all();
    let api = cluster.api_client();
    let mut load = start_load(&cluster, PACED);
    await_flow(&api, &load).await;
    cluster.gateway.as_mut().unwrap().kill9();
    assert!(
        load.agents.iter_mut().all(Node::is_running),
        "the agents finished before the gateway was killed"
    );
    // Agents reconnect to the new gateway on the same port and resend what was not acked.
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.gateway = Some(cluster.start("gateway"));
    // Batches unacked when it died (if any) were resent; either way the totals are exact.
    let resent = finish(&api, load).await;
    eprintln!("batches resent after the gateway's kill: {resent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_loses_and_doubles_nothing() {
    let Some((clickhouse, _)) = test_servers() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut broker = PrivateTansu::start(dir.path());
    let mut cluster = Cluster::new("brokerrestart", &clickhouse, &broker.brokers(), &INSTANCES);
    cluster.start_all();
    let api = cluster.api_client();
    let mut load = start_load(&cluster, PACED);
    await_flow(&api, &load).await;
    broker.kill9();
    assert!(
        load.agents.iter_mut().all(Node::is_running),
        "the agents finished before the broker went down"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    broker.restart();
    finish(&api, load).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_down_for_30_s_while_data_flows_loses_and_doubles_nothing() {
    let Some((_, kafka)) = test_servers() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut clickhouse = PrivateClickHouse::start(dir.path());
    let mut cluster = Cluster::new("clickhousedown", &clickhouse.url(), &kafka, &INSTANCES);
    cluster.start_all();
    let api = cluster.api_client();
    let load = start_load(&cluster, None);
    let at_stop = await_flow(&api, &load).await;
    clickhouse.stop();
    assert!(
        at_stop.iter().any(|e| *e < load.expected),
        "everything was stored before ClickHouse stopped: {at_stop:?}"
    );
    // Agents keep streaming into Kafka (the gateway does not need ClickHouse); the enricher
    // fails its writes, leaves the offsets uncommitted and backs off.
    tokio::time::sleep(Duration::from_secs(30)).await;
    clickhouse.restart();
    finish(&api, load).await;
}
