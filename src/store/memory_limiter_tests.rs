use super::*;

const W: Window = Window {
    limit: 3,
    period: Duration::from_secs(60),
};

fn windows() -> AccountWindows {
    with_ceiling(100)
}

fn with_ceiling(limit: u32) -> AccountWindows {
    AccountWindows {
        pair: W,
        ceiling: Window {
            limit,
            period: Duration::from_secs(600),
        },
        lockout_max: Duration::from_secs(300),
        known_for: Duration::from_secs(30 * 24 * 3600),
    }
}

fn from(address: &str) -> LoginSubject<'_> {
    LoginSubject {
        account: "acct",
        address,
    }
}

/// One wrong password from `address`: reserved, then failed.
async fn guess(l: &MemoryLimiter, address: &str, member: &str, now: i64) -> LimitDecision {
    guess_under(l, windows(), address, member, now).await
}

async fn guess_under(
    l: &MemoryLimiter,
    w: AccountWindows,
    address: &str,
    member: &str,
    now: i64,
) -> LimitDecision {
    let d = l
        .reserve_login(from(address), w, member, now)
        .await
        .expect("reserve");
    if d.allowed {
        l.fail_login(from(address), w, now).await.expect("fail");
    }
    d
}

#[test]
fn the_window_slides_and_refunds_give_slots_back() {
    let l = MemoryLimiter::new();
    for (i, member) in ["a", "b", "c"].iter().enumerate() {
        let d = l.reserve_now("k", W, member, 1_000).expect("reserve");
        assert!(d.allowed);
        assert_eq!(d.remaining, 2 - i as u32);
    }
    let d = l.reserve_now("k", W, "d", 2_000).expect("reserve");
    assert!(!d.allowed);
    assert_eq!(d.reset_after, Duration::from_millis(59_000));
    l.refund_now("k", "b");
    assert!(l.reserve_now("k", W, "e", 2_000).expect("r").allowed);
    assert!(
        l.reserve_now("k", W, "f", 61_001).expect("r").allowed,
        "slid out"
    );
}

#[tokio::test]
async fn failures_lock_the_pair_only_and_never_past_lockout_max() {
    let l = MemoryLimiter::new();
    for m in ["a", "b", "c"] {
        assert!(guess(&l, "6.6.6.6", m, 0).await.allowed);
    }
    let locked = l
        .reserve_login(from("6.6.6.6"), windows(), "x", 59_000)
        .await
        .expect("r");
    assert!(!locked.allowed, "the attacker's pair is locked");
    assert_eq!(locked.reset_after, Duration::from_secs(1));
    // The owner's address is not.
    assert!(
        l.reserve_login(from("1.2.3.4"), windows(), "o", 59_000)
            .await
            .expect("r")
            .allowed
    );
    // A second round locks longer; a third would pass lockout_max.
    for m in ["d", "e", "f"] {
        guess(&l, "6.6.6.6", m, 60_000).await;
    }
    let d = l
        .reserve_login(from("6.6.6.6"), windows(), "y", 60_001)
        .await
        .expect("r");
    assert_eq!(d.reset_after, Duration::from_millis(119_999));
    for round in 0..4 {
        let at = 300_000 * (round + 1);
        for m in ["g", "h", "i"] {
            guess(&l, "6.6.6.6", m, at).await;
        }
        let d = l
            .reserve_login(from("6.6.6.6"), windows(), "z", at + 1)
            .await
            .expect("r");
        assert!(d.reset_after <= Duration::from_secs(300), "{d:?}");
    }
}

#[tokio::test]
async fn the_ceiling_throttles_strangers_but_not_known_addresses() {
    let l = MemoryLimiter::new();
    let w = with_ceiling(5);
    let owner = from("1.2.3.4");
    l.reserve_login(owner, w, "ok", 0).await.expect("r");
    l.refund_login(owner, w, "ok", true, 0)
        .await
        .expect("refund");
    // Five failures from five addresses reach the ceiling of 5.
    for (i, ip) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        assert!(
            guess_under(&l, w, ip, &format!("m{i}"), 1_000)
                .await
                .allowed
        );
    }
    let throttled = l.reserve_login(from("f"), w, "n", 2_000).await.expect("r");
    assert!(!throttled.allowed);
    // Ten minutes of window, but never more than lockout_max (5 min).
    assert_eq!(throttled.reset_after, Duration::from_secs(300));
    assert!(
        l.reserve_login(owner, w, "o", 2_000)
            .await
            .expect("r")
            .allowed,
        "the owner's address is exempt"
    );
    // Refused attempts do not count: once the failures age out, it ends.
    assert!(
        l.reserve_login(from("f"), w, "p", 601_001)
            .await
            .expect("r")
            .allowed
    );
}

#[tokio::test]
async fn at_the_bound_new_keys_are_refused_and_locks_stay() {
    let short = Window {
        limit: 3,
        period: Duration::from_secs(10),
    };
    let l = MemoryLimiter::bounded(1, 4, usize::MAX);
    // The account's pair and ceiling entries: two keys, the pair locked
    // for 60 s.
    for m in ["a", "b", "c"] {
        guess(&l, "6.6.6.6", m, 0).await;
    }
    l.reserve_now("ip:1", short, "x", 0).expect("r");
    l.reserve_now("ip:2", short, "x", 0).expect("r");
    let full = l.reserve_now("ip:3", short, "x", 0).expect_err("full");
    assert!(full.is_unavailable(), "{full}");
    let full = l
        .reserve_login(from("7.7.7.7"), windows(), "y", 0)
        .await
        .expect_err("full");
    assert!(full.is_unavailable());
    // Existing keys keep working.
    assert!(l.reserve_now("ip:1", short, "y", 0).expect("r").allowed);
    // Once the per-IP entries age out, a sweep makes room; the lock stays.
    assert!(
        l.reserve_now("ip:3", short, "x", 11_000)
            .expect("r")
            .allowed
    );
    assert!(
        !l.reserve_login(from("6.6.6.6"), windows(), "z", 11_000)
            .await
            .expect("r")
            .allowed,
        "a lock is never evicted"
    );
    assert_eq!(l.usage().0, 3);
}

#[test]
fn the_byte_bound_holds_against_long_keys() {
    let l = MemoryLimiter::bounded(4, 1_000_000, 1 << 20);
    let long = "x".repeat(60_000);
    let mut refused = 0;
    for i in 0..100 {
        if l.reserve_now(&format!("{long}{i}"), W, "m", 0).is_err() {
            refused += 1;
        }
    }
    let (_, bytes) = l.usage();
    assert!(bytes <= 1 << 20, "{bytes}");
    assert!(refused >= 80, "{refused}");
}

#[test]
fn aged_out_keys_are_swept_shard_by_shard() {
    let l = MemoryLimiter::bounded(4, 1_000_000, usize::MAX);
    for i in 0..1_000 {
        l.reserve_now(&format!("ip:{i}"), W, "m", 0).expect("r");
    }
    assert_eq!(l.usage().0, 1_000);
    // Each shard sweeps itself when next used after SWEEP_EVERY_MS.
    for i in 0..100 {
        l.reserve_now(&format!("late:{i}"), W, "m", 70_000)
            .expect("r");
    }
    assert_eq!(l.usage().0, 100);
    assert_eq!(
        l.usage().1,
        (0..100)
            .map(|i| ENTRY_COST + format!("late:{i}").len() + HIT_COST + 1)
            .sum::<usize>()
    );
}
