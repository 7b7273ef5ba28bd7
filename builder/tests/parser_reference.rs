//! BuildKit's reference cases for the parser and for word expansion.
//!
//! The data lives in the shared specs (`shared/specs/dockerfile/buildkit-testdata/`), next to
//! the repository: `$CARGO_MANIFEST_DIR/../../shared`. It is read in place, never copied.

use std::fs;
use std::path::{Path, PathBuf};

use berth_builder::parser::{self, ParseErrorKind, dump};
use berth_builder::shell::Lex;

fn testdata() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/specs/dockerfile/buildkit-testdata");
    assert!(
        dir.is_dir(),
        "BuildKit reference data not found at {}: the shared/ folder must sit next to the \
         repository checkout (shared/specs/dockerfile/buildkit-testdata)",
        dir.display()
    );
    dir
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn cases(dir: &Path) -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
    cases.sort();
    cases
}

#[test]
fn testfiles_dump_matches_result() {
    let cases = cases(&testdata().join("testfiles"));
    let mut failures = Vec::new();
    for case in &cases {
        let source = read(&case.join("Dockerfile"));
        let expected = read(&case.join("result"));
        match parser::parse(&source, "Dockerfile") {
            Ok(tree) => {
                let got = dump(&tree);
                if got != expected {
                    failures.push(format!(
                        "{}:\n--- expected\n{expected}--- got\n{got}",
                        case.display()
                    ));
                }
            }
            Err(e) => failures.push(format!("{}: parse failed:\n{e}", case.display())),
        }
    }
    assert_eq!(cases.len(), 33, "expected the 33 BuildKit cases");
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn negative_testfiles_fail() {
    let cases = cases(&testdata().join("testfiles-negative"));
    assert_eq!(cases.len(), 4, "expected the 4 BuildKit negative cases");
    for case in &cases {
        let source = read(&case.join("Dockerfile"));
        let err = match parser::parse(&source, "Dockerfile") {
            Ok(tree) => panic!("{} parsed but must fail:\n{}", case.display(), dump(&tree)),
            Err(err) => err,
        };
        let name = case
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let expected_kind = match name {
            "empty_dockerfile" | "only_comments" => {
                matches!(err.kind, ParseErrorKind::NoInstructions)
            }
            "env_no_value" => matches!(err.kind, ParseErrorKind::MissingValue { .. }),
            "shykes-nested-json" => matches!(err.kind, ParseErrorKind::JsonNotStringArray),
            _ => true,
        };
        assert!(
            expected_kind,
            "{}: unexpected error:\n{err}",
            case.display()
        );
    }
}

/// `envVarTest`: `PLATFORM | input | expected`, with the A (all) and U (Unix) lines checked.
#[test]
fn env_var_expansion() {
    let text = read(&testdata().join("envVarTest"));
    let vars = vec![
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ];
    let lex = Lex::new('\\');
    let mut checked = 0;
    let mut failures = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('|').collect();
        assert_eq!(fields.len(), 3, "envVarTest:{}: {line:?}", number + 1);
        let (platform, input, expected) = (fields[0].trim(), fields[1].trim(), fields[2].trim());
        if platform == "W" {
            continue;
        }
        assert!(
            platform == "A" || platform == "U",
            "envVarTest:{}: platform {platform}",
            number + 1
        );
        checked += 1;
        let got = lex.process_word(input, &vars);
        let ok = match (&got, expected) {
            (Err(_), "error") => true,
            (Ok(value), expected) => value == expected && expected != "error",
            (Err(_), _) => false,
        };
        if !ok {
            failures.push(format!(
                "envVarTest:{}: {input:?} gave {got:?}, expected {expected:?}",
                number + 1
            ));
        }
    }
    assert_eq!(checked, 228, "envVarTest should have 228 A and U lines");
    assert!(
        failures.is_empty(),
        "{} of {checked} lines failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// `wordsTest`: `ENV name=value` lines add variables; `input | w1,w2,...` lines must split so.
#[test]
fn word_splitting() {
    let text = read(&testdata().join("wordsTest"));
    let lex = Lex::new('\\');
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut checked = 0;
    let mut failures = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(assignment) = line.strip_prefix("ENV ") {
            let assignment = assignment.trim_start_matches(' ');
            let (name, value) = assignment.split_once('=').unwrap_or((assignment, ""));
            vars.push((name.to_string(), value.to_string()));
            continue;
        }
        let fields: Vec<&str> = line.split('|').collect();
        assert_eq!(fields.len(), 2, "wordsTest:{}: {line:?}", number + 1);
        let input = fields[0].trim();
        let expected: Vec<&str> = fields[1].trim_start_matches(' ').split(',').collect();
        checked += 1;
        let got = lex
            .process_words(input, &vars)
            .unwrap_or_else(|_| vec!["error".to_string()]);
        if got != expected {
            failures.push(format!(
                "wordsTest:{}: {input:?} gave {got:?}, expected {expected:?}",
                number + 1
            ));
        }
    }
    assert_eq!(checked, 24, "wordsTest should have 24 cases");
    assert!(
        failures.is_empty(),
        "{} of {checked} lines failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
