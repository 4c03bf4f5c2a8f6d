"""The test node as the journeys reach it (`scripts/cluster.sh up
--real-pods`): NodePorts at the node's address, as on a minikube node, and a
pod's process by its container, through the node's containerd (ctr)."""

import os
import subprocess

# Where NodePorts answer: `scripts/cluster.sh env --real-pods` exports it.
ADDRESS = os.environ.get("VISITCOUNTER_NODE_ADDRESS", "")
if not ADDRESS:
    raise SystemExit("VISITCOUNTER_NODE_ADDRESS is not set: "
                     "run `eval \"$(scripts/cluster.sh env --real-pods)\"` first")


def url(port, path="/"):
    return f"http://{ADDRESS}:{port}{path}"


def container_pid(pod):
    """The process id, on this machine, of the pod's first container, as
    containerd's task list gives it; None while it has none running."""
    statuses = pod["status"].get("containerStatuses") or []
    container = (statuses[0].get("containerID") or "").removeprefix("containerd://") if statuses else ""
    if not container:
        return None
    tasks = subprocess.run(["ctr", "task", "ls"], capture_output=True, text=True, check=True).stdout
    for line in tasks.splitlines()[1:]:
        task, pid, status = line.split()[:3]
        if task == container and status == "RUNNING":
            return int(pid)
    return None
