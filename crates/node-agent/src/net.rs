//! The node's network: one network namespace for the node, holding a bridge
//! with the node's address (`<subnet>.1`), and one per pod, joined to the
//! bridge by a veth pair, with the pod's address (`<subnet>.N`) on its
//! `eth0`. Every private-range address lives only inside namespaces this
//! agent created; the machine's own interfaces are never touched, and no
//! traffic to those addresses leaves them: the agent reaches a pod by
//! opening its socket inside the node's namespace (`connect_in`).

use std::{
    collections::BTreeSet,
    fs::File,
    io,
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    path::PathBuf,
    process::Command,
    sync::Mutex,
    time::Duration,
};

/// The node's network.
pub struct Network {
    /// Prefix of every namespace name this agent creates.
    prefix: String,
    /// The /24 the pods get addresses from: `a.b.c`.
    subnet: [u8; 3],
    /// Last octets in use, and the last one given out.
    used: Mutex<(BTreeSet<u8>, u8)>,
}

/// A pod's network namespace and address.
#[derive(Debug)]
pub struct PodNetwork {
    pub namespace: String,
    pub ip: Ipv4Addr,
}

fn ip(args: &[&str]) -> io::Result<()> {
    let output = Command::new("ip").args(args).output()?;
    if output.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// Path of a named network namespace, as `ip netns` keeps it.
pub fn netns_path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

impl Network {
    /// Creates the node's namespace and bridge (removing what an earlier
    /// run of the same node left).
    pub fn create(node: &str, subnet: [u8; 3]) -> io::Result<Self> {
        let network = Self {
            prefix: format!("vcn-{node}"),
            subnet,
            used: Mutex::default(),
        };
        network.remove_all();
        let ns = network.node_namespace();
        ip(&["netns", "add", &ns])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&["-n", &ns, "link", "add", "br0", "type", "bridge"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/24", network.node_ip()),
            "dev",
            "br0",
        ])?;
        ip(&["-n", &ns, "link", "set", "br0", "up"])?;
        Ok(network)
    }

    pub fn node_namespace(&self) -> String {
        format!("{}-node", self.prefix)
    }

    /// The node's address on the bridge: pods reach the node (and the API
    /// server through the agent) there.
    pub fn node_ip(&self) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, 1)
    }

    /// A namespace and an address for a new pod.
    pub fn add_pod(&self) -> io::Result<PodNetwork> {
        let octet = {
            let mut used = self.used.lock().expect("addresses");
            let free = next_free(&used.0, used.1).ok_or_else(|| io::Error::other("no pod address left"))?;
            used.0.insert(free);
            used.1 = free;
            free
        };
        let [a, b, c] = self.subnet;
        let pod = PodNetwork {
            namespace: format!("{}-{octet}", self.prefix),
            ip: Ipv4Addr::new(a, b, c, octet),
        };
        let result = (|| {
            let (ns, node) = (&pod.namespace, &self.node_namespace());
            let _ = ip(&["netns", "del", ns]);
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            let veth = format!("veth{octet}");
            let _ = ip(&["-n", node, "link", "del", &veth]);
            ip(&[
                "link", "add", &veth, "netns", node, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ])?;
            ip(&["-n", node, "link", "set", &veth, "master", "br0", "up"])?;
            ip(&["-n", ns, "addr", "add", &format!("{}/24", pod.ip), "dev", "eth0"])?;
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", ns, "route", "add", "default", "via", &self.node_ip().to_string()])?;
            // The node may still know the address by an earlier pod's MAC.
            ip(&["-n", node, "neigh", "flush", "to", &pod.ip.to_string()])
        })();
        match result {
            Ok(()) => Ok(pod),
            Err(error) => {
                self.remove_pod(&pod);
                Err(error)
            }
        }
    }

    /// Removes a pod's namespace (its veth goes with it) and frees its address.
    pub fn remove_pod(&self, pod: &PodNetwork) {
        let _ = ip(&["netns", "del", &pod.namespace]);
        self.used.lock().expect("addresses").0.remove(&pod.ip.octets()[3]);
    }

    /// Removes every namespace of this node, by its name prefix.
    pub fn remove_all(&self) {
        let Ok(entries) = std::fs::read_dir("/run/netns") else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!("{}-", self.prefix)) {
                let _ = ip(&["netns", "del", &name]);
            }
        }
    }
}

/// The first free address after `last`, round the /24 (2 to 254): an
/// address is reused as late as possible, since other pods may still know it
/// by the MAC of the pod that had it.
fn next_free(used: &BTreeSet<u8>, last: u8) -> Option<u8> {
    (last.saturating_add(1).max(2)..=254)
        .chain(2..=last.min(254))
        .find(|o| !used.contains(o))
}

/// Runs `f` on a new thread that has entered the network namespace `name`,
/// so the sockets it opens belong to that namespace (they stay there when
/// used from any thread afterwards). A fresh thread each time: a thread
/// that changed namespace is never reused for anything else.
fn in_namespace<T: Send + 'static>(name: &str, f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    let ns = File::open(netns_path(name))?;
    std::thread::spawn(move || {
        // SAFETY: setns on this thread only, with a namespace file we hold open.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        f()
    })
    .join()
    .map_err(|_| io::Error::other("the namespace thread panicked"))?
}

/// A TCP connection to `addr`, opened inside the namespace `name`.
pub fn connect_in(name: &str, addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    in_namespace(name, move || TcpStream::connect_timeout(&addr, timeout))
}

/// A listener on `addr`, bound inside the namespace `name`.
pub fn listen_in(name: &str, addr: SocketAddr) -> io::Result<TcpListener> {
    in_namespace(name, move || TcpListener::bind(addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_go_round_before_one_is_reused() {
        let used = BTreeSet::from([2, 3]);
        assert_eq!(next_free(&used, 3), Some(4));
        assert_eq!(
            next_free(&BTreeSet::new(), 3),
            Some(4),
            "3 was freed, but 4 comes first"
        );
        assert_eq!(next_free(&BTreeSet::from([254]), 254), Some(2));
        assert_eq!(next_free(&BTreeSet::new(), 0), Some(2));
        assert_eq!(next_free(&(2..=254).collect(), 7), None);
    }
}
