//! Private Redis Sentinel and Redis Cluster deployments for one test
//! (issue 14 item 7): real `redis-server` processes on free loopback ports
//! in a temp dir, killed by PID on drop, never on 6379/26379 and never by
//! name. Written here rather than borrowed from a crate because no Docker
//! engine runs on the test machines (DEPENDENCIES.md trap 9) and the
//! failover tests must SIGKILL one chosen process.
//!
//! Timings are short on purpose (`down-after-milliseconds` 1000,
//! `cluster-node-timeout` 1000) so a failover costs a test seconds, not the
//! production defaults' half a minute.
#![allow(dead_code)]

use super::procs::free_port;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The Sentinel service name every test uses.
pub const SERVICE: &str = "mymaster";
/// How long a sentinel waits before it calls an unanswering master down.
pub const DOWN_AFTER: Duration = Duration::from_millis(1000);
/// Detection, election and promotion together stay well inside this.
pub const FAILOVER_BUDGET: Duration = Duration::from_secs(30);

/// One `redis-server` process, SIGKILLed by PID when killed or dropped.
struct Node {
    port: u16,
    child: Option<Child>,
}

impl Node {
    fn spawn(port: u16, args: &[String]) -> Self {
        let child = Command::new("redis-server")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server (is it installed?)");
        let node = Self {
            port,
            child: Some(child),
        };
        wait_until("redis node", Duration::from_secs(10), || {
            query::<String>(port, &["PING"]).is_some()
        });
        node
    }

    /// `Child::kill` is SIGKILL to this PID only.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn alive(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Arguments every data node shares: loopback only, no persistence, and a
/// replica's first sync at once (the default waits 5 s for more replicas).
fn data_args(port: u16, dir: &TempDir) -> Vec<String> {
    let dir = dir.path().to_str().expect("utf8 path");
    [
        "--repl-diskless-sync-delay",
        "0",
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        dir,
    ]
    .map(String::from)
    .to_vec()
}

/// One command to one local node with short timeouts; `None` when the node
/// does not answer or answers an error.
pub fn query<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> Option<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
    let timeout = Duration::from_millis(500);
    let mut conn = client.get_connection_with_timeout(timeout).ok()?;
    conn.set_read_timeout(Some(timeout)).ok()?;
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query(&mut conn).ok()
}

/// Blocks (this is harness start-up) until `ready` or panics at `timeout`.
fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(
            started.elapsed() < timeout,
            "{what} not reached in {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A master, one replica and three sentinels (quorum 2).
pub struct RedisSentinel {
    data: Vec<Node>,
    sentinels: Vec<Node>,
    dir: TempDir,
}

impl RedisSentinel {
    /// Starts everything and returns once every sentinel names the master
    /// and knows the replica and the two other sentinels, so a failover
    /// can be elected as soon as the master goes.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("holdfast-sentinel-")
            .tempdir()
            .expect("tempdir");
        let master_port = free_port();
        let master = Node::spawn(master_port, &data_args(master_port, &dir));
        let replica_port = free_port();
        let mut args = data_args(replica_port, &dir);
        args.extend(["--replicaof", "127.0.0.1", &master_port.to_string()].map(String::from));
        let replica = Node::spawn(replica_port, &args);
        wait_until("replica in sync", Duration::from_secs(10), || {
            query::<String>(replica_port, &["INFO", "replication"])
                .is_some_and(|info| info.contains("master_link_status:up"))
        });
        let sentinels = (0..3)
            .map(|i| spawn_sentinel(&dir, i, master_port))
            .collect();
        let ha = Self {
            data: vec![master, replica],
            sentinels,
            dir,
        };
        wait_until("sentinels agree", FAILOVER_BUDGET, || {
            ha.agreed(master_port)
        });
        ha
    }

    /// Every sentinel names `master` and sees one replica and two peers.
    fn agreed(&self, master: u16) -> bool {
        self.sentinels.iter().all(|s| {
            let Some(fields) = query::<Vec<String>>(s.port, &["SENTINEL", "MASTER", SERVICE])
            else {
                return false;
            };
            let field = |name: &str| {
                fields
                    .chunks(2)
                    .find(|kv| kv[0] == name)
                    .map(|kv| kv[1].clone())
            };
            field("port") == Some(master.to_string())
                && field("num-slaves").as_deref() == Some("1")
                && field("num-other-sentinels").as_deref() == Some("2")
                && field("flags").as_deref() == Some("master")
        })
    }

    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|s| s.port).collect()
    }

    /// `redis+sentinel://127.0.0.1:a,127.0.0.1:b,127.0.0.1:c/mymaster`
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinel_ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+sentinel://{}/{SERVICE}", hosts.join(","))
    }

    /// The master's port as the first answering sentinel names it now.
    pub fn master_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|s| {
            let addr: Vec<String> =
                query(s.port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE])?;
            addr.get(1)?.parse().ok()
        })
    }

    /// SIGKILLs the data node that is master now; returns its port.
    pub fn kill_master(&mut self) -> u16 {
        let port = self.master_port().expect("a sentinel names the master");
        let node = self
            .data
            .iter_mut()
            .find(|n| n.port == port && n.alive())
            .expect("the master is one of ours and alive");
        node.kill();
        port
    }

    /// Blocks until the sentinels name a master other than `old` and that
    /// node says it is a master; returns its port.
    pub fn wait_for_failover(&self, old: u16) -> u16 {
        let mut new = None;
        wait_until("sentinel failover", FAILOVER_BUDGET, || {
            new = self.master_port().filter(|p| *p != old);
            new.is_some_and(|p| {
                query::<String>(p, &["INFO", "replication"])
                    .is_some_and(|info| info.contains("role:master"))
            })
        });
        new.expect("checked above")
    }

    /// SIGKILLs every sentinel (the master keeps running).
    pub fn kill_sentinels(&mut self) {
        self.sentinels.iter_mut().for_each(Node::kill);
    }
}

fn spawn_sentinel(dir: &TempDir, i: usize, master_port: u16) -> Node {
    let port = free_port();
    let conf = dir.path().join(format!("sentinel-{i}.conf"));
    let text = format!(
        "port {port}\nbind 127.0.0.1\ndir {dir}\n\
         sentinel monitor {SERVICE} 127.0.0.1 {master_port} 2\n\
         sentinel down-after-milliseconds {SERVICE} {down}\n\
         sentinel failover-timeout {SERVICE} 3000\n\
         sentinel parallel-syncs {SERVICE} 1\n",
        dir = dir.path().display(),
        down = DOWN_AFTER.as_millis(),
    );
    std::fs::write(&conf, text).expect("write sentinel.conf");
    let args = [conf.to_str().expect("utf8 path"), "--sentinel"].map(String::from);
    Node::spawn(port, &args)
}

/// Three masters and three replicas, created by `redis-cli --cluster create`.
pub struct RedisCluster {
    nodes: Vec<Node>,
    dir: TempDir,
}

impl RedisCluster {
    /// Starts six nodes, joins them and returns once every node reports
    /// `cluster_state:ok`.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("holdfast-cluster-")
            .tempdir()
            .expect("tempdir");
        let nodes: Vec<Node> = (0..6).map(|_| spawn_cluster_node(&dir)).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = Self { nodes, dir };
        wait_until(
            "cluster_state:ok, replicas in sync",
            FAILOVER_BUDGET,
            || cluster.nodes.iter().all(|n| cluster_ok(n.port)) && cluster.replicas_in_sync(),
        );
        cluster
    }

    /// Three live replicas, each with its link to its master up.
    fn replicas_in_sync(&self) -> bool {
        let synced = self.nodes.iter().filter(|n| {
            query::<String>(n.port, &["INFO", "replication"])
                .is_some_and(|info| info.contains("master_link_status:up"))
        });
        synced.count() == 3
    }

    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// `redis-cluster://127.0.0.1:a,127.0.0.1:b,...`
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis-cluster://{}", hosts.join(","))
    }

    /// Ports of the live nodes that say they are masters.
    pub fn masters(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.alive())
            .filter(|n| {
                query::<String>(n.port, &["INFO", "replication"])
                    .is_some_and(|info| info.contains("role:master"))
            })
            .map(|n| n.port)
            .collect()
    }

    /// SIGKILLs one master; returns its port.
    pub fn kill_master(&mut self) -> u16 {
        let port = self.masters()[0];
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("one of ours");
        node.kill();
        port
    }

    /// Blocks until a replica took over: three live masters again and every
    /// live node reports `cluster_state:ok`.
    pub fn wait_for_promotion(&self) {
        wait_until("cluster promotion", FAILOVER_BUDGET, || {
            self.masters().len() == 3
                && self
                    .nodes
                    .iter()
                    .filter(|n| n.alive())
                    .all(|n| cluster_ok(n.port))
        });
    }
}

fn cluster_ok(port: u16) -> bool {
    query::<String>(port, &["CLUSTER", "INFO"])
        .is_some_and(|info| info.contains("cluster_state:ok"))
}

/// A cluster node on a free port with its bus on another free port (the
/// default bus port, port + 10000, may be taken or past 65535).
fn spawn_cluster_node(dir: &TempDir) -> Node {
    let port = free_port();
    let mut args = data_args(port, dir);
    args.extend(
        [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            &format!("nodes-{port}.conf"),
            "--cluster-node-timeout",
            "1000",
            // A replica may take over however long it was cut off: the
            // tests kill masters seconds after the first sync.
            "--cluster-replica-validity-factor",
            "0",
            "--cluster-port",
            &free_port().to_string(),
        ]
        .map(String::from),
    );
    Node::spawn(port, &args)
}
