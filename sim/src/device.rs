//! A queue-backed smoltcp device: packets in from the link, packets out to the link.

use smoltcp::phy::{Checksum, Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant;
use std::collections::VecDeque;

/// In-memory IP device, like nexd's: `rx` waits for the stack, `tx` waits for the link.
#[derive(Debug, Default)]
pub struct QueueDevice {
    /// Packets delivered by the link, not yet read by smoltcp.
    pub rx: VecDeque<Vec<u8>>,
    /// Packets smoltcp produced, not yet handed to the link.
    pub tx: VecDeque<Vec<u8>>,
    mtu: usize,
}

impl QueueDevice {
    /// An empty device with this IP MTU.
    pub fn new(mtu: usize) -> Self {
        QueueDevice {
            rx: VecDeque::new(),
            tx: VecDeque::new(),
            mtu,
        }
    }
}

/// Hands one queued packet to smoltcp.
pub struct SimRxToken(Vec<u8>);

impl RxToken for SimRxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

/// Appends one packet to the tx queue.
pub struct SimTxToken<'a>(&'a mut VecDeque<Vec<u8>>);

impl TxToken for SimTxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0; len];
        let r = f(&mut buf);
        self.0.push_back(buf);
        r
    }
}

impl Device for QueueDevice {
    type RxToken<'a> = SimRxToken;
    type TxToken<'a> = SimTxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let p = self.rx.pop_front()?;
        Some((SimRxToken(p), SimTxToken(&mut self.tx)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Self::TxToken<'_>> {
        Some(SimTxToken(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        // Links never corrupt packets, so checksums would only cost time (a tenth of a run).
        caps.checksum.ipv4 = Checksum::None;
        caps.checksum.tcp = Checksum::None;
        caps.checksum.udp = Checksum::None;
        caps
    }
}
