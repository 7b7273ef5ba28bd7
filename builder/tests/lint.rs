//! The syntax-tree build checks against the good and bad examples of each rule's documentation
//! (`shared/specs/dockerfile/rules/*.md`), BuildKit's behaviour around them, the `# check=`
//! directive, `--target` scoping and the `docker build --check` output.

use berth_builder::lint::{self, Linter, Report, Rule, Scope, UnknownTarget};
use berth_builder::parser::{self, parse_check_options};

/// Rule, line and message of each finding, in the order the linter holds them.
fn findings(source: &str) -> Vec<(String, usize, String)> {
    findings_in(source, &Scope::all())
}

fn findings_in(source: &str, scope: &Scope) -> Vec<(String, usize, String)> {
    let tree = parser::parse(source, "Dockerfile").expect("the example parses");
    let mut linter = Linter::new(tree.check.clone());
    lint::check_scoped(&tree, source, scope, &mut linter).expect("the target exists");
    linter
        .into_warnings()
        .into_iter()
        .map(|w| (w.rule, w.span.line, w.message))
        .collect()
}

/// Rule and line of each finding.
fn rules(source: &str) -> Vec<(String, usize)> {
    findings(source)
        .into_iter()
        .map(|(rule, line, _)| (rule, line))
        .collect()
}

fn none() -> Vec<(String, usize, String)> {
    Vec::new()
}

fn one(rule: Rule, line: usize, message: &str) -> Vec<(String, usize, String)> {
    vec![(rule.name().to_string(), line, message.to_string())]
}

fn report(source: &str) -> Report {
    let tree = parser::parse(source, "Dockerfile").expect("the example parses");
    let mut linter = Linter::new(tree.check.clone());
    lint::check(&tree, source, &mut linter);
    Report::new(linter, source)
}

const EXPERIMENTAL_DESCRIPTIONS: &str = "# check=experimental=InvalidDefinitionDescription\n";

mod stage_name_casing {
    use super::*;

    #[test]
    fn bad() {
        assert_eq!(
            findings("FROM alpine AS BuilderBase\n"),
            one(
                Rule::StageNameCasing,
                1,
                "Stage name 'BuilderBase' should be lowercase"
            )
        );
    }

    #[test]
    fn good() {
        assert_eq!(findings("FROM alpine AS builder-base\n"), none());
    }
}

mod from_as_casing {
    use super::*;

    #[test]
    fn bad() {
        assert_eq!(
            findings("FROM debian:latest as builder\n"),
            one(
                Rule::FromAsCasing,
                1,
                "'as' and 'FROM' keywords' casing do not match"
            )
        );
        assert_eq!(
            findings("\nfrom scratch AS base\n\nfrom scratch as base2\n"),
            one(
                Rule::FromAsCasing,
                2,
                "'AS' and 'from' keywords' casing do not match"
            )
        );
    }

    #[test]
    fn good() {
        assert_eq!(findings("FROM debian:latest AS deb-builder\n"), none());
        assert_eq!(findings("from debian:latest as deb-builder\n"), none());
    }

    #[test]
    fn a_mixed_case_from_is_left_to_instruction_casing() {
        assert_eq!(
            rules("From scratch as base\nFROM scratch AS base2\n"),
            [(Rule::ConsistentInstructionCasing.name().to_string(), 1)]
        );
    }
}

mod no_empty_continuation {
    use super::*;

    #[test]
    fn bad() {
        assert_eq!(
            findings("FROM alpine\nEXPOSE \\\n\n80\n"),
            one(Rule::NoEmptyContinuation, 4, "Empty continuation line")
        );
    }

    #[test]
    fn the_description_example_is_found_on_the_last_line() {
        assert_eq!(
            findings("FROM alpine\nRUN apk add \\\n\n    gnupg \\\n\n    curl\n"),
            one(Rule::NoEmptyContinuation, 6, "Empty continuation line")
        );
    }

    #[test]
    fn good() {
        assert_eq!(findings("FROM alpine\nEXPOSE \\\n# Port\n80\n"), none());
    }

    #[test]
    fn here_document_bodies_are_not_part_of_the_location() {
        assert_eq!(
            rules("FROM alpine\nRUN cat <<EOF \\\n\n  > /x\nhello\nEOF\n"),
            [(Rule::NoEmptyContinuation.name().to_string(), 4)]
        );
    }

    #[test]
    fn skip_applies() {
        assert_eq!(
            findings("# check=skip=NoEmptyContinuation\nFROM alpine\nEXPOSE \\\n\n80\n"),
            none()
        );
    }
}

mod consistent_instruction_casing {
    use super::*;

    #[test]
    fn bad() {
        // No keyword is all lower or all upper case: a tie, and ties count as upper case.
        let msg = |kw: &str| {
            format!("Command '{kw}' should match the case of the command majority (uppercase)")
        };
        let name = Rule::ConsistentInstructionCasing.name().to_string();
        assert_eq!(
            findings(
                "From alpine\nRun echo hello > /greeting.txt\nEntRYpOiNT [\"cat\", \"/greeting.txt\"]\n"
            ),
            [
                (name.clone(), 1, msg("From")),
                (name.clone(), 2, msg("Run")),
                (name, 3, msg("EntRYpOiNT")),
            ]
        );
    }

    #[test]
    fn good() {
        assert_eq!(
            findings(
                "FROM alpine\nRUN echo hello > /greeting.txt\nENTRYPOINT [\"cat\", \"/greeting.txt\"]\n"
            ),
            none()
        );
        assert_eq!(
            findings(
                "from alpine\nrun echo hello > /greeting.txt\nentrypoint [\"cat\", \"/greeting.txt\"]\n"
            ),
            none()
        );
    }

    #[test]
    fn the_majority_decides() {
        assert_eq!(
            findings("FROM scratch\ncopy Dockerfile /foo\nCOPY Dockerfile /bar\n"),
            one(
                Rule::ConsistentInstructionCasing,
                2,
                "Command 'copy' should match the case of the command majority (uppercase)"
            )
        );
        assert_eq!(
            findings("FROM scratch\ncopy Dockerfile /foo\ncopy Dockerfile /bar\ncopy x /baz\n"),
            one(
                Rule::ConsistentInstructionCasing,
                1,
                "Command 'FROM' should match the case of the command majority (lowercase)"
            )
        );
        assert_eq!(
            findings("frOM scratch as base\nfrom scratch as base2\n"),
            one(
                Rule::ConsistentInstructionCasing,
                1,
                "Command 'frOM' should match the case of the command majority (lowercase)"
            )
        );
    }

    #[test]
    fn global_args_do_not_count() {
        assert_eq!(
            findings("arg A=1\nARG B=2\nFROM scratch\nCOPY a /\n"),
            none()
        );
    }

    #[test]
    fn here_documents_are_not_instructions() {
        assert_eq!(findings("FROM alpine\nRUN <<'EOT'\nenv\nEOT\n"), none());
    }
}

mod duplicate_stage_name {
    use super::*;

    #[test]
    fn bad() {
        assert_eq!(
            findings(
                "FROM debian:latest AS builder\nRUN apt-get update; apt-get install -y curl\n\nFROM golang:latest AS builder\n"
            ),
            one(
                Rule::DuplicateStageName,
                4,
                "Duplicate stage name \"builder\", stage names should be unique"
            )
        );
    }

    #[test]
    fn good() {
        assert_eq!(
            findings(
                "FROM debian:latest AS deb-builder\nRUN apt-get update; apt-get install -y curl\n\nFROM golang:latest AS go-builder\n"
            ),
            none()
        );
    }

    #[test]
    fn names_compare_lower_cased() {
        assert_eq!(
            rules("FROM a AS b\nFROM a AS B\n"),
            [
                (Rule::StageNameCasing.name().to_string(), 2),
                (Rule::DuplicateStageName.name().to_string(), 2),
            ]
        );
    }
}

mod reserved_stage_name {
    use super::*;

    #[test]
    fn bad() {
        let name = Rule::ReservedStageName.name().to_string();
        assert_eq!(
            findings("FROM alpine AS scratch\nFROM alpine AS context\n"),
            [
                (
                    name.clone(),
                    1,
                    "Stage name should not use the same name as reserved stage \"scratch\""
                        .to_string()
                ),
                (
                    name,
                    2,
                    "Stage name should not use the same name as reserved stage \"context\""
                        .to_string()
                ),
            ]
        );
    }

    #[test]
    fn good() {
        assert_eq!(findings("FROM alpine AS builder\n"), none());
        assert_eq!(findings("FROM scratch\nFROM scratch AS a\n"), none());
    }
}

mod json_args_recommended {
    use super::*;

    #[test]
    fn bad() {
        assert_eq!(
            findings(
                "FROM alpine\nENTRYPOINT my-program start\n# entrypoint becomes: /bin/sh -c my-program start\n"
            ),
            one(
                Rule::JSONArgsRecommended,
                2,
                "JSON arguments recommended for ENTRYPOINT to prevent unintended behavior related to OS signals"
            )
        );
        assert_eq!(
            findings("FROM scratch\nCMD mycommand\n"),
            one(
                Rule::JSONArgsRecommended,
                2,
                "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals"
            )
        );
    }

    #[test]
    fn good() {
        assert_eq!(
            findings(
                "FROM alpine\nENTRYPOINT [\"my-program\", \"start\"]\n# entrypoint becomes: my-program start\n"
            ),
            none()
        );
    }

    #[test]
    fn good_wrapper_script() {
        assert_eq!(
            findings(
                "FROM alpine\nRUN apk add bash\nCOPY --chmod=755 <<EOT /entrypoint.sh\n#!/usr/bin/env bash\nset -e\nmy-background-process &\nmy-program start\nEOT\nENTRYPOINT [\"/entrypoint.sh\"]\n"
            ),
            none()
        );
    }

    #[test]
    fn good_explicit_shell() {
        assert_eq!(
            findings(
                "FROM alpine\nRUN apk add bash\nSHELL [\"/bin/bash\", \"-c\"]\nENTRYPOINT echo \"hello world\"\n"
            ),
            none()
        );
    }

    #[test]
    fn a_shell_set_in_the_base_stage_counts() {
        assert_eq!(
            findings(
                "FROM scratch AS base\nSHELL [\"/usr/bin/customshell\"]\n\nFROM base\nCMD mycommand\n"
            ),
            none()
        );
        assert_eq!(
            rules(
                "FROM scratch AS other\nSHELL [\"/usr/bin/customshell\"]\n\nFROM scratch\nCMD mycommand\n"
            ),
            [(Rule::JSONArgsRecommended.name().to_string(), 5)]
        );
    }

    #[test]
    fn the_keyword_is_quoted_as_written_and_only_the_shell_form_counts() {
        assert_eq!(
            findings("from scratch\ncmd mycommand\n"),
            one(
                Rule::JSONArgsRecommended,
                2,
                "JSON arguments recommended for cmd to prevent unintended behavior related to OS signals"
            )
        );
        assert_eq!(
            findings("FROM scratch\nRUN mycommand\nHEALTHCHECK CMD check\nONBUILD CMD x\n"),
            none()
        );
    }
}

mod maintainer_deprecated {
    use super::*;

    #[test]
    fn bad() {
        let expected = one(
            Rule::MaintainerDeprecated,
            1,
            "Maintainer instruction is deprecated in favor of using label",
        );
        assert_eq!(findings("MAINTAINER moby@example.com\n"), expected);
        assert_eq!(rules("FROM scratch\nMAINTAINER me@example.org\n")[0].1, 2);
    }

    #[test]
    fn good() {
        assert_eq!(
            findings("LABEL org.opencontainers.image.authors=\"moby@example.com\"\n"),
            none()
        );
    }
}

mod multiple_instructions_disallowed {
    use super::*;

    fn message(instruction: &str) -> String {
        format!(
            "Multiple {instruction} instructions should not be used in the same stage because only the last one will be used"
        )
    }

    #[test]
    fn bad() {
        assert_eq!(
            findings(
                "FROM alpine\nENTRYPOINT [\"echo\", \"Hello, Norway!\"]\nENTRYPOINT [\"echo\", \"Hello, Sweden!\"]\n# Only \"Hello, Sweden!\" will be printed\n"
            ),
            one(
                Rule::MultipleInstructionsDisallowed,
                2,
                &message("ENTRYPOINT")
            )
        );
    }

    #[test]
    fn good() {
        assert_eq!(
            findings("FROM alpine\nENTRYPOINT [\"echo\", \"Hello, Norway!\\nHello, Sweden!\"]\n"),
            none()
        );
    }

    #[test]
    fn good_healthcheck_cmd_is_not_a_cmd() {
        assert_eq!(
            findings(
                "FROM python:alpine\nRUN apk add curl\nHEALTHCHECK --interval=1s --timeout=3s \\\n  CMD [\"curl\", \"-f\", \"http://localhost:8080\"]\nCMD [\"python\", \"-m\", \"http.server\", \"8080\"]\n"
            ),
            none()
        );
    }

    #[test]
    fn the_earlier_instructions_are_reported() {
        let name = Rule::MultipleInstructionsDisallowed.name().to_string();
        assert_eq!(
            findings(
                "FROM scratch\nENTRYPOINT [\"/myapp\"]\nCMD [\"/myapp\"]\nHEALTHCHECK CMD [\"/myapp\"]\nCOPY <<EOF /a.txt\nHello, World!\nEOF\nENTRYPOINT [\"/myotherapp\"]\nCMD [\"/myotherapp\"]\nHEALTHCHECK CMD [\"/myotherapp\"]\nCMD [\"/last\"]\n"
            ),
            [
                (name.clone(), 2, message("ENTRYPOINT")),
                (name.clone(), 3, message("CMD")),
                (name.clone(), 4, message("HEALTHCHECK")),
                (name, 9, message("CMD")),
            ]
        );
    }

    #[test]
    fn each_stage_counts_on_its_own() {
        assert_eq!(
            findings(
                "FROM scratch AS a\nENTRYPOINT [\"/myapp\"]\nCMD [\"/myapp\"]\nHEALTHCHECK CMD [\"/myapp\"]\n\nFROM a AS b\nENTRYPOINT [\"/myotherapp\"]\nCMD [\"/myotherapp\"]\nHEALTHCHECK CMD [\"/myotherapp\"]\n"
            ),
            none()
        );
    }
}

mod legacy_key_value_format {
    use super::*;

    #[test]
    fn bad_env_multi_line() {
        // The documentation's example has no FROM; BuildKit checks ENV only in a stage.
        assert_eq!(
            findings("FROM alpine\nENV DEPS \\\n    curl \\\n    git \\\n    make\n"),
            one(
                Rule::LegacyKeyValueFormat,
                2,
                "\"ENV key=value\" should be used instead of legacy \"ENV key value\" format"
            )
        );
    }

    #[test]
    fn good_env_multi_line() {
        assert_eq!(
            findings("FROM alpine\nENV DEPS=\"\\\n    curl \\\n    git \\\n    make\"\n"),
            none()
        );
        assert_eq!(
            findings("FROM alpine\nENV DEPS=\"\\\ncurl \\\ngit \\\nmake\"\n"),
            none()
        );
    }

    #[test]
    fn arg_with_a_space_declares_two_args() {
        // The documentation lists `ARG foo bar` as bad, but BuildKit reads it as two ARGs
        // without defaults and does not report it; berth does as BuildKit does.
        assert_eq!(findings("FROM alpine\nARG foo bar\n"), none());
        assert_eq!(findings("FROM alpine\nARG foo=bar\n"), none());
    }

    #[test]
    fn env_and_label() {
        let name = Rule::LegacyKeyValueFormat.name().to_string();
        assert_eq!(
            findings("FROM scratch\nENV testkey value\nLABEL key value\nENV a=b\nLABEL c=d\n"),
            [
                (
                    name.clone(),
                    2,
                    "\"ENV key=value\" should be used instead of legacy \"ENV key value\" format"
                        .to_string()
                ),
                (
                    name,
                    3,
                    "\"LABEL key=value\" should be used instead of legacy \"LABEL key value\" format"
                        .to_string()
                ),
            ]
        );
    }
}

mod expose_proto_casing {
    use super::*;

    #[test]
    fn bad() {
        assert_eq!(
            findings("FROM alpine\nEXPOSE 80/TcP\n"),
            one(
                Rule::ExposeProtoCasing,
                2,
                "Defined protocol '80/TcP' in EXPOSE instruction should be lowercase"
            )
        );
    }

    #[test]
    fn good() {
        assert_eq!(findings("FROM alpine\nEXPOSE 80/tcp\n"), none());
        assert_eq!(
            findings("FROM alpine\nEXPOSE 80 53/udp 8000-8010/sctp\n"),
            none()
        );
    }

    #[test]
    fn quotes_are_removed_and_variables_are_left_to_the_lowering() {
        assert_eq!(rules("FROM alpine\nEXPOSE \"80/UDP\"\n").len(), 1);
        assert_eq!(findings("FROM alpine\nEXPOSE ${PORT}/TCP\n"), none());
    }
}

mod expose_invalid_format {
    use super::*;

    #[test]
    fn bad_ip_and_host_port() {
        assert_eq!(
            findings("FROM alpine\nEXPOSE 127.0.0.1:80:80\n"),
            one(
                Rule::ExposeInvalidFormat,
                2,
                "EXPOSE instruction should not define an IP address or host-port mapping, found '127.0.0.1:80:80'"
            )
        );
    }

    #[test]
    fn bad_host_port() {
        assert_eq!(
            findings("FROM alpine\nEXPOSE 80:80\n"),
            one(
                Rule::ExposeInvalidFormat,
                2,
                "EXPOSE instruction should not define an IP address or host-port mapping, found '80:80'"
            )
        );
    }

    #[test]
    fn good() {
        assert_eq!(findings("FROM alpine\nEXPOSE 80\n"), none());
    }

    #[test]
    fn each_port_is_reported_until_one_does_not_parse() {
        assert_eq!(
            rules("FROM alpine\nEXPOSE 1:1/UDP [::1]:2:2 3/bogus 4:4\n"),
            [
                (Rule::ExposeProtoCasing.name().to_string(), 2),
                (Rule::ExposeInvalidFormat.name().to_string(), 2),
                (Rule::ExposeInvalidFormat.name().to_string(), 2),
            ]
        );
    }
}

mod invalid_definition_description {
    use super::*;

    const BAD: &str = "# a non-descriptive comment\nFROM scratch AS base\n\n# another non-descriptive comment\nARG VERSION=1\n";

    #[test]
    fn bad() {
        let name = Rule::InvalidDefinitionDescription.name().to_string();
        assert_eq!(
            findings(&format!("{EXPERIMENTAL_DESCRIPTIONS}{BAD}")),
            [
                (
                    name.clone(),
                    3,
                    "Comment for FROM should follow the format: `# base <description>`".to_string()
                ),
                (
                    name,
                    6,
                    "Comment for ARG should follow the format: `# VERSION <description>`"
                        .to_string()
                ),
            ]
        );
    }

    #[test]
    fn experimental_so_off_by_default() {
        assert_eq!(findings(BAD), none());
        assert_eq!(
            rules(&format!("# check=experimental=all\n{BAD}")).len(),
            2,
            "experimental=all turns it on"
        );
    }

    #[test]
    fn good_separated_by_an_empty_line() {
        assert_eq!(
            findings(&format!(
                "{EXPERIMENTAL_DESCRIPTIONS}# a non-descriptive comment\n\nFROM scratch AS base\n\n# another non-descriptive comment\n\nARG VERSION=1\n"
            )),
            none()
        );
    }

    #[test]
    fn good_descriptions() {
        assert_eq!(
            findings(&format!(
                "{EXPERIMENTAL_DESCRIPTIONS}# base is a stage for compiling source\nFROM scratch AS base\n# VERSION This is the version number.\nARG VERSION=1\n"
            )),
            none()
        );
    }

    #[test]
    fn several_args_and_mixed_case_stage_names() {
        let name = Rule::InvalidDefinitionDescription.name().to_string();
        assert_eq!(
            findings(&format!(
                "{EXPERIMENTAL_DESCRIPTIONS}# bar this is the bar\nARG foo=bar\n# BasE this is the BasE image\nFROM scratch AS base\n# definitely a bad comment\nARG foo=baz bar=qux\n# bar is described\nARG foo bar\n"
            )),
            [
                (
                    name.clone(),
                    3,
                    "Comment for ARG should follow the format: `# foo <description>`".to_string()
                ),
                (
                    name.clone(),
                    5,
                    "Comment for FROM should follow the format: `# base <description>`".to_string()
                ),
                (
                    name,
                    7,
                    "Comment for ARG should follow the format: `# <arg_key> <description>`"
                        .to_string()
                ),
            ]
        );
    }
}

mod directive {
    use super::*;

    const CASING: &str = "FROM scratch as base\ncopy Dockerfile .\n";

    #[test]
    fn both_rules_without_a_directive() {
        assert_eq!(
            rules(CASING),
            [
                (Rule::FromAsCasing.name().to_string(), 1),
                (Rule::ConsistentInstructionCasing.name().to_string(), 2),
            ]
        );
    }

    #[test]
    fn skip_some() {
        assert_eq!(
            findings(&format!(
                "# check=skip=ConsistentInstructionCasing,FromAsCasing\n{CASING}"
            )),
            none()
        );
        assert_eq!(
            rules(&format!(
                "#check=skip=ConsistentInstructionCasing\n{CASING}"
            )),
            [(Rule::FromAsCasing.name().to_string(), 2)]
        );
    }

    #[test]
    fn skip_names_are_case_sensitive() {
        assert_eq!(
            rules(&format!("# check=skip=fromascasing\n{CASING}")).len(),
            2
        );
    }

    #[test]
    fn skip_all() {
        assert_eq!(findings(&format!("# check=skip=all\n{CASING}")), none());
        let skipped = report(&format!("# check=skip=all;error=true\n{CASING}"));
        assert!(skipped.warnings().is_empty());
        assert!(!skipped.is_error());
        assert_eq!(skipped.error_message(), None);
    }

    #[test]
    fn skip_does_not_turn_off_an_opted_in_experimental_rule() {
        assert_eq!(
            rules(
                "# check=skip=all;experimental=InvalidDefinitionDescription\n# not it\nFROM a AS Base\n"
            ),
            [(Rule::InvalidDefinitionDescription.name().to_string(), 3)]
        );
    }

    #[test]
    fn error_true() {
        let one_rule = report(&format!(
            "#check=skip=ConsistentInstructionCasing;error=true\n{CASING}"
        ));
        assert!(one_rule.is_error());
        assert_eq!(
            one_rule.error_message().as_deref(),
            Some("lint violation found for rules: FromAsCasing")
        );

        let two_rules = report(&format!("# check=error=true\n{CASING}"));
        assert_eq!(
            two_rules.error_message().as_deref(),
            Some("lint violation found for rules: FromAsCasing, ConsistentInstructionCasing")
        );

        let clean = report("# check=error=true\nFROM scratch\n");
        assert!(!clean.is_error());
    }

    #[test]
    fn options_parse_as_buildkit_parses_them() {
        let options = parse_check_options(" skip = A, B ;experimental=all; error = TRUE ").unwrap();
        assert_eq!(options.skip, ["A", "B"]);
        assert!(options.experimental_all);
        assert!(options.error);
        let options = parse_check_options("experimental=X,Y").unwrap();
        assert_eq!(options.experimental, ["X", "Y"]);
        assert!(!options.experimental_all && !options.skip_all);
        assert!(parse_check_options("experimental").is_err());
        assert!(parse_check_options("skip=all;error=true;bogus=1").is_err());
        let tree = parser::parse(
            "# check=skip=all;experimental=CopyIgnoredFile\nFROM a\n",
            "D",
        )
        .unwrap();
        assert!(tree.check.skip_all);
        assert_eq!(tree.check.experimental, ["CopyIgnoredFile"]);
    }
}

mod scope {
    use super::*;

    /// BuildKit's own case: stage `c` does not need `b`.
    const UNREACHABLE: &str =
        "FROM scratch AS a\n\nFROM a AS b\nENV testkey value\nLABEL key value\n\nFROM a AS c\n";

    #[test]
    fn every_stage_without_a_target() {
        assert_eq!(rules(UNREACHABLE).len(), 2);
    }

    #[test]
    fn the_stages_the_target_needs() {
        assert_eq!(findings_in(UNREACHABLE, &Scope::target("c")), none());
        assert_eq!(findings_in(UNREACHABLE, &Scope::target("B")).len(), 2);
    }

    #[test]
    fn instruction_rules_run_everywhere() {
        assert_eq!(
            findings_in(
                "FROM alpine AS Unused\nFROM alpine AS final\n",
                &Scope::target("final")
            )
            .len(),
            1
        );
    }

    #[test]
    fn copy_from_and_run_mount_sources_are_needed() {
        let source = "FROM alpine AS build\nCMD [\"a\"]\nCMD [\"b\"]\n\
                      FROM alpine AS cache\nCMD [\"a\"]\nCMD [\"b\"]\n\
                      FROM alpine AS other\nCMD [\"a\"]\nCMD [\"b\"]\n\
                      FROM alpine AS final\nCOPY --from=build /x /x\n\
                      RUN --mount=type=cache,from=cache,target=/c true\n";
        let lines: Vec<usize> = findings_in(source, &Scope::target("final"))
            .into_iter()
            .map(|(_, line, _)| line)
            .collect();
        assert_eq!(lines, [2, 5]);
        let by_index = source.replace("--from=build", "--from=2");
        let lines: Vec<usize> = findings_in(&by_index, &Scope::target("final"))
            .into_iter()
            .map(|(_, line, _)| line)
            .collect();
        assert_eq!(lines, [5, 8]);
    }

    #[test]
    fn from_resolves_global_args_and_build_args() {
        let source = "ARG BASE=one\nFROM alpine AS one\nCMD [\"a\"]\nCMD [\"b\"]\n\
                      FROM alpine AS two\nCMD [\"a\"]\nCMD [\"b\"]\n\
                      FROM ${BASE} AS final\n";
        let lines = |scope: &Scope| -> Vec<usize> {
            findings_in(source, scope)
                .into_iter()
                .map(|(_, line, _)| line)
                .collect()
        };
        assert_eq!(lines(&Scope::target("final")), [3]);
        assert_eq!(
            lines(&Scope::target("final").with_build_args([("BASE", "two")])),
            [6]
        );
    }

    #[test]
    fn an_unknown_target_is_an_error_after_the_instruction_rules() {
        let source = "FROM alpine AS Base\n";
        let tree = parser::parse(source, "Dockerfile").unwrap();
        let mut linter = Linter::new(tree.check.clone());
        let err =
            lint::check_scoped(&tree, source, &Scope::target("nope"), &mut linter).unwrap_err();
        assert_eq!(
            err,
            UnknownTarget {
                name: "nope".into()
            }
        );
        assert_eq!(err.to_string(), "target stage \"nope\" could not be found");
        assert_eq!(linter.warnings().len(), 1);
    }
}

mod output {
    use super::*;

    #[test]
    fn no_findings() {
        let report = report("FROM alpine\nRUN true\n");
        assert_eq!(report.to_string(), "Check complete, no warnings found.\n");
    }

    #[test]
    fn as_buildx_prints_it() {
        let report = report("FROM alpine as base\nRUN true\n");
        assert_eq!(
            report.to_string(),
            "Check complete, 1 warning has been found!\n\
             \n\
             WARNING: FromAsCasing - https://docs.docker.com/go/dockerfile/rule/from-as-casing/\n\
             'as' and 'FROM' keywords' casing do not match\n\
             Dockerfile:1\n\
             --------------------\n\
             \x20  1 | >>> FROM alpine as base\n\
             \x20  2 |     RUN true\n\
             \x20  3 |     \n\
             --------------------\n"
        );
    }

    #[test]
    fn sorted_by_line_and_multi_line_instructions_marked() {
        let source = "FROM alpine\nCMD a\nCMD b\nENV A \\\n  1\nMAINTAINER me\nRUN true\n";
        let report = report(source);
        let order: Vec<(&str, usize)> = report
            .warnings()
            .iter()
            .map(|w| (w.rule.as_str(), w.span.line))
            .collect();
        assert_eq!(
            order,
            [
                ("JSONArgsRecommended", 2),
                ("MultipleInstructionsDisallowed", 2),
                ("JSONArgsRecommended", 3),
                ("LegacyKeyValueFormat", 4),
                ("MaintainerDeprecated", 6),
            ]
        );
        let text = report.to_string();
        assert!(
            text.starts_with(
                "Check complete, 5 warnings have been found!\n\nWARNING: JSONArgsRecommended"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "Dockerfile:4\n--------------------\n   3 |     CMD b\n   4 | >>> ENV A \\\n   5 | >>>   1\n   6 |     MAINTAINER me\n--------------------\n"
            ),
            "{text}"
        );
    }
}
