//! Build checks: BuildKit's lint rules, with the same names, messages and documentation links.
//!
//! Rules are reported through a [`Linter`], which applies the Dockerfile's `# check=` directive
//! (skipped rules are dropped, experimental rules run only when named, `error=true` makes the
//! remaining findings fatal) and collects the findings as [`Warning`]s.
//!
//! Two stages report findings, as in BuildKit:
//! - [`check`] (and [`check_scoped`]) run the rules that need only the syntax tree:
//!   `StageNameCasing`, `FromAsCasing`, `NoEmptyContinuation`, `ConsistentInstructionCasing`,
//!   `DuplicateStageName`, `ReservedStageName`, `JSONArgsRecommended`, `MaintainerDeprecated`,
//!   `MultipleInstructionsDisallowed`, `LegacyKeyValueFormat`, `ExposeProtoCasing`,
//!   `ExposeInvalidFormat` and the experimental `InvalidDefinitionDescription`;
//! - `instructions` reports the rules that need ARG/ENV scoping (`UndefinedVar`,
//!   `UndefinedArgInFrom`, `InvalidDefaultArgInFrom`, `SecretsUsedInArgOrEnv`,
//!   `WorkdirRelativePath`, `RedundantTargetPlatform`, `FromPlatformFlagConstDisallowed`) while
//!   it lowers the tree, through the same [`Linter`].
//!
//! `CopyIgnoredFile` needs the build context and its `.dockerignore`; nothing reports it yet.
//!
//! [`Report`] sorts the findings by line and prints them as `docker build --check` does.

mod report;
mod rules;

pub use report::Report;
pub use rules::{Scope, UnknownTarget, check, check_scoped};

use crate::parser::{CheckOptions, Span, Warning};

macro_rules! rules {
    ($($rule:ident => $slug:literal, $description:literal;)*) => {
        /// A build check, named as BuildKit names it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Rule {
            $(
                #[doc = $description]
                $rule,
            )*
        }

        impl Rule {
            /// Every rule, in the order of BuildKit's documentation.
            pub const ALL: &'static [Rule] = &[$(Rule::$rule),*];

            /// The rule's name, as `# check=skip=` and the output spell it.
            pub fn name(self) -> &'static str {
                match self {
                    $(Rule::$rule => stringify!($rule),)*
                }
            }

            /// One line saying what the rule wants.
            pub fn description(self) -> &'static str {
                match self {
                    $(Rule::$rule => $description,)*
                }
            }

            /// The rule's documentation page.
            pub fn url(self) -> String {
                let slug = match self {
                    $(Rule::$rule => $slug,)*
                };
                format!("https://docs.docker.com/go/dockerfile/rule/{slug}/")
            }

            /// Looks a rule up by its name, ignoring ASCII case.
            pub fn from_name(name: &str) -> Option<Rule> {
                Rule::ALL.iter().copied().find(|r| r.name().eq_ignore_ascii_case(name))
            }

            /// Whether the rule is experimental: off unless `# check=experimental=` names it
            /// (or says `all`), and not affected by `skip`.
            pub fn is_experimental(self) -> bool {
                matches!(self, Rule::CopyIgnoredFile | Rule::InvalidDefinitionDescription)
            }
        }
    };
}

rules! {
    StageNameCasing => "stage-name-casing", "Stage names should be lowercase";
    FromAsCasing => "from-as-casing", "The 'as' keyword should match the case of the 'from' keyword";
    NoEmptyContinuation => "no-empty-continuation", "Empty continuation lines will become errors in a future release";
    ConsistentInstructionCasing => "consistent-instruction-casing", "All commands within the Dockerfile should use the same casing (either upper or lower)";
    DuplicateStageName => "duplicate-stage-name", "Stage names should be unique";
    ReservedStageName => "reserved-stage-name", "Reserved words should not be used as stage names";
    JSONArgsRecommended => "json-args-recommended", "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals";
    MaintainerDeprecated => "maintainer-deprecated", "The MAINTAINER instruction is deprecated, use a label instead to define an image author";
    UndefinedArgInFrom => "undefined-arg-in-from", "FROM command must use declared ARGs";
    WorkdirRelativePath => "workdir-relative-path", "Relative workdir without an absolute workdir declared within the build can have unexpected results if the base image changes";
    UndefinedVar => "undefined-var", "Variables should be defined before their use";
    MultipleInstructionsDisallowed => "multiple-instructions-disallowed", "Multiple instructions of the same type should not be used in the same stage";
    LegacyKeyValueFormat => "legacy-key-value-format", "Legacy key/value format with whitespace separator should not be used";
    RedundantTargetPlatform => "redundant-target-platform", "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior";
    SecretsUsedInArgOrEnv => "secrets-used-in-arg-or-env", "Sensitive data should not be used in the ARG or ENV commands";
    InvalidDefaultArgInFrom => "invalid-default-arg-in-from", "Default value for global ARG results in an empty or invalid base image name";
    FromPlatformFlagConstDisallowed => "from-platform-flag-const-disallowed", "FROM --platform flag should not use a constant value";
    CopyIgnoredFile => "copy-ignored-file", "Attempting to Copy file that is excluded by .dockerignore";
    InvalidDefinitionDescription => "invalid-definition-description", "Comment for build stage or argument should follow the format: `# <arg/stage name> <description>`. If this is not intended to be a description comment, add an empty line or comment between the instruction and the comment.";
    ExposeProtoCasing => "expose-proto-casing", "Protocol in EXPOSE instruction should be lowercase";
    ExposeInvalidFormat => "expose-invalid-format", "IP address and host-port mapping should not be used in EXPOSE instruction. This will become an error in a future release";
}

/// Collects findings, honouring the `# check=` directive.
///
/// As in BuildKit, rule names in `skip=` and `experimental=` are matched exactly (they are case
/// sensitive), `skip` (including `skip=all`) does not turn off an experimental rule that
/// `experimental=` turned on, and the findings are an error only with `error=true`.
#[derive(Debug, Clone, Default)]
pub struct Linter {
    options: CheckOptions,
    warnings: Vec<Warning>,
}

impl Linter {
    /// A linter configured by the Dockerfile's `# check=` directive (or by the
    /// `BUILDKIT_DOCKERFILE_CHECK` build argument, which replaces it).
    pub fn new(options: CheckOptions) -> Self {
        Linter {
            options,
            warnings: Vec::new(),
        }
    }

    /// The configuration in force.
    pub fn options(&self) -> &CheckOptions {
        &self.options
    }

    /// Whether `rule` runs under the directive.
    pub fn enabled(&self, rule: Rule) -> bool {
        let named = |list: &[String]| list.iter().any(|s| s == rule.name());
        if rule.is_experimental() {
            self.options.experimental_all || named(&self.options.experimental)
        } else {
            !self.options.skip_all && !named(&self.options.skip)
        }
    }

    /// Records a finding of `rule` at `span`, unless the rule is off.
    pub fn report(&mut self, rule: Rule, span: &Span, message: impl Into<String>) {
        if !self.enabled(rule) {
            return;
        }
        self.warnings.push(Warning {
            rule: rule.name().to_string(),
            message: message.into(),
            url: rule.url(),
            span: span.clone(),
        });
    }

    /// Whether the findings fail the build (`error=true` and at least one finding).
    pub fn is_error(&self) -> bool {
        self.options.error && !self.warnings.is_empty()
    }

    /// The findings so far, in the order they were reported.
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// The findings, in the order they were reported.
    pub fn into_warnings(self) -> Vec<Warning> {
        self.warnings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span() -> Span {
        Span {
            file: "Dockerfile".into(),
            line: 1,
            column: 1,
            end_line: 1,
        }
    }

    #[test]
    fn skip_matches_names_exactly() {
        let options = CheckOptions {
            skip: vec!["fromascasing".into(), "StageNameCasing".into()],
            ..CheckOptions::default()
        };
        let linter = Linter::new(options);
        assert!(linter.enabled(Rule::FromAsCasing));
        assert!(!linter.enabled(Rule::StageNameCasing));
    }

    #[test]
    fn experimental_rules_need_opting_in_and_ignore_skip() {
        let linter = Linter::default();
        assert!(!linter.enabled(Rule::InvalidDefinitionDescription));
        assert!(!linter.enabled(Rule::CopyIgnoredFile));

        let linter = Linter::new(CheckOptions {
            skip_all: true,
            experimental: vec!["InvalidDefinitionDescription".into()],
            ..CheckOptions::default()
        });
        assert!(linter.enabled(Rule::InvalidDefinitionDescription));
        assert!(!linter.enabled(Rule::CopyIgnoredFile));
        assert!(!linter.enabled(Rule::FromAsCasing));

        let linter = Linter::new(CheckOptions {
            experimental_all: true,
            ..CheckOptions::default()
        });
        assert!(linter.enabled(Rule::CopyIgnoredFile));
    }

    #[test]
    fn error_needs_a_finding() {
        let mut linter = Linter::new(CheckOptions {
            error: true,
            ..CheckOptions::default()
        });
        assert!(!linter.is_error());
        linter.report(Rule::MaintainerDeprecated, &span(), "m");
        assert!(linter.is_error());
        assert_eq!(linter.warnings()[0].rule, "MaintainerDeprecated");
        assert_eq!(
            linter.warnings()[0].url,
            "https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/"
        );
    }
}
