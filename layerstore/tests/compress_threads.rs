//! The gzip encoder leaks no thread: its workers are gone once it is finished, dropped
//! unfinished, or failed. Alone in its own test binary so that no other test's threads are
//! counted.

use std::io::{self, Write};

use berth_layerstore::compress::GzipBuilder;
use berth_layerstore::compress::gzip::MIN_BLOCK_SIZE;

fn threads_of_this_process() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .count()
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
    assert_eq!(threads_of_this_process(), before + 4);
    enc.write_all(&data).unwrap();
    enc.finish().unwrap();
    assert_eq!(threads_of_this_process(), before, "after finish");

    // Dropped with blocks in flight.
    let mut enc = build().build(Vec::new()).unwrap();
    enc.write_all(&data).unwrap();
    drop(enc);
    assert_eq!(threads_of_this_process(), before, "after drop");

    // Failed on the inner writer, then dropped.
    let mut enc = build().build(Broken).unwrap();
    assert!(enc.write_all(&data).is_err());
    drop(enc);
    assert_eq!(threads_of_this_process(), before, "after an error");
}
