//! Layer compression: block-parallel gzip and multithreaded zstd.
