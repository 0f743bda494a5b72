//! The load queue on Amazon SQS, with its dead-letter queue.
//!
//! The importer long-polls (`WaitTimeSeconds` up to 20), acks in `DeleteMessageBatch` calls of
//! at most 10, hides a message again with `ChangeMessageVisibility` (a retry's backoff, or the
//! heartbeat of a long load), and dead-letters what it cannot load by sending it to the DLQ with
//! the reason as message attributes, then deleting it here — two calls, so a crash between them
//! leaves a copy in both, which replay absorbs (the load manifest makes a second load a no-op).
//! Messages that fail transiently until the queue's `maxReceiveCount` reach the DLQ by the
//! queue's own redrive policy, without attributes.
//!
//! The DLQ tools ([`SqsQueue::dead_letters`], [`SqsQueue::replay`]) read it by receiving: a
//! listing hides what it read for a short while and then makes it visible again.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
};
use microbatch_core::ports::{DeadLetterNote, ErrorKind, Message, PortError, Queue};
use microbatch_core::time::Timestamp;

use super::{Aws, error_kind, port_error};

const SERVICE: &str = "sqs";

/// The message attributes a dead letter carries.
pub const REASON_CODE: &str = "microbatch.reason_code";
pub const REASON: &str = "microbatch.reason";
pub const RECEIVE_COUNT: &str = "microbatch.receive_count";
/// SQS's limit on `WaitTimeSeconds`.
const MAX_WAIT_SECS: u64 = 20;
/// SQS's limit on a visibility timeout: 12 hours.
const MAX_VISIBILITY_SECS: u64 = 43_200;
/// How long a listing of the DLQ hides what it read (so one listing sees each message once).
const LISTING_HIDE_SECS: i32 = 30;

/// An SQS queue and its dead-letter queue.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    url: String,
    dlq_url: String,
    visibility: Duration,
}

/// A message of the dead-letter queue, as the DLQ tools show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsDeadLetter {
    pub message_id: String,
    /// This listing's receipt: what replay deletes it by.
    pub receipt: String,
    pub body: String,
    /// `redrive` when the queue's redrive policy moved it (no reason attributes).
    pub code: String,
    pub reason: String,
    pub receive_count: u32,
    pub sent_at: Timestamp,
}

impl SqsQueue {
    /// `visibility`: the queue's visibility timeout (`microbatch check` compares it with the
    /// queue's attribute).
    pub fn new(aws: &Aws, url: impl Into<String>, dlq_url: impl Into<String>, visibility: Duration) -> Self {
        SqsQueue {
            client: aws.sqs(),
            url: url.into(),
            dlq_url: dlq_url.into(),
            visibility,
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn dlq_url(&self) -> &str {
        &self.dlq_url
    }

    /// Sends a message to the load queue (tests, and replay).
    pub async fn send(&self, body: &str) -> Result<String, PortError> {
        let out = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .send()
            .await
            .map_err(|e| port_error(SERVICE, "cannot send to the load queue", e))?;
        Ok(out.message_id().unwrap_or_default().to_owned())
    }

    /// Up to `max` messages of the dead-letter queue, oldest first as far as SQS tells. They
    /// are hidden while listed and visible again when this returns.
    pub async fn dead_letters(&self, max: usize) -> Result<Vec<SqsDeadLetter>, PortError> {
        let letters = self.receive_dead(max).await?;
        self.unhide(&letters).await?;
        Ok(letters)
    }

    /// Moves `letters` (from [`dead_letters`](Self::dead_letters) or a selection of them) back
    /// to the load queue: send there, then delete from the DLQ. Returns how many moved.
    pub async fn replay(&self, selected: impl Fn(&SqsDeadLetter) -> bool) -> Result<u64, PortError> {
        let letters = self.receive_dead(usize::MAX).await?;
        let (chosen, others): (Vec<_>, Vec<_>) = letters.into_iter().partition(|l| selected(l));
        self.unhide(&others).await?;
        let mut moved = 0;
        for letter in &chosen {
            self.send(&letter.body).await?;
            self.client
                .delete_message()
                .queue_url(&self.dlq_url)
                .receipt_handle(&letter.receipt)
                .send()
                .await
                .map_err(|e| port_error(SERVICE, "cannot delete a replayed dead letter", e))?;
            moved += 1;
        }
        Ok(moved)
    }

    /// Receives the DLQ until it answers empty (or `max`), hiding each message for the listing.
    async fn receive_dead(&self, max: usize) -> Result<Vec<SqsDeadLetter>, PortError> {
        let mut letters: Vec<SqsDeadLetter> = Vec::new();
        while letters.len() < max {
            let out = self
                .client
                .receive_message()
                .queue_url(&self.dlq_url)
                .max_number_of_messages(10)
                .visibility_timeout(LISTING_HIDE_SECS)
                .wait_time_seconds(1)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await
                .map_err(|e| port_error(SERVICE, "cannot read the dead-letter queue", e))?;
            if out.messages().is_empty() {
                break;
            }
            for m in out.messages() {
                let attr = |name: &str| {
                    m.message_attributes()
                        .and_then(|a| a.get(name))
                        .and_then(|v| v.string_value())
                        .map(str::to_owned)
                };
                let system =
                    |name: MessageSystemAttributeName| m.attributes().and_then(|a| a.get(&name)).cloned();
                let receive_count = attr(RECEIVE_COUNT)
                    .or_else(|| system(MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                let sent_ms: i64 = system(MessageSystemAttributeName::SentTimestamp)
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0);
                let code = attr(REASON_CODE).unwrap_or_else(|| "redrive".into());
                let reason = attr(REASON).unwrap_or_else(|| {
                    "moved by the queue's redrive policy after its maxReceiveCount receives".into()
                });
                letters.push(SqsDeadLetter {
                    message_id: m.message_id().unwrap_or_default().to_owned(),
                    receipt: m.receipt_handle().unwrap_or_default().to_owned(),
                    body: m.body().unwrap_or_default().to_owned(),
                    code,
                    reason,
                    receive_count,
                    sent_at: Timestamp::from_millis(sent_ms),
                });
            }
        }
        letters.sort_by_key(|l| l.sent_at);
        Ok(letters)
    }

    async fn unhide(&self, letters: &[SqsDeadLetter]) -> Result<(), PortError> {
        for letter in letters {
            self.client
                .change_message_visibility()
                .queue_url(&self.dlq_url)
                .receipt_handle(&letter.receipt)
                .visibility_timeout(0)
                .send()
                .await
                .map_err(|e| port_error(SERVICE, "cannot make a listed dead letter visible again", e))?;
        }
        Ok(())
    }

    /// `microbatch check`: both queues exist, the load queue's visibility timeout is the one
    /// configured, and its redrive policy sends to the configured DLQ after `max_receives`.
    pub async fn probe(&self, max_receives: u32) -> Result<String, String> {
        let queue = self.attributes(&self.url).await.map_err(|e| e.to_string())?;
        let dlq = self.attributes(&self.dlq_url).await.map_err(|e| e.to_string())?;
        let visibility = queue
            .get(&QueueAttributeName::VisibilityTimeout)
            .cloned()
            .unwrap_or_default();
        if visibility != self.visibility.as_secs().to_string() {
            return Err(format!(
                "queue {}: VisibilityTimeout is {visibility} s, the configuration says {} s \
                 (queue.visibility_secs): the importer's heartbeat would run on the wrong clock",
                self.url,
                self.visibility.as_secs()
            ));
        }
        let policy = queue.get(&QueueAttributeName::RedrivePolicy).ok_or_else(|| {
            format!(
                "queue {}: no RedrivePolicy: failing messages would be retried forever",
                self.url
            )
        })?;
        let (target, count) = redrive_policy(policy)
            .ok_or_else(|| format!("queue {}: unreadable RedrivePolicy {policy:?}", self.url))?;
        let dlq_arn = dlq
            .get(&QueueAttributeName::QueueArn)
            .cloned()
            .unwrap_or_default();
        if target != dlq_arn {
            return Err(format!(
                "queue {}: the RedrivePolicy sends to {target}, but queue.dlq_url is {dlq_arn}",
                self.url
            ));
        }
        if count != max_receives {
            return Err(format!(
                "queue {}: the RedrivePolicy's maxReceiveCount is {count}, the configuration says {max_receives} \
                 (queue.max_receives)",
                self.url
            ));
        }
        Ok(format!(
            "sqs queue {}: visibility {visibility} s, dead letters to {dlq_arn} after {count} receives",
            self.url
        ))
    }

    /// The queue's attributes, for `microbatch check`.
    pub async fn attributes(&self, url: &str) -> Result<HashMap<QueueAttributeName, String>, PortError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .map_err(|e| port_error(SERVICE, &format!("cannot read the attributes of {url}"), e))?;
        Ok(out.attributes().cloned().unwrap_or_default())
    }
}

/// The target ARN and `maxReceiveCount` of a `RedrivePolicy` attribute (JSON, the count a
/// number or a string).
fn redrive_policy(json: &str) -> Option<(String, u32)> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let target = v.get("deadLetterTargetArn")?.as_str()?.to_owned();
    let count = match v.get("maxReceiveCount")? {
        serde_json::Value::Number(n) => u32::try_from(n.as_u64()?).ok()?,
        serde_json::Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    Some((target, count))
}

fn string_attribute(value: &str) -> Result<MessageAttributeValue, PortError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|e| PortError::invalid(SERVICE, e.to_string()))
}

/// SQS takes a message attribute of up to 256 KiB with the body; a reason is one line, but an
/// error text can quote a whole row.
fn clip(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl Queue for SqsQueue {
    fn visibility_timeout(&self) -> Duration {
        self.visibility
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Message>, PortError> {
        let max = i32::try_from(max.clamp(1, Self::MAX_BATCH)).unwrap_or(10);
        let wait = i32::try_from(wait.as_secs().min(MAX_WAIT_SECS)).unwrap_or(20);
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max)
            .wait_time_seconds(wait)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| port_error(SERVICE, "cannot receive from the load queue", e))?;
        Ok(out
            .messages()
            .iter()
            .map(|m| Message {
                id: m.message_id().unwrap_or_default().to_owned(),
                receipt: m.receipt_handle().unwrap_or_default().to_owned(),
                body: m.body().unwrap_or_default().to_owned(),
                receive_count: m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1),
            })
            .collect())
    }

    async fn ack(&self, message: &Message) -> Result<(), PortError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(&message.receipt)
            .send()
            .await
            .map_err(|e| port_error(SERVICE, &format!("cannot delete message {}", message.id), e))?;
        Ok(())
    }

    async fn ack_all(&self, messages: &[&Message]) -> Vec<Result<(), PortError>> {
        let mut results = Vec::with_capacity(messages.len());
        'chunks: for chunk in messages.chunks(Self::MAX_BATCH) {
            let mut call = self.client.delete_message_batch().queue_url(&self.url);
            for (i, m) in chunk.iter().enumerate() {
                match DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(&m.receipt)
                    .build()
                {
                    Ok(entry) => call = call.entries(entry),
                    Err(e) => {
                        results.extend(
                            chunk
                                .iter()
                                .map(|_| Err(PortError::invalid(SERVICE, e.to_string()))),
                        );
                        continue 'chunks;
                    }
                }
            }
            match call.send().await {
                Ok(out) => {
                    let failed: HashMap<&str, PortError> = out
                        .failed()
                        .iter()
                        .map(|f| {
                            let status = if f.sender_fault() { 400 } else { 500 };
                            let kind = match f.code() {
                                // The receipt is not this delivery's any more: another importer
                                // received the message since.
                                "ReceiptHandleIsInvalid" => ErrorKind::Conflict,
                                code => error_kind(Some(code), Some(status)),
                            };
                            let message = format!("{}: {}", f.code(), f.message().unwrap_or(""));
                            (f.id(), PortError::new(SERVICE, kind, message))
                        })
                        .collect();
                    for (i, m) in chunk.iter().enumerate() {
                        results.push(match failed.get(i.to_string().as_str()) {
                            Some(e) => Err(PortError::new(
                                SERVICE,
                                e.kind,
                                format!("cannot delete message {}: {}", m.id, e.message),
                            )),
                            None => Ok(()),
                        });
                    }
                }
                Err(e) => {
                    let e = port_error(SERVICE, "cannot delete a batch of messages", e);
                    results.extend(chunk.iter().map(|_| Err(e.clone())));
                }
            }
        }
        results
    }

    async fn set_visibility(&self, message: &Message, hidden: Duration) -> Result<(), PortError> {
        let secs = i32::try_from(hidden.as_secs().min(MAX_VISIBILITY_SECS)).unwrap_or(43_200);
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(&message.receipt)
            .visibility_timeout(secs)
            .send()
            .await
            .map_err(|e| {
                port_error(
                    SERVICE,
                    &format!("cannot change the visibility of message {}", message.id),
                    e,
                )
            })?;
        Ok(())
    }

    async fn dead_letter(&self, message: &Message, note: DeadLetterNote<'_>) -> Result<(), PortError> {
        self.client
            .send_message()
            .queue_url(&self.dlq_url)
            .message_body(&message.body)
            .message_attributes(REASON_CODE, string_attribute(note.code)?)
            .message_attributes(REASON, string_attribute(clip(note.reason, 4096))?)
            .message_attributes(
                RECEIVE_COUNT,
                string_attribute(&message.receive_count.to_string())?,
            )
            .send()
            .await
            .map_err(|e| port_error(SERVICE, "cannot send to the dead-letter queue", e))?;
        self.ack(message).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redrive_policies_are_read_as_sqs_writes_them() {
        let arn = "arn:aws:sqs:eu-west-1:123456789012:loads-dlq";
        assert_eq!(
            redrive_policy(&format!(
                r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":10}}"#
            )),
            Some((arn.to_owned(), 10))
        );
        assert_eq!(
            redrive_policy(&format!(
                r#"{{"deadLetterTargetArn": "{arn}", "maxReceiveCount": "5"}}"#
            )),
            Some((arn.to_owned(), 5))
        );
        assert_eq!(redrive_policy("{}"), None);
    }

    #[test]
    fn reasons_are_clipped_on_a_character_boundary() {
        assert_eq!(clip("abc", 10), "abc");
        assert_eq!(clip("aé", 2), "a");
        assert_eq!(clip(&"x".repeat(5000), 4096).len(), 4096);
    }
}
