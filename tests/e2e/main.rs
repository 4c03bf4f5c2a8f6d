//! End to end on a real Kubernetes API server: the control plane that
//! `scripts/cluster.sh up` starts (kube-apiserver, kube-controller-manager,
//! kube-scheduler and etcd from the Kubernetes Go modules, kwok's simulated
//! nodes), or any cluster named by `KUBECONFIG` (kind, k3d).
//!
//! `scripts/test.sh` runs it; by hand, after `eval "$(scripts/cluster.sh env)"`:
//! `cargo test --test e2e -- --ignored` (add a name to run the scenarios whose
//! name holds it). Every scenario is ignored otherwise, so a plain
//! `cargo test` lists them as ignored rather than passed.
//!
//! Each scenario is a test of its own, run one after another, each in a
//! namespace of its own that enforces the `restricted` Pod Security profile
//! (see `harness`). Most run beside the operator in-process, with its own
//! client and User-Agent; the rest start their own. An unfiltered run fails
//! unless every scenario ran and passed.
//!
//! Writes are counted from the API server's audit log, which
//! `VISITCOUNTER_AUDIT_LOG` names (`scripts/cluster.sh env` does). A run
//! without it fails unless `VISITCOUNTER_E2E_NO_AUDIT_LOG=1` says the cluster
//! has none. The faults a real API server does not give on demand (a 500, a
//! 429, a missing CRD, an expired watch) come from `fault_proxy`, a proxy in
//! front of the same server.

mod adopt;
mod apps;
mod blue_green;
mod env;
mod fault_proxy;
mod faults;
mod harness;
mod kstatus;
mod leadership;
mod ramped;
mod rollouts;
mod shadow;
mod storage;
mod strategies;
#[path = "../support/mod.rs"]
mod support;
mod traffic;
mod visits;
mod web;

use harness::{Beside, Scenario};
use libtest_mimic::{Arguments, Trial};

/// Every scenario, in the order they run, with what it runs beside.
macro_rules! scenarios {
    ($($beside:ident: $module:ident::$scenario:ident),* $(,)?) => {
        vec![$((
            concat!(stringify!($module), "::", stringify!($scenario)),
            Beside::$beside,
            (|env| Box::pin($module::$scenario(env))) as Scenario,
        )),*]
    };
}

fn scenarios() -> Vec<(&'static str, Beside, Scenario)> {
    scenarios![
        TheOperator: apps::examples_reach_ready,
        TheOperator: apps::pods_not_created,
        TheOperator: web::a_day_of_changes,
        TheOperator: web::a_taken_node_port_gives_no_child,
        TheOperator: storage::refused_statefulset_leaves_nothing,
        TheOperator: web::max_unavailable_with_the_gate_on_or_off,
        TheOperator: web::converged_apps_cost_no_write_on_resync,
        TheOperator: rollouts::stuck_rollout,
        TheOperator: rollouts::on_delete,
        TheOperator: strategies::recreate,
        TheOperator: strategies::progress_deadline,
        TheOperator: strategies::max_unavailable,
        TheOperator: ramped::the_pace_of_each_step_is_held,
        TheOperator: ramped::an_aborted_step_rolls_back,
        TheOperator: blue_green::switches_in_one_write_and_rolls_back,
        TheOperator: blue_green::waits_for_promotion,
        TheOperator: traffic::routes_through_an_httproute,
        TheOperator: traffic::splits_an_ab_test_by_cookie,
        TheOperator: shadow::mirrors_to_a_shadow_until_promoted,
        TheOperator: storage::storage_growth,
        TheOperator: storage::deletion_keeps_claims,
        TheOperator: storage::class_without_expansion,
        TheOperator: apps::invalid_stored_spec,
        TheOperator: adopt::a_helm_release_is_refused_then_adopted_with_its_claims,
        ItsOwnOperator: kstatus::in_progress_until_the_operator_acted_and_the_pods_are_ready,
        ItsOwnOperator: leadership::crd_check_on_the_stored_crd,
        ItsOwnOperator: leadership::leader_election_failure_exits,
        ItsOwnOperator: leadership::a_leader_that_cannot_renew_stops_and_another_takes_over,
        ItsOwnOperator: leadership::stopped_at_start_it_stops,
        ItsOwnOperator: leadership::binary_is_ready_and_stops_on_sigterm,
        ItsOwnOperator: leadership::binary_stops_on_sigint,
        ItsOwnOperator: leadership::a_second_signal_while_stopping_exits_at_once,
        ItsOwnOperator: leadership::two_started_at_once_one_leads,
        ItsOwnOperator: rollouts::config_revisions,
        ItsOwnOperator: blue_green::a_recreate_cut_short_keeps_the_serving_slot,
        ItsOwnOperator: blue_green::a_recreate_cut_short_after_blue_green_keeps_the_serving_slot,
        ItsOwnOperator: blue_green::a_recreate_cut_short_keeps_the_serving_template,
        ItsOwnOperator: visits::summed_and_a_silent_pod_is_not_zero,
        ItsOwnOperator: visits::counts_come_on_streams_without_asks,
        ItsOwnOperator: visits::a_scale_down_keeps_the_counts_of_the_pods_it_removes,
        ItsOwnOperator: faults::failures_are_retried,
        ItsOwnOperator: faults::a_missing_crd_stops_the_start,
    ]
}

fn main() {
    let mut args = Arguments::from_args();
    // One after another: several restart what others use (the CRD, the
    // operator), and the machine has two cores.
    args.test_threads.get_or_insert(1);
    let defined = scenarios();
    let count = defined.len() as u64;
    let trials = defined
        .into_iter()
        .map(|(name, beside, scenario)| {
            Trial::test(name, move || {
                harness::run(name, beside, scenario);
                Ok(())
            })
            .with_ignored_flag(true)
        })
        .collect();
    let unfiltered = args.filter.is_none() && args.skip.is_empty() && !args.list;
    let all_asked = unfiltered && (args.ignored || args.include_ignored);
    let conclusion = libtest_mimic::run(&args, trials);
    if all_asked && conclusion.num_passed != count && !conclusion.has_failed() {
        eprintln!(
            "{} of the {count} scenarios ran and passed: an unfiltered run must run them all",
            conclusion.num_passed
        );
        std::process::exit(101);
    }
    conclusion.exit();
}
