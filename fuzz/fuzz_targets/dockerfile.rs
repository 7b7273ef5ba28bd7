//! Arbitrary bytes through the Dockerfile front end: parser, printers, lint checks, lowering and
//! the graph. Any `Err` is fine; a panic, a hang or running out of memory is a bug.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    berth_builder::fuzz::fuzz_one(data);
});
