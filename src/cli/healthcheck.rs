//! `holdfast healthcheck`: a container probe with no curl in the image.

use holdfast::config::Config;
use holdfast::http::tls;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// GET /readyz on the configured address, with a short timeout; over TLS
/// when `[tls]` is set (see `tls::self_check_connector` for what it trusts).
pub(super) async fn healthcheck(config: &Config) -> Result<(), String> {
    let listen = config.listen;
    let target = if listen.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], listen.port()))
    } else {
        listen
    };
    let request = format!("GET /readyz HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    let tls = config.tls.is_some();
    let probe = async {
        let tcp = tokio::net::TcpStream::connect(target).await?;
        let mut reply = Vec::new();
        if tls {
            let mut stream = tls::self_check_connector()?
                .connect(target.ip().into(), tcp)
                .await?;
            stream.write_all(request.as_bytes()).await?;
            read_reply(&mut stream, &mut reply).await?;
        } else {
            let mut stream = tcp;
            stream.write_all(request.as_bytes()).await?;
            stream.read_to_end(&mut reply).await?;
        }
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&reply).into_owned())
    };
    match tokio::time::timeout(Duration::from_secs(3), probe).await {
        Ok(Ok(reply)) if reply.starts_with("HTTP/1.1 200") => {
            println!("ready");
            Ok(())
        }
        Ok(Ok(reply)) => Err(format!(
            "not ready: {}",
            reply.lines().next().unwrap_or("no answer")
        )),
        Ok(Err(e)) => Err(format!("cannot reach {target}: {e}")),
        Err(_) => Err(format!("{target} did not answer within 3s")),
    }
}

/// Reads to the end; a TLS peer that closes without close_notify after a
/// `Connection: close` answer has still answered in full.
async fn read_reply<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    reply: &mut Vec<u8>,
) -> std::io::Result<()> {
    match stream.read_to_end(reply).await {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !reply.is_empty() => Ok(()),
        other => other.map(|_| ()),
    }
}
