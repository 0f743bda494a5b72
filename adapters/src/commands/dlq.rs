//! `microbatch dlq list` and `microbatch dlq replay`: what is in the dead-letter queue and why,
//! and moving it back to the load queue once the cause is fixed — the same for the local queue
//! and SQS.
//!
//! Replay is idempotent: the load manifest makes a second load of a batch a no-op, so replaying a
//! message that was loaded meanwhile (or one that the send-then-delete of SQS dead-lettering left
//! in both queues) changes nothing.

use anyhow::bail;
use microbatch_core::import::parse_message;
use microbatch_core::time::Timestamp;

use super::println_out;
use crate::config::Config;
use crate::runtime::SystemClock;
use crate::stack::{LoadQueue, Stack};

/// Most dead letters one listing shows.
const LIST_LIMIT: usize = 1000;

/// One dead letter, whichever queue held it.
struct Letter {
    code: String,
    reason: String,
    body: String,
    receive_count: u32,
    sent_at: Timestamp,
}

/// The batch keys a message announces, or why it announces none.
fn keys_of(body: &str) -> Vec<String> {
    match parse_message(body) {
        Ok(n) if n.objects.is_empty() => vec!["(no batch: an ignored notification)".into()],
        Ok(n) => n.objects.into_iter().map(|o| o.key).collect(),
        Err(e) => vec![format!("(not a notification: {e})")],
    }
}

/// A [`Letter`] of either queue's dead letters, which carry the same fields.
macro_rules! letter {
    ($d:expr) => {{
        let d = $d;
        Letter {
            code: d.code,
            reason: d.reason,
            body: d.body,
            receive_count: d.receive_count,
            sent_at: d.sent_at,
        }
    }};
}

async fn letters(queue: &LoadQueue) -> anyhow::Result<Vec<Letter>> {
    Ok(match queue {
        LoadQueue::Local(q) => q
            .dead_letters(LIST_LIMIT)
            .await?
            .into_iter()
            .map(|d| letter!(d))
            .collect(),
        LoadQueue::Aws(q) => q
            .dead_letters(LIST_LIMIT)
            .await?
            .into_iter()
            .map(|d| letter!(d))
            .collect(),
    })
}

fn age(since: Timestamp) -> String {
    use microbatch_core::ports::Clock as _;
    let secs = SystemClock.now().saturating_since(since).as_secs();
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// Prints every dead letter: age, receive count, reason code, batch keys, reason.
pub async fn dlq_list(config: Config) -> anyhow::Result<()> {
    let stack = Stack::open(&config).await?;
    let letters = letters(&stack.queue).await?;
    println_out(&format!("{} dead letter(s)", letters.len()));
    for l in &letters {
        println_out(&format!(
            "{:>5} ago  received {:>3}x  {:<24} {}\n      {}",
            age(l.sent_at),
            l.receive_count,
            l.code,
            keys_of(&l.body).join(" "),
            l.reason
        ));
    }
    Ok(())
}

/// Moves dead letters back to the load queue: all of them, or those announcing one of `keys`.
pub async fn dlq_replay(config: Config, all: bool, keys: Vec<String>) -> anyhow::Result<()> {
    if all != keys.is_empty() {
        bail!("say which dead letters to replay: --all, or --key <batch key> (repeatable)");
    }
    let chosen = |body: &str| all || keys_of(body).iter().any(|k| keys.contains(k));
    let stack = Stack::open(&config).await?;
    let moved = match &stack.queue {
        LoadQueue::Local(q) => {
            let ids: Vec<u64> = q
                .dead_letters(usize::MAX)
                .await?
                .into_iter()
                .filter(|d| chosen(&d.body))
                .map(|d| d.id)
                .collect();
            q.redrive(&ids).await?
        }
        LoadQueue::Aws(q) => q.replay(|d| chosen(&d.body)).await?,
    };
    println_out(&format!("replayed {moved} dead letter(s) to the load queue"));
    if moved == 0 && !all {
        bail!("no dead letter announces {}", keys.join(" or "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn replay_by_key_moves_back_only_that_batch_on_the_local_queue() {
        use microbatch_core::ports::{DeadLetterNote, Queue as _};
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let stack = Stack::open(&config).await.unwrap();
        let LoadQueue::Local(q) = &stack.queue else {
            panic!("the default queue is local")
        };
        let body = |key: &str| {
            microbatch_core::import::object_created_message("b", key, 1, 1, Timestamp::from_millis(0))
        };
        let (a, b) = (
            "loads/a/2026/12/02/10/s-1-2.csv",
            "loads/b/2026/12/02/10/s-1-2.csv",
        );
        for key in [a, b] {
            q.send(body(key)).await.unwrap();
        }
        let note = DeadLetterNote {
            code: "missing_schema",
            reason: "no schema object",
        };
        for m in q.receive(10, std::time::Duration::from_secs(1)).await.unwrap() {
            q.dead_letter(&m, note).await.unwrap();
        }
        assert_eq!(letters(&stack.queue).await.unwrap().len(), 2);
        let err = dlq_replay(config.clone(), false, vec![]).await.unwrap_err();
        assert!(err.to_string().contains("--all, or --key"), "{err}");
        dlq_replay(config.clone(), false, vec![a.into()]).await.unwrap();
        let left = letters(&stack.queue).await.unwrap();
        assert_eq!(keys_of(&left[0].body), [b]);
        assert_eq!(left.len(), 1);
        let back = q.receive(10, std::time::Duration::from_secs(1)).await.unwrap();
        assert_eq!(
            back.iter().map(|m| keys_of(&m.body)).collect::<Vec<_>>(),
            [vec![a.to_owned()]]
        );
        assert!(
            dlq_replay(config, false, vec!["loads/none".into()])
                .await
                .is_err(),
            "nothing named"
        );
    }

    #[test]
    fn letters_are_shown_by_the_keys_they_announce() {
        let body = microbatch_core::import::object_created_message(
            "b",
            "loads/orders/2026/12/02/10/shardId-000000000000-1-5.csv",
            10,
            10,
            Timestamp::from_millis(0),
        );
        assert_eq!(
            keys_of(&body),
            ["loads/orders/2026/12/02/10/shardId-000000000000-1-5.csv"]
        );
        assert!(keys_of("nope")[0].starts_with("(not a notification"));
    }
}
