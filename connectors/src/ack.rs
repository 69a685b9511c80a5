//! Acknowledgements: how a sink tells the runtime that records are durably written.
//!
//! Every source batch becomes a [`Ticket`]. Each record derived from it carries an [`Ack`]; the
//! ticket completes when every `Ack` of it was acknowledged. An `Ack` that is dropped without
//! [`Ack::ack`] marks its ticket as failed, so a record a sink lost can never be committed past.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc::UnboundedSender;

use crate::record::{Offset, PartitionId, Record};

/// A ticket's final state, sent to the offset tracker.
#[derive(Debug, Clone)]
pub struct Completion {
    pub partition: PartitionId,
    /// Position of the ticket among its partition's tickets (0, 1, 2, ...).
    pub seq: u64,
    /// Offset of the last source record the ticket covers.
    pub last_offset: Offset,
    /// How many source records the ticket covers.
    pub records: u64,
    /// The source reached the partition's end with this ticket (a closed shard).
    pub end_of_partition: bool,
    /// False when some record of the ticket was lost (an `Ack` dropped without acking).
    pub ok: bool,
}

/// Shared by a batch's [`Ticket`] and the [`Ack`]s of its records: the last of them to go (the
/// ticket closed, every ack acked or dropped) sends the completion, from `Drop`. So creating and
/// releasing an ack is one reference count change each, and a ticket needs no lock.
struct TicketInner {
    /// Set by [`Ticket::close`]: a ticket dropped without closing never completes.
    closed: AtomicBool,
    failed: AtomicBool,
    completion: Option<Completion>,
    notify: UnboundedSender<Completion>,
    rejects: Option<UnboundedSender<Rejected>>,
}

/// A record a sink refused as bad (too large, invalid for the target): the runtime applies the
/// pipeline's error policy to it (dead-letter and acknowledge, or stop the pipeline).
#[derive(Debug)]
pub struct Rejected {
    pub record: Record,
    /// Why the sink refused it, naming the sink (e.g. `kinesis sink: record of 1.2 MiB exceeds 1 MiB`).
    pub reason: String,
    /// Acknowledged by the runtime once the error policy has dealt with the record.
    pub ack: Ack,
}

impl Drop for TicketInner {
    fn drop(&mut self) {
        // The last reference: every ack is in and the ticket is gone. The reference count's
        // release/acquire orders the `failed` and `closed` stores of other threads before this.
        if *self.closed.get_mut()
            && let Some(mut c) = self.completion.take()
        {
            c.ok = !*self.failed.get_mut();
            // The tracker is gone only when the pipeline is shutting down.
            let _ = self.notify.send(c);
        }
    }
}

/// The runtime's handle on one source batch in flight.
pub struct Ticket {
    inner: Arc<TicketInner>,
}

impl Ticket {
    /// A ticket that completes (sends `completion`) once it is closed and every `Ack` is acked.
    pub fn new(completion: Completion, notify: UnboundedSender<Completion>) -> Self {
        Self::with_rejects(completion, notify, None)
    }

    /// A ticket whose records a sink may reject through [`Ack::reject`]; rejections go to
    /// `rejects`.
    pub fn with_rejects(
        completion: Completion,
        notify: UnboundedSender<Completion>,
        rejects: Option<UnboundedSender<Rejected>>,
    ) -> Self {
        Self {
            inner: Arc::new(TicketInner {
                closed: AtomicBool::new(false),
                failed: AtomicBool::new(false),
                completion: Some(completion),
                notify,
                rejects,
            }),
        }
    }

    /// An acknowledgement handle for one more record of this batch.
    pub fn ack(&self) -> Ack {
        Ack {
            inner: Some(self.inner.clone()),
        }
    }

    /// Marks the batch as failed: it will never be committed.
    pub fn fail(&self) {
        self.inner.failed.store(true, Ordering::Release);
    }

    /// No more records will be added; the ticket completes once all acks are in.
    pub fn close(self) {
        self.inner.closed.store(true, Ordering::Release);
    }
}

/// Acknowledges one record. Call [`Ack::ack`] once the record is durably written.
pub struct Ack {
    inner: Option<Arc<TicketInner>>,
}

impl Ack {
    /// The record is durably written.
    pub fn ack(mut self) {
        // Dropping the reference is the acknowledgement.
        self.inner.take();
    }

    /// The sink refuses this record as bad: the pipeline's error policy decides (dead-letter it
    /// and go on, or stop). Without an error policy attached the record counts as lost, so its
    /// batch is never committed.
    pub fn reject(self, record: Record, reason: impl Into<String>) {
        let tx = self.inner.as_ref().and_then(|i| i.rejects.clone());
        if let Some(tx) = tx {
            // If the runtime is gone, dropping the returned value drops the ack: a failure.
            let _ = tx.send(Rejected {
                record,
                reason: reason.into(),
                ack: self,
            });
        }
    }
}

impl Ack {
    /// The source partition and position of this record's batch (its ticket), while the record
    /// is unacknowledged.
    pub fn ticket(&self) -> Option<(PartitionId, u64)> {
        let c = self.inner.as_ref()?.completion.as_ref()?;
        Some((c.partition.clone(), c.seq))
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            inner.failed.store(true, Ordering::Release);
        }
    }
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ack")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc::unbounded_channel;

    fn completion() -> Completion {
        Completion {
            partition: "p".into(),
            seq: 0,
            last_offset: Offset::from(9),
            records: 10,
            end_of_partition: false,
            ok: true,
        }
    }

    #[test]
    fn completes_after_close_and_every_ack() {
        let (tx, mut rx) = unbounded_channel();
        let t = Ticket::new(completion(), tx);
        let a = t.ack();
        let b = t.ack();
        t.close();
        a.ack();
        assert!(rx.try_recv().is_err(), "one ack still outstanding");
        b.ack();
        let c = rx.try_recv().expect("completed");
        assert!(c.ok);
        assert_eq!(c.records, 10);
    }

    #[test]
    fn dropped_ack_fails_the_ticket() {
        let (tx, mut rx) = unbounded_channel();
        let t = Ticket::new(completion(), tx);
        let a = t.ack();
        t.close();
        drop(a);
        assert!(!rx.try_recv().expect("completed").ok);
    }

    #[test]
    fn rejected_records_reach_the_policy_and_complete_when_acked() {
        let (tx, mut rx) = unbounded_channel();
        let (rtx, mut rrx) = unbounded_channel();
        let t = Ticket::with_rejects(completion(), tx, Some(rtx));
        let a = t.ack();
        t.close();
        a.reject(
            Record::new("p".into(), Offset::from(3), &b"x"[..]),
            "too big",
        );
        assert!(rx.try_recv().is_err());
        let r = rrx.try_recv().expect("rejected");
        assert_eq!(r.reason, "too big");
        r.ack.ack();
        assert!(rx.try_recv().expect("completed").ok);
    }

    #[test]
    fn a_ticket_dropped_without_close_never_completes() {
        let (tx, mut rx) = unbounded_channel();
        let t = Ticket::new(completion(), tx);
        let a = t.ack();
        drop(t);
        a.ack();
        assert!(
            rx.try_recv().is_err(),
            "an unclosed batch is never committed"
        );
    }

    #[test]
    fn the_ticket_is_readable_from_an_ack_and_acks_on_other_threads_complete_it_once() {
        let (tx, mut rx) = unbounded_channel();
        let t = Ticket::new(completion(), tx);
        let acks: Vec<Ack> = (0..1000).map(|_| t.ack()).collect();
        assert_eq!(acks[0].ticket(), Some(("p".into(), 0)));
        t.close();
        let threads: Vec<_> = acks
            .into_iter()
            .enumerate()
            .fold(vec![Vec::new(), Vec::new()], |mut halves, (i, a)| {
                halves[i % 2].push(a);
                halves
            })
            .into_iter()
            .map(|half| std::thread::spawn(move || half.into_iter().for_each(Ack::ack)))
            .collect();
        for t in threads {
            t.join().expect("acking thread");
        }
        assert!(rx.try_recv().expect("completed").ok);
        assert!(rx.try_recv().is_err(), "exactly once");
    }

    #[test]
    fn empty_ticket_completes_on_close() {
        let (tx, mut rx) = unbounded_channel();
        Ticket::new(completion(), tx).close();
        assert!(rx.try_recv().expect("completed").ok);
    }
}
