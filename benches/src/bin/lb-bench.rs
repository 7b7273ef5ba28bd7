//! `lb-bench [--runs N] [--single-mib N] [--multi-mib N] [--buffer-kib N] [--no-splice]`: times
//! the service load balancer (`berth_runner::lb`) against a direct connection to the same echo
//! target, side by side in one run, and prints a markdown table of the medians.
//!
//! ```text
//! cargo run --release -p berth-benches --bin lb-bench -- --runs 5
//! ```
//!
//! What runs: an echo target (it writes back what it reads, then closes when the client has),
//! the load balancer with that one target registered, and the clients, each on a tokio runtime
//! of its own with two worker threads, in this one process (as the runner hosts its load
//! balancers in its own runtime, apart from the tasks). Every run measures each figure first
//! one way then the other (the order alternating from run to run, so that drift in the
//! machine's load hits both alike):
//! - **bulk, 1 connection**: the client sends `--single-mib` MiB (default 256) in 64 KiB
//!   writes and reads the echo concurrently; MB/s is payload bytes one way (10^6 bytes) over
//!   the time from connect to the last echoed byte. Through the load balancer every byte
//!   crosses two more sockets each way;
//! - **bulk, 16 connections**: the same with 16 concurrent connections of `--multi-mib` MiB each
//!   (default 32); MB/s is their total over the time until the last one is done;
//! - **CPU per GB**: user + system CPU time of the whole process (client, target and, on the
//!   load balanced path, the load balancer) during the bulk transfers, per GB of payload: what
//!   the extra hop costs the machine as a whole, its ends included;
//! - **round trip**: one established connection, 64-byte request then 64-byte response, 20,000
//!   times after 1,000 to warm up; p50 and p99;
//! - **connect + round trip + close**: a new connection for each 64-byte round trip, 2,000
//!   times; p50 and p99. Through the load balancer this includes its connect to the target;
//! - **own CPU**: user + system CPU time of the echo target's threads, and of the load
//!   balancer's, per GB of bulk payload and per connection of the previous figure. The
//!   target's is the yardstick: a server that does the least a server can (accept, echo,
//!   close) next to the load balancer, which handles two sockets per client connection.
//!
//! `--buffer-kib` sets the load balancer's [`berth_runner::lb::Builder::buffer_size`] and
//! `--no-splice` relays through user-space buffers instead of `splice(2)`, to compare the two.
//!
//! The machine's load average is printed with the table: on two CPUs, other work moves these
//! figures far more than the code does, so compare columns of one run, not runs.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use berth_runner::lb::{DEFAULT_BUFFER_SIZE, LoadBalancer};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

const USAGE: &str = "usage: lb-bench [--runs N] [--single-mib N] [--multi-mib N] \
                     [--buffer-kib N] [--no-splice]";
const MIB: usize = 1024 * 1024;
const CHUNK: usize = 64 * 1024;
const MESSAGE: usize = 64;
const ROUND_TRIPS: usize = 20_000;
const WARMUP: usize = 1_000;
const CONNECTS: usize = 2_000;
const CONNECTIONS: usize = 16;
/// The name of the load balancer runtime's threads, whose CPU time is its own.
const LB_THREADS: &str = "lb";
/// The name of the echo target's threads.
const TARGET_THREADS: &str = "target";

struct Options {
    runs: usize,
    single: usize,
    multi: usize,
    buffer: usize,
    splice: bool,
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        runs: 5,
        single: 256 * MIB,
        multi: 32 * MIB,
        buffer: DEFAULT_BUFFER_SIZE,
        splice: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--no-splice" {
            options.splice = false;
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let n: usize = value
            .parse()
            .map_err(|_| format!("{flag}: not a number: {value:?}"))?;
        if n == 0 {
            return Err(format!("{flag} must be at least 1"));
        }
        match flag.as_str() {
            "--runs" => options.runs = n,
            "--single-mib" => options.single = n * MIB,
            "--multi-mib" => options.multi = n * MIB,
            "--buffer-kib" => options.buffer = n * 1024,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(options)
}

fn runtime(name: &str) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Starts the echo target on `rt`: each connection's bytes are written back as they come, and
/// its sending side is closed when the client's is.
fn start_echo(rt: &Runtime) -> SocketAddr {
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
        let addr = listener.local_addr().expect("echo address");
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let (r, mut w) = stream.into_split();
                    let mut r = BufReader::with_capacity(CHUNK, r);
                    if tokio::io::copy_buf(&mut r, &mut w).await.is_ok() {
                        let _ = w.shutdown().await;
                    }
                });
            }
        });
        addr
    })
}

async fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("TCP_NODELAY");
    stream
}

/// `connections` concurrent connections each send `bytes` and read them back; returns the
/// time until the last one is done.
async fn bulk(addr: SocketAddr, connections: usize, bytes: usize) -> Duration {
    let start = Instant::now();
    let mut clients = JoinSet::new();
    for _ in 0..connections {
        clients.spawn(async move {
            let (mut r, mut w) = connect(addr).await.into_split();
            let writer = tokio::spawn(async move {
                let chunk = vec![0xa5u8; CHUNK];
                let mut left = bytes;
                while left > 0 {
                    let n = left.min(CHUNK);
                    w.write_all(&chunk[..n]).await.expect("send");
                    left -= n;
                }
                w.shutdown().await.expect("shutdown");
            });
            let mut buf = vec![0u8; CHUNK];
            let mut received = 0;
            loop {
                let n = r.read(&mut buf).await.expect("receive");
                if n == 0 {
                    break;
                }
                received += n;
            }
            writer.await.expect("writer");
            assert_eq!(received, bytes, "echo came back short");
        });
    }
    while let Some(done) = clients.join_next().await {
        done.expect("bulk client");
    }
    start.elapsed()
}

/// Round trips of `MESSAGE` bytes on one connection, after `WARMUP` unmeasured ones.
async fn round_trips(addr: SocketAddr) -> Vec<Duration> {
    let mut stream = connect(addr).await;
    let request = [0x5au8; MESSAGE];
    let mut response = [0u8; MESSAGE];
    let mut samples = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..WARMUP + ROUND_TRIPS {
        let t = Instant::now();
        stream.write_all(&request).await.expect("send");
        stream.read_exact(&mut response).await.expect("receive");
        if i >= WARMUP {
            samples.push(t.elapsed());
        }
    }
    samples
}

/// A new connection for each round trip of `MESSAGE` bytes, closed after it.
async fn connects(addr: SocketAddr) -> Vec<Duration> {
    let request = [0x5au8; MESSAGE];
    let mut response = [0u8; MESSAGE];
    let mut samples = Vec::with_capacity(CONNECTS);
    for _ in 0..CONNECTS {
        let t = Instant::now();
        let mut stream = connect(addr).await;
        stream.write_all(&request).await.expect("send");
        stream.read_exact(&mut response).await.expect("receive");
        drop(stream);
        samples.push(t.elapsed());
    }
    samples
}

/// User + system CPU time of this process so far, from `/proc/self/stat` (in USER_HZ ticks,
/// 100 per second on Linux).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line; 12 and 13 after the name and state.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// User + system CPU time of this process's threads named `name`, from
/// `/proc/self/task/*/stat` (in USER_HZ ticks, 100 per second on Linux).
fn thread_cpu_time(name: &str) -> Duration {
    let mut ticks = 0;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if head.split_once('(').map(|(_, comm)| comm) != Some(name) {
            continue;
        }
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let tick = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        ticks += tick(11) + tick(12);
    }
    Duration::from_millis(ticks * 10)
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    let i = ((samples.len() - 1) as f64 * p / 100.0).round() as usize;
    samples[i]
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// One path's samples of each figure, one per run.
#[derive(Default)]
struct Figures {
    single_mbps: Vec<f64>,
    multi_mbps: Vec<f64>,
    cpu_ms_per_gb: Vec<f64>,
    lb_cpu_ms_per_gb: Vec<f64>,
    lb_cpu_us_per_connection: Vec<f64>,
    target_cpu_ms_per_gb: Vec<f64>,
    target_cpu_us_per_connection: Vec<f64>,
    rtt_p50: Vec<f64>,
    rtt_p99: Vec<f64>,
    connect_p50: Vec<f64>,
    connect_p99: Vec<f64>,
}

fn measure(client: &Runtime, addr: SocketAddr, options: &Options, figures: &mut Figures) {
    let mb = |bytes: usize| bytes as f64 / 1e6;
    let cpu_before = cpu_time();
    let lb_before = thread_cpu_time(LB_THREADS);
    let target_before = thread_cpu_time(TARGET_THREADS);
    let single = client.block_on(bulk(addr, 1, options.single));
    let multi = client.block_on(bulk(addr, CONNECTIONS, options.multi));
    let cpu = (cpu_time() - cpu_before).as_secs_f64();
    let lb_cpu = (thread_cpu_time(LB_THREADS) - lb_before).as_secs_f64();
    let target_cpu = (thread_cpu_time(TARGET_THREADS) - target_before).as_secs_f64();
    let payload = options.single + CONNECTIONS * options.multi;
    let gb = payload as f64 / 1e9;
    figures.lb_cpu_ms_per_gb.push(lb_cpu * 1e3 / gb);
    figures.target_cpu_ms_per_gb.push(target_cpu * 1e3 / gb);
    figures
        .single_mbps
        .push(mb(options.single) / single.as_secs_f64());
    figures
        .multi_mbps
        .push(mb(CONNECTIONS * options.multi) / multi.as_secs_f64());
    figures
        .cpu_ms_per_gb
        .push(cpu * 1e3 / (payload as f64 / 1e9));

    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mut rtt = client.block_on(round_trips(addr));
    figures.rtt_p50.push(us(percentile(&mut rtt, 50.0)));
    figures.rtt_p99.push(us(percentile(&mut rtt, 99.0)));
    let lb_before = thread_cpu_time(LB_THREADS);
    let target_before = thread_cpu_time(TARGET_THREADS);
    let mut setup = client.block_on(connects(addr));
    let lb_cpu = (thread_cpu_time(LB_THREADS) - lb_before).as_secs_f64();
    let target_cpu = (thread_cpu_time(TARGET_THREADS) - target_before).as_secs_f64();
    figures
        .lb_cpu_us_per_connection
        .push(lb_cpu * 1e6 / CONNECTS as f64);
    figures
        .target_cpu_us_per_connection
        .push(target_cpu * 1e6 / CONNECTS as f64);
    figures.connect_p50.push(us(percentile(&mut setup, 50.0)));
    figures.connect_p99.push(us(percentile(&mut setup, 99.0)));
}

/// How the last column of a row compares the two paths.
enum Compare {
    /// Through the load balancer divided by direct.
    Ratio,
    /// Through the load balancer minus direct, in microseconds.
    Added,
    /// A figure of the load balancer alone.
    LbOnly,
}

/// Prints one table row with the medians of the two paths' samples.
fn row(label: &str, direct: &mut [f64], balanced: &mut [f64], compare: Compare) {
    let b = median(balanced);
    match compare {
        Compare::LbOnly => println!("| {label} | | {b:.1} | |"),
        Compare::Ratio => {
            let d = median(direct);
            println!("| {label} | {d:.1} | {b:.1} | {:.2}x |", b / d);
        }
        Compare::Added => {
            let d = median(direct);
            println!("| {label} | {d:.1} | {b:.1} | {:+.1} us |", b - d);
        }
    }
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("lb-bench: {e}");
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let target_rt = runtime(TARGET_THREADS);
    let lb_rt = runtime(LB_THREADS);
    let client_rt = runtime("client");

    let target = start_echo(&target_rt);
    let lb = lb_rt
        .block_on(
            LoadBalancer::builder()
                .buffer_size(options.buffer)
                .splice(options.splice)
                .bind("127.0.0.1:0".parse().expect("address")),
        )
        .expect("bind the load balancer");
    lb.register("echo", target).expect("register the target");

    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut direct = Figures::default();
    let mut balanced = Figures::default();
    for run in 0..options.runs {
        let started = Instant::now();
        if run % 2 == 0 {
            measure(&client_rt, target, &options, &mut direct);
            measure(&client_rt, lb.local_addr(), &options, &mut balanced);
        } else {
            measure(&client_rt, lb.local_addr(), &options, &mut balanced);
            measure(&client_rt, target, &options, &mut direct);
        }
        eprintln!(
            "run {}/{}: {:.1} s; 1 conn {:.0} vs {:.0} MB/s, rtt p50 {:.1} vs {:.1} us",
            run + 1,
            options.runs,
            started.elapsed().as_secs_f64(),
            direct.single_mbps[run],
            balanced.single_mbps[run],
            direct.rtt_p50[run],
            balanced.rtt_p50[run],
        );
    }
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let stats = lb.stats();
    assert_eq!(stats.rejected + stats.connect_failures, 0, "{stats:?}");

    println!(
        "Load balancer vs direct connection to the same echo target, median of {} runs \
         ({} MiB over 1 connection, {} x {} MiB over {} connections, {}-byte round trips, \
         {} KiB in flight per direction, {}). Load average before: {}; after: {}.",
        options.runs,
        options.single / MIB,
        CONNECTIONS,
        options.multi / MIB,
        CONNECTIONS,
        MESSAGE,
        options.buffer / 1024,
        if options.splice {
            "splice"
        } else {
            "copied through buffers"
        },
        load_before
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        load_after
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    );
    println!();
    println!("| figure | direct | through lb | lb vs direct |");
    println!("|---|---|---|---|");
    let (d, b) = (&mut direct, &mut balanced);
    use Compare::{Added, LbOnly, Ratio};
    row(
        "bulk, 1 connection (MB/s)",
        &mut d.single_mbps,
        &mut b.single_mbps,
        Ratio,
    );
    row(
        "bulk, 16 connections (MB/s)",
        &mut d.multi_mbps,
        &mut b.multi_mbps,
        Ratio,
    );
    row(
        "CPU per GB of bulk payload, whole process (ms)",
        &mut d.cpu_ms_per_gb,
        &mut b.cpu_ms_per_gb,
        Ratio,
    );
    row("round trip p50 (us)", &mut d.rtt_p50, &mut b.rtt_p50, Added);
    row("round trip p99 (us)", &mut d.rtt_p99, &mut b.rtt_p99, Added);
    row(
        "connect + round trip + close p50 (us)",
        &mut d.connect_p50,
        &mut b.connect_p50,
        Added,
    );
    row(
        "connect + round trip + close p99 (us)",
        &mut d.connect_p99,
        &mut b.connect_p99,
        Added,
    );
    row(
        "echo target's own CPU per GB (ms)",
        &mut d.target_cpu_ms_per_gb,
        &mut b.target_cpu_ms_per_gb,
        Ratio,
    );
    row(
        "echo target's own CPU per connection (us)",
        &mut d.target_cpu_us_per_connection,
        &mut b.target_cpu_us_per_connection,
        Ratio,
    );
    row(
        "load balancer's own CPU per GB relayed (ms)",
        &mut d.lb_cpu_ms_per_gb,
        &mut b.lb_cpu_ms_per_gb,
        LbOnly,
    );
    row(
        "load balancer's own CPU per connection (us)",
        &mut d.lb_cpu_us_per_connection,
        &mut b.lb_cpu_us_per_connection,
        LbOnly,
    );
    drop(lb);
    ExitCode::SUCCESS
}
