//! holdfast itself on a private Sentinel deployment (DESIGN.md §4, "High
//! availability of the stores"; issue 14 item 1): the master SIGKILLed
//! under a steady load of verify, login, refresh and logout, and every
//! sentinel lost while the master lives on.

use crate::support::ha_stack::{Caller, HaStack, eventually, redis_healthy};
use crate::support::redis_ha::{DOWN_AFTER, RedisSentinel, query};
use crate::support::{PASSWORD, TestApp, Tokens};
use reqwest::StatusCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Generous per-IP limits (the load comes from one address) and a short
/// per-pair lockout window, so a lockout takes three wrong passwords. The
/// log poll is a minute, so an invalidation another node honours within
/// 2 s came over pub/sub.
/// The breaker keeps its defaults (open wait 30 s): a new master must be
/// probed at once, not after the wait.
const CONFIG: &str = "[cache]\ninvalidation_poll = \"60s\"\n[redis]\ntimeout = \"250ms\"\n[rate_limit]\n\
    login_per_ip = \"100000/min\"\nregister_per_ip = \"100000/min\"\n\
    refresh_per_ip = \"100000/min\"\nlogin_failures_per_account = \"3/1h\"\n\
    lockout_max = \"30s\"\nlogin_failures_account_ceiling = \"100/30s\"\n";

/// After the sentinels' detection time (`DOWN_AFTER`): their election and
/// promotion, holdfast hearing `+switch-master`, and the breaker's probes,
/// on a loaded 2-core machine. Each takes about a second here.
const RECOVERY_SLACK: Duration = Duration::from_secs(10);

/// Sessions each load task works through, one request per session.
const POOL: usize = 20;

/// When one answer came, and its status.
type Answer = (Instant, StatusCode);
/// What one load task saw.
type Seen = Vec<Answer>;

/// verify, login, refresh and logout, each in a task of its own at its own
/// pace, until stopped. Refresh and logout each spend one session of a
/// pool made before the kill.
struct Load {
    stop: Arc<AtomicBool>,
    verify: JoinHandle<Seen>,
    login: JoinHandle<Seen>,
    refresh: JoinHandle<Seen>,
    logout: JoinHandle<Seen>,
}

impl Load {
    fn start(app: &TestApp, user: &Tokens, refresh: Vec<Tokens>, logout: Vec<Tokens>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let caller = Caller::of(app);
        let access = user.access.clone();
        let verify = every(&stop, 20, std::iter::repeat(()), {
            let caller = caller.clone();
            move |()| {
                let (caller, access) = (caller.clone(), access.clone());
                async move { caller.verify(&access).await }
            }
        });
        let login = every(&stop, 150, std::iter::repeat(()), {
            let caller = caller.clone();
            move |()| {
                let caller = caller.clone();
                async move { caller.login("steady").await }
            }
        });
        let refresh = every(&stop, 300, refresh, {
            let caller = caller.clone();
            move |t: Tokens| {
                let caller = caller.clone();
                async move { caller.refresh(&t.refresh).await }
            }
        });
        let logout = every(&stop, 400, logout, move |t: Tokens| {
            let caller = caller.clone();
            async move { caller.logout(&t.access).await }
        });
        Self {
            stop,
            verify,
            login,
            refresh,
            logout,
        }
    }

    async fn stop(self) -> [Seen; 4] {
        self.stop.store(true, Ordering::Release);
        let mut seen = [vec![], vec![], vec![], vec![]];
        for (i, task) in [self.verify, self.login, self.refresh, self.logout]
            .into_iter()
            .enumerate()
        {
            seen[i] = task.await.expect("load task");
        }
        seen
    }
}

/// Runs `call` on each item, one every `pause_ms`, until the items run out
/// or `stop` is set.
fn every<It, F, Fut>(stop: &Arc<AtomicBool>, pause_ms: u64, items: It, call: F) -> JoinHandle<Seen>
where
    It: IntoIterator + Send + 'static,
    It::IntoIter: Send,
    It::Item: Send,
    F: Fn(It::Item) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = StatusCode> + Send + 'static,
{
    let stop = Arc::clone(stop);
    tokio::spawn(async move {
        let mut seen = Vec::new();
        for item in items {
            if stop.load(Ordering::Acquire) {
                break;
            }
            let status = call(item).await;
            seen.push((Instant::now(), status));
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        }
        seen
    })
}

async fn sessions(app: &TestApp, name: &str, n: usize) -> Vec<Tokens> {
    let mut all = Vec::with_capacity(n);
    for _ in 0..n {
        all.push(app.login_ok(name).await);
    }
    all
}

async fn redis_failing(app: &TestApp) -> bool {
    !redis_healthy(app).await
}

/// Three wrong passwords lock the pair; the right one is then refused.
async fn lockout_works(app: &TestApp, name: &str) {
    for _ in 0..3 {
        app.login(name, "not-the-password-at-all")
            .await
            .expect_error(401, "AUTH001");
    }
    app.login(name, PASSWORD).await.expect_error(429, "RATE001");
}

async fn start() -> (RedisSentinel, HaStack) {
    let ha = tokio::task::spawn_blocking(RedisSentinel::start)
        .await
        .expect("sentinel harness");
    let stack = HaStack::start(ha.url(), CONFIG).await;
    assert!(
        redis_healthy(&stack.app).await,
        "holdfast runs on the sentinel's master"
    );
    (ha, stack)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_kill_under_load_costs_only_logins_for_seconds() {
    let (ha, stack) = start().await;
    let app = &stack.app;
    let user = app.user("steady").await;
    let kept = sessions(app, "steady", 5).await;
    let (to_refresh, to_logout) = (
        sessions(app, "steady", POOL).await,
        sessions(app, "steady", POOL).await,
    );
    let logged_out = to_logout.clone();
    app.register("victim@example.com", "victim").await;
    // Subscribed on the master about to die.
    let two = stack.another_node().await;
    let load = Load::start(app, &user, to_refresh, to_logout);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (ha, killed, at) = tokio::task::spawn_blocking(move || {
        let mut ha = ha;
        let killed = ha.kill_master();
        (ha, killed, Instant::now())
    })
    .await
    .expect("kill the master");
    let bound = DOWN_AFTER + RECOVERY_SLACK;
    eventually("health shows redis failing", bound, || redis_failing(app)).await;
    eventually("health shows redis recovered", bound, || redis_healthy(app)).await;
    eprintln!(
        "redis healthy again {:?} after the master kill",
        at.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let [verified, logins, refreshed, logouts] = load.stop().await;
    only_logins_refused_for_a_while(&verified, &logins, &refreshed, &logouts, at, bound);

    assert_ne!(ha.master_port(), Some(killed));
    for session in &kept {
        let reply = app.refresh(&session.refresh).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "acknowledged before the kill: {}",
            reply.body
        );
    }
    let spent = logouts.len();
    for session in &logged_out[..spent] {
        assert_eq!(
            app.verify(&session.access).await.status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            app.refresh(&session.refresh).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    lockout_works(app, "victim").await;
    pubsub_reaches(app, &two).await;
}

/// A logout on `one` is refused on `two` within 2 s (DESIGN.md §1): `two`
/// subscribed again on the new master, and `one` publishes there.
async fn pubsub_reaches(one: &TestApp, two: &TestApp) {
    let tokens = one.login_ok("steady").await;
    assert_eq!(
        two.verify(&tokens.access).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        Caller::of(one).logout(&tokens.access).await,
        StatusCode::NO_CONTENT
    );
    eventually(
        "the other node hears the logout",
        Duration::from_secs(2),
        || refused(two, &tokens.access),
    )
    .await;
}

async fn refused(node: &TestApp, access: &str) -> bool {
    node.verify(access).await.status == StatusCode::UNAUTHORIZED
}

/// Every verification, refresh and logout answered; logins refused only
/// with 503, only within `bound` of the kill, and answered again after.
fn only_logins_refused_for_a_while(
    verified: &[Answer],
    logins: &[Answer],
    refreshed: &[Answer],
    logouts: &[Answer],
    at: Instant,
    bound: Duration,
) {
    assert!(
        verified.iter().all(|(_, s)| *s == StatusCode::NO_CONTENT),
        "a verification failed"
    );
    assert!(
        refreshed.iter().all(|(_, s)| *s == StatusCode::OK),
        "a refresh failed: {refreshed:?}"
    );
    assert!(
        logouts.iter().all(|(_, s)| *s == StatusCode::NO_CONTENT),
        "a logout failed: {logouts:?}"
    );
    let refused: Vec<_> = logins
        .iter()
        .filter(|(_, s)| *s != StatusCode::OK)
        .collect();
    for (when, status) in &refused {
        assert_eq!(
            *status,
            StatusCode::SERVICE_UNAVAILABLE,
            "login: only 503 while Redis fails over"
        );
        assert!(
            *when > at && *when - at < bound,
            "a login refused {:?} after the kill",
            *when - at
        );
    }
    eprintln!(
        "{} of {} logins refused during the failover",
        refused.len(),
        logins.len()
    );
    assert!(
        logins.last().is_some_and(|(_, s)| *s == StatusCode::OK),
        "logins are back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sentinel_lost_keeps_the_master_and_the_limits() {
    let (ha, stack) = start().await;
    let app = &stack.app;
    let mut tokens = app.user("calm").await;
    app.register("victim@example.com", "victim").await;
    let master = ha.master_port().expect("a master");
    let ha = tokio::task::spawn_blocking(move || {
        let mut ha = ha;
        ha.kill_sentinels();
        // Cut holdfast's connections: the errors send it to the sentinels,
        // none answers, and it must stay on the master it has.
        query::<i64>(master, &["CLIENT", "KILL", "TYPE", "normal"]);
        query::<i64>(master, &["CLIENT", "KILL", "TYPE", "pubsub"]);
        ha
    })
    .await
    .expect("kill the sentinels");
    for _ in 0..10 {
        let reply = app.refresh(&tokens.refresh).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        tokens = Tokens::from(&reply.body);
        assert_eq!(
            app.verify(&tokens.access).await.status,
            StatusCode::NO_CONTENT
        );
        app.login_ok("calm").await;
        let health = app.get("/api/v1/health", None).await;
        assert_eq!(
            health.body["components"]["redis"]["circuit_state"], "closed",
            "never opens"
        );
    }
    lockout_works(app, "victim").await;
    assert!(redis_healthy(app).await);
    assert_eq!(query::<String>(master, &["PING"]).as_deref(), Some("PONG"));
    drop(ha);
}
