//! The results: a table per run, Ferry's ratios to each peer, and the `summary:` line.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::measure::Usage;
use super::tools::Tool;

const MIB: f64 = 1024.0 * 1024.0;

/// The targets: peer wall time over Ferry's, at least.
const MIN_RATIOS: [(&str, f64); 5] = [
    ("first_backup_vs_restic", 4.0),
    ("restore_vs_restic", 2.0),
    ("restore_vs_rustic", 1.5),
    ("restore_disk_vs_restic", 2.0),
    ("restore_disk_vs_rustic", 1.5),
];
/// Input MiB per CPU-second of Ferry's first backup, at least.
const MIN_MIB_PER_CPU_S: f64 = 300.0;
/// Repository growth over the bytes changed, 1% case, at most.
const MAX_UPLOAD_OVER_CHANGED: f64 = 1.1;
/// Peak RSS of any Ferry backup or restore, at most.
const MAX_RSS_MIB: f64 = 256.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Case {
    FirstBackup,
    SecondBackup,
    ChangedBackup,
    /// Into the restore directory (a tmpfs by default).
    Restore,
    /// Into a directory on the bench directory's disk, as a volume is restored.
    RestoreDisk,
}

impl Case {
    pub const ALL: [Case; 5] = [
        Case::FirstBackup,
        Case::SecondBackup,
        Case::ChangedBackup,
        Case::Restore,
        Case::RestoreDisk,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Case::FirstBackup => "first_backup",
            Case::SecondBackup => "second_backup",
            Case::ChangedBackup => "changed_backup",
            Case::Restore => "restore",
            Case::RestoreDisk => "restore_disk",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Case::FirstBackup => "first backup",
            Case::SecondBackup => "2nd, unchanged",
            Case::ChangedBackup => "1% changed",
            Case::Restore => "restore latest",
            Case::RestoreDisk => "restore to disk",
        }
    }

    pub fn is_backup(self) -> bool {
        !self.is_restore()
    }

    pub fn is_restore(self) -> bool {
        matches!(self, Case::Restore | Case::RestoreDisk)
    }
}

/// One tool's figures for one case.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub usage: Usage,
    /// Repository size after the step.
    pub repo_bytes: u64,
    /// Growth of the repository during the step.
    pub added_bytes: u64,
    /// Restores only: `Err` names what differs from the source.
    pub verified: Option<Result<(), String>>,
}

#[derive(Debug)]
pub struct Row {
    pub target: &'static str,
    pub case: Case,
    pub tool: Tool,
    pub result: Result<Outcome, String>,
}

/// Everything the report needs besides the rows.
#[derive(Debug)]
pub struct Context {
    pub data_bytes: u64,
    /// Bytes overwritten by the 1% change.
    pub changed_bytes: u64,
    pub scale: f64,
    /// Tools that did not run at all, and why.
    pub skipped: Vec<(Tool, String)>,
}

pub struct Report<'a> {
    rows: &'a [Row],
    cx: &'a Context,
}

impl<'a> Report<'a> {
    pub fn new(rows: &'a [Row], cx: &'a Context) -> Self {
        Report { rows, cx }
    }

    fn get(&self, target: &str, case: Case, tool: Tool) -> Option<&Outcome> {
        self.rows
            .iter()
            .find(|r| r.target == target && r.case == case && r.tool == tool)
            .and_then(|r| r.result.as_ref().ok())
            // A restore that came back different does not count as a time.
            .filter(|o| !matches!(o.verified, Some(Err(_))))
    }

    fn targets(&self) -> Vec<&'static str> {
        let mut t: Vec<&'static str> = self.rows.iter().map(|r| r.target).collect();
        t.dedup();
        t
    }

    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<6} {:<15} {:<7} {:>8} {:>8} {:>9} {:>9} {:>9}  note",
            "target", "case", "tool", "wall s", "CPU s", "RSS MiB", "repo MiB", "added MiB"
        );
        let mut failures = Vec::new();
        for r in self.rows {
            match &r.result {
                Ok(o) => {
                    let note = match &o.verified {
                        Some(Ok(())) => "restore equals source".to_owned(),
                        Some(Err(e)) => format!("RESTORE DIFFERS: {e}"),
                        None if r.case == Case::ChangedBackup => format!(
                            "added/changed {:.2}",
                            o.added_bytes as f64 / self.cx.changed_bytes.max(1) as f64
                        ),
                        None => String::new(),
                    };
                    let _ = writeln!(
                        s,
                        "{:<6} {:<15} {:<7} {:>8.2} {:>8.2} {:>9.0} {:>9.1} {:>9.1}  {note}",
                        r.target,
                        r.case.label(),
                        r.tool.name(),
                        o.usage.wall_s,
                        o.usage.cpu_s,
                        o.usage.peak_rss_kib as f64 / 1024.0,
                        o.repo_bytes as f64 / MIB,
                        o.added_bytes as f64 / MIB,
                    );
                }
                Err(e) => {
                    let _ = writeln!(
                        s,
                        "{:<6} {:<15} {:<7} {:>8} {:>8} {:>9} {:>9} {:>9}  failed (below)",
                        r.target,
                        r.case.label(),
                        r.tool.name(),
                        "-",
                        "-",
                        "-",
                        "-",
                        "-"
                    );
                    // An init failure repeats for every case: say it once.
                    let line = format!("{} {}: {e}", r.target, r.tool);
                    if !failures.contains(&line) {
                        failures.push(line);
                    }
                }
            }
        }
        for (tool, why) in &self.cx.skipped {
            let _ = writeln!(s, "{tool} skipped: {why}");
        }
        for f in failures {
            let _ = writeln!(s, "failed: {f}");
        }
        s
    }

    /// Ferry's ratios to each peer: peer wall time over Ferry's, so >1 means Ferry is
    /// faster; in the same order as the summary.
    fn ratios(&self) -> BTreeMap<String, f64> {
        self.ratios_of(|u| u.wall_s)
    }

    /// The same for CPU seconds: steadier than wall time when other work shares the
    /// machine.
    fn cpu_ratios(&self) -> BTreeMap<String, f64> {
        self.ratios_of(|u| u.cpu_s)
    }

    /// Peer's `measure` over Ferry's, for every target, case and peer that ran.
    fn ratios_of(&self, measure: impl Fn(&Usage) -> f64) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for target in self.targets() {
            for case in Case::ALL {
                let Some(ferry) = self.get(target, case, Tool::Ferry) else {
                    continue;
                };
                for peer in Tool::PEERS {
                    if let Some(p) = self.get(target, case, peer) {
                        out.insert(
                            format!("{target}_{}_vs_{peer}", case.key()),
                            measure(&p.usage) / measure(&ferry.usage).max(1e-3),
                        );
                    }
                }
            }
        }
        out
    }

    pub fn ratio_table(&self) -> String {
        let mut s = String::from(
            "Ferry against each peer: peer / Ferry, wall time (and CPU seconds); >1 = Ferry better:\n",
        );
        let _ = writeln!(
            s,
            "{:<6} {:<15} {:>15} {:>15} {:>15}",
            "target", "case", "restic", "rustic", "kopia"
        );
        let ratios = self.ratios();
        let cpu = self.cpu_ratios();
        for target in self.targets() {
            for case in Case::ALL {
                let cell = |peer: Tool| {
                    let key = format!("{target}_{}_vs_{peer}", case.key());
                    match (ratios.get(&key), cpu.get(&key)) {
                        (Some(w), Some(c)) => format!("{w:.2}x ({c:.2}x)"),
                        _ => "-".to_owned(),
                    }
                };
                let _ = writeln!(
                    s,
                    "{:<6} {:<15} {:>15} {:>15} {:>15}",
                    target,
                    case.label(),
                    cell(Tool::Restic),
                    cell(Tool::Rustic),
                    cell(Tool::Kopia)
                );
            }
        }
        s
    }

    fn mib_per_cpu_s(&self, target: &str) -> Option<f64> {
        let o = self.get(target, Case::FirstBackup, Tool::Ferry)?;
        Some(self.cx.data_bytes as f64 / MIB / o.usage.cpu_s.max(1e-3))
    }

    fn upload_over_changed(&self, target: &str) -> Option<f64> {
        let o = self.get(target, Case::ChangedBackup, Tool::Ferry)?;
        Some(o.added_bytes as f64 / self.cx.changed_bytes.max(1) as f64)
    }

    fn ferry_backup_rss_mib(&self) -> Option<f64> {
        self.ferry_rss_mib(Case::is_backup)
    }

    fn ferry_restore_rss_mib(&self) -> Option<f64> {
        self.ferry_rss_mib(Case::is_restore)
    }

    /// The largest peak RSS of Ferry's steps of the cases `which` picks.
    fn ferry_rss_mib(&self, which: fn(Case) -> bool) -> Option<f64> {
        self.rows
            .iter()
            .filter(|r| r.tool == Tool::Ferry && which(r.case))
            .filter_map(|r| r.result.as_ref().ok())
            .map(|o| o.usage.peak_rss_kib as f64 / 1024.0)
            .reduce(f64::max)
    }

    /// Ferry's own figures and the targets, one line each.
    pub fn ferry_figures(&self) -> String {
        let mut s = String::new();
        for target in self.targets() {
            if let Some(v) = self.mib_per_cpu_s(target) {
                let _ = writeln!(
                    s,
                    "{target}: Ferry first backup: {v:.0} MiB of input per CPU-second (target >= {MIN_MIB_PER_CPU_S})"
                );
            }
            if let Some(v) = self.upload_over_changed(target) {
                let _ = writeln!(
                    s,
                    "{target}: Ferry with 1% changed: repository grew {v:.2}x the {:.1} MiB changed (target <= {MAX_UPLOAD_OVER_CHANGED})",
                    self.cx.changed_bytes as f64 / MIB
                );
            }
        }
        if let Some(v) = self.ferry_backup_rss_mib() {
            let _ = writeln!(
                s,
                "Ferry backup peak RSS: {v:.0} MiB (target <= {MAX_RSS_MIB})"
            );
        }
        if let Some(v) = self.ferry_restore_rss_mib() {
            let _ = writeln!(
                s,
                "Ferry restore peak RSS: {v:.0} MiB (target <= {MAX_RSS_MIB})"
            );
        }
        s
    }

    /// The targets of the issue that this run missed (or could not show).
    fn missed(&self) -> Vec<String> {
        let ratios = self.ratios();
        let mut missed = Vec::new();
        for target in self.targets() {
            for (key, min) in MIN_RATIOS {
                let name = format!("{target}_{key}");
                if ratios.get(&name).is_none_or(|&r| r < min) {
                    missed.push(name);
                }
            }
            if self
                .mib_per_cpu_s(target)
                .is_none_or(|v| v < MIN_MIB_PER_CPU_S)
            {
                missed.push(format!("{target}_ferry_first_backup_mib_per_cpu_s"));
            }
            if self
                .upload_over_changed(target)
                .is_none_or(|v| v > MAX_UPLOAD_OVER_CHANGED)
            {
                missed.push(format!("{target}_changed_upload_over_changed"));
            }
        }
        if self.ferry_backup_rss_mib().is_none_or(|v| v > MAX_RSS_MIB) {
            missed.push("ferry_backup_peak_rss_mib".to_owned());
        }
        if self.ferry_restore_rss_mib().is_none_or(|v| v > MAX_RSS_MIB) {
            missed.push("ferry_restore_peak_rss_mib".to_owned());
        }
        missed
    }

    pub fn ferry_ok(&self) -> bool {
        self.rows
            .iter()
            .filter(|r| r.tool == Tool::Ferry)
            .all(|r| matches!(&r.result, Ok(o) if !matches!(o.verified, Some(Err(_)))))
            && self.rows.iter().any(|r| r.tool == Tool::Ferry)
    }

    pub fn summary(&self) -> String {
        let mut kv: Vec<(String, String)> = Vec::new();
        let f2 = |v: f64| format!("{v:.2}");
        for (k, v) in self.ratios() {
            kv.push((k, f2(v)));
        }
        for target in self.targets() {
            let prefix = if target == "local" {
                String::new()
            } else {
                format!("{target}_")
            };
            if let Some(v) = self.mib_per_cpu_s(target) {
                kv.push((
                    format!("{prefix}ferry_first_backup_mib_per_cpu_s"),
                    format!("{v:.0}"),
                ));
            }
            if let Some(v) = self.upload_over_changed(target) {
                kv.push((format!("{prefix}changed_upload_over_changed"), f2(v)));
            }
        }
        if let Some(v) = self.ferry_backup_rss_mib() {
            kv.push(("ferry_backup_peak_rss_mib".into(), format!("{v:.0}")));
        }
        if let Some(v) = self.ferry_restore_rss_mib() {
            kv.push(("ferry_restore_peak_rss_mib".into(), format!("{v:.0}")));
        }
        let restores: Vec<_> = self
            .rows
            .iter()
            .filter(|r| r.tool == Tool::Ferry && r.case.is_restore())
            .collect();
        let verified = !restores.is_empty()
            && restores
                .iter()
                .all(|r| matches!(&r.result, Ok(o) if matches!(o.verified, Some(Ok(())))));
        kv.push((
            "ferry_restore_verified".into(),
            if verified { "yes" } else { "no" }.into(),
        ));
        for peer in Tool::PEERS {
            let ran = self.rows.iter().any(|r| r.tool == peer && r.result.is_ok());
            kv.push((
                peer.name().into(),
                if ran { "ran" } else { "skipped" }.into(),
            ));
        }
        let mut failed: Vec<String> = self
            .rows
            .iter()
            .filter(|r| r.result.is_err())
            .map(|r| format!("{}_{}", r.target, r.tool))
            .collect();
        failed.sort();
        failed.dedup();
        kv.push((
            "failed".into(),
            if failed.is_empty() {
                "none".into()
            } else {
                failed.join(",")
            },
        ));
        kv.push((
            "data_mib".into(),
            format!("{:.0}", self.cx.data_bytes as f64 / MIB),
        ));
        kv.push((
            "changed_mib".into(),
            format!("{:.1}", self.cx.changed_bytes as f64 / MIB),
        ));
        kv.push(("scale".into(), format!("{}", self.cx.scale)));
        let missed = self.missed();
        kv.push((
            "targets_missed".into(),
            if missed.is_empty() {
                "none".into()
            } else {
                missed.join(",")
            },
        ));
        let body: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("summary: {}", body.join(" "))
    }
}
