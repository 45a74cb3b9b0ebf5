//! Whether the server answering on a port is the one a test started:
//! `free_port` hands out a number, and another process may bind it first.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

/// The process id the Redis at `addr` reports (`INFO server`).
pub fn redis_pid(addr: SocketAddr) -> Option<u32> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    stream.write_all(b"INFO server\r\n").ok()?;
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    while !text.contains("process_id:") || !text.split("process_id:").nth(1)?.contains('\n') {
        let n = stream.read(&mut buf).ok().filter(|n| *n > 0)?;
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    text.split("process_id:")
        .nth(1)?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Whether the PostgreSQL at `url` runs on `data` (and not some other
/// server that took the port first).
pub fn serves_data_dir(url: &str, data: &Path) -> bool {
    let url = url.to_string();
    let want = data.to_path_buf();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async {
            use sqlx::Connection;
            let Ok(mut conn) = sqlx::PgConnection::connect(&url).await else {
                return false;
            };
            let dir: Result<String, _> = sqlx::query_scalar("SHOW data_directory")
                .fetch_one(&mut conn)
                .await;
            dir.is_ok_and(|d| std::fs::canonicalize(&d).ok() == std::fs::canonicalize(&want).ok())
        })
    })
    .join()
    .unwrap_or(false)
}
