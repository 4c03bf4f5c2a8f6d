//! The command line: one binary, one verb per job.

use std::{
    io::Read,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use clap::{Parser, Subcommand};

use crate::{
    admission::Admission,
    children::{BuildSettings, DEFAULT_APP_IMAGE},
    controller::ControllerSettings,
    crd,
    operator::{LeaseSettings, Operator, OperatorError, OperatorSettings},
    render::{RenderError, render},
    serve::{CommitMode, ServeError, ServeSettings, serve, stop_signal},
};

/// A Kubernetes operator that runs visit-counter web apps as StatefulSets.
#[derive(Debug, Parser)]
#[command(name = "visitcounter", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the VisitCounterApp CustomResourceDefinition as YAML (the same
    /// bytes as crds/visitcounterapp.yaml).
    Crd,
    /// Print, offline, the objects the operator would apply for the
    /// VisitCounterApp objects in a file, as a YAML stream for `kubectl apply -f -`.
    Render {
        /// File of one or more VisitCounterApp documents; `-` reads standard input.
        #[arg(
            short = 'f',
            long = "filename",
            value_name = "FILE",
            env = "VISITCOUNTER_RENDER_FILE"
        )]
        file: PathBuf,
        /// Image of apps whose spec names none.
        #[arg(long, value_name = "IMAGE", env = "VISITCOUNTER_DEFAULT_IMAGE", default_value = DEFAULT_APP_IMAGE)]
        default_image: String,
    },
    /// Run the visit-counter web app: `GET /` counts a visit, durably.
    Serve(ServeArgs),
    /// Run the operator against the cluster of KUBECONFIG, or the one it runs in.
    Operator(OperatorArgs),
    /// Print the VisitCounterApp that takes over a live StatefulSet and its
    /// Service (a Helm release's) and keeps its claims; changes nothing.
    Adopt {
        /// The StatefulSet to reproduce.
        #[arg(long, value_name = "NAME")]
        from_statefulset: String,
        /// Its namespace; the kubeconfig's when not given.
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
pub struct OperatorArgs {
    /// Namespace whose apps to manage; all namespaces when not given.
    #[arg(long, env = "VISITCOUNTER_NAMESPACE")]
    pub namespace: Option<String>,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "VISITCOUNTER_ADMIN_ADDRESS", default_value = "0.0.0.0:8080")]
    pub admin_address: SocketAddr,
    /// Elect one leader among replicas with a Lease; turn off only for a
    /// single replica.
    #[arg(long, env = "VISITCOUNTER_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Name of the Lease.
    #[arg(long, env = "VISITCOUNTER_LEASE_NAME", default_value = "visitcounter-operator")]
    pub lease_name: String,
    /// Namespace of the Lease; the client's namespace when not given (the
    /// pod's own namespace in a cluster).
    #[arg(long, env = "VISITCOUNTER_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This replica's identity in the Lease and in Events; unique per
    /// replica. Defaults to HOSTNAME (the pod's name).
    #[arg(long, env = "VISITCOUNTER_POD_NAME")]
    pub identity: Option<String>,
    /// Seconds a leader's claim lasts after its last renewal.
    #[arg(long, env = "VISITCOUNTER_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// Seconds before expiry the leader renews its claim.
    #[arg(long, env = "VISITCOUNTER_LEASE_GRACE_SECONDS", default_value_t = 5)]
    pub lease_grace_seconds: u64,
    /// Apps reconciled at once.
    #[arg(long, env = "VISITCOUNTER_CONCURRENCY", default_value_t = 4)]
    pub concurrency: u16,
    /// Seconds after which every app is reconciled again (a converged app
    /// costs no write).
    #[arg(long, env = "VISITCOUNTER_RESYNC_SECONDS", default_value_t = 300)]
    pub resync_seconds: u64,
    /// Image of apps whose spec names none.
    #[arg(long, value_name = "IMAGE", env = "VISITCOUNTER_DEFAULT_IMAGE", default_value = DEFAULT_APP_IMAGE)]
    pub default_image: String,
    /// Seconds between asking each app's ready pods for their /visits, for
    /// status.visits; 0 never asks.
    #[arg(long, env = "VISITCOUNTER_VISITS_INTERVAL_SECONDS", default_value_t = 30)]
    pub visits_interval_seconds: u64,
    /// Seconds a pod may stay not ready during a rollout (under OrderedReady)
    /// before the rollout counts as stuck: reported, and with
    /// replaceStuckPods, a pod of an abandoned revision is deleted.
    #[arg(long, env = "VISITCOUNTER_STUCK_POD_SECONDS", default_value_t = 300)]
    pub stuck_pod_seconds: u64,

    /// How long the controller waits after an app or one of its children
    /// changed before it reconciles, so that a burst of changes costs one
    /// reconcile. None by default: measured with `cargo bench --bench
    /// operator`, 500 ms made every change wait half a second (p50 505 ms
    /// from a patch to the StatefulSet write at 1,000 apps, 4 ms without)
    /// and saved no write.
    #[arg(long, env = "VISITCOUNTER_DEBOUNCE_MILLIS", default_value_t = 0)]
    pub debounce_millis: u64,
    /// Log format.
    #[arg(long, env = "VISITCOUNTER_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "VISITCOUNTER_LISTEN", default_value = "0.0.0.0")]
    pub listen: IpAddr,
    /// Port to listen on.
    #[arg(long, env = "VISITCOUNTER_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Directory that holds visits.json (the pod's own volume).
    #[arg(long, env = "VISITCOUNTER_DATA_DIR", default_value = "/data")]
    pub data_dir: PathBuf,
    /// JSON config file, served at /config.
    #[arg(long, env = "VISITCOUNTER_CONFIG", default_value = "/config.json")]
    pub config: PathBuf,
    /// Name shown on the page (the pod's name in Kubernetes).
    #[arg(long, env = "VISITCOUNTER_POD_NAME", default_value = "visitcounter")]
    pub pod_name: String,
    /// How visits reach the disk; `per-visit` exists for benchmarks.
    #[arg(long, env = "VISITCOUNTER_COMMIT", value_enum, default_value = "group", hide = true)]
    pub commit: CommitMode,
    /// Log format.
    #[arg(long, env = "VISITCOUNTER_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// How logs are written to stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Why a verb failed; printed on stderr with a non-zero exit.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("cannot write the CRD as YAML: {0}")]
    Crd(#[from] serde_saphyr::SerializeError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("cannot reach a cluster (from KUBECONFIG, ~/.kube/config or the pod's service account): {0}")]
    Kube(#[source] kube::Error),
    #[error(transparent)]
    Operator(#[from] OperatorError),
    #[error("a second signal: stopped without waiting for reconciles to finish")]
    Aborted,
    #[error("{0}")]
    NotFound(String),
}

/// Runs a verb, and returns what to print on stdout.
pub async fn run(cli: Cli) -> Result<String, CliError> {
    match cli.command {
        Command::Crd => Ok(crd::yaml()?),
        Command::Render { file, default_image } => {
            let (source, input) = read_input(&file)?;
            let settings = BuildSettings { default_image };
            Ok(render(&input, &source, &Admission::new(), &settings)?)
        }
        Command::Serve(args) => {
            init_logs(args.log_format);
            let settings = ServeSettings {
                listen: args.listen,
                port: args.port,
                data_dir: args.data_dir,
                config: args.config,
                pod_name: args.pod_name,
                commit: args.commit,
            };
            serve(settings, stop_signal()).await?;
            Ok(String::new())
        }
        Command::Operator(args) => {
            init_logs(args.log_format);
            run_operator(args).await?;
            Ok(String::new())
        }
        Command::Adopt {
            from_statefulset,
            namespace,
        } => adopt(&from_statefulset, namespace).await,
    }
}

/// Reads the StatefulSet and the Service of its name, and prints the app.
async fn adopt(name: &str, namespace: Option<String>) -> Result<String, CliError> {
    use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Service};
    let client = crate::operator::client().await.map_err(CliError::Kube)?;
    let namespace = namespace.unwrap_or_else(|| client.default_namespace().to_owned());
    let statefulsets: kube::Api<StatefulSet> = kube::Api::namespaced(client.clone(), &namespace);
    let sts = statefulsets
        .get_opt(name)
        .await
        .map_err(CliError::Kube)?
        .ok_or_else(|| CliError::NotFound(format!("no StatefulSet {name} in the namespace {namespace}")))?;
    let services: kube::Api<Service> = kube::Api::namespaced(client, &namespace);
    let service = services.get_opt(name).await.map_err(CliError::Kube)?;
    let adopted = crate::adopt::app_from(&sts, service.as_ref());
    Ok(crate::adopt::to_yaml(&adopted)?)
}

async fn run_operator(args: OperatorArgs) -> Result<(), CliError> {
    let client = crate::operator::client().await.map_err(CliError::Kube)?;
    // Two replicas with one identity would both believe they hold the Lease:
    // the pod name (HOSTNAME in a pod) or something as unique.
    let identity = args
        .identity
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            format!("visitcounter-operator-{}-{nanos:09}", std::process::id())
        });
    let lease = args.leader_election.then(|| LeaseSettings {
        name: args.lease_name,
        namespace: args
            .lease_namespace
            .unwrap_or_else(|| client.default_namespace().to_owned()),
        identity: identity.clone(),
        duration: Duration::from_secs(args.lease_duration_seconds),
        grace: Duration::from_secs(args.lease_grace_seconds),
    });
    let settings = OperatorSettings {
        controller: ControllerSettings {
            namespace: args.namespace,
            concurrency: args.concurrency.max(1),
            resync: Duration::from_secs(args.resync_seconds.max(1)),
            build: BuildSettings {
                default_image: args.default_image,
            },
            instance: Some(identity),
            visits_interval: (args.visits_interval_seconds > 0)
                .then(|| Duration::from_secs(args.visits_interval_seconds)),
            stuck_after: Duration::from_secs(args.stuck_pod_seconds),
            debounce: Duration::from_millis(args.debounce_millis),
        },
        admin_address: Some(args.admin_address),
        lease,
    };
    let operator = Operator::new(client, settings);
    // The first SIGTERM or SIGINT stops gracefully; a second one aborts.
    let second_signal = async {
        stop_signal().await;
        tracing::info!("stopping; a second signal aborts");
        stop_signal().await;
    };
    tokio::select! {
        result = operator.run(stop_signal()) => Ok(result?),
        _ = second_signal => Err(CliError::Aborted),
    }
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // A second initialisation (in tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

fn read_input(file: &PathBuf) -> Result<(String, String), CliError> {
    if file.as_os_str() == "-" {
        let mut input = String::new();
        let source = "<stdin>".to_owned();
        std::io::stdin()
            .read_to_string(&mut input)
            .map_err(|source_err| CliError::Read {
                path: source.clone(),
                source: source_err,
            })?;
        return Ok((source, input));
    }
    let path = file.display().to_string();
    let input = std::fs::read_to_string(file).map_err(|source| CliError::Read {
        path: path.clone(),
        source,
    })?;
    Ok((path, input))
}
