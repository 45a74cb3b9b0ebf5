//! The embedded mode's files are owner-only: the data folder 0700, the
//! SQLite database (and its `-wal`/`-shm`) and the generated master key
//! 0600. They hold password and token hashes and the key that seals the
//! signing keys; the process umask (often 022) would leave them readable by
//! every local user. Modes are set explicitly after creation, so the
//! result does not depend on the umask.

use std::fs::{self, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// Creates `dir` and any missing parents owner-only. A folder that already
/// exists is not changed (it may be one the operator shares on purpose),
/// but one that others can read or enter is named in a warning.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    let missing: Vec<&Path> = dir.ancestors().take_while(|a| !a.exists()).collect();
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    for created in &missing {
        fs::set_permissions(created, Permissions::from_mode(DIR_MODE))?;
    }
    if missing.is_empty() {
        let mode = fs::metadata(dir)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %dir.display(),
                mode = format!("{mode:o}"),
                "data folder is readable by other users; holdfast creates it 0700 (chmod 700 it)"
            );
        }
    }
    Ok(())
}

/// Makes the SQLite database at `path` owner-only before SQLite opens it:
/// creates its folder 0700 and the file 0600. SQLite creates `-wal` and
/// `-shm` with the database file's own mode, so they follow; files left
/// by an earlier version (0644) are tightened.
pub fn prepare_sqlite_file(path: &str) -> io::Result<()> {
    // In-memory and URI databases have no plain file to prepare.
    if path.is_empty() || path.starts_with(':') || path.starts_with("file:") {
        return Ok(());
    }
    let path = Path::new(path);
    if let Some(dir) = path.parent() {
        create_private_dir(dir)?;
    }
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = Path::new(&name);
        if file.exists() {
            fs::set_permissions(file, Permissions::from_mode(FILE_MODE))?;
        }
    }
    Ok(())
}

/// Writes a new file readable by its owner only (its folder created
/// owner-only if missing).
pub fn write_private_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        create_private_dir(dir)?;
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)?;
    file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn folders_and_files_are_created_owner_only() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("a/b");
        let db = dir.join("holdfast.db");
        prepare_sqlite_file(db.to_str().expect("utf-8")).expect("prepare");
        assert_eq!(mode(&tmp.path().join("a")), 0o700);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&db), 0o600);
        // An older version's world-readable files are tightened.
        let wal = dir.join("holdfast.db-wal");
        fs::write(&wal, b"").expect("wal");
        fs::set_permissions(&wal, Permissions::from_mode(0o644)).expect("chmod");
        fs::set_permissions(&db, Permissions::from_mode(0o644)).expect("chmod");
        prepare_sqlite_file(db.to_str().expect("utf-8")).expect("prepare again");
        assert_eq!((mode(&db), mode(&wal)), (0o600, 0o600));
        let key = tmp.path().join("c/master.key");
        write_private_file(&key, b"secret").expect("write");
        assert_eq!((mode(&tmp.path().join("c")), mode(&key)), (0o700, 0o600));
    }
}
