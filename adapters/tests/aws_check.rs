//! `microbatch check` against the emulator: every configured AWS resource probed, and what is
//! missing or misconfigured named.

mod support;

use std::process::Output;

use support::{Resources, aws, microbatch_command};

fn check(env: &[(String, String)]) -> Output {
    let data = tempfile::tempdir().unwrap();
    let mut env = env.to_vec();
    env.push(("MICROBATCH_WAREHOUSE_URL".into(), support::database_url()));
    env.push(("MICROBATCH_WAREHOUSE__SCHEMA".into(), "public".into()));
    microbatch_command(&["check"], data.path(), &env)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap()
}

fn with(env: &[(String, String)], key: &str, value: &str) -> Vec<(String, String)> {
    let mut env: Vec<_> = env.iter().filter(|(k, _)| k != key).cloned().collect();
    env.push((key.into(), value.into()));
    env
}

fn problem(out: &Output, port: &str) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.starts_with(&format!("{port}: PROBLEM")))
        .unwrap_or_else(|| panic!("no problem reported for {port}:\n{text}"))
        .to_owned()
}

#[tokio::test]
async fn check_probes_every_aws_resource_and_names_what_is_wrong() {
    let aws = aws().await;
    let r = Resources::create(&aws, 2, 30, 5).await;
    let env = r.env();

    let out = check(&env);
    let text = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "aws: region us-east-1",
        &format!("stream: kinesis stream {:?}: ACTIVE, 2 open shard(s)", r.stream),
        &format!("store: s3 bucket {:?}: reachable", r.bucket),
        "dead letters to arn:aws:sqs:",
        &format!("leases: dynamodb lease table {:?}", r.table),
    ] {
        assert!(text.contains(expected), "{expected:?} missing from:\n{text}");
    }
    // The warehouse may differ from the catalog (nothing migrated): only that may be a problem.
    assert!(
        !text.contains("stream: PROBLEM") && !text.contains("queue: PROBLEM"),
        "{text}"
    );

    let out = check(&with(&env, "MICROBATCH_STREAM_NAME", "no-such-stream"));
    assert!(!out.status.success());
    let line = problem(&out, "stream");
    assert!(
        line.contains("no-such-stream") && line.contains("ResourceNotFound"),
        "{line}"
    );

    let out = check(&with(&env, "MICROBATCH_QUEUE__VISIBILITY_SECS", "60"));
    let line = problem(&out, "queue");
    assert!(
        line.contains("VisibilityTimeout is 30 s") && line.contains("60 s"),
        "{line}"
    );

    let out = check(&with(&env, "MICROBATCH_QUEUE__MAX_RECEIVES", "9"));
    let line = problem(&out, "queue");
    assert!(line.contains("maxReceiveCount is 5"), "{line}");

    let out = check(&with(&env, "MICROBATCH_DLQ_URL", &r.queue_url));
    let line = problem(&out, "queue");
    assert!(line.contains("RedrivePolicy sends to"), "{line}");

    let out = check(&with(&env, "MICROBATCH_BUCKET", "no-such-bucket"));
    let line = problem(&out, "store");
    assert!(line.contains("no-such-bucket"), "{line}");

    let out = check(&with(&env, "MICROBATCH_LEASE_TABLE", "no-such-table"));
    let line = problem(&out, "leases");
    assert!(
        line.contains("no-such-table") && line.contains("ResourceNotFound"),
        "{line}"
    );

    // No region at all: refused at once, naming the variable.
    let no_region: Vec<_> = env.iter().filter(|(k, _)| k != "AWS_REGION").cloned().collect();
    let out = check(&no_region);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AWS_REGION"), "{err}");
}

/// A Redshift warehouse by URL: the stack opens it with the S3 store; `check --warehouse` runs
/// its dry run and names the step that failed. Here the wire transport reaches PostgreSQL (same
/// protocol), which lists the schema's tables but has no COPY from S3: the dry run's COPY is
/// the problem, and it says what to look at.
#[tokio::test]
async fn check_dry_runs_a_redshift_warehouse_and_names_the_failing_step() {
    let aws = aws().await;
    let r = Resources::create(&aws, 1, 30, 5).await;
    let pg = support::database_url();
    let wire = pg
        .replacen("postgres://", "redshift://", 1)
        .replacen("postgresql://", "redshift://", 1);
    let env = with(&r.env(), "MICROBATCH_WAREHOUSE_URL", &wire);
    let env = with(
        &env,
        "MICROBATCH_REDSHIFT_IAM_ROLE",
        "arn:aws:iam::123456789012:role/copy",
    );
    let data = tempfile::tempdir().unwrap();
    let out = microbatch_command(&["check", "--warehouse"], data.path(), &env)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let line = problem(&out, "warehouse dry run");
    assert!(
        line.contains("COPY from the bucket (can the cluster assume the COPY role"),
        "{line}"
    );
    // The COPY manifest went to the bucket, next to where batches go.
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(aws.sdk())
            .force_path_style(true)
            .build(),
    );
    let listed = s3
        .list_objects_v2()
        .bucket(&r.bucket)
        .prefix("copy-manifests/check/")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.contents().len(), 2, "{listed:?}");

    // Without the role, the warehouse is refused by name.
    let env = with(&env, "MICROBATCH_REDSHIFT_IAM_ROLE", "");
    let out = microbatch_command(&["check"], data.path(), &env)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let line = problem(&out, "warehouse");
    assert!(line.contains("MICROBATCH_REDSHIFT_IAM_ROLE"), "{line}");
}
