//! Publishing events to Kafka: protobuf values keyed by `org/workload`, sent
//! by an idempotent acks=all producer so retries neither duplicate nor
//! reorder the events of a workload.

use std::time::Duration;

use outlier_common::kafka::KafkaConfig;
use outlier_proto::Event;
use prost::Message;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

pub struct Publisher {
    producer: FutureProducer,
    topics: outlier_common::kafka::Topics,
    /// Each event to its org's own topic (`kafka.org_topics`).
    org_topics: bool,
}

impl Publisher {
    pub fn new(kafka: &KafkaConfig, client_id: &str) -> Result<Self, KafkaError> {
        Ok(Self {
            producer: kafka.producer_config(client_id).create()?,
            topics: kafka.topics.clone(),
            org_topics: kafka.org_topics,
        })
    }

    /// Queues one event. Waits (without blocking the runtime) while the
    /// producer's local queue is full. The returned future resolves when Kafka
    /// has acknowledged the record or given up on it.
    pub async fn send(&self, event: &Event) -> Result<DeliveryFuture, KafkaError> {
        let payload = event.encode_to_vec();
        let key = event.partition_key();
        let topic = if self.org_topics {
            self.topics
                .events_for_org(&event.org)
                .map_err(|_| KafkaError::MessageProduction(RDKafkaErrorCode::InvalidTopic))?
        } else {
            self.topics.events.clone()
        };
        loop {
            let record = FutureRecord::to(&topic).key(&key).payload(&payload);
            match self.producer.send_result(record) {
                Ok(fut) => return Ok(fut),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Waits for every queued record to be acknowledged or to fail.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }
}
