//! Micro-batches are bounded by bytes as well as by records, on a real
//! Kafka topic: large records cut a batch early, every record still comes
//! through in order, and without the byte bound the same records make one
//! batch.
#![cfg(feature = "services")]

use std::time::Duration;

use outlier_common::kafka::{self, BatchBound};
use rdkafka::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// Batches read from the start of `topic` until `n` records came, with
/// `bound`.
async fn batches(
    env: &outlier_e2e::TestEnv,
    topic: &str,
    n: usize,
    bound: BatchBound,
) -> Vec<Vec<i64>> {
    let consumer: StreamConsumer = env
        .kafka
        .consumer_config("e2e-batches", &format!("{}-{}", env.id, bound.bytes))
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let mut total = 0;
    while total < n {
        let first = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("records within 30 s")
            .unwrap()
            .detach();
        let batch = kafka::fill_batch(&consumer, first, bound, Duration::from_secs(2)).await;
        total += batch.len();
        out.push(batch.iter().map(|m| m.offset()).collect());
    }
    out
}

#[tokio::test]
async fn a_batch_stops_at_its_byte_bound_and_every_record_comes_in_order() {
    let env = outlier_e2e::TestEnv::new("batches").await;
    let topic = format!("e2e-batches-{}", env.id);
    env.kafka.ensure_topics(&[(&topic, 1)]).await.unwrap();
    let producer: FutureProducer = env.kafka.producer_config("e2e-batches").create().unwrap();
    // 20 records of 200 KiB: six of them pass 1 MiB.
    let payload = vec![7u8; 200 * 1024];
    for i in 0..20 {
        producer
            .send(
                FutureRecord::to(&topic)
                    .key(&format!("k{i:02}"))
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }

    let bounded = batches(
        &env,
        &topic,
        20,
        BatchBound {
            records: 1000,
            bytes: 1 << 20,
        },
    )
    .await;
    assert!(bounded.len() >= 4, "{bounded:?}");
    assert!(
        bounded.iter().all(|b| !b.is_empty() && b.len() <= 6),
        "{bounded:?}"
    );
    let offsets: Vec<i64> = bounded.concat();
    assert_eq!(
        offsets,
        (0..20).collect::<Vec<i64>>(),
        "every record, in order"
    );

    // The same records without the byte bound: cut by time or count only.
    let unbounded = batches(
        &env,
        &topic,
        20,
        BatchBound {
            records: 1000,
            bytes: 1 << 30,
        },
    )
    .await;
    assert!(unbounded.iter().any(|b| b.len() > 6), "{unbounded:?}");
    env.cleanup().await;
}
