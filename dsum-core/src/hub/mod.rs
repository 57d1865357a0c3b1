//! `--model org/name[@revision]`: model folders from the Hugging Face Hub cache, shared with
//! Python (`huggingface_hub` writes and reads the same layout), downloading what is missing.
//! Follows `huggingface_hub`'s `file_download.py`: HEAD `{endpoint}/{repo}/resolve/{rev}/{file}`
//! for the commit and etag, blobs by etag, snapshot symlinks, `refs/<revision>`.

mod cache;
mod download;

pub use cache::HubCache;
pub use download::{HubClient, NoProgress, Progress};

use std::string::{String, ToString};

use crate::error::{Error, Result};

/// A model repository and revision: `org/name` or `org/name@revision` (default `main`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoRef {
    pub repo: String,
    pub revision: String,
}

impl RepoRef {
    /// Parse `org/name[@revision]`; `None` when `s` is not shaped like a repo id (a path).
    pub fn parse(s: &str) -> Option<Self> {
        let (repo, revision) = match s.split_once('@') {
            Some((r, rev)) => (r, rev),
            None => (s, "main"),
        };
        let (org, name) = repo.split_once('/')?;
        let part_ok = |p: &str| {
            !p.is_empty()
                && p.len() <= 96
                && !p.starts_with(['.', '-'])
                && !p.contains("..")
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        let rev_ok = !revision.is_empty()
            && !revision.contains("..")
            && !revision.starts_with('/')
            && revision
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
        (part_ok(org) && part_ok(name) && rev_ok).then(|| RepoRef {
            repo: repo.to_string(),
            revision: revision.to_string(),
        })
    }
}

/// A commit hash (what `refs/<revision>` holds and snapshot folders are named by).
pub(crate) fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Weight files a model folder may have, in the order transformers looks for them.
pub(crate) const WEIGHT_FILES: &[&str] = &[
    "model.safetensors.index.json",
    "model.safetensors",
    "pytorch_model.bin.index.json",
    "pytorch_model.bin",
];

/// Side files fetched when present.
pub(crate) const MODEL_FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
];

/// Resolve `--model`: an existing folder wins; otherwise a repo id from the cache, downloading
/// what is missing unless `HF_HUB_OFFLINE=1`.
pub fn resolve_model(arg: &str, progress: &dyn Progress) -> Result<std::path::PathBuf> {
    let p = std::path::Path::new(arg);
    if p.is_dir() {
        return Ok(p.to_path_buf());
    }
    let Some(r) = RepoRef::parse(arg) else {
        return Err(Error::io(
            arg.to_string(),
            "not a folder, and not a Hub repo id like `org/name` or `org/name@revision`",
        ));
    };
    HubClient::from_env()?.resolve_model(&r, progress)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids() {
        let r = RepoRef::parse("digit82/kobart-summarization").unwrap();
        assert_eq!(
            (r.repo.as_str(), r.revision.as_str()),
            ("digit82/kobart-summarization", "main")
        );
        let r = RepoRef::parse("Qwen/Qwen2.5-0.5B-Instruct@v1.0").unwrap();
        assert_eq!(r.revision, "v1.0");
        for bad in [
            "tiny",
            "./a/b",
            "/abs/path",
            "a/b/c",
            "../x",
            "a/b@",
            "a/..",
            "a/b@../x",
        ] {
            assert!(RepoRef::parse(bad).is_none(), "{bad}");
        }
    }
}
