//! The stand-in's model of W&B artifacts: what the server does with the
//! calls wandb-core's artifact saver makes (core/pkg/artifacts/saver.go in
//! wandb/wandb; the calls themselves are recorded from the real SDK in
//! tests/fixtures/wandb-sdk-artifacts.json):
//!
//! `CreateArtifact` makes a PENDING version, or, when a committed version
//! of the collection has the same digest (`enableDigestDeduplication`),
//! answers with it, COMMITTED, and moves the requested aliases onto it;
//! `CreateArtifactManifest` hands out the manifest's upload URL;
//! `CreateArtifactFiles` hands out one upload URL per file whose content
//! (by MD5) the server does not hold yet, and none for one it holds;
//! uploads (PUT) are checked against the MD5 announced; a file announced
//! with `uploadPartsInput` (core sends it from 2 GiB on) gets instead one
//! URL per part (`uploadMultipartUrls`), each part PUT is checked against
//! its announced MD5 (hex) and its `Content-MD5`, and answered with the
//! part's ETag as S3 gives it; `CompleteMultipartUploadArtifact` with
//! every part's ETag makes the file held; `CommitArtifact`
//! commits a version only when its manifest and every file of it arrived,
//! numbers it (v0, v1, ...) and moves its aliases onto it.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde_json::{json, Value};

use super::standin::StandIn;

/// One version of an artifact as the stand-in holds it.
#[derive(Debug, Clone, Default)]
pub struct Version {
    pub id: String,
    pub entity: String,
    pub project: String,
    pub collection: String,
    pub type_name: String,
    pub digest: String,
    /// "PENDING" or "COMMITTED".
    pub state: String,
    /// Index among the collection's committed versions (`v0`, `v1`...).
    pub version: Option<u32>,
    /// Aliases asked for at creation, applied at commit.
    pub requested_aliases: Vec<String>,
    pub aliases: Vec<String>,
    pub metadata: Option<Value>,
    pub run: Option<String>,
    pub history_step: Option<i64>,
    /// The uploaded `wandb_manifest.json`.
    pub manifest: Option<Value>,
    /// Files announced by CreateArtifactFiles: name -> MD5 (base64).
    pub files: BTreeMap<String, String>,
    /// Runs that declared they used it (UseArtifact).
    pub used_by: Vec<String>,
}

/// Everything artifact-related the stand-in holds.
#[derive(Debug, Clone, Default)]
pub struct Store {
    pub versions: Vec<Version>,
    /// File contents held: MD5 (base64) -> size.
    pub blobs: BTreeMap<String, u64>,
    /// Uploads that arrived with the wrong MD5 or length (rejected).
    pub bad_uploads: Vec<String>,
    /// Commits refused (manifest or files missing).
    pub refused_commits: Vec<String>,
    /// Multipart uploads handed out, by upload id.
    pub multipart: BTreeMap<String, Multipart>,
    /// `CompleteMultipartUploadArtifact` calls refused (and why).
    pub refused_completions: Vec<String>,
    next: u32,
}

/// One multipart upload the stand-in handed out.
#[derive(Debug, Clone, Default)]
pub struct Multipart {
    pub artifact_id: String,
    pub storage_path: String,
    /// The whole file's MD5 (base64), as CreateArtifactFiles announced it.
    pub md5: String,
    /// Announced parts: part number -> MD5 (hex).
    pub announced: BTreeMap<u64, String>,
    /// Parts received: part number -> (MD5 hex, length).
    pub received: BTreeMap<u64, (String, u64)>,
    pub completed: bool,
}

impl Store {
    /// The committed versions of a collection, by version index.
    pub fn committed(&self, collection: &str) -> Vec<&Version> {
        let mut v: Vec<&Version> = self
            .versions
            .iter()
            .filter(|v| v.collection == collection && v.state == "COMMITTED")
            .collect();
        v.sort_by_key(|v| v.version);
        v
    }

    fn by_id(&mut self, id: &str) -> Option<&mut Version> {
        self.versions.iter_mut().find(|v| v.id == id)
    }

    /// Answers one artifact GraphQL operation (`None`: not an artifact op).
    pub fn graphql(&mut self, op: &str, v: &Value, addr: SocketAddr) -> Option<Value> {
        Some(match op {
            "CreateArtifact" => self.create(&v["input"]),
            "CreateArtifactManifest" => {
                let id = v["artifactID"].as_str().unwrap_or("");
                if self.by_id(id).is_none() {
                    return Some(json!({"createArtifactManifest": null}));
                }
                let mut file = json!({"id": format!("manifest-file-{id}")});
                if v["includeUpload"] == true {
                    file["uploadUrl"] =
                        json!(format!("http://{addr}/artifact-upload/manifest/{id}"));
                    file["uploadHeaders"] = json!([]);
                }
                json!({"createArtifactManifest": {"artifactManifest": {
                    "id": format!("manifest-{id}"), "file": file}}})
            }
            "CreateArtifactFiles" => {
                let mut edges = Vec::new();
                for spec in v["input"]["artifactFiles"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                {
                    let id = spec["artifactID"].as_str().unwrap_or("").to_string();
                    let name = spec["name"].as_str().unwrap_or("").to_string();
                    let md5 = spec["md5"].as_str().unwrap_or("").to_string();
                    if let Some(ver) = self.by_id(&id) {
                        ver.files.insert(name.clone(), md5.clone());
                    }
                    let held = self.blobs.contains_key(&md5);
                    let url = (!held).then(|| {
                        format!("http://{addr}/artifact-upload/file/{}", hex_of_b64(&md5))
                    });
                    let storage_path = format!("wandb_artifacts/{}", hex_of_b64(&md5));
                    let parts: Vec<Value> = spec["uploadPartsInput"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    let multipart = (!held && !parts.is_empty()).then(|| {
                        self.next += 1;
                        let upload_id = format!("upload-{}", self.next);
                        let announced: BTreeMap<u64, String> = parts
                            .iter()
                            .map(|p| {
                                (
                                    p["partNumber"].as_u64().unwrap_or(0),
                                    p["hexMD5"].as_str().unwrap_or("").to_string(),
                                )
                            })
                            .collect();
                        let urls: Vec<Value> = announced
                            .keys()
                            .map(|n| {
                                json!({"partNumber": n, "uploadUrl":
                                format!("http://{addr}/artifact-upload/part/{upload_id}/{n}")})
                            })
                            .collect();
                        self.multipart.insert(
                            upload_id.clone(),
                            Multipart {
                                artifact_id: id.clone(),
                                storage_path: storage_path.clone(),
                                md5: md5.clone(),
                                announced,
                                ..Multipart::default()
                            },
                        );
                        json!({"uploadID": upload_id, "uploadUrlParts": urls})
                    });
                    edges.push(json!({"node": {
                        "storagePath": storage_path,
                        "uploadUrl": url,
                        "uploadHeaders": [],
                        "uploadMultipartUrls": multipart,
                        "artifact": {"id": id}}}));
                }
                json!({"createArtifactFiles": {"files": {"edges": edges}}})
            }
            "CommitArtifact" => {
                let id = v["artifactID"].as_str().unwrap_or("").to_string();
                match self.commit(&id) {
                    Ok(digest) => {
                        json!({"commitArtifact": {"artifact": {"id": id, "digest": digest}}})
                    }
                    Err(why) => {
                        self.refused_commits.push(format!("{id}: {why}"));
                        return Some(json!({"__error": why}));
                    }
                }
            }
            "CompleteMultipartUploadArtifact" => match self.complete_multipart(v) {
                Ok(md5) => json!({"completeMultipartUploadArtifact": {"digest": md5}}),
                Err(why) => {
                    self.refused_completions.push(why.clone());
                    return Some(json!({"__error": why}));
                }
            },
            "ArtifactType" => {
                // What `log_artifact` asks first: the type of the collection's
                // latest version, if any.
                let name = v["name"].as_str().unwrap_or("");
                let (collection, _) = name.split_once(':').unwrap_or((name, ""));
                let ty = self
                    .committed(collection)
                    .last()
                    .map(|v| json!({"artifactType": {"name": v.type_name}}));
                json!({"project": {"artifact": ty}})
            }
            "UseArtifact" => {
                let input = &v["input"];
                let id = input["artifactID"].as_str().unwrap_or("").to_string();
                let run = input["runName"].as_str().unwrap_or("").to_string();
                if let Some(ver) = self.by_id(&id) {
                    ver.used_by.push(run);
                }
                json!({"useArtifact": {"artifact": {"id": id}}})
            }
            _ => return None,
        })
    }

    /// `CompleteMultipartUploadArtifact`: every announced part arrived with
    /// the MD5 announced, and the ETags given back are those parts'.
    fn complete_multipart(&mut self, v: &Value) -> Result<String, String> {
        let upload_id = v["uploadID"].as_str().unwrap_or("");
        let up = self
            .multipart
            .get_mut(upload_id)
            .ok_or_else(|| format!("no multipart upload {upload_id}"))?;
        if v["completeMultipartAction"] != "Complete" {
            return Err(format!(
                "action {} is not Complete",
                v["completeMultipartAction"]
            ));
        }
        if v["artifactID"].as_str() != Some(up.artifact_id.as_str())
            || v["storagePath"].as_str() != Some(up.storage_path.as_str())
        {
            return Err(format!(
                "{upload_id}: artifactID or storagePath not the upload's"
            ));
        }
        let given: Vec<(u64, String)> = v["completedParts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|p| {
                (
                    p["partNumber"].as_u64().unwrap_or(0),
                    p["hexMD5"]
                        .as_str()
                        .unwrap_or("")
                        .trim_matches('"')
                        .to_string(),
                )
            })
            .collect();
        let want: Vec<(u64, String)> = up
            .received
            .iter()
            .map(|(n, (h, _))| (*n, h.clone()))
            .collect();
        let announced: Vec<(u64, String)> =
            up.announced.iter().map(|(n, h)| (*n, h.clone())).collect();
        if want != announced {
            return Err(format!(
                "{upload_id}: parts received {want:?}, announced {announced:?}"
            ));
        }
        if given != want {
            return Err(format!("{upload_id}: ETags {given:?}, parts {want:?}"));
        }
        up.completed = true;
        let size = up.received.values().map(|(_, n)| n).sum();
        let md5 = up.md5.clone();
        self.blobs.insert(md5.clone(), size);
        Ok(md5)
    }

    /// A part of a multipart upload (PUT): its ETag (MD5 hex), or `None`
    /// when it is not the part announced.
    pub fn upload_part(
        &mut self,
        path: &str,
        content_md5: Option<&str>,
        md5_b64: &str,
        len: u64,
    ) -> Option<String> {
        let rest = path.strip_prefix("/artifact-upload/part/")?;
        let (upload_id, n) = rest.split_once('/')?;
        let n: u64 = n.parse().ok()?;
        let hex = hex_of_b64(md5_b64);
        let up = self.multipart.get_mut(upload_id)?;
        if up.announced.get(&n) != Some(&hex) || content_md5 != Some(md5_b64) {
            self.bad_uploads.push(format!(
                "{path}: got {hex} (Content-MD5 {content_md5:?}), {len} bytes; announced {:?}",
                up.announced.get(&n)
            ));
            return None;
        }
        up.received.insert(n, (hex.clone(), len));
        Some(hex)
    }

    fn create(&mut self, input: &Value) -> Value {
        let s = |k: &str| input[k].as_str().unwrap_or("").to_string();
        let (entity, project, collection, digest) = (
            s("entityName"),
            s("projectName"),
            s("artifactCollectionName"),
            s("digest"),
        );
        let aliases: Vec<String> = input["aliases"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|a| a["alias"].as_str().map(str::to_string))
            .collect();
        let latest = self
            .committed(&collection)
            .last()
            .map(|v| json!({"id": v.id}));
        let same = |v: &Version| {
            v.entity == entity
                && v.project == project
                && v.collection == collection
                && v.digest == digest
        };
        if let Some(i) = self
            .versions
            .iter()
            .position(|v| same(v) && v.state == "COMMITTED")
        {
            let id = self.versions[i].id.clone();
            self.move_aliases(&collection, &id, &aliases);
            return created(&id, "COMMITTED", latest);
        }
        if let Some(v) = self
            .versions
            .iter_mut()
            .find(|v| same(v) && v.state == "PENDING")
        {
            v.requested_aliases = aliases;
            let id = v.id.clone();
            return created(&id, "PENDING", latest);
        }
        self.next += 1;
        let id = b64(format!("Artifact:{}", self.next).as_bytes());
        self.versions.push(Version {
            id: id.clone(),
            entity,
            project,
            collection,
            type_name: s("artifactTypeName"),
            digest,
            state: "PENDING".into(),
            requested_aliases: aliases,
            metadata: input["metadata"]
                .as_str()
                .and_then(|m| serde_json::from_str(m).ok()),
            run: input["runName"].as_str().map(str::to_string),
            history_step: input["historyStep"].as_i64(),
            ..Version::default()
        });
        created(&id, "PENDING", latest)
    }

    fn commit(&mut self, id: &str) -> Result<String, String> {
        let blobs = self.blobs.clone();
        let ver = self.by_id(id).ok_or("no such artifact")?;
        if ver.state == "COMMITTED" {
            return Ok(ver.digest.clone());
        }
        let manifest = ver.manifest.clone().ok_or("manifest not uploaded")?;
        let contents = manifest["contents"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for (name, entry) in &contents {
            let md5 = entry["digest"].as_str().unwrap_or("");
            if !blobs.contains_key(md5) {
                return Err(format!("file {name} ({md5}) not uploaded"));
            }
        }
        if manifest_digest(&manifest) != ver.digest {
            return Err(format!(
                "digest {} is not the manifest's {}",
                ver.digest,
                manifest_digest(&manifest)
            ));
        }
        let collection = ver.collection.clone();
        let aliases = ver.requested_aliases.clone();
        let n = self.committed(&collection).len() as u32;
        let ver = self.by_id(id).unwrap();
        ver.state = "COMMITTED".into();
        ver.version = Some(n);
        let digest = ver.digest.clone();
        self.move_aliases(&collection, id, &aliases);
        Ok(digest)
    }

    fn move_aliases(&mut self, collection: &str, id: &str, aliases: &[String]) {
        for v in self
            .versions
            .iter_mut()
            .filter(|v| v.collection == collection)
        {
            if v.id == id {
                for a in aliases {
                    if !v.aliases.contains(a) {
                        v.aliases.push(a.clone());
                    }
                }
            } else {
                v.aliases.retain(|a| !aliases.contains(a));
            }
        }
    }

    /// An upload (PUT) to a URL handed out above: its MD5 and length.
    pub fn upload(&mut self, path: &str, md5_b64: &str, len: u64, body: &[u8]) -> bool {
        if let Some(hex) = path.strip_prefix("/artifact-upload/file/") {
            if hex_of_b64(md5_b64) != hex {
                self.bad_uploads
                    .push(format!("{path}: got {md5_b64}, {len} bytes"));
                return false;
            }
            self.blobs.insert(md5_b64.to_string(), len);
            return true;
        }
        if let Some(id) = path.strip_prefix("/artifact-upload/manifest/") {
            let Ok(manifest) = serde_json::from_slice::<Value>(body) else {
                self.bad_uploads
                    .push(format!("{path}: manifest is not JSON"));
                return false;
            };
            if let Some(v) = self.by_id(id) {
                v.manifest = Some(manifest);
                return true;
            }
        }
        false
    }
}

fn created(id: &str, state: &str, latest: Option<Value>) -> Value {
    json!({"createArtifact": {"artifact": {"id": id, "state": state,
        "artifactSequence": {"latestArtifact": latest}}}})
}

/// The digest of a manifest as the SDK computes it
/// (`ArtifactManifestV1.digest`): MD5 hex of the header line and
/// `path:digest\n` per entry, sorted by path.
pub fn manifest_digest(manifest: &Value) -> String {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    h.update(b"wandb-artifact-manifest-v1\n");
    let contents = manifest["contents"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut names: Vec<&String> = contents.keys().collect();
    names.sort();
    for n in names {
        h.update(format!("{n}:{}\n", contents[n]["digest"].as_str().unwrap_or("")).as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

pub fn b64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in input.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn hex_of_b64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = String::new();
    for c in s.bytes().filter(|&c| c != b'=') {
        let Some(p) = T.iter().position(|&t| t == c) else {
            return "invalid".into();
        };
        bits = (bits << 6) | p as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push_str(&format!("{:02x}", (bits >> n) as u8));
        }
    }
    out
}

/// MD5 of bytes, base64 (the SDK's file digest, `md5_file_b64`).
pub fn md5_b64(data: &[u8]) -> String {
    use md5::{Digest, Md5};
    b64(&Md5::digest(data))
}

/// SHA-256 of bytes, lower-case hex (a bundle manifest's file digest).
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The artifact requests of a stand-in, in order, with what varies from
/// one run to the next replaced: the stand-in's address by `<standin>`,
/// the SDK's random client ids by `<client id>`. GraphQL operations other
/// than the artifact ones are left out.
pub fn requests(standin: &StandIn) -> Value {
    let addr = standin.addr.to_string();
    let ops = [
        "CreateArtifact",
        "CreateArtifactManifest",
        "CreateArtifactFiles",
        "CommitArtifact",
        "UseArtifact",
        "CompleteMultipartUploadArtifact",
        "LinkArtifact",
    ];
    let mut out = Vec::new();
    for r in standin.requests() {
        if r.path == "/graphql" {
            let op = r.operation().unwrap_or_default();
            if !ops.contains(&op.as_str()) {
                continue;
            }
            let mut body = r.json();
            for k in ["clientID", "sequenceClientID"] {
                if body["variables"]["input"].get(k).is_some() {
                    body["variables"]["input"][k] = Value::from("<client id>");
                }
            }
            out.push(serde_json::json!({"graphql": op, "body": body}));
        } else if r.path.starts_with("/artifact-upload/") {
            let mut headers: BTreeMap<String, String> = r
                .headers
                .iter()
                .filter(|(k, _)| k.starts_with("content-") && *k != "content-length")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            headers.remove("content-encoding");
            let (md5, len) = r
                .upload
                .clone()
                .unwrap_or_else(|| (md5_b64(&r.body), r.body.len() as u64));
            let mut rec = serde_json::json!({"put": r.path, "headers": headers,
                "md5": md5, "length": len});
            if r.path.starts_with("/artifact-upload/manifest/") {
                rec["manifest"] = r.json();
            }
            out.push(rec);
        }
    }
    canonical_order(&mut out);
    // The uploaded manifest names the SDK's staging copy (`local_path`),
    // so its MD5 varies: each must be the digest announced for it.
    let mut text = serde_json::to_string(&out)
        .unwrap()
        .replace(&addr, "<standin>");
    for r in out.iter().filter(|r| r.get("manifest").is_some()) {
        let md5 = r["md5"].as_str().unwrap().to_string();
        let announced = out_digests(&text);
        assert!(
            announced.contains(&md5),
            "manifest MD5 {md5} never announced"
        );
        text = text.replace(&md5, "<MD5 of the uploaded manifest>");
    }
    let mut v: Value = serde_json::from_str(&text).unwrap();
    normalize(&mut v);
    v
}

/// Core sends a version's files, and a file's parts, concurrently and
/// announces files in map order: the files of one `CreateArtifactFiles`
/// are put in name order, and each run of file or part uploads in path
/// order (parts by number), so that a recording is the same every time.
fn canonical_order(out: &mut [Value]) {
    for r in out.iter_mut() {
        if let Some(files) = r
            .pointer_mut("/body/variables/input/artifactFiles")
            .and_then(Value::as_array_mut)
        {
            files.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        }
    }
    let key = |r: &Value| -> Option<(String, u64)> {
        let p = r["put"].as_str()?;
        if p.starts_with("/artifact-upload/manifest/") {
            return None;
        }
        match p.rsplit_once('/') {
            Some((dir, n)) if p.starts_with("/artifact-upload/part/") => {
                Some((dir.to_string(), n.parse().unwrap_or(0)))
            }
            _ => Some((p.to_string(), 0)),
        }
    };
    let mut i = 0;
    while i < out.len() {
        if key(&out[i]).is_none() {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < out.len() && key(&out[j]).is_some() {
            j += 1;
        }
        out[i..j].sort_by_key(|r| key(r));
        i = j;
    }
}

/// The manifest digests announced by `CreateArtifactManifest` calls.
fn out_digests(text: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(text).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|r| r["graphql"] == "CreateArtifactManifest")
        .filter_map(|r| {
            r["body"]["variables"]["digest"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

/// An artifact record with what varies from one run to the next
/// replaced: the staging copy's path, the random client ids.
pub fn normalize(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                match k.as_str() {
                    "local_path" => *x = Value::from("<local path>"),
                    "client_id" | "sequence_client_id" => *x = Value::from("<client id>"),
                    _ => normalize(x),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(normalize),
        _ => {}
    }
}

/// The versions the stand-in holds after a recording, per collection.
pub fn versions(standin: &StandIn) -> Value {
    let store = standin.artifacts();
    assert!(store.bad_uploads.is_empty(), "{:?}", store.bad_uploads);
    assert!(
        store.refused_completions.is_empty(),
        "{:?}",
        store.refused_completions
    );
    assert!(
        store.refused_commits.is_empty(),
        "{:?}",
        store.refused_commits
    );
    Value::Array(
        store
            .versions
            .iter()
            .map(|v| {
                serde_json::json!({"collection": v.collection, "type": v.type_name,
                    "state": v.state, "version": v.version, "aliases": v.aliases,
                    "digest": v.digest, "metadata": v.metadata, "run": v.run,
                    "history_step": v.history_step, "used_by": v.used_by,
                    "files": v.files})
            })
            .collect(),
    )
}
