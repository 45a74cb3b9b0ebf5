//! The test harness itself: a private server whose port was taken between
//! `free_port` and its start moves to another port, and is never confused
//! with the process that took it.

use crate::support::procs::Redis;
use std::net::TcpListener;

#[test]
fn a_server_whose_port_was_taken_starts_on_another_and_only_ours_counts() {
    // Someone else holds the port and accepts connections (but never
    // answers): a probe that only checked "something listens" would take
    // it for our Redis.
    let squatter = TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = squatter.local_addr().expect("addr").port();
    let redis = Redis::start_trying(taken);
    assert_ne!(redis.port, taken, "started on a port someone else holds");
    let client = redis::Client::open(redis.url()).expect("url");
    let mut conn = client.get_connection().expect("connect to our redis");
    let pong: String = redis::cmd("PING").query(&mut conn).expect("ping");
    assert_eq!(pong, "PONG");
}
