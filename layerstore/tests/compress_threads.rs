//! The gzip encoder leaks no thread: its workers are gone once it is finished, dropped
//! unfinished, or failed. Alone in its own test binary so that no other test's threads are
//! counted.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use berth_layerstore::compress::GzipBuilder;
use berth_layerstore::compress::gzip::MIN_BLOCK_SIZE;

fn threads_of_this_process() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .count()
}

/// The thread count once it settles on `want`, or the last count seen after a few seconds.
/// A joined thread can stay listed in `/proc/self/task` for a moment: `pthread_join` returns
/// when the kernel clears the thread's tid, which comes before the task is reaped. A leaked
/// worker never leaves, so waiting for the count does not hide one.
fn threads_settling_on(want: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = threads_of_this_process();
        if now == want || Instant::now() >= deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

struct Broken;

impl Write for Broken {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::other("broken pipe"))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn no_worker_outlives_its_encoder() {
    let data: Vec<u8> = (0..40 * MIN_BLOCK_SIZE)
        .map(|i| (i * 31 % 253) as u8)
        .collect();
    let before = threads_of_this_process();
    let build = || GzipBuilder::new().threads(4).block_size(MIN_BLOCK_SIZE);

    // Finished.
    let mut enc = build().build(Vec::new()).unwrap();
    assert_eq!(threads_settling_on(before + 4), before + 4);
    enc.write_all(&data).unwrap();
    enc.finish().unwrap();
    assert_eq!(threads_settling_on(before), before, "after finish");

    // Dropped with blocks in flight.
    let mut enc = build().build(Vec::new()).unwrap();
    enc.write_all(&data).unwrap();
    drop(enc);
    assert_eq!(threads_settling_on(before), before, "after drop");

    // Failed on the inner writer, then dropped.
    let mut enc = build().build(Broken).unwrap();
    assert!(enc.write_all(&data).is_err());
    drop(enc);
    assert_eq!(threads_settling_on(before), before, "after an error");
}
