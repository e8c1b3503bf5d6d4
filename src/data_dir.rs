//! What the mirror keeps in its data dir besides crate files: the temporary
//! dir of unfinished downloads, the sled database and the index store in it.
//!
//! Everything in the database can be had again (index files from the
//! upstream, the crates' accounting from the files in storage, the git
//! index's state by rebuilding it), so a damaged database does not keep the
//! mirror from starting: one that sled cannot open, or whose trees cannot be
//! walked, is moved aside as `sled.damaged-<unix time>` (kept for
//! inspection) and an empty one is opened in its place; `/ready` reports it.
//! Failures that are not damage (a lock held by a running mirror, a
//! permission) still stop the start: moving a good database aside for those
//! would throw a cache away for nothing.
//!
//! sled itself recovers from some damage silently, dropping what it cannot
//! read. To say what was lost, a clean stop writes the names of the stored
//! index files beside the database (`sled.index-keys`); the next start reads
//! that list, removes it (a later crash must not compare against it), and
//! logs every listed file the database no longer holds.

use std::io::{BufRead, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::blocking::off_async;
use crate::index::store::{is_sled_damage, IndexStore, StoreError};
use crate::StartError;

/// sled's page cache.
const SLED_CACHE_BYTES: u64 = 32 << 20;
/// The database's dir in the data dir.
const DB_DIR: &str = "sled";
/// The list of stored index files a clean stop writes beside the database.
const KEY_LIST: &str = "sled.index-keys";
/// A key list larger than this is not the mirror's (crate names are at most
/// 64 bytes; this is over a million of them): it is ignored, not read.
const MAX_KEY_LIST_BYTES: u64 = 96 << 20;
/// Lost index files named one by one in the log at a start; the rest are
/// counted in one line (a whole database lost would be a line per crate).
const MAX_LOST_NAMED: usize = 100;

/// What the start found of the database: what `/ready` reports of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DatabaseStart {
    /// The database was damaged and replaced by an empty one at this start.
    pub rebuilt_at_start: bool,
    /// Where the damaged database was moved (kept for inspection).
    pub damaged_copy: Option<PathBuf>,
    /// Why it counted as damaged (sled's error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damage: Option<String>,
    /// Index files the database held at the last clean stop and no longer
    /// did at this start (fetched again from the upstream when asked for).
    pub index_files_lost_at_start: u64,
}

/// The opened data dir.
pub struct DataDir {
    root: PathBuf,
    db: sled::Db,
    index_store: IndexStore,
    start: DatabaseStart,
}

/// Why the database could not be opened as it is.
enum OpenFailure {
    /// Its files are damaged: it may be moved aside.
    Damaged(String),
    /// Anything else (in use, permissions): the start stops.
    Failed(StartError),
}

/// Opens sled at `path` and walks every tree's keys (counting the index
/// files on the way), so that damage shows now, not on a client's request.
/// sled panics on some damaged files instead of answering an error: a panic
/// here counts as damage too.
fn open_db(path: &Path, flush_every: Option<u64>) -> Result<(sled::Db, IndexStore), OpenFailure> {
    // sled keeps a page cache of 1 GiB by default; bound it, since the hot
    // index files are in the (separately bounded) moka cache anyway.
    let config = sled::Config::new()
        .path(path)
        .cache_capacity(SLED_CACHE_BYTES)
        .flush_every_ms(flush_every);
    guarded(path, || {
        let db = config.open()?;
        for name in db.tree_names() {
            if &*name == b"index" {
                continue;
            }
            for key in db.open_tree(&name)?.iter().keys() {
                key?;
            }
        }
        let index_store = IndexStore::open(&db).map_err(|err| match err {
            StoreError::Sled(err) => err,
            // The walk reads keys only: nothing of ours is decoded.
            StoreError::Corrupt(key) => sled::Error::ReportableBug(key),
        })?;
        Ok((db, index_store))
    })
}

/// Runs `open` on the database at `path` and sorts what went wrong: sled's
/// errors that mean damaged files, and panics (sled panics on some damaged
/// files), are `Damaged`; any other error stops the start.
fn guarded<T>(
    path: &Path,
    open: impl FnOnce() -> Result<T, sled::Error>,
) -> Result<T, OpenFailure> {
    match catch_unwind(AssertUnwindSafe(open)) {
        Ok(Ok(opened)) => Ok(opened),
        Ok(Err(err)) if is_sled_damage(&err) => Err(OpenFailure::Damaged(err.to_string())),
        Ok(Err(err)) => Err(OpenFailure::Failed(StartError::database(
            path.to_path_buf(),
            err,
        ))),
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("no message");
            Err(OpenFailure::Damaged(format!("sled panicked: {why}")))
        }
    }
}

/// Moves the damaged database at `db_path` aside, next to it, as
/// `sled.damaged-<unix time>` (a number added if that exists already).
fn move_aside(db_path: &Path) -> std::io::Result<PathBuf> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let parent = db_path.parent().unwrap_or(Path::new("."));
    let mut aside = parent.join(format!("{DB_DIR}.damaged-{secs}"));
    let mut n = 1;
    while aside.exists() {
        aside = parent.join(format!("{DB_DIR}.damaged-{secs}-{n}"));
        n += 1;
    }
    std::fs::rename(db_path, &aside)?;
    Ok(aside)
}

/// Reads the key list a clean stop wrote and removes it; `None` when there
/// is none (a first start, or after a crash) or it cannot be read.
fn take_key_list(path: &Path) -> Option<Vec<String>> {
    let file = std::fs::File::open(path).ok()?;
    let listed = file
        .metadata()
        .ok()
        .filter(|m| m.len() <= MAX_KEY_LIST_BYTES)
        .and_then(|_| {
            std::io::BufReader::new(file)
                .lines()
                .collect::<Result<Vec<_>, _>>()
                .ok()
        });
    if let Err(err) = std::fs::remove_file(path) {
        tracing::warn!(path = %path.display(), error = %err, "cannot remove the index key list");
    }
    listed
}

/// The listed keys `store` no longer holds, logged (the first
/// `MAX_LOST_NAMED` by name, then a count).
fn report_lost(listed: &[String], store: &IndexStore) -> u64 {
    let mut lost = 0u64;
    for key in listed.iter().filter(|key| !key.is_empty()) {
        // An error reading counts as lost: it is fetched again.
        if store.contains(key).unwrap_or(false) {
            continue;
        }
        lost += 1;
        if lost <= MAX_LOST_NAMED as u64 {
            tracing::warn!(
                krate = %key,
                "index file lost from the damaged database (stored at the last stop, gone now): \
                 fetched again from the upstream when asked for"
            );
        }
    }
    if lost > MAX_LOST_NAMED as u64 {
        tracing::warn!(
            lost,
            named = MAX_LOST_NAMED,
            "index files lost from the damaged database in all (only the first are named)"
        );
    }
    lost
}

/// Opens the database in `root`, moving a damaged one aside (see the module
/// doc), writing to disk every `flush_every` ms (`None`: only when asked).
/// Blocking.
fn open_or_rebuild(
    root: &Path,
    flush_every: Option<u64>,
) -> Result<(sled::Db, IndexStore, DatabaseStart), StartError> {
    let db_path = root.join(DB_DIR);
    // Taken only once the database is open or known damaged: a start that
    // stops (a database in use) leaves the list to the start that follows.
    let key_list = root.join(KEY_LIST);
    let damage = match open_db(&db_path, flush_every) {
        Ok((db, index_store)) => {
            let listed = take_key_list(&key_list);
            let lost = listed.map_or(0, |listed| report_lost(&listed, &index_store));
            let start = DatabaseStart {
                index_files_lost_at_start: lost,
                ..DatabaseStart::default()
            };
            return Ok((db, index_store, start));
        }
        Err(OpenFailure::Failed(err)) => return Err(err),
        Err(OpenFailure::Damaged(why)) => why,
    };
    let listed = take_key_list(&key_list);
    let aside = move_aside(&db_path).map_err(|source| StartError::DataDir {
        path: db_path.clone(),
        source,
    })?;
    let (db, index_store) = match open_db(&db_path, flush_every) {
        Ok(opened) => opened,
        Err(OpenFailure::Failed(err)) => return Err(err),
        Err(OpenFailure::Damaged(why)) => {
            // A new, empty database damaged at once: the disk, not the data.
            return Err(StartError::Unsupported(format!(
                "a new database in {} is damaged at once ({why}): check the disk",
                db_path.display()
            )));
        }
    };
    tracing::error!(
        damaged_copy = %aside.display(),
        cause = %damage,
        "the database was damaged and could not be used: moved aside (kept for inspection) \
         and started with an empty one; index files are fetched again from the upstream, \
         crates are served from storage"
    );
    let start = DatabaseStart {
        rebuilt_at_start: true,
        damaged_copy: Some(aside),
        damage: Some(damage),
        index_files_lost_at_start: listed.map_or(0, |listed| listed.len() as u64),
    };
    Ok((db, index_store, start))
}

/// The data dir's index store for a maintenance command that reads it
/// (`verify` where the upstream cannot be asked): unlike [`DataDir::open`],
/// nothing is made, moved aside or cleaned, whatever state the database is in.
/// `Ok(None)` when the data dir holds no database; `Err` says why one cannot
/// be read (in use by a running mirror, damaged). The database is kept open
/// as long as the returned handle lives. Blocking.
pub fn open_index_store(root: &Path) -> Result<Option<(sled::Db, IndexStore)>, String> {
    let db_path = root.join(DB_DIR);
    if !db_path.is_dir() {
        return Ok(None);
    }
    match open_db(&db_path, None) {
        Ok(opened) => Ok(Some(opened)),
        Err(OpenFailure::Damaged(why)) => Err(format!(
            "the database in {} is damaged: {why}",
            db_path.display()
        )),
        Err(OpenFailure::Failed(err)) => {
            let mut why = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                why.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            Err(why)
        }
    }
}

impl DataDir {
    /// Opens sled (writing to disk every `flush_interval`; zero: only when
    /// asked), moving a damaged database aside, then prepares the temporary
    /// dir (removing what a previous run left) and counts the stored index
    /// files. Blocking work runs off the async threads.
    ///
    /// The temporary dir is cleaned only once sled is open: sled's lock on
    /// its files is held by one process at a time, so a second process
    /// started on the same data dir (and refused there) never removes what
    /// the first one is writing.
    pub async fn open(root: &Path, flush_interval: Duration) -> Result<Self, StartError> {
        let root = root.to_path_buf();
        let tmp_dir = root.join("tmp");
        let dir_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StartError::DataDir { path, source }
        };
        // Made first, so that a data dir that cannot be made is named as
        // such rather than as a database that cannot be opened.
        let made = tmp_dir.clone();
        off_async(move || std::fs::create_dir_all(&made).map_err(dir_err(&made))).await?;
        let flush_every = u64::try_from(flush_interval.as_millis())
            .ok()
            .filter(|ms| *ms > 0);
        let opened_root = root.clone();
        let (db, index_store, start) =
            off_async(move || open_or_rebuild(&opened_root, flush_every)).await?;
        let (removed, imports) = off_async(move || {
            let removed = crate::crates::clean_temp_dir(&tmp_dir).map_err(dir_err(&tmp_dir))?;
            let imports = clean_stale_imports(&tmp_dir).map_err(dir_err(&tmp_dir))?;
            Ok::<_, StartError>((removed, imports))
        })
        .await?;
        if removed > 0 {
            tracing::info!(removed, "removed unfinished downloads of a previous run");
        }
        if imports > 0 {
            tracing::info!(
                removed = imports,
                "removed what imports that did not finish had staged"
            );
        }
        Ok(Self {
            root,
            db,
            index_store,
            start,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where downloads are written until they are complete.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    pub fn index_store(&self) -> &IndexStore {
        &self.index_store
    }

    /// What the start found of the database.
    pub fn start(&self) -> &DatabaseStart {
        &self.start
    }

    /// A named tree of the database.
    pub fn tree(&self, name: &str) -> Result<sled::Tree, StartError> {
        self.db
            .open_tree(name)
            .map_err(|source| StartError::database(self.root.join(DB_DIR), source))
    }

    /// Writes what sled holds in memory to disk, then the list of stored
    /// index files beside it, which the next start checks the database
    /// against (see the module doc). Blocking. A list that cannot be
    /// written is only logged: it serves the next start's report, not the
    /// data.
    pub fn flush(&self) -> Result<(), sled::Error> {
        self.db.flush()?;
        if let Err(err) = self.write_key_list() {
            tracing::warn!(error = %err, "cannot write the index key list");
        }
        Ok(())
    }

    /// Writes `sled.index-keys` whole or not at all (a temp file renamed).
    fn write_key_list(&self) -> std::io::Result<()> {
        let path = self.root.join(KEY_LIST);
        let partial = self.root.join(format!("{KEY_LIST}.partial"));
        let mut out = std::io::BufWriter::new(std::fs::File::create(&partial)?);
        for key in self.index_store.keys() {
            let key = key.map_err(std::io::Error::other)?;
            out.write_all(key.as_bytes())?;
            out.write_all(b"\n")?;
        }
        out.into_inner()
            .map_err(std::io::IntoInnerError::into_error)?
            .sync_all()?;
        std::fs::rename(&partial, &path)
    }
}

/// Removes `tmp/import-PID/` dirs (see `commands::import`) whose process is
/// gone: an import killed before it could remove its own. A live process's
/// dir stays (it cannot be using this data dir while we hold sled's lock,
/// but a dir is only ever removed for a process that is certainly gone).
/// Returns how many were removed.
fn clean_stale_imports(tmp_dir: &Path) -> std::io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(tmp_dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix("import-"))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if entry.file_type()?.is_dir() && !process_alive(pid) {
            std::fs::remove_dir_all(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Whether process `pid` exists (a zombie counts), from `/proc`. Without a
/// `/proc` to ask, only this process is known to be alive: sled's lock
/// already shuts other processes out of this data dir.
fn process_alive(pid: u32) -> bool {
    pid == std::process::id()
        || (Path::new("/proc/self").exists() && Path::new("/proc").join(pid.to_string()).exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn damaged_copies(root: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(root)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().contains("sled.damaged-"))
            .collect()
    }

    /// A lock held by another opener is not damage: the start stops, and
    /// the database stays where it is.
    #[tokio::test]
    async fn a_database_in_use_is_not_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDir::open(dir.path(), Duration::ZERO).await.unwrap();
        assert_eq!(first.start(), &DatabaseStart::default());
        let second = DataDir::open(dir.path(), Duration::ZERO).await;
        assert!(
            matches!(second, Err(StartError::DatabaseInUse { .. })),
            "{:?}",
            second.err()
        );
        assert!(damaged_copies(dir.path()).is_empty());
    }

    /// sled panics on some damaged files (a large log cut short) rather
    /// than answering an error: that is damage too, never a crash.
    #[test]
    fn a_panic_while_opening_counts_as_damage() {
        let path = Path::new("/nonexistent/sled");
        let panicked = guarded::<()>(path, || panic!("torn log entry"));
        assert!(
            matches!(&panicked, Err(OpenFailure::Damaged(why)) if why == "sled panicked: torn log entry"),
        );
        let corrupt = guarded::<()>(path, || Err(sled::Error::Corruption { at: None, bt: () }));
        assert!(matches!(corrupt, Err(OpenFailure::Damaged(_))));
        let denied = guarded::<()>(path, || {
            Err(sled::Error::Io(std::io::ErrorKind::PermissionDenied.into()))
        });
        assert!(matches!(denied, Err(OpenFailure::Failed(_))));
    }

    /// A log cut short is never passed over in silence: depending on where
    /// the cut falls, sled panics or errs (the database is moved aside) or
    /// drops the records past it (each named by the key list); which one
    /// varies from run to run, so each cut accepts either, and both must
    /// account for every record.
    #[tokio::test]
    async fn a_cut_log_is_rebuilt_or_its_lost_records_reported() {
        for (num, den) in [(1u64, 2u64), (1, 3), (2, 3), (1, 5)] {
            let dir = tempfile::tempdir().unwrap();
            {
                let data = DataDir::open(dir.path(), Duration::ZERO).await.unwrap();
                let tree = data.db().open_tree("index").unwrap();
                for i in 0..2000u32 {
                    let value: Vec<u8> = (0..3000u32)
                        .map(|j| ((i * 31 + j * 7) % 251) as u8)
                        .collect();
                    tree.insert(format!("crate{i:05}"), value).unwrap();
                }
                data.flush().unwrap();
            }
            let db = dir.path().join(DB_DIR).join("db");
            let len = std::fs::metadata(&db).unwrap().len();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&db)
                .unwrap()
                .set_len(len * num / den)
                .unwrap();
            let data = DataDir::open(dir.path(), Duration::ZERO).await.unwrap();
            let start = data.start();
            let kept = data.index_store().len() as u64;
            if start.rebuilt_at_start {
                assert!(start.damage.is_some(), "{start:?}");
                assert_eq!(
                    damaged_copies(dir.path()),
                    vec![start.damaged_copy.clone().unwrap()]
                );
                assert_eq!(kept, 0);
            } else {
                assert!(start.damaged_copy.is_none(), "{start:?}");
            }
            assert!(kept < 2000, "a cut at {num}/{den} lost nothing: {start:?}");
            assert_eq!(
                start.index_files_lost_at_start + kept,
                2000,
                "cut at {num}/{den}: {start:?}"
            );
        }
    }

    #[test]
    fn only_gone_processes_import_dirs_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let gone_pid = gone.id();
        gone.wait().unwrap();
        let dirs = [
            format!("import-{gone_pid}"),
            format!("import-{}", std::process::id()),
            "import-notapid".to_string(),
            "other".to_string(),
        ];
        for dir in &dirs {
            std::fs::create_dir_all(tmp.path().join(dir)).unwrap();
            std::fs::write(tmp.path().join(dir).join("0.crate"), b"x").unwrap();
        }
        assert_eq!(clean_stale_imports(tmp.path()).unwrap(), 1);
        assert!(!tmp.path().join(&dirs[0]).exists());
        for dir in &dirs[1..] {
            assert!(tmp.path().join(dir).join("0.crate").exists(), "{dir}");
        }
    }
}
