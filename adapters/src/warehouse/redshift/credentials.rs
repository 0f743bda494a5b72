//! IAM temporary database credentials for the wire transport: instead of a password in the URL,
//! `?iam_cluster=<cluster-id>` (provisioned: `GetClusterCredentials` for the URL's user) or
//! `?iam_workgroup=<workgroup>` (Serverless: `GetCredentials` for the task's IAM identity). They
//! last [`LIFETIME`]; new connections get fresh ones well before expiry ([`refresh_at`]), while
//! open connections stay valid (Redshift checks the password at login only).

use std::time::{Duration, SystemTime};

use microbatch_core::import::{WarehouseError, WarehouseErrorKind};

use crate::aws::{Aws, port_error};

/// How long the credentials asked for are valid (the least both APIs allow).
pub const LIFETIME: Duration = Duration::from_secs(900);

/// Where the credentials come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IamAuth {
    Cluster { cluster_identifier: String },
    Workgroup { workgroup_name: String },
}

impl IamAuth {
    /// Takes `iam_cluster` / `iam_workgroup` out of a `redshift://` URL's query: the auth, and
    /// the URL sqlx is given (without them).
    pub fn from_url(url: &str) -> Result<(Option<IamAuth>, String), WarehouseError> {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((None, url.to_owned()));
        };
        let mut auth = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let found = match k {
                "iam_cluster" => Some(IamAuth::Cluster {
                    cluster_identifier: v.to_owned(),
                }),
                "iam_workgroup" => Some(IamAuth::Workgroup {
                    workgroup_name: v.to_owned(),
                }),
                _ => {
                    kept.push(pair);
                    None
                }
            };
            if let Some(found) = found {
                if v.is_empty() || auth.is_some() {
                    return Err(WarehouseError::new(
                        WarehouseErrorKind::Other,
                        "warehouse URL: give one of iam_cluster=<cluster-id> or iam_workgroup=<workgroup>, with a value",
                    ));
                }
                auth = Some(found);
            }
        }
        let url = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        Ok((auth, url))
    }
}

/// A database user and password valid until `expires`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
    pub expires: SystemTime,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// When to fetch the next credentials: a third of their life before they expire, and never
/// later than a minute before.
pub fn refresh_at(fetched: SystemTime, expires: SystemTime) -> SystemTime {
    let life = expires.duration_since(fetched).unwrap_or_default();
    let margin = (life / 3).max(Duration::from_secs(60)).min(life);
    expires - margin
}

/// Asks IAM for credentials of `db_user` (provisioned clusters) on `database`.
pub async fn fetch(
    aws: &Aws,
    auth: &IamAuth,
    db_user: &str,
    database: &str,
) -> Result<Credentials, WarehouseError> {
    let lifetime = LIFETIME.as_secs() as i32;
    let to_system = |t: Option<&aws_sdk_redshift::primitives::DateTime>| {
        t.and_then(|t| SystemTime::try_from(*t).ok())
            .unwrap_or_else(|| SystemTime::now() + LIFETIME)
    };
    let missing = |what: &str| {
        WarehouseError::new(
            WarehouseErrorKind::Protocol,
            format!("the temporary credentials answer has no {what}"),
        )
    };
    let denied = |e: microbatch_core::ports::PortError| {
        let kind = if e.is_transient() {
            WarehouseErrorKind::Connection
        } else {
            WarehouseErrorKind::Database
        };
        WarehouseError::new(kind, e.to_string())
    };
    match auth {
        IamAuth::Cluster { cluster_identifier } => {
            let out = aws
                .redshift()
                .get_cluster_credentials()
                .cluster_identifier(cluster_identifier)
                .db_user(db_user)
                .db_name(database)
                .duration_seconds(lifetime)
                .auto_create(false)
                .send()
                .await
                .map_err(|e| denied(port_error("redshift", "GetClusterCredentials", e)))?;
            Ok(Credentials {
                user: out.db_user().ok_or_else(|| missing("DbUser"))?.to_owned(),
                password: out.db_password().ok_or_else(|| missing("DbPassword"))?.to_owned(),
                expires: to_system(out.expiration()),
            })
        }
        IamAuth::Workgroup { workgroup_name } => {
            let out = aws
                .redshift_serverless()
                .get_credentials()
                .workgroup_name(workgroup_name)
                .db_name(database)
                .duration_seconds(lifetime)
                .send()
                .await
                .map_err(|e| denied(port_error("redshift-serverless", "GetCredentials", e)))?;
            Ok(Credentials {
                user: out.db_user().ok_or_else(|| missing("dbUser"))?.to_owned(),
                password: out.db_password().ok_or_else(|| missing("dbPassword"))?.to_owned(),
                expires: to_system(out.expiration()),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iam_parameters_are_taken_out_of_the_url() {
        let (auth, url) =
            IamAuth::from_url("redshift://loader@h:5439/db?sslmode=require&iam_cluster=c1").unwrap();
        assert_eq!(
            auth,
            Some(IamAuth::Cluster {
                cluster_identifier: "c1".into()
            })
        );
        assert_eq!(url, "redshift://loader@h:5439/db?sslmode=require");
        let (auth, url) = IamAuth::from_url("redshift://h/db?iam_workgroup=wg").unwrap();
        assert_eq!(
            auth,
            Some(IamAuth::Workgroup {
                workgroup_name: "wg".into()
            })
        );
        assert_eq!(url, "redshift://h/db");
        assert_eq!(
            IamAuth::from_url("redshift://u:p@h/db").unwrap(),
            (None, "redshift://u:p@h/db".into())
        );
        assert!(IamAuth::from_url("redshift://h/db?iam_cluster=a&iam_workgroup=b").is_err());
        assert!(IamAuth::from_url("redshift://h/db?iam_cluster=").is_err());
    }

    #[test]
    fn credentials_are_refreshed_a_third_of_their_life_early() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(refresh_at(t0, t0 + LIFETIME), t0 + Duration::from_secs(600));
        // Short-lived ones: at least a minute early, never before they were fetched.
        assert_eq!(
            refresh_at(t0, t0 + Duration::from_secs(120)),
            t0 + Duration::from_secs(60)
        );
        assert_eq!(refresh_at(t0, t0 + Duration::from_secs(30)), t0);
    }
}
