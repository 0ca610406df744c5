//! The embedded default: with no key sources configured, both rings are generated into
//! `<data_dir>/keys/` (mode 0600) on first start, and a hint says how to point the bridge at
//! them.

use jit_proto::keyring::{KeyEntry, KeyId, KeyRing, Secret};
use std::io::Write;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// Writes `text` to `path` with mode 0600, atomically (temp file + rename).
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("keys")
    ));
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// A ring with one fresh key `<prefix>-YYYYMMDD`, as `SecretString` JSON.
pub fn generate_ring_text(
    prefix: &str,
    now: OffsetDateTime,
) -> anyhow::Result<zeroize::Zeroizing<String>> {
    let d = now.date();
    let id = KeyId::parse(&format!(
        "{prefix}-{:04}{:02}{:02}",
        d.year(),
        u8::from(d.month()),
        d.day()
    ))?;
    let secret = Secret::generate().map_err(|e| anyhow::anyhow!("random generator: {e}"))?;
    let ring = KeyRing::from_entries(vec![KeyEntry::new(id, secret, Some(now), None)?])?;
    Ok(ring.to_secret_string()?)
}

/// Paths of the generated rings.
pub fn key_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let keys = data_dir.join("keys");
    (keys.join("backend.json"), keys.join("callback.json"))
}

/// Creates the key files that do not exist yet; returns the ones it created.
pub fn ensure_key_files(data_dir: &Path, now: OffsetDateTime) -> anyhow::Result<Vec<PathBuf>> {
    let (backend, callback) = key_paths(data_dir);
    if let Some(dir) = backend.parent() {
        // The data directory and its keys directory are the service's alone (0700): the
        // database and the rings live there.
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(dir)?;
        #[cfg(unix)]
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    }
    let mut created = Vec::new();
    for (path, prefix) in [(backend, "key"), (callback, "cb")] {
        if !path.exists() {
            write_private(&path, &generate_ring_text(prefix, now)?)?;
            created.push(path);
        }
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_files_are_private_distinct_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let now = time::macros::datetime!(2026-11-25 12:00 UTC);
        let created = ensure_key_files(dir.path(), now).unwrap();
        assert_eq!(created.len(), 2);
        let (b, c) = key_paths(dir.path());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&b).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let rb = KeyRing::parse(&std::fs::read_to_string(&b).unwrap()).unwrap();
        let rc = KeyRing::parse(&std::fs::read_to_string(&c).unwrap()).unwrap();
        assert!(rb.get("key-20261125").is_some());
        assert!(rc.get("cb-20261125").is_some());
        assert!(rb.shared_secret_with(&rc).is_none());
        assert!(
            ensure_key_files(dir.path(), now).unwrap().is_empty(),
            "existing files are kept"
        );
    }
}
