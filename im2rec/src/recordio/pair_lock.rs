//! The lock that makes a `.rec` + `.idx` pair change as one, for the processes that
//! take it: writers replace the pair under an exclusive lock, readers open it under a
//! shared one.
//!
//! Design. A finished pair is published by two renames (the `.idx`, then the `.rec`),
//! each atomic on its own. Without a lock, two writers finishing at once could leave
//! one's `.idx` beside the other's `.rec`, and a reader opening the pair between the two
//! renames could pair an old `.rec` with a new `.idx`. So:
//!
//! - The lock is an advisory `flock(2)` on the **folder that holds the `.rec`** (opened
//!   read-only): no extra file is ever created or left behind, it works in a folder the
//!   reader may not write to, and the kernel drops it when the process dies (even by
//!   SIGKILL), so a killed writer never leaves a stale lock.
//! - A writer ([`PairLock::exclusive`]) holds it only for the two renames; a reader
//!   ([`PairLock::shared`]) only while it opens the `.rec` (a memory map, which keeps
//!   the old file's bytes after a rename over it) and reads the `.idx`. Nothing waits
//!   long.
//! - Locking is best effort: when the folder cannot be opened or locked (permissions, a
//!   filesystem without `flock`), the operation goes ahead unlocked, as before.
//!
//! Programs that rewrite a `.rec` in place (not through a rename) are outside this
//! protocol; im2rec never does.

use std::fs::File;
use std::path::Path;

/// A held lock on the folder of a `.rec` (released when dropped).
#[derive(Debug)]
pub struct PairLock {
    _folder: Option<File>,
}

impl PairLock {
    /// Exclusive: no other writer replaces, and no reader opens, a pair in this folder
    /// until the lock is dropped. For publishing a new `.rec` + `.idx`.
    pub fn exclusive(rec: &Path) -> Self {
        Self::take(rec, File::lock)
    }

    /// Shared: no writer replaces a pair in this folder until the lock is dropped. For
    /// opening a `.rec` together with its `.idx`.
    pub fn shared(rec: &Path) -> Self {
        Self::take(rec, File::lock_shared)
    }

    /// True when the lock is actually held (false when locking was not possible).
    pub fn is_held(&self) -> bool {
        self._folder.is_some()
    }

    fn take(rec: &Path, lock: fn(&File) -> std::io::Result<()>) -> Self {
        let folder = match rec.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let file = File::open(folder).ok().filter(|f| lock(f).is_ok());
        PairLock { _folder: file }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::TryLockError;

    #[test]
    fn exclusive_excludes_shared_and_is_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let rec = dir.path().join("a.rec");
        let held = PairLock::exclusive(&rec);
        assert!(held.is_held());
        let other = File::open(dir.path()).unwrap();
        assert!(matches!(
            other.try_lock_shared(),
            Err(TryLockError::WouldBlock)
        ));
        drop(held);
        other.try_lock_shared().unwrap();
        // Readers share.
        let reader = PairLock::shared(&rec);
        assert!(reader.is_held());
        assert!(matches!(other.try_lock(), Err(TryLockError::WouldBlock)));
        drop(reader);
    }

    #[test]
    fn a_bare_name_locks_the_current_folder_and_a_missing_folder_is_not_an_error() {
        assert!(PairLock::shared(Path::new("x.rec")).is_held());
        let gone = PairLock::exclusive(Path::new("/nonexistent-folder-xyz/x.rec"));
        assert!(!gone.is_held());
    }
}
