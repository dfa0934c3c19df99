//! The usage spool: a durable copy of the usage records the writer has not committed yet.
//!
//! Each record is appended to a file of this instance's as it is handed to the writer: one
//! `write` of one checksummed frame (`encoding`), no `fsync`. Once in the kernel's page cache it survives the process
//! (SIGKILL, the OOM killer, an abort), and the next instance to start on the same directory writes
//! and settles it. The page cache is put on disk (`fdatasync`, off the request path) one flush
//! interval after the first record written since the last sync, so a power loss or a kernel crash
//! can cost the records of about one interval.
//!
//! Files, in `CLOUDROUTER_SPOOL_DIR`, named after the database (its `deployment` row, so that a
//! directory shared by two deployments never replays one's records into the other) and the
//! instance:
//! - `<deployment>.<instance>.lock`: locked (`flock`) by its instance while it runs; the kernel
//!   releases the lock of a process that dies. It is made under another name and renamed once
//!   locked, so it is never seen unlocked while its instance lives.
//! - `<deployment>.<instance>.<n>.spool`: the segments, one frame per record.
//!
//! After each flush the writer tells the spool which records are committed. A segment whose every
//! record is committed is emptied (the one being written) or deleted (an older one). The segment
//! being written is sealed and a new one started once it passes [`SEGMENT_BYTES`], so that under
//! steady load, when it is never all committed at once, no file grows without bound.
//!
//! At start, before serving, [`orphans`] finds the spools whose instance is gone for the writer to
//! replay. Replay is idempotent (`cr_write_usage`, told the batch is a replay, neither stores nor
//! charges a record whose request id is stored already), so records committed before their
//! instance died, or a spool replayed twice, are charged once. A torn last frame (the process died
//! mid-write) is skipped.

mod encoding;

use super::UsageRecord;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use uuid::Uuid;

/// The segment being written is sealed past this size (a few thousand records).
const SEGMENT_BYTES: u64 = 1 << 20;

struct Segment {
    n: u64,
    file: Arc<File>,
    /// bytes written: where a failed write is cut back to
    len: u64,
    /// records written and not committed yet
    pending: u64,
    /// written since the last sync
    unsynced: bool,
}

impl Segment {
    fn create(dir: &Path, owner: Owner, n: u64) -> io::Result<Segment> {
        let file = OpenOptions::new().append(true).create_new(true).open(owner.segment(dir, n))?;
        Ok(Segment { n, file: Arc::new(file), len: 0, pending: 0, unsynced: false })
    }
}

struct State {
    current: Segment,
    /// older segments with records not committed yet
    sealed: Vec<Segment>,
    next: u64,
    /// the encoding buffer, reused: no allocation per record
    frame: Vec<u8>,
    /// written since the last sync (the syncer has been woken)
    unsynced: bool,
    /// a file was made since the last sync: the directory is synced too
    new_file: bool,
    /// the last write failed (logged once, until one succeeds)
    failing: bool,
    closed: bool,
}

impl State {
    fn segments(&mut self) -> impl Iterator<Item = &mut Segment> {
        std::iter::once(&mut self.current).chain(self.sealed.iter_mut())
    }
}

/// Whose a spool is: a database (its `deployment` row) and an instance on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Owner {
    pub(crate) deployment: Uuid,
    pub(crate) instance: Uuid,
}

impl Owner {
    fn lock(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.{}.lock", self.deployment, self.instance))
    }

    fn segment(&self, dir: &Path, n: u64) -> PathBuf {
        dir.join(format!("{}.{}.{n}.spool", self.deployment, self.instance))
    }

    /// The owner of a spool file, and its segment number (None for the lock file).
    fn parse(name: &str) -> Option<(Owner, Option<u64>)> {
        let (deployment, rest) = name.split_once('.')?;
        let (instance, rest) = rest.split_once('.')?;
        let owner = Owner { deployment: deployment.parse().ok()?, instance: instance.parse().ok()? };
        match rest {
            "lock" => Some((owner, None)),
            _ => Some((owner, Some(rest.strip_suffix(".spool")?.parse().ok()?))),
        }
    }
}

/// This instance's spool. Shared by the writer's handles (which append) and its task (which
/// marks records committed).
pub(crate) struct Spool {
    dir: PathBuf,
    owner: Owner,
    /// locked for the life of the instance
    _lock: File,
    state: Mutex<State>,
    wake: tokio::sync::Notify,
}

fn remove_or_warn(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "could not delete a usage spool file"),
    }
}

/// The identity of the database `pool` reaches, which names its spools.
pub(crate) async fn deployment(pool: &sqlx::PgPool) -> Result<Uuid, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM deployment").fetch_one(pool).await
}

impl Spool {
    /// Makes and locks the spool of `owner` in `dir` (created if missing).
    pub(crate) fn open(dir: PathBuf, owner: Owner) -> io::Result<Arc<Spool>> {
        fs::create_dir_all(&dir)?;
        let making = dir.join(format!("{}.{}.new", owner.deployment, owner.instance));
        let lock = File::create(&making)?;
        lock.try_lock().map_err(io::Error::from)?;
        fs::rename(&making, owner.lock(&dir))?;
        let current = Segment::create(&dir, owner, 0)?;
        let state = State {
            current,
            sealed: vec![],
            next: 1,
            frame: Vec::with_capacity(1024),
            unsynced: false,
            new_file: true,
            failing: false,
            closed: false,
        };
        Ok(Arc::new(Spool { dir, owner, _lock: lock, state: Mutex::new(state), wake: tokio::sync::Notify::new() }))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends a record (one `write`). The segment it went to, or None when it could not be
    /// written: the record is then in memory only, as it would be without a spool.
    pub(crate) fn append(&self, rec: &UsageRecord) -> Option<u64> {
        let mut guard = self.state();
        let st = &mut *guard;
        if st.closed {
            return None;
        }
        st.frame.clear();
        encoding::encode(rec, &mut st.frame);
        let seg = &mut st.current;
        if let Err(e) = (&*seg.file).write_all(&st.frame) {
            // a partial frame is cut off, so that the next record's frame follows a whole one
            let _ = seg.file.set_len(seg.len);
            if !std::mem::replace(&mut st.failing, true) {
                tracing::error!(error = %e, dir = %self.dir.display(), "cannot write usage records to the spool; they are kept in memory only until it works again");
            }
            drop(guard);
            crate::telemetry::usage_spool_failed();
            return None;
        }
        seg.len += st.frame.len() as u64;
        seg.pending += 1;
        seg.unsynced = true;
        let n = seg.n;
        if std::mem::take(&mut st.failing) {
            tracing::info!("usage records are written to the spool again");
        }
        let wake = !std::mem::replace(&mut st.unsynced, true);
        drop(guard);
        if wake {
            self.wake.notify_one();
        }
        Some(n)
    }

    /// The writer committed `done` (segment, records): a segment with nothing left pending is
    /// emptied (the current one) or deleted; the current one is sealed past [`SEGMENT_BYTES`].
    pub(crate) fn committed(&self, done: &[(u64, u64)]) {
        let mut guard = self.state();
        let st = &mut *guard;
        for &(n, count) in done {
            if let Some(s) = st.segments().find(|s| s.n == n) {
                s.pending = s.pending.saturating_sub(count);
            }
        }
        st.sealed.retain(|s| {
            if s.pending > 0 {
                return true;
            }
            remove_or_warn(&self.owner.segment(&self.dir, s.n));
            false
        });
        let cur = &mut st.current;
        if cur.pending == 0 {
            if cur.len > 0 {
                match cur.file.set_len(0) {
                    Ok(()) => cur.len = 0,
                    Err(e) => tracing::warn!(error = %e, "could not empty a usage spool segment"),
                }
            }
        } else if cur.len >= SEGMENT_BYTES {
            match Segment::create(&self.dir, self.owner, st.next) {
                Ok(s) => {
                    st.next += 1;
                    let sealed = std::mem::replace(&mut st.current, s);
                    st.sealed.push(sealed);
                    st.new_file = true;
                    let wake = !std::mem::replace(&mut st.unsynced, true);
                    drop(guard);
                    if wake {
                        self.wake.notify_one();
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not start a new usage spool segment"),
            }
        }
    }

    /// Puts on disk what was written since the last call (and the directory when a file was
    /// made), on a blocking thread.
    async fn sync(&self) {
        let (files, dir) = {
            let mut st = self.state();
            st.unsynced = false;
            let files: Vec<Arc<File>> =
                st.segments().filter_map(|s| std::mem::take(&mut s.unsynced).then(|| s.file.clone())).collect();
            (files, std::mem::take(&mut st.new_file).then(|| self.dir.clone()))
        };
        let synced = tokio::task::spawn_blocking(move || -> io::Result<()> {
            for f in files {
                f.sync_data()?;
            }
            if let Some(dir) = dir {
                File::open(dir)?.sync_all()?;
            }
            Ok(())
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)));
        if let Err(e) = synced {
            tracing::warn!(error = %e, dir = %self.dir.display(), "could not sync the usage spool to disk");
        }
    }

    /// Syncs `every` after the first record written since the last sync (so never while idle),
    /// until the spool is closed.
    pub(crate) fn spawn_syncer(self: &Arc<Self>, every: Duration) {
        let spool = self.clone();
        tokio::spawn(async move {
            loop {
                spool.wake.notified().await;
                if spool.state().closed {
                    return;
                }
                tokio::time::sleep(every).await;
                spool.sync().await;
            }
        });
    }

    /// At shutdown, after the writer's last flush: deletes this instance's files when every
    /// record in them is committed, else puts them on disk for the next start to replay. The
    /// number of records left.
    pub(crate) fn close(&self) -> u64 {
        let mut st = self.state();
        if std::mem::replace(&mut st.closed, true) {
            return 0;
        }
        self.wake.notify_one();
        let left: u64 = st.segments().map(|s| s.pending).sum();
        for s in st.segments() {
            if left == 0 {
                remove_or_warn(&self.owner.segment(&self.dir, s.n));
            } else if let Err(e) = s.file.sync_data() {
                tracing::warn!(error = %e, "could not sync the usage spool to disk");
            }
        }
        if left == 0 {
            remove_or_warn(&self.owner.lock(&self.dir));
        }
        left
    }
}

impl Drop for Spool {
    /// A spool dropped without a shutdown (a gateway dropped as tests do, the runtime ending) is
    /// closed then: deleted if nothing in it is pending.
    fn drop(&mut self) {
        self.close();
    }
}

/// The spool of an instance that is gone: its segments, oldest first, and its lock, held while
/// it is replayed.
pub(crate) struct Orphan {
    pub(crate) instance: Uuid,
    pub(crate) segments: Vec<PathBuf>,
    lock: Option<(PathBuf, File)>,
}

impl Orphan {
    /// Deletes the spool once every segment is replayed (the lock file last, still locked).
    pub(crate) fn finish(self) {
        for path in &self.segments {
            remove_or_warn(path);
        }
        if let Some((path, _lock)) = self.lock {
            remove_or_warn(&path);
        }
    }
}

/// The spools in `dir` of `me`'s database whose instance is gone: nobody holds their lock (the
/// kernel released a dead process's), or there is no lock file (its instance stopped, or another
/// instance replayed it meanwhile).
pub(crate) fn orphans(dir: &Path, me: Owner) -> io::Result<Vec<Orphan>> {
    let mut found: BTreeMap<Owner, Vec<(u64, PathBuf)>> = BTreeMap::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Some((owner, n)) = entry.file_name().to_str().and_then(Owner::parse) else { continue };
        if owner.deployment != me.deployment || owner == me {
            continue;
        }
        let segments = found.entry(owner).or_default();
        if let Some(n) = n {
            segments.push((n, entry.path()));
        }
    }
    let mut out = vec![];
    for (owner, mut segments) in found {
        let path = owner.lock(dir);
        let lock = match File::open(&path) {
            Ok(f) => match f.try_lock() {
                Ok(()) => Some((path, f)),
                Err(TryLockError::WouldBlock) => continue,
                Err(TryLockError::Error(e)) => return Err(e),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        segments.sort_unstable();
        out.push(Orphan { instance: owner.instance, segments: segments.into_iter().map(|(_, p)| p).collect(), lock });
    }
    Ok(out)
}

/// The records of a segment, and how many bytes at its end could not be read (a torn last frame;
/// a deleted segment, replayed meanwhile by another instance, reads as empty).
pub(crate) fn read_segment(path: &Path) -> io::Result<(Vec<UsageRecord>, usize)> {
    match fs::read(path) {
        Ok(bytes) => Ok(encoding::decode(&bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok((vec![], 0)),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::{ServerToolUse, TokenUsage};

    /// A fresh directory, deleted when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            let d = std::env::temp_dir().join(format!("cloudrouter-spool-unit-{}", Uuid::new_v4()));
            fs::create_dir_all(&d).unwrap();
            TempDir(d)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn record(i: usize) -> UsageRecord {
        UsageRecord {
            id: format!("req_{i:06}"),
            created_at: chrono::Utc::now(),
            user_id: Uuid::new_v4(),
            key_id: i.is_multiple_of(2).then(Uuid::new_v4),
            channel: "value".into(),
            endpoint: "messages".into(),
            requested_model: "claude-haiku-4-5".into(),
            served_model: Some("claude-haiku-4-5-20251001".into()),
            upstream_id: Some(Uuid::new_v4()),
            stream: i.is_multiple_of(3),
            status: 200,
            error_type: None,
            outcome: crate::usage::Outcome::Ok,
            attempts: 1,
            tokens: TokenUsage { input_tokens: 12 + i as i64, output_tokens: 10, cache_write_5m_tokens: 1, cache_write_1h_tokens: 2, cache_read_tokens: 3 },
            server_tools: ServerToolUse { web_search_requests: 1, web_fetch_requests: 0 },
            cost_micro_usd: crate::money::MicroUsd::from_micros(62),
            charge_micros: crate::money::MicroCny::from_micros(451),
            held_micros: crate::money::MicroCny::from_micros(400),
            latency_ms: 7,
            ttft_ms: Some(3),
            affinity: true,
            off_plan: i % 2 == 1,
        }
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    }

    fn owner(deployment: Uuid) -> Owner {
        Owner { deployment, instance: Uuid::new_v4() }
    }

    /// The name of one of `o`'s files.
    fn name(o: Owner, suffix: &str) -> String {
        format!("{}.{}.{suffix}", o.deployment, o.instance)
    }

    #[test]
    fn records_read_back_as_written_with_what_settlement_needs() {
        let dir = TempDir::new();
        let me = owner(Uuid::new_v4());
        let spool = Spool::open(dir.0.clone(), me).unwrap();
        let written: Vec<UsageRecord> = (0..3).map(record).collect();
        for r in &written {
            assert_eq!(spool.append(r), Some(0));
        }
        assert_eq!(files(&dir.0), [name(me, "0.spool"), name(me, "lock")]);
        let read = read_segment(&me.segment(&dir.0, 0)).unwrap();
        assert_eq!(read, (written, 0), "every field, off_plan (which settlement needs) included");
    }

    #[test]
    fn a_torn_last_frame_is_skipped() {
        let dir = TempDir::new();
        let me = owner(Uuid::new_v4());
        let spool = Spool::open(dir.0.clone(), me).unwrap();
        let written: Vec<UsageRecord> = (0..2).map(record).collect();
        for r in &written {
            spool.append(r);
        }
        // killed in the middle of writing a third record
        let path = me.segment(&dir.0, 0);
        let mut frame = vec![];
        encoding::encode(&record(2), &mut frame);
        OpenOptions::new().append(true).open(&path).unwrap().write_all(&frame[..frame.len() / 2]).unwrap();
        assert_eq!(read_segment(&path).unwrap(), (written, frame.len() / 2));
    }

    #[test]
    fn committed_segments_are_emptied_or_deleted_and_a_full_one_is_sealed() {
        let dir = TempDir::new();
        let me = owner(Uuid::new_v4());
        let spool = Spool::open(dir.0.clone(), me).unwrap();
        let seg0 = me.segment(&dir.0, 0);
        for i in 0..3 {
            spool.append(&record(i));
        }
        spool.committed(&[(0, 3)]);
        assert_eq!(fs::metadata(&seg0).unwrap().len(), 0, "everything committed: emptied");

        let mut n = 0;
        while fs::metadata(&seg0).unwrap().len() < SEGMENT_BYTES {
            assert_eq!(spool.append(&record(n as usize)), Some(0));
            n += 1;
        }
        spool.committed(&[(0, n - 1)]);
        assert_eq!(files(&dir.0), [name(me, "0.spool"), name(me, "1.spool"), name(me, "lock")], "past the size, a new segment");
        assert_eq!(spool.append(&record(0)), Some(1));
        spool.committed(&[(0, 1)]);
        assert_eq!(files(&dir.0), [name(me, "1.spool"), name(me, "lock")], "the sealed segment, all committed, is deleted");
        assert_eq!(read_segment(&me.segment(&dir.0, 1)).unwrap().0.len(), 1);
        spool.committed(&[(1, 1)]);
        assert_eq!(fs::metadata(me.segment(&dir.0, 1)).unwrap().len(), 0);
        assert_eq!(spool.close(), 0);
        assert_eq!(files(&dir.0), Vec::<String>::new(), "a clean close leaves nothing");
    }

    #[test]
    fn only_spools_whose_instance_is_gone_are_found_and_each_by_one_replayer() {
        let dir = TempDir::new();
        let deployment = Uuid::new_v4();
        let (live, dead, other_db, me) = (owner(deployment), owner(deployment), owner(Uuid::new_v4()), owner(deployment));
        let live_spool = Spool::open(dir.0.clone(), live).unwrap();
        live_spool.append(&record(0));
        for o in [dead, other_db] {
            let spool = Spool::open(dir.0.clone(), o).unwrap();
            spool.append(&record(1));
            drop(spool); // as the kernel does for a killed process: the lock goes, the files stay
        }

        let found = orphans(&dir.0, me).unwrap();
        assert_eq!(found.iter().map(|o| (o.instance, o.segments.clone())).collect::<Vec<_>>(), [(dead.instance, vec![dead.segment(&dir.0, 0)])]);
        assert!(orphans(&dir.0, owner(deployment)).unwrap().is_empty(), "a spool being replayed is locked by its replayer");
        assert!(orphans(&dir.0, dead).unwrap().is_empty(), "an instance's own spool is not an orphan");
        for o in found {
            assert_eq!(read_segment(&o.segments[0]).unwrap().0[0].id, record(1).id);
            o.finish();
        }
        assert_eq!(files(&dir.0).len(), 4, "the live spool and the other database's stay");
        assert!(!files(&dir.0).iter().any(|f| f.contains(&dead.instance.to_string())));
    }

    #[test]
    fn closing_with_records_not_committed_keeps_them_for_the_next_start() {
        let dir = TempDir::new();
        let me = owner(Uuid::new_v4());
        let spool = Spool::open(dir.0.clone(), me).unwrap();
        spool.append(&record(0));
        spool.append(&record(1));
        spool.committed(&[(0, 1)]);
        assert_eq!(spool.close(), 1);
        assert_eq!(spool.append(&record(2)), None, "nothing is spooled after the close");
        drop(spool);
        let found = orphans(&dir.0, owner(me.deployment)).unwrap();
        assert_eq!(found.len(), 1);
        let ids: Vec<String> = read_segment(&found[0].segments[0]).unwrap().0.into_iter().map(|r| r.id).collect();
        assert_eq!(ids, [record(0).id, record(1).id], "the committed record too: replay skips it");
    }
}
