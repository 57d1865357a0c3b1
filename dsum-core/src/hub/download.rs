//! Downloads into the cache over HTTP (`ureq`, rustls): HEAD for the commit, etag and size,
//! then GET into `blobs/<etag>.incomplete`, resumed with `Range` after an interruption, and
//! renamed into place when complete. `HF_ENDPOINT` points it at a mirror or a test server.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::string::{String, ToString};
use std::time::Duration;

use super::cache::{shards, weights_complete, HubCache};
use super::{RepoRef, MODEL_FILES, WEIGHT_FILES};
use crate::error::{Error, Result};

const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Download progress, drawn by the frontend (the CLI uses an indicatif bar on stderr).
pub trait Progress {
    /// A file starts: `total` bytes (0 if unknown), `done` of them already on disk.
    fn start(&self, file: &str, total: u64, done: u64);
    fn advance(&self, bytes: u64);
    fn finish(&self);
}

/// No output.
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: &str, _: u64, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

pub struct HubClient {
    pub cache: HubCache,
    pub endpoint: String,
    token: Option<String>,
    offline: bool,
    agent: ureq::Agent,
}

/// What a HEAD tells about one file.
struct Meta {
    commit: String,
    etag: String,
    size: Option<u64>,
    /// Where to GET the bytes (a CDN redirect, or the resolve URL itself).
    url: String,
}

fn header_value(resp: &ureq::Response, name: &str) -> Option<String> {
    resp.header(name)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

impl HubClient {
    pub fn new(cache: HubCache, endpoint: &str, token: Option<String>) -> Self {
        let agent = ureq::AgentBuilder::new()
            .redirects(0)
            .timeout_connect(Duration::from_secs(30))
            .timeout_read(Duration::from_secs(60))
            .build();
        HubClient {
            cache,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token,
            offline: false,
            agent,
        }
    }

    /// Cache and endpoint from `HF_HUB_CACHE`/`HF_HOME`, `HF_ENDPOINT`, `HF_TOKEN` (or the
    /// token file Python's `huggingface-cli login` writes) and `HF_HUB_OFFLINE`.
    pub fn from_env() -> Result<Self> {
        let cache = HubCache::from_env()?;
        let endpoint = std::env::var("HF_ENDPOINT")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let token = std::env::var("HF_TOKEN")
            .ok()
            .or_else(|| {
                // HF_HOME, else `$XDG_CACHE_HOME/huggingface` or `~/.cache/huggingface`, as Python.
                let home = std::env::var_os("HF_HOME")
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from)
                    .or_else(|| {
                        let cache = std::env::var_os("XDG_CACHE_HOME")
                            .filter(|p| !p.is_empty())
                            .map(PathBuf::from)
                            .or_else(|| {
                                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache"))
                            })?;
                        Some(cache.join("huggingface"))
                    })?;
                std::fs::read_to_string(home.join("token")).ok()
            })
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        let mut c = Self::new(cache, &endpoint, token);
        c.offline = matches!(
            std::env::var("HF_HUB_OFFLINE").as_deref(),
            Ok("1") | Ok("true") | Ok("TRUE") | Ok("yes")
        );
        Ok(c)
    }

    pub fn set_offline(&mut self, offline: bool) {
        self.offline = offline;
    }

    fn resolve_url(&self, repo: &str, rev: &str, file: &str) -> String {
        format!(
            "{}/{repo}/resolve/{}/{file}",
            self.endpoint,
            rev.replace('/', "%2F")
        )
    }

    fn with_token(&self, req: ureq::Request, url: &str) -> ureq::Request {
        match &self.token {
            // Only to the endpoint itself, never to a CDN it redirects to.
            Some(t) if url.starts_with(&format!("{}/", self.endpoint)) => {
                req.set("Authorization", &format!("Bearer {t}"))
            }
            _ => req,
        }
    }

    /// The snapshot folder of `r`, downloading what is missing.
    pub fn resolve_model(&self, r: &RepoRef, progress: &dyn Progress) -> Result<PathBuf> {
        if let Some(dir) = self.cache.cached_model(r) {
            return Ok(dir);
        }
        let id = format!("{}@{}", r.repo, r.revision);
        if self.offline {
            return Err(Error::io(
                id,
                format!(
                    "not in the cache {} and HF_HUB_OFFLINE is set",
                    self.cache.root.display()
                ),
            ));
        }
        let mut commit: Option<String> = self.cache.commit_for(r);
        let fetch = |file: &str, commit: &mut Option<String>| -> Result<Option<PathBuf>> {
            self.fetch_file(r, commit, file, progress)
        };
        if fetch("config.json", &mut commit)?.is_none() {
            return Err(Error::io(
                id,
                "the repo has no config.json (not a transformers model?)",
            ));
        }
        for f in &MODEL_FILES[1..] {
            fetch(f, &mut commit)?;
        }
        let mut found = false;
        for w in WEIGHT_FILES {
            let Some(path) = fetch(w, &mut commit)? else {
                continue;
            };
            if w.ends_with(".index.json") {
                for shard in shards(&path)? {
                    if fetch(&shard, &mut commit)?.is_none() {
                        return Err(Error::io(
                            id,
                            format!("{w} names `{shard}`, which the repo does not have"),
                        ));
                    }
                }
            }
            found = true;
            break;
        }
        let commit =
            commit.ok_or_else(|| Error::io(id.clone(), "the server sent no X-Repo-Commit"))?;
        self.cache.write_ref(r, &commit)?;
        let dir = self.cache.snapshot_dir(&r.repo, &commit);
        if !found || !weights_complete(&dir) {
            return Err(Error::io(
                id,
                "no weights in the repo (expected model.safetensors or pytorch_model.bin, or their .index.json)",
            ));
        }
        Ok(dir)
    }

    /// One file into the cache; `None` when the repo does not have it. `commit` is filled from
    /// the first answer and then used for every later request, so all files come from one commit.
    fn fetch_file(
        &self,
        r: &RepoRef,
        commit: &mut Option<String>,
        file: &str,
        progress: &dyn Progress,
    ) -> Result<Option<PathBuf>> {
        if let Some(c) = commit.as_deref() {
            let snap = self.cache.snapshot_dir(&r.repo, c).join(file);
            if snap.is_file() {
                return Ok(Some(snap));
            }
            if self.cache.no_exist_path(&r.repo, c, file).is_file() {
                return Ok(None);
            }
        }
        let rev = commit.clone().unwrap_or_else(|| r.revision.clone());
        let Some(meta) = self.head(r, &rev, file)? else {
            if let Some(c) = commit.as_deref() {
                self.cache.mark_missing(&r.repo, c, file)?;
            }
            return Ok(None);
        };
        if commit.is_none() {
            *commit = Some(meta.commit.clone());
        }
        let blob = self.cache.blob_path(&r.repo, &meta.etag);
        if !blob.is_file() {
            self.download(&meta, &blob, file, progress)?;
        }
        let c = commit.clone().unwrap_or(meta.commit);
        Ok(Some(self.cache.link(&r.repo, &c, file, &meta.etag)?))
    }

    /// HEAD the resolve URL (following same-host redirects of renamed repos); `None` on 404.
    fn head(&self, r: &RepoRef, rev: &str, file: &str) -> Result<Option<Meta>> {
        let mut url = self.resolve_url(&r.repo, rev, file);
        for _ in 0..5 {
            let req = self.with_token(
                self.agent.head(&url).set("Accept-Encoding", "identity"),
                &url,
            );
            let resp = match req.call() {
                Ok(resp) => resp,
                Err(ureq::Error::Status(404, _)) => return Ok(None),
                Err(ureq::Error::Status(code @ (401 | 403), _)) => {
                    return Err(Error::io(
                        url,
                        format!("HTTP {code}: the repo is private or gated, or does not exist; set HF_TOKEN"),
                    ))
                }
                Err(e) => return Err(Error::io(url, e)),
            };
            let location = header_value(&resp, "location");
            if (300..400).contains(&resp.status()) {
                if let Some(loc) = location.as_deref().filter(|l| l.starts_with('/')) {
                    url = format!("{}{loc}", self.endpoint);
                    continue;
                }
            }
            let commit = header_value(&resp, "x-repo-commit").ok_or_else(|| {
                Error::io(
                    url.clone(),
                    "no X-Repo-Commit header (is HF_ENDPOINT a Hub?)",
                )
            })?;
            if !super::is_commit(&commit) {
                return Err(Error::io(
                    url,
                    format!("X-Repo-Commit `{commit}` is not a commit hash"),
                ));
            }
            let etag = header_value(&resp, "x-linked-etag")
                .or_else(|| header_value(&resp, "etag"))
                .map(|e| e.trim_start_matches("W/").trim_matches('"').to_string())
                .filter(|e| {
                    !e.is_empty() && e.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                })
                .ok_or_else(|| Error::io(url.clone(), "no usable ETag header"))?;
            let size = header_value(&resp, "x-linked-size")
                .or_else(|| header_value(&resp, "content-length"))
                .and_then(|s| s.parse().ok());
            let get_url = match location {
                Some(l) if (300..400).contains(&resp.status()) => l,
                _ => url,
            };
            return Ok(Some(Meta {
                commit,
                etag,
                size,
                url: get_url,
            }));
        }
        Err(Error::io(url, "too many redirects"))
    }

    /// GET into `<blob>.incomplete`, resuming from what is already there, then rename.
    fn download(
        &self,
        meta: &Meta,
        blob: &Path,
        file: &str,
        progress: &dyn Progress,
    ) -> Result<()> {
        let parent = blob.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent.display().to_string(), e))?;
        let mut part = blob.as_os_str().to_owned();
        part.push(".incomplete");
        let part = PathBuf::from(part);
        let shown = part.display().to_string();
        let mut have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        if meta.size.is_some_and(|s| have > s) {
            have = 0;
        }
        let mut req = self.with_token(
            self.agent.get(&meta.url).set("Accept-Encoding", "identity"),
            &meta.url,
        );
        if have > 0 {
            req = req.set("Range", &format!("bytes={have}-"));
        }
        // The CDN redirect of a HEAD is followed here; the token is not sent there.
        let agent_follow = ureq::AgentBuilder::new().redirects(5).build();
        let resp = match req.call() {
            Ok(r) if (300..400).contains(&r.status()) => {
                let loc = header_value(&r, "location")
                    .ok_or_else(|| Error::io(meta.url.clone(), "redirect without Location"))?;
                let mut q = agent_follow.get(&loc);
                if have > 0 {
                    q = q.set("Range", &format!("bytes={have}-"));
                }
                q.call().map_err(|e| Error::io(loc, e))?
            }
            Ok(r) => r,
            Err(ureq::Error::Status(416, _)) if Some(have) == meta.size => {
                return self.finish_blob(&part, blob, meta);
            }
            Err(e) => return Err(Error::io(meta.url.clone(), e)),
        };
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&part)
            .map_err(|e| Error::io(shown.clone(), e))?;
        if resp.status() != 206 {
            // The server ignored the Range: start over.
            have = 0;
            out.set_len(0).map_err(|e| Error::io(shown.clone(), e))?;
        }
        progress.start(file, meta.size.unwrap_or(0), have);
        let mut reader = resp.into_reader();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    progress.finish();
                    return Err(Error::io(
                        meta.url.clone(),
                        format!("download interrupted ({e}); run again to resume"),
                    ));
                }
            };
            out.write_all(&buf[..n])
                .map_err(|e| Error::io(shown.clone(), e))?;
            progress.advance(n as u64);
        }
        progress.finish();
        out.sync_all().map_err(|e| Error::io(shown.clone(), e))?;
        drop(out);
        self.finish_blob(&part, blob, meta)
    }

    fn finish_blob(&self, part: &Path, blob: &Path, meta: &Meta) -> Result<()> {
        let got = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
        if let Some(size) = meta.size {
            if got != size {
                return Err(Error::io(
                    part.display().to_string(),
                    format!("incomplete download: {got} of {size} bytes; run again to resume"),
                ));
            }
        }
        crate::io::atomic::commit(part, blob)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_only_goes_to_the_endpoint() {
        let c = HubClient::new(
            HubCache::new("unused"),
            "http://127.0.0.1:1",
            Some("t".into()),
        );
        let auth = |url: &str| {
            c.with_token(c.agent.get(url), url)
                .header("Authorization")
                .map(str::to_string)
        };
        assert_eq!(
            auth("http://127.0.0.1:1/org/name/resolve/main/config.json").as_deref(),
            Some("Bearer t")
        );
        assert_eq!(auth("http://127.0.0.1:2/cdn/blob"), None);
        assert_eq!(auth("http://127.0.0.1:10/x"), None);
    }
}
