//! The artifact calls as wandb-core 0.31.0 makes them (query texts and
//! variables as recorded in tests/fixtures/wandb-sdk-artifacts.json;
//! the order is core's `ArtifactSaver.Save`): `CreateArtifact`, a first
//! `CreateArtifactManifest` without upload, `CreateArtifactFiles`, a PUT
//! per file the server does not hold, a second `CreateArtifactManifest`
//! with the manifest's digest and upload URL, its PUT, `CommitArtifact`.

use serde_json::{json, Value};

use crate::sink::wandb::http::{Http, Request, Upload, WandbError};

pub const CREATE_ARTIFACT: &str = "\nmutation CreateArtifact ($input: CreateArtifactInput!) {\n\tcreateArtifact(input: $input) {\n\t\t... CreatedArtifact\n\t}\n}\nfragment CreatedArtifact on CreateArtifactPayload {\n\tartifact {\n\t\tid\n\t\tstate\n\t\tartifactSequence {\n\t\t\tlatestArtifact {\n\t\t\t\tid\n\t\t\t}\n\t\t}\n\t}\n}\n";
pub const CREATE_ARTIFACT_MANIFEST: &str = "\nmutation CreateArtifactManifest ($artifactID: ID!, $baseArtifactID: ID, $name: String!, $digest: String!, $entityName: String!, $projectName: String!, $runName: String!, $manifestType: ArtifactManifestType!, $includeUpload: Boolean!) {\n\tcreateArtifactManifest(input: {artifactID:$artifactID,baseArtifactID:$baseArtifactID,name:$name,digest:$digest,entityName:$entityName,projectName:$projectName,runName:$runName,type:$manifestType}) {\n\t\tartifactManifest {\n\t\t\tid\n\t\t\tfile {\n\t\t\t\tid\n\t\t\t\tuploadUrl @include(if: $includeUpload)\n\t\t\t\tuploadHeaders @include(if: $includeUpload)\n\t\t\t}\n\t\t}\n\t}\n}\n";
pub const CREATE_ARTIFACT_FILES: &str = "\nmutation CreateArtifactFiles ($input: CreateArtifactFilesInput!) {\n\tcreateArtifactFiles(input: $input) {\n\t\tfiles {\n\t\t\tedges {\n\t\t\t\tnode {\n\t\t\t\t\tstoragePath\n\t\t\t\t\tuploadUrl\n\t\t\t\t\tuploadHeaders\n\t\t\t\t\tuploadMultipartUrls {\n\t\t\t\t\t\tuploadID\n\t\t\t\t\t\tuploadUrlParts {\n\t\t\t\t\t\t\tpartNumber\n\t\t\t\t\t\t\tuploadUrl\n\t\t\t\t\t\t}\n\t\t\t\t\t}\n\t\t\t\t\tartifact {\n\t\t\t\t\t\tid\n\t\t\t\t\t}\n\t\t\t\t}\n\t\t\t}\n\t\t}\n\t}\n}\n";
pub const COMMIT_ARTIFACT: &str = "\nmutation CommitArtifact ($artifactID: ID!) {\n\tcommitArtifact(input: {artifactID:$artifactID}) {\n\t\tartifact {\n\t\t\tid\n\t\t\tdigest\n\t\t}\n\t}\n}\n";

/// Where a version goes and what it says about itself.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub entity: &'a str,
    pub project: &'a str,
    /// The W&B run id (the run that logged it).
    pub run: &'a str,
    /// For errors: the MOSAIC run id.
    pub display: &'a str,
}

/// `CreateArtifact`'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub id: String,
    /// "PENDING" (a new version) or "COMMITTED" (same digest exists).
    pub state: String,
    pub latest_id: Option<String>,
}

/// An upload URL and its headers.
#[derive(Debug, Clone)]
pub struct UploadTo {
    pub url: String,
    pub headers: Vec<(String, String)>,
}

async fn call(
    http: &Http,
    base_url: &str,
    what: &'static str,
    t: &Target<'_>,
    query: &str,
    variables: Value,
) -> Result<Value, WandbError> {
    let url = format!("{base_url}/graphql");
    let body = serde_json::to_vec(&json!({
        "query": query, "variables": variables, "operationName": what,
    }))
    .expect("JSON values serialise");
    let answer = http
        .post(&Request {
            url: &url,
            what,
            run: t.display,
            body,
            gzip: false,
            graphql: true,
            upload: None,
        })
        .await?;
    let v: Value = serde_json::from_slice(&answer).map_err(|e| WandbError::Protocol {
        what,
        run: t.display.to_string(),
        message: format!("answer is not JSON: {e}"),
    })?;
    if let Some(errors) = v.get("errors").filter(|e| !e.is_null()) {
        let msg = errors
            .as_array()
            .and_then(|a| a.first())
            .and_then(|e| e["message"].as_str())
            .unwrap_or("error");
        return Err(WandbError::Protocol {
            what,
            run: t.display.to_string(),
            message: format!(
                "the server answered with an error: {}",
                crate::sink::wandb::redact::scrubbed(msg)
            ),
        });
    }
    Ok(v["data"].clone())
}

fn missing(what: &'static str, t: &Target<'_>, field: &str) -> WandbError {
    WandbError::Protocol {
        what,
        run: t.display.to_string(),
        message: format!("answer has no {field}"),
    }
}

/// A random id as the SDK's `clientID` / `sequenceClientID` (128 bits).
fn client_id() -> String {
    use rand::Rng;
    const A: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut r = rand::thread_rng();
    (0..25)
        .map(|_| A[r.gen_range(0..A.len())] as char)
        .collect()
}

/// The input of `CreateArtifact`.
pub struct NewVersion<'a> {
    pub collection: &'a str,
    /// `model` for checkpoints; an SDK's offline record says its own.
    pub type_name: &'a str,
    pub description: Option<&'a str>,
    pub digest: &'a str,
    pub aliases: &'a [&'a str],
    /// JSON text.
    pub metadata: &'a str,
}

pub async fn create_artifact(
    http: &Http,
    base_url: &str,
    t: &Target<'_>,
    v: &NewVersion<'_>,
) -> Result<Created, WandbError> {
    let aliases: Vec<Value> = v
        .aliases
        .iter()
        .map(|a| json!({"alias": a, "artifactCollectionName": v.collection}))
        .collect();
    let input = json!({
        "aliases": aliases,
        "artifactCollectionName": v.collection,
        "artifactCollectionNames": null,
        "artifactTypeName": v.type_name,
        "clientID": client_id(),
        "clientMutationId": null,
        "description": v.description,
        "digest": v.digest,
        "digestAlgorithm": "MANIFEST_MD5",
        "distributedID": null,
        "enableDigestDeduplication": true,
        "entityName": t.entity,
        "historyStep": null,
        "labels": null,
        "metadata": v.metadata,
        "projectName": t.project,
        "runName": t.run,
        "sequenceClientID": client_id(),
        "storageRegion": null,
        "ttlDurationSeconds": null,
    });
    const W: &str = "CreateArtifact";
    let d = call(
        http,
        base_url,
        W,
        t,
        CREATE_ARTIFACT,
        json!({"input": input}),
    )
    .await?;
    let a = &d["createArtifact"]["artifact"];
    Ok(Created {
        id: a["id"]
            .as_str()
            .ok_or_else(|| missing(W, t, "artifact id"))?
            .to_string(),
        state: a["state"]
            .as_str()
            .ok_or_else(|| missing(W, t, "artifact state"))?
            .to_string(),
        latest_id: a["artifactSequence"]["latestArtifact"]["id"]
            .as_str()
            .map(str::to_string),
    })
}

/// `CreateArtifactManifest`: its id, and with `digest` (the manifest's
/// MD5, base64) where to upload it.
pub async fn create_manifest(
    http: &Http,
    base_url: &str,
    t: &Target<'_>,
    artifact_id: &str,
    base_id: Option<&str>,
    digest: Option<&str>,
) -> Result<(String, Option<UploadTo>), WandbError> {
    const W: &str = "CreateArtifactManifest";
    let vars = json!({
        "artifactID": artifact_id,
        "baseArtifactID": base_id,
        "digest": digest.unwrap_or(""),
        "entityName": t.entity,
        "includeUpload": digest.is_some(),
        "manifestType": "FULL",
        "name": "wandb_manifest.json",
        "projectName": t.project,
        "runName": t.run,
    });
    let d = call(http, base_url, W, t, CREATE_ARTIFACT_MANIFEST, vars).await?;
    let m = &d["createArtifactManifest"]["artifactManifest"];
    let id = m["id"]
        .as_str()
        .ok_or_else(|| missing(W, t, "manifest id"))?
        .to_string();
    let upload = m["file"]["uploadUrl"].as_str().map(|u| UploadTo {
        url: u.to_string(),
        headers: headers(&m["file"]["uploadHeaders"]),
    });
    if digest.is_some() && upload.is_none() {
        return Err(missing(W, t, "manifest upload URL"));
    }
    Ok((id, upload))
}

fn headers(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|h| h.as_str()?.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// `CreateArtifactFiles` for the files of a version (name, MD5 base64),
/// in one request: per file, in order, where to upload it (`None`: the
/// server holds this content already) and the id of the version the
/// content was born with.
pub async fn create_files(
    http: &Http,
    base_url: &str,
    t: &Target<'_>,
    artifact_id: &str,
    manifest_id: &str,
    files: &[(&str, &str)],
) -> Result<Vec<(Option<UploadTo>, String)>, WandbError> {
    const W: &str = "CreateArtifactFiles";
    let announced: Vec<Value> = files
        .iter()
        .map(|(name, md5)| {
            json!({
                "artifactID": artifact_id,
                "artifactManifestID": manifest_id,
                "md5": md5,
                "mimetype": null,
                "name": name,
                "uploadPartsInput": null,
            })
        })
        .collect();
    let vars = json!({"input": {
        "artifactFiles": announced,
        "clientMutationId": null,
        "cloudRegionID": null,
        "storageLayout": "V2",
    }});
    let d = call(http, base_url, W, t, CREATE_ARTIFACT_FILES, vars).await?;
    let edges = d["createArtifactFiles"]["files"]["edges"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if edges.len() != files.len() {
        return Err(missing(W, t, "one file per file announced"));
    }
    Ok(edges
        .iter()
        .map(|e| {
            let node = &e["node"];
            let birth = node["artifact"]["id"]
                .as_str()
                .unwrap_or(artifact_id)
                .to_string();
            let upload = node["uploadUrl"].as_str().map(|u| UploadTo {
                url: u.to_string(),
                headers: headers(&node["uploadHeaders"]),
            });
            (upload, birth)
        })
        .collect())
}

/// PUTs a file, streamed (`Http::put_file`); no key, as core sends none
/// to pre-signed URLs.
pub async fn put_file(
    http: &Http,
    t: &Target<'_>,
    to: &UploadTo,
    path: &std::path::Path,
    len: u64,
) -> Result<(), WandbError> {
    // A length, not chunks: pre-signed storage URLs take no chunked body.
    let mut headers = to.headers.clone();
    headers.push(("Content-Length".into(), len.to_string()));
    let req = Request {
        url: &to.url,
        what: "artifact file upload",
        run: t.display,
        body: Vec::new(),
        gzip: false,
        graphql: false,
        upload: Some(Upload {
            headers,
            with_auth: false,
        }),
    };
    http.put_file(&req, path, len).await.map(|_| ())
}

/// PUTs the manifest.
pub async fn put_manifest(
    http: &Http,
    t: &Target<'_>,
    to: &UploadTo,
    bytes: Vec<u8>,
) -> Result<(), WandbError> {
    http.post(&Request {
        url: &to.url,
        what: "artifact manifest upload",
        run: t.display,
        body: bytes,
        gzip: false,
        graphql: false,
        upload: Some(Upload {
            headers: to.headers.clone(),
            with_auth: false,
        }),
    })
    .await
    .map(|_| ())
}

pub async fn commit(
    http: &Http,
    base_url: &str,
    t: &Target<'_>,
    artifact_id: &str,
) -> Result<(), WandbError> {
    call(
        http,
        base_url,
        "CommitArtifact",
        t,
        COMMIT_ARTIFACT,
        json!({"artifactID": artifact_id}),
    )
    .await
    .map(|_| ())
}
