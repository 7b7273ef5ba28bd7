//! A thin blocking HTTP layer over `reqwest` that keeps every exchange printable, so a failed
//! check can show the request it sent and the response it judged.
//!
//! Redirects are followed, as the spec asks of clients; the statuses the checks judge are those
//! after redirects. Relative `Location` headers are resolved against the URL that answered.

use std::fmt;
use std::time::Duration;

use reqwest::blocking;
use reqwest::header::HeaderMap;
use reqwest::{Method, Url};

use crate::Error;

/// Bodies longer than this many bytes are cut in summaries and debug output.
const SHOWN_BODY: usize = 600;

/// A registry client rooted at one base URL (for example `http://127.0.0.1:5000`).
#[derive(Debug, Clone)]
pub struct Client {
    http: blocking::Client,
    root: Url,
    credentials: Option<(String, String)>,
    debug: bool,
}

impl Client {
    /// A client for the registry at `root_url`. With `credentials`, every request carries HTTP
    /// basic authentication; with `debug`, every exchange is printed to stderr.
    pub fn new(
        root_url: &str,
        credentials: Option<(String, String)>,
        debug: bool,
    ) -> Result<Self, Error> {
        let root = Url::parse(root_url).map_err(|e| Error::Url {
            url: root_url.to_owned(),
            reason: e.to_string(),
        })?;
        if root.scheme() != "http" && root.scheme() != "https" {
            return Err(Error::Config(format!(
                "root URL {root_url:?} must use http or https"
            )));
        }
        if root.host_str().is_none() {
            return Err(Error::Config(format!("root URL {root_url:?} has no host")));
        }
        let http = blocking::Client::builder()
            .timeout(Duration::from_secs(300))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            root,
            credentials,
            debug,
        })
    }

    /// The registry's root URL.
    pub fn root(&self) -> &Url {
        &self.root
    }

    /// Resolves `target` (an absolute URL, or a path such as `/v2/`) against the root URL.
    pub fn url(&self, target: &str) -> Result<Url, Error> {
        self.root.join(target).map_err(|e| Error::Url {
            url: target.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Starts a request of any method to `target`, resolved as [`Client::url`] does.
    pub fn request(&self, method: Method, target: &str) -> Request<'_> {
        Request {
            client: self,
            method,
            url: self.url(target),
            headers: Vec::new(),
            body: None,
        }
    }

    /// Starts a request to an already resolved URL.
    pub fn request_url(&self, method: Method, url: Url) -> Request<'_> {
        Request {
            client: self,
            method,
            url: Ok(url),
            headers: Vec::new(),
            body: None,
        }
    }

    /// `GET target`.
    pub fn get(&self, target: &str) -> Request<'_> {
        self.request(Method::GET, target)
    }

    /// `HEAD target`.
    pub fn head(&self, target: &str) -> Request<'_> {
        self.request(Method::HEAD, target)
    }

    /// `POST target`.
    pub fn post(&self, target: &str) -> Request<'_> {
        self.request(Method::POST, target)
    }

    /// `PUT target`.
    pub fn put(&self, target: &str) -> Request<'_> {
        self.request(Method::PUT, target)
    }

    /// `PATCH target`.
    pub fn patch(&self, target: &str) -> Request<'_> {
        self.request(Method::PATCH, target)
    }

    /// `DELETE target`.
    pub fn delete(&self, target: &str) -> Request<'_> {
        self.request(Method::DELETE, target)
    }
}

/// A request being put together; [`Request::send`] sends it and reads the whole response.
#[derive(Debug)]
pub struct Request<'c> {
    client: &'c Client,
    method: Method,
    url: Result<Url, Error>,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

impl Request<'_> {
    /// Adds a request header.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// Sets the request body; its length becomes the `Content-Length`.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Sends the request and reads the response body to the end.
    pub fn send(self) -> Result<Response, Error> {
        let url = self.url?;
        let client = self.client;
        let mut builder = client.http.request(self.method.clone(), url.clone());
        for (name, value) in &self.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        if let Some((user, password)) = &client.credentials {
            builder = builder.basic_auth(user, Some(password));
        }
        let body_len = self.body.as_ref().map_or(0, Vec::len);
        // Requests that may carry a body always send one, so an empty body is announced with
        // `Content-Length: 0` as the spec asks of upload requests.
        let body = match self.body {
            Some(body) => Some(body),
            None if matches!(
                self.method,
                Method::POST | Method::PUT | Method::PATCH | Method::DELETE
            ) =>
            {
                Some(Vec::new())
            }
            None => None,
        };
        if let Some(body) = body {
            builder = builder.body(body);
        }
        let transport = |source: reqwest::Error| Error::Transport {
            method: self.method.to_string(),
            url: url.to_string(),
            source,
        };
        let response = builder.send().map_err(transport)?;
        let status = response.status().as_u16();
        let final_url = response.url().clone();
        let headers = response.headers().clone();
        let body = response.bytes().map_err(transport)?.to_vec();
        let response = Response {
            method: self.method,
            url: final_url,
            request_headers: self.headers,
            request_body_len: body_len,
            status,
            headers,
            body,
        };
        if client.debug {
            eprintln!("{}", response.transcript());
        }
        Ok(response)
    }
}

/// A complete exchange: the request that was sent and the response that came back.
#[derive(Debug, Clone)]
pub struct Response {
    /// The request method.
    pub method: Method,
    /// The URL that answered, after any redirects.
    pub url: Url,
    /// The headers the request set explicitly.
    pub request_headers: Vec<(String, String)>,
    /// The length of the request body.
    pub request_body_len: usize,
    /// The response status code.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The whole response body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of a response header, if present and printable.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of a response header, in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// The `Location` header resolved against the URL that answered.
    pub fn location(&self) -> Option<Result<Url, Error>> {
        self.header("location").map(|location| {
            self.url.join(location).map_err(|e| Error::Url {
                url: location.to_owned(),
                reason: e.to_string(),
            })
        })
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The media type of the `Content-Type` header, without parameters.
    pub fn media_type(&self) -> Option<&str> {
        self.header("content-type")
            .map(|v| v.split(';').next().unwrap_or_default().trim())
    }

    /// A multi-line transcript of the exchange, as `OCI_DEBUG` prints it.
    pub fn transcript(&self) -> String {
        let mut out = format!("--> {} {}\n", self.method, self.url);
        for (name, value) in &self.request_headers {
            out.push_str(&format!("    {name}: {value}\n"));
        }
        if self.request_body_len > 0 {
            out.push_str(&format!("    ({} body bytes)\n", self.request_body_len));
        }
        out.push_str(&format!("<-- {}\n", self.status));
        for (name, value) in &self.headers {
            out.push_str(&format!(
                "    {name}: {}\n",
                value.to_str().unwrap_or("<binary>")
            ));
        }
        if !self.body.is_empty() {
            out.push_str(&format!("    {}\n", shown_body(&self.body)));
        }
        out
    }
}

impl fmt::Display for Response {
    /// One line naming the request, the status, the headers that matter to the spec and the
    /// start of the body.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} -> {}", self.method, self.url, self.status)?;
        const SHOWN: [&str; 9] = [
            "location",
            "range",
            "content-range",
            "content-type",
            "content-length",
            "docker-content-digest",
            "link",
            "oci-subject",
            "oci-filters-applied",
        ];
        for name in SHOWN {
            for value in self.header_values(name) {
                write!(f, "; {name}: {value}")?;
            }
        }
        if !self.body.is_empty() {
            write!(f, "; body: {}", shown_body(&self.body))?;
        }
        Ok(())
    }
}

/// The body as text if it is UTF-8, cut to [`SHOWN_BODY`] bytes, or its length otherwise.
fn shown_body(body: &[u8]) -> String {
    match std::str::from_utf8(body) {
        Ok(text) if text.len() <= SHOWN_BODY => text.trim_end().to_owned(),
        Ok(text) => {
            let mut end = SHOWN_BODY;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}… ({} bytes)", &text[..end], text.len())
        }
        Err(_) => format!("<{} binary bytes>", body.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_resolve_against_the_root() {
        let client = Client::new("http://127.0.0.1:5000", None, false).unwrap();
        assert_eq!(
            client.url("/v2/a/b/tags/list").unwrap().as_str(),
            "http://127.0.0.1:5000/v2/a/b/tags/list"
        );
        assert_eq!(
            client.url("http://other:1/x?y=1").unwrap().as_str(),
            "http://other:1/x?y=1"
        );
    }

    #[test]
    fn root_urls_must_be_http() {
        assert!(matches!(
            Client::new("ftp://host/", None, false),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            Client::new("not a url", None, false),
            Err(Error::Url { .. })
        ));
    }

    #[test]
    fn long_bodies_are_cut() {
        let long = "x".repeat(2000);
        let shown = shown_body(long.as_bytes());
        assert!(shown.len() < 700, "{shown}");
        assert!(shown.ends_with("(2000 bytes)"));
        assert_eq!(shown_body(&[0xff, 0xfe]), "<2 binary bytes>");
    }
}
