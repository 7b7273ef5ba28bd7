//! `gen-tree DIR SIZE [SEED]`: writes a reproducible tree of about SIZE bytes (e.g. `1G`) under
//! DIR, which must be empty or missing. See [`berth_benches::generate`] for what it holds.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dir, size, seed) = match args.as_slice() {
        [dir, size] => (dir, size, "1"),
        [dir, size, seed] => (dir, size, seed.as_str()),
        _ => {
            eprintln!("usage: gen-tree DIR SIZE [SEED]   (SIZE like 1G, 512M; SEED default 1)");
            return ExitCode::from(2);
        }
    };
    let Some(size) = berth_benches::parse_size(size) else {
        eprintln!("gen-tree: bad size {size:?}");
        return ExitCode::from(2);
    };
    let Ok(seed) = seed.parse::<u64>() else {
        eprintln!("gen-tree: bad seed {seed:?}");
        return ExitCode::from(2);
    };
    let dir = PathBuf::from(dir);
    let started = Instant::now();
    match berth_benches::generate(&dir, size, seed) {
        Ok(stats) => {
            println!(
                "{}: {} files, {} dirs, {} symlinks, {} bytes in {:.1}s",
                dir.display(),
                stats.files,
                stats.dirs,
                stats.symlinks,
                stats.bytes,
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gen-tree: {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}
