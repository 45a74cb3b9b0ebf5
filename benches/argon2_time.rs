//! How long one Argon2id hash takes here, with the service's parameters:
//! the load benchmark's Argon2 limit is `hash_workers / this time`.
//!
//! `cargo run --release --example argon2_time -- [N]` prints the mean of N
//! hashes in milliseconds.

use holdfast::auth::passwords::hash_once;
use std::time::Instant;

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    hash_once("warm-up-password-x").expect("hash");
    let started = Instant::now();
    for i in 0..n {
        hash_once(&format!("tangerine-orbit-lamp-{i}")).expect("hash");
    }
    println!(
        "{:.3}",
        started.elapsed().as_secs_f64() * 1000.0 / f64::from(n)
    );
}
