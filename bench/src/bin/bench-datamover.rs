//! `make bench-datamover`: Ferry's data mover against restic, rustic and kopia on the same
//! generated data, to a local directory and to S3. Settings come from the environment
//! (see bench/README.md); the last line printed is one `summary:` line.

use std::process::ExitCode;

fn main() -> anyhow::Result<ExitCode> {
    let cfg = ferry_bench::datamover::Config::from_env()?;
    let ferry_ok = ferry_bench::datamover::run(&cfg)?;
    // The figures are printed either way; a Ferry failure or a wrong restore fails make.
    Ok(if ferry_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
