//! Free loopback ports for tests that run in parallel.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};

/// A loopback TCP port nothing listens on right now. Ports are handed out from a per-process
/// counter starting at a pid-derived offset, then probed, so parallel tests and parallel test
/// runs don't collide.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(0, 20_000 + (std::process::id() % 20_000) as u16, Ordering::SeqCst, Ordering::SeqCst);
    loop {
        let port = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = if port >= 60_000 { 20_000 + port % 40_000 } else { port };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
