//! A W&B connection with what it learns once per process: the account's
//! default entity and whether file_stream takes gzip.
//!
//! Shared by the online sink and `mosaic-shipper sync`, so that both create
//! runs, stream history and upload run files with the same requests, proxy
//! and retry policy ([`Http`]).

use serde_json::Value;

use super::filestream::{self, Update};
use super::graphql::{self, Bucket, UpsertInput};
use super::http::{self, Http, WandbError};
use super::settings::WandbSettings;

/// Where a run lives on the server: the path segments of its URLs.
#[derive(Debug, Clone, Copy)]
pub struct RunRef<'a> {
    pub entity: &'a str,
    pub project: &'a str,
    /// The W&B run id.
    pub name: &'a str,
    /// How errors and logs name the run (the MOSAIC run id).
    pub display: &'a str,
}

/// See the module documentation.
pub struct Client {
    http: Http,
    base_url: String,
    compress: bool,
    /// Whether the server takes gzip on file_stream; asked once.
    gzip: Option<bool>,
    /// The account's default entity when none is configured; asked once.
    viewer_entity: Option<Option<String>>,
}

impl Client {
    /// Builds the HTTP client. Fails if the settings are not usable (no
    /// key, bad proxy URL, unreadable `ca_file`).
    pub fn new(settings: &WandbSettings) -> Result<Client, WandbError> {
        let key = settings
            .key
            .clone()
            .ok_or_else(|| WandbError::Setup(format!("no W&B API key: {}", settings.key_source)))?;
        Ok(Client {
            http: Http::new(key, settings.http.clone())?,
            base_url: settings.base_url.clone(),
            compress: settings.compress,
            gzip: None,
            viewer_entity: None,
        })
    }

    /// `configured`, else the viewer's default entity (asked once). If the
    /// server has no answer, `None`: UpsertBucket with a null entity, which
    /// the server resolves to the same default.
    pub async fn entity(&mut self, configured: Option<&str>) -> Result<Option<String>, WandbError> {
        if let Some(e) = configured {
            return Ok(Some(e.to_string()));
        }
        if let Some(e) = &self.viewer_entity {
            return Ok(e.clone());
        }
        let e = match graphql::viewer_entity(&self.http, &self.base_url).await {
            Ok(e) => e,
            // Refused or malformed: fall back to the server's default.
            Err(e @ (WandbError::Rejected { .. } | WandbError::Protocol { .. })) => {
                tracing::warn!(error = %e, "cannot ask W&B for the default entity; letting the server choose");
                None
            }
            Err(e) => return Err(e),
        };
        self.viewer_entity = Some(e.clone());
        Ok(e)
    }

    /// The HTTP client, for the artifact protocol (`artifact`).
    pub fn http(&self) -> &Http {
        &self.http
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Creates or updates a run (`UpsertBucket`).
    pub async fn upsert(&self, input: &UpsertInput<'_>) -> Result<Bucket, WandbError> {
        graphql::upsert_bucket(&self.http, &self.base_url, input).await
    }

    async fn use_gzip(&mut self) -> bool {
        if !self.compress {
            return false;
        }
        if let Some(g) = self.gzip {
            return g;
        }
        let g = graphql::server_supports_filestream_gzip(&self.http, &self.base_url).await;
        self.gzip = Some(g);
        g
    }

    /// Sends one file_stream request; returns once the server acknowledged it.
    pub async fn send(&mut self, run: RunRef<'_>, update: &Update) -> Result<(), WandbError> {
        let gzip = self.use_gzip().await;
        let url = filestream::url(&self.base_url, run.entity, run.project, run.name);
        filestream::send(&self.http, &url, run.display, update, gzip).await
    }

    /// Uploads run files as the SDK does at finish (CreateRunFiles, then a
    /// PUT each); returns their names for the `uploaded` list of the final
    /// file_stream request.
    pub async fn upload_files(
        &self,
        run: RunRef<'_>,
        files: &[(String, Vec<u8>)],
    ) -> Result<Vec<String>, WandbError> {
        if files.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        let targets = graphql::create_run_files(
            &self.http,
            &self.base_url,
            run.entity,
            run.project,
            run.name,
            &names,
        )
        .await?;
        let mut uploaded = Vec::new();
        for (name, url) in &targets.urls {
            let Some((_, body)) = files.iter().find(|(n, _)| n == name) else {
                continue;
            };
            // No key on uploads: core's file transfer sends none, even to
            // URLs on the API host (observed with 0.31.0).
            let upload = http::Upload {
                headers: targets.headers.clone(),
                with_auth: false,
            };
            self.http
                .post(&http::Request {
                    url,
                    what: "file upload",
                    run: run.display,
                    body: body.clone(),
                    gzip: false,
                    graphql: false,
                    upload: Some(upload),
                })
                .await?;
            uploaded.push(name.clone());
        }
        Ok(uploaded)
    }
}

/// The run files the SDK uploads at finish: `wandb-summary.json` and
/// `config.yaml` (YAML 1.2 is a superset of JSON: the config map as JSON
/// is a valid config.yaml; the SDK writes block style).
pub fn finish_files(summary: &str, config: &Value) -> Vec<(String, Vec<u8>)> {
    vec![
        (
            "wandb-summary.json".to_string(),
            summary.as_bytes().to_vec(),
        ),
        (
            "config.yaml".to_string(),
            serde_json::to_vec_pretty(config).expect("JSON values serialise"),
        ),
    ]
}

/// A run's config in W&B's form: each top-level key of what the worker
/// logged as `{"value": V}`, plus the internal `_wandb` key with the
/// run's metric definitions (`m`, from `define_metric`; see
/// [`super::step_metric`]).
pub fn wandb_config(logged: Option<&serde_json::Map<String, Value>>, metrics: &[Value]) -> Value {
    // `_wandb.t` marks the run as started for W&B's resume logic
    // (core/internal/runbranch/resume.go); we claim only what is true:
    // the platform (13) and features set_init_id (3: 14) and, when metrics
    // are defined, metric (3: 7, what define_metric sets).
    let platform = format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH);
    let features: Vec<u32> = if metrics.is_empty() {
        vec![14]
    } else {
        vec![7, 14]
    };
    let mut config = serde_json::Map::new();
    if let Some(logged) = logged {
        for (k, v) in logged {
            config.insert(k.clone(), serde_json::json!({ "value": v }));
        }
    }
    config.insert(
        "_wandb".into(),
        serde_json::json!({"value": {"t": {"3": features, "13": platform}, "m": metrics}}),
    );
    Value::Object(config)
}
