//! The build context against real directory trees: `.dockerignore` matching, ignore file
//! lookup, the walker and path resolution.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use berth_builder::context::{
    Context, ContextError, Dockerignore, FileKind, FinalSymlink, IgnoreError, PatternError,
    find_dockerignore,
};

fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("mkdir");
    }
    fs::write(path, content).expect("write");
}

fn mkdir(root: &Path, rel: &str) {
    fs::create_dir_all(root.join(rel)).expect("mkdir");
}

fn link(root: &Path, rel: &str, target: &str) {
    symlink(target, root.join(rel)).expect("symlink");
}

fn paths(ctx: &Context) -> Vec<String> {
    ctx.walk()
        .map(|e| e.map(|e| e.path.to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()
        .expect("walk")
}

fn selected(ctx: &Context, source: &str) -> Vec<String> {
    ctx.select(source)
        .expect("select")
        .into_iter()
        .map(|e| e.path.to_string_lossy().into_owned())
        .collect()
}

/// `(ignore file, path, excluded?)`, with the examples of Docker's documentation first.
#[test]
fn matching_table() {
    let cases: &[(&str, &str, bool)] = &[
        // `*/temp*`: names starting with `temp` one level down.
        ("*/temp*", "somedir/temporary.txt", true),
        ("*/temp*", "somedir/temp", true),
        ("*/temp*", "somedir/temp/inner.txt", true),
        ("*/temp*", "temporary.txt", false),
        ("*/temp*", "a/b/temporary.txt", false),
        // `*/*/temp*`: two levels down.
        ("*/*/temp*", "somedir/subdir/temporary.txt", true),
        ("*/*/temp*", "somedir/temporary.txt", false),
        // `temp?`: one character after `temp`, at the root only.
        ("temp?", "tempa", true),
        ("temp?", "tempb", true),
        ("temp?", "temp", false),
        ("temp?", "tempab", false),
        ("temp?", "dir/tempa", false),
        // `**/*.go`: at any depth, the root included.
        ("**/*.go", "main.go", true),
        ("**/*.go", "cmd/app/main.go", true),
        ("**/*.go", "main.go.txt", false),
        // Exceptions: the last match wins.
        ("*.md\n!README*.md\nREADME-secret.md", "CHANGES.md", true),
        ("*.md\n!README*.md\nREADME-secret.md", "README.md", false),
        (
            "*.md\n!README*.md\nREADME-secret.md",
            "README-secret.md",
            true,
        ),
        (
            "*.md\nREADME-secret.md\n!README*.md",
            "README-secret.md",
            false,
        ),
        ("*.md\nREADME-secret.md\n!README*.md", "CHANGES.md", true),
        // An exception after excluding its directory re-includes it; before, it does nothing.
        ("build\n!build/keep.txt", "build/keep.txt", false),
        ("build\n!build/keep.txt", "build/other.txt", true),
        ("build\n!build/keep.txt", "build", true),
        ("!build/keep.txt\nbuild", "build/keep.txt", true),
        // Excluding a directory excludes everything below it.
        ("node_modules", "node_modules/a/b/c.js", true),
        ("node_modules", "src/node_modules", false),
        // Sets and ranges, negated with `^` only.
        ("file[a-c].txt", "fileb.txt", true),
        ("file[a-c].txt", "filed.txt", false),
        ("file[^a-c].txt", "filed.txt", true),
        ("file[^a-c].txt", "filea.txt", false),
        ("file[!a].txt", "file!.txt", true),
        ("file[!a].txt", "fileb.txt", false),
        // Escapes make special characters literal.
        ("\\*.txt", "*.txt", true),
        ("\\*.txt", "a.txt", false),
        ("a\\?", "a?", true),
        ("a\\?", "ab", false),
        ("\\[x]", "[x]", true),
        ("\\[x]", "x", false),
        // Patterns are cleaned: a leading `/`, `./` or a trailing `/` change nothing.
        ("/secret/", "secret/key", true),
        ("./secret", "secret", true),
        ("a/../secret", "secret", true),
        // `**` in the middle, and at the end.
        ("a/**/z", "a/z", true),
        ("a/**/z", "a/b/c/z", true),
        ("logs/**", "logs/x/y.log", true),
        ("logs/**", "logsx", false),
        // `#` starts a comment only at the start of a line.
        ("# *.txt", "a.txt", false),
        (" # x", "# x", true),
    ];
    for (ignore, path, want) in cases {
        let parsed = Dockerignore::parse(ignore).expect("valid ignore file");
        assert_eq!(parsed.is_excluded(path), *want, "{path:?} with {ignore:?}");
    }
}

#[test]
fn malformed_pattern_reports_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(root, ".dockerignore", "ok\n# comment\n\n  [a-  \nlater\n");
    let err = Context::open(root, None).expect_err("malformed pattern");
    let ContextError::Ignore(IgnoreError::Pattern {
        file,
        line,
        pattern,
        reason,
    }) = &err
    else {
        panic!("unexpected error {err:?}");
    };
    assert_eq!(file.as_deref(), Some(root.join(".dockerignore").as_path()));
    assert_eq!(*line, 4);
    assert_eq!(pattern, "[a-");
    assert_eq!(reason, &PatternError::UnterminatedClass);
    assert_eq!(
        err.to_string(),
        format!(
            "{}:4: invalid pattern `[a-`: unterminated character class: missing `]`",
            root.join(".dockerignore").display()
        )
    );

    write(root, ".dockerignore", "a\n!\n");
    let err = Context::open(root, None).expect_err("lone exclamation");
    assert!(
        matches!(
            err,
            ContextError::Ignore(IgnoreError::LoneExclamation { line: 2, .. })
        ),
        "{err:?}"
    );
}

#[test]
fn dockerfile_specific_ignore_file_takes_precedence() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(root, ".dockerignore", "a.txt\n");
    write(root, "Dockerfile.dockerignore", "b.txt\n");
    write(root, "Dockerfile", "FROM scratch\n");
    write(root, "build/app.Dockerfile", "FROM scratch\n");
    write(root, "build/app.Dockerfile.dockerignore", "c.txt\n");
    write(root, "other.Dockerfile", "FROM scratch\n");
    write(root, "a.txt", "a");
    write(root, "b.txt", "b");
    write(root, "c.txt", "c");

    // `Dockerfile.dockerignore` replaces `.dockerignore`: the two are not merged.
    let dockerfile = root.join("Dockerfile");
    assert_eq!(
        find_dockerignore(root, Some(&dockerfile)).expect("lookup"),
        Some(root.join("Dockerfile.dockerignore"))
    );
    let ctx = Context::open(root, Some(&dockerfile)).expect("open");
    assert_eq!(
        ctx.ignore().source(),
        Some(root.join("Dockerfile.dockerignore").as_path())
    );
    assert!(!ctx.is_ignored("a.txt"));
    assert!(ctx.is_ignored("b.txt"));
    assert!(ctx.resolve("a.txt", FinalSymlink::Keep).is_ok());
    assert!(matches!(
        ctx.resolve("b.txt", FinalSymlink::Keep),
        Err(ContextError::NotFound { .. })
    ));

    // The specific file sits beside the Dockerfile, wherever that is.
    let ctx = Context::open(root, Some(&root.join("build/app.Dockerfile"))).expect("open");
    assert_eq!(
        ctx.ignore().source(),
        Some(root.join("build/app.Dockerfile.dockerignore").as_path())
    );
    assert!(ctx.is_ignored("c.txt"));
    assert!(!ctx.is_ignored("a.txt"));

    // Without one, the context's `.dockerignore` applies.
    let ctx = Context::open(root, Some(&root.join("other.Dockerfile"))).expect("open");
    assert_eq!(
        ctx.ignore().source(),
        Some(root.join(".dockerignore").as_path())
    );
    assert!(ctx.is_ignored("a.txt"));
    let ctx = Context::open(root, None).expect("open");
    assert_eq!(
        ctx.ignore().source(),
        Some(root.join(".dockerignore").as_path())
    );

    // And with neither, nothing is ignored.
    fs::remove_file(root.join(".dockerignore")).expect("rm");
    let ctx = Context::open(root, Some(&root.join("other.Dockerfile"))).expect("open");
    assert_eq!(ctx.ignore().source(), None);
    assert!(ctx.ignore().is_empty());
}

/// A context with ignored files, an excluded directory with an exception inside it, and a
/// symlink; `.dockerignore` excludes the Dockerfile and itself.
fn sample_tree(root: &Path) {
    write(
        root,
        ".dockerignore",
        "# build outputs\n\
         node_modules\n\
         build\n\
         !build/keep.txt\n\
         *.log\n\
         !important.log\n\
         docs/**/*.tmp\n\
         Dockerfile\n\
         .dockerignore\n",
    );
    write(root, "Dockerfile", "FROM scratch\nCOPY . /\n");
    write(root, "README.md", "hello\n");
    write(root, "app.log", "noise");
    write(root, "important.log", "keep me");
    write(root, "build/out.bin", "bin");
    write(root, "build/keep.txt", "kept");
    write(root, "build/sub/deep.bin", "deep");
    write(root, "node_modules/pkg/index.js", "js");
    write(root, "src/main.rs", "fn main() {}\n");
    write(root, "src/lib.rs", "");
    write(root, "docs/a/b/c.tmp", "tmp");
    write(root, "docs/a/readme.md", "doc");
    link(root, "link", "src");
}

#[test]
fn walker_applies_ignore_rules_in_sorted_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    sample_tree(root);
    fs::set_permissions(root.join("src/main.rs"), fs::Permissions::from_mode(0o640))
        .expect("chmod");

    let ctx = Context::open(root, Some(&root.join("Dockerfile"))).expect("open");
    assert_eq!(
        paths(&ctx),
        [
            "README.md",
            // `build` is excluded but yielded, just before what its exception brings back.
            "build",
            "build/keep.txt",
            "docs",
            "docs/a",
            "docs/a/b",
            "docs/a/readme.md",
            "important.log",
            "link",
            "src",
            "src/lib.rs",
            "src/main.rs",
        ]
    );

    let entries: Vec<_> = ctx.walk().collect::<Result<_, _>>().expect("walk");
    let by_path = |p: &str| {
        entries
            .iter()
            .find(|e| e.path == Path::new(p))
            .unwrap_or_else(|| panic!("{p} missing"))
    };
    let readme = by_path("README.md");
    assert_eq!(readme.kind, FileKind::File);
    assert_eq!(readme.size, 6);
    let main = by_path("src/main.rs");
    assert_eq!(main.mode, 0o640);
    let md = fs::symlink_metadata(root.join("src/main.rs")).expect("stat");
    assert_eq!(main.mtime.secs, std::os::unix::fs::MetadataExt::mtime(&md));
    assert_eq!(main.uid, std::os::unix::fs::MetadataExt::uid(&md));
    let build = by_path("build");
    assert_eq!(build.kind, FileKind::Dir);
    assert_eq!(build.size, 0);
    let link = by_path("link");
    assert_eq!(link.kind, FileKind::Symlink);
    assert_eq!(link.link_target.as_deref(), Some(Path::new("src")));

    // The Dockerfile and the ignore file are excluded from the context like any other file,
    // yet the ignore file was read and the Dockerfile stays readable by the front end.
    assert!(ctx.is_ignored("Dockerfile"));
    assert!(ctx.is_ignored(".dockerignore"));
    assert_eq!(
        ctx.ignore().source(),
        Some(root.join(".dockerignore").as_path())
    );

    // Without ignore rules, everything is there, in depth-first byte order.
    let all = Context::new(root, Dockerignore::empty()).expect("open");
    let all = paths(&all);
    assert_eq!(all.first().map(String::as_str), Some(".dockerignore"));
    assert!(all.contains(&"node_modules/pkg/index.js".to_owned()));
    assert!(all.contains(&"build/sub/deep.bin".to_owned()));
}

#[test]
fn walker_descends_for_wildcard_exceptions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(root, "main.go", "");
    write(root, "go.sum", "");
    write(root, "pkg/a.go", "");
    write(root, "pkg/b.txt", "");
    write(root, "pkg/sub/c.go", "");
    write(root, "pkg/sub/d.txt", "");
    write(root, "docs/x.md", "");
    mkdir(root, "empty");
    let ignore = Dockerignore::parse("*\n!**/*.go\n").expect("valid");
    let ctx = Context::new(root, ignore).expect("open");
    // `*` excludes every top-level entry and, through its parent, everything below; the
    // exception brings back the Go files, and the directories on the way to them.
    assert_eq!(
        paths(&ctx),
        ["main.go", "pkg", "pkg/a.go", "pkg/sub", "pkg/sub/c.go"]
    );
}

#[test]
fn walker_orders_depth_first_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(root, "a/b", "");
    write(root, "a-c", "");
    write(root, "B", "");
    write(root, "a/a", "");
    let ctx = Context::new(root, Dockerignore::empty()).expect("open");
    assert_eq!(paths(&ctx), ["B", "a", "a/a", "a/b", "a-c"]);
}

#[test]
fn symlinks_are_never_followed_out_of_the_context() {
    let outside = tempfile::tempdir().expect("tempdir");
    write(outside.path(), "secret", "top secret");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(root, "real/file", "inside");
    write(root, "src/main.rs", "fn main() {}");
    link(root, "out", &outside.path().to_string_lossy());
    link(root, "up", "../../../..");
    link(root, "abs", "/src");
    link(root, "via", "real");
    link(root, "loop1", "loop2");
    link(root, "loop2", "loop1");

    let ctx = Context::new(root, Dockerignore::empty()).expect("open");
    // The walker reports symlinks and does not go through them.
    let walked = paths(&ctx);
    assert_eq!(
        walked,
        [
            "abs",
            "loop1",
            "loop2",
            "out",
            "real",
            "real/file",
            "src",
            "src/main.rs",
            "up",
            "via"
        ]
    );
    let out = ctx
        .walk()
        .find_map(|e| e.ok().filter(|e| e.path == Path::new("out")))
        .expect("out is walked");
    assert_eq!(out.kind, FileKind::Symlink);
    assert_eq!(out.link_target.as_deref(), Some(outside.path()));

    // An absolute target is taken from the context root: the outside file is not reachable.
    assert!(matches!(
        ctx.resolve("out/secret", FinalSymlink::Follow),
        Err(ContextError::NotFound { .. })
    ));
    let kept = ctx
        .resolve("out", FinalSymlink::Keep)
        .expect("the link itself");
    assert_eq!(kept.kind, FileKind::Symlink);
    assert_eq!(kept.path, Path::new("out"));
    // `..` in a target stops at the context root.
    let up = ctx.resolve("up", FinalSymlink::Follow).expect("clamped");
    assert_eq!(up.path, Path::new("."));
    assert_eq!(up.kind, FileKind::Dir);
    let through = ctx
        .resolve("up/real/file", FinalSymlink::Follow)
        .expect("clamped");
    assert_eq!(through.path, Path::new("real/file"));
    let abs = ctx
        .resolve("abs/main.rs", FinalSymlink::Follow)
        .expect("chroot");
    assert_eq!(abs.path, Path::new("src/main.rs"));
    let via = ctx
        .resolve("via/file", FinalSymlink::Keep)
        .expect("intermediate");
    assert_eq!(via.path, Path::new("real/file"));
    assert_eq!(via.size, 6);
    assert!(matches!(
        ctx.resolve("loop1", FinalSymlink::Follow),
        Err(ContextError::SymlinkLoop { .. })
    ));
    // Walking through a symlinked directory walks its target, named by its real path.
    let below: Vec<PathBuf> = ctx
        .walk_dir("via")
        .expect("dir")
        .map(|e| e.map(|e| e.path))
        .collect::<Result<_, _>>()
        .expect("walk");
    assert_eq!(below, [PathBuf::from("real/file")]);
}

#[test]
fn escapes_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("ctx");
    write(&root, "a/file", "x");
    write(dir.path(), "sibling", "outside");
    let ctx = Context::new(&root, Dockerignore::empty()).expect("open");
    for request in ["..", "../sibling", "a/../../sibling", "./../ctx/a/file"] {
        assert!(
            matches!(
                ctx.resolve(request, FinalSymlink::Follow),
                Err(ContextError::OutsideContext { .. })
            ),
            "{request}"
        );
        assert!(
            matches!(
                ctx.select(request),
                Err(ContextError::OutsideContext { .. })
            ),
            "{request}"
        );
    }
    assert!(matches!(
        ctx.walk_dir(".."),
        Err(ContextError::OutsideContext { .. })
    ));
    assert!(matches!(
        ctx.select("../*"),
        Err(ContextError::OutsideContext { .. })
    ));
    // An absolute path names a path in the context, never the host's.
    let sibling = dir.path().join("sibling");
    assert!(matches!(
        ctx.resolve(&sibling.to_string_lossy(), FinalSymlink::Follow),
        Err(ContextError::NotFound { .. })
    ));
    assert!(matches!(
        ctx.resolve("/etc/passwd", FinalSymlink::Follow),
        Err(ContextError::NotFound { .. })
    ));
    let file = ctx
        .resolve("/a/file", FinalSymlink::Follow)
        .expect("inside");
    assert_eq!(file.path, Path::new("a/file"));
    // `..` that stays inside is fine.
    let file = ctx
        .resolve("a/../a/file", FinalSymlink::Follow)
        .expect("inside");
    assert_eq!(file.path, Path::new("a/file"));
}

#[test]
fn select_resolves_copy_sources() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    sample_tree(root);
    let ctx = Context::open(root, None).expect("open");

    assert_eq!(selected(&ctx, "src/*.rs"), ["src/lib.rs", "src/main.rs"]);
    assert_eq!(selected(&ctx, "*.md"), ["README.md"]);
    assert_eq!(selected(&ctx, "*.log"), ["important.log"]);
    // An excluded directory exists only through what its exceptions bring back.
    assert_eq!(selected(&ctx, "b*"), ["build"]);
    assert_eq!(selected(&ctx, "build"), ["build"]);
    assert_eq!(selected(&ctx, "build/*"), ["build/keep.txt"]);
    assert!(selected(&ctx, "node*").is_empty());
    // A matching directory is one match; nothing below it is matched again.
    assert_eq!(selected(&ctx, "d*"), ["docs"]);
    assert_eq!(selected(&ctx, "*/a/*"), ["docs/a/b", "docs/a/readme.md"]);
    // `*` does not cross `/`, and Go's `**` is two `*`.
    assert!(selected(&ctx, "*.rs").is_empty());
    assert!(selected(&ctx, "**/*.rs").contains(&"src/lib.rs".to_owned()));
    // Symlinks are followed, inside the context.
    assert_eq!(selected(&ctx, "link"), ["src"]);
    assert_eq!(selected(&ctx, "lin?"), ["src"]);
    assert_eq!(selected(&ctx, "link/main.rs"), ["src/main.rs"]);
    assert_eq!(selected(&ctx, "link/*.rs"), ["src/lib.rs", "src/main.rs"]);
    // Globs that match nothing give nothing; literal paths that are missing or ignored fail.
    assert!(selected(&ctx, "nothing*").is_empty());
    assert!(selected(&ctx, "missing/*.rs").is_empty());
    for missing in ["missing.txt", "app.log", "Dockerfile", "node_modules/pkg"] {
        assert!(
            matches!(ctx.select(missing), Err(ContextError::NotFound { .. })),
            "{missing}"
        );
    }
    assert!(matches!(
        ctx.select("src/[a-"),
        Err(ContextError::Pattern {
            reason: PatternError::UnterminatedClass,
            ..
        })
    ));
    // The whole context.
    assert_eq!(selected(&ctx, "."), ["."]);
    assert_eq!(selected(&ctx, "/"), ["."]);

    let in_build: Vec<String> = ctx
        .walk_dir("build")
        .expect("visible directory")
        .map(|e| e.map(|e| e.path.to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()
        .expect("walk");
    assert_eq!(in_build, ["build/keep.txt"]);
    assert!(matches!(
        ctx.walk_dir("README.md"),
        Err(ContextError::NotADirectory { .. })
    ));
}

#[test]
fn excluded_symlinks_are_not_followed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(root, "real/file", "x");
    link(root, "alias", "real");
    let ignore = Dockerignore::parse("alias\n").expect("valid");
    let ctx = Context::new(root, ignore).expect("open");
    assert!(matches!(
        ctx.resolve("alias/file", FinalSymlink::Follow),
        Err(ContextError::NotFound { .. })
    ));
    assert_eq!(paths(&ctx), ["real", "real/file"]);
}

#[test]
fn select_finds_excluded_directories_through_nested_exceptions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(root, "build/out.bin", "");
    write(root, "build/sub/keep", "");
    write(root, "build/sub/drop", "");
    write(root, "bare/x", "");
    let ignore = Dockerignore::parse("build\nbare\n!build/sub/keep\n").expect("valid");
    let ctx = Context::new(root, ignore).expect("open");
    assert_eq!(selected(&ctx, "b*"), ["build"]);
    assert_eq!(selected(&ctx, "build/s*"), ["build/sub"]);
    assert_eq!(paths(&ctx), ["build", "build/sub", "build/sub/keep"]);
    assert!(matches!(
        ctx.resolve("bare", FinalSymlink::Follow),
        Err(ContextError::NotFound { .. })
    ));
}
