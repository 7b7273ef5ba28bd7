//! Errors of the suite's own machinery (configuration and transport), as opposed to the
//! registry's answers, which the checks judge and report.

/// Why the suite could not be configured or could not talk to the registry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value (URL, namespace, environment variable) is not usable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A URL could not be parsed or resolved against the registry's root URL.
    #[error("invalid URL {url:?}: {reason}")]
    Url {
        /// The text that failed to parse.
        url: String,
        /// The parser's complaint.
        reason: String,
    },
    /// The HTTP request could not be sent or its response could not be read.
    #[error("{method} {url}: {source}")]
    Transport {
        /// The request method.
        method: String,
        /// The request URL.
        url: String,
        /// What went wrong on the wire.
        #[source]
        source: reqwest::Error,
    },
}
