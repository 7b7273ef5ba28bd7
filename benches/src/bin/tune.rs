//! `tune TAR [ROUNDS] [SET]`: sweeps the compressors' tuning knobs over a tar stream held in memory
//! and prints throughput and ratio for each setting next to `pigz -p 2 -6` and `zstd -3 -T2`
//! on the same bytes. Settings are run alternately, ROUNDS times (default 3), and the median
//! is reported, so that load from other processes hits every setting alike.
//!
//! This is how the defaults of `berth_layerstore::compress` were chosen; the final figures of
//! the whole pipeline come from `compare.sh`.

use std::io::{self, Read, Write};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use berth_layerstore::compress::{GzipBuilder, ZstdBuilder};

/// The tar writer hands the pipeline chunks of this size.
const CHUNK: usize = 1 << 20;
const THREADS: usize = 2;

#[derive(Debug, Clone)]
enum Setting {
    Gzip {
        level: u32,
        block: usize,
        in_flight: usize,
        threads: usize,
    },
    Zstd {
        level: i32,
        job: u32,
    },
    Cli(&'static str, &'static [&'static str]),
}

impl Setting {
    fn label(&self) -> String {
        match self {
            Setting::Gzip {
                level,
                block,
                in_flight,
                threads,
            } => format!(
                "berth gzip -{level} block {}K in-flight {in_flight} threads {threads}",
                block >> 10
            ),
            Setting::Zstd { level, job } => {
                format!("berth zstd -{level} job {}K", job >> 10)
            }
            Setting::Cli(cmd, args) => format!("{cmd} {}", args.join(" ")),
        }
    }

    /// Compresses `data`; returns the output size.
    fn run(&self, data: &[u8]) -> io::Result<u64> {
        match self {
            Setting::Gzip {
                level,
                block,
                in_flight,
                threads,
            } => {
                let mut enc = GzipBuilder::new()
                    .level(*level)
                    .threads(*threads)
                    .block_size(*block)
                    .blocks_in_flight(*in_flight)
                    .build(Counter(0))?;
                for chunk in data.chunks(CHUNK) {
                    enc.write_all(chunk)?;
                }
                Ok(enc.finish()?.0)
            }
            Setting::Zstd { level, job } => {
                let mut enc = ZstdBuilder::new()
                    .level(*level)
                    .threads(THREADS)
                    .job_size(*job)
                    .build(Counter(0))?;
                for chunk in data.chunks(CHUNK) {
                    enc.write_all(chunk)?;
                }
                Ok(enc.finish()?.0)
            }
            Setting::Cli(cmd, args) => {
                let mut child = Command::new(cmd)
                    .args(*args)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()?;
                let mut stdin = child
                    .stdin
                    .take()
                    .ok_or_else(|| io::Error::other("stdin"))?;
                let mut stdout = child
                    .stdout
                    .take()
                    .ok_or_else(|| io::Error::other("stdout"))?;
                let counted = std::thread::scope(|s| {
                    let reader = s.spawn(move || io::copy(&mut stdout, &mut Counter(0)));
                    for chunk in data.chunks(CHUNK) {
                        stdin.write_all(chunk)?;
                    }
                    drop(stdin);
                    reader
                        .join()
                        .map_err(|_| io::Error::other("reader panicked"))?
                })?;
                let status = child.wait()?;
                if !status.success() {
                    return Err(io::Error::other(format!("{cmd} failed: {status}")));
                }
                Ok(counted)
            }
        }
    }
}

/// A writer that only counts.
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// CPU seconds (user + system) used so far by this process and by its waited-for children,
/// from `/proc/self/stat` (fields 14-17, in clock ticks of 1/100 s).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after
        .split_whitespace()
        .skip(11) // state is field 3; utime is field 14
        .take(4)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    ticks as f64 / 100.0
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: tune TAR [ROUNDS] [levels|blocks|slack|threads|gzip|zstd|all]");
        return ExitCode::from(2);
    };
    let rounds: usize = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(3);
    let which = args.get(2).map_or("all", String::as_str);
    let mut data = Vec::new();
    if let Err(e) = std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut data)) {
        eprintln!("tune: {path}: {e}");
        return ExitCode::FAILURE;
    }

    let mut settings = Vec::new();
    let gzip = |level, block, in_flight| Setting::Gzip {
        level,
        block,
        in_flight,
        threads: THREADS,
    };
    match which {
        "levels" => {
            settings.push(Setting::Cli("pigz", &["-p", "2", "-6"]));
            for level in [4, 5, 6, 7] {
                settings.push(gzip(level, 256 << 10, 2 * THREADS));
            }
        }
        "blocks" | "gzip" | "all" => {
            settings.push(Setting::Cli("pigz", &["-p", "2", "-6"]));
            for block in [128 << 10, 256 << 10, 512 << 10, 1 << 20] {
                settings.push(gzip(6, block, 2 * THREADS));
            }
            settings.push(gzip(6, 256 << 10, 4 * THREADS));
        }
        "slack" => {
            settings.push(Setting::Cli("pigz", &["-p", "2", "-6"]));
            for (block, in_flight) in [(1 << 20, 4), (1 << 20, 12), (256 << 10, 16), (256 << 10, 4)]
            {
                settings.push(gzip(6, block, in_flight));
            }
            settings.push(Setting::Cli("zstd", &["-3", "-T2", "-c"]));
            for job in [2 << 20, 8 << 20] {
                settings.push(Setting::Zstd { level: 3, job });
            }
        }
        "threads" => {
            settings.push(Setting::Cli("pigz", &["-p", "1", "-6"]));
            settings.push(Setting::Cli("pigz", &["-p", "2", "-6"]));
            for threads in [1, 2] {
                settings.push(Setting::Gzip {
                    level: 6,
                    block: 1 << 20,
                    in_flight: 2 * threads,
                    threads,
                });
            }
        }
        _ => {}
    }
    if matches!(which, "zstd" | "all") {
        settings.push(Setting::Cli("zstd", &["-3", "-T2", "-c"]));
        for job in [1 << 20, 2 << 20, 4 << 20, 8 << 20] {
            settings.push(Setting::Zstd { level: 3, job });
        }
    }
    if settings.is_empty() {
        eprintln!(
            "tune: unknown set {which:?}: expected levels, blocks, slack, threads, gzip, zstd or all"
        );
        return ExitCode::from(2);
    }

    let mut times = vec![Vec::new(); settings.len()];
    let mut cpu = vec![Vec::new(); settings.len()];
    let mut sizes = vec![0u64; settings.len()];
    for round in 0..rounds {
        for (i, s) in settings.iter().enumerate() {
            let t = Instant::now();
            let c = cpu_seconds();
            match s.run(&data) {
                Ok(n) => sizes[i] = n,
                Err(e) => {
                    eprintln!("tune: {}: {e}", s.label());
                    return ExitCode::FAILURE;
                }
            }
            times[i].push(t.elapsed().as_secs_f64());
            cpu[i].push(cpu_seconds() - c);
            eprintln!("round {round}: {} {:.2}s", s.label(), times[i][round]);
        }
    }
    println!(
        "{} bytes, {rounds} rounds, medians\n\n| setting | MB/s (wall) | MB per CPU-second | ratio |\n|---|---|---|---|",
        data.len()
    );
    for (i, s) in settings.iter().enumerate() {
        let t = median(&mut times[i]);
        let c = median(&mut cpu[i]);
        println!(
            "| {} | {:.1} | {:.1} | {:.4} |",
            s.label(),
            data.len() as f64 / t / 1e6,
            data.len() as f64 / c / 1e6,
            sizes[i] as f64 / data.len() as f64
        );
    }
    ExitCode::SUCCESS
}
