//! Migrate one namespace from the cluster of one kubeconfig context to a paired cluster
//! and print the job's progress, with the SDK alone.
//!
//! ```text
//! cargo run -p ferry-client --example migrate -- --context a --to b --to-context b \
//!     --namespace shop
//! ```

use anyhow::Context;
use clap::Parser;
use ferry_client::{Ferry, pair_ref, proto};

#[derive(Debug, Parser)]
struct Args {
    /// Kubeconfig context of the source cluster (its Ferry runs the job).
    #[arg(long)]
    context: Option<String>,
    /// The destination: a pair name or id, or the destination cluster's name.
    #[arg(long)]
    to: String,
    /// Kubeconfig context of the destination: your token there goes with the job, the
    /// destination verifies it and the job writes there as you. Without it the
    /// destination must trust the names the source gives.
    #[arg(long)]
    to_context: Option<String>,
    /// Namespace of the application.
    #[arg(long, short = 'n')]
    namespace: String,
    /// Leave workloads scaled to zero on the destination.
    #[arg(long)]
    no_start: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut source = Ferry::for_context(None, args.context.as_deref()).await?;
    if let Some(context) = &args.to_context {
        let token = ferry_client::context_token(None, Some(context))
            .await?
            .with_context(|| format!("context {context} signs in without a bearer token"))?;
        source = source.with_destination_token(&token)?;
    }
    let pair = source.find_pair(&args.to).await?;
    let job = source
        .migrate(proto::StartMigrationRequest {
            destination: Some(pair_ref(&pair.id)),
            application: Some(proto::ApplicationSelector {
                namespace: args.namespace.clone(),
                ..Default::default()
            }),
            apply: Some(proto::ApplyOptions {
                start_applications: !args.no_start,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?;
    println!("job {} started on {}", job.id(), source.endpoint());
    let report = job
        .wait(|event| match &event.event {
            Some(proto::job_event::Event::Step(step)) => {
                println!("step {:<18} {:?} {}", step.name, step.state(), step.message)
            }
            Some(proto::job_event::Event::Progress(p)) if p.bytes_total > 0 => {
                println!("  {}: {} of {} bytes", p.step, p.bytes_read, p.bytes_total)
            }
            _ => {}
        })
        .await
        .context("following the job")?;
    println!(
        "job {} {:?}: {} objects, {} volumes",
        report.job_id,
        report.state(),
        report.objects.len(),
        report.volumes.len()
    );
    anyhow::ensure!(
        report.state() == proto::JobState::Succeeded,
        "the migration did not succeed"
    );
    Ok(())
}
