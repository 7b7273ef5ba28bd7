//! The cluster query language: the expressions of `memberOf` placement constraints.
//!
//! An expression is `subject operator [argument]`, and expressions combine with `and` (`&&`),
//! `or` (`||`), `not` (`!`) and parentheses; `not` binds tighter than `and`, which binds tighter
//! than `or`:
//!
//! ```text
//! attribute:ecs.instance-type =~ t2.* and attribute:ecs.availability-zone != us-east-1d
//! (attribute:stack == prod or attribute:stack == staging) and not(task:group == database)
//! ec2InstanceId in ['i-abcd1234', 'i-wxyx7890']
//! ```
//!
//! Subjects and the operators they take:
//!
//! | subject | operators |
//! |---|---|
//! | `attribute:<name>` | `==` `!=` `in` `not_in` `=~` `!~` `exists` `not_exists` |
//! | `task:group` | `==` `!=` `in` `not_in` `=~` `!~` `exists` `not_exists` |
//! | `agentConnected`, `ec2InstanceId` | `==` `!=` `in` `not_in` `=~` `!~` |
//! | `agentVersion`, `registeredAt`, `runningTasksCount` | `==` `!=` `>` `>=` `<` `<=` |
//!
//! Every operator also has its word form (`equals`, `not_equals`, `greater_than`,
//! `greater_than_equal`, `less_than`, `less_than_equal`, `matches`, `not_matches`) and the
//! negated ones their `!` form (`!in`, `!exists`). Arguments are bare words (`t2.small`,
//! `service:web`) or quoted with `'` or `"`; `in` takes a list `[a, b]`. `=~` takes a Java-style
//! regular expression matched against the whole value (`t2.*`: every t2 type; see
//! [`crate::ecs`]'s pattern module for the subset supported). `registeredAt` takes the dates
//! `2018-06-18T22:28:28+00:00`, `2018-06-18T22:28:28Z`, `2018-06-18T22:28:28` and `2018-06-18`;
//! `agentVersion` dotted numbers compared part by part.
//!
//! Semantics for the two subjects that can be absent or many:
//! - `attribute:<name>`: an instance without the attribute (or with the attribute but no value)
//!   satisfies only `not_exists` (`exists` needs only the name). So `attribute:stack != prod`
//!   selects the instances that have a `stack` attribute other than `prod`, as ECS's
//!   documentation describes.
//! - `task:group`: an instance satisfies `==`, `in` and `=~` when one of its tasks is in a
//!   matching group, and `!=`, `not_in` and `!~` when none is; `exists` when it has a task at
//!   all.
//!
//! [`Expression::parse`] reports errors with the column (from 1) where the problem is.

use std::cmp::Ordering;
use std::fmt;

use super::Timestamp;
use super::pattern::Pattern;

/// The longest expression ECS accepts, in characters.
pub const MAX_EXPRESSION_LENGTH: usize = 2000;

/// What an expression is evaluated against: one container instance and the tasks on it.
pub trait Candidate {
    /// The attribute `name`: `None` when the instance lacks it, `Some(None)` when it has the
    /// attribute without a value.
    fn attribute(&self, name: &str) -> Option<Option<&str>>;
    /// Whether the instance's agent is connected.
    fn agent_connected(&self) -> bool;
    /// The instance's agent version (`1.14.5`), if known.
    fn agent_version(&self) -> Option<&str>;
    /// The instance's EC2 instance id.
    fn ec2_instance_id(&self) -> &str;
    /// When the instance registered.
    fn registered_at(&self) -> Timestamp;
    /// How many tasks run on the instance.
    fn running_tasks_count(&self) -> u32;
    /// The task groups of the tasks on the instance (one entry per task).
    fn task_groups(&self) -> Vec<&str>;
}

/// An expression that does not parse: where, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct QueryError {
    /// The column of the problem, from 1 (in characters).
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// A parsed expression.
#[derive(Debug, Clone)]
pub struct Expression {
    source: String,
    root: Node,
}

/// The subject of a comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// `attribute:<name>`.
    Attribute(String),
    /// `agentConnected`.
    AgentConnected,
    /// `agentVersion`.
    AgentVersion,
    /// `ec2InstanceId`.
    Ec2InstanceId,
    /// `registeredAt`.
    RegisteredAt,
    /// `runningTasksCount`.
    RunningTasksCount,
    /// `task:group`.
    TaskGroup,
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Attribute(name) => write!(f, "attribute:{name}"),
            Subject::AgentConnected => f.write_str("agentConnected"),
            Subject::AgentVersion => f.write_str("agentVersion"),
            Subject::Ec2InstanceId => f.write_str("ec2InstanceId"),
            Subject::RegisteredAt => f.write_str("registeredAt"),
            Subject::RunningTasksCount => f.write_str("runningTasksCount"),
            Subject::TaskGroup => f.write_str("task:group"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    Equals,
    NotEquals,
    GreaterThan,
    GreaterThanEqual,
    LessThan,
    LessThanEqual,
    Exists,
    NotExists,
    In,
    NotIn,
    Matches,
    NotMatches,
}

impl Operator {
    fn name(self) -> &'static str {
        match self {
            Operator::Equals => "==",
            Operator::NotEquals => "!=",
            Operator::GreaterThan => ">",
            Operator::GreaterThanEqual => ">=",
            Operator::LessThan => "<",
            Operator::LessThanEqual => "<=",
            Operator::Exists => "exists",
            Operator::NotExists => "not_exists",
            Operator::In => "in",
            Operator::NotIn => "not_in",
            Operator::Matches => "=~",
            Operator::NotMatches => "!~",
        }
    }

    fn from_symbol(text: &str) -> Option<Operator> {
        Some(match text {
            "==" | "equals" => Operator::Equals,
            "!=" | "not_equals" => Operator::NotEquals,
            ">" | "greater_than" => Operator::GreaterThan,
            ">=" | "greater_than_equal" => Operator::GreaterThanEqual,
            "<" | "less_than" => Operator::LessThan,
            "<=" | "less_than_equal" => Operator::LessThanEqual,
            "exists" => Operator::Exists,
            "!exists" | "not_exists" => Operator::NotExists,
            "in" => Operator::In,
            "!in" | "not_in" => Operator::NotIn,
            "=~" | "matches" => Operator::Matches,
            "!~" | "not_matches" => Operator::NotMatches,
            _ => return None,
        })
    }

    /// The positive operator this one negates, if it is a negation.
    fn positive(self) -> (Operator, bool) {
        match self {
            Operator::NotEquals => (Operator::Equals, true),
            Operator::NotExists => (Operator::Exists, true),
            Operator::NotIn => (Operator::In, true),
            Operator::NotMatches => (Operator::Matches, true),
            other => (other, false),
        }
    }

    fn is_ordering(self) -> bool {
        matches!(
            self,
            Operator::Equals
                | Operator::NotEquals
                | Operator::GreaterThan
                | Operator::GreaterThanEqual
                | Operator::LessThan
                | Operator::LessThanEqual
        )
    }
}

#[derive(Debug, Clone)]
enum Argument {
    None,
    Value(String),
    List(Vec<String>),
    Pattern(Pattern),
}

#[derive(Debug, Clone)]
struct Comparison {
    subject: Subject,
    operator: Operator,
    argument: Argument,
}

#[derive(Debug, Clone)]
enum Node {
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Not(Box<Node>),
    Compare(Comparison),
}

impl Expression {
    /// Parses an expression.
    pub fn parse(source: &str) -> Result<Expression, QueryError> {
        let chars: Vec<char> = source.chars().collect();
        if chars.len() > MAX_EXPRESSION_LENGTH {
            return Err(QueryError {
                column: MAX_EXPRESSION_LENGTH + 1,
                message: format!(
                    "the expression is {} characters long; the maximum is {MAX_EXPRESSION_LENGTH}",
                    chars.len()
                ),
            });
        }
        let mut parser = Parser { chars, pos: 0 };
        parser.skip_space();
        if parser.at_end() {
            return Err(parser.error("the expression is empty"));
        }
        let root = parser.or()?;
        parser.skip_space();
        if !parser.at_end() {
            let found = parser.describe_next();
            return Err(parser.error(format!("expected 'and', 'or' or the end, found {found}")));
        }
        Ok(Expression {
            source: source.to_owned(),
            root,
        })
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether `candidate` satisfies the expression.
    pub fn matches(&self, candidate: &dyn Candidate) -> bool {
        evaluate(&self.root, candidate)
    }
}

impl fmt::Display for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for Expression {
    type Err = QueryError;

    fn from_str(source: &str) -> Result<Expression, QueryError> {
        Expression::parse(source)
    }
}

fn evaluate(node: &Node, candidate: &dyn Candidate) -> bool {
    match node {
        Node::And(left, right) => evaluate(left, candidate) && evaluate(right, candidate),
        Node::Or(left, right) => evaluate(left, candidate) || evaluate(right, candidate),
        Node::Not(inner) => !evaluate(inner, candidate),
        Node::Compare(comparison) => compare(comparison, candidate),
    }
}

fn compare(comparison: &Comparison, candidate: &dyn Candidate) -> bool {
    let (positive, negated) = comparison.operator.positive();
    match &comparison.subject {
        Subject::Attribute(name) => match candidate.attribute(name) {
            None => comparison.operator == Operator::NotExists,
            Some(_) if positive == Operator::Exists => !negated,
            Some(None) => false,
            Some(Some(value)) => test_text(positive, &comparison.argument, value) != negated,
        },
        Subject::TaskGroup => {
            let groups = candidate.task_groups();
            let any = if positive == Operator::Exists {
                !groups.is_empty()
            } else {
                groups
                    .iter()
                    .any(|group| test_text(positive, &comparison.argument, group))
            };
            any != negated
        }
        Subject::AgentConnected => {
            let value = if candidate.agent_connected() {
                "true"
            } else {
                "false"
            };
            test_text(positive, &comparison.argument, value) != negated
        }
        Subject::Ec2InstanceId => {
            test_text(positive, &comparison.argument, candidate.ec2_instance_id()) != negated
        }
        Subject::RunningTasksCount => {
            let argument = argument_value(&comparison.argument).parse::<u64>().ok();
            let count = u64::from(candidate.running_tasks_count());
            argument.is_some_and(|argument| order(comparison.operator, count.cmp(&argument)))
        }
        Subject::RegisteredAt => {
            let argument = Timestamp::parse_date(argument_value(&comparison.argument));
            argument.is_some_and(|argument| {
                order(
                    comparison.operator,
                    candidate.registered_at().cmp(&argument),
                )
            })
        }
        Subject::AgentVersion => {
            let argument = parse_version(argument_value(&comparison.argument));
            let version = candidate.agent_version().and_then(parse_version);
            match (version, argument) {
                (Some(version), Some(argument)) => {
                    order(comparison.operator, compare_versions(&version, &argument))
                }
                _ => false,
            }
        }
    }
}

fn argument_value(argument: &Argument) -> &str {
    match argument {
        Argument::Value(value) => value,
        _ => "",
    }
}

/// `==`, `in` and `=~` on text.
fn test_text(operator: Operator, argument: &Argument, value: &str) -> bool {
    match (operator, argument) {
        (Operator::Equals, Argument::Value(expected)) => value == expected,
        (Operator::In, Argument::List(values)) => values.iter().any(|v| v == value),
        (Operator::Matches, Argument::Pattern(pattern)) => pattern.matches(value),
        _ => false,
    }
}

fn order(operator: Operator, ordering: Ordering) -> bool {
    match operator {
        Operator::Equals => ordering == Ordering::Equal,
        Operator::NotEquals => ordering != Ordering::Equal,
        Operator::GreaterThan => ordering == Ordering::Greater,
        Operator::GreaterThanEqual => ordering != Ordering::Less,
        Operator::LessThan => ordering == Ordering::Less,
        Operator::LessThanEqual => ordering != Ordering::Greater,
        _ => false,
    }
}

fn parse_version(text: &str) -> Option<Vec<u64>> {
    let text = text.strip_prefix('v').unwrap_or(text);
    text.split('.').map(|part| part.parse().ok()).collect()
}

/// Compares dotted versions part by part, missing parts counting as 0 (`1.14` == `1.14.0`).
fn compare_versions(a: &[u64], b: &[u64]) -> Ordering {
    (0..a.len().max(b.len()))
        .map(|i| a.get(i).unwrap_or(&0).cmp(b.get(i).unwrap_or(&0)))
        .find(|ordering| ordering.is_ne())
        .unwrap_or(Ordering::Equal)
}

/// Whether `operator` may be used on `subject` (see the table in the module documentation).
fn operator_applies(subject: &Subject, operator: Operator) -> bool {
    use Operator::*;
    match subject {
        Subject::Attribute(_) | Subject::TaskGroup => matches!(
            operator,
            Equals | NotEquals | In | NotIn | Matches | NotMatches | Exists | NotExists
        ),
        Subject::AgentConnected | Subject::Ec2InstanceId => {
            matches!(
                operator,
                Equals | NotEquals | In | NotIn | Matches | NotMatches
            )
        }
        Subject::AgentVersion | Subject::RegisteredAt | Subject::RunningTasksCount => {
            operator.is_ordering()
        }
    }
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

/// Characters that end a bare word.
fn ends_word(c: char) -> bool {
    c.is_whitespace() || matches!(c, '(' | ')' | '[' | ']' | ',')
}

impl Parser {
    fn error(&self, message: impl Into<String>) -> QueryError {
        self.error_at(self.pos, message)
    }

    fn error_at(&self, pos: usize, message: impl Into<String>) -> QueryError {
        QueryError {
            column: pos + 1,
            message: message.into(),
        }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn rest_starts_with(&self, text: &str) -> bool {
        let expected: Vec<char> = text.chars().collect();
        self.chars[self.pos..].starts_with(&expected)
    }

    /// The word at the current position (up to whitespace or punctuation), not consumed.
    fn peek_word(&self) -> String {
        self.chars[self.pos..]
            .iter()
            .take_while(|&&c| !ends_word(c))
            .collect()
    }

    fn describe_next(&self) -> String {
        match self.peek() {
            None => "the end of the expression".to_owned(),
            Some(c) if ends_word(c) => format!("'{c}'"),
            Some(_) => format!("'{}'", self.peek_word()),
        }
    }

    /// Consumes a keyword (case-insensitively) when it stands as a word of its own.
    fn eat_keyword(&mut self, keyword: &str) -> bool {
        let end = self.pos + keyword.chars().count();
        let word: String = self.chars[self.pos..end.min(self.chars.len())]
            .iter()
            .collect();
        let boundary = self.chars.get(end).is_none_or(|&c| ends_word(c));
        if word.eq_ignore_ascii_case(keyword) && boundary {
            self.pos = end;
            true
        } else {
            false
        }
    }

    fn eat_symbol(&mut self, symbol: &str) -> bool {
        if self.rest_starts_with(symbol) {
            self.pos += symbol.chars().count();
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Node, QueryError> {
        let mut left = self.and()?;
        loop {
            self.skip_space();
            if self.eat_symbol("||") || self.eat_keyword("or") {
                let right = self.and()?;
                left = Node::Or(Box::new(left), Box::new(right));
            } else {
                return Ok(left);
            }
        }
    }

    fn and(&mut self) -> Result<Node, QueryError> {
        let mut left = self.unary()?;
        loop {
            self.skip_space();
            if self.eat_symbol("&&") || self.eat_keyword("and") {
                let right = self.unary()?;
                left = Node::And(Box::new(left), Box::new(right));
            } else {
                return Ok(left);
            }
        }
    }

    fn unary(&mut self) -> Result<Node, QueryError> {
        self.skip_space();
        if self.eat_keyword("not") || self.eat_symbol("!") {
            return Ok(Node::Not(Box::new(self.unary()?)));
        }
        if self.eat_symbol("(") {
            let inner = self.or()?;
            self.skip_space();
            if !self.eat_symbol(")") {
                let found = self.describe_next();
                return Err(self.error(format!("expected ')', found {found}")));
            }
            return Ok(inner);
        }
        self.comparison().map(Node::Compare)
    }

    fn comparison(&mut self) -> Result<Comparison, QueryError> {
        let subject = self.subject()?;
        self.skip_space();
        let operator_at = self.pos;
        let operator = self.operator(&subject)?;
        if !operator_applies(&subject, operator) {
            return Err(self.error_at(
                operator_at,
                format!("operator '{}' does not apply to {subject}", operator.name()),
            ));
        }
        let argument = self.argument(&subject, operator)?;
        Ok(Comparison {
            subject,
            operator,
            argument,
        })
    }

    fn subject(&mut self) -> Result<Subject, QueryError> {
        let start = self.pos;
        if self.at_end() {
            return Err(self.error("expected a subject, found the end of the expression"));
        }
        if self.eat_symbol("attribute:") {
            let name: String = self.chars[self.pos..]
                .iter()
                .take_while(|&&c| {
                    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | '\\')
                })
                .collect();
            if name.is_empty() {
                return Err(self.error("expected an attribute name after 'attribute:'"));
            }
            if name.chars().count() > 128 {
                return Err(self.error("an attribute name has at most 128 characters"));
            }
            self.pos += name.chars().count();
            return Ok(Subject::Attribute(name));
        }
        let word: String = self.chars[self.pos..]
            .iter()
            .take_while(|&&c| c.is_ascii_alphanumeric() || c == ':' || c == '_')
            .collect();
        let subject = match word.as_str() {
            "agentConnected" => Subject::AgentConnected,
            "agentVersion" => Subject::AgentVersion,
            "ec2InstanceId" => Subject::Ec2InstanceId,
            "registeredAt" => Subject::RegisteredAt,
            "runningTasksCount" => Subject::RunningTasksCount,
            "task:group" => Subject::TaskGroup,
            _ => {
                let found = if word.is_empty() {
                    self.describe_next()
                } else {
                    format!("'{word}'")
                };
                return Err(self.error_at(
                    start,
                    format!(
                        "expected a subject (attribute:<name>, task:group, agentConnected, \
                         agentVersion, ec2InstanceId, registeredAt or runningTasksCount), found \
                         {found}"
                    ),
                ));
            }
        };
        self.pos += word.chars().count();
        Ok(subject)
    }

    fn operator(&mut self, subject: &Subject) -> Result<Operator, QueryError> {
        let start = self.pos;
        let symbol: String = self.chars[self.pos..]
            .iter()
            .take_while(|&&c| matches!(c, '=' | '!' | '<' | '>' | '~'))
            .collect();
        let text = if symbol.is_empty() {
            self.peek_word()
        } else if symbol == "!" {
            // `!in`, `!exists`
            let word: String = self.chars[self.pos + 1..]
                .iter()
                .take_while(|&&c| !ends_word(c))
                .collect();
            format!("!{word}")
        } else {
            symbol
        };
        match Operator::from_symbol(&text) {
            Some(operator) => {
                self.pos += text.chars().count();
                Ok(operator)
            }
            None => {
                let found = if text.is_empty() {
                    self.describe_next()
                } else {
                    format!("'{text}'")
                };
                Err(self.error_at(
                    start,
                    format!("expected an operator after '{subject}', found {found}"),
                ))
            }
        }
    }

    fn argument(&mut self, subject: &Subject, operator: Operator) -> Result<Argument, QueryError> {
        match operator {
            Operator::Exists | Operator::NotExists => Ok(Argument::None),
            Operator::In | Operator::NotIn => {
                self.skip_space();
                if !self.eat_symbol("[") {
                    let found = self.describe_next();
                    return Err(self.error(format!(
                        "expected a list '[a, b, ...]' after '{}', found {found}",
                        operator.name()
                    )));
                }
                let mut values = Vec::new();
                loop {
                    self.skip_space();
                    let at = self.pos;
                    values.push(self.value(false)?);
                    self.check_value(subject, values.last().map(String::as_str).unwrap_or(""), at)?;
                    self.skip_space();
                    if self.eat_symbol(",") {
                        continue;
                    }
                    if self.eat_symbol("]") {
                        return Ok(Argument::List(values));
                    }
                    let found = self.describe_next();
                    return Err(
                        self.error(format!("expected ',' or ']' in the list, found {found}"))
                    );
                }
            }
            Operator::Matches | Operator::NotMatches => {
                self.skip_space();
                let at = self.pos;
                let quoted = matches!(self.peek(), Some('\'' | '"'));
                let source = self.value(true)?;
                let pattern = Pattern::new(&source).map_err(|error| {
                    // Point into the pattern itself: past the quote, if there was one.
                    self.error_at(
                        at + usize::from(quoted) + error.offset,
                        format!("invalid pattern '{source}': {error}"),
                    )
                })?;
                Ok(Argument::Pattern(pattern))
            }
            _ => {
                self.skip_space();
                let at = self.pos;
                let value = self.value(false)?;
                self.check_value(subject, &value, at)?;
                Ok(Argument::Value(value))
            }
        }
    }

    /// Checks that a value suits its subject: a number, a date, a version, true or false.
    fn check_value(&self, subject: &Subject, value: &str, at: usize) -> Result<(), QueryError> {
        let problem = match subject {
            Subject::RunningTasksCount if value.parse::<u64>().is_err() => {
                "runningTasksCount takes a whole number"
            }
            Subject::RegisteredAt if Timestamp::parse_date(value).is_none() => {
                "registeredAt takes a date: 2018-06-18T22:28:28+00:00, 2018-06-18T22:28:28Z, \
                 2018-06-18T22:28:28 or 2018-06-18"
            }
            Subject::AgentVersion if parse_version(value).is_none() => {
                "agentVersion takes a dotted version such as 1.14.5"
            }
            Subject::AgentConnected if value != "true" && value != "false" => {
                "agentConnected takes true or false"
            }
            _ => return Ok(()),
        };
        Err(self.error_at(at, format!("{problem}, not '{value}'")))
    }

    /// A bare word or a quoted string. A bare pattern may hold balanced parentheses.
    fn value(&mut self, pattern: bool) -> Result<String, QueryError> {
        let start = self.pos;
        match self.peek() {
            None => Err(self.error("expected a value, found the end of the expression")),
            Some(quote @ ('\'' | '"')) => {
                self.pos += 1;
                let text: String = self.chars[self.pos..]
                    .iter()
                    .take_while(|&&c| c != quote)
                    .collect();
                self.pos += text.chars().count();
                if !self.eat_symbol(&quote.to_string()) {
                    return Err(self.error_at(start, format!("unclosed quote {quote}")));
                }
                Ok(text)
            }
            Some(_) => {
                // A pattern may hold balanced parentheses, character classes and escapes; a
                // plain value ends at whitespace or punctuation.
                let mut depth = 0usize;
                let mut in_class = false;
                let mut text = String::new();
                while let Some(c) = self.peek() {
                    if c.is_whitespace() {
                        break;
                    }
                    if pattern {
                        match c {
                            '\\' => {
                                text.push(c);
                                self.pos += 1;
                                match self.peek() {
                                    Some(escaped) => {
                                        text.push(escaped);
                                        self.pos += 1;
                                    }
                                    None => break,
                                }
                                continue;
                            }
                            '[' if !in_class => in_class = true,
                            ']' if in_class => in_class = false,
                            _ if in_class => {}
                            '(' => depth += 1,
                            ')' if depth > 0 => depth -= 1,
                            c if ends_word(c) => break,
                            _ => {}
                        }
                    } else if ends_word(c) {
                        break;
                    }
                    text.push(c);
                    self.pos += 1;
                }
                if text.is_empty() {
                    let found = self.describe_next();
                    return Err(self.error(format!("expected a value, found {found}")));
                }
                Ok(text)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Instance {
        id: &'static str,
        attributes: Vec<(&'static str, Option<&'static str>)>,
        connected: bool,
        version: Option<&'static str>,
        registered_at: Timestamp,
        groups: Vec<&'static str>,
    }

    impl Candidate for Instance {
        fn attribute(&self, name: &str) -> Option<Option<&str>> {
            self.attributes
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, value)| *value)
        }
        fn agent_connected(&self) -> bool {
            self.connected
        }
        fn agent_version(&self) -> Option<&str> {
            self.version
        }
        fn ec2_instance_id(&self) -> &str {
            self.id
        }
        fn registered_at(&self) -> Timestamp {
            self.registered_at
        }
        fn running_tasks_count(&self) -> u32 {
            self.groups.len() as u32
        }
        fn task_groups(&self) -> Vec<&str> {
            self.groups.clone()
        }
    }

    fn t2_small() -> Instance {
        Instance {
            id: "i-abcd1234",
            attributes: vec![
                ("ecs.instance-type", Some("t2.small")),
                ("ecs.availability-zone", Some("us-east-1a")),
                ("stack", Some("prod")),
                ("gpu", None),
            ],
            connected: true,
            version: Some("1.14.5"),
            registered_at: Timestamp::parse_date("2018-06-18T22:28:28Z").unwrap(),
            groups: vec!["service:web", "family:batch"],
        }
    }

    fn m5_large() -> Instance {
        Instance {
            id: "i-wxyx7890",
            attributes: vec![
                ("ecs.instance-type", Some("m5.large")),
                ("ecs.availability-zone", Some("us-east-1d")),
            ],
            connected: false,
            version: Some("1.80.0"),
            registered_at: Timestamp::parse_date("2024-01-01").unwrap(),
            groups: vec![],
        }
    }

    fn check(expression: &str, instance: &Instance) -> bool {
        Expression::parse(expression)
            .unwrap_or_else(|e| panic!("{expression}: {e}"))
            .matches(instance)
    }

    fn error(expression: &str) -> QueryError {
        Expression::parse(expression).unwrap_err()
    }

    #[test]
    fn the_documented_examples() {
        let (t2, m5) = (t2_small(), m5_large());
        assert!(check("attribute:ecs.instance-type == t2.small", &t2));
        assert!(!check("attribute:ecs.instance-type == t2.small", &m5));
        assert!(check(
            "attribute:ecs.availability-zone in [us-east-1a, us-east-1b]",
            &t2
        ));
        assert!(!check(
            "attribute:ecs.availability-zone in [us-east-1a, us-east-1b]",
            &m5
        ));
        let compound =
            "attribute:ecs.instance-type =~ t2.* and attribute:ecs.availability-zone != us-east-1d";
        assert!(check(compound, &t2));
        assert!(!check(compound, &m5));
        assert!(check("task:group == service:web", &t2));
        assert!(!check("not(task:group == service:web)", &t2));
        assert!(check("not(task:group == database)", &t2));
        assert!(check("runningTasksCount == 2", &t2));
        assert!(check("agentVersion < 1.14.6", &t2));
        assert!(!check("agentVersion < 1.14.5", &t2));
        assert!(check("registeredAt < 2018-06-19", &t2));
        assert!(!check("registeredAt < 2018-06-19", &m5));
        assert!(check("ec2InstanceId in ['i-abcd1234', 'i-wxyx7890']", &m5));
    }

    #[test]
    fn word_operators_and_negations() {
        let t2 = t2_small();
        assert!(check("attribute:stack equals prod", &t2));
        assert!(check("attribute:stack not_equals staging", &t2));
        assert!(check("attribute:stack matches pr.*", &t2));
        assert!(check("attribute:stack not_matches st.*", &t2));
        assert!(check("attribute:stack !~ st.*", &t2));
        assert!(check("attribute:stack not_in [dev, staging]", &t2));
        assert!(check("attribute:stack !in [dev, staging]", &t2));
        assert!(check("runningTasksCount greater_than 1", &t2));
        assert!(check("runningTasksCount >= 2", &t2));
        assert!(check("runningTasksCount less_than_equal 2", &t2));
        assert!(!check("runningTasksCount != 2", &t2));
    }

    #[test]
    fn absent_attributes_satisfy_only_not_exists() {
        let (t2, m5) = (t2_small(), m5_large());
        assert!(check("attribute:stack exists", &t2));
        assert!(!check("attribute:stack exists", &m5));
        assert!(check("attribute:stack !exists", &m5));
        assert!(check("attribute:stack not_exists", &m5));
        assert!(
            !check("attribute:stack != prod", &m5),
            "no stack attribute at all"
        );
        assert!(!check("attribute:stack not_in [prod]", &m5));
        assert!(check("not attribute:stack == prod", &m5));
        // An attribute with no value exists, and equals nothing.
        assert!(check("attribute:gpu exists", &t2));
        assert!(!check("attribute:gpu == true", &t2));
        assert!(!check("attribute:gpu != true", &t2));
    }

    #[test]
    fn task_group_semantics() {
        let (t2, m5) = (t2_small(), m5_large());
        assert!(check("task:group in [service:api, family:batch]", &t2));
        assert!(check("task:group =~ service:.*", &t2));
        assert!(
            !check("task:group != service:web", &t2),
            "a task of the group is there"
        );
        assert!(check("task:group != service:web", &m5));
        assert!(check("task:group exists", &t2));
        assert!(check("task:group not_exists", &m5));
    }

    #[test]
    fn agent_and_instance_subjects() {
        let (t2, m5) = (t2_small(), m5_large());
        assert!(check("agentConnected == true", &t2));
        assert!(check("agentConnected == false", &m5));
        assert!(check("agentConnected in [false]", &m5));
        assert!(check("ec2InstanceId =~ i-abcd.*", &t2));
        assert!(check("ec2InstanceId != i-abcd1234", &m5));
        assert!(check("agentVersion >= 1.80", &m5));
        assert!(check("agentVersion == 1.80.0", &m5));
        assert!(check("registeredAt >= 2018-06-18T22:28:28+00:00", &t2));
        assert!(check("registeredAt == 2018-06-18T22:28:28", &t2));
        assert!(!check("registeredAt > 2018-06-18T22:28:28Z", &t2));
    }

    #[test]
    fn boolean_precedence_and_parentheses() {
        let (t2, m5) = (t2_small(), m5_large());
        // and binds tighter than or.
        let e = "attribute:stack == dev and runningTasksCount == 0 or agentConnected == true";
        assert!(check(e, &t2));
        assert!(!check(e, &m5));
        let grouped =
            "attribute:stack == dev and (runningTasksCount == 0 or agentConnected == true)";
        assert!(!check(grouped, &t2));
        assert!(check(
            "(attribute:stack == prod || attribute:stack == dev) && !task:group == db",
            &t2
        ));
        assert!(check(
            "NOT (attribute:stack == dev) AND attribute:stack exists",
            &t2
        ));
        assert!(check("not not attribute:stack == prod", &t2));
        assert!(check("((attribute:stack==prod))", &t2));
    }

    #[test]
    fn patterns_may_hold_parentheses_and_quotes() {
        let (t2, m5) = (t2_small(), m5_large());
        assert!(check("attribute:ecs.instance-type =~ (t2|t3).*", &t2));
        assert!(!check("attribute:ecs.instance-type =~ (t2|t3).*", &m5));
        assert!(check("(attribute:ecs.instance-type =~ (t2|m5)\\..*)", &m5));
        assert!(check(
            "attribute:ecs.availability-zone =~ us-east-1[abc]",
            &t2
        ));
        assert!(check("attribute:ecs.instance-type =~ 't2 ?\\.small'", &t2));
        assert!(check("attribute:stack == \"prod\"", &t2));
    }

    #[test]
    fn parse_errors_name_the_column() {
        let e = error("attribute:stack ==");
        assert_eq!(e.column, 19);
        assert_eq!(
            e.to_string(),
            "column 19: expected a value, found the end of the expression"
        );

        let e = error("attribute:stack prod");
        assert_eq!(e.column, 17);
        assert_eq!(
            e.message,
            "expected an operator after 'attribute:stack', found 'prod'"
        );

        let e = error("instanceType == t2.small");
        assert_eq!(e.column, 1);
        assert!(
            e.message
                .starts_with("expected a subject (attribute:<name>, task:group"),
            "{e}"
        );
        assert!(e.message.ends_with("found 'instanceType'"), "{e}");

        let e = error("attribute:a == b and");
        assert_eq!(e.column, 21);

        let e = error("(attribute:a == b");
        assert_eq!(
            (e.column, e.message.as_str()),
            (18, "expected ')', found the end of the expression")
        );

        let e = error("attribute:a == b c");
        assert_eq!(
            (e.column, e.message.as_str()),
            (18, "expected 'and', 'or' or the end, found 'c'")
        );

        let e = error("attribute:a in a, b");
        assert_eq!(e.column, 16);
        assert!(
            e.message
                .starts_with("expected a list '[a, b, ...]' after 'in'")
        );

        let e = error("attribute:a in [a b]");
        assert_eq!(
            (e.column, e.message.as_str()),
            (19, "expected ',' or ']' in the list, found 'b'")
        );

        let e = error("attribute:a =~ *.large");
        assert_eq!(e.column, 16);
        assert_eq!(
            e.message,
            "invalid pattern '*.large': dangling meta character '*'"
        );

        let e = error("attribute:a =~ 't2.**'");
        assert_eq!(e.column, 21);

        let e = error("attribute:a == 'b");
        assert_eq!((e.column, e.message.as_str()), (16, "unclosed quote '"));

        assert_eq!(error("   ").message, "the expression is empty");
        assert_eq!(error("attribute: == b").column, 11);
    }

    #[test]
    fn operators_are_checked_against_subjects() {
        let e = error("runningTasksCount =~ 1.*");
        assert_eq!(
            (e.column, e.message.as_str()),
            (19, "operator '=~' does not apply to runningTasksCount")
        );
        let e = error("attribute:stack > prod");
        assert_eq!(e.message, "operator '>' does not apply to attribute:stack");
        let e = error("agentConnected exists");
        assert_eq!(
            e.message,
            "operator 'exists' does not apply to agentConnected"
        );
        let e = error("runningTasksCount > many");
        assert_eq!(
            (e.column, e.message.as_str()),
            (21, "runningTasksCount takes a whole number, not 'many'")
        );
        let e = error("registeredAt < yesterday");
        assert!(e.message.starts_with("registeredAt takes a date"), "{e}");
        let e = error("agentConnected == yes");
        assert_eq!(e.message, "agentConnected takes true or false, not 'yes'");
        let e = error("agentVersion > latest");
        assert_eq!(e.column, 16);
    }

    #[test]
    fn expressions_have_a_length_limit() {
        let long = format!("attribute:a == {}", "x".repeat(2000));
        assert_eq!(error(&long).column, 2001);
        let parsed: Expression = "attribute:a exists".parse().unwrap();
        assert_eq!(parsed.to_string(), "attribute:a exists");
    }
}
