//! Unit tests of `breaker`, kept beside it so the module stays readable.
use super::*;

fn settings() -> BreakerSettings {
    BreakerSettings {
        window: Duration::from_secs(10),
        minimum_calls: 4,
        failure_rate_threshold: 50.0,
        slow_call_duration: Duration::from_millis(500),
        slow_call_rate_threshold: 100.0,
        open_wait: Duration::from_secs(30),
        open_wait_max: Duration::from_secs(100),
        half_open_permits: 2,
    }
}

fn call(b: &CircuitBreaker, outcome: Outcome) {
    let permit = b.acquire().expect("permitted");
    b.record(permit, outcome, Duration::from_millis(1));
}

fn open(b: &CircuitBreaker) {
    for _ in 0..4 {
        call(b, Outcome::Failure);
    }
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn stays_closed_below_minimum_calls_and_below_threshold() {
    let b = CircuitBreaker::new("db", settings());
    for _ in 0..3 {
        call(&b, Outcome::Failure);
    }
    assert_eq!(b.state(), BreakerState::Closed, "3 calls < minimum 4");
    let b = CircuitBreaker::new("db", settings());
    for outcome in [
        Outcome::Success,
        Outcome::Success,
        Outcome::Success,
        Outcome::Failure,
    ] {
        call(&b, outcome);
    }
    assert_eq!(b.state(), BreakerState::Closed, "25% < 50%");
}

#[tokio::test(start_paused = true)]
async fn opens_at_the_failure_rate_and_rejects_at_once() {
    let b = CircuitBreaker::new("db", settings());
    for outcome in [
        Outcome::Success,
        Outcome::Failure,
        Outcome::Success,
        Outcome::Failure,
    ] {
        call(&b, outcome);
    }
    assert_eq!(b.state(), BreakerState::Open, "50% >= 50%");
    let rejected = b.acquire().err().expect("rejected");
    assert_eq!(rejected.retry_after, Duration::from_secs(30));
    let snap = b.snapshot();
    assert!(snap.opened_at.is_some() && snap.next_attempt_at.is_some());
}

#[tokio::test(start_paused = true)]
async fn old_outcomes_slide_out_of_the_window() {
    let b = CircuitBreaker::new("db", settings());
    for _ in 0..3 {
        call(&b, Outcome::Failure);
    }
    tokio::time::advance(Duration::from_secs(11)).await;
    call(&b, Outcome::Failure);
    assert_eq!(
        b.state(),
        BreakerState::Closed,
        "the first three fell out of the window"
    );
    assert_eq!(b.snapshot().calls, 1);
}

#[tokio::test(start_paused = true)]
async fn opens_on_slow_calls_only_at_their_rate() {
    let b = CircuitBreaker::new("db", settings());
    for _ in 0..4 {
        let permit = b.acquire().expect("permitted");
        b.record(permit, Outcome::Success, Duration::from_millis(600));
    }
    assert_eq!(b.state(), BreakerState::Open, "100% slow");
    let b = CircuitBreaker::new("db", settings());
    for took in [600, 600, 600, 10] {
        let permit = b.acquire().expect("permitted");
        b.record(permit, Outcome::Success, Duration::from_millis(took));
    }
    assert_eq!(b.state(), BreakerState::Closed, "75% slow < 100%");
}

#[tokio::test(start_paused = true)]
async fn half_open_lets_exactly_the_permits_through_and_closes_on_success() {
    let b = CircuitBreaker::new("db", settings());
    open(&b);
    tokio::time::advance(Duration::from_secs(30)).await;
    let first = b.acquire().expect("probe 1");
    assert_eq!(b.state(), BreakerState::HalfOpen);
    let second = b.acquire().expect("probe 2");
    assert!(b.acquire().is_err(), "no third concurrent probe");
    b.record(first, Outcome::Success, Duration::from_millis(1));
    assert_eq!(
        b.state(),
        BreakerState::HalfOpen,
        "one of two probes is not enough"
    );
    b.record(second, Outcome::Success, Duration::from_millis(1));
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(
        b.snapshot().calls,
        0,
        "a closed breaker starts a fresh window"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_with_a_doubled_wait_up_to_the_cap() {
    let b = CircuitBreaker::new("db", settings());
    open(&b);
    let mut expected = [60, 100, 100];
    for wait in expected.iter_mut() {
        tokio::time::advance(b.acquire().err().expect("open").retry_after).await;
        let probe = b.acquire().expect("probe");
        b.record(probe, Outcome::Failure, Duration::from_millis(1));
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(
            b.acquire().err().expect("open").retry_after,
            Duration::from_secs(*wait)
        );
    }
    // A slow probe counts as failed too.
    tokio::time::advance(Duration::from_secs(100)).await;
    let probe = b.acquire().expect("probe");
    b.record(probe, Outcome::Success, Duration::from_secs(1));
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn concurrent_half_open_probes_one_failing_reopens() {
    let b = CircuitBreaker::new("db", settings());
    open(&b);
    tokio::time::advance(Duration::from_secs(30)).await;
    let first = b.acquire().expect("probe 1");
    let second = b.acquire().expect("probe 2");
    b.record(second, Outcome::Failure, Duration::from_millis(1));
    assert_eq!(b.state(), BreakerState::Open);
    // The other probe's late success belongs to an old generation.
    b.record(first, Outcome::Success, Duration::from_millis(1));
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_probe_frees_its_slot() {
    let b = CircuitBreaker::new("db", settings());
    open(&b);
    tokio::time::advance(Duration::from_secs(30)).await;
    let first = b.acquire().expect("probe 1");
    let _second = b.acquire().expect("probe 2");
    assert!(b.acquire().is_err());
    b.release(first);
    assert!(b.acquire().is_ok(), "the released slot is available again");
}

#[tokio::test(start_paused = true)]
async fn outcomes_from_before_a_transition_are_ignored_and_reset_closes() {
    let b = CircuitBreaker::new("db", settings());
    let stale = b.acquire().expect("permit");
    open(&b);
    b.record(stale, Outcome::Success, Duration::from_millis(1));
    assert_eq!(b.state(), BreakerState::Open);
    b.reset();
    assert_eq!(b.state(), BreakerState::Closed);
    assert!(b.acquire().is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_replaced_dependency_is_probed_at_once() {
    let b = CircuitBreaker::new("redis", settings());
    b.probe_now("nothing to do while closed");
    assert_eq!(b.state(), BreakerState::Closed);
    open(&b);
    assert!(b.acquire().is_err(), "open: waits out open_wait");
    b.probe_now("a new master");
    assert_eq!(b.state(), BreakerState::HalfOpen);
    call(&b, Outcome::Success);
    call(&b, Outcome::Success);
    assert_eq!(b.state(), BreakerState::Closed, "the probes closed it");
    open(&b);
    b.probe_now("a new master");
    call(&b, Outcome::Failure);
    assert_eq!(b.state(), BreakerState::Open, "a failed probe reopens it");
    assert!(b.acquire().is_err());
}
