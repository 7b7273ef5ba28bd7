//! The load balancer over real loopback sockets, with echo servers as targets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use berth_runner::lb::{DrainOutcome, Error, HealthState, LoadBalancer, TargetState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Long enough for anything that should happen "at once" on a loaded machine.
const PROMPT: Duration = Duration::from_secs(3);

/// A target: echoes what it reads until end of stream, then closes.
struct Echo {
    addr: SocketAddr,
    /// Connections accepted.
    accepted: Arc<AtomicUsize>,
    /// Connections open now.
    open: Arc<AtomicUsize>,
}

async fn echo() -> Echo {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let (a, o) = (accepted.clone(), open.clone());
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            a.fetch_add(1, Ordering::SeqCst);
            o.fetch_add(1, Ordering::SeqCst);
            let o = o.clone();
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                    let _ = w.shutdown().await;
                }
                o.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Echo {
        addr,
        accepted,
        open,
    }
}

/// An address where nothing listens: connections to it are refused.
fn dead_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

async fn lb() -> LoadBalancer {
    LoadBalancer::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// A load balancer that relays with `splice(2)` (the default) or copies through buffers.
async fn lb_relaying(splice: bool) -> LoadBalancer {
    LoadBalancer::builder()
        .splice(splice)
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

async fn round_trip(stream: &mut TcpStream, message: &[u8]) {
    stream.write_all(message).await.unwrap();
    let mut back = vec![0; message.len()];
    tokio::time::timeout(PROMPT, stream.read_exact(&mut back))
        .await
        .expect("echo within the deadline")
        .expect("echo");
    assert_eq!(back, message);
}

/// A connection through the load balancer that has completed one round trip, so it is
/// established all the way to its target.
async fn connected(lb: &LoadBalancer) -> TcpStream {
    let mut stream = TcpStream::connect(lb.local_addr()).await.unwrap();
    round_trip(&mut stream, b"ping").await;
    stream
}

/// Asserts that the peer closed or reset the connection, promptly.
async fn assert_closed(stream: &mut TcpStream) {
    let mut buf = [0; 64];
    match tokio::time::timeout(PROMPT, stream.read(&mut buf)).await {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => panic!("read {n} bytes from a connection that should be closed"),
        Ok(Err(e)) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "unexpected error on a closed connection: {e}"
        ),
        Err(_) => panic!("connection still open after {PROMPT:?}"),
    }
}

/// Asserts that a client of `addr` is turned away promptly: the load balancer resets the
/// connection as soon as it has accepted it, which the client sees as a failed connect or as a
/// reset (or end) of the established connection, depending on when the reset arrives.
async fn assert_turned_away(addr: SocketAddr) {
    match TcpStream::connect(addr).await {
        Ok(mut stream) => assert_closed(&mut stream).await,
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < PROMPT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn target<'a>(targets: &'a [TargetState], id: &str) -> &'a TargetState {
    targets
        .iter()
        .find(|t| t.id == id)
        .unwrap_or_else(|| panic!("no target {id} in {targets:?}"))
}

fn all_idle(lb: &LoadBalancer) -> bool {
    lb.targets().iter().all(|t| t.active_connections == 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_connections_rotate_over_three_targets() {
    let lb = lb().await;
    let targets = [echo().await, echo().await, echo().await];
    for (i, t) in targets.iter().enumerate() {
        lb.register(&format!("task-{i}"), t.addr).unwrap();
    }
    for _ in 0..30 {
        let mut stream = connected(&lb).await;
        round_trip(&mut stream, b"hello").await;
        drop(stream);
        // Each connection is over before the next starts: every choice is a three-way tie,
        // which goes round-robin.
        wait_for("the connection to end", || all_idle(&lb)).await;
    }
    for (i, t) in targets.iter().enumerate() {
        assert_eq!(t.accepted.load(Ordering::SeqCst), 10, "target {i}");
    }
    let states = lb.targets();
    assert_eq!(states.len(), 3);
    for s in &states {
        assert_eq!(s.state, HealthState::Healthy);
        assert_eq!((s.total_connections, s.failed_connects), (10, 0));
    }
    assert_eq!(lb.stats().accepted, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_spread_by_least_outstanding() {
    let lb = lb().await;
    let targets = [echo().await, echo().await, echo().await];
    for (i, t) in targets.iter().enumerate() {
        lb.register(&format!("task-{i}"), t.addr).unwrap();
    }
    let mut held = Vec::new();
    for _ in 0..9 {
        held.push(connected(&lb).await);
    }
    for (s, t) in lb.targets().iter().zip(&targets) {
        assert_eq!(s.active_connections, 3, "{s:?}");
        assert_eq!(t.open.load(Ordering::SeqCst), 3);
    }
    // Ties rotate in registration order, so connections 0, 3 and 6 are task-0's. Close them:
    // the next three all go to task-0, the least loaded, where round-robin would spread them.
    for i in [6, 3, 0] {
        drop(held.remove(i));
    }
    wait_for("task-0's connections to end", || {
        lb.targets()[0].active_connections == 0
    })
    .await;
    for _ in 0..3 {
        held.push(connected(&lb).await);
    }
    let active: Vec<_> = lb.targets().iter().map(|t| t.active_connections).collect();
    assert_eq!(active, [3, 3, 3]);
    let accepted: Vec<_> = targets
        .iter()
        .map(|t| t.accepted.load(Ordering::SeqCst))
        .collect();
    assert_eq!(accepted, [6, 3, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_target_gets_no_new_connections_and_keeps_its_open_one() {
    let lb = lb().await;
    let (t0, t1) = (echo().await, echo().await);
    lb.register("task-0", t0.addr).unwrap();
    lb.register("task-1", t1.addr).unwrap();

    let mut old = connected(&lb).await;
    // The first connection goes to the first registered target.
    assert_eq!(target(&lb.targets(), "task-0").active_connections, 1);
    let drain = tokio::spawn(lb.deregister("task-0", Duration::from_secs(30)).unwrap());
    assert!(matches!(
        target(&lb.targets(), "task-0").state,
        HealthState::Draining { remaining } if remaining > Duration::from_secs(25)
    ));

    let mut new = Vec::new();
    for _ in 0..10 {
        new.push(connected(&lb).await);
    }
    assert_eq!(t0.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(t1.accepted.load(Ordering::SeqCst), 10);
    // The old connection still works, and the drain waits for it.
    round_trip(&mut old, b"still here").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!drain.is_finished());

    drop(old);
    let report = tokio::time::timeout(PROMPT, drain)
        .await
        .expect("drain completes once its connection closes")
        .unwrap();
    assert_eq!(report.id, "task-0");
    assert_eq!(report.addr, t0.addr);
    assert_eq!(report.outcome, DrainOutcome::Drained);
    assert_eq!(report.connections_at_start, 1);
    assert!(report.elapsed < Duration::from_secs(30));
    let ids: Vec<_> = lb.targets().into_iter().map(|t| t.id).collect();
    assert_eq!(ids, ["task-1"]);

    // Once deregistered, the id can be registered again, and it is in the rotation: with 10
    // connections open on task-1, the next ones all go to it.
    lb.register("task-0", t0.addr).unwrap();
    let _back = connected(&lb).await;
    assert_eq!(t0.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_completes_as_soon_as_the_last_connection_closes() {
    let lb = lb().await;
    let t = echo().await;
    lb.register("task-0", t.addr).unwrap();
    let a = connected(&lb).await;
    let b = connected(&lb).await;
    let started = Instant::now();
    let drain = tokio::spawn(lb.deregister("task-0", Duration::from_secs(60)).unwrap());
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!drain.is_finished(), "one connection is still open");
    drop(b);
    let report = tokio::time::timeout(PROMPT, drain).await.unwrap().unwrap();
    assert_eq!(report.outcome, DrainOutcome::Drained);
    assert_eq!(report.connections_at_start, 2);
    assert!(report.elapsed >= Duration::from_millis(400));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(lb.targets().is_empty());
    assert_eq!(lb.stats().cut, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_target_drains_at_once() {
    let lb = lb().await;
    let t = echo().await;
    lb.register("task-0", t.addr).unwrap();
    let drain = lb.deregister("task-0", Duration::from_secs(300)).unwrap();
    let report = tokio::time::timeout(PROMPT, drain).await.unwrap();
    assert_eq!(report.outcome, DrainOutcome::Drained);
    assert_eq!(report.connections_at_start, 0);
    assert!(lb.targets().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_cuts_open_connections_when_the_delay_runs_out() {
    let lb = lb().await;
    let t = echo().await;
    lb.register("task-0", t.addr).unwrap();
    let mut a = connected(&lb).await;
    let mut b = connected(&lb).await;
    let delay = Duration::from_millis(300);
    let report = tokio::time::timeout(PROMPT, lb.deregister("task-0", delay).unwrap())
        .await
        .expect("drain ends after its delay");
    assert_eq!(report.outcome, DrainOutcome::DelayExpired { cut: 2 });
    assert_eq!(report.connections_at_start, 2);
    assert!(report.elapsed >= delay, "{:?}", report.elapsed);
    // Both ends of both connections are gone when the drain reports.
    assert_closed(&mut a).await;
    assert_closed(&mut b).await;
    wait_for("the target to see its connections closed", || {
        t.open.load(Ordering::SeqCst) == 0
    })
    .await;
    assert!(lb.targets().is_empty());
    assert_eq!(lb.stats().cut, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregistering_again_shortens_the_delay() {
    let lb = lb().await;
    let t = echo().await;
    lb.register("task-0", t.addr).unwrap();
    let mut open = connected(&lb).await;
    let long = tokio::spawn(lb.deregister("task-0", Duration::from_secs(300)).unwrap());
    let short = lb.deregister("task-0", Duration::from_millis(100)).unwrap();
    let report = tokio::time::timeout(PROMPT, short).await.unwrap();
    assert_eq!(report.outcome, DrainOutcome::DelayExpired { cut: 1 });
    assert_eq!(
        tokio::time::timeout(PROMPT, long).await.unwrap().unwrap(),
        report
    );
    assert_closed(&mut open).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusing_target_is_skipped_and_marked_unhealthy() {
    let lb = lb().await;
    let live = echo().await;
    let dead = dead_addr();
    // Registered first, so the first connection tries it first.
    lb.register("dead", dead).unwrap();
    lb.register("live", live.addr).unwrap();
    for _ in 0..10 {
        let mut stream = connected(&lb).await;
        round_trip(&mut stream, b"through").await;
    }
    assert_eq!(live.accepted.load(Ordering::SeqCst), 10);
    let targets = lb.targets();
    let d = target(&targets, "dead");
    // Tried once, then left out of the rotation.
    assert_eq!((d.failed_connects, d.total_connections), (1, 0));
    assert!(matches!(
        d.state,
        HealthState::Unhealthy { consecutive_failures: 1, retry_in } if retry_in > Duration::ZERO
    ));
    assert_eq!(target(&targets, "live").total_connections, 10);
    assert_eq!(lb.stats().connect_failures, 1);
    assert_eq!(lb.stats().rejected, 0);
    // Registering it again (the scheduler vouching for it) clears the mark.
    lb.register("dead", dead).unwrap();
    assert_eq!(target(&lb.targets(), "dead").state, HealthState::Healthy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_target_closes_the_client_promptly() {
    let lb = lb().await;
    assert_turned_away(lb.local_addr()).await;

    // Targets that all refuse: each is tried once, then the client is closed.
    lb.register("a", dead_addr()).unwrap();
    lb.register("b", dead_addr()).unwrap();
    assert_turned_away(lb.local_addr()).await;
    for t in lb.targets() {
        assert_eq!(t.failed_connects, 1, "{t:?}");
    }
    // Both unhealthy: the next client still gets a try at each (fail-open), then is closed.
    assert_turned_away(lb.local_addr()).await;
    for t in lb.targets() {
        assert_eq!(t.failed_connects, 2, "{t:?}");
    }
    // A draining target is no target either.
    let live = echo().await;
    lb.register("live", live.addr).unwrap();
    let _drain = lb.deregister("live", Duration::from_secs(300)).unwrap();
    lb.deregister("a", Duration::ZERO).unwrap().await;
    lb.deregister("b", Duration::ZERO).unwrap().await;
    assert_turned_away(lb.local_addr()).await;
    assert_eq!(live.accepted.load(Ordering::SeqCst), 0);

    let stats = lb.stats();
    assert_eq!(
        (stats.accepted, stats.rejected, stats.connect_failures),
        (4, 4, 4)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_connections_each_get_their_own_bytes_back_spliced() {
    many_concurrent_connections(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_connections_each_get_their_own_bytes_back_copied() {
    many_concurrent_connections(false).await;
}

async fn many_concurrent_connections(splice: bool) {
    const CLIENTS: usize = 200;
    const BYTES: usize = 64 * 1024;
    let lb = lb_relaying(splice).await;
    let targets = [echo().await, echo().await, echo().await];
    for (i, t) in targets.iter().enumerate() {
        lb.register(&format!("task-{i}"), t.addr).unwrap();
    }
    let addr = lb.local_addr();
    let mut clients = JoinSet::new();
    for c in 0..CLIENTS {
        clients.spawn(async move {
            let payload: Vec<u8> = (0..BYTES).map(|i| (i * 31 + c * 7) as u8).collect();
            let stream = TcpStream::connect(addr).await.unwrap();
            let (mut r, mut w) = stream.into_split();
            let expected = payload.clone();
            let writer = tokio::spawn(async move {
                w.write_all(&payload).await.unwrap();
                w.shutdown().await.unwrap();
            });
            let mut back = Vec::with_capacity(BYTES);
            r.read_to_end(&mut back).await.unwrap();
            writer.await.unwrap();
            assert!(back == expected, "client {c} got other bytes back");
        });
    }
    let all = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(done) = clients.join_next().await {
            done.unwrap();
        }
    });
    all.await.expect("all clients done within a minute");
    wait_for("all connections to end", || all_idle(&lb)).await;
    let states = lb.targets();
    let total: u64 = states.iter().map(|t| t.total_connections).sum();
    assert_eq!(total, CLIENTS as u64);
    for (s, t) in states.iter().zip(&targets) {
        assert!(s.total_connections >= 20, "uneven spread: {states:?}");
        assert_eq!(
            s.total_connections,
            t.accepted.load(Ordering::SeqCst) as u64
        );
    }
    assert_eq!(lb.stats().accepted, CLIENTS as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_is_passed_on_both_ways_spliced() {
    half_close_is_passed_on_both_ways(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_is_passed_on_both_ways_copied() {
    half_close_is_passed_on_both_ways(false).await;
}

async fn half_close_is_passed_on_both_ways(splice: bool) {
    // A target that greets, closes its sending side, then reads the client to its end.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        stream.write_all(b"greetings").await.unwrap();
        stream.shutdown().await.unwrap();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        tx.send(got).await.unwrap();
    });
    let lb = lb_relaying(splice).await;
    lb.register("greeter", addr).unwrap();

    let mut stream = TcpStream::connect(lb.local_addr()).await.unwrap();
    let mut greeting = Vec::new();
    tokio::time::timeout(PROMPT, stream.read_to_end(&mut greeting))
        .await
        .expect("the target's end of stream reaches the client")
        .unwrap();
    assert_eq!(greeting, b"greetings");
    // The client can still send after the target has finished sending.
    stream.write_all(b"after your end").await.unwrap();
    stream.shutdown().await.unwrap();
    let got = tokio::time::timeout(PROMPT, rx.recv())
        .await
        .expect("the client's end of stream reaches the target")
        .unwrap();
    assert_eq!(got, b"after your end");
    wait_for("the connection to end", || all_idle(&lb)).await;

    // And the other way: the client finishes first and still reads the whole echo.
    let t = echo().await;
    lb.register("echo", t.addr).unwrap();
    lb.deregister("greeter", Duration::ZERO).unwrap().await;
    let mut stream = TcpStream::connect(lb.local_addr()).await.unwrap();
    let payload = vec![7u8; 256 * 1024];
    stream.write_all(&payload).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(PROMPT, stream.read_to_end(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.len(), payload.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_errors_name_the_target() {
    let lb = lb().await;
    let t = echo().await;
    let err = lb.deregister("task-9", Duration::ZERO).unwrap_err();
    assert!(matches!(&err, Error::UnknownTarget { id } if id == "task-9"));
    assert_eq!(
        err.to_string(),
        "no target \"task-9\" is registered with this load balancer"
    );

    lb.register("task-0", t.addr).unwrap();
    lb.register("task-0", t.addr).unwrap();
    assert_eq!(lb.targets().len(), 1, "registering again is a no-op");
    let other = dead_addr();
    let err = lb.register("task-0", other).unwrap_err();
    assert!(matches!(
        err,
        Error::AddressConflict { registered, requested, .. }
            if registered == t.addr && requested == other
    ));
    assert!(err.to_string().contains("task-0"));

    let _open = connected(&lb).await;
    let _drain = lb.deregister("task-0", Duration::from_secs(300)).unwrap();
    let err = lb.register("task-0", t.addr).unwrap_err();
    assert!(matches!(&err, Error::Draining { id } if id == "task-0"));

    let taken = lb.local_addr();
    let err = LoadBalancer::bind(taken).await.unwrap_err();
    assert!(matches!(err, Error::Bind { addr, .. } if addr == taken));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_the_listener_cuts_connections_and_ends_drains() {
    let lb = lb().await;
    let (t0, t1) = (echo().await, echo().await);
    lb.register("task-0", t0.addr).unwrap();
    let mut draining = connected(&lb).await;
    let drain = tokio::spawn(lb.deregister("task-0", Duration::from_secs(300)).unwrap());
    lb.register("task-1", t1.addr).unwrap();
    let mut serving = connected(&lb).await;
    assert_eq!(t1.accepted.load(Ordering::SeqCst), 1);

    let addr = lb.local_addr();
    tokio::time::timeout(PROMPT, lb.shutdown())
        .await
        .expect("shutdown completes");
    assert_closed(&mut draining).await;
    assert_closed(&mut serving).await;
    let report = tokio::time::timeout(PROMPT, drain).await.unwrap().unwrap();
    assert_eq!(report.outcome, DrainOutcome::Shutdown { cut: 1 });
    assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
    assert_eq!(lb.stats().cut, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_reset_is_passed_on_to_the_client_spliced() {
    target_reset_is_passed_on_to_the_client(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_reset_is_passed_on_to_the_client_copied() {
    target_reset_is_passed_on_to_the_client(false).await;
}

async fn target_reset_is_passed_on_to_the_client(splice: bool) {
    // A target that reads one byte, then aborts the connection.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut byte = [0; 1];
        stream.read_exact(&mut byte).await.unwrap();
        stream.set_zero_linger().unwrap();
    });
    let lb = lb_relaying(splice).await;
    lb.register("aborting", addr).unwrap();
    let mut stream = TcpStream::connect(lb.local_addr()).await.unwrap();
    stream.write_all(b"x").await.unwrap();
    let mut buf = [0; 16];
    let read = tokio::time::timeout(PROMPT, stream.read(&mut buf))
        .await
        .expect("the abort reaches the client");
    // A reset, not an end of stream that could pass for a complete reply.
    assert_eq!(
        read.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset)
    );
    wait_for("the connection to end", || all_idle(&lb)).await;
}
