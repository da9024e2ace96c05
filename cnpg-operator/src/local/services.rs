//! The local Services: one TCP listener per service (`-rw` to the primary, `-ro` to the
//! replicas, `-r` to every instance) that forwards each client connection to a member.
//!
//! The operator sets the members after every decision; a connection whose backend no
//! longer belongs to its service is cut at once, so a client of `-rw` never keeps writing
//! to an instance that lost the primary role (it reconnects and lands on the new one).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};

/// Which instances a service forwards to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// The primary.
    Rw,
    /// The replicas.
    Ro,
    /// Every instance.
    R,
    /// Standbys' streaming replication: the current primary, until a failover begins.
    Replication,
}

/// An instance a service forwards to: its name and PostgreSQL address.
pub type Member = (String, SocketAddr);

/// The members of the three services, shared by their listeners and the operator.
#[derive(Clone, Default)]
pub struct Routes(Arc<Mutex<Members>>);

#[derive(Default)]
struct Members {
    rw: Option<Member>,
    ro: Vec<Member>,
    r: Vec<Member>,
    replication: Option<Member>,
    next: usize,
    /// Open client connections: (service, backend instance, handle to cut it).
    conns: Vec<(Service, String, tokio::task::AbortHandle)>,
}

impl Members {
    fn pick(&mut self, service: Service) -> Option<Member> {
        self.next = self.next.wrapping_add(1);
        match service {
            Service::Rw => self.rw.clone(),
            Service::Replication => self.replication.clone(),
            Service::Ro if !self.ro.is_empty() => Some(self.ro[self.next % self.ro.len()].clone()),
            Service::R if !self.r.is_empty() => Some(self.r[self.next % self.r.len()].clone()),
            _ => None,
        }
    }

    /// Cuts connections whose backend no longer belongs to their service.
    fn cut_stale(&mut self) {
        let rw = self.rw.as_ref().map(|(n, _)| n.clone());
        let ro: Vec<String> = self.ro.iter().map(|(n, _)| n.clone()).collect();
        let r: Vec<String> = self.r.iter().map(|(n, _)| n.clone()).collect();
        let replication = self.replication.as_ref().map(|(n, _)| n.clone());
        self.conns.retain(|(svc, backend, handle)| {
            let keep = !handle.is_finished()
                && match svc {
                    Service::Rw => rw.as_ref() == Some(backend),
                    Service::Ro => ro.contains(backend),
                    Service::R => r.contains(backend),
                    Service::Replication => replication.as_ref() == Some(backend),
                };
            if !keep {
                handle.abort();
            }
            keep
        });
    }
}

impl Routes {
    /// Sets every service's members and cuts the connections that lost their backend.
    pub fn set(
        &self,
        rw: Option<Member>,
        ro: Vec<Member>,
        r: Vec<Member>,
        replication: Option<Member>,
    ) {
        let mut m = self.0.lock().expect("routes lock");
        m.rw = rw;
        m.ro = ro;
        m.r = r;
        m.replication = replication;
        m.cut_stale();
    }

    /// Accepts clients of `service` on `listener` for ever, forwarding each to a member; a
    /// client is refused at once while the service has none (it retries).
    pub async fn serve(self, listener: TcpListener, service: Service) {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                continue;
            };
            let target = self.0.lock().expect("routes lock").pick(service);
            let Some((backend, addr)) = target else {
                drop(client);
                continue;
            };
            // Nagle's algorithm would hold each small protocol message back until the
            // previous one is acknowledged: with delayed ACKs that is up to 40 ms a commit.
            let _ = client.set_nodelay(true);
            let task = tokio::spawn(async move {
                if let Ok(mut server) = TcpStream::connect(addr).await {
                    let _ = server.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
            let mut m = self.0.lock().expect("routes lock");
            m.conns.push((service, backend, task.abort_handle()));
            m.conns.retain(|(_, _, h)| !h.is_finished());
        }
    }
}
