//! Listing endpoints: `GET /v2/<name>/tags/list` and `GET /v2/_catalog`.
//!
//! Both are paginated the same way: `n` caps the page (at most
//! [`Config::max_page_size`](super::Config), also the default), `last` starts after a name, and
//! a `Link: <...?n=&last=>; rel="next"` header is sent whenever more entries follow. `n=0`
//! gives an empty list without `Link`. Entries are in byte order ("ASCIIbetical").

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::Response;
use serde::Serialize;

use super::route::{encode_query_value, query_pairs, query_param};
use super::{AppState, RegistryError, blocking, build};
use crate::reference::RepositoryName;

/// A page request: how many entries, after which name.
struct Page {
    limit: usize,
    last: Option<String>,
    /// `n=0`: answer with nothing.
    empty: bool,
}

fn page(state: &AppState, req: &Parts) -> Result<Page, RegistryError> {
    let query = query_pairs(req.uri.query());
    let max = state.config().max_page_size.max(1);
    let n = match query_param(&query, "n") {
        None => None,
        Some(n) => Some(
            n.trim()
                .parse::<usize>()
                .map_err(|_| RegistryError::PaginationNumberInvalid(n.to_owned()))?,
        ),
    };
    Ok(Page {
        limit: n.unwrap_or(max).clamp(1, max),
        last: query_param(&query, "last").map(str::to_owned),
        empty: n == Some(0),
    })
}

/// A JSON `200` with an optional `Link` to the next page.
fn json_page(body: &impl Serialize, next: Option<String>) -> Result<Response, RegistryError> {
    let json = serde_json::to_vec(body)
        .map_err(|e| RegistryError::Internal(format!("serializing a listing: {e}")))?;
    let mut builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, json.len());
    if let Some(next) = next {
        builder = builder.header(header::LINK, format!("<{next}>; rel=\"next\""));
    }
    build(builder, Body::from(json))
}

/// Trims a page fetched with `limit + 1` entries and returns the `last` for the next link.
fn split_page<T: ToString>(mut rows: Vec<T>, limit: usize) -> (Vec<T>, Option<String>) {
    if rows.len() > limit {
        rows.truncate(limit);
        let last = rows.last().map(ToString::to_string);
        (rows, last)
    } else {
        (rows, None)
    }
}

#[derive(Serialize)]
struct TagList {
    name: String,
    tags: Vec<String>,
}

/// `GET /v2/<name>/tags/list[?n=&last=]`.
pub(crate) async fn list(
    state: &AppState,
    repo: &RepositoryName,
    req: &Parts,
) -> Result<Response, RegistryError> {
    let page = page(state, req)?;
    let meta = state.storage().meta.clone();
    let r = repo.clone();
    let (limit, last, empty) = (page.limit, page.last.clone(), page.empty);
    let rows = blocking(move || {
        if empty {
            return Ok(meta.repository_exists(&r)?.then(Vec::new));
        }
        Ok(meta.tags(&r, last.as_deref(), limit + 1)?)
    })
    .await?
    .ok_or_else(|| RegistryError::NameUnknown(repo.to_string()))?;
    let (rows, next_last) = split_page(rows, page.limit);
    let next = next_last.map(|l| {
        format!(
            "/v2/{repo}/tags/list?n={}&last={}",
            page.limit,
            encode_query_value(&l)
        )
    });
    json_page(
        &TagList {
            name: repo.to_string(),
            tags: rows.iter().map(ToString::to_string).collect(),
        },
        next,
    )
}

#[derive(Serialize)]
struct Catalog {
    repositories: Vec<String>,
}

/// `GET /v2/_catalog[?n=&last=]`.
pub(crate) async fn catalog(state: &AppState, req: &Parts) -> Result<Response, RegistryError> {
    let page = page(state, req)?;
    let meta = state.storage().meta.clone();
    let (limit, last, empty) = (page.limit, page.last.clone(), page.empty);
    let rows = blocking(move || {
        if empty {
            return Ok(Vec::new());
        }
        Ok(meta.repositories(last.as_deref(), limit + 1)?)
    })
    .await?;
    let (rows, next_last) = split_page(rows, page.limit);
    let next = next_last.map(|l| {
        format!(
            "/v2/_catalog?n={}&last={}",
            page.limit,
            encode_query_value(&l)
        )
    });
    json_page(
        &Catalog {
            repositories: rows.iter().map(ToString::to_string).collect(),
        },
        next,
    )
}
