//! Tests of the grammar, one group per feature, and a round-trip property.

use super::*;

fn ok(source: &str) -> Dockerfile {
    parse(source, "Dockerfile").unwrap_or_else(|e| panic!("parse failed:\n{e}"))
}

fn err(source: &str) -> ParseError {
    match parse(source, "Dockerfile") {
        Ok(tree) => panic!("parsed but must fail:\n{}", dump(&tree)),
        Err(e) => e,
    }
}

fn dumped(source: &str) -> String {
    dump(&ok(source))
}

mod directives {
    use super::*;

    #[test]
    fn syntax_escape_and_check_at_the_top() {
        let tree = ok(
            "# syntax=docker/dockerfile:1\n#ESCAPE = `\n# Check=skip=JSONArgsRecommended,StageNameCasing;error=true\n\nFROM a\n",
        );
        let names: Vec<&str> = tree.directives.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["syntax", "escape", "check"]);
        assert_eq!(tree.syntax(), Some("docker/dockerfile:1"));
        assert_eq!(tree.escape, '`');
        assert_eq!(
            tree.check,
            CheckOptions {
                skip_all: false,
                skip: vec!["JSONArgsRecommended".into(), "StageNameCasing".into()],
                error: true,
                ..CheckOptions::default()
            }
        );
        assert_eq!(tree.directives[1].span.line, 2);
        assert_eq!(tree.directive("check").map(|d| d.span.column), Some(1));
    }

    #[test]
    fn check_skip_all() {
        let tree = ok("# check=skip=all\nFROM a\n");
        assert!(tree.check.skip_all);
        assert!(!tree.check.error);
    }

    #[test]
    fn not_directives_after_a_comment_blank_line_or_instruction() {
        for source in [
            "# a comment\n# escape=`\nFROM a\n",
            "\n# escape=`\nFROM a\n",
            "FROM a\n# escape=`\n",
            "# unknown=1\n# escape=`\nFROM a\n",
        ] {
            let tree = ok(source);
            assert_eq!(tree.escape, '\\', "{source:?}");
            assert!(tree.directive("escape").is_none(), "{source:?}");
        }
    }

    #[test]
    fn directive_lines_are_not_instruction_comments() {
        let tree = ok("# syntax=x\n# about a\nFROM a\n");
        assert_eq!(tree.instructions[0].comments, ["about a"]);
    }

    #[test]
    fn each_directive_at_most_once() {
        let e = err("# syntax=a\n# SYNTAX=b\nFROM a\n");
        assert_eq!(
            e.kind,
            ParseErrorKind::DuplicateDirective {
                name: "syntax".into()
            }
        );
        assert_eq!((e.span.line, e.span.column), (2, 1));
    }

    #[test]
    fn invalid_escape_and_check() {
        let e = err("# escape=x\nFROM a\n");
        assert_eq!(
            e.kind,
            ParseErrorKind::InvalidEscapeToken { value: "x".into() }
        );
        assert_eq!((e.span.line, e.span.column), (1, 10));
        let e = err("# check=error=maybe\nFROM a\n");
        assert!(matches!(
            e.kind,
            ParseErrorKind::InvalidCheckDirective { .. }
        ));
        let e = err("# check=fast=yes\nFROM a\n");
        assert!(matches!(
            e.kind,
            ParseErrorKind::InvalidCheckDirective { .. }
        ));
    }
}

mod escape_and_continuations {
    use super::*;

    #[test]
    fn backtick_escape() {
        let source =
            "# escape=`\nFROM windows\nCOPY a.txt c:\\\nRUN dir c:\\ `\n  /w\nENV P `\n\\go\n";
        assert_eq!(
            dumped(source),
            "(from \"windows\")\n(copy \"a.txt\" \"c:\\\\\")\n(run \"dir c:\\\\   /w\")\n(env \"P\" \"\\\\go\" \"\")\n"
        );
    }

    #[test]
    fn continuation_with_comments_and_blank_lines() {
        let tree = ok("FROM a\nRUN echo \\\n# a comment\n  one \\\n\n   \n  two\nRUN next\n");
        assert_eq!(
            dump(&tree),
            "(from \"a\")\n(run \"echo   one   two\")\n(run \"next\")\n"
        );
        let run = &tree.instructions[1];
        assert_eq!((run.span.line, run.span.end_line), (2, 7));
        assert_eq!(tree.instructions[2].span.line, 8);
        assert_eq!(tree.warnings.len(), 1);
        let w = &tree.warnings[0];
        assert_eq!(w.rule, "NoEmptyContinuation");
        assert_eq!(w.span.line, 5);
        assert_eq!(
            w.message,
            "Empty continuation line found in: RUN echo   one   two"
        );
    }

    #[test]
    fn comment_lines_do_not_continue() {
        assert_eq!(dumped("# RUN x \\\nFROM a\n"), "(from \"a\")\n");
    }

    #[test]
    fn escaped_escape_is_not_a_continuation() {
        assert_eq!(
            dumped("FROM a\nENV C x\\\\\nENV D y\n"),
            "(from \"a\")\n(env \"C\" \"x\\\\\\\\\" \"\")\n(env \"D\" \"y\" \"\")\n"
        );
    }

    #[test]
    fn continuation_at_end_of_file() {
        let tree = ok("FROM a\nRUN one \\\n  two \\");
        assert_eq!(dump(&tree), "(from \"a\")\n(run \"one   two\")\n");
        assert_eq!(tree.instructions[1].span.end_line, 3);
        assert_eq!(dumped("FROM a\nRUN x \\\n"), "(from \"a\")\n(run \"x\")\n");
    }

    #[test]
    fn lone_continuation_is_not_an_instruction() {
        assert_eq!(dumped("FROM a\n  \\\n\n"), "(from \"a\")\n");
    }

    #[test]
    fn crlf_and_byte_order_mark() {
        let tree = ok("\u{feff}FROM a\r\nRUN b \\\r\n c\r\n");
        assert_eq!(dump(&tree), "(from \"a\")\n(run \"b  c\")\n");
        assert_eq!(tree.instructions[0].span.column, 1);
    }
}

mod heredocs {
    use super::*;

    #[test]
    fn basic_heredoc() {
        let tree = ok("FROM a\nRUN <<EOF\necho $HOME\n  set -e\nEOF\nRUN after\n");
        let run = &tree.instructions[1];
        assert_eq!(run.args, Args::Shell("<<EOF".into()));
        assert_eq!(run.heredocs.len(), 1);
        let h = &run.heredocs[0];
        assert_eq!(h.name, "EOF");
        assert_eq!(h.content, "echo $HOME\n  set -e\n");
        assert!(h.expand);
        assert!(!h.chomp);
        assert_eq!(h.file_descriptor, 0);
        assert_eq!((h.span.line, h.span.column, h.span.end_line), (2, 5, 5));
        assert_eq!(run.span.end_line, 5);
        assert_eq!(tree.instructions[2].span.line, 6);
        assert_eq!(
            dump(&tree),
            "(from \"a\")\n(run \"<<EOF\")\n(run \"after\")\n"
        );
    }

    #[test]
    fn chomp_strips_leading_tabs() {
        let tree = ok("FROM a\nCOPY <<-EOT /script.sh\n\t\techo \"hello\"\n\tdone\n\tEOT\n");
        let h = &tree.instructions[1].heredocs[0];
        assert!(h.chomp);
        assert_eq!(h.content, "echo \"hello\"\ndone\n");
        assert_eq!(
            tree.instructions[1].args,
            Args::Words(vec!["<<-EOT".into(), "/script.sh".into()])
        );
    }

    #[test]
    fn quoted_delimiters_turn_expansion_off() {
        for (marker, name) in [
            ("<<\"EOF\"", "EOF"),
            ("<<'EOF'", "EOF"),
            ("<<E\"O\"F", "EOF"),
        ] {
            let tree = ok(&format!("FROM a\nRUN {marker}\n$X\n{name}\n"));
            let h = &tree.instructions[1].heredocs[0];
            assert_eq!(h.name, name, "{marker}");
            assert!(!h.expand, "{marker}");
            assert_eq!(h.content, "$X\n");
        }
    }

    #[test]
    fn several_on_one_line() {
        let tree = ok(
            "FROM a\nRUN <<FILE1 cat > file1 && 3<<-FILE2 cat > file2\nI am\nfirst\nFILE1\n\tI am\n\tsecond\n\tFILE2\nUSER me\n",
        );
        let run = &tree.instructions[1];
        let names: Vec<&str> = run.heredocs.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["FILE1", "FILE2"]);
        assert_eq!(run.heredocs[0].content, "I am\nfirst\n");
        assert_eq!(run.heredocs[1].content, "I am\nsecond\n");
        assert_eq!(run.heredocs[1].file_descriptor, 3);
        assert_eq!(run.heredocs[1].span.column, 28);
        assert_eq!(run.heredocs[0].span.end_line, 5);
        assert_eq!(run.heredocs[1].span.end_line, 8);
        assert_eq!(tree.instructions[2].span.line, 9);
    }

    #[test]
    fn onbuild_heredoc_belongs_to_the_wrapped_instruction() {
        let tree = ok("FROM a\nONBUILD RUN <<EOF\nx\nEOF\n");
        let node = &tree.instructions[1];
        assert_eq!(node.span.end_line, 4);
        let Args::Onbuild(inner) = &node.args else {
            panic!("not onbuild: {:?}", node.args)
        };
        assert_eq!(inner.heredocs[0].content, "x\n");
        assert_eq!(inner.span.end_line, 4);
    }

    #[test]
    fn no_heredocs_in_exec_form_or_other_instructions() {
        let tree = ok("FROM a\nRUN [\"cat\", \"<<EOF\"]\nENV A=<<EOF\nRUN echo a<<b\n");
        assert!(tree.instructions.iter().all(|n| n.heredocs.is_empty()));
    }

    #[test]
    fn unterminated() {
        let e = err("FROM a\nRUN echo && <<EOF cat\nline\n");
        assert_eq!(
            e.kind,
            ParseErrorKind::UnterminatedHeredoc { name: "EOF".into() }
        );
        assert_eq!((e.span.line, e.span.column, e.width), (2, 13, 5));
    }
}

mod json_forms {
    use super::*;

    #[test]
    fn exec_forms() {
        let tree = ok(
            "FROM a\nCMD [\"a\", \"b c\"]\nSHELL [\"sh\", \"-c\"]\nVOLUME [\"/v\"]\nHEALTHCHECK CMD [\"check\"]\n",
        );
        assert_eq!(
            tree.instructions[1].args,
            Args::Exec(vec!["a".into(), "b c".into()])
        );
        assert_eq!(
            tree.instructions[2].args,
            Args::Exec(vec!["sh".into(), "-c".into()])
        );
        assert_eq!(tree.instructions[3].args, Args::Exec(vec!["/v".into()]));
        assert!(tree.instructions[4].args.is_exec());
    }

    #[test]
    fn invalid_json_falls_back_to_shell_form_or_words() {
        let tree = ok("FROM a\nRUN ['a']\nCOPY [\"a\" /b\nENTRYPOINT [\"x\"] y\n");
        assert_eq!(tree.instructions[1].args, Args::Shell("['a']".into()));
        assert_eq!(
            tree.instructions[2].args,
            Args::Words(vec!["[\"a\"".into(), "/b".into()])
        );
        assert_eq!(tree.instructions[3].args, Args::Shell("[\"x\"] y".into()));
    }

    #[test]
    fn non_string_elements_are_an_error() {
        let e = err("FROM a\nCOPY --link [\"a\", 1]\n");
        assert_eq!(e.kind, ParseErrorKind::JsonNotStringArray);
        assert_eq!((e.span.line, e.span.column), (2, 13));
    }
}

mod flags {
    use super::*;

    #[test]
    fn names_values_raw_text_and_locations() {
        let tree = ok("FROM a\nCOPY --from=build --chown=\"a b\" \\\n     --link src dst\n");
        let copy = &tree.instructions[1];
        let names: Vec<&str> = copy.flags.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["from", "chown", "link"]);
        assert_eq!(
            copy.flag("from").and_then(|f| f.value.as_deref()),
            Some("build")
        );
        assert_eq!(
            copy.flag("chown").and_then(|f| f.value.as_deref()),
            Some("a b")
        );
        assert_eq!(
            copy.flag("chown").map(|f| f.raw.as_str()),
            Some("--chown=\"a b\"")
        );
        assert_eq!(copy.flag("link").and_then(|f| f.value.as_deref()), None);
        let link = &copy.flags[2].span;
        assert_eq!((link.line, link.column), (3, 6));
        assert_eq!(copy.args, Args::Words(vec!["src".into(), "dst".into()]));
    }

    #[test]
    fn every_instruction_and_the_separator() {
        assert_eq!(
            dumped(
                "FROM --platform=linux/arm64 a AS b\nRUN --mount=type=cache,target=/c -- --not-a-flag\nENV --x=1 A=b\n"
            ),
            "(from [\"--platform=linux/arm64\"] \"a\" \"AS\" \"b\")\n(run [\"--mount=type=cache,target=/c\"] \"--not-a-flag\")\n(env [\"--x=1\"] \"A\" \"b\" \"=\")\n"
        );
    }
}

mod instructions {
    use super::*;

    #[test]
    fn key_values() {
        let e = err("FROM a\nENV A=1 B\n");
        assert_eq!(e.kind, ParseErrorKind::MissingEquals { word: "B".into() });
        assert_eq!((e.span.line, e.span.column), (2, 9));
        let tree = ok("FROM a\nENV A=1 B=\"two words\"\nLABEL k v w\n");
        assert_eq!(
            tree.instructions[1].args,
            Args::KeyValues(vec![
                KeyValue {
                    key: "A".into(),
                    value: "1".into(),
                    separator: Separator::Equals
                },
                KeyValue {
                    key: "B".into(),
                    value: "\"two words\"".into(),
                    separator: Separator::Equals
                },
            ])
        );
        assert_eq!(
            tree.instructions[2].args,
            Args::KeyValues(vec![KeyValue {
                key: "k".into(),
                value: "v w".into(),
                separator: Separator::Space
            }])
        );
        let e = err("FROM a\nLABEL lonely\n");
        assert_eq!(
            e.kind,
            ParseErrorKind::MissingValue {
                instruction: "LABEL".into()
            }
        );
    }

    #[test]
    fn the_rest() {
        assert_eq!(
            dumped(
                "FROM img AS build\nMAINTAINER Me <me@x>\nHEALTHCHECK NONE\nHEALTHCHECK --interval=5s CMD curl -f x\nONBUILD COPY --from=b . /\nSTOPSIGNAL SIGKILL\nWORKDIR /app\nUSER 1:1\nEXPOSE 80/tcp 53/udp\nARG A B=\"x y\"\n"
            ),
            "(from \"img\" \"AS\" \"build\")\n(maintainer \"Me <me@x>\")\n(healthcheck \"NONE\")\n(healthcheck [\"--interval=5s\"] \"CMD\" \"curl -f x\")\n(onbuild (copy [\"--from=b\"] \".\" \"/\"))\n(stopsignal \"SIGKILL\")\n(workdir \"/app\")\n(user \"1:1\")\n(expose \"80/tcp\" \"53/udp\")\n(arg \"A\" \"B=\\\"x y\\\"\")\n"
        );
    }

    #[test]
    fn keywords_are_case_insensitive_and_kept_as_written() {
        let tree = ok("from a\nRun b\n");
        assert_eq!(tree.instructions[1].instruction, Instruction::Run);
        assert_eq!(tree.instructions[1].keyword, "Run");
        assert_eq!(tree.instructions[1].name(), "run");
        assert_eq!(tree.instructions[1].original, "Run b");
    }

    #[test]
    fn comments_above_an_instruction() {
        let tree = ok("# first\n# second\nFROM a\n#\n# only this\nRUN b\n");
        assert_eq!(tree.instructions[0].comments, ["first", "second"]);
        assert_eq!(tree.instructions[1].comments, ["only this"]);
    }
}

mod locations {
    use super::*;

    #[test]
    fn keyword_columns_count_characters() {
        let tree = ok("FROM a\n  \tRUN x\nLABEL é=1\nENV ü=1 \\\n  V=2\nONBUILD \\\n   RUN y\n");
        let at = |i: usize| {
            let s = &tree.instructions[i].span;
            (s.line, s.column, s.end_line)
        };
        assert_eq!(at(0), (1, 1, 1));
        assert_eq!(at(1), (2, 4, 2));
        assert_eq!(at(2), (3, 1, 3));
        assert_eq!(at(3), (4, 1, 5));
        assert_eq!(at(4), (6, 1, 7));
        let Args::Onbuild(inner) = &tree.instructions[4].args else {
            panic!("not onbuild")
        };
        assert_eq!((inner.span.line, inner.span.column), (7, 4));
        assert_eq!(&*inner.span.file, "Dockerfile");
    }

    #[test]
    fn error_columns_after_multibyte_text() {
        let e = err("FROM a\nLABEL é=1 ü\n");
        assert_eq!((e.span.line, e.span.column, e.width), (2, 11, 1));
    }
}

mod errors {
    use super::*;

    #[test]
    fn unknown_instruction_renders_with_caret_and_hint() {
        let e = parse("FROM alpine\n\nCOPPY . /app\n", "app/Dockerfile").unwrap_err();
        assert_eq!(
            e.to_string(),
            "app/Dockerfile:3:1: unknown instruction: COPPY\n  |\n3 | COPPY . /app\n  | ^^^^^\n  = hint: did you mean COPY?"
        );
        assert_eq!(e.hint().as_deref(), Some("did you mean COPY?"));
    }

    #[test]
    fn forgotten_continuation_gets_a_hint() {
        let e = err("FROM a\nRUN apt-get update &&\n    apt-get install -y x\n");
        assert_eq!(
            e.to_string(),
            "Dockerfile:3:5: unknown instruction: apt-get\n  |\n3 |     apt-get install -y x\n  |     ^^^^^^^\n  = hint: if this line continues the instruction above, end that line with the escape character"
        );
    }

    #[test]
    fn unknown_instruction_under_onbuild() {
        let e = err("FROM a\nONBUILD RUNN x\n");
        assert_eq!((e.span.line, e.span.column, e.width), (2, 9, 4));
        assert_eq!(e.hint().as_deref(), Some("did you mean RUN?"));
    }

    #[test]
    fn empty_files() {
        for source in ["", "\n\n", "# only\n# comments\n"] {
            let e = err(source);
            assert_eq!(e.kind, ParseErrorKind::NoInstructions, "{source:?}");
        }
        assert_eq!(
            err("").to_string(),
            "Dockerfile:1:1: file with no instructions\n  = hint: a Dockerfile needs at least a FROM instruction"
        );
    }
}

mod serialization {
    use super::*;

    #[test]
    fn json_output() {
        let tree = ok("FROM a\nCOPY --link [\"x\", \"/y\"]\n");
        let json = serde_json::to_value(&tree).unwrap_or_default();
        let copy = &json["instructions"][1];
        assert_eq!(copy["instruction"], "copy");
        assert_eq!(copy["keyword"], "COPY");
        assert_eq!(copy["args"]["form"], "exec");
        assert_eq!(copy["args"]["value"][1], "/y");
        assert_eq!(copy["flags"][0]["name"], "link");
        assert_eq!(copy["span"]["file"], "Dockerfile");
        assert_eq!(copy["span"]["line"], 2);
        assert_eq!(json["escape"], "\\");
    }
}

mod round_trip {
    use super::*;
    use crate::parser::dump::{dump_node, go_quote};
    use crate::parser::format::{format_dockerfile, json_quote};
    use proptest::prelude::*;

    /// A generated instruction: its text and the dump it must produce.
    #[derive(Debug, Clone)]
    struct Case {
        text: String,
        dump: String,
    }

    fn keyword(name: &'static str) -> impl Strategy<Value = String> {
        prop_oneof![
            Just(name.to_ascii_uppercase()),
            Just(name.to_string()),
            Just({
                let mut s = name.to_string();
                s[..1].make_ascii_uppercase();
                s
            }),
        ]
    }

    fn word() -> impl Strategy<Value = String> {
        "[a-z0-9_./:-]{1,8}".prop_filter("not a flag", |w| !w.starts_with("--"))
    }

    fn words(max: usize) -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec(word(), 1..max)
    }

    fn exec_item() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9 \"\\\\/$'é♥\t-]{0,8}"
    }

    fn flags() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec("--[a-z]{1,6}(=[a-z0-9,=/]{0,6})?", 0..3)
    }

    fn flag_dump(flags: &[String]) -> String {
        if flags.is_empty() {
            return String::new();
        }
        let quoted: Vec<String> = flags.iter().map(|f| go_quote(f)).collect();
        format!(" [{}]", quoted.join(" "))
    }

    fn flag_text(flags: &[String]) -> String {
        flags.iter().map(|f| format!(" {f}")).collect()
    }

    fn quoted_all(items: &[String]) -> String {
        items.iter().map(|s| format!(" {}", go_quote(s))).collect()
    }

    fn shell_or_exec(name: &'static str) -> impl Strategy<Value = Case> {
        let shell = (keyword(name), flags(), words(5)).prop_map(move |(kw, flags, words)| {
            let text = words.join(" ");
            Case {
                text: format!("{kw}{} {text}", flag_text(&flags)),
                dump: format!("({name}{} {})", flag_dump(&flags), go_quote(&text)),
            }
        });
        let exec = (keyword(name), prop::collection::vec(exec_item(), 0..4)).prop_map(
            move |(kw, items)| {
                let json: Vec<String> = items.iter().map(|s| json_quote(s)).collect();
                Case {
                    text: format!("{kw} [{}]", json.join(", ")),
                    dump: format!("({name}{})", quoted_all(&items)),
                }
            },
        );
        prop_oneof![shell, exec]
    }

    fn word_list(name: &'static str) -> impl Strategy<Value = Case> {
        (keyword(name), flags(), words(4)).prop_map(move |(kw, flags, words)| Case {
            text: format!("{kw}{} {}", flag_text(&flags), words.join("  ")),
            dump: format!("({name}{}{})", flag_dump(&flags), quoted_all(&words)),
        })
    }

    fn key_values(name: &'static str) -> impl Strategy<Value = Case> {
        let pairs = prop::collection::vec(
            ("[A-Za-z_][A-Za-z0-9_]{0,5}", "[a-z0-9]{0,4}( [a-z]{1,3})?"),
            1..4,
        );
        (keyword(name), pairs).prop_map(move |(kw, pairs)| {
            let mut text = kw;
            let mut dump = format!("({name}");
            for (k, v) in &pairs {
                let value = if v.contains(' ') {
                    format!("\"{v}\"")
                } else {
                    v.clone()
                };
                text.push_str(&format!(" {k}={value}"));
                dump.push_str(&format!(" {} {} \"=\"", go_quote(k), go_quote(&value)));
            }
            dump.push(')');
            Case { text, dump }
        })
    }

    fn text_instruction(name: &'static str) -> impl Strategy<Value = Case> {
        (keyword(name), words(3)).prop_map(move |(kw, words)| {
            let text = words.join(" ");
            Case {
                text: format!("{kw} {text}"),
                dump: format!("({name} {})", go_quote(&text)),
            }
        })
    }

    fn from() -> impl Strategy<Value = Case> {
        (keyword("from"), word(), prop::option::of(word())).prop_map(|(kw, image, stage)| {
            match stage {
                Some(stage) => Case {
                    text: format!("{kw} {image} AS {stage}"),
                    dump: format!("(from {} \"AS\" {})", go_quote(&image), go_quote(&stage)),
                },
                None => Case {
                    text: format!("{kw} {image}"),
                    dump: format!("(from {})", go_quote(&image)),
                },
            }
        })
    }

    fn legacy_env() -> impl Strategy<Value = Case> {
        (keyword("env"), "[A-Z][A-Z0-9_]{0,5}", words(3)).prop_map(|(kw, key, words)| {
            let value = words.join(" ");
            Case {
                text: format!("{kw} {key} {value}"),
                dump: format!("(env {} {} \"\")", go_quote(&key), go_quote(&value)),
            }
        })
    }

    fn arg() -> impl Strategy<Value = Case> {
        (
            keyword("arg"),
            "[A-Z][A-Z0-9_]{0,5}",
            prop::option::of("[a-z0-9]{0,4}"),
        )
            .prop_map(|(kw, name, value)| {
                let word = match value {
                    Some(v) => format!("{name}={v}"),
                    None => name,
                };
                Case {
                    text: format!("{kw} {word}"),
                    dump: format!("(arg {})", go_quote(&word)),
                }
            })
    }

    fn healthcheck() -> impl Strategy<Value = Case> {
        let none = keyword("healthcheck").prop_map(|kw| Case {
            text: format!("{kw} NONE"),
            dump: "(healthcheck \"NONE\")".to_string(),
        });
        let shell = (keyword("healthcheck"), words(4)).prop_map(|(kw, words)| {
            let text = words.join(" ");
            Case {
                text: format!("{kw} CMD {text}"),
                dump: format!("(healthcheck \"CMD\" {})", go_quote(&text)),
            }
        });
        let exec = (
            keyword("healthcheck"),
            prop::collection::vec(exec_item(), 0..3),
        )
            .prop_map(|(kw, items)| {
                let json: Vec<String> = items.iter().map(|s| json_quote(s)).collect();
                Case {
                    text: format!("{kw} CMD [{}]", json.join(", ")),
                    dump: format!("(healthcheck \"CMD\"{})", quoted_all(&items)),
                }
            });
        prop_oneof![none, shell, exec]
    }

    fn onbuild() -> impl Strategy<Value = Case> {
        (
            keyword("onbuild"),
            prop_oneof![shell_or_exec("run"), word_list("copy")],
        )
            .prop_map(|(kw, inner)| Case {
                text: format!("{kw} {}", inner.text),
                dump: format!("(onbuild {})", inner.dump),
            })
    }

    fn case() -> impl Strategy<Value = Case> {
        prop_oneof![
            from(),
            legacy_env(),
            arg(),
            healthcheck(),
            onbuild(),
            shell_or_exec("run"),
            shell_or_exec("cmd"),
            shell_or_exec("entrypoint"),
            word_list("copy"),
            word_list("add"),
            word_list("expose"),
            key_values("env"),
            key_values("label"),
            text_instruction("workdir"),
            text_instruction("user"),
        ]
    }

    /// How instructions are laid out: directly, or split over continuation lines with comments
    /// and indentation in between.
    fn layout(text: &str, split: bool) -> String {
        if !split {
            return text.to_string();
        }
        match text.split_once(' ') {
            Some((head, tail)) => format!("  {head} \\\n# inside\n    {tail}"),
            None => text.to_string(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn text_tree_text(cases in prop::collection::vec((case(), any::<bool>()), 1..8)) {
            let mut source = String::new();
            let mut expected = String::new();
            let mut lines = Vec::new();
            for (case, split) in &cases {
                lines.push(source.matches('\n').count() + 1);
                source.push_str(&layout(&case.text, *split));
                source.push('\n');
                expected.push_str(&case.dump);
                expected.push('\n');
            }
            let tree = parse(&source, "Dockerfile").map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(dump(&tree), expected.clone());
            let starts: Vec<usize> = tree.instructions.iter().map(|n| n.span.line).collect();
            prop_assert_eq!(starts, lines);

            // Tree to text and back gives the same tree (as dumped), and printing is stable.
            let printed = format_dockerfile(&tree);
            let again = parse(&printed, "Dockerfile").map_err(|e| TestCaseError::fail(format!("{e}\n{printed}")))?;
            prop_assert_eq!(dump(&again), expected);
            prop_assert_eq!(format_dockerfile(&again), printed);
            for node in &again.instructions {
                prop_assert_eq!(node.span.line, node.span.end_line);
                prop_assert!(dump_node(node).starts_with('('));
            }
        }
    }

    #[test]
    fn printing_keeps_directives_comments_and_heredocs() {
        let source = "# escape=`\n\n# build it\nFROM a AS b\nRUN <<-EOF sh && <<X cat\n\tone\n\tEOF\ntwo\nX\nONBUILD COPY -- --odd /dst\nHEALTHCHECK CMD [\"x\"]\n";
        let tree = ok(source);
        let printed = format_dockerfile(&tree);
        assert_eq!(
            printed,
            "# escape=`\n\n# build it\nFROM a AS b\nRUN <<-EOF sh && <<X cat\none\nEOF\ntwo\nX\nONBUILD COPY -- --odd /dst\nHEALTHCHECK CMD [\"x\"]\n"
        );
        let again = ok(&printed);
        assert_eq!(dump(&again), dump(&tree));
        assert_eq!(again.escape, '`');
        assert_eq!(again.instructions[1].heredocs, {
            let mut h = tree.instructions[1].heredocs.clone();
            for (a, b) in h.iter_mut().zip(&again.instructions[1].heredocs) {
                a.span = b.span.clone();
            }
            h
        });
    }

    /// Prints `source`'s tree and checks that it parses back to the same dump.
    fn reprints(source: &str) -> String {
        let tree = ok(source);
        let printed = format_dockerfile(&tree);
        let again = ok(&printed);
        assert_eq!(dump(&again), dump(&tree), "printed as {printed:?}");
        assert_eq!(format_dockerfile(&again), printed);
        printed
    }

    #[test]
    fn text_ending_with_the_escape_stays_uncontinued() {
        // Continued up to the end of the file: the text keeps its last backslash.
        assert_eq!(
            reprints("FROM a\nRUN make \\ \\"),
            "FROM a\nRUN make \\\u{b}\n"
        );
        assert_eq!(
            reprints("# escape=`\nFROM a\nCOPY a ` `"),
            "# escape=`\n\nFROM a\nCOPY a `\u{b}\n"
        );
        // A carriage return after the escape: not continued, and neither is the next line.
        assert_eq!(reprints("FROM\r\\\r \nRUN\n"), "FROM \\\u{b}\nRUN\n");
    }

    #[test]
    fn a_legacy_key_ending_with_the_escape_keeps_its_value() {
        assert_eq!(reprints("FROM a\nENV \\\u{c} =\n"), "FROM a\nENV \\  =\n");
        assert_eq!(
            reprints("# escape=`\nFROM a\nLABEL k`\tv w\n"),
            "# escape=`\n\nFROM a\nLABEL k`  v w\n"
        );
    }

    #[test]
    fn words_that_would_read_as_json_stay_words() {
        let printed = reprints("FROM a\nADD [\u{c}]\nCOPY [\u{b}\"a\"\u{b}]\nVOLUME [\u{c}]\n");
        assert_eq!(
            printed,
            "FROM a\nADD [\u{b}]\nCOPY [\u{b}\"a\"\u{b}]\nVOLUME [\u{b}]\n"
        );
        assert_eq!(reprints("FROM [\u{c}]\n"), "FROM [ ]\n");
    }

    #[test]
    fn a_comment_that_looks_like_a_directive_stays_a_comment() {
        let tree = ok("# about\n# escape=`\nFROM a\n");
        let printed = format_dockerfile(&tree);
        let again = ok(&printed);
        assert_eq!(again.escape, '\\');
        assert_eq!(again.instructions[0].comments, ["about", "escape=`"]);
    }
}
