//! Blobs as files under the data dir. Each write goes to a temp file that is fsynced and
//! renamed over the object, under a per-key lock (a mutex stripe in this process and an
//! advisory `flock` on the stripe's lock file across processes), so a reader sees the old or
//! the new content and a conditional write is decided and applied atomically.
//!
//! Layout: key `a/b.md` is the file `<root>/a/b.md~`. The `~` suffix keeps an object and a
//! directory of the same name apart (`a` and `a/b` can both exist, as in S3); `%` and `~`
//! inside segments are percent-encoded so no directory name ends in `~`. Temp files start
//! with `~tmp.`; the stripes' lock files live in `<root>/.locks`.

use std::collections::hash_map::DefaultHasher;
use std::fs::{self, File};
use std::hash::{Hash, Hasher};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use md5::{Digest, Md5};
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

use super::{Blob, BlobKey, BlobMeta, BlobStore, Condition};
use crate::error::{StoreError, StoreResult};

const ENCODED: &AsciiSet = &CONTROLS.add(b'%').add(b'~');
const OBJECT_SUFFIX: char = '~';
const LOCK_STRIPES: usize = 64;
const NAME_MAX: usize = 255;
const LOCK_DIR: &str = ".locks";

/// Held while a key's object is read-checked and replaced.
struct KeyLock<'a> {
    _in_process: std::sync::MutexGuard<'a, ()>,
    /// `flock` is released when the file closes.
    _across_processes: File,
}

#[derive(Clone)]
pub struct FilesystemBlobStore {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    locks: Vec<Mutex<()>>,
}

impl FilesystemBlobStore {
    pub fn open(root: impl Into<PathBuf>) -> anyhow::Result<Self> {
        let root = root.into();
        fs::create_dir_all(root.join(LOCK_DIR))
            .map_err(|e| anyhow::anyhow!("cannot create blob directory {}: {e}", root.display()))?;
        Ok(Self {
            inner: Arc::new(Inner { root, locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect() }),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let inner = self.inner.clone();
        crate::blocking::spawn_blocking_in_span(move || work(&inner))
            .await
            .map_err(|e| StoreError::backend("filesystem", e))?
    }
}

fn io_error(e: io::Error) -> StoreError {
    StoreError::backend("filesystem", e)
}

impl Inner {
    fn object_path(&self, key: &BlobKey) -> StoreResult<PathBuf> {
        let mut path = self.root.clone();
        let mut segments = key.segments().peekable();
        while let Some(segment) = segments.next() {
            let mut name = utf8_percent_encode(segment, ENCODED).to_string();
            if segments.peek().is_none() {
                name.push(OBJECT_SUFFIX);
            }
            if name.len() > NAME_MAX {
                return Err(StoreError::InvalidKey(
                    "a path segment is too long once encoded for the filesystem".into(),
                ));
            }
            path.push(name);
        }
        Ok(path)
    }

    fn lock_for(&self, key: &BlobKey) -> StoreResult<KeyLock<'_>> {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        let stripe = (hasher.finish() % LOCK_STRIPES as u64) as usize;
        // A poisoned stripe only means another writer panicked; the files are still whole.
        let in_process = self.locks[stripe].lock().unwrap_or_else(|poison| poison.into_inner());
        let dir = self.root.join(LOCK_DIR);
        fs::create_dir_all(&dir).map_err(io_error)?;
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("stripe-{stripe}")))
            .map_err(io_error)?;
        file.lock().map_err(io_error)?;
        Ok(KeyLock { _in_process: in_process, _across_processes: file })
    }

    fn read_meta(&self, key: &BlobKey, path: &Path) -> StoreResult<Option<(BlobMeta, Option<Vec<u8>>)>> {
        self.read(key, path, false)
    }

    /// Reads an object's metadata, and its content when `with_body`.
    fn read(
        &self,
        key: &BlobKey,
        path: &Path,
        with_body: bool,
    ) -> StoreResult<Option<(BlobMeta, Option<Vec<u8>>)>> {
        let mut file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(e)),
        };
        let metadata = file.metadata().map_err(io_error)?;
        let mut hasher = Md5::new();
        let mut body = with_body.then(|| Vec::with_capacity(metadata.len() as usize));
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = file.read(&mut buffer).map_err(io_error)?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            if let Some(body) = body.as_mut() {
                body.extend_from_slice(&buffer[..n]);
            }
        }
        let last_modified: DateTime<Utc> = metadata.modified().map_err(io_error)?.into();
        let meta = BlobMeta {
            key: key.as_str().to_string(),
            etag: hex::encode(hasher.finalize()),
            size: metadata.len(),
            last_modified,
        };
        Ok(Some((meta, body)))
    }

    fn check_condition(current: Option<&BlobMeta>, condition: &Condition) -> StoreResult<()> {
        let holds = match (condition, current) {
            (Condition::None, _) => true,
            (Condition::Absent, current) => current.is_none(),
            (Condition::Matches(etag), Some(meta)) => meta.etag.eq_ignore_ascii_case(etag),
            (Condition::Matches(_), None) => false,
        };
        if holds { Ok(()) } else { Err(StoreError::PreconditionFailed) }
    }

    fn put(&self, key: &BlobKey, body: &[u8], condition: &Condition) -> StoreResult<BlobMeta> {
        let path = self.object_path(key)?;
        let _guard = self.lock_for(key)?;
        if *condition != Condition::None {
            let current = self.read_meta(key, &path)?.map(|(meta, _)| meta);
            Self::check_condition(current.as_ref(), condition)?;
        }
        let dir = path.parent().expect("object paths are below the root");
        fs::create_dir_all(dir).map_err(io_error)?;
        let temp = dir.join(format!("~tmp.{}", ulid::Ulid::generate()));
        let written = (|| {
            let mut file = File::create(&temp)?;
            file.write_all(body)?;
            file.sync_all()?;
            fs::rename(&temp, &path)?;
            File::open(dir)?.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(io_error(e));
        }
        let last_modified: DateTime<Utc> =
            fs::metadata(&path).and_then(|m| m.modified()).map_err(io_error)?.into();
        Ok(BlobMeta {
            key: key.as_str().to_string(),
            etag: super::md5_hex(body),
            size: body.len() as u64,
            last_modified,
        })
    }

    /// Hard-links the object at `from` to `to` (through a temp name, so `to` is replaced
    /// atomically); later writes to `from` rename a new file in, leaving the copy intact.
    fn copy(&self, from: &BlobKey, to: &BlobKey, source_etag: &str) -> StoreResult<BlobMeta> {
        let source = self.object_path(from)?;
        let target = self.object_path(to)?;
        let _guard = self.lock_for(from)?;
        let Some((meta, _)) = self.read_meta(from, &source)? else {
            return Err(StoreError::PreconditionFailed);
        };
        Self::check_condition(Some(&meta), &Condition::Matches(source_etag.to_string()))?;
        let dir = target.parent().expect("object paths are below the root");
        fs::create_dir_all(dir).map_err(io_error)?;
        let temp = dir.join(format!("~tmp.{}", ulid::Ulid::generate()));
        let linked = fs::hard_link(&source, &temp).and_then(|()| fs::rename(&temp, &target));
        if let Err(e) = linked {
            let _ = fs::remove_file(&temp);
            return Err(io_error(e));
        }
        Ok(BlobMeta { key: to.as_str().to_string(), ..meta })
    }

    fn delete(&self, key: &BlobKey, condition: &Condition) -> StoreResult<bool> {
        let path = self.object_path(key)?;
        let _guard = self.lock_for(key)?;
        if let Condition::Matches(_) = condition {
            match self.read_meta(key, &path)? {
                None => return Ok(false),
                Some((meta, _)) => Self::check_condition(Some(&meta), condition)?,
            }
        }
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error(e)),
        }
    }

    fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> StoreResult<Vec<BlobMeta>> {
        let mut keys = Vec::new();
        collect_keys(&self.root, "", &mut keys).map_err(io_error)?;
        keys.retain(|k| k.starts_with(prefix) && after.is_none_or(|a| k.as_str() > a));
        keys.sort();
        let mut out = Vec::with_capacity(limit.min(keys.len()));
        for key in keys {
            if out.len() == limit {
                break;
            }
            let Ok(key) = BlobKey::parse(&key) else { continue };
            if let Some((meta, _)) = self.read_meta(&key, &self.object_path(&key)?)? {
                out.push(meta);
            }
        }
        Ok(out)
    }
}

/// Walks `dir`, pushing the key of every object file below it.
fn collect_keys(dir: &Path, key_prefix: &str, out: &mut Vec<String>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else { continue };
        let decoded = |s: &str| percent_decode_str(s).decode_utf8().map(|d| d.into_owned()).ok();
        if entry.file_type()?.is_dir() {
            if let Some(segment) = decoded(&name) {
                collect_keys(&entry.path(), &format!("{key_prefix}{segment}/"), out)?;
            }
        } else if let Some(stem) = name.strip_suffix(OBJECT_SUFFIX)
            && let Some(segment) = decoded(stem)
        {
            out.push(format!("{key_prefix}{segment}"));
        }
    }
    Ok(())
}

#[async_trait]
impl BlobStore for FilesystemBlobStore {
    fn backend_name(&self) -> &'static str {
        "filesystem"
    }

    async fn put(&self, key: &BlobKey, body: Bytes, condition: Condition) -> StoreResult<BlobMeta> {
        let key = key.clone();
        self.blocking(move |inner| inner.put(&key, &body, &condition)).await
    }

    async fn get(&self, key: &BlobKey) -> StoreResult<Option<Blob>> {
        let key = key.clone();
        self.blocking(move |inner| {
            let path = inner.object_path(&key)?;
            Ok(inner
                .read(&key, &path, true)?
                .map(|(meta, body)| Blob { meta, body: Bytes::from(body.unwrap_or_default()) }))
        })
        .await
    }

    async fn head(&self, key: &BlobKey) -> StoreResult<Option<BlobMeta>> {
        let key = key.clone();
        self.blocking(move |inner| {
            let path = inner.object_path(&key)?;
            Ok(inner.read_meta(&key, &path)?.map(|(meta, _)| meta))
        })
        .await
    }

    async fn copy(&self, from: &BlobKey, to: &BlobKey, source_etag: &str) -> StoreResult<BlobMeta> {
        let (from, to, etag) = (from.clone(), to.clone(), source_etag.to_string());
        self.blocking(move |inner| inner.copy(&from, &to, &etag)).await
    }

    async fn delete(&self, key: &BlobKey, condition: Condition) -> StoreResult<bool> {
        let key = key.clone();
        self.blocking(move |inner| inner.delete(&key, &condition)).await
    }

    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> StoreResult<Vec<BlobMeta>> {
        let (prefix, after) = (prefix.to_string(), after.map(str::to_string));
        self.blocking(move |inner| inner.list(&prefix, after.as_deref(), limit)).await
    }

    async fn check(&self) -> StoreResult<()> {
        self.blocking(|inner| {
            let probe = inner.root.join(format!("~tmp.health.{}", ulid::Ulid::generate()));
            fs::write(&probe, b"ok").and_then(|()| fs::remove_file(&probe)).map_err(io_error)
        })
        .await
    }
}
