//! Private PostgreSQL and Redis servers for one test: a temp dir, a free
//! loopback port, killed by PID on drop (also when the test panics). They
//! never touch the machine's own services or standard ports.

use super::owner::{redis_pid, serves_data_dir};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// initdb refuses to run as root: as root we run PostgreSQL as `postgres`.
fn postgres_ids() -> Option<(u32, u32)> {
    if !is_root() {
        return None;
    }
    let name = std::ffi::CString::new("postgres").expect("cstring");
    // SAFETY: getpwnam returns a pointer into static storage or null; we
    // read two integers immediately.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(!pw.is_null(), "running as root needs a `postgres` user");
    // SAFETY: pw is non-null and points to a valid passwd record.
    unsafe { Some(((*pw).pw_uid, (*pw).pw_gid)) }
}

fn pg_bin(name: &str) -> PathBuf {
    for dir in ["/usr/local/bin", "/usr/lib/postgresql/15/bin"] {
        let path = Path::new(dir).join(name);
        if path.exists() {
            return path;
        }
    }
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        for entry in entries.flatten() {
            let path = entry.path().join("bin").join(name);
            if path.exists() {
                return path;
            }
        }
    }
    PathBuf::from(name)
}

/// Direct children of `pid`, from /proc. PostgreSQL serves each connection
/// from a backend process that calls setsid(), so neither the server's PID
/// nor a process group reaches them; their parent is still the postmaster.
fn children(pid: u32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                // Fields after the parenthesised command: state, ppid, ...
                .and_then(|stat| stat.rsplit_once(')').map(|(_, rest)| rest.to_string()))
                .and_then(|rest| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                == Some(pid)
        })
        .collect()
}

/// Signals a server and every process it forked. Stopping the parent first
/// keeps it from forking new backends in between; continuing goes the
/// other way round.
fn signal(child: &Child, sig: i32) {
    let pid = child.id();
    let send = |p: i32| {
        // SAFETY: signalling processes this test started (and their forks).
        unsafe {
            libc::kill(p, sig);
        }
    };
    if sig == libc::SIGCONT {
        children(pid).into_iter().for_each(send);
        send(pid as i32);
    } else {
        send(pid as i32);
        children(pid).into_iter().for_each(send);
    }
}

/// A running server process (and its forks), killed on drop, also when the
/// test panics.
#[derive(Default)]
struct Process {
    child: Option<Child>,
}

impl Process {
    /// Whether the server has already exited (e.g. its port was taken).
    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    fn pause(&self) {
        if let Some(child) = &self.child {
            signal(child, libc::SIGSTOP);
        }
    }

    fn resume(&self) {
        if let Some(child) = &self.child {
            signal(child, libc::SIGCONT);
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&mut child);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

fn kill_group(child: &mut Child) {
    let kids = children(child.id());
    signal(child, libc::SIGCONT);
    signal(child, libc::SIGKILL);
    for kid in kids {
        // SAFETY: as above; they may already be gone.
        unsafe {
            libc::kill(kid, libc::SIGKILL);
        }
    }
    let _ = child.wait();
}

/// `free_port` hands out a number, not a socket: another process may bind
/// it before our server does. Then our server exits, and a probe could even
/// reach the other process. So a start counts only when the probe finds
/// *our* server, and a server that exited is started again on a new port.
const START_ATTEMPTS: usize = 5;

/// Starts `server` with `spawn`; `may_move`: on a port taken meanwhile, try
/// another (a first start), or fail (a restart must keep its port).
fn launch<S>(
    what: &str,
    may_move: bool,
    server: &mut S,
    spawn: fn(&mut S) -> bool,
    parts: fn(&mut S) -> (&mut u16, &mut Process),
) {
    for _ in 0..START_ATTEMPTS {
        if spawn(server) {
            return;
        }
        let (port, process) = parts(server);
        process.kill();
        assert!(may_move, "{what} could not bind port {port} again");
        *port = free_port();
    }
    panic!("{what} did not start on {START_ATTEMPTS} ports");
}

/// Waits until `ours` answers (true), or the process exits (false).
fn started(what: &str, process: &mut Process, timeout: Duration, ours: impl Fn() -> bool) -> bool {
    let begun = Instant::now();
    loop {
        if ours() {
            return true;
        }
        if process.exited() {
            return false;
        }
        assert!(
            begun.elapsed() < timeout,
            "{what} did not become ready in {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub struct Postgres {
    dir: TempDir,
    pub port: u16,
    process: Process,
}

impl Postgres {
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("holdfast-pg-")
            .tempdir()
            .expect("tempdir");
        let ids = postgres_ids();
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        let mut initdb = Command::new(pg_bin("initdb"));
        initdb
            .args([
                "-D",
                "data",
                "-U",
                "holdfast",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = ids {
            initdb.uid(uid).gid(gid);
        }
        let out = initdb.output().expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Self {
            port: free_port(),
            dir,
            process: Process::default(),
        };
        pg.launch(true);
        pg
    }

    /// A hot standby streaming from `primary` (pg_basebackup -R), on its
    /// own port and directory.
    pub fn start_replica(primary: &Postgres) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("holdfast-pg-replica-")
            .tempdir()
            .expect("tempdir");
        let ids = postgres_ids();
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        let mut backup = Command::new(pg_bin("pg_basebackup"));
        backup
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &primary.port.to_string(),
                "-U",
                "holdfast",
            ])
            .args(["-D", "data", "-R", "-X", "stream", "--no-sync"])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = ids {
            backup.uid(uid).gid(gid);
        }
        let out = backup.output().expect("run pg_basebackup");
        assert!(
            out.status.success(),
            "pg_basebackup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut replica = Self {
            port: free_port(),
            dir,
            process: Process::default(),
        };
        replica.launch(true);
        replica
    }

    fn launch(&mut self, may_move: bool) {
        launch("postgres", may_move, self, Self::spawn, |pg| {
            (&mut pg.port, &mut pg.process)
        });
    }

    /// Spawns postgres on `self.port`; true once it answers as ours.
    fn spawn(&mut self) -> bool {
        let log = std::fs::File::create(self.dir.path().join("postgres.log")).expect("log");
        let mut cmd = Command::new(pg_bin("postgres"));
        cmd.args([
            "-D",
            "data",
            "-p",
            &self.port.to_string(),
            "-h",
            "127.0.0.1",
        ])
        .args(["-k", self.dir.path().to_str().expect("utf8 path")])
        // fsync=off survives a killed server (the OS page cache keeps the
        // writes); synchronous_commit=off would not: it acknowledges commits
        // whose WAL is still in shared memory, and the "nothing acknowledged
        // is lost" tests kill the server.
        .args(["-c", "fsync=off", "-c", "max_connections=60"])
        .current_dir(self.dir.path())
        .stdout(Stdio::null())
        .stderr(log);
        if let Some((uid, gid)) = postgres_ids() {
            std::os::unix::fs::chown(self.dir.path().join("postgres.log"), Some(uid), Some(gid))
                .ok();
            cmd.uid(uid).gid(gid);
        }
        self.process.child = Some(cmd.spawn().expect("spawn postgres"));
        let url = self.url();
        let data = self.dir.path().join("data");
        started(
            "postgres",
            &mut self.process,
            Duration::from_secs(30),
            || serves_data_dir(&url, &data),
        )
    }

    pub fn url(&self) -> String {
        format!("postgres://holdfast@127.0.0.1:{}/postgres", self.port)
    }

    /// SIGSTOP: the "zombie database" that accepts nothing and answers nothing.
    pub fn pause(&self) {
        self.process.pause();
    }

    pub fn resume(&self) {
        self.process.resume();
    }

    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// `pg_ctl promote` on a standby: it leaves recovery and takes
    /// writes (pg_ctl waits until it has).
    pub fn promote(&self) {
        let mut cmd = Command::new(pg_bin("pg_ctl"));
        cmd.args(["promote", "-w", "-D", "data"])
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = postgres_ids() {
            cmd.uid(uid).gid(gid);
        }
        let out = cmd.output().expect("run pg_ctl promote");
        assert!(
            out.status.success(),
            "pg_ctl promote failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn restart(&mut self) {
        self.kill();
        // A killed postmaster leaves its pid file and shared memory behind;
        // postgres recovers from both on the next start.
        self.launch(false);
    }
}

pub struct Redis {
    dir: TempDir,
    pub port: u16,
    process: Process,
}

impl Redis {
    pub fn start() -> Self {
        Self::start_trying(free_port())
    }

    /// Starts on `port`, or on another one if `port` is taken.
    pub fn start_trying(port: u16) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("holdfast-redis-")
            .tempdir()
            .expect("tempdir");
        let mut redis = Self {
            dir,
            port,
            process: Process::default(),
        };
        redis.launch(true);
        redis
    }

    fn launch(&mut self, may_move: bool) {
        launch("redis", may_move, self, Self::spawn, |r| {
            (&mut r.port, &mut r.process)
        });
    }

    /// Spawns redis-server on `self.port`; true once it answers as ours.
    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--dir", self.dir.path().to_str().expect("utf8 path")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server (is it installed?)");
        let pid = child.id();
        self.process.child = Some(child);
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        started("redis", &mut self.process, Duration::from_secs(10), || {
            redis_pid(addr) == Some(pid)
        })
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// SIGSTOP: accepts connections, answers nothing.
    pub fn pause(&self) {
        self.process.pause();
    }

    pub fn resume(&self) {
        self.process.resume();
    }

    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Kill and start again on the same port: everything in it is lost
    /// (no persistence), as after a crash of a cache-only Redis.
    pub fn restart(&mut self) {
        self.kill();
        self.launch(false);
    }
}
