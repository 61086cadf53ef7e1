//! A queue-backed smoltcp device: packets in from WireGuard, packets out to WireGuard.

use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant;
use std::collections::VecDeque;

/// How many received packets one `Interface::poll` may consume. Small batches let the
/// engine top up ingress listen backlogs between batches, so a burst of SYNs is accepted
/// instead of being answered with RST.
pub const RX_BATCH: usize = 16;

/// In-memory IP device. `rx` holds decrypted packets waiting for the stack, `tx` holds
/// packets the stack produced, waiting to be encrypted.
pub struct QueueDevice {
    /// Decrypted packets from peers.
    pub rx: VecDeque<Vec<u8>>,
    /// Packets produced by smoltcp.
    pub tx: VecDeque<Vec<u8>>,
    /// Spent buffers kept for reuse, so steady traffic does not allocate per packet.
    pool: Vec<Vec<u8>>,
    /// Buffers released by receive tokens (a separate list, so rx and tx tokens can coexist).
    spent: Vec<Vec<u8>>,
    mtu: usize,
    rx_budget: usize,
}

impl QueueDevice {
    /// A device with the given IP MTU.
    pub fn new(mtu: usize) -> Self {
        QueueDevice {
            rx: VecDeque::new(),
            tx: VecDeque::new(),
            pool: Vec::new(),
            spent: Vec::new(),
            mtu,
            rx_budget: RX_BATCH,
        }
    }

    /// Queues a decrypted packet for the stack.
    pub fn push_rx(&mut self, packet: &[u8]) {
        let mut buf = self.take_buffer();
        buf.extend_from_slice(packet);
        self.rx.push_back(buf);
    }

    /// Returns an empty buffer, reusing a spent one when possible.
    pub fn take_buffer(&mut self) -> Vec<u8> {
        let mut b = self
            .pool
            .pop()
            .or_else(|| self.spent.pop())
            .unwrap_or_else(|| Vec::with_capacity(self.mtu));
        b.clear();
        b
    }

    /// Gives a spent buffer back for reuse.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        if self.pool.len() < 256 {
            self.pool.push(buf);
        }
    }

    /// Allows the next poll to consume another batch of received packets.
    pub fn reset_rx_budget(&mut self) {
        self.rx_budget = RX_BATCH;
    }

    /// Lets the next poll consume every queued packet (a flow's own set has no backlog to
    /// top up between batches).
    pub fn unlimited_rx_budget(&mut self) {
        self.rx_budget = usize::MAX;
    }
}

/// Receive token: hands one queued packet to smoltcp.
pub struct QueueRxToken<'a> {
    buf: Vec<u8>,
    pool: &'a mut Vec<Vec<u8>>,
}

impl RxToken for QueueRxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let r = f(&self.buf);
        if self.pool.len() < 256 {
            self.pool.push(self.buf);
        }
        r
    }
}

/// Transmit token: appends one packet to the tx queue.
pub struct QueueTxToken<'a> {
    tx: &'a mut VecDeque<Vec<u8>>,
    pool: &'a mut Vec<Vec<u8>>,
}

impl TxToken for QueueTxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = self.pool.pop().unwrap_or_default();
        buf.resize(len, 0);
        let r = f(&mut buf);
        self.tx.push_back(buf);
        r
    }
}

impl Device for QueueDevice {
    type RxToken<'a> = QueueRxToken<'a>;
    type TxToken<'a> = QueueTxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        if self.rx_budget == 0 {
            return None;
        }
        let buf = self.rx.pop_front()?;
        self.rx_budget -= 1;
        Some((
            QueueRxToken {
                buf,
                pool: &mut self.spent,
            },
            QueueTxToken {
                tx: &mut self.tx,
                pool: &mut self.pool,
            },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Self::TxToken<'_>> {
        Some(QueueTxToken {
            tx: &mut self.tx,
            pool: &mut self.pool,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        caps
    }
}
