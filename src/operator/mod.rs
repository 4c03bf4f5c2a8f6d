//! `visitcounter operator`: the CRD check, the admin endpoints, leader
//! election, and the controller while this replica leads.

pub mod crd_check;
mod heap;
pub mod http;
pub mod lease_hold;

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime},
};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client, Config};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::{sync::watch, task::JoinHandle};

use crate::controller::{self, ControllerSettings, Metrics};
pub use crd_check::CrdProblem;
pub use http::{Health, Phase};

/// The User-Agent of every request the operator makes, so that cluster
/// administrators find its traffic in audit logs and API Priority and Fairness.
pub const USER_AGENT: &str = concat!("visitcounter-operator/", env!("CARGO_PKG_VERSION"));

/// A client for the cluster of `KUBECONFIG`, `~/.kube/config` or the pod's
/// service account, that names the operator in its User-Agent.
pub async fn client() -> Result<Client, kube::Error> {
    let mut config = Config::infer().await.map_err(kube::Error::InferConfig)?;
    config.headers.push((
        hyper::header::USER_AGENT,
        hyper::header::HeaderValue::from_static(USER_AGENT),
    ));
    Client::try_from(config)
}

/// Leader election with a `coordination.k8s.io/v1` Lease.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    /// This replica's identity in the Lease (its pod name).
    pub identity: String,
    /// How long a holder's claim lasts after its last renewal.
    pub duration: Duration,
    /// How long before expiry the holder renews.
    pub grace: Duration,
}

#[derive(Clone, Debug)]
pub struct OperatorSettings {
    pub controller: ControllerSettings,
    /// Address of `/healthz`, `/readyz` and `/metrics`; none when `None`.
    pub admin_address: Option<SocketAddr>,
    /// `None` runs without leader election: one replica only.
    pub lease: Option<LeaseSettings>,
}

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error(transparent)]
    Crd(#[from] CrdProblem),
    #[error("cannot listen on {address} for /healthz, /readyz and /metrics: {source}")]
    Listen {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("leader election failed (Lease {namespace}/{name}): {source}")]
    Lease {
        name: String,
        namespace: String,
        #[source]
        source: LeaseManagerError,
    },
    #[error("the leader-election task stopped; stopping so that no two replicas reconcile at once")]
    LeaseTaskDied,
    #[error(
        "stopped leading (Lease {namespace}/{name}): {lapse}; exiting, since another replica may lead by now, \
         to start again as a standby"
    )]
    LeaseLapsed {
        name: String,
        namespace: String,
        lapse: lease_hold::Lapse,
    },
}

/// The operator, built before it runs so that tests can read its metrics.
pub struct Operator {
    client: Client,
    settings: OperatorSettings,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

impl Operator {
    pub fn new(client: Client, settings: OperatorSettings) -> Self {
        Self {
            client,
            settings,
            metrics: Arc::new(Metrics::new()),
            health: Arc::new(Health::default()),
        }
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// Runs until `shutdown` resolves; in-flight reconciles finish first.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), OperatorError> {
        let (stop_tx, stop) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        // The admin server stops when the operator does, for whatever reason:
        // a process that no longer reconciles must exit, so its pod restarts.
        let (admin_stop_tx, admin_stop) = watch::channel(false);
        crd_check::check_installed(&self.client).await?;
        tracing::info!(version = env!("CARGO_PKG_VERSION"), "the installed CRD matches");
        let admin = match self.settings.admin_address {
            Some(address) => {
                let listener = tokio::net::TcpListener::bind(address)
                    .await
                    .map_err(|source| OperatorError::Listen { address, source })?;
                tracing::info!(%address, "serving /healthz, /readyz and /metrics");
                let app = http::router(self.health.clone(), self.metrics.clone());
                let mut admin_stop = admin_stop.clone();
                Some(tokio::spawn(async move {
                    let stopped = async move {
                        let _ = admin_stop.wait_for(|s| *s).await;
                    };
                    if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(stopped).await {
                        tracing::error!(%error, "admin server");
                    }
                }))
            }
            None => None,
        };
        let trimming = tokio::spawn(heap::trim_periodically());
        let result = match self.settings.lease.clone() {
            None => {
                self.lead(stop.clone()).await;
                Ok(())
            }
            Some(lease) => self.elect_and_lead(lease, stop.clone()).await,
        };
        self.health.set(Phase::Stopping);
        if let Err(error) = &result {
            tracing::error!(%error, "stopping");
        }
        let _ = admin_stop_tx.send(true);
        if let Some(admin) = admin {
            let _ = admin.await;
        }
        trimming.abort();
        tracing::info!("stopped");
        result
    }

    /// Runs the controller until `stop` turns true.
    async fn lead(&self, stop: watch::Receiver<bool>) {
        self.health.set(Phase::Syncing);
        self.metrics.leader.set(1);
        let health = self.health.clone();
        let ready = move |ready: bool| {
            if ready {
                health.set(Phase::Reconciling);
            }
        };
        controller::run(
            self.client.clone(),
            self.settings.controller.clone(),
            self.metrics.clone(),
            ready,
            stopped(stop),
        )
        .await;
        self.metrics.leader.set(0);
    }

    /// Leads while this replica holds the Lease and stands by while it does
    /// not, until `stop` turns true or the lead ends for good; then gives the
    /// Lease up.
    async fn elect_and_lead(&self, lease: LeaseSettings, mut stop: watch::Receiver<bool>) -> Result<(), OperatorError> {
        let manager = LeaseManagerBuilder::new(self.client.clone(), &lease.name)
            .with_namespace(&lease.namespace)
            .with_identity(&lease.identity)
            .with_duration(lease.duration.as_secs().max(1))
            .with_grace(lease.grace.as_secs().max(1))
            .with_field_manager(format!("visitcounter-operator-{}", lease.identity))
            .build()
            .await
            .map_err(|source| lease.error(source))?;
        let (mut leading, task) = manager.watch().await;
        let result = self.stand_by_and_lead(&lease, &mut stop, &mut leading).await;
        release(&lease, leading, task, result).await
    }

    /// Waits for the Lease and leads while it is held, again and again, until
    /// `stop` turns true or the lead ends for good.
    async fn stand_by_and_lead(
        &self,
        lease: &LeaseSettings,
        stop: &mut watch::Receiver<bool>,
        leading: &mut watch::Receiver<bool>,
    ) -> Result<(), OperatorError> {
        loop {
            self.health.set(Phase::Standby);
            tracing::info!(lease = %lease.name, identity = %lease.identity, "waiting for the lease");
            tokio::select! {
                _ = until(stop, true) => return Ok(()),
                acquired = until(leading, true) => if !acquired {
                    return Err(OperatorError::LeaseTaskDied);
                },
            }
            tracing::info!(lease = %lease.name, identity = %lease.identity, "acquired the lease; leading");
            if let Some(result) = self.lead_while_held(lease, stop, leading).await {
                return result;
            }
        }
    }

    /// Runs the controller while this replica holds the Lease. `None` when the
    /// lead ends but the replica may lead again (the Lease was lost, or the
    /// controller stopped by itself); otherwise how the election ends.
    async fn lead_while_held(
        &self,
        lease: &LeaseSettings,
        stop: &mut watch::Receiver<bool>,
        leading: &mut watch::Receiver<bool>,
    ) -> Option<Result<(), OperatorError>> {
        let (lead_stop_tx, lead_stop) = watch::channel(false);
        let leading_run = self.lead(lead_stop);
        tokio::pin!(leading_run);
        // Renewals are due every `duration - grace`; the lead ends half
        // a grace before the Lease would run out without one.
        let margin = lease.grace / 2;
        let lapse = lease_hold::lapse(
            Api::<Lease>::namespaced(self.client.clone(), &lease.namespace),
            &lease.name,
            &lease.identity,
            margin,
            SystemTime::now() + lease.duration.saturating_sub(margin),
        );
        tokio::select! {
            lapse = lapse => {
                // Dropping the controller cancels its reconciles at once.
                self.metrics.leader.set(0);
                Some(Err(OperatorError::LeaseLapsed {
                    name: lease.name.clone(),
                    namespace: lease.namespace.clone(),
                    lapse,
                }))
            }
            _ = &mut leading_run => None,
            _ = until(stop, true) => {
                let _ = lead_stop_tx.send(true);
                leading_run.await;
                Some(Ok(()))
            }
            lost = until(leading, false) => {
                // Dropping the controller cancels its reconciles at once:
                // another replica may already be leading.
                self.metrics.leader.set(0);
                if !lost {
                    return Some(Err(OperatorError::LeaseTaskDied));
                }
                tracing::warn!(lease = %lease.name, "lost the lease; stopped reconciling");
                None
            }
        }
    }
}

impl LeaseSettings {
    /// The election's error for a failure of this Lease's manager.
    fn error(&self, source: LeaseManagerError) -> OperatorError {
        OperatorError::Lease {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            source,
        }
    }
}

/// Ends leader election once the lead is over: gives the Lease up (unless it
/// lapsed) and returns `result`, or the lease task's error when that task
/// ended by itself.
async fn release(
    lease: &LeaseSettings,
    leading: watch::Receiver<bool>,
    task: JoinHandle<Result<LeaseManager, LeaseManagerError>>,
    result: Result<(), OperatorError>,
) -> Result<(), OperatorError> {
    if let Err(OperatorError::LeaseLapsed { .. }) = &result {
        // Releasing could clear a Lease another replica holds by now
        // (the task acts on what it last read), or wait on a server out
        // of reach: the Lease runs out by itself.
        task.abort();
        return result;
    }
    // Closing the channel makes the lease task release the lease, so a
    // standby replica takes over without waiting for it to expire.
    drop(leading);
    match (task.await, result) {
        (Ok(Ok(_)), result) => {
            tracing::info!(lease = %lease.name, "released the lease");
            result
        }
        // The task ended by itself: its error is why (a 403 on the Lease).
        (Ok(Err(error)), Err(OperatorError::LeaseTaskDied)) => Err(lease.error(error)),
        (Ok(Err(error)), result) => {
            tracing::warn!(%error, "cannot release the lease; it expires on its own");
            result
        }
        (Err(error), result) => {
            tracing::warn!(%error, "the lease task failed");
            result
        }
    }
}

/// Waits until the channel holds `value`; false when its sender is gone.
async fn until(channel: &mut watch::Receiver<bool>, value: bool) -> bool {
    channel.wait_for(|v| *v == value).await.is_ok()
}

/// A future that resolves once `stop` turns true (or its sender is gone).
fn stopped(mut stop: watch::Receiver<bool>) -> impl Future<Output = ()> + Send + Sync + 'static {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = stop.wait_for(|s| *s).await;
        let _ = tx.send(());
    });
    async move {
        let _ = rx.await;
    }
}
