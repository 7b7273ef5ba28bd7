//! # berth-benches
//!
//! Benchmarks for berth, kept out of the unit tests: criterion micro-benches of the layer
//! pipeline under `benches/`, and side-by-side scripts that time berth against peer tools in the
//! same run. Figures and the commands that produced them live in `RESULTS.md`.
//!
//! This library holds what the benches and the `gen-tree` binary share: [`generate`], a
//! deterministic generator of directory trees that look like a container root filesystem to a
//! compressor.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use filetime::FileTime;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

/// Every file and directory of a generated tree gets this mtime (2021-01-01T00:00:00Z), so that
/// the tar stream of the tree is reproducible too.
pub const MTIME: i64 = 1_609_459_200;

/// What a generated tree holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
}

/// Shares of the byte budget, in percent: many small source-like files, large text files,
/// binary-like files (code and tables), and incompressible data (already-compressed media).
const SMALL_PCT: u64 = 35;
const TEXT_PCT: u64 = 25;
const BINARY_PCT: u64 = 25;
// The rest (15%) is incompressible.

/// Files per generated directory.
const FILES_PER_DIR: u64 = 48;

/// Writes a tree of about `size` bytes of file data under `dir` (created if missing; must be
/// empty). The same `size` and `seed` give the same names, contents, modes and mtimes, with the
/// PRNG fixed as `rand` 0.8's `StdRng` (ChaCha12) seeded from `seed`.
///
/// Layout: `src/` holds many small text and binary files (64 B - 32 KiB), `share/doc/` large
/// text files (1 - 8 MiB), `lib/` binary-like files (64 KiB - 4 MiB) and `media/` random bytes
/// (256 KiB - 16 MiB), plus a few symlinks in `bin/`.
pub fn generate(dir: &Path, size: u64, seed: u64) -> io::Result<TreeStats> {
    fs::create_dir_all(dir)?;
    if fs::read_dir(dir)?.next().is_some() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} is not empty", dir.display()),
        ));
    }
    let mut g = Generator {
        rng: StdRng::seed_from_u64(seed),
        vocab: Vec::new(),
        opcodes: Vec::new(),
        stats: TreeStats::default(),
        dirs: Vec::new(),
    };
    g.vocab = (0..4096).map(|_| g.word()).collect();
    g.opcodes = (0..64)
        .map(|_| {
            let len = g.rng.gen_range(1..=6);
            (0..len).map(|_| g.rng.r#gen()).collect()
        })
        .collect();

    let small = size * SMALL_PCT / 100;
    let text = size * TEXT_PCT / 100;
    let binary = size * BINARY_PCT / 100;
    let random = size - small - text - binary;
    g.section(dir, "src", small, 64, 32 << 10, Kind::Small)?;
    g.section(dir, "share/doc", text, 1 << 20, 8 << 20, Kind::Text)?;
    g.section(dir, "lib", binary, 64 << 10, 4 << 20, Kind::Binary)?;
    g.section(dir, "media", random, 256 << 10, 16 << 20, Kind::Random)?;

    let bin = dir.join("bin");
    g.mkdir(&bin)?;
    for i in 0..16 {
        let link = bin.join(format!("tool{i:02}"));
        std::os::unix::fs::symlink(format!("../lib/d0000/f{:04}.so", i % 4), &link)?;
        filetime::set_symlink_file_times(
            &link,
            FileTime::from_unix_time(MTIME, 0),
            FileTime::from_unix_time(MTIME, 0),
        )?;
        g.stats.symlinks += 1;
    }

    // Directory mtimes last, deepest first: creating entries changes a directory's mtime.
    g.dirs.push(dir.to_owned());
    g.dirs
        .sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    let t = FileTime::from_unix_time(MTIME, 0);
    for d in &g.dirs {
        filetime::set_file_times(d, t, t)?;
    }
    Ok(g.stats)
}

/// Parses a size such as `1G`, `512M`, `64k` or `1000000` (binary multiples).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 1u64 << 10),
        (i, 'm' | 'M') => (&s[..i], 1 << 20),
        (i, 'g' | 'G') => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Small,
    Text,
    Binary,
    Random,
}

struct Generator {
    rng: StdRng,
    vocab: Vec<String>,
    opcodes: Vec<Vec<u8>>,
    stats: TreeStats,
    dirs: Vec<PathBuf>,
}

impl Generator {
    fn word(&mut self) -> String {
        const LETTERS: &[u8] = b"etaoinshrdlcumwfgypbvkjxqz_";
        let len = self.rng.gen_range(2..=10);
        (0..len)
            .map(|_| {
                // Skewed towards frequent letters, as in real identifiers and prose.
                let u: f64 = self.rng.r#gen();
                LETTERS[(u * u * LETTERS.len() as f64) as usize] as char
            })
            .collect()
    }

    /// Creates `path` and any missing parent, recording each directory created.
    fn mkdir(&mut self, path: &Path) -> io::Result<()> {
        if path.is_dir() {
            return Ok(());
        }
        if let Some(parent) = path.parent() {
            self.mkdir(parent)?;
        }
        fs::create_dir(path)?;
        self.stats.dirs += 1;
        self.dirs.push(path.to_owned());
        Ok(())
    }

    /// Fills `root/name` with files of `min..=max` bytes (skewed towards small) until `budget`
    /// bytes are written, `FILES_PER_DIR` to a directory.
    fn section(
        &mut self,
        root: &Path,
        name: &str,
        budget: u64,
        min: u64,
        max: u64,
        kind: Kind,
    ) -> io::Result<()> {
        let base = root.join(name);
        let mut written = 0u64;
        let mut n = 0u64;
        let mut dir = base.clone();
        while written < budget {
            if n % FILES_PER_DIR == 0 {
                let d = n / FILES_PER_DIR;
                dir = if matches!(kind, Kind::Small) {
                    base.join(format!("p{:03}", d / 32))
                        .join(format!("m{:03}", d % 32))
                } else {
                    base.join(format!("d{d:04}"))
                };
                self.mkdir(&dir)?;
            }
            let u: f64 = self.rng.r#gen();
            let len = (min + ((max - min) as f64 * u * u) as u64).min(budget - written);
            let ext = match kind {
                Kind::Small if n % 3 == 0 => "o",
                Kind::Small => "c",
                Kind::Text => "txt",
                Kind::Binary => "so",
                Kind::Random => "bin",
            };
            let path = dir.join(format!("f{:04}.{ext}", n % FILES_PER_DIR));
            let mut out = BufWriter::with_capacity(256 << 10, File::create(&path)?);
            match kind {
                Kind::Small if n % 3 == 0 => self.binary(&mut out, len)?,
                Kind::Small | Kind::Text => self.text(&mut out, len)?,
                Kind::Binary => self.binary(&mut out, len)?,
                Kind::Random => self.random(&mut out, len)?,
            }
            out.into_inner().map_err(|e| e.into_error())?;
            let t = FileTime::from_unix_time(MTIME, 0);
            filetime::set_file_times(&path, t, t)?;
            written += len;
            n += 1;
            self.stats.files += 1;
            self.stats.bytes += len;
        }
        Ok(())
    }

    /// Lines of skewed-frequency words with code-like indentation and punctuation; one line
    /// in four repeats one of the last 16, as code and logs do.
    fn text(&mut self, out: &mut impl Write, len: u64) -> io::Result<()> {
        let mut recent: Vec<Vec<u8>> = Vec::with_capacity(16);
        let mut left = len;
        while left > 0 {
            let line = if recent.len() == 16 && self.rng.gen_ratio(1, 4) {
                recent[self.rng.gen_range(0..16)].clone()
            } else {
                let mut buf = Vec::with_capacity(128);
                let indent = self.rng.gen_range(0..4) * 4;
                buf.resize(indent, b' ');
                for w in 0..self.rng.gen_range(3..14) {
                    if w > 0 {
                        buf.push(b' ');
                    }
                    let u: f64 = self.rng.r#gen();
                    let i = (u * u * u * u * self.vocab.len() as f64) as usize;
                    buf.extend_from_slice(self.vocab[i].as_bytes());
                    if self.rng.gen_ratio(1, 8) {
                        buf.push(b"(),;.:={}"[self.rng.gen_range(0..9)]);
                    }
                }
                buf.push(b'\n');
                if recent.len() == 16 {
                    recent.remove(0);
                }
                recent.push(buf.clone());
                buf
            };
            let n = line.len().min(left as usize);
            out.write_all(&line[..n])?;
            left -= n as u64;
        }
        Ok(())
    }

    /// Code-like byte streams (frequent opcodes with mostly small operands), tables of small
    /// integers, and string tables.
    fn binary(&mut self, out: &mut impl Write, len: u64) -> io::Result<()> {
        let mut buf = Vec::with_capacity(4096);
        let mut left = len;
        while left > 0 {
            buf.clear();
            match self.rng.gen_range(0..8) {
                0 => {
                    for _ in 0..256 {
                        let v: u32 = self.rng.gen_range(0..256);
                        buf.extend_from_slice(&v.to_le_bytes());
                    }
                }
                1 => {
                    for _ in 0..64 {
                        let u: f64 = self.rng.r#gen();
                        let i = (u * u * self.vocab.len() as f64) as usize;
                        buf.extend_from_slice(self.vocab[i].as_bytes());
                        buf.push(0);
                    }
                }
                _ => {
                    for _ in 0..512 {
                        let u: f64 = self.rng.r#gen();
                        let op = (u * u * self.opcodes.len() as f64) as usize;
                        buf.extend_from_slice(&self.opcodes[op]);
                        match self.rng.gen_range(0..8) {
                            0 => buf.push(self.rng.r#gen()),
                            1..=3 => buf.push(self.rng.gen_range(0..16)),
                            _ => {}
                        }
                    }
                }
            }
            let n = buf.len().min(left as usize);
            out.write_all(&buf[..n])?;
            left -= n as u64;
        }
        Ok(())
    }

    fn random(&mut self, out: &mut impl Write, len: u64) -> io::Result<()> {
        let mut buf = vec![0u8; 64 << 10];
        let mut left = len;
        while left > 0 {
            let n = buf.len().min(left as usize);
            self.rng.fill_bytes(&mut buf[..n]);
            out.write_all(&buf[..n])?;
            left -= n as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("512m"), Some(512 << 20));
        assert_eq!(parse_size("64K"), Some(64 << 10));
        assert_eq!(parse_size("1000"), Some(1000));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size(""), None);
    }

    #[test]
    fn same_seed_same_tree() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let sa = generate(a.path(), 2 << 20, 7).unwrap();
        let sb = generate(b.path(), 2 << 20, 7).unwrap();
        assert_eq!(sa, sb);
        assert_eq!(sa.bytes, 2 << 20);
        let tar = |p: &Path| {
            berth_layerstore::archive::write_dir(
                p,
                Vec::new(),
                &berth_layerstore::archive::TarOptions::default(),
            )
            .unwrap()
        };
        assert_eq!(tar(a.path()), tar(b.path()));
    }
}
