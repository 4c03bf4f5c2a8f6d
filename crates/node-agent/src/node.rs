//! The Node object and its heartbeat: a Lease in `kube-node-lease` renewed
//! every 10 s, and the Ready condition refreshed every minute, so the node
//! lifecycle controller keeps the node and its pods Ready.

use std::{net::Ipv4Addr, time::Duration};

use k8s_openapi::{
    api::{coordination::v1::Lease, core::v1::Node},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;

use crate::Error;

const MANAGER: &str = "visitcounter-node";

fn node_status(ip: Ipv4Addr, version: &str) -> serde_json::Value {
    let now = format!("{:.0}", Timestamp::now());
    let resources = json!({"cpu": "16", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"});
    let condition = |type_: &str, status: &str, reason: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": reason,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    json!({
        "capacity": resources,
        "allocatable": resources,
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID"),
            condition("Ready", "True", "KubeletReady"),
        ],
        "addresses": [{"type": "InternalIP", "address": ip.to_string()}, {"type": "Hostname", "address": "localhost"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "", "osImage": "visitcounter-node",
                     "containerRuntimeVersion": "visitcounter-node://0.1.0", "kubeletVersion": version,
                     "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"},
    })
}

/// Creates the Node (or takes over the one of an earlier run) and reports
/// it Ready.
pub async fn register(client: &Client, name: &str, ip: Ipv4Addr, version: &str) -> Result<(), Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
            "type": "visitcounter-node"}},
    }))
    .map_err(|e| Error::Config(e.to_string()))?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => return Err(Error::Api(error.to_string())),
    }
    nodes
        .patch_status(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Node", "status": node_status(ip, version)})),
        )
        .await
        .map_err(|e| Error::Api(e.to_string()))?;
    Ok(())
}

/// Renews the node's Lease every 10 s and its status every minute, forever.
pub async fn heartbeat(client: Client, name: String, ip: Ipv4Addr, version: String) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let mut ticks = 0u64;
    loop {
        let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40,
                     "renewTime": format!("{:.6}", Timestamp::now())}});
        if let Err(error) = leases
            .patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(lease))
            .await
        {
            tracing::warn!(%error, "cannot renew the node's Lease");
        }
        if ticks.is_multiple_of(6)
            && let Err(error) = register(&client, &name, ip, &version).await
        {
            tracing::warn!(%error, "cannot report the node's status");
        }
        ticks += 1;
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}
