//! The EC2 Query API as the `cairn volume` and `cairn snapshot` verbs call
//! it: where the gateway is and who the caller is ([`ApiArgs`], resolved
//! like an AWS client: flags, then `AWS_*` variables, then the env file a
//! `cairn up` cluster wrote), and one signed call ([`Client::call`]): a
//! form-encoded `POST`, signed with SigV4 exactly as botocore signs it
//! (`content-type;host;x-amz-date`, the body's SHA-256), the answer read
//! as XML. An EC2 error answer becomes `Code: Message`.

pub mod records;
pub mod xml;

use anyhow::{bail, Context};
use cairn_core::sigv4::{authorization, sha256_hex, Scope, SignedParts};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;
use xml::Element;

const API_VERSION: &str = "2016-11-15";
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the gateway is and how the answers are printed.
#[derive(clap::Args, Debug, Clone)]
pub struct ApiArgs {
    /// The gateway's endpoint (http://host:port); default $AWS_ENDPOINT_URL,
    /// else the cluster in --data-dir.
    #[arg(long, global = true)]
    endpoint: Option<String>,
    /// The region to sign for; default $AWS_REGION, else the cluster's.
    #[arg(long, global = true)]
    region: Option<String>,
    /// A `cairn up` data directory whose `env` file fills in what the
    /// environment does not say.
    #[arg(long, global = true, default_value = "./cairn-data")]
    data_dir: PathBuf,
    /// `text` (tables, progress bars) or `json` (for scripts; with --wait,
    /// one progress object per line).
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
}

impl ApiArgs {
    pub fn json(&self) -> bool {
        self.output == "json"
    }

    /// A setting: the environment's `name`, else the cluster env file's.
    fn setting(&self, file: &HashMap<String, String>, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty()).or_else(|| file.get(name).cloned())
    }

    /// The settings resolved, and a client for them.
    pub fn client(&self) -> anyhow::Result<Client> {
        let file = env_file(&self.data_dir.join("env"));
        let endpoint = self
            .endpoint
            .clone()
            .or_else(|| self.setting(&file, "AWS_ENDPOINT_URL"))
            .with_context(|| {
                format!(
                    "no gateway endpoint: pass --endpoint, set AWS_ENDPOINT_URL, or run in the \
                     directory holding {} (written by `cairn up`)",
                    self.data_dir.display()
                )
            })?;
        let region = self
            .region
            .clone()
            .or_else(|| self.setting(&file, "AWS_REGION"))
            .or_else(|| self.setting(&file, "AWS_DEFAULT_REGION"))
            .context("no region: pass --region or set AWS_REGION")?;
        let key = self.setting(&file, "AWS_ACCESS_KEY_ID");
        let secret = self.setting(&file, "AWS_SECRET_ACCESS_KEY");
        let (Some(access_key), Some(secret_key)) = (key, secret) else {
            bail!("no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY");
        };
        let (host, path) = split_endpoint(&endpoint)?;
        Ok(Client {
            host,
            path,
            region,
            access_key,
            secret_key,
            zones: self.setting(&file, "CAIRN_ZONES"),
            nbd: self.setting(&file, "CAIRN_NBD"),
        })
    }
}

/// `export NAME=value` lines of a `cairn up` env file (missing file: none).
fn env_file(path: &std::path::Path) -> HashMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// `http://host:port/path` into `host:port` and the path (`/` when none).
fn split_endpoint(endpoint: &str) -> anyhow::Result<(String, String)> {
    let Some(rest) = endpoint.strip_prefix("http://") else {
        bail!(
            "the endpoint {endpoint:?} is not http://host:port (the cairn CLI speaks plain HTTP)"
        );
    };
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host.is_empty() {
        bail!("the endpoint {endpoint:?} names no host");
    }
    Ok((host.to_string(), path.to_string()))
}

/// A signed EC2 client for one gateway.
pub struct Client {
    /// `host:port`, the `Host` header signed.
    pub host: String,
    path: String,
    pub region: String,
    access_key: String,
    secret_key: String,
    /// The cluster's zones (`CAIRN_ZONES`), when known.
    pub zones: Option<String>,
    /// The cluster's NBD front door (`CAIRN_NBD`), when known.
    pub nbd: Option<String>,
}

impl Client {
    /// Calls `action` with `params`; the answer's root element, or the
    /// gateway's error as `Code: Message`.
    pub async fn call(&self, action: &str, params: &[(String, String)]) -> anyhow::Result<Element> {
        let mut form = vec![("Action".to_string(), action.to_string())];
        form.push(("Version".to_string(), API_VERSION.to_string()));
        form.extend(params.iter().cloned());
        let body = serde_urlencoded::to_string(&form)?;
        let amz_date = time::OffsetDateTime::now_utc()
            .format(time::macros::format_description!("[year][month][day]T[hour][minute][second]Z"))
            .context("formatting the request time")?;
        let headers = vec![
            ("content-type".to_string(), "application/x-www-form-urlencoded; charset=utf-8".into()),
            ("host".to_string(), self.host.clone()),
            ("x-amz-date".to_string(), amz_date.clone()),
        ];
        let scope = Scope {
            date: amz_date[..8].to_string(),
            region: self.region.clone(),
            service: "ec2".into(),
        };
        let parts = SignedParts {
            method: "POST",
            path: &self.path,
            query: &[],
            headers: &headers,
            payload_hash: &sha256_hex(body.as_bytes()),
        };
        let auth = authorization(&self.access_key, &self.secret_key, &amz_date, &scope, &parts);
        let mut sent: Vec<(String, String)> =
            headers.into_iter().filter(|(n, _)| n != "host").collect();
        sent.push(("authorization".into(), auth));
        let answer =
            crate::http::send(&self.host, "POST", &self.path, &sent, body.as_bytes(), CALL_TIMEOUT)
                .await?;
        let root = xml::parse(&answer.body)
            .with_context(|| format!("{action}: the gateway answered {}", answer.status))?;
        if answer.status != 200 {
            let error = root.child("Errors").and_then(|e| e.child("Error"));
            let code = error.and_then(|e| e.text("Code")).unwrap_or("UnknownError");
            let message = error.and_then(|e| e.text("Message")).unwrap_or("");
            bail!("{code}: {message}");
        }
        Ok(root)
    }

    /// Calls a Describe action and gathers the `item`s of `set` over every
    /// page (`NextToken`).
    pub async fn describe(
        &self,
        action: &str,
        params: &[(String, String)],
        set: &str,
    ) -> anyhow::Result<Vec<Element>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut p = params.to_vec();
            if let Some(t) = &token {
                p.push(("NextToken".into(), t.clone()));
            }
            let mut root = self.call(action, &p).await?;
            token = root.text("nextToken").filter(|t| !t.is_empty()).map(str::to_string);
            if let Some(i) = root.children.iter().position(|c| c.name == set) {
                let list = root.children.swap_remove(i);
                out.extend(list.children.into_iter().filter(|c| c.name == "item"));
            }
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    /// The operator endpoint `path` of this gateway (plain JSON).
    pub async fn operator(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let a = crate::http::request(&self.host, "GET", path, Duration::from_secs(10)).await?;
        if a.status != 200 {
            bail!("{path}: the gateway answered {}: {}", a.status, a.body.trim());
        }
        serde_json::from_str(&a.body).with_context(|| format!("{path}: not JSON"))
    }
}

/// `(name, value)` as a request parameter.
pub fn param(name: &str, value: impl ToString) -> (String, String) {
    (name.to_string(), value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_env_files() {
        assert_eq!(
            split_endpoint("http://127.0.0.1:5000").expect("ok"),
            ("127.0.0.1:5000".to_string(), "/".to_string())
        );
        assert_eq!(split_endpoint("http://h:1/x").expect("ok").1, "/x");
        assert!(split_endpoint("https://h:1").is_err());
        assert!(split_endpoint("http:///").is_err());
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("env");
        std::fs::write(&path, "# c\nexport AWS_REGION=us-east-1\nexport CAIRN_NBD=127.0.0.1:1\n")
            .expect("write");
        let vars = env_file(&path);
        assert_eq!(vars.get("AWS_REGION").map(String::as_str), Some("us-east-1"));
        assert_eq!(vars.len(), 2);
        assert!(env_file(&dir.path().join("missing")).is_empty());
    }
}
