//! A queue with at-least-once delivery, as SQS gives it: visibility timeouts, receive counts,
//! redelivery, a redrive to the dead-letter queue after too many receives, and the faults
//! (duplicate sends, lost deletes, receives out of order).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use microbatch_core::ports::{Clock, DeadLetterNote, Message, PortError, Queue};
use microbatch_core::time::Timestamp;

use super::lock;
use crate::ctx::{Ctx, Fault, Sabotage};

#[derive(Debug, Clone)]
struct Entry {
    id: String,
    body: String,
    visible_at: Timestamp,
    receive_count: u32,
    receipt: u64,
}

/// A dead letter: the message body and the reason it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub body: String,
    pub code: String,
    pub reason: String,
}

#[derive(Debug, Default)]
struct State {
    entries: Vec<Entry>,
    dead: Vec<DeadLetter>,
    next_id: u64,
    next_receipt: u64,
}

/// An in-memory queue with its dead-letter queue.
#[derive(Debug)]
pub struct MemQueue {
    ctx: Arc<Ctx>,
    visibility: Duration,
    /// The redrive policy's `maxReceiveCount`.
    max_receives: u32,
    state: Mutex<State>,
}

/// The reason a redriven message carries (SQS gives none; the simulation names it).
pub const REDRIVE_REASON: &str = "queue redrive: received too many times";

impl MemQueue {
    pub fn new(ctx: Arc<Ctx>, visibility: Duration, max_receives: u32) -> Self {
        MemQueue {
            ctx,
            visibility,
            max_receives,
            state: Mutex::new(State::default()),
        }
    }

    /// An S3 notification arrives (sometimes twice).
    pub fn send(&self, body: String) {
        let copies = if self.ctx.chance(Fault::QueueDuplicate) {
            2
        } else {
            1
        };
        let now = self.ctx.clock.now();
        let mut s = lock(&self.state);
        for _ in 0..copies {
            s.next_id += 1;
            let id = format!("m-{}", s.next_id);
            s.entries.push(Entry {
                id,
                body: body.clone(),
                visible_at: now,
                receive_count: 0,
                receipt: 0,
            });
        }
    }

    /// Messages not yet deleted or dead-lettered, visible or not.
    pub fn depth(&self) -> usize {
        lock(&self.state).entries.len()
    }

    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        lock(&self.state).dead.clone()
    }

    fn find<'s>(s: &'s mut State, m: &Message) -> Option<&'s mut Entry> {
        s.entries
            .iter_mut()
            .find(|e| e.id == m.id && e.receipt.to_string() == m.receipt)
    }

    fn stale(m: &Message) -> PortError {
        // SQS: ReceiptHandleIsInvalid / MessageNotInflight, a client error.
        PortError::conflict(
            "queue",
            format!("receipt {} of {} is no longer valid", m.receipt, m.id),
        )
    }
}

impl Queue for MemQueue {
    fn visibility_timeout(&self) -> Duration {
        self.visibility
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Message>, PortError> {
        self.ctx.latency(0, 10).await;
        if self.ctx.throttled() {
            return Err(PortError::throttled("queue", "ThrottlingException (burst)"));
        }
        let deadline = self.ctx.clock.now().saturating_add(wait);
        loop {
            let now = self.ctx.clock.now();
            let (got, next_visible) = {
                let mut s = lock(&self.state);
                let mut visible: Vec<usize> = (0..s.entries.len())
                    .filter(|&i| s.entries[i].visible_at <= now)
                    .collect();
                if visible.len() > 1 && self.ctx.plan.is_on(Fault::QueueReorder) && self.ctx.faults_active() {
                    // Fisher-Yates with the fault stream.
                    for i in (1..visible.len()).rev() {
                        let j = self.ctx.below(i as u64 + 1) as usize;
                        visible.swap(i, j);
                    }
                    if visible.windows(2).any(|w| w[0] > w[1]) {
                        self.ctx.count(Fault::QueueReorder);
                    }
                }
                let mut got = Vec::new();
                let mut redriven = Vec::new();
                for i in visible {
                    if got.len() >= max {
                        break;
                    }
                    s.next_receipt += 1;
                    let receipt = s.next_receipt;
                    let e = &mut s.entries[i];
                    if e.receive_count >= self.max_receives {
                        redriven.push(i);
                        continue;
                    }
                    e.receive_count += 1;
                    e.receipt = receipt;
                    e.visible_at = now.saturating_add(self.visibility);
                    got.push(Message {
                        id: e.id.clone(),
                        receipt: e.receipt.to_string(),
                        body: e.body.clone(),
                        receive_count: e.receive_count,
                    });
                }
                redriven.sort_unstable();
                for i in redriven.into_iter().rev() {
                    let e = s.entries.remove(i);
                    s.dead.push(DeadLetter {
                        body: e.body,
                        code: "redrive".into(),
                        reason: REDRIVE_REASON.into(),
                    });
                }
                if self.ctx.sabotage == Sabotage::AckBeforeCommit {
                    let ids: Vec<String> = got.iter().map(|m| m.id.clone()).collect();
                    s.entries.retain(|e| !ids.contains(&e.id));
                }
                (got, s.entries.iter().map(|e| e.visible_at).min())
            };
            if !got.is_empty() || now >= deadline {
                return Ok(got);
            }
            // Long polling: wake at the deadline, when a hidden message reappears, or soon (a
            // send does not wake a waiting receive; a short poll stands in for that).
            let mut wake = deadline.min(now.saturating_add(Duration::from_millis(50)));
            if let Some(v) = next_visible.filter(|v| *v > now) {
                wake = wake.min(v);
            }
            self.ctx.clock.sleep_until(wake).await;
        }
    }

    async fn ack(&self, message: &Message) -> Result<(), PortError> {
        self.ctx.latency(0, 10).await;
        if self.ctx.throttled() {
            return Err(PortError::throttled("queue", "ThrottlingException (burst)"));
        }
        if self.ctx.chance(Fault::QueueLostAck) {
            // The delete never reached the queue; the client heard nothing wrong.
            return Ok(());
        }
        let mut s = lock(&self.state);
        // SQS: a delete with an outdated receipt succeeds but deletes nothing.
        if Self::find(&mut s, message).is_some() {
            s.entries.retain(|e| e.id != message.id);
        }
        Ok(())
    }

    async fn set_visibility(&self, message: &Message, delay: Duration) -> Result<(), PortError> {
        self.ctx.latency(0, 10).await;
        if self.ctx.throttled() {
            return Err(PortError::throttled("queue", "ThrottlingException (burst)"));
        }
        let now = self.ctx.clock.now();
        let mut s = lock(&self.state);
        match Self::find(&mut s, message) {
            Some(e) => {
                e.visible_at = now.saturating_add(delay);
                Ok(())
            }
            None => Err(Self::stale(message)),
        }
    }

    async fn dead_letter(&self, message: &Message, note: DeadLetterNote<'_>) -> Result<(), PortError> {
        self.ctx.latency(0, 10).await;
        if self.ctx.throttled() {
            return Err(PortError::throttled("queue", "ThrottlingException (burst)"));
        }
        let mut s = lock(&self.state);
        if Self::find(&mut s, message).is_none() {
            return Err(Self::stale(message));
        }
        s.entries.retain(|e| e.id != message.id);
        s.dead.push(DeadLetter {
            body: message.body.clone(),
            code: note.code.to_owned(),
            reason: note.reason.to_owned(),
        });
        Ok(())
    }
}
