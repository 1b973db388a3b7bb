//! Filters and pages: pure functions over records, so DescribeVolumes,
//! DescribeSnapshots and DescribeTags only fetch, call these and render.
//!
//! EC2 semantics: values inside one filter are ORed, filters are ANDed, names
//! and values are case-sensitive, and values may use `*` and `?` wildcards
//! (`\` escapes them).

use super::error::Ec2Error;
use super::params::Filter;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cairn_core::records::{Snapshot, Volume};
use cairn_core::time::iso8601_ms;
use std::collections::BTreeMap;

/// `*` matches any run of characters, `?` any one, `\x` the character x.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matcher with one backtrack point for the last `*`.
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        let step = match p.get(pi) {
            Some('*') => {
                star = Some((pi + 1, ti));
                pi += 1;
                continue;
            }
            Some('?') => Some(1),
            Some('\\') if pi + 1 < p.len() => (p[pi + 1] == t[ti]).then_some(2),
            Some(c) => (*c == t[ti]).then_some(1),
            None => None,
        };
        match (step, star) {
            (Some(n), _) => {
                pi += n;
                ti += 1;
            }
            (None, Some((sp, st))) => {
                pi = sp;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            (None, None) => return false,
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The filter names a resource kind knows; `tag:<key>` is always allowed.
pub fn check_names(filters: &[Filter], known: &[&str]) -> Result<(), Ec2Error> {
    for f in filters {
        let ok = known.contains(&f.name.as_str())
            || f.name.strip_prefix("tag:").is_some_and(|k| !k.is_empty());
        if !ok {
            return Err(Ec2Error::InvalidParameterValue(format!(
                "The filter '{}' is invalid",
                f.name
            )));
        }
    }
    Ok(())
}

/// True when every filter has a value matching one of the item's values
/// for that filter name.
pub fn matches<T>(
    item: &T,
    filters: &[Filter],
    values_of: impl Fn(&T, &str) -> Vec<String>,
) -> bool {
    filters.iter().all(|f| {
        let have = values_of(item, &f.name);
        have.iter().any(|h| f.values.iter().any(|pat| glob_match(pat, h)))
    })
}

fn tag_values(tags: &BTreeMap<String, String>, name: &str) -> Option<Vec<String>> {
    if name == "tag-key" {
        return Some(tags.keys().cloned().collect());
    }
    let key = name.strip_prefix("tag:")?;
    Some(tags.get(key).cloned().into_iter().collect())
}

pub const VOLUME_FILTERS: &[&str] = &[
    "volume-id",
    "status",
    "size",
    "availability-zone",
    "availability-zone-id",
    "volume-type",
    "snapshot-id",
    "create-time",
    "encrypted",
    "multi-attach-enabled",
    "fast-restored",
    "tag-key",
];

/// A volume's values for a filter name. `az_id` maps an AZ to its id.
pub fn volume_values(
    v: &Volume,
    name: &str,
    az_id: &dyn Fn(&str) -> Option<String>,
) -> Vec<String> {
    if let Some(t) = tag_values(&v.tags, name) {
        return t;
    }
    let one = |s: String| vec![s];
    match name {
        "volume-id" => one(v.id.to_string()),
        "status" => one(v.state.as_str().to_string()),
        "size" => one(v.size_gib.to_string()),
        "availability-zone" => one(v.az.clone()),
        "availability-zone-id" => az_id(&v.az).into_iter().collect(),
        "volume-type" => one(v.volume_type.clone()),
        "snapshot-id" => v.snapshot_id.iter().map(|s| s.to_string()).collect(),
        "create-time" => one(iso8601_ms(v.create_time_ms)),
        "encrypted" => one(v.encrypted.to_string()),
        "multi-attach-enabled" | "fast-restored" => one("false".into()),
        _ => Vec::new(),
    }
}

pub const SNAPSHOT_FILTERS: &[&str] = &[
    "snapshot-id",
    "volume-id",
    "status",
    "description",
    "owner-id",
    "progress",
    "volume-size",
    "start-time",
    "storage-tier",
    "encrypted",
    "tag-key",
];

pub fn snapshot_values(s: &Snapshot, name: &str) -> Vec<String> {
    if let Some(t) = tag_values(&s.tags, name) {
        return t;
    }
    let one = |x: String| vec![x];
    match name {
        "snapshot-id" => one(s.id.to_string()),
        "volume-id" => one(s.volume_id.to_string()),
        "status" => one(s.state.as_str().to_string()),
        "description" => one(s.description.clone()),
        "owner-id" => one(s.owner.clone()),
        "progress" => one(format!("{}%", s.progress)),
        "volume-size" => one(s.volume_size_gib.to_string()),
        "start-time" => one(iso8601_ms(s.start_time_ms)),
        "storage-tier" => one(s.storage_tier.clone()),
        "encrypted" => one(s.encrypted.to_string()),
        _ => Vec::new(),
    }
}

/// One tag of one resource, as DescribeTags lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagItem {
    pub resource_id: String,
    pub resource_type: &'static str,
    pub key: String,
    pub value: String,
    /// Every tag of the resource, for `tag:<key>` filters.
    pub resource_tags: BTreeMap<String, String>,
}

pub const TAG_FILTERS: &[&str] = &["key", "value", "resource-id", "resource-type", "tag-key"];

pub fn tag_item_values(t: &TagItem, name: &str) -> Vec<String> {
    if let Some(v) = tag_values(&t.resource_tags, name) {
        return v;
    }
    match name {
        "key" => vec![t.key.clone()],
        "value" => vec![t.value.clone()],
        "resource-id" => vec![t.resource_id.clone()],
        "resource-type" => vec![t.resource_type.to_string()],
        _ => Vec::new(),
    }
}

/// Every tag of these volumes and snapshots, ordered by (resource id, key).
pub fn tag_items(volumes: &[Volume], snapshots: &[Snapshot]) -> Vec<TagItem> {
    let mut out = Vec::new();
    for v in volumes {
        for (k, val) in &v.tags {
            out.push(TagItem {
                resource_id: v.id.to_string(),
                resource_type: "volume",
                key: k.clone(),
                value: val.clone(),
                resource_tags: v.tags.clone(),
            });
        }
    }
    for s in snapshots {
        for (k, val) in &s.tags {
            out.push(TagItem {
                resource_id: s.id.to_string(),
                resource_type: "snapshot",
                key: k.clone(),
                value: val.clone(),
                resource_tags: s.tags.clone(),
            });
        }
    }
    out.sort_by(|a, b| (&a.resource_id, &a.key).cmp(&(&b.resource_id, &b.key)));
    out
}

/// Opaque next-token: URL-safe base64 of `<kind>\n<last key>`. The kind stops
/// a DescribeVolumes token from being replayed into DescribeSnapshots.
pub fn encode_token(kind: &str, last_key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}\n{last_key}"))
}

pub fn decode_token(kind: &str, token: &str) -> Result<String, Ec2Error> {
    let bad = || Ec2Error::InvalidParameterValue(format!("Invalid value '{token}' for nextToken"));
    let bytes = URL_SAFE_NO_PAD.decode(token.trim()).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (k, key) = text.split_once('\n').ok_or_else(bad)?;
    if k != kind {
        return Err(bad());
    }
    Ok(key.to_string())
}

/// One page of `items` (sorted by `key`, ascending and distinct): those after
/// the token's key, at most `max` of them, and the token of the next page when
/// more remain.
pub fn page<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> String,
    kind: &str,
    max: Option<usize>,
    token: Option<&str>,
) -> Result<(Vec<T>, Option<String>), Ec2Error> {
    let after = token.map(|t| decode_token(kind, t)).transpose()?;
    let mut rest: Vec<T> = match &after {
        Some(a) => items.into_iter().filter(|i| key(i).as_str() > a.as_str()).collect(),
        None => items,
    };
    let Some(max) = max else { return Ok((rest, None)) };
    if rest.len() <= max {
        return Ok((rest, None));
    }
    rest.truncate(max);
    let next = rest.last().map(|l| encode_token(kind, &key(l)));
    Ok((rest, next))
}

/// The values of filter `name` when all are exact (no `*`, `?` or `\\`):
/// the index a scan may walk for it. `None`: absent or a pattern.
pub fn exact_values(filters: &[Filter], name: &str) -> Option<Vec<String>> {
    let f = filters.iter().find(|f| f.name == name)?;
    let exact = |v: &String| !v.contains(['*', '?', '\\']);
    (!f.values.is_empty() && f.values.iter().all(exact)).then(|| f.values.clone())
}

/// The first exact `tag:Key` filter, as a scan's tag condition.
pub fn exact_tag(filters: &[Filter]) -> Option<(String, Vec<String>)> {
    filters.iter().find_map(|f| {
        let key = f.name.strip_prefix("tag:")?;
        Some((key.to_string(), exact_values(std::slice::from_ref(f), &f.name)?))
    })
}

/// Walks the pages `fetch` gives (each already filtered, with the id to
/// resume after) from the request's `token` until `max` items and one more
/// are in hand or the pages end: the page, and the token of the next when
/// more remain. `fetch` is asked for at most `want` items each time.
pub async fn collect_pages<T, K, F, Fut>(
    kind: &str,
    key: impl Fn(&T) -> String,
    max: Option<usize>,
    token: Option<&str>,
    parse: impl Fn(&str) -> Option<K>,
    mut fetch: F,
) -> Result<(Vec<T>, Option<String>), Ec2Error>
where
    F: FnMut(Option<K>, u32) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, Option<K>), Ec2Error>>,
{
    let mut cursor = match token {
        Some(t) => {
            let last = decode_token(kind, t)?;
            let bad =
                || Ec2Error::InvalidParameterValue(format!("Invalid value '{t}' for nextToken"));
            Some(parse(&last).ok_or_else(bad)?)
        }
        None => None,
    };
    let mut out = Vec::new();
    loop {
        // The scan's own page size without a limit; else what is missing,
        // with some slack for what the filters drop.
        let want = max.map_or(0, |m| (m + 1 - out.len()).clamp(64, 10_000) as u32);
        let (items, next) = fetch(cursor.take(), want).await?;
        out.extend(items);
        if let Some(m) = max.filter(|m| out.len() > *m) {
            out.truncate(m);
            let next = out.last().map(|l| encode_token(kind, &key(l)));
            return Ok((out, next));
        }
        match next {
            Some(n) => cursor = Some(n),
            None => return Ok((out, None)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{snapshot, volume};
    use cairn_core::records::VolumeState;

    fn f(name: &str, values: &[&str]) -> Filter {
        Filter { name: name.into(), values: values.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn globs() {
        let table = [
            ("abc", "abc", true),
            ("a*", "abc", true),
            ("*c", "abc", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*", "", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("a\\*", "a*", true),
            ("a\\*", "ab", false),
            ("ABC", "abc", false),
            ("", "x", false),
        ];
        for (p, t, want) in table {
            assert_eq!(glob_match(p, t), want, "{p} ~ {t}");
        }
    }

    #[test]
    fn volume_filters() {
        let mut v = volume();
        v.tags.insert("Name".into(), "web-1".into());
        let az = |_: &str| Some("cairn-1-az1".to_string());
        let vals = |v: &Volume, n: &str| volume_values(v, n, &az);
        let table = [
            (vec![f("status", &["available"])], true),
            (vec![f("status", &["in-use", "creating"])], false),
            (vec![f("status", &["available"]), f("size", &["9"])], false),
            (vec![f("size", &["8"]), f("volume-type", &["gp*"])], true),
            (vec![f("tag:Name", &["web-*"])], true),
            (vec![f("tag:Other", &["*"])], false),
            (vec![f("tag-key", &["Name"])], true),
            (vec![f("snapshot-id", &["*"])], false),
            (vec![f("availability-zone-id", &["cairn-1-az1"])], true),
            (vec![f("create-time", &["2026-01-01*"])], true),
            (vec![], true),
        ];
        for (filters, want) in table {
            assert_eq!(matches(&v, &filters, vals), want, "{filters:?}");
        }
        v.state = VolumeState::InUse;
        assert!(matches(&v, &[f("status", &["in-use"])], vals));
        assert!(check_names(&[f("status", &["x"])], VOLUME_FILTERS).is_ok());
        assert!(check_names(&[f("tag:k", &["x"])], VOLUME_FILTERS).is_ok());
        assert!(check_names(&[f("tag:", &["x"])], VOLUME_FILTERS).is_err());
        assert!(check_names(&[f("bogus", &["x"])], VOLUME_FILTERS).is_err());
    }

    #[test]
    fn snapshot_filters() {
        let s = snapshot();
        let table = [
            (f("progress", &["0%"]), true),
            (f("status", &["pending"]), true),
            (f("owner-id", &["123456789012"]), true),
            (f("volume-size", &["8"]), true),
            (f("description", &["d*"]), true),
            (f("storage-tier", &["archive"]), false),
            (f("encrypted", &["false"]), true),
        ];
        for (filter, want) in table {
            assert_eq!(matches(&s, std::slice::from_ref(&filter), snapshot_values), want);
        }
    }

    #[test]
    fn tag_item_listing_and_filters() {
        let mut v = volume();
        v.tags.insert("b".into(), "2".into());
        v.tags.insert("a".into(), "1".into());
        let mut s = snapshot();
        s.tags.insert("a".into(), "x".into());
        let items = tag_items(&[v], &[s]);
        let keys: Vec<_> = items.iter().map(|t| (t.resource_id.as_str(), t.key.as_str())).collect();
        assert_eq!(
            keys,
            [
                ("snap-0123456789abcdef0", "a"),
                ("vol-0123456789abcdef0", "a"),
                ("vol-0123456789abcdef0", "b")
            ]
        );
        let vols: Vec<_> = items
            .iter()
            .filter(|t| matches(*t, &[f("resource-type", &["volume"])], tag_item_values))
            .collect();
        assert_eq!(vols.len(), 2);
        let by_tag: Vec<_> =
            items.iter().filter(|t| matches(*t, &[f("tag:a", &["x"])], tag_item_values)).collect();
        assert_eq!(by_tag.len(), 1);
        assert_eq!(by_tag[0].resource_type, "snapshot");
    }

    #[test]
    fn paging_walks_everything_once() {
        let items: Vec<String> = (0..23).map(|i| format!("vol-{i:017x}")).collect();
        let mut token: Option<String> = None;
        let mut seen = Vec::new();
        loop {
            let (page, next) =
                page(items.clone(), |s| s.clone(), "vol", Some(5), token.as_deref()).unwrap();
            assert!(page.len() <= 5);
            seen.extend(page);
            match next {
                Some(n) => token = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, items);
        let (all, next) = page(items.clone(), |s| s.clone(), "vol", None, None).unwrap();
        assert_eq!((all.len(), next), (23, None));
        // Exactly full last page: no token.
        let (p, next) = page(items[..5].to_vec(), |s| s.clone(), "vol", Some(5), None).unwrap();
        assert_eq!((p.len(), next), (5, None));
    }

    #[test]
    fn bad_tokens() {
        for t in ["!!!", "bm90LWEtdG9rZW4", &encode_token("snap", "x")] {
            assert!(matches!(
                page(vec!["a".to_string()], |s| s.clone(), "vol", Some(5), Some(t)),
                Err(Ec2Error::InvalidParameterValue(_))
            ));
        }
    }
}
