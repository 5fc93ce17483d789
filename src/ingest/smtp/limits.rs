//! Connection limits of one SMTP listener: `smtp.max_connections` in total and
//! `smtp.max_connections_per_ip` per client address, so one busy or hostile host cannot take
//! every session slot. The limits are read from the live config at each accept, so a reload
//! applies to the next connection.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct ConnectionLimits {
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Total,
    PerIp,
}

/// A taken connection slot; dropping it frees the slot.
pub struct Slot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl ConnectionLimits {
    /// Takes a slot for a connection from `ip`, unless a limit is reached.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, max_total: usize, max_per_ip: usize) -> Result<Slot, Refusal> {
        let ip = canonical(ip);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.total >= max_total {
            return Err(Refusal::Total);
        }
        let mine = counts.per_ip.entry(ip).or_insert(0);
        if *mine >= max_per_ip {
            return Err(Refusal::PerIp);
        }
        *mine += 1;
        counts.total += 1;
        Ok(Slot { limits: self.clone(), ip })
    }

    /// Connections currently holding a slot.
    #[cfg(test)]
    pub fn active(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.limits.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

/// An IPv4 client on a dual-stack socket shows up as `::ffff:a.b.c.d`; count it as `a.b.c.d`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_and_total_limits_and_release() {
        let limits = Arc::new(ConnectionLimits::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = limits.admit(a, 3, 2).unwrap();
        let _a2 = limits.admit(a, 3, 2).unwrap();
        assert_eq!(limits.admit(a, 3, 2).err(), Some(Refusal::PerIp));
        let _b1 = limits.admit(b, 3, 2).unwrap();
        assert_eq!(limits.admit(b, 3, 2).err(), Some(Refusal::Total));
        drop(a1);
        assert_eq!(limits.active(), 2);
        let _a3 = limits.admit(a, 3, 2).unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(limits.admit(mapped, 10, 2).err(), Some(Refusal::PerIp), "v4-mapped counts as v4");
    }
}
