//! Delivery records in batches: the publisher's lanes and limits against a real JetStream, and
//! the recorder writing every record of a busy intake exactly once.

use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use control_plane::queue::records::{Lane, Limits, RecordPublisher};
use futures::StreamExt;
use protocol::delivery::{DeliveryRecord, decode_records, encode_batch};
use protocol::service::config::NatsConfig;
use protocol::service::nats::{self, Nats};
use protocol::{DeliveryId, InstallationId, OrgId, Region};
use switchyard_tests::env::TestEnv;

use crate::helpers::*;

/// A new org of `app` in us-east-1, and the subject its delivery records are published on.
async fn org_and_its_deliveries_subject(app: &TestApp) -> (i64, String) {
    let org = app.create_org(US).await["id"].as_i64().unwrap();
    let state = &app.regions[US].state;
    let shard = state.shards.route(OrgId(org)).unwrap().name;
    let subject = state
        .nats
        .names
        .deliveries_subject(&Region::new(US).unwrap(), Some(&shard));
    (org, subject)
}

/// The us-east-1 recorder's consumer, as JetStream reports it now.
async fn recorder_info(
    state: &control_plane::state::AppState,
) -> async_nats::jetstream::consumer::Info {
    let stream = state
        .nats
        .names
        .deliveries_stream(&Region::new(US).unwrap());
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = state
        .nats
        .js
        .get_consumer_from_stream(protocol::subjects::RECORDER_CONSUMER, &stream)
        .await
        .unwrap();
    consumer.info().await.unwrap().clone()
}

/// A NATS namespace of its own with a region's streams, and nothing consuming them.
async fn streams() -> (Nats, Region) {
    let cfg = NatsConfig {
        url: TestEnv::get().nats_us_url.clone(),
        namespace: format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
        duplicate_window: Duration::from_secs(60),
        retention: Duration::from_secs(3600),
    };
    let nats = nats::connect(&cfg, "records test").await.unwrap();
    let region = Region::new(US).unwrap();
    nats::ensure_region_streams(&nats, &region, &cfg)
        .await
        .unwrap();
    (nats, region)
}

fn record(id: &str) -> Vec<u8> {
    serde_json::to_vec(&DeliveryRecord {
        delivery_id: DeliveryId(id.into()),
        org_id: Some(OrgId(1_000_001)),
        event: "issues".into(),
        action: Some("opened".into()),
        installation_id: Some(InstallationId(7)),
        repo: Some("acme/widgets".into()),
        received_in: Region::new(US).unwrap(),
        received_at: chrono::Utc::now(),
        outcome: "ignored".into(),
        jobs: Vec::new(),
    })
    .unwrap()
}

fn publisher(nats: &Nats, max_records: usize, in_flight: usize) -> RecordPublisher {
    let sizes = prometheus::Histogram::with_opts(prometheus::HistogramOpts::new("t", "t")).unwrap();
    RecordPublisher::new(
        nats.clone(),
        Limits {
            max_records,
            in_flight,
            timeout: Duration::from_secs(3),
        },
        sizes,
    )
}

/// Every message of the region's deliveries stream: its subject and its body.
async fn stored_messages(nats: &Nats, region: &Region) -> Vec<(String, Vec<u8>)> {
    let name = nats.names.deliveries_stream(region);
    let mut stream = nats.js.get_stream(&name).await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    if last == 0 {
        return out;
    }
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    while let Some(m) = messages.next().await {
        let m = m.unwrap();
        out.push((m.subject.to_string(), m.payload.to_vec()));
        if m.info().unwrap().stream_sequence == last {
            break;
        }
    }
    out
}

/// Every message of the region's deliveries stream: its subject and the ids of its records.
async fn stored(nats: &Nats, region: &Region) -> Vec<(String, Vec<String>)> {
    stored_messages(nats, region)
        .await
        .into_iter()
        .map(|(subject, payload)| {
            let decoded = decode_records(&payload).unwrap();
            assert!(decoded.rejected.is_empty(), "{:?}", decoded.rejected);
            let ids = decoded
                .records
                .into_iter()
                .map(|r| r.delivery_id.0)
                .collect();
            (subject, ids)
        })
        .collect()
}

fn lane(region: &Region, shard: Option<&str>) -> Lane {
    Lane {
        region: region.clone(),
        shard: shard.map(str::to_owned),
    }
}

// One runtime thread: every publish below is queued before the lane's task first runs, so
// the batches are exactly determined by the limits.
#[tokio::test]
async fn records_queued_while_a_message_is_out_leave_together_within_the_limits() {
    let (nats, region) = streams().await;
    let records = publisher(&nats, 8, 1);
    let ids: Vec<String> = (0..100).map(|i| format!("d{i:03}")).collect();
    let results = futures::future::join_all(
        ids.iter()
            .map(|id| records.publish(lane(&region, Some("us-east-1-0")), record(id))),
    )
    .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");

    let messages = stored(&nats, &region).await;
    let sizes: Vec<usize> = messages.iter().map(|(_, ids)| ids.len()).collect();
    assert_eq!(sizes, [vec![8; 12], vec![4]].concat());
    let all: Vec<String> = messages.iter().flat_map(|(_, ids)| ids.clone()).collect();
    assert_eq!(all, ids, "every record once, in order");
    assert!(
        messages
            .iter()
            .all(|(s, _)| s.ends_with("deliveries.us-east-1.shard.us-east-1-0")),
        "{messages:?}"
    );
}

#[tokio::test]
async fn an_idle_lane_sends_a_record_alone_and_lanes_never_mix() {
    let (nats, region) = streams().await;
    let records = publisher(&nats, 256, 2);
    records
        .publish(lane(&region, Some("us-east-1-0")), record("alone"))
        .await
        .unwrap();
    let (a, b, c) = tokio::join!(
        records.publish(lane(&region, Some("us-east-1-0")), record("a")),
        records.publish(lane(&region, Some("us-east-1-1")), record("b")),
        records.publish(lane(&region, None), record("c")),
    );
    for r in [a, b, c] {
        r.unwrap();
    }

    let mut messages = stored(&nats, &region).await;
    messages.sort();
    let ns = &nats.names;
    let mut expected = vec![
        (
            ns.deliveries_subject(&region, Some("us-east-1-0")),
            vec!["alone".to_owned()],
        ),
        (
            ns.deliveries_subject(&region, Some("us-east-1-0")),
            vec!["a".to_owned()],
        ),
        (
            ns.deliveries_subject(&region, Some("us-east-1-1")),
            vec!["b".to_owned()],
        ),
        (ns.deliveries_subject(&region, None), vec!["c".to_owned()]),
    ];
    expected.sort();
    assert_eq!(messages, expected);
    // A record that leaves alone is a bare object, as control planes before batching read.
    for (_, body) in stored_messages(&nats, &region).await {
        assert_eq!(
            body.first(),
            Some(&b'{'),
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
}

#[tokio::test]
async fn a_record_whose_handler_stopped_waiting_is_not_sent() {
    let (nats, region) = streams().await;
    let records = publisher(&nats, 256, 1);
    let kept = records.publish(lane(&region, Some("s")), record("kept"));
    let mut dropped = Box::pin(records.publish(lane(&region, Some("s")), record("dropped")));
    // Queue the second record, then give up on it before the lane's task has run.
    assert!(futures::poll!(&mut dropped).is_pending());
    drop(dropped);
    kept.await.unwrap();

    let messages = stored(&nats, &region).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0].1, ["kept"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_webhooks_is_recorded_once_each_with_its_jobs_and_usage() {
    let app = TestApp::spawn().await;
    let org = app.create_org(US).await["id"].as_i64().unwrap();
    let inst = new_installation();
    app.bind_installation(US, org, inst).await;
    let deliveries: Vec<String> = (0..60).map(|_| new_delivery()).collect();
    let app = &app;
    let answers = futures::future::join_all(deliveries.iter().enumerate().map(|(i, d)| {
        // Every third one is labeled `bot` and makes a job.
        let label = if i % 3 == 0 { "bot" } else { "docs" };
        let payload = labeled_issue(inst, label);
        async move { app.send_webhook(US, "issues", d, &payload).await }
    }))
    .await;
    let mut jobs = Vec::new();
    for a in &answers {
        assert_eq!(a.status, 202, "{}", a.body);
        jobs.extend(
            a.body["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j.as_str().unwrap().to_owned()),
        );
    }
    assert_eq!(jobs.len(), 20);
    // The same deliveries again, as GitHub's redelivery would: nothing new is written.
    let again = futures::future::join_all(deliveries.iter().take(10).map(|d| async {
        app.send_webhook(US, "issues", d, &labeled_issue(inst, "docs"))
            .await
    }))
    .await;
    assert!(again.iter().all(|a| a.status == 202));

    let shard = &app.regions[US].shard;
    let scalar = |sql: &'static str| async move {
        sqlx::query_scalar::<_, i64>(sql)
            .bind(org)
            .fetch_one(shard)
            .await
            .unwrap()
    };
    wait_for("every delivery's row", Duration::from_secs(20), || async {
        let n = scalar("select count(*) from delivery where org_id = $1").await;
        (n == 60).then_some(())
    })
    .await;
    let mut stored_jobs: Vec<String> =
        sqlx::query_scalar("select id from job where org_id = $1 order by id")
            .bind(org)
            .fetch_all(shard)
            .await
            .unwrap();
    jobs.sort();
    stored_jobs.sort();
    assert_eq!(stored_jobs, jobs);
    assert_eq!(
        scalar(
            "select count(*) from job_event where org_id = $1 and seq = 1 and status = 'queued'"
        )
        .await,
        20,
        "one first event per job"
    );
    // Every record settled by the recorder, the repeated ones too, before counting.
    wait_for(
        "the recorder to settle every record",
        Duration::from_secs(20),
        || async {
            let info = recorder_info(&app.regions[US].state).await;
            (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
        },
    )
    .await;
    let metered = scalar(
        "select coalesce(sum(quantity), 0)::bigint from usage_daily \
         where org_id = $1 and metric = 'webhook_deliveries'",
    )
    .await;
    assert_eq!(metered, 60, "each delivery metered once");
    assert_eq!(
        scalar("select count(*) from delivery where org_id = $1").await,
        60
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_of_one_record_as_earlier_control_planes_sent_is_recorded() {
    let app = TestApp::spawn().await;
    let org = app.create_org(US).await["id"].as_i64().unwrap();
    let nats = &app.regions[US].state.nats;
    let delivery = new_delivery();
    let mut rec: DeliveryRecord = serde_json::from_slice(&record(&delivery)).unwrap();
    rec.org_id = Some(OrgId(org));
    // The subject and the single-object body of a control plane from before batching.
    let subject = format!("{}.deliveries.us-east-1.{org}", app.namespace);
    nats.js
        .publish(subject, serde_json::to_vec(&rec).unwrap().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let shard = &app.regions[US].shard;
    wait_for("the delivery's row", Duration::from_secs(20), || async {
        let n: i64 = sqlx::query_scalar(
            "select count(*) from delivery where org_id = $1 and delivery_id = $2",
        )
        .bind(org)
        .bind(&delivery)
        .fetch_one(shard)
        .await
        .unwrap();
        (n == 1).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_messages_are_written_a_few_records_at_a_time_and_a_bad_record_spoils_only_itself() {
    let app = TestApp::spawn_with(Options {
        recorder_batch: 4,
        ..Options::default()
    })
    .await;
    let (org, subject) = org_and_its_deliveries_subject(&app).await;
    let state = &app.regions[US].state;
    let record = |id: &str| {
        let mut rec: DeliveryRecord = serde_json::from_slice(&record(id)).unwrap();
        rec.org_id = Some(OrgId(org));
        serde_json::to_vec(&rec).unwrap()
    };
    // Messages of 6 (more than the recorder writes at once), 3 and 2 records, and one whose
    // second element is not a record.
    let mut good = Vec::new();
    let mut bodies = Vec::new();
    for n in [6, 3, 2] {
        let ids: Vec<String> = (0..n).map(|_| new_delivery()).collect();
        let recs: Vec<Vec<u8>> = ids.iter().map(|id| record(id)).collect();
        bodies.push(encode_batch(recs.iter().map(Vec::as_slice)));
        good.extend(ids);
    }
    let (a, c) = (new_delivery(), new_delivery());
    let (ra, rc) = (record(&a), record(&c));
    bodies.push(encode_batch([
        ra.as_slice(),
        br#"{"delivery_id": 17}"#,
        rc.as_slice(),
    ]));
    good.extend([a, c]);
    for body in bodies {
        state
            .nats
            .js
            .publish(subject.clone(), body.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    let db = &app.regions[US].shard;
    let recorded = wait_for(
        "every good record's row",
        Duration::from_secs(20),
        || async {
            let ids: Vec<String> = sqlx::query_scalar(
                "select delivery_id from delivery where org_id = $1 order by delivery_id",
            )
            .bind(org)
            .fetch_all(db)
            .await
            .unwrap();
            (ids.len() >= good.len()).then_some(ids)
        },
    )
    .await;
    good.sort();
    assert_eq!(recorded, good);
    assert_eq!(
        state
            .metrics
            .recorded
            .with_label_values(&["undecodable"])
            .get(),
        1,
        "the dropped element is counted"
    );
    // Every message was settled: nothing waits for redelivery.
    wait_for("the recorder's acks", Duration::from_secs(20), || async {
        let info = recorder_info(state).await;
        (info.num_ack_pending == 0 && info.num_pending == 0).then_some(())
    })
    .await;
}

/// A write that stalls for several ack waits (the shard's `delivery` table locked) does not
/// have its message delivered again meanwhile: the recorder reports the batch in progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_write_keeps_its_message_and_is_not_delivered_again() {
    use sqlx::Connection;
    let ack_wait = Duration::from_secs(2);
    let app = TestApp::spawn_with(Options {
        recorder_ack_wait: ack_wait,
        ..Options::default()
    })
    .await;
    let (org, subject) = org_and_its_deliveries_subject(&app).await;
    let state = &app.regions[US].state;
    let id = new_delivery();
    let mut rec: DeliveryRecord = serde_json::from_slice(&record(&id)).unwrap();
    rec.org_id = Some(OrgId(org));
    let body = encode_batch([serde_json::to_vec(&rec).unwrap().as_slice()]);

    let mut blocker = app.regions[US].shard.acquire().await.unwrap().detach();
    let mut tx = blocker.begin().await.unwrap();
    sqlx::query("lock table delivery in access exclusive mode")
        .execute(&mut *tx)
        .await
        .unwrap();
    state
        .nats
        .js
        .publish(subject, body.into())
        .await
        .unwrap()
        .await
        .unwrap();
    let info = || recorder_info(state);
    wait_for(
        "the recorder to take the message",
        Duration::from_secs(20),
        || async { (info().await.num_ack_pending == 1).then_some(()) },
    )
    .await;
    wait_for(
        "the recorder's write to wait for the lock",
        Duration::from_secs(20),
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "select count(*) from pg_locks
                  where not granted and relation = 'delivery'::regclass
                    and database = (select oid from pg_database where datname = current_database())",
            )
            .fetch_one(&app.regions[US].shard)
            .await
            .unwrap();
            (waiting > 0).then_some(())
        },
    )
    .await;
    // The write stays blocked for three ack waits; the message must not go out again meanwhile.
    let blocked = std::time::Instant::now();
    let during = wait_for(
        "the message to stay out for three ack waits",
        ack_wait * 3 + Duration::from_secs(20),
        || async {
            let i = info().await;
            assert_eq!(i.delivered.consumer_sequence, 1, "delivered again: {i:?}");
            (blocked.elapsed() >= ack_wait * 3).then_some(i)
        },
    )
    .await;
    tx.rollback().await.unwrap();
    blocker.close().await.unwrap();

    let recorded = wait_for(
        "the delivery to be written",
        Duration::from_secs(20),
        || async {
            let n: i64 = sqlx::query_scalar("select count(*) from delivery where delivery_id = $1")
                .bind(&id)
                .fetch_one(&app.regions[US].shard)
                .await
                .unwrap();
            (n > 0).then_some(n)
        },
    )
    .await;
    assert_eq!(recorded, 1);
    let after = wait_for("the recorder's ack", Duration::from_secs(20), || async {
        let i = info().await;
        (i.num_ack_pending == 0).then_some(i)
    })
    .await;
    assert_eq!(
        (during.num_redelivered, during.delivered.consumer_sequence),
        (0, 1),
        "delivered once while the write was blocked: {during:?}"
    );
    assert_eq!(after.delivered.consumer_sequence, 1, "{after:?}");
}

/// Intake reads every one of GitHub's example payloads exactly as serde_json reads it: the
/// same facts for the rules, the same target for the jobs, the same installation and
/// repositories for the lifecycle.
#[test]
fn every_example_payload_parses_as_serde_json_parses_it() {
    use control_plane::intake::event::Payload;
    let names = |r: &Option<Vec<control_plane::intake::event::RepoRef>>| {
        r.as_ref()
            .map(|v| v.iter().map(|x| x.full_name.clone()).collect::<Vec<_>>())
    };
    let mut seen = 0;
    for group in switchyard_tests::fixtures::all_examples() {
        for p in group.examples {
            let body = serde_json::to_vec_pretty(&p).unwrap();
            let fast = Payload::parse(&body)
                .unwrap_or_else(|e| panic!("{} {:?}: {e}", group.name, p["action"]));
            let slow: Payload = serde_json::from_slice(&body).unwrap();
            let what = format!("{} {:?}", group.name, p["action"]);
            assert_eq!(fast.facts(&group.name), slow.facts(&group.name), "{what}");
            assert_eq!(fast.target(), slow.target(), "{what}");
            assert_eq!(fast.installation_id(), slow.installation_id(), "{what}");
            assert_eq!(
                names(&fast.repositories),
                names(&slow.repositories),
                "{what}"
            );
            assert_eq!(
                names(&fast.repositories_added),
                names(&slow.repositories_added),
                "{what}"
            );
            assert_eq!(
                names(&fast.repositories_removed),
                names(&slow.repositories_removed),
                "{what}"
            );
            assert_eq!(
                fast.repository_selection, slow.repository_selection,
                "{what}"
            );
            seen += 1;
        }
    }
    assert!(seen > 300, "only {seen} examples");
}
