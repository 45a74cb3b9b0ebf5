//! Argon2id hashing on a fixed set of dedicated threads fed by a bounded
//! queue. A hash takes tens of milliseconds of CPU and 19 MiB (measured in
//! docs/performance.md); on the async executor or on
//! tokio's unbounded blocking pool a login flood would starve token
//! verification. Here a full queue is an immediate `Overloaded`, which the
//! HTTP layer turns into 503 (load shedding).
//!
//! A login takes its place in the queue (`HashSlot`) before anything else,
//! so a login that would be shed is shed at the door: under a flood the
//! refused attempts cost no rate-limiter, database or Redis call.
//!
//! Passwords are hashed and verified in their Unicode NFKC form (DESIGN.md
//! §2), here, so no caller can forget it: the same password typed on two
//! keyboards (composed or decomposed accents, full-width letters) is one
//! password. Hashes made before that (marked `PRE_NFKC_PREFIX`) were made
//! from the raw input; for them alone, and only when NFKC changes the input,
//! the raw form is tried too, and a match replaces the hash.

use crate::auth::error::HashError;
use crate::auth::nfkc::{Argon2Work, normalize, verify_job};
use crate::store::{PRE_NFKC_PREFIX, UserStore};
use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// OWASP's floor for Argon2id: m = 19 MiB, t = 2, p = 1.
const MEMORY_KIB: u32 = 19 * 1024;
const ITERATIONS: u32 = 2;
const PARALLELISM: u32 = 1;

type Job = Box<dyn FnOnce(&mut Worker) + Send>;

pub struct PasswordHasher {
    jobs: SyncSender<Job>,
    /// One permit per job allowed in at once, hashing or waiting
    /// (`workers + queue`); the channel has room for all of them.
    places: Arc<Semaphore>,
    /// Places taken now, for `holdfast_password_hash_queue_depth`.
    taken: Arc<AtomicUsize>,
    /// Hash of a random password: unknown users are verified against it so
    /// they cost the same as known ones.
    dummy: String,
    /// Where a pre-normalisation hash is replaced after a matching login;
    /// `None`: never replaced (benchmarks, unit tests).
    upgrades: Option<Arc<dyn UserStore>>,
}

impl PasswordHasher {
    /// Starts `workers` threads; at most `queue` jobs wait for one.
    pub fn start(workers: usize, queue: usize) -> Result<Arc<Self>, HashError> {
        Self::start_upgrading(workers, queue, None)
    }

    /// `start`, replacing pre-normalisation hashes in `users` as their
    /// owners log in.
    pub fn start_upgrading(
        workers: usize,
        queue: usize,
        upgrades: Option<Arc<dyn UserStore>>,
    ) -> Result<Arc<Self>, HashError> {
        let places = workers + queue;
        let (jobs, rx) = sync_channel::<Job>(places);
        let rx = Arc::new(Mutex::new(rx));
        // The dummy hash is made in the first worker's memory, which then
        // goes to its thread: no third 19 MiB block at start.
        let mut first = Worker::new()?;
        let mut random = [0u8; 32];
        aws_lc_rs::rand::fill(&mut random).map_err(|_| HashError::Failed("rng".into()))?;
        let dummy = first.hash(&hex::encode(random))?;
        let mut first = Some(first);
        for n in 0..workers {
            let rx = Arc::clone(&rx);
            let memory = first.take();
            std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || worker(&rx, memory))
                .map_err(|e| HashError::Failed(e.to_string()))?;
        }
        metrics::gauge!("holdfast_password_hash_queue_depth").set(0.0);
        Ok(Arc::new(Self {
            jobs,
            places: Arc::new(Semaphore::new(places)),
            taken: Arc::new(AtomicUsize::new(0)),
            dummy,
            upgrades,
        }))
    }

    /// A place in the queue, or `Overloaded` at once when there is none.
    pub fn reserve(&self) -> Result<HashSlot<'_>, HashError> {
        let permit = Arc::clone(&self.places)
            .try_acquire_owned()
            .map_err(|_| HashError::Overloaded)?;
        Ok(HashSlot {
            hasher: self,
            permit: Place::taken(permit, Arc::clone(&self.taken)),
        })
    }

    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        self.reserve()?.hash(password).await
    }

    /// `HashSlot::verify` with a place taken now.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool, HashError> {
        self.reserve()?.verify(password, phc).await
    }
}

/// A place held in the hash queue: the job it is spent on cannot be
/// refused. Dropped unspent, the place is given back.
pub struct HashSlot<'a> {
    hasher: &'a PasswordHasher,
    permit: Place,
}

/// A taken place, counted while it is held: given back (and the gauge
/// lowered) when dropped, after its hash or unspent. The gauge,
/// `holdfast_password_hash_queue_depth`, is the places held — hashing,
/// waiting for a worker, or held by a login not yet at its hash — out of
/// `hash_workers + queue`.
struct Place {
    _permit: OwnedSemaphorePermit,
    taken: Arc<AtomicUsize>,
}

impl Place {
    fn taken(permit: OwnedSemaphorePermit, taken: Arc<AtomicUsize>) -> Self {
        let now = taken.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!("holdfast_password_hash_queue_depth").set(now as f64);
        Place {
            _permit: permit,
            taken,
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let now = self.taken.fetch_sub(1, Ordering::Relaxed) - 1;
        metrics::gauge!("holdfast_password_hash_queue_depth").set(now as f64);
    }
}

impl HashSlot<'_> {
    /// Verifies against `stored` (a `User::password_hash`), or against the
    /// dummy hash when the user does not exist (the answer is then always
    /// `false`, after the same work).
    ///
    /// The work depends on the input only, never on the user: one Argon2
    /// verification of the NFKC form, and when NFKC changes the input a
    /// second one of the raw form — against a pre-normalisation hash, else
    /// against the dummy, its answer ignored. A normalised hash never
    /// accepts the raw form.
    pub async fn verify(self, password: String, stored: Option<String>) -> Result<bool, HashError> {
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.hasher.dummy.clone());
        let pre_nfkc = known && stored.starts_with(PRE_NFKC_PREFIX);
        let phc = stored
            .strip_prefix(PRE_NFKC_PREFIX)
            .unwrap_or(&stored)
            .to_string();
        let dummy = self.hasher.dummy.clone();
        let upgrades = self.hasher.upgrades.clone();
        let (matched, upgrade) = self
            .submit(move |worker| verify_job(worker, &password, phc, pre_nfkc, &dummy))
            .await?;
        if let (Some(store), Some(Ok(new))) = (upgrades, upgrade) {
            // Best effort, off the login's path: the old hash keeps working.
            tokio::spawn(async move {
                match store.upgrade_password_hash(&stored, &new).await {
                    Ok(true) => tracing::info!("pre-normalisation password hash replaced"),
                    Ok(false) => {} // replaced meanwhile (another login, a new password)
                    Err(e) => {
                        tracing::warn!(error = %e, "pre-normalisation password hash not replaced")
                    }
                }
            });
        }
        Ok(known && matched)
    }

    /// Hashes the NFKC form of `password`.
    pub async fn hash(self, password: String) -> Result<String, HashError> {
        self.submit(move |worker| worker.hash(&normalize(&password)))
            .await?
    }

    async fn submit<T: Send + 'static>(
        self,
        work: impl FnOnce(&mut Worker) -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let (reply, answer) = oneshot::channel();
        let permit = self.permit;
        let job: Job = Box::new(move |worker| {
            let answer = work(worker);
            // The place is free once the hash is done, not when it starts,
            // and before the answer is seen.
            drop(permit);
            let _ = reply.send(answer);
        });
        match self.hasher.jobs.try_send(job) {
            Ok(()) => {}
            // Cannot happen while the channel has a place per permit.
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

impl Argon2Work for Worker {
    fn verify(&mut self, password: &str, phc: &str) -> bool {
        Worker::verify(self, password, phc)
    }

    fn hash(&mut self, password: &str) -> Result<String, HashError> {
        Worker::hash(self, password)
    }
}

/// One Argon2id hash with the service's parameters, on the calling thread:
/// what a hash worker does per login (benchmarks measure it).
pub fn hash_once(password: &str) -> Result<String, HashError> {
    thread_local! {
        static WORKER: std::cell::RefCell<Option<Worker>> = const { std::cell::RefCell::new(None) };
    }
    WORKER.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(Worker::new()?);
        }
        slot.as_mut()
            .map_or_else(|| Err(failed("no worker")), |w| w.hash(password))
    })
}

fn params() -> Result<Params, HashError> {
    Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None).map_err(failed)
}

fn failed(e: impl std::fmt::Display) -> HashError {
    HashError::Failed(e.to_string())
}

/// A hash worker's Argon2 instance and the 19 MiB of memory it hashes in,
/// allocated once and reused. The argon2 crate's PHC API allocates (and
/// frees) that memory on every hash; under a login flood the allocator's
/// high-water mark grew past it, so the worker keeps its own and builds the
/// PHC strings itself (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`, the
/// same format, verified both ways in the tests below).
pub struct Worker {
    argon: Argon2<'static>,
    params: Params,
    memory: Vec<Block>,
}

impl Worker {
    pub(crate) fn new() -> Result<Self, HashError> {
        let params = params()?;
        Ok(Self {
            argon: Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone()),
            memory: vec![Block::default(); params.block_count()],
            params,
        })
    }

    /// The first `blocks` blocks of the worker's memory, grown if a stored
    /// hash was made with more (older, stronger parameters).
    fn memory(&mut self, blocks: usize) -> &mut [Block] {
        if self.memory.len() < blocks {
            self.memory.resize(blocks, Block::default());
        }
        &mut self.memory[..blocks]
    }

    pub(crate) fn hash(&mut self, password: &str) -> Result<String, HashError> {
        let mut salt = [0u8; 16];
        aws_lc_rs::rand::fill(&mut salt).map_err(|_| failed("rng failed"))?;
        let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
        let blocks = self.params.block_count();
        let argon = self.argon.clone();
        argon
            .hash_password_into_with_memory(
                password.as_bytes(),
                &salt,
                &mut out,
                self.memory(blocks),
            )
            .map_err(failed)?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&self.params).map_err(failed)?,
            salt: Some(Salt::new(&salt).map_err(failed)?),
            hash: Some(Output::new(&out).map_err(failed)?),
        };
        Ok(phc.to_string())
    }

    /// Does `password` match the PHC string? Any malformed or unsupported
    /// hash is a mismatch.
    pub(crate) fn verify(&mut self, password: &str, phc: &str) -> bool {
        let Ok(hash) = PasswordHash::new(phc) else {
            return false;
        };
        let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
            return false;
        };
        let Ok(algorithm) = Algorithm::try_from(hash.algorithm.as_str()) else {
            return false;
        };
        let version = match hash.version.map(Version::try_from) {
            None => Version::V0x13,
            Some(Ok(v)) => v,
            Some(Err(_)) => return false,
        };
        let Ok(params) = Params::try_from(&hash) else {
            return false;
        };
        let argon = Argon2::new(algorithm, version, params.clone());
        let mut out = [0u8; Output::MAX_LENGTH];
        let out = &mut out[..expected.len()];
        if argon
            .hash_password_into_with_memory(
                password.as_bytes(),
                &salt,
                out,
                self.memory(params.block_count()),
            )
            .is_err()
        {
            return false;
        }
        aws_lc_rs::constant_time::verify_slices_are_equal(out, expected.as_ref()).is_ok()
    }
}

/// The hash workers run under `SCHED_IDLE`: they get a CPU only when no
/// ordinary thread wants it, a waking async worker (token verification)
/// preempts them at once, and the scheduler treats a core running only
/// hashing as idle when it places a waking thread. So a login flood slows
/// logins (and fills the queue, which sheds), not verification; with idle
/// CPU a hash runs at full speed, so login throughput without other load
/// is unchanged. Measured on 2 cores with benches/load.sh, verify p99 under
/// a login flood against its p99 without: 4.0x at nice 0, ~3x at nice 10,
/// 2.25-2.8x at nice 19 (the fallback where `SCHED_IDLE` is refused),
/// 1.2-1.9x under `SCHED_IDLE`.
fn lower_priority() {
    // Per thread on Linux: pid 0 is the calling thread.
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain syscalls on this thread's own id; `param` outlives the call.
    let idle = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0;
    if idle {
        return;
    }
    // SAFETY: as above; no memory involved.
    let niced = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19)
    } == 0;
    if !niced {
        tracing::warn!("could not lower the priority of a password hashing thread");
    }
}

fn worker(rx: &Mutex<Receiver<Job>>, given: Option<Worker>) {
    lower_priority();
    let Some(mut worker) = given.or_else(|| Worker::new().ok()) else {
        return;
    };
    loop {
        // The lock is held only while waiting for the next job, never while
        // hashing, so the workers run in parallel.
        let job = match rx.lock().recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        job(&mut worker);
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

    /// Our PHC strings are the argon2 crate's, both ways, and stored hashes
    /// with other parameters (here m = 8 MiB, t = 3) still verify.
    #[test]
    fn phc_strings_match_the_argon2_crate_both_ways() {
        use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
        let mut worker = Worker::new().expect("worker");
        let ours = worker.hash("tangerine-orbit-lamp").expect("hash");
        let standard = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            params().expect("params"),
        );
        assert!(
            standard
                .verify_password(b"tangerine-orbit-lamp", ours.as_str())
                .is_ok()
        );
        assert!(
            standard
                .verify_password(b"tangerine-orbit-lamP", ours.as_str())
                .is_err()
        );
        let theirs = standard
            .hash_password(b"tangerine-orbit-lamp")
            .expect("hash")
            .to_string();
        assert!(worker.verify("tangerine-orbit-lamp", &theirs));
        assert!(!worker.verify("tangerine-orbit-lam", &theirs));
        let other = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8 * 1024, 3, 1, None).expect("params"),
        )
        .hash_password(b"old-parameters-here")
        .expect("hash")
        .to_string();
        assert!(worker.verify("old-parameters-here", &other));
        assert!(!worker.verify("old-parameters-here", "$argon2id$garbage"));
        assert!(!worker.verify("x", ""));
    }

    /// Places are held from `reserve` until the hash is done, and given
    /// back when a slot is dropped unspent.
    #[tokio::test]
    async fn a_reserved_place_counts_until_spent_or_dropped() {
        let hasher = PasswordHasher::start(1, 1).expect("start");
        let first = hasher.reserve().expect("a place");
        let second = hasher.reserve().expect("a place");
        assert_eq!(hasher.reserve().err(), Some(HashError::Overloaded));
        drop(second);
        let third = hasher.reserve().expect("the dropped place is free again");
        assert!(!first.verify("some password".into(), None).await.expect("v"));
        assert!(hasher.reserve().is_ok(), "a spent place is free again");
        drop(third);
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
