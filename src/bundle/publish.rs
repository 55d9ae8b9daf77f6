//! Writing a bundle directory so that it appears whole or not at all.
//!
//! The files go into a hidden directory beside the target, each fsynced;
//! the directory is fsynced and renamed into place, then its parent is
//! fsynced so that the rename survives a power loss too. A crash leaves at
//! most a `.NAME.partial-*` directory, never a bundle that looks finished
//! and is not: the source journal hands its rows over only after
//! [`Staging::publish`] returns.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::BundleError;

/// A bundle directory being written.
pub struct Staging {
    tmp: PathBuf,
    target: PathBuf,
    published: bool,
}

impl Staging {
    /// Checks that `target` can receive a bundle (absent, or an empty
    /// directory on the same file system as its parent) and creates the
    /// temporary directory beside it.
    pub fn begin(target: &Path) -> Result<Staging, BundleError> {
        let refuse = |reason: String| BundleError::Target {
            dir: target.to_path_buf(),
            reason,
        };
        let name = target
            .file_name()
            .ok_or_else(|| refuse("name a directory for the bundle".into()))?
            .to_string_lossy()
            .to_string();
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        match std::fs::symlink_metadata(target) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(refuse(format!("cannot inspect it: {e}"))),
            Ok(m) if !m.is_dir() => {
                return Err(refuse(
                    "it exists and is not a directory; name a new directory".into(),
                ))
            }
            Ok(m) => {
                let mut entries = std::fs::read_dir(target)
                    .map_err(|e| refuse(format!("cannot list it: {e}")))?;
                if entries.next().is_some() {
                    return Err(refuse(
                        "it exists and is not empty; name a new directory (one bundle per directory)"
                            .into(),
                    ));
                }
                // An empty mount point (a USB stick's root) cannot be
                // replaced by a rename from the file system above it.
                let up = std::fs::metadata(&parent)
                    .map_err(|e| refuse(format!("cannot inspect {}: {e}", parent.display())))?;
                if up.dev() != m.dev() {
                    return Err(refuse(format!(
                        "it is a mount point; name a new directory inside it (e.g. {})",
                        target.join("bundle-1").display()
                    )));
                }
            }
        }
        std::fs::create_dir_all(&parent)
            .map_err(|e| refuse(format!("cannot create {}: {e}", parent.display())))?;
        let tmp = parent.join(format!(
            ".{name}.partial-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir(&tmp)
            .map_err(|e| refuse(format!("cannot create {}: {e}", tmp.display())))?;
        Ok(Staging {
            tmp,
            target: target.to_path_buf(),
            published: false,
        })
    }

    /// Where file `name` is written before the bundle is published.
    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.join(name)
    }

    /// Creates file `name` in the temporary directory.
    pub fn create(&self, name: &str) -> Result<File, BundleError> {
        let path = self.path(name);
        File::create(&path).map_err(|source| BundleError::Io {
            op: "create",
            path,
            source,
        })
    }

    /// Deletes file `name` again (one that must not be part of the bundle).
    pub fn remove(&self, name: &str) -> Result<(), BundleError> {
        let path = self.path(name);
        std::fs::remove_file(&path).map_err(|source| BundleError::Io {
            op: "delete",
            path,
            source,
        })
    }

    /// Writes file `name` whole and fsyncs it.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<(), BundleError> {
        let mut f = self.create(name)?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .map_err(|source| BundleError::Io {
                op: "write",
                path: self.path(name),
                source,
            })
    }

    /// Moves the finished directory into place, durably. The caller has
    /// fsynced every file.
    pub fn publish(mut self) -> Result<PathBuf, BundleError> {
        let io = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| BundleError::Io { op, path, source }
        };
        sync_dir(&self.tmp).map_err(io("fsync", &self.tmp))?;
        // rename(2) replaces an empty directory, as checked in `begin`.
        std::fs::rename(&self.tmp, &self.target).map_err(io("rename into place", &self.target))?;
        self.published = true;
        let parent = match self.target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        sync_dir(&parent).map_err(io("fsync", &parent))?;
        Ok(self.target.clone())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.published {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_appears_whole_and_a_failed_one_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("sub/b");
        let s = Staging::begin(&target).unwrap();
        s.write("x", b"1").unwrap();
        assert!(!target.exists(), "nothing visible before publishing");
        s.publish().unwrap();
        assert_eq!(std::fs::read(target.join("x")).unwrap(), b"1");
        let err = Staging::begin(&target).err().unwrap().to_string();
        assert!(err.contains("not empty"), "{err}");

        let empty = root.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let s = Staging::begin(&empty).unwrap();
        s.write("y", b"2").unwrap();
        s.publish().unwrap();
        assert!(empty.join("y").exists(), "an empty directory is replaced");

        let dropped = root.path().join("dropped");
        let s = Staging::begin(&dropped).unwrap();
        s.write("z", b"3").unwrap();
        drop(s);
        let left: Vec<_> = std::fs::read_dir(root.path().join("sub"))
            .unwrap()
            .collect();
        assert_eq!(left.len(), 1, "only the published bundle is in sub/");
        let all: Vec<String> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert!(!all.iter().any(|n| n.contains("partial")), "{all:?}");
    }
}
