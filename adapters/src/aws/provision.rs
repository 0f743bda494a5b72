//! The resources `infra/` makes on AWS, made directly on an emulator: a stream, a bucket that
//! announces `loads/` to a queue with a dead-letter queue, and a lease table. The integration
//! tests and the loadtest's `--target aws` start the `microbatch` binary on them; a deployment
//! never calls this (Terraform owns its resources).

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use aws_sdk_s3::types::{
    Delete, Event, FilterRule, FilterRuleName, NotificationConfiguration, NotificationConfigurationFilter,
    ObjectIdentifier, QueueConfiguration, S3KeyFilter,
};
use aws_sdk_sqs::types::QueueAttributeName;

use super::Aws;

/// The region the emulated resources live in.
pub const REGION: &str = "us-east-1";

/// The environment a `microbatch` process needs to reach an emulator at `endpoint`: what a
/// deployment's task gets from its role and region, plus the endpoint, and nothing from the
/// machine's own AWS profile.
pub fn emulator_env(endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_REGION", REGION),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_CONFIG_FILE", "/dev/null"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .to_vec()
}

/// An SDK configuration for a caller's own calls to the emulator at `endpoint` (creating
/// resources, inspecting them): the endpoint, [`REGION`], static keys.
pub async fn emulator_aws(endpoint: &str) -> Aws {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new(REGION))
        .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
            "testing", "testing", None, None, "emulator",
        ))
        .load()
        .await;
    Aws::from_sdk(sdk)
}

/// The resources of one pipeline, all named `name` (the queues `name` and `name-dlq`).
#[derive(Debug, Clone)]
pub struct Resources {
    pub stream: String,
    pub bucket: String,
    pub queue_url: String,
    pub dlq_url: String,
    pub table: String,
    pub visibility_secs: u32,
    pub max_receives: u32,
}

impl Resources {
    /// Everything of one pipeline, created on the emulator `aws` points at.
    pub async fn create(
        aws: &Aws,
        name: &str,
        shards: i32,
        visibility_secs: u32,
        max_receives: u32,
    ) -> anyhow::Result<Resources> {
        let (queue_url, dlq_url) = create_queues(aws, name, visibility_secs, max_receives).await?;
        create_stream(aws, name, shards).await?;
        create_bucket(aws, name, &queue_url).await?;
        create_lease_table(aws, name).await?;
        Ok(Resources {
            stream: name.to_owned(),
            bucket: name.to_owned(),
            queue_url,
            dlq_url,
            table: name.to_owned(),
            visibility_secs,
            max_receives,
        })
    }

    /// Deletes everything [`Resources::create`] made (the bucket's objects first): an emulator
    /// keeps every stream's records in memory, so a long session of runs would slow it down.
    pub async fn delete(&self, aws: &Aws) -> anyhow::Result<()> {
        aws.kinesis()
            .delete_stream()
            .stream_name(&self.stream)
            .enforce_consumer_deletion(true)
            .send()
            .await
            .with_context(|| format!("DeleteStream {}", self.stream))?;
        let s3 = aws.s3(true);
        let mut pages = s3.list_objects_v2().bucket(&self.bucket).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.with_context(|| format!("ListObjectsV2 {}", self.bucket))?;
            let keys: Vec<ObjectIdentifier> = page
                .contents()
                .iter()
                .filter_map(|o| o.key())
                .filter_map(|k| ObjectIdentifier::builder().key(k).build().ok())
                .collect();
            if keys.is_empty() {
                continue;
            }
            s3.delete_objects()
                .bucket(&self.bucket)
                .delete(Delete::builder().set_objects(Some(keys)).quiet(true).build()?)
                .send()
                .await
                .with_context(|| format!("DeleteObjects {}", self.bucket))?;
        }
        s3.delete_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .with_context(|| format!("DeleteBucket {}", self.bucket))?;
        for url in [&self.queue_url, &self.dlq_url] {
            aws.sqs()
                .delete_queue()
                .queue_url(url)
                .send()
                .await
                .with_context(|| format!("DeleteQueue {url}"))?;
        }
        aws.dynamodb()
            .delete_table()
            .table_name(&self.table)
            .send()
            .await
            .with_context(|| format!("DeleteTable {}", self.table))?;
        Ok(())
    }

    /// The configuration of a deployment on these resources (the variables
    /// `infra/modules/services` passes), without the emulator's own ([`emulator_env`]).
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            ("MICROBATCH_STREAM__KIND", "kinesis"),
            ("MICROBATCH_STREAM_NAME", self.stream.as_str()),
            ("MICROBATCH_STORE__KIND", "s3"),
            ("MICROBATCH_BUCKET", self.bucket.as_str()),
            ("MICROBATCH_STORE__PATH_STYLE", "true"),
            ("MICROBATCH_QUEUE__KIND", "sqs"),
            ("MICROBATCH_QUEUE_URL", self.queue_url.as_str()),
            ("MICROBATCH_DLQ_URL", self.dlq_url.as_str()),
            ("MICROBATCH_LEASES__KIND", "dynamodb"),
            ("MICROBATCH_LEASE_TABLE", self.table.as_str()),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .to_vec();
        env.push((
            "MICROBATCH_QUEUE__VISIBILITY_SECS".into(),
            self.visibility_secs.to_string(),
        ));
        env.push((
            "MICROBATCH_QUEUE__MAX_RECEIVES".into(),
            self.max_receives.to_string(),
        ));
        env
    }
}

/// A stream of `shards` shards, returned once it is `ACTIVE`.
pub async fn create_stream(aws: &Aws, name: &str, shards: i32) -> anyhow::Result<()> {
    let k = aws.kinesis();
    k.create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await
        .with_context(|| format!("CreateStream {name}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = k
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
            .with_context(|| format!("DescribeStreamSummary {name}"))?;
        let active = out
            .stream_description_summary()
            .is_some_and(|s| s.stream_status().as_str() == "ACTIVE");
        if active {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("stream {name} never became ACTIVE");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> anyhow::Result<String> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .with_context(|| format!("GetQueueAttributes {url}"))?;
    out.attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .with_context(|| format!("queue {url} has no QueueArn"))
}

/// The load queue `name` (redriving to `name-dlq` after `max_receives`) and its dead-letter
/// queue: their URLs.
pub async fn create_queues(
    aws: &Aws,
    name: &str,
    visibility_secs: u32,
    max_receives: u32,
) -> anyhow::Result<(String, String)> {
    let sqs = aws.sqs();
    let dlq_url = sqs
        .create_queue()
        .queue_name(format!("{name}-dlq"))
        .send()
        .await
        .with_context(|| format!("CreateQueue {name}-dlq"))?
        .queue_url()
        .context("CreateQueue answered no URL")?
        .to_owned();
    let dlq_arn = queue_arn(&sqs, &dlq_url).await?;
    let queue_url = sqs
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::VisibilityTimeout, visibility_secs.to_string())
        .attributes(
            QueueAttributeName::RedrivePolicy,
            format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"{max_receives}"}}"#),
        )
        .send()
        .await
        .with_context(|| format!("CreateQueue {name}"))?
        .queue_url()
        .context("CreateQueue answered no URL")?
        .to_owned();
    Ok((queue_url, dlq_url))
}

/// A bucket whose new objects under `loads/` are announced to the queue at `queue_url`.
pub async fn create_bucket(aws: &Aws, bucket: &str, queue_url: &str) -> anyhow::Result<()> {
    let s3 = aws.s3(true);
    s3.create_bucket()
        .bucket(bucket)
        .send()
        .await
        .with_context(|| format!("CreateBucket {bucket}"))?;
    let arn = queue_arn(&aws.sqs(), queue_url).await?;
    let prefix = FilterRule::builder()
        .name(FilterRuleName::Prefix)
        .value("loads/")
        .build();
    let config = NotificationConfiguration::builder()
        .queue_configurations(
            QueueConfiguration::builder()
                .queue_arn(arn)
                .events(Event::S3ObjectCreated)
                .filter(
                    NotificationConfigurationFilter::builder()
                        .key(S3KeyFilter::builder().filter_rules(prefix).build())
                        .build(),
                )
                .build()?,
        )
        .build();
    s3.put_bucket_notification_configuration()
        .bucket(bucket)
        .notification_configuration(config)
        .send()
        .await
        .with_context(|| format!("PutBucketNotificationConfiguration {bucket}"))?;
    Ok(())
}

/// A lease table with the KCL's key (`leaseKey`), billed per request.
pub async fn create_lease_table(aws: &Aws, table: &str) -> anyhow::Result<()> {
    aws.dynamodb()
        .create_table()
        .table_name(table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("leaseKey")
                .attribute_type(ScalarAttributeType::S)
                .build()?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("leaseKey")
                .key_type(KeyType::Hash)
                .build()?,
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .with_context(|| format!("CreateTable {table}"))?;
    Ok(())
}
