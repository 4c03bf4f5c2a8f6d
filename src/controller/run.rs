//! The controller as it runs: the watches wired to the reconciler, the
//! visits poller beside it, readiness once every watch has listed, and a
//! clean stop.

use std::{sync::Arc, time::Duration};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Service, ServiceAccount},
};
use kube::{
    Client, ResourceExt,
    runtime::{
        Controller, WatchStreamExt,
        controller::{self, Action, Config as ControllerConfig},
        events::Reporter,
        reflector::{ObjectRef, Store},
        watcher,
    },
};

use super::{
    Error,
    observe::visits::Poller,
    reconcile::{self, Context},
    runtime::{
        FIELD_MANAGER,
        cache::{ChildCaches, strip_child},
        compact::Compact,
        metrics::Metrics,
        open_files,
        settings::ControllerSettings,
        slim_pod::SlimPod,
        store::ChildStore,
        watch::{app_watch, child_watch, store_ready},
    },
    wake::{app_state, pod_rollout_state},
};
use crate::resource::VisitCounterApp;

/// Runs the controller until `shutdown` resolves (in-flight reconciles
/// finish first). `ready` turns true once every watch has listed.
pub async fn run(
    client: Client,
    settings: ControllerSettings,
    metrics: Arc<Metrics>,
    ready: impl Fn(bool) + Send + Sync + 'static,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let namespace = settings.namespace.clone();
    let ns = namespace.as_deref();
    let (apps, app_stream) = app_watch(&client, ns);
    let (stateful_sets, sts_stream) = child_watch::<Compact<StatefulSet>, _>(&client, ns, strip_child, Compact::kept);
    let (services, svc_stream) = child_watch::<Compact<Service>, _>(&client, ns, strip_child, Compact::kept);
    let (config_maps, cm_stream) = child_watch::<Compact<ConfigMap>, _>(&client, ns, strip_child, Compact::kept);
    let (service_accounts, sa_stream) = child_watch::<ServiceAccount, _>(&client, ns, strip_child, Clone::clone);
    let (pods, pod_stream) = child_watch::<SlimPod, _>(&client, ns, strip_child, Clone::clone);
    // Only what a reconcile acts on wakes it (`wake`).
    let pod_stream = pod_stream.predicate_filter(pod_rollout_state, Default::default());
    let app_stream = app_stream.predicate_filter(app_state, Default::default());
    let caches = ChildCaches {
        stateful_sets,
        services,
        config_maps,
        service_accounts,
        pods,
    };
    let reporter = Reporter {
        controller: FIELD_MANAGER.into(),
        instance: settings.instance.clone(),
    };
    let ctx = Arc::new(Context::new(
        client,
        settings,
        metrics,
        reporter,
        caches.clone(),
        apps.clone(),
    ));
    let visits = spawn_poller(&ctx, &apps, &caches.pods);
    let ready = Arc::new(ready);
    let readiness = spawn_readiness(apps.clone(), caches, ready.clone());
    let shutdown = shutdown.shared();
    let stopped_before_listing = stopped_before_listing(shutdown.clone(), apps.clone());
    let config = ControllerConfig::default()
        .concurrency(ctx.settings.concurrency)
        .debounce(ctx.settings.debounce);
    let controller = Controller::for_stream(app_stream, apps)
        .owns_stream(sts_stream)
        .owns_stream(svc_stream)
        .owns_stream(cm_stream)
        .owns_stream(sa_stream)
        .watches_stream(pod_stream, |pod| {
            let app = pod.instance()?;
            Some(ObjectRef::new(app).within(&pod.namespace()?))
        })
        .with_config(config)
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(log_result);
    tokio::select! {
        () = controller => {}
        () = stopped_before_listing => tracing::info!("stopped before the watches had listed"),
    }
    readiness.abort();
    if let Some(visits) = visits {
        visits.abort();
    }
    ready(false);
}

/// The visits poller, when it is on.
fn spawn_poller(
    ctx: &Context,
    apps: &Store<VisitCounterApp>,
    pods: &ChildStore<SlimPod>,
) -> Option<tokio::task::JoinHandle<()>> {
    let interval = ctx.settings.visits_interval?;
    let most_followed = open_files::most_followed(open_files::raise());
    let poller = Poller::new(ctx.client.clone(), apps.clone(), pods.clone(), ctx.metrics.clone())
        .following_at_most(most_followed);
    Some(tokio::spawn(poller.run(interval)))
}

/// Logs the end of each reconcile; its failures are told by the reconcile.
async fn log_result(result: Result<(ObjectRef<VisitCounterApp>, Action), controller::Error<Error, watcher::Error>>) {
    match result {
        Ok((app, _)) => tracing::debug!(app = %app, "reconciled"),
        Err(controller::Error::ReconcilerFailed(error, app)) => {
            tracing::debug!(app = %app, %error, "reconcile failed");
        }
        Err(error) => tracing::warn!(%error, "controller"),
    }
}

/// Says ready once the apps and every child cache hold their first list.
fn spawn_readiness(
    apps: Store<VisitCounterApp>,
    caches: ChildCaches,
    ready: Arc<impl Fn(bool) + Send + Sync + 'static>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !(store_ready(&apps) && caches.is_ready()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::info!("watches have listed; reconciling");
        ready(true);
    })
}

/// Resolves when told to stop before the apps' watch has listed, and never
/// otherwise. kube-runtime's runner ends only once the apps' store is ready,
/// even in a graceful shutdown: stopped before its first list (a SIGTERM or
/// a lost Lease at start), it would wait forever. Nothing has been
/// reconciled then, so there is nothing to finish.
async fn stopped_before_listing(shutdown: impl Future<Output = ()>, apps: Store<VisitCounterApp>) {
    shutdown.await;
    if store_ready(&apps) {
        std::future::pending::<()>().await;
    }
}
