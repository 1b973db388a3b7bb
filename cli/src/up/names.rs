//! What a `cairn up` cluster is called (region, zones, account) and the
//! file that keeps those names, and the ports Raft needs, across runs.

use crate::hint::Hinted;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The names every AWS client sees. Defaults: region `cairn-1`, zones
/// `cairn-1a`, `cairn-1b`, account `123456789012`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Names {
    pub region: String,
    pub zones: Vec<String>,
    pub account_id: String,
}

pub const DEFAULT_REGION: &str = "cairn-1";
pub const DEFAULT_ACCOUNT: &str = "123456789012";
/// Zones named by default: the region name plus `a`, `b`.
const DEFAULT_ZONE_COUNT: u8 = 2;

/// What stays fixed across runs of `cairn up` on one data directory.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    pub version: u16,
    pub outpost_id: String,
    /// Metadata members' ports, by node id order (1, 2, 3). Raft membership
    /// stores addresses, so a restart must reuse them.
    pub metadata_ports: Vec<u16>,
    pub initialized: bool,
    /// Absent in files written before names were configurable: those
    /// clusters were created with the defaults.
    #[serde(default = "default_region")]
    pub region: String,
    #[serde(default)]
    pub zones: Vec<String>,
    #[serde(default = "default_account")]
    pub account_id: String,
}

fn default_region() -> String {
    DEFAULT_REGION.into()
}

fn default_account() -> String {
    DEFAULT_ACCOUNT.into()
}

impl ClusterFile {
    pub fn names(&self) -> Names {
        let zones = if self.zones.is_empty() {
            zones_of(&self.region, DEFAULT_ZONE_COUNT)
        } else {
            self.zones.clone()
        };
        Names { region: self.region.clone(), zones, account_id: self.account_id.clone() }
    }

    /// Reads the file, or starts a new one named as asked (defaults where not).
    pub fn load_or_new(path: &Path, asked: &AskedNames) -> anyhow::Result<ClusterFile> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let file = toml::from_str::<ClusterFile>(&text)
                    .with_context(|| format!("{} is corrupt", path.display()))?;
                Ok(file)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let names = asked.resolve_new()?;
                let file = ClusterFile {
                    version: 1,
                    outpost_id: cairn_core::OutpostId::generate().to_string(),
                    metadata_ports: Vec::new(),
                    initialized: false,
                    region: names.region,
                    zones: names.zones,
                    account_id: names.account_id,
                };
                Ok(file)
            }
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
}

/// The names given on the command line (each optional).
#[derive(Debug, Default, Clone)]
pub struct AskedNames {
    pub region: Option<String>,
    pub zones: Option<Vec<String>>,
    pub account_id: Option<String>,
}

impl AskedNames {
    /// The names of a new cluster: what was asked, the rest by default.
    fn resolve_new(&self) -> anyhow::Result<Names> {
        let region = self.region.clone().unwrap_or_else(default_region);
        check_region(&region)?;
        let zones = match &self.zones {
            Some(z) => z.clone(),
            None => zones_of(&region, DEFAULT_ZONE_COUNT),
        };
        check_zones(&zones)?;
        let account_id = self.account_id.clone().unwrap_or_else(default_account);
        check_account(&account_id)?;
        Ok(Names { region, zones, account_id })
    }

    /// An existing cluster keeps its names: asking for others is refused,
    /// since volumes, snapshots and nodes already carry them.
    pub fn check_against(&self, names: &Names, data_dir: &Path) -> anyhow::Result<()> {
        let clash = |what: &str, asked: &str, has: &str, flag: &str| -> anyhow::Error {
            Hinted::new(
                format!(
                    "the cluster in {} was created with {what} {has}, not {asked}",
                    data_dir.display()
                ),
                format!("drop {flag}, or start a new cluster with another --data-dir"),
            )
            .into()
        };
        if let Some(r) = self.region.as_deref().filter(|r| *r != names.region) {
            return Err(clash("region", r, &names.region, "--region"));
        }
        if let Some(z) = self.zones.as_ref().filter(|z| **z != names.zones) {
            return Err(clash("zones", &z.join(","), &names.zones.join(","), "--zones"));
        }
        if let Some(a) = self.account_id.as_deref().filter(|a| *a != names.account_id) {
            return Err(clash("account", a, &names.account_id, "--account-id"));
        }
        Ok(())
    }
}

/// `<region>a`, `<region>b`, ...: how AWS names a region's zones.
pub fn zones_of(region: &str, count: u8) -> Vec<String> {
    (0..count).map(|i| format!("{region}{}", char::from(b'a' + i))).collect()
}

fn bad(what: String, hint: &str) -> anyhow::Error {
    Hinted::new(what, hint).into()
}

fn check_name(kind: &str, name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(bad(
            format!("{kind} name {name:?} is not valid"),
            "use lowercase letters, digits and dashes, like us-east-1 or us-east-1a",
        ))
    }
}

fn check_region(region: &str) -> anyhow::Result<()> {
    check_name("the region", region)
}

fn check_zones(zones: &[String]) -> anyhow::Result<()> {
    if zones.is_empty() || zones.len() > 8 {
        return Err(bad(
            format!("{} zones were asked for", zones.len()),
            "name between 1 and 8 zones, comma-separated: --zones us-east-1a,us-east-1b",
        ));
    }
    for (i, z) in zones.iter().enumerate() {
        check_name("a zone", z)?;
        if zones[..i].contains(z) {
            return Err(bad(format!("zone {z} is named twice"), "name each zone once"));
        }
    }
    Ok(())
}

fn check_account(account: &str) -> anyhow::Result<()> {
    if account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(bad(
            format!("account id {account:?} is not 12 digits"),
            "AWS account ids are 12 digits, like 123456789012",
        ))
    }
}

/// The chunk nodes of a cluster: four in the region spread over its zones
/// (two in each of two zones, one in each of four, at least one per zone),
/// then two on the Outpost anchored to the first zone. Nodes are named by
/// zone position (`chunk-1a`, `chunk-1a-2`, `chunk-1b`, ...), the names
/// earlier versions gave them, so data directories are found again.
pub fn chunk_layout(zones: &[String]) -> Vec<(String, String, bool)> {
    let regional = zones.len().max(4);
    let mut per_zone = vec![0usize; zones.len()];
    let mut out = Vec::new();
    for i in 0..regional {
        let z = i % zones.len();
        per_zone[z] += 1;
        let letter = char::from(b'a' + z as u8);
        let name = match per_zone[z] {
            1 => format!("chunk-1{letter}"),
            n => format!("chunk-1{letter}-{n}"),
        };
        out.push((name, zones[z].clone(), false));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.push(("chunk-op".into(), zones[0].clone(), true));
    out.push(("chunk-op-2".into(), zones[0].clone(), true));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn new_clusters_take_defaults_where_nothing_is_asked() {
        let n = AskedNames::default().resolve_new().unwrap();
        assert_eq!(n.region, "cairn-1");
        assert_eq!(n.zones, s(&["cairn-1a", "cairn-1b"]));
        assert_eq!(n.account_id, "123456789012");
        let asked = AskedNames { region: Some("us-east-1".into()), ..Default::default() };
        let n = asked.resolve_new().unwrap();
        assert_eq!(n.zones, s(&["us-east-1a", "us-east-1b"]));
    }

    #[test]
    fn bad_names_are_refused_with_a_hint() {
        for asked in [
            AskedNames { region: Some("US East".into()), ..Default::default() },
            AskedNames { zones: Some(vec![]), ..Default::default() },
            AskedNames { zones: Some(s(&["a", "a"])), ..Default::default() },
            AskedNames { account_id: Some("12345".into()), ..Default::default() },
        ] {
            let e = asked.resolve_new().unwrap_err();
            assert!(e.downcast_ref::<Hinted>().is_some(), "{e}");
        }
    }

    #[test]
    fn an_existing_cluster_keeps_its_names() {
        let names = AskedNames::default().resolve_new().unwrap();
        let dir = Path::new("/d");
        AskedNames::default().check_against(&names, dir).unwrap();
        let same = AskedNames { region: Some("cairn-1".into()), ..Default::default() };
        same.check_against(&names, dir).unwrap();
        let other = AskedNames { region: Some("us-east-1".into()), ..Default::default() };
        let e = other.check_against(&names, dir).unwrap_err().to_string();
        assert!(e.contains("created with region cairn-1, not us-east-1"), "{e}");
    }

    #[test]
    fn old_cluster_files_read_as_the_defaults() {
        let f: ClusterFile = toml::from_str(
            "version = 1\noutpost_id = \"op-0123456789abcdef0\"\nmetadata_ports = [1, 2, 3]\ninitialized = true\n",
        )
        .unwrap();
        assert_eq!(f.names(), AskedNames::default().resolve_new().unwrap());
    }

    #[test]
    fn chunk_nodes_cover_every_zone() {
        let names = chunk_layout(&s(&["z-a", "z-b"]));
        assert_eq!(
            names.iter().map(|n| n.0.as_str()).collect::<Vec<_>>(),
            ["chunk-1a", "chunk-1a-2", "chunk-1b", "chunk-1b-2", "chunk-op", "chunk-op-2"]
        );
        assert_eq!(names[2].1, "z-b");
        assert!(names[4].2 && names[4].1 == "z-a");
        let one = chunk_layout(&s(&["only"]));
        assert_eq!(one.iter().filter(|n| !n.2 && n.1 == "only").count(), 4);
        let five = chunk_layout(&s(&["a", "b", "c", "d", "e"]));
        assert_eq!(five.iter().filter(|n| !n.2).count(), 5);
    }
}
