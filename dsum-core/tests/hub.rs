//! `--model org/name`: a cache folder laid out like Python's resolves offline, and a tiny Hub
//! on 127.0.0.1 (spawned here, serving `/{repo}/resolve/{rev}/{file}` with ETag,
//! X-Repo-Commit, an LFS-style redirect and Range) fills the same layout, is not asked again
//! on a second run, and resumes an interrupted download.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use dsum_core::hub::{HubCache, HubClient, NoProgress, RepoRef};
use dsum_core::models::LoadedModel;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const REPO: &str = "dsum-test/tiny-qwen2";

fn qwen2_files() -> HashMap<String, Vec<u8>> {
    let dir = common::fixtures("llama").join("models/qwen2");
    let mut files = HashMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        files.insert(name, std::fs::read(&p).unwrap());
    }
    files
}

/// A stable fake etag: 40 hex for git files, 64 for "LFS" ones, like the Hub.
fn etag(name: &str, data: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes().chain(data.iter().copied()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    let hex = format!("{h:016x}");
    let n = if is_lfs(name) { 64 } else { 40 };
    hex.repeat(4)[..n].to_string()
}

fn is_lfs(name: &str) -> bool {
    name.ends_with(".safetensors")
}

#[derive(Default)]
struct Log {
    /// (method, path, Range header)
    requests: Vec<(String, String, Option<String>)>,
    /// Paths requested with `Authorization: Bearer secret`.
    authorized: Vec<String>,
}

struct Server {
    port: u16,
    log: Arc<Mutex<Log>>,
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Serve `files`; when `cut` is set, the first full GET of that file stops half way.
    fn start(files: HashMap<String, Vec<u8>>, cut: Option<&str>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Log::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (l2, s2) = (log.clone(), stop.clone());
        let cut = cut.map(|s| s.to_string());
        let handle = std::thread::spawn(move || {
            let mut cut = cut;
            // Bounded: a test never needs more than a few dozen requests.
            for stream in listener.incoming().take(200) {
                if s2.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(s) = stream {
                    serve(s, port, &files, &l2, &mut cut);
                }
            }
        });
        Server {
            port,
            log,
            stop,
            handle: Some(handle),
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<(String, String, Option<String>)> {
        self.log.lock().unwrap().requests.clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wake the accept loop
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn serve(
    mut s: TcpStream,
    port: u16,
    files: &HashMap<String, Vec<u8>>,
    log: &Mutex<Log>,
    cut: &mut Option<String>,
) {
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut range = None;
    let mut auth = false;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
            if k.eq_ignore_ascii_case("authorization") && v.trim() == "Bearer secret" {
                auth = true;
            }
        }
    }
    let mut l = log.lock().unwrap();
    l.requests
        .push((method.clone(), path.clone(), range.clone()));
    if auth {
        l.authorized.push(path.clone());
    }
    drop(l);
    let prefix = format!("/{REPO}/resolve/");
    let (file, cdn) = if let Some(rest) = path.strip_prefix(&prefix) {
        let (rev, file) = rest.split_once('/').unwrap_or(("", ""));
        if rev != "main" && rev != COMMIT {
            let _ = s.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            return;
        }
        (file.to_string(), false)
    } else if let Some(file) = path.strip_prefix("/cdn/") {
        (file.to_string(), true)
    } else {
        (String::new(), false)
    };
    let Some(data) = files.get(&file) else {
        let _ = s.write_all(b"HTTP/1.1 404 Not Found\r\nX-Error-Code: EntryNotFound\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    let tag = etag(&file, data);
    if method == "HEAD" {
        let head = if is_lfs(&file) && !cdn {
            format!(
                "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{port}/cdn/{file}\r\nX-Repo-Commit: {COMMIT}\r\n\
                 X-Linked-Etag: \"{tag}\"\r\nX-Linked-Size: {}\r\nETag: \"bogus\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                data.len()
            )
        } else {
            format!(
                "HTTP/1.1 200 OK\r\nX-Repo-Commit: {COMMIT}\r\nETag: \"{tag}\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                data.len()
            )
        };
        let _ = s.write_all(head.as_bytes());
        return;
    }
    let start: usize = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
        .min(data.len());
    let body = &data[start..];
    let status = if range.is_some() {
        format!(
            "206 Partial Content\r\nContent-Range: bytes {start}-{}/{}",
            data.len().saturating_sub(1),
            data.len()
        )
    } else {
        "200 OK".to_string()
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nETag: \"{tag}\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes());
    if cut.as_deref() == Some(file.as_str()) && range.is_none() {
        *cut = None;
        let _ = s.write_all(&body[..body.len() / 2]);
        let _ = s.shutdown(std::net::Shutdown::Both);
        return;
    }
    let _ = s.write_all(body);
    let _ = s.flush();
    // Drain anything left so the client sees a clean close.
    let _ = reader.read(&mut [0u8; 16]);
}

fn repo() -> RepoRef {
    RepoRef::parse(REPO).unwrap()
}

fn gets(reqs: &[(String, String, Option<String>)]) -> usize {
    reqs.iter().filter(|r| r.0 == "GET").count()
}

#[test]
fn download_fills_the_python_layout_then_reuses_it() {
    let files = qwen2_files();
    let server = Server::start(files.clone(), None);
    let cache_dir = tempfile::tempdir().unwrap();
    let client = HubClient::new(
        HubCache::new(cache_dir.path()),
        &server.endpoint(),
        Some("secret".into()),
    );
    let dir = client.resolve_model(&repo(), &NoProgress).unwrap();
    // HF_TOKEN reaches the endpoint (other origins are covered by a unit test in download.rs).
    let authorized = server.log.lock().unwrap().authorized.clone();
    assert!(authorized.iter().any(|p| p.ends_with("/config.json")));

    let repo_dir = cache_dir.path().join("models--dsum-test--tiny-qwen2");
    assert_eq!(dir, repo_dir.join("snapshots").join(COMMIT));
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        COMMIT
    );
    for (name, data) in &files {
        let link = dir.join(name);
        let target = std::fs::read_link(&link).unwrap();
        assert_eq!(
            target,
            Path::new("../../blobs").join(etag(name, data)),
            "{name}"
        );
        assert_eq!(&std::fs::read(&link).unwrap(), data, "{name}");
    }
    assert!(repo_dir
        .join(".no_exist")
        .join(COMMIT)
        .join("chat_template.jinja")
        .is_file());
    let weights_get = server
        .requests()
        .iter()
        .any(|r| r.0 == "GET" && r.1 == "/cdn/model.safetensors");
    assert!(weights_get, "the LFS redirect was followed");
    LoadedModel::load(&dir).unwrap();

    let before = server.requests().len();
    let again = client.resolve_model(&repo(), &NoProgress).unwrap();
    assert_eq!(again, dir);
    assert_eq!(server.requests().len(), before, "a second run asks nothing");
}

#[test]
fn interrupted_download_resumes_with_range() {
    let files = qwen2_files();
    let server = Server::start(files.clone(), Some("model.safetensors"));
    let cache_dir = tempfile::tempdir().unwrap();
    let client = HubClient::new(HubCache::new(cache_dir.path()), &server.endpoint(), None);
    let e = client
        .resolve_model(&repo(), &NoProgress)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("resume"), "{e}");
    let weights = &files["model.safetensors"];
    let blob = cache_dir
        .path()
        .join("models--dsum-test--tiny-qwen2/blobs")
        .join(etag("model.safetensors", weights));
    let partial = PathBuf::from(format!("{}.incomplete", blob.display()));
    let have = std::fs::metadata(&partial).unwrap().len() as usize;
    assert!(have > 0 && have < weights.len(), "{have}");
    let gets_before = gets(&server.requests());

    let dir = client.resolve_model(&repo(), &NoProgress).unwrap();
    let reqs = server.requests();
    let resumed = reqs.iter().any(|r| {
        r.1 == "/cdn/model.safetensors" && r.2.as_deref() == Some(&format!("bytes={have}-"))
    });
    assert!(resumed, "{reqs:?}");
    // Files already complete are not fetched again.
    assert_eq!(gets(&reqs) - gets_before, 1, "{reqs:?}");
    assert!(!partial.exists());
    assert_eq!(
        &std::fs::read(dir.join("model.safetensors")).unwrap(),
        weights
    );
    LoadedModel::load(&dir).unwrap();
}

/// A cache written the way Python writes it, resolved with no server at all.
#[test]
fn python_cache_resolves_offline() {
    let cache_dir = tempfile::tempdir().unwrap();
    let repo_dir = cache_dir.path().join("models--dsum-test--tiny-qwen2");
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::create_dir_all(repo_dir.join("blobs")).unwrap();
    let snap = repo_dir.join("snapshots").join(COMMIT);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::write(repo_dir.join("refs/v1"), COMMIT).unwrap();
    for (name, data) in qwen2_files() {
        let tag = etag(&name, &data);
        std::fs::write(repo_dir.join("blobs").join(&tag), &data).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(Path::new("../../blobs").join(&tag), snap.join(&name)).unwrap();
        #[cfg(not(unix))]
        std::fs::write(snap.join(&name), &data).unwrap();
    }
    // Port 9 (discard) on 127.0.0.1: any request would fail.
    let mut client = HubClient::new(HubCache::new(cache_dir.path()), "http://127.0.0.1:9", None);
    client.set_offline(true);
    let r = RepoRef::parse(&format!("{REPO}@v1")).unwrap();
    assert_eq!(client.resolve_model(&r, &NoProgress).unwrap(), snap);
    let by_commit = RepoRef::parse(&format!("{REPO}@{COMMIT}")).unwrap();
    assert_eq!(client.resolve_model(&by_commit, &NoProgress).unwrap(), snap);
    LoadedModel::load(&snap).unwrap();
    // Not cached + offline: a clear error, no request.
    let e = client
        .resolve_model(&RepoRef::parse("dsum-test/other").unwrap(), &NoProgress)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("HF_HUB_OFFLINE"), "{e}");
}
