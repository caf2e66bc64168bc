//! What a consumed record is: an event, an operator's feedback or a
//! collector's heartbeat, decoded and checked (size, names, detail, the org
//! of the topic it came on); anything else becomes a [`DeadLetter`] with
//! the reason. Pure: no I/O, so it is fuzzed directly
//! (`tests/fuzz_decode.rs`).

use outlier_common::kafka::{self, Topics};
use outlier_common::names;
use outlier_proto::{Event, Feedback, FeedbackLabel, Heartbeat};
use prost::Message as _;
use rdkafka::Message;
use rdkafka::message::OwnedMessage;

/// What a consumed record turned out to be.
pub enum Input {
    Event(Event),
    Feedback(Feedback),
    /// A collector's heartbeat, its org checked: forwarded as is.
    Heartbeat(Heartbeat),
}

/// A record that could not be used.
pub struct DeadLetter {
    pub reason: String,
    pub label: Reason,
}

outlier_common::labels! {
    /// Why a record was dead-lettered: the `reason` label of
    /// `outlier_scorer_deadletter_total`.
    pub enum Reason {
        Empty = "empty",
        /// Over `limits.max_event_bytes`.
        Oversize = "oversize",
        /// Not the protobuf message its topic carries.
        Decode = "decode",
        /// An event without exec, connect or open detail.
        NoDetail = "no_detail",
        /// Feedback without a label.
        NoLabel = "no_label",
        /// An org or workload name that is not a valid name.
        InvalidName = "invalid_name",
        /// An event naming another org than its topic's.
        OrgMismatch = "org_mismatch",
        /// Feedback published on an events topic.
        FeedbackOnEvents = "feedback_on_events",
        /// The workload's baseline cannot be loaded while LanceDB answers.
        PoisonBaseline = "poison_baseline",
    }
}

/// An org named on an org's own topic must be that org.
fn check_topic_org(topics: &Topics, topic: &str, org: &str) -> Result<(), DeadLetter> {
    match topics.org_of_events_topic(topic) {
        Some(owner) if owner != org => Err(DeadLetter {
            reason: format!("event of org `{org}` on org `{owner}`'s topic {topic}"),
            label: Reason::OrgMismatch,
        }),
        _ => Ok(()),
    }
}

fn check_names(pairs: [(&'static str, &str); 2]) -> Result<(), DeadLetter> {
    for (field, value) in pairs {
        names::validate(field, value).map_err(|e| DeadLetter {
            reason: e.to_string(),
            label: Reason::InvalidName,
        })?;
    }
    Ok(())
}

fn check_event(event: &Event) -> Result<(), DeadLetter> {
    check_names([("org", &event.org), ("workload", &event.workload)])?;
    if event.detail.is_none() {
        return Err(DeadLetter {
            reason: "event has no exec, connect or open detail".into(),
            label: Reason::NoDetail,
        });
    }
    Ok(())
}

/// Decodes a record of an events topic or of the feedback topic; records
/// over `max_bytes` are refused (their scored copies must fit the topics),
/// and so is an event on another org's topic.
pub fn decode(msg: &OwnedMessage, topics: &Topics, max_bytes: usize) -> Result<Input, DeadLetter> {
    let payload = msg.payload().ok_or(DeadLetter {
        reason: "empty record".into(),
        label: Reason::Empty,
    })?;
    if payload.len() > max_bytes {
        return Err(DeadLetter {
            reason: format!(
                "record of {} bytes is over limits.max_event_bytes ({max_bytes})",
                payload.len()
            ),
            label: Reason::Oversize,
        });
    }
    if msg.topic() == topics.feedback {
        let fb = Feedback::decode(payload).map_err(|e| DeadLetter {
            reason: format!("not an outlier.v1.Feedback: {e}"),
            label: Reason::Decode,
        })?;
        let event = fb.event.as_ref().ok_or(DeadLetter {
            reason: "feedback without an event".into(),
            label: Reason::NoDetail,
        })?;
        check_event(event)?;
        if fb.label() == FeedbackLabel::Unspecified {
            return Err(DeadLetter {
                reason: "feedback without a label".into(),
                label: Reason::NoLabel,
            });
        }
        return Ok(Input::Feedback(fb));
    }
    match kafka::record_kind(msg) {
        None => {}
        Some(k) if k == kafka::HEARTBEAT_KIND.as_bytes() => {
            let h = Heartbeat::decode(payload).map_err(|e| DeadLetter {
                reason: format!("not an outlier.v1.Heartbeat: {e}"),
                label: Reason::Decode,
            })?;
            check_names([("org", &h.org), ("host", &h.host)])?;
            check_topic_org(topics, msg.topic(), &h.org)?;
            return Ok(Input::Heartbeat(h));
        }
        // Whoever may write events may not teach baselines.
        Some(_) => {
            return Err(DeadLetter {
                reason: format!(
                    "feedback on an events topic is refused; operators publish it to {}",
                    topics.feedback
                ),
                label: Reason::FeedbackOnEvents,
            });
        }
    }
    let event = Event::decode(payload).map_err(|e| DeadLetter {
        reason: format!("not an outlier.v1.Event: {e}"),
        label: Reason::Decode,
    })?;
    check_event(&event)?;
    check_topic_org(topics, msg.topic(), &event.org)?;
    Ok(Input::Event(event))
}
