//! The build cache and parallel stages of `berth build`: a rebuild takes every step from the
//! cache and gives the same image; an edited source re-runs only the steps from its COPY on;
//! `--no-cache` and `--no-cache-filter`; the cache outlives `rmi`; damaged records and missing
//! layers are misses with a warning, never wrong content; two builds at once on one store;
//! independent stages run at the same time, and identical steps of several stages run once.
//!
//! Needs runc and busybox-static (`scripts/setup.sh`).

mod build_support;
mod registry_support;

use std::fs;
use std::time::Instant;

use build_support::*;
use registry_support::*;

fn dockerfile(base: &str) -> String {
    format!(
        "FROM {base}\n\
         ENV A=1\n\
         RUN cat /proc/sys/kernel/random/uuid > /first\n\
         COPY one.txt /app/\n\
         RUN cat /app/one.txt /first > /second\n\
         COPY two.txt /app/\n\
         RUN cat /proc/sys/kernel/random/uuid > /third\n\
         CMD [\"cat\", \"/second\"]\n"
    )
}

#[test]
fn rebuilds_come_from_the_cache_and_edits_rerun_what_follows() {
    let (work, root, base) = work_with_base("cache-rebuild");
    let context = work.path().join("ctx");
    write_context(
        &context,
        &[
            ("Dockerfile", &dockerfile(&base)),
            ("one.txt", "one\n"),
            ("two.txt", "two\n"),
        ],
    );
    let (first, stderr) = build_plain(&root, &context, &[]);
    assert_eq!(ran(&stderr).len(), 7, "{stderr}");

    // Nothing changed: every step is cached and the image is the same.
    let t = Instant::now();
    let (again, stderr) = build_plain(&root, &context, &[]);
    let took = t.elapsed();
    assert_eq!(again, first, "{stderr}");
    assert!(ran(&stderr).is_empty(), "{stderr}");
    assert_eq!(
        steps(&stderr).iter().filter(|(_, c)| *c).count(),
        7,
        "{stderr}"
    );
    eprintln!("no-op rebuild: {took:?}");

    // Touching a file changes nothing; editing two.txt re-runs its COPY and what follows.
    let touched = std::process::Command::new("touch")
        .args(["-d", "2033-05-18 03:33:20"])
        .arg(context.join("one.txt"))
        .status()
        .unwrap();
    assert!(touched.success());
    let (touched, stderr) = build_plain(&root, &context, &[]);
    assert_eq!(touched, first, "{stderr}");
    fs::write(context.join("two.txt"), "TWO\n").unwrap();
    let (edited, stderr) = build_plain(&root, &context, &[]);
    assert_ne!(edited, first);
    let rerun = ran(&stderr);
    assert_eq!(rerun.len(), 3, "{stderr}");
    assert!(rerun[0].contains("COPY two.txt"), "{rerun:?}");
    assert!(
        rerun[1].contains("RUN cat /proc/sys/kernel/random/uuid > /third"),
        "{rerun:?}"
    );
    assert!(rerun[2].contains("CMD"), "{rerun:?}");

    // A mode change is a change too.
    let mut perms = fs::metadata(context.join("one.txt")).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    fs::set_permissions(context.join("one.txt"), perms).unwrap();
    let (_, stderr) = build_plain(&root, &context, &[]);
    assert_eq!(ran(&stderr).len(), 5, "{stderr}");

    // --no-cache runs everything and gives another image.
    let (fresh, stderr) = build_plain(&root, &context, &["--no-cache"]);
    assert_eq!(ran(&stderr).len(), 7, "{stderr}");
    assert_ne!(fresh, edited);
}

#[test]
fn the_cache_outlives_rmi_and_survives_damage() {
    let (work, root, base) = work_with_base("cache-damage");
    let context = work.path().join("ctx");
    write_context(
        &context,
        &[
            ("Dockerfile", &dockerfile(&base)),
            ("one.txt", "one\n"),
            ("two.txt", "two\n"),
        ],
    );
    let (first, _) = build_plain(&root, &context, &["-t", "cached:1"]);
    berth(&root, &["rmi", "cached:1"]);
    let (again, stderr) = build_plain(&root, &context, &[]);
    assert_eq!(again, first);
    assert!(ran(&stderr).is_empty(), "{stderr}");

    // Damaged records: a truncated one and one that is not JSON.
    let pins = root.join("images/pins/build-cache");
    let mut records: Vec<_> = fs::read_dir(&pins)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    records.sort();
    assert!(records.len() >= 6, "{records:?}");
    for (i, path) in records.iter().enumerate() {
        let bytes = fs::read(path).unwrap();
        if i % 2 == 0 {
            fs::write(path, &bytes[..bytes.len() / 2]).unwrap();
        } else {
            fs::write(path, b"garbage").unwrap();
        }
    }
    let out = berth_out(
        &root,
        &["build", "--progress", "plain", context.to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("ignoring the cached result"), "{stderr}");
    assert_eq!(ran(&stderr).len(), 7, "{stderr}");
    // The records are whole again: the next build is cached.
    let (_, stderr) = build_plain(&root, &context, &[]);
    assert!(ran(&stderr).is_empty(), "{stderr}");

    // A layer a record names is gone from the store: that step and those after it run.
    let (_, stderr) = build_plain(&root, &context, &["-t", "cached:2"]);
    assert!(ran(&stderr).is_empty());
    let layers = image_layers(&root, "cached:2");
    let last = layers
        .last()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap()
        .to_owned();
    berth(&root, &["rmi", "cached:2"]);
    fs::remove_file(root.join(format!("content/blobs/sha256/{}/{last}", &last[..2]))).unwrap();
    let out = berth_out(
        &root,
        &["build", "--progress", "plain", context.to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The last RUN and the CMD after it.
    assert_eq!(ran(&stderr).len(), 2, "{stderr}");
    assert!(damaged_blobs(&root).is_empty());
    assert!(leftovers(&root).is_empty(), "{:?}", leftovers(&root));
}

#[test]
fn no_cache_filter_reruns_only_its_stage() {
    let (work, root, base) = work_with_base("cache-filter");
    let context = work.path().join("ctx");
    write_context(
        &context,
        &[(
            "Dockerfile",
            &format!(
                "FROM {base} AS deps\n\
                 RUN cat /proc/sys/kernel/random/uuid > /deps\n\
                 FROM {base} AS app\n\
                 COPY --from=deps /deps /deps\n\
                 RUN cat /proc/sys/kernel/random/uuid > /app\n"
            ),
        )],
    );
    build_plain(&root, &context, &[]);
    let (_, stderr) = build_plain(&root, &context, &["--no-cache-filter", "app"]);
    let rerun = ran(&stderr);
    assert_eq!(rerun.len(), 2, "{stderr}");
    assert!(rerun.iter().all(|s| s.starts_with("[app ")), "{rerun:?}");
}

#[test]
fn two_builds_at_once_share_the_store() {
    let (work, root, base) = work_with_base("cache-concurrent");
    let mut contexts = Vec::new();
    for i in 0..2 {
        let context = work.path().join(format!("ctx{i}"));
        write_context(
            &context,
            &[
                (
                    "Dockerfile",
                    &format!(
                        "FROM {base}\n\
                         RUN echo shared > /shared && sleep 1\n\
                         COPY own.txt /\n\
                         RUN cat /own.txt /shared > /both\n"
                    ),
                ),
                ("own.txt", &format!("build {i}\n")),
            ],
        );
        contexts.push(context);
    }
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = contexts
            .iter()
            .map(|c| s.spawn(|| build_plain(&root, c, &[]).0))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_ne!(ids[0], ids[1]);
    assert!(damaged_blobs(&root).is_empty());
    assert!(leftovers(&root).is_empty(), "{:?}", leftovers(&root));
    // Both are cached now, and both images run.
    for context in &contexts {
        let (_, stderr) = build_plain(&root, context, &[]);
        assert!(ran(&stderr).is_empty(), "{stderr}");
    }
}

#[test]
fn independent_stages_run_at_once_and_shared_steps_run_once() {
    let (work, root, base) = work_with_base("cache-parallel");
    let context = work.path().join("ctx");
    let mut dockerfile = String::new();
    for name in ["a", "b", "c", "d"] {
        dockerfile.push_str(&format!(
            "FROM {base} AS {name}\nRUN sleep 2 && echo {name} > /{name}\n"
        ));
    }
    // Two stages with the same step: it runs once, and both get its result.
    for name in ["s1", "s2"] {
        dockerfile.push_str(&format!(
            "FROM {base} AS {name}\nRUN cat /proc/sys/kernel/random/uuid > /stamp\n"
        ));
    }
    dockerfile.push_str(&format!("FROM {base}\n"));
    for name in ["a", "b", "c", "d"] {
        dockerfile.push_str(&format!("COPY --from={name} /{name} /{name}\n"));
    }
    dockerfile.push_str("COPY --from=s1 /stamp /s1\nCOPY --from=s2 /stamp /s2\n");
    dockerfile.push_str("RUN cmp /s1 /s2 && cat /a /b /c /d > /all\n");
    write_context(&context, &[("Dockerfile", &dockerfile)]);
    let t = Instant::now();
    let (_, stderr) = build_plain(&root, &context, &["--jobs", "6", "-t", "parallel:1"]);
    let took = t.elapsed();
    // Four stages of 2 s each, one after the other, would take over 8 s.
    assert!(took.as_secs_f64() < 6.0, "took {took:?}:\n{stderr}");
    let stamps: Vec<_> = steps(&stderr)
        .into_iter()
        .filter(|(name, _)| name.contains("random/uuid > /stamp"))
        .collect();
    assert_eq!(stamps.len(), 2, "{stderr}");
    assert_eq!(
        stamps.iter().filter(|(_, cached)| *cached).count(),
        1,
        "{stderr}"
    );
    // `--jobs 1` still builds it, one step at a time.
    let (_, stderr) = build_plain(&root, &context, &["--jobs", "1", "--no-cache"]);
    assert_eq!(ran(&stderr).len(), 12, "{stderr}");
}
