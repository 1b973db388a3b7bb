//! The pure router of the EBS direct APIs: method, path and query string in,
//! a typed request out (table-tested). Paths and status codes follow
//! botocore's `ebs` 2019-11-02 model.

use super::error::{EbsError, Invalid};
use axum::http::Method;

/// `MaxResults` bounds of the model.
pub const MIN_RESULTS: u32 = 100;
pub const MAX_RESULTS: u32 = 10_000;

/// Paging parameters of the two List operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paging {
    pub max_results: u32,
    pub page_token: Option<String>,
    pub starting_block_index: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EbsRequest {
    StartSnapshot,
    PutSnapshotBlock { snapshot: String, index: u64 },
    CompleteSnapshot { snapshot: String },
    GetSnapshotBlock { snapshot: String, index: u64, block_token: String },
    ListSnapshotBlocks { snapshot: String, paging: Paging },
    ListChangedBlocks { first: Option<String>, second: String, paging: Paging },
}

impl EbsRequest {
    pub fn operation(&self) -> &'static str {
        match self {
            EbsRequest::StartSnapshot => "StartSnapshot",
            EbsRequest::PutSnapshotBlock { .. } => "PutSnapshotBlock",
            EbsRequest::CompleteSnapshot { .. } => "CompleteSnapshot",
            EbsRequest::GetSnapshotBlock { .. } => "GetSnapshotBlock",
            EbsRequest::ListSnapshotBlocks { .. } => "ListSnapshotBlocks",
            EbsRequest::ListChangedBlocks { .. } => "ListChangedBlocks",
        }
    }
}

/// True for paths the EBS direct APIs own.
pub fn is_ebs_path(path: &str) -> bool {
    path == "/snapshots" || path.starts_with("/snapshots/")
}

fn block_index(s: &str) -> Result<u64, EbsError> {
    s.parse::<u64>().map_err(|_| {
        EbsError::invalid(
            Invalid::Block,
            format!("The block index '{s}' is not a non-negative integer."),
        )
    })
}

fn paging(q: &[(String, String)]) -> Result<Paging, EbsError> {
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let max_results = match get("maxResults") {
        None => MAX_RESULTS,
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (MIN_RESULTS..=MAX_RESULTS).contains(&n) => n,
            _ => {
                return Err(EbsError::invalid(
                    Invalid::ParameterValue,
                    format!(
                        "MaxResults must be between {MIN_RESULTS} and {MAX_RESULTS}, not '{v}'."
                    ),
                ))
            }
        },
    };
    let starting_block_index = get("startingBlockIndex").map(block_index).transpose()?;
    let page_token = get("pageToken").map(str::to_string);
    Ok(Paging { max_results, page_token, starting_block_index })
}

/// Routes one request.
pub fn route(method: &Method, path: &str, query: Option<&str>) -> Result<EbsRequest, EbsError> {
    let q: Vec<(String, String)> = match query {
        Some(q) => serde_urlencoded::from_str(q).map_err(|e| {
            EbsError::invalid(
                Invalid::ParameterValue,
                format!("The query string is malformed: {e}"),
            )
        })?,
        None => Vec::new(),
    };
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let unknown =
        || EbsError::UnknownOperation(format!("No EBS direct operation is {method} {path}."));
    let r = match (method.as_str(), segs.as_slice()) {
        ("POST", ["snapshots"]) => EbsRequest::StartSnapshot,
        ("POST", ["snapshots", "completion", id]) => {
            EbsRequest::CompleteSnapshot { snapshot: id.to_string() }
        }
        ("PUT", ["snapshots", id, "blocks", idx]) => {
            EbsRequest::PutSnapshotBlock { snapshot: id.to_string(), index: block_index(idx)? }
        }
        ("GET", ["snapshots", id, "blocks", idx]) => {
            let block_token = q
                .iter()
                .find(|(k, _)| k == "blockToken")
                .map(|(_, v)| v.clone())
                .ok_or_else(|| {
                    EbsError::invalid(Invalid::BlockToken, "The blockToken parameter is required.")
                })?;
            EbsRequest::GetSnapshotBlock {
                snapshot: id.to_string(),
                index: block_index(idx)?,
                block_token,
            }
        }
        ("GET", ["snapshots", id, "blocks"]) => {
            EbsRequest::ListSnapshotBlocks { snapshot: id.to_string(), paging: paging(&q)? }
        }
        ("GET", ["snapshots", id, "changedblocks"]) => EbsRequest::ListChangedBlocks {
            first: q.iter().find(|(k, _)| k == "firstSnapshotId").map(|(_, v)| v.clone()),
            second: id.to_string(),
            paging: paging(&q)?,
        },
        _ => return Err(unknown()),
    };
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::error::AwsError;

    fn r(m: &str, p: &str, q: Option<&str>) -> Result<EbsRequest, EbsError> {
        route(&Method::from_bytes(m.as_bytes()).unwrap(), p, q)
    }

    #[test]
    fn routes_the_six_operations() {
        let s = "snap-0123456789abcdef0".to_string();
        let table = vec![
            (("POST", "/snapshots", None), EbsRequest::StartSnapshot),
            (
                ("PUT", "/snapshots/snap-0123456789abcdef0/blocks/7", None),
                EbsRequest::PutSnapshotBlock { snapshot: s.clone(), index: 7 },
            ),
            (
                ("POST", "/snapshots/completion/snap-0123456789abcdef0", None),
                EbsRequest::CompleteSnapshot { snapshot: s.clone() },
            ),
            (
                (
                    "GET",
                    "/snapshots/snap-0123456789abcdef0/blocks/3",
                    Some("blockToken=YWJj%2B%3D"),
                ),
                EbsRequest::GetSnapshotBlock {
                    snapshot: s.clone(),
                    index: 3,
                    block_token: "YWJj+=".into(),
                },
            ),
            (
                (
                    "GET",
                    "/snapshots/snap-0123456789abcdef0/blocks",
                    Some("maxResults=100&startingBlockIndex=5"),
                ),
                EbsRequest::ListSnapshotBlocks {
                    snapshot: s.clone(),
                    paging: Paging {
                        max_results: 100,
                        page_token: None,
                        starting_block_index: Some(5),
                    },
                },
            ),
            (
                (
                    "GET",
                    "/snapshots/snap-0123456789abcdef0/changedblocks",
                    Some("firstSnapshotId=snap-1&pageToken=abc"),
                ),
                EbsRequest::ListChangedBlocks {
                    first: Some("snap-1".into()),
                    second: s.clone(),
                    paging: Paging {
                        max_results: 10_000,
                        page_token: Some("abc".into()),
                        starting_block_index: None,
                    },
                },
            ),
        ];
        for ((m, p, q), want) in table {
            assert_eq!(r(m, p, q).unwrap(), want, "{m} {p}");
        }
    }

    #[test]
    fn refusals() {
        let reason = |e: EbsError| (e.code(), e.reason());
        assert_eq!(
            reason(r("DELETE", "/snapshots", None).unwrap_err()).0,
            "UnknownOperationException"
        );
        assert_eq!(
            reason(r("GET", "/snapshots/x/nope", None).unwrap_err()).0,
            "UnknownOperationException"
        );
        assert_eq!(
            reason(r("PUT", "/snapshots/snap-1/blocks/-1", None).unwrap_err()),
            ("ValidationException", Some("INVALID_BLOCK"))
        );
        assert_eq!(
            reason(r("GET", "/snapshots/snap-1/blocks/1", None).unwrap_err()),
            ("ValidationException", Some("INVALID_BLOCK_TOKEN"))
        );
        for bad in ["99", "10001", "x"] {
            let e = r("GET", "/snapshots/snap-1/blocks", Some(&format!("maxResults={bad}")))
                .unwrap_err();
            assert_eq!(e.reason(), Some("INVALID_PARAMETER_VALUE"), "{bad}");
        }
        assert!(is_ebs_path("/snapshots") && is_ebs_path("/snapshots/x"));
        assert!(!is_ebs_path("/") && !is_ebs_path("/snapshotsx"));
    }
}
