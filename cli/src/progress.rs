//! The status line on a terminal: one line on stderr, redrawn from the engine's
//! progress channel. Off a terminal there is none, so logs and pipes stay clean.

use std::io::IsTerminal;
use std::time::Duration;

use ferry_repo::{BackupProgress, RestoreProgress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::output::{bytes, clock, rate};

/// A running status line; [`StatusLine::finish`] clears it once the engine is done.
#[derive(Debug)]
pub(crate) struct StatusLine {
    task: Option<JoinHandle<()>>,
}

impl StatusLine {
    /// Starts a line when stderr is a terminal. The returned sender goes into the
    /// engine's options; the line ends when every clone of it is dropped.
    pub(crate) fn start<P, F>(render: F) -> (Option<watch::Sender<P>>, StatusLine)
    where
        P: Default + Send + Sync + 'static,
        F: Fn(&P) -> String + Send + 'static,
    {
        if !std::io::stderr().is_terminal() {
            return (None, StatusLine { task: None });
        }
        let (tx, mut rx) = watch::channel(P::default());
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(150));
        let task = tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let line = render(&rx.borrow_and_update());
                bar.set_message(line);
            }
            bar.finish_and_clear();
        });
        (Some(tx), StatusLine { task: Some(task) })
    }

    /// Waits until the line is cleared, so the summary prints on a clean line.
    pub(crate) async fn finish(self) {
        if let Some(task) = self.task {
            let _ = task.await;
        }
    }
}

/// Time left at the current rate, or "-" before there is one.
fn eta(done: u64, total: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if done == 0 || secs <= 0.0 {
        return "-".into();
    }
    let left = total.saturating_sub(done) as f64 / (done as f64 / secs);
    clock(Duration::from_secs_f64(left.min(1e9)))
}

/// The head of a progress line: files, bytes of `what` against the total, the rate and
/// the ETA. Rate and ETA come early: a narrow terminal cuts the line's end.
fn head(files: (u64, u64), done: u64, total: u64, what: &str, elapsed: Duration) -> String {
    format!(
        "{}/{} files | {} / {} {what} | {} | ETA {}",
        files.0,
        files.1,
        bytes(done),
        bytes(total),
        rate(done, elapsed),
        eta(done, total, elapsed),
    )
}

/// One line for a running backup.
pub(crate) fn backup_line(p: &BackupProgress) -> String {
    if p.files_total == 0 {
        return format!("scanning files… {}", clock(p.elapsed));
    }
    // Files taken from the parent are never read, so the ETA is an upper bound when
    // some were unchanged.
    let files = (p.files_done, p.files_total);
    format!(
        "{} | {} new | {} uploaded",
        head(files, p.bytes_read, p.bytes_total, "read", p.elapsed),
        bytes(p.bytes_new),
        bytes(p.bytes_uploaded),
    )
}

/// One line for a running restore.
pub(crate) fn restore_line(p: &RestoreProgress) -> String {
    if p.files_total == 0 {
        return format!("loading trees… {}", clock(p.elapsed));
    }
    let files = (p.files_done, p.files_total);
    format!(
        "{} | {} downloaded",
        head(files, p.bytes_written, p.bytes_total, "written", p.elapsed),
        bytes(p.bytes_downloaded),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let p = BackupProgress {
            files_total: 10,
            files_done: 4,
            bytes_total: 100 << 20,
            bytes_read: 25 << 20,
            bytes_new: 20 << 20,
            bytes_uploaded: 10 << 20,
            elapsed: Duration::from_secs(5),
            ..Default::default()
        };
        assert_eq!(
            backup_line(&p),
            "4/10 files | 25.0 MiB / 100.0 MiB read | 5.0 MiB/s | ETA 0:15 | 20.0 MiB new \
             | 10.0 MiB uploaded"
        );
        assert!(backup_line(&BackupProgress::default()).starts_with("scanning"));
        assert_eq!(eta(0, 10, Duration::from_secs(1)), "-");
    }
}
