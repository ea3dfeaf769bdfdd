//! Node revisions: every server row carries a counter bumped, in the same transaction, by any
//! change that alters what that node runs (its container specs, loopboxes, domain keys). A node
//! long-polls with the last revision it saw; `Revisions::notify` wakes waiting polls in this
//! process at once, and waiters also re-check the database twice a second so changes made
//! through another API host (PostgreSQL deployments) or the admin CLI arrive within a second.

use crate::store::{placeholders, WriteTx};
use tokio::sync::watch;

pub struct Revisions {
    tx: watch::Sender<u64>,
}

impl Default for Revisions {
    fn default() -> Self {
        Revisions { tx: watch::channel(0).0 }
    }
}

impl Revisions {
    pub fn notify(&self) {
        self.tx.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }
}

pub async fn bump_servers(tx: &mut WriteTx<'_>, server_ids: &[i64]) -> Result<(), sqlx::Error> {
    let mut ids = server_ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok(());
    }
    let sql = format!("UPDATE servers SET revision = revision + 1 WHERE id IN ({})", placeholders(1, ids.len()));
    let mut q = sqlx::query(&sql);
    for id in ids {
        q = q.bind(id);
    }
    q.execute(&mut ***tx).await?;
    Ok(())
}

pub async fn bump_server_of_container(tx: &mut WriteTx<'_>, container_id: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE servers SET revision = revision + 1 \
         WHERE id = (SELECT server_id FROM containers WHERE id = $1)",
    )
    .bind(container_id)
    .execute(&mut ***tx)
    .await?;
    Ok(())
}

/// A customer's domains and key are served to every node running one of its containers.
pub async fn bump_servers_of_customer(tx: &mut WriteTx<'_>, customer_id: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE servers SET revision = revision + 1 \
         WHERE id IN (SELECT server_id FROM containers WHERE customer_id = $1)",
    )
    .bind(customer_id)
    .execute(&mut ***tx)
    .await?;
    Ok(())
}
