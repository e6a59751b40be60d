//! Ctrl-C and SIGTERM: the first cancels the running command through its token (the
//! engine then stops without making anything partial visible); a second ends the
//! process at once, for when a clean stop takes too long.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Exit status after a signal, as shells report it for SIGINT.
const INTERRUPTED: i32 = 130;

/// A token cancelled on the first SIGINT or SIGTERM.
pub(crate) fn cancel_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let (mut int, mut term) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(i), Ok(t)) => (i, t),
        (Err(e), _) | (_, Err(e)) => {
            // Without handlers the default action still stops the process; only the
            // clean stop is lost.
            tracing::warn!(error = %e, "cannot install signal handlers");
            return token;
        }
    };
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        eprintln!("ferry: interrupted (press Ctrl-C again to stop at once)");
        cancel.cancel();
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        eprintln!("ferry: stopped at once");
        std::process::exit(INTERRUPTED);
    });
    token
}

/// Runs `fut` unless the token fires first; for steps that hold no partial state
/// (opening, listing), so dropping them is safe.
pub(crate) async fn or_interrupted<T>(
    cancel: &CancellationToken,
    fut: impl Future<Output = crate::Result<T>>,
) -> crate::Result<T> {
    tokio::select! {
        r = fut => r,
        _ = cancel.cancelled() => Err(crate::Error::Interrupted),
    }
}
