//! The artifact calls as wandb-core 0.31.0 makes them (query texts and
//! variables as recorded in tests/fixtures/wandb-sdk-artifacts.json;
//! the order is core's `ArtifactSaver.Save`): `CreateArtifact`, a first
//! `CreateArtifactManifest` without upload, `CreateArtifactFiles`, a PUT
//! per file the server does not hold, a second `CreateArtifactManifest`
//! with the manifest's digest and upload URL, its PUT, `CommitArtifact`.
//! A file announced in parts ([`super::multipart`]) is sent as one PUT per
//! part, then `CompleteMultipartUploadArtifact` with the parts' ETags.

use serde_json::{json, Value};

use crate::sink::wandb::http::{Http, Request, Upload, WandbError};

pub const CREATE_ARTIFACT: &str = "\nmutation CreateArtifact ($input: CreateArtifactInput!) {\n\tcreateArtifact(input: $input) {\n\t\t... CreatedArtifact\n\t}\n}\nfragment CreatedArtifact on CreateArtifactPayload {\n\tartifact {\n\t\tid\n\t\tstate\n\t\tartifactSequence {\n\t\t\tlatestArtifact {\n\t\t\t\tid\n\t\t\t}\n\t\t}\n\t}\n}\n";
pub const CREATE_ARTIFACT_MANIFEST: &str = "\nmutation CreateArtifactManifest ($artifactID: ID!, $baseArtifactID: ID, $name: String!, $digest: String!, $entityName: String!, $projectName: String!, $runName: String!, $manifestType: ArtifactManifestType!, $includeUpload: Boolean!) {\n\tcreateArtifactManifest(input: {artifactID:$artifactID,baseArtifactID:$baseArtifactID,name:$name,digest:$digest,entityName:$entityName,projectName:$projectName,runName:$runName,type:$manifestType}) {\n\t\tartifactManifest {\n\t\t\tid\n\t\t\tfile {\n\t\t\t\tid\n\t\t\t\tuploadUrl @include(if: $includeUpload)\n\t\t\t\tuploadHeaders @include(if: $includeUpload)\n\t\t\t}\n\t\t}\n\t}\n}\n";
pub const CREATE_ARTIFACT_FILES: &str = "\nmutation CreateArtifactFiles ($input: CreateArtifactFilesInput!) {\n\tcreateArtifactFiles(input: $input) {\n\t\tfiles {\n\t\t\tedges {\n\t\t\t\tnode {\n\t\t\t\t\tstoragePath\n\t\t\t\t\tuploadUrl\n\t\t\t\t\tuploadHeaders\n\t\t\t\t\tuploadMultipartUrls {\n\t\t\t\t\t\tuploadID\n\t\t\t\t\t\tuploadUrlParts {\n\t\t\t\t\t\t\tpartNumber\n\t\t\t\t\t\t\tuploadUrl\n\t\t\t\t\t\t}\n\t\t\t\t\t}\n\t\t\t\t\tartifact {\n\t\t\t\t\t\tid\n\t\t\t\t\t}\n\t\t\t\t}\n\t\t\t}\n\t\t}\n\t}\n}\n";
pub const COMPLETE_MULTIPART_UPLOAD_ARTIFACT: &str = "\nmutation CompleteMultipartUploadArtifact ($completeMultipartAction: CompleteMultipartAction!, $completedParts: [UploadPartsInput!]!, $artifactID: ID!, $storagePath: String!, $uploadID: String!) {\n\tcompleteMultipartUploadArtifact(input: {completeMultipartAction:$completeMultipartAction,completedParts:$completedParts,artifactID:$artifactID,storagePath:$storagePath,uploadID:$uploadID}) {\n\t\tdigest\n\t}\n}\n";
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
    // GraphQL errors in a 200, classified as the run upsert's are: about
    // this run (a refusal of this version: set aside by the caller) or
    // about every run (key, entity, project: retried).
    crate::sink::wandb::gql_errors::check(&v, what, t.display, &url)?;
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

/// A file announced to `CreateArtifactFiles`.
#[derive(Debug, Clone)]
pub struct Announced<'a> {
    pub name: &'a str,
    /// MD5 of the whole file, base64.
    pub md5_b64: &'a str,
    /// For a file sent in parts: each part's number and MD5 (hex).
    pub parts: Option<&'a [(u64, String)]>,
}

/// The URLs of a multipart upload the server began.
#[derive(Debug, Clone)]
pub struct MultipartUrls {
    pub upload_id: String,
    /// Part number -> URL, as handed out.
    pub parts: Vec<(u64, String)>,
}

/// `CreateArtifactFiles`' answer for one file.
#[derive(Debug, Clone)]
pub struct FileAnswer {
    /// Where to upload it whole; `None`: the server holds this content.
    pub upload: Option<UploadTo>,
    /// For a file announced in parts the server does not hold.
    pub multipart: Option<MultipartUrls>,
    pub storage_path: Option<String>,
    /// The version the content was born with.
    pub birth: String,
}

/// `CreateArtifactFiles` for the files of a version, in one request: per
/// file, in order, how to upload it ([`FileAnswer`]).
pub async fn create_files(
    http: &Http,
    base_url: &str,
    t: &Target<'_>,
    artifact_id: &str,
    manifest_id: &str,
    files: &[Announced<'_>],
) -> Result<Vec<FileAnswer>, WandbError> {
    const W: &str = "CreateArtifactFiles";
    let announced: Vec<Value> = files
        .iter()
        .map(|f| {
            let parts = f.parts.map(|ps| {
                ps.iter()
                    .map(|(n, hex)| json!({"hexMD5": hex, "partNumber": n}))
                    .collect::<Vec<_>>()
            });
            json!({
                "artifactID": artifact_id,
                "artifactManifestID": manifest_id,
                "md5": f.md5_b64,
                "mimetype": null,
                "name": f.name,
                "uploadPartsInput": parts,
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
    edges
        .iter()
        .zip(files)
        .map(|(e, f)| {
            let node = &e["node"];
            let birth = node["artifact"]["id"]
                .as_str()
                .unwrap_or(artifact_id)
                .to_string();
            let upload = node["uploadUrl"].as_str().map(|u| UploadTo {
                url: u.to_string(),
                headers: headers(&node["uploadHeaders"]),
            });
            let m = &node["uploadMultipartUrls"];
            let multipart = match m["uploadID"].as_str() {
                Some(id) if upload.is_some() => {
                    let parts: Vec<(u64, String)> = m["uploadUrlParts"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|p| {
                            Some((
                                p["partNumber"].as_u64()?,
                                p["uploadUrl"].as_str()?.to_string(),
                            ))
                        })
                        .collect();
                    Some(MultipartUrls {
                        upload_id: id.to_string(),
                        parts,
                    })
                }
                _ => None,
            };
            if upload.is_some() && f.parts.is_some() && multipart.is_none() {
                // Announced in parts: a single URL would not take 2 GiB.
                return Err(missing(
                    W,
                    t,
                    "part upload URLs for a file announced in parts",
                ));
            }
            Ok(FileAnswer {
                upload,
                multipart,
                storage_path: node["storagePath"].as_str().map(str::to_string),
                birth,
            })
        })
        .collect()
}

/// Sends a file in parts: each part read from disk and PUT on its own
/// (the content type core sends: the upload headers' `Content-Type`,
/// else empty), then `CompleteMultipartUploadArtifact` with their ETags.
/// `parts` are the ones announced, with their MD5s (hex).
#[allow(clippy::too_many_arguments)]
pub async fn put_parts(
    http: &Http,
    base_url: &str,
    t: &Target<'_>,
    answer: &FileAnswer,
    urls: &MultipartUrls,
    path: &std::path::Path,
    parts: &[super::multipart::Part],
    hexes: &[(u64, String)],
) -> Result<(), WandbError> {
    const W: &str = "artifact part upload";
    let content_type = answer
        .upload
        .as_ref()
        .and_then(|u| {
            u.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        })
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let mut etags = Vec::with_capacity(parts.len());
    for (p, (n, hex)) in parts.iter().zip(hexes) {
        let url = urls
            .parts
            .iter()
            .find(|(m, _)| m == n)
            .map(|(_, u)| u.as_str())
            .ok_or_else(|| missing("CreateArtifactFiles", t, &format!("URL for part {n}")))?;
        let md5 = super::multipart::hex_to_b64(hex).ok_or_else(|| WandbError::Protocol {
            what: W,
            run: t.display.to_string(),
            message: format!("part {n} of {}: bad MD5 {hex}", path.display()),
        })?;
        let req = Request {
            url,
            what: W,
            run: t.display,
            body: Vec::new(),
            gzip: false,
            graphql: false,
            upload: Some(Upload {
                headers: vec![
                    ("Content-MD5".into(), md5),
                    ("Content-Length".into(), p.len.to_string()),
                    ("Content-Type".into(), content_type.clone()),
                ],
                with_auth: false,
            }),
        };
        let etag = http
            .put_file_range(&req, path, p.offset, p.len)
            .await?
            .filter(|e| !e.is_empty())
            .ok_or_else(|| WandbError::Protocol {
                what: W,
                run: t.display.to_string(),
                message: format!(
                    "part {n} of {} was answered without an ETag",
                    path.display()
                ),
            })?;
        etags.push(json!({"hexMD5": etag, "partNumber": n}));
    }
    let storage_path = answer
        .storage_path
        .as_deref()
        .ok_or_else(|| missing("CreateArtifactFiles", t, "storagePath for a file in parts"))?;
    call(
        http,
        base_url,
        "CompleteMultipartUploadArtifact",
        t,
        COMPLETE_MULTIPART_UPLOAD_ARTIFACT,
        json!({
            "artifactID": answer.birth,
            "completeMultipartAction": "Complete",
            "completedParts": etags,
            "storagePath": storage_path,
            "uploadID": urls.upload_id,
        }),
    )
    .await
    .map(|_| ())
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
