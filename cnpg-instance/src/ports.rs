//! Picking ports for servers on loopback.
//!
//! Asking the kernel for port 0 returns a port from the ephemeral range, the same range it
//! hands out as the local port of every outgoing connection: a port picked that way and
//! bound later (PostgreSQL starts after its port was chosen) can meanwhile be taken by any
//! client socket, and the server then cannot start. So we pick below the ephemeral range,
//! at random, and check that the port is free now.

use std::net::TcpListener;

fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(32768)
}

/// A port on 127.0.0.1 that is free now and outside the kernel's ephemeral range (falls
/// back to an ephemeral one if none is found).
pub fn free_port() -> std::io::Result<u16> {
    let low: u16 = 10_000;
    let high = ephemeral_low();
    if high > low + 100 {
        for _ in 0..64 {
            let mut raw = [0u8; 2];
            if getrandom::fill(&mut raw).is_err() {
                break;
            }
            let port = low + u16::from_le_bytes(raw) % (high - low);
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ports_are_free_and_below_the_ephemeral_range() {
        let high = super::ephemeral_low();
        for _ in 0..20 {
            let p = super::free_port().expect("a port");
            assert!(p < high || high <= 10_100, "{p} is ephemeral");
            std::net::TcpListener::bind(("127.0.0.1", p)).expect("free");
        }
    }
}
