//! The libzmq that the `zmq` crate compiles signals between its threads through eventfd on
//! Linux (`.cargo/config.toml`; `docs/tuning.md`, "libzmq's inter-thread signals"). Without the
//! build flags it falls back to a Unix socketpair, which measured slower on every hop of the
//! pipeline: this test notices if the flags are lost (a moved config, a `zeromq-src` update).
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// Open file descriptors of this process whose target names `kind` (`eventfd`, `socket`).
#[cfg(target_os = "linux")]
fn fds_named(kind: &str) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().contains(kind))
        .count()
}

#[test]
#[cfg(all(
    target_os = "linux",
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
fn libzmq_signals_between_its_threads_through_eventfd() {
    let before = fds_named("eventfd");
    let ctx = zmq::Context::new();
    let pull = ctx.socket(zmq::PULL).unwrap();
    pull.bind("inproc://libzmq-build").unwrap();
    let push = ctx.socket(zmq::PUSH).unwrap();
    push.connect("inproc://libzmq-build").unwrap();
    push.send("x", 0).unwrap();
    let mut msg = zmq::Message::new();
    pull.recv(&mut msg, 0).unwrap();
    // The context's reaper and I/O thread and each socket have a signaler (a mailbox).
    let eventfds = fds_named("eventfd") - before;
    assert!(
        eventfds >= 3,
        "{eventfds} eventfd signalers: libzmq was built without ZMQ_HAVE_EVENTFD \
         (socketpair signalers instead; see .cargo/config.toml)"
    );
}
