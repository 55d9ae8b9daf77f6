//! GraphQL: run creation and resume with `UpsertBucket`.
//!
//! The operation text is byte-for-byte what W&B core sends
//! (`core/internal/gql/gql_gen.go`, `UpsertBucket_Operation`; identical in
//! wandb 0.31.0, see docs/wandb-protocol.md section 2.2), and all 19
//! variables are always present, `null` when unset, as genqlient does.

use serde_json::{json, Value};

use super::http::{Http, Request, WandbError};

/// The mutation text, verbatim (leading/trailing newline, tab indents).
pub const UPSERT_BUCKET: &str = "\nmutation UpsertBucket ($id: String, $name: String, $project: String, $entity: String, $groupName: String, $description: String, $displayName: String, $notes: String, $commit: String, $config: JSONString, $host: String, $debug: Boolean, $program: String, $repo: String, $jobType: String, $state: String, $sweep: String, $tags: [String!], $summaryMetrics: JSONString) {\n\tupsertBucket(input: {id:$id,name:$name,groupName:$groupName,modelName:$project,entityName:$entity,description:$description,displayName:$displayName,notes:$notes,config:$config,commit:$commit,host:$host,debug:$debug,jobProgram:$program,jobRepo:$repo,jobType:$jobType,state:$state,sweep:$sweep,tags:$tags,summaryMetrics:$summaryMetrics}) {\n\t\tbucket {\n\t\t\tid\n\t\t\tname\n\t\t\tdisplayName\n\t\t\tdescription\n\t\t\tconfig\n\t\t\tsweepName\n\t\t\tproject {\n\t\t\t\tid\n\t\t\t\tname\n\t\t\t\tentity {\n\t\t\t\t\tid\n\t\t\t\t\tname\n\t\t\t\t}\n\t\t\t}\n\t\t\thistoryLineCount\n\t\t}\n\t\tinserted\n\t}\n}\n";

/// What the agent tells W&B about a run.
#[derive(Debug, Clone)]
pub struct UpsertInput<'a> {
    /// Storage id from an earlier answer; `None` on the first call.
    pub id: Option<&'a str>,
    pub name: &'a str,
    pub project: &'a str,
    pub entity: Option<&'a str>,
    pub display_name: Option<&'a str>,
    /// The run config, already in W&B's `{"key": {"value": ...}}` form.
    pub config: Option<&'a Value>,
    pub host: Option<&'a str>,
    /// The worker's program, when known (init mode), as the SDK sends it.
    pub program: Option<&'a str>,
}

/// What the agent needs from the answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bucket {
    pub id: String,
    pub name: String,
    pub project: String,
    pub entity: String,
    pub history_line_count: u64,
}

/// The request body for `input`.
pub fn upsert_body(input: &UpsertInput<'_>) -> Vec<u8> {
    let body = json!({
        "query": UPSERT_BUCKET,
        "variables": {
            "id": input.id,
            "name": input.name,
            "project": input.project,
            "entity": input.entity,
            "groupName": null,
            "description": null,
            "displayName": input.display_name,
            "notes": null,
            "commit": null,
            "config": input.config.map(|c| c.to_string()),
            "host": input.host,
            "debug": null,
            "program": input.program,
            "repo": null,
            "jobType": null,
            "state": null,
            "sweep": null,
            "tags": null,
            "summaryMetrics": null,
        },
        "operationName": "UpsertBucket",
    });
    serde_json::to_vec(&body).expect("JSON values serialise")
}

/// Reads the answer: a non-empty `errors` array is an error (not retried,
/// as in core; whom it concerns is told by `gql_errors`), and so is a
/// missing bucket (the file_stream URL needs its entity and project).
pub fn parse_upsert(body: &[u8], run: &str, url: &str) -> Result<Bucket, WandbError> {
    let err = |message: String| WandbError::Protocol {
        what: "UpsertBucket",
        run: run.to_string(),
        message: super::redact::scrubbed(&message),
    };
    let v: Value =
        serde_json::from_slice(body).map_err(|e| err(format!("answer is not JSON: {e}")))?;
    super::gql_errors::check(&v, "UpsertBucket", run, url)?;
    let b = v
        .pointer("/data/upsertBucket/bucket")
        .filter(|b| b.is_object())
        .ok_or_else(|| err("answer has no upsertBucket.bucket".into()))?;
    let s = |p: &str| b.pointer(p).and_then(Value::as_str).map(str::to_string);
    Ok(Bucket {
        id: s("/id").unwrap_or_default(),
        name: s("/name").unwrap_or_else(|| run.to_string()),
        project: s("/project/name").ok_or_else(|| err("answer has no project name".into()))?,
        entity: s("/project/entity/name").ok_or_else(|| err("answer has no entity name".into()))?,
        history_line_count: b
            .pointer("/historyLineCount")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    })
}

/// Creates or updates the run; returns where it lives.
pub async fn upsert_bucket(
    http: &Http,
    base_url: &str,
    input: &UpsertInput<'_>,
) -> Result<Bucket, WandbError> {
    let url = format!("{base_url}/graphql");
    let body = http
        .post(&Request {
            url: &url,
            what: "UpsertBucket",
            run: input.name,
            body: upsert_body(input),
            gzip: false,
            graphql: true,
            upload: None,
        })
        .await?;
    parse_upsert(&body, input.name, &url)
}

/// `ServerFeaturesQuery`, verbatim from core (`gql_gen.go`).
pub const SERVER_FEATURES: &str = "\nquery ServerFeaturesQuery {\n\tserverInfo {\n\t\tfeatures {\n\t\t\tname\n\t\t\tisEnabled\n\t\t}\n\t}\n}\n";

/// Whether the server accepts gzip-compressed file_stream bodies (feature
/// `FILESTREAM_GZIP`, as core checks in `filestreamimpl.go`). Any failure
/// counts as "no": compression is an optimisation, never a requirement.
pub async fn server_supports_filestream_gzip(http: &Http, base_url: &str) -> bool {
    let url = format!("{base_url}/graphql");
    let body = serde_json::to_vec(
        &json!({"query": SERVER_FEATURES, "operationName": "ServerFeaturesQuery"}),
    )
    .expect("JSON values serialise");
    let answer = http
        .post(&Request {
            url: &url,
            what: "ServerFeaturesQuery",
            run: "-",
            body,
            gzip: false,
            graphql: true,
            upload: None,
        })
        .await;
    let Ok(answer) = answer else {
        return false;
    };
    let Ok(v) = serde_json::from_slice::<Value>(&answer) else {
        return false;
    };
    v.pointer("/data/serverInfo/features")
        .and_then(Value::as_array)
        .is_some_and(|fs| {
            fs.iter().any(|f| {
                f.get("name").and_then(Value::as_str) == Some("FILESTREAM_GZIP")
                    && f.get("isEnabled").and_then(Value::as_bool) == Some(true)
            })
        })
}

/// `Viewer`, verbatim from core (`gql_gen.go`).
pub const VIEWER: &str = "\nquery Viewer {\n\tviewer {\n\t\tid\n\t\tentity\n\t\tusername\n\t\temail\n\t\tflags\n\t\tteams {\n\t\t\tedges {\n\t\t\t\tnode {\n\t\t\t\t\tname\n\t\t\t\t}\n\t\t\t}\n\t\t}\n\t}\n}\n";

/// The default entity of the key's account (`viewer.entity`), as the SDK
/// learns it. `None` when the answer has none.
pub async fn viewer_entity(http: &Http, base_url: &str) -> Result<Option<String>, WandbError> {
    let url = format!("{base_url}/graphql");
    let body = serde_json::to_vec(&json!({"query": VIEWER, "operationName": "Viewer"}))
        .expect("JSON values serialise");
    let answer = http
        .post(&Request {
            url: &url,
            what: "Viewer",
            run: "-",
            body,
            gzip: false,
            graphql: true,
            upload: None,
        })
        .await?;
    let v: Value = serde_json::from_slice(&answer).map_err(|e| WandbError::Protocol {
        what: "Viewer",
        run: "-".into(),
        message: format!("answer is not JSON: {e}"),
    })?;
    // Errors about the viewer are about the key: every run's concern.
    super::gql_errors::check(&v, "Viewer", "-", &url)?;
    Ok(v.pointer("/data/viewer/entity")
        .and_then(Value::as_str)
        .filter(|e| !e.is_empty())
        .map(str::to_string))
}

/// `CreateRunFiles`, verbatim from core (`gql_gen.go`).
pub const CREATE_RUN_FILES: &str = "\nmutation CreateRunFiles ($entity: String!, $project: String!, $run: String!, $files: [String!]!) {\n\tcreateRunFiles(input: {entityName:$entity,projectName:$project,runName:$run,files:$files}) {\n\t\trunID\n\t\tuploadHeaders\n\t\tfiles {\n\t\t\tname\n\t\t\tuploadUrl\n\t\t}\n\t}\n}\n";

/// Where to PUT each run file, and the headers to send with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFiles {
    pub headers: Vec<(String, String)>,
    pub urls: Vec<(String, String)>,
}

/// Asks for upload URLs of `files` (run-relative names).
pub async fn create_run_files(
    http: &Http,
    base_url: &str,
    entity: &str,
    project: &str,
    run: &str,
    files: &[&str],
) -> Result<RunFiles, WandbError> {
    let url = format!("{base_url}/graphql");
    let body = serde_json::to_vec(&json!({
        "query": CREATE_RUN_FILES,
        "variables": {"entity": entity, "project": project, "run": run, "files": files},
        "operationName": "CreateRunFiles",
    }))
    .expect("JSON values serialise");
    let answer = http
        .post(&Request {
            url: &url,
            what: "CreateRunFiles",
            run,
            body,
            gzip: false,
            graphql: true,
            upload: None,
        })
        .await?;
    let err = |message: String| WandbError::Protocol {
        what: "CreateRunFiles",
        run: run.to_string(),
        message: super::redact::scrubbed(&message),
    };
    let v: Value =
        serde_json::from_slice(&answer).map_err(|e| err(format!("answer is not JSON: {e}")))?;
    super::gql_errors::check(&v, "CreateRunFiles", run, &url)?;
    let headers = v
        .pointer("/data/createRunFiles/uploadHeaders")
        .and_then(Value::as_array)
        .map(|hs| {
            hs.iter()
                .filter_map(Value::as_str)
                .filter_map(|h| h.split_once(':'))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect()
        })
        .unwrap_or_default();
    let urls: Vec<(String, String)> = v
        .pointer("/data/createRunFiles/files")
        .and_then(Value::as_array)
        .map(|fs| {
            fs.iter()
                .filter_map(|f| {
                    Some((
                        f.get("name")?.as_str()?.to_string(),
                        f.get("uploadUrl")?.as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    // Core drops the batch when the counts differ; so do we.
    if urls.len() != files.len() {
        return Err(err(format!(
            "asked for {} upload URLs, got {}",
            files.len(),
            urls.len()
        )));
    }
    Ok(RunFiles { headers, urls })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_all_nineteen_variables() {
        let cfg = json!({"_wandb": {"value": {"m": []}}});
        let body = upsert_body(&UpsertInput {
            id: None,
            name: "r1",
            project: "p",
            entity: None,
            display_name: Some("R1"),
            config: Some(&cfg),
            host: None,
            program: None,
        });
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["operationName"], "UpsertBucket");
        assert_eq!(v["variables"].as_object().unwrap().len(), 19);
        assert_eq!(v["variables"]["entity"], Value::Null);
        assert_eq!(
            v["variables"]["config"],
            "{\"_wandb\":{\"value\":{\"m\":[]}}}"
        );
        assert!(UPSERT_BUCKET.starts_with("\nmutation UpsertBucket ("));
        assert!(UPSERT_BUCKET.contains("\n\tupsertBucket(input: {id:$id,"));
    }

    #[test]
    fn answer_parsing() {
        let ok = br#"{"data":{"upsertBucket":{"bucket":{"id":"b1","name":"r1","project":{"name":"p","entity":{"name":"e"}},"historyLineCount":7},"inserted":false}}}"#;
        let b = parse_upsert(ok, "r1", "http://h/graphql").unwrap();
        assert_eq!(
            (b.entity.as_str(), b.project.as_str(), b.history_line_count),
            ("e", "p", 7)
        );
        let bad = br#"{"data":null,"errors":[{"message":"nope"}]}"#;
        assert!(parse_upsert(bad, "r1", "http://h/graphql")
            .unwrap_err()
            .to_string()
            .contains("nope"));
    }
}
