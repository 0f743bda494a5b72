//! Where a Redshift warehouse is, by URL (`[warehouse] url`, `MICROBATCH_WAREHOUSE_URL`):
//!
//! - `redshift://user:password@host:5439/db?sslmode=require` — the PostgreSQL wire protocol
//!   (TLS by `sslmode`, `verify-full` to check the certificate);
//! - `redshift-data://workgroup/<workgroup>/<database>[?secret_arn=<arn>]` — the Data API to a
//!   Serverless workgroup, as the task's IAM identity or with a Secrets Manager secret;
//! - `redshift-data://cluster/<cluster-id>/<database>?db_user=<user>` (or `?secret_arn=<arn>`)
//!   — the Data API to a provisioned cluster.

use microbatch_core::import::{WarehouseError, WarehouseErrorKind};

use super::data_api::DataApiTarget;

/// A parsed Redshift URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedshiftUrl {
    /// The wire protocol; the URL as given.
    Wire(String),
    DataApi {
        target: DataApiTarget,
        database: String,
    },
}

impl RedshiftUrl {
    /// `None` when the URL is not a Redshift one.
    pub fn parse(url: &str) -> Option<Result<Self, WarehouseError>> {
        let (scheme, rest) = url.split_once("://")?;
        match scheme.to_ascii_lowercase().as_str() {
            "redshift" => Some(Ok(RedshiftUrl::Wire(url.to_owned()))),
            "redshift-data" => Some(data_api(rest)),
            _ => None,
        }
    }
}

fn data_api(rest: &str) -> Result<RedshiftUrl, WarehouseError> {
    let bad = |why: &str| {
        WarehouseError::new(
            WarehouseErrorKind::Other,
            format!(
                "warehouse URL redshift-data://{rest}: {why} (expected redshift-data://workgroup/<name>/<database> \
                 or redshift-data://cluster/<id>/<database>?db_user=<user>)"
            ),
        )
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut params = std::collections::BTreeMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| bad(&format!("{pair:?} is not name=value")))?;
        if !matches!(k, "secret_arn" | "db_user") {
            return Err(bad(&format!("unknown parameter {k:?} (secret_arn, db_user)")));
        }
        params.insert(k, v.to_owned());
    }
    let parts: Vec<&str> = path.split('/').collect();
    let [kind, name, database] = parts[..] else {
        return Err(bad("three path parts expected"));
    };
    if name.is_empty() || database.is_empty() {
        return Err(bad("the name and the database must not be empty"));
    }
    let secret_arn = params.remove("secret_arn");
    let target = match kind {
        "workgroup" => {
            if params.contains_key("db_user") {
                return Err(bad(
                    "db_user is for clusters; a workgroup uses the IAM identity or secret_arn",
                ));
            }
            DataApiTarget::Workgroup {
                workgroup_name: name.to_owned(),
                secret_arn,
            }
        }
        "cluster" => {
            let db_user = params.remove("db_user");
            if db_user.is_none() && secret_arn.is_none() {
                return Err(bad(
                    "a cluster needs db_user (IAM temporary credentials) or secret_arn",
                ));
            }
            DataApiTarget::Cluster {
                cluster_identifier: name.to_owned(),
                db_user,
                secret_arn,
            }
        }
        other => return Err(bad(&format!("{other:?} is neither workgroup nor cluster"))),
    };
    Ok(RedshiftUrl::DataApi {
        target,
        database: database.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_transport_and_the_target() {
        assert_eq!(
            RedshiftUrl::parse("redshift://u:p@h:5439/db?sslmode=require"),
            Some(Ok(RedshiftUrl::Wire(
                "redshift://u:p@h:5439/db?sslmode=require".into()
            )))
        );
        assert_eq!(
            RedshiftUrl::parse("redshift-data://workgroup/wg/dev"),
            Some(Ok(RedshiftUrl::DataApi {
                target: DataApiTarget::Workgroup {
                    workgroup_name: "wg".into(),
                    secret_arn: None
                },
                database: "dev".into()
            }))
        );
        assert_eq!(
            RedshiftUrl::parse("redshift-data://cluster/c1/dev?db_user=loader"),
            Some(Ok(RedshiftUrl::DataApi {
                target: DataApiTarget::Cluster {
                    cluster_identifier: "c1".into(),
                    db_user: Some("loader".into()),
                    secret_arn: None
                },
                database: "dev".into()
            }))
        );
        assert_eq!(RedshiftUrl::parse("postgres://x/y"), None);
        for (url, why) in [
            ("redshift-data://cluster/c1/dev", "needs db_user"),
            ("redshift-data://workgroup/wg", "three path parts"),
            ("redshift-data://table/wg/dev", "neither workgroup nor cluster"),
            ("redshift-data://workgroup/wg/dev?user=x", "unknown parameter"),
        ] {
            let e = RedshiftUrl::parse(url).unwrap().unwrap_err();
            assert!(e.message.contains(why), "{url}: {e}");
        }
    }
}
