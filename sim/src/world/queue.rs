//! A queue with at-least-once delivery: visibility timeouts, receive counts, a dead-letter queue.

use std::sync::Mutex;
use std::time::Duration;

use microbatch_core::ports::{Clock, Message, PortError, Queue};
use microbatch_core::time::Timestamp;

use super::lock;
use crate::clock::VirtualClock;

#[derive(Debug, Clone)]
struct Entry {
    id: String,
    body: String,
    visible_at: Timestamp,
    receive_count: u32,
    receipt: u64,
}

#[derive(Debug, Default)]
struct State {
    entries: Vec<Entry>,
    dead: Vec<(String, String)>,
    next_id: u64,
}

/// An in-memory queue.
#[derive(Debug)]
pub struct MemQueue {
    clock: VirtualClock,
    visibility: Duration,
    state: Mutex<State>,
}

impl MemQueue {
    pub fn new(clock: VirtualClock, visibility: Duration) -> Self {
        MemQueue {
            clock,
            visibility,
            state: Mutex::new(State::default()),
        }
    }

    pub fn send(&self, body: String) {
        let now = self.clock.now();
        let mut s = lock(&self.state);
        s.next_id += 1;
        let id = format!("m-{}", s.next_id);
        s.entries.push(Entry {
            id,
            body,
            visible_at: now,
            receive_count: 0,
            receipt: 0,
        });
    }

    /// Messages not yet deleted or dead-lettered.
    pub fn depth(&self) -> usize {
        lock(&self.state).entries.len()
    }

    /// Dead-lettered bodies with their reasons.
    pub fn dead_letters(&self) -> Vec<(String, String)> {
        lock(&self.state).dead.clone()
    }

    fn find<'s>(s: &'s mut State, m: &Message) -> Option<&'s mut Entry> {
        s.entries
            .iter_mut()
            .find(|e| e.id == m.id && e.receipt.to_string() == m.receipt)
    }
}

impl Queue for MemQueue {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Message>, PortError> {
        let deadline = self.clock.now().saturating_add(wait);
        loop {
            let now = self.clock.now();
            let (got, next_visible) = {
                let mut s = lock(&self.state);
                let mut got = Vec::new();
                let visibility = self.visibility;
                for e in s.entries.iter_mut().filter(|e| e.visible_at <= now).take(max) {
                    e.receive_count += 1;
                    e.receipt += 1;
                    e.visible_at = now.saturating_add(visibility);
                    got.push(Message {
                        id: e.id.clone(),
                        receipt: e.receipt.to_string(),
                        body: e.body.clone(),
                        receive_count: e.receive_count,
                    });
                }
                (got, s.entries.iter().map(|e| e.visible_at).min())
            };
            if !got.is_empty() || now >= deadline {
                return Ok(got);
            }
            // Long polling: wake at the deadline, or when a hidden message reappears, or soon
            // (a send does not wake a waiting receive; a short poll stands in for that).
            let mut wake = deadline.min(now.saturating_add(Duration::from_millis(50)));
            if let Some(v) = next_visible.filter(|v| *v > now) {
                wake = wake.min(v);
            }
            self.clock.sleep_until(wake).await;
        }
    }

    async fn ack(&self, message: &Message) -> Result<(), PortError> {
        let mut s = lock(&self.state);
        let receipt = message.receipt.clone();
        // A stale receipt (the message was received again since) fails, as SQS's does.
        if Self::find(&mut s, message).is_none() {
            return Err(PortError::permanent(
                "queue",
                format!("receipt {receipt} of {} is stale", message.id),
            ));
        }
        s.entries.retain(|e| e.id != message.id);
        Ok(())
    }

    async fn retry_after(&self, message: &Message, delay: Duration) -> Result<(), PortError> {
        let now = self.clock.now();
        let mut s = lock(&self.state);
        match Self::find(&mut s, message) {
            Some(e) => {
                e.visible_at = now.saturating_add(delay);
                Ok(())
            }
            None => Err(PortError::permanent(
                "queue",
                format!("receipt of {} is stale", message.id),
            )),
        }
    }

    async fn dead_letter(&self, message: &Message, reason: &str) -> Result<(), PortError> {
        let mut s = lock(&self.state);
        if Self::find(&mut s, message).is_none() {
            return Err(PortError::permanent(
                "queue",
                format!("receipt of {} is stale", message.id),
            ));
        }
        s.entries.retain(|e| e.id != message.id);
        s.dead.push((message.body.clone(), reason.to_owned()));
        Ok(())
    }
}
