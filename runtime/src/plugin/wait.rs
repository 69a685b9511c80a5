//! Blocking WASI waits under the call's deadline.
//!
//! Epoch interruption stops wasm code, not a host function that blocks. In wasmtime-wasi's
//! synchronous bindings, `wasi:io/poll.poll` and `pollable.block` wait on a tokio future without a
//! time limit (`std::thread::sleep` in a Rust guest is `subscribe-duration` + `block`, and
//! `subscribe-duration(u64::MAX)` never becomes ready). This module replaces those two functions
//! (and `pollable.ready`) with versions that wait on this thread until the pollables are ready or
//! the call's epoch deadline passes (checked at least every tick), whichever comes first; at the
//! deadline the call traps with [`WaitTimedOut`], reported as a timeout. The wait parks the
//! thread itself (no tokio `block_on`), so it works on any thread, inside a tokio runtime or not.
//!
//! [`off_runtime`] moves the other WASI calls that block on tokio (stream writes, drops) off a
//! thread that drives a tokio runtime, where wasmtime-wasi would panic with "Cannot start a
//! runtime from within a runtime".

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::bindings::sync::io::poll as sync_poll;
use wasmtime_wasi_io::bindings::wasi::io::poll as async_poll;

use super::engine::EPOCH_TICK;
use super::limits::{HostState, WaitTimedOut};

/// What the deadline-bound `wasi:io/poll` sees of the store.
pub(crate) struct DeadlinePoll<'a> {
    table: &'a mut ResourceTable,
    ticks: &'a AtomicU64,
    deadline_tick: u64,
}

struct HasDeadlinePoll;

impl HasData for HasDeadlinePoll {
    type Data<'a> = DeadlinePoll<'a>;
}

/// Replaces `wasi:io/poll` (linked by `wasmtime_wasi::p2::add_to_linker_sync`) with the
/// deadline-bound version.
pub(crate) fn link_deadline_poll(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let res = sync_poll::add_to_linker::<HostState, HasDeadlinePoll>(linker, HostState::poll_view);
    linker.allow_shadowing(false);
    res
}

impl HostState {
    fn poll_view(&mut self) -> DeadlinePoll<'_> {
        let (table, ticks, deadline_tick) = self.poll_parts();
        DeadlinePoll {
            table,
            ticks,
            deadline_tick,
        }
    }
}

impl DeadlinePoll<'_> {
    /// The table, and whether the call's deadline has passed.
    fn parts(&mut self) -> (&mut ResourceTable, impl Fn() -> bool + '_) {
        let (ticks, deadline) = (self.ticks, self.deadline_tick);
        (&mut *self.table, move || {
            ticks.load(Ordering::Relaxed) >= deadline
        })
    }
}

impl sync_poll::Host for DeadlinePoll<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        let (table, passed) = self.parts();
        wait_until(async_poll::Host::poll(table, pollables), &passed).ok_or(WaitTimedOut)?
    }
}

impl sync_poll::HostPollable for DeadlinePoll<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        // `ready` polls once and never waits; the deadline only guards a misbehaving future.
        let (table, passed) = self.parts();
        wait_until(async_poll::HostPollable::ready(table, pollable), &passed).ok_or(WaitTimedOut)?
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        let (table, passed) = self.parts();
        wait_until(async_poll::HostPollable::block(table, pollable), &passed).ok_or(WaitTimedOut)?
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        async_poll::HostPollable::drop(&mut *self.table, pollable)
    }
}

/// Wakes the waiting thread.
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `fut` on this thread until it completes (`Some`) or `deadline_passed` says so (`None`;
/// checked at least every [`EPOCH_TICK`]). The pollables' futures use tokio timers, so a tokio
/// runtime is entered around them: the current one, else wasmtime-wasi's own.
pub(crate) fn wait_until<F: Future>(
    fut: F,
    deadline_passed: &dyn Fn() -> bool,
) -> Option<F::Output> {
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    wasmtime_wasi::runtime::with_ambient_tokio_runtime(|| {
        loop {
            if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                return Some(out);
            }
            if deadline_passed() {
                return None;
            }
            std::thread::park_timeout(EPOCH_TICK);
        }
    })
}

/// Runs `f`, which calls into a plugin, outside the tokio runtime this thread may be driving
/// (`tokio::task::block_in_place`), so that WASI host calls which block on tokio work. Plugin
/// calls of a running pipeline happen on a blocking-pool thread, where this costs one
/// thread-local lookup; it matters for `init`, `validate` and `sluice plugin test`, which run on
/// the thread that drives the runtime.
pub(crate) fn off_runtime<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn by(deadline: Instant) -> impl Fn() -> bool {
        move || Instant::now() >= deadline
    }

    #[test]
    fn a_wait_that_never_ends_stops_at_the_deadline() {
        let started = Instant::now();
        let got = wait_until(
            std::future::pending::<()>(),
            &by(started + Duration::from_millis(30)),
        );
        assert_eq!(got, None);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(30), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
    }

    #[test]
    fn a_tokio_sleep_completes_before_the_deadline() {
        let started = Instant::now();
        let got = wait_until(
            async { tokio::time::sleep(Duration::from_millis(5)).await },
            &by(started + Duration::from_secs(5)),
        );
        assert_eq!(got, Some(()));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn waits_work_on_a_thread_that_drives_a_runtime() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let got = rt.block_on(async {
            off_runtime(|| {
                wait_until(
                    async { tokio::time::sleep(Duration::from_millis(5)).await },
                    &by(Instant::now() + Duration::from_secs(5)),
                )
            })
        });
        assert_eq!(got, Some(()));
    }
}
