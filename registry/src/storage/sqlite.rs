//! [`SqliteMetaStore`]: the [`MetaStore`] in one SQLite database.
//!
//! The database runs in WAL mode with `synchronous=FULL`, so a transaction that returned is on
//! disk: a `201 Created` survives a crash or a power cut. One connection behind a mutex serves
//! every request; each call is one short transaction.
//!
//! ## Schema (version 1)
//! - `repositories(id, name, created_at)`;
//! - `blob_links(repo_id, digest, size, created_at)`: which blobs a repository holds;
//! - `manifests(repo_id, digest, media_type, size, subject, artifact_type, annotations,
//!   created_at)`, with an index on `(repo_id, subject)` for the referrers API;
//! - `manifest_references(repo_id, manifest, digest)`: what each manifest points at, for
//!   garbage collection;
//! - `tags(repo_id, name, digest, updated_at)`.
//!
//! Tags and references cascade away with their manifest. Text columns compare bytewise, which
//! is the "ASCIIbetical" order the spec asks of tag lists.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use berth_layerstore::Digest;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::{
    ManifestRecord, MetaStore, NewManifest, PutManifest, ReferenceKind, Result, StorageError,
};
use crate::reference::{RepositoryName, Tag};

/// The schema version this code reads and writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS repositories (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS blob_links (
    repo_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    digest TEXT NOT NULL,
    size INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (repo_id, digest)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blob_links_digest ON blob_links(digest);
CREATE TABLE IF NOT EXISTS manifests (
    repo_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    digest TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    subject TEXT,
    artifact_type TEXT,
    annotations TEXT,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (repo_id, digest)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS manifests_subject ON manifests(repo_id, subject)
    WHERE subject IS NOT NULL;
CREATE TABLE IF NOT EXISTS manifest_references (
    repo_id INTEGER NOT NULL,
    manifest TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (repo_id, manifest, digest),
    FOREIGN KEY (repo_id, manifest) REFERENCES manifests(repo_id, digest) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tags (
    repo_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (repo_id, name),
    FOREIGN KEY (repo_id, digest) REFERENCES manifests(repo_id, digest) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tags_digest ON tags(repo_id, digest);
";

impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> StorageError {
        StorageError::Meta(Box::new(e))
    }
}

/// Metadata in SQLite.
#[derive(Debug)]
pub struct SqliteMetaStore {
    conn: Mutex<Connection>,
}

impl SqliteMetaStore {
    /// Opens (creating as needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<SqliteMetaStore> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
        }
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    /// A private in-memory database, for tests.
    pub fn in_memory() -> Result<SqliteMetaStore> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<SqliteMetaStore> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // `journal_mode` answers with the resulting mode (`memory` for in-memory databases).
        let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StorageError::Corrupt {
                what: "schema version (written by a newer berth)",
                value: version.to_string(),
            });
        }
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(&format!("PRAGMA user_version={SCHEMA_VERSION}"))?;
        Ok(SqliteMetaStore {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        // A panic while the lock was held cannot leave a transaction half-applied (rusqlite
        // rolls back on drop), so a poisoned lock is still usable.
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn)
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn repo_id(conn: &Connection, repo: &RepositoryName) -> Result<Option<i64>> {
    Ok(conn
        .query_row(
            "SELECT id FROM repositories WHERE name = ?1",
            [repo.as_str()],
            |r| r.get(0),
        )
        .optional()?)
}

fn ensure_repo(tx: &Transaction<'_>, repo: &RepositoryName) -> Result<i64> {
    tx.execute(
        "INSERT INTO repositories (name, created_at) VALUES (?1, ?2)
         ON CONFLICT(name) DO NOTHING",
        params![repo.as_str(), now()],
    )?;
    Ok(tx.query_row(
        "SELECT id FROM repositories WHERE name = ?1",
        [repo.as_str()],
        |r| r.get(0),
    )?)
}

fn parse_digest(value: String) -> Result<Digest> {
    value.parse().map_err(|_| StorageError::Corrupt {
        what: "digest",
        value,
    })
}

fn size_from_db(value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|_| StorageError::Corrupt {
        what: "size",
        value: value.to_string(),
    })
}

fn size_to_db(size: u64) -> Result<i64> {
    i64::try_from(size).map_err(|_| StorageError::Corrupt {
        what: "size",
        value: size.to_string(),
    })
}

/// A `manifests` row as read, before its values are checked.
type RawManifest = (
    String,
    String,
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
);

const MANIFEST_COLUMNS: &str = "digest, media_type, size, subject, artifact_type, annotations";

fn raw_manifest(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawManifest> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn manifest_record(raw: RawManifest) -> Result<ManifestRecord> {
    let (digest, media_type, size, subject, artifact_type, annotations) = raw;
    let annotations = match annotations {
        None => None,
        Some(json) => Some(
            serde_json::from_str::<BTreeMap<String, String>>(&json).map_err(|_| {
                StorageError::Corrupt {
                    what: "annotations",
                    value: json.clone(),
                }
            })?,
        ),
    };
    Ok(ManifestRecord {
        digest: parse_digest(digest)?,
        media_type,
        size: size_from_db(size)?,
        subject: subject.map(parse_digest).transpose()?,
        artifact_type,
        annotations,
    })
}

impl MetaStore for SqliteMetaStore {
    fn repositories(&self, last: Option<&str>, limit: usize) -> Result<Vec<RepositoryName>> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT name FROM repositories WHERE name > ?1 ORDER BY name LIMIT ?2",
            )?;
            let names = stmt
                .query_map(params![last.unwrap_or(""), limit as i64], |r| {
                    r.get::<_, String>(0)
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            names
                .into_iter()
                .map(|n| {
                    RepositoryName::new(&n).map_err(|_| StorageError::Corrupt {
                        what: "repository name",
                        value: n,
                    })
                })
                .collect()
        })
    }

    fn repository_exists(&self, repo: &RepositoryName) -> Result<bool> {
        self.with(|conn| Ok(repo_id(conn, repo)?.is_some()))
    }

    fn link_blob(&self, repo: &RepositoryName, digest: &Digest, size: u64) -> Result<()> {
        let size = size_to_db(size)?;
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let id = ensure_repo(&tx, repo)?;
            tx.execute(
                "INSERT INTO blob_links (repo_id, digest, size, created_at)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                params![id, digest.to_string(), size, now()],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    fn blob_link(&self, repo: &RepositoryName, digest: &Digest) -> Result<Option<u64>> {
        self.with(|conn| {
            let size: Option<i64> = conn
                .prepare_cached(
                    "SELECT b.size FROM blob_links b JOIN repositories r ON r.id = b.repo_id
                     WHERE r.name = ?1 AND b.digest = ?2",
                )?
                .query_row(params![repo.as_str(), digest.to_string()], |r| r.get(0))
                .optional()?;
            size.map(size_from_db).transpose()
        })
    }

    fn unlink_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<bool> {
        self.with(|conn| {
            let n = conn.execute(
                "DELETE FROM blob_links WHERE digest = ?2
                 AND repo_id = (SELECT id FROM repositories WHERE name = ?1)",
                params![repo.as_str(), digest.to_string()],
            )?;
            Ok(n > 0)
        })
    }

    fn put_manifest(&self, repo: &RepositoryName, manifest: &NewManifest) -> Result<PutManifest> {
        let record = &manifest.record;
        let digest = record.digest.to_string();
        let size = size_to_db(record.size)?;
        let annotations = record
            .annotations
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StorageError::Meta(Box::new(e)))?;
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let id = ensure_repo(&tx, repo)?;
            let mut missing = Vec::new();
            {
                let mut blob = tx.prepare_cached(
                    "SELECT 1 FROM blob_links WHERE repo_id = ?1 AND digest = ?2",
                )?;
                let mut child = tx
                    .prepare_cached("SELECT 1 FROM manifests WHERE repo_id = ?1 AND digest = ?2")?;
                for (reference, kind) in &manifest.references {
                    let stmt = match kind {
                        ReferenceKind::Blob => &mut blob,
                        ReferenceKind::Manifest => &mut child,
                    };
                    if !stmt.exists(params![id, reference.to_string()])?
                        && !missing.contains(reference)
                    {
                        missing.push(reference.clone());
                    }
                }
            }
            if !missing.is_empty() {
                // Dropping the transaction rolls back the repository it may have created.
                return Ok(PutManifest::MissingReferences(missing));
            }
            let now = now();
            tx.execute(
                "INSERT INTO manifests
                   (repo_id, digest, media_type, size, subject, artifact_type, annotations,
                    created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(repo_id, digest) DO UPDATE SET
                   media_type = excluded.media_type, size = excluded.size,
                   subject = excluded.subject, artifact_type = excluded.artifact_type,
                   annotations = excluded.annotations",
                params![
                    id,
                    digest,
                    record.media_type,
                    size,
                    record.subject.as_ref().map(Digest::to_string),
                    record.artifact_type,
                    annotations,
                    now
                ],
            )?;
            tx.execute(
                "INSERT INTO blob_links (repo_id, digest, size, created_at)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                params![id, digest, size, now],
            )?;
            tx.execute(
                "DELETE FROM manifest_references WHERE repo_id = ?1 AND manifest = ?2",
                params![id, digest],
            )?;
            {
                let mut add = tx.prepare_cached(
                    "INSERT INTO manifest_references (repo_id, manifest, digest)
                     VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                )?;
                for (reference, _) in &manifest.references {
                    add.execute(params![id, digest, reference.to_string()])?;
                }
                let mut tag = tx.prepare_cached(
                    "INSERT INTO tags (repo_id, name, digest, updated_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(repo_id, name) DO UPDATE SET
                       digest = excluded.digest, updated_at = excluded.updated_at",
                )?;
                for t in &manifest.tags {
                    tag.execute(params![id, t.as_str(), digest, now])?;
                }
            }
            tx.commit()?;
            Ok(PutManifest::Stored)
        })
    }

    fn manifest(&self, repo: &RepositoryName, digest: &Digest) -> Result<Option<ManifestRecord>> {
        self.with(|conn| {
            let raw = conn
                .prepare_cached(&format!(
                    "SELECT {MANIFEST_COLUMNS} FROM manifests
                     WHERE repo_id = (SELECT id FROM repositories WHERE name = ?1)
                       AND digest = ?2"
                ))?
                .query_row(params![repo.as_str(), digest.to_string()], raw_manifest)
                .optional()?;
            raw.map(manifest_record).transpose()
        })
    }

    fn tag(&self, repo: &RepositoryName, tag: &Tag) -> Result<Option<Digest>> {
        self.with(|conn| {
            let digest: Option<String> = conn
                .prepare_cached(
                    "SELECT t.digest FROM tags t JOIN repositories r ON r.id = t.repo_id
                     WHERE r.name = ?1 AND t.name = ?2",
                )?
                .query_row(params![repo.as_str(), tag.as_str()], |r| r.get(0))
                .optional()?;
            digest.map(parse_digest).transpose()
        })
    }

    fn tags(
        &self,
        repo: &RepositoryName,
        last: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<Tag>>> {
        self.with(|conn| {
            let Some(id) = repo_id(conn, repo)? else {
                return Ok(None);
            };
            let mut stmt = conn.prepare_cached(
                "SELECT name FROM tags WHERE repo_id = ?1 AND name > ?2 ORDER BY name LIMIT ?3",
            )?;
            let names = stmt
                .query_map(params![id, last.unwrap_or(""), limit as i64], |r| {
                    r.get::<_, String>(0)
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            names
                .into_iter()
                .map(|n| {
                    Tag::new(&n).map_err(|_| StorageError::Corrupt {
                        what: "tag",
                        value: n,
                    })
                })
                .collect::<Result<Vec<_>>>()
                .map(Some)
        })
    }

    fn delete_manifest(&self, repo: &RepositoryName, digest: &Digest) -> Result<bool> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some(id) = repo_id(&tx, repo)? else {
                return Ok(false);
            };
            let n = tx.execute(
                "DELETE FROM manifests WHERE repo_id = ?1 AND digest = ?2",
                params![id, digest.to_string()],
            )?;
            if n > 0 {
                tx.execute(
                    "DELETE FROM blob_links WHERE repo_id = ?1 AND digest = ?2",
                    params![id, digest.to_string()],
                )?;
            }
            tx.commit()?;
            Ok(n > 0)
        })
    }

    fn delete_tag(&self, repo: &RepositoryName, tag: &Tag) -> Result<bool> {
        self.with(|conn| {
            let n = conn.execute(
                "DELETE FROM tags WHERE name = ?2
                 AND repo_id = (SELECT id FROM repositories WHERE name = ?1)",
                params![repo.as_str(), tag.as_str()],
            )?;
            Ok(n > 0)
        })
    }

    fn referrers(
        &self,
        repo: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<ManifestRecord>> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {MANIFEST_COLUMNS} FROM manifests
                 WHERE repo_id = (SELECT id FROM repositories WHERE name = ?1)
                   AND subject = ?2 AND (?3 IS NULL OR artifact_type = ?3)
                 ORDER BY digest"
            ))?;
            let raws = stmt
                .query_map(
                    params![repo.as_str(), subject.to_string(), artifact_type],
                    raw_manifest,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            raws.into_iter().map(manifest_record).collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(name: &str) -> RepositoryName {
        RepositoryName::new(name).unwrap()
    }

    fn record(data: &[u8], subject: Option<&Digest>) -> ManifestRecord {
        ManifestRecord {
            digest: Digest::sha256(data),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            size: data.len() as u64,
            subject: subject.cloned(),
            artifact_type: Some("application/x-test".into()),
            annotations: Some(BTreeMap::from([("k".into(), "v".into())])),
        }
    }

    #[test]
    fn links_are_per_repository() {
        let db = SqliteMetaStore::in_memory().unwrap();
        let d = Digest::sha256(b"blob");
        assert!(!db.repository_exists(&repo("a")).unwrap());
        db.link_blob(&repo("a"), &d, 4).unwrap();
        db.link_blob(&repo("a"), &d, 4).unwrap();
        assert_eq!(db.blob_link(&repo("a"), &d).unwrap(), Some(4));
        assert_eq!(db.blob_link(&repo("b"), &d).unwrap(), None);
        assert!(db.repository_exists(&repo("a")).unwrap());
        assert!(db.unlink_blob(&repo("a"), &d).unwrap());
        assert!(!db.unlink_blob(&repo("a"), &d).unwrap());
    }

    #[test]
    fn manifests_tags_and_referrers() {
        let db = SqliteMetaStore::in_memory().unwrap();
        let r = repo("x/y");
        let layer = Digest::sha256(b"layer");
        let subject = record(b"subject", None);
        let missing = db
            .put_manifest(
                &r,
                &NewManifest {
                    record: subject.clone(),
                    references: vec![(layer.clone(), ReferenceKind::Blob)],
                    tags: vec![Tag::new("v1").unwrap()],
                },
            )
            .unwrap();
        assert_eq!(missing, PutManifest::MissingReferences(vec![layer.clone()]));
        assert!(!db.repository_exists(&r).unwrap(), "rolled back");

        db.link_blob(&r, &layer, 5).unwrap();
        let put = |rec: &ManifestRecord, tags: &[&str]| {
            db.put_manifest(
                &r,
                &NewManifest {
                    record: rec.clone(),
                    references: vec![(layer.clone(), ReferenceKind::Blob)],
                    tags: tags.iter().map(|t| Tag::new(t).unwrap()).collect(),
                },
            )
            .unwrap()
        };
        assert_eq!(put(&subject, &["v1", "latest"]), PutManifest::Stored);
        assert_eq!(
            db.manifest(&r, &subject.digest).unwrap(),
            Some(subject.clone())
        );
        assert_eq!(
            db.tag(&r, &Tag::new("v1").unwrap()).unwrap(),
            Some(subject.digest.clone())
        );
        let names = |v: Option<Vec<Tag>>| -> Vec<String> {
            v.unwrap().iter().map(|t| t.to_string()).collect()
        };
        assert_eq!(names(db.tags(&r, None, 10).unwrap()), ["latest", "v1"]);
        assert_eq!(names(db.tags(&r, Some("latest"), 10).unwrap()), ["v1"]);
        assert_eq!(db.tags(&repo("nope"), None, 10).unwrap(), None);
        // The manifest's own blob is linked.
        assert_eq!(
            db.blob_link(&r, &subject.digest).unwrap(),
            Some(subject.size)
        );

        let sig = record(b"signature", Some(&subject.digest));
        assert_eq!(put(&sig, &[]), PutManifest::Stored);
        assert_eq!(
            db.referrers(&r, &subject.digest, None).unwrap(),
            vec![sig.clone()]
        );
        assert!(
            db.referrers(&r, &subject.digest, Some("other"))
                .unwrap()
                .is_empty()
        );

        assert!(db.delete_tag(&r, &Tag::new("latest").unwrap()).unwrap());
        assert!(db.delete_manifest(&r, &subject.digest).unwrap());
        assert!(!db.delete_manifest(&r, &subject.digest).unwrap());
        assert_eq!(db.tag(&r, &Tag::new("v1").unwrap()).unwrap(), None);
        assert_eq!(db.blob_link(&r, &subject.digest).unwrap(), None);
        assert_eq!(db.repositories(None, 10).unwrap(), vec![r.clone()]);
    }
}
