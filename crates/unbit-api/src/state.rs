//! What every handler shares.

use crate::auth::Authenticator;
use crate::dns_proof::DnsProof;
use crate::error::ApiResult;
use crate::revisions::Revisions;
use crate::store::{Db, WriteTx};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub struct AppState {
    pub db: Arc<Db>,
    pub auth: Arc<Authenticator>,
    pub dns: Arc<DnsProof>,
    pub revisions: Arc<Revisions>,
    /// How long a node's long poll is held when nothing changes.
    pub long_poll: Duration,
}

impl AppState {
    /// Commits a write and wakes the nodes' long polls, which re-read their revision: a wake-up
    /// for a change that concerns another node costs one indexed read.
    pub async fn commit(&self, tx: WriteTx<'_>) -> ApiResult<()> {
        tx.commit().await?;
        self.revisions.notify();
        Ok(())
    }
}
