//! Argon2id hashing on a fixed set of dedicated threads fed by a bounded
//! queue. Hashing costs ~26 ms of CPU and 19 MiB; on the async executor or on
//! tokio's unbounded blocking pool a login flood would starve token
//! verification. Here a full queue is an immediate `Overloaded`, which the
//! HTTP layer turns into 503 (load shedding).

use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use tokio::sync::oneshot;

/// OWASP's floor for Argon2id: m = 19 MiB, t = 2, p = 1.
const MEMORY_KIB: u32 = 19 * 1024;
const ITERATIONS: u32 = 2;
const PARALLELISM: u32 = 1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HashError {
    #[error("password hashing queue is full")]
    Overloaded,
    #[error("password hashing failed: {0}")]
    Failed(String),
}

type Job = Box<dyn FnOnce(&Argon2<'static>) + Send>;

pub struct PasswordHasher {
    jobs: SyncSender<Job>,
    /// Hash of a random password: unknown users are verified against it so
    /// they cost the same as known ones.
    dummy: String,
}

impl PasswordHasher {
    /// Starts `workers` threads; at most `queue` jobs wait for one.
    pub fn start(workers: usize, queue: usize) -> Result<Arc<Self>, HashError> {
        let (jobs, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        for n in 0..workers {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || worker(&rx))
                .map_err(|e| HashError::Failed(e.to_string()))?;
        }
        let mut random = [0u8; 32];
        aws_lc_rs::rand::fill(&mut random).map_err(|_| HashError::Failed("rng".into()))?;
        let dummy = hash_now(&argon2()?, &hex::encode(random))?;
        Ok(Arc::new(Self { jobs, dummy }))
    }

    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        self.submit(move |argon| hash_now(argon, &password)).await?
    }

    /// Verifies against `phc`, or against the dummy hash when the user does
    /// not exist (the answer is then always `false`, after the same work).
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool, HashError> {
        let known = phc.is_some();
        let phc = phc.unwrap_or_else(|| self.dummy.clone());
        let matched = self
            .submit(move |argon| {
                argon
                    .verify_password(password.as_bytes(), phc.as_str())
                    .is_ok()
            })
            .await?;
        Ok(known && matched)
    }

    async fn submit<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Argon2<'static>) -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |argon| {
            let _ = reply.send(work(argon));
        });
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(HashError::Overloaded),
            Err(TrySendError::Disconnected(_)) => {
                return Err(HashError::Failed("hash workers stopped".into()));
            }
        }
        answer
            .await
            .map_err(|_| HashError::Failed("hash worker dropped the job".into()))
    }
}

/// One Argon2id hash with the service's parameters, on the calling thread:
/// what a hash worker does per login (benchmarks measure it).
pub fn hash_once(password: &str) -> Result<String, HashError> {
    hash_now(&argon2()?, password)
}

fn argon2() -> Result<Argon2<'static>, HashError> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None)
        .map_err(|e| HashError::Failed(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

fn hash_now(argon: &Argon2<'static>, password: &str) -> Result<String, HashError> {
    argon
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| HashError::Failed(e.to_string()))
}

/// Niceness of the hash workers: under CPU contention the scheduler favours
/// the async workers (token verification) about 70:1 over hashing, so a
/// login flood slows logins (and fills the queue, which sheds), not
/// verification. With idle CPU a nice thread runs at full speed: login
/// throughput without other load is unchanged. Measured on 2 cores with
/// benches/load.sh: verify p99 under a login flood was 4.0x its p99
/// without at nice 0, ~3x at nice 10, ~2.3x at nice 19.
const WORKER_NICENESS: libc::c_int = 19;

fn worker(rx: &Mutex<Receiver<Job>>) {
    // Per thread on Linux (the thread id is a process id to setpriority).
    // SAFETY: plain syscalls on this thread's own id; no memory involved.
    let lowered = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, WORKER_NICENESS)
    };
    if lowered != 0 {
        tracing::warn!("could not lower the priority of a password hashing thread");
    }
    let Ok(argon) = argon2() else { return };
    loop {
        // The lock is held only while waiting for the next job, never while
        // hashing, so the workers run in parallel.
        let job = match rx.lock().recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        job(&argon);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_unknown_users_never_match() {
        let hasher = PasswordHasher::start(1, 4).expect("start");
        let phc = hasher
            .hash("correct horse battery".into())
            .await
            .expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(
            hasher
                .verify("correct horse battery".into(), Some(phc.clone()))
                .await
                .expect("v")
        );
        assert!(
            !hasher
                .verify("wrong horse battery".into(), Some(phc))
                .await
                .expect("v")
        );
        assert!(
            !hasher
                .verify("correct horse battery".into(), None)
                .await
                .expect("v")
        );
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_at_once() {
        let hasher = PasswordHasher::start(1, 1).expect("start");
        // One job runs, one waits, the rest find the queue full.
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let hasher = Arc::clone(&hasher);
                tokio::spawn(async move { hasher.hash(format!("password number {i}")).await })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.expect("join"));
        }
        assert!(results.contains(&Err(HashError::Overloaded)));
        assert!(results.iter().any(|r| r.is_ok()));
    }
}
