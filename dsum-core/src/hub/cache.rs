//! The Hugging Face cache layout, read and written exactly like `huggingface_hub`:
//! `<root>/models--org--name/{refs/<revision>, blobs/<etag>, snapshots/<commit>/<file> -> ../../blobs/<etag>}`
//! and `.no_exist/<commit>/<file>` markers for files the repo does not have.

use std::path::{Path, PathBuf};
use std::string::{String, ToString};
use std::vec::Vec;

use super::{is_commit, RepoRef, WEIGHT_FILES};
use crate::error::{Error, Result};

#[derive(Clone, Debug)]
pub struct HubCache {
    pub root: PathBuf,
}

impl HubCache {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        HubCache { root: root.into() }
    }

    /// `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub` (as Python).
    pub fn from_env() -> Result<Self> {
        if let Some(p) = std::env::var_os("HF_HUB_CACHE").filter(|p| !p.is_empty()) {
            return Ok(Self::new(p));
        }
        if let Some(p) = std::env::var_os("HF_HOME").filter(|p| !p.is_empty()) {
            return Ok(Self::new(PathBuf::from(p).join("hub")));
        }
        let home = std::env::var_os("XDG_CACHE_HOME")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .ok_or_else(|| {
                Error::io(
                    "HF_HUB_CACHE",
                    "no cache folder: set HF_HUB_CACHE or HF_HOME",
                )
            })?;
        Ok(Self::new(home.join("huggingface").join("hub")))
    }

    pub fn repo_dir(&self, repo: &str) -> PathBuf {
        self.root
            .join(format!("models--{}", repo.replace('/', "--")))
    }

    /// The commit a revision points at: itself when it is a hash, else `refs/<revision>`.
    pub fn commit_for(&self, r: &RepoRef) -> Option<String> {
        if is_commit(&r.revision) {
            return Some(r.revision.clone());
        }
        let text =
            std::fs::read_to_string(self.repo_dir(&r.repo).join("refs").join(&r.revision)).ok()?;
        let c = text.trim();
        is_commit(c).then(|| c.to_string())
    }

    pub fn snapshot_dir(&self, repo: &str, commit: &str) -> PathBuf {
        self.repo_dir(repo).join("snapshots").join(commit)
    }

    pub fn blob_path(&self, repo: &str, etag: &str) -> PathBuf {
        self.repo_dir(repo).join("blobs").join(etag)
    }

    pub fn no_exist_path(&self, repo: &str, commit: &str, file: &str) -> PathBuf {
        self.repo_dir(repo)
            .join(".no_exist")
            .join(commit)
            .join(file)
    }

    /// The snapshot folder of `r` when it already holds a loadable model: config.json and a
    /// complete set of weights (every shard of an index).
    pub fn cached_model(&self, r: &RepoRef) -> Option<PathBuf> {
        let commit = self.commit_for(r)?;
        let dir = self.snapshot_dir(&r.repo, &commit);
        (dir.join("config.json").is_file() && weights_complete(&dir)).then_some(dir)
    }

    pub fn write_ref(&self, r: &RepoRef, commit: &str) -> Result<()> {
        if is_commit(&r.revision) {
            return Ok(());
        }
        let path = self.repo_dir(&r.repo).join("refs").join(&r.revision);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io(parent.display().to_string(), e))?;
        }
        crate::io::atomic::write_atomic(&path, commit.as_bytes())
    }

    /// Point `snapshots/<commit>/<file>` at `blobs/<etag>` (relative symlink, as Python; a
    /// copy where symlinks are unavailable).
    pub fn link(&self, repo: &str, commit: &str, file: &str, etag: &str) -> Result<PathBuf> {
        let dst = self.snapshot_dir(repo, commit).join(file);
        let parent = dst.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent.display().to_string(), e))?;
        let blob = self.blob_path(repo, etag);
        let tmp = crate::io::atomic::temp_path(&dst);
        let _ = std::fs::remove_file(&tmp);
        #[cfg(unix)]
        {
            let depth = file.split('/').count() + 1; // snapshots/<commit>/<sub/dirs>
            let mut rel = PathBuf::new();
            for _ in 0..depth {
                rel.push("..");
            }
            rel.push("blobs");
            rel.push(etag);
            std::os::unix::fs::symlink(&rel, &tmp)
                .map_err(|e| Error::io(tmp.display().to_string(), e))?;
        }
        #[cfg(not(unix))]
        std::fs::copy(&blob, &tmp).map_err(|e| Error::io(tmp.display().to_string(), e))?;
        let _ = blob;
        crate::io::atomic::commit(&tmp, &dst)?;
        Ok(dst)
    }

    pub fn mark_missing(&self, repo: &str, commit: &str, file: &str) -> Result<()> {
        let p = self.no_exist_path(repo, commit, file);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io(parent.display().to_string(), e))?;
        }
        std::fs::write(&p, b"").map_err(|e| Error::io(p.display().to_string(), e))
    }
}

/// True when `dir` has weights and, for an index, every shard it names.
pub(crate) fn weights_complete(dir: &Path) -> bool {
    for w in WEIGHT_FILES {
        let p = dir.join(w);
        if !p.is_file() {
            continue;
        }
        if !w.ends_with(".index.json") {
            return true;
        }
        return match crate::io::checkpoint::shard_names(&p) {
            Ok(names) => names.iter().all(|n| dir.join(n).is_file()),
            Err(_) => false,
        };
    }
    false
}

/// Shard names of an index file (used by the downloader).
pub(crate) fn shards(index: &Path) -> Result<Vec<String>> {
    crate::io::checkpoint::shard_names(index)
}
