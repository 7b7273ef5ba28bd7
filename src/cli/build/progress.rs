//! `--progress`: how `berth build` shows what it does, on stderr.
//!
//! - `plain` prints BuildKit's plain lines: `#N NAME` when a vertex starts, `#N 0.123 TEXT` for
//!   its output (seconds since the build started), `#N TEXT` for a status (a layer written,
//!   a blob pushed), `#N DONE 1.2s` (or `#N CACHED`) and a blank line when it ends, `#N ERROR:
//!   MESSAGE` when it fails;
//! - `tty` redraws a live view with indicatif: a header with the elapsed time and one line per
//!   running vertex with its time and latest output; a finished vertex leaves one line above
//!   the live view, `=> NAME  SIZE  1.2s`, and a failed one its whole output, framed as
//!   BuildKit frames it;
//! - `quiet` prints nothing; `auto` is `tty` when stderr is a terminal, else `plain`.
//!
//! Vertices come from the solver (numbered from 1 within the solve) and from the command
//! itself (pulls, uploads, exports); [`Display`] numbers them all in one sequence, in the
//! order they start. It is shared between threads: uploads report from their own.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_builder::solver::Progress;
use berth_layerstore::image::Descriptor;
use indicatif::{
    MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle, TermLike,
};

use crate::cli::images::human_size;
use crate::cli::progress::ProgressMode;

/// The width finished lines are laid out in when the terminal's is unknown.
const DEFAULT_WIDTH: usize = 80;

/// The progress display of one build.
pub struct Display {
    started: Instant,
    style: Style,
    state: Mutex<State>,
}

enum Style {
    Quiet,
    Plain,
    Tty(Tty),
}

struct Tty {
    multi: MultiProgress,
    header: ProgressBar,
    width: usize,
}

#[derive(Default)]
struct State {
    /// The last vertex number given out.
    last: usize,
    /// Display numbers of the solver's vertices.
    solver: HashMap<usize, usize>,
    /// Vertices that have started and not ended.
    running: HashMap<usize, Vertex>,
    /// Vertices that have ended.
    finished: usize,
}

struct Vertex {
    name: String,
    started: Instant,
    /// The live line (tty).
    bar: Option<ProgressBar>,
    /// Output lines, kept to show when the vertex fails (tty).
    log: Vec<String>,
    /// Output not yet ended by a newline.
    partial: String,
}

/// A terminal on stderr for `--progress tty` when stderr is no terminal (a pipe, a log
/// file): the live view is drawn with ANSI escapes all the same, `$COLUMNS` wide.
#[derive(Debug)]
struct AnsiStderr {
    width: u16,
}

impl TermLike for AnsiStderr {
    fn width(&self) -> u16 {
        self.width
    }

    fn height(&self) -> u16 {
        40
    }

    fn move_cursor_up(&self, n: usize) -> io::Result<()> {
        if n > 0 {
            write!(io::stderr(), "\x1b[{n}A")?;
        }
        Ok(())
    }

    fn move_cursor_down(&self, n: usize) -> io::Result<()> {
        if n > 0 {
            write!(io::stderr(), "\x1b[{n}B")?;
        }
        Ok(())
    }

    fn move_cursor_right(&self, n: usize) -> io::Result<()> {
        if n > 0 {
            write!(io::stderr(), "\x1b[{n}C")?;
        }
        Ok(())
    }

    fn move_cursor_left(&self, n: usize) -> io::Result<()> {
        if n > 0 {
            write!(io::stderr(), "\x1b[{n}D")?;
        }
        Ok(())
    }

    fn write_line(&self, s: &str) -> io::Result<()> {
        writeln!(io::stderr(), "{s}")
    }

    fn write_str(&self, s: &str) -> io::Result<()> {
        write!(io::stderr(), "{s}")
    }

    fn clear_line(&self) -> io::Result<()> {
        write!(io::stderr(), "\r\x1b[2K")
    }

    fn flush(&self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// `$COLUMNS`, when set to a width.
fn columns() -> Option<usize> {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse().ok())
        .filter(|&c| c >= 40)
}

/// Seconds with one decimal, as BuildKit prints durations.
fn seconds_key(state: &ProgressState, w: &mut dyn std::fmt::Write) {
    let _ = write!(w, "{:.1}s", state.elapsed().as_secs_f64());
}

fn header_style() -> ProgressStyle {
    ProgressStyle::with_template("[+] Building {secs} ({msg})")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
        .with_key("secs", seconds_key)
}

fn vertex_style(with_log: bool) -> ProgressStyle {
    let template = if with_log {
        " => {wide_msg} {secs:>7}\n => => # {prefix:.dim}"
    } else {
        " => {wide_msg} {secs:>7}"
    };
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
        .with_key("secs", seconds_key)
}

/// `text` cut to `width` characters, with `…` where it was cut.
fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

impl Display {
    /// The display for `mode` (`auto` resolved against stderr).
    pub fn new(mode: ProgressMode) -> Display {
        let terminal = io::stderr().is_terminal();
        let style = match mode {
            ProgressMode::Quiet => Style::Quiet,
            ProgressMode::Plain => Style::Plain,
            ProgressMode::Auto if !terminal => Style::Plain,
            ProgressMode::Auto | ProgressMode::Tty => {
                let (target, width) = if terminal {
                    (
                        ProgressDrawTarget::stderr(),
                        columns().unwrap_or(DEFAULT_WIDTH),
                    )
                } else {
                    let width = columns().unwrap_or(DEFAULT_WIDTH);
                    let term = AnsiStderr {
                        width: u16::try_from(width).unwrap_or(u16::MAX),
                    };
                    (ProgressDrawTarget::term_like(Box::new(term)), width)
                };
                let multi = MultiProgress::with_draw_target(target);
                let header = multi.add(ProgressBar::new_spinner());
                header.set_style(header_style());
                header.set_message("0 done");
                header.enable_steady_tick(Duration::from_millis(100));
                Style::Tty(Tty {
                    multi,
                    header,
                    width,
                })
            }
        };
        Display {
            started: Instant::now(),
            style,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A vertex of the command's own starts; returns its number.
    pub fn start(&self, name: &str) -> usize {
        let mut state = self.state();
        state.last += 1;
        let vertex = state.last;
        self.started_vertex(&mut state, vertex, name);
        vertex
    }

    fn started_vertex(&self, state: &mut State, vertex: usize, name: &str) {
        let bar = match &self.style {
            Style::Quiet => None,
            Style::Plain => {
                let _ = writeln!(io::stderr().lock(), "#{vertex} {name}");
                None
            }
            Style::Tty(tty) => {
                let bar = tty.multi.add(ProgressBar::new_spinner());
                bar.set_style(vertex_style(false));
                bar.set_message(name.to_owned());
                bar.enable_steady_tick(Duration::from_millis(100));
                Some(bar)
            }
        };
        state.running.insert(
            vertex,
            Vertex {
                name: name.to_owned(),
                started: Instant::now(),
                bar,
                log: Vec::new(),
                partial: String::new(),
            },
        );
    }

    /// A status line of a running vertex: `#N TEXT` (plain), its latest line (tty).
    pub fn status(&self, vertex: usize, text: &str) {
        match &self.style {
            Style::Quiet => {}
            Style::Plain => {
                let _ = writeln!(io::stderr().lock(), "#{vertex} {text}");
            }
            Style::Tty(_) => {
                let state = self.state();
                if let Some(bar) = state.running.get(&vertex).and_then(|v| v.bar.as_ref()) {
                    bar.set_style(vertex_style(true));
                    bar.set_prefix(text.to_owned());
                }
            }
        }
    }

    /// Output of a running vertex.
    pub fn log(&self, vertex: usize, bytes: &[u8]) {
        let at = self.started.elapsed().as_secs_f64();
        let mut state = self.state();
        let Some(v) = state.running.get_mut(&vertex) else {
            return;
        };
        v.partial.push_str(&String::from_utf8_lossy(bytes));
        let Some(end) = v.partial.rfind('\n') else {
            return;
        };
        let complete: String = v.partial.drain(..=end).collect();
        match &self.style {
            Style::Quiet => {}
            Style::Plain => {
                let mut err = io::stderr().lock();
                for line in complete.lines() {
                    let _ = writeln!(err, "#{vertex} {at:.3} {line}");
                }
            }
            Style::Tty(_) => {
                for line in complete.lines() {
                    v.log.push(format!("{at:.3} {line}"));
                }
                if let (Some(bar), Some(last)) = (&v.bar, complete.lines().last()) {
                    bar.set_style(vertex_style(true));
                    bar.set_prefix(last.to_owned());
                }
            }
        }
    }

    /// Output not ended by a newline, printed as a line of its own.
    fn flush_partial(&self, vertex: usize) {
        let partial = {
            let mut state = self.state();
            match state.running.get_mut(&vertex) {
                Some(v) if !v.partial.is_empty() => std::mem::take(&mut v.partial),
                _ => return,
            }
        };
        self.log(vertex, format!("{partial}\n").as_bytes());
    }

    /// A vertex ended: its duration, and the layer it made, if any.
    pub fn done(&self, vertex: usize, seconds: f64, layer: Option<&Descriptor>, cached: bool) {
        self.flush_partial(vertex);
        let mut state = self.state();
        let Some(v) = state.running.remove(&vertex) else {
            return;
        };
        state.finished += 1;
        match &self.style {
            Style::Quiet => {}
            Style::Plain => {
                let mut err = io::stderr().lock();
                if let Some(layer) = layer {
                    let _ = writeln!(
                        err,
                        "#{vertex} writing layer {} {} done",
                        layer.digest(),
                        human_size(layer.size())
                    );
                }
                let _ = if cached {
                    writeln!(err, "#{vertex} CACHED\n")
                } else {
                    writeln!(err, "#{vertex} DONE {seconds:.1}s\n")
                };
            }
            Style::Tty(tty) => {
                if let Some(bar) = &v.bar {
                    bar.finish_and_clear();
                    tty.multi.remove(bar);
                }
                let name = if cached {
                    format!("CACHED {}", v.name)
                } else {
                    v.name.clone()
                };
                let size = layer.map(|l| human_size(l.size())).unwrap_or_default();
                let time = format!("{seconds:.1}s");
                let room = tty.width.saturating_sub(4 + 10 + 8);
                let line = format!(" => {:<room$} {size:>9} {time:>7}", fit(&name, room));
                let _ = tty.multi.println(line.trim_end());
                tty.header.set_message(format!("{} done", state.finished));
            }
        }
    }

    /// A vertex failed.
    pub fn error(&self, vertex: usize, message: &str) {
        self.flush_partial(vertex);
        let mut state = self.state();
        let Some(v) = state.running.remove(&vertex) else {
            return;
        };
        match &self.style {
            Style::Quiet => {}
            Style::Plain => {
                let _ = writeln!(io::stderr().lock(), "#{vertex} ERROR: {message}\n");
            }
            Style::Tty(tty) => {
                if let Some(bar) = &v.bar {
                    bar.finish_and_clear();
                    tty.multi.remove(bar);
                }
                let time = format!("{:.1}s", v.started.elapsed().as_secs_f64());
                let room = tty.width.saturating_sub(4 + 6 + 8);
                let mut text = format!(" => ERROR {:<room$} {time:>7}\n", fit(&v.name, room));
                let _ = writeln!(text, "------\n > {}:", v.name);
                for line in &v.log {
                    let _ = writeln!(text, "{line}");
                }
                let _ = write!(text, "------\nERROR: {message}");
                let _ = tty.multi.println(text);
            }
        }
    }

    /// An event of the solver.
    pub fn solver(&self, event: Progress<'_>) {
        match event {
            Progress::Start { vertex, name } => {
                let mut state = self.state();
                state.last += 1;
                let shown = state.last;
                state.solver.insert(vertex, shown);
                self.started_vertex(&mut state, shown, name);
            }
            Progress::Output { vertex, bytes } => {
                if let Some(v) = self.solver_vertex(vertex) {
                    self.log(v, bytes);
                }
            }
            Progress::Error { vertex, message } => {
                if let Some(v) = self.solver_vertex(vertex) {
                    self.error(v, message);
                }
            }
            Progress::Done {
                vertex,
                seconds,
                layer,
                cached,
                ..
            } => {
                if let Some(v) = self.solver_vertex(vertex) {
                    self.done(v, seconds, layer, cached);
                }
            }
        }
    }

    fn solver_vertex(&self, vertex: usize) -> Option<usize> {
        self.state().solver.get(&vertex).copied()
    }

    /// Ends the display: vertices still running are closed, and the live view gives way to
    /// a last line with the total time.
    pub fn finish(&self, ok: bool) {
        let running: Vec<usize> = self.state().running.keys().copied().collect();
        for vertex in running {
            let seconds = self
                .state()
                .running
                .get(&vertex)
                .map_or(0.0, |v| v.started.elapsed().as_secs_f64());
            self.done(vertex, seconds, None, false);
        }
        if let Style::Tty(tty) = &self.style {
            let state = self.state();
            tty.header.finish_and_clear();
            let outcome = if ok { "FINISHED" } else { "FAILED" };
            let _ = tty.multi.println(format!(
                "[+] Building {:.1}s ({}/{}) {outcome}",
                self.started.elapsed().as_secs_f64(),
                state.finished,
                state.last
            ));
            tty.multi.clear().ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_cut() {
        assert_eq!(fit("abc", 5), "abc");
        assert_eq!(fit("abcdefgh", 5), "abcd…");
    }

    #[test]
    fn vertices_are_numbered_in_one_sequence() {
        let display = Display::new(ProgressMode::Quiet);
        let pull = display.start("pull");
        display.done(pull, 0.1, None, false);
        display.solver(Progress::Start {
            vertex: 1,
            name: "[stage-0 1/2] FROM x",
        });
        assert_eq!(display.solver_vertex(1), Some(2));
        let push = display.start("push");
        assert_eq!(push, 3);
        display.finish(true);
        assert!(display.state().running.is_empty());
    }
}
