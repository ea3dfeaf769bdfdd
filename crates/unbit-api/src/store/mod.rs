//! The database: SQLite (embedded default, one file, WAL) or PostgreSQL (several API hosts),
//! chosen by the URL. Both speak the same SQL here: `$n` placeholders, BIGINT columns, unix
//! seconds for times, `RETURNING` on inserts; only the id column type differs (see
//! `migrations`). Every write runs in a transaction so a failed request leaves nothing half-saved.

pub mod migrations;

use crate::crypto::anyhow_free::Result as AnyResult;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row, Transaction};
use std::str::FromStr;
use std::time::Duration;
use tokio::sync::{Mutex, MutexGuard};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
    /// SQLite allows one writer; taking this in-process lock before `BEGIN` turns what would be
    /// SQLITE_BUSY errors under concurrent requests into a short queue. PostgreSQL needs none.
    write_lock: Mutex<()>,
}

/// A write transaction (plus, on SQLite, the writer lock for its lifetime). Dropped without
/// `commit` it rolls back.
pub struct WriteTx<'a> {
    pub tx: Transaction<'static, sqlx::Any>,
    pub backend: Backend,
    _guard: Option<MutexGuard<'a, ()>>,
}

impl WriteTx<'_> {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl std::ops::Deref for WriteTx<'_> {
    type Target = Transaction<'static, sqlx::Any>;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

/// `--db` accepts a PostgreSQL URL, a `sqlite:` URL or a plain file path.
pub fn database_url(db: &str) -> (Backend, String) {
    if db.starts_with("postgres://") || db.starts_with("postgresql://") {
        (Backend::Postgres, db.to_string())
    } else if db.starts_with("sqlite:") {
        (Backend::Sqlite, db.to_string())
    } else {
        (Backend::Sqlite, format!("sqlite://{db}?mode=rwc"))
    }
}

impl Db {
    pub async fn open(db: &str) -> AnyResult<Db> {
        Self::open_with(db, 16).await
    }

    pub async fn open_with(db: &str, max_connections: u32) -> AnyResult<Db> {
        sqlx::any::install_default_drivers();
        let (backend, url) = database_url(db);
        let options = AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA foreign_keys = ON",
                            "PRAGMA busy_timeout = 5000",
                            "PRAGMA synchronous = NORMAL",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let db = Db { pool, backend, write_lock: Mutex::new(()) };
        migrations::run(&db).await?;
        Ok(db)
    }

    pub async fn write(&self) -> Result<WriteTx<'_>, sqlx::Error> {
        let guard = match self.backend {
            Backend::Sqlite => Some(self.write_lock.lock().await),
            Backend::Postgres => None,
        };
        let tx = self.pool.begin().await?;
        Ok(WriteTx { tx, backend: self.backend, _guard: guard })
    }
}

/// Typed column access with the column named in the error.
pub trait RowExt {
    fn i64(&self, col: &str) -> i64;
    fn opt_i64(&self, col: &str) -> Option<i64>;
    fn str(&self, col: &str) -> String;
    fn opt_str(&self, col: &str) -> Option<String>;
    fn flag(&self, col: &str) -> bool {
        self.i64(col) != 0
    }
}

// Columns are read by the names of our own queries; a missing or mistyped column is a
// programming error caught by the test suite, so it is logged and read as empty rather than
// turned into a per-request error path.
impl RowExt for AnyRow {
    fn i64(&self, col: &str) -> i64 {
        self.opt_i64(col).unwrap_or_default()
    }
    fn opt_i64(&self, col: &str) -> Option<i64> {
        self.try_get::<Option<i64>, _>(col).unwrap_or_else(|e| {
            tracing::error!(column = col, error = %e, "bad integer column");
            None
        })
    }
    fn str(&self, col: &str) -> String {
        self.opt_str(col).unwrap_or_default()
    }
    fn opt_str(&self, col: &str) -> Option<String> {
        self.try_get::<Option<String>, _>(col).unwrap_or_else(|e| {
            tracing::error!(column = col, error = %e, "bad text column");
            None
        })
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// `$a, $b, ...` placeholders for an `IN (...)` list starting at `$first`.
pub fn placeholders(first: usize, count: usize) -> String {
    (first..first + count).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}
