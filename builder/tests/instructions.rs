//! Lowering the syntax tree to typed, scoped, expanded instructions.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use berth_builder::instructions::{
    BaseImage, BaseRef, BuildOptions, CacheSharing, Chmod, Command, CommandLine, FromRef,
    HealthcheckKind, InstructionError, InstructionErrorKind as E, Lowered, MountType, NetworkMode,
    Platform, Protocol, Stage, lower,
};
use berth_builder::lint::Linter;
use berth_builder::parser::{self, Warning};

fn try_lower(
    source: &str,
    options: &BuildOptions,
) -> Result<(Lowered, Vec<Warning>), InstructionError> {
    let dockerfile = parser::parse(source, "Dockerfile").expect("test Dockerfile parses");
    let mut linter = Linter::new(dockerfile.check.clone());
    let lowered = lower(&dockerfile, options, &mut linter)?;
    Ok((lowered, linter.into_warnings()))
}

fn lowered(source: &str) -> Lowered {
    try_lower(source, &BuildOptions::default())
        .unwrap_or_else(|e| panic!("lowering failed:\n{e}"))
        .0
}

fn lowered_with(source: &str, options: &BuildOptions) -> (Lowered, Vec<Warning>) {
    try_lower(source, options).unwrap_or_else(|e| panic!("lowering failed:\n{e}"))
}

fn error(source: &str) -> InstructionError {
    error_with(source, &BuildOptions::default())
}

fn error_with(source: &str, options: &BuildOptions) -> InstructionError {
    match try_lower(source, options) {
        Ok(_) => panic!("lowering must fail:\n{source}"),
        Err(e) => e,
    }
}

fn args(pairs: &[(&str, &str)]) -> BuildOptions {
    BuildOptions {
        build_args: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..BuildOptions::default()
    }
}

fn rules(warnings: &[Warning], rule: &str) -> Vec<String> {
    warnings
        .iter()
        .filter(|w| w.rule == rule)
        .map(|w| w.message.clone())
        .collect()
}

fn commands(stage: &Stage) -> &[Command] {
    &stage.commands
}

fn env_pairs(command: &Command) -> Vec<(String, String)> {
    match command {
        Command::Env(e) => e.pairs.clone(),
        other => panic!("not ENV: {other:?}"),
    }
}

fn run_env(command: &Command) -> BTreeMap<String, String> {
    match command {
        Command::Run(r) => r.env.iter().cloned().collect(),
        other => panic!("not RUN: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Flags

#[test]
fn unknown_flag_is_an_error_at_the_flag_with_a_suggestion() {
    let source = "FROM alpine AS build\nFROM scratch\nCOPY --frm=build /out /out\n";
    let e = error(source);
    assert_eq!(
        e.kind,
        E::UnknownFlag {
            flag: "frm".into(),
            suggestion: Some("from".into())
        }
    );
    let span = e.span().expect("located");
    assert_eq!((span.line, span.column), (3, 6));
    assert_eq!(
        e.to_string(),
        "Dockerfile:3:6: unknown flag: --frm\n  |\n3 | COPY --frm=build /out /out\n  |      \
         ^^^^^^^^^^^\n  = hint: did you mean --from?"
    );
}

#[test]
fn instructions_without_flags_refuse_any() {
    let e = error("FROM scratch\nWORKDIR --foo /x\n");
    assert!(matches!(e.kind, E::UnknownFlag { ref flag, suggestion: None } if flag == "foo"));
    let e = error("FROM scratch\nCMD --doit [\"a\"]\n");
    assert!(matches!(e.kind, E::UnknownFlag { .. }));
    // ARG and STOPSIGNAL never looked at their flags in BuildKit.
    lowered("FROM scratch\nARG --whatever A=1\nSTOPSIGNAL --x 9\n");
}

#[test]
fn flag_values_are_checked() {
    let e = error("FROM scratch\nCOPY --chown a b\n");
    assert_eq!(
        e.kind,
        E::MissingFlagValue {
            flag: "chown".into()
        }
    );
    let e = error("FROM scratch\nCOPY --link= a b\n");
    assert_eq!(
        e.kind,
        E::MissingFlagValue {
            flag: "link".into()
        }
    );
    let e = error("FROM scratch\nCOPY --link=yes a b\n");
    assert_eq!(
        e.kind,
        E::NotBoolean {
            flag: "link".into(),
            value: "yes".into()
        }
    );
    let e = error("FROM scratch\nRUN --network=bridge true\n");
    assert!(matches!(e.kind, E::InvalidFlagValue { ref flag, .. } if flag == "network"));
    let e = error("FROM scratch\nRUN --security=root true\n");
    assert!(matches!(e.kind, E::InvalidFlagValue { ref flag, .. } if flag == "security"));
    let e = error("FROM scratch\nCOPY --chmod=999 a b\n");
    assert!(matches!(e.kind, E::InvalidFlagValue { ref flag, .. } if flag == "chmod"));
    let e = error("FROM scratch\nHEALTHCHECK --interval=10 CMD true\n");
    assert!(matches!(e.kind, E::InvalidFlagValue { ref flag, .. } if flag == "interval"));
    let e = error("FROM scratch\nHEALTHCHECK --timeout=500us CMD true\n");
    assert_eq!(
        e.kind,
        E::IntervalTooShort {
            flag: "timeout".into()
        }
    );
    let e = error("FROM scratch\nHEALTHCHECK --retries=-1 CMD true\n");
    assert_eq!(e.kind, E::NegativeRetries { value: -1 });
    // The upper bound of a flag: a value BuildKit reads as a 32-bit number.
    let e = error("FROM scratch\nHEALTHCHECK --retries=99999999999 CMD true\n");
    assert!(matches!(e.kind, E::InvalidFlagValue { .. }));
}

#[test]
fn duplicate_flags_are_refused_unless_repeatable() {
    let e = error("FROM scratch\nCOPY --from=a --from=b x y\n");
    assert_eq!(
        e.kind,
        E::DuplicateFlag {
            flag: "from".into()
        }
    );
    let span = e.span().unwrap();
    assert_eq!((span.line, span.column), (2, 15));
    let e = error("FROM scratch\nADD --link --link x y\n");
    assert_eq!(
        e.kind,
        E::DuplicateFlag {
            flag: "link".into()
        }
    );

    let l = lowered("FROM scratch\nCOPY --exclude=*.md --exclude=*.txt . /app/\n");
    let Command::Copy(copy) = &commands(&l.stages[0])[0] else {
        panic!()
    };
    assert_eq!(copy.exclude, ["*.md", "*.txt"]);
    let l = lowered(
        "FROM scratch\nRUN --mount=type=cache,target=/a --mount=type=tmpfs,target=/b true\n",
    );
    let Command::Run(run) = &commands(&l.stages[0])[0] else {
        panic!()
    };
    assert_eq!(run.mounts.len(), 2);
}

#[test]
fn mounts_are_typed_and_checked() {
    let source = "FROM alpine AS deps\nFROM scratch\nARG CACHE=/root/.cache\n\
                  RUN --mount=type=cache,target=${CACHE},sharing=locked,id=go \\\n  \
                  --mount=type=secret,id=aws,env=AWS_KEY,required \\\n  \
                  --mount=from=deps,source=/go,target=/go,rw \\\n  \
                  --network=none go build\n";
    let l = lowered(source);
    let Command::Run(run) = &commands(&l.stages[1])[1] else {
        panic!()
    };
    assert_eq!(run.network, NetworkMode::None);
    assert_eq!(run.command, CommandLine::Shell("go build".into()));
    let [cache, secret, bind] = run.mounts.as_slice() else {
        panic!("{:?}", run.mounts)
    };
    assert_eq!(cache.kind, MountType::Cache);
    assert_eq!(cache.target.as_deref(), Some("/root/.cache"));
    assert_eq!(cache.sharing, Some(CacheSharing::Locked));
    assert_eq!(cache.id.as_deref(), Some("go"));
    assert!(!cache.read_only);
    assert_eq!(secret.kind, MountType::Secret);
    assert!(secret.required && secret.read_only);
    assert_eq!(secret.env.as_deref(), Some("AWS_KEY"));
    assert_eq!(bind.kind, MountType::Bind);
    assert_eq!(bind.from_ref, Some(FromRef::Stage(0)));
    assert!(!bind.read_only);

    let e = error("FROM scratch\nRUN --mount=type=cache,tagret=/x true\n");
    assert!(matches!(e.kind, E::Mount(_)));
    assert_eq!(e.hint().as_deref(), Some("did you mean target?"));
    let span = e.span().unwrap();
    assert_eq!((span.line, span.column), (2, 5));
    let e = error("FROM scratch\nRUN --mount=type=nfs,target=/x true\n");
    assert!(
        e.to_string().contains("unsupported mount type \"nfs\""),
        "{e}"
    );
    let e = error("FROM scratch\nRUN --mount=type=bind,target=/x,uid=1 true\n");
    assert!(
        e.to_string()
            .contains("uid not allowed for \"bind\" type mounts"),
        "{e}"
    );
    let e = error("FROM scratch\nRUN --mount=target=/x,a\\\"b true\n");
    assert!(e.to_string().contains("failed to parse csv mounts"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Arguments and structure

#[test]
fn argument_counts_and_stage_names() {
    assert_eq!(error("FROM\n").kind, E::FromArguments);
    assert_eq!(error("FROM a b\n").kind, E::FromArguments);
    assert_eq!(
        error("FROM alpine AS 1st\n").kind,
        E::InvalidStageName { name: "1st".into() }
    );
    assert!(matches!(
        error("FROM scratch\nCOPY onlyone\n").kind,
        E::Arguments {
            instruction: "COPY",
            ..
        }
    ));
    assert!(matches!(
        error("FROM scratch\nCOPY a <<EOF\nx\nEOF\n").kind,
        E::HeredocDestination {
            instruction: "COPY"
        }
    ));
    assert!(matches!(
        error("FROM scratch\nHEALTHCHECK\n").kind,
        E::Arguments {
            instruction: "HEALTHCHECK",
            ..
        }
    ));
    assert_eq!(
        error("FROM scratch\nHEALTHCHECK CONNECT TCP 7000\n").kind,
        E::HealthcheckType {
            kind: "CONNECT".into()
        }
    );
    assert_eq!(
        error("FROM scratch\nHEALTHCHECK NONE x\n").kind,
        E::HealthcheckNoneArguments
    );
    assert_eq!(error("FROM scratch\nSHELL sh -c\n").kind, E::ShellNotJson);
    assert_eq!(
        error("FROM scratch\nSTOPSIGNAL SIGNOPE\n").kind,
        E::InvalidSignal("SIGNOPE".into())
    );
    assert_eq!(
        error("FROM scratch\nARG =x\n").kind,
        E::BlankName { instruction: "ARG" }
    );
    assert_eq!(error("CMD [\"a\"]\n").kind, E::NoStage);
    assert_eq!(error("ARG A=1\n").kind, E::NoStages);
    assert!(matches!(
        error("FROM Alpine\n").kind,
        E::InvalidReference { .. }
    ));
    assert_eq!(
        error("ARG IMG\nFROM ${IMG}\n").kind,
        E::BlankBaseName {
            name: "${IMG}".into()
        }
    );
    assert!(matches!(
        error("FROM --platform=linux/bogus/v1/x alpine\n").kind,
        E::InvalidPlatform { .. }
    ));
}

#[test]
fn stages_have_names_indices_and_bases() {
    let l = lowered(
        "FROM alpine:3.19 AS Base\nFROM base AS app\nFROM scratch\nFROM app\nFROM b AS a\n",
    );
    let s = &l.stages;
    assert_eq!(s.len(), 5);
    assert_eq!(s[0].name.as_deref(), Some("base"));
    assert_eq!(s[0].base, BaseRef::Image("alpine:3.19".into()));
    assert_eq!(s[1].base, BaseRef::Stage(0));
    assert_eq!(s[2].base, BaseRef::Scratch);
    assert_eq!(s[3].base, BaseRef::Stage(1));
    assert_eq!(s[3].index, 3);
    // FROM refers to earlier stages only: `b` is an image here.
    assert_eq!(s[4].base, BaseRef::Image("b".into()));
    assert_eq!(l.target, 4);
    assert_eq!(l.base_image_names(), ["alpine:3.19", "b"]);
}

// ---------------------------------------------------------------------------------------------
// Scoping

#[test]
fn global_args_are_visible_in_a_stage_only_when_declared_again() {
    let source = "ARG VERSION=1.0\nFROM scratch\nENV A=$VERSION\nARG VERSION\nENV B=$VERSION\n";
    let (l, w) = lowered_with(source, &BuildOptions::default());
    let c = commands(&l.stages[0]);
    assert_eq!(env_pairs(&c[0]), [("A".to_string(), String::new())]);
    assert_eq!(env_pairs(&c[2]), [("B".to_string(), "1.0".to_string())]);
    assert_eq!(
        rules(&w, "UndefinedVar"),
        ["Usage of undefined variable '$VERSION'"]
    );
    assert_eq!(
        w.iter()
            .find(|w| w.rule == "UndefinedVar")
            .unwrap()
            .span
            .line,
        3
    );

    let (l, _) = lowered_with(source, &args(&[("VERSION", "2.0")]));
    assert_eq!(
        env_pairs(&commands(&l.stages[0])[2]),
        [("B".to_string(), "2.0".to_string())]
    );
    assert_eq!(l.meta_args[0].value.as_deref(), Some("2.0"));
    assert!(l.unused_build_args.is_empty());
}

#[test]
fn env_overrides_arg_and_build_args_override_defaults() {
    let source =
        "FROM scratch\nARG CONT_IMG_VER\nENV CONT_IMG_VER=v1.0.0\nRUN echo $CONT_IMG_VER\n";
    let (l, _) = lowered_with(source, &args(&[("CONT_IMG_VER", "v2.0.1")]));
    let c = commands(&l.stages[0]);
    assert_eq!(run_env(&c[2])["CONT_IMG_VER"], "v1.0.0");

    let source = "FROM scratch\nARG CONT_IMG_VER\nENV CONT_IMG_VER=${CONT_IMG_VER:-v1.0.0}\n";
    let (l, _) = lowered_with(source, &BuildOptions::default());
    assert_eq!(env_pairs(&commands(&l.stages[0])[1])[0].1, "v1.0.0");
    let (l, _) = lowered_with(source, &args(&[("CONT_IMG_VER", "v2.0.1")]));
    assert_eq!(env_pairs(&commands(&l.stages[0])[1])[0].1, "v2.0.1");

    let source = "FROM scratch\nARG user1=someuser\nARG buildno=1\nRUN true\n";
    let (l, _) = lowered_with(source, &args(&[("user1", "what")]));
    let env = run_env(&commands(&l.stages[0])[2]);
    assert_eq!(env["user1"], "what");
    assert_eq!(env["buildno"], "1");
    let Command::Arg(arg) = &commands(&l.stages[0])[0] else {
        panic!()
    };
    assert_eq!(arg.args[0].default.as_deref(), Some("someuser"));
    assert_eq!(arg.args[0].value.as_deref(), Some("what"));
}

#[test]
fn an_arg_takes_effect_from_its_line() {
    let source = "FROM scratch\nUSER ${username:-some_user}\nARG username\nUSER $username\n";
    let (l, w) = lowered_with(source, &args(&[("username", "what_user")]));
    let users: Vec<&str> = commands(&l.stages[0])
        .iter()
        .filter_map(|c| match c {
            Command::User(u) => Some(u.user.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(users, ["some_user", "what_user"]);
    assert_eq!(
        rules(&w, "UndefinedVar"),
        ["Usage of undefined variable '$username'"]
    );
    // Declared without a value and without a build argument: unset, but not undefined.
    let (l, w) = lowered_with(source, &BuildOptions::default());
    let Command::User(u) = &commands(&l.stages[0])[2] else {
        panic!()
    };
    assert_eq!(u.user, "");
    assert_eq!(rules(&w, "UndefinedVar").len(), 1);
}

#[test]
fn stage_variables_are_inherited_by_stages_built_on_it() {
    let source = "FROM scratch AS base\nARG A=1\nENV B=2\n\
                  FROM base AS child\nRUN true\n\
                  FROM scratch AS other\nRUN true\n";
    let (l, _) = lowered_with(source, &args(&[]));
    let child = run_env(&commands(&l.stages[1])[0]);
    assert_eq!((child["A"].as_str(), child["B"].as_str()), ("1", "2"));
    let other = run_env(&commands(&l.stages[2])[0]);
    assert!(!other.contains_key("A") && !other.contains_key("B"));
    assert_eq!(
        other["PATH"],
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    );
}

#[test]
fn predefined_platform_args() {
    let options = BuildOptions {
        target_platform: Some(Platform::parse("linux/arm/v7").unwrap()),
        build_platform: Some(Platform::parse("linux/amd64").unwrap()),
        ..BuildOptions::default()
    };
    let source = "FROM --platform=$BUILDPLATFORM golang AS build\n\
                  ARG TARGETOS TARGETARCH TARGETVARIANT TARGETPLATFORM BUILDARCH\n\
                  ENV X=$TARGETOS/$TARGETARCH/$TARGETVARIANT P=$TARGETPLATFORM B=$BUILDARCH\n";
    let (l, w) = lowered_with(source, &options);
    assert_eq!(
        l.stages[0].platform,
        Some(Platform::parse("linux/amd64").unwrap())
    );
    let env = env_pairs(&commands(&l.stages[0])[1]);
    assert_eq!(env[0].1, "linux/arm/v7");
    assert_eq!(env[1].1, "linux/arm/v7");
    assert_eq!(env[2].1, "amd64");
    assert!(w.is_empty(), "{w:?}");
    let predefined: BTreeMap<_, _> = l.predefined_args.iter().cloned().collect();
    assert_eq!(predefined["TARGETARCH"], "arm");
    assert_eq!(predefined["BUILDPLATFORM"], "linux/amd64");

    // Not declared in the stage: not visible.
    let (l, w) = lowered_with("FROM scratch\nENV X=$TARGETARCH\n", &options);
    assert_eq!(env_pairs(&commands(&l.stages[0])[0])[0].1, "");
    assert_eq!(rules(&w, "UndefinedVar").len(), 1);

    // A build argument overrides a predefined one.
    let mut options = options.clone();
    options
        .build_args
        .insert("TARGETARCH".into(), "riscv64".into());
    let (l, _) = lowered_with(
        "FROM scratch\nARG TARGETARCH\nENV X=$TARGETARCH\n",
        &options,
    );
    assert_eq!(env_pairs(&commands(&l.stages[0])[1])[0].1, "riscv64");
}

#[test]
fn proxy_args_are_predefined_and_unused_build_args_are_reported() {
    let options = args(&[
        ("HTTP_PROXY", "http://proxy:3128"),
        ("no_proxy", "localhost"),
        ("USED", "1"),
        ("GLOBAL", "2"),
        ("UNUSED", "3"),
        ("UNREACHED", "4"),
        ("BUILDKIT_INLINE_CACHE", "1"),
    ]);
    let source = "ARG GLOBAL\nFROM alpine:$GLOBAL AS other\nARG UNREACHED\n\
                  FROM alpine:$GLOBAL\nARG USED\nRUN true\n";
    let (l, _) = lowered_with(source, &options);
    assert_eq!(l.unused_build_args, ["UNREACHED", "UNUSED"]);
    assert_eq!(
        l.unused_build_args_warning().as_deref(),
        Some("One or more build-args [UNREACHED UNUSED] were not consumed")
    );
    assert_eq!(
        l.proxy_env,
        [
            ("HTTP_PROXY".to_string(), "http://proxy:3128".to_string()),
            ("no_proxy".to_string(), "localhost".to_string())
        ]
    );
    // Not part of the environment (and so of identities) unless declared.
    let env = run_env(&commands(&l.stages[1])[1]);
    assert!(!env.contains_key("HTTP_PROXY"));
    let (l, _) = lowered_with("FROM scratch\nARG HTTP_PROXY\nRUN true\n", &options);
    assert_eq!(
        run_env(&commands(&l.stages[0])[1])["HTTP_PROXY"],
        "http://proxy:3128"
    );
}

#[test]
fn args_in_from() {
    let source = "ARG TAG=3.19\nARG IMAGE=alpine:$TAG\nFROM $IMAGE\n";
    let l = lowered(source);
    assert_eq!(l.stages[0].base, BaseRef::Image("alpine:3.19".into()));
    let (l, _) = lowered_with(source, &args(&[("TAG", "edge")]));
    assert_eq!(l.stages[0].base_name, "alpine:edge");
    assert!(l.unused_build_args.is_empty(), "TAG is used through IMAGE");

    let (_, w) = lowered_with("FROM node:22${VARIANT} AS js\n", &BuildOptions::default());
    assert_eq!(
        rules(&w, "UndefinedArgInFrom"),
        ["FROM argument 'VARIANT' is not declared"]
    );
    let (_, w) = lowered_with(
        "ARG VARIANT=-alpine\nFROM node:22${VARAINT}\n",
        &BuildOptions::default(),
    );
    assert_eq!(
        rules(&w, "UndefinedArgInFrom"),
        ["FROM argument 'VARAINT' is not declared (did you mean VARIANT?)"]
    );

    // The check uses defaults only: a build argument does not hide it.
    let (_, w) = lowered_with("ARG TAG\nFROM busybox:${TAG}\n", &args(&[("TAG", "1")]));
    assert_eq!(
        rules(&w, "InvalidDefaultArgInFrom"),
        ["Using the global ARGs with default values should produce a valid build."]
    );
    // Without one, the build itself fails.
    assert_eq!(
        error("ARG TAG\nFROM busybox:${TAG}\n").kind,
        E::InvalidReference {
            name: "busybox:".into()
        }
    );
    for ok in [
        "ARG TAG=latest\nFROM busybox:${TAG}\n",
        "ARG VARIANT\nFROM busybox:stable${VARIANT}\n",
        "ARG TAG\nFROM alpine:${TAG:-3.14}\n",
    ] {
        let (_, w) = lowered_with(ok, &BuildOptions::default());
        assert!(rules(&w, "InvalidDefaultArgInFrom").is_empty(), "{ok}");
    }
}

#[test]
fn platform_flag_rules() {
    let (_, w) = lowered_with(
        "FROM --platform=$TARGETPLATFORM alpine AS builder\n",
        &BuildOptions::default(),
    );
    assert_eq!(
        rules(&w, "RedundantTargetPlatform"),
        [
            "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the \
          default behavior"
        ]
    );
    let (_, w) = lowered_with(
        "FROM --platform=linux/amd64 alpine AS base\n",
        &BuildOptions::default(),
    );
    assert_eq!(
        rules(&w, "FromPlatformFlagConstDisallowed"),
        ["FROM --platform flag should not use constant value \"linux/amd64\""]
    );
    let (_, w) = lowered_with(
        "FROM --platform=linux/amd64 alpine AS build_amd64\nFROM --platform=${BUILDPLATFORM} alpine\n",
        &BuildOptions::default(),
    );
    assert!(w.is_empty(), "{w:?}");
}

#[test]
fn secrets_and_relative_workdirs_are_reported() {
    let (_, w) = lowered_with(
        "FROM scratch\nARG AWS_SECRET_ACCESS_KEY\nENV GITHUB_TOKEN=x AUTHOR=me\n",
        &BuildOptions::default(),
    );
    assert_eq!(
        rules(&w, "SecretsUsedInArgOrEnv"),
        [
            "Potentially sensitive data should not be used in the ARG or ENV commands",
            "Potentially sensitive data should not be used in the ARG or ENV commands"
        ]
    );
    let (_, w) = lowered_with(
        "FROM nginx AS web\nWORKDIR usr/share/nginx/html\nWORKDIR more\n",
        &BuildOptions::default(),
    );
    assert_eq!(
        rules(&w, "WorkdirRelativePath"),
        [
            "Relative workdir 'usr/share/nginx/html' can have unexpected results if the base image \
          changes"
        ]
    );
    let (_, w) = lowered_with(
        "FROM nginx AS web\nWORKDIR /usr/share\nFROM web\nWORKDIR nginx\n",
        &BuildOptions::default(),
    );
    assert!(rules(&w, "WorkdirRelativePath").is_empty());
}

#[test]
fn undefined_vars_need_a_known_environment() {
    let mut options = BuildOptions::default();
    options.base_images.insert(
        "alpine".into(),
        BaseImage {
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            onbuild: Vec::new(),
        },
    );
    let source = "FROM alpine AS base\nCOPY $foo .\nENV PATH=$PAHT:/app/bin\nRUN echo $nope\n";
    let (l, w) = lowered_with(source, &options);
    assert_eq!(
        rules(&w, "UndefinedVar"),
        [
            "Usage of undefined variable '$foo'",
            "Usage of undefined variable '$PAHT' (did you mean $PATH?)"
        ]
    );
    assert_eq!(run_env(&commands(&l.stages[0])[2])["PATH"], ":/app/bin");
    // The base image's environment is unknown: nothing can be said.
    let (_, w) = lowered_with(source, &BuildOptions::default());
    assert!(rules(&w, "UndefinedVar").is_empty());
    // The image's environment counts.
    let (_, w) = lowered_with("FROM alpine\nENV P=$PATH\n", &options);
    assert!(w.is_empty(), "{w:?}");
}

#[test]
fn check_directive_skips_scoped_rules() {
    let source = "# check=skip=UndefinedVar\nFROM scratch\nENV A=$B\n";
    let (_, w) = lowered_with(source, &BuildOptions::default());
    assert!(w.is_empty(), "{w:?}");
}

// ---------------------------------------------------------------------------------------------
// Expansion

#[test]
fn expansion_happens_where_docker_expands_and_not_in_run() {
    let source = r#"FROM scratch
ENV DIR=/app NAME=web PORT=8080 SIG=TERM
WORKDIR ${DIR}
COPY --chown=$NAME:$NAME --chmod=644 $DIR/a ${DIR}/b ${DIR}/
ADD --chown=${NAME} --checksum=sha256:${NAME} https://example.com/$NAME.tar.gz /srv/$NAME
LABEL "$NAME.version"="${PORT}" other=$DIR
EXPOSE $PORT ${PORT}/udp 9000-9002
USER $NAME:$NAME
VOLUME ["$DIR/data", "/logs"]
STOPSIGNAL SIG$SIG
RUN echo $DIR
CMD echo $DIR
ENTRYPOINT ["echo", "$DIR"]
COPY \$DIR /quux
"#;
    let l = lowered(source);
    let c = commands(&l.stages[0]);
    let Command::Workdir(w) = &c[1] else { panic!() };
    assert_eq!(w.path, "/app");
    let Command::Copy(copy) = &c[2] else { panic!() };
    assert_eq!(copy.chown.as_deref(), Some("web:web"));
    assert_eq!(copy.chmod, Some(Chmod::Octal(0o644)));
    assert_eq!(copy.sources, ["/app/a", "/app/b"]);
    assert_eq!(copy.dest, "/app/");
    let Command::Add(add) = &c[3] else { panic!() };
    assert_eq!(add.chown.as_deref(), Some("web"));
    assert_eq!(add.checksum.as_deref(), Some("sha256:web"));
    assert_eq!(add.sources, ["https://example.com/web.tar.gz"]);
    assert_eq!(add.dest, "/srv/web");
    let Command::Label(label) = &c[4] else {
        panic!()
    };
    assert_eq!(
        label.pairs,
        [
            ("web.version".to_string(), "8080".to_string()),
            ("other".to_string(), "/app".to_string())
        ]
    );
    let Command::Expose(expose) = &c[5] else {
        panic!()
    };
    let ports: Vec<(u16, u16, Protocol)> = expose
        .ports
        .iter()
        .map(|p| (p.start, p.end, p.protocol))
        .collect();
    assert_eq!(
        ports,
        [
            (8080, 8080, Protocol::Tcp),
            (8080, 8080, Protocol::Udp),
            (9000, 9002, Protocol::Tcp)
        ]
    );
    assert_eq!(
        expose.ports[2].keys().collect::<Vec<_>>(),
        ["9000/tcp", "9001/tcp", "9002/tcp"]
    );
    let Command::User(user) = &c[6] else { panic!() };
    assert_eq!(user.user, "web:web");
    let Command::Volume(volume) = &c[7] else {
        panic!()
    };
    assert_eq!(volume.paths, ["/app/data", "/logs"]);
    let Command::StopSignal(sig) = &c[8] else {
        panic!()
    };
    assert_eq!(sig.signal, "SIGTERM");
    let Command::Run(run) = &c[9] else { panic!() };
    assert_eq!(run.command, CommandLine::Shell("echo $DIR".into()));
    let Command::Cmd(cmd) = &c[10] else { panic!() };
    assert_eq!(cmd.command, CommandLine::Shell("echo $DIR".into()));
    let Command::Entrypoint(ep) = &c[11] else {
        panic!()
    };
    assert_eq!(
        ep.command,
        CommandLine::Exec(vec!["echo".into(), "$DIR".into()])
    );
    let Command::Copy(copy) = &c[12] else {
        panic!()
    };
    assert_eq!(copy.sources, ["$DIR"]);
}

#[test]
fn env_values_use_the_scope_before_the_instruction() {
    let l = lowered("FROM scratch\nENV abc=hello\nENV abc=bye def=$abc\nENV ghi=$abc\n");
    let c = commands(&l.stages[0]);
    assert_eq!(
        env_pairs(&c[1])[1],
        ("def".to_string(), "hello".to_string())
    );
    assert_eq!(env_pairs(&c[2])[0], ("ghi".to_string(), "bye".to_string()));
}

#[test]
fn every_modifier_is_available() {
    let source = "FROM scratch\nENV V=foobarbaz E=\n\
                  WORKDIR /${V#f*b}/${V##f*b}/${V%b*}/${V%%b*}/${V/ba/fo}/${V//ba/fo}\n\
                  WORKDIR /${E:-d}/${E-d}/${V:+set}/${U+set}/${U:-unset}\n";
    let l = lowered(source);
    let c = commands(&l.stages[0]);
    let Command::Workdir(a) = &c[1] else { panic!() };
    assert_eq!(a.path, "/arbaz/az/foobar/foo/fooforbaz/fooforfoz");
    let Command::Workdir(b) = &c[2] else { panic!() };
    assert_eq!(b.path, "/d//set//unset");

    let e = error("FROM scratch\nWORKDIR ${REQUIRED:?must be set}\n");
    assert!(matches!(e.kind, E::Expansion(_)));
    assert!(e.to_string().contains("REQUIRED: must be set"), "{e}");
    let e = error("FROM scratch\nWORKDIR \"/unterminated\n");
    assert!(matches!(e.kind, E::Expansion(_)));
    // Nesting is bounded: the lexer recurses once per level.
    let deep = format!("{}x{}", "${A:-".repeat(5000), "}".repeat(5000));
    let e = error(&format!("FROM scratch\nWORKDIR {deep}\n"));
    assert_eq!(e.kind, E::NestedTooDeep { limit: 100 });
    let nested = format!("{}x{}", "${A:-".repeat(100), "}".repeat(100));
    let l = lowered(&format!("FROM scratch\nWORKDIR /{nested}\n"));
    let Command::Workdir(w) = &commands(&l.stages[0])[0] else {
        panic!()
    };
    assert_eq!(w.path, "/x");
}

#[test]
fn heredoc_sources_expand_unless_quoted() {
    let source = "FROM scratch\nENV NAME=world\nCOPY <<EOF <<\"RAW\" /dest/\nhello $NAME \"q\"\nEOF\nraw $NAME\nRAW\n";
    let l = lowered(source);
    let Command::Copy(copy) = &commands(&l.stages[0])[1] else {
        panic!()
    };
    assert!(copy.sources.is_empty());
    assert_eq!(copy.heredocs.len(), 2);
    assert_eq!(copy.heredocs[0].name, "EOF");
    assert_eq!(copy.heredocs[0].data, "hello world \"q\"\n");
    assert_eq!(copy.heredocs[1].data, "raw $NAME\n");
    let l = lowered("FROM scratch\nRUN <<EOF\necho $HOME\nEOF\n");
    let Command::Run(run) = &commands(&l.stages[0])[0] else {
        panic!()
    };
    assert_eq!(run.heredocs[0].content, "echo $HOME\n");
}

#[test]
fn healthchecks_are_typed() {
    let l = lowered(
        "FROM scratch\nHEALTHCHECK --interval=5m --timeout=3s --retries=3 CMD curl -f http://localhost/\n\
         HEALTHCHECK NONE\nHEALTHCHECK --start-period=0s CMD [\"check\"]\n",
    );
    let c = commands(&l.stages[0]);
    let Command::Healthcheck(h) = &c[0] else {
        panic!()
    };
    assert_eq!(
        h.check,
        HealthcheckKind::Cmd {
            command: CommandLine::Shell("curl -f http://localhost/".into()),
            interval: Some(Duration::from_secs(300)),
            timeout: Some(Duration::from_secs(3)),
            start_period: None,
            start_interval: None,
            retries: Some(3),
        }
    );
    let Command::Healthcheck(h) = &c[1] else {
        panic!()
    };
    assert_eq!(h.check, HealthcheckKind::None);
    let Command::Healthcheck(h) = &c[2] else {
        panic!()
    };
    assert!(
        matches!(&h.check, HealthcheckKind::Cmd { command: CommandLine::Exec(v), start_period: None, .. } if v == &["check"])
    );
}

// ---------------------------------------------------------------------------------------------
// ONBUILD

#[test]
fn onbuild_triggers_run_in_stages_built_on_the_stage() {
    let source = "FROM scratch AS build\n\
                  FROM scratch AS base\nARG Y=base\n\
                  ONBUILD ENV X=$Y\nONBUILD COPY --from=build /out /out\n\
                  FROM base AS child\n\
                  FROM child AS grandchild\n";
    let l = lowered(source);
    let base = &l.stages[1];
    let Command::OnBuild(on) = &commands(base)[1] else {
        panic!()
    };
    assert_eq!(on.expression, "ENV X=$Y");
    assert!(base.triggers.is_empty());
    let child = &l.stages[2];
    assert_eq!(child.triggers.len(), 2);
    assert_eq!(
        env_pairs(&child.triggers[0]),
        [("X".to_string(), "base".to_string())]
    );
    assert_eq!(child.triggers[0].span().line, 4);
    let Command::Copy(copy) = &child.triggers[1] else {
        panic!()
    };
    assert_eq!(copy.from, Some(FromRef::Stage(0)));
    assert!(
        l.stages[0].reachable,
        "the trigger makes the build stage needed"
    );
    // Triggers do not pass on to grandchildren.
    assert!(l.stages[3].triggers.is_empty());

    assert_eq!(
        error("FROM scratch\nONBUILD ONBUILD RUN x\n").kind,
        E::OnbuildChain
    );
    assert_eq!(
        error("FROM scratch\nONBUILD FROM alpine\n").kind,
        E::OnbuildForbidden {
            instruction: "FROM".into()
        }
    );
    // A trigger is checked when it runs.
    let e = error("FROM scratch AS a\nONBUILD COPY --bogus x y\nFROM a\n");
    assert!(matches!(e.kind, E::UnknownFlag { .. }));
    assert_eq!(e.span().unwrap().line, 2);
}

#[test]
fn base_image_triggers_run_first() {
    let mut options = BuildOptions::default();
    options.base_images.insert(
        "builder:1".into(),
        BaseImage {
            env: vec![("GOPATH".into(), "/go".into())],
            onbuild: vec!["COPY . $GOPATH/src".into(), "RUN make".into()],
        },
    );
    let (l, _) = lowered_with("FROM builder:1\nRUN true\n", &options);
    let stage = &l.stages[0];
    assert_eq!(stage.triggers.len(), 2);
    let Command::Copy(copy) = &stage.triggers[0] else {
        panic!()
    };
    assert_eq!(copy.dest, "/go/src");
    assert_eq!(stage.steps().count(), 3);

    options.base_images.get_mut("builder:1").unwrap().onbuild = vec!["FROM x".into()];
    let e = error_with("FROM builder:1\n", &options);
    assert!(matches!(e.kind, E::InvalidTrigger { .. }), "{e}");
}

// ---------------------------------------------------------------------------------------------
// --from references

#[test]
fn from_references_name_index_image_and_context() {
    let source = "FROM alpine AS Build\n\
                  FROM scratch\nARG SRC=build\n\
                  COPY --from=build /a /a\nCOPY --from=0 /b /b\nCOPY --from=nginx:latest /c /c\n\
                  COPY --from=${SRC} /d /d\nCOPY --from=context /e /e\nCOPY /f /f\n\
                  RUN --mount=from=BUILD,target=/x --mount=type=cache,from=redis,target=/y \
                  --mount=type=tmpfs,from=build,target=/z true\n";
    let l = lowered(source);
    let froms: Vec<Option<FromRef>> = commands(&l.stages[1])
        .iter()
        .filter_map(|c| match c {
            Command::Copy(c) => Some(c.from.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        froms,
        [
            Some(FromRef::Stage(0)),
            Some(FromRef::Stage(0)),
            Some(FromRef::Image("nginx:latest".into())),
            Some(FromRef::Stage(0)),
            Some(FromRef::Context),
            None,
        ]
    );
    let Command::Run(run) = commands(&l.stages[1]).last().unwrap() else {
        panic!()
    };
    let mounts: Vec<Option<FromRef>> = run.mounts.iter().map(|m| m.from_ref.clone()).collect();
    assert_eq!(
        mounts,
        [
            Some(FromRef::Stage(0)),
            Some(FromRef::Image("redis".into())),
            None
        ]
    );
    assert_eq!(
        l.stages[1]
            .dependencies()
            .iter()
            .map(|(d, _)| *d)
            .collect::<Vec<_>>(),
        [0, 0, 0, 0]
    );

    let e = error("FROM alpine\nFROM scratch\nCOPY --from=2 /a /a\n");
    assert_eq!(e.kind, E::InvalidStageIndex { index: 2 });
    assert_eq!(e.span().unwrap().column, 6);
    let e = error("FROM alpine\nFROM scratch\nCOPY --from=-1 /a /a\n");
    assert_eq!(e.kind, E::InvalidStageIndex { index: -1 });
    let e = error("FROM scratch\nCOPY --from=Not/Valid /a /a\n");
    assert_eq!(
        e.kind,
        E::InvalidReference {
            name: "Not/Valid".into()
        }
    );
}

// ---------------------------------------------------------------------------------------------
// Target and unreachable stages

#[test]
fn unreachable_stages_do_not_fail_the_build() {
    let source = "FROM scratch AS broken\nWORKDIR ${X:?must be set}\nENV A=$UNDEFINED\n\
                  FROM scratch AS ok\nENV B=$ALSO_UNDEFINED\n";
    let (l, w) = lowered_with(source, &BuildOptions::default());
    assert!(!l.stages[0].reachable);
    assert!(l.stages[1].reachable);
    assert!(matches!(
        l.stages[0].error.as_deref().map(|e| &e.kind),
        Some(E::Expansion(_))
    ));
    assert!(l.stages[0].commands.is_empty());
    assert_eq!(
        rules(&w, "UndefinedVar"),
        ["Usage of undefined variable '$ALSO_UNDEFINED'"]
    );

    let options = BuildOptions {
        target: Some("BROKEN".into()),
        ..BuildOptions::default()
    };
    let e = error_with(source, &options);
    assert!(matches!(e.kind, E::Expansion(_)));
    assert_eq!(e.span().unwrap().line, 2);

    let options = BuildOptions {
        target: Some("brokn".into()),
        ..BuildOptions::default()
    };
    let e = error_with(source, &options);
    assert_eq!(
        e.kind,
        E::UnknownTarget {
            name: "brokn".into(),
            suggestion: Some("broken".into())
        }
    );
    assert!(e.span().is_none());
    assert!(e.to_string().contains("hint: did you mean broken?"), "{e}");
}

#[test]
fn errors_render_with_the_real_source_line() {
    let source = "FROM scratch\nCOPY \\\n  --frm=x a b\n";
    let e = error(source);
    assert_eq!(e.span().unwrap().line, 3);
    let e = e.with_source(source);
    assert_eq!(
        e.to_string(),
        "Dockerfile:3:3: unknown flag: --frm\n  |\n3 |   --frm=x a b\n  |   ^^^^^^^\n  = hint: \
         did you mean --from?"
    );
}

// ---------------------------------------------------------------------------------------------
// BuildKit's reference Dockerfiles

fn testfiles() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/specs/dockerfile/buildkit-testdata/testfiles");
    assert!(
        dir.is_dir(),
        "BuildKit reference data not found at {}: the shared/ folder must sit next to the \
         repository checkout",
        dir.display()
    );
    let mut cases: Vec<(String, String)> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("directory entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = fs::read_to_string(path.join("Dockerfile"))
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            (name, text)
        })
        .collect();
    cases.sort();
    cases
}

/// The error a reference case must fail with, and its line.
type Expected = (fn(&E) -> bool, usize);

#[test]
fn buildkit_testfiles_lower_or_fail_as_expected() {
    let cases = testfiles();
    assert_eq!(cases.len(), 33);
    let mut failures = Vec::new();
    for (name, source) in &cases {
        let dockerfile = parser::parse(source, "Dockerfile")
            .unwrap_or_else(|e| panic!("{name} does not parse:\n{e}"));
        let mut linter = Linter::new(dockerfile.check.clone());
        let result = lower(&dockerfile, &BuildOptions::default(), &mut linter);
        let expected: Option<Expected> = match name.as_str() {
            // `COPY --user=me`: COPY has no --user.
            "flags" => Some((
                |k| matches!(k, E::UnknownFlag { flag, .. } if flag == "user"),
                3,
            )),
            // A bare `HEALTHCHECK`.
            "health" => Some((
                |k| {
                    matches!(
                        k,
                        E::Arguments {
                            instruction: "HEALTHCHECK",
                            ..
                        }
                    )
                },
                4,
            )),
            // `CMD` with no `FROM`.
            "json"
            | "jeztah-invalid-json-json-inside-string"
            | "jeztah-invalid-json-json-inside-string-double"
            | "jeztah-invalid-json-single-quotes"
            | "jeztah-invalid-json-unterminated-bracket"
            | "jeztah-invalid-json-unterminated-string" => Some((|k| *k == E::NoStage, 1)),
            // `ENV name='a\'b'`: single quotes cannot be escaped, the last quote opens a string
            // that never ends.
            "env" => Some((|k| matches!(k, E::Expansion(_)), 12)),
            // `ADD \conf\\" /.znc`: an unterminated double quote.
            "escapes" => Some((|k| matches!(k, E::Expansion(_)), 6)),
            _ => None,
        };
        match (result, expected) {
            (Ok(l), None) => {
                if l.stages.is_empty() || l.stages.iter().any(|s| s.error.is_some()) {
                    failures.push(format!("{name}: lowered with a failed stage"));
                }
            }
            (Ok(_), Some(_)) => failures.push(format!("{name}: lowered but must fail")),
            (Err(e), None) => failures.push(format!("{name}: {e}")),
            (Err(e), Some((is_expected, line))) => {
                if !is_expected(&e.kind) || e.span().map(|s| s.line) != Some(line) {
                    failures.push(format!("{name}: unexpected error (want line {line}):\n{e}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn lowers_a_large_dockerfile() {
    let mut source = String::from("ARG BASE=alpine:3.19\nFROM ${BASE} AS base\nARG V=1\n");
    let mut lines = 3;
    let mut stage = 0;
    while lines < 10_000 {
        if lines % 500 == 0 {
            stage += 1;
            source.push_str(&format!("FROM base AS s{stage}\n"));
        }
        source.push_str(match lines % 7 {
            0 => "ENV APP_HOME=/srv/${V} HOME=/root\n",
            1 => "RUN apt-get update && apt-get install -y curl ca-certificates\n",
            2 => "COPY --chown=app:app --chmod=644 src/${V}/file.txt /app/${V}/\n",
            3 => "WORKDIR /app/${V:-default}\n",
            4 => "LABEL org.example.version=${V} org.example.name=\"demo app\"\n",
            5 => "RUN --mount=type=cache,target=/root/.cache,id=${V} make build\n",
            _ => "ARG V=2\n",
        });
        lines += 1;
    }
    // Speed is measured by `cargo bench -p berth-benches --bench dockerfile`, not here.
    let dockerfile = parser::parse(&source, "Dockerfile").unwrap();
    let mut linter = Linter::new(dockerfile.check.clone());
    let lowered = lower(&dockerfile, &BuildOptions::default(), &mut linter).unwrap();
    assert_eq!(lowered.stages.len(), stage + 1);
}

// ---------------------------------------------------------------------------------------------
// Robustness: whatever the text, lowering and the graph return, they never panic.

const FRAGMENTS: &[&str] = &[
    "FROM ",
    "FROM scratch AS a",
    "FROM a AS b",
    "FROM --platform=$BUILDPLATFORM alpine AS c",
    "COPY ",
    "ADD ",
    "RUN ",
    "ENV ",
    "ARG ",
    "LABEL ",
    "WORKDIR ",
    "USER ",
    "VOLUME ",
    "EXPOSE ",
    "STOPSIGNAL ",
    "HEALTHCHECK ",
    "ONBUILD ",
    "SHELL ",
    "CMD ",
    "MAINTAINER ",
    "--from=a ",
    "--from=0 ",
    "--from=9 ",
    "--from=$X ",
    "--chmod=7 ",
    "--chmod=u+x ",
    "--mount=type=cache,target=/x ",
    "--mount=from=b,target=/y ",
    "--mount=type=secret ",
    "--link ",
    "--link=maybe ",
    "--platform=",
    "--retries=-1 ",
    "--interval=1ms ",
    "--x ",
    "$X",
    "${X:-d}",
    "${X:?}",
    "${X#*}",
    "${X//a/b}",
    "${",
    "\\",
    "\"",
    "'",
    "=",
    "A=1 ",
    "NONE",
    "CMD",
    "[\"a\"]",
    "<<EOF",
    "80/tcp ",
    "1-65535 ",
    "SIGTERM",
    "/a ",
    "b ",
    " ",
];

proptest::proptest! {
    #[test]
    fn never_panics(lines in proptest::collection::vec(
        proptest::collection::vec(proptest::sample::select(FRAGMENTS), 1..6), 1..12)
    ) {
        let source: String = lines
            .iter()
            .map(|parts| parts.concat() + "\n")
            .collect();
        if let Ok(dockerfile) = parser::parse(&source, "Dockerfile") {
            let mut linter = Linter::new(dockerfile.check.clone());
            let options = args(&[("X", "v")]);
            if let Ok(lowered) = lower(&dockerfile, &options, &mut linter) {
                let _ = berth_builder::graph::Graph::build(&lowered, None);
                for stage in &lowered.stages {
                    if let Some(name) = &stage.name {
                        let _ = berth_builder::graph::Graph::build(&lowered, Some(name));
                    }
                }
            } else if let Err(e) = lower(&dockerfile, &options, &mut linter) {
                let _ = e.with_source(&source).to_string();
            }
        }
    }
}
