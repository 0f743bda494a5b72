//! The local load queue: SQS semantics in SQLite.
//!
//! A received message is hidden for the visibility timeout and comes back if it is not acked by
//! then; every receive bumps its receive count and hands out a new receipt handle, and only the
//! newest one can ack, delay or dead-letter it (a stale receipt fails, as SQS's does). A message
//! received more than `max_receives` times goes to the dead-letter table instead of out, with
//! the reason `max receives exceeded` (SQS's redrive policy); operators list the dead letters and
//! redrive them back.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use microbatch_core::ports::{DeadLetterNote, Message, PortError, Queue};
use microbatch_core::time::{Timestamp, duration_micros};
use sqlx::Row;
use tokio::sync::Notify;

use super::sqlite::{Db, Durability, OpenSpec, db_error, now};

const SERVICE: &str = "queue";

/// The reason given to messages the queue itself dead-letters.
pub const MAX_RECEIVES_EXCEEDED: &str = "max receives exceeded";
/// Its code.
pub const REDRIVE_CODE: &str = "redrive";

/// The schema, as its migrations (see `OpenSpec::migrations`).
const MIGRATIONS: &[&str] = &[SCHEMA_V1, SCHEMA_V2];

/// Dead letters carry the reason's code too.
const SCHEMA_V2: &str = "ALTER TABLE dead_letters ADD COLUMN code TEXT NOT NULL DEFAULT 'unknown';";

const SCHEMA_V1: &str = r#"
CREATE TABLE messages (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    body            TEXT NOT NULL,
    sent_at         INTEGER NOT NULL,
    visible_at      INTEGER NOT NULL,
    receive_count   INTEGER NOT NULL DEFAULT 0,
    receipt         TEXT,
    first_received_at INTEGER
);
CREATE INDEX messages_by_visibility ON messages (visible_at, id);
CREATE TABLE dead_letters (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id      INTEGER NOT NULL,
    body            TEXT NOT NULL,
    reason          TEXT NOT NULL,
    receive_count   INTEGER NOT NULL,
    sent_at         INTEGER NOT NULL,
    dead_at         INTEGER NOT NULL
);
"#;

/// How the local queue behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueOptions {
    /// How long a received message stays hidden; longer than the longest load.
    pub visibility: Duration,
    /// Receives after which the queue dead-letters a message itself; 0 for no limit.
    pub max_receives: u32,
    pub durability: Durability,
    /// How often a long poll looks again for messages sent by another process (sends from this
    /// process wake it at once).
    pub poll_interval: Duration,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            visibility: Duration::from_secs(120),
            max_receives: 10,
            durability: Durability::default(),
            poll_interval: Duration::from_millis(100),
        }
    }
}

/// How many messages the queue holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Ready to be received (`ApproximateNumberOfMessagesVisible`).
    pub visible: u64,
    /// Received and not yet acked, or delayed (`ApproximateNumberOfMessagesNotVisible`).
    pub in_flight: u64,
    /// In the dead-letter queue.
    pub dead: u64,
}

/// A message in the dead-letter queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its place in the dead-letter queue, for [`SqliteQueue::redrive`].
    pub id: u64,
    /// The id it had in the queue (and gets back when redriven).
    pub message_id: String,
    pub body: String,
    /// The reason's stable code (`checksum_mismatch`, `redrive`, …).
    pub code: String,
    pub reason: String,
    pub receive_count: u32,
    pub sent_at: Timestamp,
    pub dead_at: Timestamp,
}

/// The local queue and its dead-letter queue, in one SQLite file. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SqliteQueue {
    db: Db,
    visibility: Duration,
    max_receives: u32,
    poll_interval: Duration,
    /// Wakes long polls of this process when a message may have become visible.
    wake: Arc<Notify>,
}

impl SqliteQueue {
    pub async fn open(path: impl AsRef<Path>, options: QueueOptions) -> Result<Self, PortError> {
        let db = Db::open(OpenSpec {
            service: SERVICE,
            path: path.as_ref(),
            durability: options.durability,
            page_size: None,
            readers: 2,
            writer_cache_kib: 0,
            migrations: MIGRATIONS,
        })
        .await?;
        Ok(SqliteQueue {
            db,
            visibility: options.visibility,
            max_receives: options.max_receives,
            poll_interval: options.poll_interval.max(Duration::from_millis(1)),
            wake: Arc::new(Notify::new()),
        })
    }

    /// Sends a message, visible at once; returns its id once it is committed.
    pub async fn send(&self, body: impl Into<String>) -> Result<String, PortError> {
        let now = now().as_micros();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO messages (body, sent_at, visible_at) VALUES (?1, ?2, ?2) RETURNING id",
        )
        .bind(body.into())
        .bind(now)
        .fetch_one(&self.db.writer)
        .await
        .map_err(|e| db_error(SERVICE, "cannot send a message", e))?;
        self.wake.notify_waiters();
        Ok(id.to_string())
    }

    /// Messages visible, in flight and dead.
    pub async fn depth(&self) -> Result<QueueDepth, PortError> {
        let row = sqlx::query(
            "SELECT \
               (SELECT count(*) FROM messages WHERE visible_at <= ?1) AS visible, \
               (SELECT count(*) FROM messages WHERE visible_at > ?1) AS in_flight, \
               (SELECT count(*) FROM dead_letters) AS dead",
        )
        .bind(now().as_micros())
        .fetch_one(&self.db.reader)
        .await
        .map_err(|e| db_error(SERVICE, "cannot count the messages", e))?;
        Ok(QueueDepth {
            visible: row.get::<i64, _>("visible") as u64,
            in_flight: row.get::<i64, _>("in_flight") as u64,
            dead: row.get::<i64, _>("dead") as u64,
        })
    }

    /// Up to `limit` dead letters, oldest first.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, PortError> {
        let rows = sqlx::query(
            "SELECT id, message_id, body, code, reason, receive_count, sent_at, dead_at FROM dead_letters \
             ORDER BY id LIMIT ?1",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.db.reader)
        .await
        .map_err(|e| db_error(SERVICE, "cannot list the dead letters", e))?;
        Ok(rows
            .into_iter()
            .map(|row| DeadLetter {
                id: row.get::<i64, _>("id") as u64,
                message_id: row.get::<i64, _>("message_id").to_string(),
                body: row.get("body"),
                code: row.get("code"),
                reason: row.get("reason"),
                receive_count: u32::try_from(row.get::<i64, _>("receive_count")).unwrap_or(u32::MAX),
                sent_at: Timestamp::from_micros(row.get("sent_at")),
                dead_at: Timestamp::from_micros(row.get("dead_at")),
            })
            .collect())
    }

    /// Moves the given dead letters back to the queue, visible at once with a receive count of
    /// zero and their old message id; returns how many were moved (unknown ids are skipped).
    pub async fn redrive(&self, dead_letter_ids: &[u64]) -> Result<u64, PortError> {
        let context = "cannot redrive dead letters";
        let mut tx = self.db.begin_write(SERVICE).await?;
        let mut moved = 0;
        for id in dead_letter_ids {
            let Ok(id) = i64::try_from(*id) else { continue };
            moved += sqlx::query(
                "INSERT INTO messages (id, body, sent_at, visible_at) \
                 SELECT message_id, body, sent_at, ?2 FROM dead_letters WHERE id = ?1",
            )
            .bind(id)
            .bind(now().as_micros())
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(SERVICE, context, e))?
            .rows_affected();
            sqlx::query("DELETE FROM dead_letters WHERE id = ?1")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error(SERVICE, context, e))?;
        }
        tx.commit().await.map_err(|e| db_error(SERVICE, context, e))?;
        self.wake.notify_waiters();
        Ok(moved)
    }

    /// Moves every dead letter back to the queue (see [`redrive`](Self::redrive)).
    pub async fn redrive_all(&self) -> Result<u64, PortError> {
        let context = "cannot redrive dead letters";
        let mut tx = self.db.begin_write(SERVICE).await?;
        let moved = sqlx::query(
            "INSERT INTO messages (id, body, sent_at, visible_at) \
             SELECT message_id, body, sent_at, ?1 FROM dead_letters ORDER BY id",
        )
        .bind(now().as_micros())
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(SERVICE, context, e))?
        .rows_affected();
        sqlx::query("DELETE FROM dead_letters")
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(SERVICE, context, e))?;
        tx.commit().await.map_err(|e| db_error(SERVICE, context, e))?;
        self.wake.notify_waiters();
        Ok(moved)
    }

    /// Closes the connections.
    pub async fn close(&self) {
        self.db.close().await;
    }

    /// One receive attempt, without waiting: dead-letters what has been received too often,
    /// then hides and hands out up to `max` visible messages, in one transaction.
    async fn try_receive(&self, max: usize) -> Result<Vec<Message>, PortError> {
        let context = "cannot receive";
        let err = |e| db_error(SERVICE, context, e);
        let now = now().as_micros();
        let mut tx = self.db.begin_write(SERVICE).await?;
        if self.max_receives > 0 {
            let max_receives = i64::from(self.max_receives);
            let moved = sqlx::query(
                "INSERT INTO dead_letters (message_id, body, code, reason, receive_count, sent_at, dead_at) \
                 SELECT id, body, ?4, ?3, receive_count, sent_at, ?1 FROM messages \
                 WHERE visible_at <= ?1 AND receive_count >= ?2 ORDER BY id",
            )
            .bind(now)
            .bind(max_receives)
            .bind(MAX_RECEIVES_EXCEEDED)
            .bind(REDRIVE_CODE)
            .execute(&mut *tx)
            .await
            .map_err(err)?
            .rows_affected();
            if moved > 0 {
                sqlx::query("DELETE FROM messages WHERE visible_at <= ?1 AND receive_count >= ?2")
                    .bind(now)
                    .bind(max_receives)
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
                tracing::warn!(messages = moved, "dead-lettered messages received too often");
            }
        }
        let hidden_until = now.saturating_add(duration_micros(self.visibility));
        let rows = sqlx::query(
            "UPDATE messages SET receive_count = receive_count + 1, visible_at = ?2, \
               receipt = id || '-' || (receive_count + 1) || '-' || lower(hex(randomblob(8))), \
               first_received_at = coalesce(first_received_at, ?1) \
             WHERE id IN (SELECT id FROM messages WHERE visible_at <= ?1 ORDER BY visible_at, id LIMIT ?3) \
             RETURNING id, body, receive_count, receipt",
        )
        .bind(now)
        .bind(hidden_until)
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await
        .map_err(err)?;
        tx.commit().await.map_err(err)?;
        let mut messages: Vec<(i64, Message)> = rows
            .into_iter()
            .map(|row| {
                let id: i64 = row.get("id");
                let message = Message {
                    id: id.to_string(),
                    receipt: row.get("receipt"),
                    body: row.get("body"),
                    receive_count: u32::try_from(row.get::<i64, _>("receive_count")).unwrap_or(u32::MAX),
                };
                (id, message)
            })
            .collect();
        messages.sort_by_key(|(id, _)| *id);
        Ok(messages.into_iter().map(|(_, m)| m).collect())
    }

    /// When the next hidden message becomes visible, if any.
    async fn next_visible(&self) -> Result<Option<Timestamp>, PortError> {
        let at: Option<i64> = sqlx::query_scalar("SELECT min(visible_at) FROM messages")
            .fetch_one(&self.db.reader)
            .await
            .map_err(|e| db_error(SERVICE, "cannot receive", e))?;
        Ok(at.map(Timestamp::from_micros))
    }
}

/// The message's id as stored, or the error a stale or foreign receipt gets.
fn message_id(message: &Message) -> Result<i64, PortError> {
    message.id.parse().map_err(|_| stale(message))
}

fn stale(message: &Message) -> PortError {
    PortError::conflict(
        SERVICE,
        format!(
            "receipt {} of message {} is stale (the message was received again, or is gone)",
            message.receipt, message.id
        ),
    )
}

impl Queue for SqliteQueue {
    fn visibility_timeout(&self) -> Duration {
        self.visibility
    }

    /// Returns as soon as at least one message is visible, or with nothing after `wait`.
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Message>, PortError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before the attempt, so a send in between still wakes this poll.
            let woken = self.wake.notified();
            let got = self.try_receive(max).await?;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !got.is_empty() || left.is_zero() {
                return Ok(got);
            }
            let mut nap = left.min(self.poll_interval);
            if let Some(at) = self.next_visible().await? {
                nap = nap.min(at.saturating_since(now()));
            }
            tokio::select! {
                () = woken => {}
                () = tokio::time::sleep(nap) => {}
            }
        }
    }

    async fn ack(&self, message: &Message) -> Result<(), PortError> {
        let deleted = sqlx::query("DELETE FROM messages WHERE id = ?1 AND receipt = ?2")
            .bind(message_id(message)?)
            .bind(&message.receipt)
            .execute(&self.db.writer)
            .await
            .map_err(|e| db_error(SERVICE, "cannot ack", e))?
            .rows_affected();
        if deleted == 0 {
            return Err(stale(message));
        }
        Ok(())
    }

    /// One write transaction (one fsync) for all of them.
    async fn ack_all(&self, messages: &[&Message]) -> Vec<Result<(), PortError>> {
        let context = "cannot ack";
        let all_failed = |e: PortError| messages.iter().map(|_| Err(e.clone())).collect();
        let mut tx = match self.db.begin_write(SERVICE).await {
            Ok(tx) => tx,
            Err(e) => return all_failed(e),
        };
        let mut results = Vec::with_capacity(messages.len());
        for message in messages {
            let id = match message_id(message) {
                Ok(id) => id,
                Err(e) => {
                    results.push(Err(e));
                    continue;
                }
            };
            let deleted = sqlx::query("DELETE FROM messages WHERE id = ?1 AND receipt = ?2")
                .bind(id)
                .bind(&message.receipt)
                .execute(&mut *tx)
                .await;
            match deleted {
                Ok(done) if done.rows_affected() == 0 => results.push(Err(stale(message))),
                Ok(_) => results.push(Ok(())),
                Err(e) => return all_failed(db_error(SERVICE, context, e)),
            }
        }
        if let Err(e) = tx.commit().await {
            return all_failed(db_error(SERVICE, context, e));
        }
        results
    }

    async fn set_visibility(&self, message: &Message, delay: Duration) -> Result<(), PortError> {
        let visible_at = now().saturating_add(delay).as_micros();
        let updated = sqlx::query("UPDATE messages SET visible_at = ?3 WHERE id = ?1 AND receipt = ?2")
            .bind(message_id(message)?)
            .bind(&message.receipt)
            .bind(visible_at)
            .execute(&self.db.writer)
            .await
            .map_err(|e| db_error(SERVICE, "cannot change the visibility", e))?
            .rows_affected();
        if updated == 0 {
            return Err(stale(message));
        }
        if delay.is_zero() {
            self.wake.notify_waiters();
        }
        Ok(())
    }

    async fn dead_letter(&self, message: &Message, note: DeadLetterNote<'_>) -> Result<(), PortError> {
        let context = "cannot dead-letter";
        let id = message_id(message)?;
        let mut tx = self.db.begin_write(SERVICE).await?;
        let moved = sqlx::query(
            "INSERT INTO dead_letters (message_id, body, code, reason, receive_count, sent_at, dead_at) \
             SELECT id, body, ?5, ?3, receive_count, sent_at, ?4 FROM messages WHERE id = ?1 AND receipt = ?2",
        )
        .bind(id)
        .bind(&message.receipt)
        .bind(note.reason)
        .bind(now().as_micros())
        .bind(note.code)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(SERVICE, context, e))?
        .rows_affected();
        if moved == 0 {
            return Err(stale(message));
        }
        sqlx::query("DELETE FROM messages WHERE id = ?1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(SERVICE, context, e))?;
        tx.commit().await.map_err(|e| db_error(SERVICE, context, e))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use microbatch_core::ports::ErrorKind;

    async fn open(dir: &Path, visibility: Duration, max_receives: u32) -> SqliteQueue {
        let options = QueueOptions {
            visibility,
            max_receives,
            ..QueueOptions::default()
        };
        SqliteQueue::open(dir.join("queue.db"), options).await.unwrap()
    }

    const NO_WAIT: Duration = Duration::ZERO;

    fn note(reason: &str) -> DeadLetterNote<'_> {
        DeadLetterNote {
            code: "test_code",
            reason,
        }
    }

    #[tokio::test]
    async fn ack_all_deletes_together_and_names_each_stale_receipt() {
        let dir = tempfile::tempdir().unwrap();
        let q = open(dir.path(), Duration::from_secs(60), 0).await;
        for body in ["a", "b", "c"] {
            q.send(body).await.unwrap();
        }
        let got = q.receive(10, NO_WAIT).await.unwrap();
        assert_eq!(got.len(), 3);
        let mut stale = got[1].clone();
        stale.receipt = "r-old".into();
        let mut foreign = got[2].clone();
        foreign.id = "not-a-number".into();
        let results = q.ack_all(&[&got[0], &stale, &foreign, &got[2]]).await;
        assert_eq!(results.len(), 4);
        assert!(results[0].is_ok() && results[3].is_ok(), "{results:?}");
        let e = results[1].as_ref().unwrap_err();
        assert!(
            e.kind == ErrorKind::Conflict && e.message.contains("stale"),
            "{e}"
        );
        assert!(results[2].is_err());
        assert_eq!(
            q.depth().await.unwrap(),
            QueueDepth {
                visible: 0,
                in_flight: 1,
                dead: 0
            },
            "only the message behind the stale receipt is left"
        );
        assert_eq!(q.ack_all(&[]).await, Vec::<Result<(), PortError>>::new());
    }

    #[tokio::test]
    async fn visibility_redelivery_and_stale_receipts() {
        let dir = tempfile::tempdir().unwrap();
        let q = open(dir.path(), Duration::from_millis(200), 0).await;
        let id = q.send("hello").await.unwrap();
        let first = q.receive(10, NO_WAIT).await.unwrap();
        assert_eq!(first.len(), 1);
        let m1 = &first[0];
        assert_eq!(
            (m1.id.as_str(), m1.body.as_str(), m1.receive_count),
            (id.as_str(), "hello", 1)
        );
        assert!(
            q.receive(10, NO_WAIT).await.unwrap().is_empty(),
            "hidden while in flight"
        );
        assert_eq!(
            q.depth().await.unwrap(),
            QueueDepth {
                visible: 0,
                in_flight: 1,
                dead: 0
            }
        );

        // Not acked in time: it comes back, counted, with a new receipt.
        let second = q.receive(10, Duration::from_secs(5)).await.unwrap();
        let m2 = &second[0];
        assert_eq!((m2.id.as_str(), m2.receive_count), (id.as_str(), 2));
        assert_ne!(m2.receipt, m1.receipt);

        // The old receipt can do nothing any more.
        let err = q.ack(m1).await.unwrap_err();
        assert!(
            err.kind == ErrorKind::Conflict && err.message.contains("stale"),
            "{err}"
        );
        assert!(q.set_visibility(m1, NO_WAIT).await.is_err());
        assert!(q.dead_letter(m1, note("x")).await.is_err());
        let mut foreign = m2.clone();
        foreign.id = "not-a-number".into();
        assert!(q.ack(&foreign).await.is_err());

        q.ack(m2).await.unwrap();
        assert!(q.ack(m2).await.is_err(), "acked already");
        assert_eq!(q.depth().await.unwrap(), QueueDepth::default());
    }

    #[tokio::test]
    async fn set_visibility_delays_the_message() {
        let dir = tempfile::tempdir().unwrap();
        let q = open(dir.path(), Duration::from_secs(60), 0).await;
        q.send("a").await.unwrap();
        let m = q.receive(1, NO_WAIT).await.unwrap().remove(0);
        q.set_visibility(&m, Duration::from_millis(150)).await.unwrap();
        assert!(q.receive(1, NO_WAIT).await.unwrap().is_empty());
        let started = Instant::now();
        let again = q.receive(1, Duration::from_secs(5)).await.unwrap().remove(0);
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "woken when it became visible"
        );
        assert_eq!(again.receive_count, 2);
        // Zero delay: visible at once.
        q.set_visibility(&again, NO_WAIT).await.unwrap();
        assert_eq!(q.receive(1, NO_WAIT).await.unwrap()[0].receive_count, 3);
    }

    #[tokio::test]
    async fn dead_letters_keep_their_reason_and_can_be_redriven() {
        let dir = tempfile::tempdir().unwrap();
        let q = open(dir.path(), Duration::from_secs(60), 0).await;
        for body in ["a", "b", "c"] {
            q.send(body).await.unwrap();
        }
        let got = q.receive(10, NO_WAIT).await.unwrap();
        let bodies: Vec<&str> = got.iter().map(|m| m.body.as_str()).collect();
        assert_eq!(bodies, ["a", "b", "c"], "oldest first");
        let before = now();
        q.dead_letter(&got[0], note("checksum mismatch")).await.unwrap();
        q.dead_letter(&got[2], note("no such table")).await.unwrap();
        assert!(q.dead_letter(&got[0], note("again")).await.is_err());

        let dead = q.dead_letters(10).await.unwrap();
        assert_eq!(dead.len(), 2);
        assert_eq!(
            (
                dead[0].message_id.as_str(),
                dead[0].body.as_str(),
                dead[0].reason.as_str()
            ),
            (got[0].id.as_str(), "a", "checksum mismatch")
        );
        assert_eq!(dead[0].code, "test_code");
        assert_eq!(dead[0].receive_count, 1);
        assert!(dead[0].dead_at >= before && dead[0].sent_at <= dead[0].dead_at);
        assert_eq!(q.dead_letters(1).await.unwrap().len(), 1);
        assert_eq!(q.depth().await.unwrap().dead, 2);

        assert_eq!(q.redrive(&[dead[1].id, 999]).await.unwrap(), 1);
        let back = q.receive(10, NO_WAIT).await.unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(
            (back[0].id.as_str(), back[0].body.as_str()),
            (got[2].id.as_str(), "c")
        );
        assert_eq!(
            back[0].receive_count, 1,
            "a redriven message starts counting again"
        );
        assert_eq!(q.redrive_all().await.unwrap(), 1);
        assert_eq!(q.receive(10, NO_WAIT).await.unwrap()[0].body, "a");
        assert_eq!(q.depth().await.unwrap().dead, 0);
    }

    /// A queue file written before dead letters had codes opens, and its dead letters read back
    /// with the code `unknown`.
    #[tokio::test]
    async fn a_queue_of_the_first_schema_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.db");
        let db = Db::open(OpenSpec {
            service: SERVICE,
            path: &path,
            durability: Durability::PowerLoss,
            page_size: None,
            readers: 1,
            writer_cache_kib: 0,
            migrations: &[SCHEMA_V1],
        })
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO dead_letters (message_id, body, reason, receive_count, sent_at, dead_at) \
             VALUES (1, 'old', 'from before', 3, 0, 0)",
        )
        .execute(&db.writer)
        .await
        .unwrap();
        db.close().await;
        let q = SqliteQueue::open(&path, QueueOptions::default()).await.unwrap();
        let dead = q.dead_letters(10).await.unwrap();
        assert_eq!(
            (dead[0].code.as_str(), dead[0].reason.as_str()),
            ("unknown", "from before")
        );
    }

    #[tokio::test]
    async fn messages_received_too_often_go_to_the_dead_letter_queue() {
        let dir = tempfile::tempdir().unwrap();
        let q = open(dir.path(), Duration::from_millis(1), 2).await;
        q.send("poison").await.unwrap();
        for attempt in 1..=2 {
            let got = q.receive(1, Duration::from_secs(1)).await.unwrap();
            assert_eq!((got[0].body.as_str(), got[0].receive_count), ("poison", attempt));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        q.send("fine").await.unwrap();
        // The third receive moves it instead of delivering it.
        let got = q.receive(10, NO_WAIT).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body, "fine");
        let dead = q.dead_letters(10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(
            (
                dead[0].body.as_str(),
                dead[0].code.as_str(),
                dead[0].reason.as_str()
            ),
            ("poison", REDRIVE_CODE, MAX_RECEIVES_EXCEEDED)
        );
        assert_eq!(dead[0].receive_count, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn long_polls_return_as_soon_as_a_message_arrives() {
        let dir = tempfile::tempdir().unwrap();
        let q = open(dir.path(), Duration::from_secs(60), 0).await;
        let started = Instant::now();
        assert!(
            q.receive(10, Duration::from_millis(150))
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            started.elapsed() >= Duration::from_millis(150),
            "waited the whole wait"
        );

        let poller = {
            let q = q.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let got = q.receive(10, Duration::from_secs(20)).await.unwrap();
                (got, started.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        q.send("wake up").await.unwrap();
        let (got, waited) = poller.await.unwrap();
        assert_eq!(got[0].body, "wake up");
        assert!(waited < Duration::from_secs(10), "{waited:?}");

        // A send from another process (another handle on the file) is found by polling.
        let other = open(dir.path(), Duration::from_secs(60), 0).await;
        let poller = {
            let q = q.clone();
            tokio::spawn(async move { q.receive(10, Duration::from_secs(20)).await.unwrap() })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        other.send("from afar").await.unwrap();
        assert_eq!(poller.await.unwrap()[0].body, "from afar");
        assert!(q.receive(0, Duration::from_secs(5)).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn messages_and_counts_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let q = open(dir.path(), Duration::from_millis(300), 0).await;
        q.send("kept").await.unwrap();
        q.send("dead").await.unwrap();
        let got = q.receive(2, NO_WAIT).await.unwrap();
        q.dead_letter(&got[1], note("bad")).await.unwrap();
        drop(q);

        let q = open(dir.path(), Duration::from_millis(300), 0).await;
        assert!(q.receive(1, NO_WAIT).await.unwrap().is_empty(), "still in flight");
        let again = q.receive(1, Duration::from_secs(5)).await.unwrap().remove(0);
        assert_eq!((again.body.as_str(), again.receive_count), ("kept", 2));
        assert_eq!(q.dead_letters(10).await.unwrap()[0].reason, "bad");
        // The receipt handed out before the restart is stale; the new one works.
        assert!(q.ack(&got[0]).await.is_err());
        q.ack(&again).await.unwrap();
        q.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_receivers_never_share_a_message() {
        let dir = tempfile::tempdir().unwrap();
        let q = open(dir.path(), Duration::from_secs(60), 0).await;
        for i in 0..200 {
            q.send(format!("m{i}")).await.unwrap();
        }
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let q = q.clone();
                tokio::spawn(async move {
                    let mut bodies = Vec::new();
                    loop {
                        let got = q.receive(7, NO_WAIT).await.unwrap();
                        if got.is_empty() {
                            return bodies;
                        }
                        for m in got {
                            q.ack(&m).await.unwrap();
                            bodies.push(m.body);
                        }
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for w in workers {
            all.extend(w.await.unwrap());
        }
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 200);
    }
}
