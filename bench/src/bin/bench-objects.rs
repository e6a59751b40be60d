//! `make bench-objects`: capture N objects from cluster a and apply them to cluster b, both
//! real API servers of the test environment, then apply again (all unchanged). Prints
//! each step's time and objects per second; the last line is one `summary:` line.

use std::time::Instant;

use anyhow::{Context, bail};
use ferry_kube::{ApplyOptions, CaptureSpec, Cluster, ClusterFacts, Summary, TransformSpec};
use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::json;

/// The target for capture + apply between the two local clusters.
const TARGET_PER_SECOND: f64 = 100.0;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let count: usize = std::env::var("FERRY_BENCH_OBJECTS")
        .ok()
        .map(|v| v.parse())
        .transpose()
        .context("FERRY_BENCH_OBJECTS must be a whole number")?
        .unwrap_or(1000);
    let env = ferry_testenv::shared().await.context("test environment")?;
    let a = env.client("a", "admin").await?;
    let b = env.client("b", "admin").await?;
    let ns = ferry_testenv::unique_name("bench-objects");

    let namespaces: kube::Api<DynamicObject> = kube::Api::all_with(
        a.clone(),
        &ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "Namespace")),
    );
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            )?,
        )
        .await
        .with_context(|| format!("creating namespace {ns} on a"))?;
    let configmaps: kube::Api<DynamicObject> = kube::Api::namespaced_with(
        a.clone(),
        &ns,
        &ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "ConfigMap")),
    );
    let t = Instant::now();
    let created: Vec<Result<_, kube::Error>> = futures::stream::iter(0..count)
        .map(|i| {
            let api = configmaps.clone();
            async move {
                let cm: DynamicObject = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": format!("cm-{i:05}"), "labels": {"app": "bench"}},
                    "data": {"i": i.to_string(), "pad": "x".repeat(512)}
                }))
                .map_err(kube::Error::SerdeError)?;
                api.create(&PostParams::default(), &cm).await
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    if let Some(Err(e)) = created.into_iter().find(|r| r.is_err()) {
        bail!("creating the source ConfigMaps: {e}");
    }
    println!(
        "setup: {count} ConfigMaps on a in {:.2}s",
        t.elapsed().as_secs_f64()
    );

    let src = Cluster::new("a", a);
    let dst = Cluster::new("b", b);
    let t = Instant::now();
    let captured = ferry_kube::capture(&src, &CaptureSpec::new(&ns)).await?;
    let capture_s = t.elapsed().as_secs_f64();
    if captured.objects.len() != count {
        bail!(
            "captured {} objects, expected {count}",
            captured.objects.len()
        );
    }
    println!(
        "capture: {count} objects in {capture_s:.2}s ({:.0}/s)",
        count as f64 / capture_s
    );

    let spec = TransformSpec {
        migration_id: "bench".into(),
        ..Default::default()
    };
    let plan = ferry_kube::plan(&captured, &spec, &ClusterFacts::default())?;
    // The default client-side budget users get unless FERRY_BENCH_QPS raises it (burst
    // twice that), the way a user raises it for a large migration.
    let mut opts = ApplyOptions::default();
    if let Ok(qps) = std::env::var("FERRY_BENCH_QPS") {
        opts.qps = qps.parse().context("FERRY_BENCH_QPS must be a number")?;
        opts.burst = (opts.qps * 2.0) as u32;
    }
    let t = Instant::now();
    let first = ferry_kube::apply(&dst, &plan, &opts, |_| {}).await?;
    let apply_s = t.elapsed().as_secs_f64();
    let first_sum = Summary::of(&first);
    println!(
        "apply: {first_sum:?} in {apply_s:.2}s ({:.0}/s)",
        count as f64 / apply_s
    );
    let t = Instant::now();
    let again = ferry_kube::apply(&dst, &plan, &opts, |_| {}).await?;
    let reapply_s = t.elapsed().as_secs_f64();
    let again_sum = Summary::of(&again);
    println!(
        "re-apply: {again_sum:?} in {reapply_s:.2}s ({:.0}/s)",
        count as f64 / reapply_s
    );
    if first_sum.failed > 0 || again_sum.failed > 0 || again_sum.unchanged < count {
        bail!("apply results are wrong: first {first_sum:?}, again {again_sum:?}");
    }

    let end_to_end = count as f64 / (capture_s + apply_s);
    println!(
        "summary: objects={count} qps={} burst={} capture_s={capture_s:.2} apply_s={apply_s:.2} \
         reapply_unchanged_s={reapply_s:.2} capture_per_s={:.0} apply_per_s={:.0} \
         capture_apply_per_s={end_to_end:.0} target_per_s={TARGET_PER_SECOND:.0} \
         meets_target={}",
        opts.qps,
        opts.burst,
        count as f64 / capture_s,
        count as f64 / apply_s,
        end_to_end >= TARGET_PER_SECOND
    );
    Ok(())
}
