//! Free loopback ports.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::Mutex;

/// A TCP port on 127.0.0.1 that nothing listens on now and that this process has not
/// handed out before, so two components of one environment never race for one port.
pub async fn free_port() -> std::io::Result<u16> {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(|| Mutex::new(HashSet::new()));
    let mut given = given.lock().await;
    for _ in 0..100 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        if given.insert(port) {
            return Ok(port);
        }
    }
    Err(std::io::Error::other(
        "no free loopback port after 100 tries",
    ))
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn is_listening(port: u16) -> bool {
    TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(200),
    )
    .is_ok()
}
