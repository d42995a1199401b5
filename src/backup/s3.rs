//! Backups in an S3-compatible bucket (`s3://bucket/prefix`).
//!
//! A backup is first written to a local staging directory exactly as a
//! directory backup, then each file is uploaded under `prefix/`, the
//! manifest last; a restore downloads the manifest and the files it names
//! and restores from them as from a directory. Requests are presigned by
//! rusty-s3 (AWS Signature V4) and sent by a blocking HTTP client, on the
//! backup's own thread.
//!
//! Where and as whom, from the environment: `PROGRESSDB_S3_ENDPOINT`
//! (default `https://s3.<region>.amazonaws.com`; a custom endpoint uses
//! path-style URLs, as MinIO and most S3-compatible servers want),
//! `PROGRESSDB_S3_REGION` or `AWS_REGION` (default `us-east-1`),
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and optionally
//! `AWS_SESSION_TOKEN`.

use std::path::Path;
use std::time::Duration;

use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

/// How long a signed request stays valid; an upload of one shard file
/// must start within it.
const SIGNED_FOR: Duration = Duration::from_secs(3600);
/// Longest wait for any one response to begin.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(300);

/// One bucket and key prefix, with the credentials to reach them.
pub struct S3 {
    bucket: Bucket,
    prefix: String,
    credentials: Credentials,
    agent: ureq::Agent,
}

impl S3 {
    /// The bucket `bucket`, configured from the environment.
    pub fn from_env(bucket: &str, prefix: &str) -> Result<S3, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        let region = var("PROGRESSDB_S3_REGION")
            .or_else(|| var("AWS_REGION"))
            .unwrap_or_else(|| "us-east-1".into());
        let (endpoint, style) = match var("PROGRESSDB_S3_ENDPOINT") {
            Some(endpoint) => (endpoint, UrlStyle::Path),
            None => (
                format!("https://s3.{region}.amazonaws.com"),
                UrlStyle::VirtualHost,
            ),
        };
        let url = endpoint
            .parse()
            .map_err(|err| format!("PROGRESSDB_S3_ENDPOINT {endpoint:?}: {err}"))?;
        let bucket = Bucket::new(url, style, bucket.to_owned(), region)
            .map_err(|err| format!("bucket {bucket:?} at {endpoint}: {err}"))?;
        let (Some(key), Some(secret)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY"))
        else {
            return Err("S3 needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into());
        };
        let credentials = match var("AWS_SESSION_TOKEN") {
            Some(token) => Credentials::new_with_token(key, secret, token),
            None => Credentials::new(key, secret),
        };
        let agent = ureq::Agent::config_builder()
            .timeout_recv_response(Some(RESPONSE_TIMEOUT))
            .http_status_as_error(false)
            .build()
            .new_agent();
        Ok(S3 {
            bucket,
            prefix: prefix.trim_matches('/').to_owned(),
            credentials,
            agent,
        })
    }

    fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    fn describe(&self, name: &str) -> String {
        format!("s3://{}/{}", self.bucket.name(), self.key(name))
    }

    /// Whether `name` exists under the prefix.
    pub fn exists(&self, name: &str) -> Result<bool, String> {
        let key = self.key(name);
        let url = self
            .bucket
            .head_object(Some(&self.credentials), &key)
            .sign(SIGNED_FOR);
        let response = self
            .agent
            .head(url.as_str())
            .call()
            .map_err(|err| format!("{}: {err}", self.describe(name)))?;
        match response.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            status => Err(format!("{}: HTTP {status}", self.describe(name))),
        }
    }

    /// Uploads the local file `path` as `name`.
    pub fn put_file(&self, name: &str, path: &Path) -> Result<(), String> {
        let key = self.key(name);
        let url = self
            .bucket
            .put_object(Some(&self.credentials), &key)
            .sign(SIGNED_FOR);
        let file = std::fs::File::open(path)
            .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
        let response = self
            .agent
            .put(url.as_str())
            .send(file)
            .map_err(|err| format!("{}: {err}", self.describe(name)))?;
        match response.status().as_u16() {
            200..=299 => Ok(()),
            status => Err(format!(
                "{}: upload failed, HTTP {status}",
                self.describe(name)
            )),
        }
    }

    /// Downloads `name` into the local file `path`, refusing more than
    /// `limit` bytes. `Ok(false)` when there is no such object.
    pub fn get_file(&self, name: &str, path: &Path, limit: u64) -> Result<bool, String> {
        let key = self.key(name);
        let url = self
            .bucket
            .get_object(Some(&self.credentials), &key)
            .sign(SIGNED_FOR);
        let mut response = self
            .agent
            .get(url.as_str())
            .call()
            .map_err(|err| format!("{}: {err}", self.describe(name)))?;
        match response.status().as_u16() {
            200 => {}
            404 => return Ok(false),
            status => {
                return Err(format!(
                    "{}: download failed, HTTP {status}",
                    self.describe(name)
                ));
            }
        }
        let mut file = std::fs::File::create(path)
            .map_err(|err| format!("cannot write {}: {err}", path.display()))?;
        let mut body = response.body_mut().with_config().limit(limit).reader();
        std::io::copy(&mut body, &mut file)
            .map_err(|err| format!("{}: {err}", self.describe(name)))?;
        file.sync_all()
            .map_err(|err| format!("cannot write {}: {err}", path.display()))?;
        Ok(true)
    }
}
