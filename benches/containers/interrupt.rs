//! Ctrl-C or SIGTERM ends the run cleanly: the current step is abandoned, and the nodes, the
//! crun worker, the cgroups and the temp dirs go through the same cleanup as on a normal end
//! (the started instances run in their own process groups, so the terminal's signal reaches
//! only this program).

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    REQUESTED.store(true, Ordering::SeqCst);
}

pub fn install() {
    // No SA_RESTART: a blocking poll() returns EINTR and the waiting loop sees the request.
    let action = SigAction::new(SigHandler::Handler(on_signal), SaFlags::empty(), SigSet::empty());
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(signal, &action) }.expect("install the stop handler");
    }
}

pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
